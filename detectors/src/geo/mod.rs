//! Geography: impossible travel between consecutive calls, and a new
//! country after the learning period. Trusted ASNs and networks (VPN or
//! corporate egress) are exempt. Every finding carries a confidence: an
//! anonymous, hosting or listed low-confidence ASN, or a large accuracy
//! radius, lowers it, and the decision caps low confidence at alert.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use schemas::{DetectorKind, Evidence, Finding};
use serde::{Deserialize, Serialize};

use crate::detector::{Detector, Observation};
use crate::state::TokenState;

/// `[detectors.geo]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// Run this detector.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Travel faster than this between two calls is impossible.
    #[serde(default = "default_max_speed")]
    pub max_speed_kmh: f64,
    /// Travel shorter than this (after subtracting both accuracy radii) is
    /// never reported, however fast.
    #[serde(default = "default_min_distance")]
    pub min_distance_km: f64,
    /// A token's countries are learnt silently for this long after its
    /// first event; later, a new country is a finding.
    #[serde(default = "default_learning", with = "humantime_serde")]
    pub learning_period: Duration,
    /// Calls from these ASNs are exempt (VPN, corporate egress).
    #[serde(default)]
    pub trusted_asns: Vec<u32>,
    /// Calls from these networks are exempt.
    #[serde(default)]
    pub trusted_cidrs: Vec<IpNet>,
    /// ASNs whose geolocation is unreliable (mobile carriers, clouds):
    /// findings involving them get low confidence.
    #[serde(default)]
    pub low_confidence_asns: Vec<u32>,
    /// An accuracy radius above this many km gives low confidence.
    #[serde(default = "default_max_accuracy")]
    pub max_accuracy_km: u16,
}

fn yes() -> bool {
    true
}
fn default_max_speed() -> f64 {
    1000.0
}
fn default_min_distance() -> f64 {
    500.0
}
fn default_learning() -> Duration {
    Duration::from_secs(3 * 86_400)
}
fn default_max_accuracy() -> u16 {
    200
}

impl Default for GeoConfig {
    fn default() -> Self {
        GeoConfig {
            enabled: true,
            max_speed_kmh: default_max_speed(),
            min_distance_km: default_min_distance(),
            learning_period: default_learning(),
            trusted_asns: Vec::new(),
            trusted_cidrs: Vec::new(),
            low_confidence_asns: Vec::new(),
            max_accuracy_km: default_max_accuracy(),
        }
    }
}

impl GeoConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.max_speed_kmh > 0.0 && self.max_speed_kmh.is_finite()) {
            p.push("detectors.geo.max_speed_kmh: must be positive".into());
        }
        if !(self.min_distance_km >= 0.0 && self.min_distance_km.is_finite()) {
            p.push("detectors.geo.min_distance_km: must be zero or more".into());
        }
        p
    }
}

const HAS_LOCATION: u8 = 1;
const LOW_CONFIDENCE: u8 = 2;
const COUNTRIES: usize = 4;

/// Per-token geo state: the last located call and the countries seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoState {
    lat: f32,
    lon: f32,
    ts_s: u32,
    ip: u32,
    accuracy_km: u16,
    country: u16,
    countries: [u16; COUNTRIES],
    next_country: u8,
    flags: u8,
}

impl GeoState {
    /// The last location and known countries, for the admin API.
    pub fn describe(&self) -> serde_json::Value {
        let countries: Vec<String> = self
            .countries
            .iter()
            .filter(|&&c| c != 0)
            .map(|&c| unpack_country(c))
            .collect();
        let last = (self.flags & HAS_LOCATION != 0).then(|| {
            serde_json::json!({
                "country": unpack_country(self.country),
                "lat": self.lat,
                "lon": self.lon,
                "accuracy_km": self.accuracy_km,
                "ts": schemas::time::format_rfc3339_ms(i64::from(self.ts_s) * 1000),
                "low_confidence": self.flags & LOW_CONFIDENCE != 0,
            })
        });
        serde_json::json!({ "last_location": last, "countries": countries })
    }
}

