//! The demo's outside world on 127.0.0.1: a fake issuer whose kill switch
//! records each call, and a webhook receiver that verifies every signature
//! and prints each alert as it arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use revoker::webhook::sign;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the fake issuer and the receiver saw, by token.
#[derive(Default)]
pub struct Seen {
    /// Token → when the issuer's kill switch was called (ms), and how often.
    pub revoked: HashMap<String, (i64, u32)>,
    /// Token → decisions alerted (webhook `tokenwatch.decision`).
    pub decisions: HashMap<String, Vec<serde_json::Value>>,
    /// Token → event → revoked latency from `tokenwatch.revocation`.
    pub revocation_ms: HashMap<String, i64>,
    pub bad_signatures: u64,
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    key: Arc<Vec<u8>>,
}

async fn issuer(State(s): State<Shared>, Path(token): Path<String>) -> StatusCode {
    if let Ok(mut seen) = s.seen.lock() {
        let entry = seen.revoked.entry(token).or_insert((now_ms(), 0));
        entry.1 += 1;
    }
    StatusCode::OK
}

async fn webhook(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts) = (get("webhook-id"), get("webhook-timestamp"));
    let expected = ts
        .parse()
        .map(|ts| sign::sign(&s.key, id, ts, &body))
        .unwrap_or_default();
    let Ok(mut seen) = s.seen.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    if !get("webhook-signature")
        .split(' ')
        .any(|sig| sig == expected)
    {
        seen.bad_signatures += 1;
        println!("  !! webhook {id}: signature does not verify");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let data = &msg["data"];
    let token = data["token_id"].as_str().unwrap_or("").to_string();
    match msg["type"].as_str() {
        Some("tokenwatch.decision") => {
            let action = data["action"].as_str().unwrap_or("");
            let reasons: Vec<String> = data["findings"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| {
                            format!(
                                "{}: {}",
                                f["kind"].as_str().unwrap_or(""),
                                f["summary"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(count) = data["repeats"]["count"].as_u64() {
                println!(
                    "  REPEATS {token:<24} {count} more finding(s) folded into one alert (deduplicated)"
                );
                seen.decisions.entry(token).or_default().push(data.clone());
                return StatusCode::NO_CONTENT;
            }
            let latency = data["timings"]["event_to_decision_ms"]
                .as_i64()
                .unwrap_or(0);
            println!(
                "  {:<7} {token:<24} risk {:.2}  {}  ({latency} ms event → decision)",
                action.to_uppercase(),
                data["risk"].as_f64().unwrap_or(0.0),
                reasons.join("; ")
            );
            seen.decisions.entry(token).or_default().push(data.clone());
        }
        Some("tokenwatch.revocation") => {
            let state = data["revocation"]["state"].as_str().unwrap_or("");
            let ms = data["timings"]["event_to_revoked_ms"].as_i64();
            match ms {
                Some(ms) => println!(
                    "  {:<7} {token:<24} issuer confirmed: {ms} ms event → revoked",
                    state.to_uppercase()
                ),
                None => println!(
                    "  {:<7} {token:<24} {}",
                    state.to_uppercase(),
                    data["revocation"]["last_error"].as_str().unwrap_or("")
                ),
            }
            if let Some(ms) = ms {
                seen.revocation_ms.insert(token, ms);
            }
        }
        _ => println!("  SYSTEM  {}", data["message"].as_str().unwrap_or("")),
    }
    StatusCode::NO_CONTENT
}

/// The two servers; returns their base URLs.
pub async fn start(
    seen: Arc<Mutex<Seen>>,
    webhook_secret: &str,
) -> anyhow::Result<(String, String)> {
    let key = sign::parse_secret(webhook_secret)
        .ok_or_else(|| anyhow::anyhow!("bad demo webhook secret"))?;
    let shared = Shared {
        seen,
        key: Arc::new(key),
    };
    let issuer_app = Router::new()
        .route("/oauth2/revoke/{token}", post(issuer))
        .with_state(shared.clone());
    let hooks_app = Router::new()
        .route("/hooks", post(webhook))
        .with_state(shared);
    let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hooks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let urls = (
        format!("http://{}", issuer_listener.local_addr()?),
        format!("http://{}", hooks_listener.local_addr()?),
    );
    tokio::spawn(async move { axum::serve(issuer_listener, issuer_app).await });
    tokio::spawn(async move { axum::serve(hooks_listener, hooks_app).await });
    Ok(urls)
}
