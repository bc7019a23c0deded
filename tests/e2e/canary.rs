//! Issue 11, section 1: no raw secret anywhere, on every path. One unique
//! canary secret goes in as `token` in a valid record (which is revoked at
//! an issuer that echoes it back in a 400), in invalid JSON, in invalid
//! UTF-8, in an oversized record, as a Kafka key, and as the Kafka
//! password the config takes from the environment. Afterwards every topic tokenwatch writes (dead-letter,
//! ledger, webhook dead-letter), every webhook body, the process's log at
//! debug level, `/metrics`, every `/v1/*` answer and `check-config`'s
//! output are searched: the canary is found 0 times. The issuer, which
//! needs it, is the one place it goes.

use std::process::Stdio;
use std::time::Duration;

use revoker::config::ClientAuth;
use revoker::testing::{Reply, TestServer};
use revoker::{IssuerConfig, WebhookConfig};
use schemas::{Action, Event, Fingerprinter};

use crate::support::{self, create_topic, produce, read_all, read_records, unique_name, until};

const CANARY: &str = "tw-canary-7f3a91c2e4b8";
const FINGERPRINT_KEY: &str = "canary-test-fingerprint-key";
const ADMIN_TOKEN: &str = "canary-admin-token";

fn free_port() -> std::net::SocketAddr {
    ([127, 0, 0, 1], crate::support::free_ports(1)).into()
}

