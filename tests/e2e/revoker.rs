//! The revoker against real outside systems: moto's IAM, the real broker
//! (ledger and dead-letter topics), and the reference Standard Webhooks
//! library.

use std::time::Duration;

use revoker::config::{ClientAuth, RetryConfig};
use revoker::testing::{Reply, TestServer};
use revoker::webhook::sign;
use revoker::{Command, IssuerConfig, Record, Revoker, RevokerConfig, State, WebhookConfig};
use schemas::{Action, Decision, DetectorKind, Evidence, Finding, Mode, Secret};
use tokio::sync::{mpsc, oneshot};

use crate::support::{self, create_topic, python, read_records, unique_name};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_NEXT: &str = "whsec_dG9rZW53YXRjaC1yb3RhdGVkLXNlY3JldA==";

fn decision(issuer: &str, token: &str, principal: &str, action: Action) -> Decision {
    let finding = Finding::new(
        DetectorKind::Volume,
        "mass_export",
        1.0,
        "2.1 GB in 60 s".into(),
        Evidence::default(),
    );
    Decision {
        id: Decision::make_id(&[issuer, token, &format!("{action:?}")]),
        issuer: issuer.into(),
        token_id: token.into(),
        principal: Some(principal.into()),
        action,
        recommended: action,
        mode: Mode::Enforce,
        risk: 1.0,
        findings: vec![finding],
        shadow_findings: vec![],
        basis: vec![],
        repeats: None,
        notes: vec![],
        event_ts_ms: 1_795_813_200_000,
        kafka_ts_ms: Some(1_795_813_200_000),
    }
}

fn kafka() -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", support::brokers());
    c
}

struct Running {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(mut config: RevokerConfig, with_kafka: bool) -> Running {
    // Each test its own outbox, created like the ledger topic.
    if with_kafka
        && !config.webhooks.is_empty()
        && config.webhook_outbox_topic == RevokerConfig::default().webhook_outbox_topic
    {
        config.webhook_outbox_topic = unique_name("outbox");
        crate::support::create_compacted(&config.webhook_outbox_topic).await;
    }
    let built = tokio::task::spawn_blocking(move || {
        Revoker::build(&config, with_kafka.then(kafka).as_ref(), "cfg_e2e".into())
    })
    .await
    .unwrap()
    .unwrap();
    let (commands, rx) = mpsc::channel(16);
    Running {
        commands,
        task: tokio::spawn(built.run(rx)),
    }
}

impl Running {
    async fn decide(&self, decisions: Vec<Decision>) {
        let (handed, done) = oneshot::channel();
        self.commands
            .send(Command::Decisions {
                decisions,
                alerts: vec![],
                handed,
            })
            .await
            .unwrap();
        done.await.expect("decisions recorded in the ledger");
    }

