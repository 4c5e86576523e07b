//! Connections and admission: the join handshake both ways, the one gate
//! every other message passes, SWIM transmits waiting for a connection,
//! dialing, strikes, bans and disconnects.
//!
//! A peer is *ready* when both sides admitted each other on `/omega/join/1`
//! over a connection authenticated with the peer's key: this node checked
//! the peer's join token ([`Admitter::admit`](crate::join::Admitter::admit))
//! and the peer answered ours with `ok`. Admission lasts as long as the
//! peer has a connection; strikes and bans ([`super::guard`]) outlast it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::id::NodeId;
use crate::join::{Admitted, JoinRequest, JoinResponse, MAX_REASON_LEN, truncate};
use crate::time::Mono;

use super::Node;
use super::guard::Spend;
use super::io::{
    CommandId, ConnId, DisconnectReason, InboundId, Output, Protocol, Report, RequestId,
};
use super::report::Direction;

#[derive(Debug)]
struct Peer {
    conns: BTreeMap<ConnId, (String, Mono)>,
    admitted: Option<Admitted>,
    accepted: bool,
    join_sent: bool,
    deadline: Mono,
    closing: Option<(Mono, String)>,
    /// Addresses the peer claimed before this node admitted it: kept with
    /// the connection, entered in the address book only on admission.
    claimed: Vec<String>,
}

#[derive(Debug, Default)]
struct Queued {
    messages: VecDeque<Vec<u8>>,
    dialed: Option<Mono>,
}

/// What an outbound request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outstanding {
    Join(NodeId),
    State(NodeId),
    Chunk(CommandId),
    Events(u64),
}

/// Connected peers, SWIM messages waiting for a connection, and requests
/// in flight.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    by_id: BTreeMap<NodeId, Peer>,
    queued: BTreeMap<NodeId, Queued>,
    requests: BTreeMap<RequestId, Outstanding>,
    next_request: u64,
    reads: BTreeMap<InboundId, NodeId>,
    /// Members that refused us: not dialed again until then (at the address
    /// they were reached on, too). Bounded by `max_pending_peers`.
    refused_by: BTreeMap<NodeId, (Mono, String)>,
    /// Connected peers with a deadline (admission not complete, or closing
    /// after a refusal), by when: what [`Peers::next_deadline`] and
    /// [`Node::expire_peers`] read, so neither scans every peer.
    deadlines: BTreeSet<(Mono, NodeId)>,
    deadline_of: BTreeMap<NodeId, Mono>,
    /// Members dialed because events wait for them, and when (at most one
    /// dial per `dial_interval` each; bounded by `max_pending_peers`).
    dialed_for_events: BTreeMap<NodeId, Mono>,
}

impl Peers {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn is_connected(&self, id: &NodeId) -> bool {
        self.by_id.get(id).is_some_and(|p| !p.conns.is_empty())
    }

    pub(crate) fn connected(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.by_id
            .iter()
            .filter(|(_, p)| !p.conns.is_empty())
            .map(|(id, _)| *id)
    }

    pub(crate) fn is_admitted(&self, id: &NodeId) -> bool {
        self.by_id.get(id).is_some_and(|p| p.admitted.is_some())
    }

