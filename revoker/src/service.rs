//! The revoker service: takes decisions, writes the ledger first, calls
//! issuers with retries behind per-issuer circuit breakers, and sends the
//! alert webhooks. One task owns the ledger; each revocation's attempts run
//! on their own task and report back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use schemas::{Action, Decision, Secret, SystemAlert};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, error, info, info_span, warn};

use crate::adapters::{Adapter, AdapterError, Attempt, RevokeRequest};
use crate::backoff::{Backoff, Breaker};
use crate::config::RevokerConfig;
use crate::handles::{HandleStore, Put};
use crate::ledger::{Begin, Change, Ledger, LedgerError, Record, State};
use crate::metrics::RevokerMetrics;
use crate::webhook::outbox::{Entry as OutboxEntry, Outbox, OutboxError};
use crate::webhook::payload::{DecisionAlert, Envelope, RevocationAlert, SystemData, Timings};
use crate::webhook::{Outgoing, WebhookError, Webhooks};

/// What the service is asked to do.
pub enum Command {
    /// Decisions (and system alerts) from the detect stage. `handed` fires
    /// once every revoke is recorded in the ledger, so the batch may be
    /// acknowledged; it is dropped unfired if the ledger cannot be written.
    Decisions {
        decisions: Vec<Decision>,
        alerts: Vec<SystemAlert>,
        handed: oneshot::Sender<()>,
    },
    /// Raw secrets seen at decode time, for issuers that need them.
    Secrets(Vec<(String, String, Secret)>),
    /// The manual kill switch.
    Manual {
        issuer: String,
        token_id: String,
        principal: Option<String>,
        reason: String,
        reply: oneshot::Sender<Result<Record, String>>,
    },
    /// Every decided revocation, for gateways.
    Denylist(oneshot::Sender<Vec<Record>>),
    /// One token's ledger record, if it has one.
    Revocation {
        issuer: String,
        token_id: String,
        reply: oneshot::Sender<Option<Record>>,
    },
}

/// Errors building the service.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid revoker config:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(rdkafka::error::KafkaError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// A revocation not done yet.
#[derive(Debug, Clone, Copy)]
struct Open {
    decided_at_ms: i64,
    awaiting_secret: bool,
}

struct AttemptResult {
    issuer: String,
    token_id: String,
    attempt: Attempt,
    attempts: u32,
    answered_at_ms: i64,
    last: bool,
}

pub struct Revoker {
    config: RevokerConfig,
    adapters: HashMap<String, Arc<Adapter>>,
    ledger: Ledger,
    handles: HandleStore,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
    webhooks: Webhooks,
    metrics: Arc<RevokerMetrics>,
    config_hash: String,
    results: (mpsc::Sender<AttemptResult>, mpsc::Receiver<AttemptResult>),
    /// The task calling the issuer (or reporting at once) for each
    /// revocation this process owns and has in flight.
    tasks: HashMap<(String, String), tokio::task::AbortHandle>,
    seed: u64,
    /// Revocations not done yet (calling the issuer, or waiting for a
    /// secret), with the time each was decided: checked every few seconds
    /// for the loud alerts.
    open: HashMap<(String, String), Open>,
    /// Ledger keys that already raised their `revocation_failing` or
    /// `revocation_awaiting_secret` alert.
    alerted: std::collections::HashSet<String>,
    /// Deliveries a previous run left in the outbox, sent at start.
    recovered: Vec<OutboxEntry>,
    /// Whether each delivery queued since the batch began is in the outbox.
    stored: Vec<oneshot::Receiver<bool>>,
    /// Alert messages sent in the current minute, and those over budget.
    alert_budget: AlertBudget,
}

/// At most `per_minute` alert messages a minute; the rest are counted and
/// summed up in one system alert when the minute ends.
#[derive(Debug, Default)]
struct AlertBudget {
    window_start_ms: i64,
    sent: u32,
    suppressed: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The HTTP client every adapter shares: keep-alive pools, TCP_NODELAY, a
/// timeout per request.
pub fn http_client(request_timeout: Duration) -> Result<reqwest::Client, BuildError> {
    client_builder(request_timeout)
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))
}

/// The client webhooks use: like [`http_client`], but unless a webhook is
/// allowed onto this machine, names that resolve only to loopback are
/// refused when they are resolved (a literal address is checked with the
/// config).
pub fn webhook_client(
    request_timeout: Duration,
    allow_loopback: bool,
) -> Result<reqwest::Client, BuildError> {
    let mut builder = client_builder(request_timeout);
    if !allow_loopback {
        builder = builder.dns_resolver(Arc::new(NotLoopback));
    }
    builder.build().map_err(|e| BuildError::Http(e.to_string()))
}

