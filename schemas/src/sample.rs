//! Realistic sample events for benchmarks, demos and tests: 300–450 bytes
//! of canonical JSON, many tokens and addresses, stable for a given index.

use std::net::IpAddr;

use crate::event::Event;

/// Event number `i` of a stream over `tokens` tokens, with event time
/// `t0_ms + i` and the source address in `20.0.0.0/7` (the range the
/// synthetic GeoIP fixtures cover).
pub fn realistic(i: usize, tokens: usize, t0_ms: i64) -> Event {
    let token = i % tokens.max(1);
    let mut e = Event::new(
        t0_ms + i as i64,
        format!("tok-{token:06}"),
        "oauth",
        "GET /v1/orders/{id}",
    );
    e.principal = Some(format!("svc-orders-{}", token % 40));
    e.src_ip = Some(IpAddr::from([
        20 + (token >> 16 & 1) as u8,
        (token >> 8) as u8,
        token as u8,
        1 + (i % 200) as u8,
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

/// Deterministic pseudo-random numbers (splitmix64), for generators that
/// must give the same stream for the same seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
