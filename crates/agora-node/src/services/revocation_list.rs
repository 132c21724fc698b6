//! The write path of client-token revocations (`POST /v1/revocations`): the rules a revocation must pass (shape,
//! bounds, room under `[http.clients] max-revocations`), its replication (published, then applied here before the
//! caller hears back). The set itself and its semantics are in `super::revocations`.

use std::sync::Arc;
use std::time::Duration;

use agora::{Coordinator, Event};
use serde::{Deserialize, Serialize};

use crate::services::error::{ErrorKind, ServiceError};
use crate::services::local_writes::{LocalWrites, WriteError};
use crate::services::metrics::NodeMetrics;
use crate::services::revocations::{jti_ok, keys_of, MAX_ACCOUNTS, MAX_JTI};
use crate::services::state::NodeState;

/// A revocation as `POST /v1/revocations` takes it: accounts, or one token id. Parsed as this struct, so that a
/// wrong body is told exactly what is wrong; documented as [`RevocationBody`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// Revoke every token of these accounts issued until now (1 to 1,000 account ids).
    pub accounts: Option<Vec<u32>>,
    /// Revoke the token with this `jti` (1 to 256 characters).
    pub jti: Option<String>,
}

/// The body of `POST /v1/revocations` as the API document shows it: exactly one of `accounts` and `jti`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape; requests are read as `RevocationRequest`
pub enum RevocationBody {
    /// By accounts.
    Accounts(RevokeAccounts),
    /// By token id.
    Jti(RevokeJti),
}

/// Revoke every token of these accounts issued until now (and those without `iat`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct RevokeAccounts {
    /// 1 to 1,000 account ids.
    #[schema(min_items = 1, max_items = 1000)]
    accounts: Vec<u32>,
}

/// Revoke the one token with this `jti`, whenever issued.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct RevokeJti {
    /// 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    jti: String,
}

/// What a revocation became.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// The revocation time (Unix ms): tokens of the accounts issued at or before it are refused.
    pub revoked_at_ms: u64,
    /// Until when every node holds it (Unix ms): the revocation time plus `[http.clients] max-token-lifetime`.
    pub keep_until_ms: u64,
}

/// Why a revocation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// Neither `accounts` nor `jti`, or both.
    #[error("give either \"accounts\" (a list of 1 to {MAX_ACCOUNTS} account ids) or \"jti\" (a token id), not both")]
    Shape,
    /// `accounts` empty or too long.
    #[error("\"accounts\" must list 1 to {MAX_ACCOUNTS} account ids, found {0}")]
    AccountCount(usize),
    /// `jti` empty or too long.
    #[error("\"jti\" must be 1 to {MAX_JTI} characters, found {0}")]
    JtiLength(usize),
    /// `[http.clients] max-revocations` reached.
    #[error(
        "{held} revocations are held, and this one needs {needed} more entries: at most {max} \
         ([http.clients] max-revocations); they are forgotten once the tokens they cover expire \
         ([http.clients] max-token-lifetime)"
    )]
    Full {
        /// Entries held now.
        held: usize,
        /// Entries this revocation would add.
        needed: usize,
        /// The bound.
        max: usize,
    },
    /// No `[http.clients]`: there are no client tokens to revoke.
    #[error("client tokens are not configured on this node ([http.clients])")]
    NotConfigured,
    /// The event was not published or not applied here in time.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ServiceError for RevocationError {
    fn kind(&self) -> ErrorKind {
        match self {
            RevocationError::Shape
            | RevocationError::AccountCount(_)
            | RevocationError::JtiLength(_)
            | RevocationError::NotConfigured => ErrorKind::Invalid,
            RevocationError::Full { .. } => ErrorKind::Full,
            RevocationError::Write(e) => e.kind(),
        }
    }
}

/// The write path of revocations. Cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    coordinator: Coordinator,
    state: Arc<NodeState>,
    local_writes: Arc<LocalWrites>,
    /// `[http.clients] max-token-lifetime`, if client tokens are configured.
    lifetime: Option<Duration>,
    /// Counts the revocations refused because the registry is full.
    metrics: Arc<NodeMetrics>,
}

impl Revocations {
    /// The write path over this node's replicated state.
    pub fn new(
        coordinator: Coordinator,
        state: Arc<NodeState>,
        local_writes: Arc<LocalWrites>,
        lifetime: Option<Duration>,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        Revocations {
            coordinator,
            state,
            local_writes,
            lifetime,
            metrics,
        }
    }

    /// Checks, publishes and returns once this node applied the revocation (its streams are closing).
    pub async fn revoke(&self, request: RevocationRequest) -> Result<Revoked, RevocationError> {
        let lifetime = self.lifetime.ok_or(RevocationError::NotConfigured)?;
        let (accounts, jti) = match (request.accounts, request.jti) {
            (Some(accounts), None) => {
                if accounts.is_empty() || accounts.len() > MAX_ACCOUNTS {
                    return Err(RevocationError::AccountCount(accounts.len()));
                }
                (accounts, None)
            }
            (None, Some(jti)) => {
                if !jti_ok(&jti) {
                    return Err(RevocationError::JtiLength(jti.chars().count()));
                }
                (Vec::new(), Some(jti))
            }
            _ => return Err(RevocationError::Shape),
        };
        let keys = keys_of(&accounts, jti.as_deref());
        {
            let registry = self.state.revocations();
            let needed = registry.new_keys(&keys);
            if needed > registry.room() {
                self.metrics.revocations_refused.inc();
                return Err(RevocationError::Full {
                    held: registry.len(),
                    needed,
                    max: registry.len() + registry.room(),
                });
            }
        }
        let revoked_at_ms = agora::clock::now_ms();
        let keep_until_ms = revoked_at_ms.saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
        let event = Event::TokensRevoked {
            accounts,
            jti,
            revoked_at_ms,
            keep_until_ms,
        };
        self.local_writes.publish(&self.coordinator, event).await?;
        Ok(Revoked {
            revoked_at_ms,
            keep_until_ms,
        })
    }
}
