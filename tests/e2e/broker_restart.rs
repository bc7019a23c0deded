//! Issue 14: a broker restart under load. The pipeline pauses while its
//! only broker is down, resumes when it is back, and loses nothing: every
//! event is committed, each attack is revoked once, no benign token is.
//! The test runs a broker of its own (scripts/kafka on free ports), so
//! restarting it disturbs no other test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use revoker::IssuerConfig;
use revoker::testing::{Reply, TestServer};
use tokenwatch::scenario::Scenario;

use crate::support::{self, unique_name, until};

/// A broker started by `scripts/kafka` in a home of its own; stopped on
/// drop, whatever happened.
struct PrivateBroker {
    port: u16,
    home: PathBuf,
}

impl PrivateBroker {
    fn script(&self, action: &str) {
        let out =
            std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka"))
                .arg(action)
                .env("KAFKA_PORT", self.port.to_string())
                .env("KAFKA_HOME_DIR", &self.home)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
        assert!(
            out.status.success(),
            "scripts/kafka {action} on port {}: {}{}",
            self.port,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> PrivateBroker {
        let port = support::free_ports(3);
        let broker = PrivateBroker {
            port,
            home: support::temp_dir().join("kafka"),
        };
        broker.script("start");
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka"))
                .arg("stop")
                .env("KAFKA_PORT", self.port.to_string())
                .env("KAFKA_HOME_DIR", &self.home)
                .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_pauses_the_pipeline_and_loses_nothing() {
    support::require_broker();
    let broker = PrivateBroker::start();
    let scenario = Scenario::generate(5, 1000, 1_795_813_200_000, 3 * 3_600_000, 180_000);
    let issuer = TestServer::start(Reply::status(200)).await;
    let dir = support::temp_dir();
    let topic = unique_name("restart-events");
    let mut config = support::config("restart", &topic).await;
    config.ingest.brokers = broker.brokers();
    config.topics.create = true;
    config.changelog.enabled = true;
    config.changelog.topic = unique_name("restart-state");
    config.changelog.interval = Duration::from_millis(500);
    config.decision.mode = schemas::Mode::Enforce;
    config.revoker.issuers.insert(
        "demo-oauth".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    config.admin.enabled = false;
    config.detectors = support::scenario_detectors(&scenario, &dir);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .create()
            .unwrap();
    admin
        .create_topics(
            [&rdkafka::admin::NewTopic::new(
                &topic,
                4,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap();
    let path = dir.join("tokenwatch.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let log = dir.join("run.log");
    let mut child = support::tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // Steady load from a producer that, like a real one, outlives the
    // outage (its records wait and are retried).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let records: Vec<(String, String)> = scenario
        .events
        .iter()
        .map(|e| (e.token_id.clone(), e.to_json()))
        .collect();
    let started = std::time::Instant::now();
    let producing = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for (i, chunk) in records.chunks(records.len().div_ceil(30)).enumerate() {
                let send = |k: &String, v: &String| {
                    producer
                        .send_result(FutureRecord::to(&topic).key(k).payload(v))
                        .map_err(|(e, _)| e)
                        .unwrap()
                };
                let sends: Vec<_> = chunk.iter().map(|(k, v)| send(k, v)).collect();
                for (s, (k, v)) in sends.into_iter().zip(chunk) {
                    // A record that timed out in the outage is sent again.
                    let mut sent = s.await;
                    while !matches!(sent, Ok(Ok(_))) {
                        sent = send(k, v).await;
                    }
                }
                eprintln!("chunk {i} produced at {:?}", started.elapsed());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    // Down for a few seconds mid-load, then back on the same port and data.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.script("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pipeline waits for the broker instead of exiting (log: {})",
        log.display()
    );
    broker.script("start");
    producing.await.unwrap();

    let group = config.ingest.group_id.clone();
    let brokers = broker.brokers();
    until(
        &format!(
            "every event committed after the restart (log: {})",
            log.display()
        ),
        Duration::from_secs(180),
        || {
            let (done, end) = support::progress_on(&brokers, &group, &topic, 4);
            done == end && end == scenario.events.len() as i64
        },
    )
    .await;
    let attacks = scenario.attack_tokens();
    until("the five revocations", Duration::from_secs(30), || {
        support::revoked_tokens(&issuer) == attacks
    })
    .await;
    assert!(support::terminate(&mut child).success());
    assert_eq!(
        support::revoked_tokens(&issuer),
        attacks,
        "each attack revoked once, no benign token"
    );
}
