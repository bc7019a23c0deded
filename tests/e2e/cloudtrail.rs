//! CloudTrail input end to end: a stolen access key is used from a new
//! country and network, then pulls objects out of S3 in a burst. The
//! pipeline reads CloudTrail records (single ones and delivered files) from
//! the real broker, and the `aws_iam` adapter deactivates the key in moto's
//! IAM, with a signed alert.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use detectors::{GeoIp, GeoIpConfig};
use revoker::testing::{Reply, TestServer};
use revoker::{IssuerConfig, WebhookConfig};
use schemas::{Action, Format, Mode};
use serde_json::json;

use crate::support::{self, create_topic, produce, python, start, unique_name, until};

const WHSEC: &str = "whsec_c2VjcmV0LWZvci1jbG91ZHRyYWlsLXRlc3Q=";
const MIN_MS: i64 = 60_000;

struct Place {
    ip: IpAddr,
    country: String,
    asn: u32,
    lat: f64,
    lon: f64,
}

fn distance_km(a: &Place, b: &Place) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let (dp, dl) = (p2 - p1, (b.lon - a.lon).to_radians());
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Two places of the synthetic GeoIP data in different countries and
/// networks, near enough that the trip is possible: the finding must be the
/// new country and network, not impossible travel.
fn home_and_away(geoip: &GeoIpConfig) -> (Place, Place) {
    let mut g = GeoIp::open(geoip).unwrap();
    let mut places = (0..512u32).filter_map(|n| {
        let ip = IpAddr::from([20, (n / 4 % 256) as u8, ((n % 4) * 64 + 7) as u8, 9]);
        let info = g.lookup(ip);
        Some(Place {
            ip,
            country: info.country?.to_string(),
            asn: info.asn?,
            lat: info.lat?,
            lon: info.lon?,
        })
    });
    let home = places.next().unwrap();
    let away = places
        .find(|p| p.country != home.country && p.asn != home.asn && distance_km(&home, p) < 2000.0)
        .unwrap();
    (home, away)
}

