//! Decoders from input formats into the canonical [`Event`].
//!
//! A decoder never panics and never allocates without bound: the record size
//! is checked first, then UTF-8, then nesting depth and array lengths
//! ([`Limits`]: in one pass over the bytes before a vendor record is parsed,
//! while skipping unknown fields for canonical records); event times too far
//! from now are refused ([`Skew`]). Every
//! rejection is a [`DecodeError`] whose [`reason`](DecodeError::reason) is a
//! fixed string, so dead-lettering and counting cost no formatting.

pub mod canonical;
mod error;
mod limits;
pub mod vendor;

pub use error::DecodeError;
pub use limits::Limits;

use crate::event::Event;
use crate::fingerprint::Fingerprinter;

/// The input formats tokenwatch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// tokenwatch's own JSON (see README, "Canonical event").
    #[default]
    Canonical,
    /// OCSF API Activity, class 6003.
    Ocsf,
    /// AWS CloudTrail records, single or `{"Records":[...]}`.
    Cloudtrail,
    /// GitHub audit-log events.
    Github,
    /// Kubernetes audit events (audit.k8s.io/v1).
    K8s,
    /// Okta System Log events.
    Okta,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Canonical,
        Format::Ocsf,
        Format::Cloudtrail,
        Format::Github,
        Format::K8s,
        Format::Okta,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Canonical => "canonical",
            Format::Ocsf => "ocsf",
            Format::Cloudtrail => "cloudtrail",
            Format::Github => "github",
            Format::K8s => "k8s",
            Format::Okta => "okta",
        }
    }

    /// The `issuer` a vendor format's events get unless configured
    /// (canonical events carry their own).
    pub fn default_issuer(self) -> &'static str {
        match self {
            Format::Canonical => "",
            Format::Ocsf => "ocsf",
            Format::Cloudtrail => "aws",
            Format::Github => "github",
            Format::K8s => "k8s",
            Format::Okta => "okta",
        }
    }
}

/// How far event time may be from the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// Events more than this far ahead of now are refused.
    pub max_future_ms: i64,
    /// Events older than this are refused; `None` accepts any age (replays
    /// of old logs).
    pub max_past_ms: Option<i64>,
}

impl Default for Skew {
    fn default() -> Self {
        Skew {
            max_future_ms: 86_400_000,
            max_past_ms: None,
        }
    }
}

impl Skew {
    /// Any event time (tests and replays of synthetic data).
    pub const ANY: Skew = Skew {
        max_future_ms: i64::MAX,
        max_past_ms: None,
    };

    fn allows(&self, ts_ms: i64, now_ms: i64) -> bool {
        ts_ms <= now_ms.saturating_add(self.max_future_ms)
            && self
                .max_past_ms
                .is_none_or(|past| ts_ms >= now_ms.saturating_sub(past))
    }
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
    limits: Limits,
    skew: Skew,
    issuer: String,
}

impl Decoder {
    pub fn new(format: Format, max_record_bytes: usize, fingerprinter: Fingerprinter) -> Self {
        Decoder {
            format,
            max_record_bytes,
            fingerprinter,
            limits: Limits::default(),
            skew: Skew::default(),
            issuer: format.default_issuer().to_string(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_skew(mut self, skew: Skew) -> Self {
        self.skew = skew;
        self
    }

    /// The `issuer` of a vendor format's events (ignored for canonical).
    pub fn with_issuer(mut self, issuer: Option<&str>) -> Self {
        if let Some(issuer) = issuer {
            self.issuer = issuer.to_string();
        }
        self
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

    /// Decodes a record that holds one event (a CloudTrail file's first).
    pub fn decode(&self, record: &[u8]) -> Result<Decoded, DecodeError> {
        let mut out = Vec::with_capacity(1);
        self.decode_into(record, &mut out)?;
        out.into_iter()
            .next()
            .ok_or(DecodeError::MissingField("Records"))
    }

    /// Decodes one record into `out`: usually one event, every record of a
    /// CloudTrail file. On error nothing is added: the record goes to the
    /// dead-letter topic whole.
    pub fn decode_into(&self, record: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.decode_at(record, now_ms(), out)
    }

    /// [`decode_into`](Self::decode_into) with the wall clock given.
    pub fn decode_at(
        &self,
        record: &[u8],
        now_ms: i64,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        if record.len() > self.max_record_bytes {
            return Err(DecodeError::TooLarge);
        }
        let text = std::str::from_utf8(record).map_err(|_| DecodeError::InvalidUtf8)?;
        let start = out.len();
        let decoded = self.decode_format(text, out);
        let checked = decoded.and_then(|()| {
            out[start..]
                .iter()
                .all(|d| self.skew.allows(d.event.ts_ms, now_ms))
                .then_some(())
                .ok_or(DecodeError::TimestampSkew)
        });
        if checked.is_err() {
            out.truncate(start);
        }
        checked
    }

    fn decode_format(&self, text: &str, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if self.format == Format::Canonical {
            out.push(canonical::decode_with(
                text,
                &self.fingerprinter,
                &self.limits,
            )?);
            return Ok(());
        }
        self.limits.check(text.as_bytes())?;
        let value = vendor::parse(text)?;
        let issuer = self.issuer.as_str();
        match self.format {
            Format::Cloudtrail => return vendor::cloudtrail::decode(&value, issuer, out),
            Format::Ocsf => out.push(vendor::ocsf::decode(&value, issuer)?),
            Format::Github => out.push(vendor::github::decode(&value, issuer)?),
            Format::K8s => out.push(vendor::k8s::decode(&value, issuer)?),
            Format::Okta => out.push(vendor::okta::decode(&value, issuer)?),
            Format::Canonical => out.push(canonical::decode_with(
                text,
                &self.fingerprinter,
                &self.limits,
            )?),
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
