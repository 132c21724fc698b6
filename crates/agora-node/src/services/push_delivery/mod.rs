//! Delivers push notifications to subscription URLs, each subscription isolated from the others.
//!
//! The failure this is built against: one endpoint that never answers must not delay anyone else's pushes. So:
//! - **a queue per subscription, coalesced** ([`pending`]): a subscription holds at most one pending state change
//!   (the newest state per type) plus the one in flight, however fast its account changes;
//! - **a gate per endpoint** ([`endpoint`]): at most 16 POSTs in flight to one origin, one while it fails, none while
//!   its circuit breaker is open; a subscription waiting for its endpoint holds no delivery slot;
//! - **node-wide bounds that one endpoint cannot exhaust**: at most [`MAX_PENDING`] subscriptions with pending
//!   changes, of which one endpoint may hold [`MAX_PENDING_PER_ENDPOINT`]; at most [`MAX_IN_FLIGHT`] POSTs, of which
//!   one endpoint holds at most 16 (1 once failing);
//! - **an address guard** ([`guard`]): no POST reaches a loopback, private, link-local... address unless
//!   `[push] allow-networks` allows it, checked when connecting; redirects are not followed; at most
//!   [`MAX_RESPONSE_BYTES`] of a response are read;
//! - **a per-account fan-out cap**: a change is pushed to the first `max-subscriptions-per-account` subscriptions of
//!   its account (by id) and the excess is counted, whatever the registry holds (concurrent registrations on two
//!   nodes, or a hostile bus, can exceed the cap the API enforces).
//!
//! What push services require (RFC 8030, [`crate::services::web_push`]): every POST carries `TTL` and `Urgency`,
//! a body encrypted for the device when the subscription has keys (RFC 8291), and a VAPID signature when
//! `[push] vapid-key-file` is set (RFC 8292). Their answers are acted on: 404/410 remove the subscription on every
//! node (published once, by this node, the account's owner); 413 is not retried; 429 and 5xx are retried, never
//! sooner than a `Retry-After` says. A JMAP subscription gets its `PushVerification` first and nothing else until
//! it is verified; an expired one gets nothing.
//!
//! Every refusal and give-up is counted ([`stats`]) and logged through a [`LogLimiter`]; URLs are never logged
//! (they carry the subscription's secret), only subscription ids.

pub mod endpoint;
pub mod guard;
pub mod pending;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agora::backoff::Backoff;
use agora::event::PushSubscription;
use agora::log_limit::LogLimiter;
use agora::{Coordinator, DataTypes, Event};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use self::endpoint::Endpoint;
use self::guard::{AddressGuard, GuardedResolver};
use self::pending::Pending;
use super::metrics::push::{PushStats, Refusal};
use super::metrics::{NodeMetrics, PushResult};
use super::web_push::keys::UserAgentKeys;
use super::web_push::vapid::VapidSigner;

/// Attempts per pending state change before giving up on it (counted as failed; newer changes start over).
const MAX_ATTEMPTS: u32 = 5;

/// Retry delays: 250 ms, 500 ms, 1 s, 2 s (before jitter), so retries against one endpoint spread out.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));

/// Bound on one POST, so a black-holed endpoint cannot hold a delivery slot for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// POSTs in flight at once, node-wide; more wait for a slot instead of opening unbounded connections.
pub const MAX_IN_FLIGHT: usize = 256;

/// Subscriptions with pending changes, node-wide: beyond it new ones are refused (`node_backlog`). With
/// coalescing each costs one small entry and one waiting task, whatever the change rate.
pub const MAX_PENDING: usize = 50_000;

/// The share of [`MAX_PENDING`] one endpoint may hold (`endpoint_backlog` beyond it): 25 endpoints would have to
/// be bad at once, with 2,000 subscriptions each, before a healthy endpoint's push is refused.
pub const MAX_PENDING_PER_ENDPOINT: usize = 2_000;

/// Response bytes read at most (the body tells us nothing: only the status matters). Reading a small body lets the
/// connection be reused; a larger one is cut off.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// The longest `Retry-After` waited for: a push service asking for more is given up on for this change (counted as
/// failed), never retried sooner than it asked.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Removals of gone subscriptions waiting to be published; past it a removal is dropped (the next push to the
/// subscription meets the same 404/410 and tries again).
const MAX_GONE_QUEUE: usize = 1024;

/// Gone subscriptions remembered so that changes queued before their removal applies are not sent.
const MAX_GONE_REMEMBERED: usize = 10_000;

