//! Leaderless dispatch on the wire, in-process over real QUIC on loopback:
//! a record written on one node reaches the other (gossip or anti-entropy),
//! images are fetched by content id in chunks, a member announcing an
//! update with a record of another mesh is rejected, logged and banned, and
//! a slow disk delays writes but never membership.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::gossipsub;
use libp2p::swarm::SwarmEvent;
use omega_gossip::desired::{Authority, Config as DesiredConfig, DesiredRecord};
use omega_gossip::node::{ImageRequest, ImageResponse};
use omega_gossip::{DesiredState, NodeId};
use omega_identity::{ContentId, Keypair};
use omega_p2p::host::{BlobSource, DesiredStore};

use common::{AttackerEvent, Setup, attacker, drive, join, now, peer_of, start, token, wait_until};

struct Blobs(Vec<u8>);

impl BlobSource for Blobs {
    fn read_chunk(
        &self,
        content: &ContentId,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, String> {
        if *content != ContentId::of(&self.0) {
            return Ok(None);
        }
        let start = (offset as usize).min(self.0.len());
        let end = (start + max).min(self.0.len());
        Ok(Some((self.0.len() as u64, self.0[start..end].to_vec())))
    }
}

fn plan() -> omega_zgraph::Plan {
    omega_zgraph::load(
        "[brane.hello]\nsubstrate = \"habitat\"\nimage = \"hello:1.0\"\n",
        "hello.toml",
        omega_zgraph::Format::Toml,
    )
    .unwrap()
}

fn apply_record(signer: &Keypair, root: &Keypair, name: &str, hlc: omega_gossip::Hlc) -> Vec<u8> {
    DesiredRecord::apply(
        name,
        &plan(),
        hlc,
        Authority {
            signer,
            mesh_root: root.did(),
            proofs: Vec::new(),
            exp: now() + 600,
            nonce: vec![7],
        },
    )
    .unwrap()
    .encode()
}

#[tokio::test]
async fn records_replicate_and_images_are_fetched_in_chunks() {
    let root = Keypair::from_seed([1; 32]);
    let token = token(&root);
    let image: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let mut sa = Setup::new(11, &token);
    sa.blobs = Some(Arc::new(Blobs(image.clone())));
    let (a, addr_a) = start(sa).await;
    let mut sb = Setup::new(12, &token);
    sb.peers = vec![addr_a];
    let (b, _) = start(sb).await;
    assert!(
        wait_until(async || b.view().await.unwrap().peers.len() == 1).await,
        "b did not connect"
    );

    let hlc = a.tick().await.unwrap();
    let rec = apply_record(&root, &root, "hello", hlc);
    a.write(rec).await.unwrap().unwrap();
    assert!(
        wait_until(async || {
            let v = b.view().await.unwrap();
            v.manifests.iter().any(|m| m.name == "hello")
        })
        .await,
        "the manifest did not reach b"
    );

    // A record of another mesh is refused where it is written, and says why.
    let other = Keypair::from_seed([2; 32]);
    let rec = apply_record(&other, &other, "evil", hlc);
    let err = a.write(rec).await.unwrap().unwrap_err().to_string();
    assert!(err.contains("mesh"), "{err}");
    let v = a.view().await.unwrap();
    assert!(v.refusals.iter().any(|r| r.reason.contains("mesh")));

    // b fetches a's image chunk by chunk and verifies it.
    let content = ContentId::of(&image);
    let peer = b.view().await.unwrap().peers[0];
    let mut got = Vec::new();
    for _ in 0..64 {
        let request = ImageRequest {
            content,
            offset: got.len() as u64,
        };
        let r = b.fetch_chunk(peer, request).await.unwrap().unwrap();
        let ImageResponse::Chunk { total, bytes } = r else {
            panic!("{r:?}");
        };
        assert!(!bytes.is_empty() && bytes.len() <= 256 << 10);
        got.extend(bytes);
        if got.len() as u64 >= total {
            break;
        }
    }
    assert_eq!(ContentId::of(&got), content);
    let missing = ImageRequest {
        content: ContentId::of(b"nothing"),
        offset: 0,
    };
    let r = b.fetch_chunk(peer, missing).await.unwrap().unwrap();
    assert_eq!(r, ImageResponse::NotFound);
}

#[tokio::test]
async fn a_forged_update_is_rejected_and_its_sender_banned() {
    let root = Keypair::from_seed([3; 32]);
    let token = token(&root);
    let (node, addr) = start(Setup::new(21, &token)).await;
    let victim = peer_of(21);
    let key = Keypair::from_seed([22; 32]);
    let mut a = attacker(&key);
    join(&mut a, &key, addr, victim, &token).await;
    let mesh = omega_gossip::MeshId::from_root(&root.did());
    let topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/state/1"));
    a.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    // The attacker is a member (valid join token) of this mesh and the root
    // of its own: it signs a manifest valid there and announces it here.
    let mut own = DesiredState::new(key.did(), DesiredConfig::default()).unwrap();
    let hlc = own.tick(now() * 1000);
    let rec = DesiredRecord::decode(&apply_record(&key, &key, "evil", hlc), 1 << 20).unwrap();
    let update = own.apply_local(&rec, now() * 1000).unwrap();

    let mut sent = 0;
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline && !closed {
        closed = drive(&mut a, 1, |s, ev| {
            matches!(ev, SwarmEvent::ConnectionClosed { .. }) && !s.is_connected(&victim)
        })
        .await;
        // One a second: after a rejection gossipsub graylists the sender
        // and drops what follows unseen until its score decays (a few
        // seconds), so only some of these reach validation and a strike.
        if sent < 20 {
            // A fresh message each time (gossipsub drops duplicates).
            let u = if sent == 0 {
                update.clone()
            } else {
                vec![0xab; 100 + sent]
            };
            if a.behaviour_mut()
                .gossipsub
                .publish(topic.clone(), u)
                .is_ok()
            {
                sent += 1;
            }
        }
    }
    assert!(
        closed,
        "the node did not disconnect the sender of forged updates"
    );
    let v = node.view().await.unwrap();
    assert!(v.manifests.is_empty(), "{:?}", v.manifests);
    assert!(
        v.refusals
            .iter()
            .any(|r| r.reason.contains("mesh") && r.peer == key.did().to_string()),
        "{:?}",
        v.refusals
    );
    let _ = AttackerEvent::Join;
}

/// A store whose every write takes `delay`.
struct SlowStore(Duration);

impl DesiredStore for SlowStore {
    fn append(&mut self, _: &[u8]) -> Result<(), String> {
        std::thread::sleep(self.0);
        Ok(())
    }
    fn compact(&mut self, _: &[u8]) -> Result<(), String> {
        std::thread::sleep(self.0);
        Ok(())
    }
    fn events(&mut self, _: &[omega_gossip::events::EventOps], _: bool) -> Result<(), String> {
        std::thread::sleep(self.0);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test]
async fn a_slow_disk_delays_writes_but_never_membership() {
    let root = Keypair::from_seed([4; 32]);
    let token = token(&root);
    let mut sa = Setup::new(31, &token);
    sa.store = Some(Box::new(SlowStore(Duration::from_millis(1_500))));
    let (a, addr_a) = start(sa).await;
    let mut sb = Setup::new(32, &token);
    sb.peers = vec![addr_a];
    let (b, _) = start(sb).await;
    let a_id = NodeId::from(Keypair::from_seed([31; 32]).public());
    assert!(
        wait_until(async || b
            .peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.member.state == "alive"))
        .await,
        "b never saw a alive"
    );
    // Three writes on a: each waits 1.5 s for a's disk, one after another.
    let started = Instant::now();
    let writes = (0..3u8).map(|i| {
        let a = a.clone();
        let root = root.clone();
        async move {
            let hlc = a.tick().await.unwrap();
            let name = format!("m{i}");
            a.write(apply_record(&root, &root, &name, hlc))
                .await
                .unwrap()
        }
    });
    let watch = async {
        // Meanwhile b probes a every 200 ms; a must answer every probe.
        let mut worst = "alive".to_owned();
        while started.elapsed() < Duration::from_millis(4_400) {
            for p in b.peers().await.unwrap() {
                if p.member.did == a_id.to_string() && p.member.state != "alive" {
                    worst = p.member.state.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    };
    let (results, worst) = tokio::join!(futures::future::join_all(writes), watch);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(4_400),
        "the writes waited for the disk"
    );
    assert_eq!(worst, "alive", "a slow disk made a look {worst} to b");
}
