use std::time::Duration;

use schemas::Event;

use super::*;
use crate::testkit::*;

fn harness(config: VolumeConfig) -> Harness<VolumeDetector> {
    Harness::new(VolumeDetector::new(config), T0_MS)
}

/// `per_minute` events per minute for `minutes`, evenly spaced, from `start`.
fn steady(start: i64, minutes: i64, per_minute: i64, bytes: u64) -> Vec<Event> {
    (0..minutes * per_minute)
        .map(|i| {
            let mut e = event(start + i * MIN_MS / per_minute);
            e.bytes_out = Some(bytes);
            e.records_out = Some(1);
            e
        })
        .collect()
}

#[test]
fn mass_export_trips_the_absolute_cap_even_on_a_new_token() {
    let mut h = harness(VolumeConfig {
        max_bytes: 100 << 20,
        ..Default::default()
    });
    // 20 downloads of 10 MiB within a minute: 200 MiB > 100 MiB.
    let burst = steady(T0_MS, 1, 20, 10 << 20);
    let findings = h.feed_all(&burst);
    let f = findings.first().expect("mass export found");
    assert_eq!((f.kind, f.score), ("mass_export", 1.0));
    assert_eq!(f.evidence.unit, Some("bytes"));
    assert!(f.evidence.observed.unwrap() >= (100 << 20) as f64);
    assert_eq!(f.evidence.limit, Some((100 << 20) as f64));
    assert!(f.evidence.events[0].request_id.is_some());
    assert_eq!(findings.len(), 20 - 9, "fires from the 10th download on");
}

#[test]
fn spike_against_the_learned_baseline() {
    let mut h = harness(VolumeConfig::default());
    // Two hours at 30 requests a minute, then a burst of 600 in a minute.
    assert!(h.feed_all(&steady(T0_MS, 120, 30, 2048)).is_empty());
    let burst_start = T0_MS + 120 * MIN_MS;
    let findings = h.feed_all(&steady(burst_start, 1, 600, 2048));
    let spike = findings
        .iter()
        .find(|f| f.kind == "volume_spike")
        .expect("spike found");
    let baseline = spike.evidence.baseline.unwrap();
    assert!(
        (25.0..=35.0).contains(&baseline),
        "baseline {baseline} ≈ 30/min"
    );
    assert!(spike.evidence.observed.unwrap() > 10.0 * baseline);
    assert!((0.6..=0.95).contains(&spike.score));
}

#[test]
fn a_token_below_the_minimum_count_never_spikes() {
    let mut h = harness(VolumeConfig::default());
    // A sparse token: 1 call an hour for a day, then 40 calls in a minute
    // (40x its rate, but under min_requests = 50).
    let sparse: Vec<Event> = (0..24).map(|i| event(T0_MS + i * HOUR_MS)).collect();
    assert!(h.feed_all(&sparse).is_empty());
    let burst = steady(T0_MS + 24 * HOUR_MS, 1, 40, 100);
    assert!(h.feed_all(&burst).is_empty());
}

#[test]
fn normal_diurnal_growth_stays_within_the_baseline() {
    let mut h = harness(VolumeConfig::default());
    // Three days; the rate follows the day from 10 to 60 calls a minute.
    let mut all = Vec::new();
    for minute in 0..3 * 24 * 60 {
        let phase = (minute % (24 * 60)) as f64 / (24.0 * 60.0) * std::f64::consts::TAU;
        let rate = (35.0 - 25.0 * phase.cos()).round() as i64;
        for k in 0..rate {
            all.push(event(T0_MS + minute * MIN_MS + k * MIN_MS / rate));
        }
    }
    let findings = h.feed_all(&all);
    assert!(
        findings.is_empty(),
        "{} findings, first: {:?}",
        findings.len(),
        findings.first().map(|f| &f.summary)
    );
}

#[test]
fn warm_up_suppresses_spikes_but_not_caps() {
    let config = VolumeConfig {
        warmup: Duration::from_secs(3600),
        max_requests: 1000,
        ..Default::default()
    };
    let mut h = harness(config);
    // Ten minutes in: a burst of 400 calls. No baseline yet: no spike.
    h.feed_all(&steady(T0_MS, 10, 5, 0));
    assert!(
        h.feed_all(&steady(T0_MS + 10 * MIN_MS, 1, 400, 0))
            .is_empty()
    );
    // The cap still applies during warm-up.
    let f = h.feed_all(&steady(T0_MS + 11 * MIN_MS, 1, 1200, 0));
    assert!(
        f.iter()
            .any(|f| f.kind == "mass_export" && f.evidence.unit == Some("requests"))
    );
}

#[test]
fn events_older_than_the_window_are_ignored() {
    let mut h = harness(VolumeConfig {
        max_requests: 3,
        ..Default::default()
    });
    h.feed(&event(T0_MS + 10 * MIN_MS));
    h.feed(&event(T0_MS + 10 * MIN_MS + 1));
    // Two stale events from ten minutes earlier do not fill the window.
    assert!(h.feed(&event(T0_MS)).is_empty());
    assert!(h.feed(&event(T0_MS + 1)).is_empty());
    assert_eq!(h.feed(&event(T0_MS + 10 * MIN_MS + 2)).len(), 1);
}

#[test]
fn config_validation() {
    let bad = VolumeConfig {
        window: Duration::from_secs(7),
        spike_factor: 1.0,
        max_bytes: 0,
        ..Default::default()
    };
    assert_eq!(bad.validate().len(), 3, "{:?}", bad.validate());
    assert!(VolumeConfig::default().validate().is_empty());
}

#[test]
fn a_nightly_batch_spikes_the_first_night_only_and_a_bigger_burst_still_does() {
    let mut h = Harness::new(VolumeDetector::new(VolumeConfig::default()), T0_MS);
    let mut spikes_per_night = Vec::new();
    for night in 0..3 {
        let day0 = T0_MS + night * DAY_MS;
        // A quiet day: a call every 5 minutes.
        for i in 0..(22 * 12) {
            h.feed(&event(day0 + i * 5 * MIN_MS));
        }
        // The batch: 120 calls a minute for 20 minutes.
        let batch = day0 + 22 * HOUR_MS;
        let f = h.feed_all(
            &(0..2400)
                .map(|n| event(batch + n * 500))
                .collect::<Vec<_>>(),
        );
        spikes_per_night.push(f.iter().filter(|f| f.kind == "volume_spike").count());
        for i in 0..24 {
            h.feed(&event(batch + 30 * MIN_MS + i * 5 * MIN_MS));
        }
    }
    assert!(spikes_per_night[0] > 0, "{spikes_per_night:?}");
    assert_eq!(spikes_per_night[1..], [0, 0], "{spikes_per_night:?}");
    // A thief's burst far above the batch still spikes.
    let t = T0_MS + 3 * DAY_MS + 12 * HOUR_MS;
    let f = h.feed_all(&(0..6000).map(|n| event(t + n * 10)).collect::<Vec<_>>());
    assert!(
        f.iter()
            .any(|f| f.kind == "volume_spike" || f.kind == "mass_export"),
        "{f:?}"
    );
}
