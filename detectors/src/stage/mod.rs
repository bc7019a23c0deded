//! The detect stage: the [`Engine`] split into shards, each on a thread of
//! its own, fed from one input channel.
//!
//! ```text
//! Input ──> router ──part──> shard 0 (Engine, thread detect-0) ──┐
//!   │         │     ──part──> shard 1 (Engine, thread detect-1) ──┼──> DecisionBatch ──> output
//!   │         └─ Control, to every shard, in order with the parts ┘
//!   └─ ack: a Finalizer, split in one part per shard
//! ```
//!
//! A token's first event picks its shard: the hash of its issuer and
//! principal when it names one, else of its issuer and token id. The
//! router remembers the choice ([`Routes`]), so all of a token's events
//! meet in one shard, in order, even if later ones name another principal
//! or none; and the tokens of a principal meet too, so a new token starts
//! from its principal's learned context (see [`crate::state::principals`]).
//! Each shard owns its tokens' state: no lock on the hot path. The revocation budget is shared (it is locked for a revocation
//! only); live metadata and allowlist changes go to every shard.
//!
//! A batch is acknowledged when every shard's part of it is: see
//! [`Finalizer`]. A part with decisions or secrets becomes a
//! [`DecisionBatch`] whose finalizer the consumer completes once they are
//! recorded; a part with neither is done at once.
//!
//! With the state changelog ([`Engine::with_changelog`]), a shard holds its
//! parts' acknowledgements until its next checkpoint is handed on behind
//! its decisions ([`Control::Checkpoint`]), so no offset is stored ahead of
//! the state written; and the stage judges only the partitions it owns
//! ([`Control::Own`], once their state is restored).

mod finalizer;
mod owned;
mod routes;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use schemas::{Decision, Event, EventBatch, Origin, Secret, SystemAlert, TokenMetadata};
use tokio::sync::{mpsc, oneshot};

pub use self::finalizer::Finalizer;
use self::owned::Owned;
pub use self::routes::{Routes, shard_of};
use crate::changelog::Entry;
use crate::engine::{Engine, EngineStats};
use crate::geoip::GeoIp;
use crate::metadata::MetadataStore;
use crate::policy::RuleConfig;
use crate::state::PartitionId;

/// Parts queued per shard. Small: a slow shard pushes back on the router.
const SHARD_QUEUE: usize = 4;

/// A batch for the stage.
pub struct Input {
    pub batch: EventBatch,
    /// Raw secrets some events carried, by row.
    pub secrets: Vec<(usize, Secret)>,
    pub ack: Finalizer,
}

/// What one shard's part of a batch led to.
#[derive(Debug)]
pub struct DecisionBatch {
    pub decisions: Vec<Decision>,
    pub alerts: Vec<SystemAlert>,
    /// `(issuer, token_id, secret)` for the revoker's handle store only.
    pub secrets: Vec<(String, String, Secret)>,
    /// State changelog records, to write once the decisions are recorded
    /// (and before `ack`): a checkpoint never runs ahead of the ledger.
    pub checkpoint: Vec<Entry>,
    /// Complete it once the decisions are recorded (the ledger write is
    /// acknowledged) and the checkpoint written; drop it if that failed.
    pub ack: Finalizer,
}

impl DecisionBatch {
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
            && self.alerts.is_empty()
            && self.secrets.is_empty()
            && self.checkpoint.is_empty()
    }
}

