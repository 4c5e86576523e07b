//! The guest agent's frames (magic, length, JSON) in both directions: what
//! a microVM guest sends the host and what the host sends the agent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_agent::proto::{FrameReader, GuestMsg, HostMsg, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut host = FrameReader::new(data, MAX_FRAME);
    for _ in 0..64 {
        if host.read_msg::<GuestMsg>().is_err() {
            break;
        }
    }
    let mut guest = FrameReader::new(data, MAX_FRAME);
    for _ in 0..64 {
        if guest.read_msg::<HostMsg>().is_err() {
            break;
        }
    }
});
