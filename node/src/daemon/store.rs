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
//!
//! A damaged file (pages overwritten, truncated, not a redb file at all) is
//! an error, never a panic: the open checks the checksum of every page of
//! the committed trees ([`Loaded::open`]), and a panic inside redb while the
//! node reads its state is caught and reported as damage
//! ([`StateError::Damaged`]). The way back is [`rebuild`]
//! (`omega node --rebuild-state`): the damaged file is moved aside and the
//! node starts empty and re-syncs the desired state from its peers.

use std::panic::AssertUnwindSafe;
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

/// Why the state store could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file is damaged: pages overwritten, truncated, or not a redb
    /// file. [`rebuild`] moves it aside.
    #[error(
        "{} is damaged ({reason}); to recover, start with `omega node --data-dir {} --rebuild-state`: \
         it moves the file aside, keeps node.key and re-syncs the desired state from the mesh's peers",
        path.display(),
        path.parent().map_or_else(|| ".".into(), |d| d.display().to_string())
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What redb found.
        reason: String,
    },
    /// The file is fine as far as we know but cannot be used now (an I/O
    /// error, or another process has it open).
    #[error("{}: {reason}", path.display())]
    Unavailable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl StateError {
    fn of(path: &Path, e: impl Into<redb::Error>) -> Self {
        use std::io::ErrorKind;
        let e: redb::Error = e.into();
        let path = path.to_path_buf();
        match e {
            redb::Error::DatabaseAlreadyOpen => Self::Unavailable {
                path,
                reason:
                    "in use by another process (is a node already running on this data directory?)"
                        .into(),
            },
            redb::Error::Io(io)
                if !matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) =>
            {
                Self::Unavailable {
                    path,
                    reason: io.to_string(),
                }
            }
            e => Self::Damaged {
                path,
                reason: e.to_string(),
            },
        }
    }
}

/// The store as the daemon starts from it.
#[derive(Debug)]
pub struct Loaded {
    /// The open database.
    pub db: StateDb,
    /// How many starts came before this one.
    pub restarts: u64,
    /// The snapshot and the log, in order.
    pub desired: Vec<Vec<u8>>,
    /// The outbox and the processed window.
    pub events: StoredEvents,
}

impl Loaded {
    /// Opens (creating) `DATA_DIR/state.redb` with every committed page's
    /// checksum verified, counts this start and reads all the node starts
    /// from. Damage is [`StateError::Damaged`]; a panic inside redb on a
    /// damaged page is caught and reported as such.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        let path = data_dir.join(FILE);
        let read = || -> Result<Self, StateError> {
            let db = StateDb::open_checked(&path)?;
            let restarts = db
                .restarts_counted()
                .map_err(|e| StateError::of(&path, e))?;
            let desired = db.load_desired().map_err(|e| StateError::of(&path, e))?;
            let events = db.load_stored().map_err(|e| StateError::of(&path, e))?;
            Ok(Self {
                db,
                restarts,
                desired,
                events,
            })
        };
        std::panic::catch_unwind(AssertUnwindSafe(read)).unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "redb panicked reading it".into());
            Err(StateError::Damaged { path, reason })
        })
    }
}

/// `omega node --rebuild-state`: moves `DATA_DIR/state.redb` (if any) aside
/// to `state.redb.damaged-UNIXMS` and creates an empty store whose restart
/// counter starts at a random value, so that the yrs client ids of the
/// rebuilt node never repeat one it wrote under before (the mesh still
/// holds those updates). Returns where the old file went.
pub fn rebuild(data_dir: &Path) -> Result<Option<PathBuf>, StateError> {
    let path = data_dir.join(FILE);
    let unavailable = |reason: String| StateError::Unavailable {
        path: path.clone(),
        reason,
    };
    let moved = if path.exists() {
        let aside = data_dir.join(format!("{FILE}.damaged-{}", crate::unix_now().0));
        std::fs::rename(&path, &aside)
            .map_err(|e| unavailable(format!("moving it to {}: {e}", aside.display())))?;
        Some(aside)
    } else {
        None
    };
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| unavailable(format!("no randomness: {e}")))?;
    let start = u64::from_le_bytes(seed) >> 1;
    let db = StateDb::open_checked(&path)?;
    let seed_restarts = || -> Result<(), redb::Error> {
        let txn = db.db.begin_write()?;
        txn.open_table(META)?.insert("restarts", start)?;
        txn.commit()?;
        Ok(())
    };
    seed_restarts().map_err(|e| StateError::of(&path, e))?;
    Ok(moved)
}

