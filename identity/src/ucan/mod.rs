//! Capability tokens (ACTs): UCAN 1.0 delegations and invocations in signed
//! DAG-CBOR envelopes.
//!
//! Wire format of a token (all DAG-CBOR, canonical):
//!
//! ```text
//! [ signature: bytes(64),
//!   { "h": bytes(34 01 ed 01 ed 01 13 71),      // varsig header: Ed25519, DAG-CBOR
//!     "ucan/dlg@1.0.0": { payload map } } ]    // or "ucan/inv@1.0.0"
//! ```
//!
//! The signature is Ed25519 over the DAG-CBOR bytes of the inner map (the
//! "signature payload"). A token is named by the CIDv1 of its bytes with the
//! `dag-cbor` codec (0x71) and a SHA2-256 multihash (`bafyrei…`).
//!
//! Decoding takes the older tag versions `…@1.0.0-rc.1` as well and remembers the
//! version, so [`Signed::to_bytes`] of a decoded token returns the exact bytes
//! that were decoded. Decoding is strict (canonical DAG-CBOR only, no unknown
//! payload fields), bounded ([`MAX_TOKEN_LEN`]) and never panics.

mod command;
mod payload;

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use cid::Cid;
use ipld_core::ipld::Ipld;
use sha2::Digest as _;

pub use command::{Command, CommandError, MAX_COMMAND_LEN};
pub use payload::{Delegation, Invocation, Payload};

use crate::dagcbor::{self, Decoder};
use crate::keys::{BadSignature, Keypair, SIGNATURE_LEN, Signature};

/// Largest encoded token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The varsig header of Ed25519 signatures over DAG-CBOR payloads, as used by
/// the published UCAN 1.0 vectors.
pub const VARSIG_ED25519_DAGCBOR: [u8; 8] = [0x34, 0x01, 0xed, 0x01, 0xed, 0x01, 0x13, 0x71];

/// Multicodec of DAG-CBOR.
pub const DAG_CBOR_CODEC: u64 = 0x71;
/// Multihash code of SHA2-256.
pub const SHA2_256_CODE: u64 = 0x12;

/// The spec version in a token's tag (`ucan/dlg@<version>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SpecVersion {
    /// `1.0.0` (what this crate signs).
    #[default]
    V1_0_0,
    /// `1.0.0-rc.1` (accepted on input).
    V1_0_0Rc1,
}

impl SpecVersion {
    /// The version text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0_0 => "1.0.0",
            Self::V1_0_0Rc1 => "1.0.0-rc.1",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "1.0.0" => Some(Self::V1_0_0),
            "1.0.0-rc.1" => Some(Self::V1_0_0Rc1),
            _ => None,
        }
    }
}

/// Why bytes are not a valid token of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Larger than [`MAX_TOKEN_LEN`].
    #[error("token is {len} bytes, more than the limit of {MAX_TOKEN_LEN}")]
    TooLarge {
        /// The length found.
        len: usize,
    },
    /// Not canonical DAG-CBOR.
    #[error("token is not canonical DAG-CBOR: {0}")]
    Cbor(String),
    /// The envelope does not have the UCAN shape.
    #[error("token envelope: {0}")]
    Envelope(&'static str),
    /// The varsig header is not Ed25519 over DAG-CBOR.
    #[error(
        "unsupported signature header (varsig) {0:02x?}: only Ed25519 over DAG-CBOR is supported"
    )]
    UnsupportedHeader(Vec<u8>),
    /// The payload tag is for another kind of token.
    #[error("expected a `{expected}` token, found tag `{found}`")]
    WrongKind {
        /// The tag prefix expected.
        expected: &'static str,
        /// The tag found.
        found: String,
    },
    /// The tag's version is unknown.
    #[error("unsupported token version in tag `{0}`")]
    UnsupportedVersion(String),
    /// A required payload field is absent.
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    /// A payload field has the wrong kind or value.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The payload has a field this version does not define.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// The text is not base64.
    #[error("token text is not base64")]
    Base64,
    /// The payload cannot be encoded (NaN float, integer beyond 64 bits).
    #[error("cannot encode the payload: {0}")]
    Unencodable(String),
    /// The signing key is not the payload's issuer.
    #[error("the signing key {key} is not the payload's issuer {iss}")]
    IssuerKeyMismatch {
        /// The signer's DID.
        key: String,
        /// The payload's `iss`.
        iss: String,
    },
}

