//! Alert webhooks per the Standard Webhooks spec: signed, retried on a
//! schedule (honouring `Retry-After` on 429 and 503), an endpoint that
//! answers `410 Gone` is disabled, and a delivery that exhausts its retries
//! goes to a dead-letter topic. The message id is deterministic, so a
//! replayed decision reuses it and receivers can deduplicate. Every
//! delivery sits in the [`outbox`] until it is done, so a restart resumes
//! it, and at most `webhook_max_in_flight` are attempted at once.

pub mod outbox;
pub mod payload;
pub mod sign;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::Action;
use tracing::{error, warn};

use crate::adapters::retry_after;
use crate::config::WebhookConfig;
use outbox::{Entry, Outbox};

/// One message for every endpoint.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub kind: &'static str,
    /// The action the message is about; endpoints filter on `min_action`.
    /// System alerts use `Revoke` so every endpoint gets them.
    pub action: Action,
    pub body: Arc<Vec<u8>>,
}

/// Delivery counters.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub delivered: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub disabled_endpoints: AtomicU64,
}

struct Endpoint {
    config: WebhookConfig,
    keys: Vec<Vec<u8>>,
    disabled: AtomicBool,
}

/// Sends messages to every configured endpoint.
#[derive(Clone)]
pub struct Webhooks {
    endpoints: Arc<Vec<Endpoint>>,
    client: reqwest::Client,
    dead_letter: Option<(FutureProducer, String)>,
    pub metrics: Arc<WebhookMetrics>,
    /// Seconds since the epoch; a function so tests can sign at other times.
    clock: fn() -> i64,
    /// Deliveries not yet finished (delivered or dead-lettered).
    in_flight: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
    /// Where deliveries wait until done; `None` without Kafka (tests).
    outbox: Option<Outbox>,
    /// Deliveries attempted at once.
    permits: Arc<tokio::sync::Semaphore>,
}

/// Errors building the webhook sender.
#[derive(Debug, thiserror::Error)]
#[error("webhook {url}: {reason}")]
pub struct WebhookError {
    pub url: String,
    pub reason: String,
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Webhooks {
    /// Reads each endpoint's `whsec_` secrets from the environment.
    pub fn build(
        configs: &[WebhookConfig],
        client: reqwest::Client,
        dead_letter: Option<(FutureProducer, String)>,
        outbox: Option<Outbox>,
        max_in_flight: usize,
    ) -> Result<Self, WebhookError> {
        let mut endpoints = Vec::new();
        for c in configs {
            let mut keys = Vec::new();
            for var in &c.secret_envs {
                let err = |reason: String| WebhookError {
                    url: c.url.to_string(),
                    reason,
                };
                let text = std::env::var(var)
                    .map_err(|_| err(format!("environment variable {var} is not set")))?;
                keys.push(
                    sign::parse_secret(&text)
                        .ok_or_else(|| err(format!("{var} is not a whsec_ base64 secret")))?,
                );
            }
            endpoints.push(Endpoint {
                config: c.clone(),
                keys,
                disabled: AtomicBool::new(false),
            });
        }
        Ok(Webhooks {
            endpoints: Arc::new(endpoints),
            client,
            dead_letter,
            metrics: Arc::default(),
            clock: now_s,
            in_flight: Arc::default(),
            outbox,
            permits: Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
        })
    }

    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Queues `msg` for every endpoint that wants it; each delivery runs on
    /// its own task, so one slow endpoint or message holds up no other.
    /// Each returned receiver says whether its delivery is in the outbox
    /// (always true without one): a batch is acknowledged only after.
    pub fn send(&self, msg: Outgoing) -> Vec<tokio::sync::oneshot::Receiver<bool>> {
        let mut stored = Vec::new();
        for i in 0..self.endpoints.len() {
            if msg.action < self.endpoints[i].config.min_action {
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            stored.push(rx);
            let entry = Entry::new(&msg, self.endpoints[i].config.url.as_str());
            self.spawn(i, msg.clone(), entry, Some(tx));
        }
        stored
    }

    /// Delivers what a previous run left in the outbox.
    pub fn resend(&self, entries: Vec<Entry>) {
        for entry in entries {
            match self
                .endpoints
                .iter()
                .position(|e| e.config.url.as_str() == entry.url)
            {
                Some(i) => self.spawn(i, entry.outgoing(), entry, None),
                None => {
                    warn!(url = %entry.url, id = %entry.id, "A webhook delivery left in the outbox is for an endpoint no longer configured; dropped.");
                    if let Some(outbox) = self.outbox.clone() {
                        tokio::spawn(async move {
                            let _ = outbox.done(&entry).await;
                        });
                    }
                }
            }
        }
    }

    /// One delivery: into the outbox first (unless `stored` is `None`: it
    /// is there already), then attempted, then out of the outbox.
    fn spawn(
        &self,
        i: usize,
        msg: Outgoing,
        entry: Entry,
        stored: Option<tokio::sync::oneshot::Sender<bool>>,
    ) {
        let this = self.clone();
        self.in_flight.0.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let in_outbox = match (&this.outbox, stored) {
                (Some(outbox), Some(tx)) => {
                    let put = outbox.put(&entry).await;
                    if let Err(e) = &put {
                        error!(error = %e, id = %msg.id, "Cannot write a webhook delivery to the outbox.");
                    }
                    let _ = tx.send(put.is_ok());
                    put.is_ok()
                }
                (None, Some(tx)) => {
                    let _ = tx.send(true);
                    false
                }
                (outbox, None) => outbox.is_some(),
            };
            if let Ok(_permit) = this.permits.acquire().await {
                this.deliver(i, msg).await;
            }
            if in_outbox
                && let Some(outbox) = &this.outbox
                && let Err(e) = outbox.done(&entry).await
            {
                warn!(error = %e, id = %entry.id, "Cannot clear a finished webhook delivery from the outbox; it may be sent again after a restart.");
            }
            if this.in_flight.0.fetch_sub(1, Relaxed) == 1 {
                this.in_flight.1.notify_waiters();
            }
        });
    }

