//! Garbage and oversized messages on every protocol, sent by a raw libp2p
//! peer over real QUIC on loopback: the node keeps running, answers its local
//! API, refuses or penalizes the sender, bans it at the transport (its next
//! connection is refused before any protocol sees it), and admits it again
//! once the ban has expired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, request_response};
use omega_gossip::join::JoinResponse;
use omega_identity::Keypair;

use common::{AttackerEvent, Setup, attacker, drive, join, peer_of, start, token};

#[tokio::test]
async fn garbage_from_a_stranger_bans_it_until_the_ban_expires() {
    let root = Keypair::from_seed([1; 32]);
    let token = token(&root);
    let mut setup = Setup::new(5, &token);
    setup.node.guard.ban = 3_000;
    let (node, addr) = start(setup).await;
    let victim = peer_of(5);
    let mut a = attacker(&Keypair::from_seed([7; 32]));
    a.dial(addr.clone()).unwrap();
    assert!(
        drive(&mut a, 10, |_, ev| matches!(
            ev,
            SwarmEvent::ConnectionEstablished { .. }
        ))
        .await
    );

    // An oversized join request and membership messages before admission:
    // each is a strike, the third bans, and the node hangs up.
    a.behaviour_mut()
        .join
        .send_request(&victim, vec![0; 100_000]);
    for _ in 0..4 {
        a.behaviour_mut()
            .swim
            .send_request(&victim, b"garbage".to_vec());
    }
    let closed = drive(&mut a, 10, |s, ev| {
        matches!(ev, SwarmEvent::ConnectionClosed { .. }) && !s.is_connected(&victim)
    })
    .await;
    assert!(closed, "the node did not disconnect the stranger");
    let s = node.status().await.expect("node still running");
    assert_eq!(s.node.banned.len(), 1, "{:?}", s.node.banned);

    // Back at once: the connection is refused at the transport.
    a.dial(addr.clone()).unwrap();
    let refused = drive(&mut a, 10, |s, ev| match ev {
        SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } => {
            !s.is_connected(&victim)
        }
        _ => false,
    })
    .await;
    assert!(refused, "a banned peer got a connection");

    // After the ban: a garbage join request gets a refusal naming the problem.
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    a.dial(addr).unwrap();
    assert!(
        drive(&mut a, 10, |_, ev| matches!(
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
        drive(&mut a, 10, |_, ev| match ev {
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
    let s = node.status().await.expect("node still running");
    assert!(
        s.node
            .refusals
            .iter()
            .any(|r| r.reason.contains("malformed")),
        "{:?}",
        s.node.refusals
    );
    assert_eq!(s.node.live_members, 0);
}

#[tokio::test]
async fn garbage_from_an_admitted_member_gets_it_banned() {
    let root = Keypair::from_seed([2; 32]);
    let token = token(&root);
    let (node, addr) = start(Setup::new(5, &token)).await;
    let victim = peer_of(5);
    let key = Keypair::from_seed([8; 32]);
    let mut a = attacker(&key);
    join(&mut a, &key, addr, victim, &token).await;

    // Admitted, then: a garbage update on the mesh's state topic (rejected
    // by validation, which costs the sender gossip score and a strike) and
    // garbage membership messages (strikes, then a ban).
    let mesh = omega_gossip::MeshId::from_root(&root.did());
    let topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/state/1"));
    let _ = a.behaviour_mut().gossipsub.subscribe(&topic);
    // Let the subscriptions cross (the node's may have arrived already).
    drive(&mut a, 1, |_, _| false).await;
    let _ = a.behaviour_mut().gossipsub.publish(topic, vec![0xab; 2000]);
    for _ in 0..4 {
        a.behaviour_mut()
            .swim
            .send_request(&victim, vec![0xee; 300]);
    }
    let closed = drive(&mut a, 10, |s, ev| {
        matches!(ev, SwarmEvent::ConnectionClosed { .. }) && !s.is_connected(&victim)
    })
    .await;
    assert!(closed, "the node did not disconnect the misbehaving member");
    let s = node.status().await.expect("node still running");
    assert_eq!(
        s.node.banned,
        vec![omega_gossip::NodeId::from(key.public()).to_string()]
    );
}
