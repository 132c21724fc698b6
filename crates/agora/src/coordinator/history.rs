//! The durable stream's history before a node's start position. A node's journal is prefilled with it, so that a
//! client whose last id is older than the node's own start (the node restarted, or joined after that event) still
//! resumes exactly on it, as long as the stream holds the event.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::authenticator::Authenticator;
use super::dispatch::{Batch, EventRef};
use super::message::StoredAt;
use crate::codec;
use crate::transport::jetstream::{ApiError, JetStream};

/// How long the history reader waits for the next message before giving up on the rest.
const IDLE: Duration = Duration::from_secs(5);

/// Reads the messages `(through - max_messages, through]` the stream still holds, in order, and hands every event
/// of them to `each` with its stream position (batches that fail the cluster key's check, or are not batches, are
/// skipped). Returns how many events it handed over.
pub(super) async fn read(
    js: &JetStream,
    auth: &Authenticator,
    through: u64,
    max_messages: u64,
    mut each: impl FnMut(EventRef),
) -> Result<u64, ApiError> {
    let (first, last) = js.stream_bounds().await?;
    let through = through.min(last);
    if through == 0 || max_messages == 0 || first > through {
        return Ok(0);
    }
    let start = first.max(through.saturating_sub(max_messages - 1));
    let incarnation = js.incarnation();
    let mut messages = js.read_from(start).await?;
    let mut events = 0;
    loop {
        let message = match tokio::time::timeout(IDLE, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(ApiError::new("reading the stream's history failed")(e)),
            // The stream ended or went quiet before `through` (messages expired meanwhile): that is all there is.
            Ok(None) | Err(_) => break,
        };
        let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
            continue;
        };
        if seq > through {
            break;
        }
        if let Ok(reader) = codec::decode_batch(&message.payload) {
            if auth.admit_batch(&reader) {
                let batch = Arc::new(Batch::stored(reader, StoredAt { incarnation, seq }));
                for event in batch.events() {
                    events += 1;
                    each(event);
                }
            }
        }
        if seq == through {
            break;
        }
    }
    Ok(events)
}
