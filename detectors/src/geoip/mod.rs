//! GeoIP enrichment from MaxMind DB files: City (GeoIP2/GeoLite2 or DB-IP
//! Lite layout, one file or several), ASN, and optionally Anonymous-IP,
//! behind a bounded per-IP cache. An address the databases do not know
//! enriches to "unknown"; an unreadable or corrupt file, or one whose
//! sampled records do not decode, is an error at startup or reload.

mod cache;
mod config;
mod database;
mod record;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::Reader;

pub use cache::IpCache;
pub use config::{CityDb, CityDbEntry, DEFAULT_ASSUMED_ACCURACY_KM, GeoIpConfig};
use database::{Database, lookup_in, stamp};
pub use database::{Role, SAMPLE, SampleReport};
use record::{AnonymousRecord, AsnRecord, CityRecord};

/// A database that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {path} ({role}) cannot be used: {reason}")]
pub struct GeoIpError {
    pub path: String,
    pub role: &'static str,
    pub reason: String,
}

/// Anonymity flags from the Anonymous-IP database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Anonymity {
    pub vpn: bool,
    pub hosting: bool,
    pub proxy: bool,
    pub tor: bool,
}

impl Anonymity {
    pub fn any(&self) -> bool {
        self.vpn || self.hosting || self.proxy || self.tor
    }
}

/// What the databases say about one address. All `None` means unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2.
    pub country: Option<Arc<str>>,
    pub city: Option<Arc<str>>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Accuracy radius in km; absent in layouts that have none (DB-IP Lite).
    pub accuracy_km: Option<u16>,
    pub asn: Option<u32>,
    pub as_org: Option<Arc<str>>,
    pub anonymity: Anonymity,
}

