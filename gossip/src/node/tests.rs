//! The node brain from hand-written input sequences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_identity::Keypair;

use super::*;
use crate::desired::{Authority, DesiredRecord};
use crate::join::{InviteSpec, JoinRequest, JoinResponse};
use crate::record::{Capabilities, Resources};
use crate::time::Unix;

const EPOCH: u64 = 1_800_000_000_000;

fn key(b: u8) -> Keypair {
    Keypair::from_seed([b; 32])
}

fn id(k: &Keypair) -> NodeId {
    NodeId::from(k.public())
}

fn invite(root: &Keypair, substrate: Substrate, seed: u8) -> JoinToken {
    let spec = InviteSpec {
        substrate,
        name_pattern: None,
        expires_at: EPOCH / 1000 + 86_400,
    };
    JoinToken::mint(root, &spec, [seed; 32], vec![seed]).unwrap()
}

fn profile(name: &str) -> Profile {
    Profile {
        name: name.into(),
        substrate: Substrate::Habitat,
        capabilities: Capabilities::STANDARD,
        resources: Resources {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
        },
        addresses: Vec::new(),
    }
}

/// One node under test, its clock, and everything it output.
struct T {
    node: Node,
    now: u64,
    out: Vec<Output>,
    next: u64,
}

impl T {
    fn new(me: &Keypair, token: Option<JoinToken>, config: Config) -> Self {
        let identity = Identity {
            key: me.clone(),
            token,
            profile: profile("me"),
        };
        let node = Node::new(config, identity, &[], [7; 32], Self::at(0)).unwrap();
        let mut t = Self {
            node,
            now: 0,
            out: Vec::new(),
            next: 0,
        };
        t.drain();
        t
    }

    fn at(ms: u64) -> Now {
        Now {
            mono: Mono(ms),
            unix: Unix(EPOCH + ms),
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut v = Vec::new();
        while let Some(o) = self.node.poll_output() {
            v.push(o);
        }
        self.out.extend(v.iter().cloned());
        v
    }

    fn input(&mut self, i: Input) -> Vec<Output> {
        self.node.handle_input(i, Self::at(self.now));
        self.drain()
    }

    fn advance(&mut self, ms: u64) -> Vec<Output> {
        self.now += ms;
        self.input(Input::Timeout)
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn connect(&mut self, peer: NodeId) -> Vec<Output> {
        let conn = ConnId(self.id());
        self.input(Input::ConnectionUp {
            peer,
            conn,
            remote: format!("/ip4/127.0.0.1/udp/{}/quic-v1", 4000 + conn.0),
        })
    }

    /// A join request from `peer` (with `bytes`); returns the response.
    fn join_request(&mut self, peer: NodeId, bytes: Vec<u8>) -> JoinResponse {
        let id = InboundId(self.id());
        let out = self.input(Input::Request {
            from: peer,
            protocol: Protocol::Join,
            id,
            bytes,
        });
        out.iter()
            .find_map(|o| match o {
                Output::Respond { id: r, bytes } if *r == id => {
                    Some(JoinResponse::from_bytes(bytes).unwrap())
                }
                _ => None,
            })
            .expect("a join response")
    }

    /// The node's own join request to `peer`, answered `ok`.
    fn accept_our_join(&mut self, peer: NodeId) -> Vec<Output> {
        let rid = self
            .out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Request {
                    to,
                    protocol: Protocol::Join,
                    id,
                    ..
                } if *to == peer => Some(*id),
                _ => None,
            })
            .expect("our join request");
        let ok = JoinResponse {
            ok: true,
            reason: String::new(),
        };
        self.input(Input::Response {
            from: peer,
            id: rid,
            bytes: ok.to_bytes(),
        })
    }

