//! The `[ingest]` section of the config file.

use std::collections::BTreeMap;
use std::time::Duration;

use schemas::decode::{Decoder, Limits, Skew};
use schemas::{Fingerprinter, Format};
use serde::{Deserialize, Serialize};

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained record: nothing is skipped on first start.
    #[default]
    Earliest,
    /// Only records produced after the group first joins.
    Latest,
}

/// How the group's partitions are shared out on a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Incremental (KIP-429): only the partitions that move are revoked;
    /// the others keep being read through the rebalance.
    #[default]
    CooperativeSticky,
    /// Every rebalance revokes every partition, then assigns them all
    /// (librdkafka's `range` assignor).
    Eager,
}

impl Assignment {
    /// The `partition.assignment.strategy` it sets.
    pub fn strategy(self) -> &'static str {
        match self {
            Assignment::CooperativeSticky => "cooperative-sticky",
            Assignment::Eager => "range",
        }
    }
}

/// librdkafka properties that tokenwatch sets itself; overriding them would
/// break at-least-once delivery or the config's own fields.
const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "auto.offset.reset",
    "enable.partition.eof",
    // `ingest.assignment`: the rebalance hooks depend on it.
    "partition.assignment.strategy",
];

/// The most payload bytes one batch may hold: half of what an Arrow string
/// column (32-bit offsets) can, so no column can overflow.
pub const MAX_BATCH_BYTES: usize = 1 << 30;

/// Reading API-call records from Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Consumer group id. Instances with the same id share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics holding API-call records. Records should be keyed by token.
    pub topics: Vec<String>,
    /// Input format of every record on `topics`: `canonical`, `ocsf`,
    /// `cloudtrail`, `github`, `k8s` or `okta`.
    #[serde(default)]
    pub format: Format,
    /// The `issuer` of events from a vendor format (default: `aws` for
    /// cloudtrail, else the format's name). Canonical events carry theirs.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Records nesting objects or arrays deeper than this are dead-lettered
    /// (`too_deep`).
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Records with an array longer than this are dead-lettered
    /// (`too_many_items`). Bounds a CloudTrail file's `Records` too.
    #[serde(default = "default_max_array_items")]
    pub max_array_items: usize,
    /// Events timed further ahead of the wall clock are dead-lettered
    /// (`timestamp_skew`).
    #[serde(default = "default_max_future_skew", with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Events older than this are dead-lettered (`timestamp_skew`). Unset:
    /// any age (replaying old logs).
    #[serde(default, with = "humantime_serde")]
    pub max_past_age: Option<Duration>,
    /// Topic that receives records that cannot be decoded, with headers
    /// giving the reason and the source topic, partition and offset.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Compacted topic with token metadata (key `issuer/token_id`, value a
    /// JSON record, null to forget). Read in full by every instance and
    /// followed live. Optional.
    #[serde(default)]
    pub metadata_topic: Option<String>,
    /// Key names whose values are secrets, beyond the built-in ones
    /// (`token`, `authorization`, `client_secret`, `password`, ...). A
    /// dead-letter copy has every such value, and every well-known secret
    /// shape, replaced by its fingerprint (README, "Dead letters").
    #[serde(default)]
    pub redact_keys: Vec<String>,
    /// Records larger than this many bytes are dead-lettered unread (the
    /// dead-letter copy is truncated to this size, or below what the
    /// dead-letter topic accepts).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// A batch is handed downstream when it holds this many records...
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// ...or holds this many payload bytes (a batch closes at the first
    /// record that reaches it), so a batch of big records stays bounded.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// ...or when its first record has waited this long (e.g. `"5ms"`)
    /// while records keep coming. When nothing more is fetched, a batch is
    /// handed on at once.
    #[serde(default = "default_batch_linger", with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Where a new consumer group starts: `earliest` or `latest`.
    #[serde(default)]
    pub start_from: StartFrom,
    /// How partitions move between instances on a rebalance:
    /// `cooperative-sticky` (only moved partitions pause) or `eager`.
    #[serde(default)]
    pub assignment: Assignment,
    /// For sources not keyed by token: re-key every decoded event by
    /// `issuer/token_id` through `repartition_topic` before detection, so
    /// each token's events meet in one instance.
    #[serde(default)]
    pub repartition: bool,
    /// The internal topic of the repartition step (default
    /// `<group_id>-repartition`).
    #[serde(default)]
    pub repartition_topic: Option<String>,
    /// How long shutdown waits for in-flight batches to be acknowledged
    /// before committing what is done.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Name of the environment variable holding the key for token
    /// fingerprints (any length; 32 random bytes recommended). When it is
    /// unset, a built-in key is used and a warning is logged: fingerprints
    /// are then stable but not secret-keyed.
    #[serde(default = "default_fingerprint_key_env")]
    pub fingerprint_key_env: String,
    /// librdkafka properties passed through to the consumer and the
    /// dead-letter producer (`security.protocol`, `ssl.ca.location`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from environment
    /// variables: property name → variable name (`sasl.password` →
    /// `KAFKA_SASL_PASSWORD`). Secrets never sit in the config file.
    #[serde(default)]
    pub properties_from_env: BTreeMap<String, String>,
}

