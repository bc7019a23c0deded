//! The detect stage: runs the [`Engine`] on each batch, hands decisions on,
//! then acknowledges the batch. Also applies live changes: token-metadata
//! updates, GeoIP and metadata-file reloads (on SIGHUP or file change).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use detectors::{Engine, MetadataStore};
use ingest::{Delivery, MetadataUpdate};
use revoker::Command;
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
            check_every: config.detectors.file_check_interval,
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
    let events = &delivery.batch.events;
    delivery
        .secrets
        .iter()
        .filter_map(|(row, secret)| {
            let e = events.get(*row)?;
            Some((e.issuer.clone(), e.token_id.clone(), secret.clone()))
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

type Opened = Result<detectors::GeoIp, detectors::geoip::GeoIpError>;

/// GeoIP reloads off the detect task: opening walks whole files (seconds
/// for DB-IP), so it runs on a blocking thread while batches go on, and
/// the fresh databases are put in use between batches. A file that failed
/// is tried again only once it changes, not on every check.
#[derive(Default)]
struct GeoIpReloader {
    running: bool,
    /// The stamps of the last attempt that failed.
    failed: Option<Vec<Option<(SystemTime, u64)>>>,
    trying: Option<Vec<Option<(SystemTime, u64)>>>,
}

impl GeoIpReloader {
    /// Starts a reload, if none is running; `on_change` only if the files
    /// changed since they were loaded and since the last failed attempt.
    fn start(&mut self, engine: &Engine, on_change: bool, done: &mpsc::Sender<Opened>) {
        if self.running {
            return;
        }
        let Some(job) = engine.geoip_reload_job(on_change) else {
            return;
        };
        if on_change && self.failed.as_ref() == Some(&job.stamps) {
            return;
        }
        self.running = true;
        self.trying = Some(job.stamps);
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let _ = done.blocking_send(detectors::GeoIp::open(&job.config));
        });
    }

    fn finish(&mut self, engine: &mut Engine, opened: Opened) {
        self.running = false;
        match opened {
            Ok(fresh) => {
                engine.install_geoip(fresh);
                self.failed = None;
                info!("GeoIP databases reloaded.");
            }
            Err(e) => {
                self.failed = self.trying.take();
                error!(error = %e, "GeoIP reload failed; the previous databases stay in use, and the files are tried again when they change.");
            }
        }
    }
}

pub async fn detect_stage(
    mut input: mpsc::Receiver<Delivery>,
    mut engine: Engine,
    mut control: mpsc::Receiver<Control>,
    reload: ReloadPolicy,
    stats: Arc<FlowStats>,
    revoker: mpsc::Sender<Command>,
) -> Result<(), StageError> {
    let mut ticker = tokio::time::interval(reload.check_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metadata_stamp = reload.metadata_file.as_ref().and_then(modified);
    let mut rule_stamps = reload.rule_stamps();
    // Metrics show the rules in force (and the rest) before any batch.
    stats.set_engine_stats(engine.stats());
    let mut control_open = true;
    let mut geoip = GeoIpReloader::default();
    let (geoip_tx, mut geoip_rx) = mpsc::channel(1);
    loop {
        tokio::select! {
            Some(opened) = geoip_rx.recv() => {
                geoip.finish(&mut engine, opened);
                stats.set_engine_stats(engine.stats());
            }
            delivery = input.recv() => {
                let Some(delivery) = delivery else { break };
                stats.record_batch(&delivery);
                if !delivery.secrets.is_empty() {
                    let _ = revoker.send(Command::Secrets(secrets_of(&delivery))).await;
                }
                // CPU-bound: let the runtime move other tasks off this
                // thread while the batch is processed.
                let mut delivery = delivery;
                let processed = tokio::task::block_in_place(|| engine.process_batch(&mut delivery.batch));
                match Ok::<_, std::convert::Infallible>(processed) {
                    Ok(out) => {
                        stats.record_decisions(&out.decisions);
                        stats.set_engine_stats(engine.stats());
                        out.decisions.iter().for_each(log_decision);
                        log_alerts(&out.alerts);
                        if hand_on(&revoker, out.decisions, out.alerts).await {
                            delivery.ack.done();
                        } else {
                            // Reading on would queue every later batch
                            // behind this one; stop instead.
                            error!("The revoker could not record this batch's revocations in the ledger; stopping without acknowledging it, so it is read again after a restart.");
                            return Err(StageError::Ledger);
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
                    // The files as they are now are the ones loaded: the
                    // next check must not load them again.
                    metadata_stamp = reload.metadata_file.as_ref().and_then(modified);
                    rule_stamps = reload.rule_stamps();
                    geoip.start(&engine, false, &geoip_tx);
                    reload_metadata_file(&mut engine, reload.metadata_file.as_ref());
                    reload_rules(&mut engine, reload.config_file.as_ref());
                    stats.set_engine_stats(engine.stats());
                }
                None => control_open = false,
            },
            _ = ticker.tick() => {
                stats.file_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                geoip.start(&engine, true, &geoip_tx);
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
    Ok(())
}

/// Why the detect stage stopped before its input ended.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(
        "the revocation ledger could not be written for revoker.ledger_retry_for; stopped without acknowledging the batch"
    )]
    Ledger,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use detectors::{DecisionConfig, DetectorsConfig, GeoIpConfig};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geoip")
            .join(name)
    }

    /// Replaces `path` with `source`, with a distinct modification time.
    fn replace(path: &Path, source: &str, minute: u64) {
        std::fs::copy(fixture(source), path).unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + minute * 60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[tokio::test]
    async fn geoip_reloads_off_the_task_and_a_bad_file_is_retried_only_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("tw-geoip-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let city = dir.join("city.mmdb");
        replace(&city, "GeoIP2-City-Test.mmdb", 0);
        let config = DetectorsConfig {
            geoip: Some(GeoIpConfig::new(&city)),
            ..Default::default()
        };
        let mut engine = Engine::build(&config, &DecisionConfig::default()).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let mut reloader = GeoIpReloader::default();

        reloader.start(&engine, true, &tx);
        assert!(!reloader.running, "nothing changed: nothing to do");

        // A corrupt file: opened on a blocking thread, refused, remembered.
        replace(&city, "GeoIP2-City-Test-Invalid-Node-Count.mmdb", 1);
        reloader.start(&engine, true, &tx);
        assert!(reloader.running);
        let opened = rx.recv().await.unwrap();
        assert!(opened.is_err());
        reloader.finish(&mut engine, opened);
        reloader.start(&engine, true, &tx);
        assert!(!reloader.running, "the same bad file is not tried again");

        // A good file with other data: opened, installed, counters kept.
        replace(&city, "dbip-city-lite-test.mmdb", 2);
        reloader.start(&engine, true, &tx);
        assert!(reloader.running);
        let opened = rx.recv().await.unwrap();
        reloader.finish(&mut engine, opened);
        assert!(!reloader.running && reloader.failed.is_none());
        let mut events = vec![schemas::Event::new(
            1_795_813_200_000,
            "t",
            "oauth",
            "GET /",
        )];
        events[0].src_ip = Some("81.2.69.142".parse().unwrap());
        engine.process(
            &mut events,
            &[schemas::Origin {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                kafka_ts_ms: None,
            }],
        );
        assert_eq!(
            events[0].accuracy_km,
            Some(detectors::geoip::DEFAULT_ASSUMED_ACCURACY_KM),
            "the DB-IP data is in use"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
