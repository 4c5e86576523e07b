//! One key, three names: an Omega node's Ed25519 key is its `did:key`, its
//! gossip [`NodeId`] and its libp2p [`PeerId`].

use libp2p::PeerId;
use libp2p::identity::{self, PublicKey as LpPublicKey};
use omega_gossip::NodeId;
use omega_identity::{Did, Keypair};

/// The libp2p keypair for an Omega key (the same Ed25519 secret).
pub fn libp2p_keypair(key: &Keypair) -> identity::Keypair {
    let mut seed = key.seed_bytes();
    // `ed25519_from_bytes` only fails for a slice that is not 32 bytes long.
    identity::Keypair::ed25519_from_bytes(&mut seed).expect("an Ed25519 seed is 32 bytes")
}

/// The libp2p peer id of a node.
pub fn peer_id(node: &NodeId) -> Option<PeerId> {
    let key = identity::ed25519::PublicKey::try_from_bytes(node.as_bytes()).ok()?;
    Some(LpPublicKey::from(key).to_peer_id())
}

/// The gossip node id behind a libp2p peer id, if the peer id inlines an
/// Ed25519 key (every Omega node's does; anything else is not an Omega node).
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    let key = LpPublicKey::try_decode_protobuf(peer_public_key_bytes(peer)?).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    Some(NodeId::from_bytes(ed.to_bytes()))
}

/// The `did:key` behind a libp2p peer id.
pub fn did(peer: &PeerId) -> Option<Did> {
    node_id(peer)?.did().ok()
}

/// An identity-multihash peer id carries the protobuf-encoded public key as
/// its digest; any other hash cannot be turned back into a key.
fn peer_public_key_bytes(peer: &PeerId) -> Option<&[u8]> {
    let mh = peer.as_ref();
    (mh.code() == 0x00).then(|| mh.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_did_and_node_id_come_from_the_same_key() {
        let key = Keypair::from_seed([7; 32]);
        let lp = libp2p_keypair(&key);
        let pid = lp.public().to_peer_id();
        let nid = NodeId::from(key.public());
        assert_eq!(peer_id(&nid), Some(pid));
        assert_eq!(node_id(&pid), Some(nid));
        assert_eq!(did(&pid), Some(key.did()));
    }

    #[test]
    fn a_hashed_peer_id_is_not_a_node() {
        assert_eq!(node_id(&PeerId::random()), None);
    }
}
