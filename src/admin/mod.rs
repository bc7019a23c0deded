//! The admin HTTP API (axum), on 127.0.0.1 by default:
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /healthz` | - | the process is up |
//! | `GET /readyz` | - | token metadata applied, partitions assigned, detection ready |
//! | `GET /metrics` | - | Prometheus text; no token ids as labels |
//! | `GET /v1/tokens/{issuer}/{token_id}` | - | state, metadata, recent decisions, ledger record |
//! | `GET /v1/decisions?limit=N` | - | recent decisions, newest first |
//! | `GET /v1/denylist` | - | every decided revocation, for gateways that fail closed |
//! | `POST /v1/revoke` | bearer | the manual kill switch |
//! | `POST /v1/allow` | bearer | allowlist a token at runtime |
//!
//! State-changing routes need `Authorization: Bearer <token>`, the token
//! being the value of the variable `token_env` names, compared in constant
//! time. With the variable unset they always answer 401.

mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ingest::IngestMetrics;
use revoker::Command;
use revoker::metrics::RevokerMetrics;
use revoker::webhook::WebhookMetrics;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::pipeline::{Control, FlowStats};

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on. Keep it on loopback unless a proxy guards it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Variable holding the bearer token for state-changing routes.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Decisions kept for `GET /v1/decisions`.
    #[serde(default = "default_recent")]
    pub recent_decisions: usize,
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_token_env() -> String {
    "TOKENWATCH_ADMIN_TOKEN".into()
}
fn default_recent() -> usize {
    1000
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: default_listen(),
            token_env: default_token_env(),
            recent_decisions: default_recent(),
        }
    }
}

impl AdminConfig {
    /// Whether `url` would reach this API (a webhook must not).
    pub fn is_self(&self, url: &url::Url) -> bool {
        let port_matches = url.port_or_known_default() == Some(self.listen.port());
        let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
        let local = matches!(host, "localhost" | "127.0.0.1" | "::1" | "0.0.0.0" | "::")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip == self.listen.ip());
        self.enabled && port_matches && local
    }
}

/// What the handlers read and whom they ask.
#[derive(Clone)]
pub struct AdminState {
    pub flow: Arc<FlowStats>,
    pub ingest: Arc<IngestMetrics>,
    pub revoker: Arc<RevokerMetrics>,
    pub webhooks: Arc<WebhookMetrics>,
    pub control: mpsc::Sender<Control>,
    pub commands: mpsc::Sender<Command>,
    pub token: Option<Arc<str>>,
}

/// Constant-time comparison, so response timing says nothing about how
/// much of a guessed token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&state.token, given) {
        (Some(token), Some(given)) if same(token.as_bytes(), given.as_bytes()) => Ok(()),
        (None, _) => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "state-changing routes are disabled: the admin token variable is not set",
        ))),
        _ => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// 503: a stage the route needs has stopped (shutdown in progress).
fn unavailable(stage: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{stage} is not running"),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let assigned = s
        .ingest
        .assigned_partitions
        .load(std::sync::atomic::Ordering::Relaxed);
    if !*s.flow.metadata_ready.borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: reading the token-metadata topic; events wait until it is applied\n",
        )
            .into_response()
    } else if assigned > 0 {
        (
            StatusCode::OK,
            format!("ready: {assigned} partition(s) assigned, detection running\n"),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no partitions assigned yet\n",
        )
            .into_response()
    }
}

async fn prometheus(State(s): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&s),
    )
        .into_response()
}

async fn token(
    State(s): State<AdminState>,
    Path((issuer, token_id)): Path<(String, String)>,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.control
        .send(Control::Describe {
            issuer: issuer.clone(),
            token_id: token_id.clone(),
            reply: tx,
        })
        .await
        .is_err()
    {
        return unavailable("detection");
    }
    let Ok(mut view) = rx.await else {
        return unavailable("detection");
    };
    let recent: Vec<serde_json::Value> = s
        .flow
        .recent(usize::MAX)
        .into_iter()
        .filter(|d| d.issuer == issuer && d.token_id == token_id)
        .take(20)
        .map(|d| serde_json::to_value(d).unwrap_or_default())
        .collect();
    view["recent_decisions"] = recent.into();
    let (tx, rx) = oneshot::channel();
    if s.commands.send(Command::Denylist(tx)).await.is_ok()
        && let Ok(list) = rx.await
    {
        view["revocation"] = list
            .into_iter()
            .find(|r| r.issuer == issuer && r.token_id == token_id)
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .into();
    }
    Json(view).into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn decisions(State(s): State<AdminState>, Query(q): Query<Limit>) -> Response {
    Json(s.flow.recent(q.limit.unwrap_or(100))).into_response()
}

async fn denylist(State(s): State<AdminState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.commands.send(Command::Denylist(tx)).await.is_err() {
        return unavailable("the revoker");
    }
    match rx.await {
        Ok(list) => Json(list).into_response(),
        Err(_) => unavailable("the revoker"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    issuer: String,
    token_id: String,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"issuer\", \"token_id\", \"reason\"?, \"principal\"?}",
        );
    };
    let (tx, rx) = oneshot::channel();
    let reason = body
        .reason
        .unwrap_or_else(|| "manual revocation via the admin API".into());
    let cmd = Command::Manual {
        issuer: body.issuer,
        token_id: body.token_id,
        principal: body.principal,
        reason,
        reply: tx,
    };
    if s.commands.send(cmd).await.is_err() {
        return unavailable("the revoker");
    }
    match rx.await {
        Ok(Ok(record)) => (StatusCode::ACCEPTED, Json(record)).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e),
        Err(_) => unavailable("the revoker"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowBody {
    /// `issuer/token_id` or `token_id`.
    token: String,
}

async fn allow(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<AllowBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"token\": \"issuer/token_id\"}",
        );
    };
    if body.token.is_empty() {
        return error(StatusCode::BAD_REQUEST, "token must not be empty");
    }
    if s.control
        .send(Control::Allow(body.token.clone()))
        .await
        .is_err()
    {
        return unavailable("detection");
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({ "allowed": body.token })),
    )
        .into_response()
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/v1/tokens/{issuer}/{token_id}", get(token))
        .route("/v1/decisions", get(decisions))
        .route("/v1/denylist", get(denylist))
        .route("/v1/revoke", post(revoke))
        .route("/v1/allow", post(allow))
        .with_state(state)
}

/// Binds and serves until the task is dropped. Returns the bound address.
pub async fn serve(
    config: &AdminConfig,
    state: AdminState,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin API cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "Admin API stopped.");
        }
    });
    tracing::info!(%addr, "Admin API listening.");
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_and_self_detection() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        let admin = AdminConfig::default();
        assert!(admin.is_self(&url::Url::parse("http://127.0.0.1:9464/v1/revoke").unwrap()));
        assert!(admin.is_self(&url::Url::parse("http://localhost:9464/").unwrap()));
        assert!(admin.is_self(&url::Url::parse("http://[::1]:9464/").unwrap()));
        assert!(!admin.is_self(&url::Url::parse("http://127.0.0.1:9465/").unwrap()));
        assert!(!admin.is_self(&url::Url::parse("https://hooks.example.com/").unwrap()));
    }
}