/// A change applied between batches, by every shard.
pub enum Control {
    /// A live metadata update (it takes precedence over the file).
    Upsert(TokenMetadata),
    Remove {
        issuer: String,
        token_id: String,
    },
    /// The metadata file, read again.
    ReplaceMetadata(MetadataStore),
    /// GeoIP databases opened off the stage (each shard gets its own cache).
    InstallGeoIp(Box<GeoIp>),
    /// Compiles and puts a rule set in force; replies with the number of
    /// rules, or every problem (then the rules in force stay).
    ReloadPolicy {
        rules: Vec<RuleConfig>,
        reply: oneshot::Sender<Result<usize, Vec<String>>>,
    },
    /// A reload that never reached the rules (the config file was bad).
    CountFailedPolicyReload,
    /// Allowlists a token (`issuer/token_id` or `token_id`) from now on.
    Allow(String),
    /// What the stage knows about one token.
    Describe {
        issuer: String,
        token_id: String,
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// Replies once every earlier batch and control is applied.
    Sync(oneshot::Sender<()>),
    /// State changelog (when the engine tracks changes): restored states.
    Restore(Vec<Entry>),
    /// Events of these partitions are judged from now on (their state is
    /// restored).
    Own(Vec<PartitionId>),
    /// These partitions moved away: their events are no longer judged and
    /// their tokens' state is forgotten. Replies with how many tokens.
    Disown(Vec<PartitionId>, oneshot::Sender<usize>),
    /// Every shard writes its changed tokens' records, releasing the
    /// acknowledgements held since its last checkpoint; `done` is done
    /// once every shard's checkpoint is written.
    Checkpoint(Finalizer),
    /// Detection is degraded, or no longer ([`Engine::set_degraded`]).
    Degraded(bool),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Upsert(_) => "Upsert",
            Control::Remove { .. } => "Remove",
            Control::ReplaceMetadata(_) => "ReplaceMetadata",
            Control::InstallGeoIp(_) => "InstallGeoIp",
            Control::ReloadPolicy { .. } => "ReloadPolicy",
            Control::CountFailedPolicyReload => "CountFailedPolicyReload",
            Control::Allow(_) => "Allow",
            Control::Describe { .. } => "Describe",
            Control::Sync(_) => "Sync",
            Control::Restore(_) => "Restore",
            Control::Own(_) => "Own",
            Control::Disown(..) => "Disown",
            Control::Checkpoint(_) => "Checkpoint",
            Control::Degraded(_) => "Degraded",
        })
    }
}

/// The stage's counters, every shard's added up.
#[derive(Clone, Default)]
pub struct StageStats(Arc<Mutex<Vec<EngineStats>>>);

impl StageStats {
    fn set(&self, shard: usize, stats: EngineStats) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() <= shard {
            all.resize(shard + 1, EngineStats::default());
        }
        all[shard] = stats;
    }

    /// The sum over the shards.
    pub fn merged(&self) -> EngineStats {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts = all.iter();
        let mut sum = parts.next().cloned().unwrap_or_default();
        parts.for_each(|s| sum.add(s));
        sum
    }
}

/// See the module docs.
pub struct DetectStage {
    shards: Vec<Engine>,
    routes: Routes,
    stats: StageStats,
    /// With the state changelog: the partitions whose events are judged.
    owned: Option<Owned>,
}

impl DetectStage {
    /// Splits a fresh `engine` into `shards` (at least 1).
    pub fn new(engine: Engine, shards: usize) -> Self {
        let routes = Routes::new(engine.config());
        let shards = engine.into_shards(shards.max(1));
        let stats = StageStats::default();
        for (i, e) in shards.iter().enumerate() {
            stats.set(i, e.stats());
        }
        let owned = shards[0].tracks_changes().then(Owned::default);
        DetectStage {
            shards,
            routes,
            stats,
            owned,
        }
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The counters, live while the stage runs.
    pub fn stats(&self) -> StageStats {
        self.stats.clone()
    }

    /// Runs until `input` closes (or `output`'s receiver is gone), then
    /// flushes every shard's open deduplication windows to `output`.
    pub async fn run(
        self,
        mut input: mpsc::Receiver<Input>,
        mut control: mpsc::Receiver<Control>,
        output: mpsc::Sender<DecisionBatch>,
    ) {
        let n = self.shards.len();
        let mut queues = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (index, engine) in self.shards.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            queues.push(tx);
            let shard = Shard {
                index,
                held: engine.tracks_changes().then(Vec::new),
                engine,
                output: output.clone(),
                stats: self.stats.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("detect-{index}"))
                .spawn(move || shard.run(rx))
                .expect("cannot start a detect shard thread");
            threads.push(thread);
        }
        drop(output);
        let mut router = Router {
            queues,
            routes: self.routes,
            owned: self.owned,
        };
        let mut control_open = true;
        loop {
            tokio::select! {
                item = input.recv() => match item {
                    Some(item) => {
                        if !router.route(item).await {
                            break;
                        }
                    }
                    None => break,
                },
                msg = control.recv(), if control_open => match msg {
                    Some(msg) => {
                        if !router.apply(msg).await {
                            break;
                        }
                    }
                    None => control_open = false,
                },
            }
        }
        drop(router);
        let joined =
            tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok()))
                .await;
        if !matches!(joined, Ok(true)) {
            tracing::error!("A detect shard panicked; its batches stay unacknowledged.");
        }
    }
}

