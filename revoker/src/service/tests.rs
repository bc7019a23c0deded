//! The service end to end, with an in-memory ledger and real HTTP issuers
//! and webhook receivers on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::{Action, Decision, DetectorKind, Evidence, Finding, Mode, Secret};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::config::{
    BreakerConfig, ClientAuth, IssuerConfig, RetryConfig, RevokerConfig, WebhookConfig,
};
use crate::testing::{Reply, TestServer};

const WAIT: Duration = Duration::from_secs(10);

fn decision(token: &str, n: u32) -> Decision {
    let finding = Finding::new(
        DetectorKind::Geo,
        "impossible_travel",
        0.95,
        "GB → CN: 8072 km in 30 min".into(),
        Evidence::default(),
    );
    Decision {
        id: format!("dec_{token}_{n}"),
        issuer: "iss".into(),
        token_id: token.into(),
        principal: Some("alice".into()),
        action: Action::Revoke,
        recommended: Action::Revoke,
        mode: Mode::Enforce,
        risk: 0.95,
        findings: vec![finding],
        shadow_findings: vec![],
        basis: vec![],
        repeats: None,
        notes: vec![],
        event_ts_ms: 1_795_813_200_000,
        kafka_ts_ms: Some(1_795_813_200_000),
    }
}

fn http_issuer(server: &TestServer) -> IssuerConfig {
    IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", server.addr))
}

fn config(issuer: IssuerConfig) -> RevokerConfig {
    RevokerConfig {
        issuers: [("iss".to_string(), issuer)].into(),
        request_timeout: Duration::from_millis(300),
        retry: RetryConfig {
            max_attempts: Some(10),
            alert_after: Duration::from_secs(120),
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        ..Default::default()
    }
}

struct Running {
    commands: mpsc::Sender<Command>,
    log: Arc<Mutex<Vec<Record>>>,
    metrics: Arc<RevokerMetrics>,
}

fn start(config: &RevokerConfig) -> Running {
    let revoker = Revoker::build(config, None, "cfg_test".into()).unwrap();
    let (commands, rx) = mpsc::channel(16);
    let running = Running {
        commands,
        log: revoker.ledger_log(),
        metrics: revoker.metrics(),
    };
    tokio::spawn(revoker.run(rx));
    running
}

impl Running {
    async fn decide(&self, decisions: Vec<Decision>) {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Decisions {
                decisions,
                alerts: vec![],
                handed: tx,
            })
            .await
            .unwrap();
        rx.await.expect("decisions handed to the ledger");
    }

    /// Waits until the ledger holds `state` for `token`, returning the log.
    async fn until(&self, token: &str, state: State) -> Vec<Record> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (tx, rx) = oneshot::channel();
            self.commands.send(Command::Denylist(tx)).await.unwrap();
            if rx
                .await
                .unwrap()
                .iter()
                .any(|r| r.token_id == token && r.state == state)
            {
                return self.log.lock().unwrap().clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{token} never reached {state:?}: {:?}",
                self.log.lock().unwrap()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn three_503s_then_200_revokes_once_with_retries_in_metrics() {
    let server = TestServer::start(Reply::status(200)).await;
    server.script([Reply::status(503), Reply::status(503), Reply::status(503)]);
    let r = start(&config(http_issuer(&server)));
    r.decide(vec![decision("tok-a", 1)]).await;
    let log = r.until("tok-a", State::Revoked).await;
    assert_eq!(server.requests().len(), 4);
    assert!(server.requests().iter().all(|q| q.path == "/revoke/tok-a"));
    let c = r.metrics.issuer("iss");
    assert_eq!((c.attempts, c.retries, c.revoked, c.failed), (4, 3, 1, 0));
    // Written pending first, once per retry, then revoked.
    let states: Vec<State> = log.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            State::Pending,
            State::Pending,
            State::Pending,
            State::Pending,
            State::Revoked
        ]
    );
    assert_eq!(
        log[1].last_error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    assert_eq!(log.last().unwrap().attempts, 4);
}

#[tokio::test]
async fn a_timeout_stays_pending_until_the_issuer_recovers() {
    let server = TestServer::start(Reply::status(200)).await;
    server.script([
        Reply::status(200).delayed(Duration::from_secs(2)),
        Reply::status(200).delayed(Duration::from_secs(2)),
    ]);
    let r = start(&config(http_issuer(&server)));
    r.decide(vec![decision("tok-t", 1)]).await;
    let log = r.until("tok-t", State::Revoked).await;
    let timeouts = log
        .iter()
        .filter(|x| {
            x.state == State::Pending
                && x.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("timeout"))
        })
        .count();
    assert_eq!(timeouts, 2, "{log:?}");
    assert_eq!(r.metrics.issuer("iss").revoked, 1);
}

