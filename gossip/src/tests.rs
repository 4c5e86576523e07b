//! Unit tests of the state machine with hand-written inputs.

use omega_identity::Keypair;
use proptest::prelude::*;

use crate::message::{self, Head, SyncFlags, Update};
use crate::wire::Writer;
use crate::*;

const MESH: MeshId = MeshId([5; 16]);

fn profile(name: &str) -> Profile {
    Profile {
        name: name.into(),
        substrate: Substrate::Gaia,
        capabilities: Capabilities::STANDARD,
        resources: Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
        },
        addresses: vec![
            "/ip4/127.0.0.1/tcp/4001".into(),
            "/ip4/127.0.0.1/udp/4001/quic-v1".into(),
        ],
    }
}

fn key(i: u32) -> Keypair {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    seed[31] = 0x42;
    Keypair::from_seed(seed)
}

fn record(k: &Keypair, mesh: MeshId, incarnation: u64, p: Profile) -> SignedRecord {
    MemberRecord {
        id: k.public().into(),
        mesh,
        incarnation,
        leaving: false,
        profile: p,
    }
    .sign(k)
    .unwrap()
}

fn machine(admission: Box<dyn Admission + Send>) -> Membership {
    let local = LocalMember {
        keypair: key(0),
        profile: profile("local"),
        incarnation: 0,
    };
    Membership::new(Config::new(MESH), local, admission, [9; 32], 0).unwrap()
}

pub(crate) fn sync(entries: &[(State, &SignedRecord)], flags: SyncFlags) -> Vec<u8> {
    let mut w = Writer::default();
    Head::Sync { flags }.write(&mut w);
    w.varint(entries.len() as u64);
    for (s, r) in entries {
        message::encode_entry(&mut w, *s, r);
    }
    w.buf
}

fn gossip(updates: &[Update]) -> Vec<u8> {
    let enc: Vec<Vec<u8>> = updates.iter().map(Update::encode).collect();
    let refs: Vec<&[u8]> = enc.iter().map(Vec::as_slice).collect();
    message::encode_with_updates(Head::Gossip, &refs)
}

fn events(m: &mut Membership) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// Makes `k` a member of `m` by a join request from it.
fn admit(m: &mut Membership, k: &Keypair) {
    let r = record(k, MESH, 0, profile("peer"));
    let join = SyncFlags {
        join: true,
        ..SyncFlags::default()
    };
    m.handle_message(k.public().into(), &sync(&[(State::Alive, &r)], join), 0);
}

#[test]
fn join_request_adds_member_and_answers_with_full_state() {
    let mut m = machine(Box::new(AllowAll));
    let peer = key(1);
    admit(&mut m, &peer);
    let id: NodeId = peer.public().into();
    assert_eq!(m.member(&id).unwrap().state, State::Alive);
    assert_eq!(events(&mut m), vec![Event::Up { id }]);
    let t = m.poll_transmit().unwrap();
    assert_eq!(t.to, id);
    match message::decode(&t.bytes, &Limits::default()).unwrap() {
        message::Message::Sync { flags, entries } => {
            assert!(flags.reply && flags.last);
            assert_eq!(entries.len(), 2);
        }
        other => panic!("expected a sync reply, got {other:?}"),
    }
}

