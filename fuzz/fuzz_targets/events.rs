//! Event envelopes on the event protocol: a delivery batch, its acks, and
//! the stored form a node reads back from its own disk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_gossip::events::{Acks, Deliver, Stored};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Deliver::from_bytes(data) {
        assert!(Deliver::from_bytes(&d.to_bytes()).is_ok());
    }
    if let Ok(a) = Acks::from_bytes(data) {
        assert!(Acks::from_bytes(&a.to_bytes()).is_ok());
    }
    if let Ok(s) = Stored::from_bytes(data) {
        assert!(Stored::from_bytes(&s.to_bytes()).is_ok());
    }
});