    /// Connects `peer`, admits it with `token` and gets admitted by it.
    fn admit(&mut self, peer: &Keypair, token: &JoinToken) {
        let pid = id(peer);
        self.connect(pid);
        let nonce = self.id().to_le_bytes().to_vec();
        let req = token
            .invoke(
                &peer.did(),
                "peer",
                Substrate::Habitat,
                (EPOCH + self.now) / 1000,
                nonce,
            )
            .unwrap();
        assert!(self.join_request(pid, req.to_bytes()).ok);
        self.accept_our_join(pid);
        assert!(self.node.peers.is_ready(&pid));
    }

    fn command(&mut self, command: Command) -> (CommandId, Vec<Output>) {
        let id = CommandId(self.id());
        let out = self.input(Input::Command { id, command });
        (id, out)
    }
}

fn has(out: &[Output], f: impl Fn(&Output) -> bool) -> bool {
    out.iter().any(f)
}

fn record(signer: &Keypair, root: &Keypair, name: &str, manifest: &str, at: u64) -> Vec<u8> {
    let plan = omega_zgraph::load(manifest, name, omega_zgraph::Format::Toml).unwrap();
    DesiredRecord::apply(
        name,
        &plan,
        crate::hlc::Hlc::new(EPOCH + at, 0),
        Authority {
            signer,
            mesh_root: root.did(),
            proofs: Vec::new(),
            exp: EPOCH / 1000 + 86_400,
            nonce: vec![at as u8],
        },
    )
    .unwrap()
    .encode()
}

fn revoke(root: &Keypair, target: crate::desired::Revocation, at: u64) -> Vec<u8> {
    DesiredRecord::revoke(
        target,
        crate::hlc::Hlc::new(EPOCH + at, 0),
        Authority {
            signer: root,
            mesh_root: root.did(),
            proofs: Vec::new(),
            exp: EPOCH / 1000 + 86_400,
            nonce: vec![at as u8, 1],
        },
    )
    .unwrap()
    .encode()
}

/// Completes every persist in `out` successfully.
fn persist_all(t: &mut T, out: &[Output]) -> Vec<Output> {
    let mut after = Vec::new();
    for o in out {
        if let Output::Persist { id, .. } = o {
            after.extend(t.input(Input::Persisted {
                id: *id,
                result: Ok(()),
            }));
        }
    }
    after
}

const ONE_BRANE: &str = "[brane.web]\nsubstrate = \"habitat\"\nimage = \"web:1.0\"\n";

#[test]
fn a_valid_join_is_admitted_both_ways() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let me = key(2);
    let mut t = T::new(&me, Some(token.clone()), Config::default());
    let peer = key(3);
    let out = t.connect(id(&peer));
    assert!(
        has(
            &out,
            |o| matches!(o, Output::Request { protocol: Protocol::Join, to, .. } if *to == id(&peer))
        ),
        "the node presents its own token on connect: {out:?}"
    );
    t.admit(&peer, &token);
    assert!(has(
        &t.out,
        |o| matches!(o, Output::Ready { peer: p, .. } if *p == id(&peer))
    ));
    assert!(
        has(&t.out, |o| matches!(
            o,
            Output::Request {
                protocol: Protocol::State,
                ..
            }
        )),
        "a ready peer gets an anti-entropy round"
    );
}

