//! The product end to end on the real broker: `run`'s pipeline with the
//! scripted scenario, loopback issuer and webhook receiver, the admin API,
//! `demo`, `replay`, and graceful shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ingest::IngestConfig;
use revoker::testing::{Reply, TestServer};
use revoker::{IssuerConfig, WebhookConfig};
use schemas::{Action, Mode};
use tokenwatch::Config;
use tokenwatch::scenario::Scenario;

use crate::support::{
    self, create_topic, produce, python, revoked_tokens, start, temp, temp_dir, tokenwatch,
    unique_name, until,
};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN_TOKEN: &str = "e2e-admin-token";
const DENYLIST_TOKEN: &str = "e2e-denylist-token";

/// A config for `scenario` against the real broker and loopback servers.
async fn config_for(
    scenario: &Scenario,
    issuer: &TestServer,
    hooks: Option<&TestServer>,
) -> Config {
    let topic = unique_name("product-events");
    create_topic(&topic, 4).await;
    let mut config = support::config("product", &topic).await;
    config.detectors = support::scenario_detectors(scenario, &temp_dir());
    config.decision.mode = Mode::Enforce;
    config.admin.token_env = "TW_E2E_ADMIN_TOKEN".into();
    config.admin.denylist_token_env = "TW_E2E_DENYLIST_TOKEN".into();
    config.revoker.issuers.insert(
        "demo-oauth".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    if let Some(hooks) = hooks {
        unsafe {
            std::env::set_var("TW_E2E_PRODUCT_WHSEC", WHSEC);
            std::env::set_var("TW_E2E_ADMIN_TOKEN", ADMIN_TOKEN);
            std::env::set_var("TW_E2E_DENYLIST_TOKEN", DENYLIST_TOKEN);
        }
        config.revoker.webhooks.push(WebhookConfig {
            url: hooks.url("/hooks"),
            secret_envs: vec!["TW_E2E_PRODUCT_WHSEC".into()],
            min_action: Action::Alert,
            retry_schedule: vec![Duration::from_millis(50)],
            timeout: Duration::from_secs(5),
            allow_loopback: true,
        });
    }
    config
}

fn records(scenario: &Scenario) -> Vec<(String, Vec<u8>)> {
    scenario
        .events
        .iter()
        .map(|e| (e.token_id.clone(), e.to_json().into_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_revokes_exactly_the_scripted_attacks_and_reports_them() {
    let scenario = Scenario::generate(5, 1000, 1_795_813_200_000, 3 * 3_600_000, 180_000);
    let issuer = TestServer::start(Reply::status(200)).await;
    let hooks = TestServer::start(Reply::status(204)).await;
    let config = config_for(&scenario, &issuer, Some(&hooks)).await;
    let run = start(&config).await;
    until("the consumer to join", Duration::from_secs(30), || {
        run.metrics.assigned_partitions.load(Relaxed) > 0
    })
    .await;
    produce(&config.ingest.topics[0], &records(&scenario)).await;
    let total = scenario.events.len() as u64;
    until(
        "every event to be processed",
        Duration::from_secs(180),
        || run.stats.events.load(Relaxed) >= total,
    )
    .await;
    let attack_tokens = scenario.attack_tokens();
    until("five revocations", Duration::from_secs(30), || {
        revoked_tokens(&issuer) == attack_tokens
    })
    .await;

    let admin = format!("http://{}", run.stats.admin_addr.get().unwrap());
    let probe = format!("http://{}", run.stats.probe_addr.get().unwrap());
    let client = reqwest::Client::new();
    let metrics = client
        .get(format!("{probe}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("tokenwatch_revocations_total{issuer=\"demo-oauth\",outcome=\"revoked\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("tokenwatch_revocations_total{issuer=\"demo-oauth\",outcome=\"failed\"} 0")
    );
    assert!(metrics.contains(&format!("tokenwatch_ingest_events_total {total}")));
    assert!(!metrics.contains("tok-0"), "no token id is a metric label");
    assert_eq!(
        client
            .get(format!("{probe}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Each listener serves its own routes only.
    assert_eq!(
        client
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .get(format!("{probe}/v1/denylist"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Issue 11, section 6: no /v1 route answers without the right token.
    let revoke_body = serde_json::json!({"issuer": "demo-oauth", "token_id": "tok-00001"});
    let routes = [
        ("GET", "/v1/tokens/demo-oauth/atk-impossible_travel"),
        ("GET", "/v1/decisions"),
        ("GET", "/v1/denylist"),
        ("POST", "/v1/revoke"),
        ("POST", "/v1/allow"),
    ];
    let call = |method: &str, path: &str, token: Option<&str>| {
        let url = format!("{admin}{path}");
        let mut request = if method == "GET" {
            client.get(url)
        } else {
            client.post(url).json(&revoke_body)
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for (method, path) in routes {
        for token in [None, Some("nope")] {
            let status = call(method, path, token).await.unwrap().status();
            assert_eq!(status, 401, "{method} {path} with {token:?}");
        }
        // The gateways' read-only token opens the denylist alone.
        let status = call(method, path, Some(DENYLIST_TOKEN))
            .await
            .unwrap()
            .status();
        let expected = if path == "/v1/denylist" { 200 } else { 401 };
        assert_eq!(status, expected, "{method} {path} with the denylist token");
    }
    let denylist: Vec<serde_json::Value> = call("GET", "/v1/denylist", Some(DENYLIST_TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(denylist.len(), 5);
    let view: serde_json::Value = call(
        "GET",
        "/v1/tokens/demo-oauth/atk-impossible_travel",
        Some(ADMIN_TOKEN),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(view["revocation"]["state"], "revoked");
    assert!(view["state"]["geo"]["countries"].as_array().unwrap().len() >= 2);
    let decisions: Vec<serde_json::Value> =
        call("GET", "/v1/decisions?limit=1000", Some(ADMIN_TOKEN))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let mut decided: Vec<String> = decisions
        .iter()
        .filter(|d| d["action"] == "revoke")
        .map(|d| d["token_id"].as_str().unwrap().to_string())
        .collect();
    decided.sort();
    decided.dedup();
    assert_eq!(
        decided, attack_tokens,
        "GET /v1/decisions lists the revokes"
    );
    // The authorised kill switch and allowlist.
    let manual = client
        .post(format!("{admin}/v1/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &serde_json::json!({"issuer": "demo-oauth", "token_id": "tok-manual", "reason": "e2e"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(manual.status(), 202);
    until(
        "the manual revocation to reach the issuer",
        Duration::from_secs(30),
        || revoked_tokens(&issuer).contains(&"tok-manual".to_string()),
    )
    .await;
    let allowed = client
        .post(format!("{admin}/v1/allow"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"token": "demo-oauth/tok-00002"}))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    // A body over max_body_bytes is refused before it is read.
    let huge = client
        .post(format!("{admin}/v1/allow"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!("{{\"token\":\"{}\"}}", "x".repeat(100 << 10)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    // A histogram: the mean from its sum and count, and every revocation
    // in some bucket.
    let sample = |name: &str| {
        metrics
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let count = sample("tokenwatch_event_to_revoked_seconds_count");
    assert_eq!(
        sample("tokenwatch_event_to_revoked_seconds_bucket{le=\"+Inf\"}"),
        count,
        "{metrics}"
    );
    eprintln!(
        "produce → revoked latency: mean {:.1} ms over {count} revocations (debug build, {total} events pre-loaded at once)",
        sample("tokenwatch_event_to_revoked_seconds_sum") / count * 1000.0
    );

    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
    let mut expected = attack_tokens.clone();
    expected.push("tok-manual".into());
    expected.sort();
    assert_eq!(
        revoked_tokens(&issuer),
        expected,
        "each attack token revoked once, no benign token, and the manual one"
    );
    let messages = support::webhook_messages(&hooks);
    assert!(
        messages.len() >= 10,
        "a decision and a revocation message per attack"
    );
    python::verify_webhooks(WHSEC, &messages)
        .unwrap_or_else(|e| panic!("a webhook did not verify: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_nothing() {
    let scenario = Scenario::generate(9, 1000, 1_795_813_200_000, 3 * 3_600_000, 180_000);
    let issuer = TestServer::start(Reply::status(200)).await;
    let config = config_for(&scenario, &issuer, None).await;
    // Per-token state is in memory and relearnt after a restart (README,
    // "Delivery guarantees"), so an attack split across the restart (a
    // home call before it, the far call after) could go unseen. The first
    // instance is only given events from well before the first attack:
    // it cannot read past them however late the stop lands under load.
    let first_attack = scenario.attacks.iter().map(|a| a.at_ms).min().unwrap();
    let all = records(&scenario);
    let split = scenario
        .events
        .iter()
        .position(|e| e.ts_ms >= first_attack - 3_600_000)
        .unwrap();
    let total = scenario.events.len() as u64;
    assert!(
        split as u64 >= total / 5,
        "enough events before the attacks: {split} of {total}"
    );
    produce(&config.ingest.topics[0], &all[..split]).await;

    let first = start(&config).await;
    // Stop early, mid-stream and under load: batches in flight are drained,
    // so the first instance ends somewhat later; every attack must still
    // be caught, exactly once.
    until("a tenth of the events", Duration::from_secs(120), || {
        first.stats.events.load(Relaxed) >= total / 10
    })
    .await;
    let at_signal = first.stats.events.load(Relaxed);
    let _ = first.stop.send(());
    first.task.await.unwrap().unwrap();
    let seen_first = first.stats.events.load(Relaxed);
    eprintln!(
        "stop signalled after {at_signal} events; {seen_first} processed by the end of the graceful shutdown"
    );
    assert!(
        seen_first < total / 2,
        "stopped under load, well before the end ({seen_first} of {total})"
    );
    let revoked_by_first = first.stats.decided(Action::Revoke);
    assert_eq!(
        revoked_tokens(&issuer).len() as u64,
        revoked_by_first,
        "every revocation decided before the stop reached the issuer"
    );

    produce(&config.ingest.topics[0], &all[split..]).await;
    let second = start(&config).await;
    until("the rest of the events", Duration::from_secs(120), || {
        seen_first + second.stats.events.load(Relaxed) >= total
    })
    .await;
    let _ = second.stop.send(());
    second.task.await.unwrap().unwrap();
    assert_eq!(
        seen_first + second.stats.events.load(Relaxed),
        total,
        "the restart resumed exactly at the committed offsets"
    );
    assert_eq!(
        revoked_tokens(&issuer),
        scenario.attack_tokens(),
        "every decision made it, once, across the restart"
    );
}

#[test]
fn demo_detects_and_revokes_every_scripted_attack() {
    let summary = temp("summary.json");
    let out = tokenwatch()
        .args([
            "demo",
            "--seconds",
            "20",
            "--tokens",
            "100",
            "--summary-json",
        ])
        .arg(&summary)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Its table is the whole output: the logs went to a file it names.
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.contains(" WARN ") && !stderr.contains(" WARN ") && !stderr.contains(" INFO "),
        "log lines among the demo's output:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("logs: "), "{stdout}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let attacks = s["attacks"].as_array().unwrap();
    assert_eq!(attacks.len(), 5);
    for a in attacks {
        assert_eq!(
            (a["detected"].as_bool(), a["revoked"].as_bool()),
            (Some(true), Some(true)),
            "{a}"
        );
        assert!(a["latency_ms"].as_i64().is_some(), "{a}");
        assert_eq!(a["issuer_calls"], 1, "revoked once: {a}");
    }
    // The figures themselves, not the demo's own verdict on them.
    assert_eq!(s["benign_false_revocations"], 0, "{s}");
    assert_eq!(s["bad_signatures"], 0, "every webhook verified: {s}");
    assert_eq!(
        s["benign_alerts"]["home"].as_u64().unwrap_or(0),
        0,
        "no plain benign token was alerted: {s}"
    );
    assert!(s["events_produced"].as_u64().unwrap() > 1000, "{s}");
}

#[test]
fn replay_is_deterministic() {
    let scenario = Scenario::generate(3, 200, 1_795_813_200_000, 3 * 3_600_000, 120_000);
    let input = temp("events.ndjson");
    let text: String = scenario.events.iter().map(|e| e.to_json() + "\n").collect();
    std::fs::write(&input, text).unwrap();
    let detectors = support::scenario_detectors(&scenario, &temp_dir());
    let config = Config {
        ingest: IngestConfig::new(vec!["replay".into()]),
        detectors,
        decision: Default::default(),
        revoker: Default::default(),
        admin: Default::default(),
        topics: Default::default(),
        health: Default::default(),
        changelog: Default::default(),
        source: None,
    };
    let config_path = temp("replay.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let replay = || {
        let out = tokenwatch()
            .arg("replay")
            .arg("-c")
            .arg(&config_path)
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let (a, b) = (replay(), replay());
    assert!(!a.is_empty());
    assert_eq!(a, b, "byte-identical decisions");
    let text = String::from_utf8(a).unwrap();
    for attack in &scenario.attacks {
        assert!(
            text.lines().any(
                |l| l.contains(&format!("\"token_id\":\"{}\"", attack.token_id))
                    && l.contains("\"recommended\":\"revoke\"")
            ),
            "{} is not among the would-revoke decisions",
            attack.name
        );
    }
    assert!(
        text.lines().all(|l| l.contains("\"mode\":\"dry_run\"")),
        "replay is a dry run"
    );
    assert!(
        text.lines().all(|l| !l.contains("\"action\":\"revoke\"")),
        "replay never revokes"
    );
}

/// `check-config` never echoes a secret put in `ingest.properties` by
/// mistake (issue 11, section 1), and refuses it: secrets come from the
/// environment (`properties_from_env`), never from the file (issue 13).
#[test]
fn check_config_refuses_secret_kafka_properties_without_echoing_them() {
    let canary = "canary-Kafka-s3cret-7f3a";
    let out = crate::support::check_example_config(
        "\"client.id\" = \"tokenwatch\"",
        &format!(
            "\"client.id\" = \"tokenwatch\"\n\"sasl.password\" = \"{canary}\"\n\"ssl.key.password\" = \"{canary}\""
        ),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        !stdout.contains(canary) && !stderr.contains(canary),
        "{stdout}{stderr}"
    );
    for key in ["sasl.password", "ssl.key.password"] {
        assert!(
            stderr.contains(&format!("ingest.properties: \"{key}\" is a secret")),
            "{stderr}"
        );
    }
}

/// The shipped example config names GeoLite2 where geoipupdate puts it;
/// without the files, `check-config` says how to get them (exit 78).
#[test]
fn check_config_says_how_to_get_geoip_databases() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::path::Path::new("/var/lib/GeoIP/GeoLite2-City.mmdb").exists() {
        return;
    }
    let out = tokenwatch()
        .current_dir(std::env::temp_dir())
        .arg("check-config")
        .arg(root.join("tokenwatch.example.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("/var/lib/GeoIP/GeoLite2-City.mmdb is not a readable file (get GeoLite2 with geoipupdate"),
        "{stderr}"
    );
    // Everything else resolves from the config's folder, not the working
    // directory (this one is the temp dir): no other problem.
    assert_eq!(stderr.matches("\n  - ").count(), 2, "{stderr}");
}

/// `check-config` reports a misspelt librdkafka property and a bad value
/// together, as librdkafka itself parses them, without a broker.
#[test]
fn check_config_reports_misspelt_kafka_properties() {
    let out = crate::support::check_example_config(
        "\"client.id\" = \"tokenwatch\"",
        "\"client.id\" = \"tokenwatch\"\n\"fetch.wait.max.mss\" = \"10\"\n\"security.protocol\" = \"SASL_TLS\"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // sysexits' EX_CONFIG, distinct from a run-time failure.
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("ingest.properties.\"fetch.wait.max.mss\": No such configuration property"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ingest.properties.\"security.protocol\": Invalid value"),
        "{stderr}"
    );
}

/// `tokenwatch bench` on the real broker, small: every figure is there and
/// consistent. (Speed itself is not asserted: it is what the bench reports.)
#[test]
fn bench_reports_r1_from_one_run_against_the_real_broker() {
    support::require_broker();
    let json = temp("bench.json");
    let out = tokenwatch()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TOKENWATCH_TEST_BROKERS", support::brokers())
        .args([
            "bench",
            "--events",
            "3000",
            "--tokens",
            "300",
            "--runs",
            "2",
            "--rate",
            "500",
            "--attacks",
            "15",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| R1 throughput ratio"), "{stdout}");
    assert!(stdout.contains("| R3 memory per token"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["events"], 3000);
    assert_eq!(r["bare_rates"].as_array().unwrap().len(), 2);
    assert_eq!(r["pipeline_rates"].as_array().unwrap().len(), 2);
    let (bare, piped, r1) = (
        r["bare_median"].as_f64().unwrap(),
        r["pipeline_median"].as_f64().unwrap(),
        r["r1"].as_f64().unwrap(),
    );
    assert!(bare > 0.0 && piped > 0.0, "{r}");
    assert!((r1 - piped / bare).abs() < 1e-9, "{r}");
    assert!(
        (300..=500).contains(&r["mean_payload_bytes"].as_u64().unwrap()),
        "{r}"
    );
    // R2: every attack revoked and timed; tokenwatch's own part is the
    // end-to-end figure less the bare consumer's.
    assert!(stdout.contains("| R2 latency tokenwatch adds"), "{stdout}");
    let l = &r["latency"];
    assert_eq!(
        (l["attacks"].as_u64(), l["measured"].as_u64()),
        (Some(15), Some(15)),
        "{r}"
    );
    for q in ["end_to_end", "bare", "added", "to_decision"] {
        let (p50, p99, max) = (
            l[q]["p50_ms"].as_f64().unwrap(),
            l[q]["p99_ms"].as_f64().unwrap(),
            l[q]["max_ms"].as_f64().unwrap(),
        );
        assert!(p50 <= p99 && p99 <= max, "{q}: {l}");
    }
    assert!(l["end_to_end"]["p50_ms"].as_f64().unwrap() > 0.0, "{l}");
    // Per-stage time comes from the pipeline's own counters.
    let stages = &r["ns_per_event"];
    for stage in ["decode", "enrich", "detectors", "rules"] {
        assert!(stages[stage].as_f64().unwrap() > 0.0, "{stage}: {stages}");
    }
    let b = &r["batching"];
    assert!(b["batches"].as_u64().unwrap() > 0, "{b}");
    assert_eq!(
        ["full", "idle", "linger"]
            .iter()
            .map(|k| b[k].as_u64().unwrap())
            .sum::<u64>(),
        b["batches"].as_u64().unwrap(),
        "every batch closed for one reason: {b}"
    );
    // The bench deletes the topics it made: runs must not fill the disk.
    let events_topic = stdout
        .split_once(" into ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("the bench names its topic");
    let left: Vec<String> = bench_topics()
        .into_iter()
        .filter(|t| t.starts_with(events_topic))
        .collect();
    assert!(left.is_empty(), "topics left behind: {left:?}");
}

/// Topics on the test broker named like the bench's.
fn bench_topics() -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", support::brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, std::time::Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with("bench-"))
        .collect()
}

/// `--log-format json`: each log line is one JSON object with the fields
/// the README documents, for a log pipeline.
#[test]
fn json_logs_are_one_object_per_line() {
    // A ledger topic that does not exist: `run` warns, then stops.
    let path = support::config_without_ledger("json-log-no-ledger");
    let out = tokenwatch()
        .args(["--log-format", "json", "run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let warning = logs
        .iter()
        .find(|l| l["level"] == "WARN")
        .unwrap_or_else(|| panic!("no WARN line in\n{stderr}"));
    assert_eq!(warning["target"], "tokenwatch::cli", "{warning}");
    assert!(warning["timestamp"].as_str().is_some(), "{warning}");
    assert_eq!(
        warning["fields"]["message"], "Internal topic needs attention.",
        "{warning}"
    );
    assert!(
        warning["fields"]["topic"]
            .as_str()
            .is_some_and(|t| t.contains("json-log-no-ledger")),
        "{warning}"
    );
    // Only the final error, for a person, is plain text.
    assert!(
        stderr
            .lines()
            .filter(|l| !l.starts_with('{'))
            .all(|l| l.starts_with("error: ") || l.starts_with("  ") || l.is_empty()),
        "{stderr}"
    );
}
