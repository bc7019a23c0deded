use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use schemas::{Action, Mode};

use super::*;
use crate::decision::DecisionConfig;
use crate::testkit::{MIN_MS, T0_MS, changchun, london, origin};
use crate::{DetectorsConfig, MetadataStore};

fn engine() -> Engine {
    let decision = DecisionConfig {
        mode: Mode::Enforce,
        ..Default::default()
    };
    Engine::with_parts(
        &DetectorsConfig::default(),
        &decision,
        None,
        MetadataStore::default(),
    )
}

fn call(ts_ms: i64, token: &str, principal: Option<&str>) -> Event {
    let mut e = Event::new(ts_ms, token, "oauth", "GET /v1/orders/{id}");
    e.principal = principal.map(str::to_owned);
    e.request_id = Some(format!("{token}-{ts_ms}"));
    e
}

fn input(events: Vec<Event>, ack: Finalizer) -> Input {
    let origins = (0..events.len() as i64).map(origin).collect();
    Input {
        batch: EventBatch { events, origins },
        secrets: Vec::new(),
        ack,
    }
}

/// Finalizers that count their batch's acknowledgement and announce it.
fn counter() -> (
    Arc<AtomicUsize>,
    mpsc::UnboundedReceiver<()>,
    impl Fn() -> Finalizer,
) {
    let acks = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let a = acks.clone();
    (acks, rx, move || {
        let (a, tx) = (a.clone(), tx.clone());
        Finalizer::new(move || {
            a.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(());
        })
    })
}

#[test]
fn a_principal_and_its_tokens_share_a_shard_and_the_key_decides_alone() {
    let a = call(T0_MS, "key-1", Some("role/deploy"));
    let b = call(T0_MS, "key-2", Some("role/deploy"));
    assert_eq!(shard_of(&a, 8), shard_of(&b, 8));
    // Without a principal, the token id decides: spread over the shards.
    let spread: std::collections::HashSet<usize> = (0..64)
        .map(|i| shard_of(&call(T0_MS, &format!("key-{i}"), None), 4))
        .collect();
    assert_eq!(spread.len(), 4);
    assert_eq!(shard_of(&a, 1), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_once_every_shard_part_is_recorded() {
    let stage = DetectStage::new(engine(), 4);
    assert_eq!(stage.shards(), 4);
    let (in_tx, in_rx) = mpsc::channel(4);
    let (_control_tx, control_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let running = tokio::spawn(stage.run(in_rx, control_rx, out_tx));
    let (acks, mut acked, ack) = counter();

    // 40 tokens, one of them from Changchun after London a minute ago: an
    // impossible-travel alert on one shard; the other parts are quiet.
    let mut events: Vec<Event> = (0..40)
        .map(|i| london(call(T0_MS, &format!("tok-{i}"), None)))
        .collect();
    events.push(changchun(call(T0_MS + MIN_MS, "tok-7", None)));
    in_tx.send(input(events, ack())).await.unwrap();

    let batch = out_rx.recv().await.unwrap();
    assert!(
        batch.decisions.iter().any(|d| d.token_id == "tok-7"),
        "{batch:?}"
    );
    assert_eq!(
        acks.load(Ordering::SeqCst),
        0,
        "the part with a decision is not recorded yet"
    );
    batch.ack.done();
    // The quiet parts are done by their shards as they finish them.
    acked.recv().await.unwrap();
    assert_eq!(acks.load(Ordering::SeqCst), 1);

    // A part whose decisions could not be recorded: never acknowledged.
    let events = vec![
        london(call(T0_MS + 2 * MIN_MS, "tok-9", None)),
        changchun(call(T0_MS + 3 * MIN_MS, "tok-9", None)),
        london(call(T0_MS + 3 * MIN_MS, "tok-10", None)),
    ];
    in_tx.send(input(events, ack())).await.unwrap();
    drop(out_rx.recv().await.unwrap());
    drop(in_tx);
    running.await.unwrap();
    assert_eq!(acks.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_reach_every_shard_in_order_with_the_batches() {
    let stage = DetectStage::new(engine(), 3);
    let stats = stage.stats();
    let (in_tx, in_rx) = mpsc::channel(4);
    let (control_tx, control_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let running = tokio::spawn(stage.run(in_rx, control_rx, out_tx));
    let (_, _, ack) = counter();

    // Every token is scoped to reads; the metadata reaches all shards.
    for i in 0..30 {
        let m: TokenMetadata = serde_json::from_value(serde_json::json!({
            "issuer": "oauth", "token_id": format!("tok-{i}"), "scopes": ["GET *"],
        }))
        .unwrap();
        control_tx.send(Control::Upsert(m)).await.unwrap();
    }
    let (synced, done) = oneshot::channel();
    control_tx.send(Control::Sync(synced)).await.unwrap();
    done.await.unwrap();
    let events = (0..30)
        .map(|i| {
            let mut e = call(T0_MS, &format!("tok-{i}"), None);
            e.action = "DELETE /v1/orders/{id}".into();
            e
        })
        .collect();
    in_tx.send(input(events, ack())).await.unwrap();
    let mut decided = std::collections::BTreeMap::new();
    while decided.len() < 30 {
        let batch = out_rx.recv().await.unwrap();
        for d in &batch.decisions {
            assert_eq!(d.recommended, Action::Revoke, "{d:?}");
            decided.insert(d.token_id.clone(), d.action);
        }
        batch.ack.done();
    }
    // The revocation budget (20 a minute per issuer) is the instance's,
    // shared by the shards: the rest are alerts.
    let revoked = decided.values().filter(|a| **a == Action::Revoke).count();
    assert_eq!(revoked, 20);

    // Describe finds the shard that holds the token.
    let (reply, answer) = oneshot::channel();
    control_tx
        .send(Control::Describe {
            issuer: "oauth".into(),
            token_id: "tok-17".into(),
            reply,
        })
        .await
        .unwrap();
    let described = answer.await.unwrap();
    assert!(!described["state"].is_null(), "{described}");
    assert_eq!(stats.merged().events, 30);
    assert_eq!(stats.merged().store.tokens, 30);
    drop(in_tx);
    drop(control_tx);
    running.await.unwrap();
}
