//! Golden cases for rules: an event and whether a rule matches it. Rule
//! files carry them beside their `[[rules]]`; `tokenwatch rules test DIR`
//! runs every `*.toml` in `DIR`.
//!
//! ```toml
//! [[cases]]
//! rule = "admin_delete_abroad"
//! name = "delete from France"
//! match = true
//! event = { ts = "2026-01-05T10:00:00Z", token_id = "k1", issuer = "api",
//!           action = "DELETE /admin/users/7", country = "FR" }
//! ```
//!
//! `event` is a canonical event; it may carry the enrichment (`country`,
//! `asn`, ...) directly, and `token_age_s` sits beside it, as do the
//! detectors' `findings` on it (`["new_asn"]`) for a rule with
//! `with_findings`.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::Array;
use schemas::decode::Decoder;
use schemas::{Event, Evidence, Finding, Fingerprinter, Format};
use serde::Deserialize;

use super::{AnonymousDb, PolicySet, RuleFile, detector_finding, policy_batch};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The rule under test.
    pub rule: String,
    #[serde(default)]
    pub name: Option<String>,
    pub event: serde_json::Value,
    #[serde(default)]
    pub token_age_s: Option<i64>,
    /// The detectors' findings on the event (`new_asn`...), for rules with
    /// `with_findings`.
    #[serde(default)]
    pub findings: Vec<String>,
    /// Whether the rule must match.
    #[serde(rename = "match")]
    pub expect: bool,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub file: PathBuf,
    pub rule: String,
    pub case: String,
    pub expect: bool,
    /// What the rule said, or why the case could not run.
    pub got: Result<bool, String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.got == Ok(self.expect)
    }
}

/// Everything `rules test` found.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Files that do not load, rules that do not compile, rules without
    /// both a matching and a non-matching case.
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.outcomes.iter().all(Outcome::passed)
    }

    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.passed()).count()
    }
}

/// Runs every `*.toml` rule file in `dir`, in name order.
pub fn run_dir(dir: &Path, anonymous: &AnonymousDb) -> Report {
    let mut report = Report::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            report.problems.push(format!("{}: {e}", dir.display()));
            return report;
        }
    };
    files.sort();
    if files.is_empty() {
        report
            .problems
            .push(format!("{}: no *.toml rule files", dir.display()));
    }
    for path in files {
        run_file(&path, anonymous, &mut report);
    }
    report
}

/// Runs one rule file's cases against its rules.
pub fn run_file(path: &Path, anonymous: &AnonymousDb, report: &mut Report) {
    let file = match RuleFile::load(path) {
        Ok(file) => file,
        Err(e) => return report.problems.push(e),
    };
    let mut set = match PolicySet::compile(&file.rules, anonymous) {
        Ok(set) => set,
        Err(problems) => {
            let at = path.display();
            return report
                .problems
                .extend(problems.into_iter().map(|p| format!("{at}: {p}")));
        }
    };
    for rule in &file.rules {
        for expect in [true, false] {
            if !file
                .cases
                .iter()
                .any(|c| c.rule == rule.name && c.expect == expect)
            {
                report.problems.push(format!(
                    "{}: rule `{}` has no case with match = {expect}",
                    path.display(),
                    rule.name
                ));
            }
        }
    }
    let mut events = Vec::new();
    let mut ages = Vec::new();
    let mut rows = Vec::new();
    for (i, case) in file.cases.iter().enumerate() {
        let label = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", i + 1));
        let index = set.names().position(|n| n == case.rule);
        let row = match (index, case_event(&case.event)) {
            (None, _) => Err(format!("no rule named `{}` in this file", case.rule)),
            (_, Err(e)) => Err(e),
            (Some(index), Ok(event)) => {
                events.push(event);
                ages.push(case.token_age_s);
                Ok((index, events.len() - 1))
            }
        };
        rows.push((case, label, row));
    }
    let masks = match policy_batch(&events, &ages, set.columns_read()) {
        Ok(batch) => set.evaluate(&batch),
        Err(e) => {
            return report
                .problems
                .push(format!("{}: cannot build the batch: {e}", path.display()));
        }
    };
    for (case, label, row) in rows {
        let got = row.and_then(|(index, row)| match &masks[index] {
            Some(mask) => {
                let detected = case_findings(&case.findings)?;
                Ok(mask.is_valid(row)
                    && mask.value(row)
                    && set.with_found(index, &detected).is_some())
            }
            None => Err("the rule failed on this batch (see the log)".to_string()),
        });
        report.outcomes.push(Outcome {
            file: path.to_path_buf(),
            rule: case.rule.clone(),
            case: label,
            expect: case.expect,
            got,
        });
    }
}

/// A case's `findings`, as the detectors would have reported them.
fn case_findings(kinds: &[String]) -> Result<Vec<Finding>, String> {
    kinds
        .iter()
        .map(|kind| {
            let (detector, kind) = detector_finding(kind)
                .ok_or_else(|| format!("findings: {kind:?} is no detector's finding kind"))?;
            Ok(Finding::new(
                detector,
                kind,
                0.5,
                String::new(),
                Evidence::default(),
            ))
        })
        .collect()
}

/// A case's event: decoded as canonical JSON, then the enrichment fields
/// copied over as given.
fn case_event(value: &serde_json::Value) -> Result<Event, String> {
    let decoder = Decoder::new(
        Format::Canonical,
        usize::MAX,
        Fingerprinter::new(b"rules test"),
    );
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let mut event = decoder
        .decode(&bytes)
        .map_err(|e| format!("event: {e}"))?
        .event;
    let field = |name: &str| value.get(name);
    let text = |name: &str| field(name).and_then(|v| v.as_str()).map(Into::into);
    event.country = text("country");
    event.city = text("city");
    event.as_org = text("as_org");
    event.lat = field("lat").and_then(serde_json::Value::as_f64);
    event.lon = field("lon").and_then(serde_json::Value::as_f64);
    event.asn = field("asn")
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    event.accuracy_km = field("accuracy_km")
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u16::try_from(v).ok());
    Ok(event)
}
