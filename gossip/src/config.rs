//! Tunables and limits, with documented defaults.

use crate::id::MeshId;

/// Size limits on what peers send. All members of a mesh should use the same
/// values: a record one member accepts and another refuses spreads unevenly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted or produced, in bytes (default 64 KiB). Larger
    /// input is refused before decoding; larger output is split (sync) or
    /// trimmed (piggyback).
    pub max_message_size: usize,
    /// Longest node name in bytes (default 64). Longer: the record is refused.
    pub max_name_len: usize,
    /// Most addresses in a record (default 8, at most 255). More: refused.
    pub max_addresses: usize,
    /// Longest address in bytes (default 256). Longer: refused.
    pub max_address_len: usize,
    /// Most piggybacked updates in one message (default 64). More: refused.
    pub max_updates_per_message: usize,
    /// Most entries in one sync message (default 1024). More: refused.
    pub max_sync_entries_per_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_name_len: 64,
            max_addresses: 8,
            max_address_len: 256,
            max_updates_per_message: 64,
            max_sync_entries_per_message: 1024,
        }
    }
}

/// Configuration of a [`Membership`](crate::Membership). Times are milliseconds.
///
/// The defaults detect a crashed member and mark it dead on every other member
/// of a 3–10 node mesh within 3 s (tested in `tests/harness.rs`): a probe every
/// 200 ms, indirect probes after 100 ms, and a suspicion timeout of 4 probe
/// intervals scaled by log10(n), shortened by independent confirmations
/// (Lifeguard) from at most 2× that down to 1×.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The mesh this node belongs to; records for other meshes are refused.
    pub mesh: MeshId,
    /// Time between probes of one member (default 200).
    pub probe_interval: u64,
    /// Time to wait for a direct ack before asking others (default 100). Must
    /// be below `probe_interval`.
    pub probe_timeout: u64,
    /// Members asked to probe indirectly when the direct probe times out (default 3).
    pub indirect_checks: usize,
    /// Minimum suspicion timeout in probe intervals, scaled by log10(n) (default 4).
    pub suspicion_mult: u64,
    /// Maximum suspicion timeout as a multiple of the minimum, used with no
    /// independent confirmation (default 2). 1 disables Lifeguard's scaling.
    pub suspicion_max_mult: u64,
    /// Time between piggyback-only gossip rounds (default 200).
    pub gossip_interval: u64,
    /// Members each gossip round sends to (default 3).
    pub gossip_fanout: usize,
    /// How long dead members still receive gossip so they can refute (default 5 000).
    pub gossip_to_dead: u64,
    /// Each update is retransmitted `retransmit_mult * (floor(log10 n) + 1)` times (default 4).
    pub retransmit_mult: u32,
    /// Bytes of piggybacked updates per probe or ack (default 1 024).
    pub piggyback_budget: usize,
    /// Most updates waiting to be disseminated (default 4 096). When full, the
    /// update sent most often is dropped (anti-entropy repairs it).
    pub max_broadcasts: usize,
    /// Time between anti-entropy syncs with one random member (default 10 000).
    pub sync_interval: u64,
    /// Member entries per anti-entropy sync (default 32): traffic stays bounded
    /// as the mesh grows; the table is covered page by page.
    pub sync_page_entries: usize,
    /// Full-state syncs answered to joiners: a bucket of this many (default 8)...
    pub full_sync_burst: u32,
    /// ...refilled by one every this many ms (default 1 000). Empty: a joiner
    /// gets one page and learns the rest by gossip and anti-entropy.
    pub full_sync_refill: u64,
    /// Time between attempts to reach one random dead member, which heals
    /// partitions (default 2 000).
    pub reconnect_interval: u64,
    /// How long a dead or left member stays in the table (default 3 600 000);
    /// then only a tombstone (id, incarnation) remains.
    pub dead_retention: u64,
    /// Most tombstones kept (default 16 384); when full the oldest is dropped.
    pub max_tombstones: usize,
    /// Time between join attempts until a seed answers (default 1 000).
    pub join_retry: u64,
    /// Most members in the table (default 16 384). When full, new members are
    /// refused with [`Refusal::TableFull`](crate::Refusal::TableFull).
    pub max_members: usize,
    /// Most indirect probes relayed for others at once (default 64). Beyond,
    /// requests are ignored (the requester then suspects on its own timeout).
    pub max_relays: usize,
    /// Most transmits queued for the driver (default 4 096). When full, new
    /// transmits are dropped and counted (SWIM tolerates loss).
    pub max_transmits: usize,
    /// Most events queued for the driver (default 4 096). When full, the
    /// oldest event is dropped and counted.
    pub max_events: usize,
    /// Size limits.
    pub limits: Limits,
}

impl Config {
    /// The defaults for the mesh `mesh`.
    pub fn new(mesh: MeshId) -> Self {
        Self {
            mesh,
            probe_interval: 200,
            probe_timeout: 100,
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_mult: 2,
            gossip_interval: 200,
            gossip_fanout: 3,
            gossip_to_dead: 5_000,
            retransmit_mult: 4,
            piggyback_budget: 1024,
            max_broadcasts: 4096,
            sync_interval: 10_000,
            sync_page_entries: 32,
            full_sync_burst: 8,
            full_sync_refill: 1_000,
            reconnect_interval: 2_000,
            dead_retention: 3_600_000,
            max_tombstones: 16_384,
            join_retry: 1_000,
            max_members: 16_384,
            max_relays: 64,
            max_transmits: 4096,
            max_events: 4096,
            limits: Limits::default(),
        }
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what| Err(ConfigError(what));
        if self.probe_interval == 0
            || self.probe_timeout == 0
            || self.probe_timeout >= self.probe_interval
        {
            return bad("need 0 < probe_timeout < probe_interval");
        }
        if self.gossip_interval == 0 || self.sync_interval == 0 || self.reconnect_interval == 0 {
            return bad("intervals must be positive");
        }
        if self.join_retry == 0 || self.full_sync_refill == 0 {
            return bad("join_retry and full_sync_refill must be positive");
        }
        if self.suspicion_mult == 0 || self.suspicion_max_mult == 0 || self.retransmit_mult == 0 {
            return bad("multipliers must be positive");
        }
        if self.limits.max_addresses > 255 {
            return bad("limits.max_addresses must be at most 255");
        }
        if self.limits.max_message_size < 1024
            || self.piggyback_budget + 64 > self.limits.max_message_size
        {
            return bad("max_message_size must be at least 1 KiB and exceed piggyback_budget + 64");
        }
        let max_record = 32
            + 16
            + 10
            + 1
            + 10
            + self.limits.max_name_len
            + 1
            + 1
            + 20
            + 1
            + self.limits.max_addresses * (2 + self.limits.max_address_len)
            + 64;
        if max_record + 64 > self.limits.max_message_size {
            return bad("the largest record must fit in max_message_size");
        }
        if self.sync_page_entries == 0
            || self.sync_page_entries > self.limits.max_sync_entries_per_message
        {
            return bad("need 0 < sync_page_entries <= limits.max_sync_entries_per_message");
        }
        Ok(())
    }
}

/// A [`Config`] whose values contradict each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid gossip configuration: {0}")]
pub struct ConfigError(pub &'static str);
