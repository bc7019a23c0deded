//! Policy rules: named SQL predicates over the enriched event (SPEC §5).
//!
//! Each rule's `when` is parsed and planned once with DataFusion into a
//! physical expression over [`policy_schema`] (the event columns, the
//! enrichment, and `token_age_s`), then evaluated on every batch. Planning
//! never happens per batch: [`PolicySet::plans`] counts it.
//!
//! - [`config`]: `[detectors.policy]`, rules and rule files.
//! - [`udf`]: the functions rules may call beside DataFusion's own.
//! - [`golden`]: golden cases, run by `tokenwatch rules test DIR`.

pub mod config;
pub mod golden;
pub mod udf;

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::prelude::SessionContext;
use schemas::{
    ColumnsError, DetectorKind, Event, EventRef, Evidence, Finding, Origin, event_column,
    event_schema,
};

pub use config::{PolicyConfig, RuleAction, RuleConfig, RuleFile, Severity};
pub use udf::{AnonymousDb, open_anonymous_db};

/// The column with the token's age: seconds since tokenwatch first saw it.
pub const TOKEN_AGE: &str = "token_age_s";

// Every column is nullable here: a column no rule reads is left all null
// instead of being built.
static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = event_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new(TOKEN_AGE, DataType::Int64, true));
    Arc::new(Schema::new(fields))
});

/// Every problem with the configured rules, as startup would find them:
/// unreadable rule files, and rules that do not compile. Prefixed with
/// `detectors.policy`.
pub fn check(config: &crate::DetectorsConfig) -> Vec<String> {
    // Unreadable files are listed, and the readable rules still compiled,
    // so one run shows every problem.
    let (rules, mut problems) = config.policy.readable_rules();
    let path = config
        .geoip
        .as_ref()
        .and_then(|g| g.anonymous_db.as_deref());
    // An unreadable database is reported by the GeoIP checks.
    let anonymous = udf::open_anonymous_db(path).unwrap_or_default();
    problems.extend(
        PolicySet::compile(&rules, &anonymous)
            .err()
            .unwrap_or_default(),
    );
    prefixed(problems)
}

fn prefixed(problems: Vec<String>) -> Vec<String> {
    problems
        .into_iter()
        .map(|p| format!("detectors.policy: {p}"))
        .collect()
}