fn client_builder(request_timeout: Duration) -> reqwest::ClientBuilder {
    // rustls needs a process-wide crypto provider; a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(32)
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout)
        .user_agent(concat!("tokenwatch/", env!("CARGO_PKG_VERSION")))
        // A redirect would send credentials, and a decision, wherever an
        // issuer or a receiver points: a 3xx is a failure instead.
        .redirect(reqwest::redirect::Policy::none())
}

/// A resolver that drops loopback and unspecified addresses, and fails a
/// name that has no other.
struct NotLoopback;

fn is_local_ip(ip: std::net::IpAddr) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

impl reqwest::dns::Resolve for NotLoopback {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                found.into_iter().filter(|a| !is_local_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to this machine, which webhooks may not reach (allow_loopback)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Revoker {
    /// Validates the config, builds adapters and webhooks, and rebuilds the
    /// ledger from its topic (`kafka` = None keeps it in memory). Blocks
    /// while the ledger is read; run it on a blocking thread of a tokio
    /// runtime.
    pub fn build(
        config: &RevokerConfig,
        kafka: Option<&ClientConfig>,
        config_hash: String,
    ) -> Result<Self, BuildError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(BuildError::Config(problems));
        }
        let client = http_client(config.request_timeout)?;
        let mut adapters = HashMap::new();
        for (name, issuer) in &config.issuers {
            adapters.insert(
                name.clone(),
                Arc::new(Adapter::build(name, issuer, client.clone())?),
            );
        }
        let (ledger, dead_letter, outbox, recovered) = match kafka {
            Some(k) => {
                let producer: rdkafka::producer::FutureProducer =
                    k.create().map_err(BuildError::Kafka)?;
                let recovered = if config.webhooks.is_empty() {
                    Vec::new()
                } else {
                    Outbox::pending(k, &config.webhook_outbox_topic)?
                };
                (
                    Ledger::rebuild(k, &config.ledger_topic)?,
                    Some((producer.clone(), config.webhook_dead_letter_topic.clone())),
                    Some(Outbox::new(producer, config.webhook_outbox_topic.clone())),
                    recovered,
                )
            }
            None => (Ledger::in_memory(), None, None, Vec::new()),
        };
        let allow_loopback = config.webhooks.iter().any(|w| w.allow_loopback);
        let webhooks = Webhooks::build(
            &config.webhooks,
            webhook_client(config.request_timeout, allow_loopback)?,
            dead_letter,
            outbox,
            config.webhook_max_in_flight,
        )?;
        for adapter in adapters.values() {
            if let Some(url) = adapter.warm_url() {
                let client = client.clone();
                // Open a keep-alive connection now, so the first revocation
                // does not pay for the TCP (and TLS) handshake.
                tokio::spawn(async move {
                    let _ = client.head(url).send().await;
                });
            }
        }
        info!(
            issuers = adapters.len(),
            ledger_entries = ledger.len(),
            webhooks = config.webhooks.len(),
            "Revoker ready."
        );
        Ok(Revoker {
            config: config.clone(),
            adapters,
            ledger,
            handles: HandleStore::new(config.secret_handles.ttl, config.secret_handles.max_entries),
            breakers: Arc::default(),
            webhooks,
            metrics: Arc::new(RevokerMetrics::for_issuers(config.issuers.keys())),
            config_hash,
            results: mpsc::channel(1024),
            tasks: HashMap::new(),
            seed: 0x5DEE_CE66_D1CE_4E5B,
            open: HashMap::new(),
            alerted: Default::default(),
            recovered,
            stored: Vec::new(),
            alert_budget: AlertBudget::default(),
        })
    }

    /// What the ledger wrote, when it is in memory (tests).
    pub fn ledger_log(&self) -> Arc<Mutex<Vec<Record>>> {
        self.ledger.log()
    }

    pub fn metrics(&self) -> Arc<RevokerMetrics> {
        self.metrics.clone()
    }

    pub fn webhook_metrics(&self) -> Arc<crate::webhook::WebhookMetrics> {
        self.webhooks.metrics.clone()
    }

    /// Replaces the webhook clock (seconds since the epoch), for tests.
    pub fn with_webhook_clock(mut self, clock: fn() -> i64) -> Self {
        self.webhooks = self.webhooks.with_clock(clock);
        self
    }