impl From<dagcbor::CborError> for TokenError {
    fn from(e: dagcbor::CborError) -> Self {
        Self::Cbor(e.to_string())
    }
}

/// A payload with its signature, encoded bytes and CID.
///
/// The payload is immutable once signed; the result of signature verification
/// is cached, so checking the same decoded delegation again is free.
#[derive(Clone)]
pub struct Signed<T> {
    payload: T,
    /// `None` when the envelope's signature is not 64 bytes (never verifies).
    signature: Option<Signature>,
    version: SpecVersion,
    bytes: Vec<u8>,
    signed_range: Range<usize>,
    cid: Cid,
    verified: OnceLock<bool>,
}

impl<T: Payload> Signed<T> {
    /// Signs `payload` with `key`, which must be the payload's issuer.
    pub fn sign(payload: T, key: &Keypair) -> Result<Self, TokenError> {
        if key.did() != *payload.issuer() {
            return Err(TokenError::IssuerKeyMismatch {
                key: key.did().to_string(),
                iss: payload.issuer().to_string(),
            });
        }
        let version = SpecVersion::default();
        let inner = signature_payload(&payload, version)?;
        let signature = key.sign(&inner);
        let out = Self::assemble(payload, signature, version, &inner);
        // The signature was made just now by the issuer's key.
        let _ = out.verified.set(true);
        Ok(out)
    }

    /// Builds a token from a payload and a signature made elsewhere. The
    /// signature is not checked here; see [`Signed::verify_signature`].
    pub fn from_parts(
        payload: T,
        signature: Signature,
        version: SpecVersion,
    ) -> Result<Self, TokenError> {
        let inner = signature_payload(&payload, version)?;
        Ok(Self::assemble(payload, signature, version, &inner))
    }

    fn assemble(payload: T, signature: Signature, version: SpecVersion, inner: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(inner.len() + 70);
        dagcbor::encode_list_head(&mut bytes, 2);
        dagcbor::encode_bytes(&mut bytes, signature.as_bytes());
        let start = bytes.len();
        bytes.extend_from_slice(inner);
        let cid = token_cid(&bytes);
        Self {
            payload,
            signature: Some(signature),
            version,
            signed_range: start..bytes.len(),
            bytes,
            cid,
            verified: OnceLock::new(),
        }
    }

    /// Decodes a token of this kind. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge { len: bytes.len() });
        }
        let mut d = Decoder::new(bytes);
        if d.list_head()? != 2 {
            return Err(TokenError::Envelope(
                "expected a list of [signature, signature payload]",
            ));
        }
        // A signature of the wrong length is a token that does not verify,
        // not a malformed envelope: it decodes, and `verify_signature` fails.
        let sig: Option<[u8; SIGNATURE_LEN]> = d.bytes()?.try_into().ok();
        let start = d.pos();
        if d.map_head()? != 2 {
            return Err(TokenError::Envelope(
                "signature payload must be a map of `h` and one payload tag",
            ));
        }
        if d.key(None)? != "h" {
            return Err(TokenError::Envelope(
                "signature payload lacks the `h` header",
            ));
        }
        let header = d.bytes()?;
        if header != VARSIG_ED25519_DAGCBOR {
            return Err(TokenError::UnsupportedHeader(header.to_vec()));
        }
        let tag = d.key(Some("h"))?;
        let version = match tag.split_once('@') {
            Some((kind, _)) if kind != T::TAG => {
                return Err(TokenError::WrongKind {
                    expected: T::TAG,
                    found: tag.to_owned(),
                });
            }
            Some((_, v)) => SpecVersion::parse(v)
                .ok_or_else(|| TokenError::UnsupportedVersion(tag.to_owned()))?,
            None => {
                return Err(TokenError::WrongKind {
                    expected: T::TAG,
                    found: tag.to_owned(),
                });
            }
        };
        let Ipld::Map(map) = d.value(2)? else {
            return Err(TokenError::Envelope("payload must be a map"));
        };
        let end = d.pos();
        d.finish()?;
        let payload = T::from_map(map)?;
        let verified = OnceLock::new();
        if sig.is_none() {
            let _ = verified.set(false);
        }
        Ok(Self {
            payload,
            signature: sig.map(Signature::from_bytes),
            version,
            bytes: bytes.to_vec(),
            signed_range: start..end,
            cid: token_cid(bytes),
            verified,
        })
    }

    /// Checks the issuer's signature over the signature payload (`verify_strict`).
    /// The result is cached.
    pub fn verify_signature(&self) -> Result<(), BadSignature> {
        let ok = *self.verified.get_or_init(|| {
            let msg = &self.bytes[self.signed_range.clone()];
            self.signature
                .as_ref()
                .is_some_and(|sig| self.payload.issuer().public_key().verify(msg, sig).is_ok())
        });
        if ok { Ok(()) } else { Err(BadSignature) }
    }

    /// [`Signed::verify_signature`] without the process-wide cache: for a
    /// token checked once, such as an invocation. The result is still cached
    /// in this decoded token.
    pub fn verify_signature_once(&self) -> Result<(), BadSignature> {
        let ok = *self.verified.get_or_init(|| {
            let msg = &self.bytes[self.signed_range.clone()];
            self.signature.as_ref().is_some_and(|sig| {
                self.payload
                    .issuer()
                    .public_key()
                    .verify_uncached(msg, sig)
                    .is_ok()
            })
        });
        if ok { Ok(()) } else { Err(BadSignature) }
    }

    /// Decodes standard base64 (padded or not; the URL-safe alphabet is accepted too).
    pub fn from_base64(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN / 3 * 4 + 8 {
            return Err(TokenError::TooLarge {
                len: text.len() / 4 * 3,
            });
        }
        Self::decode(&decode_base64(text)?)
    }
}

