//! Unsigned LEB128 exactly as Stalwart's `utils::codec::leb128` writes it, read strictly and without trusting input.
//!
//! Stalwart's reader takes at most 3 bytes for a `u16`, 5 for a `u32` and 10 for a `u64`/`usize` and silently drops
//! bits beyond the type. Ours has the same byte limits and accepts the same non-minimal encodings, but a value with
//! bits beyond its type is an error: agora must never act on a value Stalwart would have read differently from what
//! the sender meant.

use super::error::{DecodeError, DecodeErrorKind};

/// Appends `value` as minimal unsigned LEB128, the way Stalwart's `write_leb128` does for every integer type (the
/// minimal encoding of a value does not depend on the width of its type).
pub(crate) fn write(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a Stalwart string: `LEB128(byte length)` then the UTF-8 bytes.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    write(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A forward-only cursor over untrusted bytes that knows its offset, so every error says where it happened. Every
/// read is bounds-checked; lengths and counts are checked against what remains before anything is allocated.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    /// The whole input, so offsets are absolute.
    bytes: &'a [u8],
    /// The offset of the next unread byte, `<= bytes.len()`.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// The offset of the next unread byte.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Whether the input is used up.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// One raw byte (an event tag, a cache marker).
    pub(crate) fn byte(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let byte = *self.bytes.get(self.pos).ok_or(DecodeError {
            offset: self.pos,
            kind: DecodeErrorKind::Truncated { field },
        })?;
        self.pos += 1;
        Ok(byte)
    }

    /// An unsigned LEB128 of a type `bits` wide, at most `max_len` bytes (`ceil(bits / 7)`, as Stalwart's reader).
    fn uint(&mut self, bits: usize, max_len: usize, field: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        let fail = |kind| DecodeError { offset: start, kind };
        let mut value = 0u64;
        for i in 0..max_len {
            let byte = *self
                .bytes
                .get(start + i)
                .ok_or(fail(DecodeErrorKind::Truncated { field }))?;
            let shift = 7 * i;
            let payload = u64::from(byte & 0x7f);
            // The last group of a type holds fewer than 7 bits; Stalwart drops the rest, we refuse them.
            let room = bits.saturating_sub(shift);
            if room < 7 && payload >> room != 0 {
                return Err(fail(DecodeErrorKind::TooManyBits { field }));
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                self.pos = start + i + 1;
                return Ok(value);
            }
        }
        Err(fail(DecodeErrorKind::Overlong { field }))
    }

    /// A `u16` (at most 3 bytes).
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        // 16 bits checked above, so the conversion cannot fail; `unwrap_or` keeps the no-panic rule visible.
        self.uint(16, 3, field).map(|v| u16::try_from(v).unwrap_or(u16::MAX))
    }

    /// A `u32` (at most 5 bytes).
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.uint(32, 5, field).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
    }

    /// A `u64` (at most 10 bytes).
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.uint(64, 10, field)
    }

    /// A Stalwart string. The declared length is checked against what remains before anything is copied, and the
    /// bytes are validated as UTF-8 in place, so a hostile length costs nothing.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let at = self.pos;
        // Stalwart writes the length as a usize: 10 bytes on the 64-bit targets it runs on, the same as a u64.
        let declared = self.u64(field)?;
        let remaining = self.remaining();
        let slice = usize::try_from(declared)
            .ok()
            .and_then(|len| self.bytes.get(self.pos..self.pos.checked_add(len)?))
            .ok_or(DecodeError {
                offset: at,
                kind: DecodeErrorKind::LengthBeyondInput {
                    field,
                    declared,
                    remaining,
                },
            })?;
        let text = std::str::from_utf8(slice).map_err(|_| DecodeError {
            offset: self.pos,
            kind: DecodeErrorKind::InvalidUtf8 { field },
        })?;
        self.pos += slice.len();
        Ok(text.to_owned())
    }

    /// A vector's item count (a usize), refused when `min_item_len`-byte items could not all fit in what remains: the
    /// result is safe to pass to `Vec::with_capacity`.
    pub(crate) fn count(&mut self, field: &'static str, min_item_len: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let declared = self.u64(field)?;
        let remaining = self.remaining();
        usize::try_from(declared)
            .ok()
            .filter(|&count| count <= remaining / min_item_len.max(1))
            .ok_or(DecodeError {
                offset: at,
                kind: DecodeErrorKind::CountBeyondInput {
                    field,
                    declared,
                    remaining,
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T>(
        bytes: &[u8],
        f: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
    ) -> Result<(T, usize), DecodeErrorKind> {
        let mut r = Reader::new(bytes);
        f(&mut r).map(|v| (v, r.offset())).map_err(|e| e.kind)
    }

    #[test]
    fn widths_limits_and_bits() {
        assert_eq!(read(&[0xff, 0xff, 0x03], |r| r.u16("x")), Ok((u16::MAX, 3)));
        assert_eq!(
            read(&[0x80, 0x80, 0x04], |r| r.u16("x")),
            Err(DecodeErrorKind::TooManyBits { field: "x" })
        );
        assert_eq!(
            read(&[0x80, 0x80, 0x80, 0x00], |r| r.u16("x")),
            Err(DecodeErrorKind::Overlong { field: "x" })
        );
        assert_eq!(read(&[0x80, 0x00], |r| r.u16("x")), Ok((0, 2)));
        assert_eq!(
            read(&[0x80, 0x80], |r| r.u16("x")),
            Err(DecodeErrorKind::Truncated { field: "x" })
        );
        assert_eq!(read(&[0xff, 0xff, 0xff, 0xff, 0x0f], |r| r.u32("x")), Ok((u32::MAX, 5)));
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0x1f], |r| r.u32("x")),
            Err(DecodeErrorKind::TooManyBits { field: "x" })
        );
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read(&max, |r| r.u64("x")), Ok((u64::MAX, 10)));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            read(&over, |r| r.u64("x")),
            Err(DecodeErrorKind::TooManyBits { field: "x" })
        );
        let long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            read(&long, |r| r.u64("x")),
            Err(DecodeErrorKind::Overlong { field: "x" })
        );
    }

    #[test]
    fn minimal_writes() {
        for (value, bytes) in [
            (0u64, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            write(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
    }
}
