//! The piggyback queue: updates waiting to be disseminated, each sent a bounded
//! number of times, least-sent and newest first (memberlist's
//! `TransmitLimitedQueue`). A newer update about a member replaces the older one.

use std::collections::BTreeMap;

use crate::id::NodeId;

/// Orders items: fewest transmits first, then newest first.
type Key = (u32, u64);

/// The smallest encoded update (a suspect or dead claim).
const MIN_UPDATE_LEN: usize = 1 + 32 + 1 + 32;

#[derive(Debug)]
struct Item {
    subject: NodeId,
    bytes: Vec<u8>,
}

/// A bounded queue of encoded updates.
#[derive(Debug, Default)]
pub(crate) struct Broadcasts {
    items: BTreeMap<Key, Item>,
    by_subject: BTreeMap<NodeId, Key>,
    counter: u64,
}

impl Broadcasts {
    /// Queues `bytes` about `subject`, replacing any older update about it. When
    /// the queue holds `max` items, the most-sent oldest one is dropped.
    pub(crate) fn push(&mut self, subject: NodeId, bytes: Vec<u8>, max: usize) {
        if let Some(old) = self.by_subject.remove(&subject) {
            self.items.remove(&old);
        }
        self.counter += 1;
        let key = (0, u64::MAX - self.counter);
        self.items.insert(key, Item { subject, bytes });
        self.by_subject.insert(subject, key);
        while self.items.len() > max.max(1) {
            if let Some((_, item)) = self.items.pop_last() {
                self.by_subject.remove(&item.subject);
            }
        }
    }

    /// Takes updates that fit in `budget` bytes (at most `max_count`), counting
    /// one transmit each; updates sent `limit` times are dropped. Looks at most
    /// at `max_count + 16` items so a queue of large items costs bounded work.
    pub(crate) fn take(&mut self, budget: usize, max_count: usize, limit: u32) -> Vec<Vec<u8>> {
        let mut left = budget;
        let mut chosen = Vec::new();
        for (key, item) in self.items.iter().take(max_count.saturating_add(16)) {
            if chosen.len() >= max_count || left < MIN_UPDATE_LEN {
                break;
            }
            if item.bytes.len() <= left {
                left -= item.bytes.len();
                chosen.push(*key);
            }
        }
        let mut out = Vec::with_capacity(chosen.len());
        for key in chosen {
            let Some(item) = self.items.remove(&key) else {
                continue;
            };
            out.push(item.bytes.clone());
            let sent = key.0 + 1;
            if sent >= limit {
                self.by_subject.remove(&item.subject);
            } else {
                let new_key = (sent, key.1);
                self.by_subject.insert(item.subject, new_key);
                self.items.insert(new_key, item);
            }
        }
        out
    }

    /// Number of queued updates.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Approximate bytes held (for memory accounting).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.items
            .values()
            .map(|i| i.bytes.capacity() + 96)
            .sum::<usize>()
            + self.by_subject.len() * 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn replaces_limits_and_bounds() {
        let mut q = Broadcasts::default();
        q.push(id(1), vec![1; 10], 3);
        q.push(id(1), vec![2; 10], 3);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(100, 10, 2), vec![vec![2; 10]]);
        assert_eq!(q.take(100, 10, 2), vec![vec![2; 10]]);
        assert_eq!(q.len(), 0, "sent `limit` times, then dropped");
        for b in 0..5 {
            q.push(id(b), vec![b; 70], 3);
        }
        assert_eq!(q.len(), 3, "bounded");
        // Budget: only two of 70 bytes fit in 150.
        assert_eq!(q.take(150, 10, 5).len(), 2);
        // Least-sent first: the third item comes next.
        assert_eq!(q.take(70, 10, 5), vec![vec![2; 70]]);
    }
}
