//! SPEC §10 at-least-once: the real binary, killed with SIGKILL repeatedly
//! while it consumes, then stopped with SIGTERM. Every event ends up
//! committed, no token is revoked twice, and SIGTERM exits 0.

use std::process::{Child, Stdio};
use std::time::Duration;

use revoker::IssuerConfig;
use revoker::testing::{Reply, TestServer};
use tokenwatch::scenario::Scenario;

use crate::support::{self, create_topic, produce, progress, unique_name, until};

fn spawn(config: &std::path::Path, life: usize) -> Child {
    let log = std::fs::File::create(config.with_file_name(format!("life-{life}.log"))).unwrap();
    crate::support::tokenwatch()
        .args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_repeatedly_it_still_processes_everything_and_revokes_once() {
    let scenario = Scenario::generate(21, 1000, 1_795_813_200_000, 3 * 3_600_000, 180_000);
    let issuer = TestServer::start(Reply::status(200)).await;
    let topic = unique_name("crash-events");
    create_topic(&topic, 4).await;
    let mut config = support::config("crash", &topic).await;
    // A killed member leaves the group only when its session times out.
    config
        .ingest
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    config
        .ingest
        .properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    config.decision.mode = schemas::Mode::Enforce;
    config.revoker.issuers.insert(
        "demo-oauth".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    config.admin.enabled = false;
    let dir = std::env::temp_dir().join(unique_name("crash"));
    std::fs::create_dir_all(&dir).unwrap();
    config.detectors = support::scenario_detectors(&scenario, &dir);
    let path = dir.join("tokenwatch.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    // Events keep arriving while the consumer is killed: under load.
    let records: Vec<(String, Vec<u8>)> = scenario
        .events
        .iter()
        .map(|e| (e.token_id.clone(), e.to_json().into_bytes()))
        .collect();
    // Each life gets a fresh chunk while it runs, and the next chunk waits
    // for the kill: production follows the lives, not a clock.
    let (next_chunk, mut go) = tokio::sync::mpsc::channel::<()>(1);
    let producing = {
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut chunks = records.chunks(records.len().div_ceil(4));
            for chunk in chunks.by_ref().take(3) {
                if go.recv().await.is_none() {
                    return;
                }
                produce(&topic, chunk).await;
            }
            // The rest once the last kill is done.
            let _ = go.recv().await;
            for chunk in chunks {
                produce(&topic, chunk).await;
            }
        })
    };
    let (group, t) = (config.ingest.group_id.clone(), topic.clone());

    // Three lives ended by SIGKILL, each after committing some progress
    // while its chunk was still arriving.
    let mut last = 0;
    for life in 0..3 {
        let mut child = spawn(&path, life);
        next_chunk.send(()).await.unwrap();
        let target = last + 1;
        until(
            &format!("life {life} to commit progress (logs in {})", dir.display()),
            Duration::from_secs(120),
            || progress(&group, &t, 4).0 >= target,
        )
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        last = progress(&group, &t, 4).0;
    }
    next_chunk.send(()).await.unwrap();
    producing.await.unwrap();
    let (_, end) = progress(&group, &t, 4);
    assert_eq!(end as usize, scenario.events.len());
    // The last life runs to the end and stops on SIGTERM.
    let mut child = spawn(&path, 3);
    until(
        "every event to be committed",
        Duration::from_secs(180),
        || {
            let (done, end) = progress(&group, &t, 4);
            done == end
        },
    )
    .await;
    let exit = support::terminate(&mut child);
    assert!(exit.success(), "SIGTERM ends with exit 0, got {exit:?}");

    let calls = support::revoked_tokens(&issuer);
    let mut unique = calls.clone();
    unique.dedup();
    assert_eq!(calls, unique, "no token is revoked twice across kills");
    assert!(
        calls.iter().all(|t| t.starts_with("atk-")),
        "only attack tokens are revoked: {calls:?}"
    );
    // Mass export from far away (a volume cap and travel), scope and
    // binding need no learned history, so they are revoked whatever the
    // kills. Travel with a new client and the slow takeover need the
    // token's history to call the client new, which a kill loses (per-token
    // state is not checkpointed yet): after an unlucky kill they alert.
    for attack in [
        "atk-mass_export",
        "atk-out_of_scope_admin",
        "atk-outside_bound_cidr",
    ] {
        assert!(
            calls.iter().any(|c| c == attack),
            "{attack} not revoked: {calls:?}"
        );
    }
}
