//! A process-wide, bounded cache of verification results: public keys
//! already decompressed and checked (by their bytes, and by the `did:key`
//! text they were parsed from, which skips base58 too), and signatures
//! already verified, keyed by BLAKE3 of exactly the bytes that were checked. Verifying the same
//! bytes always gives the same answer, so a hit returns what a fresh check
//! would, without the curve arithmetic. Only successes are cached (a
//! failure is cheap to repeat and must not be made sticky by anyone).
//!
//! Two generations of at most [`capacity`] entries each: when the current
//! one fills, it becomes the previous one and the oldest is dropped, so
//! memory stays bounded and recently used entries survive. A simulator
//! running thousands of node brains in one process raises the capacity
//! ([`set_capacity`]) so that each distinct record is verified once, not
//! once per simulated node.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ed25519_dalek::VerifyingKey;

/// Entries per generation by default.
pub const DEFAULT_CAPACITY: usize = 4096;

static CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_CAPACITY);

struct Gen<T> {
    current: T,
    previous: T,
}

type Keys = Gen<HashMap<[u8; 32], VerifyingKey>>;

static SIGS: Mutex<Option<Gen<HashSet<[u8; 32]>>>> = Mutex::new(None);
static KEYS: Mutex<Option<Keys>> = Mutex::new(None);
type Dids = Gen<HashMap<Box<str>, VerifyingKey>>;

static DIDS: Mutex<Option<Dids>> = Mutex::new(None);

/// Entries each generation holds now.
pub fn capacity() -> usize {
    CAPACITY.load(Ordering::Relaxed)
}

/// Sets the entries per generation (0 turns the cache off).
pub fn set_capacity(n: usize) {
    CAPACITY.store(n, Ordering::Relaxed);
}

pub(crate) fn signature_key(public: &[u8; 32], sig: &[u8; 64], msg: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(public);
    h.update(sig);
    h.update(msg);
    *h.finalize().as_bytes()
}

pub(crate) fn verified(key: &[u8; 32]) -> bool {
    if capacity() == 0 {
        return false;
    }
    let Ok(g) = SIGS.lock() else { return false };
    g.as_ref()
        .is_some_and(|g| g.current.contains(key) || g.previous.contains(key))
}

pub(crate) fn remember_verified(key: [u8; 32]) {
    let cap = capacity();
    if cap == 0 {
        return;
    }
    let Ok(mut g) = SIGS.lock() else { return };
    let g = g.get_or_insert_with(|| Gen {
        current: HashSet::new(),
        previous: HashSet::new(),
    });
    if g.current.len() >= cap {
        g.previous = std::mem::take(&mut g.current);
    }
    g.current.insert(key);
}

pub(crate) fn key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    if capacity() == 0 {
        return None;
    }
    let g = KEYS.lock().ok()?;
    let g = g.as_ref()?;
    g.current
        .get(bytes)
        .or_else(|| g.previous.get(bytes))
        .copied()
}

pub(crate) fn remember_key(bytes: [u8; 32], key: VerifyingKey) {
    let cap = capacity();
    if cap == 0 {
        return;
    }
    let Ok(mut g) = KEYS.lock() else { return };
    let g = g.get_or_insert_with(|| Gen {
        current: HashMap::new(),
        previous: HashMap::new(),
    });
    if g.current.len() >= cap {
        g.previous = std::mem::take(&mut g.current);
    }
    g.current.insert(bytes, key);
}

/// The key a `did:key` text was parsed to before, if remembered.
pub(crate) fn did_key(text: &str) -> Option<VerifyingKey> {
    if capacity() == 0 {
        return None;
    }
    let g = DIDS.lock().ok()?;
    let g = g.as_ref()?;
    g.current
        .get(text)
        .or_else(|| g.previous.get(text))
        .copied()
}

/// Remembers that `text` parsed to the valid key `key`.
pub(crate) fn remember_did(text: &str, key: VerifyingKey) {
    let cap = capacity();
    if cap == 0 {
        return;
    }
    let Ok(mut g) = DIDS.lock() else { return };
    let g = g.get_or_insert_with(|| Gen {
        current: HashMap::new(),
        previous: HashMap::new(),
    });
    if g.current.len() >= cap {
        g.previous = std::mem::take(&mut g.current);
    }
    g.current.insert(text.into(), key);
}
