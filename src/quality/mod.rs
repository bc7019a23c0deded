//! The quality benchmark: a labelled stream with real geography (the real
//! DB-IP Lite and ASN databases, see [`world`]), run through the detection
//! engine with the shipped defaults, and scored ([`score`]): attacks
//! revoked and alerted, benign tokens revoked and alerted per trap, and the
//! lag from an attack's start to its revocation.
//!
//! Benign traps are the traffic that fools naive detectors: multi-egress
//! services, travellers, phones on carrier networks, CI runners hopping
//! cloud regions, growing services and nightly batches. Attacks are what a
//! thief does with a token: bursts from hosting networks abroad or at home,
//! use from another continent, low-and-slow enumeration, and parallel use
//! beside the owner. Deterministic for a seed.

pub mod score;
pub mod world;

use detectors::networks::NetworkKind;
use schemas::Event;
use schemas::sample::Rng;
use world::{Place, World};

pub const TRAPS: [&str; 7] = [
    "steady",
    "multi_egress",
    "traveller",
    "mobile",
    "ci_runner",
    "growing",
    "nightly_batch",
];
pub const ATTACKS: [&str; 5] = [
    "burst",
    "travel",
    "enumeration",
    "hosting_burst_home",
    "parallel",
];

const HOUR_MS: i64 = 3_600_000;
const MIN_MS: i64 = 60_000;
const ACTIONS: [&str; 3] = ["GET /v1/orders/{id}", "GET /v1/orders", "POST /v1/orders"];
const OWNER_UAS: [&str; 4] = [
    "orders-client/3.2.1",
    "Boto3/1.34.2 Python/3.12.1",
    "okhttp/4.12.0",
    "billing-sync/1.4",
];

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    Benign(&'static str),
    Attack(&'static str),
}

/// One token of the stream.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub token_id: String,
    pub label: Label,
    /// The first malicious call.
    pub attack_start_ms: Option<i64>,
}

pub struct Stream {
    /// In event-time order.
    pub events: Vec<Event>,
    pub tokens: Vec<Labelled>,
    pub start_ms: i64,
    pub days: u32,
}

/// One token's calls, appended to `out`.
struct Caller<'a> {
    token: &'a str,
    ua: &'a str,
    out: &'a mut Vec<Event>,
}

impl Caller<'_> {
    fn call(&mut self, ts: i64, place: &Place, action: &str, bytes: u64) {
        let n = self.out.len();
        let mut e = Event::new(ts, self.token, "api", action);
        e.principal = Some(format!("owner-{}", self.token));
        e.src_ip = Some(place.ip);
        e.user_agent = Some(self.ua.into());
        e.status = Some(200);
        e.bytes_out = Some(bytes);
        e.request_id = Some(format!("{}-{n}", self.token));
        self.out.push(e);
    }
}