#[test]
fn join_refusals_name_their_reason_and_disconnect_after_a_grace() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let mut t = T::new(&key(2), Some(token.clone()), Config::default());
    let now_s = |t: &T| (EPOCH + t.now) / 1000;
    let other_root = key(9);
    let other = invite(&other_root, Substrate::Habitat, 11);
    let gaia = invite(&root, Substrate::Gaia, 12);
    let cases: Vec<(u8, Vec<u8>, &str)> = vec![
        (20, JoinRequest::default().to_bytes(), "no join token"),
        (21, vec![0xff, 0x00, 0x13], "malformed"),
        (
            22,
            other
                .invoke(&key(22).did(), "x", Substrate::Habitat, now_s(&t), vec![1])
                .unwrap()
                .to_bytes(),
            "mesh",
        ),
        (
            23,
            token
                .invoke(
                    &key(23).did(),
                    "x",
                    Substrate::Habitat,
                    now_s(&t) - 3600,
                    vec![2],
                )
                .unwrap()
                .to_bytes(),
            "expired",
        ),
        (
            24,
            token
                .invoke(&key(99).did(), "x", Substrate::Habitat, now_s(&t), vec![3])
                .unwrap()
                .to_bytes(),
            "presented for node",
        ),
        (
            25,
            token
                .invoke(&key(25).did(), "x", Substrate::Gaia, now_s(&t), vec![4])
                .unwrap()
                .to_bytes(),
            "policy",
        ),
        (
            26,
            gaia.invoke(&key(26).did(), "x", Substrate::Habitat, now_s(&t), vec![5])
                .unwrap()
                .to_bytes(),
            "policy",
        ),
    ];
    for (seed, bytes, why) in cases {
        let peer = id(&key(seed));
        t.connect(peer);
        let r = t.join_request(peer, bytes);
        assert!(!r.ok, "{seed} admitted");
        assert!(
            r.reason.to_lowercase().contains(why),
            "{seed}: {}",
            r.reason
        );
        assert!(
            t.node
                .report()
                .refusals
                .iter()
                .any(|x| x.reason == r.reason)
        );
        let out = t.advance(600);
        assert!(
            has(
                &out,
                |o| matches!(o, Output::Disconnect { peer: p, reason: DisconnectReason::Refused(_) } if *p == peer)
            ),
            "{seed}: not disconnected after the grace: {out:?}"
        );
    }
}

#[test]
fn revoked_nodes_and_tokens_are_refused_and_expelled() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let leaked = invite(&root, Substrate::Habitat, 11);
    // The node is the mesh root's own node here, so it can write revocations.
    let mut t = T::new(&root, None, Config::default());
    let (a, b) = (key(30), key(31));
    t.admit(&a, &token);
    t.admit(&b, &leaked);
    // Revoke the leaked invite: b (admitted with it) is expelled, a stays.
    let (_, out) = t.command(Command::Write(revoke(
        &root,
        crate::desired::Revocation::Token(leaked.delegation.cid()),
        10,
    )));
    assert!(
        has(
            &out,
            |o| matches!(o, Output::Disconnect { peer, reason: DisconnectReason::TokenRevoked } if *peer == id(&b))
        ),
        "{out:?}"
    );
    assert!(t.node.peers.is_ready(&id(&a)));
    // b comes back with the same invite: refused, naming the revocation.
    t.connect(id(&b));
    let req = leaked
        .invoke(
            &b.did(),
            "b",
            Substrate::Habitat,
            (EPOCH + t.now) / 1000,
            vec![8],
        )
        .unwrap();
    let r = t.join_request(id(&b), req.to_bytes());
    assert!(!r.ok && r.reason.contains("revoked"), "{}", r.reason);
    // Revoke node a: disconnected, refused even with a valid invite.
    let (_, out) = t.command(Command::Write(revoke(
        &root,
        crate::desired::Revocation::Node(a.did()),
        11,
    )));
    assert!(has(
        &out,
        |o| matches!(o, Output::Disconnect { peer, reason: DisconnectReason::Revoked } if *peer == id(&a))
    ));
    t.connect(id(&a));
    let req = token
        .invoke(
            &a.did(),
            "a",
            Substrate::Habitat,
            (EPOCH + t.now) / 1000,
            vec![9],
        )
        .unwrap();
    let r = t.join_request(id(&a), req.to_bytes());
    assert!(!r.ok && r.reason.contains("revoked"), "{}", r.reason);
}

