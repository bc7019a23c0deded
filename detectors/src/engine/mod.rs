//! The detection stage: enriches each event, runs the detectors with the
//! token's state, and hands the findings to the [`Decider`].

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, BooleanArray};
use schemas::{Event, Origin, TokenMetadata};

use crate::binding::BindingDetector;
use crate::changelog::Dirty;
use crate::config::DetectorsConfig;
use crate::decision::{Decider, DecisionConfig, DecisionOutput, DecisionStats};
use crate::detector::{Detector, Observation};
use crate::expiry::ExpiryDetector;
use crate::geo::GeoDetector;
use crate::geoip::{Anonymity, GeoIp, GeoIpError};
use crate::metadata::MetadataStore;
use crate::networks::Networks;
use crate::novelty::NoveltyDetector;
use crate::policy::{AnonymousDb, PolicySet, RuleConfig, RuleStats, policy_batch};
use crate::scope::ScopeDetector;
use crate::state::principals::Principals;
use crate::state::{StoreStats, TokenKey, TokenState, TokenStore};
use crate::volume::VolumeDetector;

/// Errors building the engine.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid config:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    #[error("token metadata:\n  - {}", .0.join("\n  - "))]
    Metadata(Vec<String>),
    #[error("policy rules:\n  - {}", .0.join("\n  - "))]
    Policy(Vec<String>),
}

/// Counters of the stage, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub events: u64,
    /// Events older than the allowed lateness (stateless checks only).
    pub late_events: u64,
    /// Events ahead of their own Kafka timestamp by more than the allowed
    /// lateness (stateless checks only; they do not move the token's clock).
    pub future_events: u64,
    pub store: StoreStats,
    /// The principals' store.
    pub principals: StoreStats,
    /// New tokens started from their principal's learned context.
    pub inherited_tokens: u64,
    /// Events read again after a failover that their token's state had
    /// already applied (not counted twice).
    pub redelivered_events: u64,
    pub decision: DecisionStats,
    pub geoip_lookups: u64,
    pub geoip_cache_hits: u64,
    pub geoip_decode_errors: u64,
    pub policy: PolicyStats,
    /// Time spent per step, summed over events (CPU time, not latency).
    pub nanos: StageNanos,
}

/// Nanoseconds spent in each step of processing, over all events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageNanos {
    /// GeoIP lookups (through the cache).
    pub enrich: u64,
    /// State lookups, the detectors, principals and housekeeping.
    pub detect: u64,
    /// Policy rules: building their Arrow columns and evaluating them.
    pub rules: u64,
    /// Combining findings into decisions.
    pub decide: u64,
}

/// Counters of the policy rules, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyStats {
    /// Rules in force.
    pub rules: usize,
    /// Physical plans of the rule sets put in force since start: one per
    /// rule per (re)load, never per batch.
    pub plans: u64,
    /// Batches the rule set was evaluated on.
    pub evaluations: u64,
    pub reloads: u64,
    /// Reloads refused because the new rule set did not compile.
    pub reload_failures: u64,
    pub per_rule: Vec<RuleStats>,
}

