//! Node status messages (what a member says it runs), gossiped on the
//! status topic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_gossip::node::NodeStatus;

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = NodeStatus::from_bytes(data, 16 << 10) {
        let again = NodeStatus::from_bytes(&status.to_bytes(), usize::MAX);
        assert!(
            again.is_ok(),
            "a status re-encodes to something that decodes"
        );
    }
});
