//! tokenwatch's internal topics: the ledger, the webhook outbox and the two
//! dead-letter topics. `tokenwatch topics create` (or `run
//! --create-topics`, or `[topics] create = true`) creates the missing ones
//! with their configs, as Kafka Streams does with its internal topics;
//! every start checks the configs of existing ones.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::Config;

/// `[topics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// `run` creates the internal topics that are missing (as
    /// `run --create-topics`).
    #[serde(default)]
    pub create: bool,
    /// Replication factor of created topics; -1 takes the broker's
    /// `default.replication.factor`.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// How long the dead-letter topics keep a record.
    #[serde(default = "default_dead_letter_retention", with = "humantime_serde")]
    pub dead_letter_retention: Duration,
}

fn default_replication_factor() -> i32 {
    -1
}

fn default_dead_letter_retention() -> Duration {
    Duration::from_secs(7 * 86_400)
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            create: false,
            replication_factor: default_replication_factor(),
            dead_letter_retention: default_dead_letter_retention(),
        }
    }
}

impl TopicsConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.replication_factor == 0 || self.replication_factor < -1 {
            problems.push(format!(
                "topics.replication_factor: {} must be -1 (the broker's default) or at least 1",
                self.replication_factor
            ));
        }
        if self.dead_letter_retention < Duration::from_secs(3600) {
            problems.push(
                "topics.dead_letter_retention: at least 1h, so a bad record can be looked at"
                    .into(),
            );
        }
        problems
    }
}

/// One internal topic: what it is for, how it is created, and which of its
/// configs must hold on an existing one.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub purpose: &'static str,
    pub partitions: i32,
    /// Configs set on creation.
    pub configs: Vec<(&'static str, String)>,
    /// Configs an existing topic must have, and why.
    pub required: Vec<(&'static str, &'static str, &'static str)>,
    /// `run` cannot work without it (dead-letter topics can be auto-created
    /// by the broker on first write).
    pub essential: bool,
    /// An existing topic must have at least this many partitions (the
    /// state changelog: one per input partition).
    pub min_partitions: i32,
}

const COMPACT: (&str, &str, &str) = (
    "cleanup.policy",
    "compact",
    "deleting old records would forget revocations and pending deliveries",
);

const COMPACT_STATE: (&str, &str, &str) = (
    "cleanup.policy",
    "compact",
    "deleting a token's only record would forget what it learned",
);

/// How long the repartition topic keeps a record: longer than any outage
/// (the source's offsets are committed once a record is in it).
const REPARTITION_RETENTION_MS: u64 = 7 * 86_400_000;

/// The internal topics `config` uses; `input_partitions` is how many
/// partitions detection's input topic has (the source, or with
/// repartition the internal topic, else the source), if known.
pub fn specs(config: &Config, input_partitions: Option<i32>) -> Vec<Spec> {
    let compacted = |name: &str, purpose| Spec {
        name: name.to_string(),
        purpose,
        partitions: 1,
        configs: vec![("cleanup.policy", "compact".into())],
        required: vec![COMPACT],
        essential: true,
        min_partitions: 1,
    };
    let retention = config.topics.dead_letter_retention.as_millis().to_string();
    let dead_letter = |name: &str, purpose| Spec {
        name: name.to_string(),
        purpose,
        partitions: 1,
        configs: vec![
            ("cleanup.policy", "delete".into()),
            ("retention.ms", retention.clone()),
            // Room for the largest dead-letter copy (the record and headers).
            (
                "max.message.bytes",
                (config.ingest.max_record_bytes + (64 << 10)).to_string(),
            ),
        ],
        required: Vec::new(),
        essential: false,
        min_partitions: 1,
    };
    let mut out = vec![
        compacted(&config.revoker.ledger_topic, "revocation ledger"),
        dead_letter(&config.ingest.dead_letter_topic, "dead letters"),
    ];
    if config.ingest.repartition {
        let partitions = input_partitions.unwrap_or(1).max(1);
        out.push(Spec {
            name: config.ingest.repartition_topic(),
            purpose: "repartition step",
            partitions,
            configs: vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", REPARTITION_RETENTION_MS.to_string()),
            ],
            required: Vec::new(),
            essential: true,
            min_partitions: 1,
        });
    }
    if config.changelog.enabled {
        let partitions = input_partitions.unwrap_or(1).max(1);
        // Compacted to the latest record per token, and a token idle for
        // longer than the store keeps it is deleted, as the store forgets it.
        let retention = config.detectors.idle_expiry.as_millis().to_string();
        out.push(Spec {
            name: config.changelog.topic.clone(),
            purpose: "state changelog",
            partitions,
            configs: vec![
                ("cleanup.policy", "compact,delete".into()),
                ("retention.ms", retention),
            ],
            required: vec![COMPACT_STATE],
            essential: true,
            min_partitions: partitions,
        });
    }
    if !config.revoker.webhooks.is_empty() {
        out.push(compacted(
            &config.revoker.webhook_outbox_topic,
            "webhook outbox",
        ));
        out.push(dead_letter(
            &config.revoker.webhook_dead_letter_topic,
            "webhook dead letters",
        ));
    }
    out
}