/// What the HTTP API and the delivery both apply: `[push]`.
#[derive(Debug)]
pub struct PushPolicy {
    /// Which addresses pushes may reach.
    pub guard: Arc<AddressGuard>,
    /// `[push] max-subscriptions-per-account`.
    pub max_per_account: usize,
    /// `[push] vapid-key-file` and `vapid-subject`: the signer of every push, if configured.
    pub vapid: Option<Arc<VapidSigner>>,
    /// `[push] ttl`: the `TTL` header of every push.
    pub ttl: Duration,
    /// `[push] max-expiry`: how far ahead a subscription's `expires` may be.
    pub max_expiry: Duration,
}

impl PushPolicy {
    /// The policy `[push]` describes.
    pub fn new(config: &agora::config::PushConfig) -> Self {
        PushPolicy {
            guard: Arc::new(AddressGuard::new(config.allow_networks.clone())),
            max_per_account: config.max_subscriptions_per_account,
            vapid: config.vapid.as_ref().map(|v| Arc::new(VapidSigner::new(v))),
            ttl: config.ttl,
            max_expiry: config.max_expiry,
        }
    }
}

impl Default for PushPolicy {
    fn default() -> Self {
        PushPolicy::new(&agora::config::PushConfig::default())
    }
}

/// Where a subscription's pushes go and how they are sealed, as of when its worker started (a subscription replaced
/// meanwhile gets the rest at the old target; its next change uses the new one).
pub(super) struct Target {
    url: Arc<str>,
    account_id: u32,
    /// The user agent's keys: the body is encrypted for them.
    keys: Option<UserAgentKeys>,
    /// Unix ms after which nothing is sent.
    expires_at_ms: Option<u64>,
    /// Behind a push service (a JMAP subscription, or one with keys): a 404 or 410 means the device is gone. An
    /// application's webhook keeps its earlier treatment (a 4xx is a failed attempt, retried).
    push_service: bool,
}

/// What a worker sends next.
pub(super) enum Job {
    /// The RFC 8620 `PushVerification` with this code.
    Verification(String),
    /// The coalesced state changes.
    Changes(Pending),
}

/// A subscription with undelivered changes; its worker task runs while this entry exists.
struct Queued {
    target: Arc<Target>,
    /// Changes not yet handed to a POST (the one in flight, if any, is the worker's).
    pending: Pending,
    /// A verification not yet sent: it goes before any change.
    verification: Option<String>,
    endpoint: String,
    /// Failed attempts of the current pending changes.
    attempts: u32,
}

/// An endpoint's gate and how many queued subscriptions use it.
struct EndpointSlot {
    endpoint: Arc<Endpoint>,
    users: usize,
}

/// The queues, under one std lock: every critical section is a few map operations, never across an `.await`.
#[derive(Default)]
struct Queues {
    subscriptions: HashMap<String, Queued>,
    endpoints: HashMap<String, EndpointSlot>,
    /// Subscriptions a push service said are gone, whose removal may not have been applied yet.
    gone: HashSet<String>,
}

/// Rate limiters for the log lines a flood (of changes, or of bad subscriptions) can trigger.
#[derive(Debug, Default)]
struct Logs {
    refused: LogLimiter,
    blocked: LogLimiter,
    failed: LogLimiter,
    capped: LogLimiter,
    gone: LogLimiter,
    rejected: LogLimiter,
}

/// What the handle and the workers share.
struct Inner {
    /// `None` only if the client could not be built (then every attempt fails, counted).
    client: Option<reqwest::Client>,
    guard: Arc<AddressGuard>,
    max_per_account: usize,
    vapid: Option<Arc<VapidSigner>>,
    ttl_seconds: u64,
    /// Removals of gone subscriptions, published by [`publish_removals`].
    gone_tx: mpsc::Sender<String>,
    slots: Semaphore,
    queues: Mutex<Queues>,
    metrics: Arc<NodeMetrics>,
    logs: Logs,
    shutdown: CancellationToken,
}

/// Sends push notifications in the background. Cheap to clone.
#[derive(Clone)]
pub struct PushDelivery {
    inner: Arc<Inner>,
}

