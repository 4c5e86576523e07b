//! A small, strict DAG-CBOR codec over [`Ipld`].
//!
//! Encoding is canonical (shortest integer heads, 64-bit floats, map keys sorted
//! length-first then bytewise). Decoding accepts only canonical input, so
//! `encode(decode(b)) == b` for every accepted `b`. Decoding is bounded: nesting
//! depth is limited by [`MAX_DEPTH`] and no length read from the input is trusted
//! for allocation beyond the bytes that remain.

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;

/// Deepest nesting of lists and maps accepted by [`decode`].
pub(crate) const MAX_DEPTH: usize = 64;

/// Why bytes are not canonical DAG-CBOR, or a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CborError {
    #[error("unexpected end of input at byte {0}")]
    Eof(usize),
    #[error("{what} at byte {at}")]
    Invalid { at: usize, what: &'static str },
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

fn invalid(at: usize, what: &'static str) -> CborError {
    CborError::Invalid { at, what }
}

// ---------------------------------------------------------------- encoding

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Order of map keys in DAG-CBOR: shorter first, then bytewise.
pub(crate) fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Encodes one text string.
pub(crate) fn encode_str(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes one byte string.
pub(crate) fn encode_bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes the head of a map with `n` entries; the caller writes canonical keys.
pub(crate) fn encode_map_head(out: &mut Vec<u8>, n: usize) {
    head(out, 5, n as u64);
}

/// Encodes the head of a list with `n` items.
pub(crate) fn encode_list_head(out: &mut Vec<u8>, n: usize) {
    head(out, 4, n as u64);
}

/// Encodes a map with string keys in canonical order.
pub(crate) fn encode_map(out: &mut Vec<u8>, map: &BTreeMap<String, Ipld>) -> Result<(), CborError> {
    let mut entries: Vec<(&String, &Ipld)> = map.iter().collect();
    entries.sort_by(|a, b| key_order(a.0, b.0));
    encode_map_head(out, entries.len());
    for (k, v) in entries {
        encode_str(out, k);
        encode(out, v)?;
    }
    Ok(())
}

/// Appends the canonical DAG-CBOR encoding of `value` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, value: &Ipld) -> Result<(), CborError> {
    match value {
        Ipld::Null => out.push(0xf6),
        Ipld::Bool(false) => out.push(0xf4),
        Ipld::Bool(true) => out.push(0xf5),
        Ipld::Integer(i) => {
            if *i >= 0 {
                let n = u64::try_from(*i)
                    .map_err(|_| CborError::Unencodable("integer above 2^64-1"))?;
                head(out, 0, n);
            } else {
                let n = u64::try_from(-1 - *i)
                    .map_err(|_| CborError::Unencodable("integer below -2^64"))?;
                head(out, 1, n);
            }
        }
        Ipld::Float(f) => {
            if !f.is_finite() {
                return Err(CborError::Unencodable("NaN or infinite float"));
            }
            out.push(0xfb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Ipld::String(s) => encode_str(out, s),
        Ipld::Bytes(b) => encode_bytes(out, b),
        Ipld::List(items) => {
            encode_list_head(out, items.len());
            for item in items {
                encode(out, item)?;
            }
        }
        Ipld::Map(map) => encode_map(out, map)?,
        Ipld::Link(cid) => encode_cid(out, cid),
    }
    Ok(())
}

/// Encodes a CID as tag 42 over the identity-multibase-prefixed binary CID.
pub(crate) fn encode_cid(out: &mut Vec<u8>, cid: &Cid) {
    let bytes = cid.to_bytes();
    out.extend_from_slice(&[0xd8, 42]);
    head(out, 2, bytes.len() as u64 + 1);
    out.push(0);
    out.extend_from_slice(&bytes);
}

// ---------------------------------------------------------------- decoding

/// A cursor over canonical DAG-CBOR input.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts decoding at the beginning of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The current byte offset.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), CborError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(CborError::Trailing(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or(CborError::Eof(self.buf.len()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a head: (major type, argument) and checks the argument is minimal.
    fn head(&mut self) -> Result<(u8, u8, u64), CborError> {
        let at = self.pos;
        let b = self.byte()?;
        let major = b >> 5;
        let info = b & 0x1f;
        let n = match info {
            0..=23 => u64::from(info),
            24 => {
                let v = u64::from(self.byte()?);
                if v < 24 && major != 7 {
                    return Err(invalid(at, "integer not in shortest form"));
                }
                v
            }
            25 => {
                let v = u64::from(u16::from_be_bytes([self.byte()?, self.byte()?]));
                if v <= u64::from(u8::MAX) {
                    return Err(invalid(at, "integer not in shortest form"));
                }
                v
            }
            26 => {
                let s = self.take(4)?;
                let v = u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
                if v <= u64::from(u16::MAX) {
                    return Err(invalid(at, "integer not in shortest form"));
                }
                v
            }
            27 => {
                let s = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                let v = u64::from_be_bytes(a);
                if v <= u64::from(u32::MAX) && major != 7 {
                    return Err(invalid(at, "integer not in shortest form"));
                }
                v
            }
            _ => return Err(invalid(at, "indefinite length or reserved head")),
        };
        Ok((major, info, n))
    }

    fn len(&self, n: u64) -> Result<usize, CborError> {
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.buf.len() - self.pos)
            .ok_or(CborError::Eof(self.buf.len()))
    }

    /// Reads a text string.
    pub(crate) fn str(&mut self) -> Result<&'a str, CborError> {
        let at = self.pos;
        let (major, _, n) = self.head()?;
        if major != 3 {
            return Err(invalid(at, "expected a text string"));
        }
        let n = self.len(n)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| invalid(at, "text string is not UTF-8"))
    }

    /// Reads a byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let at = self.pos;
        let (major, _, n) = self.head()?;
        if major != 2 {
            return Err(invalid(at, "expected a byte string"));
        }
        let n = self.len(n)?;
        self.take(n)
    }

    /// Reads a list head and returns its length.
    pub(crate) fn list_head(&mut self) -> Result<usize, CborError> {
        let at = self.pos;
        let (major, _, n) = self.head()?;
        if major != 4 {
            return Err(invalid(at, "expected a list"));
        }
        self.len(n)
    }

    /// Reads a map head and returns its number of entries.
    pub(crate) fn map_head(&mut self) -> Result<usize, CborError> {
        let at = self.pos;
        let (major, _, n) = self.head()?;
        if major != 5 {
            return Err(invalid(at, "expected a map"));
        }
        self.len(n)
    }

    /// Reads a map key and checks it sorts strictly after `prev`.
    pub(crate) fn key(&mut self, prev: Option<&str>) -> Result<&'a str, CborError> {
        let at = self.pos;
        let k = self.str()?;
        if let Some(p) = prev
            && key_order(p, k) != std::cmp::Ordering::Less
        {
            return Err(invalid(at, "map keys not in canonical order or duplicated"));
        }
        Ok(k)
    }

    /// Reads any value.
    pub(crate) fn value(&mut self, depth: usize) -> Result<Ipld, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let at = self.pos;
        let (major, info, n) = self.head()?;
        Ok(match major {
            0 => Ipld::Integer(i128::from(n)),
            1 => Ipld::Integer(-1 - i128::from(n)),
            2 => {
                let n = self.len(n)?;
                Ipld::Bytes(self.take(n)?.to_vec())
            }
            3 => {
                let n = self.len(n)?;
                let s = std::str::from_utf8(self.take(n)?)
                    .map_err(|_| invalid(at, "text string is not UTF-8"))?;
                Ipld::String(s.to_owned())
            }
            4 => {
                let n = self.len(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Ipld::List(items)
            }
            5 => {
                let n = self.len(n)?;
                let mut map = BTreeMap::new();
                let mut prev: Option<&str> = None;
                for _ in 0..n {
                    let k = self.key(prev)?;
                    let v = self.value(depth + 1)?;
                    map.insert(k.to_owned(), v);
                    prev = Some(k);
                }
                Ipld::Map(map)
            }
            6 => {
                if n != 42 {
                    return Err(invalid(at, "only tag 42 (CID) is allowed"));
                }
                let b = self.bytes()?;
                match b.split_first() {
                    Some((0, rest)) => Ipld::Link(
                        Cid::try_from(rest)
                            .map_err(|_| invalid(at, "tag 42 holds an invalid CID"))?,
                    ),
                    _ => return Err(invalid(at, "tag 42 bytes lack the 0x00 prefix")),
                }
            }
            _ => match (info, n) {
                (20, _) => Ipld::Bool(false),
                (21, _) => Ipld::Bool(true),
                (22, _) => Ipld::Null,
                (27, bits) => {
                    let f = f64::from_bits(bits);
                    if !f.is_finite() {
                        return Err(invalid(at, "NaN or infinite float"));
                    }
                    Ipld::Float(f)
                }
                _ => return Err(invalid(at, "simple value or float width not allowed")),
            },
        })
    }
}