fn default_max_depth() -> usize {
    Limits::default().max_depth
}
fn default_max_array_items() -> usize {
    Limits::default().max_array_items
}
fn default_max_future_skew() -> Duration {
    Duration::from_millis(Skew::default().max_future_ms as u64)
}
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_group_id() -> String {
    "tokenwatch".into()
}
fn default_dead_letter_topic() -> String {
    "tokenwatch-dead-letter".into()
}
fn default_max_record_bytes() -> usize {
    1 << 20
}
fn default_batch_max_bytes() -> usize {
    16 << 20
}
fn default_batch_max_records() -> usize {
    1024
}
fn default_batch_linger() -> Duration {
    Duration::from_millis(5)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_fingerprint_key_env() -> String {
    "TOKENWATCH_FINGERPRINT_KEY".into()
}

/// Whether a librdkafka property holds a secret: its value is never printed
/// (`check-config`) and belongs in `properties_from_env`.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key == "sasl.oauthbearer.config"
        || key.starts_with("ssl.key.")
}

impl IngestConfig {
    /// A copy safe to print: secret properties' values are replaced.
    pub fn redacted(&self) -> IngestConfig {
        let mut copy = self.clone();
        for (key, value) in copy.properties.iter_mut() {
            if is_secret_property(key) {
                *value = "<redacted: set it with properties_from_env>".into();
            }
        }
        copy
    }

    /// A config with defaults for everything but the topics.
    pub fn new(topics: Vec<String>) -> Self {
        IngestConfig {
            brokers: default_brokers(),
            group_id: default_group_id(),
            topics,
            format: Format::default(),
            issuer: None,
            max_depth: default_max_depth(),
            max_array_items: default_max_array_items(),
            max_future_skew: default_max_future_skew(),
            max_past_age: None,
            dead_letter_topic: default_dead_letter_topic(),
            metadata_topic: None,
            redact_keys: Vec::new(),
            max_record_bytes: default_max_record_bytes(),
            batch_max_records: default_batch_max_records(),
            batch_max_bytes: default_batch_max_bytes(),
            batch_linger: default_batch_linger(),
            start_from: StartFrom::default(),
            assignment: Assignment::default(),
            repartition: false,
            repartition_topic: None,
            drain_timeout: default_drain_timeout(),
            fingerprint_key_env: default_fingerprint_key_env(),
            properties: BTreeMap::new(),
            properties_from_env: BTreeMap::new(),
        }
    }

    /// The decoder this section describes, keyed by the fingerprint key.
    pub fn decoder(&self, fingerprinter: Fingerprinter) -> Decoder {
        Decoder::new(self.format, self.max_record_bytes, fingerprinter)
            .with_redact_keys(&self.redact_keys)
            .with_issuer(self.issuer.as_deref())
            .with_limits(Limits {
                max_depth: self.max_depth,
                max_array_items: self.max_array_items,
            })
            .with_skew(Skew {
                max_future_ms: self.max_future_skew.as_millis().min(i64::MAX as u128) as i64,
                max_past_ms: self
                    .max_past_age
                    .map(|d| d.as_millis().min(i64::MAX as u128) as i64),
            })
    }

    /// The repartition step's internal topic.
    pub fn repartition_topic(&self) -> String {
        self.repartition_topic
            .clone()
            .unwrap_or_else(|| format!("{}-repartition", self.group_id))
    }