impl PushDelivery {
    /// A delivery service applying `policy`, recording its outcomes in `metrics`, and publishing through
    /// `coordinator` the removal of subscriptions push services say are gone.
    pub fn new(
        metrics: Arc<NodeMetrics>,
        policy: &PushPolicy,
        coordinator: Coordinator,
        shutdown: CancellationToken,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("agora/", env!("CARGO_PKG_VERSION")))
            // A 3xx is a failure: following it would let any public endpoint point a delivery inward.
            .redirect(reqwest::redirect::Policy::none())
            // Direct connections only: through a proxy, the address checked would be the proxy's.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(policy.guard.clone())))
            .build()
            .map_err(|e| {
                // Only a broken TLS backend fails here. No fallback client: one without the guard must never run.
                tracing::error!("cannot build the push HTTP client ({e}): every push will fail");
            })
            .ok();
        let (gone_tx, gone_rx) = mpsc::channel(MAX_GONE_QUEUE);
        let delivery = PushDelivery {
            inner: Arc::new(Inner {
                client,
                guard: policy.guard.clone(),
                max_per_account: policy.max_per_account,
                vapid: policy.vapid.clone(),
                ttl_seconds: policy.ttl.as_secs().max(1),
                gone_tx,
                slots: Semaphore::new(MAX_IN_FLIGHT),
                queues: Mutex::default(),
                metrics,
                logs: Logs::default(),
                shutdown: shutdown.clone(),
            }),
        };
        tokio::spawn(publish_removals(
            coordinator,
            gone_rx,
            Arc::downgrade(&delivery.inner),
            shutdown,
        ));
        delivery
    }

    /// Pushes a state change of `account_id` to its matching subscriptions `subscriptions`: the first
    /// `max-subscriptions-per-account` by id (the same ones on every node), each told only the types it wants.
    pub fn deliver(&self, account_id: u32, change_id: u64, types: DataTypes, mut subscriptions: Vec<PushSubscription>) {
        let inner = &self.inner;
        subscriptions.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        if subscriptions.len() > inner.max_per_account {
            let excess = subscriptions.len() - inner.max_per_account;
            inner.stats().refuse(Refusal::AccountCap, excess as u64);
            if inner.logs.capped.should_log() {
                tracing::warn!(
                    account_id,
                    subscriptions = subscriptions.len(),
                    max = inner.max_per_account,
                    "account has more push subscriptions than [push] max-subscriptions-per-account: the excess \
                     (by id) gets no pushes"
                );
            }
            subscriptions.truncate(inner.max_per_account);
        }
        let now_ms = agora::clock::now_us() / 1000;
        for sub in subscriptions {
            // The registry only hands out pushable subscriptions; checked again here, as the gate it is.
            if !sub.may_push() {
                continue;
            }
            if sub.is_expired(now_ms) {
                inner.metrics.count_push(PushResult::Expired);
                continue;
            }
            let wanted = if sub.types.is_empty() {
                types
            } else {
                sub.types.intersection(types)
            };
            self.enqueue(&sub, |queued| queued.pending.merge(change_id, wanted));
        }
    }

    /// Sends a new JMAP subscription its `PushVerification` (RFC 8620 section 7.2.2): called by the node that
    /// created it, so exactly one node sends it. Nothing else is sent to it until it is verified.
    pub fn verify(&self, sub: &PushSubscription) {
        let Some(code) = sub.verification_code.clone() else {
            return;
        };
        self.enqueue(sub, move |queued| queued.verification = Some(code));
    }

    /// Adds work to a subscription's queue (`add` merges a change or sets the verification), starting its worker
    /// if it has none.
    fn enqueue(&self, sub: &PushSubscription, add: impl FnOnce(&mut Queued)) {
        let inner = &self.inner;
        let id = &sub.id;
        let Some(endpoint) = endpoint_key(&sub.url) else {
            inner.stats().refuse(Refusal::InvalidUrl, 1);
            return;
        };
        let keys = match &sub.keys {
            None => None,
            Some(keys) => match UserAgentKeys::parse(&keys.p256dh, &keys.auth) {
                Ok(keys) => Some(keys),
                Err(_) => {
                    // Checked when created through the API: only a subscription from the bus gets here.
                    inner.stats().refuse(Refusal::InvalidKeys, 1);
                    return;
                }
            },
        };
        let mut queues = inner.queues();
        let queues = &mut *queues;
        if queues.gone.contains(id.as_str()) {
            return;
        }
        if let Some(queued) = queues.subscriptions.get_mut(id.as_str()) {
            // Empty while only the in-flight change exists: then this one waits behind it, uncoalesced.
            if !queued.pending.is_empty() {
                inner.stats().coalesced.inc();
            }
            add(queued);
            // A subscription whose URL changed delivers the rest to the URL it had; the next change uses the new one.
            return;
        }
        let users = queues.endpoints.get(&endpoint).map_or(0, |slot| slot.users);
        let refusal = if queues.subscriptions.len() >= MAX_PENDING {
            Some(Refusal::NodeBacklog)
        } else if users >= MAX_PENDING_PER_ENDPOINT {
            Some(Refusal::EndpointBacklog)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            inner.stats().refuse(refusal, 1);
            if inner.logs.refused.should_log() {
                tracing::warn!(
                    subscription = %id,
                    reason = refusal.label(),
                    "push refused: too many subscriptions with undelivered changes ({MAX_PENDING} for the node, \
                     {MAX_PENDING_PER_ENDPOINT} for one endpoint)"
                );
            }
            return;
        }
        let stats = inner.stats_arc();
        let slot = queues
            .endpoints
            .entry(endpoint.clone())
            .or_insert_with(|| EndpointSlot {
                endpoint: Endpoint::new(stats),
                users: 0,
            });
        slot.users += 1;
        let gate = slot.endpoint.clone();
        let mut queued = Queued {
            target: Arc::new(Target {
                url: Arc::from(sub.url.as_str()),
                account_id: sub.account_id,
                push_service: sub.device_client_id.is_some() || keys.is_some(),
                keys,
                expires_at_ms: sub.expires_at_ms,
            }),
            pending: Pending::default(),
            verification: None,
            endpoint,
            attempts: 0,
        };
        add(&mut queued);
        queues.subscriptions.insert(id.clone(), queued);
        inner.stats().pending.inc();
        tokio::spawn(worker::run(inner.clone(), id.clone(), gate));
    }
}

