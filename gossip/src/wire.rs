//! The wire format: a compact, versioned, hand-written binary encoding.
//!
//! Every message starts with the format version ([`WIRE_VERSION`]) and a kind
//! byte. Integers are LEB128 varints (at most 10 bytes), strings are a varint
//! length followed by UTF-8, node ids are 32 raw bytes, signatures 64 raw bytes.
//! The decoder never panics, never reads past the input, refuses trailing bytes,
//! and never allocates more than the input could fill: every count is checked
//! against a limit from [`Limits`](crate::Limits) before anything is reserved.
//!
//! ```text
//! message   = version:u8 kind:u8 body
//! Ping      = kind 1, seq:varint updates
//! Ack       = kind 2, seq:varint updates
//! PingReq   = kind 3, seq:varint target:[32] updates
//! Gossip    = kind 4, updates
//! Sync      = kind 5, flags:u8 (1 = reply, 2 = join, 4 = last page) entries
//! Unknown   = kind 6 (empty: "I do not know you, announce yourself")
//! updates   = count:varint update*
//! update    = 1 record                               (alive: a signed record)
//!           | 2 id:[32] incarnation:varint from:[32] (suspect)
//!           | 3 id:[32] incarnation:varint from:[32] (dead)
//! entries   = count:varint (state:u8 record)*        (state 0 alive, 1 suspect, 2 dead, 3 left)
//! record    = id:[32] mesh:[16] incarnation:varint flags:u8 name:str substrate:u8
//!             capabilities:u8 cpu_millis:varint memory_bytes:varint
//!             address_count:u8 address:str* signature:[64]
//! ```

use crate::id::NodeId;

/// The wire format version this crate speaks.
pub const WIRE_VERSION: u8 = 1;

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of `what`.
    #[error("message truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The message is longer than the configured maximum.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The version byte is not one this crate speaks.
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// An unknown message kind, update tag, state, substrate or flag value.
    #[error("unknown {what} value {value}")]
    UnknownValue {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A varint longer than 10 bytes or overflowing its type.
    #[error("varint overflow in {what}")]
    VarintOverflow {
        /// The field being read.
        what: &'static str,
    },
    /// A string that is not UTF-8 or contains control characters.
    #[error("invalid text in {what}")]
    InvalidText {
        /// The field being read.
        what: &'static str,
    },
    /// A string longer than its limit.
    #[error("{what} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A list with more items than its limit.
    #[error("{what} has {count} items, the limit is {max}")]
    TooMany {
        /// The list.
        what: &'static str,
        /// How many items it claims.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// Bytes left over after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    pub(crate) fn id(&mut self, id: &NodeId) {
        self.bytes(id.as_bytes());
    }
}

/// The encoded length of a varint.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads encoded values from a slice, checking every bound.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn id(&mut self, what: &'static str) -> Result<NodeId, DecodeError> {
        Ok(NodeId::from_bytes(self.array(what)?))
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::VarintOverflow { what });
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow { what })
    }

    pub(crate) fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(what)?).map_err(|_| DecodeError::VarintOverflow { what })
    }

    /// A list count, checked against `max` and against the bytes left (each
    /// item takes at least `min_item` bytes), so nothing is over-reserved.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_item: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.varint(what)?;
        if count > max as u64 {
            return Err(DecodeError::TooMany { what, count, max });
        }
        let count = count as usize;
        if count.saturating_mul(min_item) > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(count)
    }

    pub(crate) fn str(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.varint(what)?;
        if len > max as u64 {
            return Err(DecodeError::TooLong { what, len, max });
        }
        let raw = self.take(len as usize, what)?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidText { what })?;
        if s.chars().any(char::is_control) {
            return Err(DecodeError::InvalidText { what });
        }
        Ok(s.to_owned())
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overflow_is_refused() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::default();
            w.varint(v);
            assert_eq!(w.buf.len(), varint_len(v), "{v}");
            let mut r = Reader::new(&w.buf);
            assert_eq!(r.varint("v").unwrap(), v);
            r.finish().unwrap();
        }
        let mut r = Reader::new(&[0xff; 11]);
        assert!(matches!(
            r.varint("v"),
            Err(DecodeError::VarintOverflow { .. })
        ));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert!(matches!(
            r.varint("v"),
            Err(DecodeError::VarintOverflow { .. })
        ));
    }
}
