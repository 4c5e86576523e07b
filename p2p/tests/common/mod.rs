//! Shared set-up of the p2p tests: nodes on loopback QUIC, and a raw
//! libp2p peer that speaks Omega's protocols by hand (an attacker).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, gossipsub, request_response};
use omega_gossip::join::{InviteSpec, JoinToken};
use omega_gossip::node::{Config, Identity};
use omega_gossip::{Capabilities, Profile, Resources, Substrate};
use omega_identity::Keypair;
use omega_p2p::codec::BytesCodec;
use omega_p2p::discovery::Static;
use omega_p2p::host::{BlobSource, DesiredStore};
use omega_p2p::{NetConfig, NodeConfig, NodeHandle, keys};

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An invite of mesh `root` for habitat nodes.
pub fn token(root: &Keypair) -> JoinToken {
    let spec = InviteSpec {
        substrate: Substrate::Habitat,
        name_pattern: None,
        expires_at: now() + 3600,
    };
    JoinToken::mint(root, &spec, [9; 32], vec![1]).unwrap()
}

/// How a test node is set up.
pub struct Setup {
    pub seed: u8,
    pub token: Option<JoinToken>,
    pub peers: Vec<Multiaddr>,
    pub node: Config,
    pub net: NetConfig,
    pub store: Option<Box<dyn DesiredStore>>,
    pub blobs: Option<Arc<dyn BlobSource>>,
}

impl Setup {
    pub fn new(seed: u8, token: &JoinToken) -> Self {
        let mut node = Config::default();
        node.desired.client_id = u64::from(seed);
        Self {
            seed,
            token: Some(token.clone()),
            peers: Vec::new(),
            node,
            net: NetConfig::default(),
            store: None,
            blobs: None,
        }
    }
}

/// Starts a node and waits until it listens; returns its handle and address.
pub async fn start(s: Setup) -> (NodeHandle, Multiaddr) {
    let cfg = NodeConfig {
        identity: Identity {
            key: Keypair::from_seed([s.seed; 32]),
            token: s.token,
            profile: Profile {
                name: format!("n{}", s.seed),
                substrate: Substrate::Habitat,
                capabilities: Capabilities::STANDARD,
                resources: Resources::default(),
                addresses: Vec::new(),
            },
        },
        node: s.node,
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        providers: vec![Box::new(Static(s.peers))],
        discovery_interval: Duration::from_millis(200),
        net: s.net,
        registry: None,
        stored: Vec::new(),
        store: s.store,
        stored_events: Default::default(),
        event_sync: Default::default(),
        blobs: s.blobs,
    };
    let (node, _effects, _task) = omega_p2p::spawn(cfg).unwrap();
    // Brane effects are not executed in these tests; the receiver may go.
    for _ in 0..200 {
        let st = node.status().await.unwrap();
        if let Some(a) = st.node.listen.first() {
            return (node, a.parse().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node did not listen");
}

/// The libp2p peer id of the node started with `seed`.
pub fn peer_of(seed: u8) -> PeerId {
    keys::libp2p_keypair(&Keypair::from_seed([seed; 32]))
        .public()
        .to_peer_id()
}

pub async fn wait_until(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A raw peer that speaks Omega's protocols by hand.
#[derive(NetworkBehaviour)]
pub struct Attacker {
    pub join: request_response::Behaviour<BytesCodec>,
    pub swim: request_response::Behaviour<BytesCodec>,
    pub state: request_response::Behaviour<BytesCodec>,
    pub gossipsub: gossipsub::Behaviour,
}

fn rr(p: &'static str) -> request_response::Behaviour<BytesCodec> {
    request_response::Behaviour::with_codec(
        BytesCodec { max_size: 1 << 24 },
        [(
            StreamProtocol::new(p),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default(),
    )
}

pub fn attacker(key: &Keypair) -> libp2p::Swarm<Attacker> {
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
                state: rr("/omega/state/1"),
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

/// Drives the attacker until `done` says stop or `secs` pass; returns whether it stopped.
pub async fn drive(
    swarm: &mut libp2p::Swarm<Attacker>,
    secs: u64,
    mut done: impl FnMut(&mut libp2p::Swarm<Attacker>, SwarmEvent<AttackerEvent>) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(ev) = tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
        // Like any member, the attacker admits whoever asks it to.
        if let SwarmEvent::Behaviour(AttackerEvent::Join(request_response::Event::Message {
            message: request_response::Message::Request { channel, .. },
            ..
        })) = ev
        {
            let ok = omega_gossip::join::JoinResponse {
                ok: true,
                reason: String::new(),
            };
            let _ = swarm
                .behaviour_mut()
                .join
                .send_response(channel, ok.to_bytes());
            continue;
        }
        if done(swarm, ev) {
            return true;
        }
    }
    false
}

/// Connects the attacker to `addr` and presents a valid join with `token`;
/// returns once the node admitted it.
pub async fn join(
    a: &mut libp2p::Swarm<Attacker>,
    key: &Keypair,
    addr: Multiaddr,
    victim: PeerId,
    token: &JoinToken,
) {
    a.dial(addr).unwrap();
    assert!(
        drive(a, 10, |_, ev| matches!(
            ev,
            SwarmEvent::ConnectionEstablished { .. }
        ))
        .await,
        "no connection"
    );
    let req = token
        .invoke(&key.did(), "mallory", Substrate::Habitat, now(), vec![3])
        .unwrap();
    a.behaviour_mut().join.send_request(&victim, req.to_bytes());
    let mut ok = false;
    assert!(
        drive(a, 10, |_, ev| match ev {
            SwarmEvent::Behaviour(AttackerEvent::Join(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                ok = omega_gossip::join::JoinResponse::from_bytes(&response)
                    .unwrap()
                    .ok;
                true
            }
            _ => false,
        })
        .await
    );
    assert!(ok, "a valid token is admitted");
}
