//! Volume: requests, bytes and records over a sliding window, against a
//! learned per-token baseline (EWMA, with warm-up), plus absolute caps that
//! catch a mass export even from a brand-new token.

use std::time::Duration;

use schemas::{DetectorKind, Evidence, Finding};
use serde::{Deserialize, Serialize};

use crate::detector::{Detector, Observation};
use crate::state::TokenState;
use crate::state::window::{Added, BUCKETS, Baseline, Bucket, Totals, Window};

/// `[detectors.volume]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Run this detector.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Length of the sliding window; it moves in steps of a sixth of it.
    /// A whole number of seconds, divisible by 6.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Half-life of the learned baseline: how fast it follows change.
    #[serde(default = "default_half_life", with = "humantime_serde")]
    pub baseline_half_life: Duration,
    /// How long a token is watched before spikes against its baseline
    /// count. Absolute caps apply from the first event.
    #[serde(default = "default_warmup", with = "humantime_serde")]
    pub warmup: Duration,
    /// A window this many times its baseline is a spike.
    #[serde(default = "default_spike_factor")]
    pub spike_factor: f64,
    /// A spike must also be 1.5 times the token's largest spike (as a
    /// multiple of its baseline) of recent days, which halves every
    /// `peak_half_life`: a recurring batch job alerts the first night, not
    /// every night.
    #[serde(default = "default_peak_half_life", with = "humantime_serde")]
    pub peak_half_life: Duration,
    /// Fewer requests than this in a window never make a spike, so sparse
    /// tokens do not fire on a handful of calls.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Absolute caps per window ("mass export"), whatever the baseline.
    #[serde(default = "default_max_requests")]
    pub max_requests: u64,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_max_records")]
    pub max_records: u64,
}

fn yes() -> bool {
    true
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_half_life() -> Duration {
    Duration::from_secs(3600)
}
fn default_warmup() -> Duration {
    Duration::from_secs(1800)
}
fn default_peak_half_life() -> Duration {
    Duration::from_secs(3 * 86_400)
}
fn default_spike_factor() -> f64 {
    10.0
}
fn default_min_requests() -> u64 {
    50
}
fn default_max_requests() -> u64 {
    20_000
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_max_records() -> u64 {
    1_000_000
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            enabled: true,
            window: default_window(),
            baseline_half_life: default_half_life(),
            warmup: default_warmup(),
            spike_factor: default_spike_factor(),
            peak_half_life: default_peak_half_life(),
            min_requests: default_min_requests(),
            max_requests: default_max_requests(),
            max_bytes: default_max_bytes(),
            max_records: default_max_records(),
        }
    }
}

impl VolumeConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let secs = self.window.as_secs();
        if secs < 6 || !secs.is_multiple_of(6) || self.window.subsec_nanos() != 0 {
            p.push(format!("detectors.volume.window: {secs}s must be a whole number of seconds, at least 6 and divisible by 6"));
        }
        if self.baseline_half_life < self.window / BUCKETS as u32 {
            p.push("detectors.volume.baseline_half_life: must be at least one window step".into());
        }
        if !(self.spike_factor > 1.0 && self.spike_factor.is_finite()) {
            p.push("detectors.volume.spike_factor: must be greater than 1".into());
        }
        for (key, v) in [
            ("max_requests", self.max_requests),
            ("max_bytes", self.max_bytes),
            ("max_records", self.max_records),
        ] {
            if v == 0 {
                p.push(format!("detectors.volume.{key}: must be positive"));
            }
        }
        p
    }
}

/// Per-token volume state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeState {
    window: Window,
    baseline: Baseline,
    /// The largest ratio (window ÷ baseline) of past spike episodes,
    /// decaying, and the largest of the episode under way (0 if none), in
    /// tenths. A spike is judged against past episodes only, so a burst's
    /// own first minutes never mask the rest of it.
    peak_tenths: u16,
    episode_tenths: u16,
}

