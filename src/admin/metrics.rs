//! Prometheus text exposition. Labels are detectors, actions, issuers,
//! outcomes and reasons; never token ids.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use schemas::DetectorKind;

use super::AdminState;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A latency histogram in microseconds as a summary in seconds.
fn summary(out: &mut String, name: &str, help: &str, h: &Mutex<Histogram<u64>>) {
    family(out, name, "summary", help);
    let Ok(h) = h.lock() else { return };
    for q in [0.5, 0.9, 0.99] {
        let v = if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1e6
        };
        sample(out, name, &format!("quantile=\"{q}\""), v);
    }
    sample(
        out,
        &format!("{name}_max"),
        "",
        if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1e6
        },
    );
    sample(out, &format!("{name}_count"), "", h.len());
}

pub fn render(s: &AdminState) -> String {
    let mut out = String::with_capacity(8 << 10);
    let i = &s.ingest;
    let counters = [
        (
            "tokenwatch_ingest_records_total",
            "Records read from Kafka, good and bad.",
            i.records.load(Relaxed),
        ),
        (
            "tokenwatch_ingest_events_total",
            "Records decoded into events.",
            i.events.load(Relaxed),
        ),
        (
            "tokenwatch_ingest_bytes_total",
            "Payload bytes read.",
            i.bytes.load(Relaxed),
        ),
        (
            "tokenwatch_ingest_batches_total",
            "Batches handed to detection.",
            i.batches.load(Relaxed),
        ),
        (
            "tokenwatch_offsets_stored_total",
            "Offsets stored after acknowledgement.",
            i.offsets_stored.load(Relaxed),
        ),
        (
            "tokenwatch_decode_errors_total",
            "Records that could not be decoded (all dead-lettered); a bad record in a CloudTrail file counts alone.",
            i.dead_lettered_total(),
        ),
        (
            "tokenwatch_skipped_total",
            "Well-formed vendor records that are no token's call (a GitHub web-session action, a CloudTrail AwsServiceEvent): not events, not errors.",
            i.skipped.load(Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        family(&mut out, name, "counter", help);
        sample(&mut out, name, "", v);
    }
    family(
        &mut out,
        "tokenwatch_dead_lettered_total",
        "counter",
        "Records sent to the dead-letter topic, by reason.",
    );
    for (reason, n) in i.dead_lettered_by_reason() {
        sample(
            &mut out,
            "tokenwatch_dead_lettered_total",
            &format!("reason=\"{reason}\""),
            n,
        );
    }
    family(
        &mut out,
        "tokenwatch_ingest_batch_closes_total",
        "counter",
        "Batches handed on, by why: full, idle (nothing more fetched: handed on at once) or linger.",
    );
    for why in ingest::BatchClose::ALL {
        sample(
            &mut out,
            "tokenwatch_ingest_batch_closes_total",
            &format!("reason=\"{}\"", why.name()),
            i.closes(why),
        );
    }
    family(
        &mut out,
        "tokenwatch_consumer_errors_total",
        "counter",
        "Kafka consumer errors that did not stop ingest (the client retries them).",
    );
    sample(
        &mut out,
        "tokenwatch_consumer_errors_total",
        "",
        i.consumer_errors.load(Relaxed),
    );
    family(
        &mut out,
        "tokenwatch_assigned_partitions",
        "gauge",
        "Partitions assigned to this instance.",
    );
    sample(
        &mut out,
        "tokenwatch_assigned_partitions",
        "",
        i.assigned_partitions.load(Relaxed),
    );
    family(
        &mut out,
        "tokenwatch_consumer_lag",
        "gauge",
        "Records behind the end of the assigned partitions.",
    );
    sample(
        &mut out,
        "tokenwatch_consumer_lag",
        "",
        i.consumer_lag.load(Relaxed),
    );

    let e = s.flow.engine_stats();
    family(
        &mut out,
        "tokenwatch_findings_total",
        "counter",
        "Findings by detector (shadow ones included).",
    );
    for d in DetectorKind::ALL {
        sample(
            &mut out,
            "tokenwatch_findings_total",
            &format!("detector=\"{}\"", d.as_str()),
            e.decision.findings[d.index()],
        );
    }
    family(
        &mut out,
        "tokenwatch_decisions_total",
        "counter",
        "Decisions by action.",
    );
    for (action, n) in [
        ("alert", &s.flow.decisions[1]),
        ("revoke", &s.flow.decisions[2]),
    ] {
        sample(
            &mut out,
            "tokenwatch_decisions_total",
            &format!("action=\"{action}\""),
            n.load(Relaxed),
        );
    }
    let engine_counters = [
        (
            "tokenwatch_late_events_total",
            "Events past the allowed lateness (stateless checks only).",
            e.late_events,
        ),
        (
            "tokenwatch_future_events_total",
            "Events ahead of their Kafka timestamp by more than the allowed lateness (stateless checks only).",
            e.future_events,
        ),
        (
            "tokenwatch_tokens_evicted_total",
            "Tokens evicted at the state cap.",
            e.store.evicted,
        ),
        (
            "tokenwatch_tokens_expired_total",
            "Tokens forgotten after idle expiry.",
            e.store.expired,
        ),
        (
            "tokenwatch_shadow_findings_total",
            "Findings from detectors in shadow mode.",
            e.decision.shadow_findings,
        ),
        (
            "tokenwatch_allowlisted_total",
            "Events with findings exempted by an allowlist.",
            e.decision.allowlisted,
        ),
        (
            "tokenwatch_suppressed_repeats_total",
            "Repeats folded by deduplication.",
            e.decision.suppressed_repeats,
        ),
        (
            "tokenwatch_over_budget_total",
            "Revocations downgraded to alerts by the budget.",
            e.decision.over_budget,
        ),
        (
            "tokenwatch_unconfigured_issuer_revocations_total",
            "Revocations downgraded to alerts for naming no configured issuer.",
            e.decision.unconfigured_issuer,
        ),
        (
            "tokenwatch_low_confidence_caps_total",
            "Revocations capped at alert by low confidence.",
            e.decision.low_confidence_caps,
        ),
        (
            "tokenwatch_geoip_lookups_total",
            "GeoIP lookups that missed the cache.",
            e.geoip_lookups,
        ),
        (
            "tokenwatch_geoip_decode_errors_total",
            "GeoIP records found but not decodable (enriched as unknown).",
            e.geoip_decode_errors,
        ),
        (
            "tokenwatch_geoip_cache_hits_total",
            "GeoIP lookups served from the cache.",
            e.geoip_cache_hits,
        ),
        (
            "tokenwatch_policy_plans_total",
            "DataFusion plans of the rule sets put in force: one per rule per (re)load, never per batch.",
            e.policy.plans,
        ),
        (
            "tokenwatch_policy_evaluations_total",
            "Batches the policy rules were evaluated on.",
            e.policy.evaluations,
        ),
        (
            "tokenwatch_policy_reloads_total",
            "Rule sets put in force by a reload.",
            e.policy.reloads,
        ),
        (
            "tokenwatch_policy_reload_failures_total",
            "Reloads refused (bad config or rule); the rules in force stayed.",
            e.policy.reload_failures,
        ),
        (
            "tokenwatch_file_checks_total",
            "Checks of the GeoIP, metadata and rule files for changes.",
            s.flow.file_checks.load(Relaxed),
        ),
    ];
    for (name, help, v) in engine_counters {
        family(&mut out, name, "counter", help);
        sample(&mut out, name, "", v);
    }
    family(&mut out, "tokenwatch_tokens", "gauge", "Tokens with state.");
    sample(&mut out, "tokenwatch_tokens", "", e.store.tokens);
    family(
        &mut out,
        "tokenwatch_policy_rules",
        "gauge",
        "Policy rules in force.",
    );
    sample(&mut out, "tokenwatch_policy_rules", "", e.policy.rules);
    for (name, help, value) in [
        (
            "tokenwatch_policy_rule_matches_total",
            "Events each policy rule matched.",
            (|r: &detectors::policy::RuleStats| r.matches) as fn(&_) -> u64,
        ),
        (
            "tokenwatch_policy_rule_errors_total",
            "Batches on which a policy rule failed (it matched nothing there).",
            |r| r.errors,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for rule in &e.policy.per_rule {
            let label = format!("rule=\"{}\"", label_value(&rule.name));
            sample(&mut out, name, &label, value(rule));
        }
    }

    let issuers = s
        .revoker
        .by_issuer
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    family(
        &mut out,
        "tokenwatch_revocations_total",
        "counter",
        "Revocations by issuer and outcome.",
    );
    for (issuer, c) in &issuers {
        for (outcome, n) in [
            ("revoked", c.revoked),
            ("accepted", c.accepted),
            ("failed", c.failed),
            ("awaiting_secret", c.awaiting_secret),
            ("failing", c.failing),
            ("duplicate", c.duplicates),
        ] {
            sample(
                &mut out,
                "tokenwatch_revocations_total",
                &format!("issuer=\"{}\",outcome=\"{outcome}\"", label_value(issuer)),
                n,
            );
        }
    }
    family(
        &mut out,
        "tokenwatch_secret_conflicts_total",
        "counter",
        "Records that gave a token id a different secret than the one held (neither is used).",
    );
    for (issuer, c) in &issuers {
        sample(
            &mut out,
            "tokenwatch_secret_conflicts_total",
            &format!("issuer=\"{}\"", label_value(issuer)),
            c.secret_conflicts,
        );
    }
    family(
        &mut out,
        "tokenwatch_revocation_attempts_total",
        "counter",
        "Issuer calls, by issuer.",
    );
    for (issuer, c) in &issuers {
        sample(
            &mut out,
            "tokenwatch_revocation_attempts_total",
            &format!("issuer=\"{}\"", label_value(issuer)),
            c.attempts,
        );
    }
    family(
        &mut out,
        "tokenwatch_revocation_retries_total",
        "counter",
        "Issuer calls that were retries, by issuer.",
    );
    for (issuer, c) in &issuers {
        sample(
            &mut out,
            "tokenwatch_revocation_retries_total",
            &format!("issuer=\"{}\"", label_value(issuer)),
            c.retries,
        );
    }
    family(
        &mut out,
        "tokenwatch_breaker_opened_total",
        "counter",
        "Times an issuer's circuit breaker opened.",
    );
    sample(
        &mut out,
        "tokenwatch_breaker_opened_total",
        "",
        s.revoker.breaker_opened(),
    );
    family(
        &mut out,
        "tokenwatch_alerts_over_budget_total",
        "counter",
        "Alert messages held back by revoker.alert_budget_per_minute.",
    );
    sample(
        &mut out,
        "tokenwatch_alerts_over_budget_total",
        "",
        s.revoker.alerts_over_budget.load(Relaxed),
    );
    family(
        &mut out,
        "tokenwatch_ledger_write_failures_total",
        "counter",
        "Failed ledger writes of a new revocation (each retry counts); the issuer is not called until one succeeds.",
    );
    sample(
        &mut out,
        "tokenwatch_ledger_write_failures_total",
        "",
        s.revoker.ledger_write_failures.load(Relaxed),
    );

    let w = &s.webhooks;
    family(
        &mut out,
        "tokenwatch_webhook_deliveries_total",
        "counter",
        "Webhook deliveries by result.",
    );
    sample(
        &mut out,
        "tokenwatch_webhook_deliveries_total",
        "result=\"delivered\"",
        w.delivered.load(Relaxed),
    );
    sample(
        &mut out,
        "tokenwatch_webhook_deliveries_total",
        "result=\"dead_lettered\"",
        w.dead_lettered.load(Relaxed),
    );
    family(
        &mut out,
        "tokenwatch_webhook_retries_total",
        "counter",
        "Webhook delivery retries.",
    );
    sample(
        &mut out,
        "tokenwatch_webhook_retries_total",
        "",
        w.retries.load(Relaxed),
    );

    summary(
        &mut out,
        "tokenwatch_event_to_decision_seconds",
        "Kafka timestamp of the triggering event to decision.",
        &s.flow.decision_latency_us,
    );
    summary(
        &mut out,
        "tokenwatch_decision_to_issuer_seconds",
        "Decision to the issuer's final answer.",
        &s.revoker.decision_to_answer_us,
    );
    summary(
        &mut out,
        "tokenwatch_event_to_revoked_seconds",
        "Kafka timestamp of the triggering event to the issuer confirming.",
        &s.revoker.event_to_revoked_us,
    );
    summary(
        &mut out,
        "tokenwatch_ingest_latency_seconds",
        "Kafka timestamp to the detect stage.",
        &s.flow.ingest_latency_us,
    );
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use revoker::metrics::RevokerMetrics;
    use tokio::sync::mpsc;

    use super::*;

    /// Issuer names come from event input: a crafted one can neither mint
    /// a label (unconfigured issuers share one) nor break the exposition.
    #[tokio::test]
    async fn input_issuer_names_cannot_mint_labels_or_break_the_scrape() {
        let revoker = Arc::new(RevokerMetrics::for_issuers(&["okta".to_string()]));
        for i in 0..1000 {
            revoker.count(&format!("evil-{i}"), |c| c.failed += 1);
        }
        revoker.count("x\"} 1\nfake_metric{a=\"", |c| c.failed += 1);
        revoker.count("okta", |c| c.revoked += 1);
        let (control, _) = mpsc::channel(1);
        let (commands, _) = mpsc::channel(1);
        let state = AdminState {
            flow: Arc::default(),
            ingest: Arc::default(),
            revoker,
            webhooks: Arc::default(),
            control,
            commands,
            token: None,
            denylist_token: None,
        };
        let text = render(&state);
        assert!(
            !text.contains("fake_metric") && !text.contains("evil-"),
            "{text}"
        );
        assert!(text.contains(
            "tokenwatch_revocations_total{issuer=\"unconfigured\",outcome=\"failed\"} 1001"
        ));
        assert!(
            text.contains("tokenwatch_revocations_total{issuer=\"okta\",outcome=\"revoked\"} 1")
        );
        // Every sample line is `name{labels} value` or `name value`.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.split(' ').count() >= 2, "{line}");
            assert!(line.starts_with("tokenwatch_"), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
