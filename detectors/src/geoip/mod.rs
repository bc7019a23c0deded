//! GeoIP enrichment from MaxMind DB files: City (GeoIP2/GeoLite2 or DB-IP
//! Lite layout), ASN, and optionally Anonymous-IP, behind a bounded per-IP
//! cache. An address the databases do not know enriches to "unknown"; only
//! an unreadable or corrupt file is an error, at startup or reload.

mod cache;
mod record;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use maxminddb::Reader;
use serde::{Deserialize, Serialize};

pub use cache::IpCache;
use record::{AnonymousRecord, AsnRecord, CityRecord};

/// The `[detectors.geoip]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpConfig {
    /// City database: GeoIP2/GeoLite2 City or Country, or DB-IP City Lite.
    pub city_db: PathBuf,
    /// ASN database (GeoLite2 ASN layout). Optional: without it, ASN-based
    /// checks (trusted ASNs, new ASN) do not run.
    #[serde(default)]
    pub asn_db: Option<PathBuf>,
    /// Anonymous-IP database; marks VPN, hosting, proxy and Tor exits, which
    /// lowers the confidence of geo findings. Optional.
    #[serde(default)]
    pub anonymous_db: Option<PathBuf>,
    /// IP addresses kept in the lookup cache.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
}

fn default_cache_capacity() -> usize {
    65_536
}

impl GeoIpConfig {
    pub fn new(city_db: impl Into<PathBuf>) -> Self {
        GeoIpConfig {
            city_db: city_db.into(),
            asn_db: None,
            anonymous_db: None,
            cache_capacity: default_cache_capacity(),
        }
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, path) in [
            ("city_db", Some(&self.city_db)),
            ("asn_db", self.asn_db.as_ref()),
            ("anonymous_db", self.anonymous_db.as_ref()),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                problems.push(format!(
                    "detectors.geoip.{key}: {} is not a readable file",
                    path.display()
                ));
            }
        }
        if self.cache_capacity > 10_000_000 {
            problems.push("detectors.geoip.cache_capacity: at most 10000000".into());
        }
        problems
    }
}

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
    pub country: Option<String>,
    pub city: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Accuracy radius in km; absent in layouts that have none (DB-IP Lite).
    pub accuracy_km: Option<u16>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    pub anonymity: Anonymity,
}

struct Database {
    path: PathBuf,
    role: &'static str,
    reader: Arc<Reader<Vec<u8>>>,
    stamp: Option<(SystemTime, u64)>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Database {
    fn open(path: &Path, role: &'static str) -> Result<Self, GeoIpError> {
        let err = |reason: String| GeoIpError {
            path: path.display().to_string(),
            role,
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        Self::from_bytes(bytes, path, role).map_err(|e| err(e.reason))
    }

    fn from_bytes(bytes: Vec<u8>, path: &Path, role: &'static str) -> Result<Self, GeoIpError> {
        let err = |reason: String| GeoIpError {
            path: path.display().to_string(),
            role,
            reason,
        };
        let reader = Reader::from_source(bytes).map_err(|e| err(e.to_string()))?;
        // Walk the whole file once: a corrupt tree or data section fails
        // here, at startup, not on some lookup at 3 a.m.
        reader
            .verify()
            .map_err(|e| err(format!("corrupt database: {e}")))?;
        Ok(Database {
            path: path.to_path_buf(),
            role,
            reader: Arc::new(reader),
            stamp: stamp(path),
        })
    }

    fn lookup<T: for<'de> Deserialize<'de>>(&self, ip: IpAddr) -> Result<Option<T>, ()> {
        lookup_in(&self.reader, ip)
    }
}

/// `Ok(None)` for an address the file does not cover (or IPv6 in an
/// IPv4-only file); `Err` when a record exists but cannot be decoded into
/// the layout we read, which is counted, not hidden.
fn lookup_in<T: for<'de> Deserialize<'de>>(
    reader: &Reader<Vec<u8>>,
    ip: IpAddr,
) -> Result<Option<T>, ()> {
    let Ok(found) = reader.lookup(ip) else {
        return Ok(None);
    };
    if !found.has_data() {
        return Ok(None);
    }
    found.decode::<T>().map_err(|_| ())
}

/// The anonymity flags of `ip` in an Anonymous-IP database (none when the
/// address is absent or its record unreadable).
pub fn anonymity(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Anonymity {
    match lookup_in::<AnonymousRecord>(reader, ip) {
        Ok(Some(record)) => record.flags(),
        _ => Anonymity::default(),
    }
}

/// The open databases and their cache.
pub struct GeoIp {
    config: GeoIpConfig,
    city: Database,
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
    /// Opens and verifies every configured database.
    pub fn open(config: &GeoIpConfig) -> Result<Self, GeoIpError> {
        let city = Database::open(&config.city_db, "city")?;
        let asn = config
            .asn_db
            .as_deref()
            .map(|p| Database::open(p, "asn"))
            .transpose()?;
        let anonymous = config
            .anonymous_db
            .as_deref()
            .map(|p| Database::open(p, "anonymous"))
            .transpose()?;
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
        let city = Database::from_bytes(city, &label("city"), "city")?;
        let asn = asn
            .map(|b| Database::from_bytes(b, &label("asn"), "asn"))
            .transpose()?;
        let anonymous = anonymous
            .map(|b| Database::from_bytes(b, &label("anonymous"), "anonymous"))
            .transpose()?;
        Ok(Self::assemble(
            GeoIpConfig::new(label("city")),
            city,
            asn,
            anonymous,
        ))
    }

    fn assemble(
        config: GeoIpConfig,
        city: Database,
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
        match self.city.lookup::<CityRecord>(ip) {
            Ok(Some(city)) => city.fill(&mut info),
            Ok(None) => {}
            Err(()) => failed = true,
        }
        match self.asn.as_ref().map(|db| db.lookup::<AsnRecord>(ip)) {
            Some(Ok(Some(asn))) => {
                info.asn = asn.autonomous_system_number;
                info.as_org = asn.autonomous_system_organization;
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
    pub fn reload(&mut self) -> Result<(), GeoIpError> {
        let fresh = GeoIp::open(&self.config)?;
        let (lookups, cache_hits, decode_errors) =
            (self.lookups, self.cache_hits, self.decode_errors);
        *self = fresh;
        (self.lookups, self.cache_hits, self.decode_errors) = (lookups, cache_hits, decode_errors);
        Ok(())
    }

    /// The Anonymous-IP database, for the `is_anonymous_ip` rule function.
    pub fn anonymous_reader(&self) -> Option<Arc<Reader<Vec<u8>>>> {
        self.anonymous.as_ref().map(|db| Arc::clone(&db.reader))
    }

    fn databases(&self) -> impl Iterator<Item = &Database> {
        std::iter::once(&self.city)
            .chain(self.asn.as_ref())
            .chain(self.anonymous.as_ref())
    }

    /// `(role, database_type, build epoch)` of each open database.
    pub fn describe(&self) -> Vec<(&'static str, String, u64)> {
        self.databases()
            .map(|db| {
                (
                    db.role,
                    db.reader.metadata().database_type.clone(),
                    db.reader.metadata().build_epoch,
                )
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
