//! Issue 11, section 3: one token, one revocation, across processes. Two
//! `tokenwatch run` processes, each in its own consumer group (so both judge
//! every event, as with an unkeyed source or across a rebalance), and
//! `tokenwatch revoke` runs beside them race for the same tokens on the real
//! broker. Each token reaches its issuer exactly once.

use std::process::{Child, Stdio};
use std::time::Duration;

use revoker::IssuerConfig;
use revoker::testing::{Reply, TestServer};
use schemas::Event;

use crate::support::{self, create_topic, produce, progress, unique_name, until};

const TOKENS: usize = 40;
const BY_HAND: usize = 12;

fn spawn_run(config: &std::path::Path, name: &str) -> Child {
    let log = std::fs::File::create(config.with_file_name(format!("{name}.log"))).unwrap();
    support::tokenwatch()
        .args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    let exit = support::terminate(&mut child);
    assert!(exit.success(), "SIGTERM ends with exit 0, got {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_and_the_cli_revoke_each_token_exactly_once() {
    let issuer = TestServer::start(Reply::status(200)).await;
    let topic = unique_name("race-events");
    create_topic(&topic, 4).await;
    let mut config = support::config("race", &topic).await;
    config.decision.mode = schemas::Mode::Enforce;
    config.decision.budget.per_issuer_per_minute = 10_000;
    config.decision.budget.overall_per_minute = 10_000;
    config.revoker.issuers.insert(
        "race".into(),
        IssuerConfig::post(format!("http://{}/revoke/{{token_id}}", issuer.addr)),
    );
    config.admin.enabled = false;
    let dir = support::temp_dir();
    let tokens: Vec<String> = (0..TOKENS).map(|i| format!("race-{i}")).collect();
    let metadata: String = tokens
        .iter()
        .map(|t| {
            format!(
                "{{\"issuer\":\"race\",\"token_id\":\"{t}\",\"bound_cidrs\":[\"10.0.0.0/8\"]}}\n"
            )
        })
        .collect();
    std::fs::write(dir.join("tokens.ndjson"), metadata).unwrap();
    config.detectors.metadata_file = Some(dir.join("tokens.ndjson"));
    let mut groups = Vec::new();
    let mut paths = Vec::new();
    for name in ["a", "b"] {
        config.ingest.group_id = unique_name(&format!("race-{name}"));
        groups.push(config.ingest.group_id.clone());
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        paths.push(path);
    }
    let runs: Vec<Child> = ["a", "b"]
        .iter()
        .zip(&paths)
        .map(|(name, path)| spawn_run(path, name))
        .collect();

    // Every token calls from outside its bound network: a deterministic
    // revoke, decided by both instances.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<(String, Vec<u8>)> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = Event::new(now + i as i64, t.clone(), "race", "GET /v1/orders");
            e.src_ip = Some(std::net::IpAddr::from([203, 0, 113, i as u8]));
            (t.clone(), e.to_json().into_bytes())
        })
        .collect();
    // ... while a person revokes some of the same tokens by hand.
    let by_hand: Vec<Child> = tokens[..BY_HAND]
        .iter()
        .map(|t| {
            support::tokenwatch()
                .args(["revoke", "-c"])
                .arg(&paths[0])
                .args(["--issuer", "race", "--token", t])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    produce(&topic, &records).await;

    for group in &groups {
        until(
            &format!("{group} to commit every event (logs in {})", dir.display()),
            Duration::from_secs(120),
            || {
                let (done, end) = progress(group, &topic, 4);
                end > 0 && done == end
            },
        )
        .await;
    }
    let mut by_hand_results = Vec::new();
    for child in by_hand {
        let out = child.wait_with_output().unwrap();
        by_hand_results.push((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    for run in runs {
        stop(run);
    }

    let calls = support::revoked_tokens(&issuer);
    for token in &tokens {
        let n = calls.iter().filter(|c| *c == token).count();
        assert_eq!(
            n,
            1,
            "{token} reached its issuer {n} times (logs in {})",
            dir.display()
        );
    }
    for (ok, stderr) in &by_hand_results {
        assert!(
            *ok || stderr.contains("already in the revocation ledger"),
            "a manual revocation either did the call or found it decided: {stderr}"
        );
    }
    let won_by_hand = by_hand_results.iter().filter(|(ok, _)| *ok).count();
    eprintln!(
        "race: {TOKENS} tokens, 2 instances + {BY_HAND} manual revocations: {} issuer calls ({} by hand), every token exactly once",
        calls.len(),
        won_by_hand
    );
}

/// Issue 11, section 2: `tokenwatch revoke` against an issuer that revokes
/// by the raw token, which only a running instance can get from events.
/// Before, the command failed the revocation for good. Now it is recorded as
/// `awaiting_secret`, the command says so, and the running instance sends it
/// as soon as an event brings the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_oauth2_revocation_waits_for_the_secret_and_a_running_instance_sends_it() {
    use revoker::config::ClientAuth;
    const SECRET: &str = "at_manual_wait_31c9";
    const KEY: &str = "manual-wait-fingerprint-key";
    let issuer = TestServer::start(Reply::status(200)).await;
    let topic = unique_name("manual-events");
    create_topic(&topic, 1).await;
    let mut config = support::config("manual", &topic).await;
    config.ingest.fingerprint_key_env = "TW_E2E_MANUAL_FP".into();
    config.revoker.issuers.insert(
        "oauth".into(),
        IssuerConfig::Oauth2 {
            revocation_url: issuer.url("/revoke"),
            client_id: "tw".into(),
            client_secret_env: "TW_E2E_MANUAL_CLIENT".into(),
            client_auth: ClientAuth::ClientSecretBasic,
            token_type_hint: None,
            introspection_url: None,
        },
    );
    config.revoker.liveness_timeout = Duration::from_secs(2);
    config.admin.enabled = false;
    let dir = support::temp_dir();
    let path = dir.join("tokenwatch.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let envs = [
        ("TW_E2E_MANUAL_FP", KEY),
        ("TW_E2E_MANUAL_CLIENT", "client-secret"),
    ];
    let fp = schemas::Fingerprinter::new(KEY.as_bytes()).fingerprint(SECRET);

    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let run = support::tokenwatch()
        .args(["run", "-c"])
        .arg(&path)
        .envs(envs)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let manual = support::tokenwatch()
        .args(["revoke", "-c"])
        .arg(&path)
        .args(["--issuer", "oauth", "--token", &fp])
        .envs(envs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&manual.stderr);
    assert!(!manual.status.success());
    assert!(stderr.contains("awaiting_secret"), "{stderr}");
    assert!(
        issuer.requests().iter().all(|q| q.method != "POST"),
        "nothing to send yet"
    );

    // An ordinary call with the token: the instance now holds the secret.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let event =
        format!(r#"{{"ts":{now},"token":"{SECRET}","issuer":"oauth","action":"GET /v1/orders"}}"#);
    produce(&topic, &[("k".into(), event.into_bytes())]).await;
    until(
        &format!(
            "the running instance to send the manual revocation (logs in {})",
            dir.display()
        ),
        Duration::from_secs(60),
        || issuer.requests().iter().any(|q| q.method == "POST"),
    )
    .await;
    stop(run);
    let posts: Vec<_> = issuer
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "sent once");
    assert!(posts[0].text().contains(SECRET), "with the raw token");
}
