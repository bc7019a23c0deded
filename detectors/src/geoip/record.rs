//! The database records we read, covering both the MaxMind (GeoIP2,
//! GeoLite2) and the flat DB-IP Lite layouts. Unknown fields are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Anonymity, GeoInfo};

#[derive(Deserialize)]
struct IsoCode {
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
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
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl CityRecord {
    pub(super) fn fill(self, info: &mut GeoInfo) {
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
        if info
            .lat
            .zip(info.lon)
            .is_some_and(|(lat, lon)| !lat.is_finite() || !lon.is_finite())
        {
            (info.lat, info.lon) = (None, None);
        }
    }
}

#[derive(Deserialize)]
pub(super) struct AsnRecord {
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
