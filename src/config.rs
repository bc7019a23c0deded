//! The config file: one TOML document, each stage owning its section.

use std::path::Path;

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
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            path: origin.to_string(),
            problems: vec![e.to_string().trim().to_string()],
        })?;
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
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: origin.clone(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Self::from_toml(&text, &origin)
    }

    /// Every problem in every section.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.ingest.validate();
        problems.extend(self.detectors.validate());
        problems.extend(self.decision.validate());
        problems.extend(self.revoker.validate());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_the_repo_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenwatch.example.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.ingest.topics, vec!["api-events".to_string()]);
        // Every section is spelled out, and equal to the defaults it documents.
        let geoip = config.detectors.geoip.clone().expect("geoip section");
        assert_eq!(
            config.detectors,
            detectors::DetectorsConfig {
                geoip: Some(geoip),
                ..Default::default()
            }
        );
        assert_eq!(config.decision, detectors::DecisionConfig::default());
        assert_eq!(config.revoker, revoker::RevokerConfig::default());
        assert_eq!(config.admin, crate::admin::AdminConfig::default());
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
    fn syntax_and_unknown_keys_are_reported_with_location() {
        let err =
            Config::from_toml("[ingest]\ntopics = [\"a\"]\n[detectorz]\n", "inline").unwrap_err();
        assert!(err.problems[0].contains("detectorz"), "{err}");
    }
}
