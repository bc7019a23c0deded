//! `/metrics`, in the OpenMetrics text format through `prometheus-client`.
//! The pipeline's own counters are read at scrape time (a [`Collector`]);
//! latencies are histograms with buckets (`_bucket`, `_sum`, `_count`), so
//! they add up across instances; process metrics come from `/proc`.
//!
//! Labels are detectors, actions, issuers (configured ones; every other
//! name is `unconfigured`), outcomes, reasons, rule names and reload kinds:
//! bounded by code or config, never by input, and never token ids. Every
//! label value is escaped.

use std::fmt::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use schemas::DetectorKind;

use super::AdminState;
use crate::pipeline::Reloaded;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency bucket bounds, seconds: revocation is a matter of milliseconds,
/// a backlog of minutes.
const BUCKETS_S: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A label value, escaped as the text format requires (backslash, double
/// quote, line feed); `prometheus-client` writes values as they are.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A counter without labels. `name` without `_total`, which the format adds.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A counter family: one sample per label set.
fn counters<'a, const N: usize>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = ([(&'static str, &'a str); N], u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        let labels = labels.map(|(k, v)| (k, Escaped(v)));
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// An hdrhistogram of microseconds as a histogram in seconds. Bucket
/// counts and the sum are as exact as the recording (3 significant digits).
fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Mutex<Histogram<u64>>,
) -> fmt::Result {
    let (sum, count, buckets) = match h.lock() {
        Ok(h) => buckets_of(&h),
        Err(_) => return Ok(()),
    };
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

/// Sum (seconds), count and per-bucket counts (not cumulative; the last
/// bound is +Inf) of a histogram of microseconds.
fn buckets_of(h: &Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = BUCKETS_S.iter().map(|&b| (b, 0)).collect();
    buckets.push((f64::MAX, 0));
    let mut sum_us = 0f64;
    for v in h.iter_recorded() {
        let us = h.highest_equivalent(v.value_iterated_to());
        let n = v.count_at_value();
        sum_us += us as f64 * n as f64;
        let seconds = us as f64 / 1e6;
        let i = BUCKETS_S
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS_S.len());
        buckets[i].1 += n;
    }
    (sum_us / 1e6, h.len(), buckets)
}

/// The scrape: everything read from the live state.
#[derive(Debug)]
struct Scrape(AdminStateRef);

/// [`AdminState`] for a [`Collector`], which must be `Debug`.
struct AdminStateRef(AdminState);

impl fmt::Debug for AdminStateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminState")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0.0;
        ingest(&mut enc, s)?;
        detection(&mut enc, s)?;
        revocation(&mut enc, s)?;
        latency(&mut enc, s)?;
        process(&mut enc)
    }
}

/// The OpenMetrics text of everything.
pub fn render(s: &AdminState) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(AdminStateRef(s.clone()))));
    let mut out = String::with_capacity(16 << 10);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