    pub(crate) fn is_ready(&self, id: &NodeId) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|p| p.admitted.is_some() && p.accepted && !p.conns.is_empty())
    }

    /// Members admitted both ways with an open connection, in id order.
    pub(crate) fn ready(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.by_id
            .iter()
            .filter(|(_, p)| p.admitted.is_some() && p.accepted && !p.conns.is_empty())
            .map(|(id, _)| *id)
    }

    /// Admitted peers and the token CIDs they were admitted with.
    pub(crate) fn admissions(&self) -> impl Iterator<Item = (NodeId, &Admitted)> + '_ {
        self.by_id
            .iter()
            .filter_map(|(id, p)| p.admitted.as_ref().map(|a| (*id, a)))
    }

    pub(crate) fn dial_failed(&mut self, id: &NodeId) {
        self.queued.remove(id);
    }

    fn refused_us(&self, id: &NodeId, now: Mono) -> bool {
        self.refused_by
            .get(id)
            .is_some_and(|(until, _)| *until > now)
    }

    fn refused_addr(&self, addr: &str, now: Mono) -> bool {
        self.refused_by
            .values()
            .any(|(until, a)| *until > now && a == addr)
    }

    /// The earliest admission deadline or refusal grace end.
    pub(crate) fn next_deadline(&self) -> Option<Mono> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Re-files `id` in the deadline index after a change to it.
    fn touch(&mut self, id: NodeId) {
        let due = self
            .by_id
            .get(&id)
            .filter(|p| !p.conns.is_empty())
            .and_then(|p| {
                let ready = p.admitted.is_some() && p.accepted;
                let deadline = (!ready).then_some(p.deadline);
                match (deadline, &p.closing) {
                    (Some(d), Some((c, _))) => Some(d.min(*c)),
                    (d, c) => d.or(c.as_ref().map(|(c, _)| *c)),
                }
            });
        if let Some(old) = self.deadline_of.remove(&id) {
            self.deadlines.remove(&(old, id));
        }
        if let Some(t) = due {
            self.deadline_of.insert(id, t);
            self.deadlines.insert((t, id));
        }
    }

    /// Peers whose deadline has passed at `now`.
    fn due(&self, now: Mono) -> Vec<NodeId> {
        self.deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect()
    }

    pub(crate) fn request_id(&mut self, what: Outstanding) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.requests.insert(id, what);
        id
    }

    pub(crate) fn take_request(&mut self, id: RequestId) -> Option<Outstanding> {
        self.requests.remove(&id)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len() + self.reads.len()
    }

    pub(crate) fn add_read(&mut self, id: InboundId, from: NodeId) {
        self.reads.insert(id, from);
    }

    pub(crate) fn take_read(&mut self, id: InboundId) -> Option<NodeId> {
        self.reads.remove(&id)
    }

    fn forget(&mut self, id: &NodeId) {
        self.by_id.remove(id);
        self.queued.remove(id);
        self.touch(*id);
    }
}

impl Node {
    pub(super) fn on_listening(&mut self, addr: String) {
        if self.listen.contains(&addr) || self.listen.len() >= self.config.limits.max_listen {
            return;
        }
        self.listen.push(addr);
        let max = self.config.membership.limits.max_addresses;
        let max_len = self.config.membership.limits.max_address_len;
        let addrs: Vec<String> = self
            .listen
            .iter()
            .filter(|a| !a.starts_with("/ip4/0.0.0.0/") && !a.starts_with("/ip6/::/"))
            .filter(|a| a.len() <= max_len)
            .take(max)
            .cloned()
            .collect();
        if addrs == self.profile.addresses {
            return;
        }
        self.profile.addresses = addrs;
        // Our own profile passed validation at start; addresses are bounded above.
        let _ = self
            .membership
            .update_profile(self.profile.clone(), self.now.mono.0);
    }

    pub(super) fn on_connection_up(&mut self, peer: NodeId, conn: ConnId, remote: String) {
        let now = self.now.mono;
        if peer == self.me {
            return;
        }
        if self.guard.is_banned(&peer, now) {
            self.emit(Output::Ban { peer });
            return;
        }
        let timeout = self.config.timers.admission_timeout;
        let stale_after = self.config.timers.stale_connection;
        let p = self.peers.by_id.entry(peer).or_insert_with(|| Peer {
            conns: BTreeMap::new(),
            admitted: None,
            accepted: false,
            join_sent: false,
            deadline: now.plus(timeout),
            closing: None,
            claimed: Vec::new(),
        });
        // A new connection next to one that has lived a while is a restarted
        // peer whose old connection still looks open here (QUIC notices only
        // at its idle timeout): requests would go down the dead one. Drop the
        // peer entirely; both sides redial and start afresh.
        let stale = p
            .conns
            .values()
            .any(|(_, since)| now.since(*since) > stale_after);
        p.conns.insert(conn, (remote, now));
        self.peers.touch(peer);
        if stale {
            self.peers.forget(&peer);
            self.disconnect(peer, DisconnectReason::Stale);
            return;
        }
        // Queued SWIM messages wait for admission both ways (`on_ready`).
        self.send_join(peer);
    }

