//! LEB128 varints and the byte sinks / sources the encoder and decoder are built on.
//!
//! Hand-written rather than pulled from a crate because almost every value on the wire is a small varint and the
//! single-byte case must be a couple of instructions: it dominates the cost of a `state_change` record.

use bytes::{BufMut, BytesMut};

/// The most bytes a `u64` varint takes.
pub(crate) const MAX_LEN: usize = 10;

/// Bytes the minimal encoding of `v` takes (1..=10), so bodies can be sized before they are written.
#[inline]
pub(crate) const fn len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Zigzag mapping so small negative numbers stay short: 0, -1, 1, -2... become 0, 1, 2, 3...
#[inline]
pub(crate) const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline]
pub(crate) const fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Where the encoder writes: the batch buffer itself, or a stack scratch buffer for small records.
pub(crate) trait Out {
    /// Appends one byte.
    fn put(&mut self, b: u8);
    /// Appends a slice.
    fn put_slice(&mut self, s: &[u8]);
}

impl Out for BytesMut {
    #[inline]
    fn put(&mut self, b: u8) {
        self.put_u8(b);
    }

    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

/// A window of pre-sized, zeroed space at the end of the batch buffer: small records are written here byte by byte
/// and the buffer is then truncated to what was written. Avoids both the per-byte capacity checks of `BytesMut` and a
/// stack scratch buffer (whose byte-wise stores, read back as one wide copy, stall store forwarding).
pub(crate) struct Window<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Window<'a> {
    /// A window over `buf`, empty.
    #[inline]
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Window { buf, len: 0 }
    }

    /// Bytes written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Out for Window<'_> {
    #[inline]
    fn put(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        } else {
            debug_assert!(false, "record window overflow");
        }
    }

    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        let end = self.len + s.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(s);
            self.len = end;
        } else {
            debug_assert!(false, "record window overflow");
        }
    }
}

/// Writes `v` as a minimal LEB128 varint.
#[inline]
pub(crate) fn write<O: Out + ?Sized>(out: &mut O, v: u64) {
    if v < 0x80 {
        out.put(v as u8);
    } else {
        write_multi(out, v);
    }
}

#[inline]
fn write_multi<O: Out + ?Sized>(out: &mut O, mut v: u64) {
    // Byte by byte: a variable-length slice copy would cost a `memcpy` call per varint.
    while v >= 0x80 {
        out.put((v as u8) | 0x80);
        v >>= 7;
    }
    out.put(v as u8);
}

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ends before the last byte (one without the continuation bit).
    Unterminated,
    /// More than 10 bytes, or a value above `u64::MAX`.
    Overflow,
}

/// A forward-only cursor over untrusted bytes. Every read is bounds-checked and fails instead of panicking.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    #[inline]
    pub(crate) const fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Reads every byte left.
    #[inline]
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// True when every byte was read.
    #[inline]
    pub(crate) const fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads one byte.
    #[inline]
    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&b, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(b)
    }

    /// Reads `n` bytes.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    /// Reads a LEB128 varint. Non-minimal encodings (redundant `0x80` groups) are accepted as long as they fit in 10
    /// bytes; the encoder never writes them.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, VarintError> {
        if let Some((&b, tail)) = self.rest.split_first() {
            if b < 0x80 {
                self.rest = tail;
                return Ok(u64::from(b));
            }
        }
        self.varint_multi()
    }

    #[inline]
    fn varint_multi(&mut self) -> Result<u64, VarintError> {
        let mut v = 0u64;
        for (i, &b) in self.rest.iter().take(MAX_LEN).enumerate() {
            if i == MAX_LEN - 1 && b > 1 {
                // The 10th byte holds bit 63 only.
                return Err(VarintError::Overflow);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.rest = self.rest.get(i + 1..).unwrap_or(&[]);
                return Ok(v);
            }
        }
        if self.rest.len() >= MAX_LEN {
            Err(VarintError::Overflow)
        } else {
            Err(VarintError::Unterminated)
        }
    }
}