#[test]
fn strikes_ban_a_peer_across_reconnects_and_the_ban_expires() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let mut config = Config::default();
    config.guard.ban = 5_000;
    let mut t = T::new(&key(2), Some(token.clone()), config);
    let bad = key(40);
    let bid = id(&bad);
    t.admit(&bad, &token);
    // Two garbage SWIM messages, then the peer reconnects: strikes stay.
    for _ in 0..2 {
        t.input(Input::Swim {
            from: bid,
            bytes: vec![0xee; 40],
        });
    }
    assert!(!has(&t.out, |o| matches!(o, Output::Ban { .. })));
    t.input(Input::ConnectionDown {
        peer: bid,
        conn: ConnId(1),
    });
    t.admit(&bad, &token);
    let out = t.input(Input::Swim {
        from: bid,
        bytes: vec![0xee; 40],
    });
    assert!(
        has(&out, |o| matches!(o, Output::Ban { peer } if *peer == bid)),
        "{out:?}"
    );
    assert!(!t.node.peers.is_ready(&bid));
    assert_eq!(t.node.report().banned, vec![bid.to_string()]);
    // While banned, a new connection is banned again at once.
    let out = t.connect(bid);
    assert!(has(&out, |o| matches!(o, Output::Ban { .. })));
    assert!(!has(&out, |o| matches!(o, Output::Request { .. })));
    // After the ban: unbanned, and admitted again.
    let out = t.advance(5_001);
    assert!(
        has(
            &out,
            |o| matches!(o, Output::Unban { peer } if *peer == bid)
        ),
        "{out:?}"
    );
    t.admit(&bad, &token);
}

#[test]
fn messages_before_admission_are_gated_in_one_place() {
    let root = key(1);
    let mut t = T::new(
        &key(2),
        Some(invite(&root, Substrate::Habitat, 10)),
        Config::default(),
    );
    let stranger = id(&key(50));
    t.connect(stranger);
    t.input(Input::Swim {
        from: stranger,
        bytes: vec![1, 2, 3],
    });
    assert!(has(
        &t.out,
        |o| matches!(o, Output::Report(Report::Strike { peer, .. }) if *peer == stranger)
    ));
    // Anti-entropy before admission: answered empty, no strike.
    let before = t.node.guard.len();
    let out = t.input(Input::Request {
        from: stranger,
        protocol: Protocol::State,
        id: InboundId(900),
        bytes: Vec::new(),
    });
    assert!(has(
        &out,
        |o| matches!(o, Output::Respond { id: InboundId(900), bytes } if bytes.is_empty())
    ));
    assert_eq!(t.node.guard.len(), before);
    // Gossip from it is rejected; addresses it claims are not recorded.
    let out = t.input(Input::Gossip {
        id: GossipRef(1),
        source: stranger,
        author: Some(stranger),
        topic: Topic::State,
        bytes: vec![0; 10],
    });
    assert!(has(&out, |o| matches!(
        o,
        Output::Validate {
            verdict: Verdict::Reject,
            ..
        }
    )));
    t.input(Input::PeerAddresses {
        peer: stranger,
        addrs: vec!["/ip4/10.9.9.9/udp/1/quic-v1".into()],
    });
    assert_eq!(
        t.node.book.sizes().0,
        0,
        "a stranger cannot fill the address book"
    );
    // Without admission within the timeout: disconnected.
    let out = t.advance(10_001);
    assert!(has(
        &out,
        |o| matches!(o, Output::Disconnect { peer, reason: DisconnectReason::AdmissionTimeout } if *peer == stranger)
    ));
}