/// What became of one topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Created,
    Ok,
    /// Missing, and not created (creation was not asked for).
    Missing,
    /// A problem, said in full (a wrong config, a refused creation).
    Problem(String),
}

/// Creates (when `create`) and checks every internal topic of `config`.
pub async fn ensure(config: &Config, create: bool) -> anyhow::Result<Vec<(Spec, Outcome)>> {
    let existing = existing_topics(config).await?;
    let admin: AdminClient<DefaultClientContext> = config.kafka().create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let mut out = Vec::new();
    let source = config
        .ingest
        .topics
        .iter()
        .filter_map(|t| existing.get(t).copied())
        .max();
    let input = if config.ingest.repartition {
        existing
            .get(&config.ingest.repartition_topic())
            .copied()
            .or(source)
    } else {
        source
    };
    for spec in specs(config, input) {
        let outcome = if let Some(&partitions) = existing.get(&spec.name) {
            if partitions < spec.min_partitions {
                Outcome::Problem(format!(
                    "has {partitions} partition(s), fewer than the input's {}: the state of tokens on the others has nowhere to go; fix it with `kafka-topics --alter --topic {} --partitions {}`",
                    spec.min_partitions, spec.name, spec.min_partitions
                ))
            } else {
                check_one(&admin, &options, &spec).await?
            }
        } else if create {
            create_one(&admin, &options, &spec, config.topics.replication_factor).await?
        } else {
            Outcome::Missing
        };
        out.push((spec, outcome));
    }
    Ok(out)
}

/// The names of every topic on the cluster. Asked for all topics, not by
/// name: a metadata request naming a missing topic can make a broker that
/// auto-creates topics create it, with the wrong configs. (A config
/// description of a missing topic comes back empty, not as an error.)
async fn existing_topics(
    config: &Config,
) -> anyhow::Result<std::collections::HashMap<String, i32>> {
    let client = config.kafka();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = client.create()?;
        let metadata =
            rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(15))
                .map_err(|e| anyhow::anyhow!("cannot reach the brokers to list topics: {e}"))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    })
    .await?
}

async fn check_one(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    spec: &Spec,
) -> anyhow::Result<Outcome> {
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&spec.name)], options)
        .await
        .map_err(|e| reach_error(&spec.name, e))?;
    match described.into_iter().next() {
        Some(Ok(resource)) => {
            let wrong: Vec<String> = spec
                .required
                .iter()
                .filter_map(|(key, want, why)| {
                    let have = resource.get(key).and_then(|e| e.value.clone()).unwrap_or_default();
                    (!have.split(',').any(|v| v.trim() == *want)).then(|| {
                        format!(
                            "{key} is {have:?}, must be {want:?} ({why}); fix it with `kafka-configs --alter --entity-type topics --entity-name {} --add-config {key}={want}`",
                            spec.name
                        )
                    })
                })
                .collect();
            Ok(if wrong.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Problem(wrong.join("; "))
            })
        }
        Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) | None => Ok(Outcome::Missing),
        Some(Err(code)) if denied(code) => Ok(Outcome::Problem(format!(
            "not allowed to describe its configs ({code}); grant DESCRIBE_CONFIGS on topic {} to tokenwatch's principal",
            spec.name
        ))),
        Some(Err(code)) => Ok(Outcome::Problem(format!("cannot describe it: {code}"))),
    }
}

async fn create_one(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    spec: &Spec,
    replication: i32,
) -> anyhow::Result<Outcome> {
    let mut topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(replication),
    );
    for (key, value) in &spec.configs {
        topic = topic.set(key, value);
    }
    let results = admin
        .create_topics([&topic], options)
        .await
        .map_err(|e| reach_error(&spec.name, e))?;
    Ok(match results.into_iter().next() {
        Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Outcome::Created,
        Some(Err((_, code))) if denied(code) => Outcome::Problem(format!(
            "not allowed to create it ({code}): grant CREATE on topic {name} to tokenwatch's principal (`kafka-acls --add --allow-principal User:NAME --operation Create --topic {name}`), or create it yourself: `{command}`",
            name = spec.name,
            command = create_command(spec),
        )),
        Some(Err((_, code))) => Outcome::Problem(format!(
            "cannot create it: {code}; create it yourself: `{}`",
            create_command(spec)
        )),
        None => Outcome::Problem("the broker gave no answer for it".into()),
    })
}

fn denied(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
    )
}

fn reach_error(topic: &str, e: KafkaError) -> anyhow::Error {
    anyhow::anyhow!("cannot reach the brokers to check topic {topic}: {e}")
}

