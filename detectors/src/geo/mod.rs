//! Geography: impossible travel between consecutive calls, and a new
//! country once the token has enough history. Trusted ASNs and networks
//! (VPN or corporate egress) are exempt. Travel is not reported within one
//! ASN in one country, nor between two places the token normally uses
//! ([`places`]). Every finding carries a confidence: an anonymous, cloud,
//! hosting or mobile network, a listed low-confidence ASN, or a large
//! accuracy radius lowers it, and the decision caps low confidence at alert.

mod places;

use ipnet::IpNet;
use schemas::{DetectorKind, Evidence, Finding};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use places::centi;
pub use places::{Place, Places};

use crate::detector::{Detector, Observation};
use crate::learning::LearningConfig;
use crate::networks::{NetworkKind, Networks};
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
fn default_max_accuracy() -> u16 {
    200
}

impl Default for GeoConfig {
    fn default() -> Self {
        GeoConfig {
            enabled: true,
            max_speed_kmh: default_max_speed(),
            min_distance_km: default_min_distance(),
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
const HOSTING: u8 = 4;
const MOBILE: u8 = 8;
const COUNTRIES: usize = 4;

/// Per-token geo state: the last located call, the countries seen and the
/// places the token normally uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoState {
    lat: f32,
    lon: f32,
    ts_s: u32,
    ip: u32,
    asn: u32,
    /// Digest of the AS organisation name (0: unknown).
    org: u32,
    accuracy_km: u16,
    country: u16,
    countries: [u16; COUNTRIES],
    next_country: u8,
    flags: u8,
    places: Places,
}

fn kind_flags(kind: NetworkKind) -> u8 {
    match kind {
        NetworkKind::Hosting => HOSTING,
        NetworkKind::Mobile => MOBILE,
        NetworkKind::Other => 0,
    }
}

fn flags_kind(flags: u8) -> NetworkKind {
    if flags & HOSTING != 0 {
        NetworkKind::Hosting
    } else if flags & MOBILE != 0 {
        NetworkKind::Mobile
    } else {
        NetworkKind::Other
    }
}

impl GeoState {
    /// Adds another state's countries and places, and takes its last
    /// location if that is newer.
    pub fn merge(&mut self, other: &GeoState, shift_h: i32) {
        for &c in other.countries.iter().filter(|&&c| c != 0) {
            if !self.countries.contains(&c) {
                self.countries[usize::from(self.next_country) % COUNTRIES] = c;
                self.next_country = (self.next_country + 1) % COUNTRIES as u8;
            }
        }
        self.places.merge(&other.places, shift_h);
        if other.flags & HAS_LOCATION != 0
            && (self.flags & HAS_LOCATION == 0 || other.ts_s >= self.ts_s)
        {
            *self = GeoState {
                lat: other.lat,
                lon: other.lon,
                ts_s: other.ts_s,
                ip: other.ip,
                asn: other.asn,
                org: other.org,
                accuracy_km: other.accuracy_km,
                country: other.country,
                flags: other.flags,
                ..self.clone()
            };
        }
    }

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
                "asn": self.asn,
                "network": flags_kind(self.flags).as_str(),
                "low_confidence": self.flags & LOW_CONFIDENCE != 0,
            })
        });
        serde_json::json!({
            "last_location": last,
            "countries": countries,
            "places": self.places.describe(),
        })
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
    learning: LearningConfig,
    networks: Networks,
}

/// This call, as travel sees it.
struct Here {
    lat: f64,
    lon: f64,
    asn: u32,
    org: u32,
    /// Unreliable by itself (anonymous, listed ASN, big radius).
    low: bool,
    network: NetworkKind,
}

