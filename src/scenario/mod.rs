//! Realistic traffic with scripted attacks, for `demo`, `gen` and the
//! end-to-end tests. Deterministic for a seed. Addresses come from the
//! synthetic GeoIP data shipped in `tests/fixtures/geoip` (made-up
//! assignments of 20.0.0.0/7 to real cities), looked up here so that each
//! attack really crosses the lines it should.
//!
//! Time is virtual: events span `duration_ms` from `start_ms`. The first
//! third is the learning period ([`Scenario::detectors_config`] scales the
//! detectors to it); attacks happen in the last third.
//!
//! Benign tokens include the traps that fool naive detectors: services
//! alternating between two egress points, travellers (a flight abroad),
//! phones hopping a carrier's gateways and CI runners hopping a cloud's
//! regions (one synthetic ASN each is declared mobile and hosting in
//! [`Scenario::detectors_config`]). Distances are the scenario's own
//! great-circle computation, not the detector's.

use std::net::IpAddr;

use detectors::learning::LearningConfig;
use detectors::networks::NetworksConfig;
use detectors::novelty::NoveltyConfig;
use detectors::volume::VolumeConfig;
use detectors::{DetectorsConfig, GeoIp};
use schemas::sample::Rng;
use schemas::{Event, TokenMetadata};

use crate::quality::world::great_circle_km;

/// Synthetic GeoIP data, embedded so `demo` needs no download.
pub const CITY_DB: &[u8] = include_bytes!("../../tests/fixtures/geoip/synthetic-city.mmdb");
pub const ASN_DB: &[u8] = include_bytes!("../../tests/fixtures/geoip/synthetic-asn.mmdb");

/// The scripted attacks.
pub const ATTACKS: [&str; 5] = [
    "slow_takeover",
    "mass_export",
    "impossible_travel",
    "out_of_scope_admin",
    "outside_bound_cidr",
];

/// One scripted attack: which token, and from when.
#[derive(Debug, Clone, PartialEq)]
pub struct Attack {
    pub name: &'static str,
    pub token_id: String,
    /// Virtual time of the first malicious call.
    pub at_ms: i64,
}

/// A generated scenario.
pub struct Scenario {
    /// Every event, in event-time order, keyed by token.
    pub events: Vec<Event>,
    /// Issuer-side metadata for some tokens (scopes, bindings, expiry).
    pub metadata: Vec<TokenMetadata>,
    pub attacks: Vec<Attack>,
    pub benign_tokens: Vec<String>,
    pub start_ms: i64,
    pub duration_ms: i64,
    /// Benign tokens that are traps, by trap (`egress_pair`, `traveller`,
    /// `phone`, `ci_runner`); the rest call from one home.
    pub traps: std::collections::BTreeMap<String, &'static str>,
    /// The synthetic ASNs the traps use as a cloud and a carrier.
    pub hosting_asn: u32,
    pub mobile_asn: u32,
}

/// Event-time order, ties broken by request id: a stream as a source
/// keyed by token would deliver it, and the same for the same seed.
pub fn sort_by_time(events: &mut [Event]) {
    events.sort_by(|a, b| {
        a.ts_ms
            .cmp(&b.ts_ms)
            .then_with(|| a.request_id.cmp(&b.request_id))
    });
}

/// Where a token's calls come from.
struct Route {
    places: Vec<Place>,
    /// A trip: from `places[0]` to `places[1]`, silent while flying.
    trip: Option<(i64, i64)>,
}

impl Route {
    fn home(place: &Place) -> Self {
        Route {
            places: vec![place.clone()],
            trip: None,
        }
    }

    /// The place of call `n` at `t`, or `None` in flight.
    fn at(&self, t: i64, n: u64) -> Option<&Place> {
        match self.trip {
            Some((leave, _)) if t < leave => self.places.first(),
            Some((_, arrive)) if t < arrive => None,
            Some(_) => self.places.get(1),
            None => self.places.get(n as usize % self.places.len().max(1)),
        }
    }
}

/// A located address of the synthetic data.
#[derive(Clone)]
struct Place {
    ip: IpAddr,
    country: String,
    lat: f64,
    lon: f64,
    radius: u16,
    asn: u32,
}