/// Work for one shard, in order.
enum Work {
    Part(Part, Finalizer),
    Apply(ShardControl),
}

/// One shard's part of a batch.
#[derive(Default)]
struct Part {
    events: Vec<Event>,
    origins: Vec<Origin>,
    /// Raw secrets, by row of this part.
    secrets: Vec<(usize, Secret)>,
}

enum ShardControl {
    Upsert(TokenMetadata),
    Remove(String, String),
    ReplaceMetadata(Arc<MetadataStore>),
    InstallGeoIp(Box<GeoIp>),
    ReloadPolicy(
        Arc<Vec<RuleConfig>>,
        oneshot::Sender<Result<usize, Vec<String>>>,
    ),
    CountFailedPolicyReload,
    Allow(String),
    Describe(String, String, oneshot::Sender<serde_json::Value>),
    Sync(oneshot::Sender<()>),
    Restore(Vec<Entry>),
    Forget(Arc<Vec<PartitionId>>, oneshot::Sender<usize>),
    Checkpoint(Finalizer),
    Degraded(bool),
}

struct Router {
    queues: Vec<mpsc::Sender<Work>>,
    routes: Routes,
    owned: Option<Owned>,
}

impl Router {
    /// Splits a batch by shard and queues the parts. False once a shard is
    /// gone (the stage is stopping).
    async fn route(&mut self, input: Input) -> bool {
        let Input {
            mut batch,
            mut secrets,
            ack,
        } = input;
        if let Some(owned) = &mut self.owned {
            owned.keep_owned(&mut batch, &mut secrets);
            if batch.is_empty() {
                ack.done();
                return true;
            }
        }
        let n = self.queues.len();
        if n == 1 {
            let part = Part {
                events: batch.events,
                origins: batch.origins,
                secrets,
            };
            return self.queues[0].send(Work::Part(part, ack)).await.is_ok();
        }
        let per_shard = batch.len() / n + 1;
        let mut parts: Vec<Part> = (0..n)
            .map(|_| Part {
                events: Vec::with_capacity(per_shard),
                origins: Vec::with_capacity(per_shard),
                secrets: Vec::new(),
            })
            .collect();
        // Row → (shard, row in the part), for the secrets.
        let mut placed = Vec::with_capacity(if secrets.is_empty() { 0 } else { batch.len() });
        for (event, origin) in batch.events.into_iter().zip(batch.origins) {
            let shard = self.routes.shard(&event, n);
            let part = &mut parts[shard];
            if !secrets.is_empty() {
                placed.push((shard, part.events.len()));
            }
            part.events.push(event);
            part.origins.push(origin);
        }
        for (row, secret) in secrets {
            if let Some(&(shard, at)) = placed.get(row) {
                parts[shard].secrets.push((at, secret));
            }
        }
        for (shard, part) in parts.into_iter().enumerate() {
            if part.events.is_empty() {
                continue;
            }
            if self.queues[shard]
                .send(Work::Part(part, ack.part()))
                .await
                .is_err()
            {
                return false;
            }
        }
        ack.done();
        true
    }

