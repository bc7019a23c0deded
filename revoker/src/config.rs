//! The `[revoker]` config section: issuers, retries, circuit breakers,
//! the ledger topic and alert webhooks. Credentials are always named by
//! environment variable, never written here.

use std::collections::BTreeMap;
use std::time::Duration;

use schemas::Action;
use serde::{Deserialize, Serialize};
use url::Url;

/// `[revoker]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokerConfig {
    /// Compacted topic holding every revocation's state (key
    /// `issuer/token_id`). Written before the issuer is called; read back
    /// in full at startup.
    #[serde(default = "default_ledger_topic")]
    pub ledger_topic: String,
    /// Issuers by the name events carry in `issuer`.
    #[serde(default)]
    pub issuers: BTreeMap<String, IssuerConfig>,
    /// Timeout of one issuer request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Raw secrets kept in memory for issuers that need them to revoke.
    #[serde(default)]
    pub secret_handles: HandleConfig,
    /// Alert webhook endpoints.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Topic for webhook deliveries that exhausted their retries.
    #[serde(default = "default_webhook_dlq")]
    pub webhook_dead_letter_topic: String,
    /// Every process says it is alive on the ledger topic three times per
    /// this period; the unfinished revocations of one not heard from for
    /// this long (crashed, or restarted under a new identity) are taken
    /// over by another. A clean stop hands them over at once.
    #[serde(default = "default_liveness_timeout", with = "humantime_serde")]
    pub liveness_timeout: Duration,
    /// How long a failing ledger write of a new revocation is retried
    /// (with backoff, while the pipeline waits) before tokenwatch stops
    /// without acknowledging the batch.
    #[serde(default = "default_ledger_retry_for", with = "humantime_serde")]
    pub ledger_retry_for: Duration,
    /// Compacted topic where every webhook delivery waits until it is done,
    /// so a restart resumes it. Must exist when webhooks are configured.
    #[serde(default = "default_webhook_outbox")]
    pub webhook_outbox_topic: String,
    /// Webhook deliveries attempted at once; more wait their turn.
    #[serde(default = "default_webhook_max_in_flight")]
    pub webhook_max_in_flight: usize,
    /// Alert messages (decisions that alert) sent per minute at most; the
    /// rest are counted in one `alert_budget_exceeded` system alert.
    /// Revocations and system alerts are always sent.
    #[serde(default = "default_alert_budget")]
    pub alert_budget_per_minute: u32,
}

