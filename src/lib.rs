//! tokenwatch: detects misuse of API tokens in audit logs on Kafka and
//! revokes them within milliseconds. This package wires the stage crates
//! (`ingest`, `detectors`, `revoker`) into a product.
//!
//! # Layout
//!
//! - [`config`]: [`Config`], the whole TOML file: loading and validation that
//!   reports every problem at once.
//! - [`pipeline`]: the running pipeline: Kafka source → stages, with
//!   acknowledgements flowing back so offsets are stored only when done.
//! - [`admin`]: the admin HTTP API (health, readiness, Prometheus metrics,
//!   token state, decisions, denylist, manual revoke, allowlist).
//! - [`demo`]: `tokenwatch demo`, everything in-process on librdkafka's
//!   mock cluster.
//! - [`replay`]: `tokenwatch replay`, detection over files, deterministic.
//! - [`scenario`]: realistic traffic with scripted attacks and benign
//!   traps, for the demo and the end-to-end tests.
//! - [`quality`]: `tokenwatch quality`, the labelled detection-quality
//!   benchmark on real geography: the world, the generator, the scorer.
//! - [`bench`]: `tokenwatch bench`, speed against the real broker, as
//!   ratios to a bare consumer within one run.
//! - [`topics`]: creating and checking the internal topics (ledger,
//!   outbox, dead letters), as `tokenwatch topics` and `run --create-topics`.
//! - [`cli`]: the command-line interface.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod pipeline;
pub mod quality;
pub mod replay;
pub mod scenario;
pub mod topics;

pub use config::Config;
