//! Per-peer defences that outlive a connection: strikes and bans with
//! expiry, and token buckets for every rate a peer can make this node spend
//! (updates it sends, bytes anti-entropy and image serving send back).
//! A peer that keeps sending past a rate is struck: every
//! [`GuardConfig::flood_strike`] refusals cost it one strike, so a flood
//! ends in a ban instead of costing the node its checks for ever.
//!
//! One bounded table keyed by the transport-authenticated [`NodeId`]. An
//! entry stays after its peer disconnects, so reconnecting neither clears a
//! strike nor refills a bucket. When the table is full, the entry seen
//! longest ago is forgotten (a banned one only when every entry is banned).

use std::collections::{BTreeMap, BTreeSet};

use crate::id::NodeId;
use crate::time::Mono;

/// A token bucket in core time: `rate` tokens a second, at most `burst`.
/// Integer arithmetic (milli-tokens), so every platform agrees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    milli: u64,
    last: Mono,
}

/// A rate: tokens per second, and the most that may accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: u64,
    /// Largest balance (also the starting balance).
    pub burst: u64,
}

impl Bucket {
    fn full(rate: Rate, now: Mono) -> Self {
        Self {
            milli: rate.burst.saturating_mul(1000),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Mono) {
        let elapsed = now.since(self.last);
        self.last = now;
        let cap = rate.burst.saturating_mul(1000);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(rate.per_sec))
            .min(cap);
    }

    /// Takes `n` tokens if there are that many.
    fn take(&mut self, n: u64, rate: Rate, now: Mono) -> bool {
        self.refill(rate, now);
        let need = n.saturating_mul(1000);
        if self.milli >= need {
            self.milli -= need;
            true
        } else {
            false
        }
    }
}

/// What a peer can spend, each with its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Spend {
    /// Desired-state updates and anti-entropy requests it sends (count).
    Updates,
    /// Bytes of anti-entropy replies sent to it.
    StateBytes,
    /// Image requests it sends (count).
    ImageRequests,
    /// Bytes of image chunks sent to it.
    ImageBytes,
    /// Status announcements it authored (count).
    Statuses,
    /// Join requests it sends (count).
    Joins,
    /// Anti-entropy replies with content sent to it (count).
    StateAnswers,
    /// Membership messages it sends (count).
    Swim,
}

/// The limits of the per-peer guard: strikes, bans and rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Strikes within `strike_ttl` that ban a peer. Default 3.
    pub max_strikes: u32,
    /// How long a strike counts, ms. Default 600 000 (10 min).
    pub strike_ttl: u64,
    /// The first ban's length, ms; each further ban of the same peer
    /// doubles it. Default 60 000.
    pub ban: u64,
    /// The longest ban, ms. Default 3 600 000.
    pub max_ban: u64,
    /// Most peers remembered. Default 4096.
    pub max_peers: usize,
    /// Desired-state updates and anti-entropy requests accepted per peer.
    /// Default 50/s, burst 100.
    pub updates: Rate,
    /// Anti-entropy reply bytes sent per peer. Default 1 MiB/s, burst 8 MiB
    /// + 64 KiB (one whole document diff).
    pub state_bytes: Rate,
    /// Image requests served per peer. Default 64/s, burst 128.
    pub image_requests: Rate,
    /// Image bytes sent per peer. Default 16 MiB/s, burst 16 MiB.
    pub image_bytes: Rate,
    /// Status announcements taken per author (a node announces on every
    /// change of what it runs, and every `status_republish`). Default
    /// 10/s, burst 50; beyond it they are ignored.
    pub statuses: Rate,
    /// Join requests answered per peer (one per connection, or a resend
    /// after a lost answer). Default 2/s, burst 10; beyond it refused
    /// unchecked.
    pub joins: Rate,
    /// Anti-entropy replies with content sent per peer. An honest member
    /// asks once per `anti_entropy_interval`, and applies what it got so
    /// its next state vector differs; a peer asking again and again for
    /// everything would make this node send a whole document per request.
    /// Default 2/s, burst 4; beyond it the reply is empty. With the byte
    /// budget this bounds what one peer gets over `t` seconds to
    /// `min(state_bytes.burst + state_bytes.per_sec·t, (4 + 2t)·document)`.
    pub state_answers: Rate,
    /// Membership (SWIM) messages handled per peer. An honest member sends
    /// a few per protocol period (pings, acks, indirect probes, joins and
    /// syncs). Default 100/s, burst 200; beyond it dropped unread (SWIM
    /// tolerates loss).
    pub swim: Rate,
    /// Refusals past any of a peer's rates that cost it one strike (a
    /// flood: `max_strikes` × this many ban it). Counted only for what a
    /// peer sent itself: its requests and gossip it authored (a relayed
    /// flood is the author's, not the relay's). Default 1000.
    pub flood_strike: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            max_strikes: 3,
            strike_ttl: 600_000,
            ban: 60_000,
            max_ban: 3_600_000,
            max_peers: 4096,
            updates: Rate {
                per_sec: 50,
                burst: 100,
            },
            state_bytes: Rate {
                per_sec: 1 << 20,
                burst: (8 << 20) + (64 << 10),
            },
            image_requests: Rate {
                per_sec: 64,
                burst: 128,
            },
            image_bytes: Rate {
                per_sec: 16 << 20,
                burst: 16 << 20,
            },
            statuses: Rate {
                per_sec: 10,
                burst: 50,
            },
            joins: Rate {
                per_sec: 2,
                burst: 10,
            },
            state_answers: Rate {
                per_sec: 2,
                burst: 4,
            },
            swim: Rate {
                per_sec: 100,
                burst: 200,
            },
            flood_strike: 1000,
        }
    }
}