#[test]
fn persist_comes_before_announce_and_ack() {
    let root = key(1);
    let mut t = T::new(&root, None, Config::default());
    let (cid, out) = t.command(Command::Write(record(&root, &root, "shop", ONE_BRANE, 1)));
    assert!(has(&out, |o| matches!(
        o,
        Output::Persist {
            op: PersistOp::Append(_),
            ..
        }
    )));
    assert!(
        !has(&out, |o| matches!(
            o,
            Output::Publish {
                topic: Topic::State,
                ..
            }
        )),
        "announced before durable"
    );
    assert!(
        !has(&out, |o| matches!(o, Output::Reply { .. })),
        "acknowledged before durable"
    );
    let after = persist_all(&mut t, &out);
    assert!(has(&after, |o| matches!(
        o,
        Output::Publish {
            topic: Topic::State,
            ..
        }
    )));
    assert!(has(
        &after,
        |o| matches!(o, Output::Reply { id, reply: Reply::Written(Ok(())) } if *id == cid)
    ));
    // A failed append: an error, and nothing announced.
    let (cid, out) = t.command(Command::Write(record(&root, &root, "shop", ONE_BRANE, 2)));
    let Some(Output::Persist { id, .. }) = out.iter().find(|o| matches!(o, Output::Persist { .. }))
    else {
        panic!("no persist");
    };
    let after = t.input(Input::Persisted {
        id: *id,
        result: Err("disk full".into()),
    });
    assert!(!has(&after, |o| matches!(
        o,
        Output::Publish {
            topic: Topic::State,
            ..
        }
    )));
    assert!(has(
        &after,
        |o| matches!(o, Output::Reply { id, reply: Reply::Written(Err(WriteFailure::NotDurable(_))) } if *id == cid)
    ));
}

#[test]
fn gossiped_updates_are_forwarded_only_once_durable() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let mut t = T::new(&key(2), Some(token.clone()), Config::default());
    let peer = key(3);
    t.admit(&peer, &token);
    // The update a writer would announce.
    let mut writer =
        crate::desired::DesiredState::new(root.did(), desired::Config::default()).unwrap();
    let rec = DesiredRecord::decode(&record(&root, &root, "shop", ONE_BRANE, 1), 1 << 20).unwrap();
    let update = writer.apply_local(&rec, EPOCH + 10).unwrap();
    let out = t.input(Input::Gossip {
        id: GossipRef(7),
        source: id(&peer),
        author: Some(id(&peer)),
        topic: Topic::State,
        bytes: update,
    });
    assert!(
        !has(&out, |o| matches!(o, Output::Validate { .. })),
        "validated before durable"
    );
    let after = persist_all(&mut t, &out);
    assert!(has(&after, |o| matches!(
        o,
        Output::Validate {
            id: GossipRef(7),
            verdict: Verdict::Accept,
            ..
        }
    )));
    assert_eq!(t.node.view().manifests.len(), 1);
}

#[test]
fn a_failed_start_is_retried_with_doubling_backoff() {
    let root = key(1);
    let mut t = T::new(&root, None, Config::default());
    let (_, out) = t.command(Command::Write(record(&root, &root, "shop", ONE_BRANE, 1)));
    persist_all(&mut t, &out);
    let start = |out: &[Output]| {
        out.iter().find_map(|o| match o {
            Output::Start(s) => Some((s.key.clone(), s.attempt)),
            _ => None,
        })
    };
    let (key1, a1) = start(&t.out).expect("placed here: started");
    let fail = |t: &mut T, attempt| {
        t.input(Input::BraneStarted {
            key: BraneKey::new("shop", "web"),
            attempt,
            result: Err("no image".into()),
        })
    };
    assert_eq!(key1, BraneKey::new("shop", "web"));
    fail(&mut t, a1);
    assert!(matches!(
        t.node.reconciler.state(&key1),
        Some(BraneState::Failed { attempts: 1, .. })
    ));
    assert!(start(&t.advance(1_999)).is_none(), "retried too early");
    let (_, a2) = start(&t.advance(1)).expect("retried after 2 s");
    assert!(a2 > a1);
    fail(&mut t, a2);
    assert!(
        start(&t.advance(3_999)).is_none(),
        "the second wait doubles"
    );
    let (_, a3) = start(&t.advance(1)).expect("retried after 4 s");
    t.input(Input::BraneStarted {
        key: key1.clone(),
        attempt: a3,
        result: Ok(Started::default()),
    });
    assert_eq!(t.node.reconciler.state(&key1), Some(&BraneState::Running));
    // The status says so (and went out on the status topic).
    let status = t.node.statuses.get(&t.node.me).unwrap();
    assert_eq!(status.branes[0].state, BraneState::Running);
    // A late completion of an older attempt is stopped, not adopted.
    let out = t.input(Input::BraneStarted {
        key: key1.clone(),
        attempt: a1,
        result: Ok(Started::default()),
    });
    assert!(has(
        &out,
        |o| matches!(o, Output::Stop { attempt, .. } if *attempt == a1)
    ));
}

