//! Revocation of end clients' scoped tokens (`[http.clients]`): the replicated set of revoked accounts and token ids,
//! and the check every client stream passes at connect and again whenever the set changes. The write path of
//! `POST /v1/revocations` is `super::revocation_list`.
//!
//! **Semantics.** An account revocation made at `T` covers every token naming that account whose `iat` is at or
//! before `T` (`iat` has one-second resolution, so a token minted in the revocation's own second is covered too), and
//! every token of that account without `iat`. A `jti` revocation covers the one token with that id, whenever issued.
//!
//! **Replication.** A revocation is a `tokens_revoked` event, applied by every node (and by every node on its own for
//! Stalwart's `InvalidateAccessTokens`). The set only grows until entries expire, and two revocations of one key merge
//! by taking the later time and the later expiry, so every order of application gives the same set: no clock or
//! tombstone is needed. A joining node gets the set from a peer's state transfer (section `revocations`).
//!
//! **Bounds.** An entry is kept until `keep_until_ms`: its time plus `[http.clients] max-token-lifetime`, past which
//! every token it covers has expired (a longer-lived token is refused at connect). At most
//! `[http.clients] max-revocations` entries are held; past it, `POST /v1/revocations` answers 507 and revocations
//! arriving from the bus are dropped and counted (`agora_revocations_refused_total`), never held unbounded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Accounts one revocation may name (as many as one token may).
pub const MAX_ACCOUNTS: usize = 1000;

/// Longest `jti` kept, in characters (a UUID is 36).
pub const MAX_JTI: usize = 256;

/// Whether `jti` is a token id the node keeps: 1 to [`MAX_JTI`] characters.
pub fn jti_ok(jti: &str) -> bool {
    !jti.is_empty() && jti.chars().count() <= MAX_JTI
}

/// Longest a revocation is kept, whatever an event says: the largest `max-token-lifetime` allowed.
const MAX_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default `[http.clients] max-revocations`.
pub const DEFAULT_MAX_REVOCATIONS: usize = 100_000;

/// What a verified client token grants and what a revocation can cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenScope {
    /// The accounts the token may watch, sorted, without duplicates, never empty.
    pub accounts: Vec<u32>,
    /// `iat` (Unix seconds), if the token has one.
    pub iat: Option<u64>,
    /// `jti`, if the token has one.
    pub jti: Option<String>,
    /// `exp` (Unix seconds): the stream ends then.
    pub exp: u64,
}

/// One revoked key: an account, or a token id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKey {
    /// Every token of this account issued until the revocation.
    Account(u32),
    /// The token with this `jti`.
    Jti(String),
}

/// When a key was revoked and until when that is remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The revocation time (Unix ms): account tokens issued at or before it are refused.
    pub revoked_at_ms: u64,
    /// When the entry may be forgotten (Unix ms).
    pub keep_until_ms: u64,
}

impl Held {
    /// Both revocations of one key at once: the later of each time. Commutative and idempotent, so nodes that apply
    /// the same revocations in any order hold the same entry.
    fn merge(self, other: Held) -> Held {
        Held {
            revoked_at_ms: self.revoked_at_ms.max(other.revoked_at_ms),
            keep_until_ms: self.keep_until_ms.max(other.keep_until_ms),
        }
    }
}

/// One entry as a state-transfer page carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRevocation {
    /// What is revoked.
    pub key: RevocationKey,
    /// When, and until when it is held.
    #[serde(flatten)]
    pub held: Held,
}

/// The revoked accounts and token ids a node holds (see the module documentation).
#[derive(Debug)]
pub struct RevocationRegistry {
    entries: BTreeMap<RevocationKey, Held>,
    /// `[http.clients] max-revocations`.
    max: usize,
    /// Entries not held because the registry was full.
    refused: u64,
}

impl Default for RevocationRegistry {
    fn default() -> Self {
        RevocationRegistry {
            entries: BTreeMap::new(),
            max: DEFAULT_MAX_REVOCATIONS,
            refused: 0,
        }
    }
}

