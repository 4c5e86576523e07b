//! BLAKE3 content identifiers.
//!
//! A [`ContentId`] is the BLAKE3-256 hash of some bytes. Its text form is a CIDv1
//! with the `raw` codec (0x55) and a `blake3` multihash (0x1e, 32 bytes) in
//! base32-lower multibase, so it always starts with `bafkr4i`.

use std::fmt;
use std::str::FromStr;

use cid::Cid;

/// Multicodec of raw bytes.
pub const RAW_CODEC: u64 = 0x55;
/// Multihash code of BLAKE3.
pub const BLAKE3_CODE: u64 = 0x1e;

/// The BLAKE3-256 hash naming a piece of content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId([u8; 32]);

impl ContentId {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps a digest computed elsewhere (for example by a streaming hasher).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The 32-byte digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The CIDv1 (raw, blake3) form.
    pub fn to_cid(&self) -> Cid {
        // A 32-byte digest always fits the 64-byte multihash.
        let mh = cid::multihash::Multihash::<64>::wrap(BLAKE3_CODE, &self.0)
            .expect("32 bytes fit in a 64-byte multihash");
        Cid::new_v1(RAW_CODEC, mh)
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_cid(), f)
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

/// Why a string is not a BLAKE3 content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentIdError {
    /// Not base32-lower multibase (`b…`).
    #[error("bad multibase: a content id is base32-lower and starts with `b`")]
    BadMultibase,
    /// The string is not a CID at all.
    #[error("not a CID: {0}")]
    NotCid(String),
    /// A CIDv0.
    #[error("expected a CIDv1")]
    WrongVersion,
    /// The codec is not `raw`.
    #[error("wrong codec 0x{0:x}: expected raw (0x55)")]
    WrongCodec(u64),
    /// The hash is not BLAKE3.
    #[error("wrong multihash 0x{0:x}: expected blake3 (0x1e)")]
    WrongHash(u64),
    /// The digest is not 32 bytes.
    #[error("wrong digest length {0}: expected 32")]
    WrongLength(usize),
}

impl FromStr for ContentId {
    type Err = ContentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.starts_with('b') || s.len() > 128 {
            return Err(ContentIdError::BadMultibase);
        }
        let cid = Cid::try_from(s).map_err(|e| ContentIdError::NotCid(e.to_string()))?;
        if cid.version() != cid::Version::V1 {
            return Err(ContentIdError::WrongVersion);
        }
        if cid.codec() != RAW_CODEC {
            return Err(ContentIdError::WrongCodec(cid.codec()));
        }
        let mh = cid.hash();
        if mh.code() != BLAKE3_CODE {
            return Err(ContentIdError::WrongHash(mh.code()));
        }
        let digest: [u8; 32] = mh
            .digest()
            .try_into()
            .map_err(|_| ContentIdError::WrongLength(mh.digest().len()))?;
        Ok(Self(digest))
    }
}

serde_as_text!(ContentId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form() {
        let id = ContentId::of(b"hello");
        let s = id.to_string();
        assert!(s.starts_with("bafkr4i"), "{s}");
        assert_eq!(id.as_bytes(), blake3::hash(b"hello").as_bytes());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ContentId>(&json).unwrap(), id);
    }

    #[test]
    fn parse_errors() {
        let sha = "bafyreigyftnzjf4rcu7glp5kfop53vqlopc3zcldauoqdxqlz7t4343gr4";
        assert_eq!(
            sha.parse::<ContentId>(),
            Err(ContentIdError::WrongCodec(0x71))
        );
        assert_eq!(
            "zabc".parse::<ContentId>(),
            Err(ContentIdError::BadMultibase)
        );
        assert!(matches!(
            "bxyz!".parse::<ContentId>(),
            Err(ContentIdError::NotCid(_))
        ));
        let mh = cid::multihash::Multihash::<64>::wrap(0x12, &[0; 32]).unwrap();
        let sha_raw = Cid::new_v1(RAW_CODEC, mh).to_string();
        assert_eq!(
            sha_raw.parse::<ContentId>(),
            Err(ContentIdError::WrongHash(0x12))
        );
        let mh = cid::multihash::Multihash::<64>::wrap(BLAKE3_CODE, &[0; 16]).unwrap();
        let short = Cid::new_v1(RAW_CODEC, mh).to_string();
        assert_eq!(
            short.parse::<ContentId>(),
            Err(ContentIdError::WrongLength(16))
        );
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let id = ContentId::of(&bytes);
            let s = id.to_string();
            prop_assert!(s.starts_with("bafkr4i"));
            prop_assert_eq!(s.parse::<ContentId>().unwrap(), id);
        }
    }
}
