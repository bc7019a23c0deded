//! Detection: turns batches of events into findings and decisions.
//!
//! # Layout
//!
//! - [`config`]: [`DetectorsConfig`], the `[detectors]` section.
//! - [`geoip`]: MaxMind DB enrichment (City, ASN, Anonymous-IP) with a
//!   bounded cache and reload.
//! - [`state`]: the per-token [`TokenStore`] (cap, idle expiry, evictions)
//!   and, in [`state::window`], the sliding window and EWMA baseline.
//! - [`detector`]: the [`Detector`] trait and the [`Observation`] it sees.
//! - [`learning`]: when a token's history is long enough for "new";
//!   [`networks`]: cloud/hosting/CI and mobile networks.
//! - One module per detector: [`volume`], [`geo`], [`novelty`] (with the
//!   user-agent and action classifiers), [`binding`], [`scope`], [`expiry`].
//! - [`metadata`]: token metadata (scopes, bound networks and device,
//!   expiry), loaded from a file and updated live; [`glob`] matches scopes.
//! - [`policy`]: SQL rules planned once with DataFusion and evaluated on
//!   Arrow batches, their functions and golden cases.
//! - [`decision`]: risk combination, thresholds, modes, allowlists,
//!   deduplication and the revocation budget → [`schemas::Decision`].
//! - [`engine`]: [`Engine`], which ties them together for one shard.
//! - [`changelog`]: the state changelog's records ([`changelog::Entry`])
//!   and the tokens changed since the last checkpoint.
//! - [`stage`]: [`DetectStage`], the engine split into shards by token on
//!   threads of their own, with acknowledgements that travel with the
//!   decisions ([`stage::Finalizer`]).

pub mod binding;
pub mod changelog;
pub mod config;
pub mod decision;
pub mod detector;
pub mod engine;
pub mod expiry;
pub mod geo;
pub mod geoip;
pub mod glob;
pub mod learning;
pub mod metadata;
pub mod networks;
pub mod novelty;
pub mod policy;
pub mod scope;
pub mod stage;
pub mod state;
pub mod volume;

#[cfg(test)]
mod testkit;

pub use config::DetectorsConfig;
pub use decision::{Decider, DecisionConfig, DecisionOutput};
pub use detector::{Detector, Observation};
pub use engine::{BuildError, Engine, EngineStats, GeoIpReloadJob, StageNanos};
pub use geoip::{GeoIp, GeoIpConfig};
pub use metadata::MetadataStore;
pub use stage::{DecisionBatch, DetectStage, Finalizer};
pub use state::TokenStore;