    /// Waits until every queued delivery has finished (delivered or
    /// dead-lettered), or `timeout` passes. Returns how many are left.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.in_flight.1.notified();
            let left = self.in_flight.0.load(Relaxed);
            if left == 0 || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight.0.load(Relaxed);
            }
        }
    }

    async fn deliver(&self, i: usize, msg: Outgoing) {
        let endpoint = &self.endpoints[i];
        let schedule = &endpoint.config.retry_schedule;
        let mut last = String::new();
        for attempt in 0..=schedule.len() {
            if endpoint.disabled.load(Relaxed) {
                last = "endpoint disabled after 410 Gone".into();
                break;
            }
            self.metrics.attempts.fetch_add(1, Relaxed);
            let ts = (self.clock)();
            let signature = sign::signature_header(&endpoint.keys, &msg.id, ts, &msg.body);
            let result = self
                .client
                .post(endpoint.config.url.clone())
                .timeout(endpoint.config.timeout)
                .header("content-type", "application/json")
                .header("webhook-id", &msg.id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(msg.body.as_ref().clone())
                .send()
                .await;
            let mut wait = schedule.get(attempt).copied();
            match result {
                Ok(resp) if resp.status().is_success() => {
                    self.metrics.delivered.fetch_add(1, Relaxed);
                    return;
                }
                Ok(resp) if resp.status() == 410 => {
                    endpoint.disabled.store(true, Relaxed);
                    self.metrics.disabled_endpoints.fetch_add(1, Relaxed);
                    error!(url = %endpoint.config.url, "Webhook endpoint answered 410 Gone; it is disabled until restart.");
                    last = "endpoint answered 410 Gone".into();
                    break;
                }
                Ok(resp) => {
                    let status = resp.status();
                    if matches!(status.as_u16(), 429 | 503)
                        && let Some(after) = retry_after(resp.headers())
                    {
                        wait = wait.map(|w| w.max(after));
                    }
                    last = format!("HTTP {status}");
                }
                Err(e) => last = format!("{}", e.without_url()),
            }
            let Some(wait) = wait else { break };
            self.metrics.retries.fetch_add(1, Relaxed);
            warn!(url = %endpoint.config.url, id = %msg.id, error = %last, retry_in = ?wait, "Webhook delivery failed; retrying.");
            tokio::time::sleep(wait).await;
        }
        self.dead_letter(endpoint, &msg, &last, schedule.len() as u32 + 1)
            .await;
    }

    async fn dead_letter(&self, endpoint: &Endpoint, msg: &Outgoing, reason: &str, attempts: u32) {
        self.metrics.dead_lettered.fetch_add(1, Relaxed);
        let url = endpoint.config.url.to_string();
        error!(url = %url, id = %msg.id, reason, "Webhook delivery gave up; sending it to the dead-letter topic.");
        let Some((producer, topic)) = &self.dead_letter else {
            return;
        };
        let attempts = attempts.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tokenwatch.webhook.url",
                value: Some(url.as_str()),
            })
            .insert(Header {
                key: "tokenwatch.webhook.id",
                value: Some(msg.id.as_str()),
            })
            .insert(Header {
                key: "tokenwatch.webhook.type",
                value: Some(msg.kind),
            })
            .insert(Header {
                key: "tokenwatch.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "tokenwatch.attempts",
                value: Some(attempts.as_str()),
            });
        let record = FutureRecord::to(topic.as_str())
            .key(msg.id.as_str())
            .payload(msg.body.as_slice())
            .headers(headers);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(30)).await {
            error!(error = %e, id = %msg.id, "Cannot write to the webhook dead-letter topic; the alert is only in this log.");
        }
    }
}

#[cfg(test)]
mod tests;
