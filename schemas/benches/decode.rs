//! Hot path of `schemas`: decoding canonical JSON and building Arrow batches.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use schemas::decode::Decoder;
use schemas::{Event, Fingerprinter, Format, events_to_record_batch};

fn realistic(i: usize) -> Event {
    schemas::sample::realistic(i, 5000, 1_795_813_200_000)
}

fn bench(c: &mut Criterion) {
    let decoder = Decoder::new(Format::Canonical, 1 << 20, Fingerprinter::new(b"bench-key"));
    let full: Vec<String> = (0..1024).map(|i| realistic(i).to_json()).collect();
    let minimal: Vec<String> = (0..1024)
        .map(|i| Event::new(i, "tok", "oauth", "GET /").to_json())
        .collect();
    let with_secret: Vec<String> = full
        .iter()
        .map(|j| {
            j.replacen(
                "\"token_id\":",
                "\"token\":\"ghp_0123456789abcdefghijklmnopqrstuvwxyz\",\"x\":",
                1,
            )
        })
        .collect();
    let cases = [
        ("minimal", &minimal),
        ("realistic", &full),
        ("raw_secret", &with_secret),
    ];

    let mut group = c.benchmark_group("decode_canonical");
    group.throughput(Throughput::Elements(1024));
    for (name, records) in cases {
        group.bench_with_input(BenchmarkId::from_parameter(name), records, |b, records| {
            b.iter(|| {
                for r in records.iter() {
                    black_box(decoder.decode(r.as_bytes()).ok());
                }
            })
        });
    }
    group.finish();

    let events: Vec<Event> = (0..1024).map(realistic).collect();
    let mut group = c.benchmark_group("to_record_batch");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("realistic_1024", |b| {
        b.iter(|| black_box(events_to_record_batch(&events).ok()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
