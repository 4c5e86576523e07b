//! Durable state in `DATA_DIR/state.redb`: the desired-state document as a
//! snapshot plus an update log, and a restart counter.
//!
//! | table | key | value |
//! |---|---|---|
//! | `desired` | `0` | the last snapshot (the whole document as one update) |
//! | `desired` | `1..` | accepted updates since, in order |
//! | `meta` | `restarts` | how often the node started (for the yrs client id) |
//! | `outbox` | seq | an event on its way (`omega_gossip::events::Stored`, DAG-CBOR), dead letters included |
//! | `processed` | order | the 16-byte id of an event processed here (the deduplication window) |
//!
//! Event writes arrive in groups: each group is one transaction, fsynced
//! before any event in it is acknowledged ([`EventSync::Always`]), or
//! committed without a sync and sealed periodically
//! ([`EventSync::Interval`], see its caveat).
//!
//! Every append is its own committed (fsynced) transaction, done before the
//! update is announced or the writer is answered; compaction replaces the
//! snapshot and the log in one transaction. On start the daemon loads the
//! snapshot and the log and the driver verifies every record again.

use std::path::{Path, PathBuf};

use omega_gossip::events::{EventId, EventOps, StoredEvents};
use omega_identity::ContentId;
#[cfg(doc)]
use omega_p2p::host::EventSync;
use omega_p2p::host::{BlobSource, DesiredStore};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const DESIRED: TableDefinition<u64, &[u8]> = TableDefinition::new("desired");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const PROCESSED: TableDefinition<u64, &[u8]> = TableDefinition::new("processed");

/// The file name in the data directory.
pub const FILE: &str = "state.redb";

/// The node's redb database.
pub struct StateDb {
    db: Database,
    next: u64,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb").field("next", &self.next).finish()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("{}: {e}", FILE)
}

impl StateDb {
    /// Opens (creating) `DATA_DIR/state.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, String> {
        let db = Database::create(data_dir.join(FILE)).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        let next = {
            let t = txn.open_table(DESIRED).map_err(err)?;
            let last = t.last().map_err(err)?.map(|(k, _)| k.value());
            last.map_or(1, |k| k + 1)
        };
        txn.open_table(META).map_err(err)?;
        txn.open_table(OUTBOX).map_err(err)?;
        txn.open_table(PROCESSED).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db, next })
    }

    /// The event store: every outbox row and the processed window.
    pub fn load_events(&self) -> Result<StoredEvents, String> {
        let txn = self.db.begin_read().map_err(err)?;
        let mut out = StoredEvents::default();
        for entry in txn.open_table(OUTBOX).map_err(err)?.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            out.outbox.push((k.value(), v.value().to_vec()));
        }
        for entry in txn
            .open_table(PROCESSED)
            .map_err(err)?
            .iter()
            .map_err(err)?
        {
            let (k, v) = entry.map_err(err)?;
            if let Ok(id) = <[u8; 16]>::try_from(v.value()) {
                out.processed.push((k.value(), EventId(id)));
            }
        }
        Ok(out)
    }

    /// The snapshot and the log, in order.
    pub fn load(&self) -> Result<Vec<Vec<u8>>, String> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(DESIRED).map_err(err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(err)? {
            let (_, v) = entry.map_err(err)?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Counts this start; returns how many starts came before.
    pub fn count_restart(&self) -> Result<u64, String> {
        let txn = self.db.begin_write().map_err(err)?;
        let n = {
            let mut t = txn.open_table(META).map_err(err)?;
            let n = t.get("restarts").map_err(err)?.map_or(0, |v| v.value());
            t.insert("restarts", n + 1).map_err(err)?;
            n
        };
        txn.commit().map_err(err)?;
        Ok(n)
    }
}

impl DesiredStore for StateDb {
    fn append(&mut self, update: &[u8]) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(DESIRED)
            .map_err(err)?
            .insert(self.next, update)
            .map_err(err)?;
        txn.commit().map_err(err)?;
        self.next += 1;
        Ok(())
    }

    fn events(&mut self, ops: &[EventOps], durable: bool) -> Result<(), String> {
        let mut txn = self.db.begin_write().map_err(err)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(err)?;
        }
        {
            let mut outbox = txn.open_table(OUTBOX).map_err(err)?;
            let mut processed = txn.open_table(PROCESSED).map_err(err)?;
            for o in ops {
                for (seq, bytes) in &o.put {
                    outbox.insert(*seq, bytes.as_slice()).map_err(err)?;
                }
                for seq in &o.delete {
                    outbox.remove(*seq).map_err(err)?;
                }
                for (order, id) in &o.processed {
                    processed.insert(*order, id.0.as_slice()).map_err(err)?;
                }
                for order in &o.forget {
                    processed.remove(*order).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)
    }

    fn sync(&mut self) -> Result<(), String> {
        // An empty commit with the default (immediate) durability makes the
        // unsynced ones before it durable.
        self.db.begin_write().map_err(err)?.commit().map_err(err)
    }

    fn compact(&mut self, document: &[u8]) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(DESIRED).map_err(err)?;
            t.retain(|_, _| false).map_err(err)?;
            t.insert(0, document).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.next = 1;
        Ok(())
    }
}

/// Serves image chunks straight from the image store's blob files
/// (`images/blobs/<cid>.wasm`); the fetching node verifies the hash.
#[derive(Debug, Clone)]
pub struct FileBlobs {
    /// `DATA_DIR/images/blobs`.
    pub dir: PathBuf,
}

impl BlobSource for FileBlobs {
    fn read_chunk(
        &self,
        content: &ContentId,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, String> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.dir.join(format!("{content}.wasm"));
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let total = f.metadata().map_err(io)?.len();
        f.seek(SeekFrom::Start(offset.min(total))).map_err(io)?;
        let mut buf = Vec::with_capacity(max.min(1 << 20));
        f.take(max as u64).read_to_end(&mut buf).map_err(io)?;
        Ok(Some((total, buf)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn log_and_snapshot_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut db = StateDb::open(dir.path()).unwrap();
            assert_eq!(db.count_restart().unwrap(), 0);
            db.append(b"a").unwrap();
            db.append(b"b").unwrap();
        }
        let mut db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.count_restart().unwrap(), 1);
        assert_eq!(db.load().unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        db.compact(b"ab").unwrap();
        db.append(b"c").unwrap();
        drop(db);
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap(), vec![b"ab".to_vec(), b"c".to_vec()]);
    }
}