/// Packs an ISO 3166-1 alpha-2 code into two bytes; 0 for anything else.
pub fn pack_country(code: &str) -> u16 {
    match code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            u16::from_be_bytes([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => 0,
    }
}

fn unpack_country(code: u16) -> String {
    String::from_utf8_lossy(&code.to_be_bytes()).into_owned()
}

/// A 32-bit digest of an address, enough to tell "the same IP as last time".
fn ip_digest(ip: IpAddr) -> u32 {
    let mut h: u32 = 0x811C_9DC5;
    let bytes = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    for b in bytes {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// Great-circle distance in km (haversine, mean Earth radius).
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * a.sqrt().clamp(0.0, 1.0).asin()
}

pub struct GeoDetector {
    config: GeoConfig,
}

impl GeoDetector {
    pub fn new(config: GeoConfig) -> Self {
        GeoDetector { config }
    }

    fn trusted(&self, obs: &Observation<'_>) -> bool {
        obs.event
            .asn
            .is_some_and(|asn| self.config.trusted_asns.contains(&asn))
            || obs.event.src_ip.is_some_and(|ip| {
                self.config
                    .trusted_cidrs
                    .iter()
                    .any(|net| net.contains(&ip))
            })
    }

    /// Whether this call's location is unreliable by itself.
    fn low_confidence(&self, obs: &Observation<'_>) -> bool {
        obs.anonymity.any()
            || obs
                .event
                .asn
                .is_some_and(|asn| self.config.low_confidence_asns.contains(&asn))
            || obs
                .event
                .accuracy_km
                .is_some_and(|r| r > self.config.max_accuracy_km)
    }

    fn travel(
        &self,
        obs: &Observation<'_>,
        g: &GeoState,
        lat: f64,
        lon: f64,
        low: bool,
        out: &mut Vec<Finding>,
    ) {
        let e = obs.event;
        let raw_km = distance_km(f64::from(g.lat), f64::from(g.lon), lat, lon);
        let radii = f64::from(g.accuracy_km) + f64::from(e.accuracy_km.unwrap_or(0));
        let km = (raw_km - radii).max(0.0);
        if km < self.config.min_distance_km {
            return;
        }
        // Calls in the same second count as one second apart; order does
        // not matter (late events travel backwards in time).
        let secs = f64::from(obs.ts_s.abs_diff(g.ts_s).max(1));
        let kmh = km / (secs / 3600.0);
        if kmh <= self.config.max_speed_kmh {
            return;
        }
        let confidence = if low || g.flags & LOW_CONFIDENCE != 0 {
            0.4
        } else {
            1.0
        };
        let score = if kmh > 5.0 * self.config.max_speed_kmh {
            0.95
        } else {
            0.85
        };
        let from = unpack_country(g.country);
        let to = e.country.clone().unwrap_or_default();
        let evidence = Evidence {
            observed: Some(kmh.round()),
            limit: Some(self.config.max_speed_kmh),
            unit: Some("km/h"),
            events: vec![obs.event_ref()],
            ..Default::default()
        }
        .fact("from_country", from.clone())
        .fact("to_country", to.clone())
        .fact("to_city", e.city.clone().unwrap_or_default())
        .fact("distance_km", km.round())
        .fact("raw_distance_km", raw_km.round())
        .fact("accuracy_km", radii)
        .fact("elapsed_s", secs)
        .fact("previous_ts_s", g.ts_s);
        let summary = format!(
            "{from} → {to}: {km:.0} km in {:.0} min is {kmh:.0} km/h",
            secs / 60.0
        );
        out.push(
            Finding::new(
                DetectorKind::Geo,
                "impossible_travel",
                score,
                summary,
                evidence,
            )
            .with_confidence(confidence),
        );
    }

    fn new_country(
        &self,
        obs: &Observation<'_>,
        state: &mut TokenState,
        low: bool,
        out: &mut Vec<Finding>,
    ) {
        let Some(code) = obs
            .event
            .country
            .as_deref()
            .map(pack_country)
            .filter(|&c| c != 0)
        else {
            return;
        };
        let learning = state.age_s(obs.ts_s) < self.config.learning_period.as_secs() as u32;
        let g = &mut state.geo;
        if g.countries.contains(&code) {
            return;
        }
        let known: Vec<String> = g
            .countries
            .iter()
            .filter(|&&c| c != 0)
            .map(|&c| unpack_country(c))
            .collect();
        g.countries[usize::from(g.next_country) % COUNTRIES] = code;
        g.next_country = (g.next_country + 1) % COUNTRIES as u8;
        if learning || known.is_empty() {
            return;
        }
        let country = unpack_country(code);
        let evidence = Evidence {
            events: vec![obs.event_ref()],
            ..Default::default()
        }
        .fact("country", country.clone())
        .fact("known_countries", known.clone());
        let summary = format!("first call from {country}; known: {}", known.join(", "));
        let confidence = if low { 0.5 } else { 1.0 };
        out.push(
            Finding::new(DetectorKind::Geo, "new_country", 0.6, summary, evidence)
                .with_confidence(confidence),
        );
    }
}

impl Detector for GeoDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Geo
    }

    fn stateful(&self) -> bool {
        true
    }

    fn observe(&self, obs: &Observation<'_>, state: &mut TokenState, out: &mut Vec<Finding>) {
        let (Some(ip), Some(lat), Some(lon)) = (obs.event.src_ip, obs.event.lat, obs.event.lon)
        else {
            return;
        };
        if self.trusted(obs) {
            return;
        }
        let low = self.low_confidence(obs);
        let digest = ip_digest(ip);
        let g = &state.geo;
        let located = g.flags & HAS_LOCATION != 0;
        // The same address with new geo data (a database update) is not travel.
        if located && g.ip != digest {
            self.travel(obs, g, lat, lon, low, out);
        }
        self.new_country(obs, state, low, out);
        let g = &mut state.geo;
        if !located || obs.ts_s >= g.ts_s {
            *g = GeoState {
                lat: lat as f32,
                lon: lon as f32,
                ts_s: obs.ts_s,
                ip: digest,
                accuracy_km: obs.event.accuracy_km.unwrap_or(0),
                country: obs.event.country.as_deref().map_or(0, pack_country),
                flags: HAS_LOCATION | if low { LOW_CONFIDENCE } else { 0 },
                ..g.clone()
            };
        }
    }
}

#[cfg(test)]
mod tests;
