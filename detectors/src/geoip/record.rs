//! The database records we read, covering both the MaxMind (GeoIP2,
//! GeoLite2) and the flat DB-IP Lite layouts. Unknown fields are ignored.
//!
//! Numbers are read whatever width the file stores them in: DB-IP Lite
//! writes coordinates as 32-bit floats where MaxMind writes doubles, and a
//! radius or ASN may be any unsigned width. Asking serde for one exact type
//! (`f64`) makes `maxminddb` refuse the other, so every number here goes
//! through [`flex`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Anonymity, GeoInfo};

/// Deserializers that accept any numeric MaxMind DB type.
mod flex {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    struct Number;

    impl Visitor<'_> for Number {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number (float, double or integer)")
        }
        fn visit_f32<E: Error>(self, v: f32) -> Result<f64, E> {
            Ok(f64::from(v))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u128<E: Error>(self, v: u128) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i128<E: Error>(self, v: i128) -> Result<f64, E> {
            Ok(v as f64)
        }
    }

    fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(Number)
    }

    /// Any number, as `f64`.
    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        number(d).map(Some)
    }

    /// A whole number of kilometres, saturated into `u16`.
    pub fn km<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        let v = number(d)?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(D::Error::custom(format!("{v} is not a distance")));
        }
        Ok(Some(v.round().min(f64::from(u16::MAX)) as u16))
    }

    /// An AS number: a non-negative integer within `u32`.
    pub fn asn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let v = number(d)?;
        if v.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&v) {
            return Err(D::Error::custom(format!("{v} is not an AS number")));
        }
        Ok(Some(v as u32))
    }
}

#[derive(Deserialize)]
struct IsoCode {
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default, deserialize_with = "flex::f64")]
    latitude: Option<f64>,
    #[serde(default, deserialize_with = "flex::f64")]
    longitude: Option<f64>,
    #[serde(default, deserialize_with = "flex::km")]
    accuracy_radius: Option<u16>,
}

/// MaxMind nests the city name under `names`; DB-IP Lite has a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum CityField {
    Named { names: BTreeMap<String, String> },
    Flat(String),
}

#[derive(Deserialize)]
pub(super) struct CityRecord {
    country: Option<IsoCode>,
    city: Option<CityField>,
    location: Option<Location>,
    // DB-IP Lite layout.
    country_code: Option<String>,
    #[serde(default, deserialize_with = "flex::f64")]
    latitude: Option<f64>,
    #[serde(default, deserialize_with = "flex::f64")]
    longitude: Option<f64>,
}

impl CityRecord {
    /// Fills `info`; a located record without a radius gets `assumed_km`.
    pub(super) fn fill(self, info: &mut GeoInfo, assumed_km: u16) {
        info.country = self.country.and_then(|c| c.iso_code).or(self.country_code);
        info.city = match self.city {
            Some(CityField::Named { mut names }) => {
                names.remove("en").or_else(|| names.into_values().next())
            }
            Some(CityField::Flat(name)) => Some(name),
            None => None,
        };
        match self.location {
            Some(loc) => {
                info.lat = loc.latitude;
                info.lon = loc.longitude;
                info.accuracy_km = loc.accuracy_radius;
            }
            None => {
                info.lat = self.latitude;
                info.lon = self.longitude;
            }
        }
        let valid = info.lat.zip(info.lon).is_some_and(|(lat, lon)| {
            lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
        });
        if valid {
            // Never treat a coordinate as exact: a file without radii gets
            // the configured city-level uncertainty.
            info.accuracy_km = Some(info.accuracy_km.unwrap_or(assumed_km));
        } else {
            (info.lat, info.lon, info.accuracy_km) = (None, None, None);
        }
    }
}

#[derive(Deserialize)]
pub(super) struct AsnRecord {
    #[serde(default, deserialize_with = "flex::asn")]
    pub autonomous_system_number: Option<u32>,
    pub autonomous_system_organization: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct AnonymousRecord {
    #[serde(default)]
    is_anonymous_vpn: bool,
    #[serde(default)]
    is_hosting_provider: bool,
    #[serde(default)]
    is_public_proxy: bool,
    #[serde(default)]
    is_residential_proxy: bool,
    #[serde(default)]
    is_tor_exit_node: bool,
}

impl AnonymousRecord {
    pub(super) fn flags(&self) -> Anonymity {
        Anonymity {
            vpn: self.is_anonymous_vpn,
            hosting: self.is_hosting_provider,
            proxy: self.is_public_proxy || self.is_residential_proxy,
            tor: self.is_tor_exit_node,
        }
    }
}
