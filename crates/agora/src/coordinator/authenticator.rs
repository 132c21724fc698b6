//! The coordinator's side of authenticated mode (`[cluster] key`): the optional [`Keyring`] plus the counters and
//! rate-limited logging of what it rejects. The keyring itself ([`crate::auth`]) knows nothing of batches or of
//! the coordinator's counters, so that the wire format can sign with it.

use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{Keyring, MacError, MAC_LEN};
use crate::codec::BatchReader;
use crate::config::Secret;
use crate::error::{RequestError, RequestErrorKind};
use crate::stats::Stats;

/// What a request's reply must be bound to: the request's MAC when a key is set.
#[derive(Clone, Copy)]
pub(super) struct PendingRequest(Option<[u8; MAC_LEN]>);

/// The coordinator's side of authentication: the optional keyring plus the counters and rate-limited logging of
/// what it rejects. Cheap to clone; with no key every check passes and every envelope is the bare payload.
#[derive(Clone, Debug)]
pub(super) struct Authenticator {
    keyring: Option<Arc<Keyring>>,
    stats: Arc<Stats>,
}

impl Authenticator {
    pub(super) fn new(keys: &[Secret], stats: Arc<Stats>) -> Self {
        Authenticator {
            keyring: Keyring::from_config(keys).map(Arc::new),
            stats,
        }
    }

    /// The keyring the batch encoder signs with, `None` when authentication is off.
    pub(super) fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring.clone()
    }

    /// Whether a key is configured: what arrives is then authenticated, or dropped.
    pub(super) fn is_keyed(&self) -> bool {
        self.keyring.is_some()
    }

    /// Bytes a batch grows by when signed (the MAC trailer), 0 when authentication is off.
    pub(super) fn overhead(&self) -> usize {
        if self.keyring.is_some() {
            MAC_LEN
        } else {
            0
        }
    }

    /// Whether a received batch may be read: always without a key, else only with a MAC made with one of the keys.
    /// A rejected batch is counted and logged (rate-limited).
    pub(super) fn admit_batch(&self, batch: &BatchReader<'_>) -> bool {
        let Some(keyring) = &self.keyring else {
            return true;
        };
        let Err(e) = keyring.verify_batch(batch) else {
            return true;
        };
        let claimed = batch.header().node_id;
        let (counter, hint) = match e {
            MacError::Missing => (
                &self.stats.unauthenticated_batches,
                "the sender does not have [cluster] key set",
            ),
            MacError::Mismatch => (
                &self.stats.bad_mac_batches,
                "the sender uses another [cluster] key, or the batch is forged",
            ),
        };
        let (total, log) = crate::log_limit::count(counter, 1);
        if log {
            tracing::warn!(
                claimed_node_id = claimed.get(),
                total,
                "dropped a batch that failed authentication ({e}); {hint}"
            );
        }
        false
    }

    /// Seals an outgoing request (the bare payload without a key).
    pub(super) fn seal_request(&self, name: &str, payload: Bytes) -> (Bytes, PendingRequest) {
        match &self.keyring {
            Some(keyring) => {
                let (sealed, mac) = keyring.seal_request(name, &payload);
                (sealed, PendingRequest(Some(mac)))
            }
            None => (payload, PendingRequest(None)),
        }
    }

    /// Opens the reply to a request; a reply that fails authentication fails the request.
    pub(super) fn open_reply(&self, name: &str, pending: &PendingRequest, reply: Bytes) -> Result<Bytes, RequestError> {
        let (Some(keyring), PendingRequest(Some(request_mac))) = (&self.keyring, pending) else {
            return Ok(reply);
        };
        keyring.open_reply(name, request_mac, &reply).map_err(|e| {
            let (total, log) = crate::log_limit::count(&self.stats.rejected_replies, 1);
            if log {
                tracing::warn!(total, "a reply to a {name} request failed authentication ({e})");
            }
            RequestError::new(RequestErrorKind::Unauthenticated, name, "reply failed authentication")
        })
    }

    /// Opens an incoming request; `None` (counted, logged rate-limited) when it fails authentication and must be
    /// dropped unanswered.
    pub(super) fn open_request(&self, name: &str, request: Bytes) -> Option<(Bytes, PendingRequest)> {
        let Some(keyring) = &self.keyring else {
            return Some((request, PendingRequest(None)));
        };
        match keyring.open_request(name, &request) {
            Ok((payload, mac)) => Some((payload, PendingRequest(Some(mac)))),
            Err(e) => {
                let (total, log) = crate::log_limit::count(&self.stats.rejected_requests, 1);
                if log {
                    tracing::warn!(total, "dropped a {name} request that failed authentication ({e})");
                }
                None
            }
        }
    }

    /// Seals the reply to a request opened with [`Authenticator::open_request`].
    pub(super) fn seal_reply(&self, name: &str, pending: PendingRequest, reply: Bytes) -> Bytes {
        match (&self.keyring, pending) {
            (Some(keyring), PendingRequest(Some(request_mac))) => keyring.seal_reply(name, &request_mac, &reply),
            _ => reply,
        }
    }
}
