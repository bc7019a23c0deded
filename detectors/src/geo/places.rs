//! A token's learned locations: where it is normally used, as a coarse
//! point plus the network (ASN), with how many distinct hours it was seen
//! there. Travel between two places the token already uses normally is
//! not impossible travel, however fast: that is a service with two egress
//! points, or a phone moving between a carrier's gateways.

/// Places kept per token; a full set forgets its least recently seen.
pub const PLACES: usize = 4;
/// Seen in this many distinct hours, a place is "normal" for the token.
pub const KNOWN_HOURS: u16 = 2;
/// Two points of one network this close are the same place.
const SAME_PLACE_KM: f64 = 150.0;

/// One place: coordinates in hundredths of a degree (~1 km), the ASN
/// (0 = unknown), the hour it was last seen and the hours it was seen in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Place {
    lat: i16,
    lon: i16,
    asn: u32,
    seen_h: u16,
    hours: u16,
}

impl Place {
    fn empty(&self) -> bool {
        self.hours == 0
    }

    fn matches(&self, lat: i16, lon: i16, asn: u32) -> bool {
        // Most calls come from the very point last seen: no trigonometry.
        !self.empty()
            && self.asn == asn
            && ((self.lat == lat && self.lon == lon)
                || approx_km(self.lat, self.lon, lat, lon) <= SAME_PLACE_KM)
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "lat": f64::from(self.lat) / 100.0,
            "lon": f64::from(self.lon) / 100.0,
            "asn": self.asn,
            "hours_seen": self.hours,
        })
    }
}

/// Degrees to hundredths, clamped into range.
pub fn centi(deg: f64) -> i16 {
    (deg * 100.0).round().clamp(-18_000.0, 18_000.0) as i16
}

/// An equirectangular distance: cheap, and exact enough at 150 km.
fn approx_km(lat1: i16, lon1: i16, lat2: i16, lon2: i16) -> f64 {
    let (lat1, lat2) = (f64::from(lat1) / 100.0, f64::from(lat2) / 100.0);
    let mut dlon = (f64::from(lon2) - f64::from(lon1)).abs() / 100.0;
    if dlon > 180.0 {
        dlon = 360.0 - dlon;
    }
    let x = dlon.to_radians() * ((lat1 + lat2) / 2.0).to_radians().cos();
    let y = (lat2 - lat1).to_radians();
    6371.0 * (x * x + y * y).sqrt()
}

/// The learned places of one token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Places([Place; PLACES]);

impl Places {
    /// Whether the token normally uses this place.
    pub fn known(&self, lat: i16, lon: i16, asn: u32) -> bool {
        self.0
            .iter()
            .any(|p| p.matches(lat, lon, asn) && p.hours >= KNOWN_HOURS)
    }

    /// Records a call from this place at hour `now_h`.
    pub fn record(&mut self, lat: i16, lon: i16, asn: u32, now_h: u16) {
        if let Some(p) = self.0.iter_mut().find(|p| p.matches(lat, lon, asn)) {
            if now_h != p.seen_h {
                p.hours = p.hours.saturating_add(1);
                p.seen_h = p.seen_h.max(now_h);
            }
            return;
        }
        let slot = self
            .0
            .iter()
            .position(Place::empty)
            .or_else(|| (0..PLACES).min_by_key(|&i| (self.0[i].seen_h, self.0[i].hours)))
            .unwrap_or(0);
        self.0[slot] = Place {
            lat,
            lon,
            asn,
            seen_h: now_h,
            hours: 1,
        };
    }

    /// Adds `other`'s places, their hours moved by `shift_h`.
    pub fn merge(&mut self, other: &Self, shift_h: i32) {
        for p in other.0.iter().filter(|p| !p.empty()) {
            let seen = (i32::from(p.seen_h) + shift_h).clamp(0, i32::from(u16::MAX)) as u16;
            match self.0.iter_mut().find(|q| q.matches(p.lat, p.lon, p.asn)) {
                Some(q) => {
                    q.hours = q.hours.max(p.hours);
                    q.seen_h = q.seen_h.max(seen);
                }
                None => {
                    let slot = self
                        .0
                        .iter()
                        .position(Place::empty)
                        .or_else(|| (0..PLACES).min_by_key(|&i| self.0[i].seen_h))
                        .unwrap_or(0);
                    if self.0[slot].empty() || self.0[slot].seen_h < seen {
                        self.0[slot] = Place { seen_h: seen, ..*p };
                    }
                }
            }
        }
    }

    pub fn describe(&self) -> Vec<serde_json::Value> {
        self.0
            .iter()
            .filter(|p| !p.empty())
            .map(Place::describe)
            .collect()
    }
}

use crate::state::codec::{Codec, CodecError, Reader, Writer};

impl Codec for Place {
    fn put(&self, w: &mut Writer) {
        w.i16(self.lat);
        w.i16(self.lon);
        w.u32(self.asn);
        w.u16(self.seen_h);
        w.u16(self.hours);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Place {
            lat: r.i16()?,
            lon: r.i16()?,
            asn: r.u32()?,
            seen_h: r.u16()?,
            hours: r.u16()?,
        })
    }
}

impl Codec for Places {
    fn put(&self, w: &mut Writer) {
        self.0.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Places(Codec::get(r)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_becomes_known_after_two_distinct_hours() {
        let mut p = Places::default();
        let (lat, lon) = (centi(52.52), centi(13.40));
        p.record(lat, lon, 3320, 0);
        p.record(lat, lon, 3320, 0);
        assert!(
            !p.known(lat, lon, 3320),
            "many calls in one hour are not a habit"
        );
        p.record(centi(52.6), centi(13.3), 3320, 1);
        assert!(
            p.known(lat, lon, 3320),
            "a nearby point of one network is the same place"
        );
        assert!(!p.known(lat, lon, 6805), "another network is another place");
        assert!(
            !p.known(centi(48.14), centi(11.58), 3320),
            "Munich is not Berlin"
        );
    }

    #[test]
    fn a_full_set_forgets_the_least_recently_seen() {
        let mut p = Places::default();
        for (i, asn) in [1u32, 2, 3, 4].into_iter().enumerate() {
            p.record(0, 0, asn, i as u16);
            p.record(0, 0, asn, i as u16 + 10);
        }
        p.record(0, 0, 5, 20);
        assert!(!p.known(0, 0, 1), "oldest forgotten");
        assert!(p.known(0, 0, 2));
    }

    #[test]
    fn distance_wraps_the_date_line() {
        assert!(approx_km(0, centi(179.9), 0, centi(-179.9)) < 30.0);
    }
}
