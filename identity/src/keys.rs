//! Ed25519 key pairs, public keys and signatures.
//!
//! A [`Keypair`] is made from a 32-byte seed: this crate never touches the OS
//! random number generator, so callers obtain the seed themselves (for example
//! with `getrandom::fill`). Verification always uses `verify_strict`, which
//! rejects malleable signatures and small-order public keys.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::did::Did;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signing key. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// Derives the key pair from a 32-byte seed (the RFC 8032 private key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Generates a key pair from seed bytes produced by `fill`, for example
    /// `Keypair::generate(|b| getrandom::fill(b))`. Errors from `fill` are passed on.
    pub fn generate<E>(fill: impl FnOnce(&mut [u8; 32]) -> Result<(), E>) -> Result<Self, E> {
        let mut seed = [0u8; 32];
        fill(&mut seed)?;
        Ok(Self::from_seed(seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Signs `msg` (deterministic, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }

    /// The `did:key` of the public half.
    pub fn did(&self) -> Did {
        Did::from(self.public())
    }

    /// The 32-byte seed. Treat it as a secret.
    pub fn seed_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    /// Parses 32 compressed point bytes; fails if they are not a valid point or
    /// the point has small order (a "weak" key that `verify_strict` would refuse).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, InvalidPublicKey> {
        if let Some(key) = crate::cache::key(bytes) {
            return Ok(Self(key));
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| InvalidPublicKey)?;
        if key.is_weak() {
            return Err(InvalidPublicKey);
        }
        crate::cache::remember_key(*bytes, key);
        Ok(Self(key))
    }

    /// The 32 compressed point bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Checks `sig` over `msg` with `verify_strict` (a success is
    /// remembered in the process-wide [`cache`](crate::cache)).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), BadSignature> {
        let cached = crate::cache::signature_key(self.as_bytes(), &sig.0, msg);
        if crate::cache::verified(&cached) {
            return Ok(());
        }
        let s = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0.verify_strict(msg, &s).map_err(|_| BadSignature)?;
        crate::cache::remember_verified(cached);
        Ok(())
    }
}

impl PublicKey {
    /// [`PublicKey::verify`] without the process-wide cache, for bytes that
    /// are checked once (an invocation is accepted at most once, so
    /// remembering its signature would only cost time and evict entries that
    /// are used again).
    pub fn verify_uncached(&self, msg: &[u8], sig: &Signature) -> Result<(), BadSignature> {
        let s = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0.verify_strict(msg, &s).map_err(|_| BadSignature)
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({})",
            bs58::encode(self.as_bytes()).into_string()
        )
    }
}

/// 32 bytes that are not a usable Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid Ed25519 public key (not a curve point, or a small-order point)")]
pub struct InvalidPublicKey;

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Ed25519 signature does not verify")]
pub struct BadSignature;

/// A 64-byte Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub(crate) [u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps 64 signature bytes (not checked until verified).
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }

    /// The 64 bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// The 64 bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", bs58::encode(&self.0).into_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject_tampering() {
        let kp = Keypair::from_seed([7; 32]);
        let sig = kp.sign(b"hello");
        assert!(kp.public().verify(b"hello", &sig).is_ok());
        assert!(kp.public().verify(b"hellp", &sig).is_err());
        let mut bad = sig.to_bytes();
        bad[3] ^= 1;
        assert!(
            kp.public()
                .verify(b"hello", &Signature::from_bytes(bad))
                .is_err()
        );
        assert_eq!(Keypair::from_seed(kp.seed_bytes()).public(), kp.public());
        assert!(!format!("{kp:?}").contains(&format!("{:?}", kp.seed_bytes())));
    }

    #[test]
    fn generate_uses_the_fill_function() {
        let kp = Keypair::generate(|b| {
            b.fill(9);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(kp.seed_bytes(), [9; 32]);
        assert!(Keypair::generate(|_| Err("no entropy")).is_err());
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (small order).
        let mut id = [0u8; 32];
        id[0] = 1;
        assert!(PublicKey::from_bytes(&id).is_err());
    }
}