/// Decodes exactly one canonical DAG-CBOR value filling all of `buf`.
#[cfg(test)]
pub(crate) fn decode(buf: &[u8]) -> Result<Ipld, CborError> {
    let mut d = Decoder::new(buf);
    let v = d.value(0)?;
    d.finish()?;
    Ok(v)
}

/// Encodes `value` to a fresh buffer.
#[cfg(test)]
pub(crate) fn to_vec(value: &Ipld) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::new();
    encode(&mut out, value)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_non_canonical() {
        let mut m = BTreeMap::new();
        m.insert("bb".to_owned(), Ipld::Integer(-500));
        m.insert(
            "c".to_owned(),
            Ipld::List(vec![Ipld::Float(1.5), Ipld::Null]),
        );
        let v = Ipld::Map(m);
        let bytes = to_vec(&v).unwrap();
        assert_eq!(bytes[1], 0x61, "shorter key `c` must come first");
        assert_eq!(decode(&bytes).unwrap(), v);
        // 1 encoded with a one-byte argument is not shortest form.
        assert!(decode(&[0x18, 0x01]).is_err());
        // Indefinite-length list.
        assert!(decode(&[0x9f, 0xff]).is_err());
        // A list claiming 2^32 items must not allocate.
        assert!(decode(&[0x9a, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Too deep.
        assert_eq!(decode(&[0x81; 200]), Err(CborError::TooDeep));
        // Unsorted keys.
        assert!(decode(&[0xa2, 0x62, b'a', b'a', 0x01, 0x61, b'b', 0x02]).is_err());
    }
}
