//! The dead-letter copy of a record that cannot be decoded.
//!
//! The policy (README, "Dead letters"):
//! - the payload is redacted by [`Redactor`]: every value of a secret-named
//!   key and every well-known secret shape becomes its fingerprint, whether
//!   or not the record parses;
//! - the Kafka key becomes its fingerprint (keys are often the token);
//! - the payload is truncated to fit both `max_record_bytes` and the
//!   dead-letter topic's own `max.message.bytes`, read at start, so a copy
//!   can never be refused for its size (a refused copy would stop ingest on
//!   the same record after every restart: a poison pill).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use schemas::{DecodeError, Origin, Redactor};
use tracing::{info, warn};

use crate::config::IngestConfig;
use crate::kafka::{dead_letter_headers, header};

/// Room left in a dead-letter message for the key, the headers and the
/// record batch's own framing.
const HEADROOM: usize = 8 << 10;

/// The broker's default `message.max.bytes`, assumed when the topic's
/// limit cannot be read.
const BROKER_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// A dead-letter copy ready to produce.
pub struct Copy {
    pub payload: Vec<u8>,
    pub key: Option<String>,
    pub headers: OwnedHeaders,
}

/// Builds dead-letter copies; see the module docs.
pub struct DeadLetters {
    redactor: Redactor,
    limit: usize,
}

impl DeadLetters {
    /// Copies of at most `limit` payload bytes.
    pub fn new(redactor: Redactor, limit: usize) -> Self {
        DeadLetters { redactor, limit }
    }

    /// The largest payload a copy may carry.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The copy of `payload` (the whole record, or one bad element of it),
    /// refused for `error`.
    pub fn copy(
        &self,
        payload: &[u8],
        key: Option<&[u8]>,
        error: DecodeError,
        origin: &Origin,
        element: Option<usize>,
    ) -> Copy {
        // Redact the whole record before truncating: a cut must not leave
        // the start of a secret whose key the scan could no longer see.
        let redacted = self.redactor.redact(payload);
        let body = redacted.as_ref().map_or(payload, |r| r.bytes.as_slice());
        let truncated = body.len() > self.limit;
        let original = truncated.then_some(payload.len());
        let mut headers = dead_letter_headers(error, origin, original);
        if let Some(r) = &redacted {
            headers = headers.insert(Header {
                key: header::REDACTED,
                value: Some(r.count.to_string().as_str()),
            });
        }
        if let Some(index) = element {
            headers = headers.insert(Header {
                key: header::SOURCE_ELEMENT,
                value: Some(index.to_string().as_str()),
            });
        }
        Copy {
            payload: body[..body.len().min(self.limit)].to_vec(),
            key: key.map(|k| self.redactor.key(k)),
            headers,
        }
    }
}

/// The payload limit for dead-letter copies: `max_record_bytes`, or less if
/// the dead-letter topic's `max.message.bytes` is smaller. When the topic's
/// config cannot be read (no such topic yet, no `DescribeConfigs` ACL), the
/// broker default is assumed and a warning says so.
pub async fn payload_limit(config: &IngestConfig) -> usize {
    let topic = config.dead_letter_topic.as_str();
    let max_message = match topic_max_message_bytes(config).await {
        Ok(bytes) => {
            info!(
                topic,
                max_message_bytes = bytes,
                "Read the dead-letter topic's message size limit."
            );
            bytes
        }
        Err(e) => {
            warn!(topic, error = %e, assumed = BROKER_DEFAULT_MAX_MESSAGE_BYTES, "Cannot read the dead-letter topic's max.message.bytes; assuming the broker default.");
            BROKER_DEFAULT_MAX_MESSAGE_BYTES
        }
    };
    config
        .max_record_bytes
        .min(max_message.saturating_sub(HEADROOM))
}

async fn topic_max_message_bytes(config: &IngestConfig) -> Result<usize, String> {
    let mut client = ClientConfig::new();
    for (k, v) in config.common_properties() {
        client.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = client.create().map_err(|e| e.to_string())?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&config.dead_letter_topic)],
            &options,
        )
        .await
        .map_err(|e| e.to_string())?;
    let resource = results
        .into_iter()
        .next()
        .ok_or("no result")?
        .map_err(|e| format!("{e:?}"))?;
    let entry = resource
        .get("max.message.bytes")
        .ok_or("its config has no max.message.bytes (does the topic exist?)")?;
    entry
        .value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("max.message.bytes is {:?}", entry.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;
    use schemas::Fingerprinter;
    use std::sync::Arc;

    fn origin() -> Origin {
        Origin {
            topic: Arc::from("events"),
            partition: 0,
            offset: 7,
            kafka_ts_ms: None,
        }
    }

    fn header_value(h: &OwnedHeaders, key: &str) -> Option<String> {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn a_copy_is_redacted_keyed_by_fingerprint_and_fits_the_limit() {
        let fp = Fingerprinter::new(b"k");
        let dl = DeadLetters::new(Redactor::new(fp.clone(), &[]), 64);
        let mut record = b"{\"token\":\"CANARY-secret\",\"ua\":\"caf\xe9\",\"pad\":\"".to_vec();
        record.extend(std::iter::repeat_n(b'x', 200));
        let copy = dl.copy(
            &record,
            Some(b"CANARY-secret"),
            DecodeError::TooLarge,
            &origin(),
            None,
        );
        assert_eq!(copy.payload.len(), 64);
        assert!(!copy.payload.windows(6).any(|w| w == b"CANARY"));
        assert_eq!(
            copy.key.as_deref(),
            Some(fp.fingerprint("CANARY-secret").as_str())
        );
        assert_eq!(
            header_value(&copy.headers, header::REDACTED).as_deref(),
            Some("1")
        );
        assert_eq!(
            header_value(&copy.headers, header::ORIGINAL_BYTES),
            Some(record.len().to_string())
        );
    }

    #[test]
    fn a_short_clean_copy_is_unchanged() {
        let dl = DeadLetters::new(Redactor::new(Fingerprinter::new(b"k"), &[]), 1024);
        let copy = dl.copy(
            b"not json",
            None,
            DecodeError::InvalidJson,
            &origin(),
            Some(3),
        );
        assert_eq!(copy.payload, b"not json");
        assert_eq!(copy.key, None);
        assert_eq!(header_value(&copy.headers, header::REDACTED), None);
        assert_eq!(
            header_value(&copy.headers, header::SOURCE_ELEMENT).as_deref(),
            Some("3")
        );
    }
}
