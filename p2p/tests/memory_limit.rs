//! The memory-based connection limit: a node whose process is above its
//! memory limit refuses new connections; the same node without the limit
//! accepts them. Real QUIC on loopback, in one process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, ping};
use omega_identity::Keypair;
use omega_p2p::{NetConfig, keys};

mod common;

use common::{Setup, start, token};

async fn start_node(
    seed: u8,
    max_memory_bytes: Option<usize>,
) -> (omega_p2p::NodeHandle, Multiaddr) {
    let root = Keypair::from_seed([1; 32]);
    let mut setup = Setup::new(seed, &token(&root));
    setup.net = NetConfig {
        max_memory_bytes,
        ..NetConfig::default()
    };
    start(setup).await
}

/// Dials `addr` from a fresh QUIC peer; `Some(true)` once a connection is
/// established, `Some(false)` once the dial fails, `None` after 20 s.
async fn dial(addr: Multiaddr) -> Option<bool> {
    let key = keys::libp2p_keypair(&Keypair::from_seed([7; 32]));
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| ping::Behaviour::default())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    swarm.dial(addr).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(ev) = tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
        match ev {
            SwarmEvent::ConnectionEstablished { .. } => return Some(true),
            SwarmEvent::OutgoingConnectionError { .. } => return Some(false),
            _ => {}
        }
    }
    None
}

#[tokio::test]
async fn a_node_over_its_memory_limit_refuses_new_connections() {
    // One byte: any process is above it.
    let (node, addr) = start_node(5, Some(1)).await;
    let refused = dial(addr).await;
    assert_eq!(
        refused,
        Some(false),
        "the dial should fail, not hang or succeed"
    );
    // The node itself is fine and answers its local API.
    let s = node.status().await.unwrap();
    assert_eq!(s.node.connections, 0);
}

#[tokio::test]
async fn the_same_node_under_its_memory_limit_accepts_them() {
    // The default limit (512 MiB) is far above a test process.
    let (node, addr) = start_node(6, NetConfig::default().max_memory_bytes).await;
    assert_eq!(dial(addr).await, Some(true));
    let s = node.status().await.unwrap();
    assert!(s.node.connections <= 1);
}
