//! Garbage and oversized messages on every protocol, sent by a raw libp2p
//! peer over real QUIC on loopback: the node keeps running, answers its local
//! commands, refuses or penalizes the sender, and finally disconnects it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, gossipsub, request_response};
use omega_gossip::{Capabilities, Resources, Substrate};
use omega_identity::Keypair;
use omega_p2p::codec::BytesCodec;
use omega_p2p::join::{InviteSpec, JoinRequest, JoinResponse, JoinToken};
use omega_p2p::{Command, NodeConfig, NodeHandle, keys};

#[derive(NetworkBehaviour)]
struct Attacker {
    join: request_response::Behaviour<BytesCodec>,
    swim: request_response::Behaviour<BytesCodec>,
    gossipsub: gossipsub::Behaviour,
}

fn rr(p: &'static str) -> request_response::Behaviour<BytesCodec> {
    request_response::Behaviour::with_codec(
        BytesCodec { max_size: 1 << 20 },
        [(
            StreamProtocol::new(p),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn start_node(root: &Keypair) -> (NodeHandle, Multiaddr, PeerId, JoinToken) {
    let spec = InviteSpec {
        substrate: Substrate::Habitat,
        name_pattern: None,
        expires_at: now() + 3600,
    };
    let token = JoinToken::mint(root, &spec, [9; 32], vec![1]).unwrap();
    let key = Keypair::from_seed([5; 32]);
    let cfg = NodeConfig {
        key,
        token: Some(token.clone()),
        name: "victim".into(),
        substrate: Substrate::Habitat,
        capabilities: Capabilities::STANDARD,
        resources: Resources::default(),
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        providers: Vec::new(),
        discovery_interval: Duration::from_secs(1),
        gossip: None,
        net: Default::default(),
        address_book: Default::default(),
        limits: Default::default(),
        revocations: Vec::new(),
        revocation_log: None,
        registry: None,
        dispatch: Default::default(),
    };
    let (node, _task) = omega_p2p::spawn(cfg).unwrap();
    let mut addr = None;
    for _ in 0..100 {
        let s = node.request(Command::Status).await.unwrap();
        if let Some(a) = s.listen.first() {
            addr = Some(a.parse::<Multiaddr>().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peer = keys::libp2p_keypair(&Keypair::from_seed([5; 32]))
        .public()
        .to_peer_id();
    (node, addr.expect("node listens"), peer, token)
}

fn attacker(key: &Keypair) -> libp2p::Swarm<Attacker> {
    libp2p::SwarmBuilder::with_existing_identity(keys::libp2p_keypair(key))
        .with_tokio()
        .with_quic()
        .with_behaviour(|k| {
            let cfg = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .build()
                .unwrap();
            Attacker {
                join: rr("/omega/join/1"),
                swim: rr("/omega/swim/1"),
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(k.clone()),
                    cfg,
                )
                .unwrap(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Drives the attacker until `done` says stop or 10 s pass; returns whether it stopped.
async fn drive(
    swarm: &mut libp2p::Swarm<Attacker>,
    mut done: impl FnMut(&mut libp2p::Swarm<Attacker>, SwarmEvent<AttackerEvent>) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(ev) = tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
        if done(swarm, ev) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn garbage_from_a_stranger_is_refused_and_it_is_disconnected() {
    let root = Keypair::from_seed([1; 32]);
    let (node, addr, victim, _) = start_node(&root).await;
    let mut a = attacker(&Keypair::from_seed([7; 32]));
    a.dial(addr.clone()).unwrap();
    assert!(
        drive(&mut a, |_, ev| matches!(
            ev,
            SwarmEvent::ConnectionEstablished { .. }
        ))
        .await
    );

    // An oversized join request and membership messages before admission:
    // each is a strike, and the node hangs up.
    a.behaviour_mut()
        .join
        .send_request(&victim, vec![0; 100_000]);
    for _ in 0..4 {
        a.behaviour_mut()
            .swim
            .send_request(&victim, b"garbage".to_vec());
    }
    let closed = drive(&mut a, |s, ev| {
        matches!(ev, SwarmEvent::ConnectionClosed { .. }) && !s.is_connected(&victim)
    })
    .await;
    assert!(closed, "the node did not disconnect the stranger");

    // Back again with a garbage join request: a refusal that names the problem.
    a.dial(addr).unwrap();
    assert!(
        drive(&mut a, |_, ev| matches!(
            ev,
            SwarmEvent::ConnectionEstablished { .. }
        ))
        .await
    );
    a.behaviour_mut()
        .join
        .send_request(&victim, vec![0xff; 100]);
    let mut reason = String::new();
    assert!(
        drive(&mut a, |_, ev| match ev {
            SwarmEvent::Behaviour(AttackerEvent::Join(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                reason = JoinResponse::from_bytes(&response).unwrap().reason;
                true
            }
            _ => false,
        })
        .await
    );
    assert!(reason.contains("malformed"), "{reason}");

    let s = node
        .request(Command::Status)
        .await
        .expect("node still running");
    assert!(
        s.refusals.iter().any(|r| r.reason.contains("malformed")),
        "{:?}",
        s.refusals
    );
    assert_eq!(s.live_members, 0);
}

#[tokio::test]
async fn garbage_from_an_admitted_member_gets_it_disconnected() {
    let root = Keypair::from_seed([2; 32]);
    let (node, addr, victim, token) = start_node(&root).await;
    let key = Keypair::from_seed([8; 32]);
    let mut a = attacker(&key);
    a.dial(addr).unwrap();
    assert!(
        drive(&mut a, |_, ev| matches!(
            ev,
            SwarmEvent::ConnectionEstablished { .. }
        ))
        .await
    );
    let req: JoinRequest = token
        .invoke(&key.did(), "mallory", Substrate::Habitat, now(), vec![3])
        .unwrap();
    a.behaviour_mut().join.send_request(&victim, req.to_bytes());
    let mut ok = false;
    assert!(
        drive(&mut a, |_, ev| match ev {
            SwarmEvent::Behaviour(AttackerEvent::Join(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                ok = JoinResponse::from_bytes(&response).unwrap().ok;
                true
            }
            _ => false,
        })
        .await
    );
    assert!(ok, "a valid token is admitted");

    // Admitted, then: a garbage announcement on the mesh's gossipsub topic
    // (rejected by validation, which costs the sender score) and garbage
    // membership messages (strikes, then a disconnect).
    let mesh = omega_gossip::MeshId::from_root(&root.did());
    let topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/announce/1"));
    let _ = a.behaviour_mut().gossipsub.subscribe(&topic);
    drive(&mut a, |_, ev| {
        matches!(
            ev,
            SwarmEvent::Behaviour(AttackerEvent::Gossipsub(
                gossipsub::Event::Subscribed { .. }
            ))
        )
    })
    .await;
    let _ = a.behaviour_mut().gossipsub.publish(topic, vec![0xab; 2000]);
    for _ in 0..4 {
        a.behaviour_mut()
            .swim
            .send_request(&victim, vec![0xee; 300]);
    }
    let closed = drive(&mut a, |s, ev| {
        matches!(ev, SwarmEvent::ConnectionClosed { .. }) && !s.is_connected(&victim)
    })
    .await;
    assert!(closed, "the node did not disconnect the misbehaving member");
    assert!(
        node.request(Command::Status).await.is_some(),
        "node still running"
    );
}
