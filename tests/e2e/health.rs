//! Issue 14, section 4: detector health is a security signal. Consumer lag
//! over its budget raises `detector_degraded` on the webhook, signed like
//! every message, and `detector_recovered` once the backlog is read.

use std::time::Duration;

use revoker::WebhookConfig;
use revoker::testing::{Reply, TestServer};
use schemas::{Action, Event};

use crate::support::{self, create_topic, python, unique_name, until};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_over_its_budget_raises_detector_degraded_on_the_webhook() {
    let hooks = TestServer::start(Reply::status(204)).await;
    let topic = unique_name("health-events");
    create_topic(&topic, 2).await;
    // A backlog far over the budget, there before the pipeline starts.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<(String, Vec<u8>)> = (0..20_000)
        .map(|i| {
            let token = format!("h-{}", i % 500);
            let mut e = Event::new(t0 + i, token.clone(), "oauth", "GET /v1/orders");
            e.src_ip = Some("10.1.2.3".parse().unwrap());
            (token, e.to_json().into_bytes())
        })
        .collect();
    support::produce(&topic, &records).await;

    let mut config = support::config("health", &topic).await;
    config.health.max_consumer_lag = 1_000;
    // One event a batch: the backlog takes seconds to read, not one.
    config.ingest.batch_max_records = 1;
    config.health.check_interval = Duration::from_millis(100);
    // Lag comes from librdkafka's statistics: often, for the test.
    config
        .ingest
        .properties
        .insert("statistics.interval.ms".into(), "100".into());
    unsafe { std::env::set_var("TW_E2E_HEALTH_WHSEC", WHSEC) };
    config.revoker.webhooks.push(WebhookConfig {
        url: hooks.url("/hooks"),
        secret_envs: vec!["TW_E2E_HEALTH_WHSEC".into()],
        min_action: Action::Alert,
        retry_schedule: vec![Duration::from_millis(50)],
        timeout: Duration::from_secs(5),
        allow_loopback: true,
    });
    let run = support::start(&config).await;
    // The system alerts among the webhook messages, in arrival order.
    let kinds = || -> Vec<String> {
        support::webhook_messages(&hooks)
            .iter()
            .map(|(_, body)| String::from_utf8_lossy(body).to_string())
            .filter(|body| body.contains("\"tokenwatch.system\""))
            .filter_map(|body| {
                ["detector_degraded", "detector_recovered"]
                    .into_iter()
                    .find(|k| body.contains(&format!("\"{k}\"")))
                    .map(str::to_owned)
            })
            .collect()
    };
    until(
        "detector_degraded, then detector_recovered",
        Duration::from_secs(120),
        || kinds().iter().any(|k| k == "detector_recovered"),
    )
    .await;
    let seen = kinds();
    assert!(
        seen.first().is_some_and(|k| k == "detector_degraded"),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|k| *k == "detector_recovered").count(),
        1,
        "{seen:?}"
    );
    let degraded = support::webhook_messages(&hooks)
        .into_iter()
        .find(|(_, body)| String::from_utf8_lossy(body).contains("detector_degraded"))
        .unwrap();
    let body = String::from_utf8_lossy(&degraded.1).to_string();
    assert!(body.contains("over the budget of 1000"), "{body}");
    // Signed like every message, checked with the reference library.
    python::verify_webhooks(WHSEC, &[degraded]).unwrap();
    assert_eq!(run.stats.engine_stats().events, 20_000);
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
}
