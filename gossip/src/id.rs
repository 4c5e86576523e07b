//! Identifiers: [`NodeId`] (a member's Ed25519 public key, the key behind its
//! `did:key`) and [`MeshId`] (which mesh a record belongs to).

use std::fmt;

use omega_identity::{Did, PublicKey, keys::InvalidPublicKey};

/// A member's identity: the 32 bytes of its Ed25519 public key.
///
/// This is the same key as the member's `did:key` and its libp2p `PeerId`. The
/// table stores these 32 bytes rather than a decompressed [`PublicKey`] (about
/// 190 bytes) to stay compact; [`NodeId::did`] turns it back into a [`Did`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Wraps 32 public-key bytes (not checked to be a curve point; [`NodeId::did`] checks).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 public-key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The `did:key` for this id, or an error if the bytes are not a valid key.
    pub fn did(&self) -> Result<Did, InvalidPublicKey> {
        PublicKey::from_bytes(&self.0).map(Did::from)
    }
}

impl From<&Did> for NodeId {
    fn from(did: &Did) -> Self {
        Self(*did.public_key().as_bytes())
    }
}

impl From<Did> for NodeId {
    fn from(did: Did) -> Self {
        Self::from(&did)
    }
}

impl From<PublicKey> for NodeId {
    fn from(key: PublicKey) -> Self {
        Self(*key.as_bytes())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.did() {
            Ok(did) => write!(f, "{did}"),
            Err(_) => write!(f, "invalid-key:{}", hex(&self.0)),
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", hex(&self.0[..6]))
    }
}

/// Which mesh a member record belongs to: 16 bytes, by convention the first 16
/// bytes of the BLAKE3 hash of the mesh root's `did:key` ([`MeshId::from_root`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeshId(pub [u8; 16]);

impl MeshId {
    /// The mesh id derived from the mesh root's DID.
    pub fn from_root(root: &Did) -> Self {
        let digest = blake3::hash(root.to_string().as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_bytes()[..16]);
        Self(id)
    }
}

impl fmt::Debug for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshId({})", hex(&self.0))
    }
}

impl fmt::Display for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
