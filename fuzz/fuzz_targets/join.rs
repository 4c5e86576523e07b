//! The join handshake: a join request (DAG-CBOR with an invocation and a
//! delegation) put to the admitter, a join response, and the join token's
//! text form as `omega node --join` reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_gossip::NodeId;
use omega_gossip::desired::Revocations;
use omega_gossip::join::{Admitter, JoinRequest, JoinResponse, JoinToken};
use omega_identity::Keypair;

fuzz_target!(|data: &[u8]| {
    let root = Keypair::from_seed([9; 32]).did();
    let peer: NodeId = Keypair::from_seed([2; 32]).public().into();
    if let Ok(req) = JoinRequest::from_bytes(data) {
        let mut admitter = Admitter::new(root, 64);
        let _ = admitter.admit(&peer, &req, 1_000, &Revocations::default());
    }
    let _ = JoinResponse::from_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = JoinToken::decode(text);
    }
});
