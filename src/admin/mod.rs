//! The admin HTTP API (axum), on two listeners, both on 127.0.0.1 by
//! default. `probe_listen` serves what orchestrators and scrapers poll,
//! unauthenticated and free of token data:
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | token metadata applied, partitions assigned, detection ready |
//! | `GET /metrics` | Prometheus text; no token ids as labels |
//!
//! `listen` serves the API, every route behind a bearer token:
//!
//! | route | token | what |
//! |---|---|---|
//! | `GET /v1/tokens/{issuer}/{token_id}` | admin | state, metadata, recent decisions, ledger record |
//! | `GET /v1/decisions?limit=N` | admin | recent decisions, newest first |
//! | `GET /v1/denylist` | admin or denylist | every decided revocation, for gateways that fail closed |
//! | `POST /v1/revoke` | admin | the manual kill switch |
//! | `POST /v1/allow` | admin | allowlist a token at runtime |
//!
//! Tokens are the values of the variables `token_env` and
//! `denylist_token_env` name, compared in constant time; a route whose
//! token variable is unset answers 401. Both listeners bound the work a
//! client can cause: a request timeout, a cap on requests in flight, and a
//! body size limit.

mod metrics;
mod process;

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
    /// Address of the API (`/v1/*`). Keep it on loopback unless a proxy
    /// guards it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the probes and metrics (`/healthz`, `/readyz`,
    /// `/metrics`), for an orchestrator and a scraper.
    #[serde(default = "default_probe_listen")]
    pub probe_listen: SocketAddr,
    /// Variable holding the bearer token for every `/v1/*` route.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Variable holding a read-only bearer token for `GET /v1/denylist`
    /// alone, for gateways.
    #[serde(default = "default_denylist_token_env")]
    pub denylist_token_env: String,
    /// Decisions kept for `GET /v1/decisions`.
    #[serde(default = "default_recent")]
    pub recent_decisions: usize,
    /// A request taking longer is answered 503.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
    /// Requests in flight per listener; more are answered 503 at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Larger request bodies are answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_probe_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}
fn default_token_env() -> String {
    "TOKENWATCH_ADMIN_TOKEN".into()
}
fn default_denylist_token_env() -> String {
    "TOKENWATCH_DENYLIST_TOKEN".into()
}
fn default_request_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_max_in_flight() -> usize {
    64
}
fn default_max_body_bytes() -> usize {
    64 << 10
}
fn default_recent() -> usize {
    1000
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: default_listen(),
            probe_listen: default_probe_listen(),
            token_env: default_token_env(),
            denylist_token_env: default_denylist_token_env(),
            recent_decisions: default_recent(),
            request_timeout: default_request_timeout(),
            max_in_flight: default_max_in_flight(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

impl AdminConfig {
    /// Whether `url` would reach either listener (a webhook must not).
    pub fn is_self(&self, url: &url::Url) -> bool {
        let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
        [self.listen, self.probe_listen].iter().any(|addr| {
            let port_matches = url.port_or_known_default() == Some(addr.port());
            let local = matches!(host, "localhost" | "127.0.0.1" | "::1" | "0.0.0.0" | "::")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || ip == addr.ip());
            self.enabled && port_matches && local
        })
    }

    /// Problems with this section.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.enabled && self.listen == self.probe_listen && self.listen.port() != 0 {
            p.push("admin.probe_listen: must differ from admin.listen".into());
        }
        if self.max_in_flight == 0 {
            p.push("admin.max_in_flight: must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            p.push("admin.request_timeout: must be positive".into());
        }
        p
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
    /// The admin token: every `/v1/*` route.
    pub token: Option<Arc<str>>,
    /// The read-only token: `GET /v1/denylist` only.
    pub denylist_token: Option<Arc<str>>,
}

/// The value of the variable `name`, if set and not empty.
pub fn token_from_env(name: &str) -> Option<Arc<str>> {
    std::env::var(name)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Into::into)
}

/// Constant-time comparison, so response timing says nothing about how
/// much of a guessed token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the bearer token against the tokens a route accepts.
fn authorized(accepted: &[&Option<Arc<str>>], headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if accepted.iter().all(|t| t.is_none()) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "this route is disabled: its token variable is not set",
        )));
    }
    let ok = given.is_some_and(|given| {
        accepted
            .iter()
            .filter_map(|t| t.as_deref())
            .any(|token| same(token.as_bytes(), given.as_bytes()))
    });
    if ok {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        )))
    }
}

/// Every `/v1/*` route but the denylist: the admin token.
async fn admin_only(
    State(s): State<AdminState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let denylist =
        request.uri().path() == "/v1/denylist" && request.method() == axum::http::Method::GET;
    let accepted: Vec<&Option<Arc<str>>> = if denylist {
        vec![&s.token, &s.denylist_token]
    } else {
        vec![&s.token]
    };
    match authorized(&accepted, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(r) => *r,
    }
}

/// The bounds every listener puts on a client: requests in flight, and time.
#[derive(Clone)]
struct Bounds {
    in_flight: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
}