impl GuardConfig {
    fn rate(&self, spend: Spend) -> Rate {
        match spend {
            Spend::Updates => self.updates,
            Spend::StateBytes => self.state_bytes,
            Spend::ImageRequests => self.image_requests,
            Spend::ImageBytes => self.image_bytes,
            Spend::Statuses => self.statuses,
            Spend::Joins => self.joins,
            Spend::StateAnswers => self.state_answers,
            Spend::Swim => self.swim,
        }
    }
}

#[derive(Debug)]
struct Entry {
    strikes: Vec<Mono>,
    bans: u32,
    banned_until: Option<Mono>,
    buckets: BTreeMap<Spend, Bucket>,
    /// Refusals past a rate since the last flood strike.
    over: u32,
    last_seen: Mono,
}

/// The outcome of a strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Struck {
    /// Strikes within the window, this one included.
    pub(crate) strikes: u32,
    /// Set when this strike banned the peer.
    pub(crate) banned_until: Option<Mono>,
}

/// Strikes, bans and buckets per peer; see the module docs.
#[derive(Debug)]
pub(crate) struct Guard {
    config: GuardConfig,
    peers: BTreeMap<NodeId, Entry>,
    /// Bans in force, by end (so expiry never scans every peer).
    bans: BTreeSet<(Mono, NodeId)>,
}

