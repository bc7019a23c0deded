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

const WHSEC_VAR: &str = "TW_E2E_RESTART_WHSEC";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

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
    // The outage takes the consumer out of its group for longer than this:
    // detector_degraded{consumer_group}, then detector_recovered.
    let hooks = TestServer::start(Reply::status(204)).await;
    config.revoker.webhooks.push(revoker::WebhookConfig {
        url: hooks.url("/hooks"),
        secret_envs: vec![WHSEC_VAR.into()],
        min_action: schemas::Action::Alert,
        retry_schedule: vec![Duration::from_millis(200)],
        timeout: Duration::from_secs(5),
        allow_loopback: true,
    });
    config.health.max_rejoin_time = Duration::from_secs(5);
    config.health.check_interval = Duration::from_millis(200);
    config
        .ingest
        .properties
        .insert("statistics.interval.ms".into(), "200".into());
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
        .env(WHSEC_VAR, WHSEC)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // Steady load from a producer that, like a real one, outlives the
    // outage (its records wait and are retried).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("enable.idempotence", "true")
        // In order across the outage (see ingest::SERIAL_IDEMPOTENT_WRITES).
        .set(
            "max.in.flight.requests.per.connection",
            ingest::SERIAL_IDEMPOTENT_WRITES,
        )
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
    let stopped_ms = now_ms();
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
    // The outage was said: out of its group since the stop (sent once the
    // broker was back: alerts wait in the outbox topic), then back.
    let system = || -> Vec<(String, i64, String)> {
        support::webhook_messages(&hooks)
            .iter()
            .filter_map(|(_, body)| serde_json::from_slice::<serde_json::Value>(body).ok())
            .filter(|p| p["type"] == "tokenwatch.system")
            .map(|p| {
                let d = &p["data"];
                (
                    d["kind"].as_str().unwrap_or_default().to_string(),
                    d["ts_ms"].as_i64().unwrap_or_default(),
                    d["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let out_of_group = |(kind, ts, message): &(String, i64, String)| {
        kind == "detector_degraded" && *ts >= stopped_ms && message.contains("steady member")
    };
    until(
        "detector_degraded (consumer group) after the stop, then detector_recovered",
        Duration::from_secs(60),
        || {
            let seen = system();
            seen.iter().position(out_of_group).is_some_and(|at| {
                seen.iter()
                    .any(|(kind, ts, _)| kind == "detector_recovered" && *ts >= seen[at].1)
            })
        },
    )
    .await;
    assert!(support::terminate(&mut child).success());
    assert_eq!(
        support::revoked_tokens(&issuer),
        attacks,
        "each attack revoked once, no benign token"
    );
}