async fn bounded(
    State(b): State<Bounds>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = b.in_flight.try_acquire() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight",
        );
    };
    match tokio::time::timeout(b.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the request timed out"),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// 413 for a body over the limit, else 400 with what was expected.
fn bad_body(rejection: &axum::extract::rejection::JsonRejection, expected: &str) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over admin.max_body_bytes",
        )
    } else {
        error(StatusCode::BAD_REQUEST, expected)
    }
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
    let restore = s.flow.restore();
    if !*s.flow.metadata_ready.borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: reading the token-metadata topic; events wait until it is applied\n",
        )
            .into_response()
    } else if let Some(since_ms) = restore.since_ms {
        let secs = (crate::pipeline::now_us() / 1000 - since_ms).max(0) as f64 / 1000.0;
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: restoring the state of {} partition(s) from the changelog: {} of {} records read in {secs:.1}s; their events wait until it is restored\n",
                restore.partitions, restore.read, restore.total
            ),
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
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
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
    let ask = Command::Revocation {
        issuer,
        token_id,
        reply: tx,
    };
    if s.commands.send(ask).await.is_ok()
        && let Ok(record) = rx.await
    {
        view["revocation"] = record
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
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => {
            return bad_body(
                &rejection,
                "expected {\"issuer\", \"token_id\", \"reason\"?, \"principal\"?}",
            );
        }
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
    body: Result<Json<AllowBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return bad_body(&rejection, "expected {\"token\": \"issuer/token_id\"}"),
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

fn bounds(config: &AdminConfig) -> Bounds {
    Bounds {
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
        timeout: config.request_timeout,
    }
}

/// The probes and metrics.
pub fn probe_router(config: &AdminConfig, state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            bounds(config),
            bounded,
        ))
}

/// The `/v1/*` API, every route behind a bearer token.
pub fn api_router(config: &AdminConfig, state: AdminState) -> Router {
    Router::new()
        .route("/v1/tokens/{issuer}/{token_id}", get(token))
        .route("/v1/decisions", get(decisions))
        .route("/v1/denylist", get(denylist))
        .route("/v1/revoke", post(revoke))
        .route("/v1/allow", post(allow))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_only,
        ))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            bounds(config),
            bounded,
        ))
}

/// The bound addresses of the two listeners.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub api: SocketAddr,
    pub probe: SocketAddr,
}

/// Binds both listeners and serves until the tasks are dropped.
pub async fn serve(
    config: &AdminConfig,
    state: AdminState,
) -> anyhow::Result<(Bound, Vec<tokio::task::JoinHandle<()>>)> {
    let mut tasks = Vec::new();
    let mut bound = Vec::new();
    for (addr, app, what) in [
        (
            config.listen,
            api_router(config, state.clone()),
            "Admin API",
        ),
        (
            config.probe_listen,
            probe_router(config, state.clone()),
            "Probes and metrics",
        ),
    ] {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{what} cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "{what} stopped.");
            }
        }));
        tracing::info!(addr = %local, "{what} listening.");
        bound.push(local);
    }
    Ok((
        Bound {
            api: bound[0],
            probe: bound[1],
        },
        tasks,
    ))
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
        assert!(
            admin.is_self(&url::Url::parse("http://127.0.0.1:9465/metrics").unwrap()),
            "the probe listener too"
        );
        assert!(!admin.is_self(&url::Url::parse("http://127.0.0.1:9466/").unwrap()));
        assert!(!admin.is_self(&url::Url::parse("https://hooks.example.com/").unwrap()));
    }

    /// Issue 11, section 6: a client cannot hold more than max_in_flight
    /// requests, nor one for longer than the request timeout.
    #[tokio::test]
    async fn requests_are_bounded_in_number_and_time() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let entered = Arc::new(tokio::sync::Notify::new());
        let (g, e) = (gate.clone(), entered.clone());
        let app = Router::new()
            .route(
                "/held",
                get(move || {
                    let (g, e) = (g.clone(), e.clone());
                    async move {
                        e.notify_one();
                        g.notified().await;
                        "released"
                    }
                }),
            )
            .route("/never", get(std::future::pending::<&'static str>))
            .layer(axum::middleware::from_fn_with_state(
                Bounds {
                    in_flight: Arc::new(tokio::sync::Semaphore::new(1)),
                    timeout: std::time::Duration::from_millis(200),
                },
                bounded,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = revoker::http_client(std::time::Duration::from_secs(5)).unwrap();
        let held = tokio::spawn(client.get(format!("http://{addr}/held")).send());
        entered.notified().await;
        let second = client
            .get(format!("http://{addr}/held"))
            .send()
            .await
            .unwrap();
        assert_eq!(second.status(), 503, "one in flight at most");
        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), 200);
        let never = client
            .get(format!("http://{addr}/never"))
            .send()
            .await
            .unwrap();
        assert_eq!(never.status(), 503);
        assert!(never.text().await.unwrap().contains("timed out"));
    }
}
