//! Batch encoding.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::body::{event_tag, RecordRef};
use super::varint::{self, Out, Window};
use super::{Control, FLAG_MAC, HEADER_LEN, MAC_LEN, VERSION};
use crate::auth::Keyring;
use crate::event::{Event, NodeId};

/// Offset of the `count` field in the header, patched by [`BatchEncoder::finish`].
const COUNT_OFFSET: usize = 28;

/// Records up to this size are written into a zeroed window of this size (covers every fixed-size record).
const SMALL_RECORD: usize = 64;

/// Builds batches.
///
/// One encoder lives as long as its sender and is reused for every batch, so the steady state allocates nothing: the
/// buffer's capacity is reclaimed once the previous batch's [`Bytes`] has been sent and dropped.
///
/// Given a [`Keyring`] ([`with_keyring`](Self::with_keyring)), every batch is signed in [`finish`](Self::finish):
/// the header's MAC flag is set and a [`MAC_LEN`]-byte trailer appended, and [`len`](Self::len) counts that trailer
/// so size budgets stay exact.
#[derive(Debug)]
pub struct BatchEncoder {
    buf: BytesMut,
    /// Signs every batch when set (authenticated mode).
    keyring: Option<Arc<Keyring>>,
    node_id: NodeId,
    instance_id: u64,
    base_time_us: u64,
    count: u32,
    open: bool,
}

impl BatchEncoder {
    /// An encoder for the sender `node_id`, whose process is identified by `instance_id` (random per process, so
    /// receivers notice a restart even though sequence numbers start over).
    pub fn new(node_id: NodeId, instance_id: u64) -> Self {
        BatchEncoder {
            buf: BytesMut::new(),
            keyring: None,
            node_id,
            instance_id,
            base_time_us: 0,
            count: 0,
            open: false,
        }
    }

