//! The detect stage: runs the [`Engine`] on each batch, hands decisions on,
//! then acknowledges the batch. Also applies live changes: token-metadata
//! updates, GeoIP and metadata-file reloads (on SIGHUP or file change).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, StringArray};
use detectors::{Engine, MetadataStore};
use ingest::{Delivery, MetadataUpdate};
use revoker::Command;
use schemas::columns::col;
use schemas::{Action, Decision, Secret, SystemAlert};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::FlowStats;
use crate::config::Config;

/// A change the stage applies between batches.
#[derive(Debug)]
pub enum Control {
    Metadata(MetadataUpdate),
    /// Re-open GeoIP, re-read the metadata file and the config's policy
    /// rules (SIGHUP).
    Reload,
    /// What the engine knows about a token (admin API).
    Describe {
        issuer: String,
        token_id: String,
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// Allowlist a token from now on (admin API).
    Allow(String),
}

/// How the stage notices changed files.
pub struct ReloadPolicy {
    pub check_every: Duration,
    pub metadata_file: Option<PathBuf>,
    /// The config file, read again for its policy rules.
    pub config_file: Option<PathBuf>,
    /// The rule files named at startup, watched beside the config file.
    pub rule_files: Vec<PathBuf>,
}

impl ReloadPolicy {
    pub fn from_config(config: &Config) -> Self {
        ReloadPolicy {
            check_every: Duration::from_secs(30),
            metadata_file: config.detectors.metadata_file.clone(),
            config_file: config.source.clone(),
            rule_files: config.detectors.policy.files.clone(),
        }
    }

