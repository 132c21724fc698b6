//! What one EventSource stream wants and what it sends for each journal entry: the query's filter (accounts,
//! types, pings, `closeafter`) and the frames. Shared by both transports: the fan-out (`http::fanout`) for
//! plain-HTTP streams and the response body of `http::eventsource`.

use std::collections::HashSet;
use std::time::Duration;

use agora::{DataTypes, Event, Notification, ResyncReason};
use bytes::Bytes;
use serde::Deserialize;

use super::error::ApiError;
use crate::services::journal::{Entry, Journal};
use crate::services::push::state_change_json;

/// Most accounts one stream may watch (each costs a wake-up registration).
const MAX_ACCOUNTS: usize = 1000;

/// Longest accepted ping interval (seconds).
const MAX_PING: u64 = 3600;

/// The query of `GET /v1/eventsource` (RFC 8620 section 7.3).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventSourceQuery {
    /// Comma-separated account ids; absent = every account.
    #[param(example = "1,2")]
    accounts: Option<String>,
    /// Comma-separated JMAP types, or `*` / absent for all.
    #[param(example = "Email,Mailbox")]
    types: Option<String>,
    /// Seconds between pings; 0 or absent = no pings.
    #[param(minimum = 0, maximum = 3600)]
    ping: Option<u64>,
    /// `state`: close after the first state event; `no` (default): keep open.
    #[param(pattern = "^(state|no)$")]
    closeafter: Option<String>,
    /// Resume after this id, for clients that cannot set the `Last-Event-ID` header.
    #[serde(rename = "last-event-id")]
    pub(super) last_event_id: Option<String>,
}

/// The parsed filter of one stream.
#[derive(Debug)]
pub struct Filter {
    /// Only these accounts' changes; `None`: every account.
    pub accounts: Option<HashSet<u32>>,
    types: Option<DataTypes>,
    /// The ping interval, if the client asked for pings.
    pub ping: Option<Duration>,
    pub(super) close_after_state: bool,
}

#[cfg(test)]
impl Filter {
    /// Every type of these accounts' changes, with pings every `ping`.
    pub fn for_accounts(accounts: &[u32], ping: Option<Duration>) -> Self {
        Filter {
            accounts: Some(accounts.iter().copied().collect()),
            types: None,
            ping,
            close_after_state: false,
        }
    }
}

/// What a stream does with one journal entry.
#[derive(Debug)]
pub enum Step {
    /// Send this frame.
    Send(Bytes),
    /// Nothing for this stream.
    Skip,
    /// End the stream: events may have been missed, and the client must resynchronise (`/changes`).
    End,
}

impl Filter {
    /// What this stream sends for `entry` (numbered in `journal`).
    pub fn step(&self, entry: &Entry, journal: &Journal) -> Step {
        match &entry.notification {
            Notification::Event(delivery) => {
                let Event::StateChange {
                    account_id,
                    change_id,
                    types,
                } = delivery.event
                else {
                    return Step::Skip;
                };
                if self.accounts.as_ref().is_some_and(|a| !a.contains(&account_id)) {
                    return Step::Skip;
                }
                let wanted = match self.types {
                    Some(wanted) => wanted.intersection(types),
                    None => types,
                };
                if wanted.is_empty() {
                    return Step::Skip;
                }
                // The common case (the stream wants every type that changed) shares one frame per event.
                let make = |types| {
                    state_frame(
                        &journal.id_of(entry),
                        &state_change_json(account_id, change_id, types).to_string(),
                    )
                };
                Step::Send(if wanted == types {
                    entry.shared_frame(|| make(types))
                } else {
                    make(wanted)
                })
            }
            // Events were missed: end the stream so the client resynchronises.
            Notification::Lagged { .. }
            | Notification::Resync {
                reason: ResyncReason::Gap,
                ..
            } => Step::End,
            // A peer restarted: what it sent last may be lost, but closing every stream in the cluster on each
            // restart would cause a reconnect storm; the gap detector covers real losses.
            Notification::Resync { .. } => Step::Skip,
        }
    }
}

/// The SSE frame of a state change: `id`, `event: state`, and the JMAP `StateChange` JSON (one line).
fn state_frame(id: &str, json: &str) -> Bytes {
    format!("id: {id}\nevent: state\ndata: {json}\n\n").into()
}

/// The SSE frame of a ping (RFC 8620 7.3: `{"interval": seconds}`).
pub fn ping_frame(interval: Duration) -> Bytes {
    format!("event: ping\ndata: {{\"interval\":{}}}\n\n", interval.as_secs()).into()
}

/// The stream's filter from its query, each bad parameter a 400 naming it.
pub(super) fn parse(query: EventSourceQuery) -> Result<Filter, ApiError> {
    let accounts = match query.accounts.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|a| {
                    a.trim()
                        .parse::<u32>()
                        .map_err(|_| ApiError::bad_request(format!("invalid account id {a:?} in accounts")))
                })
                .collect::<Result<HashSet<u32>, _>>()?,
        ),
    };
    if accounts.as_ref().is_some_and(|a| a.len() > MAX_ACCOUNTS) {
        return Err(ApiError::bad_request(format!(
            "too many accounts: at most {MAX_ACCOUNTS} per stream"
        )));
    }
    let types = match query.types.as_deref().map(str::trim) {
        None | Some("") | Some("*") => None,
        Some(list) => Some(DataTypes::from_names(list.split(',').map(str::trim)).map_err(ApiError::bad_request)?),
    };
    let ping = match query.ping {
        None | Some(0) => None,
        Some(s) if s <= MAX_PING => Some(Duration::from_secs(s)),
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "ping {s} is too large; at most {MAX_PING} seconds"
            )))
        }
    };
    let close_after_state = match query.closeafter.as_deref() {
        None | Some("no") => false,
        Some("state") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "closeafter must be state or no, not {other:?}"
            )))
        }
    };
    Ok(Filter {
        accounts,
        types,
        ping,
        close_after_state,
    })
}
