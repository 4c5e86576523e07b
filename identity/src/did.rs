//! `did:key` identifiers for Ed25519 keys.
//!
//! Text form: `did:key:z` + base58btc(`0xed 0x01` ‖ 32-byte public key), so every
//! Ed25519 `did:key` starts with `did:key:z6Mk`. The multicodec prefix `0xed 0x01`
//! is the unsigned-varint encoding of 0xed (`ed25519-pub`).

use std::fmt;
use std::str::FromStr;

use crate::keys::PublicKey;

const PREFIX: &str = "did:key:";
const MULTICODEC_ED25519: [u8; 2] = [0xed, 0x01];

/// A `did:key` naming an Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did(PublicKey);

impl Did {
    /// The public key this DID names.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }
}

impl From<PublicKey> for Did {
    fn from(key: PublicKey) -> Self {
        Self(key)
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 34];
        raw[..2].copy_from_slice(&MULTICODEC_ED25519);
        raw[2..].copy_from_slice(self.0.as_bytes());
        write!(f, "{PREFIX}z{}", bs58::encode(raw).into_string())
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({self})")
    }
}

/// Why a string is not an Ed25519 `did:key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DidError {
    /// The string does not start with `did:key:`.
    #[error("not a did:key (expected the prefix `did:key:`)")]
    NotDidKey,
    /// The method-specific id is not base58btc multibase (`z…`).
    #[error("bad multibase: expected base58btc starting with `z`")]
    BadMultibase,
    /// The multicodec prefix is not `ed25519-pub` (0xed).
    #[error("wrong multicodec: expected ed25519-pub (0xed 0x01), found {0:02x?}")]
    WrongMulticodec(Vec<u8>),
    /// The key is not 32 bytes long.
    #[error("wrong key length: expected 32 bytes, found {0}")]
    WrongLength(usize),
    /// The 32 bytes are not a valid (non-small-order) Ed25519 point.
    #[error("invalid Ed25519 public key point")]
    InvalidPoint,
}

impl FromStr for Did {
    type Err = DidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(key) = crate::cache::did_key(s) {
            return Ok(Self(PublicKey(key)));
        }
        let did = Self::parse_uncached(s)?;
        crate::cache::remember_did(s, did.0.0);
        Ok(did)
    }
}

impl Did {
    fn parse_uncached(s: &str) -> Result<Self, DidError> {
        let rest = s.strip_prefix(PREFIX).ok_or(DidError::NotDidKey)?;
        let b58 = rest.strip_prefix('z').ok_or(DidError::BadMultibase)?;
        // 34 decoded bytes are at most 47 base58 characters; refuse long input early.
        if b58.len() > 64 {
            return Err(DidError::BadMultibase);
        }
        let raw = bs58::decode(b58)
            .into_vec()
            .map_err(|_| DidError::BadMultibase)?;
        let key = match raw.strip_prefix(&MULTICODEC_ED25519) {
            Some(key) => key,
            None => {
                return Err(DidError::WrongMulticodec(
                    raw.iter().take(2).copied().collect(),
                ));
            }
        };
        let key: &[u8; 32] = key
            .try_into()
            .map_err(|_| DidError::WrongLength(key.len()))?;
        PublicKey::from_bytes(key)
            .map(Did)
            .map_err(|_| DidError::InvalidPoint)
    }
}

serde_as_text!(Did);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn round_trip_and_errors() {
        let did = Keypair::from_seed([1; 32]).did();
        let s = did.to_string();
        assert!(s.starts_with("did:key:z6Mk"), "{s}");
        assert_eq!(s.parse::<Did>().unwrap(), did);
        assert_eq!("did:web:x".parse::<Did>(), Err(DidError::NotDidKey));
        assert_eq!("did:key:f00".parse::<Did>(), Err(DidError::BadMultibase));
        assert_eq!("did:key:z0OIl".parse::<Did>(), Err(DidError::BadMultibase));
        let x25519 = "did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW";
        assert!(matches!(
            x25519.parse::<Did>(),
            Err(DidError::WrongMulticodec(_))
        ));
        let short = format!(
            "did:key:z{}",
            bs58::encode([0xed, 0x01, 1, 2]).into_string()
        );
        assert_eq!(short.parse::<Did>(), Err(DidError::WrongLength(2)));
        let mut weak = vec![0xed, 0x01, 1];
        weak.extend([0u8; 31]);
        let weak = format!("did:key:z{}", bs58::encode(weak).into_string());
        assert_eq!(weak.parse::<Did>(), Err(DidError::InvalidPoint));
    }

    #[test]
    fn serde_as_string() {
        let did = Keypair::from_seed([2; 32]).did();
        let json = serde_json::to_string(&did).unwrap();
        assert_eq!(json, format!("\"{did}\""));
        assert_eq!(serde_json::from_str::<Did>(&json).unwrap(), did);
    }
}
