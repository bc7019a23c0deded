//! The database records we read, covering both the MaxMind (GeoIP2,
//! GeoLite2) and the flat DB-IP Lite layouts. Unknown fields are ignored.
//!
//! Numbers are read whatever width the file stores them in: DB-IP Lite
//! writes coordinates as 32-bit floats where MaxMind writes doubles, and a
//! radius or ASN may be any unsigned width. Asking serde for one exact type
//! (`f64`) makes `maxminddb` refuse the other, so every number here goes
//! through [`flex`].

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

/// The city's name. MaxMind nests one per language under `names`; DB-IP
/// Lite has a string. Read in one pass without buffering the record (an
/// untagged enum would copy the whole map first): only the English name is
/// kept, or, without one, the name of the first language in key order.
struct CityName(Option<String>);

impl<'de> Deserialize<'de> for CityName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CityVisitor)
    }
}

struct CityVisitor;

impl<'de> serde::de::Visitor<'de> for CityVisitor {
    type Value = CityName;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a city name, or a map with its names by language")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CityName, E> {
        Ok(CityName(Some(v.to_string())))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CityName, A::Error> {
        let mut name = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == "names" {
                name = map.next_value::<Names>()?.0;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(CityName(name))
    }
}

/// A map key, borrowed from the database when it can be.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `names`: the English one, else the one of the smallest language key.
struct Names(Option<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Names;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("names by language")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Names, A::Error> {
                let mut english = None;
                let mut first: Option<(std::borrow::Cow<'de, str>, String)> = None;
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    if key.0 == "en" {
                        english = Some(map.next_value::<String>()?);
                    } else if english.is_none() && first.as_ref().is_none_or(|(k, _)| key.0 < *k) {
                        first = Some((key.0, map.next_value::<String>()?));
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Names(english.or(first.map(|(_, v)| v))))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
pub(super) struct CityRecord {
    country: Option<IsoCode>,
    city: Option<CityName>,
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
        info.country = self
            .country
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .map(Into::into);
        info.city = self.city.and_then(|c| c.0).map(Into::into);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn city(json: &str) -> Option<String> {
        serde_json::from_str::<CityName>(json).unwrap().0
    }

    #[test]
    fn the_city_name_is_read_in_either_layout_and_english_first() {
        assert_eq!(city(r#""Flat Name""#).as_deref(), Some("Flat Name"));
        assert_eq!(
            city(r#"{"geoname_id":1,"names":{"de":"München","en":"Munich","ja":"ミュンヘン"}}"#)
                .as_deref(),
            Some("Munich")
        );
        assert_eq!(
            city(r#"{"names":{"fr":"Lyon FR","de":"Lyon DE","ru":"Лион"}}"#).as_deref(),
            Some("Lyon DE"),
            "without English, the first language in key order"
        );
        assert_eq!(city(r#"{"geoname_id":1}"#), None);
    }
}