fn ingest(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let i = &s.ingest;
    for (name, help, v) in [
        (
            "tokenwatch_ingest_records",
            "Records read from Kafka, good and bad.",
            i.records.load(Relaxed),
        ),
        (
            "tokenwatch_ingest_events",
            "Records decoded into events.",
            i.events.load(Relaxed),
        ),
        (
            "tokenwatch_ingest_bytes",
            "Payload bytes read.",
            i.bytes.load(Relaxed),
        ),
        (
            "tokenwatch_ingest_batches",
            "Batches handed to detection.",
            i.batches.load(Relaxed),
        ),
        (
            "tokenwatch_offsets_stored",
            "Offsets stored after acknowledgement.",
            i.offsets_stored.load(Relaxed),
        ),
        (
            "tokenwatch_decode_errors",
            "Records that could not be decoded (all dead-lettered); a bad record in a CloudTrail file counts alone.",
            i.dead_lettered_total(),
        ),
        (
            "tokenwatch_skipped",
            "Well-formed vendor records that are no token's call (a GitHub web-session action, a CloudTrail AwsServiceEvent): not events, not errors.",
            i.skipped.load(Relaxed),
        ),
        (
            "tokenwatch_consumer_errors",
            "Kafka consumer errors that did not stop ingest (the client retries them).",
            i.consumer_errors.load(Relaxed),
        ),
    ] {
        counter(enc, name, help, v)?;
    }
    counters(
        enc,
        "tokenwatch_dead_lettered",
        "Records sent to the dead-letter topic, by reason.",
        i.dead_lettered_by_reason()
            .into_iter()
            .map(|(reason, n)| ([("reason", reason)], n)),
    )?;
    counters(
        enc,
        "tokenwatch_ingest_batch_closes",
        "Batches handed on, by why: full, idle (nothing more fetched: handed on at once) or linger.",
        ingest::BatchClose::ALL.map(|why| ([("reason", why.name())], i.closes(why))),
    )?;
    gauge(
        enc,
        "tokenwatch_assigned_partitions",
        "Partitions assigned to this instance.",
        i.assigned_partitions.load(Relaxed) as f64,
    )?;
    gauge(
        enc,
        "tokenwatch_consumer_lag",
        "Records behind the end of the assigned partitions.",
        i.consumer_lag.load(Relaxed) as f64,
    )?;
    // With ingest.repartition the counters above are detection's hop (the
    // internal topic); the source topics are read, decoded and
    // dead-lettered by the first hop.
    let Some(first) = s.flow.repartition.get() else {
        return Ok(());
    };
    for (name, help, v) in [
        (
            "tokenwatch_repartition_records",
            "Repartition step: records read from the source topics, good and bad.",
            first.records.load(Relaxed),
        ),
        (
            "tokenwatch_repartition_events",
            "Repartition step: records decoded into events and re-keyed to the internal topic.",
            first.events.load(Relaxed),
        ),
        (
            "tokenwatch_repartition_decode_errors",
            "Repartition step: source records that could not be decoded (all dead-lettered).",
            first.dead_lettered_total(),
        ),
    ] {
        counter(enc, name, help, v)?;
    }
    gauge(
        enc,
        "tokenwatch_repartition_consumer_lag",
        "Repartition step: records behind the end of its assigned source partitions.",
        first.consumer_lag.load(Relaxed) as f64,
    )
}

