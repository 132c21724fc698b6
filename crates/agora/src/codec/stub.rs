//! TEMPORARY stub of the codec API (replaced by the real implementation on merge).
#![allow(missing_docs, dead_code, unused_variables, clippy::new_without_default)]
use super::*;
pub const HEADER_LEN: usize = 32;
pub struct BatchEncoder;
impl BatchEncoder {
    pub fn new(node_id: NodeId, instance_id: u64) -> Self { BatchEncoder }
    pub fn begin(&mut self, first_seq: u64, base_time_us: u64) { unimplemented!() }
    pub fn push_event(&mut self, event: &Event, time_us: u64) { unimplemented!() }
    pub fn push_control(&mut self, control: &Control, time_us: u64) { unimplemented!() }
    pub fn len(&self) -> usize { unimplemented!() }
    pub fn is_empty(&self) -> bool { unimplemented!() }
    pub fn count(&self) -> u32 { unimplemented!() }
    pub fn finish(&mut self) -> Bytes { unimplemented!() }
}
pub fn encoded_len(event: &Event) -> usize { unimplemented!() }
pub fn decode_batch(bytes: &[u8]) -> Result<BatchReader<'_>, DecodeError> { unimplemented!() }
pub struct BatchReader<'a> { b: &'a [u8] }
impl<'a> BatchReader<'a> { pub fn header(&self) -> &BatchHeader { unimplemented!() } }
impl<'a> Iterator for BatchReader<'a> { type Item = Result<DecodedRecord, RecordError>; fn next(&mut self) -> Option<Self::Item> { unimplemented!() } }
pub struct DecodedRecord { pub seq: u64, pub time_us: u64, pub record: Record }
#[derive(Debug, thiserror::Error)] #[error("x")]
pub struct RecordError { pub seq: u64, pub tag: u16, pub kind: RecordErrorKind }
#[derive(Debug)]
pub enum RecordErrorKind { UnknownTag, UnknownValue(&'static str), Corrupt(&'static str), Truncated }
#[derive(Debug, thiserror::Error)] #[error("x")]
pub enum DecodeError { TooShort { len: usize } }
