//! Hybrid logical clocks (Kulkarni et al. 2014): timestamps that follow wall
//! time when clocks agree and still order causally when they do not.
//!
//! An [`Hlc`] is `(wall_ms, counter)`: the largest wall time seen (local or
//! remote, unix milliseconds) and a counter that orders events within one
//! millisecond. [`Hlc::tick`] stamps a local event, [`Hlc::observe`] merges a
//! remote stamp, refusing one more than `max_drift_ms` ahead of the local
//! clock (a peer with a wild clock must not drag the mesh into the future).
//! Time is an argument: nothing here reads a clock.
//!
//! [`Stamp`] adds the signer, giving the total order `(hlc, signer DID bytes)`
//! that resolves two writes of the same name identically on every node.

use crate::id::NodeId;

/// A hybrid logical timestamp; ordered by `wall_ms`, then `counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hlc {
    /// Wall-clock milliseconds since the unix epoch (the largest seen).
    pub wall_ms: u64,
    /// Orders events within the same `wall_ms`.
    pub counter: u32,
}

/// A remote timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlcError {
    /// The remote timestamp is too far ahead of the local clock.
    #[error(
        "timestamp {remote_ms} ms is more than {max_drift_ms} ms ahead of local time {now_ms} ms"
    )]
    TooFarAhead {
        /// The remote wall time.
        remote_ms: u64,
        /// The local wall time.
        now_ms: u64,
        /// The bound.
        max_drift_ms: u64,
    },
}

impl Hlc {
    /// A timestamp.
    pub const fn new(wall_ms: u64, counter: u32) -> Self {
        Self { wall_ms, counter }
    }

    /// Advances the clock for a local event at wall time `now_ms` and returns
    /// the new timestamp, strictly greater than every earlier one.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        if now_ms > self.wall_ms {
            *self = Hlc::new(now_ms, 0);
        } else {
            self.bump();
        }
        *self
    }

    /// Merges a remote timestamp received at wall time `now_ms` and returns the
    /// new local timestamp, strictly greater than both. A remote timestamp more
    /// than `max_drift_ms` ahead of `now_ms` is refused and changes nothing.
    pub fn observe(
        &mut self,
        remote: Hlc,
        now_ms: u64,
        max_drift_ms: u64,
    ) -> Result<Hlc, HlcError> {
        check_drift(remote, now_ms, max_drift_ms)?;
        let wall = self.wall_ms.max(remote.wall_ms).max(now_ms);
        *self = if wall == self.wall_ms && wall == remote.wall_ms {
            Hlc::new(wall, self.counter.max(remote.counter))
        } else if wall == self.wall_ms {
            *self
        } else if wall == remote.wall_ms {
            remote
        } else {
            // Wall time moved past both: start the counter afresh.
            return Ok(self.tick(now_ms));
        };
        self.bump();
        Ok(*self)
    }

    /// The next counter value; on the (2^32)th event in one millisecond the
    /// clock borrows a millisecond from the future instead of wrapping.
    fn bump(&mut self) {
        match self.counter.checked_add(1) {
            Some(c) => self.counter = c,
            None => *self = Hlc::new(self.wall_ms.saturating_add(1), 0),
        }
    }
}

/// Refuses `remote` if it is more than `max_drift_ms` ahead of `now_ms`.
pub fn check_drift(remote: Hlc, now_ms: u64, max_drift_ms: u64) -> Result<(), HlcError> {
    if remote.wall_ms > now_ms.saturating_add(max_drift_ms) {
        return Err(HlcError::TooFarAhead {
            remote_ms: remote.wall_ms,
            now_ms,
            max_drift_ms,
        });
    }
    Ok(())
}

/// A write's position in the total order: HLC first, then the signer's
/// public-key bytes (which is what the `did:key` encodes). The greatest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp {
    /// When.
    pub hlc: Hlc,
    /// Who signed.
    pub signer: NodeId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_monotonic_and_follows_wall_time() {
        let mut c = Hlc::default();
        assert_eq!(c.tick(100), Hlc::new(100, 0));
        assert_eq!(c.tick(100), Hlc::new(100, 1));
        // The wall clock stepping back does not move the HLC back.
        assert_eq!(c.tick(50), Hlc::new(100, 2));
        assert_eq!(c.tick(200), Hlc::new(200, 0));
    }

    #[test]
    fn observe_exceeds_both_and_bounds_drift() {
        let mut c = Hlc::new(100, 5);
        assert_eq!(c.observe(Hlc::new(100, 9), 90, 1000), Ok(Hlc::new(100, 10)));
        assert_eq!(c.observe(Hlc::new(150, 2), 120, 1000), Ok(Hlc::new(150, 3)));
        assert_eq!(c.observe(Hlc::new(10, 0), 300, 1000), Ok(Hlc::new(300, 0)));
        let before = c;
        assert!(matches!(
            c.observe(Hlc::new(5_000, 0), 300, 1000),
            Err(HlcError::TooFarAhead { .. })
        ));
        assert_eq!(c, before, "a refused timestamp changes nothing");
    }

    #[test]
    fn counter_overflow_borrows_a_millisecond() {
        let mut c = Hlc::new(7, u32::MAX);
        assert_eq!(c.tick(7), Hlc::new(8, 0));
    }

    #[test]
    fn stamps_order_by_clock_then_signer() {
        let a = Stamp {
            hlc: Hlc::new(1, 0),
            signer: NodeId::from_bytes([9; 32]),
        };
        let b = Stamp {
            hlc: Hlc::new(1, 1),
            signer: NodeId::from_bytes([1; 32]),
        };
        let c = Stamp {
            hlc: Hlc::new(1, 1),
            signer: NodeId::from_bytes([2; 32]),
        };
        assert!(a < b && b < c);
    }
}