fn detection(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let e = s.flow.engine_stats();
    counters(
        enc,
        "tokenwatch_findings",
        "Findings by detector (shadow ones included).",
        DetectorKind::ALL.map(|d| ([("detector", d.as_str())], e.decision.findings[d.index()])),
    )?;
    counters(
        enc,
        "tokenwatch_decisions",
        "Decisions by action.",
        [("alert", 1), ("revoke", 2)]
            .map(|(action, i)| ([("action", action)], s.flow.decisions[i].load(Relaxed))),
    )?;
    for (name, help, v) in [
        (
            "tokenwatch_late_events",
            "Events past the allowed lateness (stateless checks only).",
            e.late_events,
        ),
        (
            "tokenwatch_future_events",
            "Events ahead of their Kafka timestamp by more than the allowed lateness (stateless checks only).",
            e.future_events,
        ),
        (
            "tokenwatch_tokens_evicted",
            "Tokens evicted at the state cap.",
            e.store.evicted,
        ),
        (
            "tokenwatch_tokens_expired",
            "Tokens forgotten after idle expiry.",
            e.store.expired,
        ),
        (
            "tokenwatch_shadow_findings",
            "Findings from detectors in shadow mode.",
            e.decision.shadow_findings,
        ),
        (
            "tokenwatch_allowlisted",
            "Events with findings exempted by an allowlist.",
            e.decision.allowlisted,
        ),
        (
            "tokenwatch_suppressed_repeats",
            "Repeats folded by deduplication.",
            e.decision.suppressed_repeats,
        ),
        (
            "tokenwatch_over_budget",
            "Revocations downgraded to alerts by the budget.",
            e.decision.over_budget,
        ),
        (
            "tokenwatch_unconfigured_issuer_revocations",
            "Revocations downgraded to alerts for naming no configured issuer.",
            e.decision.unconfigured_issuer,
        ),
        (
            "tokenwatch_low_confidence_caps",
            "Revocations capped at alert by low confidence.",
            e.decision.low_confidence_caps,
        ),
        (
            "tokenwatch_geoip_lookups",
            "GeoIP lookups that missed the cache.",
            e.geoip_lookups,
        ),
        (
            "tokenwatch_geoip_decode_errors",
            "GeoIP records found but not decodable (enriched as unknown).",
            e.geoip_decode_errors,
        ),
        (
            "tokenwatch_geoip_cache_hits",
            "GeoIP lookups served from the cache.",
            e.geoip_cache_hits,
        ),
        (
            "tokenwatch_policy_plans",
            "DataFusion plans of the rule sets put in force: one per rule per (re)load, never per batch.",
            e.policy.plans,
        ),
        (
            "tokenwatch_policy_evaluations",
            "Batches the policy rules were evaluated on.",
            e.policy.evaluations,
        ),
        (
            "tokenwatch_policy_reloads",
            "Rule sets put in force by a reload.",
            e.policy.reloads,
        ),
        (
            "tokenwatch_policy_reload_failures",
            "Reloads refused (bad config or rule); the rules in force stayed.",
            e.policy.reload_failures,
        ),
        (
            "tokenwatch_file_checks",
            "Checks of the GeoIP, metadata and rule files for changes.",
            s.flow.file_checks.load(Relaxed),
        ),
        (
            "tokenwatch_redelivered_events",
            "Events read again after a failover or restart that their token's restored state had already applied: not counted twice.",
            e.redelivered_events,
        ),
    ] {
        counter(enc, name, help, v)?;
    }
    if let Some(c) = s.flow.changelog.get() {
        for (name, help, v) in [
            (
                "tokenwatch_changelog_records_written",
                "Per-token state records checkpointed to the changelog topic.",
                c.records_written.load(Relaxed),
            ),
            (
                "tokenwatch_changelog_bytes_written",
                "Key and value bytes of the checkpointed records (before compression).",
                c.bytes_written.load(Relaxed),
            ),
            (
                "tokenwatch_changelog_records_restored",
                "State records read back from the changelog on assignment.",
                c.records_restored.load(Relaxed),
            ),
            (
                "tokenwatch_changelog_bad_records",
                "Changelog records that could not be read and were skipped.",
                c.bad_records.load(Relaxed),
            ),
            (
                "tokenwatch_changelog_restores",
                "Restores of assigned partitions' state.",
                c.restores.load(Relaxed),
            ),
        ] {
            counter(enc, name, help, v)?;
        }
        gauge(
            enc,
            "tokenwatch_changelog_restore_seconds",
            "Time spent restoring state, over every restore.",
            c.restore_ms.load(Relaxed) as f64 / 1000.0,
        )?;
    }
    gauge(
        enc,
        "tokenwatch_tokens",
        "Tokens with state.",
        e.store.tokens as f64,
    )?;
    gauge(
        enc,
        "tokenwatch_policy_rules",
        "Policy rules in force.",
        e.policy.rules as f64,
    )?;
    counters(
        enc,
        "tokenwatch_policy_rule_matches",
        "Events each policy rule matched.",
        e.policy
            .per_rule
            .iter()
            .map(|r| ([("rule", r.name.as_str())], r.matches)),
    )?;
    counters(
        enc,
        "tokenwatch_policy_rule_errors",
        "Batches on which a policy rule failed (it matched nothing there).",
        e.policy
            .per_rule
            .iter()
            .map(|r| ([("rule", r.name.as_str())], r.errors)),
    )?;
    let mut degraded = enc.encode_descriptor(
        "tokenwatch_detector_degraded",
        "1 while a health budget ([health]) is exceeded, by reason; detector_degraded and detector_recovered alerts mark the changes.",
        None,
        MetricType::Gauge,
    )?;
    for reason in crate::pipeline::health::Reason::ALL {
        let over = s.flow.degraded[reason as usize].load(Relaxed);
        ConstGauge::new(i64::from(over))
            .encode(degraded.encode_family(&[("reason", Escaped(reason.name()))])?)?;
    }
    let mut reloads = enc.encode_descriptor(
        "tokenwatch_last_reload_timestamp_seconds",
        "When each kind of reload (policy rules, GeoIP databases, metadata file) last succeeded, Unix time; 0 if never.",
        None,
        MetricType::Gauge,
    )?;
    for what in Reloaded::ALL {
        let at = s.flow.last_reload_s[what as usize].load(Relaxed);
        ConstGauge::new(at).encode(reloads.encode_family(&[("what", Escaped(what.name()))])?)?;
    }
    Ok(())
}

