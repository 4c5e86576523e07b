//! Leaderless dispatch on the wire, in-process over real QUIC on loopback:
//! a record written on one node reaches the other (gossip or anti-entropy),
//! images are fetched by content id in chunks, and a member announcing an
//! update with a record of another mesh is rejected, logged and disconnected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, gossipsub, request_response};
use omega_gossip::desired::{Authority, Config as DesiredConfig, DesiredRecord};
use omega_gossip::{Capabilities, DesiredState, Resources, Substrate};
use omega_identity::{ContentId, Keypair};
use omega_p2p::codec::BytesCodec;
use omega_p2p::discovery::Static;
use omega_p2p::dispatch::{BlobSource, ImageRequest, ImageResponse};
use omega_p2p::join::{InviteSpec, JoinRequest, JoinResponse, JoinToken};
use omega_p2p::{Command, DispatchConfig, NodeConfig, NodeHandle, keys};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

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

fn token(root: &Keypair) -> JoinToken {
    let spec = InviteSpec {
        substrate: Substrate::Habitat,
        name_pattern: None,
        expires_at: now() + 3600,
    };
    JoinToken::mint(root, &spec, [9; 32], vec![1]).unwrap()
}

async fn start(
    seed: u8,
    token: &JoinToken,
    peers: Vec<Multiaddr>,
    blobs: Option<Vec<u8>>,
) -> (NodeHandle, Multiaddr) {
    let key = Keypair::from_seed([seed; 32]);
    let cfg = NodeConfig {
        key,
        token: Some(token.clone()),
        name: format!("n{seed}"),
        substrate: Substrate::Habitat,
        capabilities: Capabilities::STANDARD,
        resources: Resources::default(),
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        providers: vec![Box::new(Static(peers))],
        discovery_interval: Duration::from_millis(200),
        gossip: None,
        net: Default::default(),
        address_book: Default::default(),
        limits: Default::default(),
        revocations: Vec::new(),
        revocation_log: None,
        registry: None,
        dispatch: DispatchConfig {
            desired: DesiredConfig {
                client_id: u64::from(seed),
                ..DesiredConfig::default()
            },
            blobs: blobs.map(|b| Arc::new(Blobs(b)) as Arc<dyn BlobSource>),
            ..DispatchConfig::default()
        },
    };
    let (node, _task) = omega_p2p::spawn(cfg).unwrap();
    for _ in 0..200 {
        let s = node.request(Command::Status).await.unwrap();
        if let Some(a) = s.listen.first() {
            return (node, a.parse().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node did not listen");
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

async fn wait_until(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn records_replicate_and_images_are_fetched_in_chunks() {
    let root = Keypair::from_seed([1; 32]);
    let token = token(&root);
    let image: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let (a, addr_a) = start(11, &token, Vec::new(), Some(image.clone())).await;
    let (b, _) = start(12, &token, vec![addr_a], None).await;
    assert!(
        wait_until(async || b.request(Command::Desired).await.unwrap().peers.len() == 1).await,
        "b did not connect"
    );

    let hlc = a.request(Command::Tick).await.unwrap();
    let rec = apply_record(&root, &root, "hello", hlc);
    a.request(|tx| Command::Write(rec, tx))
        .await
        .unwrap()
        .unwrap();
    assert!(
        wait_until(async || {
            let v = b.request(Command::Desired).await.unwrap();
            v.manifests.iter().any(|m| m.name == "hello")
        })
        .await,
        "the manifest did not reach b"
    );

    // A record of another mesh is refused where it is written, and says why.
    let other = Keypair::from_seed([2; 32]);
    let rec = apply_record(&other, &other, "evil", hlc);
    let err = a
        .request(|tx| Command::Write(rec, tx))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.contains("mesh"), "{err}");
    let v = a.request(Command::Desired).await.unwrap();
    assert!(v.refusals.iter().any(|r| r.reason.contains("mesh")));

    // b fetches a's image chunk by chunk and verifies it.
    let content = ContentId::of(&image);
    let peer = b.request(Command::Desired).await.unwrap().peers[0];
    let mut got = Vec::new();
    for _ in 0..64 {
        let request = ImageRequest {
            content,
            offset: got.len() as u64,
        };
        let r = b
            .request(|reply| Command::ImageChunk {
                peer,
                request,
                reply,
            })
            .await
            .unwrap()
            .unwrap();
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
    let r = b
        .request(|reply| Command::ImageChunk {
            peer,
            request: missing,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r, ImageResponse::NotFound);
}

#[derive(NetworkBehaviour)]
struct Attacker {
    join: request_response::Behaviour<BytesCodec>,
    gossipsub: gossipsub::Behaviour,
}

#[tokio::test]
async fn a_forged_update_is_rejected_and_its_sender_disconnected() {
    let root = Keypair::from_seed([3; 32]);
    let token = token(&root);
    let (node, addr) = start(21, &token, Vec::new(), None).await;
    let victim = keys::libp2p_keypair(&Keypair::from_seed([21; 32]))
        .public()
        .to_peer_id();
    let key = Keypair::from_seed([22; 32]);
    let mut a = libp2p::SwarmBuilder::with_existing_identity(keys::libp2p_keypair(&key))
        .with_tokio()
        .with_quic()
        .with_behaviour(|k| Attacker {
            join: request_response::Behaviour::with_codec(
                BytesCodec { max_size: 1 << 16 },
                [(
                    StreamProtocol::new("/omega/join/1"),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            ),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(k.clone()),
                gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .build()
                    .unwrap(),
            )
            .unwrap(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    a.dial(addr).unwrap();
    let mesh = omega_gossip::MeshId::from_root(&root.did());
    let topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/state/1"));
    a.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    // The attacker is a member (valid join token) of this mesh and the root
    // of its own: it signs a manifest valid there and announces it here.
    let mut own = DesiredState::new(key.did(), DesiredConfig::default()).unwrap();
    let hlc = own.tick(now() * 1000);
    let rec = DesiredRecord::decode(&apply_record(&key, &key, "evil", hlc), 1 << 20).unwrap();
    let update = own.apply_local(&rec, now() * 1000).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut joined = false;
    let mut sent = 0;
    let mut closed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    while tokio::time::Instant::now() < deadline && !closed {
        tokio::select! {
            ev = a.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { .. } if !joined => {
                    let req: JoinRequest = token
                        .invoke(&key.did(), "mallory", Substrate::Habitat, now(), vec![3])
                        .unwrap();
                    a.behaviour_mut().join.send_request(&victim, req.to_bytes());
                }
                SwarmEvent::Behaviour(AttackerEvent::Join(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. }, ..
                })) => joined = JoinResponse::from_bytes(&response).unwrap().ok,
                SwarmEvent::ConnectionClosed { .. } if joined && sent > 0 => closed = !a.is_connected(&victim),
                _ => {}
            },
            _ = tick.tick() => if joined && sent < 6 {
                // A fresh message each time (gossipsub drops duplicates).
                let mut u = update.clone();
                if sent > 0 { u = vec![0xab; 100 + sent]; }
                if a.behaviour_mut().gossipsub.publish(topic.clone(), u).is_ok() {
                    sent += 1;
                }
            },
        }
    }
    assert!(joined, "the attacker was not admitted");
    assert!(
        closed,
        "the node did not disconnect the sender of forged updates"
    );
    let v = node.request(Command::Desired).await.unwrap();
    assert!(v.manifests.is_empty(), "{:?}", v.manifests);
    assert!(
        v.refusals
            .iter()
            .any(|r| r.reason.contains("mesh") && r.peer == key.did().to_string()),
        "{:?}",
        v.refusals
    );
}