fn places(geoip: &mut GeoIp) -> Vec<Place> {
    // One address per /18 of the synthetic data: 2,048 places.
    (0..2048u32)
        .filter_map(|n| {
            let ip = IpAddr::from([
                20 + (n / 1024) as u8,
                ((n / 4) % 256) as u8,
                ((n % 4) * 64 + 7) as u8,
                9,
            ]);
            let g = geoip.lookup(ip);
            Some(Place {
                ip,
                country: g.country?.to_string(),
                lat: g.lat?,
                lon: g.lon?,
                radius: g.accuracy_km.unwrap_or(0),
                asn: g.asn?,
            })
        })
        .collect()
}

const USER_AGENTS: [&str; 4] = [
    "orders-client/3.2.1",
    "aws-cli/2.13.5 Python/3.11.6",
    "billing-sync/1.4",
    "okhttp/4.12.0",
];
const ACTION_SETS: [&[&str]; 3] = [
    &["GET /v1/orders/{id}", "GET /v1/orders", "POST /v1/orders"],
    &["GET /v1/customers/{id}", "GET /v1/customers"],
    &[
        "GET /v1/invoices/{id}",
        "GET /v1/invoices",
        "POST /v1/payments",
    ],
];

impl Scenario {
    /// The attack tokens, sorted: what a run should revoke, each once.
    pub fn attack_tokens(&self) -> Vec<String> {
        let mut tokens: Vec<String> = self.attacks.iter().map(|a| a.token_id.clone()).collect();
        tokens.sort();
        tokens
    }