impl RevocationRegistry {
    /// Sets `[http.clients] max-revocations`.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries dropped so far because the registry was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// How many of `keys` the registry would have to add (the others are held already).
    pub fn new_keys<'a>(&self, keys: impl IntoIterator<Item = &'a RevocationKey>) -> usize {
        keys.into_iter().filter(|k| !self.entries.contains_key(k)).count()
    }

    /// Room left before `max-revocations`.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.entries.len())
    }

    /// Records a revocation of `key`; returns whether the set changed. A new key past the bound is dropped and
    /// counted.
    pub fn revoke(&mut self, key: RevocationKey, held: Held) -> bool {
        let held = Held {
            keep_until_ms: held
                .keep_until_ms
                .min(held.revoked_at_ms.saturating_add(MAX_KEEP.as_millis() as u64)),
            ..held
        };
        let full = self.entries.len() >= self.max;
        match self.entries.get_mut(&key) {
            Some(existing) => {
                let merged = existing.merge(held);
                let changed = merged != *existing;
                *existing = merged;
                changed
            }
            None if full => {
                self.refused += 1;
                false
            }
            None => {
                self.entries.insert(key, held);
                true
            }
        }
    }

    /// Forgets entries whose tokens have all expired at `now_ms`; returns how many.
    pub fn purge(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, held| held.keep_until_ms > now_ms);
        before - self.entries.len()
    }

    /// Whether a revocation covers a token of this scope.
    pub fn covers(&self, scope: &TokenScope) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        if let Some(jti) = &scope.jti {
            if self.entries.contains_key(&RevocationKey::Jti(jti.clone())) {
                return true;
            }
        }
        // Without `iat` the token may be as old as anything: every account revocation covers it.
        let issued_ms = scope.iat.map_or(0, |iat| iat.saturating_mul(1000));
        scope.accounts.iter().any(|account| {
            self.entries
                .get(&RevocationKey::Account(*account))
                .is_some_and(|held| issued_ms <= held.revoked_at_ms)
        })
    }

    /// At most `max` entries after `after`, in key order (a state-transfer page).
    pub fn after(&self, after: Option<&RevocationKey>, max: usize) -> Vec<StoredRevocation> {
        let range = match after {
            None => self.entries.range::<RevocationKey, _>(..),
            Some(key) => self
                .entries
                .range::<RevocationKey, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
        };
        range
            .take(max)
            .map(|(key, held)| StoredRevocation {
                key: key.clone(),
                held: *held,
            })
            .collect()
    }
}

