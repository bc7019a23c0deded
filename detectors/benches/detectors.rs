//! Hot paths of `detectors`, in ns per event (criterion reports time per
//! iteration of `EVENTS` events; divide, or read the Melem/s throughput):
//!
//! - enrichment: GeoIP lookups with a warm cache vs uncached, same IPs;
//! - each detector on its own, with the per-token state lookup;
//! - the whole engine (enrich + all detectors + decision) on a realistic
//!   mix: 10k tokens, 50k IPs, 64 cities in 48 countries, in batches of
//!   1024, without and with five SQL policy rules.
//!
//!     cargo bench -p detectors --bench detectors

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use detectors::binding::BindingDetector;
use detectors::decision::DecisionConfig;
use detectors::expiry::ExpiryDetector;
use detectors::geo::{GeoConfig, GeoDetector};
use detectors::geoip::{GeoIp, GeoIpConfig};
use detectors::learning::LearningConfig;
use detectors::networks::{Networks, NetworksConfig};
use detectors::novelty::{NoveltyConfig, NoveltyDetector};
use detectors::scope::ScopeDetector;
use detectors::volume::{VolumeConfig, VolumeDetector};
use detectors::{Detector, DetectorsConfig, Engine, MetadataStore, Observation, TokenStore};
use schemas::sample::Rng;
use schemas::{Event, Origin, TokenMetadata};

const EVENTS: usize = 100_000;
/// Events per `Engine::process` call: ingest's default batch.
const BATCH: usize = 1024;
const TOKENS: u64 = 10_000;
const IPS: u64 = 50_000;
const T0_MS: i64 = 1_795_813_200_000;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/geoip"
    ))
    .join(name)
}

fn geoip_config() -> GeoIpConfig {
    let mut c = GeoIpConfig::new(fixture("synthetic-city.mmdb"));
    c.asn_db = Some(fixture("synthetic-asn.mmdb"));
    c
}

fn ip(n: u64) -> IpAddr {
    // 50k addresses inside the synthetic databases' 20.0.0.0/7.
    let v = (20u32 << 24) + (n as u32).wrapping_mul(2_654_435_761) % (2 << 24);
    IpAddr::from(v.to_be_bytes())
}

/// A realistic mix: each token mostly calls from its home address, now and
/// then from another of the 50k, over one hour of event time.
fn mix() -> (Vec<Event>, Vec<Origin>) {
    let mut rng = Rng(7);
    let actions = [
        "GET /v1/orders/{id}",
        "GET /v1/orders",
        "POST /v1/orders",
        "GET /v1/customers/{id}",
        "s3:GetObject",
        "repo.download_zip",
    ];
    let agents = [
        "orders-client/3.2",
        "aws-cli/2.13.5 Python/3.11",
        "python-requests/2.31",
        "Mozilla/5.0 Chrome/120.0 Safari/537.36",
    ];
    let topic: Arc<str> = Arc::from("bench");
    let mut events = Vec::with_capacity(EVENTS);
    let mut origins = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let token = rng.next_u64() % TOKENS;
        let home = token * 5 % IPS;
        let addr = if rng.next_u64().is_multiple_of(20) {
            rng.next_u64() % IPS
        } else {
            home
        };
        let mut e = Event::new(
            T0_MS + (i as i64 * 3_600_000 / EVENTS as i64),
            format!("tok-{token:05}"),
            "oauth",
            actions[(token % 6) as usize],
        );
        e.src_ip = Some(ip(addr));
        e.user_agent = Some(agents[(token % 4) as usize].into());
        e.device_id = Some(format!("dev-{}", token % 1000));
        e.principal = Some(format!("svc-{}", token % 300));
        e.bytes_out = Some(500 + rng.next_u64() % 5000);
        e.records_out = Some(1 + rng.next_u64() % 20);
        e.status = Some(200);
        e.request_id = Some(format!("req-{i}"));
        events.push(e);
        origins.push(Origin {
            topic: topic.clone(),
            partition: (token % 8) as i32,
            offset: i as i64,
            kafka_ts_ms: None,
        });
    }
    (events, origins)
}

fn metadata() -> MetadataStore {
    let mut m = MetadataStore::default();
    for t in 0..TOKENS {
        let md = TokenMetadata {
            issuer: "oauth".into(),
            token_id: format!("tok-{t:05}"),
            scopes: Some(vec![
                "GET /v1/*".into(),
                "POST /v1/orders".into(),
                "s3:Get*".into(),
                "repo.*".into(),
            ]),
            bound_cidrs: (t % 10 == 0).then(|| vec!["20.0.0.0/8".into(), "21.0.0.0/8".into()]),
            expires_at: Some(T0_MS + 86_400_000),
            ..Default::default()
        };
        m.upsert(&md).unwrap();
    }
    m
}