    /// Sends a control to every shard; replies are gathered off the router.
    async fn apply(&mut self, control: Control) -> bool {
        let mut ok = true;
        match control {
            Control::Upsert(m) => {
                for q in &self.queues {
                    ok &= send(q, ShardControl::Upsert(m.clone())).await;
                }
            }
            Control::Remove { issuer, token_id } => {
                for q in &self.queues {
                    ok &= send(q, ShardControl::Remove(issuer.clone(), token_id.clone())).await;
                }
            }
            Control::ReplaceMetadata(store) => {
                let store = Arc::new(store);
                for q in &self.queues {
                    ok &= send(q, ShardControl::ReplaceMetadata(Arc::clone(&store))).await;
                }
            }
            Control::InstallGeoIp(geoip) => {
                for q in &self.queues {
                    ok &= send(q, ShardControl::InstallGeoIp(Box::new(geoip.share()))).await;
                }
            }
            Control::ReloadPolicy { rules, reply } => {
                let rules = Arc::new(rules);
                let mut replies = Vec::new();
                for q in &self.queues {
                    let (tx, rx) = oneshot::channel();
                    ok &= send(q, ShardControl::ReloadPolicy(Arc::clone(&rules), tx)).await;
                    replies.push(rx);
                }
                // Every shard compiles the same rules: the first one's
                // answer is every one's.
                tokio::spawn(async move {
                    let mut first = None;
                    for r in replies {
                        let answer = r.await;
                        first.get_or_insert(answer);
                    }
                    if let Some(Ok(answer)) = first {
                        let _ = reply.send(answer);
                    }
                });
            }
            Control::CountFailedPolicyReload => {
                // Counted once: the stats take the rule counters from shard 0.
                ok &= send(&self.queues[0], ShardControl::CountFailedPolicyReload).await;
            }
            Control::Allow(token) => {
                for q in &self.queues {
                    ok &= send(q, ShardControl::Allow(token.clone())).await;
                }
            }
            Control::Describe {
                issuer,
                token_id,
                reply,
            } => {
                let mut replies = Vec::new();
                for q in &self.queues {
                    let (tx, rx) = oneshot::channel();
                    let c = ShardControl::Describe(issuer.clone(), token_id.clone(), tx);
                    ok &= send(q, c).await;
                    replies.push(rx);
                }
                tokio::spawn(async move {
                    // The shard that holds the token's state answers.
                    let mut answer = None;
                    for r in replies {
                        if let Ok(v) = r.await
                            && (answer.is_none() || !v["state"].is_null())
                        {
                            answer = Some(v);
                        }
                    }
                    if let Some(v) = answer {
                        let _ = reply.send(v);
                    }
                });
            }
            Control::Restore(entries) => {
                let n = self.queues.len();
                let mut parts: Vec<Vec<Entry>> = (0..n).map(|_| Vec::new()).collect();
                for e in entries {
                    let shard = self.routes.place(
                        &e.issuer,
                        &e.token_id,
                        e.principal.as_deref(),
                        e.state.last_seen_s,
                        n,
                    );
                    parts[shard].push(e);
                }
                for (q, part) in self.queues.iter().zip(parts) {
                    if !part.is_empty() {
                        ok &= send(q, ShardControl::Restore(part)).await;
                    }
                }
            }
            Control::Own(partitions) => {
                if let Some(owned) = &mut self.owned {
                    owned.partitions.extend(partitions);
                }
            }
            Control::Disown(partitions, reply) => {
                if let Some(owned) = &mut self.owned {
                    owned.partitions.retain(|p| !partitions.contains(p));
                }
                let partitions = Arc::new(partitions);
                let mut replies = Vec::new();
                for q in &self.queues {
                    let (tx, rx) = oneshot::channel();
                    ok &= send(q, ShardControl::Forget(Arc::clone(&partitions), tx)).await;
                    replies.push(rx);
                }
                tokio::spawn(async move {
                    let mut forgotten = 0;
                    for r in replies {
                        forgotten += r.await.unwrap_or(0);
                    }
                    let _ = reply.send(forgotten);
                });
            }
            Control::Degraded(degraded) => {
                for q in &self.queues {
                    ok &= send(q, ShardControl::Degraded(degraded)).await;
                }
            }
            Control::Checkpoint(done) => {
                for q in &self.queues {
                    ok &= send(q, ShardControl::Checkpoint(done.part())).await;
                }
                done.done();
            }
            Control::Sync(reply) => {
                let mut replies = Vec::new();
                for q in &self.queues {
                    let (tx, rx) = oneshot::channel();
                    ok &= send(q, ShardControl::Sync(tx)).await;
                    replies.push(rx);
                }
                tokio::spawn(async move {
                    for r in replies {
                        if r.await.is_err() {
                            return;
                        }
                    }
                    let _ = reply.send(());
                });
            }
        }
        ok
    }
}

async fn send(queue: &mpsc::Sender<Work>, control: ShardControl) -> bool {
    queue.send(Work::Apply(control)).await.is_ok()
}

struct Shard {
    index: usize,
    engine: Engine,
    output: mpsc::Sender<DecisionBatch>,
    stats: StageStats,
    /// With the state changelog: the acknowledgements of parts processed
    /// since the last checkpoint. They are released with the checkpoint,
    /// so no offset is stored ahead of the state written.
    held: Option<Vec<Finalizer>>,
}