impl VolumeState {
    /// The window and baseline, for the admin API.
    pub fn describe(&self) -> serde_json::Value {
        let t = self.window.totals();
        serde_json::json!({
            "window": { "requests": t.requests, "bytes": t.kib * 1024, "records": t.records },
            "baseline": {
                "requests": self.baseline.requests,
                "bytes": f64::from(self.baseline.kib) * 1024.0,
                "records": self.baseline.records,
                "samples": self.baseline.samples,
            },
            "recent_peak_ratio": f64::from(self.peak_tenths) / 10.0,
        })
    }
}

pub struct VolumeDetector {
    config: VolumeConfig,
    bucket_s: u32,
    alpha: f32,
    /// The peak ratio's decay per window step.
    peak_decay: f32,
    warmup_samples: u16,
}

impl VolumeDetector {
    pub fn new(config: VolumeConfig) -> Self {
        let bucket_s = (config.window.as_secs() / BUCKETS as u64).max(1) as u32;
        let half_life = config.baseline_half_life.as_secs_f64().max(1.0);
        let alpha = (1.0 - 0.5f64.powf(f64::from(bucket_s) / half_life)) as f32;
        let warmup_samples =
            (config.warmup.as_secs() / u64::from(bucket_s)).min(u64::from(u16::MAX)) as u16;
        let peak_half_life = config.peak_half_life.as_secs_f64().max(1.0);
        let peak_decay = 0.5f64.powf(f64::from(bucket_s) / peak_half_life) as f32;
        VolumeDetector {
            config,
            bucket_s,
            alpha,
            peak_decay,
            warmup_samples,
        }
    }