/// The thief's calls, from `at`.
fn attack(kind: &str, place: &Place, owner_ua: &str, at: i64, c: &mut Caller) {
    let (ua, calls, every_ms, action, bytes): (&str, i64, i64, &str, u64) = match kind {
        // 1,500 exports in 5 minutes by the thief's script, from a cloud abroad.
        "burst" => (
            "python-requests/2.31.0",
            1500,
            200,
            "GET /v1/orders/export",
            200_000,
        ),
        // 1,000 exports in 5 minutes from a cloud at home, the owner's client copied.
        "hosting_burst_home" => (owner_ua, 1000, 300, "GET /v1/orders/export", 200_000),
        // Ten calls from another continent.
        "travel" => ("curl/8.5.0", 10, MIN_MS, ACTIONS[0], 2000),
        // An hour of calls from another continent while the owner works on.
        "parallel" => ("Go-http-client/1.1", 30, 2 * MIN_MS, ACTIONS[0], 2000),
        // Low and slow: one admin read a minute from a cloud, for an hour.
        _ => (
            "python-requests/2.31.0",
            60,
            MIN_MS,
            "GET /v1/admin/users/{id}",
            1500,
        ),
    };
    let mut thief = Caller {
        token: c.token,
        ua,
        out: &mut *c.out,
    };
    for n in 0..calls {
        thief.call(at + n * every_ms, place, action, bytes);
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

/// `tokens` tokens over `days` days from `start_ms`: about one in 25 an
/// attack (at least one of each kind), the rest benign traps.
pub fn generate(world: &World, tokens: usize, days: u32, start_ms: i64, seed: u64) -> Stream {
    let mut rng = Rng(seed);
    let end = start_ms + i64::from(days) * 24 * HOUR_MS;
    let homes = world.of_kind(NetworkKind::Other);
    let egress = world.spread_networks(NetworkKind::Other, 2);
    let mut carriers = world.spread_networks(NetworkKind::Mobile, 2);
    if carriers.is_empty() {
        carriers = world
            .of_kind(NetworkKind::Mobile)
            .into_iter()
            .map(|p| vec![p])
            .collect();
    }
    let clouds: Vec<&Place> = world.of_kind(NetworkKind::Hosting);
    let attacks = (tokens / 25).max(ATTACKS.len());
    let mut events = Vec::new();
    let mut labelled = Vec::new();
    for i in 0..tokens {
        let token_id = format!("tok-{i:05}");
        let home = *pick(&mut rng, &homes);
        let ua = OWNER_UAS[i % OWNER_UAS.len()];
        let mut c = Caller {
            token: &token_id,
            ua,
            out: &mut events,
        };
        let steady = |c: &mut Caller, rng: &mut Rng, place: &Place, every_ms: i64| {
            let mut t = start_ms + rng.below(every_ms as u64) as i64;
            while t < end {
                c.call(
                    t,
                    place,
                    ACTIONS[rng.below(3) as usize],
                    800 + rng.below(4000),
                );
                t += every_ms / 2 + rng.below(every_ms as u64) as i64;
            }
        };
        if i < attacks {
            let kind = ATTACKS[i % ATTACKS.len()];
            let mut thief_rng = Rng(seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
            let mut thief = |net, min_km, same| world.away(home, net, min_km, same, &mut thief_rng);
            let place = match kind {
                "burst" | "enumeration" => thief(NetworkKind::Hosting, 0.0, false),
                "hosting_burst_home" => thief(NetworkKind::Hosting, 0.0, true),
                _ => thief(NetworkKind::Other, 5000.0, false),
            };
            if let Some(place) = place {
                steady(&mut c, &mut rng, home, 2 * MIN_MS);
                let span = end - start_ms;
                let at = start_ms + span * 6 / 10 + rng.below((span * 3 / 10) as u64) as i64;
                attack(kind, place, ua, at, &mut c);
                labelled.push(Labelled {
                    token_id: token_id.clone(),
                    label: Label::Attack(kind),
                    attack_start_ms: Some(at),
                });
                continue;
            }
        }
        let trap = match rng.below(20) {
            0..=7 => "steady",
            8..=10 => "multi_egress",
            11..=12 => "traveller",
            13..=14 => "mobile",
            15..=16 => "ci_runner",
            17..=18 => "growing",
            _ => "nightly_batch",
        };
        match trap {
            "multi_egress" if !egress.is_empty() => {
                let points = pick(&mut rng, &egress).clone();
                let mut t = start_ms + rng.below(MIN_MS as u64) as i64;
                while t < end {
                    let p = *pick(&mut rng, &points);
                    c.call(t, p, ACTIONS[rng.below(3) as usize], 1500);
                    t += MIN_MS / 2 + rng.below(MIN_MS as u64) as i64;
                }
            }
            "traveller" => {
                let span = end - start_ms;
                let leave = start_ms + span * 4 / 10 + rng.below((span / 10) as u64) as i64;
                let hotel = world.away(home, NetworkKind::Other, 1500.0, false, &mut rng);
                let mut t = start_ms + rng.below(5 * MIN_MS as u64) as i64;
                let mut place = home;
                while t < end {
                    if t >= leave
                        && std::ptr::eq(place, home)
                        && let Some(h) = hotel
                    {
                        // The flight: no calls for its length plus 3 h.
                        t += ((world::km(home, h) / 800.0 + 3.0) * HOUR_MS as f64) as i64;
                        place = h;
                    }
                    c.call(t, place, "repo.read", 900);
                    t += 2 * MIN_MS + rng.below(4 * MIN_MS as u64) as i64;
                }
            }
            "mobile" if !carriers.is_empty() => {
                let net = pick(&mut rng, &carriers).clone();
                let mut t = start_ms + rng.below(3 * MIN_MS as u64) as i64;
                while t < end {
                    let phone: &&Place = pick(&mut rng, &net);
                    c.call(t, phone, ACTIONS[0], 1200);
                    t += MIN_MS + rng.below(4 * MIN_MS as u64) as i64;
                }
            }
            "ci_runner" if !clouds.is_empty() => {
                let asn = pick(&mut rng, &clouds).asn;
                let fleet: Vec<&Place> = clouds.iter().copied().filter(|p| p.asn == asn).collect();
                let mut t = start_ms + rng.below(15 * MIN_MS as u64) as i64;
                while t < end {
                    let runner = *pick(&mut rng, &fleet);
                    for n in 0..20 {
                        c.call(t + n * 2000, runner, "s3:PutObject", 30_000);
                    }
                    t += 10 * MIN_MS + rng.below(10 * MIN_MS as u64) as i64;
                }
            }
            "growing" => {
                let mut t = start_ms + rng.below(2 * MIN_MS as u64) as i64;
                while t < end {
                    c.call(t, home, ACTIONS[rng.below(3) as usize], 2000);
                    let progress = (t - start_ms) as f64 / (end - start_ms) as f64;
                    let every = (2.0 * MIN_MS as f64 * (1.0 - 0.66 * progress)) as i64;
                    t += every / 2 + rng.below(every as u64) as i64;
                }
            }
            "nightly_batch" => {
                steady(&mut c, &mut rng, home, 5 * MIN_MS);
                let first_night = start_ms - start_ms % (24 * HOUR_MS) + 2 * HOUR_MS;
                let mut night = first_night;
                while night < end {
                    if night >= start_ms {
                        for n in 0..2400 {
                            c.call(night + n * 500, home, "GET /v1/orders/export", 50_000);
                        }
                    }
                    night += 24 * HOUR_MS;
                }
            }
            _ => steady(&mut c, &mut rng, home, 2 * MIN_MS),
        }
        labelled.push(Labelled {
            token_id,
            label: Label::Benign(trap),
            attack_start_ms: None,
        });
    }
    crate::scenario::sort_by_time(&mut events);
    Stream {
        events,
        tokens: labelled,
        start_ms,
        days,
    }
}