#[tokio::test]
async fn the_circuit_breaker_opens_and_closes() {
    let server = TestServer::start(Reply::status(200)).await;
    server.script([Reply::status(500), Reply::status(500), Reply::status(500)]);
    let mut cfg = config(http_issuer(&server));
    cfg.breaker = BreakerConfig {
        failure_threshold: 2,
        cooldown: Duration::from_millis(400),
    };
    let r = start(&cfg);
    r.decide(vec![decision("tok-b", 1)]).await;
    r.until("tok-b", State::Revoked).await;
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        r.metrics.breaker_opened() >= 2,
        "opened after 2 failures, and again when the trial failed"
    );
    // While open, nothing is sent: each gap after the breaker opened spans
    // at least the cooldown.
    assert!(reqs[2].at.duration_since(reqs[1].at) >= Duration::from_millis(390));
    assert!(reqs[3].at.duration_since(reqs[2].at) >= Duration::from_millis(390));
}

#[tokio::test]
async fn ten_decisions_for_one_token_make_one_issuer_call() {
    let server = TestServer::start(Reply::status(200)).await;
    let r = start(&config(http_issuer(&server)));
    r.decide((0..10).map(|n| decision("tok-d", n)).collect())
        .await;
    r.until("tok-d", State::Revoked).await;
    r.decide(vec![decision("tok-d", 11)]).await;
    assert_eq!(server.requests().len(), 1);
    assert_eq!(r.metrics.issuer("iss").duplicates, 10);
}

#[tokio::test]
async fn exhausted_retries_fail_loudly_with_a_system_alert() {
    let server = TestServer::start(Reply::status(500)).await;
    let hooks = TestServer::start(Reply::status(200)).await;
    unsafe {
        std::env::set_var(
            "TW_TEST_WHSEC_FAIL",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    };
    let mut cfg = config(http_issuer(&server));
    cfg.retry.max_attempts = Some(3);
    cfg.breaker.failure_threshold = 100;
    cfg.webhooks = vec![webhook(&hooks, "TW_TEST_WHSEC_FAIL")];
    let r = start(&cfg);
    r.decide(vec![decision("tok-f", 1)]).await;
    r.until("tok-f", State::Failed).await;
    assert_eq!(server.requests().len(), 3);
    let bodies: Vec<serde_json::Value> = hooks
        .wait_for(3, WAIT)
        .await
        .iter()
        .map(|q| serde_json::from_slice(&q.body).unwrap())
        .collect();
    let kinds: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"tokenwatch.system"), "{kinds:?}");
    let system = bodies
        .iter()
        .find(|b| b["type"] == "tokenwatch.system")
        .unwrap();
    assert_eq!(system["data"]["kind"], "revocation_failed");
}

fn oauth2_issuer(server: &TestServer) -> IssuerConfig {
    unsafe { std::env::set_var("TW_TEST_AWAIT_CLIENT", "client-secret") };
    IssuerConfig::Oauth2 {
        revocation_url: server.url("/revoke"),
        client_id: "tw".into(),
        client_secret_env: "TW_TEST_AWAIT_CLIENT".into(),
        client_auth: ClientAuth::ClientSecretBasic,
        token_type_hint: None,
        introspection_url: None,
    }
}

