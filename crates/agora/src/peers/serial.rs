//! Serial-number arithmetic (RFC 1982) over the senders' u64 sequence numbers, which wrap.

/// Where sequence number `b` stands relative to `a`, in serial-number arithmetic (RFC 1982) over u64: sequence
/// numbers wrap modulo 2^64, so `b` is ahead of `a` when `b - a (mod 2^64)` is below 2^63 and behind it otherwise.
/// A sender would need 2^63 records in flight for this to be ambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distance {
    /// `b == a`.
    Same,
    /// `b` is this many records after `a`.
    Ahead(u64),
    /// `b` is this many records before `a`.
    Behind(u64),
}

/// The serial distance from `a` to `b` (see [`Distance`]).
pub fn serial_distance(a: u64, b: u64) -> Distance {
    let forward = b.wrapping_sub(a);
    if forward == 0 {
        Distance::Same
    } else if forward < 1 << 63 {
        Distance::Ahead(forward)
    } else {
        Distance::Behind(a.wrapping_sub(b))
    }
}
