//! One open `.mmdb` file: opened and checked (structure in full, records
//! by sample), looked up, and described for `tokenwatch geoip check`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use maxminddb::{MaxMindDbError, Reader, WithinOptions};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::GeoIpError;
use super::record::{AnonymousRecord, AsnRecord, CityRecord};

/// What a database is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    City,
    Asn,
    Anonymous,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::City => "city",
            Role::Asn => "asn",
            Role::Anonymous => "anonymous",
        }
    }
}

/// Records sampled from each database at open; one that exists but does
/// not decode in the layout we read fails the open.
pub const SAMPLE: usize = 1000;

#[derive(Clone)]
pub(super) struct Database {
    pub path: PathBuf,
    pub role: Role,
    pub reader: Arc<Reader<Vec<u8>>>,
    pub stamp: Option<(SystemTime, u64)>,
    /// Radius given to located records that carry none.
    pub assumed_accuracy_km: u16,
    /// Metadata oddities tolerated at open.
    pub warnings: Vec<String>,
}

pub(super) fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// How many sampled records decode, and the first that did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleReport {
    pub sampled: usize,
    pub decoded: usize,
    /// `(network, error)` of the first record that did not decode.
    pub first_failure: Option<(String, String)>,
}

impl Database {
    pub fn open(path: &Path, role: Role, assumed_accuracy_km: u16) -> Result<Self, GeoIpError> {
        let bytes = std::fs::read(path).map_err(|e| error(path, role, e.to_string()))?;
        let db = Self::from_bytes(bytes, path, role, assumed_accuracy_km)?;
        db.require_decodable()?;
        Ok(db)
    }

    /// Opens and checks the structure; records are not sampled.
    pub fn from_bytes(
        bytes: Vec<u8>,
        path: &Path,
        role: Role,
        assumed_accuracy_km: u16,
    ) -> Result<Self, GeoIpError> {
        let err = |reason: String| error(path, role, reason);
        let reader = Reader::from_source(bytes).map_err(|e| err(e.to_string()))?;
        let mut warnings = Vec::new();
        // Walk the whole file once: a corrupt tree or data section fails
        // here, at startup, not on some lookup at 3 a.m. `verify()` also
        // refuses metadata that is merely incomplete (DB-IP ships an empty
        // description); such a file is walked by our own structural check
        // instead, and used with a warning.
        match reader.verify() {
            Ok(()) => {}
            Err(e) if metadata_oddity(&e) => {
                structural_check(&reader).map_err(|e| err(format!("corrupt database: {e}")))?;
                let warning = format!(
                    "{} ({}): metadata is incomplete ({e}); its tree and data are sound, so it is used",
                    path.display(),
                    role.as_str()
                );
                tracing::warn!(path = %path.display(), role = role.as_str(), "GeoIP database metadata is incomplete; its tree and data are sound, so it is used: {e}.");
                warnings.push(warning);
            }
            Err(e) => return Err(err(format!("corrupt database: {e}"))),
        }
        Ok(Database {
            path: path.to_path_buf(),
            role,
            reader: Arc::new(reader),
            stamp: stamp(path),
            assumed_accuracy_km,
            warnings,
        })
    }

