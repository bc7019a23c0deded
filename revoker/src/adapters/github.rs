//! GitHub's credential revocation API: `POST /credentials/revoke` with up
//! to 1000 raw credentials per request. Requests are batched by a small
//! task (the only batching on the hot path). `202` is "accepted": GitHub
//! revokes asynchronously, so the ledger keeps the token pending.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::{AdapterError, Attempt, RevokeRequest, env, retry_after};
use crate::config::IssuerConfig;

type Job = (String, oneshot::Sender<Attempt>);

pub struct Github {
    pub(super) url: Url,
    jobs: mpsc::Sender<Job>,
}

impl Github {
    pub fn build(
        name: &str,
        config: &IssuerConfig,
        client: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        let IssuerConfig::Github {
            url,
            token_env,
            batch_max,
            batch_linger,
        } = config
        else {
            unreachable!("dispatched by kind")
        };
        let token = token_env.as_deref().map(|v| env(name, v)).transpose()?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(batcher(
            rx,
            client,
            url.clone(),
            token,
            (*batch_max).clamp(1, 1000),
            *batch_linger,
        ));
        Ok(Github {
            url: url.clone(),
            jobs: tx,
        })
    }

    pub async fn revoke(&self, req: &RevokeRequest) -> Attempt {
        let Some(secret) = &req.secret else {
            return Attempt::NeedsSecret(
                "GitHub revokes by the raw credential and none is held for it".into(),
            );
        };
        let (tx, rx) = oneshot::channel();
        if self
            .jobs
            .send((secret.expose().to_string(), tx))
            .await
            .is_err()
        {
            return Attempt::Retry {
                reason: "GitHub batcher stopped".into(),
                after: None,
            };
        }
        rx.await.unwrap_or(Attempt::Retry {
            reason: "GitHub batcher dropped the request".into(),
            after: None,
        })
    }
}

async fn batcher(
    mut jobs: mpsc::Receiver<Job>,
    client: reqwest::Client,
    url: Url,
    token: Option<String>,
    max: usize,
    linger: Duration,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, jobs.recv()).await {
                Ok(Some(job)) => batch.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        let credentials: Vec<&str> = batch.iter().map(|(c, _)| c.as_str()).collect();
        let mut req = client
            .post(url.clone())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(&serde_json::json!({ "credentials": credentials }));
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let attempt = match req.send().await {
            // A primary rate limit is a 403 with no requests remaining.
            Ok(resp)
                if resp.status() == 403
                    && resp
                        .headers()
                        .get("x-ratelimit-remaining")
                        .is_some_and(|v| v == "0") =>
            {
                let reset = resp
                    .headers()
                    .get("x-ratelimit-reset")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .and_then(|at| {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()?
                            .as_secs();
                        Some(Duration::from_secs(at.saturating_sub(now)))
                    });
                Attempt::Retry {
                    reason: "GitHub rate limit reached".into(),
                    after: reset.or_else(|| retry_after(resp.headers())),
                }
            }
            Ok(resp) => {
                let (status, headers) = (resp.status(), resp.headers().clone());
                super::classify(status, &headers, &resp.text().await.unwrap_or_default())
            }
            Err(e) => super::transport(e),
        };
        for (_, tx) in batch {
            let _ = tx.send(attempt.clone());
        }
    }
}
