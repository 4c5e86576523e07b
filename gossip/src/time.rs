//! Typed time: the two clocks a node reads, as distinct types so that one
//! cannot be passed where the other is meant.
//!
//! - [`Mono`]: milliseconds of a monotonic clock (the driver's `Instant`
//!   since start, or the simulator's virtual clock). Every timer of the node
//!   (probes, retries, bans, rate limits) runs on it.
//! - [`Unix`]: milliseconds since the unix epoch (wall time, which may jump
//!   and differ between nodes). Only what is about wall time uses it: hybrid
//!   logical clocks, token expiry, status sequence numbers, log timestamps.
//!
//! Neither is ever read from the OS inside `omega-gossip`: the driver passes
//! both, in a [`Now`], with every input.

use std::fmt;

/// Monotonic milliseconds (any origin; only differences matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mono(pub u64);

/// Wall-clock milliseconds since the unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Unix(pub u64);

/// Both clocks at the moment of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// The monotonic clock.
    pub mono: Mono,
    /// The wall clock.
    pub unix: Unix,
}

impl Mono {
    /// `ms` milliseconds later (saturating).
    #[must_use]
    pub const fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn since(self, earlier: Mono) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Unix {
    /// Whole seconds since the epoch (what UCAN expiries are written in).
    pub const fn secs(self) -> u64 {
        self.0 / 1000
    }
}

impl fmt::Display for Mono {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl fmt::Display for Unix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix {}ms", self.0)
    }
}
