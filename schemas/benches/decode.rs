//! Hot path of `schemas`: decoding (canonical JSON, and each vendor format
//! on its fixture), the structural limits pass every decoder runs first,
//! and building Arrow batches.
//!
//!     cargo bench -p schemas --bench decode

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use schemas::decode::{Decoder, Limits, Output};
use schemas::{Event, Fingerprinter, Format, events_to_record_batch};

fn realistic(i: usize) -> Event {
    schemas::sample::realistic(i, 5000, 1_795_813_200_000)
}

/// The canonical record's fields, borrowed where the text allows: what any
/// parser must produce for our decoder, so the parsers compare alone.
#[cfg(feature = "compare-parsers")]
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Wire<'a> {
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    token_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    issuer: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    action: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    principal: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    src_ip: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    user_agent: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    bytes_out: Option<u64>,
    #[serde(default)]
    records_out: Option<u64>,
    #[serde(borrow, default)]
    request_id: Option<std::borrow::Cow<'a, str>>,
}

/// serde_json against sonic-rs (SIMD) parsing our realistic records into
/// the same borrowed struct, and our whole canonical decode beside them:
///
///     cargo bench -p schemas --bench decode --features compare-parsers -- json_parser
#[cfg(feature = "compare-parsers")]
fn parsers(c: &mut Criterion) {
    let decoder = Decoder::new(Format::Canonical, 1 << 20, Fingerprinter::new(b"bench-key"));
    let full: Vec<String> = (0..1024).map(|i| realistic(i).to_json()).collect();
    for r in &full {
        let a: Wire = serde_json::from_str(r).unwrap();
        let b: Wire = sonic_rs::from_str(r).unwrap();
        assert_eq!((a.token_id, a.request_id), (b.token_id, b.request_id));
    }
    let mut group = c.benchmark_group("json_parser");
    group.throughput(Throughput::Elements(1024));
    group.bench_function("serde_json", |b| {
        b.iter(|| {
            for r in full.iter() {
                black_box(serde_json::from_str::<Wire>(r).ok());
            }
        })
    });
    group.bench_function("sonic_rs", |b| {
        b.iter(|| {
            for r in full.iter() {
                black_box(sonic_rs::from_str::<Wire>(r).ok());
            }
        })
    });
    group.bench_function("canonical_decode", |b| {
        let mut out = Output::default();
        b.iter(|| {
            for r in full.iter() {
                out.clear();
                black_box(decoder.decode_into(r.as_bytes(), &mut out).ok());
            }
        })
    });
    group.finish();
}

#[cfg(not(feature = "compare-parsers"))]
fn parsers(_: &mut Criterion) {}

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
            let mut out = Output::default();
            b.iter(|| {
                for r in records.iter() {
                    out.clear();
                    black_box(decoder.decode_into(r.as_bytes(), &mut out).ok());
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("limits_check");
    group.throughput(Throughput::Elements(1024));
    group.bench_function("realistic", |b| {
        let limits = Limits::default();
        b.iter(|| {
            for r in full.iter() {
                black_box(limits.check(r.as_bytes()).ok());
            }
        })
    });
    group.finish();

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/formats/");
    let mut group = c.benchmark_group("decode_vendor");
    group.throughput(Throughput::Elements(1));
    for (format, file) in [
        (Format::Cloudtrail, "cloudtrail-getobject.json"),
        (Format::Github, "github-git-clone.json"),
        (Format::K8s, "k8s-get-secret.json"),
        (Format::Okta, "okta-api-token.json"),
        (Format::Ocsf, "ocsf-api-activity.json"),
    ] {
        let record = std::fs::read(format!("{dir}{file}")).unwrap();
        let decoder = Decoder::new(format, 1 << 20, Fingerprinter::new(b"bench-key"));
        let mut out = Output::default();
        group.bench_function(format.as_str(), |b| {
            b.iter(|| {
                out.clear();
                black_box(decoder.decode_into(&record, &mut out).ok());
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

criterion_group!(benches, parsers, bench);
criterion_main!(benches);
