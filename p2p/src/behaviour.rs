//! The composed libp2p behaviour of an Omega node and how it is built.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, connection_limits, gossipsub, identify, identity, kad, mdns,
    memory_connection_limits, ping, request_response,
};

use crate::codec::BytesCodec;

/// The admission protocol.
pub const JOIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/join/1");
/// The membership (SWIM) protocol: one gossip-core message per request.
pub const SWIM_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/swim/1");
/// Desired-state anti-entropy: a state vector in, the missing updates out.
pub const STATE_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/state/1");
/// Image transfer: one chunk of an image by content id per request.
pub const IMAGE_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/image/1");
/// Events: a batch of events in, one ack per event out once processed.
pub const EVENT_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/event/1");
/// HTTP between nodes: each stream carries one HTTP/2 connection (the
/// gateway forwarding to a replica, a brane calling a brane by name).
pub const HTTP_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/http/1");
/// The Kademlia protocol of Omega meshes (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/kad/1");
/// identify's protocol version string.
pub const PROTOCOL_VERSION: &str = "/omega/1";

/// Limits of the libp2p side of a node. Every one has a defined behaviour
/// when hit: connections beyond a limit are refused by the swarm, messages
/// beyond a size fail their stream, queued messages beyond a count drop the oldest.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Most established connections. Default 256.
    pub max_connections: u32,
    /// Most established connections per peer. Default 2.
    pub max_connections_per_peer: u32,
    /// Most pending incoming connections (handshakes in flight). Default 64.
    pub max_pending_incoming: u32,
    /// Largest join request or response. Default 8 KiB.
    pub max_join_message: usize,
    /// Largest membership message. Default 64 KiB.
    pub max_swim_message: usize,
    /// Largest gossipsub message. Default 64 KiB.
    pub max_gossipsub_message: usize,
    /// Largest anti-entropy request or response (a whole document diff).
    /// Default 8 MiB + 1 KiB, the desired state's default update limit.
    pub max_state_message: usize,
    /// Largest image request or response (one chunk). Default 256 KiB + 1 KiB.
    pub max_image_message: usize,
    /// Largest event batch or answer. Default 8 MiB (the delivery
    /// machine's wire limit).
    pub max_event_message: usize,
    /// Most concurrent request streams per protocol. Default 64.
    pub max_concurrent_streams: usize,
    /// How long an event batch may wait for its answer (it is answered
    /// once every event in it is processed). Default 60 s.
    pub event_timeout: Duration,
    /// Request timeout. Default 5 s.
    pub request_timeout: Duration,
    /// How long an idle connection is kept. Default 60 s.
    pub idle_connection_timeout: Duration,
    /// Run mDNS (only with `--discover lan`). Default off.
    pub mdns: bool,
    /// Refuse new connections, inbound and outbound, while the process's
    /// resident memory is above this many bytes (checked at most every
    /// 100 ms; open connections are kept). `None`: no memory limit.
    /// Default 512 MiB.
    pub max_memory_bytes: Option<usize>,
}

/// The default of [`NetConfig::max_memory_bytes`]: 512 MiB.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 512 << 20;

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_connections_per_peer: 2,
            max_pending_incoming: 64,
            max_join_message: omega_gossip::join::MAX_TOKEN_LEN,
            max_swim_message: 64 * 1024,
            max_gossipsub_message: 64 * 1024,
            max_state_message: (8 << 20) + 1024,
            max_image_message: (256 << 10) + 1024,
            max_event_message: omega_gossip::events::MAX_WIRE_BYTES,
            max_concurrent_streams: 64,
            event_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            idle_connection_timeout: Duration::from_secs(60),
            mdns: false,
            max_memory_bytes: Some(DEFAULT_MAX_MEMORY_BYTES),
        }
    }
}

/// Every protocol an Omega node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Peers the node banned: their connections are denied here, before
    /// any protocol sees them.
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: Toggle<memory_connection_limits::Behaviour>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) join: request_response::Behaviour<BytesCodec>,
    pub(crate) swim: request_response::Behaviour<BytesCodec>,
    pub(crate) state: request_response::Behaviour<BytesCodec>,
    pub(crate) image: request_response::Behaviour<BytesCodec>,
    pub(crate) event: request_response::Behaviour<BytesCodec>,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Raw streams (`/omega/http/1`); the host opens and accepts them
    /// through [`libp2p_stream::Control`].
    pub(crate) stream: libp2p_stream::Behaviour,
}

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// gossipsub rejected its configuration.
    #[error("gossipsub: {0}")]
    Gossipsub(String),
    /// mDNS could not start.
    #[error("mdns: {0}")]
    Mdns(#[from] std::io::Error),
}