fn default_ledger_topic() -> String {
    "tokenwatch-revocations".into()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_webhook_dlq() -> String {
    "tokenwatch-webhook-dead-letter".into()
}
fn default_webhook_outbox() -> String {
    "tokenwatch-webhook-outbox".into()
}
fn default_webhook_max_in_flight() -> usize {
    1000
}
fn default_alert_budget() -> u32 {
    600
}
fn default_ledger_retry_for() -> Duration {
    Duration::from_secs(120)
}
fn default_liveness_timeout() -> Duration {
    Duration::from_secs(15)
}

impl Default for RevokerConfig {
    fn default() -> Self {
        RevokerConfig {
            ledger_topic: default_ledger_topic(),
            issuers: BTreeMap::new(),
            request_timeout: default_request_timeout(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            secret_handles: HandleConfig::default(),
            webhooks: Vec::new(),
            webhook_dead_letter_topic: default_webhook_dlq(),
            liveness_timeout: default_liveness_timeout(),
            ledger_retry_for: default_ledger_retry_for(),
            webhook_outbox_topic: default_webhook_outbox(),
            webhook_max_in_flight: default_webhook_max_in_flight(),
            alert_budget_per_minute: default_alert_budget(),
        }
    }
}

/// How a client authenticates to an OAuth 2.0 endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// One issuer's kill switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum IssuerConfig {
    /// RFC 7009 token revocation, optionally confirmed by RFC 7662
    /// introspection. Needs the raw token (from the secret handle store).
    Oauth2 {
        revocation_url: Url,
        client_id: String,
        /// Variable holding the client secret.
        client_secret_env: String,
        #[serde(default)]
        client_auth: ClientAuth,
        /// `access_token` or `refresh_token`, sent as `token_type_hint`.
        #[serde(default)]
        token_type_hint: Option<String>,
        /// When set, a revocation counts only once introspection says the
        /// token is inactive: a 200 from the revocation endpoint proves
        /// nothing by itself.
        #[serde(default)]
        introspection_url: Option<Url>,
    },
    /// GitHub's credential revocation API (`POST /credentials/revoke`),
    /// batched. Needs the raw token. `202` means accepted, still pending.
    Github {
        #[serde(default = "default_github_url")]
        url: Url,
        /// Variable holding a token to authenticate with (optional; the
        /// API also takes unauthenticated calls at a lower rate).
        #[serde(default)]
        token_env: Option<String>,
        /// Credentials per request (GitHub allows up to 1000).
        #[serde(default = "default_github_batch")]
        batch_max: usize,
        /// How long a batch waits for more credentials.
        #[serde(default = "default_github_linger", with = "humantime_serde")]
        batch_linger: Duration,
    },
    /// HashiCorp Vault: revoke by accessor (`token_id` is the accessor).
    Vault {
        address: Url,
        /// Variable holding a Vault token allowed to revoke accessors.
        token_env: String,
        #[serde(default)]
        namespace: Option<String>,
    },
    /// AWS IAM `UpdateAccessKey` with `Status=Inactive` (`token_id` is the
    /// access key id), signed with SigV4. The user name is the decision's
    /// principal (an IAM user name or user ARN).
    AwsIam {
        #[serde(default = "default_iam_endpoint")]
        endpoint: Url,
        #[serde(default = "default_region")]
        region: String,
        access_key_id_env: String,
        secret_access_key_env: String,
        #[serde(default)]
        session_token_env: Option<String>,
    },
    /// Any HTTP API. `url`, header values and `body` are templates with
    /// `{token_id}`, `{issuer}`, `{principal}`, `{decision_id}`, `{reason}`
    /// and `{secret}` (the raw token, if held); values are URL-encoded in
    /// the URL and JSON-escaped in a JSON body.
    Http {
        #[serde(default = "default_method")]
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Header name → variable holding its value (e.g. Authorization).
        #[serde(default)]
        headers_from_env: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<String>,
    },
}

fn default_github_url() -> Url {
    Url::parse("https://api.github.com/credentials/revoke")
        .unwrap_or_else(|_| unreachable!("valid constant URL"))
}
fn default_github_batch() -> usize {
    1000
}
fn default_github_linger() -> Duration {
    Duration::from_millis(50)
}
fn default_iam_endpoint() -> Url {
    Url::parse("https://iam.amazonaws.com/").unwrap_or_else(|_| unreachable!("valid constant URL"))
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_method() -> String {
    "POST".into()
}

impl IssuerConfig {
    /// An `http` issuer that POSTs to `url` (a template) with no headers
    /// or body: the simplest kill switch, used by the demo and tests.
    pub fn post(url: impl Into<String>) -> Self {
        IssuerConfig::Http {
            method: "POST".into(),
            url: url.into(),
            headers: BTreeMap::new(),
            headers_from_env: BTreeMap::new(),
            body: None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            IssuerConfig::Oauth2 { .. } => "oauth2",
            IssuerConfig::Github { .. } => "github",
            IssuerConfig::Vault { .. } => "vault",
            IssuerConfig::AwsIam { .. } => "aws_iam",
            IssuerConfig::Http { .. } => "http",
        }
    }

    /// Environment variables this issuer needs, as (key, variable).
    pub fn env_vars(&self) -> Vec<(&'static str, &str)> {
        match self {
            IssuerConfig::Oauth2 {
                client_secret_env, ..
            } => vec![("client_secret_env", client_secret_env)],
            IssuerConfig::Github { token_env, .. } => token_env
                .iter()
                .map(|v| ("token_env", v.as_str()))
                .collect(),
            IssuerConfig::Vault { token_env, .. } => vec![("token_env", token_env)],
            IssuerConfig::AwsIam {
                access_key_id_env,
                secret_access_key_env,
                session_token_env,
                ..
            } => {
                let mut v = vec![
                    ("access_key_id_env", access_key_id_env.as_str()),
                    ("secret_access_key_env", secret_access_key_env.as_str()),
                ];
                v.extend(
                    session_token_env
                        .iter()
                        .map(|s| ("session_token_env", s.as_str())),
                );
                v
            }
            IssuerConfig::Http {
                headers_from_env, ..
            } => headers_from_env
                .values()
                .map(|v| ("headers_from_env", v.as_str()))
                .collect(),
        }
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per revocation, the first included; then it is `failed`.
    /// Unset (the default): a revocation is retried, every `max_delay` at
    /// most, until the issuer answers for good; an outage never turns a
    /// decided revocation into a failure.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// A revocation still not done this long after its decision raises a
    /// `revocation_failing` system alert (once); retries go on.
    #[serde(default = "default_alert_after", with = "humantime_serde")]
    pub alert_after: Duration,
    /// Delay before the first retry (before jitter).
    #[serde(default = "default_base", with = "humantime_serde")]
    pub base_delay: Duration,
    /// No delay grows beyond this.
    #[serde(default = "default_cap", with = "humantime_serde")]
    pub max_delay: Duration,
}

fn default_alert_after() -> Duration {
    Duration::from_secs(120)
}
fn default_base() -> Duration {
    Duration::from_millis(100)
}
fn default_cap() -> Duration {
    Duration::from_secs(30)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: None,
            alert_after: default_alert_after(),
            base_delay: default_base(),
            max_delay: default_cap(),
        }
    }
}

/// One circuit breaker per issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    #[serde(default = "default_failures")]
    pub failure_threshold: u32,
    /// How long it stays open before one trial request.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

fn default_failures() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(10)
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_failures(),
            cooldown: default_cooldown(),
        }
    }
}