impl StateDb {
    fn open_checked(path: &Path) -> Result<Self, StateError> {
        let fail = |e: redb::Error| StateError::of(path, e);
        // redb would take an empty file for a new database: the restart
        // count would start over and the node reuse its yrs client ids.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(StateError::Damaged {
                path: path.to_path_buf(),
                reason: "the file is empty".into(),
            });
        }
        let db = redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| fail(e.into()))?;
        let next = Self::create_tables(&db).map_err(fail)?;
        Ok(Self { db, next })
    }

    /// Creates the tables (a new file) and returns the next log key.
    fn create_tables(db: &Database) -> Result<u64, redb::Error> {
        let txn = db.begin_write()?;
        let next = {
            let t = txn.open_table(DESIRED)?;
            let last = t.last()?.map(|(k, _)| k.value());
            last.map_or(1, |k| k + 1)
        };
        txn.open_table(META)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(PROCESSED)?;
        txn.commit()?;
        Ok(next)
    }

    fn load_stored(&self) -> Result<StoredEvents, redb::Error> {
        let txn = self.db.begin_read()?;
        let mut out = StoredEvents::default();
        for entry in txn.open_table(OUTBOX)?.iter()? {
            let (k, v) = entry?;
            out.outbox.push((k.value(), v.value().to_vec()));
        }
        for entry in txn.open_table(PROCESSED)?.iter()? {
            let (k, v) = entry?;
            if let Ok(id) = <[u8; 16]>::try_from(v.value()) {
                out.processed.push((k.value(), EventId(id)));
            }
        }
        Ok(out)
    }

    fn load_desired(&self) -> Result<Vec<Vec<u8>>, redb::Error> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(DESIRED)?.iter()? {
            out.push(entry?.1.value().to_vec());
        }
        Ok(out)
    }

    fn restarts_counted(&self) -> Result<u64, redb::Error> {
        let txn = self.db.begin_write()?;
        let n = {
            let mut t = txn.open_table(META)?;
            let n = t.get("restarts")?.map_or(0, |v| v.value());
            t.insert("restarts", n.wrapping_add(1))?;
            n
        };
        txn.commit()?;
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
            let mut l = Loaded::open(dir.path()).unwrap();
            assert_eq!(l.restarts, 0);
            l.db.append(b"a").unwrap();
            l.db.append(b"b").unwrap();
        }
        let mut l = Loaded::open(dir.path()).unwrap();
        assert_eq!(l.restarts, 1);
        assert_eq!(l.desired, vec![b"a".to_vec(), b"b".to_vec()]);
        l.db.compact(b"ab").unwrap();
        l.db.append(b"c").unwrap();
        drop(l);
        let l = Loaded::open(dir.path()).unwrap();
        assert_eq!(l.desired, vec![b"ab".to_vec(), b"c".to_vec()]);
    }

    const PAGE: usize = 4096;

    /// A store with a log of 200 updates and 100 outbox events, closed;
    /// returns its bytes and what it holds.
    fn filled(dir: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut l = Loaded::open(dir).unwrap();
        let mut log = Vec::new();
        for i in 0..200u32 {
            let update = format!("update {i} ").repeat(40).into_bytes();
            l.db.append(&update).unwrap();
            log.push(update);
        }
        let put = (0..100u64).map(|s| (s, vec![s as u8; 300])).collect();
        let ops = EventOps {
            put,
            ..EventOps::default()
        };
        l.db.events(&[ops], true).unwrap();
        drop(l);
        (std::fs::read(dir.join(FILE)).unwrap(), log)
    }

    /// Opening `bytes` as a store: what it holds, or the damage reported.
    fn reopen(bytes: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), bytes).unwrap();
        Loaded::open(dir.path()).map(|l| l.desired)
    }

    fn assert_damaged(r: Result<Vec<Vec<u8>>, StateError>, what: &str, log: &[Vec<u8>]) {
        match r {
            Err(e @ StateError::Damaged { .. }) => {
                let text = e.to_string();
                assert!(text.contains(FILE), "{what}: {text}");
                assert!(text.contains("--rebuild-state"), "{what}: {text}");
            }
            // What passed the check holds exactly what was written.
            Ok(desired) => assert!(
                desired == log,
                "{what}: opened with {} log entries other than the {} written",
                desired.len(),
                log.len()
            ),
            Err(e) => panic!("{what}: not reported as damage: {e}"),
        }
    }

    #[test]
    fn every_overwritten_page_is_damage_or_harmless_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (good, log) = filled(dir.path());
        let pages = good.len() / PAGE;
        assert!(pages > 8, "{pages}");
        let mut damaged = 0;
        for page in 0..pages {
            for fill in [0x00u8, 0x5a, 0xff] {
                let mut bad = good.clone();
                bad[page * PAGE..(page + 1) * PAGE].fill(fill);
                let r = reopen(&bad);
                damaged += usize::from(r.is_err());
                assert_damaged(r, &format!("page {page} filled with {fill:#x}"), &log);
            }
        }
        // The pages that hold the data are among them.
        assert!(damaged > 0);
    }

    #[test]
    fn a_truncated_store_is_damage_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (good, log) = filled(dir.path());
        for len in [
            0,
            1,
            100,
            PAGE,
            good.len() / 3,
            good.len() / 2,
            good.len() - PAGE,
            good.len() - 1,
        ] {
            let r = reopen(&good[..len]);
            assert_damaged(r, &format!("truncated to {len} bytes"), &log);
        }
        let r = reopen(&good[..good.len() / 2]);
        assert!(matches!(r, Err(StateError::Damaged { .. })), "{r:?}");
    }

    #[test]
    fn rebuild_moves_the_file_aside_and_never_reuses_a_restart_count() {
        let dir = tempfile::tempdir().unwrap();
        let (good, _) = filled(dir.path());
        let path = dir.path().join(FILE);
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        assert!(Loaded::open(dir.path()).is_err());
        let aside = rebuild(dir.path()).unwrap().unwrap();
        assert_eq!(std::fs::read(&aside).unwrap(), &good[..good.len() / 2]);
        let l = Loaded::open(dir.path()).unwrap();
        assert!(l.desired.is_empty() && l.events.outbox.is_empty());
        // Not 0..: the counts the old file had handed out.
        assert!(l.restarts > 1 << 20, "{}", l.restarts);
        drop(l);
        // A directory without a store rebuilds to an empty one too.
        let fresh = tempfile::tempdir().unwrap();
        assert!(rebuild(fresh.path()).unwrap().is_none());
        assert!(Loaded::open(fresh.path()).unwrap().desired.is_empty());
    }
}