/// Issue 11, section 2: an issuer that revokes by the raw token, and none
/// held. Before, the revocation failed at once and for ever.
#[tokio::test]
async fn a_revocation_without_its_secret_waits_and_completes_when_an_event_brings_it() {
    let issuer = TestServer::start(Reply::status(200)).await;
    let hooks = TestServer::start(Reply::status(200)).await;
    unsafe {
        std::env::set_var(
            "TW_TEST_WHSEC_AWAIT",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    };
    let mut cfg = config(oauth2_issuer(&issuer));
    cfg.webhooks = vec![webhook(&hooks, "TW_TEST_WHSEC_AWAIT")];
    cfg.secret_handles.await_alert_after = Duration::ZERO;
    let r = start(&cfg);
    r.decide(vec![decision("fp_wait", 1)]).await;
    r.until("fp_wait", State::AwaitingSecret).await;
    assert!(
        issuer.requests().iter().all(|q| q.method != "POST"),
        "no call can work without the secret"
    );
    assert_eq!(r.metrics.issuer("iss").awaiting_secret, 1);
    // The loud alert: waiting longer than await_alert_after (here 0).
    let alert = loop {
        let seen = hooks.wait_for(hooks.requests().len() + 1, WAIT).await;
        if let Some(b) = seen
            .iter()
            .map(|q| serde_json::from_slice::<serde_json::Value>(&q.body).unwrap())
            .find(|b| b["data"]["kind"] == "revocation_awaiting_secret")
        {
            break b;
        }
    };
    assert!(
        alert["data"]["message"]
            .as_str()
            .unwrap()
            .contains("fp_wait")
    );

    r.commands
        .send(Command::Secrets(vec![(
            "iss".into(),
            "fp_wait".into(),
            Secret::new("at_raw_wait".into()),
        )]))
        .await
        .unwrap();
    let log = r.until("fp_wait", State::Revoked).await;
    let calls: Vec<_> = issuer
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST")
        .collect();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].text().contains("at_raw_wait"));
    let states: Vec<State> = log.iter().map(|x| x.state).collect();
    assert_eq!(
        states,
        [
            State::Pending,
            State::AwaitingSecret,
            State::Pending,
            State::Revoked
        ]
    );
    assert!(!states.contains(&State::Failed));
}

