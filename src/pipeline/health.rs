//! Detector health is a security signal: consumer lag, the dead-letter
//! rate, the time a state restore takes and the time the consumer spends
//! out of its group have budgets. Going over one raises a `detector_degraded` system
//! alert (webhook, log, `tokenwatch_detector_degraded{reason}`); coming back
//! under all of them raises `detector_recovered`. A flood of input or a
//! broken producer must not blind tokenwatch quietly.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ingest::IngestMetrics;
use revoker::Command;
use schemas::SystemAlert;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::FlowStats;

/// `[health]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Records behind the end of the assigned partitions (librdkafka's
    /// statistics, every `statistics.interval.ms`); `0` turns it off.
    #[serde(default = "default_max_consumer_lag")]
    pub max_consumer_lag: u64,
    /// Dead-lettered records per second over one check; `0` turns it off.
    #[serde(default = "default_max_dead_letters_per_s")]
    pub max_dead_letters_per_s: f64,
    /// A state restore (the changelog, on assignment) running longer than
    /// this: the moved partitions' events wait meanwhile. `0s` turns it off.
    #[serde(default = "default_max_restore_time", with = "humantime_serde")]
    pub max_restore_time: Duration,
    /// The consumer not a steady member of its group (joining, or without
    /// a coordinator) for longer than this: it reads and commits nothing
    /// new meanwhile, and its lag says nothing. `0s` turns it off.
    #[serde(default = "default_max_rejoin_time", with = "humantime_serde")]
    pub max_rejoin_time: Duration,
    /// How often the budgets are checked.
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub check_interval: Duration,
}

fn default_max_restore_time() -> Duration {
    Duration::from_secs(60)
}

fn default_max_rejoin_time() -> Duration {
    Duration::from_secs(120)
}

fn default_max_consumer_lag() -> u64 {
    100_000
}

fn default_max_dead_letters_per_s() -> f64 {
    10.0
}

fn default_check_interval() -> Duration {
    Duration::from_secs(10)
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_consumer_lag: default_max_consumer_lag(),
            max_dead_letters_per_s: default_max_dead_letters_per_s(),
            max_restore_time: default_max_restore_time(),
            max_rejoin_time: default_max_rejoin_time(),
            check_interval: default_check_interval(),
        }
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.max_dead_letters_per_s >= 0.0 && self.max_dead_letters_per_s.is_finite()) {
            problems.push("health.max_dead_letters_per_s: must be 0 (off) or positive".into());
        }
        if self.check_interval < Duration::from_millis(100) {
            problems.push("health.check_interval: at least 100ms".into());
        }
        problems
    }
}

/// A budget that can be exceeded; the `reason` label of
/// `tokenwatch_detector_degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    ConsumerLag = 0,
    DeadLetters = 1,
    RestoreTime = 2,
    ConsumerGroup = 3,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::ConsumerLag,
        Reason::DeadLetters,
        Reason::RestoreTime,
        Reason::ConsumerGroup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::ConsumerLag => "consumer_lag",
            Reason::DeadLetters => "dead_letters",
            Reason::RestoreTime => "restore_time",
            Reason::ConsumerGroup => "consumer_group",
        }
    }
}

/// A change of health worth an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Over one more budget; every budget now exceeded, said in words.
    Degraded(Vec<(Reason, String)>),
    /// Under every budget again.
    Recovered,
}

/// What one check looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Records not yet handed to detection on the assigned partitions.
    pub lag: i64,
    /// Records dead-lettered so far.
    pub dead_lettered: u64,
    /// How long the running state restore has taken, if one runs.
    pub restoring_ms: Option<i64>,
    /// How long the consumer has not been a steady group member, if so.
    pub unsteady_ms: Option<i64>,
}

/// The budgets' state between checks; time is given, never read.
#[derive(Debug, Default)]
pub struct Health {
    over: Vec<Reason>,
    last: Option<(i64, u64)>,
}

