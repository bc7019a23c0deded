//! The config file: one TOML document, each stage owning its section.

use std::path::{Path, PathBuf};

use detectors::{DecisionConfig, DetectorsConfig};
use ingest::IngestConfig;
use revoker::RevokerConfig;

use crate::admin::AdminConfig;
use serde::{Deserialize, Serialize};

/// The whole config file. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where API-call records come from.
    pub ingest: IngestConfig,
    /// State limits, GeoIP, token metadata and each detector's settings.
    #[serde(default)]
    pub detectors: DetectorsConfig,
    /// How findings become alerts and revocations.
    #[serde(default)]
    pub decision: DecisionConfig,
    /// Issuer kill switches, the revocation ledger and alert webhooks.
    #[serde(default)]
    pub revoker: RevokerConfig,
    /// The admin HTTP API and metrics.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Creating and checking tokenwatch's internal topics.
    #[serde(default)]
    pub topics: crate::topics::TopicsConfig,
    /// Budgets whose excess raises `detector_degraded`.
    #[serde(default)]
    pub health: crate::pipeline::health::HealthConfig,
    /// Checkpointing per-token state so it survives restarts and moves.
    #[serde(default)]
    pub changelog: crate::pipeline::changelog::ChangelogConfig,
    /// The file this config was loaded from, if any: a reload (SIGHUP)
    /// reads it again for the policy rules.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A config that could not be loaded, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{} has {} problem(s):\n  - {}", .path, .problems.len(), .problems.join("\n  - "))]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<String>,
}

impl Config {
    /// Parses TOML text and validates it, collecting every problem.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, origin, std::env::vars())
    }

    /// Like [`from_toml`](Self::from_toml), with environment overrides taken
    /// from `vars`: `TOKENWATCH__SECTION__KEY=value` sets `section.key`
    /// (nested tables by more `__`). A value is read as TOML if it parses
    /// (`5`, `true`, `["a","b"]`), else as a string.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::parse(text, origin, vars, None)
    }

    /// Parses, applies `vars` overrides, resolves relative file paths
    /// against `base` (when the text came from a file) and validates.
    fn parse(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        base: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: origin.to_string(),
            problems,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| fail(vec![e.to_string().trim().to_string()]))?;
        let overrides = apply_env_overrides(&mut table, vars);
        if !overrides.is_empty() {
            return Err(fail(overrides));
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| fail(vec![e.to_string().trim().to_string()]))?;
        if let Some(base) = base {
            config.detectors.resolve_paths(base);
        }
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                path: origin.to_string(),
                problems,
            })
        }
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, std::env::vars())
    }

    /// [`load`](Self::load) with the environment overrides taken from
    /// `vars` instead of the process environment.
    pub fn load_with(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: origin.clone(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        // Relative paths in the file are from its folder, not from the
        // working directory: the config travels with what it names.
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        let mut config = Self::parse(&text, &origin, vars, Some(&base))?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Every problem in every section.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.ingest.validate();
        problems.extend(self.detectors.validate());
        problems.extend(self.decision.validate());
        problems.extend(detectors::policy::check(&self.detectors));
        problems.extend(self.revoker.validate());
        problems.extend(self.admin.validate());
        problems.extend(self.topics.validate());
        problems.extend(self.health.validate());
        problems.extend(self.changelog.validate(&self.ingest));
        if self.revoker.ledger_topic == self.ingest.dead_letter_topic
            || self.ingest.topics.contains(&self.revoker.ledger_topic)
        {
            problems.push("revoker.ledger_topic: must differ from the ingest topics and the dead-letter topic".into());
        }
        for (i, w) in self.revoker.webhooks.iter().enumerate() {
            if self.admin.is_self(&w.url) {
                problems.push(format!(
                    "revoker.webhooks[{i}].url: {} points at tokenwatch's own admin API",
                    w.url
                ));
            }
        }
        problems
    }

    /// A short hash of the effective config, carried by every alert so a
    /// decision can be traced to the thresholds that made it.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = toml::to_string(self).unwrap_or_default();
        let digest = Sha256::digest(text.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// librdkafka settings shared by every client: brokers and properties.
    pub fn kafka(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        for (k, v) in self.ingest.common_properties() {
            c.set(k, v);
        }
        c
    }
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "TOKENWATCH__";

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => set_path(t, rest, value),
            _ => Err(first.clone()),
        },
    }
}