    /// (unit, observed, baseline) of a window's totals. The baseline never
    /// counts as lower than what min_requests allows, so a near-silent
    /// token needs min_requests to spike.
    fn metrics(&self, t: Totals, b: &Baseline) -> [(&'static str, f64, f64); 3] {
        let req_floor = (self.config.min_requests as f64 / self.config.spike_factor).max(1.0);
        let per_request_kib = f64::from(b.kib) / f64::from(b.requests).max(1.0);
        let per_request_records = f64::from(b.records) / f64::from(b.requests).max(1.0);
        [
            (
                "requests",
                t.requests as f64,
                f64::from(b.requests).max(req_floor),
            ),
            (
                "KiB",
                t.kib as f64,
                f64::from(b.kib).max(req_floor * per_request_kib.max(1.0)),
            ),
            (
                "records",
                t.records as f64,
                f64::from(b.records).max(req_floor * per_request_records.max(1.0)),
            ),
        ]
    }

    fn cap_finding(
        &self,
        obs: &Observation<'_>,
        unit: &'static str,
        observed: u64,
        limit: u64,
    ) -> Finding {
        let evidence = Evidence {
            observed: Some(observed as f64),
            limit: Some(limit as f64),
            unit: Some(unit),
            events: vec![obs.event_ref()],
            ..Default::default()
        }
        .fact("window_s", self.config.window.as_secs());
        let summary = format!(
            "{observed} {unit} in {}s, over the absolute cap of {limit}",
            self.config.window.as_secs()
        );
        Finding::new(DetectorKind::Volume, "mass_export", 1.0, summary, evidence)
    }
}

/// How far above the token's recent peak ratio a spike must be.
const PEAK_MARGIN: f64 = 1.5;

/// Maps how far over the spike threshold a window is to a score: 0.6 at the
/// threshold, 0.95 at ten times it.
fn spike_score(observed: f64, threshold: f64) -> f64 {
    (0.6 + 0.35 * (observed / threshold).log10()).clamp(0.6, 0.95)
}

impl Detector for VolumeDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Volume
    }

    fn stateful(&self) -> bool {
        true
    }

    fn observe(&self, obs: &Observation<'_>, state: &mut TokenState, out: &mut Vec<Finding>) {
        let v = &mut state.volume;
        let e = obs.event;
        let sample = Bucket {
            requests: 1,
            kib: e
                .bytes_out
                .map_or(0, |b| b.div_ceil(1024))
                .min(u64::from(u32::MAX)) as u32,
            records: e.records_out.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        };
        let before = v.window.totals();
        let fresh = before == Totals::default();
        match v.window.add(obs.ts_s / self.bucket_s, sample) {
            Added::TooLate => return,
            Added::Advanced(steps) if steps > 0 && !fresh => {
                // The window that just closed sets the recent peak, before
                // it is folded into the baseline it is measured against.
                let closed = self
                    .metrics(before, &v.baseline)
                    .iter()
                    .map(|(_, observed, base)| observed / base)
                    .fold(0.0, f64::max) as f32;
                let tenths = |r: f32| (r * 10.0).round().clamp(0.0, f32::from(u16::MAX)) as u16;
                let decay = self.peak_decay.powi(steps.min(i32::MAX as u32) as i32);
                v.peak_tenths = tenths(f32::from(v.peak_tenths) / 10.0 * decay);
                if closed > self.config.spike_factor as f32 {
                    v.episode_tenths = v.episode_tenths.max(tenths(closed));
                } else if v.episode_tenths > 0 {
                    v.peak_tenths = v.peak_tenths.max(v.episode_tenths);
                    v.episode_tenths = 0;
                }
                v.baseline.update(before, steps - 1, self.alpha);
            }
            Added::Advanced(_) => {}
        }
        let t = v.window.totals();
        let caps = [
            ("requests", t.requests, self.config.max_requests),
            ("bytes", t.kib.saturating_mul(1024), self.config.max_bytes),
            ("records", t.records, self.config.max_records),
        ];
        if let Some(&(unit, observed, limit)) =
            caps.iter().find(|(_, observed, limit)| observed >= limit)
        {
            out.push(self.cap_finding(obs, unit, observed, limit));
            return;
        }
        if v.baseline.samples < self.warmup_samples.max(1) || t.requests < self.config.min_requests
        {
            return;
        }
        let factor = self.config.spike_factor;
        let metrics = self.metrics(t, &v.baseline);
        let worst = metrics
            .iter()
            .filter(|(_, observed, base)| *observed > factor * base)
            .max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)));
        let peak = f64::from(v.peak_tenths) / 10.0;
        if let Some(&(unit, observed, base)) =
            worst.filter(|(_, observed, base)| observed / base > PEAK_MARGIN * peak)
        {
            let threshold = factor * base;
            let evidence = Evidence {
                observed: Some(observed),
                baseline: Some(base),
                limit: Some(threshold),
                unit: Some(unit),
                events: vec![obs.event_ref()],
                ..Default::default()
            }
            .fact("window_s", self.config.window.as_secs())
            .fact("ratio", (observed / base * 10.0).round() / 10.0)
            .fact("recent_peak_ratio", (peak * 10.0).round() / 10.0);
            let summary = format!(
                "{observed:.0} {unit} in {}s is {:.1}x the learned baseline of {base:.1}",
                self.config.window.as_secs(),
                observed / base
            );
            out.push(Finding::new(
                DetectorKind::Volume,
                "volume_spike",
                spike_score(observed, threshold),
                summary,
                evidence,
            ));
        }
    }
}

impl crate::state::codec::Codec for VolumeState {
    fn put(&self, w: &mut crate::state::codec::Writer) {
        self.window.put(w);
        self.baseline.put(w);
        w.u16(self.peak_tenths);
        w.u16(self.episode_tenths);
    }
    fn get(
        r: &mut crate::state::codec::Reader<'_>,
    ) -> Result<Self, crate::state::codec::CodecError> {
        use crate::state::codec::Codec;
        Ok(VolumeState {
            window: Codec::get(r)?,
            baseline: Codec::get(r)?,
            peak_tenths: r.u16()?,
            episode_tenths: r.u16()?,
        })
    }
}

#[cfg(test)]
mod tests;