    pub(super) fn on_connection_down(&mut self, peer: NodeId, conn: ConnId) {
        let Some(p) = self.peers.by_id.get_mut(&peer) else {
            return;
        };
        p.conns.remove(&conn);
        if p.conns.is_empty() {
            self.peers.forget(&peer);
        }
        self.peers.touch(peer);
    }

    fn send_join(&mut self, peer: NodeId) {
        let Some(p) = self.peers.by_id.get_mut(&peer) else {
            return;
        };
        if p.join_sent {
            return;
        }
        p.join_sent = true;
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut self.rng, &mut nonce);
        let request = match &self.token {
            Some(t) => t.invoke(
                &self.key.did(),
                &self.profile.name,
                self.profile.substrate,
                self.now.unix.secs(),
                nonce.to_vec(),
            ),
            None => Ok(JoinRequest::default()),
        };
        // Signing our own invocation fails only for a malformed token,
        // which `JoinToken::decode` refused already: then present none.
        let bytes = request.unwrap_or_default().to_bytes();
        let id = self.peers.request_id(Outstanding::Join(peer));
        self.emit(Output::Request {
            to: peer,
            protocol: Protocol::Join,
            id,
            bytes,
        });
    }

    pub(super) fn on_join_request(&mut self, from: NodeId, id: InboundId, bytes: &[u8]) {
        if !self.spend(from, Spend::Joins, 1, true) {
            let response = JoinResponse {
                ok: false,
                reason: "rate limited: too many join requests; retry later".into(),
            };
            self.emit(Output::Respond {
                id,
                bytes: response.to_bytes(),
            });
            return;
        }
        let verdict = JoinRequest::from_bytes(bytes).and_then(|r| {
            self.admitter
                .admit(&from, &r, self.now.unix.secs(), self.desired.revocations())
        });
        let response = match verdict {
            Ok(a) => {
                self.note_admission(&a);
                self.report_out(Report::Admitted(a.clone()));
                let mut claimed = Vec::new();
                if let Some(p) = self.peers.by_id.get_mut(&from) {
                    p.admitted = Some(a);
                    p.closing = None;
                    claimed = std::mem::take(&mut p.claimed);
                }
                self.peers.touch(from);
                if !claimed.is_empty() {
                    self.book.add_member(from, &claimed, self.now.mono);
                }
                let _ = self.membership.join(&[from], self.now.mono.0);
                if self.peers.is_ready(&from) {
                    self.on_ready(from);
                }
                JoinResponse {
                    ok: true,
                    reason: String::new(),
                }
            }
            Err(e) => {
                let mut reason = e.to_string();
                truncate(&mut reason, MAX_REASON_LEN);
                self.log_refusal(from.to_string(), Direction::Inbound, reason.clone());
                let grace = self.now.mono.plus(self.config.timers.refusal_grace);
                if let Some(p) = self.peers.by_id.get_mut(&from) {
                    p.closing = Some((grace, reason.clone()));
                }
                self.peers.touch(from);
                self.peers.queued.remove(&from);
                JoinResponse { ok: false, reason }
            }
        };
        self.emit(Output::Respond {
            id,
            bytes: response.to_bytes(),
        });
    }

    /// Remembers the substrate a node was admitted with (its records must
    /// keep it); bounded, pruning nodes gone from membership first.
    fn note_admission(&mut self, a: &Admitted) {
        let max = self.config.limits.max_admissions.max(1);
        let full = self
            .admission
            .with(|t| {
                t.expelled.remove(&a.node);
                !t.substrates.contains_key(&a.node) && t.substrates.len() >= max
            })
            .unwrap_or(false);
        if full {
            self.prune_admissions();
        }
        self.admission.with(|t| {
            if t.substrates.len() >= max
                && let Some(first) = t.substrates.keys().next().copied()
            {
                t.substrates.remove(&first);
            }
            t.substrates.insert(a.node, a.substrate);
        });
    }

    /// Forgets admissions of nodes that are neither in membership nor connected.
    pub(super) fn prune_admissions(&mut self) {
        let membership = &self.membership;
        let peers = &self.peers;
        self.admission.with(|t| {
            t.substrates
                .retain(|id, _| membership.member(id).is_some() || peers.by_id.contains_key(id));
        });
    }

    pub(super) fn on_join_response(&mut self, from: NodeId, bytes: &[u8]) {
        match JoinResponse::from_bytes(bytes) {
            Ok(r) if r.ok => {
                let Some(p) = self.peers.by_id.get_mut(&from) else {
                    return;
                };
                p.accepted = true;
                self.peers.touch(from);
                let after = match self.admitted_after {
                    None => {
                        let t = self.now.mono.since(self.started);
                        self.admitted_after = Some(t);
                        Some(t)
                    }
                    Some(_) => None,
                };
                self.report_out(Report::AdmittedBy { peer: from, after });
                if self.peers.is_ready(&from) {
                    self.on_ready(from);
                }
            }
            Ok(r) => {
                self.log_refusal(from.to_string(), Direction::Outbound, r.reason.clone());
                let now = self.now.mono;
                let until = now.plus(self.config.timers.refused_backoff);
                let remote = self
                    .peers
                    .by_id
                    .get(&from)
                    .and_then(|p| p.conns.values().next().map(|(a, _)| a.clone()))
                    .unwrap_or_default();
                let max = self.config.limits.max_pending_peers.max(1);
                let refused = &mut self.peers.refused_by;
                refused.retain(|_, (t, _)| *t > now);
                if refused.len() >= max
                    && let Some(first) = refused.keys().next().copied()
                {
                    refused.remove(&first);
                }
                refused.insert(from, (until, remote));
                self.peers.forget(&from);
                self.disconnect(from, DisconnectReason::RefusedByPeer(r.reason));
            }
            Err(e) => self.strike(from, &format!("malformed join response: {e}")),
        }
    }

    /// Both sides admitted each other: flush what waited, sync, announce.
    fn on_ready(&mut self, peer: NodeId) {
        if let Some(q) = self.peers.queued.remove(&peer) {
            for bytes in q.messages {
                self.emit(Output::Transmit { to: peer, bytes });
            }
        }
        self.anti_entropy(Some(peer));
        let addrs = self.member_addrs(&peer);
        self.emit(Output::Ready { peer, addrs });
    }

    /// Where a member can be reached: what it told this node once admitted,
    /// then what its own signed record says.
    fn member_addrs(&self, peer: &NodeId) -> Vec<String> {
        let mut addrs = self.book.member(peer).to_vec();
        if let Some(m) = self.membership.member(peer) {
            for a in &m.record.record.profile.addresses {
                if !addrs.contains(a) {
                    addrs.push(a.clone());
                }
            }
        }
        addrs
    }

    /// The one admission check of every message but a join request.
    pub(super) fn gate(&mut self, from: NodeId, protocol: Protocol) -> bool {
        if self.peers.is_admitted(&from) {
            return true;
        }
        match protocol {
            Protocol::Swim | Protocol::Image | Protocol::Event => {
                self.strike(from, &format!("{protocol:?} message before admission"));
            }
            // A benign race while both sides run the join protocol.
            Protocol::State | Protocol::Join => {}
        }
        false
    }

    pub(super) fn on_stream_failed(&mut self, from: NodeId, protocol: Protocol, error: String) {
        match protocol {
            Protocol::Join if !self.peers.is_admitted(&from) => {
                self.strike(from, &format!("bad join request: {error}"));
            }
            Protocol::Swim => self.strike(from, &format!("bad membership stream: {error}")),
            Protocol::Event => self.strike(from, &format!("bad event stream: {error}")),
            _ => {}
        }
    }

    pub(super) fn on_peer_addresses(&mut self, peer: NodeId, addrs: Vec<String>) {
        if !self.peers.is_admitted(&peer) {
            // Held with the connection until admission (bounded like a
            // member's addresses), never in the book before.
            let max = self.config.book.max_addrs_per_member;
            if let Some(p) = self.peers.by_id.get_mut(&peer) {
                p.claimed = addrs.into_iter().take(max).collect();
            }
            return;
        }
        self.book.add_member(peer, &addrs, self.now.mono);
        if self.peers.is_ready(&peer) {
            let addrs = self.member_addrs(&peer);
            self.emit(Output::Ready { peer, addrs });
        }
    }

    /// Sends a SWIM message, or queues it until the member is ready
    /// (dialing it when nothing is connected).
    pub(super) fn transmit(&mut self, to: NodeId, bytes: Vec<u8>) {
        if self.peers.is_ready(&to) {
            self.emit(Output::Transmit { to, bytes });
            return;
        }
        if self.guard.is_banned(&to, self.now.mono) || self.peers.refused_us(&to, self.now.mono) {
            return;
        }
        let limits = &self.config.limits;
        if !self.peers.queued.contains_key(&to)
            && self.peers.queued.len() >= limits.max_pending_peers
        {
            return;
        }
        let max = limits.max_pending_per_peer.max(1);
        let q = self.peers.queued.entry(to).or_default();
        if q.messages.len() >= max {
            q.messages.pop_front();
        }
        q.messages.push_back(bytes);
        let now = self.now.mono;
        let due = q
            .dialed
            .is_none_or(|t| now.since(t) >= self.config.timers.dial_interval);
        if due {
            q.dialed = Some(now);
        }
        if due && !self.peers.is_connected(&to) {
            self.dial_member(to);
        }
    }

    fn dial_member(&mut self, to: NodeId) {
        let addrs = self.member_addrs(&to);
        self.emit(Output::Dial {
            peer: Some(to),
            addrs,
        });
    }

    /// Events wait for `to`, which is not ready: dial it when nothing is
    /// connected (at most once per `dial_interval`). Returns whether a dial
    /// went out.
    pub(super) fn dial_for_events(&mut self, to: NodeId) -> bool {
        let now = self.now.mono;
        if to == self.me
            || self.peers.is_connected(&to)
            || self.guard.is_banned(&to, now)
            || self.peers.refused_us(&to, now)
        {
            return false;
        }
        let interval = self.config.timers.dial_interval;
        let max = self.config.limits.max_pending_peers.max(1);
        let dialed = &mut self.peers.dialed_for_events;
        if dialed.get(&to).is_some_and(|t| now.since(*t) < interval) {
            return false;
        }
        if !dialed.contains_key(&to) && dialed.len() >= max {
            dialed.retain(|_, t| now.since(*t) < interval);
            if dialed.len() >= max {
                return false;
            }
        }
        dialed.insert(to, now);
        self.dial_member(to);
        true
    }

    /// Resends lost join requests; dials candidates nothing is connected to.
    pub(super) fn dial_round(&mut self) {
        let unjoined: Vec<NodeId> = self
            .peers
            .by_id
            .iter()
            .filter(|(_, p)| !p.conns.is_empty() && !p.join_sent)
            .map(|(id, _)| *id)
            .collect();
        for peer in unjoined {
            self.send_join(peer);
        }
        let now = self.now.mono;
        let remotes: Vec<&String> = self
            .peers
            .by_id
            .values()
            .flat_map(|p| p.conns.values().map(|(a, _)| a))
            .collect();
        let mut dials = Vec::new();
        for f in self.book.candidates() {
            let skip = match f.peer {
                Some(p) => {
                    p == self.me
                        || self.peers.is_connected(&p)
                        || self.guard.is_banned(&p, now)
                        || self.peers.refused_us(&p, now)
                }
                None => {
                    remotes.contains(&&f.addr)
                        || self.listen.contains(&f.addr)
                        || self.peers.refused_addr(&f.addr, now)
                }
            };
            if !skip {
                dials.push(Output::Dial {
                    peer: f.peer,
                    addrs: vec![f.addr.clone()],
                });
            }
        }
        for d in dials {
            self.emit(d);
        }
    }

    /// Closes refused peers after their grace and peers that did not
    /// complete admission in time.
    pub(super) fn expire_peers(&mut self) {
        let now = self.now.mono;
        let due: Vec<(NodeId, DisconnectReason)> = self
            .peers
            .due(now)
            .into_iter()
            .filter_map(|id| self.peers.by_id.get(&id).map(|p| (id, p)))
            .filter(|(_, p)| !p.conns.is_empty())
            .filter_map(|(id, p)| {
                let ready = p.admitted.is_some() && p.accepted;
                match &p.closing {
                    Some((at, why)) if *at <= now && p.admitted.is_none() => {
                        Some((id, DisconnectReason::Refused(why.clone())))
                    }
                    _ if !ready && p.deadline <= now => {
                        Some((id, DisconnectReason::AdmissionTimeout))
                    }
                    _ => None,
                }
            })
            .collect();
        for (peer, reason) in due {
            self.peers.forget(&peer);
            self.disconnect(peer, reason);
        }
    }

    /// Spends `n` of `peer`'s `spend` budget if it has that much. A refusal
    /// of what `peer` sent itself (`direct`, not relayed) counts towards a
    /// flood strike ([`super::GuardConfig::flood_strike`]).
    pub(super) fn spend(&mut self, peer: NodeId, spend: Spend, n: u64, direct: bool) -> bool {
        let now = self.now.mono;
        if self.guard.allow(peer, spend, n, now) {
            return true;
        }
        self.stats.rate_limited += 1;
        if direct && self.guard.over_rate(peer, now) {
            let times = self.config.guard.flood_strike;
            self.strike(
                peer,
                &format!("flood: past its {spend:?} rate {times} times"),
            );
        }
        false
    }

    /// A peer misbehaved: a strike, and a ban at the limit.
    pub(super) fn strike(&mut self, peer: NodeId, why: &str) {
        let struck = self.guard.strike(peer, self.now.mono);
        self.report_out(Report::Strike {
            peer,
            strikes: struck.strikes,
            why: why.to_owned(),
        });
        if let Some(until) = struck.banned_until {
            self.peers.forget(&peer);
            self.report_out(Report::Banned { peer, until });
            self.emit(Output::Ban { peer });
        }
    }

    pub(super) fn disconnect(&mut self, peer: NodeId, reason: DisconnectReason) {
        self.report_out(Report::Disconnecting {
            peer,
            reason: reason.clone(),
        });
        self.emit(Output::Disconnect { peer, reason });
    }

    /// A join request of ours was lost: send it again on the next dial round.
    pub(super) fn join_lost(&mut self, peer: NodeId) {
        if let Some(p) = self.peers.by_id.get_mut(&peer) {
            p.join_sent = false;
        }
    }

    /// Drops a peer's admission and connection (revoked node or token).
    pub(super) fn expel(&mut self, peer: NodeId, reason: DisconnectReason) {
        if self.peers.by_id.contains_key(&peer) {
            self.peers.forget(&peer);
            self.disconnect(peer, reason);
        }
        self.peers.queued.remove(&peer);
    }
}
