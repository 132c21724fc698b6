//! One subscription's worker: while the subscription has work (its verification first, then pending changes, all
//! at once, coalesced), it waits for its endpoint's gate and a node-wide slot, POSTs, and acts on the answer. It is
//! the only task that sends for its subscription, so a subscription never has more than one POST in flight.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::json;

use super::endpoint::{Endpoint, Verdict};
use super::guard::{blocked_in, Blocked, UrlRefused};
use super::{Inner, Job, Target, MAX_ATTEMPTS, MAX_PENDING, MAX_RESPONSE_BYTES, MAX_RETRY_AFTER, RETRY_BACKOFF};
use crate::services::metrics::push::Refusal;
use crate::services::metrics::PushResult;
use crate::services::web_push::encryption;
use crate::services::web_push::vapid::origin_of;

/// What one attempt came to.
enum Outcome {
    /// 2xx.
    Delivered,
    /// 404 or 410: the push service no longer knows the subscription (RFC 8030 section 7.3).
    Gone(u16),
    /// Refused for good, not retried: 413 (too large for the push service), or too large to encrypt.
    Rejected(String),
    /// Not sent: the address guard refused the host.
    Blocked(Blocked),
    /// Not sent: the URL is not an absolute http(s) URL.
    InvalidUrl,
    /// Sent and failed, or could not connect; the text never holds the URL. `down` when the failure is the
    /// endpoint's (no answer, 5xx, 408, 429), which counts towards its breaker; a 3xx or another 4xx concerns this
    /// subscription only (the endpoint answered), so one dead subscription cannot trip a shared gateway's breaker.
    /// `retry_after`: the push service's `Retry-After` (429, 503), the earliest the next attempt may be;
    /// `throttled`: the answer was 429.
    Failed {
        error: String,
        down: bool,
        retry_after: Option<Duration>,
        throttled: bool,
    },
}

impl Outcome {
    fn down(error: impl Into<String>) -> Self {
        Outcome::Failed {
            error: error.into(),
            down: true,
            retry_after: None,
            throttled: false,
        }
    }
}