impl EngineStats {
    /// Adds another shard's counters. The rule set is the same in every
    /// shard: its size, plans and reloads are the first shard's; matches,
    /// errors and evaluations add up.
    pub fn add(&mut self, other: &EngineStats) {
        self.events += other.events;
        self.late_events += other.late_events;
        self.future_events += other.future_events;
        for (mine, theirs) in [
            (&mut self.store, &other.store),
            (&mut self.principals, &other.principals),
        ] {
            mine.tokens += theirs.tokens;
            mine.evicted += theirs.evicted;
            mine.expired += theirs.expired;
        }
        self.inherited_tokens += other.inherited_tokens;
        self.redelivered_events += other.redelivered_events;
        let (d, o) = (&mut self.decision, &other.decision);
        for (mine, theirs) in d.findings.iter_mut().zip(o.findings) {
            *mine += theirs;
        }
        for (mine, theirs) in d.decisions.iter_mut().zip(o.decisions) {
            *mine += theirs;
        }
        d.shadow_findings += o.shadow_findings;
        d.allowlisted += o.allowlisted;
        d.suppressed_repeats += o.suppressed_repeats;
        d.over_budget += o.over_budget;
        d.unconfigured_issuer += o.unconfigured_issuer;
        d.low_confidence_caps += o.low_confidence_caps;
        d.uncorroborated_caps += o.uncorroborated_caps;
        self.geoip_lookups += other.geoip_lookups;
        self.geoip_cache_hits += other.geoip_cache_hits;
        self.geoip_decode_errors += other.geoip_decode_errors;
        self.nanos.enrich += other.nanos.enrich;
        self.nanos.detect += other.nanos.detect;
        self.nanos.rules += other.nanos.rules;
        self.nanos.decide += other.nanos.decide;
        self.policy.evaluations += other.policy.evaluations;
        for (mine, theirs) in self.policy.per_rule.iter_mut().zip(&other.policy.per_rule) {
            mine.matches += theirs.matches;
            mine.errors += theirs.errors;
        }
    }
}

pub struct Engine {
    /// What [`into_shards`](Self::into_shards) builds the shards from.
    config: DetectorsConfig,
    geoip: Option<GeoIp>,
    store: TokenStore,
    /// What each principal's tokens have learnt, for its new tokens.
    principals: Principals,
    /// From the metadata file; replaced whole on reload, shared by shards.
    metadata: Arc<MetadataStore>,
    /// From the live metadata topic; consulted first.
    live_metadata: MetadataStore,
    detectors: Vec<Box<dyn Detector>>,
    policy: PolicySet,
    /// The Anonymous-IP database `is_anonymous_ip` reads; follows reloads.
    anonymous: AnonymousDb,
    policy_stats: PolicyStats,
    decider: Decider,
    lateness_s: u32,
    purge_interval_ms: i64,
    watermark_ms: i64,
    last_purge_ms: i64,
    events: u64,
    late_events: u64,
    /// Events ahead of their Kafka timestamp by more than the lateness.
    future_events: u64,
    /// New tokens started from their principal's context.
    inherited: u64,
    /// Tokens changed since their last checkpoint, when the state
    /// changelog is on ([`with_changelog`](Self::with_changelog)).
    dirty: Option<Dirty>,
    /// Events already applied to their token's state, read again.
    redelivered: u64,
    /// The last topic seen and its tag.
    topic_tag: Option<(Arc<str>, u16)>,
    nanos: StageNanos,
}

impl Engine {
    /// Validates both sections, opens GeoIP and loads the metadata file.
    pub fn build(config: &DetectorsConfig, decision: &DecisionConfig) -> Result<Self, BuildError> {
        let mut problems = config.validate();
        problems.extend(decision.validate());
        if !problems.is_empty() {
            return Err(BuildError::Config(problems));
        }
        let geoip = config.geoip.as_ref().map(GeoIp::open).transpose()?;
        let metadata = match &config.metadata_file {
            Some(path) => MetadataStore::load(path).map_err(BuildError::Metadata)?,
            None => MetadataStore::default(),
        };
        let rules = config.policy.all_rules().map_err(BuildError::Policy)?;
        let mut engine = Self::with_parts(config, decision, geoip, metadata);
        let policy = PolicySet::compile(&rules, &engine.anonymous).map_err(BuildError::Policy)?;
        engine.install_policy(policy);
        Ok(engine)
    }