    /// With `repartition`, the two hops: the first reads the source topics
    /// (its own consumer group, `<group_id>-repartition`), decodes and
    /// dead-letters as ever; the second reads the re-keyed canonical events
    /// of the internal topic, in the configured group.
    pub fn repartition_hops(&self) -> (IngestConfig, IngestConfig) {
        let mut first = self.clone();
        first.group_id = format!("{}-repartition", self.group_id);
        first.repartition = false;
        let mut second = self.clone();
        second.topics = vec![self.repartition_topic()];
        second.format = Format::Canonical;
        second.issuer = None;
        second.repartition = false;
        (first, second)
    }

    /// Every problem with this section, each prefixed with its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, msg: String| problems.push(format!("ingest.{key}: {msg}"));
        if self.brokers.trim().is_empty() {
            problem("brokers", "must name at least one host:port".into());
        }
        if self.group_id.trim().is_empty() {
            problem("group_id", "must not be empty".into());
        }
        if self.topics.is_empty() {
            problem("topics", "must list at least one topic".into());
        }
        for topic in &self.topics {
            if let Some(msg) = topic_name_problem(topic) {
                problem("topics", format!("{topic:?} {msg}"));
            }
        }
        if let Some(msg) = topic_name_problem(&self.dead_letter_topic) {
            problem(
                "dead_letter_topic",
                format!("{:?} {msg}", self.dead_letter_topic),
            );
        }
        if self.repartition {
            let topic = self.repartition_topic();
            if let Some(msg) = topic_name_problem(&topic) {
                problem("repartition_topic", format!("{topic:?} {msg}"));
            }
            if self.topics.contains(&topic) || topic == self.dead_letter_topic {
                problem(
                    "repartition_topic",
                    "must differ from the input and dead-letter topics".into(),
                );
            }
        }
        if let Some(topic) = &self.metadata_topic {
            if let Some(msg) = topic_name_problem(topic) {
                problem("metadata_topic", format!("{topic:?} {msg}"));
            }
            if self.topics.contains(topic) || *topic == self.dead_letter_topic {
                problem(
                    "metadata_topic",
                    "must differ from the input and dead-letter topics".into(),
                );
            }
        }
        if self.topics.contains(&self.dead_letter_topic) {
            problem(
                "dead_letter_topic",
                "must not be one of the input topics (bad records would loop)".into(),
            );
        }
        if !(64..=64 << 20).contains(&self.max_record_bytes) {
            problem(
                "max_record_bytes",
                format!("{} is outside 64 B ..= 64 MiB", self.max_record_bytes),
            );
        }
        if !(2..=512).contains(&self.max_depth) {
            problem(
                "max_depth",
                format!("{} is outside 2 ..= 512", self.max_depth),
            );
        }
        if self.max_array_items == 0 {
            problem("max_array_items", "must be at least 1".into());
        }
        if self.issuer.as_deref().is_some_and(|i| i.trim().is_empty()) {
            problem("issuer", "must not be empty".into());
        }
        if !(1..=1_000_000).contains(&self.batch_max_records) {
            problem(
                "batch_max_records",
                format!("{} is outside 1 ..= 1000000", self.batch_max_records),
            );
        }
        if !(1 << 10..=1 << 30).contains(&self.batch_max_bytes) {
            problem(
                "batch_max_bytes",
                format!("{} is outside 1 KiB ..= 1 GiB", self.batch_max_bytes),
            );
        }
        // A batch's string columns are Arrow strings, with 32-bit offsets:
        // no column may reach 2 GiB. A column holds at most the batch's
        // payload bytes, which are at most the smaller of the two bounds.
        let most = (self.batch_max_records.saturating_mul(self.max_record_bytes))
            .min(self.batch_max_bytes.saturating_add(self.max_record_bytes));
        if most > MAX_BATCH_BYTES {
            problem(
                "batch_max_bytes",
                format!(
                    "a batch could hold {most} bytes (batch_max_records × max_record_bytes, or batch_max_bytes + max_record_bytes), over the {MAX_BATCH_BYTES} an Arrow string column can take with room to spare; lower one of them"
                ),
            );
        }
        if self.batch_linger > Duration::from_secs(10) {
            problem(
                "batch_linger",
                "must be at most 10s; events would wait too long".into(),
            );
        }
        for key in self
            .properties
            .keys()
            .chain(self.properties_from_env.keys())
        {
            if MANAGED_PROPERTIES.contains(&key.as_str()) {
                problem(
                    "properties",
                    format!("{key:?} is set by tokenwatch; use the matching ingest field"),
                );
            }
        }
        for key in self.properties.keys() {
            if is_secret_property(key) {
                problem(
                    "properties",
                    format!(
                        "{key:?} is a secret: set it in properties_from_env, which names the environment variable holding it"
                    ),
                );
            }
        }
        for (key, var) in &self.properties_from_env {
            if std::env::var_os(var).is_none() {
                problem(
                    "properties_from_env",
                    format!("{key:?} names environment variable {var}, which is not set"),
                );
            }
        }
        problems.extend(crate::properties::check(
            "ingest",
            &self.common_properties(),
        ));
        problems
    }

    /// The librdkafka properties shared by the consumer and the producer:
    /// brokers, passed-through properties and those read from environment.
    /// `statistics.interval.ms` is the ingest consumer's alone (its lag and
    /// group figures): every other client would log its statistics.
    pub fn common_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![("bootstrap.servers".to_string(), self.brokers.clone())];
        props.extend(
            self.properties
                .iter()
                .filter(|(k, _)| k.as_str() != STATISTICS_INTERVAL)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        for (key, var) in &self.properties_from_env {
            if let Ok(value) = std::env::var(var) {
                props.push((key.clone(), value));
            }
        }
        props
    }
}

