//! Test helpers: events with injected time and geo data, and a harness that
//! drives one detector over a token's events. No clocks, no sleeps.

use std::net::IpAddr;
use std::sync::Arc;

use schemas::{Event, Finding, Origin};

use crate::detector::{Detector, Observation};
use crate::geoip::Anonymity;
use crate::metadata::CompiledMetadata;
use crate::state::TokenState;

pub const T0_MS: i64 = 1_795_813_200_000; // 2026-11-27T21:00:00Z
pub const MIN_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

pub fn origin(offset: i64) -> Origin {
    Origin {
        topic: Arc::from("events"),
        partition: 0,
        offset,
        kafka_ts_ms: None,
    }
}

/// An event of token `tok-1` at `ts_ms`.
pub fn event(ts_ms: i64) -> Event {
    let mut e = Event::new(ts_ms, "tok-1", "oauth", "GET /v1/orders/{id}");
    e.request_id = Some(format!("req-{ts_ms}"));
    e
}

/// Places an event at a city: (ip, country, lat, lon, radius km, asn).
pub fn at(
    mut e: Event,
    ip: &str,
    country: &str,
    lat: f64,
    lon: f64,
    radius: u16,
    asn: u32,
) -> Event {
    e.src_ip = Some(ip.parse::<IpAddr>().unwrap());
    e.country = Some(country.into());
    e.lat = Some(lat);
    e.lon = Some(lon);
    e.accuracy_km = Some(radius);
    e.asn = Some(asn);
    e
}

pub fn london(e: Event) -> Event {
    at(e, "81.2.69.142", "GB", 51.5142, -0.0931, 10, 20712)
}

pub fn changchun(e: Event) -> Event {
    at(e, "175.16.199.1", "CN", 43.88, 125.3228, 100, 4837)
}

pub fn linkoping(e: Event) -> Event {
    at(e, "89.160.20.112", "SE", 58.4167, 15.6167, 76, 29518)
}

/// Learning that needs one event and a day of history, at full confidence.
pub fn learning_one_day() -> crate::learning::LearningConfig {
    crate::learning::LearningConfig {
        min_events: 1,
        min_history: std::time::Duration::from_secs(86_400),
        full_confidence_events: 1,
    }
}

/// Drives one detector over one token's events, in order.
pub struct Harness<D: Detector> {
    pub detector: D,
    pub state: TokenState,
    pub metadata: Option<CompiledMetadata>,
    pub anonymity: Anonymity,
    offset: i64,
}

impl<D: Detector> Harness<D> {
    pub fn new(detector: D, first_ts_ms: i64) -> Self {
        let state = TokenState {
            first_seen_s: (first_ts_ms / 1000) as u32,
            ..Default::default()
        };
        Harness {
            detector,
            state,
            metadata: None,
            anonymity: Anonymity::default(),
            offset: 0,
        }
    }

    pub fn feed(&mut self, e: &Event) -> Vec<Finding> {
        self.offset += 1;
        let o = origin(self.offset);
        let ts_s = (e.ts_ms / 1000) as u32;
        self.state.last_seen_s = self.state.last_seen_s.max(ts_s);
        self.state.events = self.state.events.saturating_add(1);
        let obs = Observation {
            event: e,
            origin: &o,
            ts_s,
            anonymity: self.anonymity,
            metadata: self.metadata.as_ref(),
        };
        let mut out = Vec::new();
        self.detector.observe(&obs, &mut self.state, &mut out);
        out
    }

    /// Feeds all, returning every finding.
    pub fn feed_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) -> Vec<Finding> {
        events.into_iter().flat_map(|e| self.feed(e)).collect()
    }
}
