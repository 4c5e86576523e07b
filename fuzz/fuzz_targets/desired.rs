//! Desired-state updates (yrs update bytes carrying signed records) as
//! gossip and anti-entropy deliver them, anti-entropy state vectors, and
//! records on their own.
#![no_main]
#[path = "../support.rs"]
mod omega_fuzz_support;
use libfuzzer_sys::fuzz_target;
use omega_gossip::desired::{Config, DesiredRecord};
use omega_gossip::{DesiredState, NodeId};
use omega_identity::Keypair;

fuzz_target!(|data: &[u8]| {
    omega_fuzz_support::panics_caught_by_the_code_are_not_crashes();
    let root = Keypair::from_seed([9; 32]).did();
    let from: NodeId = Keypair::from_seed([2; 32]).public().into();
    let Ok(mut state) = DesiredState::new(root, Config::default()) else {
        return;
    };
    let _ = DesiredRecord::decode(data, 256 << 10);
    // A state vector from a peer asking what it lacks.
    let _ = state.diff_since(data);
    let _ = state.has_news_for(data);
    if state.handle_update(from, data, 1_000).is_ok() {
        while state.poll_update().is_some() {}
        let _ = state.manifests().count();
        let _ = state.images().count();
        // What one node holds, another takes.
        let doc = state.encode();
        if let Ok(mut other) = DesiredState::new(
            Keypair::from_seed([9; 32]).did(),
            Config {
                client_id: 2,
                ..Config::default()
            },
        ) {
            let _ = other.handle_update(from, &doc, 1_000);
        }
    }
});