fn revocation(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let issuers = s
        .revoker
        .by_issuer
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    counters(
        enc,
        "tokenwatch_revocations",
        "Revocations by issuer and outcome.",
        issuers.iter().flat_map(|(issuer, c)| {
            [
                ("revoked", c.revoked),
                ("accepted", c.accepted),
                ("failed", c.failed),
                ("awaiting_secret", c.awaiting_secret),
                ("failing", c.failing),
                ("duplicate", c.duplicates),
            ]
            .map(|(outcome, n)| ([("issuer", issuer.as_str()), ("outcome", outcome)], n))
        }),
    )?;
    for (name, help, value) in [
        (
            "tokenwatch_secret_conflicts",
            "Records that gave a token id a different secret than the one held (neither is used), by issuer.",
            (|c: &revoker::metrics::IssuerCounts| c.secret_conflicts) as fn(&_) -> u64,
        ),
        (
            "tokenwatch_revocation_attempts",
            "Issuer calls, by issuer.",
            |c| c.attempts,
        ),
        (
            "tokenwatch_revocation_retries",
            "Issuer calls that were retries, by issuer.",
            |c| c.retries,
        ),
    ] {
        counters(
            enc,
            name,
            help,
            issuers
                .iter()
                .map(|(issuer, c)| ([("issuer", issuer.as_str())], value(c))),
        )?;
    }
    counter(
        enc,
        "tokenwatch_breaker_opened",
        "Times an issuer's circuit breaker opened.",
        s.revoker.breaker_opened(),
    )?;
    counter(
        enc,
        "tokenwatch_alerts_over_budget",
        "Alert messages held back by revoker.alert_budget_per_minute.",
        s.revoker.alerts_over_budget.load(Relaxed),
    )?;
    counter(
        enc,
        "tokenwatch_ledger_write_failures",
        "Failed ledger writes of a new revocation (each retry counts); the issuer is not called until one succeeds.",
        s.revoker.ledger_write_failures.load(Relaxed),
    )?;
    let w = &s.webhooks;
    counters(
        enc,
        "tokenwatch_webhook_deliveries",
        "Webhook deliveries by result.",
        [
            ([("result", "delivered")], w.delivered.load(Relaxed)),
            ([("result", "dead_lettered")], w.dead_lettered.load(Relaxed)),
        ],
    )?;
    counter(
        enc,
        "tokenwatch_webhook_retries",
        "Webhook delivery retries.",
        w.retries.load(Relaxed),
    )
}

fn latency(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    histogram(
        enc,
        "tokenwatch_event_to_decision_seconds",
        "Kafka timestamp of the triggering event to decision.",
        &s.flow.decision_latency_us,
    )?;
    histogram(
        enc,
        "tokenwatch_decision_to_issuer_seconds",
        "Decision to the issuer's final answer.",
        &s.revoker.decision_to_answer_us,
    )?;
    histogram(
        enc,
        "tokenwatch_event_to_revoked_seconds",
        "Kafka timestamp of the triggering event to the issuer confirming.",
        &s.revoker.event_to_revoked_us,
    )?;
    histogram(
        enc,
        "tokenwatch_ingest_latency_seconds",
        "Kafka timestamp to the detect stage.",
        &s.flow.ingest_latency_us,
    )
}

/// `tokenwatch_build_info` and the standard `process_*` metrics.
fn process(enc: &mut DescriptorEncoder) -> fmt::Result {
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    enc.encode_descriptor(
        "tokenwatch_build",
        "The running build.",
        None,
        MetricType::Info,
    )?
    .encode_info(&[
        ("version", Escaped(env!("CARGO_PKG_VERSION"))),
        ("librdkafka", Escaped(&librdkafka)),
    ])?;
    let p = super::process::read();
    if let Some(v) = p.cpu_seconds {
        let m = enc.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(v).encode(m)?;
    }
    for (name, help, value) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size, bytes.",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size, bytes.",
            p.virtual_bytes,
        ),
        ("process_open_fds", "Open file descriptors.", p.open_fds),
        (
            "process_max_fds",
            "The open file descriptor limit.",
            p.max_fds,
        ),
        ("process_threads", "OS threads.", p.threads),
        (
            "process_start_time_seconds",
            "Start time, Unix seconds.",
            p.start_time_s,
        ),
    ] {
        if let Some(v) = value {
            gauge(enc, name, help, v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