impl Shard {
    fn run(mut self, mut work: mpsc::Receiver<Work>) {
        while let Some(item) = work.blocking_recv() {
            match item {
                Work::Part(
                    Part {
                        mut events,
                        origins,
                        secrets,
                    },
                    ack,
                ) => {
                    let out = self.engine.process(&mut events, &origins);
                    self.stats.set(self.index, self.engine.stats());
                    let secrets = secrets
                        .into_iter()
                        .filter_map(|(row, secret)| {
                            let e = events.get(row)?;
                            Some((e.issuer.clone(), e.token_id.clone(), secret))
                        })
                        .collect();
                    let ack = match &mut self.held {
                        Some(held) => {
                            held.push(ack);
                            Finalizer::none()
                        }
                        None => ack,
                    };
                    let batch = DecisionBatch {
                        decisions: out.decisions,
                        alerts: out.alerts,
                        secrets,
                        checkpoint: Vec::new(),
                        ack,
                    };
                    if batch.is_empty() {
                        batch.ack.done();
                    } else if self.output.blocking_send(batch).is_err() {
                        // Nobody records decisions any more: stop; the
                        // part's finalizer is dropped, unacknowledged.
                        return;
                    }
                }
                Work::Apply(ShardControl::Checkpoint(done)) => {
                    if !self.checkpoint(done) {
                        return;
                    }
                }
                Work::Apply(control) => self.apply(control),
            }
        }
        // The input ended: close every open deduplication window, so no
        // counted repeat goes unreported.
        let out = self.engine.flush();
        self.stats.set(self.index, self.engine.stats());
        let batch = DecisionBatch {
            decisions: out.decisions,
            alerts: out.alerts,
            secrets: Vec::new(),
            checkpoint: Vec::new(),
            ack: Finalizer::none(),
        };
        if !batch.is_empty() {
            let _ = self.output.blocking_send(batch);
        }
    }

    /// Hands on the changed tokens' records with the acknowledgements held
    /// since the last checkpoint, behind this shard's earlier decisions.
    /// False once nobody records them.
    fn checkpoint(&mut self, done: Finalizer) -> bool {
        let mut acks = self.held.as_mut().map(std::mem::take).unwrap_or_default();
        acks.push(done);
        let batch = DecisionBatch {
            decisions: Vec::new(),
            alerts: Vec::new(),
            secrets: Vec::new(),
            checkpoint: self.engine.checkpoint(),
            ack: Finalizer::join(acks),
        };
        self.output.blocking_send(batch).is_ok()
    }

    fn apply(&mut self, control: ShardControl) {
        // Metadata updates, allowlisting, describe and sync change no
        // counter: only the others publish the stats again (a metadata
        // topic's catch-up can be a million upserts).
        let counted = matches!(
            control,
            ShardControl::InstallGeoIp(_)
                | ShardControl::ReloadPolicy(..)
                | ShardControl::CountFailedPolicyReload
                | ShardControl::Restore(_)
                | ShardControl::Forget(..)
        );
        let engine = &mut self.engine;
        match control {
            ShardControl::Upsert(m) => {
                if let Err(e) = engine.upsert_metadata(&m) {
                    // Every shard refuses it alike; one says so.
                    if self.index == 0 {
                        tracing::warn!(issuer = %m.issuer, token_id = %m.token_id, error = %e, "Ignored invalid token metadata.");
                    }
                }
            }
            ShardControl::Remove(issuer, token_id) => {
                engine.remove_metadata(&issuer, &token_id);
            }
            ShardControl::ReplaceMetadata(store) => engine.replace_metadata(store),
            ShardControl::InstallGeoIp(geoip) => engine.install_geoip(*geoip),
            ShardControl::ReloadPolicy(rules, reply) => {
                let _ = reply.send(engine.reload_policy(&rules));
            }
            ShardControl::CountFailedPolicyReload => engine.count_failed_policy_reload(),
            ShardControl::Allow(token) => engine.allow_token(&token),
            ShardControl::Describe(issuer, token_id, reply) => {
                let _ = reply.send(engine.describe_token(&issuer, &token_id));
            }
            ShardControl::Sync(reply) => {
                let _ = reply.send(());
            }
            ShardControl::Restore(entries) => {
                engine.restore(entries);
            }
            ShardControl::Forget(partitions, reply) => {
                let _ = reply.send(engine.forget_partitions(&partitions));
            }
            // Handled in `run`: it sends.
            ShardControl::Checkpoint(done) => done.done(),
            ShardControl::Degraded(degraded) => engine.set_degraded(degraded),
        }
        if counted {
            self.stats.set(self.index, self.engine.stats());
        }
    }
}
