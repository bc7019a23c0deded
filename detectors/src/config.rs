//! The `[detectors]` config section: state limits, GeoIP, metadata and one
//! sub-section per detector.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::geo::GeoConfig;
use crate::geoip::GeoIpConfig;
use crate::learning::LearningConfig;
use crate::networks::NetworksConfig;
use crate::novelty::NoveltyConfig;
use crate::policy::PolicyConfig;
use crate::volume::VolumeConfig;

/// On/off for detectors with no other settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    /// Run this detector.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for Toggle {
    fn default() -> Self {
        Toggle { enabled: true }
    }
}

fn yes() -> bool {
    true
}

/// `[detectors]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorsConfig {
    /// Detection threads ("shards"), each owning the state of the tokens
    /// (and principals) that hash to it. Default: the number of cores.
    #[serde(default)]
    pub shards: Option<usize>,
    /// Hard cap on tokens with state, over all shards (each holds
    /// `max_tokens / shards`); past it the idlest are evicted (counted).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Cap on principals whose learned context new tokens inherit (same
    /// state size as a token; the idlest are evicted). 0 turns it off.
    #[serde(default = "default_max_principals")]
    pub max_principals: usize,
    /// A token with no event for this long is forgotten.
    #[serde(default = "default_idle_expiry", with = "humantime_serde")]
    pub idle_expiry: Duration,
    /// Events up to this much older than the newest seen still update
    /// state; older ones only get the stateless checks (counted as late).
    #[serde(default = "default_lateness", with = "humantime_serde")]
    pub lateness: Duration,
    /// How often (in event time) idle tokens are purged and deduplication
    /// windows are closed.
    #[serde(default = "default_purge_interval", with = "humantime_serde")]
    pub purge_interval: Duration,
    /// GeoIP databases. Without them, events must arrive enriched or geo
    /// and ASN checks see nothing.
    #[serde(default)]
    pub geoip: Option<GeoIpConfig>,
    /// Token metadata file (JSON array or one object per line).
    #[serde(default)]
    pub metadata_file: Option<PathBuf>,
    /// How often the GeoIP databases, the metadata file and the config's
    /// rule files are checked for changes (SIGHUP reloads at once).
    #[serde(default = "default_file_check_interval", with = "humantime_serde")]
    pub file_check_interval: Duration,
    /// When a token's history is long enough for novelty and new-country
    /// findings.
    #[serde(default)]
    pub learning: LearningConfig,
    /// Cloud/hosting/CI and mobile networks, whose geolocation is unreliable.
    #[serde(default)]
    pub networks: NetworksConfig,
    #[serde(default)]
    pub volume: VolumeConfig,
    #[serde(default)]
    pub geo: GeoConfig,
    #[serde(default)]
    pub novelty: NoveltyConfig,
    #[serde(default)]
    pub binding: Toggle,
    #[serde(default)]
    pub scope: Toggle,
    #[serde(default)]
    pub expiry: Toggle,
    /// SQL policy rules.
    #[serde(default)]
    pub policy: PolicyConfig,
}

fn default_max_tokens() -> usize {
    1_000_000
}
fn default_max_principals() -> usize {
    200_000
}
fn default_idle_expiry() -> Duration {
    Duration::from_secs(14 * 86_400)
}
fn default_lateness() -> Duration {
    Duration::from_secs(300)
}
fn default_file_check_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_purge_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig {
            shards: None,
            max_tokens: default_max_tokens(),
            max_principals: default_max_principals(),
            idle_expiry: default_idle_expiry(),
            lateness: default_lateness(),
            purge_interval: default_purge_interval(),
            file_check_interval: default_file_check_interval(),
            geoip: None,
            metadata_file: None,
            learning: LearningConfig::default(),
            networks: NetworksConfig::default(),
            volume: VolumeConfig::default(),
            geo: GeoConfig::default(),
            novelty: NoveltyConfig::default(),
            binding: Toggle::default(),
            scope: Toggle::default(),
            expiry: Toggle::default(),
            policy: PolicyConfig::default(),
        }
    }
}

/// Makes a relative `path` relative to `base` (the config file's folder).
fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

impl DetectorsConfig {
    /// Resolves the relative file paths (GeoIP databases, the metadata
    /// file, rule files) against `base`, the folder of the config file
    /// that names them, so a config works from any working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(geoip) = &mut self.geoip {
            for db in &mut geoip.city_db {
                match db {
                    crate::geoip::CityDb::Path(p) => resolve(base, p),
                    crate::geoip::CityDb::Entry(e) => resolve(base, &mut e.path),
                }
            }
            for p in [&mut geoip.asn_db, &mut geoip.anonymous_db]
                .into_iter()
                .flatten()
            {
                resolve(base, p);
            }
        }
        if let Some(p) = &mut self.metadata_file {
            resolve(base, p);
        }
        for p in &mut self.policy.files {
            resolve(base, p);
        }
    }

    /// The detect shards to run: `shards`, or the number of cores.
    pub fn shard_count(&self) -> usize {
        self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Every problem in the section, cross-field ones included.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=50_000_000).contains(&self.max_tokens) {
            p.push(format!(
                "detectors.max_tokens: {} is outside 1 ..= 50000000",
                self.max_tokens
            ));
        }
        if self.shards.is_some_and(|n| !(1..=256).contains(&n)) {
            p.push("detectors.shards: must be 1 ..= 256".into());
        }
        if self.max_principals > 50_000_000 {
            p.push("detectors.max_principals: at most 50000000".into());
        }
        if self.idle_expiry < Duration::from_secs(60) {
            p.push("detectors.idle_expiry: must be at least 1m".into());
        }
        if self.lateness > Duration::from_secs(86_400) {
            p.push("detectors.lateness: at most 1d".into());
        }
        if self.file_check_interval < Duration::from_millis(10) {
            p.push("detectors.file_check_interval: must be at least 10ms".into());
        }
        if self.purge_interval.is_zero() {
            p.push("detectors.purge_interval: must be positive".into());
        }
        if self.learning.min_history >= self.idle_expiry {
            p.push("detectors.idle_expiry: shorter than detectors.learning.min_history, so a quiet token would be forgotten before it finished learning".into());
        }
        if self.volume.enabled && self.volume.warmup >= self.idle_expiry {
            p.push("detectors.idle_expiry: shorter than detectors.volume.warmup".into());
        }
        if let Some(g) = &self.geoip {
            p.extend(g.validate());
        }
        if let Some(path) = &self.metadata_file
            && !path.is_file()
        {
            p.push(format!(
                "detectors.metadata_file: {} is not a readable file",
                path.display()
            ));
        }
        p.extend(self.learning.validate());
        p.extend(self.volume.validate());
        p.extend(self.geo.validate());
        p.extend(self.novelty.validate());
        p
    }
}
