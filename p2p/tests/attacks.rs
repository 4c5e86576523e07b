//! Attacks from inside over real libp2p: a raw peer admitted with a real
//! token that misbehaves on gossip only, observed through gossipsub's own
//! peer score (`StatusReport::gossip_scores`) rather than the node's strikes;
//! and one that floods requests past its rates.
//! The floods, amplification, invites, forgeries and lies of a member are in
//! `gossip/tests/attacks.rs`, where many nodes and exact bytes are cheap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use libp2p::gossipsub;
use omega_gossip::desired::{Authority, Config as DesiredConfig, DesiredRecord, DesiredState};
use omega_gossip::{Hlc, MeshId};
use omega_identity::Keypair;
use omega_p2p::NodeHandle;

use common::{Setup, attacker, drive, join, now, peer_of, start, token, wait_until};

const WEB: &str = "[brane.web]\nsubstrate = \"habitat\"\nreplicas = 1\n";

/// A genuine, root-signed desired-state update for manifest `name`.
fn genuine_update(root: &Keypair, doc: &mut DesiredState, name: &str, n: u32) -> Vec<u8> {
    let plan = omega_zgraph::load(WEB, name, omega_zgraph::Format::Toml).unwrap();
    let ms = now() * 1000;
    let auth = Authority {
        signer: root,
        mesh_root: root.did(),
        proofs: Vec::new(),
        exp: now() + 3600,
        nonce: n.to_le_bytes().to_vec(),
    };
    let record = DesiredRecord::apply(name, &plan, Hlc::new(ms, n), auth).unwrap();
    doc.apply_local(&record, ms).unwrap()
}

async fn drive_for(a: &mut libp2p::Swarm<common::Attacker>, d: Duration) {
    let _ = tokio::time::timeout(d, drive(a, 1, |_, _| false)).await;
}

async fn has_manifest(node: &NodeHandle, name: &str) -> bool {
    node.view()
        .await
        .is_some_and(|v| v.manifests.iter().any(|m| m.name == name))
}

#[tokio::test]
async fn invalid_gossip_alone_graylists_the_member_and_its_messages_stop_at_the_victim() {
    let root = Keypair::from_seed([3; 32]);
    let token = token(&root);
    // Strikes would ban the member before its score says anything: this
    // test watches gossipsub's defence alone.
    let mut setup = Setup::new(5, &token);
    setup.node.guard.max_strikes = 1_000;
    let (victim, addr) = start(setup).await;
    let mut honest_setup = Setup::new(6, &token);
    honest_setup.peers = vec![addr.clone()];
    let (honest, _) = start(honest_setup).await;
    assert!(
        wait_until(async || victim.status().await.unwrap().node.live_members >= 1).await,
        "the honest node did not join"
    );

    let key = Keypair::from_seed([9; 32]);
    let mut a = attacker(&key);
    let victim_peer = peer_of(5);
    join(&mut a, &key, addr, victim_peer, &token).await;
    let mesh = MeshId::from_root(&root.did());
    let topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/state/1"));
    a.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    // Subscriptions cross and the victim grafts the attacker on a heartbeat.
    drive(&mut a, 3, |_, _| false).await;

    // Control: a valid update from the attacker goes through the victim
    // to the honest node, which the attacker is not connected to.
    let mut doc = DesiredState::new(
        root.did(),
        DesiredConfig {
            client_id: 99,
            ..DesiredConfig::default()
        },
    )
    .unwrap();
    let first = genuine_update(&root, &mut doc, "first", 1);
    a.behaviour_mut()
        .gossipsub
        .publish(topic.clone(), first)
        .unwrap();
    let mut forwarded = false;
    for _ in 0..40 {
        drive(&mut a, 1, |_, _| false).await;
        if has_manifest(&honest, "first").await {
            forwarded = true;
            break;
        }
    }
    assert!(forwarded, "the victim did not forward a valid update");
    let attacker_peer = omega_p2p::keys::libp2p_keypair(&key)
        .public()
        .to_peer_id()
        .to_string();
    let score = |s: &omega_p2p::StatusReport| s.gossip_scores.get(&attacker_peer).copied();
    let before = score(&victim.status().await.unwrap());
    eprintln!("score before: {before:?}");
    assert!(before.is_some_and(|s| s >= 0.0), "{before:?}");

    // Only invalid gossip: three garbage updates, nothing on SWIM.
    for k in 0..3u8 {
        a.behaviour_mut()
            .gossipsub
            .publish(topic.clone(), vec![0xa0 + k; 500])
            .unwrap();
    }
    // One rejection costs -100 and graylists; the next two arrive from a
    // graylisted peer and are dropped uncounted. P4 decays by 0.9 a second,
    // so the peer stays below -80 for one to two seconds: poll closely.
    let mut after = None;
    for _ in 0..100 {
        drive_for(&mut a, Duration::from_millis(100)).await;
        after = score(&victim.status().await.unwrap());
        if after.is_some_and(|s| s < -80.0) {
            break;
        }
    }
    eprintln!("score after three invalid messages: {after:?}");
    assert!(
        after.is_some_and(|s| s < -80.0),
        "not graylisted (-80): {after:?}"
    );
    let s = victim.status().await.unwrap();
    assert!(
        s.node.banned.is_empty(),
        "the strike path banned: {:?}",
        s.node.banned
    );

    // Graylisted: a valid update from it is no longer taken or forwarded.
    let second = genuine_update(&root, &mut doc, "second", 2);
    a.behaviour_mut()
        .gossipsub
        .publish(topic.clone(), second)
        .unwrap();
    drive(&mut a, 4, |_, _| false).await;
    assert!(!has_manifest(&victim, "second").await, "the victim took it");
    assert!(
        !has_manifest(&honest, "second").await,
        "the victim forwarded it"
    );
    assert!(victim.status().await.unwrap().node.live_members >= 1);
}

