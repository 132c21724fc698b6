//! The write path of push subscriptions: the rules a registration must pass (a URL the delivery may reach, room in
//! the account), its replication (published, then applied here before the caller hears back), and the reads. The
//! HTTP handlers only parse a request and call one method here.

use std::sync::Arc;

use agora::event::PushSubscription;
use agora::{Coordinator, DataTypes, Event};
use serde::Deserialize;

use super::error::{ErrorKind, ServiceError};
use super::local_writes::{LocalWrites, WriteError};
use super::lww::PageIndex;
use super::push_delivery::guard::UrlRefused;
use super::push_delivery::PushPolicy;
use super::state::{NodeState, MAX_PUSH_ID, MAX_PUSH_URL};

/// A new subscription, as a caller sends it (the id is chosen here).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// The account whose changes are pushed.
    pub account_id: u32,
    /// Where they are pushed: an absolute http(s) URL.
    pub url: String,
    /// The data types pushed (all when empty).
    #[serde(default)]
    pub types: DataTypes,
}

/// Why a subscription was refused or not found.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The URL is longer than a subscription may hold.
    #[error("url too long: {0} bytes, at most {MAX_PUSH_URL}")]
    UrlTooLong(usize),
    /// The id of a subscription published as an event is empty or too long.
    #[error("push subscription id of {0} bytes: 1 to {MAX_PUSH_ID} are allowed")]
    BadId(usize),
    /// The URL does not parse.
    #[error("invalid url: {0}; an absolute http:// or https:// URL is required")]
    InvalidUrl(String),
    /// The URL is not an absolute http(s) URL with a host.
    #[error("invalid url: an absolute http:// or https:// URL is required")]
    NotHttp,
    /// The URL's host is an address pushes may not reach (`[push] allow-networks`).
    #[error("push URL refused: {0}")]
    Refused(UrlRefused),
    /// The account is at `[push] max-subscriptions-per-account`.
    #[error(
        "account {account_id} already has {max} push subscriptions, the most [push] max-subscriptions-per-account \
         allows; remove one first (DELETE /v1/push-subscriptions/{{id}})"
    )]
    AccountFull {
        /// The account.
        account_id: u32,
        /// The limit.
        max: usize,
    },
    /// No subscription with this id was known here (the removal is broadcast all the same).
    #[error("no push subscription {0:?}")]
    NotFound(String),
    /// The event was not published or not applied here in time.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ServiceError for SubscriptionError {
    fn kind(&self) -> ErrorKind {
        match self {
            SubscriptionError::UrlTooLong(_)
            | SubscriptionError::BadId(_)
            | SubscriptionError::InvalidUrl(_)
            | SubscriptionError::NotHttp
            | SubscriptionError::Refused(_) => ErrorKind::Invalid,
            SubscriptionError::AccountFull { .. } => ErrorKind::Conflict,
            SubscriptionError::NotFound(_) => ErrorKind::NotFound,
            SubscriptionError::Write(e) => e.kind(),
        }
    }
}

/// The replicated push subscriptions as callers use them. Cheap to clone.
#[derive(Clone)]
pub struct PushSubscriptions {
    coordinator: Coordinator,
    state: Arc<NodeState>,
    local_writes: Arc<LocalWrites>,
    policy: Arc<PushPolicy>,
    /// The sorted ids, shared by every reader of the list while the subscription set is unchanged.
    list_index: Arc<PageIndex<String>>,
}

impl PushSubscriptions {
    /// The subscriptions over this node's replicated state, checked against `policy` (`[push]`).
    pub fn new(
        coordinator: Coordinator,
        state: Arc<NodeState>,
        local_writes: Arc<LocalWrites>,
        policy: Arc<PushPolicy>,
    ) -> Self {
        PushSubscriptions {
            coordinator,
            state,
            local_writes,
            policy,
            list_index: Arc::default(),
        }
    }

    /// Publishes a new subscription and returns it once this node applied it, so that a list right after
    /// includes it.
    ///
    /// Refused up front: URLs that are not absolute http(s) URLs, hosts that are internal addresses (IP literals
    /// after WHATWG parsing, `localhost`) unless `[push] allow-networks` allows them, and accounts already at
    /// `[push] max-subscriptions-per-account`. The delivery checks the address again when it connects (DNS can
    /// change).
    pub async fn create(&self, new: NewSubscription) -> Result<PushSubscription, SubscriptionError> {
        self.check(new.account_id, &new.url, None)?;
        let subscription = PushSubscription {
            id: format!("{:016x}", rand::random::<u64>()),
            account_id: new.account_id,
            url: new.url,
            types: new.types,
        };
        self.local_writes
            .publish(&self.coordinator, Event::PushSubscriptionSet(subscription.clone()))
            .await?;
        Ok(subscription)
    }

    /// Publishes the removal of `id`. Broadcast even when unknown here (this node may have missed the
    /// subscription that others hold), then reported as not found.
    pub async fn remove(&self, id: &str) -> Result<(), SubscriptionError> {
        let known = self.state.push().get(id).is_some();
        self.local_writes
            .publish(&self.coordinator, Event::PushSubscriptionRemoved { id: id.to_string() })
            .await?;
        if !known {
            return Err(SubscriptionError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// One page of the list, in id order: at most `max` subscriptions after id `after`, and the cursor for the next
    /// page (`None` once the list is done), so that a reader holds one page at a time.
    pub fn page(&self, after: Option<&String>, max: usize) -> (Vec<PushSubscription>, Option<String>) {
        let registry = self.state.push();
        let page: Vec<PushSubscription> = registry
            .subscriptions_after(&self.list_index, after, max)
            .into_iter()
            .map(|stored| stored.subscription.clone())
            .collect();
        let next = page.last().map(|s| s.id.clone());
        (page, next)
    }

    /// The registration checks: an absolute http(s) URL whose host is not an internal address (unless allowed),
    /// and room in the account (a subscription replacing `replacing` does not count itself).
    pub fn check(&self, account_id: u32, url: &str, replacing: Option<&str>) -> Result<(), SubscriptionError> {
        if url.len() > MAX_PUSH_URL {
            return Err(SubscriptionError::UrlTooLong(url.len()));
        }
        if let Some(id) = replacing.filter(|id| id.is_empty() || id.len() > MAX_PUSH_ID) {
            return Err(SubscriptionError::BadId(id.len()));
        }
        let url = reqwest::Url::parse(url).map_err(|e| SubscriptionError::InvalidUrl(e.to_string()))?;
        match self.policy.guard.check_url(&url) {
            Ok(()) => {}
            Err(UrlRefused::Scheme | UrlRefused::NoHost) => return Err(SubscriptionError::NotHttp),
            Err(refused) => return Err(SubscriptionError::Refused(refused)),
        }
        let max = self.policy.max_per_account;
        let registry = self.state.push();
        let replaced_here = replacing.is_some_and(|id| {
            registry
                .get(id)
                .is_some_and(|s| s.subscription.account_id == account_id)
        });
        let existing = registry.account_count(account_id) - usize::from(replaced_here);
        if existing >= max {
            return Err(SubscriptionError::AccountFull { account_id, max });
        }
        Ok(())
    }
}
