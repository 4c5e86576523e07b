//! The whole node brain under a hostile admitted member: a two-node mesh
//! (real keys, real join tokens, admitted both ways) in which node 1 sends
//! node 0 whatever the input says on every protocol and topic — SWIM, join,
//! anti-entropy, image, event requests and gossip on the state and status
//! topics — with virtual time passing between messages. Node 0 must neither
//! panic nor stop serving.
#![no_main]
#[path = "../support.rs"]
mod omega_fuzz_support;
use libfuzzer_sys::fuzz_target;
use omega_gossip::Substrate;
use omega_gossip::node::{Protocol, Topic};
use omega_gossip::testkit::mesh::{MeshConfig, MeshSim};

fuzz_target!(|data: &[u8]| {
    omega_fuzz_support::panics_caught_by_the_code_are_not_crashes();
    let mut sim = MeshSim::new(1, MeshConfig::default());
    sim.add_node("victim", Substrate::Habitat);
    sim.add_node("hostile", Substrate::Habitat);
    assert!(sim.run_until(20_000, MeshSim::all_alive), "the mesh forms");
    // Frames: a kind byte, a length byte, that many bytes.
    let mut rest = data;
    let mut sent = 0;
    while let [kind, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (msg, tail) = tail.split_at(n);
        let msg = msg.to_vec();
        match kind % 7 {
            0 => sim.inject_request(1, 0, Protocol::Swim, msg),
            1 => sim.inject_request(1, 0, Protocol::Join, msg),
            2 => sim.inject_request(1, 0, Protocol::State, msg),
            3 => sim.inject_request(1, 0, Protocol::Image, msg),
            4 => sim.inject_request(1, 0, Protocol::Event, msg),
            5 => sim.inject_gossip(1, Topic::State, msg),
            _ => sim.inject_gossip(1, Topic::Status, msg),
        }
        sim.run_for(50);
        sent += 1;
        if sent == 64 {
            break;
        }
        rest = tail;
    }
    sim.run_for(1_000);
    assert!(sim.node(0).is_some(), "the victim still runs");
});