/// Runs until the subscription has nothing pending (or the node shuts down).
pub(super) async fn run(inner: Arc<Inner>, id: String, endpoint: Arc<Endpoint>) {
    while let Some((target, job)) = take(&inner, &id) {
        if target
            .expires_at_ms
            .is_some_and(|at| agora::clock::now_us() / 1000 >= at)
        {
            // Never pushed once expired; the registry removes it on every node.
            inner.metrics.count_push(PushResult::Expired);
            continue;
        }
        let payload = match &job {
            Job::Verification(code) => json!({
                "@type": "PushVerification",
                "pushSubscriptionId": id,
                "verificationCode": code,
            }),
            Job::Changes(pending) => pending.state_change(target.account_id),
        };
        let outcome = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            outcome = attempt(&inner, &endpoint, &target, payload.to_string().into_bytes()) => outcome,
        };
        // An application's webhook answering 404 or 410 is a failed attempt, as it always was: only a push
        // service's answer means the device is gone.
        let outcome = match outcome {
            Outcome::Gone(status) if !target.push_service => Outcome::Failed {
                error: format!("HTTP {status}"),
                down: false,
                retry_after: None,
                throttled: false,
            },
            outcome => outcome,
        };
        match outcome {
            Outcome::Delivered => {
                inner.metrics.count_push(match job {
                    Job::Changes(_) => PushResult::Ok,
                    Job::Verification(_) => PushResult::VerificationSent,
                });
                set_attempts(&inner, &id, 0);
            }
            Outcome::Gone(status) => {
                inner.metrics.count_push(PushResult::Gone);
                if inner.logs.gone.should_log() {
                    tracing::info!(
                        subscription = id,
                        status,
                        "the push service no longer knows this subscription: removing it on every node"
                    );
                }
                inner.forget_gone(&id);
            }
            Outcome::Rejected(why) => {
                inner.metrics.count_push(PushResult::Rejected);
                set_attempts(&inner, &id, 0);
                if inner.logs.rejected.should_log() {
                    tracing::warn!(subscription = id, "push refused for good, not retried: {why}");
                }
            }
            Outcome::InvalidUrl => inner.stats().refuse(Refusal::InvalidUrl, 1),
            Outcome::Blocked(blocked) => {
                inner.stats().refuse(Refusal::BlockedAddress, 1);
                if inner.logs.blocked.should_log() {
                    tracing::warn!(subscription = id, "push refused: {blocked}");
                }
            }
            Outcome::Failed {
                error,
                retry_after,
                throttled,
                ..
            } => {
                if throttled {
                    inner.metrics.count_push(PushResult::Throttled);
                }
                if retry_after.is_some_and(|wait| wait > MAX_RETRY_AFTER) {
                    // Never sooner than asked, and not holding the subscription for longer than the bound.
                    drop_job(&inner, &id);
                    inner.metrics.count_push(PushResult::Failed);
                    if inner.logs.failed.should_log() {
                        tracing::warn!(
                            subscription = id,
                            "push service asked to wait longer than {}s: giving up on this push ({error})",
                            MAX_RETRY_AFTER.as_secs()
                        );
                    }
                    continue;
                }
                let Some(attempt) = put_back(&inner, &id, job) else {
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
                let wait = RETRY_BACKOFF.delay(attempt).max(retry_after.unwrap_or(Duration::ZERO));
                tracing::debug!(
                    subscription = id,
                    attempt,
                    ?wait,
                    "push delivery failed, retrying: {error}"
                );
                tokio::select! {
                    () = inner.shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Takes the subscription's next job (its verification first, then all pending changes at once), or, when there is
/// none, removes it from the queues (ending the worker) and forgets its endpoint if nothing else uses it and it is
/// healthy.
fn take(inner: &Inner, id: &str) -> Option<(Arc<Target>, Job)> {
    let mut queues = inner.queues();
    let queues = &mut *queues;
    let queued = queues.subscriptions.get_mut(id)?;
    if let Some(code) = queued.verification.take() {
        return Some((queued.target.clone(), Job::Verification(code)));
    }
    if !queued.pending.is_empty() {
        let pending = std::mem::take(&mut queued.pending);
        return Some((queued.target.clone(), Job::Changes(pending)));
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

/// After a failed attempt: puts the job back (behind any newer changes) and returns the attempt number, or gives
/// up on it after [`MAX_ATTEMPTS`] (`None`).
fn put_back(inner: &Inner, id: &str, failed: Job) -> Option<u32> {
    let mut queues = inner.queues();
    let queued = queues.subscriptions.get_mut(id)?;
    queued.attempts += 1;
    if queued.attempts >= MAX_ATTEMPTS {
        queued.attempts = 0;
        return None;
    }
    match failed {
        Job::Verification(code) => {
            queued.verification.get_or_insert(code);
        }
        Job::Changes(pending) => queued.pending.absorb(pending),
    }
    Some(queued.attempts)
}

/// Resets the attempts after a give-up that put nothing back.
fn drop_job(inner: &Inner, id: &str) {
    set_attempts(inner, id, 0);
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

/// One POST: guard, endpoint gate, node-wide slot, seal, send; tells the gate what it learnt.
async fn attempt(inner: &Inner, endpoint: &Arc<Endpoint>, target: &Target, payload: Vec<u8>) -> Outcome {
    let Ok(parsed) = reqwest::Url::parse(&target.url) else {
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
    let outcome = match request(inner, client, parsed, target, payload) {
        Ok(request) => send(request).await,
        Err(outcome) => outcome,
    };
    if let Outcome::Failed {
        throttled: true,
        retry_after: Some(wait),
        ..
    } = &outcome
    {
        // The push service throttles this sender: every subscription of the endpoint waits, not only this one.
        endpoint.hold_until(tokio::time::Instant::now() + (*wait).min(MAX_RETRY_AFTER));
    }
    admission.finish(match outcome {
        Outcome::Delivered | Outcome::Gone(_) | Outcome::Rejected(_) | Outcome::Failed { down: false, .. } => {
            Verdict::Healthy
        }
        Outcome::Failed { down: true, .. } => Verdict::Failing,
        Outcome::Blocked(_) | Outcome::InvalidUrl => Verdict::Unknown,
    });
    outcome
}

/// The RFC 8030 request: `TTL`, `Urgency`, the body encrypted when the subscription has keys (RFC 8291), and the
/// VAPID `Authorization` when the node has a key (RFC 8292).
fn request(
    inner: &Inner,
    client: &reqwest::Client,
    url: reqwest::Url,
    target: &Target,
    payload: Vec<u8>,
) -> Result<reqwest::RequestBuilder, Outcome> {
    let authorization = inner.vapid.as_ref().map(|vapid| {
        let now_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        vapid.authorization(&origin_of(&url), now_s)
    });
    let mut request = client
        .post(url)
        .header("TTL", inner.ttl_seconds)
        .header("Urgency", "normal");
    request = match &target.keys {
        Some(keys) => {
            let body = encryption::encrypt(&payload, keys).map_err(|e| Outcome::Rejected(e.to_string()))?;
            request
                .header(CONTENT_ENCODING, "aes128gcm")
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body)
        }
        None => request.header(CONTENT_TYPE, "application/json").body(payload),
    };
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    Ok(request)
}

async fn send(request: reqwest::RequestBuilder) -> Outcome {
    match request.send().await {
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
            match status {
                StatusCode::NOT_FOUND | StatusCode::GONE => return Outcome::Gone(status.as_u16()),
                StatusCode::PAYLOAD_TOO_LARGE => return Outcome::Rejected("HTTP 413 (payload too large)".into()),
                _ => {}
            }
            let down = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
            let error = if status.is_redirection() {
                format!("HTTP {} (redirects are not followed)", status.as_u16())
            } else {
                format!("HTTP {}", status.as_u16())
            };
            Outcome::Failed {
                error,
                down,
                retry_after: retry_after(response.headers(), SystemTime::now()),
                throttled: status == StatusCode::TOO_MANY_REQUESTS,
            }
        }
        Err(error) => match blocked_in(&error) {
            Some(blocked) => Outcome::Blocked(blocked),
            None => Outcome::down(without_url(&error)),
        },
    }
}

/// `Retry-After` (RFC 9110 section 10.2.3): seconds, or an HTTP date (then the time until it, 0 if past).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(RETRY_AFTER, value.parse().expect("header value"));
            map
        };
        assert_eq!(retry_after(&headers("2"), now), Some(Duration::from_secs(2)));
        let in_a_minute = httpdate::fmt_http_date(now + Duration::from_secs(60));
        assert_eq!(retry_after(&headers(&in_a_minute), now), Some(Duration::from_secs(60)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        assert_eq!(retry_after(&headers(&past), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
