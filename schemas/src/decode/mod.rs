//! Decoders from input formats into the canonical [`Event`].
//!
//! A decoder never panics and never allocates without bound: the record size
//! is checked first, and JSON nesting is capped by serde_json. Every
//! rejection is a [`DecodeError`] whose [`reason`](DecodeError::reason) is a
//! fixed string, so dead-lettering and counting cost no formatting.

pub mod canonical;
mod error;

pub use error::DecodeError;

use crate::event::Event;
use crate::fingerprint::Fingerprinter;

/// The input formats tokenwatch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// tokenwatch's own JSON (see README, "Canonical event").
    #[default]
    Canonical,
}

/// A raw token secret, held only so an issuer that needs it can revoke.
/// It has no `Serialize`, and `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The raw value, for the revoker's in-memory handle store only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A decoded record: the event, and the raw secret if the record carried one.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event: Event,
    pub secret: Option<Secret>,
}

/// Decodes one record of a configured format.
#[derive(Debug, Clone)]
pub struct Decoder {
    format: Format,
    max_record_bytes: usize,
    fingerprinter: Fingerprinter,
}

impl Decoder {
    pub fn new(format: Format, max_record_bytes: usize, fingerprinter: Fingerprinter) -> Self {
        Decoder {
            format,
            max_record_bytes,
            fingerprinter,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// A copy of a rejected record that is safe to dead-letter: if it is a
    /// JSON object with a raw secret in `token`, that value is replaced by
    /// its fingerprint. `None` when there is nothing to redact (or the
    /// record is not a JSON object, in which case nothing can be found).
    pub fn redact(&self, record: &[u8]) -> Option<Vec<u8>> {
        if record.len() > self.max_record_bytes {
            return None;
        }
        let mut value: serde_json::Value = serde_json::from_slice(record).ok()?;
        let token = value.as_object_mut()?.get_mut("token")?;
        let fingerprint = match token {
            serde_json::Value::String(secret) => self.fingerprinter.fingerprint(secret),
            _ => "<redacted>".to_string(),
        };
        *token = serde_json::Value::String(fingerprint);
        serde_json::to_vec(&value).ok()
    }

    pub fn decode(&self, record: &[u8]) -> Result<Decoded, DecodeError> {
        if record.len() > self.max_record_bytes {
            return Err(DecodeError::TooLarge);
        }
        let text = std::str::from_utf8(record).map_err(|_| DecodeError::InvalidUtf8)?;
        match self.format {
            Format::Canonical => canonical::decode(text, &self.fingerprinter),
        }
    }
}