/// Applies `TOKENWATCH__A__B=value` overrides to `table`; returns problems.
fn apply_env_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            problems.push(format!("environment override {name}: empty key segment"));
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        if let Err(key) = set_path(table, &path, value) {
            problems.push(format!("environment override {name}: {key} is not a table"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's synthetic GeoIP files in place of the example's
    /// GeoLite2 paths, as environment overrides (relative: from the
    /// config's folder, the repository root).
    fn fixture_geoip() -> Vec<(String, String)> {
        vec![
            (
                "TOKENWATCH__DETECTORS__GEOIP__CITY_DB".into(),
                "tests/fixtures/geoip/synthetic-city.mmdb".into(),
            ),
            (
                "TOKENWATCH__DETECTORS__GEOIP__ASN_DB".into(),
                "tests/fixtures/geoip/synthetic-asn.mmdb".into(),
            ),
        ]
    }

    #[test]
    fn relative_paths_are_from_the_config_files_folder() {
        let dir = std::env::temp_dir().join(format!("tw-config-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf/rules")).unwrap();
        std::fs::write(
            dir.join("conf/rules/r.toml"),
            "[[rules]]\nname = \"deletes\"\nwhen = \"action LIKE 'DELETE %'\"\naction = \"alert\"\nseverity = \"high\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("conf/tw.toml"),
            "[ingest]\ntopics = [\"t\"]\n[detectors.policy]\nfiles = [\"rules/r.toml\"]\n",
        )
        .unwrap();
        // Loaded from elsewhere than its folder (tests run in the crate's).
        let config = Config::load(&dir.join("conf/tw.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.detectors.policy.files,
            vec![dir.join("conf/rules/r.toml")]
        );
        // An absolute path stays as it is, and a missing relative one is
        // reported with the path it was resolved to.
        std::fs::write(
            dir.join("conf/tw.toml"),
            "[ingest]\ntopics = [\"t\"]\n[detectors.policy]\nfiles = [\"missing.toml\"]\n",
        )
        .unwrap();
        let err = Config::load(&dir.join("conf/tw.toml")).unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains(&dir.join("conf/missing.toml").display().to_string())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_example_config_names_geolite2_and_says_how_to_get_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenwatch.example.toml");
        let Err(err) = Config::load_with(&path, Vec::new()) else {
            // This machine has GeoLite2 where geoipupdate puts it.
            return;
        };
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("/var/lib/GeoIP/GeoLite2-City.mmdb")
                    && p.contains("geoipupdate")
                    && p.contains("DB-IP Lite")),
            "{err}"
        );
    }

    #[test]
    fn example_config_in_the_repo_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenwatch.example.toml");
        let config = Config::load_with(&path, fixture_geoip()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.ingest.topics, vec!["api-events".to_string()]);
        // Every section is spelled out, and equal to the defaults it documents.
        let geoip = config.detectors.geoip.clone().expect("geoip section");
        let policy = config.detectors.policy.clone();
        assert_eq!(policy.files.len(), 3);
        assert_eq!(
            config.detectors,
            detectors::DetectorsConfig {
                geoip: Some(geoip),
                policy,
                ..Default::default()
            }
        );
        assert_eq!(config.decision, detectors::DecisionConfig::default());
        assert_eq!(config.revoker, revoker::RevokerConfig::default());
        assert_eq!(config.admin, crate::admin::AdminConfig::default());
        assert_eq!(config.topics, crate::topics::TopicsConfig::default());
        assert_eq!(
            config.health,
            crate::pipeline::health::HealthConfig::default()
        );
    }

    #[test]
    fn lists_every_problem() {
        let err = Config::from_toml(
            r#"
            [ingest]
            topics = []
            batch_max_records = 0
            [detectors.volume]
            window = "7s"
            [decision]
            revoke_at = 0.2
            "#,
            "inline",
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        assert!(err.to_string().contains("detectors.volume.window"));
        assert!(err.to_string().contains("ingest.topics"));
        assert!(err.to_string().contains("ingest.batch_max_records"));
    }

    #[test]
    fn bad_policy_rules_are_config_problems_with_the_rule_name() {
        let err = Config::from_toml(
            r#"
            [ingest]
            topics = ["t"]
            [[detectors.policy.rules]]
            name = "typo"
            when = "contry = 'FR'"
            [[detectors.policy.rules]]
            name = "fine"
            when = "country = 'FR'"
            [detectors.policy]
            files = ["/no/such/rules.toml"]
            "#,
            "inline",
        );
        // The unreadable file, and the readable rules still compiled: every
        // problem in one run.
        let err = err.expect_err("bad rules");
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].contains("/no/such/rules.toml"), "{err}");
        assert!(err.problems[1].contains("rule `typo`"), "{err}");
        let err = Config::from_toml(
            "[ingest]\ntopics = [\"t\"]\n[[detectors.policy.rules]]\nname = \"typo\"\nwhen = \"contry = 'FR'\"\n",
            "inline",
        )
        .expect_err("bad rule");
        assert!(
            err.problems[0]
                .starts_with("detectors.policy: rule `typo`: Schema error: No field named contry"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_with_one_prefix() {
        let vars = [
            (
                "TOKENWATCH__INGEST__BROKERS".to_string(),
                "kafka-1:9093".to_string(),
            ),
            (
                "TOKENWATCH__INGEST__BATCH_MAX_RECORDS".to_string(),
                "64".to_string(),
            ),
            (
                "TOKENWATCH__DECISION__MODE".to_string(),
                "enforce".to_string(),
            ),
            (
                "TOKENWATCH__DETECTORS__GEO__TRUSTED_ASNS".to_string(),
                "[64500, 64501]".to_string(),
            ),
            (
                "TOKENWATCH_FINGERPRINT_KEY".to_string(),
                "not an override".to_string(),
            ),
        ];
        let c = Config::from_toml_with_env("[ingest]\ntopics = [\"a\"]\n", "inline", vars).unwrap();
        assert_eq!(c.ingest.brokers, "kafka-1:9093");
        assert_eq!(c.ingest.batch_max_records, 64);
        assert_eq!(c.decision.mode, schemas::Mode::Enforce);
        assert_eq!(c.detectors.geo.trusted_asns, vec![64500, 64501]);
        let err = Config::from_toml_with_env(
            "[ingest]\ntopics = [\"a\"]\n",
            "inline",
            [("TOKENWATCH__INGEST__NOPE".to_string(), "1".to_string())],
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn syntax_and_unknown_keys_are_reported_with_location() {
        let err =
            Config::from_toml("[ingest]\ntopics = [\"a\"]\n[detectorz]\n", "inline").unwrap_err();
        assert!(err.problems[0].contains("detectorz"), "{err}");
    }
}
