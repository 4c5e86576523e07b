//! What the driver needs from the host it runs in: durable storage of the
//! desired-state document and the image blobs it serves. Both are called
//! off the swarm loop (storage on one writer thread, in order; blob reads on
//! tokio's blocking pool), so a slow disk never delays a SWIM probe.

use omega_identity::ContentId;

/// Durable storage of the desired-state document (the daemon's redb).
pub trait DesiredStore: Send {
    /// Appends an accepted update to the log (committed when it returns).
    fn append(&mut self, update: &[u8]) -> Result<(), String>;
    /// Replaces snapshot and log by one snapshot of the whole document.
    fn compact(&mut self, document: &[u8]) -> Result<(), String>;
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
