//! One subscription's worker: while the subscription has pending changes, it takes them (all at once, coalesced),
//! waits for its endpoint's gate and a node-wide slot, POSTs, and retries with back-off. It is the only task that
//! sends for its subscription, so a subscription never has more than one POST in flight.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use reqwest::header::CONTENT_TYPE;

use super::endpoint::{Endpoint, Verdict};
use super::guard::{blocked_in, Blocked, UrlRefused};
use super::pending::Pending;
use super::{Inner, MAX_ATTEMPTS, MAX_PENDING, MAX_RESPONSE_BYTES, RETRY_BACKOFF};
use crate::services::metrics::push::Refusal;
use crate::services::metrics::PushResult;

/// What one attempt came to.
enum Outcome {
    /// 2xx.
    Delivered,
    /// Not sent: the address guard refused the host.
    Blocked(Blocked),
    /// Not sent: the URL is not an absolute http(s) URL.
    InvalidUrl,
    /// Sent and failed, or could not connect; the text never holds the URL. `down` when the failure is the
    /// endpoint's (no answer, 5xx, 408, 429), which counts towards its breaker; a 3xx or another 4xx concerns this
    /// subscription only (the endpoint answered), so one dead subscription cannot trip a shared gateway's breaker.
    Failed { error: String, down: bool },
}

impl Outcome {
    fn down(error: impl Into<String>) -> Self {
        Outcome::Failed {
            error: error.into(),
            down: true,
        }
    }
}

/// Runs until the subscription has nothing pending (or the node shuts down).
pub(super) async fn run(inner: Arc<Inner>, id: String, endpoint: Arc<Endpoint>) {
    while let Some((url, account_id, pending)) = take(&inner, &id) {
        let body = pending.state_change(account_id).to_string();
        let outcome = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            outcome = attempt(&inner, &endpoint, &url, body) => outcome,
        };
        match outcome {
            Outcome::Delivered => {
                inner.metrics.count_push(PushResult::Ok);
                set_attempts(&inner, &id, 0);
            }
            Outcome::InvalidUrl => inner.stats().refuse(Refusal::InvalidUrl, 1),
            Outcome::Blocked(blocked) => {
                inner.stats().refuse(Refusal::BlockedAddress, 1);
                if inner.logs.blocked.should_log() {
                    tracing::warn!(subscription = id, "push refused: {blocked}");
                }
            }
            Outcome::Failed { error, .. } => {
                let Some(attempt) = put_back(&inner, &id, pending) else {
                    inner.metrics.count_push(PushResult::Failed);
                    if inner.logs.failed.should_log() {
                        tracing::warn!(
                            subscription = id,
                            attempts = MAX_ATTEMPTS,
                            "push delivery failed for good: {error}"
                        );
                    }
                    continue;
                };
                inner.metrics.count_push(PushResult::Retried);
                tracing::debug!(subscription = id, attempt, "push delivery failed, retrying: {error}");
                tokio::select! {
                    () = inner.shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_BACKOFF.delay(attempt)) => {}
                }
            }
        }
    }
}

/// Takes the subscription's pending changes, or, when there are none, removes it from the queues (ending the
/// worker) and forgets its endpoint if nothing else uses it and it is healthy.
fn take(inner: &Inner, id: &str) -> Option<(Arc<str>, u32, Pending)> {
    let mut queues = inner.queues();
    let queues = &mut *queues;
    let queued = queues.subscriptions.get_mut(id)?;
    if !queued.pending.is_empty() {
        let pending = std::mem::take(&mut queued.pending);
        return Some((queued.url.clone(), queued.account_id, pending));
    }
    let endpoint = queued.endpoint.clone();
    queues.subscriptions.remove(id);
    inner.stats().pending.dec();
    if let Some(slot) = queues.endpoints.get_mut(&endpoint) {
        slot.users = slot.users.saturating_sub(1);
        // A failing endpoint is remembered, so that its next change does not start with a closed breaker.
        if slot.users == 0 && !slot.endpoint.is_suspect() {
            queues.endpoints.remove(&endpoint);
        }
    }
    if queues.endpoints.len() > MAX_PENDING {
        // Remembered failing endpoints without subscriptions: bounded, the oldest news is the least useful.
        queues.endpoints.retain(|_, slot| slot.users > 0);
    }
    None
}

/// After a failed attempt: puts the changes back (behind any newer ones) and returns the attempt number, or gives
/// up on them after [`MAX_ATTEMPTS`] (`None`).
fn put_back(inner: &Inner, id: &str, failed: Pending) -> Option<u32> {
    let mut queues = inner.queues();
    let queued = queues.subscriptions.get_mut(id)?;
    queued.attempts += 1;
    if queued.attempts >= MAX_ATTEMPTS {
        queued.attempts = 0;
        return None;
    }
    queued.pending.absorb(failed);
    Some(queued.attempts)
}

fn set_attempts(inner: &Inner, id: &str, attempts: u32) {
    if let Some(queued) = inner.queues().subscriptions.get_mut(id) {
        queued.attempts = attempts;
    }
}

/// Counts one POST in flight for as long as it lives (dropped when done or cancelled).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One POST: guard, endpoint gate, node-wide slot, send; tells the gate what it learnt.
async fn attempt(inner: &Inner, endpoint: &Arc<Endpoint>, url: &str, body: String) -> Outcome {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Outcome::InvalidUrl;
    };
    // IP literals (`http://0x7f.1/` is 127.0.0.1) never reach the resolver: checked here. Names are checked by
    // the resolver, on every connection.
    match inner.guard.check_url(&parsed) {
        Ok(()) => {}
        Err(UrlRefused::Blocked(blocked)) => return Outcome::Blocked(blocked),
        Err(UrlRefused::Scheme | UrlRefused::NoHost) => return Outcome::InvalidUrl,
    }
    let Some(client) = &inner.client else {
        return Outcome::down("no HTTP client");
    };
    let admission = endpoint.admit().await;
    let Ok(_slot) = inner.slots.acquire().await else {
        return Outcome::down("delivery closed");
    };
    let _in_flight = InFlight::new(&inner.stats().in_flight);
    let outcome = send(client, parsed, body).await;
    admission.finish(match outcome {
        Outcome::Delivered | Outcome::Failed { down: false, .. } => Verdict::Healthy,
        Outcome::Failed { down: true, .. } => Verdict::Failing,
        Outcome::Blocked(_) | Outcome::InvalidUrl => Verdict::Unknown,
    });
    outcome
}

async fn send(client: &reqwest::Client, url: reqwest::Url, body: String) -> Outcome {
    let sent = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(mut response) if response.status().is_success() => {
            // At most a few KiB, within the request timeout: enough to reuse the connection after the usual
            // empty or tiny body, never a way to make the node read (or hold) a large one.
            let mut read = 0;
            while read < MAX_RESPONSE_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
            Outcome::Delivered
        }
        Ok(response) => {
            let status = response.status();
            let down = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
            let error = if status.is_redirection() {
                format!("HTTP {} (redirects are not followed)", status.as_u16())
            } else {
                format!("HTTP {}", status.as_u16())
            };
            Outcome::Failed { error, down }
        }
        Err(error) => match blocked_in(&error) {
            Some(blocked) => Outcome::Blocked(blocked),
            None => Outcome::down(without_url(&error)),
        },
    }
}

/// reqwest errors include the URL, which may carry a token: report the cause only.
fn without_url(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}
