//! Issue 13, section 1: tokenwatch where users' Kafka is. `tokenwatch run`
//! over the broker's SASL_SSL listener (SCRAM-SHA-512, a CA of its own, the
//! password from the environment), and a zstd-compressed topic.

use std::process::Stdio;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use revoker::IssuerConfig;
use revoker::testing::{Reply, TestServer};
use schemas::{Event, Mode};

use crate::support::{self, create_topic, create_topic_with, progress, unique_name, until};

/// The environment variable the SASL config names for the password.
const PASSWORD_ENV: &str = "TOKENWATCH_E2E_SASL_PASSWORD";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `count` benign calls of `token` from inside 10/8, then one call of
/// `attack` from outside it (a deterministic revoke when its metadata binds
/// it to 10/8).
fn records(token: &str, count: usize, attack: &str) -> Vec<(String, Vec<u8>)> {
    let t0 = now_ms();
    let mut out: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let mut e = Event::new(t0 + i as i64, token, "secure", "GET /v1/orders");
            e.src_ip = Some("10.1.2.3".parse().unwrap());
            e.request_id = Some(format!("ok-{i}"));
            (token.to_string(), e.to_json().into_bytes())
        })
        .collect();
    let mut e = Event::new(t0 + count as i64, attack, "secure", "GET /v1/orders");
    e.src_ip = Some("203.0.113.9".parse().unwrap());
    out.push((attack.to_string(), e.to_json().into_bytes()));
    out
}

/// A config for `topic` whose tokens `bound` are bound to 10/8, revoking
/// through `issuer`.
async fn config_for(
    name: &str,
    topic: &str,
    issuer: &TestServer,
    bound: &[&str],
) -> tokenwatch::Config {
    let mut config = support::config(name, topic).await;
    config.decision.mode = Mode::Enforce;
    config.revoker.issuers.insert(
        "secure".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    let metadata: String = bound
        .iter()
        .map(|t| {
            format!(
                "{{\"issuer\":\"secure\",\"token_id\":\"{t}\",\"bound_cidrs\":[\"10.0.0.0/8\"]}}\n"
            )
        })
        .collect();
    let path = support::temp("tokens.ndjson");
    std::fs::write(&path, metadata).unwrap();
    config.detectors.metadata_file = Some(path);
    config
}

/// Waits for the first revocation, then checks it was `token`'s alone.
async fn revoked_alone(issuer: &TestServer, token: &str) {
    until(
        "the stolen token's revocation",
        Duration::from_secs(30),
        || !support::revoked_tokens(issuer).is_empty(),
    )
    .await;
    assert_eq!(support::revoked_tokens(issuer), vec![token.to_string()]);
}

async fn produce_with(topic: &str, properties: &[(&str, &str)], records: &[(String, Vec<u8>)]) {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", support::brokers())
        .set("acks", "all");
    for (k, v) in properties {
        client.set(*k, *v);
    }
    let producer: FutureProducer = client.create().unwrap();
    for (key, payload) in records {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_over_sasl_ssl_with_scram_sha_512() {
    let sasl = support::sasl_properties();
    let issuer = TestServer::start(Reply::status(200)).await;
    let topic = unique_name("sasl-events");
    create_topic(&topic, 2).await;
    let mut config = config_for("sasl", &topic, &issuer, &["sasl-stolen"]).await;
    config.admin.enabled = false;
    // Every client (consumer, dead-letter producer, ledger) goes through
    // the SASL_SSL listener; the password only through the environment.
    config.ingest.brokers = sasl["bootstrap.servers"].clone();
    for key in [
        "security.protocol",
        "sasl.mechanisms",
        "sasl.username",
        "ssl.ca.location",
    ] {
        config
            .ingest
            .properties
            .insert(key.into(), sasl[key].clone());
    }
    assert_eq!(config.ingest.properties["sasl.mechanisms"], "SCRAM-SHA-512");
    config
        .ingest
        .properties_from_env
        .insert("sasl.password".into(), PASSWORD_ENV.into());
    let path = support::temp("sasl.toml");
    let text = toml::to_string(&config).unwrap();
    assert!(
        !text.contains(&sasl["sasl.password"]),
        "the password stays out of the file"
    );
    std::fs::write(&path, text).unwrap();

    let log = std::fs::File::create(path.with_file_name("sasl.log")).unwrap();
    let mut child = support::tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .env(PASSWORD_ENV, &sasl["sasl.password"])
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let mut input = records("sasl-ok", 20, "sasl-stolen");
    input.push(("sasl-bad".into(), b"not json".to_vec()));
    let secured: Vec<(&str, &str)> = sasl
        .iter()
        .filter(|(k, _)| *k != "bootstrap.servers")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut producer_props = secured.clone();
    producer_props.push(("bootstrap.servers", sasl["bootstrap.servers"].as_str()));
    produce_with(&topic, &producer_props, &input).await;

    let group = config.ingest.group_id.clone();
    until(
        "the pipeline to commit every record over SASL_SSL",
        Duration::from_secs(90),
        || {
            let (done, end) = progress(&group, &topic, 2);
            end == input.len() as i64 && done == end
        },
    )
    .await;
    revoked_alone(&issuer, "sasl-stolen").await;
    // The bad record reached the dead-letter topic through the same listener.
    let dead =
        support::read_records(&config.ingest.dead_letter_topic, 1, Duration::from_secs(30)).await;
    assert_eq!(
        dead[0].header("tokenwatch.reason"),
        Some("invalid_json"),
        "{:?}",
        dead[0].headers
    );

    let exit = support::terminate(&mut child);
    assert!(exit.success(), "SIGTERM ends with exit 0, got {exit:?}");
    let log = std::fs::read_to_string(path.with_file_name("sasl.log")).unwrap();
    assert!(
        !log.contains(&sasl["sasl.password"]),
        "the password is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_compressed_topic_is_read() {
    let issuer = TestServer::start(Reply::status(200)).await;
    let topic = unique_name("zstd-events");
    // The broker keeps the topic zstd-compressed whatever the producer
    // sends, and this producer sends zstd too.
    create_topic_with(&topic, 2, &[("compression.type", "zstd")]).await;
    let config = config_for("zstd", &topic, &issuer, &["zstd-stolen"]).await;
    let input = records("zstd-ok", 200, "zstd-stolen");
    produce_with(
        &topic,
        &[("compression.type", "zstd"), ("linger.ms", "20")],
        &input,
    )
    .await;

    let run = support::start(&config).await;
    until(
        "every zstd record to be detected",
        Duration::from_secs(60),
        || run.stats.engine_stats().events as usize >= input.len(),
    )
    .await;
    revoked_alone(&issuer, "zstd-stolen").await;
    assert_eq!(run.stats.engine_stats().events as usize, input.len());
    let dead: u64 = run
        .metrics
        .dead_lettered
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(dead, 0, "no zstd record was refused");
    run.stop.send(()).unwrap();
    run.task.await.unwrap().unwrap();
}