/// The anonymity flags of `ip` in an Anonymous-IP database (none when the
/// address is absent or its record unreadable).
pub fn anonymity(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Anonymity {
    match lookup_in::<AnonymousRecord>(reader, ip) {
        Ok(Some(record)) => record.flags(),
        _ => Anonymity::default(),
    }
}

/// The open databases and their cache. A clone shares the files (they
/// are reference-counted) and copies the cache.
#[derive(Clone)]
pub struct GeoIp {
    config: GeoIpConfig,
    /// Asked in order; the first that has the address answers.
    city: Vec<Database>,
    asn: Option<Database>,
    anonymous: Option<Database>,
    cache: IpCache<GeoInfo>,
    /// Lookups that missed the cache.
    pub lookups: u64,
    /// Lookups served from the cache.
    pub cache_hits: u64,
    /// Records found but not decodable (a database in an unexpected
    /// layout); such addresses enrich to "unknown".
    pub decode_errors: u64,
}

impl GeoIp {
    /// Opens and verifies every configured database, and samples each
    /// one's records.
    pub fn open(config: &GeoIpConfig) -> Result<Self, GeoIpError> {
        let city = config
            .city_db
            .iter()
            .map(|db| {
                Database::open(
                    db.path(),
                    Role::City,
                    db.assumed_accuracy_km(config.assumed_accuracy_km),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let other = |path: Option<&Path>, role| {
            path.map(|p| Database::open(p, role, config.assumed_accuracy_km))
                .transpose()
        };
        let asn = other(config.asn_db.as_deref(), Role::Asn)?;
        let anonymous = other(config.anonymous_db.as_deref(), Role::Anonymous)?;
        Ok(Self::assemble(config.clone(), city, asn, anonymous))
    }

    /// Builds from database bytes already in memory (the demo's embedded
    /// databases). Paths are only labels here; reload does nothing.
    pub fn from_bytes(
        city: Vec<u8>,
        asn: Option<Vec<u8>>,
        anonymous: Option<Vec<u8>>,
    ) -> Result<Self, GeoIpError> {
        let label = |name: &str| PathBuf::from(format!("<embedded {name}>"));
        let km = DEFAULT_ASSUMED_ACCURACY_KM;
        let open = |bytes: Vec<u8>, role: Role| {
            let db = Database::from_bytes(bytes, &label(role.as_str()), role, km)?;
            db.require_decodable()?;
            Ok::<_, GeoIpError>(db)
        };
        let city = open(city, Role::City)?;
        let asn = asn.map(|b| open(b, Role::Asn)).transpose()?;
        let anonymous = anonymous.map(|b| open(b, Role::Anonymous)).transpose()?;
        Ok(Self::assemble(
            GeoIpConfig::new(label("city")),
            vec![city],
            asn,
            anonymous,
        ))
    }

    fn assemble(
        config: GeoIpConfig,
        city: Vec<Database>,
        asn: Option<Database>,
        anonymous: Option<Database>,
    ) -> Self {
        let cache = IpCache::new(config.cache_capacity);
        GeoIp {
            config,
            city,
            asn,
            anonymous,
            cache,
            lookups: 0,
            cache_hits: 0,
            decode_errors: 0,
        }
    }

    /// The same databases (shared, not copied) with a cache of its own
    /// and counters from zero: one per detect shard.
    pub fn share(&self) -> GeoIp {
        Self::assemble(
            self.config.clone(),
            self.city.clone(),
            self.asn.clone(),
            self.anonymous.clone(),
        )
    }

    /// Looks up an address, through the cache.
    pub fn lookup(&mut self, ip: IpAddr) -> GeoInfo {
        if let Some(hit) = self.cache.get(&ip) {
            self.cache_hits += 1;
            return hit.clone();
        }
        let info = self.lookup_uncached(ip);
        self.cache.insert(ip, info.clone());
        info
    }

    /// Looks up an address in the databases, bypassing the cache.
    pub fn lookup_uncached(&mut self, ip: IpAddr) -> GeoInfo {
        self.lookups += 1;
        let mut info = GeoInfo::default();
        let mut failed = false;
        for db in &self.city {
            match db.lookup::<CityRecord>(ip) {
                Ok(Some(city)) => {
                    city.fill(&mut info, db.assumed_accuracy_km);
                    break;
                }
                Ok(None) => {}
                Err(()) => failed = true,
            }
        }
        match self.asn.as_ref().map(|db| db.lookup::<AsnRecord>(ip)) {
            Some(Ok(Some(asn))) => {
                info.asn = asn.autonomous_system_number;
                info.as_org = asn.autonomous_system_organization.map(Arc::from);
            }
            Some(Err(())) => failed = true,
            _ => {}
        }
        match self
            .anonymous
            .as_ref()
            .map(|db| db.lookup::<AnonymousRecord>(ip))
        {
            Some(Ok(Some(anon))) => info.anonymity = anon.flags(),
            Some(Err(())) => failed = true,
            _ => {}
        }
        if failed {
            if self.decode_errors == 0 {
                tracing::warn!(%ip, "A GeoIP record exists but is not in a layout tokenwatch reads; such addresses enrich to unknown (counted in tokenwatch_geoip_decode_errors_total).");
            }
            self.decode_errors += 1;
        }
        info
    }

    /// Whether any database file changed on disk since it was loaded.
    pub fn changed_on_disk(&self) -> bool {
        self.databases()
            .any(|db| db.stamp.is_some() && stamp(&db.path) != db.stamp)
    }

    /// Re-opens every database. On error the old ones stay in use.
    /// Opening walks whole files (seconds for DB-IP): a running pipeline
    /// opens on a blocking thread and calls [`replace`](Self::replace).
    pub fn reload(&mut self) -> Result<(), GeoIpError> {
        let fresh = GeoIp::open(&self.config)?;
        self.replace(fresh);
        Ok(())
    }

    /// Puts freshly opened databases in use, keeping the counters.
    pub fn replace(&mut self, fresh: GeoIp) {
        let (lookups, cache_hits, decode_errors) =
            (self.lookups, self.cache_hits, self.decode_errors);
        *self = fresh;
        (self.lookups, self.cache_hits, self.decode_errors) = (lookups, cache_hits, decode_errors);
    }

    /// The files to re-open, unless the databases came from memory.
    pub fn reload_config(&self) -> Option<&GeoIpConfig> {
        self.databases()
            .all(|db| db.stamp.is_some())
            .then_some(&self.config)
    }

    /// The files' stamps (modified time, length) on disk now.
    pub fn disk_stamps(&self) -> Vec<Option<(std::time::SystemTime, u64)>> {
        self.databases().map(|db| stamp(&db.path)).collect()
    }

    /// The Anonymous-IP database, for the `is_anonymous_ip` rule function.
    pub fn anonymous_reader(&self) -> Option<Arc<Reader<Vec<u8>>>> {
        self.anonymous.as_ref().map(|db| Arc::clone(&db.reader))
    }

    fn databases(&self) -> impl Iterator<Item = &Database> {
        self.city
            .iter()
            .chain(self.asn.as_ref())
            .chain(self.anonymous.as_ref())
    }

    /// `(role, database_type, build epoch)` of each open database.
    pub fn describe(&self) -> Vec<(&'static str, String, u64)> {
        self.databases()
            .map(|db| {
                (
                    db.role.as_str(),
                    db.reader.metadata().database_type.clone(),
                    db.reader.metadata().build_epoch,
                )
            })
            .collect()
    }

    /// Metadata oddities tolerated at open, one line each.
    pub fn warnings(&self) -> Vec<String> {
        self.databases()
            .flat_map(|db| db.warnings.iter().cloned())
            .collect()
    }
}

/// `tokenwatch geoip check`: opens each file, tells its layout, samples
/// `sample` of its records, and looks up `ips` in all of them together.
/// Returns the report and whether every file was usable.
pub fn inspect(paths: &[PathBuf], ips: &[IpAddr], sample: usize) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut ok = true;
    let mut config: Option<GeoIpConfig> = None;
    for path in paths {
        let opened = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                Database::from_bytes(bytes, path, Role::City, DEFAULT_ASSUMED_ACCURACY_KM)
                    .map_err(|e| e.reason)
            });
        let db = match opened {
            Ok(db) => db,
            Err(reason) => {
                ok = false;
                let _ = writeln!(out, "{}\n  cannot be used: {reason}\n", path.display());
                continue;
            }
        };
        let role = role_of(&db.layout());
        let db = Database { role, ..db };
        out.push_str(&db.describe());
        let report = db.sample(sample);
        let _ = writeln!(
            out,
            "  sample: {} of {} records decode as a {} database",
            report.decoded,
            report.sampled,
            role.as_str()
        );
        if let Some((net, e)) = &report.first_failure {
            ok = false;
            let _ = writeln!(out, "  first failure: {net}: {e}");
        }
        let c = config.get_or_insert_with(|| GeoIpConfig {
            city_db: Vec::new(),
            ..GeoIpConfig::new(path)
        });
        match role {
            Role::City => c.city_db.push(CityDb::Path(path.clone())),
            Role::Asn => c.asn_db = Some(path.clone()),
            Role::Anonymous => c.anonymous_db = Some(path.clone()),
        }
        out.push('\n');
    }
    if let Some(config) = config.filter(|_| !ips.is_empty()) {
        let geoip = if config.city_db.is_empty() {
            Err("no city database among the files".to_string())
        } else {
            GeoIp::open(&config).map_err(|e| e.to_string())
        };
        match geoip {
            Ok(mut g) => {
                for &ip in ips {
                    let _ = writeln!(out, "{ip}: {}", g.lookup_uncached(ip).summary());
                }
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "lookups skipped: {e}");
            }
        }
    }
    (out, ok)
}

fn role_of(layout: &str) -> Role {
    if layout.starts_with("ASN") {
        Role::Asn
    } else if layout.starts_with("Anonymous") {
        Role::Anonymous
    } else {
        Role::City
    }
}

impl GeoInfo {
    /// One line: country, city, coordinates, radius, network.
    pub fn summary(&self) -> String {
        let mut parts = vec![self.country.as_deref().unwrap_or("unknown").to_owned()];
        if let Some(city) = &self.city {
            parts.push(city.to_string());
        }
        if let (Some(lat), Some(lon)) = (self.lat, self.lon) {
            parts.push(format!("{lat:.4}, {lon:.4}"));
        }
        if let Some(km) = self.accuracy_km {
            parts.push(format!("radius {km} km"));
        }
        if let Some(asn) = self.asn {
            let org = self.as_org.as_deref().unwrap_or_default();
            parts.push(format!("AS{asn} {org}"));
        }
        if self.anonymity.any() {
            parts.push(format!("{:?}", self.anonymity));
        }
        parts.join(" · ")
    }
}

#[cfg(test)]
pub(crate) mod tests;