    /// Fails when sampled records exist but do not decode: such a file
    /// would enrich every address to "unknown" and silently turn geo off.
    pub fn require_decodable(&self) -> Result<(), GeoIpError> {
        let report = self.sample(SAMPLE);
        match report.first_failure {
            Some((network, e)) => Err(error(
                &self.path,
                self.role,
                format!(
                    "{} of {} sampled records do not decode as a {} database; the first, for {network}: {e}",
                    report.sampled - report.decoded,
                    report.sampled,
                    self.role.as_str()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Decodes about `n` records spread over the file in our layout.
    pub fn sample(&self, n: usize) -> SampleReport {
        let node_count = self.reader.metadata().node_count as usize;
        let stride = (node_count / n.max(1)).max(1);
        let mut report = SampleReport::default();
        let Ok(networks) = self.reader.networks(WithinOptions::default()) else {
            return report;
        };
        for (i, found) in networks.enumerate() {
            if i % stride != 0 {
                continue;
            }
            let Ok(found) = found else { continue };
            report.sampled += 1;
            let decoded = match self.role {
                Role::City => found.decode::<CityRecord>().map(|_| ()),
                Role::Asn => found.decode::<AsnRecord>().map(|_| ()),
                Role::Anonymous => found.decode::<AnonymousRecord>().map(|_| ()),
            };
            match decoded {
                Ok(()) => report.decoded += 1,
                Err(e) if report.first_failure.is_none() => {
                    let net = found
                        .network()
                        .map_or_else(|_| "?".into(), |n| n.to_string());
                    report.first_failure = Some((net, e.to_string()));
                }
                Err(_) => {}
            }
            if report.sampled >= n {
                break;
            }
        }
        report
    }

    pub fn lookup<T: for<'de> Deserialize<'de>>(&self, ip: IpAddr) -> Result<Option<T>, ()> {
        lookup_in(&self.reader, ip)
    }

    /// A one-paragraph description for `tokenwatch geoip check`.
    pub fn describe(&self) -> String {
        let m = self.reader.metadata();
        let mut text = format!(
            "{}\n  database_type: {:?}, IPv{} tree, {} nodes, built {}\n  layout: {}\n",
            self.path.display(),
            m.database_type,
            m.ip_version,
            m.node_count,
            schemas::time::format_rfc3339_ms(m.build_epoch as i64 * 1000),
            self.layout()
        );
        for w in &self.warnings {
            let _ = writeln!(text, "  warning: {w}");
        }
        text
    }

    /// The record layout, told from the keys of the first record.
    pub fn layout(&self) -> String {
        let first = self
            .reader
            .networks(WithinOptions::default())
            .ok()
            .and_then(|mut n| n.next())
            .and_then(Result::ok)
            .and_then(|found| found.decode::<serde_json::Value>().ok().flatten());
        let Some(serde_json::Value::Object(record)) = first else {
            return "unknown (no record could be read)".into();
        };
        let has = |k: &str| record.contains_key(k);
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        let kind = if has("autonomous_system_number") {
            "ASN (GeoLite2-ASN)".to_string()
        } else if keys.iter().any(|k| k.starts_with("is_")) {
            "Anonymous-IP (GeoIP2)".to_string()
        } else if has("location") {
            "City (GeoIP2/GeoLite2: nested names, location with accuracy_radius)".to_string()
        } else if has("country_code") && has("latitude") {
            format!(
                "City (DB-IP Lite flat layout: country_code, city, latitude, longitude; no radius, {} km assumed)",
                self.assumed_accuracy_km
            )
        } else if has("country") {
            "Country (GeoIP2/GeoLite2; no coordinates)".to_string()
        } else {
            "unknown".to_string()
        };
        format!("{kind}; first record's keys: {}", keys.join(", "))
    }
}

fn error(path: &Path, role: Role, reason: String) -> GeoIpError {
    GeoIpError {
        path: path.display().to_string(),
        role: role.as_str(),
        reason,
    }
}

/// `verify()`'s complaints about metadata that does not affect lookups.
fn metadata_oddity(e: &MaxMindDbError) -> bool {
    let text = e.to_string();
    ["description - Expected", "database_type - Expected"]
        .iter()
        .any(|m| text.contains(m))
}

/// What `verify()` checks of the tree and data: every node reachable
/// without a cycle, and every record it points to decodable as a value.
fn structural_check(reader: &Reader<Vec<u8>>) -> Result<(), MaxMindDbError> {
    let max_iterations = (reader.metadata().node_count as usize).saturating_mul(3);
    let mut seen = HashSet::new();
    let options = WithinOptions::default().include_networks_without_data();
    for (i, found) in reader.networks(options)?.enumerate() {
        if i > max_iterations {
            return Err(MaxMindDbError::invalid_database(
                "search tree has a cycle or an invalid structure",
            ));
        }
        let found = found?;
        if let Some(offset) = found.offset()
            && seen.insert(offset)
        {
            found.decode::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// `Ok(None)` for an address the file does not cover (or IPv6 in an
/// IPv4-only file); `Err` when a record exists but cannot be decoded into
/// the layout we read, which is counted, not hidden.
pub(super) fn lookup_in<T: for<'de> Deserialize<'de>>(
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