/// One CloudTrail record of `key` (of IAM user `user`).
fn record(
    key: &str,
    user: &str,
    ts_ms: i64,
    ip: IpAddr,
    name: &str,
    bytes: u64,
    n: usize,
) -> serde_json::Value {
    let time = schemas::time::format_rfc3339_ms(ts_ms);
    json!({
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": format!("arn:aws:iam::123456789012:user/{user}"),
            "accountId": "123456789012",
            "accessKeyId": key,
            "userName": user
        },
        "eventTime": time,
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": ip.to_string(),
        "userAgent": "[aws-cli/2.15.0 Python/3.11.6 Linux/6.5.0]",
        "requestParameters": { "bucketName": "acme-exports", "key": format!("reports/{n}.csv") },
        "additionalEventData": { "bytesTransferredIn": 0.0, "bytesTransferredOut": bytes as f64 },
        "requestID": format!("{key}-{n}"),
        "eventID": format!("{key}-event-{n}"),
        "readOnly": true,
        "eventType": "AwsApiCall",
        "managementEvent": false,
        "recipientAccountId": "123456789012",
        "eventCategory": "Data"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stolen_access_key_from_a_new_country_then_an_s3_burst_is_revoked_in_moto() {
    let moto = python::moto();
    let user = unique_name("alice").replace('-', "");
    let (ok, stolen) = python::run("iam.py", &[&moto, "create", &user], None);
    assert!(ok, "cannot create the IAM user in moto: {stolen}");
    let colleague = unique_name("bob").replace('-', "");
    let (ok, benign) = python::run("iam.py", &[&moto, "create", &colleague], None);
    assert!(ok, "{benign}");

    let fixtures =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geoip"));
    let mut geoip = GeoIpConfig::new(fixtures.join("synthetic-city.mmdb"));
    geoip.asn_db = Some(fixtures.join("synthetic-asn.mmdb"));
    let (home, away) = home_and_away(&geoip);

    // Six hours of ordinary use from home by both keys, delivered as
    // CloudTrail files of 30 records; four hours later the stolen key, from
    // abroad, as single records. All in the past, within the clock skew.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start_ms = now - 12 * 60 * MIN_MS;
    let mut history = Vec::new();
    for (key, name) in [(&stolen, &user), (&benign, &colleague)] {
        for n in 0..180 {
            let ts = start_ms + n as i64 * 2 * MIN_MS;
            let action = if n % 3 == 0 {
                "ListObjects"
            } else {
                "GetObject"
            };
            history.push((
                key.clone(),
                record(key, name, ts, home.ip, action, 20_000, n),
            ));
        }
    }
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for key in [&stolen, &benign] {
        let mine: Vec<serde_json::Value> = history
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, r)| r.clone())
            .collect();
        for file in mine.chunks(30) {
            records.push((
                key.clone(),
                json!({ "Records": file }).to_string().into_bytes(),
            ));
        }
    }
    // The colleague's first file also holds a broken record, refused alone
    // while the other 30 are read, and an AWS service event, which no key
    // made: skipped, not refused.
    let mut broken = history[180].1.clone();
    broken["eventTime"] = "yesterday".into();
    let mut service = history[180].1.clone();
    service["userIdentity"] = json!({ "type": "AWSService", "invokedBy": "s3.amazonaws.com" });
    service["eventType"] = "AwsServiceEvent".into();
    {
        let first_file = &mut records[180 / 30].1;
        let mut file: serde_json::Value = serde_json::from_slice(first_file).unwrap();
        let elements = file["Records"].as_array_mut().unwrap();
        elements.insert(7, broken.clone());
        elements.push(service);
        *first_file = file.to_string().into_bytes();
    }
    let attack_ms = start_ms + 10 * 60 * MIN_MS;
    for n in 0..120 {
        let ts = attack_ms + n as i64 * 500;
        let r = record(&stolen, &user, ts, away.ip, "GetObject", 40 << 20, 1000 + n);
        records.push((stolen.clone(), r.to_string().into_bytes()));
    }
    let total_events = 2 * 180 + 120;
    // Hostile records among them, each refused with its own reason.
    let valid = record(&benign, &colleague, start_ms, home.ip, "GetObject", 1, 9999).to_string();
    let member = |value: &str| format!("{{\"x\":{value},{}", &valid[1..]).into_bytes();
    let mut invalid_utf8 = valid.clone().into_bytes();
    invalid_utf8.insert(20, 0xff);
    let future = record(
        &benign,
        &colleague,
        now + 3 * 86_400_000,
        home.ip,
        "GetObject",
        1,
        9998,
    );
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "too_deep",
            member(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
        ),
        (
            "too_many_items",
            member(&format!("[{}0]", "0,".repeat(50_000))),
        ),
        ("invalid_utf8", invalid_utf8),
        ("out_of_range", member("1e999")),
        ("timestamp_skew", future.to_string().into_bytes()),
        ("too_large", vec![b' '; 2 << 20]),
    ];
    records.extend(hostile.iter().map(|(_, r)| (benign.clone(), r.clone())));

    let topic = unique_name("cloudtrail-events");
    create_topic(&topic, 2).await;
    let mut config = support::config("cloudtrail", &topic).await;
    config.ingest.format = Format::Cloudtrail;
    config.detectors.geoip = Some(geoip);
    config.detectors.learning.min_history = Duration::from_secs(2 * 3600);
    config.detectors.volume.warmup = Duration::from_secs(3600);
    config.decision.mode = Mode::Enforce;
    let hooks = TestServer::start(Reply::status(204)).await;
    unsafe {
        std::env::set_var("TW_E2E_CT_AWS_ID", "testing");
        std::env::set_var("TW_E2E_CT_AWS_SECRET", "testing");
        std::env::set_var("TW_E2E_CT_WHSEC", WHSEC);
    }
    config.revoker.issuers.insert(
        "aws".into(),
        IssuerConfig::AwsIam {
            endpoint: url::Url::parse(&format!("{moto}/")).unwrap(),
            region: "us-east-1".into(),
            access_key_id_env: "TW_E2E_CT_AWS_ID".into(),
            secret_access_key_env: "TW_E2E_CT_AWS_SECRET".into(),
            session_token_env: None,
        },
    );
    config.revoker.webhooks.push(WebhookConfig {
        url: hooks.url("/hooks"),
        secret_envs: vec!["TW_E2E_CT_WHSEC".into()],
        min_action: Action::Alert,
        retry_schedule: vec![Duration::from_millis(50)],
        timeout: Duration::from_secs(5),
        allow_loopback: true,
    });

    let run = start(&config).await;
    until("the consumer to join", Duration::from_secs(30), || {
        run.metrics.assigned_partitions.load(Relaxed) > 0
    })
    .await;
    produce(&topic, &records).await;
    until(
        "every CloudTrail event to be processed",
        Duration::from_secs(120),
        || run.stats.events.load(Relaxed) >= total_events,
    )
    .await;
    let status = || python::run("iam.py", &[&moto, "status", &user, &stolen], None).1;
    let mut inactive = false;
    until(
        "moto to say the stolen key is inactive",
        Duration::from_secs(30),
        || {
            inactive = inactive || status() == "Inactive";
            inactive
        },
    )
    .await;
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();

    assert_eq!(run.metrics.dead_lettered_total(), hostile.len() as u64 + 1);
    assert_eq!(run.metrics.skipped.load(Relaxed), 1, "the service event");
    let dead = support::read_records(
        &config.ingest.dead_letter_topic,
        hostile.len() + 1,
        Duration::from_secs(30),
    )
    .await;
    let (elements, whole): (Vec<_>, Vec<_>) = dead
        .iter()
        .partition(|r| r.header("tokenwatch.source.element").is_some());
    let mut reasons: Vec<&str> = whole
        .iter()
        .filter_map(|r| r.header("tokenwatch.reason"))
        .collect();
    reasons.sort();
    let mut expected: Vec<&str> = hostile.iter().map(|(reason, _)| *reason).collect();
    expected.sort();
    assert_eq!(
        reasons, expected,
        "each hostile record dead-lettered with its reason"
    );
    // The broken record of a file: dead-lettered alone, with its place.
    assert_eq!(elements.len(), 1);
    let element = elements[0];
    assert_eq!(
        element.header("tokenwatch.reason"),
        Some("invalid_timestamp")
    );
    assert_eq!(element.header("tokenwatch.source.element"), Some("7"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&element.payload).unwrap(),
        broken
    );
    assert_eq!(run.stats.events.load(Relaxed), total_events);
    assert_eq!(
        python::run("iam.py", &[&moto, "status", &colleague, &benign], None).1,
        "Active",
        "the colleague's key, used only from home, stays active"
    );

    let messages = support::webhook_messages(&hooks);
    python::verify_webhooks(WHSEC, &messages)
        .unwrap_or_else(|e| panic!("a webhook did not verify: {e}"));
    let payloads: Vec<serde_json::Value> = messages
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).unwrap())
        .collect();
    python::validate_payloads(&payloads).unwrap_or_else(|e| panic!("{e}"));
    let text = serde_json::Value::from(payloads.clone()).to_string();
    assert!(
        !text.contains(&benign),
        "no alert about the colleague's key"
    );
    // Webhooks are delivered concurrently, so they may arrive out of order:
    // put the decisions in the order of the events that triggered them.
    let mut decisions: Vec<&serde_json::Value> = payloads
        .iter()
        .filter(|p| p["type"] == "tokenwatch.decision")
        .map(|p| &p["data"])
        .collect();
    decisions.sort_by_key(|d| d["event_ts_ms"].as_i64());
    assert!(
        decisions
            .iter()
            .all(|d| d["token_id"] == stolen.as_str() && d["issuer"] == "aws")
    );
    let kinds = |d: &serde_json::Value| -> Vec<String> {
        d["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["kind"].as_str().map(str::to_owned))
            .collect()
    };
    let first = decisions
        .first()
        .unwrap_or_else(|| panic!("no decision: {text}"));
    eprintln!(
        "{stolen}: first decision {} with {:?}, from {} (AS{}) after {} (AS{})",
        first["action"],
        kinds(first),
        away.country,
        away.asn,
        home.country,
        home.asn
    );
    // The new country and network alone alert (risk 0.8, under revoke_at
    // 0.9); the burst that follows revokes.
    assert_eq!(first["action"], "alert", "{text}");
    assert_eq!(kinds(first), ["new_country", "new_asn"]);
    let revoke = decisions
        .iter()
        .find(|d| d["action"] == "revoke")
        .unwrap_or_else(|| panic!("no revoke decision: {text}"));
    assert!(kinds(revoke).contains(&"mass_export".to_string()), "{text}");
    let all: Vec<String> = decisions.iter().flat_map(|d| kinds(d)).collect();
    assert!(!all.iter().any(|k| k == "impossible_travel"), "{all:?}");
    let revoked: Vec<_> = payloads
        .iter()
        .filter(|p| p["type"] == "tokenwatch.revocation")
        .collect();
    assert_eq!(revoked.len(), 1, "one revocation message: {text}");
    assert_eq!(revoked[0]["data"]["revocation"]["state"], "revoked");
    assert_eq!(revoked[0]["data"]["token_id"], stolen.as_str());
}