    /// Builds from an already open GeoIP (the demo's embedded databases)
    /// and metadata, skipping file checks, with no policy rules (see
    /// [`reload_policy`](Self::reload_policy)).
    pub fn with_parts(
        config: &DetectorsConfig,
        decision: &DecisionConfig,
        geoip: Option<GeoIp>,
        metadata: MetadataStore,
    ) -> Self {
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        if config.volume.enabled {
            detectors.push(Box::new(VolumeDetector::new(config.volume.clone())));
        }
        if config.geo.enabled {
            detectors.push(Box::new(GeoDetector::new(
                config.geo.clone(),
                config.learning.clone(),
                Networks::new(&config.networks),
            )));
        }
        if config.novelty.enabled {
            detectors.push(Box::new(NoveltyDetector::new(
                config.novelty.clone(),
                config.learning.clone(),
            )));
        }
        if config.binding.enabled {
            detectors.push(Box::new(BindingDetector));
        }
        if config.scope.enabled {
            detectors.push(Box::new(ScopeDetector));
        }
        if config.expiry.enabled {
            detectors.push(Box::new(ExpiryDetector));
        }
        let idle_s = config.idle_expiry.as_secs().min(u64::from(u32::MAX)) as u32;
        let anonymous = AnonymousDb::default();
        *anonymous.write().expect("fresh lock") = geoip.as_ref().and_then(GeoIp::anonymous_reader);
        Engine {
            geoip,
            store: TokenStore::new(config.max_tokens, idle_s),
            principals: Principals::new(config.max_principals, idle_s),
            config: config.clone(),
            metadata: Arc::new(metadata),
            live_metadata: MetadataStore::default(),
            detectors,
            policy: PolicySet::empty(),
            anonymous,
            policy_stats: PolicyStats::default(),
            decider: Decider::new(decision.clone()),
            lateness_s: config.lateness.as_secs().min(u64::from(u32::MAX)) as u32,
            purge_interval_ms: config.purge_interval.as_millis().max(1) as i64,
            watermark_ms: i64::MIN,
            last_purge_ms: i64::MIN,
            events: 0,
            late_events: 0,
            future_events: 0,
            inherited: 0,
            dirty: None,
            redelivered: 0,
            topic_tag: None,
            nanos: StageNanos::default(),
        }
    }

