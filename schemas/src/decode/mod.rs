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
use crate::redact::Redactor;

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

/// One element of a multi-record input (a CloudTrail file's `Records`)
/// refused on its own; the file's other elements are still decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Its position: `Records[index]`.
    pub index: usize,
    pub error: DecodeError,
    /// The element alone, as JSON, for the dead-letter topic.
    pub element: Vec<u8>,
}

/// What records decode into. Reused across records: each call appends.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub events: Vec<Decoded>,
    /// Elements of multi-record inputs refused one by one.
    pub rejected: Vec<Rejected>,
    /// Well-formed vendor records that are no token's call and so are not
    /// an event: a GitHub web-session action, a CloudTrail `AwsServiceEvent`,
    /// a Kubernetes `system:anonymous` request.
    pub skipped: u64,
}

impl Output {
    pub fn clear(&mut self) {
        self.events.clear();
        self.rejected.clear();
        self.skipped = 0;
    }
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
    redactor: Redactor,
}

impl Decoder {
    pub fn new(format: Format, max_record_bytes: usize, fingerprinter: Fingerprinter) -> Self {
        Decoder {
            format,
            max_record_bytes,
            redactor: Redactor::new(fingerprinter.clone(), &[]),
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

    /// Secret-named keys to redact beyond the built-in ones (see
    /// [`Redactor`]).
    pub fn with_redact_keys(mut self, extra: &[String]) -> Self {
        self.redactor = Redactor::new(self.fingerprinter.clone(), extra);
        self
    }

    /// The redactor for records that leave undecoded.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Decodes a record that holds one event (a CloudTrail file's first).
    /// A record that is no token's call (a skip) is `MissingField("token")`
    /// here.
    pub fn decode(&self, record: &[u8]) -> Result<Decoded, DecodeError> {
        let mut out = Output::default();
        self.decode_into(record, &mut out)?;
        match (
            out.events.into_iter().next(),
            out.rejected.into_iter().next(),
        ) {
            (Some(first), _) => Ok(first),
            (None, Some(rejected)) => Err(rejected.error),
            (None, None) if out.skipped > 0 => Err(DecodeError::MissingField("token")),
            (None, None) => Err(DecodeError::MissingField("Records")),
        }
    }

    /// Decodes one record into `out`: usually one event; every element of a
    /// CloudTrail file, where a bad element is put in `out.rejected` and the
    /// rest still decode; or a skip. On error nothing is added: the record
    /// goes to the dead-letter topic whole.
    pub fn decode_into(&self, record: &[u8], out: &mut Output) -> Result<(), DecodeError> {
        self.decode_at(record, now_ms(), out)
    }

    /// [`decode_into`](Self::decode_into) with the wall clock given.
    pub fn decode_at(
        &self,
        record: &[u8],
        now_ms: i64,
        out: &mut Output,
    ) -> Result<(), DecodeError> {
        if record.len() > self.max_record_bytes {
            return Err(DecodeError::TooLarge);
        }
        let text = std::str::from_utf8(record).map_err(|_| DecodeError::InvalidUtf8)?;
        // Vendor records pass the structural limits before they are parsed.
        let parse = || {
            self.limits.check(text.as_bytes())?;
            vendor::parse(text)
        };
        let issuer = self.issuer.as_str();
        let decoded = match self.format {
            Format::Canonical => Some(canonical::decode_with(
                text,
                &self.fingerprinter,
                &self.limits,
            )?),
            Format::Cloudtrail => {
                let value = parse()?;
                match vendor::cloudtrail::records(&value)? {
                    vendor::cloudtrail::Records::One(record) => {
                        vendor::cloudtrail::decode(record, issuer)?
                    }
                    vendor::cloudtrail::Records::File(records) => {
                        self.decode_file(records, now_ms, out);
                        return Ok(());
                    }
                }
            }
            Format::Ocsf => vendor::ocsf::decode(&parse()?, issuer)?,
            Format::Github => vendor::github::decode(&parse()?, issuer)?,
            Format::K8s => vendor::k8s::decode(&parse()?, issuer)?,
            Format::Okta => vendor::okta::decode(&parse()?, issuer)?,
        };
        self.accept(decoded, now_ms, out)
    }

    /// A CloudTrail file's records, each decoded on its own: a bad one goes
    /// to `out.rejected` and the rest still decode.
    fn decode_file(&self, records: &[serde_json::Value], now_ms: i64, out: &mut Output) {
        for (index, record) in records.iter().enumerate() {
            let accepted = vendor::cloudtrail::decode(record, &self.issuer)
                .and_then(|d| self.accept(d, now_ms, out));
            if let Err(error) = accepted {
                out.rejected.push(Rejected {
                    index,
                    error,
                    element: serde_json::to_vec(record).unwrap_or_default(),
                });
            }
        }
    }

    /// Adds a decoded event if its time is within the skew, or counts a skip.
    fn accept(
        &self,
        decoded: Option<Decoded>,
        now_ms: i64,
        out: &mut Output,
    ) -> Result<(), DecodeError> {
        match decoded {
            None => out.skipped += 1,
            Some(d) if self.skew.allows(d.event.ts_ms, now_ms) => out.events.push(d),
            Some(_) => return Err(DecodeError::TimestampSkew),
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
