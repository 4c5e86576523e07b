//! The address book: where members and candidates can be dialed.
//!
//! Two bounded tables, each least-recently-used:
//!
//! - **candidates**: addresses discovery providers found (static
//!   addresses, overlay IPs, mDNS answers), with the member they name when
//!   they name one. The node dials them while nothing is connected there.
//!   Providers find the same addresses every round, which refreshes them; when
//!   the table is full, the one refreshed longest ago makes room.
//! - **members**: addresses an *admitted* member says it listens on
//!   (identify, Kademlia). A peer that is not admitted cannot put anything
//!   here, so no stranger can poison where this node dials a member. When
//!   full, the member heard from longest ago is forgotten.

use std::collections::BTreeMap;

use crate::id::NodeId;
use crate::time::Mono;

use super::io::Found;

/// Limits of the address book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookConfig {
    /// Most members with addresses. Default 1024.
    pub max_members: usize,
    /// Most addresses per member. Default 8; the oldest is dropped.
    pub max_addrs_per_member: usize,
    /// Most discovered candidates. Default 256.
    pub max_candidates: usize,
    /// Longest address, bytes. Default 256; longer ones are ignored.
    pub max_addr_len: usize,
}

impl Default for BookConfig {
    fn default() -> Self {
        Self {
            max_members: 1024,
            max_addrs_per_member: 8,
            max_candidates: 256,
            max_addr_len: 256,
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct AddressBook {
    config: BookConfig,
    members: BTreeMap<NodeId, (Vec<String>, Mono)>,
    candidates: BTreeMap<Found, Mono>,
}

impl AddressBook {
    pub(crate) fn new(config: BookConfig) -> Self {
        Self {
            config,
            members: BTreeMap::new(),
            candidates: BTreeMap::new(),
        }
    }

    /// Records (or refreshes) a discovered address.
    pub(crate) fn add_candidate(&mut self, found: Found, now: Mono) {
        if found.addr.len() > self.config.max_addr_len || found.addr.is_empty() {
            return;
        }
        if !self.candidates.contains_key(&found)
            && self.candidates.len() >= self.config.max_candidates.max(1)
            && let Some(oldest) = lru(&self.candidates, |t| *t)
        {
            self.candidates.remove(&oldest);
        }
        self.candidates.insert(found, now);
    }

    /// Records what an admitted member says it listens on.
    pub(crate) fn add_member(&mut self, peer: NodeId, addrs: &[String], now: Mono) {
        if !self.members.contains_key(&peer)
            && self.members.len() >= self.config.max_members.max(1)
            && let Some(oldest) = lru(&self.members, |(_, t)| *t)
        {
            self.members.remove(&oldest);
        }
        let max = self.config.max_addrs_per_member.max(1);
        let max_len = self.config.max_addr_len;
        let (list, seen) = self.members.entry(peer).or_default();
        *seen = now;
        for a in addrs.iter().filter(|a| !a.is_empty() && a.len() <= max_len) {
            if list.contains(a) {
                continue;
            }
            if list.len() >= max {
                list.remove(0);
            }
            list.push(a.clone());
        }
    }

    /// A member's known addresses.
    pub(crate) fn member(&self, peer: &NodeId) -> &[String] {
        self.members.get(peer).map_or(&[], |(a, _)| a.as_slice())
    }

    /// Forgets a member (revoked).
    pub(crate) fn forget(&mut self, peer: &NodeId) {
        self.members.remove(peer);
        self.candidates.retain(|f, _| f.peer.as_ref() != Some(peer));
    }

    /// Every candidate, in a stable order.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = &Found> {
        self.candidates.keys()
    }

    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.members.len(), self.candidates.len())
    }
}

fn lru<K: Clone + Ord, V>(map: &BTreeMap<K, V>, at: impl Fn(&V) -> Mono) -> Option<K> {
    map.iter()
        .min_by_key(|(_, v)| at(v))
        .map(|(k, _)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(i: u32) -> Found {
        Found {
            addr: format!("/ip4/127.0.0.1/udp/{i}/quic-v1"),
            peer: None,
        }
    }

    #[test]
    fn candidates_are_lru_bounded() {
        let mut b = AddressBook::new(BookConfig {
            max_candidates: 2,
            ..BookConfig::default()
        });
        b.add_candidate(found(1), Mono(0));
        b.add_candidate(found(2), Mono(1));
        b.add_candidate(found(1), Mono(2)); // refreshed
        b.add_candidate(found(3), Mono(3)); // evicts 2, the stalest
        let left: Vec<&Found> = b.candidates().collect();
        assert_eq!(left, vec![&found(1), &found(3)]);
    }

    #[test]
    fn member_addresses_are_bounded() {
        let mut b = AddressBook::new(BookConfig {
            max_members: 1,
            max_addrs_per_member: 2,
            ..BookConfig::default()
        });
        let (x, y) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let addrs: Vec<String> = (0..5).map(|i| format!("/a/{i}")).collect();
        b.add_member(x, &addrs, Mono(0));
        assert_eq!(b.member(&x), ["/a/3", "/a/4"]);
        b.add_member(y, &addrs[..1], Mono(1));
        assert_eq!(b.sizes().0, 1);
        assert!(b.member(&x).is_empty(), "x was heard from longest ago");
        b.add_member(y, &["x".repeat(300)], Mono(2));
        assert_eq!(b.member(&y), ["/a/0"], "too long: ignored");
    }
}
