//! The types that tokenwatch's stages exchange, and the decoders that make
//! them. Pure code: no I/O, no async runtime, no Kafka, so it can be fuzzed
//! and property-tested in isolation.
//!
//! # Layout
//!
//! - [`event`]: the canonical API-call [`Event`] (SPEC §3) and its JSON form.
//! - [`time`]: event-time parsing (RFC 3339, epoch ms) and formatting.
//! - [`columns`]: the Arrow schema of an event and the conversion between
//!   `[Event]` and a `RecordBatch`.
//! - [`batch`]: [`EventBatch`], a `RecordBatch` plus where each row came from
//!   (topic, partition, offset), the unit that flows between stages.
//! - [`decode`]: decoders from the six input formats into events (canonical
//!   JSON in [`decode::canonical`], the vendor formats in [`decode::vendor`]),
//!   the structural [`decode::Limits`] and clock [`decode::Skew`] every
//!   record is held to, and a small [`DecodeError`] enum that names the
//!   reason a record is dead-lettered.
//! - [`fingerprint`]: the keyed hash that replaces a raw token secret, so a
//!   secret never travels past the decoder.
//! - [`redact`]: [`Redactor`], the byte-level scan that fingerprints secrets
//!   in records that leave undecoded (dead letters).
//! - [`metadata`]: [`TokenMetadata`], what the issuer knows about a token.
//! - [`finding`]: [`Finding`]s with score, confidence and [`Evidence`].
//! - [`decision`]: the [`Decision`] the revoker consumes, and [`SystemAlert`].
//! - [`sample`]: realistic sample events for benchmarks, demos and tests.

pub mod batch;
pub mod columns;
pub mod decision;
pub mod decode;
pub mod event;
pub mod finding;
pub mod fingerprint;
pub mod metadata;
pub mod redact;
pub mod sample;
pub mod time;

pub use batch::{EventBatch, Origin};
pub use columns::{
    ColumnsError, ENRICHMENT_START, event_column, event_schema, events_to_record_batch,
    record_batch_to_events,
};
pub use decision::{Decision, Mode, Repeats, SystemAlert};
pub use decode::{DecodeError, Decoded, Format, Secret};
pub use event::Event;
pub use finding::{Action, DetectorKind, EventRef, Evidence, Finding};
pub use fingerprint::Fingerprinter;
pub use metadata::TokenMetadata;
pub use redact::{Redacted, Redactor};