/// Floods over real QUIC: an admitted member sends far more anti-entropy
/// and join requests than its rates allow. The victim refuses what is over
/// the rate (counted), strikes the flooder once per `flood_strike` refusals
/// and bans it at the transport, while an honest member stays alive in its
/// view and the victim keeps answering its own status.
#[tokio::test]
async fn a_flood_of_requests_is_rate_limited_then_banned_while_the_honest_member_is_served() {
    let root = Keypair::from_seed([4; 32]);
    let token = token(&root);
    let mut setup = Setup::new(5, &token);
    // A ban after 3 strikes of 20 refusals each: 60 refused requests.
    setup.node.guard.flood_strike = 20;
    let (victim, addr) = start(setup).await;
    let mut honest_setup = Setup::new(6, &token);
    honest_setup.peers = vec![addr.clone()];
    let (_honest, _) = start(honest_setup).await;
    assert!(
        wait_until(async || victim.status().await.unwrap().node.live_members >= 1).await,
        "the honest node did not join"
    );

    let key = Keypair::from_seed([10; 32]);
    let mut a = attacker(&key);
    let victim_peer = peer_of(5);
    join(&mut a, &key, addr, victim_peer, &token).await;
    let member = omega_gossip::NodeId::from(key.public()).to_string();

    // Bounded: at most 2,000 requests of each kind, in bursts of 100.
    let mut sent = 0u32;
    let mut banned = false;
    for _ in 0..20 {
        for _ in 0..100 {
            a.behaviour_mut().state.send_request(&victim_peer, vec![0]);
            a.behaviour_mut()
                .join
                .send_request(&victim_peer, vec![0xa1]);
            sent += 2;
        }
        drive_for(&mut a, Duration::from_millis(200)).await;
        let s = victim.status().await.expect("the victim still answers");
        if s.node.banned.contains(&member) {
            banned = true;
            break;
        }
    }
    let s = victim.status().await.expect("the victim still answers");
    eprintln!(
        "flood: {sent} requests sent, {} refused over the rate, banned {:?}",
        s.node.dispatch.rate_limited, s.node.banned
    );
    assert!(banned, "the flooder was not banned: {:?}", s.node.banned);
    assert!(
        s.node.dispatch.rate_limited >= 20,
        "refusals over the rate were not counted: {}",
        s.node.dispatch.rate_limited
    );
    assert!(s.node.live_members >= 1, "the honest member is gone");
    // The honest member stays alive in the victim's view after the ban.
    drive_for(&mut a, Duration::from_secs(2)).await;
    let s = victim.status().await.expect("the victim still answers");
    assert!(s.node.live_members >= 1, "the honest member is gone");
}