/// Issue 11, section 2: an outage longer than the old retry budget. Before,
/// the tenth failure made the revocation `failed` for good.
#[tokio::test]
async fn retries_outlast_an_outage_and_alert_once_while_failing() {
    let server = TestServer::start(Reply::status(503)).await;
    let hooks = TestServer::start(Reply::status(200)).await;
    unsafe {
        std::env::set_var(
            "TW_TEST_WHSEC_OUTAGE",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    };
    let mut cfg = config(http_issuer(&server));
    cfg.retry.max_attempts = None;
    cfg.retry.alert_after = Duration::ZERO;
    cfg.retry.max_delay = Duration::from_millis(10);
    cfg.breaker.failure_threshold = 1000;
    cfg.webhooks = vec![webhook(&hooks, "TW_TEST_WHSEC_OUTAGE")];
    let r = start(&cfg);
    r.decide(vec![decision("tok-o", 1)]).await;
    // The outage outlasts the old budget of 10 attempts, and lasts until
    // the alert is out (the check runs every 5 s).
    server.wait_for(25, WAIT).await;
    let failing = |q: &crate::testing::Captured| {
        serde_json::from_slice::<serde_json::Value>(&q.body).unwrap()["data"]["kind"]
            == "revocation_failing"
    };
    while !hooks.requests().iter().any(failing) {
        hooks.wait_for(hooks.requests().len() + 1, WAIT).await;
    }
    server.set_default(Reply::status(200));
    let log = r.until("tok-o", State::Revoked).await;
    assert!(log.iter().all(|x| x.state != State::Failed));
    assert!(
        log.last().unwrap().attempts > 10,
        "more than the old budget"
    );
    assert_eq!(
        r.metrics.issuer("iss").failing,
        1,
        "one alert, not one per attempt"
    );
    assert_eq!(hooks.requests().iter().filter(|q| failing(q)).count(), 1);
}

fn webhook(server: &TestServer, env: &str) -> WebhookConfig {
    WebhookConfig {
        url: server.url("/hooks"),
        secret_envs: vec![env.into()],
        min_action: Action::Alert,
        retry_schedule: vec![Duration::from_millis(20), Duration::from_millis(20)],
        timeout: Duration::from_secs(2),
        allow_loopback: true,
    }
}

/// The secret reaches the issuer and nothing else the revoker writes. Logs
/// are checked on a real process's output by the e2e canary test: a scoped
/// tracing subscriber here misses lines when other tests run in parallel.
#[tokio::test]
async fn a_canary_secret_reaches_only_the_issuer() {
    {
        const CANARY: &str = "at_CANARY_5c1e7d2b9f";
        let issuer = TestServer::start(Reply::status(200)).await;
        let hooks = TestServer::start(Reply::status(200)).await;
        unsafe {
            std::env::set_var("TW_TEST_CANARY_CLIENT", "client-secret");
            std::env::set_var(
                "TW_TEST_WHSEC_CANARY",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            );
        }
        let mut cfg = config(IssuerConfig::Oauth2 {
            revocation_url: issuer.url("/revoke"),
            client_id: "tw".into(),
            client_secret_env: "TW_TEST_CANARY_CLIENT".into(),
            client_auth: ClientAuth::ClientSecretBasic,
            token_type_hint: None,
            introspection_url: None,
        });
        cfg.webhooks = vec![webhook(&hooks, "TW_TEST_WHSEC_CANARY")];
        let r = start(&cfg);
        r.commands
            .send(Command::Secrets(vec![(
                "iss".into(),
                "fp_canary".into(),
                Secret::new(CANARY.into()),
            )]))
            .await
            .unwrap();
        r.decide(vec![decision("fp_canary", 1)]).await;
        let log = r.until("fp_canary", State::Revoked).await;
        let hooks_seen = hooks.wait_for(2, WAIT).await;

        let revoke = issuer
            .requests()
            .into_iter()
            .find(|q| q.method == "POST")
            .expect("a revocation request");
        assert!(
            revoke.text().contains(CANARY),
            "the issuer needs the raw token"
        );
        for h in &hooks_seen {
            assert!(!h.text().contains(CANARY), "webhook body leaked the secret");
        }
        for record in &log {
            assert!(
                !serde_json::to_string(record).unwrap().contains(CANARY),
                "ledger record leaked the secret"
            );
        }
    }
}

/// Issue 11, section 5: a webhook URL must not reach this machine unless
/// the config says so: a literal loopback address or `localhost` is refused
/// by the config check, and a name that resolves to loopback is refused when
/// it is resolved.
#[tokio::test]
async fn webhooks_never_reach_this_machine_unless_allowed() {
    let hooks = TestServer::start(Reply::status(200)).await;
    unsafe {
        std::env::set_var(
            "TW_TEST_WHSEC_LOCAL",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    };
    let mut cfg = config(http_issuer(&hooks));
    let mut w = webhook(&hooks, "TW_TEST_WHSEC_LOCAL");
    w.allow_loopback = false;
    for url in [
        "http://127.0.0.1:9/h",
        "http://[::1]:9/h",
        "http://localhost:9/h",
        "http://0.0.0.0/h",
    ] {
        w.url = url.parse().unwrap();
        cfg.webhooks = vec![w.clone()];
        let problems = cfg.validate();
        assert!(
            problems.iter().any(|p| p.contains("loopback")),
            "{url}: {problems:?}"
        );
    }
    w.allow_loopback = true;
    cfg.webhooks = vec![w];
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());

    let url = format!("http://localhost:{}/hooks", hooks.addr.port());
    let refused = webhook_client(Duration::from_secs(2), false)
        .unwrap()
        .post(&url)
        .send()
        .await;
    assert!(refused.is_err(), "resolved to loopback: refused");
    assert!(hooks.requests().is_empty());
    let allowed = webhook_client(Duration::from_secs(2), true)
        .unwrap()
        .post(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(hooks.requests().len(), 1);
}

/// Issue 11, section 2: an alert storm cannot grow the work without limit:
/// alert messages past the budget are counted, not sent; revocations are
/// always sent.
#[tokio::test]
async fn alert_messages_past_the_budget_are_counted_not_sent() {
    let issuer = TestServer::start(Reply::status(200)).await;
    let hooks = TestServer::start(Reply::status(200)).await;
    unsafe {
        std::env::set_var(
            "TW_TEST_WHSEC_BUDGET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    };
    let mut cfg = config(http_issuer(&issuer));
    cfg.webhooks = vec![webhook(&hooks, "TW_TEST_WHSEC_BUDGET")];
    cfg.alert_budget_per_minute = 2;
    let r = start(&cfg);
    let alerts: Vec<Decision> = (0..5)
        .map(|n| {
            let mut d = decision(&format!("tok-alert-{n}"), n);
            d.action = Action::Alert;
            d
        })
        .collect();
    r.decide(alerts).await;
    r.decide(vec![decision("tok-revoke", 9)]).await;
    r.until("tok-revoke", State::Revoked).await;
    // Two alerts, the revoke's decision and its revocation message.
    let seen = hooks.wait_for(4, WAIT).await;
    let alert_messages = seen
        .iter()
        .filter(|q| {
            let b: serde_json::Value = serde_json::from_slice(&q.body).unwrap();
            b["type"] == "tokenwatch.decision" && b["data"]["action"] == "alert"
        })
        .count();
    assert_eq!(alert_messages, 2);
    assert_eq!(
        r.metrics
            .alerts_over_budget
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}