/// The `kafka-topics` command that creates `spec` by hand.
pub fn create_command(spec: &Spec) -> String {
    let mut command = format!(
        "kafka-topics --bootstrap-server BROKERS --create --topic {} --partitions {}",
        spec.name, spec.partitions
    );
    for (key, value) in &spec.configs {
        // kafka-topics takes a list value in brackets.
        if value.contains(',') {
            command.push_str(&format!(" --config {key}=[{value}]"));
        } else {
            command.push_str(&format!(" --config {key}={value}"));
        }
    }
    command
}

/// One line per topic, and the essential problems (missing or wrong) that
/// stop `run`.
pub fn report(outcomes: &[(Spec, Outcome)]) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut blocking = Vec::new();
    for (spec, outcome) in outcomes {
        let line = match outcome {
            Outcome::Created => format!("{} ({}): created", spec.name, spec.purpose),
            Outcome::Ok => format!(
                "{} ({}): exists, configs as required",
                spec.name, spec.purpose
            ),
            Outcome::Missing if spec.essential => {
                let line = format!(
                    "{} ({}): missing; run `tokenwatch topics create -c FILE` or `tokenwatch run --create-topics`, or create it: `{}`",
                    spec.name,
                    spec.purpose,
                    create_command(spec)
                );
                blocking.push(line.clone());
                line
            }
            Outcome::Missing => format!(
                "{} ({}): missing; the broker creates it on first write if it auto-creates topics, else run `tokenwatch topics create`",
                spec.name, spec.purpose
            ),
            Outcome::Problem(why) => {
                let line = format!("{} ({}): {why}", spec.name, spec.purpose);
                if spec.essential {
                    blocking.push(line.clone());
                }
                line
            }
        };
        lines.push(line);
    }
    (lines, blocking)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(webhooks: bool) -> Config {
        let mut config = Config::from_toml("[ingest]\ntopics = [\"events\"]\n", "inline").unwrap();
        if webhooks {
            // Deserialized alone: the config's check wants the secret set.
            config.revoker.webhooks.push(
                toml::from_str(
                    "url = \"https://hooks.example/tw\"\nsecret_envs = [\"HOOK_SECRET\"]",
                )
                .unwrap(),
            );
        }
        config
    }

    #[test]
    fn the_ledger_and_outbox_are_compacted_and_essential() {
        let specs = specs(&config(true), None);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tokenwatch-revocations",
                "tokenwatch-dead-letter",
                "tokenwatch-webhook-outbox",
                "tokenwatch-webhook-dead-letter"
            ]
        );
        for s in &specs {
            let compact = s.configs.contains(&("cleanup.policy", "compact".into()));
            assert_eq!(compact, s.essential, "{s:?}");
            assert_eq!(
                s.required.iter().any(|r| r.0 == "cleanup.policy"),
                s.essential
            );
        }
        // Without webhooks there is no outbox to create.
        assert_eq!(super::specs(&config(false), None).len(), 2);
    }

    #[test]
    fn the_changelog_and_repartition_topics_are_partitioned_like_the_input() {
        let mut c = config(false);
        c.changelog.enabled = true;
        c.ingest.repartition = true;
        let specs = specs(&c, Some(12));
        let find = |name: &str| specs.iter().find(|s| s.name == name).unwrap();
        // retention.ms is the store's idle_expiry (14 days by default).
        let state = find("tokenwatch-state");
        assert_eq!((state.partitions, state.min_partitions), (12, 12));
        assert!(state.essential);
        assert!(
            state
                .configs
                .contains(&("cleanup.policy", "compact,delete".into()))
        );
        assert_eq!(
            create_command(state),
            "kafka-topics --bootstrap-server BROKERS --create --topic tokenwatch-state --partitions 12 --config cleanup.policy=[compact,delete] --config retention.ms=1209600000"
        );
        let hop = find("tokenwatch-repartition");
        assert_eq!(hop.partitions, 12);
        assert!(hop.configs.contains(&("cleanup.policy", "delete".into())));
    }

    #[test]
    fn missing_essential_topics_block_and_say_how_to_create_them() {
        let specs = specs(&config(false), None);
        let outcomes = vec![
            (specs[0].clone(), Outcome::Missing),
            (specs[1].clone(), Outcome::Missing),
        ];
        let (lines, blocking) = report(&outcomes);
        assert_eq!(lines.len(), 2);
        assert_eq!(blocking.len(), 1, "{blocking:?}");
        assert!(
            blocking[0].contains("--config cleanup.policy=compact")
                && blocking[0].contains("tokenwatch topics create"),
            "{blocking:?}"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let t = TopicsConfig {
            replication_factor: 0,
            dead_letter_retention: Duration::from_secs(60),
            ..TopicsConfig::default()
        };
        assert_eq!(t.validate().len(), 2);
    }
}
