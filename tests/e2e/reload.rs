//! Policy rules reload without a restart: the real binary, a config file
//! rewritten under it, and SIGHUP. A bad new rule set keeps the rules in
//! force and says so.

use std::process::{Child, Stdio};
use std::time::Duration;

use tokenwatch::Config;

use crate::support::{self, create_topic, temp_dir, tokenwatch, unique_name, until};

/// One sample from `/metrics`, read with a plain HTTP/1.0 request so the
/// polling stays synchronous.
pub fn metric(admin: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Stops the binary if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hangup(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `base` with the `[[detectors.policy.rules]]` of `rules`, as TOML.
fn with_rules(base: &Config, rules: &str) -> String {
    #[derive(serde::Deserialize)]
    struct File {
        detectors: Detectors,
    }
    #[derive(serde::Deserialize)]
    struct Detectors {
        policy: detectors::policy::PolicyConfig,
    }
    let file: File = toml::from_str(rules).unwrap();
    let mut config = base.clone();
    config.detectors.policy = file.detectors.policy;
    toml::to_string(&config).unwrap()
}

const ADMIN_DELETE: &str = r#"
[[detectors.policy.rules]]
name = "admin_delete"
when = "action LIKE 'DELETE /admin/%'"
"#;

const TYPO: &str = r#"
[[detectors.policy.rules]]
name = "typo"
when = "contry = 'FR'"
"#;

const FRANCE: &str = r#"
[[detectors.policy.rules]]
name = "france"
when = "country = 'FR'"
action = "revoke"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_and_a_bad_set_keeps_the_old_one() {
    let topic = unique_name("reload-events");
    create_topic(&topic, 1).await;
    let mut config = support::config("reload", &topic).await;
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    config.admin.probe_listen = admin;
    // Files are checked often, so the test sees checks after each SIGHUP
    // instead of finishing before the first one.
    config.detectors.file_check_interval = Duration::from_millis(50);
    let dir = temp_dir();
    let path = dir.join("tokenwatch.toml");
    std::fs::write(&path, with_rules(&config, ADMIN_DELETE)).unwrap();
    let log = dir.join("run.log");
    let child = tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let admin = admin.to_string();
    let read = |name: &'static str| {
        let admin = admin.clone();
        move || metric(&admin, name)
    };
    let (rules, failures, reloads, plans, checks) = (
        read("tokenwatch_policy_rules"),
        read("tokenwatch_policy_reload_failures_total"),
        read("tokenwatch_policy_reloads_total"),
        read("tokenwatch_policy_plans_total"),
        read("tokenwatch_file_checks_total"),
    );
    // Waits for the next file check.
    let just_checked = || {
        let checks = checks.clone();
        async move {
            let from = checks().unwrap_or(0.0);
            until("a file check", Duration::from_secs(30), || {
                checks().unwrap_or(0.0) > from
            })
            .await;
        }
    };
    // Waits until the files have been checked three more times.
    let checked = |what: &'static str| {
        let checks = checks.clone();
        async move {
            let from = checks().unwrap_or(0.0);
            until(what, Duration::from_secs(30), || {
                checks().unwrap_or(0.0) >= from + 3.0
            })
            .await;
        }
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    until(
        &format!("the admin API (log {})", log.display()),
        Duration::from_secs(60),
        || rules() == Some(1.0),
    )
    .await;

    // Right after a check, so the next one (50 ms away) comes after the
    // SIGHUP: the change is the SIGHUP's to load.
    just_checked().await;
    std::fs::write(&path, with_rules(&config, &format!("{ADMIN_DELETE}{TYPO}"))).unwrap();
    hangup(&child.0);
    until(
        "the bad reload to be refused",
        Duration::from_secs(30),
        || failures() == Some(1.0),
    )
    .await;
    checked("file checks after the refused reload").await;
    assert_eq!(
        failures(),
        Some(1.0),
        "a SIGHUP reload is not repeated by the file check"
    );
    assert_eq!(rules(), Some(1.0), "the old rule stays");
    let text = log_text();
    assert!(text.contains("the policy rules in force stay"), "{text}");
    assert!(
        text.contains("rule `typo`") && text.contains("contry"),
        "{text}"
    );

    just_checked().await;
    std::fs::write(
        &path,
        with_rules(&config, &format!("{ADMIN_DELETE}{FRANCE}")),
    )
    .unwrap();
    hangup(&child.0);
    until("the good reload", Duration::from_secs(30), || {
        rules() == Some(2.0)
    })
    .await;
    checked("file checks after the good reload").await;
    assert_eq!(
        reloads(),
        Some(1.0),
        "a SIGHUP reload is not repeated by the file check"
    );
    // One plan at startup, two for the new set; the refused set made none
    // that stayed (it was planned and dropped: counted only when in force).
    assert_eq!(plans(), Some(3.0));
    // The good reload's time is there for alerting on stale rules.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = metric(
        &admin,
        "tokenwatch_last_reload_timestamp_seconds{what=\"policy\"}",
    )
    .expect("last reload time");
    assert!((now - 120.0..=now + 1.0).contains(&at), "{at} vs {now}");

    assert!(support::terminate(&mut child.0).success(), "{}", log_text());
}