/// `with_findings` names detector finding kinds, none twice; a policy
/// rule's own finding (`rule`) is not one: rules do not see each other.
fn check_with_findings(kinds: &[String]) -> Result<(), String> {
    let mut problems = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        if detector_finding(kind).is_none() {
            problems.push(format!("{kind:?} is no detector's finding kind"));
        } else if kinds[..i].contains(kind) {
            problems.push(format!("{kind:?} is named twice"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let known: Vec<&str> = detector_findings().map(|(_, kind)| kind).collect();
        Err(format!(
            "with_findings: {} (known: {})",
            problems.join("; "),
            known.join(", ")
        ))
    }
}

/// Every finding kind a detector reports, with its detector; a policy
/// rule's own (`rule`) is not among them.
fn detector_findings() -> impl Iterator<Item = (DetectorKind, &'static str)> {
    DetectorKind::ALL
        .into_iter()
        .filter(|d| *d != DetectorKind::Policy)
        .flat_map(|d| d.finding_kinds().iter().map(move |&kind| (d, kind)))
}

/// The detector that reports finding `kind`, and the kind's static name.
pub(crate) fn detector_finding(kind: &str) -> Option<(DetectorKind, &'static str)> {
    detector_findings().find(|(_, k)| *k == kind)
}

/// What rules see: the event schema plus `token_age_s`.
pub fn policy_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// The batch rules are evaluated on: the enriched `events` and their ages.
/// Only the columns in `read` (by [`policy_schema`] index; see
/// [`PolicySet::columns_read`]) are built; the others are all null.
pub fn policy_batch(
    events: &[Event],
    token_age_s: &[Option<i64>],
    read: &[bool],
) -> Result<RecordBatch, ColumnsError> {
    let schema = policy_schema();
    let age = schema.fields().len() - 1;
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(
            |(i, field)| match (i, read.get(i).copied().unwrap_or(true)) {
                (_, false) => new_null_array(field.data_type(), events.len()),
                (i, true) if i == age => {
                    Arc::new(Int64Array::from(token_age_s.to_vec())) as ArrayRef
                }
                (i, true) => event_column(events, i),
            },
        )
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

struct Rule {
    config: RuleConfig,
    expr: Arc<dyn PhysicalExpr>,
    matches: u64,
    errors: u64,
}

/// Counters for one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStats {
    pub name: String,
    pub matches: u64,
    pub errors: u64,
}

/// A compiled rule set.
pub struct PolicySet {
    rules: Vec<Rule>,
    /// Detection is degraded: rules with `when_degraded` act on it.
    degraded: bool,
    plans: u64,
    /// Per [`policy_schema`] column: whether some rule reads it.
    read: Vec<bool>,
}

impl PolicySet {
    pub fn empty() -> Self {
        PolicySet {
            rules: Vec::new(),
            degraded: false,
            plans: 0,
            read: vec![false; SCHEMA.fields().len()],
        }
    }

    /// Parses, type-checks and plans every rule. On failure, lists every
    /// bad rule with its name and DataFusion's message.
    pub fn compile(rules: &[RuleConfig], anonymous: &AnonymousDb) -> Result<Self, Vec<String>> {
        let has_anonymous_db = anonymous.read().is_ok_and(|db| db.is_some());
        let ctx = SessionContext::new();
        for f in udf::all(anonymous) {
            ctx.register_udf(f);
        }
        let schema = policy_schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())
            .map_err(|e| vec![format!("policy schema: {e}")])?;
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let mut compiled = Vec::new();
        let mut plans = 0;
        for rule in rules {
            let name = &rule.name;
            if name.trim().is_empty() {
                problems.push(format!("a rule has an empty name (when = {:?})", rule.when));
                continue;
            }
            if !names.insert(name.as_str()) {
                problems.push(format!("rule `{name}`: the name is used twice"));
                continue;
            }
            if rule
                .when_degraded
                .is_some_and(|strict| strict < rule.action)
            {
                problems.push(format!(
                    "rule `{name}`: when_degraded must be at least as strict as action ({:?})",
                    rule.action
                ));
                continue;
            }
            if let Err(problem) = check_with_findings(&rule.with_findings) {
                problems.push(format!("rule `{name}`: {problem}"));
                continue;
            }
            let planned = ctx
                .parse_sql_expr(&rule.when, &df_schema)
                .and_then(|expr| ctx.create_physical_expr(expr, &df_schema));
            plans += 1;
            let expr = match planned {
                Ok(expr) => expr,
                Err(e) => {
                    let mut problem = format!("rule `{name}`: {}", e.strip_backtrace());
                    if !has_anonymous_db && rule.when.contains("is_anonymous_ip") {
                        problem.push_str(" (is_anonymous_ip needs detectors.geoip.anonymous_db)");
                    }
                    problems.push(problem);
                    continue;
                }
            };
            match expr.data_type(&schema) {
                Ok(DataType::Boolean) => compiled.push(Rule {
                    config: rule.clone(),
                    expr,
                    matches: 0,
                    errors: 0,
                }),
                Ok(other) => problems.push(format!(
                    "rule `{name}`: `when` must be a boolean expression, but it is {other}"
                )),
                Err(e) => problems.push(format!("rule `{name}`: {}", e.strip_backtrace())),
            }
        }
        if problems.is_empty() {
            let mut read = vec![false; schema.fields().len()];
            for rule in &compiled {
                for column in collect_columns(&rule.expr) {
                    read[column.index()] = true;
                }
            }
            Ok(PolicySet {
                rules: compiled,
                degraded: false,
                plans,
                read,
            })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Physical plans made to build this set: one per rule, never per batch.
    pub fn plans(&self) -> u64 {
        self.plans
    }

    /// The rules in force, as configured.
    pub fn rule_configs(&self) -> Vec<RuleConfig> {
        self.rules.iter().map(|r| r.config.clone()).collect()
    }

    /// Per [`policy_schema`] column: whether some rule reads it.
    pub fn columns_read(&self) -> &[bool] {
        &self.read
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.config.name.as_str())
    }

    /// Evaluates every rule on `batch` (of [`policy_schema`]). A NULL result
    /// is no match. A rule that fails at run time (say, a cast of bad data)
    /// matches nothing in this batch; the error is counted and logged.
    pub fn evaluate(&mut self, batch: &RecordBatch) -> Vec<Option<BooleanArray>> {
        self.rules
            .iter_mut()
            .map(|rule| {
                let result = rule
                    .expr
                    .evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()));
                match result {
                    Ok(array) => {
                        let mask = array.as_any().downcast_ref::<BooleanArray>()?.clone();
                        // A rule with `with_findings` is counted in
                        // `with_found`, once the detectors have had a say.
                        if rule.config.with_findings.is_empty() {
                            rule.matches += mask.true_count() as u64;
                        }
                        Some(mask)
                    }
                    Err(e) => {
                        if rule.errors == 0 {
                            tracing::error!(rule = %rule.config.name, error = %e.strip_backtrace(), "A policy rule failed on a batch; it matches nothing there (counted in tokenwatch_policy_rule_errors_total).");
                        }
                        rule.errors += 1;
                        None
                    }
                }
            })
            .collect()
    }

    /// Whether rule `index`, whose `when` matched an event, matches it
    /// given what the detectors found on that event (`detected`): always
    /// for a rule without `with_findings`, else when one of its kinds is
    /// among them. Returns the kinds it was matched with.
    pub fn with_found(&mut self, index: usize, detected: &[Finding]) -> Option<Vec<&'static str>> {
        let rule = &mut self.rules[index];
        let wanted = &rule.config.with_findings;
        if wanted.is_empty() {
            return Some(Vec::new());
        }
        let mut found: Vec<&'static str> = Vec::new();
        for f in detected
            .iter()
            .filter(|f| f.detector != DetectorKind::Policy)
        {
            if wanted.iter().any(|w| w == f.kind) && !found.contains(&f.kind) {
                found.push(f.kind);
            }
        }
        if found.is_empty() {
            return None;
        }
        rule.matches += 1;
        Some(found)
    }

    /// The finding of rule `index` for one event, matched together with
    /// the detectors' findings of kinds `with` (see
    /// [`with_found`](Self::with_found)).
    pub fn finding(
        &self,
        index: usize,
        event: &Event,
        origin: &Origin,
        token_age_s: Option<i64>,
        with: &[&'static str],
    ) -> Finding {
        let rule = &self.rules[index].config;
        let what = rule.description.as_deref().unwrap_or(&rule.when);
        let strict = rule
            .when_degraded
            .filter(|strict| self.degraded && *strict > rule.action);
        let mut evidence = Evidence {
            events: vec![EventRef::new(
                event.request_id.as_deref(),
                event.ts_ms,
                origin,
            )],
            ..Evidence::default()
        }
        .fact("rule", rule.name.as_str())
        .fact("when", rule.when.as_str())
        .fact(
            "severity",
            serde_json::to_value(rule.severity).unwrap_or_default(),
        );
        if let Some(age) = token_age_s {
            evidence = evidence.fact("token_age_s", age);
        }
        let mut summary = format!("rule {} matched: {what}", rule.name);
        if !with.is_empty() {
            evidence = evidence.fact("with_findings", with);
            summary.push_str(&format!(", with {}", with.join(", ")));
        }
        if let Some(strict) = strict {
            evidence = evidence.fact("degraded", true);
            summary.push_str(&format!(
                " ({strict:?}, not {:?}: detection is degraded, so this rule fails closed)",
                rule.action
            ));
        }
        Finding::new(
            DetectorKind::Policy,
            "rule",
            rule.severity.score(),
            summary,
            evidence,
        )
        .with_action(strict.unwrap_or(rule.action).forced())
    }

    /// Detection is degraded (or no longer): rules with `when_degraded`
    /// take that action meanwhile.
    pub fn set_degraded(&mut self, degraded: bool) {
        self.degraded = degraded;
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    pub fn stats(&self) -> Vec<RuleStats> {
        self.rules
            .iter()
            .map(|r| RuleStats {
                name: r.config.name.clone(),
                matches: r.matches,
                errors: r.errors,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
