//! Delivers push notifications to subscription URLs, with bounded retries and back-off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora::backoff::Backoff;
use agora::log_limit::LogLimiter;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::metrics::{NodeMetrics, PushResult};

/// Attempts per notification before giving up (the last failure is counted and logged).
const MAX_ATTEMPTS: u32 = 5;

/// Retry delays: 250 ms, 500 ms, 1 s, 2 s (before jitter), so retries against one endpoint spread out.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));

/// Bound on one POST, so a black-holed endpoint cannot hold a delivery slot for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Deliveries in flight at once; more wait for a slot instead of opening unbounded connections.
const MAX_IN_FLIGHT: usize = 256;

/// Deliveries waiting or in flight, at most: beyond this (endpoints black-holed under a high change rate) new ones
/// are refused, counted as failed and logged, instead of growing memory without bound.
const MAX_BACKLOG: usize = 10_000;

/// Sends push notifications in the background.
#[derive(Clone)]
pub struct PushDelivery {
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    backlog: Arc<AtomicUsize>,
    metrics: Arc<NodeMetrics>,
    /// Throttles the log line for refused deliveries (a flood of them must not flood the log).
    refused_log: Arc<LogLimiter>,
    shutdown: CancellationToken,
}

impl PushDelivery {
    /// A delivery service recording its outcomes in `metrics`.
    pub fn new(metrics: Arc<NodeMetrics>, shutdown: CancellationToken) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("agora/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        PushDelivery {
            client,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            backlog: Arc::new(AtomicUsize::new(0)),
            metrics,
            refused_log: Arc::default(),
            shutdown,
        }
    }

    /// POSTs `body` to `url` in the background, retrying on failure.
    pub fn deliver(&self, subscription_id: String, url: String, body: Value) {
        let waiting = self.backlog.fetch_add(1, Ordering::Relaxed);
        if waiting >= MAX_BACKLOG {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            self.metrics.count_push(PushResult::Failed);
            if self.refused_log.should_log() {
                tracing::error!(
                    subscription = subscription_id,
                    "push delivery refused: {MAX_BACKLOG} deliveries already waiting (endpoints not answering)"
                );
            }
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Ok(_slot) = this.slots.clone().acquire_owned().await {
                this.run(&subscription_id, &url, &body).await;
            }
            this.backlog.fetch_sub(1, Ordering::Relaxed);
        });
    }

    async fn run(&self, id: &str, url: &str, body: &Value) {
        let body = body.to_string();
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let error = match outcome {
                Ok(response) if response.status().is_success() => {
                    self.metrics.count_push(PushResult::Ok);
                    return;
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(e) => without_url(&e),
            };
            if attempt == MAX_ATTEMPTS {
                self.metrics.count_push(PushResult::Failed);
                tracing::warn!(
                    subscription = id,
                    attempts = attempt,
                    "push delivery failed for good: {error}"
                );
                return;
            }
            self.metrics.count_push(PushResult::Retried);
            tracing::debug!(subscription = id, attempt, "push delivery failed, retrying: {error}");
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY_BACKOFF.delay(attempt)) => {}
            }
        }
    }
}

/// reqwest errors include the URL, which may carry a token: report the cause only.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_string()
}
