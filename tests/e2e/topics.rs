//! Issue 13, section 1: tokenwatch creates its internal topics, as Kafka
//! Streams does, and checks the configs of existing ones.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{self, create_topic, unique_name};

/// A config whose internal topics (ledger, outbox, both dead-letter
/// topics) do not exist yet on the test broker.
fn fresh_config(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, [String; 4]) {
    let topics = [
        unique_name(&format!("{name}-ledger")),
        unique_name(&format!("{name}-dlq")),
        unique_name(&format!("{name}-outbox")),
        unique_name(&format!("{name}-hook-dlq")),
    ];
    let text = format!(
        r#"[ingest]
brokers = "{brokers}"
topics = ["{events}"]
group_id = "{group}"
dead_letter_topic = "{dlq}"
[revoker]
ledger_topic = "{ledger}"
webhook_outbox_topic = "{outbox}"
webhook_dead_letter_topic = "{hook_dlq}"
[[revoker.webhooks]]
url = "http://127.0.0.1:9/hooks"
secret_envs = ["TW_E2E_TOPICS_WHSEC"]
allow_loopback = true
[admin]
enabled = false
"#,
        brokers = support::brokers(),
        events = unique_name(&format!("{name}-events")),
        group = unique_name(&format!("{name}-group")),
        ledger = topics[0],
        dlq = topics[1],
        outbox = topics[2],
        hook_dlq = topics[3],
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    (path, topics)
}

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_a_fresh_broker_creates_its_internal_topics() {
    support::require_broker();
    let dir = support::temp_dir();
    let (path, topics) = fresh_config(&dir, "fresh");
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let mut child = support::tokenwatch()
        .args(["run", "--create-topics", "-c"])
        .arg(&path)
        .env("TW_E2E_TOPICS_WHSEC", WHSEC)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut configs = Vec::new();
    for topic in &topics {
        let mut found = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while found.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{topic} was not created; log: {}",
                std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
            );
            found = support::topic_configs(topic).await;
            if found.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        configs.push(found.unwrap());
    }
    // The ledger and the outbox are compacted; the dead-letter topics keep
    // records for the configured week and take the largest copy.
    for c in [&configs[0], &configs[2]] {
        assert_eq!(c["cleanup.policy"], "compact");
    }
    for c in [&configs[1], &configs[3]] {
        assert_eq!(c["cleanup.policy"], "delete");
        assert_eq!(c["retention.ms"], (7 * 86_400_000u64).to_string());
        assert_eq!(c["max.message.bytes"], (1_048_576 + 65_536).to_string());
    }
    // It runs on them.
    let running = child.try_wait().unwrap();
    assert!(running.is_none(), "run stopped: {running:?}");
    assert!(support::terminate(&mut child).success());

    // `topics check` now finds every one as it should be.
    let out = support::tokenwatch()
        .args(["topics", "check", "-c"])
        .arg(&path)
        .env("TW_E2E_TOPICS_WHSEC", WHSEC)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("exists, configs as required").count(),
        4,
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_is_not_compacted_is_refused_with_the_fix() {
    let dir = support::temp_dir();
    let (path, topics) = fresh_config(&dir, "uncompacted");
    // Someone made the ledger by hand, with the default cleanup policy.
    create_topic(&topics[0], 1).await;
    let out = support::tokenwatch()
        .args(["topics", "create", "-c"])
        .arg(&path)
        .env("TW_E2E_TOPICS_WHSEC", WHSEC)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{} (revocation ledger): cleanup.policy is \"delete\", must be \"compact\"",
            topics[0]
        )) && stdout.contains("kafka-configs --alter"),
        "{stdout}"
    );
    // The other three were created all the same.
    assert_eq!(stdout.matches(": created").count(), 3, "{stdout}");
    // `run` refuses it too, before consuming anything.
    let out = support::tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .env("TW_E2E_TOPICS_WHSEC", WHSEC)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("must be \"compact\""), "{stderr}");
}