/// librdkafka's statistics period: the ingest consumer's only.
pub const STATISTICS_INTERVAL: &str = "statistics.interval.ms";

fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 249 {
        Some("must be 1 to 249 characters")
    } else if name == "." || name == ".." {
        Some("is not a valid topic name")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("may only contain ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> IngestConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_fill_everything_but_topics() {
        let c = parse(r#"topics = ["api-events"]"#);
        assert_eq!(c, IngestConfig::new(vec!["api-events".into()]));
        assert_eq!(c.batch_linger, Duration::from_millis(5));
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn parses_durations_and_properties() {
        let c = parse(
            r#"
            topics = ["a", "b"]
            batch_linger = "250us"
            start_from = "latest"
            [properties]
            "security.protocol" = "SASL_SSL"
            "#,
        );
        assert_eq!(c.batch_linger, Duration::from_micros(250));
        assert_eq!(c.start_from, StartFrom::Latest);
        assert!(
            c.common_properties()
                .contains(&("security.protocol".into(), "SASL_SSL".into()))
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<IngestConfig>("topics = [\"a\"]\nbatch_size = 3").is_err());
    }

    #[test]
    fn limits_that_could_overflow_an_arrow_string_column_are_refused() {
        let mut c = IngestConfig::new(vec!["events".into()]);
        c.max_record_bytes = 64 << 20;
        c.batch_max_records = 1_000_000;
        c.batch_max_bytes = 1 << 30;
        let problems = c.validate();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("ingest.batch_max_bytes: a batch could hold")),
            "{problems:?}"
        );
        c.batch_max_bytes = 256 << 20;
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = parse(
            r#"
            brokers = ""
            topics = ["ok", "bad topic", "dlq"]
            dead_letter_topic = "dlq"
            max_record_bytes = 10
            batch_max_records = 0
            batch_linger = "1m"
            [properties]
            "enable.auto.offset.store" = "true"
            [properties_from_env]
            "sasl.password" = "TOKENWATCH_TEST_SURELY_UNSET_VARIABLE"
            "#,
        );
        let problems = c.validate();
        for key in [
            "ingest.brokers",
            "ingest.topics: \"bad topic\"",
            "ingest.dead_letter_topic: must not be one of",
            "ingest.max_record_bytes",
            "ingest.batch_max_records",
            "ingest.batch_linger",
            "ingest.properties: \"enable.auto.offset.store\"",
            "ingest.properties_from_env: \"sasl.password\"",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "no problem for {key} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 8, "{problems:#?}");
    }

    /// Every client gets the passed-through properties but the statistics
    /// period: a producer given it would log its statistics every period.
    #[test]
    fn the_statistics_period_is_the_consumers_alone() {
        let c = parse(
            "topics = [\"t\"]\n[properties]\n\"statistics.interval.ms\" = \"200\"\n\"security.protocol\" = \"SSL\"\n",
        );
        let common = c.common_properties();
        assert!(
            common
                .iter()
                .any(|(k, v)| k == "security.protocol" && v == "SSL")
        );
        assert!(
            !common.iter().any(|(k, _)| k == STATISTICS_INTERVAL),
            "{common:?}"
        );
    }
}
