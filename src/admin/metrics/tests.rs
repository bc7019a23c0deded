use std::sync::Arc;

use revoker::metrics::RevokerMetrics;
use tokio::sync::mpsc;

use super::*;

fn state(revoker: Arc<RevokerMetrics>) -> AdminState {
    let (control, _) = mpsc::channel(1);
    let (commands, _) = mpsc::channel(1);
    AdminState {
        flow: Arc::default(),
        ingest: Arc::default(),
        revoker,
        webhooks: Arc::default(),
        control,
        commands,
        token: None,
        denylist_token: None,
    }
}

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
    let text = render(&state(revoker));
    assert!(
        !text.contains("fake_metric") && !text.contains("evil-"),
        "{text}"
    );
    assert!(
        text.contains(
            "tokenwatch_revocations_total{issuer=\"unconfigured\",outcome=\"failed\"} 1001"
        )
    );
    assert!(text.contains("tokenwatch_revocations_total{issuer=\"okta\",outcome=\"revoked\"} 1"));
    // OpenMetrics: every sample line is `name{labels} value` or `name
    // value`, and the text ends with `# EOF`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.split(' ').count() >= 2, "{line}");
        assert!(
            line.starts_with("tokenwatch_") || line.starts_with("process_"),
            "{line}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn label_values_are_escaped() {
    // A configured issuer may be named anything the config allows.
    let odd = "we\"ird\\name\nx";
    let revoker = Arc::new(RevokerMetrics::for_issuers(&[odd.to_string()]));
    revoker.count(odd, |c| c.revoked += 1);
    let text = render(&state(revoker));
    assert!(
        text.contains(
            r#"tokenwatch_revocations_total{issuer="we\"ird\\name\nx",outcome="revoked"} 1"#
        ),
        "{text}"
    );
}

#[test]
fn latencies_are_histograms_with_buckets_sum_and_count() {
    let s = state(Arc::new(RevokerMetrics::for_issuers(&[])));
    {
        let mut h = s.flow.decision_latency_us.lock().unwrap();
        for us in [500, 500, 500, 3_000, 2_000_000] {
            h.record(us).unwrap();
        }
    }
    let text = render(&s);
    let value = |sample: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{sample} ")))
            .unwrap_or_else(|| panic!("no {sample} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let name = "tokenwatch_event_to_decision_seconds";
    assert!(text.contains(&format!("# TYPE {name} histogram")), "{text}");
    // Cumulative, as Prometheus sums them across instances.
    for (le, n) in [
        ("0.001", 3.0),
        ("0.0025", 3.0),
        ("0.005", 4.0),
        ("1.0", 4.0),
        ("2.5", 5.0),
        ("+Inf", 5.0),
    ] {
        assert_eq!(
            value(&format!("{name}_bucket{{le=\"{le}\"}}")),
            n,
            "le {le}"
        );
    }
    assert_eq!(value(&format!("{name}_count")), 5.0);
    // The sum is as exact as the recording (3 significant digits).
    let sum = value(&format!("{name}_sum"));
    assert!((sum - 2.0045).abs() < 0.003, "{sum}");
}

#[test]
fn build_info_process_metrics_and_reload_times_are_there() {
    let s = state(Arc::new(RevokerMetrics::for_issuers(&[])));
    s.flow.reloaded(Reloaded::Policy);
    let text = render(&s);
    assert!(
        text.contains(&format!(
            "tokenwatch_build_info{{version=\"{}\",librdkafka=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "tokenwatch_last_reload_timestamp_seconds{what=\"geoip\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    let policy = text
        .lines()
        .find(|l| l.starts_with("tokenwatch_last_reload_timestamp_seconds{what=\"policy\"}"))
        .unwrap();
    let at: f64 = policy.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(at > 1.7e9, "{policy}");
}

/// The shipped alert rules and Grafana dashboard name only metrics that
/// `/metrics` serves (a renamed metric would silently blind them).
#[test]
fn shipped_rules_and_dashboard_name_real_metrics() {
    let s = state(Arc::new(RevokerMetrics::for_issuers(&[])));
    let text = render(&s);
    // Family names as declared, then the sample names each one yields.
    let mut served = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split(' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            served.insert(format!("{name}{suffix}"));
        }
    }
    for (file, text) in [
        (
            "deploy/observability/tokenwatch-alerts.yaml",
            include_str!("../../../deploy/observability/tokenwatch-alerts.yaml"),
        ),
        (
            "deploy/observability/grafana-dashboard.json",
            include_str!("../../../deploy/observability/grafana-dashboard.json"),
        ),
    ] {
        let mut named = 0;
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let ours = word.starts_with("tokenwatch_") || word.starts_with("process_");
            // Rule names and prose mention the product, not metrics.
            if ours && word.len() > "tokenwatch_".len() {
                assert!(
                    served.contains(word),
                    "{file} names {word}, which /metrics does not serve"
                );
                named += 1;
            }
        }
        assert!(named >= 8, "{file} names {named} metrics");
    }
}
