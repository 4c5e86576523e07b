//! What the driver needs from the host it runs in: durable storage of the
//! desired-state document and the image blobs it serves. Both are called
//! off the swarm loop (storage on one writer thread, in order; blob reads on
//! tokio's blocking pool), so a slow disk never delays a SWIM probe.

use omega_gossip::events::EventOps;
use omega_identity::ContentId;

/// Durable storage of the desired-state document and the event store
/// (the daemon's redb).
pub trait DesiredStore: Send {
    /// Appends an accepted update to the log (committed when it returns).
    fn append(&mut self, update: &[u8]) -> Result<(), String>;
    /// Replaces snapshot and log by one snapshot of the whole document.
    fn compact(&mut self, document: &[u8]) -> Result<(), String>;
    /// Applies a group of event-store writes, in order, as **one**
    /// transaction (group commit); `durable`: on disk (fsynced) when it
    /// returns, else committed without a sync (sealed by a later
    /// [`DesiredStore::sync`]).
    fn events(&mut self, ops: &[EventOps], durable: bool) -> Result<(), String>;
    /// Makes every earlier commit durable.
    fn sync(&mut self) -> Result<(), String>;
}

/// When event-store writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSync {
    /// Every write group is fsynced before any event in it is acknowledged
    /// (writes queued together share one fsync). Nothing acknowledged is
    /// lost, by a crash or a power cut. The default.
    #[default]
    Always,
    /// Writes are committed without a sync and acknowledged at once; a
    /// sync seals them at least every this many milliseconds. Faster; a
    /// crash of the process or the machine loses what was acknowledged in
    /// the last interval (redb keeps unsynced commits only until a synced one).
    Interval(u64),
}

/// Where a node reads the images it serves to peers.
pub trait BlobSource: Send + Sync {
    /// Up to `max` bytes of image `content` from `offset`, and its total
    /// size; `None` when this node does not hold it.
    fn read_chunk(
        &self,
        content: &ContentId,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, String>;
}