    /// Serves commands until the channel closes, then waits (up to the
    /// retry cap) for revocations in flight to report.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let span = info_span!("revoker");
        async move {
            // Alive before any claim, so no other process takes this one's
            // revocations for orphans.
            if let Err(e) = self.ledger.heartbeat(false).await {
                warn!(error = %e, "Cannot write this instance's heartbeat to the ledger.");
            }
            // The heartbeat also paces the overdue checks; the first tick is
            // immediate, so orphaned revocations are taken over at start.
            let recovered = std::mem::take(&mut self.recovered);
            if !recovered.is_empty() {
                info!(deliveries = recovered.len(), "Resending webhook deliveries left in the outbox.");
                self.webhooks.resend(recovered);
            }
            let mut overdue = tokio::time::interval(
                (self.config.liveness_timeout / 3).max(Duration::from_millis(100)),
            );
            overdue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    cmd = commands.recv() => match cmd {
                        Some(cmd) => self.handle(cmd).await,
                        None => break,
                    },
                    Some(result) = self.results.1.recv() => self.on_result(result).await,
                    Some(followed) = self.ledger.follow() => {
                        self.ledger.apply_followed(followed);
                        self.on_ledger_changes();
                    }
                    _ = overdue.tick() => {
                        self.keep_alive(now_ms()).await;
                        self.alert_overdue(now_ms());
                        self.end_alert_minute(now_ms());
                        // Deliveries queued outside a batch need no waiting.
                        self.stored.clear();
                    }
                }
            }
            let deadline = tokio::time::Instant::now() + self.config.retry.max_delay;
            while !self.tasks.is_empty() {
                match tokio::time::timeout_at(deadline, self.results.1.recv()).await {
                    Ok(Some(result)) => self.on_result(result).await,
                    _ => break,
                }
            }
            // Flush the webhooks: deliveries in their retry schedule get a
            // bounded time; what is left is logged (and, on restart, a
            // replayed decision reuses the same webhook id).
            let left = self.webhooks.drain(Duration::from_secs(10)).await;
            if left > 0 {
                warn!(left, "Webhook deliveries still pending at shutdown.");
            }
            // Gone: another instance may take over what is left at once.
            if let Err(e) = self.ledger.heartbeat(true).await {
                warn!(error = %e, "Cannot tell the ledger this instance has stopped; others take over its revocations after liveness_timeout.");
            }
        }
        .instrument(span)
        .await
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Secrets(secrets) => {
                let now = Instant::now();
                for (issuer, token_id, secret) in secrets {
                    match self.handles.put(&issuer, &token_id, secret, now) {
                        Put::Held => self.resume_awaiting(&issuer, &token_id).await,
                        Put::Conflict => {
                            self.metrics.count(&issuer, |c| c.secret_conflicts += 1);
                            warn!(%issuer, %token_id, "Two different secrets were seen for one token id; neither is held or sent to the issuer until the TTL passes.");
                        }
                    }
                }
            }
            Command::Decisions {
                decisions,
                alerts,
                handed,
            } => {
                self.stored.clear();
                let mut ok = true;
                for d in &decisions {
                    ok &= self.on_decision(d).await;
                }
                for a in &alerts {
                    self.send_system(a);
                }
                // Acknowledged once its alerts are in the outbox too.
                for stored in std::mem::take(&mut self.stored) {
                    ok &= stored.await.unwrap_or(false);
                }
                if ok {
                    let _ = handed.send(());
                } else {
                    error!(
                        "Decisions or their alerts could not be made durable; the batch stays unacknowledged."
                    );
                }
            }
            Command::Manual {
                issuer,
                token_id,
                principal,
                reason,
                reply,
            } => {
                let _ = reply.send(self.manual(issuer, token_id, principal, reason).await);
            }
            Command::Denylist(reply) => {
                let _ = reply.send(self.ledger.denylist());
            }
            Command::Revocation {
                issuer,
                token_id,
                reply,
            } => {
                let _ = reply.send(self.ledger.record(&issuer, &token_id));
            }
        }
    }

    /// Records and starts a revoke, and sends the decision's alert.
    /// Returns false if the ledger could not be written.
    async fn on_decision(&mut self, d: &Decision) -> bool {
        let decided_at = now_ms();
        let mut revocation = None;
        if d.action == Action::Revoke {
            let record = Record {
                issuer: d.issuer.clone(),
                token_id: d.token_id.clone(),
                principal: d.principal.clone(),
                state: State::Pending,
                decision_id: d.id.clone(),
                reason: d
                    .findings
                    .iter()
                    .map(|f| f.summary.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                attempts: 0,
                accepted: false,
                event_ts_ms: d.event_ts_ms,
                kafka_ts_ms: d.kafka_ts_ms,
                decided_at_ms: decided_at,
                answered_at_ms: None,
                last_error: None,
                manual: false,
                owner: String::new(),
            };
            match self.begin(record).await {
                Ok(r) => revocation = Some(r),
                Err(()) => return false,
            }
        }
        if d.action == Action::Alert && !self.alert_within_budget(decided_at) {
            return true;
        }
        let timings = Timings::new(d.event_ts_ms, d.kafka_ts_ms, decided_at, None, false);
        let data = DecisionAlert {
            decision: d,
            revocation: revocation.as_ref().map(Into::into),
            config_hash: &self.config_hash,
            timings,
        };
        let stored = self.send_webhook(d.id.clone(), "tokenwatch.decision", d.action, &data);
        self.stored.extend(stored);
        true
    }

    /// Writes the pending record and starts the issuer calls, unless the
    /// token is already in the ledger. Returns the token's ledger record.
    async fn begin(&mut self, record: Record) -> Result<Record, ()> {
        let begun = self.begin_retried(&record).await;
        match begun {
            Ok(Begin::New) => {
                self.spawn_attempts(record.clone());
                Ok(record)
            }
            Ok(Begin::Known(state)) => {
                self.metrics.count(&record.issuer, |c| c.duplicates += 1);
                info!(issuer = %record.issuer, token_id = %record.token_id, ?state, "Token already in the revocation ledger; not calling the issuer again.");
                Ok(self
                    .ledger
                    .get(&record.issuer, &record.token_id)
                    .cloned()
                    .unwrap_or(record))
            }
            Err(e) => {
                error!(error = %e, issuer = %record.issuer, token_id = %record.token_id, retried_for_s = self.config.ledger_retry_for.as_secs(), "Cannot write the revocation ledger; the batch stays unacknowledged.");
                Err(())
            }
        }
    }

    /// [`Ledger::begin`], retried with backoff for up to
    /// `ledger_retry_for`. Meanwhile this task takes no new decisions, so
    /// the pipeline upstream waits (backpressure) instead of reading on
    /// past a batch that cannot be acknowledged. The issuer is never called
    /// before the write succeeds.
    async fn begin_retried(&mut self, record: &Record) -> Result<Begin, LedgerError> {
        let deadline = tokio::time::Instant::now() + self.config.ledger_retry_for;
        let mut backoff = Backoff::new(
            crate::config::RetryConfig {
                max_attempts: None,
                alert_after: Duration::MAX,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
            },
            self.seed | 1,
        );
        let mut failures = 0;
        loop {
            let begun = self.ledger.begin(record.clone()).await;
            self.on_ledger_changes();
            match begun {
                Err(e) if tokio::time::Instant::now() < deadline => {
                    failures += 1;
                    self.metrics
                        .ledger_write_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(error = %e, failures, issuer = %record.issuer, token_id = %record.token_id, "Cannot write the revocation ledger; retrying, and taking no new decisions meanwhile.");
                    tokio::time::sleep(backoff.delay(failures)).await;
                }
                Err(e) => {
                    self.metrics
                        .ledger_write_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }

    async fn manual(
        &mut self,
        issuer: String,
        token_id: String,
        principal: Option<String>,
        reason: String,
    ) -> Result<Record, String> {
        if !self.adapters.contains_key(&issuer) {
            return Err(format!("no issuer named {issuer:?} is configured"));
        }
        let now = now_ms();
        let id = Decision::make_id(&["manual", &issuer, &token_id, &now.to_string()]);
        let record = Record {
            issuer,
            token_id,
            principal,
            state: State::Pending,
            decision_id: id,
            reason,
            attempts: 0,
            accepted: false,
            event_ts_ms: now,
            kafka_ts_ms: None,
            decided_at_ms: now,
            answered_at_ms: None,
            last_error: None,
            manual: true,
            owner: String::new(),
        };
        self.begin(record)
            .await
            .map_err(|()| "cannot write the revocation ledger".to_string())
    }

    fn spawn_attempts(&mut self, record: Record) {
        self.open.insert(
            (record.issuer.clone(), record.token_id.clone()),
            Open {
                decided_at_ms: record.decided_at_ms,
                awaiting_secret: false,
            },
        );
        let key = (record.issuer.clone(), record.token_id.clone());
        let Some(adapter) = self.adapters.get(&record.issuer).cloned() else {
            let tx = self.results.0.clone();
            let result = AttemptResult {
                issuer: record.issuer.clone(),
                token_id: record.token_id.clone(),
                attempt: Attempt::Failed(format!(
                    "no issuer named {:?} is configured",
                    record.issuer
                )),
                attempts: record.attempts,
                answered_at_ms: now_ms(),
                last: true,
            };
            let task = tokio::spawn(async move {
                let _ = tx.send(result).await;
            });
            self.tasks.insert(key, task.abort_handle());
            return;
        };
        let request = RevokeRequest {
            issuer: record.issuer.clone(),
            token_id: record.token_id.clone(),
            principal: record.principal.clone(),
            decision_id: record.decision_id.clone(),
            reason: record.reason.clone(),
            secret: self
                .handles
                .get(&record.issuer, &record.token_id, Instant::now()),
        };
        if request.secret.is_none() && adapter.needs_secret() {
            // No call can work yet: report at once, and wait for the secret.
            let result = AttemptResult {
                issuer: record.issuer.clone(),
                token_id: record.token_id.clone(),
                attempt: Attempt::NeedsSecret(format!(
                    "{} revokes by the raw secret and none is held for this token",
                    record.issuer
                )),
                attempts: record.attempts,
                answered_at_ms: now_ms(),
                last: true,
            };
            let tx = self.results.0.clone();
            let task = tokio::spawn(async move {
                let _ = tx.send(result).await;
            });
            self.tasks.insert(key, task.abort_handle());
            return;
        }
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let backoff = Backoff::new(self.config.retry.clone(), self.seed);
        let breakers = self.breakers.clone();
        let breaker_config = self.config.breaker.clone();
        let metrics = self.metrics.clone();
        let results = self.results.0.clone();
        let done = record.attempts;
        let task = tokio::spawn(attempts(
            adapter,
            request,
            backoff,
            breakers,
            breaker_config,
            metrics,
            results,
            done,
        ));
        if let Some(old) = self.tasks.insert(key, task.abort_handle()) {
            old.abort();
        }
    }

    /// Acts on ownership changes the ledger saw: a revocation another
    /// process took over is no longer called from here.
    fn on_ledger_changes(&mut self) {
        for change in self.ledger.take_changes() {
            let Change::Owned { key, owner } = change else {
                continue;
            };
            if owner == self.ledger.instance() {
                continue;
            }
            if let Some(task) = self.tasks.remove(&key) {
                task.abort();
                self.open.remove(&key);
                info!(issuer = %key.0, token_id = %key.1, %owner, "Another instance took this revocation over; not calling the issuer from here.");
            }
        }
    }

    /// Claims a revocation another owner left unfinished and starts it if
    /// the claim wins.
    async fn adopt(&mut self, record: Record, why: &str) {
        let adopted = self.ledger.take_over(record.clone()).await;
        self.on_ledger_changes();
        match adopted {
            Ok(true) => {
                info!(issuer = %record.issuer, token_id = %record.token_id, previous_owner = %record.owner, "{why}");
                let current = self
                    .ledger
                    .get(&record.issuer, &record.token_id)
                    .cloned()
                    .unwrap_or(record);
                self.spawn_attempts(current);
            }
            Ok(false) => {
                info!(issuer = %record.issuer, token_id = %record.token_id, "Another instance took this unfinished revocation first.")
            }
            Err(e) => {
                error!(error = %e, issuer = %record.issuer, token_id = %record.token_id, "Cannot claim an unfinished revocation; it is tried again later.")
            }
        }
    }

    /// Says this process is alive, and takes over the unfinished
    /// revocations of owners that are not.
    async fn keep_alive(&mut self, now_ms: i64) {
        if let Err(e) = self.ledger.heartbeat(false).await {
            warn!(error = %e, "Cannot write this instance's heartbeat to the ledger.");
        }
        self.on_ledger_changes();
        let timeout = self.config.liveness_timeout.as_millis() as i64;
        for record in self.ledger.orphaned(now_ms, timeout) {
            self.adopt(
                record,
                "Taking over an unfinished revocation whose owner is gone.",
            )
            .await;
        }
    }

    async fn on_result(&mut self, r: AttemptResult) {
        let key = (r.issuer.clone(), r.token_id.clone());
        // A task aborted after a takeover may still have reported.
        if !self.tasks.contains_key(&key) {
            return;
        }
        let Some(mut record) = self.ledger.get(&r.issuer, &r.token_id).cloned() else {
            return;
        };
        record.attempts = r.attempts;
        let final_state = match (&r.attempt, r.last) {
            (Attempt::Revoked, _) => Some(State::Revoked),
            (Attempt::Accepted(_), _) => {
                record.accepted = true;
                Some(State::Pending)
            }
            (Attempt::NeedsSecret(e), _) => {
                record.last_error = Some(e.clone());
                Some(State::AwaitingSecret)
            }
            (Attempt::Failed(e), _) | (Attempt::Retry { reason: e, .. }, true) => {
                record.last_error = Some(e.clone());
                Some(State::Failed)
            }
            (Attempt::Retry { reason, .. }, false) => {
                record.last_error = Some(reason.clone());
                None
            }
        };
        if let Some(state) = final_state {
            self.tasks.remove(&key);
            record.state = state;
            record.answered_at_ms = Some(r.answered_at_ms);
            RevokerMetrics::record_latency(
                &self.metrics.decision_to_answer_us,
                (r.answered_at_ms - record.decided_at_ms) * 1000,
            );
            if state == State::Revoked {
                let start = record.kafka_ts_ms.unwrap_or(record.event_ts_ms);
                RevokerMetrics::record_latency(
                    &self.metrics.event_to_revoked_us,
                    (r.answered_at_ms - start) * 1000,
                );
            }
            self.metrics.count(&record.issuer, |c| match state {
                State::Revoked => c.revoked += 1,
                State::Pending => c.accepted += 1,
                State::AwaitingSecret => c.awaiting_secret += 1,
                State::Failed => c.failed += 1,
            });
            let key = (record.issuer.clone(), record.token_id.clone());
            if state == State::AwaitingSecret {
                self.open.insert(
                    key,
                    Open {
                        decided_at_ms: record.decided_at_ms,
                        awaiting_secret: true,
                    },
                );
            } else {
                self.open.remove(&key);
            }
        }
        match self.ledger.update(record.clone()).await {
            Ok(true) => {}
            Ok(false) => {
                // Taken over by another instance meanwhile: its owner reports.
                if let Some(task) = self.tasks.remove(&key) {
                    task.abort();
                }
                self.open.remove(&key);
                return;
            }
            Err(e) => {
                error!(error = %e, issuer = %record.issuer, token_id = %record.token_id, "Cannot write a revocation's new state to the ledger.");
            }
        }
        self.on_ledger_changes();
        let Some(state) = final_state else { return };
        match state {
            State::Revoked => {
                info!(issuer = %record.issuer, token_id = %record.token_id, attempts = record.attempts, "Token revoked.")
            }
            State::Pending => {
                info!(issuer = %record.issuer, token_id = %record.token_id, "Issuer accepted the revocation; confirmation pending.")
            }
            State::AwaitingSecret => {
                warn!(issuer = %record.issuer, token_id = %record.token_id, "Revocation waits for the token's raw secret: the issuer revokes by it and none is held. It completes when an event brings it; the token stays on the denylist.");
            }
            State::Failed => {
                error!(issuer = %record.issuer, token_id = %record.token_id, error = ?record.last_error, "Revocation failed.");
                self.send_system(&SystemAlert {
                    kind: "revocation_failed",
                    message: format!(
                        "Revoking {} at {} failed after {} attempt(s): {}. The token is still denied at gateways; revoke it by hand.",
                        record.token_id,
                        record.issuer,
                        record.attempts,
                        record.last_error.as_deref().unwrap_or("unknown error")
                    ),
                    issuer: Some(record.issuer.clone()),
                    ts_ms: r.answered_at_ms,
                });
            }
        }
        let timings = Timings::new(
            record.event_ts_ms,
            record.kafka_ts_ms,
            record.decided_at_ms,
            record.answered_at_ms,
            state == State::Revoked,
        );
        let data = RevocationAlert {
            decision_id: &record.decision_id,
            issuer: &record.issuer,
            token_id: &record.token_id,
            reason: &record.reason,
            revocation: (&record).into(),
            config_hash: &self.config_hash,
            timings,
        };
        // One webhook id per state reached, so a receiver that drops
        // repeated ids still sees the revocation complete after a wait.
        let id = match state {
            State::AwaitingSecret => format!("{}.revocation.awaiting_secret", record.decision_id),
            _ => format!("{}.revocation", record.decision_id),
        };
        let stored = self.send_webhook(id, "tokenwatch.revocation", Action::Revoke, &data);
        self.stored.extend(stored);
    }

    /// Starts a revocation that was waiting for `issuer/token_id`'s secret,
    /// now that an event brought it.
    async fn resume_awaiting(&mut self, issuer: &str, token_id: &str) {
        let Some(mut record) = self
            .ledger
            .get(issuer, token_id)
            .filter(|r| r.state == State::AwaitingSecret)
            .cloned()
        else {
            return;
        };
        record.state = State::Pending;
        record.last_error = None;
        if !self.ledger.is_mine(issuer, token_id) {
            // `tokenwatch revoke` wrote it and has exited: adopt it. Another
            // instance's own waits are left to that instance (it restarts
            // into them, or sees the same events).
            if record.manual {
                self.adopt(
                    record,
                    "The raw secret arrived; adopting a manual revocation that waited for it.",
                )
                .await;
            }
            return;
        }
        match self.ledger.update(record.clone()).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                // The record stays awaiting in the topic; the call still goes
                // ahead, and its answer is written over it.
                error!(error = %e, issuer, token_id, "Cannot write a resumed revocation to the ledger.");
            }
        }
        info!(
            issuer,
            token_id, "The raw secret arrived; resuming the revocation that waited for it."
        );
        self.spawn_attempts(record);
    }

    /// The loud alerts, once per revocation: still not done
    /// `retry.alert_after` after its decision (`revocation_failing`), or
    /// waiting for its secret longer than `secret_handles.await_alert_after`
    /// (`revocation_awaiting_secret`). Retries and waiting go on.
    fn alert_overdue(&mut self, now_ms: i64) {
        let failing_after = self.config.retry.alert_after.as_millis() as i64;
        let awaiting_after = self.config.secret_handles.await_alert_after.as_millis() as i64;
        let overdue: Vec<((String, String), Open)> = self
            .open
            .iter()
            .filter(|(_, o)| {
                let limit = if o.awaiting_secret {
                    awaiting_after
                } else {
                    failing_after
                };
                now_ms - o.decided_at_ms >= limit
            })
            .map(|(k, o)| (k.clone(), *o))
            .collect();
        for ((issuer, token_id), open) in overdue {
            let Some(record) = self.ledger.get(&issuer, &token_id).cloned() else {
                continue;
            };
            if !self.alerted.insert(record.key()) {
                continue;
            }
            let waited = (now_ms - open.decided_at_ms) / 1000;
            let (kind, message) = if open.awaiting_secret {
                error!(%issuer, %token_id, waited_s = waited, "Revocation has waited too long for the token's raw secret.");
                (
                    "revocation_awaiting_secret",
                    format!(
                        "Revoking {token_id} at {issuer} has waited {waited} s for the token's raw secret, which the issuer revokes by and no event has brought since. The token is denied at gateways; revoke it at the issuer by hand."
                    ),
                )
            } else {
                self.metrics.count(&issuer, |c| c.failing += 1);
                error!(%issuer, %token_id, attempts = record.attempts, error = ?record.last_error, "Revocation is still not done; retries go on.");
                (
                    "revocation_failing",
                    format!(
                        "Revoking {token_id} at {issuer} is not done {waited} s after the decision ({} attempts, last: {}). Retries go on every {} s at most until the issuer answers; the token is denied at gateways meanwhile.",
                        record.attempts,
                        record.last_error.as_deref().unwrap_or("none yet"),
                        self.config.retry.max_delay.as_secs()
                    ),
                )
            };
            self.send_system(&SystemAlert {
                kind,
                message,
                issuer: Some(issuer),
                ts_ms: now_ms,
            });
        }
    }

    /// Takes one alert message from the budget; false if the minute's is
    /// spent (the decision is still logged and in `/v1/decisions`).
    fn alert_within_budget(&mut self, now_ms: i64) -> bool {
        self.end_alert_minute(now_ms);
        if self.alert_budget.sent >= self.config.alert_budget_per_minute {
            self.alert_budget.suppressed += 1;
            self.metrics
                .alerts_over_budget
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        self.alert_budget.sent += 1;
        true
    }

    /// Closes the budget's minute once it has passed, with one system
    /// alert for what it held back.
    fn end_alert_minute(&mut self, now_ms: i64) {
        if now_ms - self.alert_budget.window_start_ms < 60_000 {
            return;
        }
        let suppressed = std::mem::take(&mut self.alert_budget.suppressed);
        self.alert_budget = AlertBudget {
            window_start_ms: now_ms,
            ..Default::default()
        };
        if suppressed > 0 {
            warn!(
                suppressed,
                "Alert budget exceeded: alert messages were held back."
            );
            self.send_system(&SystemAlert {
                kind: "alert_budget_exceeded",
                message: format!(
                    "{suppressed} alert message(s) over the budget of {} a minute were not sent; they are in the log and GET /v1/decisions. Revocations and system alerts are always sent.",
                    self.config.alert_budget_per_minute
                ),
                issuer: None,
                ts_ms: now_ms,
            });
        }
    }

    fn send_system(&mut self, alert: &SystemAlert) {
        let id = Decision::make_id(&[
            alert.kind,
            alert.issuer.as_deref().unwrap_or(""),
            &alert.ts_ms.to_string(),
        ]);
        let data = SystemData {
            alert,
            config_hash: &self.config_hash,
        };
        let stored = self.send_webhook(id, "tokenwatch.system", Action::Revoke, &data);
        self.stored.extend(stored);
    }

    /// Queues a message; the receivers say when it is in the outbox.
    fn send_webhook<T: serde::Serialize>(
        &self,
        id: String,
        kind: &'static str,
        action: Action,
        data: &T,
    ) -> Vec<oneshot::Receiver<bool>> {
        if self.webhooks.is_empty() {
            return Vec::new();
        }
        let envelope = Envelope {
            kind,
            timestamp: schemas::time::format_rfc3339_ms(now_ms()),
            data,
        };
        match serde_json::to_vec(&envelope) {
            Ok(body) => self.webhooks.send(Outgoing {
                id,
                kind,
                action,
                body: Arc::new(body),
            }),
            Err(e) => {
                warn!(error = %e, "Cannot serialize an alert.");
                Vec::new()
            }
        }
    }
}

/// Calls the issuer until it answers for good or attempts run out,
/// reporting every attempt.
#[allow(clippy::too_many_arguments)]
async fn attempts(
    adapter: Arc<Adapter>,
    request: RevokeRequest,
    mut backoff: Backoff,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
    breaker_config: crate::config::BreakerConfig,
    metrics: Arc<RevokerMetrics>,
    results: mpsc::Sender<AttemptResult>,
    mut done: u32,
) {
    let issuer = request.issuer.clone();
    loop {
        // The service that owns the ledger is gone (its task was dropped):
        // calling the issuer now would go unrecorded. The next start
        // resumes this revocation from the ledger instead.
        if results.is_closed() {
            return;
        }
        loop {
            let permit = breakers
                .lock()
                .map(|mut b| {
                    b.entry(issuer.clone())
                        .or_insert_with(|| Breaker::new(breaker_config.clone()))
                        .permit(Instant::now())
                })
                .unwrap_or(Ok(()));
            match permit {
                Ok(()) => break,
                Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(10))).await,
            }
        }
        done += 1;
        metrics.count(&issuer, |c| {
            c.attempts += 1;
            if done > 1 {
                c.retries += 1;
            }
        });
        let attempt = adapter.revoke(&request).await;
        let answered_at_ms = now_ms();
        if let Ok(mut b) = breakers.lock() {
            let breaker = b
                .entry(issuer.clone())
                .or_insert_with(|| Breaker::new(breaker_config.clone()));
            let opened_before = breaker.opened;
            match attempt {
                Attempt::Retry { .. } => breaker.failure(Instant::now()),
                _ => breaker.success(),
            }
            if breaker.opened > opened_before {
                metrics
                    .breaker_opened
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(%issuer, "Circuit breaker opened: the issuer keeps failing; calls pause for the cooldown.");
            }
        }
        let retry_after = match &attempt {
            Attempt::Retry { after, .. } => Some(*after),
            _ => None,
        };
        // Retries go on at the capped interval until the issuer answers for
        // good, unless the config bounds the attempts.
        let last = retry_after.is_none() || backoff.max_attempts().is_some_and(|max| done >= max);
        let result = AttemptResult {
            issuer: issuer.clone(),
            token_id: request.token_id.clone(),
            attempt,
            attempts: done,
            answered_at_ms,
            last,
        };
        if results.send(result).await.is_err() || last {
            return;
        }
        let delay = backoff.delay(done);
        tokio::time::sleep(match retry_after.flatten() {
            Some(after) => after.max(delay),
            None => delay,
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
