//! SWIM membership messages from an admitted peer: pings, acks, indirect
//! probes and piggybacked member records (signed; forgeries must be refused,
//! nothing may panic), then the timers that act on what was learned.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_gossip::{AllowAll, Config, LocalMember, Membership, MeshId, NodeId};
use omega_gossip::{Capabilities, Profile, Resources, Substrate};
use omega_identity::Keypair;

fuzz_target!(|data: &[u8]| {
    let key = Keypair::from_seed([1; 32]);
    let peer: NodeId = Keypair::from_seed([2; 32]).public().into();
    let local = LocalMember {
        keypair: key,
        profile: Profile {
            name: "victim".into(),
            substrate: Substrate::Habitat,
            capabilities: Capabilities::STANDARD,
            resources: Resources {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
            },
            addresses: vec!["/ip4/127.0.0.1/udp/4000/quic-v1".into()],
        },
        incarnation: 0,
    };
    let Ok(mut m) = Membership::new(
        Config::new(MeshId([7; 16])),
        local,
        Box::new(AllowAll),
        [3; 32],
        0,
    ) else {
        return;
    };
    let _ = m.join(&[peer], 0);
    // Frames of the input, each prefixed by a length byte, at 100 ms steps.
    let mut now = 0;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (msg, tail) = tail.split_at(n);
        let msg = if len == 255 { tail } else { msg };
        m.handle_message(peer, msg, now);
        now += 100;
        m.handle_timeout(now);
        while m.poll_transmit().is_some() {}
        while m.poll_event().is_some() {}
        if len == 255 {
            break;
        }
        rest = tail;
    }
});
