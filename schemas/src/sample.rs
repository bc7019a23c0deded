//! Realistic sample events for benchmarks, demos and tests: 300–450 bytes
//! of canonical JSON, many tokens and addresses, stable for a given index.

use std::net::IpAddr;

use crate::event::Event;

/// Principals (services) the tokens belong to; each calls from its own
/// network, a /18 of the 4,096 in `20.0.0.0/6` that the synthetic GeoIP
/// fixtures place in many cities and countries.
pub const PRINCIPALS: usize = 2_000;

/// One in this many events is an attack: the token calls from another
/// service's network, far from its own (impossible travel, a new country).
pub const ATTACK_EVERY: usize = 100_000;

/// Event number `i` of a stream over `tokens` tokens, with event time
/// `t0_ms + i`. A token belongs to principal `token % PRINCIPALS` and calls
/// from its own address in its principal's network, except the attacks
/// (one in [`ATTACK_EVERY`]).
pub fn realistic(i: usize, tokens: usize, t0_ms: i64) -> Event {
    let token = i % tokens.max(1);
    let principal = token % PRINCIPALS;
    let attack = i % ATTACK_EVERY == ATTACK_EVERY - 1;
    let network = (principal as u32 * 769 + if attack { 2048 } else { 0 }) % 4096;
    let host = 1 + (token / PRINCIPALS) as u32 % 16_000;
    let address = (20u32 << 24) + (network << 14) + host;
    let mut e = Event::new(
        t0_ms + i as i64,
        format!("tok-{token:06}"),
        "oauth",
        "GET /v1/orders/{id}",
    );
    e.principal = Some(format!("svc-orders-{principal}"));
    e.src_ip = Some(IpAddr::from(address.to_be_bytes()));
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
