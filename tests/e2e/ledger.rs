//! Issue 11, sections 4 and 8: ledger-first and fail-closed under failure,
//! on the real broker. While the ledger topic refuses writes (its
//! `max.message.bytes` is cut below a record's size), a decided revocation
//! never reaches its issuer and its batch is never acknowledged; the write
//! is retried, and once the topic takes writes again the revocation goes
//! out once and the batch is committed. When it does not recover in time,
//! `run` stops without committing the batch. Without the topic, `run`
//! refuses to start.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use revoker::IssuerConfig;
use revoker::testing::{Reply, TestServer};
use schemas::Event;

use crate::support::{self, create_topic, produce, progress, unique_name, until};

async fn set_max_message_bytes(topic: &str, bytes: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", support::brokers())
        .create()
        .unwrap();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", bytes);
    for r in admin
        .alter_configs([&change], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap_or_else(|(_, e)| panic!("cannot alter {topic}: {e}"));
    }
}

/// A config whose one token is bound to 10.0.0.0/8, and an event from
/// outside it: a deterministic revoke.
async fn setup(name: &str, issuer: &TestServer) -> (tokenwatch::Config, Vec<(String, Vec<u8>)>) {
    let topic = unique_name(&format!("{name}-events"));
    create_topic(&topic, 1).await;
    let mut config = support::config(name, &topic).await;
    config.decision.mode = schemas::Mode::Enforce;
    config.revoker.issuers.insert(
        "lf".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    let dir = support::temp_dir();
    std::fs::write(
        dir.join("tokens.ndjson"),
        "{\"issuer\":\"lf\",\"token_id\":\"lf-1\",\"bound_cidrs\":[\"10.0.0.0/8\"]}\n",
    )
    .unwrap();
    config.detectors.metadata_file = Some(dir.join("tokens.ndjson"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut e = Event::new(now, "lf-1", "lf", "GET /v1/orders");
    e.src_ip = Some(std::net::IpAddr::from([203, 0, 113, 7]));
    (config, vec![("lf-1".into(), e.to_json().into_bytes())])
}

fn ledger_failures(run: &support::Run) -> u64 {
    let probe = run.stats.probe_addr.get().copied();
    probe
        .and_then(|addr| {
            crate::reload::metric(&addr.to_string(), "tokenwatch_ledger_write_failures_total")
        })
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_ledger_refuses_writes_nothing_is_called_or_committed_then_it_recovers() {
    let issuer = TestServer::start(Reply::status(200)).await;
    let (config, records) = setup("ledger-down", &issuer).await;
    let (topic, group) = (
        config.ingest.topics[0].clone(),
        config.ingest.group_id.clone(),
    );
    set_max_message_bytes(&config.revoker.ledger_topic, "100").await;
    let run = support::start(&config).await;
    until("the consumer to join", Duration::from_secs(30), || {
        run.metrics.assigned_partitions.load(Relaxed) > 0
    })
    .await;
    produce(&topic, &records).await;
    until("two failed ledger writes", Duration::from_secs(60), || {
        ledger_failures(&run) >= 2
    })
    .await;
    assert!(
        support::revoked_tokens(&issuer).is_empty(),
        "the issuer is not called before the ledger write"
    );
    assert_eq!(
        progress(&group, &topic, 1).0,
        0,
        "the batch is not committed"
    );

    set_max_message_bytes(&config.revoker.ledger_topic, "8388608").await;
    until(
        "the revocation once the ledger takes writes",
        Duration::from_secs(60),
        || support::revoked_tokens(&issuer) == ["lf-1"],
    )
    .await;
    until("the batch to be committed", Duration::from_secs(30), || {
        let (done, end) = progress(&group, &topic, 1);
        done == end
    })
    .await;
    assert!(!run.task.is_finished(), "still running");
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
    assert_eq!(support::revoked_tokens(&issuer), ["lf-1"], "once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_stays_down_stops_run_without_committing_the_batch() {
    let issuer = TestServer::start(Reply::status(200)).await;
    let (mut config, records) = setup("ledger-gone", &issuer).await;
    config.revoker.ledger_retry_for = Duration::from_secs(2);
    let (topic, group) = (
        config.ingest.topics[0].clone(),
        config.ingest.group_id.clone(),
    );
    set_max_message_bytes(&config.revoker.ledger_topic, "100").await;
    let run = support::start(&config).await;
    produce(&topic, &records).await;
    let stopped = tokio::time::timeout(Duration::from_secs(90), run.task)
        .await
        .expect("run stops on its own")
        .unwrap();
    let error = stopped.expect_err("run reports the failure");
    assert!(format!("{error:#}").contains("ledger"), "{error:#}");
    assert!(support::revoked_tokens(&issuer).is_empty());
    assert_eq!(
        progress(&group, &topic, 1).0,
        0,
        "the batch is not committed"
    );
}

#[test]
fn run_refuses_to_start_without_the_ledger_topic() {
    let path = support::config_without_ledger("no-such-ledger");
    let out = support::tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-ledger")
            && stderr.contains("tokenwatch topics create")
            && stderr.contains("--config cleanup.policy=compact"),
        "{stderr}"
    );
}