    async fn record(&self, issuer: &str, token: &str, state: State) -> Record {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (tx, rx) = oneshot::channel();
            self.commands.send(Command::Denylist(tx)).await.unwrap();
            let list = rx.await.unwrap();
            if let Some(r) = list
                .iter()
                .find(|r| r.issuer == issuer && r.token_id == token && r.state == state)
            {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{issuer}/{token} never reached {state:?}: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        drop(self.commands);
        self.task.await.unwrap();
    }
}

fn http_issuer(server: &TestServer) -> IssuerConfig {
    IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", server.addr))
}

fn quick_retries() -> RetryConfig {
    RetryConfig {
        max_attempts: Some(1000),
        alert_after: Duration::from_secs(120),
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_iam_deactivates_the_access_key_in_moto() {
    let moto = python::moto();
    let user = unique_name("alice").replace('-', "");
    let (ok, key) = python::run("iam.py", &[&moto, "create", &user], None);
    assert!(ok, "cannot create the IAM user in moto: {key}");
    assert_eq!(
        python::run("iam.py", &[&moto, "status", &user, &key], None).1,
        "Active"
    );

    unsafe {
        std::env::set_var("TW_E2E_AWS_ID", "testing");
        std::env::set_var("TW_E2E_AWS_SECRET", "testing");
    }
    let mut config = RevokerConfig::default();
    config.issuers.insert(
        "aws".into(),
        IssuerConfig::AwsIam {
            endpoint: url::Url::parse(&format!("{moto}/")).unwrap(),
            region: "us-east-1".into(),
            access_key_id_env: "TW_E2E_AWS_ID".into(),
            secret_access_key_env: "TW_E2E_AWS_SECRET".into(),
            session_token_env: None,
        },
    );
    let r = start(config, false).await;
    let principal = format!("arn:aws:iam::123456789012:user/{user}");
    r.decide(vec![decision("aws", &key, &principal, Action::Revoke)])
        .await;
    let record = r.record("aws", &key, State::Revoked).await;
    assert_eq!(record.attempts, 1);
    assert_eq!(
        python::run("iam.py", &[&moto, "status", &user, &key], None).1,
        "Inactive",
        "moto says the key is now inactive"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_ledger_and_finishes_what_was_pending() {
    let ledger = unique_name("ledger");
    crate::support::create_compacted(&ledger).await;
    let issuer = TestServer::start(Reply::status(200)).await;
    let mut config = RevokerConfig {
        ledger_topic: ledger.clone(),
        retry: quick_retries(),
        // The first life is killed, so it never says it is gone: the second
        // takes its revocations over once it has been quiet this long.
        liveness_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    config.issuers.insert("iss".into(), http_issuer(&issuer));

    // First life: one token revoked; another stuck pending (issuer down).
    let first = start(config.clone(), true).await;
    first
        .decide(vec![decision("iss", "done", "p", Action::Revoke)])
        .await;
    first.record("iss", "done", State::Revoked).await;
    issuer.set_default(Reply::status(503));
    first
        .decide(vec![decision("iss", "stuck", "p", Action::Revoke)])
        .await;
    issuer.wait_for(3, Duration::from_secs(20)).await;
    // Kill it (abort, like a crash) while "stuck" is being retried.
    first.task.abort();
    let _ = first.task.await;

    // Second life: the issuer is back. The ledger is rebuilt from the topic.
    issuer.set_default(Reply::status(200));
    let calls_before = issuer
        .requests()
        .iter()
        .filter(|q| q.method == "POST")
        .count();
    let second = start(config, true).await;
    second.record("iss", "stuck", State::Revoked).await;
    second
        .decide(vec![
            decision("iss", "done", "p", Action::Revoke),
            decision("iss", "stuck", "p", Action::Revoke),
        ])
        .await;
    second.stop().await;
    let posts: Vec<String> = issuer
        .requests()
        .iter()
        .filter(|q| q.method == "POST")
        .map(|q| q.path.clone())
        .collect();
    assert_eq!(
        posts.iter().filter(|p| *p == "/revoke/done").count(),
        1,
        "revoked once, across the restart"
    );
    assert_eq!(
        posts[calls_before..],
        ["/revoke/stuck"],
        "the pending revocation resumed; nothing else was called"
    );
}

fn oauth2_issuer(server: &TestServer) -> IssuerConfig {
    unsafe { std::env::set_var("TW_E2E_OAUTH_CLIENT", "client-secret") };
    IssuerConfig::Oauth2 {
        revocation_url: server.url("/revoke"),
        client_id: "tw".into(),
        client_secret_env: "TW_E2E_OAUTH_CLIENT".into(),
        client_auth: ClientAuth::ClientSecretBasic,
        token_type_hint: None,
        introspection_url: None,
    }
}

/// Issue 11, section 2: after a restart the secret store is empty, so a
/// pending oauth2 revocation cannot be sent. Before, it was resumed, failed
/// at once and stayed `failed` for ever; now it waits, visible, and
/// completes when an event brings the token again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_an_oauth2_revocation_waits_for_its_secret_instead_of_failing() {
    let ledger = unique_name("ledger-oauth");
    crate::support::create_compacted(&ledger).await;
    let issuer = TestServer::start(Reply::status(503)).await;
    let mut config = RevokerConfig {
        ledger_topic: ledger,
        retry: quick_retries(),
        liveness_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    config
        .issuers
        .insert("oauth".into(), oauth2_issuer(&issuer));
    let secret = || {
        Command::Secrets(vec![(
            "oauth".into(),
            "fp_restart".into(),
            Secret::new("at_restart_raw".into()),
        )])
    };

    let first = start(config.clone(), true).await;
    first.commands.send(secret()).await.unwrap();
    first
        .decide(vec![decision("oauth", "fp_restart", "p", Action::Revoke)])
        .await;
    issuer.wait_for(3, Duration::from_secs(20)).await;
    first.task.abort();
    let _ = first.task.await;

    issuer.set_default(Reply::status(200));
    let second = start(config, true).await;
    let waiting = second
        .record("oauth", "fp_restart", State::AwaitingSecret)
        .await;
    assert!(waiting.last_error.unwrap().contains("raw secret"));
    second.commands.send(secret()).await.unwrap();
    second.record("oauth", "fp_restart", State::Revoked).await;
    second.stop().await;
    let ok: Vec<_> = issuer
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.status == 200)
        .collect();
    assert_eq!(ok.len(), 1, "revoked once");
    assert!(ok[0].text().contains("at_restart_raw"));
}

/// Issue 11, section 2: the issuer answers 503 for a minute
/// (`TOKENWATCH_OUTAGE_SECS`, default 60) while revocations keep being
/// decided. Before, each failed for good after `max_attempts` (10). Now every
/// one completes once the issuer is back, each with exactly one successful
/// call, and each raised one `revocation_failing` alert meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_decided_during_an_issuer_outage_completes_afterwards() {
    let outage = Duration::from_secs(
        std::env::var("TOKENWATCH_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let ledger = unique_name("ledger-outage");
    crate::support::create_compacted(&ledger).await;
    let issuer = TestServer::start(Reply::status(503)).await;
    let hooks = TestServer::start(Reply::status(200)).await;
    unsafe { std::env::set_var("TW_E2E_WHSEC_OUTAGE", WHSEC) };
    let mut config = RevokerConfig {
        ledger_topic: ledger,
        retry: RetryConfig {
            max_attempts: None,
            alert_after: Duration::from_secs(10),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        },
        ..Default::default()
    };
    config.issuers.insert("iss".into(), http_issuer(&issuer));
    config.webhooks = vec![WebhookConfig {
        url: hooks.url("/hooks"),
        secret_envs: vec!["TW_E2E_WHSEC_OUTAGE".into()],
        min_action: Action::Revoke,
        retry_schedule: vec![Duration::from_millis(50)],
        timeout: Duration::from_secs(2),
        allow_loopback: true,
    }];
    let r = start(config, true).await;

    let began = tokio::time::Instant::now();
    let mut tokens = Vec::new();
    let mut decided = Vec::new();
    while began.elapsed() < outage {
        let token = format!("out-{}", tokens.len());
        r.decide(vec![decision("iss", &token, "p", Action::Revoke)])
            .await;
        tokens.push(token);
        decided.push(std::time::Instant::now());
        tokio::time::sleep(outage / 30).await;
    }
    issuer.set_default(Reply::status(200));
    let recovered = std::time::Instant::now();
    // alert_after is 10 s and the check runs every 5 s: a revocation open
    // for 15 s has alerted; one open for under 10 s cannot have.
    let open_for = |s: u64| {
        decided
            .iter()
            .filter(|d| recovered - **d >= Duration::from_secs(s))
            .count()
    };
    let (must_alert, may_alert) = (open_for(15), open_for(10));
    let mut last_done = Duration::ZERO;
    for token in &tokens {
        r.record("iss", token, State::Revoked).await;
        last_done = last_done.max(recovered.elapsed());
    }
    r.stop().await;

    let calls = issuer.requests();
    for token in &tokens {
        let ok = calls
            .iter()
            .filter(|q| q.path == format!("/revoke/{token}") && q.status == 200)
            .count();
        assert_eq!(ok, 1, "{token}: one successful call");
    }
    let failing = hooks
        .requests()
        .iter()
        .map(|q| serde_json::from_slice::<serde_json::Value>(&q.body).unwrap())
        .filter(|b| b["data"]["kind"] == "revocation_failing")
        .count();
    let failed_calls = calls.iter().filter(|q| q.status == 503).count();
    eprintln!(
        "outage of {outage:?}: {} revocations decided, {} completed, the last {last_done:?} after recovery; {failed_calls} failed calls during the outage, {failing} revocation_failing alerts",
        tokens.len(),
        tokens.len()
    );
    assert!(
        (must_alert..=may_alert).contains(&failing),
        "{failing} alerts; {must_alert} to {may_alert} expected"
    );
    assert!(last_done < Duration::from_secs(30), "{last_done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_verify_with_the_reference_library_and_forgeries_do_not() {
    let hooks = TestServer::start(Reply::status(204)).await;
    unsafe {
        std::env::set_var("TW_E2E_WHSEC", WHSEC);
        std::env::set_var("TW_E2E_WHSEC_NEXT", WHSEC_NEXT);
    }
    let config = RevokerConfig {
        webhooks: vec![WebhookConfig {
            url: hooks.url("/tokenwatch"),
            secret_envs: vec!["TW_E2E_WHSEC".into(), "TW_E2E_WHSEC_NEXT".into()],
            min_action: Action::Alert,
            retry_schedule: vec![],
            timeout: Duration::from_secs(5),
            allow_loopback: true,
        }],
        ..Default::default()
    };
    let r = start(config, false).await;
    let alert = decision("iss", "tok-w", "p", Action::Alert);
    r.decide(vec![alert.clone()]).await;
    let got = hooks.wait_for(1, Duration::from_secs(20)).await.remove(0);
    r.stop().await;

    let header = |name: &str| got.header(name).unwrap().to_string();
    let (id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    assert_eq!(
        id, alert.id,
        "the webhook id is the decision id, so a replay reuses it"
    );
    assert_eq!(
        sig.split(' ').count(),
        2,
        "one signature per secret during rotation"
    );
    let headers = [
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    for secret in [WHSEC, WHSEC_NEXT] {
        python::verify_webhook(secret, &headers, &got.body)
            .unwrap_or_else(|e| panic!("reference library rejected: {e}"));
    }
    let payload: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    python::validate_payloads(std::slice::from_ref(&payload))
        .unwrap_or_else(|e| panic!("schema: {e}"));
    assert_eq!(payload["type"], "tokenwatch.decision");
    assert_eq!(payload["data"]["token_id"], "tok-w");
    assert_eq!(payload["data"]["config_hash"], "cfg_e2e");
    assert_eq!(payload["data"]["findings"][0]["kind"], "mass_export");

    let mut tampered = got.body.clone();
    let at = tampered.iter().position(|&b| b == b'w').unwrap();
    tampered[at] = b'x';
    assert!(
        python::verify_webhook(WHSEC, &headers, &tampered).is_err(),
        "a tampered body must fail"
    );

    let old = (ts.parse::<i64>().unwrap() - 3600).to_string();
    let old_sig = sign::sign(
        &sign::parse_secret(WHSEC).unwrap(),
        &id,
        old.parse().unwrap(),
        &got.body,
    );
    let stale = [
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", old.as_str()),
        ("webhook-signature", old_sig.as_str()),
    ];
    let err = python::verify_webhook(WHSEC, &stale, &got.body)
        .expect_err("an hour-old timestamp must fail");
    assert!(err.to_lowercase().contains("timestamp"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_webhooks_go_to_the_dead_letter_topic() {
    let ledger = unique_name("ledger");
    let dlq = unique_name("webhook-dlq");
    crate::support::create_compacted(&ledger).await;
    create_topic(&dlq, 1).await;
    let hooks = TestServer::start(Reply::status(500)).await;
    unsafe { std::env::set_var("TW_E2E_WHSEC_DLQ", WHSEC) };
    let config = RevokerConfig {
        ledger_topic: ledger,
        webhook_dead_letter_topic: dlq.clone(),
        webhooks: vec![WebhookConfig {
            url: hooks.url("/down"),
            secret_envs: vec!["TW_E2E_WHSEC_DLQ".into()],
            min_action: Action::Alert,
            retry_schedule: vec![Duration::from_millis(10), Duration::from_millis(20)],
            timeout: Duration::from_secs(5),
            allow_loopback: true,
        }],
        ..Default::default()
    };
    let r = start(config, true).await;
    r.decide(vec![decision("iss", "tok-dlq", "p", Action::Alert)])
        .await;
    let dead = read_records(&dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(hooks.requests().len(), 3, "first try and two retries");
    assert_eq!(
        dead[0].header("tokenwatch.reason"),
        Some("HTTP 500 Internal Server Error")
    );
    assert_eq!(dead[0].header("tokenwatch.attempts"), Some("3"));
    assert_eq!(
        dead[0].header("tokenwatch.webhook.type"),
        Some("tokenwatch.decision")
    );
    let body: serde_json::Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(body["data"]["token_id"], "tok-dlq");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_reaches_the_ledger_topic_or_webhooks() {
    const CANARY: &str = "gho_CANARY_e2e_51f0c9a7";
    let ledger = unique_name("ledger");
    crate::support::create_compacted(&ledger).await;
    let issuer = TestServer::start(Reply::status(200)).await;
    let hooks = TestServer::start(Reply::status(200)).await;
    unsafe {
        std::env::set_var("TW_E2E_CANARY_CLIENT", "client-secret");
        std::env::set_var("TW_E2E_WHSEC_CANARY", WHSEC);
    }
    let mut config = RevokerConfig {
        ledger_topic: ledger.clone(),
        ..Default::default()
    };
    config.issuers.insert(
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
    config.webhooks = vec![WebhookConfig {
        url: hooks.url("/h"),
        secret_envs: vec!["TW_E2E_WHSEC_CANARY".into()],
        min_action: Action::Alert,
        retry_schedule: vec![],
        timeout: Duration::from_secs(5),
        allow_loopback: true,
    }];
    let fingerprint = schemas::Fingerprinter::new(b"k").fingerprint(CANARY);
    let r = start(config, true).await;
    r.commands
        .send(Command::Secrets(vec![(
            "oauth".into(),
            fingerprint.clone(),
            Secret::new(CANARY.into()),
        )]))
        .await
        .unwrap();
    r.decide(vec![decision("oauth", &fingerprint, "p", Action::Revoke)])
        .await;
    r.record("oauth", &fingerprint, State::Revoked).await;
    let bodies = hooks.wait_for(2, Duration::from_secs(20)).await;
    r.stop().await;
    let payloads: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_slice(&b.body).unwrap())
        .collect();
    python::validate_payloads(&payloads)
        .unwrap_or_else(|e| panic!("payloads do not match the documented schema:\n{e}"));
    // Deliveries are concurrent: which one arrives first is not defined.
    let mut types: Vec<&str> = payloads.iter().filter_map(|p| p["type"].as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["tokenwatch.decision", "tokenwatch.revocation"]);

    let post = issuer
        .requests()
        .into_iter()
        .find(|q| q.method == "POST")
        .unwrap();
    assert!(
        post.text().contains(CANARY),
        "only the issuer receives the raw token"
    );
    for b in bodies {
        assert!(!b.text().contains(CANARY), "webhook leaked the secret");
        assert!(b.text().contains(&fingerprint));
    }
    let records = read_records(&ledger, 2, Duration::from_secs(30)).await;
    for rec in records {
        assert!(
            !String::from_utf8_lossy(&rec.payload).contains(CANARY),
            "ledger topic leaked the secret"
        );
    }
}

/// Issue 11, section 2: alerts are at-least-once. The receiver is down and
/// the deliveries sit in their retry schedule when the revoker dies. Before,
/// they were detached tasks and lost; now they wait in the outbox topic and
/// the next start sends them, with the same webhook ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_pending_at_a_crash_are_sent_after_the_restart() {
    let (ledger, outbox) = (unique_name("ledger-outbox"), unique_name("outbox"));
    crate::support::create_compacted(&ledger).await;
    crate::support::create_compacted(&outbox).await;
    let issuer = TestServer::start(Reply::status(200)).await;
    let hooks = TestServer::start(Reply::status(503)).await;
    unsafe { std::env::set_var("TW_E2E_WHSEC_OUTBOX", WHSEC) };
    let mut config = RevokerConfig {
        ledger_topic: ledger,
        webhook_outbox_topic: outbox.clone(),
        retry: quick_retries(),
        liveness_timeout: Duration::from_secs(2),
        webhooks: vec![WebhookConfig {
            url: hooks.url("/hooks"),
            secret_envs: vec!["TW_E2E_WHSEC_OUTBOX".into()],
            min_action: Action::Alert,
            retry_schedule: vec![Duration::from_secs(600)],
            timeout: Duration::from_secs(2),
            allow_loopback: true,
        }],
        ..Default::default()
    };
    config.issuers.insert("iss".into(), http_issuer(&issuer));

    let first = start(config.clone(), true).await;
    first
        .decide(vec![decision("iss", "ob-1", "p", Action::Revoke)])
        .await;
    first.record("iss", "ob-1", State::Revoked).await;
    // The decision and the revocation message each failed once and now
    // wait ten minutes for their retry: then the process dies.
    let failed = hooks.wait_for(2, Duration::from_secs(20)).await;
    let mut ids: Vec<String> = failed
        .iter()
        .map(|q| q.header("webhook-id").unwrap().to_string())
        .collect();
    ids.sort();
    first.task.abort();
    let _ = first.task.await;

    hooks.set_default(Reply::status(204));
    let second = start(config.clone(), true).await;
    let delivered = |ids: &[String]| {
        let mut ok: Vec<String> = hooks
            .requests()
            .iter()
            .filter(|q| q.status == 204)
            .map(|q| q.header("webhook-id").unwrap().to_string())
            .collect();
        ok.sort();
        ok.dedup();
        ok == ids
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !delivered(&ids) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pending deliveries {ids:?} were not resent: {:?}",
            hooks
                .requests()
                .iter()
                .map(|q| (q.status, q.header("webhook-id").map(str::to_owned)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await;
    let client = kafka();
    let left = tokio::task::spawn_blocking(move || {
        revoker::webhook::outbox::Outbox::pending(&client, &outbox).unwrap()
    })
    .await
    .unwrap();
    assert!(
        left.is_empty(),
        "delivered deliveries leave the outbox: {left:?}"
    );
    assert_eq!(
        issuer
            .requests()
            .iter()
            .filter(|q| q.method == "POST")
            .count(),
        1,
        "the restart resent alerts, not the revocation"
    );
}
