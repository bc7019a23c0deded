//! Checking the librdkafka properties of `[ingest]` before any client
//! connects: every name and value as librdkafka itself parses them, secrets
//! kept out of the config file, and the client librdkafka would build from
//! them (TLS files, SASL mechanisms), built without a broker to talk to.

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};

use crate::config::is_secret_property;

/// A client context that keeps librdkafka's log lines (such as "no
/// bootstrap servers") out of a config check.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}
}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Every problem with `properties` (name, value pairs as the clients get
/// them, `bootstrap.servers` included), each prefixed with `section`.
/// Each property is parsed on its own so that all bad ones are reported;
/// when all parse, a producer is built from them without bootstrap
/// servers, which checks what only a client checks (certificate and key
/// files, SASL mechanisms this build supports) and never connects.
pub fn check(section: &str, properties: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in properties {
        let mut one = ClientConfig::new();
        one.set(key, value);
        if let Err(e) = one.create_native_config() {
            let why = match e {
                // A secret's value never reaches a message.
                _ if is_secret_property(key) => "invalid value (not shown)".into(),
                KafkaError::ClientConfig(_, description, _, _) => description,
                other => other.to_string(),
            };
            problems.push(format!("{section}.properties.{key:?}: {why}"));
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let mut client = ClientConfig::new();
    for (key, value) in properties {
        if key != "bootstrap.servers" {
            client.set(key, value);
        }
    }
    if let Err(e) = client.create_with_context::<_, BaseProducer<Quiet>>(Quiet) {
        let why = match e {
            KafkaError::ClientCreation(message) => message,
            other => other.to_string(),
        };
        problems.push(format!(
            "{section}.properties: librdkafka cannot build a client from them: {why}"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn valid_properties_pass() {
        let ok = props(&[
            ("bootstrap.servers", "127.0.0.1:9094"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "tokenwatch"),
            ("sasl.password", "not-a-real-one"),
            ("compression.codec", "zstd"),
        ]);
        assert_eq!(check("ingest", &ok), Vec::<String>::new());
    }

    #[test]
    fn every_misspelt_name_and_bad_value_is_reported() {
        let bad = props(&[
            ("fetch.wait.max.mss", "10"),
            ("security.protocol", "SASL_TLS"),
            ("fetch.min.bytes", "lots"),
        ]);
        let problems = check("ingest", &bad);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "ingest.properties.\"fetch.wait.max.mss\": No such configuration property"
            ),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("\"security.protocol\""),
            "{problems:?}"
        );
        assert!(problems[2].contains("\"fetch.min.bytes\""), "{problems:?}");
    }

    #[test]
    fn what_only_a_client_checks_is_reported_too() {
        let missing_ca = props(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/tokenwatch-ca.pem"),
        ]);
        let problems = check("ingest", &missing_ca);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("ingest.properties: librdkafka cannot build a client")
                && problems[0].contains("ssl.ca.location"),
            "{problems:?}"
        );
    }
}
