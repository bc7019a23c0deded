//! The `[detectors.policy]` config section and rule files.

use std::path::{Path, PathBuf};

use schemas::Action;
use serde::{Deserialize, Serialize};

/// `[detectors.policy]`: named SQL rules, inline and from files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rules written in the config file.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Rule files (TOML with `[[rules]]`, and optionally the `[[cases]]`
    /// that `tokenwatch rules test` checks). Relative paths are from the
    /// config file's folder.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; names the finding (`kind = "rule"`, fact `rule`) and metrics.
    pub name: String,
    /// A SQL boolean expression over the enriched event columns.
    pub when: String,
    /// What a match asks for: `alert` or `revoke` whatever the risk, or
    /// `score` to only add the severity to the token's risk.
    #[serde(default)]
    pub action: RuleAction,
    /// A stricter action while detection is degraded (a health budget is
    /// exceeded: lag, dead letters, a slow restore, a consumer out of its
    /// group): fail closed, e.g.
    /// `revoke` for a rule that alerts. Must not be weaker than `action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_degraded: Option<RuleAction>,
    /// Finding kinds of the detectors (`new_asn`, `new_country`,
    /// `impossible_travel`...): when given, the rule matches an event only
    /// if the detectors also found one of them on that same event. So
    /// "an IAM write from a network new to this token" is `when` = the IAM
    /// write and `with_findings = ["new_asn"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_findings: Vec<String>,
    #[serde(default)]
    pub severity: Severity,
    /// Shown in the finding's summary.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Score,
    #[default]
    Alert,
    Revoke,
}

impl RuleAction {
    pub fn forced(self) -> Option<Action> {
        match self {
            RuleAction::Score => None,
            RuleAction::Alert => Some(Action::Alert),
            RuleAction::Revoke => Some(Action::Revoke),
        }
    }
}

/// The finding's score: low 0.25, medium 0.5, high 0.75, critical 1.0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn score(self) -> f64 {
        match self {
            Severity::Low => 0.25,
            Severity::Medium => 0.5,
            Severity::High => 0.75,
            Severity::Critical => 1.0,
        }
    }
}

/// A rule file: rules, and golden cases for them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub cases: Vec<super::golden::Case>,
}

impl RuleFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("rule file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("rule file {}: {e}", path.display()))
    }
}

impl PolicyConfig {
    /// Every rule: the inline ones, then each file's, in order. Lists every
    /// file that cannot be read or parsed.
    pub fn all_rules(&self) -> Result<Vec<RuleConfig>, Vec<String>> {
        let (rules, problems) = self.readable_rules();
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(problems)
        }
    }

    /// The rules that can be read, and a problem for each file that cannot,
    /// so a check can still compile the rest.
    pub fn readable_rules(&self) -> (Vec<RuleConfig>, Vec<String>) {
        let mut rules = self.rules.clone();
        let mut problems = Vec::new();
        for path in &self.files {
            match RuleFile::load(path) {
                Ok(file) => rules.extend(file.rules),
                Err(e) => problems.push(e),
            }
        }
        (rules, problems)
    }
}
