use std::path::PathBuf;

use super::*;

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/geoip"
    ))
    .join(name)
}

fn maxmind() -> GeoIp {
    let mut config = GeoIpConfig::new(fixture("GeoIP2-City-Test.mmdb"));
    config.asn_db = Some(fixture("GeoLite2-ASN-Test.mmdb"));
    config.anonymous_db = Some(fixture("GeoIP2-Anonymous-IP-Test.mmdb"));
    GeoIp::open(&config).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn reads_maxmind_city_layout() {
    let mut g = maxmind();
    let london = g.lookup(ip("81.2.69.142"));
    assert_eq!(london.country.as_deref(), Some("GB"));
    assert_eq!(london.city.as_deref(), Some("London"));
    assert_eq!(
        (london.lat, london.lon, london.accuracy_km),
        (Some(51.5142), Some(-0.0931), Some(10))
    );
    let changchun = g.lookup(ip("175.16.199.1"));
    assert_eq!(
        (changchun.country.as_deref(), changchun.city.as_deref()),
        (Some("CN"), Some("Changchun"))
    );
    assert_eq!(changchun.accuracy_km, Some(100));
    let romania = g.lookup(ip("2a02:d800::1"));
    assert_eq!(
        (romania.country.as_deref(), romania.city),
        (Some("RO"), None)
    );
}

#[test]
fn reads_asn_and_anonymous_flags() {
    let mut g = maxmind();
    let google = g.lookup(ip("1.0.0.1"));
    assert_eq!(
        (google.asn, google.as_org.as_deref()),
        (Some(15169), Some("Google Inc."))
    );
    let telstra = g.lookup(ip("1.128.0.1"));
    assert_eq!(telstra.asn, Some(1221));
    // The Anonymous-IP test data marks 81.2.69.0/24 as everything at once,
    // and 1.2.0.0/16 as a VPN only.
    let anon = g.lookup(ip("81.2.69.142")).anonymity;
    assert!(anon.vpn && anon.hosting && anon.proxy && anon.tor);
    let vpn = g.lookup(ip("1.2.0.1")).anonymity;
    assert!(vpn.vpn && !vpn.hosting && !vpn.tor);
    assert!(!g.lookup(ip("175.16.199.1")).anonymity.any());
}

#[test]
fn unknown_private_and_loopback_addresses_are_unknown() {
    let mut g = maxmind();
    for addr in [
        "10.0.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "8.8.8.8",
    ] {
        let info = g.lookup(ip(addr));
        assert_eq!((info.country, info.lat), (None, None), "{addr}");
    }
}

#[test]
fn an_address_outside_every_range_is_unknown_not_an_error() {
    let mut g = GeoIp::open(&GeoIpConfig::new(fixture("dbip-city-lite-test.mmdb"))).unwrap();
    assert_eq!(g.lookup(ip("2001:db9::1")), GeoInfo::default());
}

#[test]
fn reads_the_flat_dbip_lite_layout() {
    // Like the real files: float (not double) coordinates, no radius, and
    // an empty metadata description that `verify()` alone refuses.
    let mut g = GeoIp::open(&GeoIpConfig::new(fixture("dbip-city-lite-test.mmdb"))).unwrap();
    assert_eq!(g.warnings().len(), 1, "{:?}", g.warnings());
    assert!(
        g.warnings()[0].contains("description"),
        "{:?}",
        g.warnings()
    );
    let london = g.lookup(ip("81.2.69.142"));
    assert_eq!(
        (london.country.as_deref(), london.city.as_deref()),
        (Some("GB"), Some("London"))
    );
    let (lat, lon) = (london.lat.unwrap(), london.lon.unwrap());
    assert!((lat - 51.5142).abs() < 1e-4 && (lon + 0.0931).abs() < 1e-4);
    assert_eq!(
        london.accuracy_km,
        Some(DEFAULT_ASSUMED_ACCURACY_KM),
        "no radius in the file: the assumed one, never 0"
    );
    let berlin = g.lookup(ip("2001:db8:1::7"));
    assert_eq!(berlin.country.as_deref(), Some("DE"));
    assert_eq!(berlin.asn, None);
}

#[test]
fn corrupt_databases_fail_at_open_with_a_clear_message() {
    for name in [
        "GeoIP2-City-Test-Broken-Double-Format.mmdb",
        "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        "MaxMind-DB-test-broken-pointers-24.mmdb",
        "MaxMind-DB-test-broken-search-tree-24.mmdb",
    ] {
        let err = GeoIp::open(&GeoIpConfig::new(fixture(name)))
            .err()
            .unwrap_or_else(|| panic!("{name} opened"));
        let text = err.to_string();
        assert!(text.contains(name) && text.contains("(city)"), "{text}");
    }
    let missing = GeoIp::open(&GeoIpConfig::new(fixture("nope.mmdb")))
        .err()
        .unwrap();
    assert!(missing.to_string().contains("nope.mmdb"));
    let not_a_db = GeoIp::open(&GeoIpConfig::new(fixture("LICENSE-MIT")))
        .err()
        .unwrap();
    assert!(not_a_db.to_string().contains("LICENSE-MIT"));
}

#[test]
fn cache_serves_repeats_and_matches_uncached_lookups() {
    let mut g = maxmind();
    let first = g.lookup(ip("89.160.20.120"));
    let again = g.lookup(ip("89.160.20.120"));
    assert_eq!(first, again);
    assert_eq!((g.lookups, g.cache_hits), (1, 1));
    assert_eq!(g.lookup_uncached(ip("89.160.20.120")), first);
    assert_eq!(first.country.as_deref(), Some("SE"));
}

#[test]
fn reload_picks_up_a_replaced_file_and_keeps_the_old_one_on_error() {
    let dir = std::env::temp_dir().join(format!("tokenwatch-geoip-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("city.mmdb");
    std::fs::copy(fixture("GeoIP2-City-Test.mmdb"), &path).unwrap();
    let mut g = GeoIp::open(&GeoIpConfig::new(&path)).unwrap();
    assert_eq!(g.lookup(ip("81.2.69.142")).accuracy_km, Some(10));
    assert!(!g.changed_on_disk());

    // A corrupt replacement is refused; the old data stays.
    std::fs::copy(fixture("GeoIP2-City-Test-Invalid-Node-Count.mmdb"), &path).unwrap();
    assert!(g.changed_on_disk());
    assert!(g.reload().is_err());
    assert_eq!(g.lookup(ip("81.2.69.142")).city.as_deref(), Some("London"));

    // A good replacement with other data is picked up, cache included.
    std::fs::copy(fixture("dbip-city-lite-test.mmdb"), &path).unwrap();
    g.reload().unwrap();
    assert_eq!(
        g.lookup(ip("81.2.69.142")).accuracy_km,
        Some(DEFAULT_ASSUMED_ACCURACY_KM),
        "DB-IP data after reload"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reads_the_synthetic_fixtures_the_demo_embeds() {
    let mut config = GeoIpConfig::new(fixture("synthetic-city.mmdb"));
    config.asn_db = Some(fixture("synthetic-asn.mmdb"));
    let mut g = GeoIp::open(&config).unwrap();
    let london = g.lookup(ip("20.0.7.9"));
    assert_eq!(
        (
            london.country.as_deref(),
            london.city.as_deref(),
            london.accuracy_km
        ),
        (Some("GB"), Some("London"), Some(5))
    );
    assert_eq!(
        (london.asn, london.as_org.as_deref()),
        (Some(64500), Some("Synthetic Net 64500"))
    );
    assert!(
        g.lookup(ip("23.255.200.1")).country.is_some(),
        "covers 20.0.0.0/6"
    );
}

#[test]
fn a_file_whose_records_do_not_decode_fails_at_open_naming_the_network() {
    let err = GeoIp::open(&GeoIpConfig::new(fixture("wrong-types-city.mmdb")))
        .err()
        .expect("a file that would enrich everything to unknown is refused");
    let text = err.to_string();
    assert!(
        text.contains("wrong-types-city.mmdb") && text.contains("198.51.100.0/24"),
        "{text}"
    );
}

#[test]
fn an_undecodable_record_met_at_lookup_is_unknown_and_counted() {
    let path = fixture("wrong-types-city.mmdb");
    let bytes = std::fs::read(&path).unwrap();
    let db = Database::from_bytes(bytes, &path, Role::City, 200).unwrap();
    let mut g = GeoIp::assemble(GeoIpConfig::new(&path), vec![db], None, None);
    assert_eq!(g.lookup(ip("198.51.100.7")), GeoInfo::default());
    assert_eq!(g.decode_errors, 1);
    assert_eq!(
        g.lookup(ip("203.0.113.1")),
        GeoInfo::default(),
        "not covered: unknown, not an error"
    );
    assert_eq!(g.decode_errors, 1);
}

#[test]
fn several_city_files_are_asked_in_order() {
    let mut config = GeoIpConfig::new(fixture("dbip-city-lite-test.mmdb"));
    config.city_db.push(CityDb::Entry(CityDbEntry {
        path: fixture("GeoIP2-City-Test.mmdb"),
        assumed_accuracy_km: Some(50),
    }));
    let mut g = GeoIp::open(&config).unwrap();
    // In both: the first file answers (DB-IP, assumed radius).
    assert_eq!(g.lookup(ip("81.2.69.142")).accuracy_km, Some(200));
    // Only in the second: MaxMind's own radius.
    let se = g.lookup(ip("89.160.20.120"));
    assert_eq!(
        (se.country.as_deref(), se.accuracy_km),
        (Some("SE"), Some(76))
    );
}

#[test]
fn city_db_takes_a_path_a_list_or_tables() {
    let one: GeoIpConfig = toml::from_str(r#"city_db = "a.mmdb""#).unwrap();
    assert_eq!(one.city_db, vec![CityDb::Path("a.mmdb".into())]);
    let many: GeoIpConfig =
        toml::from_str(r#"city_db = ["v4.mmdb", { path = "v6.mmdb", assumed_accuracy_km = 300 }]"#)
            .unwrap();
    assert_eq!(many.city_db.len(), 2);
    assert_eq!(many.city_db[1].assumed_accuracy_km(200), 300);
    let zero: GeoIpConfig = toml::from_str("city_db = [\"x\"]\nassumed_accuracy_km = 0").unwrap();
    assert!(
        zero.validate()
            .iter()
            .any(|p| p.contains("assumed_accuracy_km"))
    );
}

#[test]
fn inspect_reports_layout_sample_and_lookups() {
    let files = [
        fixture("dbip-city-lite-test.mmdb"),
        fixture("GeoLite2-ASN-Test.mmdb"),
    ];
    let (report, ok) = inspect(&files, &[ip("81.2.69.142"), ip("1.0.0.1")], 100);
    assert!(ok, "{report}");
    assert!(report.contains("DB-IP Lite flat layout"), "{report}");
    assert!(report.contains("ASN (GeoLite2-ASN)"), "{report}");
    assert!(report.contains("81.2.69.142: GB · London"), "{report}");
    assert!(report.contains("AS15169"), "{report}");
    let (report, ok) = inspect(&[fixture("wrong-types-city.mmdb")], &[], 100);
    assert!(
        !ok && report.contains("first failure: 198.51.100.0/24"),
        "{report}"
    );
}
