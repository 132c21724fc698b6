//! Batch decoding: a header check, then a lazy iterator over the records.

use std::iter::FusedIterator;

use super::body::decode_body;
use super::error::{DecodeError, RecordError, RecordErrorKind};
use super::varint::{Reader, VarintError};
use super::{BatchHeader, Record, FLAG_MAC, HEADER_LEN, MAC_LEN, VERSION};
use crate::auth::{Keyring, MacError};
use crate::event::NodeId;

/// A successfully decoded record with its place in the sender's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The record's sequence number in the sender's stream (`first_seq` + its index), for gap detection.
    pub seq: u64,
    /// When the record originated on the sender (Unix microseconds).
    pub time_us: u64,
    /// The record itself.
    pub record: Record,
}

/// Checks a batch's header and returns an iterator over its records.
///
/// Only the header is read here; records are decoded one by one as the iterator advances, so a batch with a corrupt
/// record still delivers the others.
pub fn decode_batch(bytes: &[u8]) -> Result<BatchReader<'_>, DecodeError> {
    let too_short = DecodeError::TooShort { len: bytes.len() };
    let (header, rest) = bytes.split_first_chunk::<HEADER_LEN>().ok_or(too_short)?;
    let [version, flags, node_hi, node_lo, ..] = *header;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if flags & !FLAG_MAC != 0 {
        return Err(DecodeError::UnsupportedFlags(flags));
    }
    let node_id = NodeId::new(u16::from_be_bytes([node_hi, node_lo])).ok_or(DecodeError::InvalidNodeId)?;
    let be64 = |at: usize| {
        header
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    let instance_id = be64(4);
    let first_seq = be64(12);
    let base_time_us = be64(20);
    let count = header
        .get(28..32)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes);

    let (records, mac, signed) = if flags & FLAG_MAC != 0 {
        let records_len = rest.len().checked_sub(MAC_LEN).ok_or(too_short)?;
        let (records, mac) = rest.split_at_checked(records_len).ok_or(too_short)?;
        let signed = bytes.get(..HEADER_LEN + records_len).ok_or(too_short)?;
        (records, Some(mac), signed)
    } else {
        (rest, None, bytes)
    };

    Ok(BatchReader {
        header: BatchHeader {
            node_id,
            instance_id,
            first_seq,
            base_time_us,
            count,
        },
        records: Reader::new(records),
        mac,
        signed,
        index: 0,
        done: count == 0,
    })
}

/// The records of one batch, decoded lazily, in order.
///
/// Yields exactly one item per record the header counts (fewer if the batch is truncated: the last item is then a
/// [`RecordErrorKind::Truncated`] error). A record that cannot be decoded is an `Err` carrying its sequence number; the
/// records after it are still read. Bytes after the counted records are ignored.
#[derive(Clone, Debug)]
pub struct BatchReader<'a> {
    header: BatchHeader,
    records: Reader<'a>,
    mac: Option<&'a [u8]>,
    signed: &'a [u8],
    index: u32,
    done: bool,
}

impl<'a> BatchReader<'a> {
    /// The batch header: sender identity, sequence numbers and record count.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The 32-byte MAC trailer, if the header's flag says there is one (authenticated mode verifies it against
    /// [`signed_bytes`](Self::signed_bytes) before trusting the records).
    pub fn mac(&self) -> Option<&'a [u8]> {
        self.mac
    }

    /// The bytes a MAC covers: the whole batch except the MAC trailer (the whole batch when there is none).
    pub fn signed_bytes(&self) -> &'a [u8] {
        self.signed
    }
}

/// Batch verification lives with the batch it reads: authentication sits below the wire format (the encoder signs
/// with a [`Keyring`]), so the keyring's own module cannot name [`BatchReader`] without a dependency loop.
impl Keyring {
    /// Checks a decoded batch's MAC trailer against its signed bytes, before any record is trusted.
    pub fn verify_batch(&self, batch: &BatchReader<'_>) -> Result<(), MacError> {
        let mac = batch.mac().ok_or(MacError::Missing)?;
        self.verify(batch.signed_bytes(), mac)
    }
}

#[inline]
fn error(seq: u64, tag: u16, kind: RecordErrorKind) -> Option<Result<DecodedRecord, RecordError>> {
    Some(Err(RecordError { seq, tag, kind }))
}

impl Iterator for BatchReader<'_> {
    type Item = Result<DecodedRecord, RecordError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let seq = self.header.first_seq.wrapping_add(u64::from(self.index));
        self.index += 1;
        if self.index >= self.header.count {
            self.done = true;
        }

        // Framing: tag, dt, len. A framing error loses sync, so it ends the iteration.
        let framing = |e: VarintError| match e {
            VarintError::Unterminated => RecordErrorKind::Truncated,
            VarintError::Overflow => RecordErrorKind::Corrupt("record header"),
        };
        let tag = match self.records.varint() {
            Ok(tag) => tag,
            Err(e) => {
                self.done = true;
                return error(seq, 0, framing(e));
            }
        };
        let tag16 = u16::try_from(tag).unwrap_or(0);
        let header = self.records.varint().and_then(|dt| Ok((dt, self.records.varint()?)));
        let (dt, len) = match header {
            Ok(v) => v,
            Err(e) => {
                self.done = true;
                return error(seq, tag16, framing(e));
            }
        };
        let Some(body) = usize::try_from(len).ok().and_then(|len| self.records.take(len)) else {
            self.done = true;
            return error(seq, tag16, RecordErrorKind::Truncated);
        };

        if tag16 == 0 {
            return error(seq, 0, RecordErrorKind::Corrupt("tag"));
        }
        match decode_body(tag16, body) {
            Ok(record) => Some(Ok(DecodedRecord {
                seq,
                time_us: self.header.base_time_us.saturating_add(dt),
                record,
            })),
            Err(kind) => error(seq, tag16, kind),
        }
    }
}

impl FusedIterator for BatchReader<'_> {}
