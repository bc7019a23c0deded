//! The detect stage as the pipeline runs it: [`detectors::DetectStage`]
//! (the engine in shards), fed with ingest's deliveries, its decisions
//! recorded by the revoker before their batch is acknowledged, and a
//! controller that applies live changes: token-metadata updates, GeoIP and
//! metadata-file reloads (on SIGHUP or file change), admin requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use detectors::stage::{self, Input};
use detectors::{DecisionBatch, DetectStage, Engine, Finalizer, GeoIp, MetadataStore};
use ingest::{Delivery, MetadataUpdate};
use revoker::Command;
use schemas::{Action, Decision, SystemAlert};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::FlowStats;
use super::changelog::ChangelogWriter;
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
    /// Passed to the stage as it is (the state changelog's controls).
    Stage(stage::Control),
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

/// Hands decisions to the revoker and waits until every revoke is in the
/// ledger, then writes the checkpoint the batch carries. False if that did
/// not happen (the batch must not be acked).
async fn hand_on(
    revoker: &mpsc::Sender<Command>,
    changelog: Option<&ChangelogWriter>,
    batch: DecisionBatch,
) -> bool {
    let DecisionBatch {
        decisions,
        alerts,
        secrets,
        checkpoint,
        ack,
    } = batch;
    // The secrets first: a revocation of this batch may need one.
    if !secrets.is_empty() && revoker.send(Command::Secrets(secrets)).await.is_err() {
        return false;
    }
    if !decisions.is_empty() || !alerts.is_empty() {
        let (handed, done) = oneshot::channel();
        let command = Command::Decisions {
            decisions,
            alerts,
            handed,
        };
        if revoker.send(command).await.is_err() || done.await.is_err() {
            return false;
        }
    }
    if !checkpoint.is_empty() {
        let Some(changelog) = changelog else {
            return false;
        };
        if let Err(e) = changelog.write(&checkpoint).await {
            error!(error = %e, tokens = checkpoint.len(), "Cannot write the state checkpoint.");
            return false;
        }
    }
    ack.done();
    true
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
    fn start(&mut self, geoip: Option<&GeoIp>, on_change: bool, done: &mpsc::Sender<Opened>) {
        if self.running {
            return;
        }
        let Some(job) = geoip.and_then(|g| g.reload_job(on_change)) else {
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

    /// The fresh databases, if they opened (announced once every shard
    /// has them).
    fn finish(&mut self, opened: Opened) -> Option<GeoIp> {
        self.running = false;
        match opened {
            Ok(fresh) => {
                self.failed = None;
                Some(fresh)
            }
            Err(e) => {
                self.failed = self.trying.take();
                error!(error = %e, "GeoIP reload failed; the previous databases stay in use, and the files are tried again when they change.");
                None
            }
        }
    }
}

/// Runs the detect stage, with the shards its config asks for, until
/// `input` ends (then every shard flushes) or the revoker cannot record a
/// batch.
pub async fn detect_stage(
    input: mpsc::Receiver<Delivery>,
    engine: Engine,
    control: mpsc::Receiver<Control>,
    reload: ReloadPolicy,
    stats: Arc<FlowStats>,
    revoker: mpsc::Sender<Command>,
    changelog: Option<ChangelogWriter>,
) -> Result<(), StageError> {
    let geoip = engine.geoip().map(GeoIp::share);
    let shards = engine.config().shard_count();
    let stage = DetectStage::new(engine, shards);
    info!(shards = stage.shards(), "Detect stage started.");
    stats.follow_stage(stage.stats());
    let (stage_in, stage_in_rx) = mpsc::channel(super::STAGE_CHANNEL_BATCHES);
    let (stage_control, stage_control_rx) = mpsc::channel(64);
    let (decided, mut decisions) = mpsc::channel(super::STAGE_CHANNEL_BATCHES * 4);
    let running = tokio::spawn(stage.run(stage_in_rx, stage_control_rx, decided));
    let feeding = tokio::spawn(feed(input, stage_in, stats.clone()));
    let controlling = tokio::spawn(controller(
        control,
        stage_control,
        reload,
        geoip,
        stats.clone(),
    ));
    let mut result = Ok(());
    while let Some(batch) = decisions.recv().await {
        stats.record_decisions(&batch.decisions);
        batch.decisions.iter().for_each(log_decision);
        log_alerts(&batch.alerts);
        if !hand_on(&revoker, changelog.as_ref(), batch).await {
            // Reading on would queue every later batch behind this one;
            // stop instead.
            error!(
                "The revoker could not record this batch's revocations in the ledger, or its state checkpoint could not be written; stopping without acknowledging it, so it is read again after a restart."
            );
            result = Err(StageError::Ledger);
            break;
        }
    }
    // On an error, stop reading at once: ingest sees its receiver gone.
    feeding.abort();
    drop(decisions);
    controlling.abort();
    let _ = running.await;
    let _ = feeding.await;
    let _ = controlling.await;
    result
}

/// Hands ingest's deliveries to the stage; a delivery's offsets may be
/// stored once every shard's part of it is recorded.
async fn feed(
    mut input: mpsc::Receiver<Delivery>,
    stage: mpsc::Sender<Input>,
    stats: Arc<FlowStats>,
) {
    while let Some(delivery) = input.recv().await {
        stats.record_batch(&delivery);
        let Delivery {
            batch,
            secrets,
            ack,
        } = delivery;
        let item = Input {
            batch,
            secrets,
            ack: Finalizer::new(move || ack.done()),
        };
        if stage.send(item).await.is_err() {
            return;
        }
    }
}

/// Applies live changes to the stage: admin requests and metadata updates
/// as they come, reloads on SIGHUP and when watched files change.
async fn controller(
    mut control: mpsc::Receiver<Control>,
    stage: mpsc::Sender<stage::Control>,
    reload: ReloadPolicy,
    mut geoip: Option<GeoIp>,
    stats: Arc<FlowStats>,
) {
    let mut ticker = tokio::time::interval(reload.check_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metadata_stamp = reload.metadata_file.as_ref().and_then(modified);
    let mut rule_stamps = reload.rule_stamps();
    let mut control_open = true;
    let mut reloader = GeoIpReloader::default();
    let (geoip_tx, mut geoip_rx) = mpsc::channel(1);
    loop {
        let to_stage = tokio::select! {
            Some(opened) = geoip_rx.recv() => match reloader.finish(opened) {
                Some(fresh) => {
                    geoip = Some(fresh.share());
                    vec![stage::Control::InstallGeoIp(Box::new(fresh))]
                }
                None => Vec::new(),
            },
            msg = control.recv(), if control_open => match msg {
                Some(Control::Metadata(MetadataUpdate::Upsert(m))) => vec![stage::Control::Upsert(m)],
                Some(Control::Metadata(MetadataUpdate::Remove { issuer, token_id })) => {
                    vec![stage::Control::Remove { issuer, token_id }]
                }
                Some(Control::Metadata(MetadataUpdate::CaughtUp)) => {
                    // Ready once every shard has applied what came before.
                    let (synced, done) = oneshot::channel();
                    if stage.send(stage::Control::Sync(synced)).await.is_err() {
                        return;
                    }
                    if done.await.is_ok() {
                        stats.metadata_ready.send_replace(true);
                    }
                    Vec::new()
                }
                Some(Control::Describe { issuer, token_id, reply }) => {
                    vec![stage::Control::Describe { issuer, token_id, reply }]
                }
                Some(Control::Allow(token)) => {
                    info!(token = %token, "Token allowlisted through the admin API.");
                    vec![stage::Control::Allow(token)]
                }
                Some(Control::Stage(control)) => vec![control],
                Some(Control::Reload) => {
                    // The files as they are now are the ones loaded: the
                    // next check must not load them again.
                    metadata_stamp = reload.metadata_file.as_ref().and_then(modified);
                    rule_stamps = reload.rule_stamps();
                    reloader.start(geoip.as_ref(), false, &geoip_tx);
                    let mut changes: Vec<_> = reload_metadata_file(reload.metadata_file.as_ref()).into_iter().collect();
                    if let Some(path) = &reload.config_file {
                        changes.extend(reload_rules(&stage, path, &stats).await);
                    }
                    changes
                }
                None => {
                    control_open = false;
                    Vec::new()
                }
            },
            _ = ticker.tick() => {
                stats.file_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                reloader.start(geoip.as_ref(), true, &geoip_tx);
                let mut changes = Vec::new();
                if let Some(path) = &reload.metadata_file {
                    let stamp = modified(path);
                    if stamp != metadata_stamp {
                        metadata_stamp = stamp;
                        changes.extend(reload_metadata_file(Some(path)));
                    }
                }
                let stamps = reload.rule_stamps();
                if stamps != rule_stamps {
                    rule_stamps = stamps;
                    if let Some(path) = &reload.config_file {
                        changes.extend(reload_rules(&stage, path, &stats).await);
                    }
                }
                changes
            }
        };
        let reloaded: Vec<(super::Reloaded, usize)> = to_stage
            .iter()
            .filter_map(|change| match change {
                stage::Control::ReplaceMetadata(store) => {
                    Some((super::Reloaded::Metadata, store.len()))
                }
                stage::Control::InstallGeoIp(_) => Some((super::Reloaded::GeoIp, 0)),
                _ => None,
            })
            .collect();
        for change in to_stage {
            if stage.send(change).await.is_err() {
                return;
            }
        }
        if reloaded.is_empty() {
            continue;
        }
        // Said (and timed) once every shard judges with it: an event read
        // after the log line meets the new files.
        let (synced, done) = oneshot::channel();
        if stage.send(stage::Control::Sync(synced)).await.is_err() || done.await.is_err() {
            return;
        }
        for (what, tokens) in reloaded {
            stats.reloaded(what);
            match what {
                super::Reloaded::Metadata => info!(
                    path = %reload.metadata_file.as_deref().unwrap_or(std::path::Path::new("")).display(),
                    tokens,
                    "Token metadata file reloaded."
                ),
                _ => info!("GeoIP databases reloaded."),
            }
        }
    }
}

/// Why the detect stage stopped before its input ended.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(
        "the revocation ledger could not be written for revoker.ledger_retry_for, or a state checkpoint could not be written; stopped without acknowledging the batch"
    )]
    Ledger,
}