impl Health {
    /// Checks the figures at `now_ms`.
    pub fn check(
        &mut self,
        config: &HealthConfig,
        now_ms: i64,
        figures: Figures,
    ) -> Option<Change> {
        let Figures {
            lag,
            dead_lettered,
            restoring_ms,
            unsteady_ms,
        } = figures;
        let mut over = Vec::new();
        let rejoin_ms = config.max_rejoin_time.as_millis() as i64;
        if let Some(ms) = unsteady_ms
            && rejoin_ms > 0
            && ms > rejoin_ms
        {
            over.push((
                Reason::ConsumerGroup,
                format!(
                    "the consumer has not been a steady member of its group for {:.1}s, over the budget of {}s; it reads and commits nothing new meanwhile",
                    ms as f64 / 1000.0,
                    config.max_rejoin_time.as_secs_f64()
                ),
            ));
        }
        let budget_ms = config.max_restore_time.as_millis() as i64;
        if let Some(ms) = restoring_ms
            && budget_ms > 0
            && ms > budget_ms
        {
            over.push((
                Reason::RestoreTime,
                format!(
                    "the state restore has run {:.1}s, over the budget of {}s; the moved partitions' events wait",
                    ms as f64 / 1000.0,
                    config.max_restore_time.as_secs_f64()
                ),
            ));
        }
        if config.max_consumer_lag > 0 && lag > config.max_consumer_lag as i64 {
            over.push((
                Reason::ConsumerLag,
                format!(
                    "consumer lag {lag} records, over the budget of {}",
                    config.max_consumer_lag
                ),
            ));
        }
        if let Some((at, before)) = self.last
            && now_ms > at
            && config.max_dead_letters_per_s > 0.0
        {
            let rate = dead_lettered.saturating_sub(before) as f64 * 1000.0 / (now_ms - at) as f64;
            if rate > config.max_dead_letters_per_s {
                over.push((
                    Reason::DeadLetters,
                    format!(
                        "{rate:.1} records dead-lettered a second, over the budget of {}",
                        config.max_dead_letters_per_s
                    ),
                ));
            }
        }
        self.last = Some((now_ms, dead_lettered));
        let reasons: Vec<Reason> = over.iter().map(|(r, _)| *r).collect();
        let grew = reasons.iter().any(|r| !self.over.contains(r));
        let was_over = !self.over.is_empty();
        self.over = reasons;
        if grew {
            Some(Change::Degraded(over))
        } else if was_over && self.over.is_empty() {
            Some(Change::Recovered)
        } else {
            None
        }
    }

    pub fn is_over(&self, reason: Reason) -> bool {
        self.over.contains(&reason)
    }
}