/// Publishes the removal of subscriptions push services answered 404 or 410 for, one at a time, off the workers.
/// A removal that cannot be published is forgotten, so that the next push meets the same answer and tries again.
async fn publish_removals(
    coordinator: Coordinator,
    mut gone: mpsc::Receiver<String>,
    delivery: std::sync::Weak<Inner>,
    shutdown: CancellationToken,
) {
    loop {
        let id = tokio::select! {
            () = shutdown.cancelled() => return,
            id = gone.recv() => match id {
                Some(id) => id,
                None => return,
            },
        };
        if let Err(error) = coordinator
            .publish(Event::PushSubscriptionRemoved { id: id.clone() })
            .await
        {
            tracing::warn!(subscription = %id, "could not publish the removal of a gone push subscription: {error}");
            if let Some(inner) = delivery.upgrade() {
                inner.queues().gone.remove(&id);
            }
        }
    }
}

impl Inner {
    fn queues(&self) -> MutexGuard<'_, Queues> {
        // Every critical section leaves the maps consistent: a panic elsewhere cannot leave them half-updated.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> &PushStats {
        &self.metrics.push
    }

    fn stats_arc(&self) -> Arc<PushStats> {
        self.metrics.push.clone()
    }

    /// A push service said the subscription is gone: drop what it has queued, send it nothing more, and have its
    /// removal published (once: later answers for it find it already forgotten).
    fn forget_gone(&self, id: &str) {
        let mut queues = self.queues();
        if queues.gone.len() >= MAX_GONE_REMEMBERED {
            queues.gone.clear();
        }
        if !queues.gone.insert(id.to_string()) {
            return;
        }
        if let Some(queued) = queues.subscriptions.get_mut(id) {
            queued.pending = Pending::default();
            queued.verification = None;
        }
        drop(queues);
        if self.gone_tx.try_send(id.to_string()).is_err() {
            // Forgotten again, so that its next push meets the same answer and tries again.
            self.queues().gone.remove(id);
            tracing::warn!(
                subscription = id,
                "too many gone push subscriptions to remove at once; retried on its next push"
            );
        }
    }
}

/// The origin a URL's POSTs go to (`http://host:port`, default port filled in), or `None` for a URL that is not
/// an absolute http(s) URL.
fn endpoint_key(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed.host_str().filter(|h| !h.is_empty())?;
    let port = parsed.port_or_known_default()?;
    Some(format!("{}://{}:{port}", parsed.scheme(), host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::endpoint_key;

    #[test]
    fn endpoints_are_origins() {
        assert_eq!(
            endpoint_key("https://Push.Example.com/a?token=1").as_deref(),
            Some("https://push.example.com:443")
        );
        assert_eq!(
            endpoint_key("http://push.example.com:80/b").as_deref(),
            Some("http://push.example.com:80")
        );
        assert_eq!(endpoint_key("http://0x7f.1:9/").as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(endpoint_key("mailto:a@example.com"), None);
        assert_eq!(endpoint_key("not a url"), None);
    }
}