#[test]
fn forged_foreign_and_unadmitted_records_are_refused() {
    let allowed = key(1);
    let mut m = machine(Box::new(
        [NodeId::from(allowed.public())]
            .into_iter()
            .collect::<AllowSet>(),
    ));
    admit(&mut m, &allowed);
    events(&mut m);
    let from: NodeId = allowed.public().into();

    // Bad signature: a record of key 2 tampered after signing.
    let mut forged = record(&key(2), MESH, 0, profile("x"));
    forged.record.profile.name = "tampered".into();
    m.handle_message(from, &gossip(&[Update::Alive(forged.clone())]), 0);
    // Wrong mesh.
    let foreign = record(&key(3), MeshId([6; 16]), 0, profile("x"));
    m.handle_message(from, &gossip(&[Update::Alive(foreign)]), 0);
    // Valid but not admitted, relayed by a member: refused without penalty.
    let outsider = record(&key(4), MESH, 0, profile("x"));
    m.handle_message(from, &gossip(&[Update::Alive(outsider.clone())]), 0);
    // Not admitted, presenting itself: penalty.
    m.handle_message(
        key(4).public().into(),
        &gossip(&[Update::Alive(outsider)]),
        0,
    );
    // Frontier on habitat.
    let mut p = profile("x");
    p.substrate = Substrate::Habitat;
    p.capabilities = Capabilities::STANDARD.with(Capabilities::FRONTIER);
    m.handle_message(
        from,
        &gossip(&[Update::Alive(record(&key(5), MESH, 0, p))]),
        0,
    );

    let refusals: Vec<(Refusal, bool)> = events(&mut m)
        .into_iter()
        .filter_map(|e| match e {
            Event::Refused {
                reason, penalty, ..
            } => Some((reason, penalty)),
            _ => None,
        })
        .collect();
    let k = |i: u32| NodeId::from(key(i).public());
    assert_eq!(
        refusals,
        vec![
            (Refusal::BadSignature { subject: k(2) }, true),
            (Refusal::WrongMesh { subject: k(3) }, true),
            (Refusal::NotAdmitted { subject: k(4) }, false),
            (Refusal::NotAdmitted { subject: k(4) }, true),
            (
                Refusal::InvalidRecord {
                    subject: k(5),
                    error: RecordError::FrontierOnHabitat
                },
                true
            ),
        ]
    );
    assert_eq!(m.len(), 1);
}

#[test]
fn oversized_fields_and_messages_are_refused_with_penalty() {
    let mut m = machine(Box::new(AllowAll));
    let peer = key(1);
    admit(&mut m, &peer);
    events(&mut m);
    let mut p = profile("x");
    p.name = "n".repeat(65);
    let long = record(&key(2), MESH, 0, p);
    m.handle_message(peer.public().into(), &gossip(&[Update::Alive(long)]), 0);
    m.handle_message(peer.public().into(), &vec![1u8; 64 * 1024 + 1], 0);
    let ev = events(&mut m);
    assert!(
        matches!(
            &ev[..],
            [
                Event::Refused {
                    reason: Refusal::Malformed(DecodeError::TooLong { what: "name", .. }),
                    penalty: true,
                    ..
                },
                Event::Refused {
                    reason: Refusal::Malformed(DecodeError::TooLarge { .. }),
                    penalty: true,
                    ..
                },
            ]
        ),
        "{ev:?}"
    );
}

#[test]
fn unknown_sender_is_asked_to_announce_itself() {
    let mut m = machine(Box::new(AllowAll));
    let stranger: NodeId = key(7).public().into();
    m.handle_message(
        stranger,
        &message::encode_with_updates(Head::Ping { seq: 1 }, &[]),
        0,
    );
    assert!(matches!(
        &events(&mut m)[..],
        [Event::Refused {
            reason: Refusal::UnknownSender,
            penalty: false,
            ..
        }]
    ));
    let t = m.poll_transmit().unwrap();
    assert_eq!(
        message::decode(&t.bytes, &Limits::default()).unwrap(),
        message::Message::Unknown
    );
    assert!(
        m.poll_transmit().is_none(),
        "no ack, no gossip for strangers"
    );
}

#[test]
fn suspicion_about_self_is_refuted_with_a_higher_incarnation() {
    let mut m = machine(Box::new(AllowAll));
    let peer = key(1);
    admit(&mut m, &peer);
    let me = m.id();
    let claim = Update::Suspect {
        id: me,
        incarnation: 0,
        from: peer.public().into(),
    };
    m.handle_message(peer.public().into(), &gossip(&[claim]), 0);
    assert_eq!(m.incarnation(), 1);
    assert!(m.local_record().verify(&Ed25519Verifier));
}