    fn rule_stamps(&self) -> Vec<Option<SystemTime>> {
        self.config_file
            .iter()
            .chain(&self.rule_files)
            .map(modified)
            .collect()
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Logs a decision as one structured line (no raw secret ever reaches a
/// decision: token ids are ids or fingerprints).
pub fn log_decision(d: &Decision) {
    let json = serde_json::to_string(d).unwrap_or_default();
    match d.action {
        Action::Revoke => {
            warn!(token_id = %d.token_id, issuer = %d.issuer, decision = %json, "Revoke decision.")
        }
        _ => info!(token_id = %d.token_id, issuer = %d.issuer, decision = %json, "Alert decision."),
    }
}

fn log_alerts(alerts: &[SystemAlert]) {
    for a in alerts {
        error!(kind = a.kind, message = %a.message, "System alert.");
    }
}

/// The raw secrets a batch carried, with the token they belong to.
fn secrets_of(delivery: &Delivery) -> Vec<(String, String, Secret)> {
    let records = &delivery.batch.records;
    let column = |name| {
        records
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
    };
    let (Some(issuers), Some(tokens)) = (column(col::ISSUER), column(col::TOKEN_ID)) else {
        return Vec::new();
    };
    delivery
        .secrets
        .iter()
        .filter(|(row, _)| {
            *row < records.num_rows() && issuers.is_valid(*row) && tokens.is_valid(*row)
        })
        .map(|(row, secret)| {
            (
                issuers.value(*row).to_string(),
                tokens.value(*row).to_string(),
                secret.clone(),
            )
        })
        .collect()
}

/// Hands decisions to the revoker and waits until every revoke is in the
/// ledger. False if that did not happen (the batch must not be acked).
async fn hand_on(
    revoker: &mpsc::Sender<Command>,
    decisions: Vec<Decision>,
    alerts: Vec<SystemAlert>,
) -> bool {
    if decisions.is_empty() && alerts.is_empty() {
        return true;
    }
    let (handed, done) = oneshot::channel();
    if revoker
        .send(Command::Decisions {
            decisions,
            alerts,
            handed,
        })
        .await
        .is_err()
    {
        return false;
    }
    done.await.is_ok()
}

pub async fn detect_stage(
    mut input: mpsc::Receiver<Delivery>,
    mut engine: Engine,
    mut control: mpsc::Receiver<Control>,
    reload: ReloadPolicy,
    stats: Arc<FlowStats>,
    revoker: mpsc::Sender<Command>,
) {
    let mut ticker = tokio::time::interval(reload.check_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metadata_stamp = reload.metadata_file.as_ref().and_then(modified);
    let mut rule_stamps = reload.rule_stamps();
    // Metrics show the rules in force (and the rest) before any batch.
    stats.set_engine_stats(engine.stats());
    let mut control_open = true;
    loop {
        tokio::select! {
            delivery = input.recv() => {
                let Some(delivery) = delivery else { break };
                stats.record_batch(&delivery);
                if !delivery.secrets.is_empty() {
                    let _ = revoker.send(Command::Secrets(secrets_of(&delivery))).await;
                }
                // CPU-bound: let the runtime move other tasks off this
                // thread while the batch is processed.
                let processed = tokio::task::block_in_place(|| engine.process_batch(&delivery.batch));
                match processed {
                    Ok(out) => {
                        stats.record_decisions(&out.decisions);
                        stats.set_engine_stats(engine.stats());
                        out.decisions.iter().for_each(log_decision);
                        log_alerts(&out.alerts);
                        if hand_on(&revoker, out.decisions, out.alerts).await {
                            delivery.ack.done();
                        } else {
                            error!("The revoker did not take this batch's decisions; it stays unacknowledged and is read again after a restart.");
                        }
                    }
                    // Not acknowledged: the batch is read again after a restart.
                    Err(e) => error!(error = %e, "Cannot process a batch; it stays unacknowledged."),
                }
            }
            msg = control.recv(), if control_open => match msg {
                Some(Control::Metadata(MetadataUpdate::Upsert(m))) => {
                    if let Err(e) = engine.upsert_metadata(&m) {
                        warn!(issuer = %m.issuer, token_id = %m.token_id, error = %e, "Ignored invalid token metadata.");
                    }
                }
                Some(Control::Metadata(MetadataUpdate::Remove { issuer, token_id })) => {
                    engine.remove_metadata(&issuer, &token_id);
                }
                Some(Control::Metadata(MetadataUpdate::CaughtUp)) => {
                    stats.metadata_ready.send_replace(true);
                }
                Some(Control::Describe { issuer, token_id, reply }) => {
                    let _ = reply.send(engine.describe_token(&issuer, &token_id));
                }
                Some(Control::Allow(token)) => {
                    info!(token = %token, "Token allowlisted through the admin API.");
                    engine.allow_token(&token);
                }
                Some(Control::Reload) => {
                    match engine.reload_geoip() {
                        Ok(()) => info!("GeoIP databases reloaded."),
                        Err(e) => error!(error = %e, "GeoIP reload failed; the previous databases stay in use."),
                    }
                    reload_metadata_file(&mut engine, reload.metadata_file.as_ref());
                    reload_rules(&mut engine, reload.config_file.as_ref());
                    stats.set_engine_stats(engine.stats());
                }
                None => control_open = false,
            },
            _ = ticker.tick() => {
                match engine.reload_geoip_if_changed() {
                    Ok(true) => info!("GeoIP database files changed; reloaded."),
                    Ok(false) => {}
                    Err(e) => error!(error = %e, "GeoIP files changed but cannot be loaded; the previous databases stay in use."),
                }
                if let Some(path) = &reload.metadata_file {
                    let stamp = modified(path);
                    if stamp != metadata_stamp {
                        metadata_stamp = stamp;
                        reload_metadata_file(&mut engine, Some(path));
                    }
                }
                let stamps = reload.rule_stamps();
                if stamps != rule_stamps {
                    rule_stamps = stamps;
                    reload_rules(&mut engine, reload.config_file.as_ref());
                    stats.set_engine_stats(engine.stats());
                }
            }
        }
    }
    let out = engine.flush();
    stats.record_decisions(&out.decisions);
    out.decisions.iter().for_each(log_decision);
    hand_on(&revoker, out.decisions, out.alerts).await;
}

fn reload_metadata_file(engine: &mut Engine, path: Option<&PathBuf>) {
    let Some(path) = path else { return };
    match MetadataStore::load(path) {
        Ok(store) => {
            info!(path = %path.display(), tokens = store.len(), "Token metadata file reloaded.");
            engine.replace_metadata(store);
        }
        Err(problems) => {
            error!(problems = ?problems, "Token metadata file has errors; the previous metadata stays in use.")
        }
    }
}

/// Reads the config file again and puts its policy rules in force. Any
/// problem (in the file or in a rule) keeps the rules in force and says so.
fn reload_rules(engine: &mut Engine, config_file: Option<&PathBuf>) {
    let Some(path) = config_file else { return };
    let rules = Config::load(path)
        .map_err(|e| e.problems)
        .and_then(|config| config.detectors.policy.all_rules());
    let in_force = engine.policy_rules().len();
    let reloaded = match rules {
        Ok(rules) => engine.reload_policy(&rules),
        Err(problems) => {
            engine.count_failed_policy_reload();
            Err(problems)
        }
    };
    match reloaded {
        Ok(n) => info!(path = %path.display(), rules = n, "Policy rules reloaded."),
        Err(problems) => error!(
            path = %path.display(),
            problems = ?problems,
            rules_in_force = in_force,
            "The reloaded config has problems; the policy rules in force stay."
        ),
    }
}

/// Sends [`Control::Reload`] on every SIGHUP.
pub async fn reload_on_sighup(control: mpsc::Sender<Control>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading GeoIP databases and the token metadata file.");
            if control.send(Control::Reload).await.is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = control;
        std::future::pending::<()>().await;
    }
}