/// Issue 11, section 8: GeoIP databases and the metadata file reload in the
/// running pipeline, on a file change and on SIGHUP, and a bad file keeps
/// the one in use. Effects are read from decisions: a policy rule alerts on
/// calls from GB, and tokens bound to 10.0.0.0/8 are revoked on a call
/// from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geoip_and_metadata_files_reload_live_and_a_bad_file_keeps_the_old_one() {
    use revoker::IssuerConfig;
    use revoker::testing::{Reply, TestServer};
    let fixtures =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geoip"));
    let topic = unique_name("hot-events");
    create_topic(&topic, 1).await;
    let issuer = TestServer::start(Reply::status(200)).await;
    let mut config = support::config("hot", &topic).await;
    let dir = temp_dir();
    let (city, tokens) = (dir.join("city.mmdb"), dir.join("tokens.ndjson"));
    // synthetic-city knows nothing of 81.2.69.142; MaxMind's test file
    // puts it in London.
    std::fs::copy(fixtures.join("synthetic-city.mmdb"), &city).unwrap();
    let bound = |ids: &[&str]| -> String {
        ids.iter()
            .map(|t| format!("{{\"issuer\":\"oauth\",\"token_id\":\"{t}\",\"bound_cidrs\":[\"10.0.0.0/8\"]}}\n"))
            .collect()
    };
    std::fs::write(&tokens, bound(&["t1"])).unwrap();
    config.detectors.geoip = Some(detectors::GeoIpConfig::new(city.clone()));
    config.detectors.metadata_file = Some(tokens.clone());
    config.detectors.file_check_interval = Duration::from_millis(200);
    config.decision.mode = schemas::Mode::Enforce;
    config.revoker.issuers.insert(
        "oauth".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    config.admin.enabled = false;
    let path = dir.join("tokenwatch.toml");
    std::fs::write(
        &path,
        with_rules(
            &config,
            "[[detectors.policy.rules]]\nname = \"from_gb\"\nwhen = \"country = 'GB'\"\n",
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let child = tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let logged = |line: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(line)
            .count()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let call = |token: &str, ip: [u8; 4]| {
        let mut e = schemas::Event::new(now(), token, "oauth", "GET /v1/orders");
        e.src_ip = Some(std::net::IpAddr::from(ip));
        (token.to_string(), e.to_json().into_bytes())
    };
    let gb_alerts = || logged("from_gb");
    until(
        &format!("the pipeline to start (log {})", log.display()),
        Duration::from_secs(60),
        || logged("Ingest started.") > 0,
    )
    .await;

    // Before any reload: no GB, and t2 is bound to nothing.
    support::produce(
        &topic,
        &[call("g1", [81, 2, 69, 142]), call("t2", [203, 0, 113, 2])],
    )
    .await;
    // A marker event that is revoked, so we know both were judged.
    support::produce(&topic, &[call("t1", [203, 0, 113, 1])]).await;
    until("t1 to be revoked", Duration::from_secs(30), || {
        support::revoked_tokens(&issuer) == ["t1"]
    })
    .await;
    assert_eq!(
        gb_alerts(),
        0,
        "81.2.69.142 is unknown to the first database"
    );

    // A file change, no signal: the metadata file binds t2 now.
    std::fs::write(&tokens, bound(&["t1", "t2"])).unwrap();
    until(
        "the metadata file to reload on its change",
        Duration::from_secs(30),
        || logged("Token metadata file reloaded.") >= 1,
    )
    .await;
    support::produce(&topic, &[call("t2", [203, 0, 113, 2])]).await;
    until("t2 to be revoked", Duration::from_secs(30), || {
        support::revoked_tokens(&issuer) == ["t1", "t2"]
    })
    .await;

    // SIGHUP after the GeoIP file is replaced: 81.2.69.142 is in GB now.
    let next = dir.join("city.next");
    std::fs::copy(fixtures.join("GeoIP2-City-Test.mmdb"), &next).unwrap();
    std::fs::rename(&next, &city).unwrap();
    hangup(&child.0);
    until(
        "the GeoIP databases to reload",
        Duration::from_secs(30),
        || logged("GeoIP databases reloaded.") >= 1,
    )
    .await;
    support::produce(&topic, &[call("g2", [81, 2, 69, 142])]).await;
    until(
        "an alert for the call from GB",
        Duration::from_secs(30),
        || gb_alerts() >= 1,
    )
    .await;

    // Bad files and SIGHUP: both refused, the ones in use stay.
    std::fs::write(&next, b"not a MaxMind database").unwrap();
    std::fs::rename(&next, &city).unwrap();
    std::fs::write(&tokens, "{ not json\n").unwrap();
    hangup(&child.0);
    until(
        "both bad files to be refused",
        Duration::from_secs(30),
        || logged("GeoIP reload failed") >= 1 && logged("Token metadata file has errors") >= 1,
    )
    .await;
    let alerts = gb_alerts();
    support::produce(
        &topic,
        &[call("g3", [81, 2, 69, 142]), call("t3", [203, 0, 113, 3])],
    )
    .await;
    std::fs::write(&tokens, bound(&["t1", "t2", "t3"])).unwrap();
    hangup(&child.0);
    until(
        "the good metadata file to reload",
        Duration::from_secs(30),
        || logged("Token metadata file reloaded.") >= 3,
    )
    .await;
    support::produce(&topic, &[call("t3", [203, 0, 113, 3])]).await;
    until("t3 to be revoked", Duration::from_secs(30), || {
        support::revoked_tokens(&issuer) == ["t1", "t2", "t3"]
    })
    .await;
    assert!(
        gb_alerts() > alerts,
        "the GB call after the bad GeoIP file still got a country"
    );

    let mut child = child;
    assert!(support::terminate(&mut child.0).success());
}
