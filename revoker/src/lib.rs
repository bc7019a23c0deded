//! Revocation and alerting: acts on decisions.
//!
//! # Layout
//!
//! - [`config`]: [`RevokerConfig`], the `[revoker]` section: issuers,
//!   retries, breakers, secret handles, webhooks.
//! - [`adapters`]: one adapter per issuer kind (`oauth2`, `github`, `vault`,
//!   `aws_iam`, `http`) and the classification of their answers.
//! - [`ledger`]: the revocation ledger on a compacted topic: written before
//!   any issuer call, rebuilt at startup, idempotent per token.
//! - [`backoff`]: capped exponential backoff with jitter, and the
//!   per-issuer circuit breaker.
//! - [`handles`]: the in-memory, bounded store of raw secrets.
//! - [`webhook`]: Standard Webhooks signing, payloads and delivery.
//! - [`metrics`]: per-issuer counters and latency histograms.
//! - [`service`]: [`Revoker`], the task that ties them together.
//! - `topic`: reading a compacted topic in full (the ledger, the outbox).
//! - `testing` (feature `test-server`): a scripted HTTP server for tests.

pub mod adapters;
pub mod backoff;
pub mod config;
pub mod handles;
pub mod ledger;
pub mod metrics;
pub mod service;
#[cfg(any(test, feature = "test-server"))]
pub mod testing;
mod topic;
pub mod webhook;

pub use config::{IssuerConfig, RevokerConfig, WebhookConfig};
pub use ledger::{Ledger, Record, State};
pub use service::{BuildError, Command, Revoker, http_client};