/// Checks the budgets every `check_interval` until aborted, sending each
/// change to the revoker as a system alert, and to the detect stage (rules
/// with `when_degraded` fail closed meanwhile).
pub async fn monitor(
    config: HealthConfig,
    metrics: Arc<IngestMetrics>,
    stats: Arc<FlowStats>,
    revoker: mpsc::Sender<Command>,
    stage: mpsc::Sender<super::Control>,
) {
    let mut ticker = tokio::time::interval(config.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = Health::default();
    loop {
        ticker.tick().await;
        let now_ms = super::stats::now_us() / 1000;
        // With repartition, the source topics' hop counts too.
        let first = stats.repartition.get();
        let figures = Figures {
            lag: metrics.consumer_lag.load(Relaxed)
                + first.map_or(0, |m| m.consumer_lag.load(Relaxed)),
            dead_lettered: metrics.dead_lettered_total()
                + first.map_or(0, |m| m.dead_lettered_total()),
            restoring_ms: stats.restore().since_ms.map(|since| now_ms - since),
            // The earliest of the hops' consumers not in their group.
            unsteady_ms: [Some(&*metrics), first.map(|m| &**m)]
                .into_iter()
                .flatten()
                .map(|m| m.group_unsteady_since_ms.load(Relaxed))
                .filter(|&since| since > 0)
                .min()
                .map(|since| now_ms - since),
        };
        let change = health.check(&config, now_ms, figures);
        for reason in Reason::ALL {
            stats.degraded[reason as usize].store(health.is_over(reason), Relaxed);
        }
        let Some(change) = change else { continue };
        let degraded = matches!(change, Change::Degraded(_));
        let control = super::Control::Stage(detectors::stage::Control::Degraded(degraded));
        if stage.send(control).await.is_err() {
            return;
        }
        let alert = match change {
            Change::Degraded(over) => {
                let message = over
                    .iter()
                    .map(|(_, why)| why.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::warn!(%message, "Detector degraded: detection may run late or miss records.");
                SystemAlert {
                    kind: "detector_degraded",
                    message: format!("detection is degraded: {message}"),
                    issuer: None,
                    ts_ms: now_ms,
                }
            }
            Change::Recovered => {
                tracing::info!("Detector recovered: every health budget is met again.");
                SystemAlert {
                    kind: "detector_recovered",
                    message: "detection is within every health budget again".into(),
                    issuer: None,
                    ts_ms: now_ms,
                }
            }
        };
        let (handed, _) = oneshot::channel();
        let command = Command::Decisions {
            decisions: Vec::new(),
            alerts: vec![alert],
            handed,
        };
        if revoker.send(command).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthConfig {
        HealthConfig {
            max_consumer_lag: 1000,
            max_dead_letters_per_s: 5.0,
            max_restore_time: Duration::from_secs(30),
            max_rejoin_time: Duration::from_secs(60),
            check_interval: Duration::from_secs(1),
        }
    }

    fn at(lag: i64, dead_lettered: u64) -> Figures {
        Figures {
            lag,
            dead_lettered,
            restoring_ms: None,
            unsteady_ms: None,
        }
    }

    /// Time is tokio's paused clock: the ticks come at once, no sleeping.
    #[tokio::test(start_paused = true)]
    async fn the_monitor_alerts_and_tells_the_stage_to_fail_closed_then_recover() {
        use detectors::stage;
        let metrics = Arc::new(IngestMetrics::default());
        let stats = Arc::new(FlowStats::default());
        let (revoker, mut commands) = mpsc::channel(8);
        let (to_stage, mut controls) = mpsc::channel(8);
        metrics.consumer_lag.store(5_000, Relaxed);
        let task = tokio::spawn(monitor(
            config(),
            metrics.clone(),
            stats.clone(),
            revoker,
            to_stage,
        ));
        let degraded = |c: Option<super::super::Control>| match c {
            Some(super::super::Control::Stage(stage::Control::Degraded(d))) => d,
            other => panic!("a Degraded control expected, got {other:?}"),
        };
        let kind = |c: Option<Command>| match c {
            Some(Command::Decisions { alerts, .. }) => alerts[0].kind,
            _ => panic!("a system alert expected"),
        };
        assert!(degraded(controls.recv().await));
        assert_eq!(kind(commands.recv().await), "detector_degraded");
        assert!(stats.degraded[Reason::ConsumerLag as usize].load(Relaxed));
        metrics.consumer_lag.store(0, Relaxed);
        assert!(!degraded(controls.recv().await));
        assert_eq!(kind(commands.recv().await), "detector_recovered");
        task.abort();
    }

    /// A consumer that cannot rejoin its group (after a broker restart, a
    /// coordinator it cannot reach) reads nothing and shows no lag: only
    /// this budget says so.
    #[test]
    fn a_consumer_out_of_its_group_too_long_degrades_until_it_rejoins() {
        let (c, mut h) = (config(), Health::default());
        let unsteady = |ms| Figures {
            unsteady_ms: ms,
            ..Figures::default()
        };
        assert_eq!(h.check(&c, 0, unsteady(Some(59_000))), None);
        let Some(Change::Degraded(over)) = h.check(&c, 1000, unsteady(Some(61_000))) else {
            panic!("degraded expected")
        };
        assert_eq!(over[0].0, Reason::ConsumerGroup);
        assert!(over[0].1.contains("61.0s"), "{over:?}");
        assert_eq!(h.check(&c, 2000, unsteady(Some(62_000))), None, "said once");
        assert_eq!(h.check(&c, 3000, unsteady(None)), Some(Change::Recovered));
        let off = HealthConfig {
            max_rejoin_time: Duration::ZERO,
            ..config()
        };
        assert_eq!(
            Health::default().check(&off, 0, unsteady(Some(3_600_000))),
            None
        );
    }

    #[test]
    fn a_restore_over_its_budget_degrades_until_it_ends() {
        let (c, mut h) = (config(), Health::default());
        let restoring = |ms| Figures {
            restoring_ms: Some(ms),
            ..Figures::default()
        };
        assert_eq!(h.check(&c, 0, restoring(29_000)), None);
        let Some(Change::Degraded(over)) = h.check(&c, 1000, restoring(31_000)) else {
            panic!("degraded expected")
        };
        assert_eq!(over[0].0, Reason::RestoreTime);
        assert!(over[0].1.contains("31.0s"), "{over:?}");
        assert_eq!(h.check(&c, 2000, restoring(32_000)), None);
        assert_eq!(
            h.check(&c, 3000, Figures::default()),
            Some(Change::Recovered)
        );
    }

    #[test]
    fn lag_over_its_budget_degrades_once_and_recovers_once() {
        let (c, mut h) = (config(), Health::default());
        assert_eq!(h.check(&c, 0, at(10, 0)), None);
        let Some(Change::Degraded(over)) = h.check(&c, 1000, at(5000, 0)) else {
            panic!("degraded expected")
        };
        assert_eq!(over[0].0, Reason::ConsumerLag);
        assert!(over[0].1.contains("5000"), "{over:?}");
        // Still over: no repeat.
        assert_eq!(h.check(&c, 2000, at(4000, 0)), None);
        assert!(h.is_over(Reason::ConsumerLag));
        assert_eq!(h.check(&c, 3000, at(999, 0)), Some(Change::Recovered));
        assert_eq!(h.check(&c, 4000, at(0, 0)), None);
    }

    #[test]
    fn the_dead_letter_rate_is_measured_between_checks() {
        let (c, mut h) = (config(), Health::default());
        // The first check only sets the mark, however many came before.
        assert_eq!(h.check(&c, 0, at(0, 1_000_000)), None);
        // 4/s is under 5/s; 20 in 2 s is 10/s, over.
        assert_eq!(h.check(&c, 1000, at(0, 1_000_004)), None);
        let Some(Change::Degraded(over)) = h.check(&c, 3000, at(0, 1_000_024)) else {
            panic!("degraded expected")
        };
        assert_eq!(over[0].0, Reason::DeadLetters);
        // Lag going over as well is one more degraded alert, naming both.
        let Some(Change::Degraded(over)) = h.check(&c, 4000, at(2000, 1_000_040)) else {
            panic!("degraded expected")
        };
        assert_eq!(over.len(), 2);
        assert_eq!(h.check(&c, 5000, at(0, 1_000_040)), Some(Change::Recovered));
    }

    #[test]
    fn zero_turns_a_budget_off() {
        let c = HealthConfig {
            max_consumer_lag: 0,
            max_dead_letters_per_s: 0.0,
            ..config()
        };
        let mut h = Health::default();
        assert_eq!(h.check(&c, 0, at(1 << 40, 0)), None);
        assert_eq!(h.check(&c, 1000, at(1 << 40, 1 << 30)), None);
    }
}
