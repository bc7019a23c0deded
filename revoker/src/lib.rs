//! Revocation and alerting: acts on decisions.
//!
//! # Layout
//!
//! Empty for now. The revoker issue adds the issuer adapters, the ledger,
//! retries and circuit breakers, and the alert webhooks.
