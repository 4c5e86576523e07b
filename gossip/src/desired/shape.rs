//! The shape of a desired-state update, checked before yrs reads it.
//!
//! Every update a member sends is bytes of the yrs v1 update format, and
//! nothing in them is signed but the records they carry: the structure
//! around the records (items, origins, parents, delete sets) is whatever
//! the sender wrote. yrs trusts that structure more than a mesh can: the
//! `desired` fuzz target found hostile updates that make `apply_update`
//! index out of bounds (a panic, caught) and read freed memory (not
//! catchable). So an update is walked here first and refused unless it has
//! the shape honest replicas produce:
//!
//! - items only (no GC or skip blocks: the document's root maps are never
//!   deleted, so no honest store holds GC blocks, and skips come only from
//!   merging updates, which no replica does);
//! - an item's parent is one of the document's root maps by name, or copied
//!   from its origin (never a nested type by id: the document has none);
//! - content is deleted (a tombstone) or a list of binary buffers (each a
//!   signed record), never strings, JSON, embeds, formats, types, documents
//!   or nested maps;
//! - every count fits in the bytes that follow it, and nothing trails the
//!   delete set.

/// Why an update does not have the shape of one.
pub(super) type ShapeError = String;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn u8(&mut self) -> Result<u8, ShapeError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("ends early at byte {}", self.at))?;
        self.at += 1;
        Ok(b)
    }

    /// A lib0 variable-length unsigned integer (at most 64 bits).
    fn var(&mut self) -> Result<u64, ShapeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!(
            "an integer longer than 64 bits at byte {}",
            self.at
        ))
    }

    /// A count of things each at least `min` bytes long.
    fn count(&mut self, what: &str, min: usize) -> Result<u64, ShapeError> {
        let at = self.at;
        let n = self.var()?;
        if n > (self.left() / min.max(1)) as u64 {
            return Err(format!(
                "{what} at byte {at} declares {n} entries in {} bytes",
                self.left()
            ));
        }
        Ok(n)
    }

    fn buf(&mut self) -> Result<&'a [u8], ShapeError> {
        let at = self.at;
        let n = self.var()?;
        if n > self.left() as u64 {
            return Err(format!("a buffer at byte {at} longer than what follows"));
        }
        let start = self.at;
        self.at += n as usize;
        Ok(&self.bytes[start..self.at])
    }
}

const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const GC: u8 = 0;
const SKIP: u8 = 10;
const CONTENT_DELETED: u8 = 1;
const CONTENT_ANY: u8 = 8;
const ANY_BUFFER: u8 = 116;

/// Checks that `bytes` is a yrs v1 state vector: a count of clients that
/// fits in what follows, each a client id and a clock, nothing after.
pub(super) fn check_state_vector(bytes: &[u8]) -> Result<(), ShapeError> {
    let mut c = Cursor { bytes, at: 0 };
    for _ in 0..c.count("the client count", 2)? {
        c.var()?;
        c.var()?;
    }
    if c.left() > 0 {
        return Err(format!("{} bytes after the state vector", c.left()));
    }
    Ok(())
}

/// Checks that `bytes` is a yrs v1 update of the document's shape, whose
/// parents are among `roots`.
pub(super) fn check_update(bytes: &[u8], roots: &[&str]) -> Result<(), ShapeError> {
    let mut c = Cursor { bytes, at: 0 };
    // Each client: a block count, its id and its first clock.
    let clients = c.count("the client count", 3)?;
    for _ in 0..clients {
        let blocks = c.count("a block count", 1)?;
        c.var()?;
        c.var()?;
        for _ in 0..blocks {
            block(&mut c, roots)?;
        }
    }
    // The delete set: clients, each with ranges of (clock, length).
    let clients = c.count("the delete set", 2)?;
    for _ in 0..clients {
        c.var()?;
        let ranges = c.count("a delete range count", 2)?;
        for _ in 0..ranges {
            c.var()?;
            c.var()?;
        }
    }
    if c.left() > 0 {
        return Err(format!("{} bytes after the delete set", c.left()));
    }
    Ok(())
}

fn block(c: &mut Cursor<'_>, roots: &[&str]) -> Result<(), ShapeError> {
    let at = c.at;
    let info = c.u8()?;
    match info {
        GC => return Err(format!("a GC block at byte {at}")),
        SKIP => return Err(format!("a skip block at byte {at}")),
        _ => {}
    }
    if info & HAS_ORIGIN != 0 {
        c.var()?;
        c.var()?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        c.var()?;
        c.var()?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        // The parent is written out: a root type by name, or a type by id.
        if c.var()? != 1 {
            return Err(format!(
                "an item at byte {at} whose parent is a nested type"
            ));
        }
        let name = c.buf()?;
        if !roots.iter().any(|r| r.as_bytes() == name) {
            return Err(format!(
                "an item at byte {at} in an unknown root {:?}",
                String::from_utf8_lossy(&name[..name.len().min(64)])
            ));
        }
        if info & HAS_PARENT_SUB != 0 {
            c.buf()?;
        }
    }
    match info & 0b1111 {
        CONTENT_DELETED => {
            c.var()?;
        }
        CONTENT_ANY => {
            let values = c.count("an item's value count", 2)?;
            for _ in 0..values {
                let vat = c.at;
                if c.u8()? != ANY_BUFFER {
                    return Err(format!(
                        "a value at byte {vat} that is not a record's bytes"
                    ));
                }
                c.buf()?;
            }
        }
        other => return Err(format!("an item at byte {at} with content of kind {other}")),
    }
    Ok(())
}