/// The in-memory store of raw secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandleConfig {
    /// A secret is forgotten this long after it was last seen.
    #[serde(default = "default_handle_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// At most this many secrets are held; the oldest go first.
    #[serde(default = "default_handle_max")]
    pub max_entries: usize,
    /// A revocation that needs the raw secret (`oauth2`, `github`, an
    /// `http` template with `{secret}`) and finds none held waits as
    /// `awaiting_secret` until an event brings it; waiting longer than this
    /// raises a `revocation_awaiting_secret` system alert (once).
    #[serde(default = "default_await_alert_after", with = "humantime_serde")]
    pub await_alert_after: Duration,
}

fn default_handle_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_handle_max() -> usize {
    100_000
}
fn default_await_alert_after() -> Duration {
    Duration::from_secs(900)
}

impl Default for HandleConfig {
    fn default() -> Self {
        HandleConfig {
            ttl: default_handle_ttl(),
            max_entries: default_handle_max(),
            await_alert_after: default_await_alert_after(),
        }
    }
}

/// One alert webhook endpoint (Standard Webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Url,
    /// Variables holding `whsec_...` signing secrets. Several sign each
    /// message with each, for rotation without downtime.
    pub secret_envs: Vec<String>,
    /// Only decisions at or above this action are sent (`alert` or `revoke`).
    #[serde(default = "default_min_action")]
    pub min_action: Action,
    /// Delays between delivery attempts; its length is the retry count.
    #[serde(default = "default_schedule", with = "humantime_serde_vec")]
    pub retry_schedule: Vec<Duration>,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Allow a receiver on this machine (loopback). Off by default: a
    /// webhook URL must not reach local services, the admin API least of
    /// all (refused whatever this says).
    #[serde(default)]
    pub allow_loopback: bool,
}

/// Whether `host` names this machine: a loopback or unspecified address,
/// or `localhost`.
pub fn is_local_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback() || ip.is_unspecified(),
        url::Host::Ipv6(ip) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn default_min_action() -> Action {
    Action::Alert
}
fn default_schedule() -> Vec<Duration> {
    [1, 5, 30, 120, 600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl RevokerConfig {
    /// Every problem, including unset environment variables.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, issuer) in &self.issuers {
            for (key, var) in issuer.env_vars() {
                if std::env::var_os(var).is_none() {
                    p.push(format!(
                        "revoker.issuers.{name}.{key}: environment variable {var} is not set"
                    ));
                }
            }
            if let IssuerConfig::Github { batch_max, .. } = issuer
                && !(1..=1000).contains(batch_max)
            {
                p.push(format!(
                    "revoker.issuers.{name}.batch_max: must be 1 ..= 1000 (GitHub's limit)"
                ));
            }
            if let IssuerConfig::Http { method, url, .. } = issuer {
                if http::Method::from_bytes(method.as_bytes()).is_err() {
                    p.push(format!(
                        "revoker.issuers.{name}.method: {method:?} is not an HTTP method"
                    ));
                }
                let probe = url.replace(['{', '}'], "");
                if Url::parse(&probe).is_err() {
                    p.push(format!(
                        "revoker.issuers.{name}.url: {url:?} is not a URL template"
                    ));
                }
            }
        }
        if self.retry.max_attempts == Some(0) {
            p.push("revoker.retry.max_attempts: must be at least 1".into());
        }
        if self.webhook_max_in_flight == 0 {
            p.push("revoker.webhook_max_in_flight: must be at least 1".into());
        }
        if self.alert_budget_per_minute == 0 {
            p.push("revoker.alert_budget_per_minute: must be at least 1".into());
        }
        if self.liveness_timeout < Duration::from_millis(300) {
            p.push("revoker.liveness_timeout: must be at least 300ms".into());
        }
        if self.retry.base_delay > self.retry.max_delay {
            p.push("revoker.retry.base_delay: must not exceed max_delay".into());
        }
        if self.breaker.failure_threshold == 0 {
            p.push("revoker.breaker.failure_threshold: must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            p.push("revoker.request_timeout: must be positive".into());
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if w.secret_envs.is_empty() {
                p.push(format!(
                    "revoker.webhooks[{i}].secret_envs: name at least one variable"
                ));
            }
            for var in &w.secret_envs {
                match std::env::var(var) {
                    Ok(v) if crate::webhook::sign::parse_secret(&v).is_some() => {}
                    Ok(_) => p.push(format!(
                        "revoker.webhooks[{i}].secret_envs: {var} is not a whsec_ base64 secret"
                    )),
                    Err(_) => p.push(format!(
                        "revoker.webhooks[{i}].secret_envs: environment variable {var} is not set"
                    )),
                }
            }
            if !matches!(w.url.scheme(), "http" | "https") {
                p.push(format!("revoker.webhooks[{i}].url: must be http or https"));
            }
            if !w.allow_loopback && w.url.host().as_ref().is_some_and(is_local_host) {
                p.push(format!(
                    "revoker.webhooks[{i}].url: {} is on this machine (loopback); set allow_loopback = true if that is meant",
                    w.url
                ));
            }
            if w.min_action == Action::None {
                p.push(format!("revoker.webhooks[{i}].min_action: alert or revoke"));
            }
        }
        p
    }
}