#[test]
fn anti_entropy_replies_stay_within_each_askers_byte_budget() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let mut config = Config::default();
    config.guard.state_bytes = Rate {
        per_sec: 1_000,
        burst: 4_000,
    };
    let mut t = T::new(&root, None, config);
    let (_, out) = t.command(Command::Write(record(&root, &root, "shop", ONE_BRANE, 1)));
    persist_all(&mut t, &out);
    let asker = key(60);
    t.admit(&asker, &token);
    let mut sent = 0usize;
    let mut answered = 0;
    for i in 0..20u64 {
        let out = t.input(Input::Request {
            from: id(&asker),
            protocol: Protocol::State,
            id: InboundId(1000 + i),
            bytes: vec![0], // an empty state vector: it lacks everything
        });
        for o in &out {
            if let Output::Respond { bytes, .. } = o {
                sent += bytes.len();
                answered += usize::from(!bytes.is_empty());
            }
        }
    }
    assert!(answered >= 1, "the first diff goes out");
    assert!(
        sent <= 4_000,
        "{sent} bytes sent within one instant, budget 4000"
    );
    assert!(t.node.report().dispatch.replies_deferred > 0);
    // A second later the budget has refilled by 1000 bytes: one more diff
    // (about that size) goes out.
    t.advance(3_000);
    let out = t.input(Input::Request {
        from: id(&asker),
        protocol: Protocol::State,
        id: InboundId(2000),
        bytes: vec![0],
    });
    assert!(has(
        &out,
        |o| matches!(o, Output::Respond { bytes, .. } if !bytes.is_empty())
    ));
}