/// The keys an event revokes, within the bounds every node applies (anyone on the bus may publish one).
pub fn keys_of(accounts: &[u32], jti: Option<&str>) -> Vec<RevocationKey> {
    let mut keys: Vec<RevocationKey> = accounts
        .iter()
        .take(MAX_ACCOUNTS)
        .map(|a| RevocationKey::Account(*a))
        .collect();
    if let Some(jti) = jti.filter(|j| jti_ok(j)) {
        keys.push(RevocationKey::Jti(jti.to_string()));
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(accounts: &[u32], iat: Option<u64>, jti: Option<&str>) -> TokenScope {
        TokenScope {
            accounts: accounts.to_vec(),
            iat,
            jti: jti.map(str::to_string),
            exp: u64::MAX,
        }
    }

    fn held(at_ms: u64) -> Held {
        Held {
            revoked_at_ms: at_ms,
            keep_until_ms: at_ms + 1000,
        }
    }

    #[test]
    fn an_account_revocation_covers_tokens_issued_until_its_second_and_tokens_without_iat() {
        let mut r = RevocationRegistry::default();
        assert!(r.revoke(RevocationKey::Account(42), held(10_500)));
        assert!(r.covers(&scope(&[42], Some(9), None)));
        assert!(r.covers(&scope(&[42], Some(10), None)), "same second: covered");
        assert!(!r.covers(&scope(&[42], Some(11), None)), "issued after");
        assert!(r.covers(&scope(&[42], None, None)), "no iat: covered");
        assert!(r.covers(&scope(&[1, 42], Some(1), None)), "any of its accounts");
        assert!(!r.covers(&scope(&[43], Some(1), None)));
    }

    #[test]
    fn a_jti_revocation_covers_that_token_whenever_issued() {
        let mut r = RevocationRegistry::default();
        r.revoke(RevocationKey::Jti("t-1".into()), held(10_000));
        assert!(r.covers(&scope(&[1], Some(u64::MAX / 1000), Some("t-1"))));
        assert!(!r.covers(&scope(&[1], Some(1), Some("t-2"))));
        assert!(!r.covers(&scope(&[1], Some(1), None)));
    }

    #[test]
    fn revocations_merge_in_any_order_to_the_same_entry() {
        let (a, b) = (
            held(5_000),
            Held {
                revoked_at_ms: 4_000,
                keep_until_ms: 99_000,
            },
        );
        let (mut x, mut y) = (RevocationRegistry::default(), RevocationRegistry::default());
        x.revoke(RevocationKey::Account(1), a);
        x.revoke(RevocationKey::Account(1), b);
        y.revoke(RevocationKey::Account(1), b);
        y.revoke(RevocationKey::Account(1), a);
        assert_eq!(x.after(None, 10), y.after(None, 10));
        assert_eq!(
            x.after(None, 10)[0].held,
            Held {
                revoked_at_ms: 5_000,
                keep_until_ms: 99_000
            }
        );
        assert!(!x.revoke(RevocationKey::Account(1), a), "idempotent");
    }

    #[test]
    fn the_bound_drops_and_counts_new_keys_but_still_merges_held_ones() {
        let mut r = RevocationRegistry::default();
        r.set_max(2);
        assert!(r.revoke(RevocationKey::Account(1), held(1)));
        assert!(r.revoke(RevocationKey::Account(2), held(1)));
        assert!(!r.revoke(RevocationKey::Account(3), held(1)));
        assert_eq!((r.len(), r.refused()), (2, 1));
        assert!(r.revoke(RevocationKey::Account(2), held(7)), "a held key is updated");
        assert_eq!(r.new_keys(&[RevocationKey::Account(2), RevocationKey::Account(9)]), 1);
    }

    #[test]
    fn entries_are_forgotten_once_every_token_they_cover_expired_and_never_kept_beyond_the_largest_lifetime() {
        let mut r = RevocationRegistry::default();
        r.revoke(RevocationKey::Account(1), held(1_000));
        r.revoke(
            RevocationKey::Jti("x".into()),
            Held {
                revoked_at_ms: 0,
                keep_until_ms: u64::MAX,
            },
        );
        assert_eq!(r.purge(1_999), 0);
        assert_eq!(r.purge(2_000), 1);
        assert_eq!(
            r.purge(MAX_KEEP.as_millis() as u64),
            1,
            "clamped to the largest lifetime"
        );
        assert!(r.is_empty());
    }

    #[test]
    fn pages_go_in_key_order_from_a_cursor() {
        let mut r = RevocationRegistry::default();
        for key in [
            RevocationKey::Jti("b".into()),
            RevocationKey::Account(7),
            RevocationKey::Account(3),
        ] {
            r.revoke(key, held(1));
        }
        let first = r.after(None, 2);
        assert_eq!(
            first.iter().map(|s| s.key.clone()).collect::<Vec<_>>(),
            [RevocationKey::Account(3), RevocationKey::Account(7)]
        );
        let rest = r.after(Some(&first[1].key), 10);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].key, RevocationKey::Jti("b".into()));
        let json = serde_json::to_string(&rest[0]).expect("json");
        assert_eq!(json, r#"{"key":{"jti":"b"},"revoked_at_ms":1,"keep_until_ms":1001}"#);
    }

    #[test]
    fn keys_of_bounds_what_the_bus_may_send() {
        let many: Vec<u32> = (0..5000).collect();
        assert_eq!(keys_of(&many, None).len(), MAX_ACCOUNTS);
        assert_eq!(
            keys_of(&[1, 1], Some(&"x".repeat(MAX_JTI + 1))),
            [RevocationKey::Account(1)]
        );
        assert_eq!(keys_of(&[], Some("")), []);
    }
}
