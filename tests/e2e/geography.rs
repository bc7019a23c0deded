//! Detection on real geography: the real DB-IP City Lite files (IPv4 and
//! IPv6, as DB-IP ships them) and an ASN file built from
//! `@ip-location-db/asn`, fetched by `scripts/geoip`. Opening them walks
//! 150 MB, so one test opens them once and checks everything that needs
//! them.

use detectors::GeoIp;
use schemas::{Action, Event};

use crate::support::real_geoip;

const T0_MS: i64 = 1_795_813_200_000; // 2026-11-27T21:00:00Z
const MIN_MS: i64 = 60_000;

fn call(ts_ms: i64, token: &str, ip: &str, ua: &str) -> Event {
    let mut e = Event::new(ts_ms, token, "aws", "s3:GetObject");
    e.src_ip = Some(ip.parse().unwrap());
    e.user_agent = Some(ua.into());
    e
}

/// Every decision an enforce-mode engine with the shipped defaults makes
/// over `events`, sharing `geoip`'s files.
fn judge(geoip: &GeoIp, mut events: Vec<Event>) -> Vec<schemas::Decision> {
    tokenwatch::scenario::sort_by_time(&mut events);
    tokenwatch::quality::score::detect(&events, geoip.clone())
}

#[test]
fn real_dbip_geography_decodes_and_judges_travel_sensibly() {
    let mut geoip = GeoIp::open(&real_geoip()).expect("the real DB-IP Lite files open");
    assert_eq!(
        geoip.warnings().len(),
        2,
        "DB-IP's empty descriptions: {:?}",
        geoip.warnings()
    );

    // Known addresses give DB-IP's own answers, coordinates included (read
    // from 32-bit floats), with the assumed radius, from both files.
    let london = geoip.lookup("81.2.69.142".parse().unwrap());
    assert_eq!(
        (london.country.as_deref(), london.city.as_deref()),
        (Some("GB"), Some("London"))
    );
    let (lat, lon) = (london.lat.unwrap(), london.lon.unwrap());
    assert!(
        (lat - 51.514).abs() < 0.01 && (lon + 0.091).abs() < 0.01,
        "{lat} {lon}"
    );
    assert_eq!(london.accuracy_km, Some(200));
    assert_eq!(london.asn, Some(20712));
    let google = geoip.lookup("8.8.8.8".parse().unwrap());
    assert_eq!(
        (google.country.as_deref(), google.city.as_deref()),
        (Some("US"), Some("Mountain View"))
    );
    assert_eq!(
        (google.asn, google.as_org.as_deref()),
        (Some(15169), Some("Google LLC"))
    );
    let v6 = geoip.lookup("2001:4860:4860::8888".parse().unwrap());
    assert!(
        v6.country.is_some() && v6.lat.is_some(),
        "IPv6 from the second file: {v6:?}"
    );
    assert_eq!(geoip.decode_errors, 0);

    // 30 CI-runner tokens hopping between AWS regions every 10 minutes for
    // a day: moves within one cloud's network are neither travel nor a new
    // country, so nothing is revoked, nor even alerted.
    let regions = [
        "3.80.0.10",   // Ashburn
        "52.8.0.10",   // San Jose
        "35.160.0.10", // Boardman
        "3.248.0.10",  // Dublin
        "18.184.0.10", // Frankfurt
        "13.112.0.10", // Tokyo
        "52.64.0.10",  // Sydney
    ];
    let mut events = Vec::new();
    for t in 0..30 {
        for job in 0..144 {
            let ip = regions[(t * 7 + job * 3 + job / 5) % regions.len()];
            let ts = T0_MS + job as i64 * 10 * MIN_MS + t as i64 * 1000;
            events.push(call(ts, &format!("ci-{t}"), ip, "aws-cli/2.15 Python/3.11"));
        }
    }
    let decisions = judge(&geoip, events);
    assert!(decisions.is_empty(), "CI runners: {decisions:#?}");

    // A phone on T-Mobile US and a service with two egress points of one
    // ISP: never revoked. A stolen key used from Tokyo's cloud with another
    // client, an hour after its owner's last call from London: revoked.
    let mut events = Vec::new();
    for i in 0..300 {
        let ts = T0_MS + i * 5 * MIN_MS;
        let phone = if i % 3 == 0 {
            "172.56.0.10"
        } else {
            "172.58.0.10"
        };
        events.push(call(ts, "phone", phone, "okhttp/4.12"));
        let egress = if i % 2 == 0 {
            "81.2.69.142"
        } else {
            "81.2.69.160"
        };
        events.push(call(ts, "svc", egress, "Boto3/1.34 Python/3.12"));
    }
    let steal_ts = T0_MS + 300 * 5 * MIN_MS + 60 * MIN_MS;
    events.push(call(steal_ts, "svc", "13.112.0.10", "python-requests/2.31"));
    let decisions = judge(&geoip, events);
    let revoked: Vec<&str> = decisions
        .iter()
        .filter(|d| d.action == Action::Revoke)
        .map(|d| d.token_id.as_str())
        .collect();
    assert_eq!(revoked, ["svc"], "{decisions:#?}");
    let stolen = decisions
        .iter()
        .find(|d| d.action == Action::Revoke)
        .unwrap();
    assert!(stolen.basis.len() >= 2, "{:?}", stolen.basis);
}

/// `check-config` opens the GeoIP databases: a file whose records exist
/// but do not decode fails it, naming the file and the network.
#[test]
fn check_config_fails_on_a_database_whose_records_do_not_decode() {
    let out =
        crate::support::check_example_config("/synthetic-city.mmdb\"", "/wrong-types-city.mmdb\"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("wrong-types-city.mmdb") && stderr.contains("198.51.100.0/24"),
        "{stderr}"
    );
    // The shipped example passes.
    let ok = crate::support::check_example_config("", "");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// The quality benchmark at CI size (README, "Detection quality"): with
/// the shipped defaults on real geography, every attack is revoked and no
/// benign token is, whatever its trap. The large run is in the README.
#[test]
fn quality_benchmark_revokes_every_attack_and_no_benign_token() {
    use tokenwatch::quality::{generate, score, world::World};

    let mut geoip = GeoIp::open(&real_geoip()).unwrap();
    let world = World::sample(&mut geoip, 60_000, 7);
    let stream = generate(&world, 150, 2, 1_795_737_600_000, 7);
    let result = score::run(&stream, geoip);
    println!("{}", result.table());
    let (attacks, benign) = (result.attacks_total(), result.benign());
    assert!(attacks.tokens >= 5 && benign.tokens >= 140);
    assert_eq!(attacks.revoked, attacks.tokens, "{}", result.table());
    assert_eq!(benign.revoked, 0, "{}", result.table());
    for trap in tokenwatch::quality::TRAPS {
        assert!(
            result.traps.contains_key(trap),
            "no {trap} token: {}",
            result.table()
        );
    }
}
