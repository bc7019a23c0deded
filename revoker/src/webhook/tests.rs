use std::time::Duration;

use super::*;
use crate::testing::{Reply, TestServer};

const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hooks(server: &TestServer, env: &str, schedule: &[u64]) -> Webhooks {
    unsafe { std::env::set_var(env, KEY) };
    let config = WebhookConfig {
        url: server.url("/alerts"),
        secret_envs: vec![env.into()],
        min_action: Action::Alert,
        retry_schedule: schedule
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        timeout: Duration::from_secs(2),
        allow_loopback: true,
    };
    Webhooks::build(
        &[config],
        crate::service::http_client(Duration::from_secs(2)).unwrap(),
        None,
        None,
        100,
    )
    .unwrap()
}

fn msg(id: &str) -> Outgoing {
    Outgoing {
        id: id.into(),
        kind: "tokenwatch.decision",
        action: Action::Revoke,
        body: Arc::new(br#"{"type":"t"}"#.to_vec()),
    }
}

async fn until(counter: &AtomicU64, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counter.load(Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter stuck at {}",
            counter.load(Relaxed)
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn signs_with_the_standard_headers_and_a_stable_id() {
    let server = TestServer::start(Reply::status(204)).await;
    let w = hooks(&server, "TW_TEST_WH_1", &[]).with_clock(|| 1_614_265_330);
    w.send(msg("msg_p5jXN8AQM9LWM0D4loKWxJek"));
    let r = &server.wait_for(1, Duration::from_secs(10)).await[0];
    assert_eq!(r.header("webhook-id"), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
    assert_eq!(r.header("webhook-timestamp"), Some("1614265330"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let expected = sign::sign(
        &sign::parse_secret(KEY).unwrap(),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        &r.body,
    );
    assert_eq!(r.header("webhook-signature"), Some(expected.as_str()));
    until(&w.metrics.delivered, 1).await;
}

#[tokio::test]
async fn retries_on_schedule_honouring_retry_after_then_dead_letters() {
    let server = TestServer::start(Reply::status(500)).await;
    server.script([Reply::status(503).header("retry-after", "1")]);
    let w = hooks(&server, "TW_TEST_WH_2", &[10, 10]);
    w.send(msg("m1"));
    let reqs = server.wait_for(3, Duration::from_secs(10)).await;
    // The first retry waited for Retry-After (1 s), not the 10 ms schedule.
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(950));
    assert!(reqs[2].at.duration_since(reqs[1].at) < Duration::from_millis(900));
    until(&w.metrics.dead_lettered, 1).await;
    assert_eq!(w.metrics.retries.load(Relaxed), 2);
    assert_eq!(
        server.requests().len(),
        3,
        "schedule of two retries: three attempts"
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let server = TestServer::start(Reply::status(410)).await;
    let w = hooks(&server, "TW_TEST_WH_3", &[10, 10]);
    w.send(msg("m1"));
    until(&w.metrics.dead_lettered, 1).await;
    w.send(msg("m2"));
    until(&w.metrics.dead_lettered, 2).await;
    assert_eq!(
        server.requests().len(),
        1,
        "no retry after 410, nothing after disabling"
    );
    assert_eq!(w.metrics.disabled_endpoints.load(Relaxed), 1);
}

#[tokio::test]
async fn endpoints_filter_by_action() {
    let server = TestServer::start(Reply::status(200)).await;
    unsafe { std::env::set_var("TW_TEST_WH_4", KEY) };
    let config = WebhookConfig {
        url: server.url("/revocations-only"),
        secret_envs: vec!["TW_TEST_WH_4".into()],
        min_action: Action::Revoke,
        retry_schedule: vec![],
        timeout: Duration::from_secs(2),
        allow_loopback: true,
    };
    let w = Webhooks::build(
        &[config],
        crate::service::http_client(Duration::from_secs(2)).unwrap(),
        None,
        None,
        100,
    )
    .unwrap();
    w.send(Outgoing {
        action: Action::Alert,
        ..msg("alert")
    });
    w.send(msg("revoke"));
    until(&w.metrics.delivered, 1).await;
    let ids: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids, ["revoke"]);
}

#[tokio::test]
async fn drain_waits_for_deliveries_in_flight() {
    let server = TestServer::start(Reply::status(200).delayed(Duration::from_millis(300))).await;
    let w = hooks(&server, "TW_TEST_WH_5", &[]);
    w.send(msg("slow-1"));
    w.send(msg("slow-2"));
    assert_eq!(w.drain(Duration::from_secs(10)).await, 0);
    assert_eq!(
        w.metrics.delivered.load(Relaxed),
        2,
        "both delivered before drain returned"
    );
    assert_eq!(w.drain(Duration::from_millis(1)).await, 0, "nothing left");
}
