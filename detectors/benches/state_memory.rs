//! Memory per token at scale (SPEC §9, R3): RSS growth divided by active
//! tokens, after 1M distinct tokens have each gone through every detector.
//!
//!     cargo bench -p detectors --bench state_memory -- [TOKENS]

use std::sync::Arc;

use detectors::decision::DecisionConfig;
use detectors::{DetectorsConfig, Engine};
use schemas::{Event, Origin};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let tokens: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let config = DetectorsConfig {
        max_tokens: tokens as usize,
        ..Default::default()
    };
    let mut engine = Engine::build(&config, &DecisionConfig::default()).unwrap();
    let topic: Arc<str> = Arc::from("mem");
    let before = rss_bytes();
    let chunk = 10_000u64;
    let mut t = 0u64;
    while t < tokens {
        let n = chunk.min(tokens - t);
        let mut events: Vec<Event> = (t..t + n)
            .map(|i| {
                let mut e = Event::new(
                    1_795_813_200_000 + i as i64,
                    format!("tok-{i:08}"),
                    "oauth",
                    "GET /v1/orders/{id}",
                );
                e.src_ip = Some(std::net::IpAddr::from([
                    20,
                    (i >> 16) as u8,
                    (i >> 8) as u8,
                    i as u8,
                ]));
                e.country = Some(["GB", "US", "DE", "JP"][(i % 4) as usize].into());
                e.lat = Some(51.5);
                e.lon = Some(-0.1);
                e.accuracy_km = Some(20);
                e.asn = Some(64500 + (i % 100) as u32);
                e.user_agent = Some("orders-client/3.2".into());
                e.bytes_out = Some(1000);
                e
            })
            .collect();
        let origins: Vec<Origin> = (t..t + n)
            .map(|i| Origin {
                topic: topic.clone(),
                partition: 0,
                offset: i as i64,
                kafka_ts_ms: None,
            })
            .collect();
        engine.process(&mut events, &origins);
        t += n;
    }
    let after = rss_bytes();
    let stats = engine.stats();
    assert_eq!(stats.store.tokens as u64, tokens);
    println!("active tokens:               {}", stats.store.tokens);
    println!(
        "RSS growth:                  {:.1} MiB",
        (after - before) as f64 / (1 << 20) as f64
    );
    println!(
        "RSS growth per token:        {:.0} B (goal ≤ 256 B)",
        (after - before) as f64 / tokens as f64
    );
    println!(
        "store structures per token:  {:.0} B (slab + index capacity)",
        engine.state_bytes_per_token()
    );
}