    /// `benign` normal tokens plus one token per attack, over `duration_ms`
    /// of virtual time. Each benign token calls every `mean_interval_ms` on
    /// average (diurnal: busier mid-day), from one home address.
    pub fn generate(
        seed: u64,
        benign: usize,
        start_ms: i64,
        duration_ms: i64,
        mean_interval_ms: i64,
    ) -> Self {
        let mut geoip = GeoIp::from_bytes(CITY_DB.to_vec(), Some(ASN_DB.to_vec()), None)
            .unwrap_or_else(|e| unreachable!("the embedded GeoIP data is valid: {e}"));
        let places: Vec<Place> = places(&mut geoip)
            .into_iter()
            .filter(|p| p.radius <= 50)
            .collect();
        let mut rng = Rng(seed);
        let mut events = Vec::new();
        let mut metadata = Vec::new();
        let attack_start = start_ms + duration_ms * 2 / 3;

        let token = |name: String,
                     route: &Route,
                     actions: &[&str],
                     ua: &str,
                     rng: &mut Rng,
                     until: i64,
                     events: &mut Vec<Event>| {
            let interval =
                (mean_interval_ms / 2 + rng.below(mean_interval_ms as u64) as i64).max(1000);
            let mut t = start_ms + rng.below(interval as u64) as i64;
            let mut n = 0u64;
            while t < until {
                let Some(place) = route.at(t, n) else {
                    t += interval;
                    continue;
                };
                let mut e = Event::new(
                    t,
                    name.clone(),
                    "demo-oauth",
                    actions[(n as usize) % actions.len()],
                );
                e.principal = Some(format!("svc-{}", &name[name.len().saturating_sub(3)..]));
                e.src_ip = Some(place.ip);
                e.user_agent = Some(ua.into());
                e.status = Some(200);
                e.bytes_out = Some(400 + rng.below(4000));
                e.records_out = Some(1 + rng.below(20));
                e.request_id = Some(format!("{name}-{n}"));
                events.push(e);
                n += 1;
                // Diurnal: calls come up to twice as often around mid-day.
                let hour = ((t / 3_600_000) % 24) as f64;
                let busy = 1.0 + (std::f64::consts::PI * hour / 24.0).sin();
                t += ((interval as f64) / busy.max(0.5)) as i64
                    + rng.below(interval as u64 / 4 + 1) as i64;
            }
        };

        // The two ASNs with the most places play a cloud and a carrier.
        let mut by_asn: std::collections::BTreeMap<u32, Vec<Place>> = Default::default();
        for p in &places {
            by_asn.entry(p.asn).or_default().push(p.clone());
        }
        let mut fleets: Vec<(u32, Vec<Place>)> = by_asn.into_iter().collect();
        fleets.sort_by_key(|(asn, ps)| (std::cmp::Reverse(ps.len()), *asn));
        let (hosting_asn, cloud) = fleets[0].clone();
        let (mobile_asn, carrier) = fleets[1 % fleets.len()].clone();
        let ordinary: Vec<Place> = places
            .iter()
            .filter(|p| p.asn != hosting_asn && p.asn != mobile_asn)
            .cloned()
            .collect();

        let mut benign_tokens = Vec::new();
        let mut traps = std::collections::BTreeMap::new();
        for i in 0..benign {
            let name = format!("tok-{i:05}");
            let home = ordinary[rng.below(ordinary.len() as u64) as usize].clone();
            let actions = ACTION_SETS[i % ACTION_SETS.len()];
            let ua = USER_AGENTS[i % USER_AGENTS.len()];
            if let Some(trap) =
                ["egress_pair", "traveller", "phone", "ci_runner"].get((i % 10).wrapping_sub(1))
            {
                traps.insert(name.clone(), *trap);
            }
            let route = match i % 10 {
                // Two egress points of one network in one country.
                1 => {
                    let twin = ordinary.iter().find(|p| {
                        p.asn == home.asn && p.country == home.country && p.ip != home.ip
                    });
                    Route {
                        places: std::iter::once(home.clone()).chain(twin.cloned()).collect(),
                        trip: None,
                    }
                }
                // A traveller: the nearest flight abroad (over 1,200 km),
                // leaving at a third of the time.
                2 => match ordinary
                    .iter()
                    .map(|p| (great_circle_km(home.lat, home.lon, p.lat, p.lon), p))
                    .filter(|(km, p)| p.country != home.country && *km > 1200.0)
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                {
                    Some((km, away)) => {
                        let leave = start_ms + duration_ms / 3;
                        let arrive = leave + ((km / 800.0 + 1.0) * 3_600_000.0) as i64;
                        Route {
                            places: vec![home.clone(), away.clone()],
                            trip: Some((leave, arrive)),
                        }
                    }
                    None => Route::home(&home),
                },
                // A phone on the carrier's gateways, a CI runner on the cloud's regions.
                3 => Route {
                    places: carrier.clone(),
                    trip: None,
                },
                4 => Route {
                    places: cloud.clone(),
                    trip: None,
                },
                _ => Route::home(&home),
            };
            token(
                name.clone(),
                &route,
                actions,
                ua,
                &mut rng,
                start_ms + duration_ms,
                &mut events,
            );
            // Some benign tokens carry metadata they honour: it must not fire.
            if i % 10 == 0 {
                metadata.push(TokenMetadata {
                    issuer: "demo-oauth".into(),
                    token_id: name.clone(),
                    scopes: Some(actions.iter().map(|a| a.replace("{id}", "*")).collect()),
                    bound_cidrs: Some(
                        vec![format!("{}/18", home.ip)]
                            .into_iter()
                            .map(|c| trunc18(&c))
                            .collect(),
                    ),
                    expires_at: Some(start_ms + 10 * duration_ms),
                    ..Default::default()
                });
            }
            benign_tokens.push(name);
        }

        let mut attacks = Vec::new();
        let home = ordinary[0].clone();
        for (k, name) in ATTACKS.iter().enumerate() {
            let token_id = format!("atk-{name}");
            let at_ms = attack_start + (k as i64) * duration_ms / 24;
            // Every attack token first behaves normally, like a real one.
            token(
                token_id.clone(),
                &Route::home(&home),
                ACTION_SETS[0],
                USER_AGENTS[0],
                &mut rng,
                at_ms,
                &mut events,
            );
            let base = |t: i64, n: u64| {
                let mut e = Event::new(t, token_id.clone(), "demo-oauth", "GET /v1/orders");
                e.principal = Some("svc-atk".into());
                e.src_ip = Some(home.ip);
                e.user_agent = Some(USER_AGENTS[0].into());
                e.status = Some(200);
                e.request_id = Some(format!("{token_id}-attack-{n}"));
                e
            };
            match *name {
                "mass_export" => {
                    // 40 exports of 50 MB within a minute, 2 GB, by the
                    // thief's own script from far away: a volume cap and
                    // impossible travel, two kinds of evidence that need
                    // no learned history (a restarted instance sees them).
                    let far = ordinary
                        .iter()
                        .rev()
                        .find(|p| {
                            p.country != home.country
                                && great_circle_km(home.lat, home.lon, p.lat, p.lon) > 3000.0
                        })
                        .unwrap_or(&ordinary[ordinary.len() - 1]);
                    events.push(base(at_ms - 1000, 100));
                    for n in 0..40 {
                        let mut e = base(at_ms + n as i64 * 1500, n);
                        e.src_ip = Some(far.ip);
                        e.user_agent = Some("python-requests/2.31.0".into());
                        e.action = "GET /v1/orders/export".into();
                        e.bytes_out = Some(50 << 20);
                        e.records_out = Some(100_000);
                        events.push(e);
                    }
                }
                "impossible_travel" => {
                    let far = ordinary
                        .iter()
                        .find(|p| {
                            p.country != home.country
                                && great_circle_km(home.lat, home.lon, p.lat, p.lon) > 3000.0
                        })
                        .unwrap_or(&ordinary[ordinary.len() - 1]);
                    events.push(base(at_ms, 0));
                    // The thief, far away, with their own client.
                    let mut e = base(at_ms + 10 * 60_000, 1);
                    e.src_ip = Some(far.ip);
                    e.user_agent = Some("curl/8.5.0".into());
                    events.push(e);
                }
                "out_of_scope_admin" => {
                    metadata.push(TokenMetadata {
                        issuer: "demo-oauth".into(),
                        token_id: token_id.clone(),
                        scopes: Some(vec!["GET /v1/orders*".into(), "POST /v1/orders".into()]),
                        ..Default::default()
                    });
                    let mut e = base(at_ms, 0);
                    e.action = "DELETE /admin/users/42".into();
                    events.push(e);
                }
                "outside_bound_cidr" => {
                    metadata.push(TokenMetadata {
                        issuer: "demo-oauth".into(),
                        token_id: token_id.clone(),
                        bound_cidrs: Some(vec![trunc18(&format!("{}/18", home.ip))]),
                        ..Default::default()
                    });
                    let elsewhere = ordinary
                        .iter()
                        .find(|p| p.country == home.country && p.ip != home.ip)
                        .unwrap_or(&ordinary[1]);
                    let mut e = base(at_ms, 0);
                    e.src_ip = Some(elsewhere.ip);
                    events.push(e);
                }
                _ => {
                    // A slow takeover: long after learning, a new country, a
                    // new network, a new client and a new kind of call, at a
                    // normal pace and plausible distance: under 900 km an
                    // hour after the owner's last call. First of the attacks,
                    // so it ends before the scenario does.
                    let new = ordinary
                        .iter()
                        .find(|p| {
                            p.country != home.country
                                && p.asn != home.asn
                                && great_circle_km(home.lat, home.lon, p.lat, p.lon) < 900.0
                        })
                        .unwrap_or(&ordinary[2]);
                    for n in 0..5 {
                        let mut e = base(at_ms + duration_ms / 6 + n as i64 * 300_000, n);
                        e.src_ip = Some(new.ip);
                        e.user_agent = Some("python-requests/2.31.0".into());
                        e.action = "GET /v1/admin/users".into();
                        events.push(e);
                    }
                }
            }
            attacks.push(Attack {
                name,
                token_id,
                at_ms,
            });
        }
        sort_by_time(&mut events);
        Scenario {
            events,
            metadata,
            attacks,
            benign_tokens,
            start_ms,
            duration_ms,
            traps,
            hosting_asn,
            mobile_asn,
        }
    }

    /// Detector settings scaled to the scenario: learning in the first
    /// third, volume warm-up in the first sixth; the rest at defaults.
    pub fn detectors_config(&self) -> DetectorsConfig {
        let learning = std::time::Duration::from_millis((self.duration_ms / 3) as u64);
        DetectorsConfig {
            idle_expiry: std::time::Duration::from_millis((self.duration_ms * 10) as u64)
                .max(std::time::Duration::from_secs(3600)),
            volume: VolumeConfig {
                warmup: learning / 2,
                ..Default::default()
            },
            learning: LearningConfig {
                min_history: learning,
                min_events: 20,
                full_confidence_events: 40,
            },
            novelty: NoveltyConfig {
                forget_after: learning * 30,
                ..Default::default()
            },
            networks: NetworksConfig {
                hosting_asns: vec![self.hosting_asn],
                mobile_asns: vec![self.mobile_asn],
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// `a.b.c.d/18` → the /18 network it lies in.
fn trunc18(cidr: &str) -> String {
    cidr.parse::<ipnet::IpNet>()
        .map(|n| n.trunc().to_string())
        .unwrap_or_else(|_| cidr.to_string())
}

#[cfg(test)]
mod tests;