impl GeoDetector {
    pub fn new(config: GeoConfig, learning: LearningConfig, networks: Networks) -> Self {
        GeoDetector {
            config,
            learning,
            networks,
        }
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

    fn travel(&self, obs: &Observation<'_>, g: &GeoState, here: &Here, out: &mut Vec<Finding>) {
        let e = obs.event;
        let raw_km = distance_km(f64::from(g.lat), f64::from(g.lon), here.lat, here.lon);
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
        // Between two places the token normally uses it is not travel;
        // checked only for a trip that would otherwise be reported.
        let habitual = g
            .places
            .known(centi(f64::from(g.lat)), centi(f64::from(g.lon)), g.asn)
            && g.places.known(centi(here.lat), centi(here.lon), here.asn);
        if habitual {
            return;
        }
        let from_network = flags_kind(g.flags);
        let unreliable = [from_network, here.network]
            .iter()
            .any(|&k| k != NetworkKind::Other);
        let confidence = if here.low || g.flags & LOW_CONFIDENCE != 0 || unreliable {
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
        let to = e.country.as_deref().unwrap_or_default();
        let evidence = Evidence {
            observed: Some(kmh.round()),
            limit: Some(self.config.max_speed_kmh),
            unit: Some("km/h"),
            events: vec![obs.event_ref()],
            ..Default::default()
        }
        .fact("from_country", from.clone())
        .fact("to_country", to)
        .fact("to_city", e.city.as_deref().unwrap_or_default())
        .fact("distance_km", km.round())
        .fact("raw_distance_km", raw_km.round())
        .fact("accuracy_km", radii)
        .fact("elapsed_s", secs)
        .fact("previous_ts_s", g.ts_s)
        .fact("from_asn", g.asn)
        .fact("to_asn", here.asn)
        .fact("from_network", from_network.as_str())
        .fact("to_network", here.network.as_str());
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
        same_provider: bool,
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
        let history = self
            .learning
            .confidence(state.events, state.age_s(obs.ts_s));
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
        let Some(history) = history.filter(|_| !known.is_empty() && !same_provider) else {
            return;
        };
        let country = unpack_country(code);
        let evidence = Evidence {
            events: vec![obs.event_ref()],
            ..Default::default()
        }
        .fact("country", country.clone())
        .fact("known_countries", known.clone())
        .fact("token_events", state.events);
        let summary = format!("first call from {country}; known: {}", known.join(", "));
        let confidence = if low { history.min(0.5) } else { history };
        out.push(
            Finding::new(DetectorKind::Geo, "new_country", 0.7, summary, evidence)
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
        let e = obs.event;
        let (Some(ip), Some(lat), Some(lon)) = (e.src_ip, e.lat, e.lon) else {
            return;
        };
        if self.trusted(obs) {
            return;
        }
        let digest = ip_digest(ip);
        let g = &state.geo;
        let located = g.flags & HAS_LOCATION != 0;
        let same_ip = located && g.ip == digest;
        let asn = e.asn.unwrap_or(0);
        let org = if same_ip {
            g.org
        } else {
            e.as_org.as_deref().map_or(0, crate::novelty::digest)
        };
        // The kind is a function of the network: classified only when the
        // network changes (the AS-name scan is the costly part), not per
        // event or per address.
        let same_net = located && g.asn == asn && g.org == org;
        let here = Here {
            lat,
            lon,
            asn,
            org,
            low: self.low_confidence(obs),
            network: if same_ip || same_net {
                flags_kind(g.flags)
            } else {
                self.networks.classify(e.asn, e.as_org.as_deref())
            },
        };
        let country = e.country.as_deref().map_or(0, pack_country);
        let (clat, clon) = (centi(lat), centi(lon));
        let now_h = (state.age_s(obs.ts_s) / 3600).min(u32::from(u16::MAX)) as u16;
        // The same address with new geo data (a database update) is not
        // travel; nor is a move within one network in one country, nor one
        // between two places this token normally uses.
        // One cloud's or one carrier's own network, across regions: the
        // address is placed at a data centre or gateway, not at a user, so
        // neither travel nor a new country.
        let same_provider = located
            && here.network != NetworkKind::Other
            && flags_kind(g.flags) == here.network
            && ((asn != 0 && g.asn == asn) || (here.org != 0 && g.org == here.org));
        if located && !same_ip {
            let same_network = asn != 0 && g.asn == asn && g.country == country;
            if !same_network && !same_provider {
                self.travel(obs, g, &here, out);
            }
        }
        self.new_country(obs, state, here.low, same_provider, out);
        let g = &mut state.geo;
        g.places.record(clat, clon, asn, now_h);
        if !located || obs.ts_s >= g.ts_s {
            let flags =
                HAS_LOCATION | kind_flags(here.network) | if here.low { LOW_CONFIDENCE } else { 0 };
            *g = GeoState {
                lat: lat as f32,
                lon: lon as f32,
                ts_s: obs.ts_s,
                ip: digest,
                asn,
                org: here.org,
                accuracy_km: e.accuracy_km.unwrap_or(0),
                country,
                flags,
                ..g.clone()
            };
        }
    }
}

impl crate::state::codec::Codec for GeoState {
    fn put(&self, w: &mut crate::state::codec::Writer) {
        w.f32(self.lat);
        w.f32(self.lon);
        w.u32(self.ts_s);
        w.u32(self.ip);
        w.u32(self.asn);
        w.u32(self.org);
        w.u16(self.accuracy_km);
        w.u16(self.country);
        for c in self.countries {
            w.u16(c);
        }
        w.u8(self.next_country);
        w.u8(self.flags);
        self.places.put(w);
    }
    fn get(
        r: &mut crate::state::codec::Reader<'_>,
    ) -> Result<Self, crate::state::codec::CodecError> {
        use crate::state::codec::Codec;
        Ok(GeoState {
            lat: r.f32()?,
            lon: r.f32()?,
            ts_s: r.u32()?,
            ip: r.u32()?,
            asn: r.u32()?,
            org: r.u32()?,
            accuracy_km: r.u16()?,
            country: r.u16()?,
            countries: {
                let mut c = [0; COUNTRIES];
                for slot in &mut c {
                    *slot = r.u16()?;
                }
                c
            },
            next_country: r.u8()?,
            flags: r.u8()?,
            places: Codec::get(r)?,
        })
    }
}

#[cfg(test)]
mod tests;
