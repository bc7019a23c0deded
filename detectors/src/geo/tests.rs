use std::time::Duration;

use super::*;
use crate::geoip::Anonymity;
use crate::testkit::*;

fn harness(config: GeoConfig) -> Harness<GeoDetector> {
    Harness::new(GeoDetector::new(config), T0_MS)
}

#[test]
fn london_to_changchun_within_an_hour_is_impossible_travel() {
    let mut h = harness(GeoConfig::default());
    assert!(h.feed(&london(event(T0_MS))).is_empty());
    let findings = h.feed(&changchun(event(T0_MS + 50 * MIN_MS)));
    let f = findings
        .iter()
        .find(|f| f.kind == "impossible_travel")
        .expect("travel found");
    assert_eq!(f.confidence, 1.0);
    assert!(f.score >= 0.85);
    assert_eq!(f.evidence.facts["from_country"], "GB");
    assert_eq!(f.evidence.facts["to_country"], "CN");
    let km = f.evidence.facts["distance_km"].as_f64().unwrap();
    // ~8,210 km great-circle, minus both accuracy radii (10 + 100 km).
    assert!((8_050.0..=8_150.0).contains(&km), "{km}");
    let kmh = f.evidence.observed.unwrap();
    assert!(
        (km / (50.0 / 60.0) - kmh).abs() < 2.0,
        "speed = distance / time"
    );
    assert_eq!(f.evidence.unit, Some("km/h"));
}

#[test]
fn a_plausible_trip_is_not_travel() {
    let mut h = harness(GeoConfig::default());
    h.feed(&london(event(T0_MS)));
    // London → Linköping (~1,400 km) in 3 hours: ~430 km/h, a flight.
    let findings = h.feed(&linkoping(event(T0_MS + 3 * HOUR_MS)));
    assert!(
        findings.iter().all(|f| f.kind != "impossible_travel"),
        "{findings:?}"
    );
}

#[test]
fn short_hops_are_below_the_minimum_distance_after_radii() {
    let mut h = harness(GeoConfig::default());
    // 600 km apart in a minute, but each location is ±100 km: 400 km < 500.
    h.feed(&at(
        event(T0_MS),
        "198.51.100.1",
        "DE",
        52.52,
        13.40,
        100,
        1,
    ));
    let f = h.feed(&at(
        event(T0_MS + MIN_MS),
        "198.51.100.2",
        "DE",
        48.14,
        11.58 - 3.4,
        100,
        1,
    ));
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn a_big_accuracy_radius_gives_low_confidence() {
    let mut h = harness(GeoConfig::default());
    h.feed(&london(event(T0_MS)));
    // 149.101.100.0/28 is "somewhere in the US" with a 1000 km radius.
    let f = h.feed(&at(
        event(T0_MS + HOUR_MS),
        "149.101.100.1",
        "US",
        37.751,
        -97.822,
        1000,
        7018,
    ));
    let travel = f
        .iter()
        .find(|f| f.kind == "impossible_travel")
        .expect("still travel");
    assert!(travel.confidence < 0.7, "confidence {}", travel.confidence);
}

#[test]
fn anonymous_and_low_confidence_asns_lower_confidence() {
    let mut h = harness(GeoConfig {
        low_confidence_asns: vec![4837],
        ..Default::default()
    });
    h.feed(&london(event(T0_MS)));
    let f = h.feed(&changchun(event(T0_MS + HOUR_MS)));
    assert!(f[0].confidence < 0.7);

    let mut h = harness(GeoConfig::default());
    h.feed(&london(event(T0_MS)));
    h.anonymity = Anonymity {
        vpn: true,
        ..Default::default()
    };
    let f = h.feed(&changchun(event(T0_MS + HOUR_MS)));
    assert!(f[0].confidence < 0.7);
}

#[test]
fn trusted_vpn_asn_and_cidr_are_exempt() {
    let mut h = harness(GeoConfig {
        trusted_asns: vec![4837],
        ..Default::default()
    });
    h.feed(&london(event(T0_MS)));
    assert!(h.feed(&changchun(event(T0_MS + 10 * MIN_MS))).is_empty());
    // Back in London: compared with the last untrusted location, no travel.
    assert!(h.feed(&london(event(T0_MS + 20 * MIN_MS))).is_empty());

    let mut h = harness(GeoConfig {
        trusted_cidrs: vec!["175.16.0.0/16".parse().unwrap()],
        ..Default::default()
    });
    h.feed(&london(event(T0_MS)));
    assert!(h.feed(&changchun(event(T0_MS + 10 * MIN_MS))).is_empty());
}

#[test]
fn the_same_ip_with_new_geo_data_is_not_travel() {
    let mut h = harness(GeoConfig::default());
    h.feed(&london(event(T0_MS)));
    // A GeoIP update moves 81.2.69.142 to Changchun: same address, no trip.
    let moved = at(
        event(T0_MS + MIN_MS),
        "81.2.69.142",
        "CN",
        43.88,
        125.3228,
        100,
        20712,
    );
    assert!(h.feed(&moved).iter().all(|f| f.kind != "impossible_travel"));
}

#[test]
fn out_of_order_events_travel_backwards_in_time() {
    let mut h = harness(GeoConfig::default());
    h.feed(&changchun(event(T0_MS + 30 * MIN_MS)));
    let f = h.feed(&london(event(T0_MS)));
    assert!(f.iter().any(|f| f.kind == "impossible_travel"));
}

#[test]
fn new_country_only_after_the_learning_period() {
    let mut h = harness(GeoConfig {
        learning_period: Duration::from_secs(86_400),
        ..Default::default()
    });
    h.feed(&london(event(T0_MS)));
    // Day 0: Sweden is learnt silently.
    assert!(h.feed(&linkoping(event(T0_MS + 5 * HOUR_MS))).is_empty());
    // Day 2: Sweden is known; China is new.
    assert!(h.feed(&linkoping(event(T0_MS + 2 * DAY_MS))).is_empty());
    let f = h.feed(&changchun(event(T0_MS + 3 * DAY_MS)));
    let nc = f
        .iter()
        .find(|f| f.kind == "new_country")
        .expect("new country");
    assert_eq!(nc.evidence.facts["country"], "CN");
    assert_eq!(
        nc.evidence.facts["known_countries"],
        serde_json::json!(["GB", "SE"])
    );
    // Only once.
    assert!(h.feed(&changchun(event(T0_MS + 4 * DAY_MS))).is_empty());
}

#[test]
fn haversine_and_country_packing() {
    assert!((distance_km(51.5142, -0.0931, 43.88, 125.3228) - 8_200.0).abs() < 50.0);
    assert_eq!(distance_km(10.0, 10.0, 10.0, 10.0), 0.0);
    assert_eq!(unpack_country(pack_country("gb")), "GB");
    assert_eq!(pack_country("GBR"), 0);
}
