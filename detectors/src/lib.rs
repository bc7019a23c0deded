//! Detection: turns batches of events into findings and decisions.
//!
//! # Layout
//!
//! Empty for now. The detectors issue adds GeoIP enrichment, per-token state,
//! the volume, geo, novelty, binding, scope and expiry detectors, SQL policy
//! rules and the decision.
