//! Issuer adapters: one per kind of kill switch. Each turns a revocation
//! request into the issuer's HTTP call and classifies the answer: revoked,
//! pending (accepted or unconfirmed), retry, or failed for good. Every
//! status is checked; nothing is assumed to have worked.

mod aws_iam;
mod github;
mod http_template;
mod oauth2;
mod vault;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use schemas::Secret;

use crate::config::IssuerConfig;
pub use http_template::render;

/// What the adapter needs to revoke one token.
#[derive(Debug, Clone)]
pub struct RevokeRequest {
    pub issuer: String,
    pub token_id: String,
    pub principal: Option<String>,
    pub decision_id: String,
    pub reason: String,
    /// The raw secret, when the handle store holds it.
    pub secret: Option<Secret>,
}

/// The classified result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The issuer confirmed the token is dead.
    Revoked,
    /// Accepted but not confirmed (GitHub's 202): no retry, stays pending.
    Accepted(String),
    /// Worth trying again (timeout, 5xx, 429, unconfirmed), maybe after a
    /// delay the issuer asked for.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The issuer revokes by the raw secret and none is held: wait until an
    /// event brings it (never a failure).
    NeedsSecret(String),
    /// Will not work however often it is tried (4xx).
    Failed(String),
}

/// A built adapter.
pub enum Adapter {
    Oauth2(oauth2::Oauth2),
    Github(github::Github),
    Vault(vault::Vault),
    AwsIam(aws_iam::AwsIam),
    Http(http_template::HttpAdapter),
}

/// Errors building an adapter.
#[derive(Debug, thiserror::Error)]
#[error("issuer {issuer}: {reason}")]
pub struct AdapterError {
    pub issuer: String,
    pub reason: String,
}

pub(crate) fn env(issuer: &str, var: &str) -> Result<String, AdapterError> {
    std::env::var(var).map_err(|_| AdapterError {
        issuer: issuer.into(),
        reason: format!("environment variable {var} is not set"),
    })
}

impl Adapter {
    /// Builds the adapter for `name`, reading its credentials from the
    /// environment. Must run inside a tokio runtime (GitHub's batcher).
    pub fn build(
        name: &str,
        config: &IssuerConfig,
        client: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        Ok(match config {
            IssuerConfig::Oauth2 { .. } => {
                Adapter::Oauth2(oauth2::Oauth2::build(name, config, client)?)
            }
            IssuerConfig::Github { .. } => {
                Adapter::Github(github::Github::build(name, config, client)?)
            }
            IssuerConfig::Vault { .. } => {
                Adapter::Vault(vault::Vault::build(name, config, client)?)
            }
            IssuerConfig::AwsIam { .. } => {
                Adapter::AwsIam(aws_iam::AwsIam::build(name, config, client)?)
            }
            IssuerConfig::Http { .. } => {
                Adapter::Http(http_template::HttpAdapter::build(name, config, client)?)
            }
        })
    }

    pub async fn revoke(&self, req: &RevokeRequest) -> Attempt {
        match self {
            Adapter::Oauth2(a) => a.revoke(req).await,
            Adapter::Github(a) => a.revoke(req).await,
            Adapter::Vault(a) => a.revoke(req).await,
            Adapter::AwsIam(a) => a.revoke(req).await,
            Adapter::Http(a) => a.revoke(req).await,
        }
    }

    /// Whether this issuer revokes by the raw secret, so a revocation must
    /// wait while none is held.
    pub fn needs_secret(&self) -> bool {
        match self {
            Adapter::Oauth2(_) | Adapter::Github(_) => true,
            Adapter::Vault(_) | Adapter::AwsIam(_) => false,
            Adapter::Http(a) => a.needs_secret(),
        }
    }

    /// A URL on the issuer's host, to open a keep-alive connection early.
    pub fn warm_url(&self) -> Option<url::Url> {
        match self {
            Adapter::Oauth2(a) => Some(a.revocation_url.clone()),
            Adapter::Github(a) => Some(a.url.clone()),
            Adapter::Vault(a) => Some(a.url.clone()),
            Adapter::AwsIam(a) => Some(a.endpoint.clone()),
            Adapter::Http(_) => None,
        }
    }
}

/// Classifies an HTTP answer by status. The reason keeps the status and,
/// for an OAuth-style error body, its `error` code, never the body itself:
/// an issuer that echoes the token it was sent would otherwise put it in
/// the ledger, alerts, logs and the denylist.
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Attempt {
    let detail = error_code(body).map_or_else(String::new, |code| format!(": error {code}"));
    match status.as_u16() {
        202 => Attempt::Accepted("accepted (202), revocation pending at the issuer".into()),
        200..=299 => Attempt::Revoked,
        408 | 425 | 429 | 500..=599 => Attempt::Retry {
            reason: format!("HTTP {status}"),
            after: retry_after(headers),
        },
        300..=399 => Attempt::Failed(format!(
            "HTTP {status}: redirect to {} refused (issuer calls never follow redirects)",
            redirect_target(headers)
        )),
        _ => Attempt::Failed(format!("HTTP {status}{detail}")),
    }
}

/// The `error` code of an RFC 6749-style JSON body, if it looks like one
/// (a short lower-case identifier: never free text that could hold a token).
fn error_code(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let code = value.get("error")?.as_str()?;
    (code.len() <= 40 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then(|| code.to_string())
}

/// Where a redirect pointed, without its query or fragment (which may
/// carry a token): for the log and the ledger.
pub(crate) fn redirect_target(headers: &HeaderMap) -> String {
    let Some(location) = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "nowhere (no Location)".into();
    };
    let end = location.find(['?', '#']).unwrap_or(location.len());
    location[..end].chars().take(200).collect()
}

/// The longest wait a `Retry-After` can ask for: an issuer or a webhook
/// receiver saying "come back tomorrow" must not park a revocation or an
/// alert for a day. Past it, our own backoff schedule applies.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After`, as delta-seconds or an HTTP-date, capped at
/// [`MAX_RETRY_AFTER`]; a date in the past is no wait.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, std::time::SystemTime::now())
}

/// [`retry_after`] as of `now`.
pub(crate) fn retry_after_at(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(text)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A transport error as a retry. The URL is left out: it may hold a token.
pub(crate) fn transport(e: reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Attempt::Retry {
        reason: format!("{kind}: {}", e.without_url()),
        after: None,
    }
}

/// Sends a request and classifies the answer.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Attempt {
    match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap_or_default();
            classify(status, &headers, &body)
        }
        Err(e) => transport(e),
    }
}

#[cfg(test)]
mod tests;
