//! Hot path of `schemas`: decoding canonical JSON and building Arrow batches.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use schemas::decode::Decoder;
use schemas::{Event, Fingerprinter, Format, events_to_record_batch};

fn realistic(i: usize) -> Event {
    let mut e = Event::new(
        1_795_813_200_000 + i as i64,
        format!("tok-{:05}", i % 5000),
        "oauth",
        "GET /v1/orders/{id}",
    );
    e.principal = Some(format!("svc-orders-{}", i % 40));
    e.src_ip = Some(std::net::IpAddr::from([
        81,
        2,
        (i % 200) as u8,
        (i % 250) as u8,
    ]));
    e.user_agent = Some("orders-client/3.2.1 (linux; x86_64) reqwest/0.12".into());
    e.session_id = Some(format!("sess-{:08x}", i * 7919));
    e.resource = Some(format!("/v1/orders/{}", 100_000 + i));
    e.status = Some(200);
    e.bytes_out = Some(1200 + (i as u64 % 800));
    e.records_out = Some(1 + i as u64 % 20);
    e.request_id = Some(format!("req-{i:010}"));
    e
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