/// The metadata file, read again; `None` (and the previous metadata stays)
/// if it has errors.
fn reload_metadata_file(path: Option<&PathBuf>) -> Option<stage::Control> {
    let path = path?;
    match MetadataStore::load(path) {
        Ok(store) => Some(stage::Control::ReplaceMetadata(store)),
        Err(problems) => {
            error!(problems = ?problems, "Token metadata file has errors; the previous metadata stays in use.");
            None
        }
    }
}

/// Reads the config file again and puts its policy rules in force. Any
/// problem (in the file or in a rule) keeps the rules in force and says so.
/// Returns the change to send when the file itself was bad (to count it).
async fn reload_rules(
    stage: &mpsc::Sender<stage::Control>,
    path: &std::path::Path,
    stats: &FlowStats,
) -> Option<stage::Control> {
    let in_force = stats.engine_stats().policy.rules;
    let rules = match Config::load(path)
        .map_err(|e| e.problems)
        .and_then(|config| config.detectors.policy.all_rules())
    {
        Ok(rules) => rules,
        Err(problems) => {
            error!(path = %path.display(), problems = ?problems, rules_in_force = in_force, "The reloaded config has problems; the policy rules in force stay.");
            return Some(stage::Control::CountFailedPolicyReload);
        }
    };
    let (reply, answer) = oneshot::channel();
    if stage
        .send(stage::Control::ReloadPolicy { rules, reply })
        .await
        .is_err()
    {
        return None;
    }
    match answer.await {
        Ok(Ok(n)) => {
            stats.reloaded(super::Reloaded::Policy);
            info!(path = %path.display(), rules = n, "Policy rules reloaded.")
        }
        Ok(Err(problems)) => error!(
            path = %path.display(),
            problems = ?problems,
            rules_in_force = in_force,
            "The reloaded config has problems; the policy rules in force stay."
        ),
        Err(_) => {}
    }
    None
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
        let handle = engine.geoip().map(GeoIp::share);
        let handle = handle.as_ref();

        reloader.start(handle, true, &tx);
        assert!(!reloader.running, "nothing changed: nothing to do");

        // A corrupt file: opened on a blocking thread, refused, remembered.
        replace(&city, "GeoIP2-City-Test-Invalid-Node-Count.mmdb", 1);
        reloader.start(handle, true, &tx);
        assert!(reloader.running);
        let opened = rx.recv().await.unwrap();
        assert!(opened.is_err());
        assert!(reloader.finish(opened).is_none());
        reloader.start(handle, true, &tx);
        assert!(!reloader.running, "the same bad file is not tried again");

        // A good file with other data: opened, installed, counters kept.
        replace(&city, "dbip-city-lite-test.mmdb", 2);
        reloader.start(handle, true, &tx);
        assert!(reloader.running);
        let opened = rx.recv().await.unwrap();
        engine.install_geoip(reloader.finish(opened).unwrap());
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