fn rr(
    protocol: StreamProtocol,
    max_size: usize,
    timeout: Duration,
    streams: usize,
) -> request_response::Behaviour<BytesCodec> {
    request_response::Behaviour::with_codec(
        BytesCodec { max_size },
        [(protocol, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(streams),
    )
}

/// Peer-score parameters: an invalid message (P4) costs a lot; a peer whose
/// score sinks below the graylist threshold is ignored entirely. The
/// mesh-delivery-rate penalties (P3, P3b) are off: Omega's topics are quiet
/// (an update per apply, a status every few seconds), so a delivery quota
/// would punish honest peers, and gossipsub keeps scores of disconnected
/// peers, so a restarted node would come back graylisted.
///
/// The rewards are off or small, so no peer can bank credit against P4:
/// time in the mesh (P1) is off (with gossipsub's defaults it reaches +3600
/// within seconds, and 3 invalid messages cost only -900, so a member in
/// the mesh could never be graylisted), and first deliveries (P2) count at
/// most +10 (any member can author statuses). One invalid message (-100)
/// graylists a peer; it decays by 0.9 a second.
fn score_params(
    topics: &[&gossipsub::IdentTopic],
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let mut params = gossipsub::PeerScoreParams::default();
    for topic in topics {
        let topic_params = gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            invalid_message_deliveries_weight: -100.0,
            invalid_message_deliveries_decay: 0.9,
            time_in_mesh_weight: 0.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_cap: 10.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            ..Default::default()
        };
        params.topics.insert(topic.hash(), topic_params);
    }
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 20.0,
    };
    (params, thresholds)
}

impl Behaviour {
    /// The request-response behaviour that carries `protocol`.
    pub(crate) fn protocol(
        &mut self,
        protocol: omega_gossip::node::Protocol,
    ) -> &mut request_response::Behaviour<BytesCodec> {
        use omega_gossip::node::Protocol as P;
        match protocol {
            P::Join => &mut self.join,
            P::Swim => &mut self.swim,
            P::State => &mut self.state,
            P::Image => &mut self.image,
            P::Event => &mut self.event,
        }
    }

    pub(crate) fn new(
        key: &identity::Keypair,
        cfg: &NetConfig,
        topics: &[&gossipsub::IdentTopic],
    ) -> Result<Self, BuildError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
            .with_max_pending_incoming(Some(cfg.max_pending_incoming));
        let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
        kad_cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
        kad_cfg.set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        kad.set_mode(Some(kad::Mode::Server));
        let gs_cfg = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(cfg.max_gossipsub_message)
            .heartbeat_interval(Duration::from_secs(1))
            .build()
            .map_err(|e| BuildError::Gossipsub(e.to_string()))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gs_cfg)
                .map_err(|e| BuildError::Gossipsub(e.to_owned()))?;
        let (params, thresholds) = score_params(topics);
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(BuildError::Gossipsub)?;
        for topic in topics {
            gossipsub
                .subscribe(*topic)
                .map_err(|e| BuildError::Gossipsub(e.to_string()))?;
        }
        let mdns = if cfg.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        let (t, s) = (cfg.request_timeout, cfg.max_concurrent_streams);
        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(limits),
            memory: cfg
                .max_memory_bytes
                .map(memory_connection_limits::Behaviour::with_max_bytes)
                .into(),
            identify: identify::Behaviour::new(identify::Config::new(
                PROTOCOL_VERSION.into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
            join: rr(JOIN_PROTOCOL, cfg.max_join_message, t, s),
            swim: rr(SWIM_PROTOCOL, cfg.max_swim_message, t, s),
            state: rr(STATE_PROTOCOL, cfg.max_state_message, t, s),
            image: rr(IMAGE_PROTOCOL, cfg.max_image_message, t, s),
            // Credits bound the batches in flight (peer credits / batch
            // size); the stream limit must not be the tighter bound.
            event: rr(
                EVENT_PROTOCOL,
                cfg.max_event_message,
                cfg.event_timeout,
                s.max(1024),
            ),
            kad,
            gossipsub,
            mdns: mdns.into(),
            stream: libp2p_stream::Behaviour::new(),
        })
    }
}