#[test]
fn image_serving_is_rate_limited_per_peer_and_read_off_the_loop() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let mut config = Config::default();
    config.guard.image_requests = Rate {
        per_sec: 1,
        burst: 2,
    };
    let mut t = T::new(&key(2), Some(token.clone()), config);
    let peer = key(3);
    t.admit(&peer, &token);
    let req = ImageRequest {
        content: omega_identity::ContentId::of(b"img"),
        offset: 0,
    };
    let mut reads = 0;
    let mut refused = 0;
    for i in 0..5 {
        let out = t.input(Input::Request {
            from: id(&peer),
            protocol: Protocol::Image,
            id: InboundId(100 + i),
            bytes: req.to_bytes(),
        });
        for o in &out {
            match o {
                Output::ReadBlob { id, .. } => {
                    reads += 1;
                    let after = t.input(Input::BlobRead {
                        id: *id,
                        result: Ok(Some((3, b"img".to_vec()))),
                    });
                    assert!(has(&after, |o| matches!(o, Output::Respond { .. })));
                }
                Output::Respond { bytes, .. } => {
                    assert!(matches!(
                        ImageResponse::from_bytes(bytes),
                        Ok(ImageResponse::Refused(_))
                    ));
                    refused += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!((reads, refused), (2, 3), "burst 2, then refused");
}

#[test]
fn statuses_of_members_that_leave_the_table_are_forgotten() {
    let root = key(1);
    let token = invite(&root, Substrate::Habitat, 10);
    let mut t = T::new(&key(2), Some(token.clone()), Config::default());
    let peer = key(3);
    t.admit(&peer, &token);
    // Bring the peer into membership with its record.
    t.node.membership.join(&[id(&peer)], t.now).unwrap();
    let signed = crate::record::MemberRecord {
        id: id(&peer),
        mesh: MeshId::from_root(&root.did()),
        incarnation: 1,
        leaving: false,
        profile: profile("p"),
    }
    .sign_own(&peer);
    let flags = crate::message::SyncFlags {
        reply: true,
        join: false,
        last: true,
    };
    let bytes = crate::tests::sync(&[(State::Alive, &signed)], flags);
    t.input(Input::Swim {
        from: id(&peer),
        bytes,
    });
    assert!(t.node.membership.member(&id(&peer)).is_some());
    let status = NodeStatus {
        seq: 5,
        branes: Vec::new(),
    };
    t.input(Input::Gossip {
        id: GossipRef(3),
        source: id(&peer),
        author: Some(id(&peer)),
        topic: Topic::Status,
        bytes: status.to_bytes(),
    });
    assert!(t.node.statuses.get(&id(&peer)).is_some());
    // It stops answering: suspect, then dead, and its status goes.
    for _ in 0..200 {
        t.advance(100);
    }
    assert!(t.node.statuses.get(&id(&peer)).is_none());
    assert!(has(&t.out, |o| matches!(
        o,
        Output::Disconnect {
            reason: DisconnectReason::Dead,
            ..
        }
    )));
    // A late copy of a newer status, still relayed by gossip after its
    // author died, does not bring it back (events would be routed to it).
    let late = NodeStatus {
        seq: 6,
        branes: Vec::new(),
    };
    let relay = key(4);
    t.admit(&relay, &token);
    let out = t.input(Input::Gossip {
        id: GossipRef(4),
        source: id(&relay),
        author: Some(id(&peer)),
        topic: Topic::Status,
        bytes: late.to_bytes(),
    });
    assert!(t.node.statuses.get(&id(&peer)).is_none());
    assert!(has(&out, |o| matches!(
        o,
        Output::Validate {
            verdict: Verdict::Ignore,
            ..
        }
    )));
}

#[test]
fn the_same_inputs_give_the_same_outputs() {
    let run = || {
        let root = key(1);
        let token = invite(&root, Substrate::Habitat, 10);
        let mut t = T::new(&key(2), Some(token.clone()), Config::default());
        t.admit(&key(3), &token);
        t.admit(&key(4), &token);
        for _ in 0..50 {
            t.advance(137);
        }
        format!("{:?}", t.out)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_member_that_refused_us_is_left_alone_for_a_while() {
    let root = key(1);
    let mut t = T::new(
        &key(2),
        Some(invite(&root, Substrate::Habitat, 10)),
        Config::default(),
    );
    let m = id(&key(3));
    t.input(Input::Discovered(vec![Found {
        addr: "/ip4/127.0.0.1/udp/4001/quic-v1".into(),
        peer: Some(m),
    }]));
    assert!(has(
        &t.advance(600),
        |o| matches!(o, Output::Dial { peer: Some(p), .. } if *p == m)
    ));
    t.connect(m);
    let rid = t
        .out
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Request {
                id,
                protocol: Protocol::Join,
                ..
            } => Some(*id),
            _ => None,
        })
        .unwrap();
    let no = JoinResponse {
        ok: false,
        reason: "token is revoked".into(),
    };
    let out = t.input(Input::Response {
        from: m,
        id: rid,
        bytes: no.to_bytes(),
    });
    assert!(has(&out, |o| matches!(
        o,
        Output::Disconnect {
            reason: DisconnectReason::RefusedByPeer(_),
            ..
        }
    )));
    t.input(Input::ConnectionDown {
        peer: m,
        conn: ConnId(1),
    });
    let mut redialed = false;
    for _ in 0..18 {
        redialed |= has(
            &t.advance(500),
            |o| matches!(o, Output::Dial { peer: Some(p), .. } if *p == m),
        );
    }
    assert!(!redialed, "redialed a member that refused us within 9 s");
    let mut later = false;
    for _ in 0..4 {
        later |= has(
            &t.advance(500),
            |o| matches!(o, Output::Dial { peer: Some(p), .. } if *p == m),
        );
    }
    assert!(later, "never tried again");
}
