use schemas::Event;

use super::*;
use crate::geoip::Anonymity;
use crate::testkit::*;

fn harness(config: GeoConfig) -> Harness<GeoDetector> {
    let networks = Networks::new(&crate::networks::NetworksConfig::default());
    Harness::new(
        GeoDetector::new(config, learning_one_day(), networks),
        T0_MS,
    )
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
    let mut h = harness(GeoConfig::default());
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

/// An event at (lat, lon) from `ip` on `asn`, with the assumed DB-IP radius.
fn egress(ts_ms: i64, ip: &str, country: &str, lat: f64, lon: f64, asn: u32) -> Event {
    at(event(ts_ms), ip, country, lat, lon, 200, asn)
}

#[test]
fn two_known_egress_points_800_km_apart_are_never_travel_for_days() {
    // A service with egress in Hamburg (AS3320) and Milan (AS3269), 900 km
    // apart, with MaxMind-sized radii so that only what the token has
    // learnt can keep it quiet. Day 0: it moves between them slowly
    // (plausible speeds), learning both. Then for three days it alternates
    // every minute.
    let hamburg = |ts| at(event(ts), "198.51.100.1", "DE", 53.55, 9.99, 5, 3320);
    let milan = |ts| at(event(ts), "203.0.113.9", "IT", 45.46, 9.19, 5, 3269);
    let mut h = harness(GeoConfig::default());
    let mut findings = Vec::new();
    for i in 0..6 {
        let ts = T0_MS + i * 4 * HOUR_MS;
        let e = if i % 2 == 0 { hamburg(ts) } else { milan(ts) };
        findings.extend(h.feed(&e));
    }
    for minute in 0..(3 * 24 * 60) {
        let ts = T0_MS + DAY_MS + minute * MIN_MS;
        let e = if minute % 2 == 0 {
            hamburg(ts)
        } else {
            milan(ts)
        };
        findings.extend(h.feed(&e));
    }
    let travel: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == "impossible_travel")
        .collect();
    assert!(travel.is_empty(), "{travel:?}");

    // The first jump to another continent, from a new ASN, is flagged.
    let f = h.feed(&changchun(event(T0_MS + 4 * DAY_MS + MIN_MS)));
    let travel = f
        .iter()
        .find(|f| f.kind == "impossible_travel")
        .expect("flagged");
    assert_eq!(travel.confidence, 1.0);
    assert!(f.iter().any(|f| f.kind == "new_country"));
}

#[test]
fn the_same_network_within_one_country_is_not_travel() {
    // Two addresses of one ISP 820 km apart (Vancouver, Calgary) in the
    // same minute: what DB-IP said about the 17% false revocations.
    let mut h = harness(GeoConfig::default());
    h.feed(&at(
        event(T0_MS),
        "198.51.100.1",
        "CA",
        49.28,
        -123.12,
        5,
        812,
    ));
    let f = h.feed(&at(
        event(T0_MS + 1000),
        "198.51.100.200",
        "CA",
        51.05,
        -114.07,
        5,
        812,
    ));
    assert!(f.is_empty(), "{f:?}");
    // Another country on the same ASN is still travel.
    let f = h.feed(&at(
        event(T0_MS + 2000),
        "198.51.100.99",
        "JP",
        35.68,
        139.69,
        5,
        812,
    ));
    assert!(f.iter().any(|f| f.kind == "impossible_travel"), "{f:?}");
}

#[test]
fn dbip_radii_absorb_an_isps_spread_of_addresses() {
    // Without a radius in the file, 200 km is assumed at each end: 820 km
    // becomes 420 km, under min_distance_km, even across two ASNs.
    let mut h = harness(GeoConfig::default());
    h.feed(&egress(T0_MS, "198.51.100.1", "CA", 49.28, -123.12, 812));
    let f = h.feed(&egress(
        T0_MS + 1000,
        "198.51.100.2",
        "CA",
        51.05,
        -114.07,
        577,
    ));
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn cloud_and_mobile_networks_make_travel_low_confidence() {
    let aws = |ts, ip, country, lat, lon, asn| {
        let mut e = at(event(ts), ip, country, lat, lon, 5, asn);
        e.as_org = Some("Amazon.com, Inc.".into());
        e
    };
    // A CI runner hops from AWS us-east-1 (AS14618) to AWS eu-west-1
    // (AS16509) in a minute: one cloud's own network, not travel at all.
    let mut h = harness(GeoConfig::default());
    h.feed(&aws(T0_MS, "198.51.100.1", "US", 39.04, -77.49, 14618));
    let f = h.feed(&aws(
        T0_MS + MIN_MS,
        "203.0.113.1",
        "IE",
        53.35,
        -6.26,
        16509,
    ));
    assert!(f.is_empty(), "{f:?}");
    // From one cloud to another: reported, at low confidence.
    let f = h.feed(&at(
        event(T0_MS + 2 * MIN_MS),
        "203.0.113.50",
        "JP",
        35.68,
        139.69,
        5,
        15169,
    ));
    let travel = f
        .iter()
        .find(|f| f.kind == "impossible_travel")
        .expect("reported");
    assert!(travel.confidence < 0.7, "{}", travel.confidence);
    assert_eq!(travel.evidence.facts["from_network"], "hosting");
    assert_eq!(travel.evidence.facts["to_network"], "hosting");

    // A phone on T-Mobile US placed at two far apart gateways: the
    // carrier's own network. Then on a Mexican carrier: low confidence.
    let mut h = harness(GeoConfig::default());
    h.feed(&at(
        event(T0_MS),
        "198.51.100.1",
        "US",
        47.6,
        -122.3,
        5,
        21928,
    ));
    let f = h.feed(&at(
        event(T0_MS + MIN_MS),
        "198.51.100.9",
        "US",
        25.76,
        -80.19,
        5,
        21928,
    ));
    assert!(f.is_empty(), "{f:?}");
    let f = h.feed(&at(
        event(T0_MS + 2 * MIN_MS),
        "198.51.100.77",
        "MX",
        19.4,
        -99.1,
        5,
        8151,
    ));
    let travel = f
        .iter()
        .find(|f| f.kind == "impossible_travel")
        .expect("reported");
    assert!(travel.confidence < 0.7);
    assert_eq!(travel.evidence.facts["to_network"], "mobile");
}