/// Decodes token text: standard base64, padded or not; the URL-safe alphabet
/// is accepted too. Refuses text longer than a [`MAX_TOKEN_LEN`] token.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, TokenError> {
    let text = text.trim();
    if text.len() > MAX_TOKEN_LEN / 3 * 4 + 8 {
        return Err(TokenError::TooLarge {
            len: text.len() / 4 * 3,
        });
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or(TokenError::Base64)
}

/// A token of either kind, for tools that take whatever they are given.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyToken {
    /// A `ucan/dlg` token.
    Delegation(Signed<Delegation>),
    /// A `ucan/inv` token.
    Invocation(Signed<Invocation>),
}

impl AnyToken {
    /// Decodes a delegation or an invocation, telling them apart by the
    /// payload tag. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, TokenError> {
        match Signed::<Delegation>::decode(bytes) {
            Ok(d) => Ok(Self::Delegation(d)),
            Err(TokenError::WrongKind { found, .. }) if found.starts_with("ucan/inv@") => {
                Signed::<Invocation>::decode(bytes).map(Self::Invocation)
            }
            Err(TokenError::WrongKind { found, .. }) => Err(TokenError::WrongKind {
                expected: "ucan/dlg or ucan/inv",
                found,
            }),
            Err(e) => Err(e),
        }
    }

    /// The token's CID.
    pub fn cid(&self) -> Cid {
        match self {
            Self::Delegation(d) => d.cid(),
            Self::Invocation(i) => i.cid(),
        }
    }
}

impl<T> Signed<T> {
    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Gives up the envelope and keeps the payload.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The signature; `None` when the token carries a signature that is not
    /// 64 bytes long (such a token decodes, and never verifies).
    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    /// The tag version this token carries.
    pub fn version(&self) -> SpecVersion {
        self.version
    }

    /// The encoded token.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// The encoded token, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes the signature covers (the inner `{h, tag: payload}` map).
    pub fn signature_payload(&self) -> &[u8] {
        &self.bytes[self.signed_range.clone()]
    }

    /// The token's CID: v1, dag-cbor, sha2-256 of [`Signed::as_bytes`].
    pub fn cid(&self) -> Cid {
        self.cid
    }

    /// Standard base64 with padding.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.bytes)
    }
}

impl<T: PartialEq> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T: fmt::Debug> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("cid", &self.cid.to_string())
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

/// The DAG-CBOR bytes of `{ "h": header, "<tag>@<version>": payload }`.
fn signature_payload<T: Payload>(payload: &T, version: SpecVersion) -> Result<Vec<u8>, TokenError> {
    let mut out = Vec::with_capacity(256);
    dagcbor::encode_map_head(&mut out, 2);
    dagcbor::encode_str(&mut out, "h");
    dagcbor::encode_bytes(&mut out, &VARSIG_ED25519_DAGCBOR);
    dagcbor::encode_str(&mut out, &format!("{}@{}", T::TAG, version.as_str()));
    dagcbor::encode_map(&mut out, &payload.to_map())
        .map_err(|e| TokenError::Unencodable(e.to_string()))?;
    Ok(out)
}

