//! End-to-end tests against the real local Kafka broker. One test binary
//! with one module per area; helpers live in `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod broker_restart;
mod canary;
mod cloudtrail;
mod crash;
mod detect_pipeline;
mod failover;
mod geography;
mod health;
mod ingest_kafka;
mod kafka_security;
mod ledger;
mod metadata_topic;
mod product;
mod race;
mod reload;
mod repartition;
mod revoker;
mod rules;
mod topics;