    /// Signs every batch with `keyring`'s first key (authenticated mode, `[cluster] key`); `None` leaves batches
    /// unsigned. The keys were derived once when the keyring was built, so signing costs one HMAC per batch.
    pub fn with_keyring(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// Bytes [`finish`](Self::finish) appends to the batch: the MAC trailer when signing.
    #[inline]
    fn trailer_len(&self) -> usize {
        if self.keyring.is_some() {
            MAC_LEN
        } else {
            0
        }
    }

    /// Starts a new batch whose first record gets sequence number `first_seq` and whose record times are stored
    /// relative to `base_time_us` (Unix microseconds, normally the first record's time). Discards any unfinished batch.
    pub fn begin(&mut self, first_seq: u64, base_time_us: u64) {
        self.buf.clear();
        self.buf.reserve(HEADER_LEN);
        self.buf.put_u8(VERSION);
        self.buf.put_u8(if self.keyring.is_some() { FLAG_MAC } else { 0 });
        self.buf.put_u16(self.node_id.get());
        self.buf.put_u64(self.instance_id);
        self.buf.put_u64(first_seq);
        self.buf.put_u64(base_time_us);
        self.buf.put_u32(0);
        self.base_time_us = base_time_us;
        self.count = 0;
        self.open = true;
    }

    /// Appends an event that originated at `time_us` (Unix microseconds; times before the batch's base are stored as
    /// the base). If no batch was begun, begins one with `first_seq` 0 and this time as base.
    #[inline]
    pub fn push_event(&mut self, event: &Event, time_us: u64) {
        self.push(RecordRef::Event(event), time_us);
    }

    /// Appends an event unless that would make the batch longer than `max_len` bytes; returns whether it was
    /// appended. An empty batch always takes the event (the caller checked its size against `max_len` when it
    /// accepted it). Cheaper than computing [`encoded_len`](super::encoded_len) before every push: the record is
    /// written once and only taken back in the rare case that it does not fit.
    pub fn push_event_within(&mut self, event: &Event, time_us: u64, max_len: usize) -> bool {
        let (len, count) = (self.buf.len(), self.count);
        self.push(RecordRef::Event(event), time_us);
        if self.buf.len() + self.trailer_len() > max_len && count > 0 {
            self.buf.truncate(len);
            self.count = count;
            return false;
        }
        true
    }

    /// Appends a control record (membership traffic), like [`push_event`](Self::push_event).
    pub fn push_control(&mut self, control: &Control, time_us: u64) {
        self.push(RecordRef::Control(control), time_us);
    }

    #[inline]
    fn push(&mut self, record: RecordRef<'_>, time_us: u64) {
        if !self.open {
            self.begin(0, time_us);
        }
        let tag = u64::from(record.tag());
        let dt = time_us.saturating_sub(self.base_time_us);
        let body_len = record.body_len();
        let total = varint::len(tag) + varint::len(dt) + varint::len(body_len as u64) + body_len;
        let start = self.buf.len();
        if total <= SMALL_RECORD {
            // A constant-size zero fill is a few vector stores; then bytes are written without capacity checks.
            self.buf.extend_from_slice(&[0; SMALL_RECORD]);
            let written = match self.buf.get_mut(start..) {
                Some(window) => {
                    let mut window = Window::new(window);
                    write_record(&mut window, tag, dt, body_len, record);
                    window.len()
                }
                None => 0,
            };
            self.buf.truncate(start + written);
        } else {
            self.buf.reserve(total);
            write_record(&mut self.buf, tag, dt, body_len, record);
        }
        self.count = self.count.wrapping_add(1);
    }

    /// Appends a raw record, for tests that need what the encoder never writes (unknown tags, corrupt bodies).
    #[cfg(test)]
    pub(crate) fn push_raw(&mut self, tag: u64, time_us: u64, body: &[u8]) {
        if !self.open {
            self.begin(0, time_us);
        }
        varint::write(&mut self.buf, tag);
        varint::write(&mut self.buf, time_us.saturating_sub(self.base_time_us));
        varint::write(&mut self.buf, body.len() as u64);
        self.buf.extend_from_slice(body);
        self.count = self.count.wrapping_add(1);
    }

    /// Bytes of the batch so far, header and (when signing) MAC trailer included, 0 before [`begin`](Self::begin);
    /// compared with the server's `max_payload` to decide when to flush.
    pub fn len(&self) -> usize {
        if self.buf.is_empty() {
            0
        } else {
            self.buf.len() + self.trailer_len()
        }
    }

    /// True while the batch holds no record, so there is nothing worth sending.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many records the batch holds, so the caller can advance its sequence number by that much.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Completes the batch (patches its record count; when signing, appends the MAC over everything before it) and
    /// returns its bytes, ready to publish. The encoder is then ready for the next [`begin`](Self::begin). Finishing
    /// without `begin` returns an empty batch with base 0.
    pub fn finish(&mut self) -> Bytes {
        if !self.open {
            self.begin(0, 0);
        }
        if let Some(slot) = self.buf.get_mut(COUNT_OFFSET..HEADER_LEN) {
            slot.copy_from_slice(&self.count.to_be_bytes());
        }
        if let Some(keyring) = &self.keyring {
            let mac = keyring.sign(&self.buf);
            self.buf.extend_from_slice(&mac);
        }
        self.open = false;
        self.count = 0;
        self.buf.split().freeze()
    }
}

#[inline]
fn write_record<O: Out>(out: &mut O, tag: u64, dt: u64, body_len: usize, record: RecordRef<'_>) {
    varint::write(out, tag);
    varint::write(out, dt);
    varint::write(out, body_len as u64);
    record.write_body(out);
}

/// How many bytes [`BatchEncoder::push_event`] adds for `event`, at most (the record's time delta is counted as its
/// largest encoding, 10 bytes; everything else is exact). Lets a publisher reject an event that could never fit in the
/// server's `max_payload` before queueing it.
pub fn encoded_len(event: &Event) -> usize {
    let body_len = super::body::event_body_len(event);
    varint::len(u64::from(event_tag(event))) + varint::MAX_LEN + varint::len(body_len as u64) + body_len
}