#[test]
fn suspect_then_dead_after_timeout_unless_refuted() {
    let mut m = machine(Box::new(AllowAll));
    let (a, b) = (key(1), key(2));
    admit(&mut m, &a);
    admit(&mut m, &b);
    events(&mut m);
    let bid: NodeId = b.public().into();
    let claim = Update::Suspect {
        id: bid,
        incarnation: 0,
        from: a.public().into(),
    };
    m.handle_message(a.public().into(), &gossip(&[claim]), 100);
    assert_eq!(m.member(&bid).unwrap().state, State::Suspect);
    // Refuted by b's own record at incarnation 1.
    let refute = record(&b, MESH, 1, profile("peer"));
    m.handle_message(a.public().into(), &gossip(&[Update::Alive(refute)]), 200);
    assert_eq!(m.member(&bid).unwrap().state, State::Alive);
    // Suspected again at 1, never refuted: dead once the timeout passes.
    let claim = Update::Suspect {
        id: bid,
        incarnation: 1,
        from: a.public().into(),
    };
    m.handle_message(a.public().into(), &gossip(&[claim]), 300);
    m.handle_timeout(400);
    assert_eq!(
        m.member(&bid).unwrap().state,
        State::Suspect,
        "not before the timeout"
    );
    for t in (300..=5_000).step_by(50) {
        m.handle_timeout(t);
    }
    assert_eq!(m.member(&bid).unwrap().state, State::Dead);
    let ev = events(&mut m);
    assert!(
        ev.contains(&Event::Suspect { id: bid })
            && ev.contains(&Event::Alive { id: bid })
            && ev.contains(&Event::Dead { id: bid }),
        "{ev:?}"
    );
}

#[test]
fn ten_thousand_members_fit_well_under_1kb_each() {
    let mut m = machine(Box::new(AllowAll));
    let seed = key(1);
    admit(&mut m, &seed);
    let records: Vec<SignedRecord> = (2..10_001u32)
        .map(|i| record(&key(i), MESH, 0, profile(&format!("node-{i:05}"))))
        .collect();
    for chunk in records.chunks(200) {
        let entries: Vec<(State, &SignedRecord)> =
            chunk.iter().map(|r| (State::Alive, r)).collect();
        m.handle_message(
            seed.public().into(),
            &sync(&entries, SyncFlags::default()),
            0,
        );
        while m.poll_transmit().is_some() {}
        events(&mut m);
    }
    assert_eq!(m.len(), 10_000);
    let per_member = m.memory_estimate() / m.len();
    eprintln!("memory estimate: {per_member} bytes per member at 10,000 members");
    assert!(per_member < 1024, "{per_member} bytes per member");
}

#[test]
fn every_queue_is_bounded() {
    let mut config = Config::new(MESH);
    config.max_events = 4;
    config.max_transmits = 2;
    let local = LocalMember {
        keypair: key(0),
        profile: profile("local"),
        incarnation: 0,
    };
    let mut m = Membership::new(config, local, Box::new(AllowAll), [1; 32], 0).unwrap();
    for i in 0..20u32 {
        m.handle_message(key(100 + i).public().into(), &[0xff], 0);
        m.handle_message(
            key(100 + i).public().into(),
            &message::encode_with_updates(Head::Ping { seq: i }, &[]),
            0,
        );
    }
    assert_eq!(events(&mut m).len(), 4);
    assert_eq!(std::iter::from_fn(|| m.poll_transmit()).count(), 2);
    let s = m.stats();
    assert_eq!((s.dropped_events, s.dropped_transmits), (36, 18));
}

#[test]
fn config_validation() {
    let mut c = Config::new(MESH);
    assert!(c.validate().is_ok());
    c.probe_timeout = c.probe_interval;
    assert!(c.validate().is_err());
}

proptest! {
    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = message::decode(&bytes, &Limits::default());
    }

    #[test]
    fn machine_never_panics_on_arbitrary_input(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 1..16),
        prefix in 0u8..7,
    ) {
        let mut m = machine(Box::new(AllowAll));
        let peer = key(1);
        admit(&mut m, &peer);
        for (i, mut bytes) in msgs.into_iter().enumerate() {
            // Half the inputs get a valid version and kind so the decoder goes deeper.
            if i % 2 == 0 {
                bytes.splice(0..0, [crate::wire::WIRE_VERSION, prefix]);
            }
            m.handle_message(peer.public().into(), &bytes, i as u64 * 10);
            m.handle_timeout(i as u64 * 10);
            while m.poll_transmit().is_some() {}
            while m.poll_event().is_some() {}
        }
    }

    #[test]
    fn valid_messages_round_trip(seq in any::<u32>(), inc in any::<u64>(), name in "[a-z0-9-]{0,64}") {
        let r = record(&key(3), MESH, inc, profile(&name));
        let u = Update::Alive(r.clone());
        let bytes = message::encode_with_updates(Head::Ping { seq }, &[&u.encode()]);
        let back = message::decode(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(back, message::Message::Ping { seq, updates: vec![u] });
    }
}