/// CIDv1, dag-cbor, sha2-256 of `bytes`.
fn token_cid(bytes: &[u8]) -> Cid {
    let digest = sha2::Sha256::digest(bytes);
    // A 32-byte digest always fits the 64-byte multihash.
    let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256_CODE, &digest)
        .expect("32 bytes fit in a 64-byte multihash");
    Cid::new_v1(DAG_CBOR_CODEC, mh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kp(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    fn dlg() -> Delegation {
        Delegation::new(
            kp(1).did(),
            kp(2).did(),
            Some(kp(1).did()),
            Command::parse("/mesh").unwrap(),
            vec![1, 2, 3],
        )
        .with_exp(1_000)
    }

    #[test]
    fn sign_decode_round_trip() {
        let t = Signed::sign(dlg(), &kp(1)).unwrap();
        let back = Signed::<Delegation>::decode(t.as_bytes()).unwrap();
        assert_eq!(back.payload(), t.payload());
        assert_eq!(back.cid(), t.cid());
        assert!(back.verify_signature().is_ok());
        assert!(t.cid().to_string().starts_with("bafyrei"));
        assert_eq!(
            Signed::<Delegation>::from_base64(&t.to_base64()).unwrap(),
            t
        );
        let url = URL_SAFE_NO_PAD.encode(t.as_bytes());
        assert_eq!(Signed::<Delegation>::from_base64(&url).unwrap(), t);
    }

    #[test]
    fn wrong_key_and_kind() {
        assert!(matches!(
            Signed::sign(dlg(), &kp(2)),
            Err(TokenError::IssuerKeyMismatch { .. })
        ));
        let t = Signed::sign(dlg(), &kp(1)).unwrap();
        assert!(matches!(
            Signed::<Invocation>::decode(t.as_bytes()),
            Err(TokenError::WrongKind { .. })
        ));
    }

    #[test]
    fn field_errors_name_the_field() {
        let t = Signed::sign(dlg(), &kp(1)).unwrap();
        let mut bytes = t.to_bytes();
        // Replace `exp: 1000` (0x19 0x03 0xe8) by the string "abc" (0x63 a b c)... lengths
        // differ, so rebuild through Ipld instead.
        let Ipld::List(mut outer) = dagcbor::decode(&bytes).unwrap() else {
            panic!()
        };
        let Ipld::Map(inner) = &mut outer[1] else {
            panic!()
        };
        let Some(Ipld::Map(p)) = inner.get_mut("ucan/dlg@1.0.0") else {
            panic!()
        };
        p.insert("exp".into(), Ipld::String("soon".into()));
        bytes = dagcbor::to_vec(&Ipld::List(outer)).unwrap();
        let err = Signed::<Delegation>::decode(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "field `exp`: expected integer or null");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Signed::<Delegation>::decode(&bytes);
            let _ = Signed::<Invocation>::decode(&bytes);
        }

        #[test]
        fn random_edits_never_panic(i in 0usize..4096, b in proptest::prelude::any::<u8>()) {
            let t = Signed::sign(dlg(), &kp(1)).unwrap();
            let mut bytes = t.to_bytes();
            let at = i % bytes.len();
            bytes[at] = b;
            if let Ok(d) = Signed::<Delegation>::decode(&bytes) {
                // Whatever decodes re-encodes to exactly the same bytes.
                proptest::prop_assert_eq!(d.to_bytes(), bytes);
                let again = Signed::from_parts(d.payload().clone(), *d.signature().unwrap(), d.version()).unwrap();
                proptest::prop_assert_eq!(again.to_bytes(), d.to_bytes());
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let t = Signed::sign(dlg(), &kp(1)).unwrap();
        let bytes = t.to_bytes();
        for cut in 0..bytes.len() {
            assert!(Signed::<Delegation>::decode(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            let _ = Signed::<Delegation>::decode(&b);
        }
        assert!(matches!(
            Signed::<Delegation>::decode(&vec![0; MAX_TOKEN_LEN + 1]),
            Err(TokenError::TooLarge { .. })
        ));
    }
}