    /// Revocations go only to these issuers; see
    /// [`Decider::set_revocable_issuers`].
    pub fn with_revocable_issuers<'a>(
        mut self,
        issuers: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        self.decider.set_revocable_issuers(issuers);
        self
    }

    /// The `[detectors]` section it was built from.
    pub fn config(&self) -> &DetectorsConfig {
        &self.config
    }

    /// Splits this engine into `n` engines for the detect shards. Each
    /// holds the state of its own tokens, under its part of the caps
    /// (`max_tokens / n`, `max_principals / n`), with its own GeoIP cache
    /// over the same (shared) databases, the same metadata and rules, and
    /// the revocation budget shared. State learnt so far stays with the
    /// first shard only, so split a fresh engine.
    pub fn into_shards(self, n: usize) -> Vec<Engine> {
        if n <= 1 {
            return vec![self];
        }
        let mut config = self.config.clone();
        config.max_tokens = (config.max_tokens / n).max(1);
        config.max_principals = config.max_principals.div_ceil(n);
        let rules = self.policy.rule_configs();
        (0..n)
            .map(|_| {
                let mut shard = Engine::with_parts(
                    &config,
                    self.decider.config(),
                    self.geoip.as_ref().map(GeoIp::share),
                    MetadataStore::default(),
                );
                shard.config = self.config.clone();
                shard.metadata = Arc::clone(&self.metadata);
                shard.live_metadata = self.live_metadata.clone();
                shard.decider = self.decider.replica();
                shard.dirty = self.dirty.as_ref().map(|_| Dirty::default());
                let policy = PolicySet::compile(&rules, &shard.anonymous)
                    .expect("rules in force compile again");
                shard.install_policy(policy);
                shard
            })
            .collect()
    }

    /// Enriches `events` in place and returns the decisions they lead to.
    pub fn process(&mut self, events: &mut [Event], origins: &[Origin]) -> DecisionOutput {
        let mut out = DecisionOutput::default();
        let mut findings = Vec::new();
        let started = Instant::now();
        let anonymity: Vec<Anonymity> = events.iter_mut().map(|e| self.enrich(e)).collect();
        let enriched = Instant::now();
        let keys: Vec<TokenKey> = events
            .iter()
            .map(|e| self.store.key(&e.issuer, &e.token_id))
            .collect();
        let keyed = Instant::now();
        let rules = self.evaluate_policy(events, &keys);
        let ruled = Instant::now();
        let mut decide_ns = 0u64;
        for (row, (event, origin)) in events.iter_mut().zip(origins).enumerate() {
            self.events += 1;
            let anonymity = anonymity[row];
            self.watermark_ms = self.watermark_ms.max(event.ts_ms);
            let key = keys[row];
            let ts_s = ts_secs(event.ts_ms);
            let metadata = self
                .live_metadata
                .get(&event.issuer, &event.token_id)
                .or_else(|| self.metadata.get(&event.issuer, &event.token_id));
            let obs = Observation {
                event,
                origin,
                ts_s,
                anonymity,
                metadata,
            };
            findings.clear();
            // Lateness is per token: a token's events share a partition, so
            // only its own newest event says how out of order this one is.
            // An event further ahead of its own Kafka timestamp than the
            // allowed lateness (a gateway with a fast clock) must not move
            // the token's clock, or every later event would be "late" and
            // skip the stateful detectors: it gets the stateless checks only.
            let ceiling = origin
                .kafka_ts_ms
                .map(|k| ts_secs(k).saturating_add(self.lateness_s));
            let future = ceiling.is_some_and(|c| ts_s > c);
            let clock_s = if future {
                ceiling.unwrap_or(ts_s)
            } else {
                ts_s
            };
            let (state, previous) = self.store.touch(key, clock_s);
            if let Some(dirty) = &mut self.dirty {
                let position = changelog::position_of(&mut self.topic_tag, origin);
                // Read again after a failover or restart: already in the
                // (restored) state, and its decisions already recorded.
                if previous.is_some() && state.position.covers(&position) {
                    state.events = state.events.saturating_sub(1);
                    self.redelivered += 1;
                    continue;
                }
                state.position = position;
                dirty.mark(
                    key,
                    &event.issuer,
                    &event.token_id,
                    event.principal.as_deref(),
                );
            }
            if previous.is_none()
                && let Some(principal) = event.principal.as_deref()
                && self.principals.inherit(&event.issuer, principal, state)
            {
                self.inherited += 1;
            }
            let late = previous.is_some_and(|last| ts_s.saturating_add(self.lateness_s) < last);
            if future {
                self.future_events += 1;
            } else if late {
                self.late_events += 1;
            }
            if late || future {
                for d in self.detectors.iter().filter(|d| !d.stateful()) {
                    d.observe(&obs, state, &mut findings);
                }
            } else {
                for d in &self.detectors {
                    d.observe(&obs, state, &mut findings);
                }
                if let Some(principal) = event.principal.as_deref() {
                    self.principals
                        .absorb(&event.issuer, principal, ts_s, state);
                }
            }
            debug_assert!(
                findings
                    .iter()
                    .all(|f| f.detector.finding_kinds().contains(&f.kind)),
                "a finding kind missing from DetectorKind::finding_kinds: {:?}",
                findings.iter().map(|f| f.kind).collect::<Vec<_>>()
            );
            if let Some(rules) = &rules {
                // Rules with `with_findings` look at the detectors' findings
                // on this event, not at each other's.
                let detected = findings.len();
                for (index, mask) in rules.masks.iter().enumerate() {
                    if mask
                        .as_ref()
                        .is_some_and(|m| m.is_valid(row) && m.value(row))
                        && let Some(with) = self.policy.with_found(index, &findings[..detected])
                    {
                        let age = rules.token_age_s[row];
                        findings.push(self.policy.finding(index, event, origin, age, &with));
                    }
                }
            }
            if !findings.is_empty() {
                let deciding = Instant::now();
                self.decider
                    .decide(key, event, origin, std::mem::take(&mut findings), &mut out);
                decide_ns += deciding.elapsed().as_nanos() as u64;
            }
        }
        if self.watermark_ms != i64::MIN
            && self.watermark_ms.saturating_sub(self.last_purge_ms) >= self.purge_interval_ms
        {
            self.housekeeping(&mut out);
        }
        let nanos = |from: Instant, to: Instant| to.duration_since(from).as_nanos() as u64;
        let t = &mut self.nanos;
        t.enrich += nanos(started, enriched);
        t.rules += nanos(keyed, ruled);
        t.decide += decide_ns;
        t.detect +=
            (nanos(enriched, keyed) + nanos(ruled, Instant::now())).saturating_sub(decide_ns);
        out
    }

    /// Evaluates the rules on the (enriched) batch, once for all rows.
    fn evaluate_policy(&mut self, events: &[Event], keys: &[TokenKey]) -> Option<RuleMatches> {
        if self.policy.is_empty() {
            return None;
        }
        // A token new in this batch is aged from its first event here.
        let mut first_in_batch: hashbrown::HashMap<TokenKey, u32> = hashbrown::HashMap::new();
        let token_age_s: Vec<Option<i64>> = events
            .iter()
            .zip(keys)
            .map(|(e, &key)| {
                let ts_s = ts_secs(e.ts_ms);
                let first = match self.store.get(key) {
                    Some(state) => state.first_seen_s,
                    None => *first_in_batch.entry(key).or_insert(ts_s),
                };
                Some(i64::from(ts_s.saturating_sub(first)))
            })
            .collect();
        self.policy_stats.evaluations += 1;
        match policy_batch(events, &token_age_s, self.policy.columns_read()) {
            Ok(batch) => Some(RuleMatches {
                masks: self.policy.evaluate(&batch),
                token_age_s,
            }),
            Err(e) => {
                tracing::error!(error = %e, "Cannot build the batch policy rules see; no rule ran on it.");
                None
            }
        }
    }

    fn install_policy(&mut self, mut policy: PolicySet) {
        self.policy_stats.plans += policy.plans();
        self.policy_stats.rules = policy.len();
        policy.set_degraded(self.policy.is_degraded());
        self.policy = policy;
    }

    /// Detection is degraded (a health budget is exceeded), or no longer:
    /// rules with `when_degraded` take that stricter action meanwhile.
    pub fn set_degraded(&mut self, degraded: bool) {
        self.policy.set_degraded(degraded);
    }

    /// Compiles a new rule set and puts it in force. If any rule is bad,
    /// the current set stays and the problems are returned (and counted).
    pub fn reload_policy(&mut self, rules: &[RuleConfig]) -> Result<usize, Vec<String>> {
        match PolicySet::compile(rules, &self.anonymous) {
            Ok(policy) => {
                self.policy_stats.reloads += 1;
                self.install_policy(policy);
                Ok(self.policy.len())
            }
            Err(problems) => {
                self.policy_stats.reload_failures += 1;
                Err(problems)
            }
        }
    }

    /// Counts a reload that never reached the rules (the config file itself
    /// was bad).
    pub fn count_failed_policy_reload(&mut self) {
        self.policy_stats.reload_failures += 1;
    }

    /// The names of the rules in force.
    pub fn policy_rules(&self) -> Vec<String> {
        self.policy.names().map(str::to_owned).collect()
    }

    fn housekeeping(&mut self, out: &mut DecisionOutput) {
        self.last_purge_ms = self.watermark_ms;
        let now_s = (self.watermark_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32;
        self.store.purge_idle(now_s);
        self.principals.purge_idle(now_s);
        self.decider.tick(self.watermark_ms, out);
    }

    /// Closes every open deduplication window, as at the end of a replay,
    /// so no counted repeat goes unreported.
    pub fn flush(&mut self) -> DecisionOutput {
        let mut out = DecisionOutput::default();
        self.decider.tick(i64::MAX, &mut out);
        out
    }

    fn enrich(&mut self, event: &mut Event) -> Anonymity {
        let (Some(geoip), Some(ip)) = (self.geoip.as_mut(), event.src_ip) else {
            return Anonymity::default();
        };
        let info = geoip.lookup(ip);
        event.country = info.country;
        event.city = info.city;
        event.lat = info.lat;
        event.lon = info.lon;
        event.accuracy_km = info.accuracy_km;
        event.asn = info.asn;
        event.as_org = info.as_org;
        info.anonymity
    }

    /// Applies a live update (the metadata topic); it takes precedence
    /// over the metadata file for that token.
    pub fn upsert_metadata(&mut self, m: &TokenMetadata) -> Result<(), String> {
        self.live_metadata.upsert(m)
    }

    /// Forgets a live update; the file's entry, if any, applies again.
    pub fn remove_metadata(&mut self, issuer: &str, token_id: &str) -> bool {
        self.live_metadata.remove(issuer, token_id)
    }

    /// Replaces what the metadata file said (a reload); live updates stay.
    pub fn replace_metadata(&mut self, store: impl Into<Arc<MetadataStore>>) {
        self.metadata = store.into();
    }

    /// What the engine knows about one token, for the admin API.
    pub fn describe_token(&self, issuer: &str, token_id: &str) -> serde_json::Value {
        let state = self.token_state(issuer, token_id).map(|s| {
            serde_json::json!({
                "first_seen": schemas::time::format_rfc3339_ms(i64::from(s.first_seen_s) * 1000),
                "last_seen": schemas::time::format_rfc3339_ms(i64::from(s.last_seen_s) * 1000),
                "volume": s.volume.describe(),
                "geo": s.geo.describe(),
                "novelty": s.novelty.describe(),
            })
        });
        let metadata = self.live_metadata.get(issuer, token_id).or_else(|| self.metadata.get(issuer, token_id)).map(|m| {
            serde_json::json!({
                "scopes": m.scopes.as_ref().map(|g| g.iter().map(|g| g.as_string()).collect::<Vec<_>>()),
                "bound_cidrs": m.bound_cidrs.as_ref().map(|n| n.iter().map(ToString::to_string).collect::<Vec<_>>()),
                "bound_device": m.bound_device,
                "expires_at": m.expires_at_ms.map(schemas::time::format_rfc3339_ms),
                "owner": m.owner,
            })
        });
        serde_json::json!({ "issuer": issuer, "token_id": token_id, "state": state, "metadata": metadata })
    }

    /// Adds a token (`issuer/token_id` or `token_id`) to the allowlist.
    pub fn allow_token(&mut self, token: &str) {
        self.decider.allow_token(token);
    }

    /// The state of one token, if it has any.
    pub fn token_state(&self, issuer: &str, token_id: &str) -> Option<&TokenState> {
        self.store.get(self.store.key(issuer, token_id))
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            events: self.events,
            late_events: self.late_events,
            future_events: self.future_events,
            store: self.store.stats(),
            principals: self.principals.stats(),
            inherited_tokens: self.inherited,
            redelivered_events: self.redelivered,
            decision: self.decider.stats().clone(),
            geoip_lookups: self.geoip.as_ref().map_or(0, |g| g.lookups),
            geoip_cache_hits: self.geoip.as_ref().map_or(0, |g| g.cache_hits),
            geoip_decode_errors: self.geoip.as_ref().map_or(0, |g| g.decode_errors),
            policy: PolicyStats {
                per_rule: self.policy.stats(),
                ..self.policy_stats.clone()
            },
            nanos: self.nanos,
        }
    }

    /// Bytes the state store's tables have allocated.
    pub fn table_bytes(&self) -> usize {
        self.store.table_bytes()
    }

    /// Bytes per token held by the state store's structures.
    pub fn state_bytes_per_token(&self) -> f64 {
        self.store.bytes_per_token()
    }
}

/// What the rules said about one batch.
struct RuleMatches {
    /// Per rule: the matching rows, or `None` if the rule failed.
    masks: Vec<Option<BooleanArray>>,
    token_age_s: Vec<Option<i64>>,
}

fn ts_secs(ts_ms: i64) -> u32 {
    (ts_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32
}

mod changelog;
mod geoip;
pub use geoip::GeoIpReloadJob;

#[cfg(test)]
mod tests;