fn count(haystack: &[u8]) -> usize {
    haystack
        .windows(CANARY.len())
        .filter(|w| *w == CANARY.as_bytes())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_secret_is_found_nowhere_but_at_the_issuer() {
    let echo =
        format!(r#"{{"error":"invalid_token","error_description":"token {CANARY} is not valid"}}"#);
    let issuer = TestServer::start(Reply::json(400, &echo)).await;
    let hooks = TestServer::start(Reply::status(204)).await;
    let topic = unique_name("canary-events");
    create_topic(&topic, 1).await;
    let mut config = support::config("canary", &topic).await;
    create_topic(&config.ingest.dead_letter_topic, 1).await;
    config.revoker.webhook_dead_letter_topic = unique_name("canary-webhook-dlq");
    create_topic(&config.revoker.webhook_dead_letter_topic, 1).await;
    config.ingest.max_record_bytes = 4096;
    config.ingest.fingerprint_key_env = "TW_E2E_CANARY_FP_KEY".into();
    // A Kafka secret comes from the environment (one in the file's
    // properties is refused): it is never echoed either.
    config
        .ingest
        .properties_from_env
        .insert("sasl.password".into(), "TW_E2E_CANARY_KAFKA_SECRET".into());
    config.decision.mode = schemas::Mode::Enforce;
    config.revoker.issuers.insert(
        "oauth".into(),
        IssuerConfig::Oauth2 {
            revocation_url: issuer.url("/revoke"),
            client_id: "tw".into(),
            client_secret_env: "TW_E2E_CANARY_CLIENT".into(),
            client_auth: ClientAuth::ClientSecretBasic,
            token_type_hint: None,
            introspection_url: None,
        },
    );
    config.revoker.webhooks.push(WebhookConfig {
        url: hooks.url("/hooks"),
        secret_envs: vec!["TW_E2E_CANARY_WHSEC".into()],
        min_action: Action::Alert,
        retry_schedule: vec![Duration::from_millis(50)],
        timeout: Duration::from_secs(5),
        allow_loopback: true,
    });
    config.admin.listen = free_port();
    config.admin.probe_listen = free_port();
    config.admin.token_env = "TW_E2E_CANARY_ADMIN".into();
    let fp = Fingerprinter::new(FINGERPRINT_KEY.as_bytes()).fingerprint(CANARY);
    let dir = support::temp_dir();
    std::fs::write(
        dir.join("tokens.ndjson"),
        format!(
            "{{\"issuer\":\"oauth\",\"token_id\":\"{fp}\",\"bound_cidrs\":[\"10.0.0.0/8\"]}}\n"
        ),
    )
    .unwrap();
    config.detectors.metadata_file = Some(dir.join("tokens.ndjson"));
    let path = dir.join("tokenwatch.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let envs = [
        ("TW_E2E_CANARY_FP_KEY", FINGERPRINT_KEY),
        ("TW_E2E_CANARY_CLIENT", "client-secret"),
        (
            "TW_E2E_CANARY_WHSEC",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        ("TW_E2E_CANARY_ADMIN", ADMIN_TOKEN),
        ("TW_E2E_CANARY_KAFKA_SECRET", CANARY),
    ];

    let log = dir.join("run.log");
    let mut child = support::tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .envs(envs)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let valid = format!(
        r#"{{"ts":{now},"token":"{CANARY}","issuer":"oauth","action":"GET /v1/orders","src_ip":"203.0.113.9"}}"#
    );
    let mut oversized =
        format!(r#"{{"ts":{now},"token":"{CANARY}","issuer":"oauth","pad":""#).into_bytes();
    oversized.resize(10_000, b'x');
    let mut good = Event::new(now, "tok-plain", "oauth", "GET /v1/orders");
    good.src_ip = Some(std::net::IpAddr::from([10, 1, 2, 3]));
    let records: Vec<(String, Vec<u8>)> = vec![
        ("k-valid".into(), valid.into_bytes()),
        (
            "k-json".into(),
            format!(r#"{{"token":"{CANARY}","ts":"#).into_bytes(),
        ),
        (
            "k-utf8".into(),
            [
                format!(r#"{{"ts":{now},"token":"{CANARY}","user_agent":"caf"#).as_bytes(),
                b"\xe9\"}",
            ]
            .concat(),
        ),
        ("k-big".into(), oversized),
        (CANARY.into(), b"{\"not\": \"an event\"".to_vec()),
        ("k-good".into(), good.to_json().into_bytes()),
    ];
    produce(&topic, &records).await;

    let admin = format!("http://{}", config.admin.listen);
    let probe = format!("http://{}", config.admin.probe_listen);
    let client = revoker::http_client(Duration::from_secs(5)).unwrap();
    let get = |path: String| {
        let client = client.clone();
        async move {
            match client.get(path).bearer_auth(ADMIN_TOKEN).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        }
    };
    let dlq = read_records(&config.ingest.dead_letter_topic, 4, Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let denylist = get(format!("{admin}/v1/denylist")).await;
        if denylist.contains("\"failed\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never failed (log {}): {denylist}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until(
        "the decision, revocation and system alerts",
        Duration::from_secs(30),
        || hooks.requests().len() >= 3,
    )
    .await;
    let answers = [
        get(format!("{probe}/metrics")).await,
        get(format!("{admin}/v1/denylist")).await,
        get(format!("{admin}/v1/decisions?limit=1000")).await,
        get(format!("{admin}/v1/tokens/oauth/{fp}")).await,
    ];
    assert!(
        answers[1].contains(&fp),
        "the denylist names the token by fingerprint"
    );
    assert!(support::terminate(&mut child).success());

    // The issuer, which revokes by it, got it: the path was exercised.
    let sent = issuer.requests();
    assert!(
        sent.iter().any(|q| count(&q.body) > 0),
        "the issuer received the canary"
    );

    let check = support::tokenwatch()
        .arg("check-config")
        .arg(&path)
        .envs(envs)
        .output()
        .unwrap();
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut add = |what: String, bytes: &[u8]| found.push((what, count(bytes)));
    for topic in [
        &config.ingest.dead_letter_topic,
        &config.revoker.ledger_topic,
        &config.revoker.webhook_dead_letter_topic,
    ] {
        for (i, r) in read_all(topic).iter().enumerate() {
            add(format!("{topic}[{i}] payload"), &r.payload);
            add(
                format!("{topic}[{i}] key"),
                r.key.as_deref().unwrap_or_default(),
            );
            for (k, v) in &r.headers {
                add(format!("{topic}[{i}] header {k}"), v.as_bytes());
            }
        }
    }
    for (i, h) in hooks.requests().iter().enumerate() {
        add(format!("webhook {i}"), &h.body);
    }
    add("log".into(), &std::fs::read(&log).unwrap());
    for (i, a) in answers.iter().enumerate() {
        add(format!("admin answer {i}"), a.as_bytes());
    }
    add("check-config stdout".into(), &check.stdout);
    add("check-config stderr".into(), &check.stderr);
    let total: usize = found.iter().map(|(_, n)| n).sum();
    let leaks: Vec<&(String, usize)> = found.iter().filter(|(_, n)| *n > 0).collect();
    eprintln!(
        "canary: searched {} places ({} dead letters, {} webhooks): found {total} times",
        found.len(),
        dlq.len(),
        hooks.requests().len()
    );
    assert_eq!(
        total,
        0,
        "the canary leaked: {leaks:?} (log {})",
        log.display()
    );
}