impl Guard {
    pub(crate) fn new(config: GuardConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            bans: BTreeSet::new(),
        }
    }

    fn entry(&mut self, peer: NodeId, now: Mono) -> &mut Entry {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_peers.max(1) {
            self.evict();
        }
        let e = self.peers.entry(peer).or_insert_with(|| Entry {
            strikes: Vec::new(),
            bans: 0,
            banned_until: None,
            buckets: BTreeMap::new(),
            over: 0,
            last_seen: now,
        });
        e.last_seen = e.last_seen.max(now);
        e
    }

    /// Forgets the entry seen longest ago, preferring one that is not banned.
    fn evict(&mut self) {
        let victim = self
            .peers
            .iter()
            .min_by_key(|(id, e)| (e.banned_until.is_some(), e.last_seen, **id))
            .map(|(id, _)| *id);
        if let Some(id) = victim
            && let Some(e) = self.peers.remove(&id)
            && let Some(t) = e.banned_until
        {
            self.bans.remove(&(t, id));
        }
    }

    /// Records a strike against `peer`; the `max_strikes`th within
    /// `strike_ttl` bans it.
    pub(crate) fn strike(&mut self, peer: NodeId, now: Mono) -> Struck {
        let cfg = self.config.clone();
        let e = self.entry(peer, now);
        e.strikes.retain(|t| now.since(*t) < cfg.strike_ttl);
        e.strikes.push(now);
        let strikes = e.strikes.len() as u32;
        let mut banned_until = None;
        if strikes >= cfg.max_strikes && e.banned_until.is_none() {
            let len = cfg
                .ban
                .saturating_mul(1u64 << e.bans.min(32))
                .min(cfg.max_ban);
            e.bans = e.bans.saturating_add(1);
            e.strikes.clear();
            let until = now.plus(len);
            e.banned_until = Some(until);
            banned_until = Some(until);
            self.bans.insert((until, peer));
        }
        Struck {
            strikes,
            banned_until,
        }
    }

    /// Whether `peer` is banned now.
    pub(crate) fn is_banned(&self, peer: &NodeId, now: Mono) -> bool {
        self.peers
            .get(peer)
            .and_then(|e| e.banned_until)
            .is_some_and(|t| t > now)
    }

    /// The peers banned at `now`, in id order.
    pub(crate) fn banned(&self, now: Mono) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .iter()
            .filter(move |(_, e)| e.banned_until.is_some_and(|t| t > now))
            .map(|(id, _)| *id)
    }

    /// Lifts the bans that ended by `now`; returns those peers.
    pub(crate) fn expire(&mut self, now: Mono) -> Vec<NodeId> {
        let mut out = Vec::new();
        while let Some(&(t, id)) = self.bans.first() {
            if t > now {
                break;
            }
            self.bans.pop_first();
            if let Some(e) = self.peers.get_mut(&id) {
                e.banned_until = None;
            }
            out.push(id);
        }
        out.sort();
        out
    }

    /// When the next ban ends.
    pub(crate) fn next_expiry(&self) -> Option<Mono> {
        self.bans.first().map(|(t, _)| *t)
    }

    /// Spends `n` of `peer`'s `spend` budget if it has that much.
    pub(crate) fn allow(&mut self, peer: NodeId, spend: Spend, n: u64, now: Mono) -> bool {
        let rate = self.config.rate(spend);
        self.entry(peer, now)
            .buckets
            .entry(spend)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(n, rate, now)
    }

    /// Counts one refusal past a rate of `peer`'s; returns whether it
    /// completes a flood (`flood_strike` of them: strike it).
    pub(crate) fn over_rate(&mut self, peer: NodeId, now: Mono) -> bool {
        let limit = self.config.flood_strike.max(1);
        let e = self.entry(peer, now);
        e.over = e.over.saturating_add(1);
        if e.over >= limit {
            e.over = 0;
            true
        } else {
            false
        }
    }

    /// Peers remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn strikes_ban_and_bans_expire_and_grow() {
        let mut g = Guard::new(GuardConfig::default());
        let p = id(1);
        assert_eq!(g.strike(p, Mono(0)).banned_until, None);
        assert_eq!(g.strike(p, Mono(10)).banned_until, None);
        assert_eq!(g.strike(p, Mono(20)).banned_until, Some(Mono(60_020)));
        assert!(g.is_banned(&p, Mono(60_019)));
        assert_eq!(g.next_expiry(), Some(Mono(60_020)));
        assert!(g.expire(Mono(60_019)).is_empty());
        assert_eq!(g.expire(Mono(60_020)), vec![p]);
        assert!(!g.is_banned(&p, Mono(60_020)));
        // The second ban lasts twice as long.
        for t in 0..3 {
            g.strike(p, Mono(70_000 + t));
        }
        assert!(g.is_banned(&p, Mono(70_002 + 119_999)));
        assert!(!g.is_banned(&p, Mono(70_002 + 120_000)));
    }

    #[test]
    fn old_strikes_do_not_count() {
        let mut g = Guard::new(GuardConfig::default());
        let p = id(2);
        g.strike(p, Mono(0));
        g.strike(p, Mono(1));
        assert_eq!(g.strike(p, Mono(600_001)).strikes, 1);
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let mut g = Guard::new(GuardConfig::default());
        let p = id(3);
        let mut n = 0;
        while g.allow(p, Spend::Updates, 1, Mono(0)) {
            n += 1;
        }
        assert_eq!(n, 100, "the burst");
        assert!(!g.allow(p, Spend::Updates, 1, Mono(19)));
        assert!(
            g.allow(p, Spend::Updates, 1, Mono(20)),
            "50/s: one per 20 ms"
        );
        assert!(
            g.allow(p, Spend::ImageBytes, 16 << 20, Mono(0)),
            "another budget"
        );
        assert!(!g.allow(p, Spend::ImageBytes, 1, Mono(0)));
    }

    #[test]
    fn a_flood_completes_every_flood_strike_refusals() {
        let mut g = Guard::new(GuardConfig {
            flood_strike: 3,
            ..GuardConfig::default()
        });
        let p = id(5);
        let floods: Vec<bool> = (0..7).map(|t| g.over_rate(p, Mono(t))).collect();
        assert_eq!(floods, [false, false, true, false, false, true, false]);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_bans_longest() {
        let mut g = Guard::new(GuardConfig {
            max_peers: 3,
            max_strikes: 1,
            ..GuardConfig::default()
        });
        g.strike(id(1), Mono(0));
        g.allow(id(2), Spend::Updates, 1, Mono(1));
        g.allow(id(3), Spend::Updates, 1, Mono(2));
        g.allow(id(4), Spend::Updates, 1, Mono(3));
        assert_eq!(g.len(), 3);
        assert!(g.is_banned(&id(1), Mono(4)), "the banned peer stays");
    }
}