fn enrichment(c: &mut Criterion) {
    let (events, _) = mix();
    let ips: Vec<IpAddr> = events.iter().filter_map(|e| e.src_ip).collect();
    let mut group = c.benchmark_group("enrich");
    group
        .throughput(Throughput::Elements(ips.len() as u64))
        .sample_size(10);
    let mut geo = GeoIp::open(&geoip_config()).unwrap();
    for &a in &ips {
        geo.lookup(a);
    }
    group.bench_function("cached", |b| {
        b.iter(|| ips.iter().for_each(|&a| drop(black_box(geo.lookup(a)))))
    });
    group.bench_function("uncached", |b| {
        b.iter(|| {
            ips.iter()
                .for_each(|&a| drop(black_box(geo.lookup_uncached(a))))
        })
    });
    group.finish();
}

fn enriched() -> (Vec<Event>, Vec<Origin>) {
    let (mut events, origins) = mix();
    let mut engine = Engine::build(
        &DetectorsConfig {
            geoip: Some(geoip_config()),
            ..Default::default()
        },
        &DecisionConfig::default(),
    )
    .unwrap();
    engine.process(&mut events, &origins);
    (events, origins)
}

fn per_detector(c: &mut Criterion) {
    let (events, origins) = enriched();
    let meta = metadata();
    let detectors: Vec<(&str, Box<dyn Detector>)> = vec![
        ("state_lookup_only", Box::new(ExpiryDetector)),
        (
            "volume",
            Box::new(VolumeDetector::new(VolumeConfig::default())),
        ),
        (
            "geo",
            Box::new(GeoDetector::new(
                GeoConfig::default(),
                LearningConfig::default(),
                Networks::new(&NetworksConfig::default()),
            )),
        ),
        (
            "novelty",
            Box::new(NoveltyDetector::new(
                NoveltyConfig::default(),
                LearningConfig::default(),
            )),
        ),
        ("binding", Box::new(BindingDetector)),
        ("scope", Box::new(ScopeDetector)),
        ("expiry", Box::new(ExpiryDetector)),
    ];
    let mut group = c.benchmark_group("detector");
    group
        .throughput(Throughput::Elements(events.len() as u64))
        .sample_size(10);
    for (name, detector) in &detectors {
        let with_meta = *name != "state_lookup_only";
        group.bench_with_input(BenchmarkId::from_parameter(name), detector, |b, d| {
            b.iter_batched(
                || TokenStore::new(1_000_000, u32::MAX),
                |mut store| {
                    let mut out = Vec::new();
                    for (e, o) in events.iter().zip(&origins) {
                        let key = store.key(&e.issuer, &e.token_id);
                        let ts_s = (e.ts_ms / 1000) as u32;
                        let metadata = if with_meta {
                            meta.get(&e.issuer, &e.token_id)
                        } else {
                            None
                        };
                        let obs = Observation {
                            event: e,
                            origin: o,
                            ts_s,
                            anonymity: Default::default(),
                            metadata,
                        };
                        d.observe(&obs, store.get_or_insert(key, ts_s), &mut out);
                        out.clear();
                    }
                    store
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The example rule files' rules, minus the one that needs an
/// Anonymous-IP database, plus the SPEC's admin example: five rules.
fn example_rules() -> Vec<detectors::policy::RuleConfig> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let mut rules = Vec::new();
    for file in ["exfiltration.toml", "aws.toml", "admin.toml"] {
        let f = detectors::policy::RuleFile::load(&dir.join(file)).unwrap();
        rules.extend(
            f.rules
                .into_iter()
                .filter(|r| !r.when.contains("is_anonymous_ip")),
        );
    }
    rules
}

fn chain(c: &mut Criterion) {
    let (events, origins) = mix();
    let meta = metadata();
    let mut group = c.benchmark_group("engine");
    group
        .throughput(Throughput::Elements(events.len() as u64))
        .sample_size(10);
    let engine_with = |rules: &[detectors::policy::RuleConfig]| {
        let geo = GeoIp::open(&geoip_config()).unwrap();
        let mut engine = Engine::with_parts(
            &DetectorsConfig::default(),
            &DecisionConfig::default(),
            Some(geo),
            meta.clone(),
        );
        engine.reload_policy(rules).unwrap();
        engine
    };
    for (name, rules) in [
        ("realistic_mix", Vec::new()),
        ("realistic_mix_5_rules", example_rules()),
    ] {
        // From events, as replay calls it.
        group.bench_function(name, |b| {
            b.iter_batched(
                || (engine_with(&rules), events.clone()),
                |(mut engine, mut evs)| {
                    for (chunk, origins) in evs.chunks_mut(BATCH).zip(origins.chunks(BATCH)) {
                        black_box(engine.process(chunk, origins));
                    }
                    engine
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, enrichment, per_detector, chain);
criterion_main!(benches);
