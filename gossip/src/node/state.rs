//! The desired state on the wire and on disk, the status topic, image
//! serving, and local commands.
//!
//! # Persistence ordering
//!
//! Every accepted update becomes an [`Output::Persist`] (an append to the
//! store's log; a compaction every `compact_every` appends). What depends
//! on it waits in [`Persistence`] until [`Input::Persisted`](super::Input)
//! reports it: the announce and the reply of a local write, the announce of
//! a repair, the `Accept` that lets gossip forward a peer's update. A
//! failed append releases nothing: the write is answered
//! [`WriteFailure::NotDurable`], the gossip message is ignored (not
//! forwarded). Anti-entropy replies are served from memory: they
//! acknowledge nothing.
//!
//! # Anti-entropy
//!
//! Every `anti_entropy_interval`, when a peer becomes ready, and when an
//! update arrives that builds on something missing, this node sends its
//! state vector to one member (a random ready one on the timer, chosen
//! with the node's seeded rng). The member answers with what the vector
//! lacks — if the asker is within its request rate, its answer rate and
//! its reply-byte budget ([`GuardConfig`](super::GuardConfig)), else with
//! nothing. A state vector of a few bytes can ask for the whole document,
//! so the answer rate is what bounds amplification: over `t` seconds one
//! peer gets at most `(state_answers.burst + state_answers.per_sec·t)`
//! answers with content (default `4 + 2t`), each at most the document, and
//! never more bytes than its `state_bytes` budget.

use std::collections::BTreeMap;

use crate::desired::{Change, DesiredRecord, Refusal, Revocation};
use crate::id::NodeId;

use super::Node;
use super::guard::Spend;
use super::image::{ImageRequest, ImageResponse};
use super::io::{
    Command, CommandId, DisconnectReason, FetchError, GossipRef, InboundId, Output, PersistId,
    PersistOp, Protocol, Reply, Report, RequestId, Topic, Verdict, WriteFailure,
};
use super::peers::Outstanding;
use super::report::Direction;
use super::status::NodeStatus;

/// What waits for a persist.
#[derive(Debug)]
pub(super) enum After {
    /// Announce the update; answer the local write, if any.
    Announce {
        update: Vec<u8>,
        reply: Option<CommandId>,
    },
    /// Let gossip forward the update.
    Validate { id: GossipRef, source: NodeId },
    /// Nothing (an anti-entropy reply, a compaction).
    Nothing,
    /// Write `.0` of the event store.
    Events(u64),
}

/// Writes in flight and what waits on each.
#[derive(Debug, Default)]
pub(crate) struct Persistence {
    next: u64,
    in_flight: BTreeMap<PersistId, After>,
    since_compact: u32,
    /// Of `in_flight`, event-store writes (bounded by the delivery
    /// machine, not by `max_persists_in_flight`).
    events: usize,
}

impl Persistence {
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

impl Node {
    /// Loads the stored snapshot and log, verifying every record again.
    pub(super) fn load(&mut self, stored: &[Vec<u8>]) {
        let now = self.now.unix.0;
        for (i, update) in stored.iter().enumerate() {
            if let Err(e) = self.desired.handle_update(self.me, update, now) {
                self.report_out(Report::PersistFailed(format!(
                    "stored desired-state update {i} not loaded: {e}"
                )));
            }
        }
        if !stored.is_empty() {
            self.report_out(Report::Loaded {
                updates: stored.len(),
                manifests: self.desired.manifests().count(),
                bytes: self.desired.encoded_len(),
            });
        }
        self.after_desired_change();
    }

    pub(super) fn persist(&mut self, op: PersistOp, after: After) {
        let append = matches!(op, PersistOp::Append(_));
        let p = &mut self.persistence;
        if matches!(after, After::Events(_)) {
            p.events += 1;
        }
        p.next += 1;
        let id = PersistId(p.next);
        p.in_flight.insert(id, after);
        self.emit(Output::Persist { id, op });
        if append {
            self.persistence.since_compact += 1;
            if self.persistence.since_compact >= self.config.limits.compact_every.max(1) {
                self.persistence.since_compact = 0;
                let doc = self.desired.encode();
                self.persist(PersistOp::Compact(doc), After::Nothing);
            }
        }
    }

    fn disk_full(&self) -> bool {
        self.persistence.in_flight() - self.persistence.events
            >= self.config.limits.max_persists_in_flight
    }

    pub(super) fn on_persisted(&mut self, id: PersistId, result: Result<(), String>) {
        let Some(after) = self.persistence.in_flight.remove(&id) else {
            return;
        };
        if let After::Events(txn) = after {
            self.persistence.events = self.persistence.events.saturating_sub(1);
            if let Err(e) = &result {
                self.report_out(Report::PersistFailed(format!("event store: {e}")));
            }
            self.on_events_persisted(txn, result);
            return;
        }
        if let Err(e) = &result {
            self.report_out(Report::PersistFailed(e.clone()));
        }
        match (after, result) {
            (After::Announce { update, reply }, Ok(())) => {
                self.publish_update(update);
                if let Some(id) = reply {
                    self.emit(Output::Reply {
                        id,
                        reply: Reply::Written(Ok(())),
                    });
                }
            }
            (After::Announce { reply, .. }, Err(e)) => {
                if let Some(id) = reply {
                    self.emit(Output::Reply {
                        id,
                        reply: Reply::Written(Err(WriteFailure::NotDurable(e))),
                    });
                }
            }
            (After::Validate { id, source }, r) => {
                let verdict = if r.is_ok() {
                    Verdict::Accept
                } else {
                    Verdict::Ignore
                };
                self.emit(Output::Validate {
                    id,
                    source,
                    verdict,
                });
            }
            (After::Nothing | After::Events(_), _) => {}
        }
    }

    /// Announces an update on the state topic; one too large for gossip
    /// travels by anti-entropy only.
    fn publish_update(&mut self, update: Vec<u8>) {
        if update.len() + 1024 > self.config.limits.max_gossip_bytes {
            return;
        }
        self.stats.bytes_sent += update.len() as u64;
        self.emit(Output::Publish {
            topic: Topic::State,
            bytes: update,
        });
    }

    /// After any change of the document: repairs, revocations, placement.
    fn after_desired_change(&mut self) {
        while let Some(update) = self.desired.poll_update() {
            self.persist(
                PersistOp::Append(update.clone()),
                After::Announce {
                    update,
                    reply: None,
                },
            );
        }
        self.sync_revocations();
        self.placement_dirty = true;
        self.topology_dirty = true;
    }

    // ----- local commands ------------------------------------------------------

    pub(super) fn on_command(&mut self, id: CommandId, command: Command) {
        match command {
            Command::Write(bytes) => self.write_record(id, &bytes),
            c @ (Command::Emit { .. } | Command::Dlq(_)) => self.on_event_command(id, c),
            Command::Tick => {
                let hlc = self.desired.tick(self.now.unix.0);
                self.emit(Output::Reply {
                    id,
                    reply: Reply::Tick(hlc),
                });
            }
            Command::FetchChunk { from, request } => self.fetch_chunk(id, from, &request),
            Command::Leave => {
                self.membership.leave(self.now.mono.0);
                self.emit(Output::Reply {
                    id,
                    reply: Reply::Left,
                });
            }
        }
    }

    fn write_record(&mut self, id: CommandId, bytes: &[u8]) {
        let written = if self.disk_full() {
            Err(WriteFailure::Busy(self.persistence.in_flight()))
        } else {
            DesiredRecord::decode(bytes, self.config.limits.max_local_record)
                .map_err(WriteFailure::Decode)
                .and_then(|r| {
                    self.desired
                        .write_local(&r, self.now.unix.0)
                        .map_err(WriteFailure::Refused)
                })
        };
        match written {
            Ok(update) => {
                self.persist(
                    PersistOp::Append(update.clone()),
                    After::Announce {
                        update,
                        reply: Some(id),
                    },
                );
                self.after_desired_change();
            }
            Err(e) => {
                if !matches!(e, WriteFailure::Busy(_)) {
                    self.log_refusal("local".into(), Direction::Desired, e.to_string());
                }
                self.emit(Output::Reply {
                    id,
                    reply: Reply::Written(Err(e)),
                });
            }
        }
    }

    // ----- updates from peers ----------------------------------------------------

    /// Applies an update from `from`; returns whether it brought news.
    fn accept_update(&mut self, from: NodeId, bytes: &[u8]) -> Result<bool, Refusal> {
        let before = self.desired.state_vector();
        let changes = self.desired.handle_update(from, bytes, self.now.unix.0)?;
        let news = self.desired.has_news_for(&before);
        if news {
            self.stats.updates_accepted += 1;
        }
        for c in &changes {
            if let Change::Revoked(r) = c {
                self.report_out(Report::Revoked(*r));
            }
        }
        if !changes.is_empty() {
            self.report_out(Report::Desired {
                changes: changes.len(),
            });
        }
        self.after_desired_change();
        Ok(news)
    }

    fn refused_update(&mut self, peer: NodeId, r: &Refusal) {
        if r.penalty() {
            self.stats.updates_refused += 1;
            self.log_refusal(peer.to_string(), Direction::Desired, r.to_string());
            self.strike(peer, &format!("invalid desired-state update: {r}"));
        } else if matches!(r, Refusal::MissingDependencies) {
            self.anti_entropy(Some(peer));
        }
    }

    pub(super) fn on_gossip(
        &mut self,
        id: GossipRef,
        source: NodeId,
        author: Option<NodeId>,
        topic: Topic,
        bytes: &[u8],
    ) {
        self.stats.bytes_received += bytes.len() as u64;
        let verdict = if !self.peers.is_admitted(&source) {
            Verdict::Reject
        } else {
            match topic {
                Topic::State => match self.state_gossip(id, source, author, bytes) {
                    Some(v) => v,
                    None => return, // waits for the persist
                },
                Topic::Status => self.status_gossip(source, author, bytes),
            }
        };
        self.emit(Output::Validate {
            id,
            source,
            verdict,
        });
    }

    fn state_gossip(
        &mut self,
        id: GossipRef,
        source: NodeId,
        author: Option<NodeId>,
        bytes: &[u8],
    ) -> Option<Verdict> {
        let direct = author == Some(source);
        if !self.spend(source, Spend::Updates, 1, direct) || self.disk_full() {
            return Some(Verdict::Ignore);
        }
        match self.accept_update(source, bytes) {
            Ok(true) => {
                self.persist(
                    PersistOp::Append(bytes.to_vec()),
                    After::Validate { id, source },
                );
                None
            }
            Ok(false) => Some(Verdict::Accept),
            Err(r) => {
                self.refused_update(source, &r);
                Some(if r.penalty() {
                    Verdict::Reject
                } else {
                    Verdict::Ignore
                })
            }
        }
    }

    fn status_gossip(&mut self, source: NodeId, author: Option<NodeId>, bytes: &[u8]) -> Verdict {
        match author {
            Some(node) if node == self.me => Verdict::Ignore,
            // A member this node believes dead or gone: a late copy of what
            // it said before it died (gossip still relaying it) must not
            // bring back its branes — events would be routed to it for ever.
            // Not its fault: ignored, not rejected. When it comes back, its
            // next announcement is taken.
            Some(node)
                if self.membership.member(&node).is_some_and(|m| {
                    matches!(
                        m.state,
                        crate::membership::State::Dead | crate::membership::State::Left
                    )
                }) =>
            {
                Verdict::Ignore
            }
            // Any other member in the table, suspected or not: a restarted
            // member announces itself before everyone has seen it come back.
            Some(node)
                if self.membership.member(&node).is_some()
                    && !self.spend(node, Spend::Statuses, 1, node == source) =>
            {
                Verdict::Ignore
            }
            Some(node) if self.membership.member(&node).is_some() => {
                match NodeStatus::from_bytes(bytes, self.config.limits.max_status_bytes) {
                    Ok(st) => {
                        self.statuses.offer(node, st);
                        Verdict::Accept
                    }
                    Err(e) => {
                        self.strike(source, &format!("bad status: {e}"));
                        Verdict::Reject
                    }
                }
            }
            Some(_) => Verdict::Ignore,
            None => Verdict::Reject,
        }
    }

    // ----- anti-entropy -------------------------------------------------------------

    /// Sends our state vector to `peer`, or to a random ready member.
    pub(super) fn anti_entropy(&mut self, peer: Option<NodeId>) {
        if self.peers.in_flight() >= self.config.limits.max_requests_in_flight {
            return;
        }
        let peer = match peer {
            Some(p) => p,
            None => {
                let ready: Vec<NodeId> = self.peers.ready().collect();
                if ready.is_empty() {
                    return;
                }
                ready[self.random_index(ready.len())]
            }
        };
        let sv = self.desired.state_vector();
        self.stats.bytes_sent += sv.len() as u64;
        self.stats.anti_entropy_rounds += 1;
        let id = self.peers.request_id(Outstanding::State(peer));
        self.emit(Output::Request {
            to: peer,
            protocol: Protocol::State,
            id,
            bytes: sv,
        });
    }

    fn serve_state(&mut self, from: NodeId, sv: &[u8]) -> Vec<u8> {
        let now = self.now.mono;
        if !self.gate(from, Protocol::State)
            || !self.spend(from, Spend::Updates, 1, true)
            || !self.desired.has_news_for(sv)
        {
            return Vec::new();
        }
        if !self.guard.allow(from, Spend::StateAnswers, 1, now) {
            self.stats.replies_deferred += 1;
            return Vec::new();
        }
        match self.desired.diff_since(sv) {
            Ok(diff)
                if self
                    .guard
                    .allow(from, Spend::StateBytes, diff.len() as u64, now) =>
            {
                diff
            }
            Ok(_) => {
                self.stats.replies_deferred += 1;
                Vec::new()
            }
            Err(e) => {
                self.strike(from, &format!("bad state vector: {e}"));
                Vec::new()
            }
        }
    }

    // ----- requests and responses ------------------------------------------------

    pub(super) fn on_request(
        &mut self,
        from: NodeId,
        protocol: Protocol,
        id: InboundId,
        bytes: Vec<u8>,
    ) {
        match protocol {
            Protocol::Join => self.on_join_request(from, id, &bytes),
            Protocol::State => {
                self.stats.bytes_received += bytes.len() as u64;
                let reply = self.serve_state(from, &bytes);
                self.stats.bytes_sent += reply.len() as u64;
                self.emit(Output::Respond { id, bytes: reply });
            }
            Protocol::Image => self.serve_image(from, id, &bytes),
            Protocol::Event => self.on_event_request(from, id, &bytes),
            // SWIM arrives as `Input::Swim`; a driver that routes it here
            // gets it handled all the same.
            Protocol::Swim => {
                self.emit(Output::Respond {
                    id,
                    bytes: Vec::new(),
                });
                if self.gate(from, Protocol::Swim) && self.spend(from, Spend::Swim, 1, true) {
                    self.membership
                        .handle_message(from, &bytes, self.now.mono.0);
                }
            }
        }
    }

    pub(super) fn on_response(&mut self, from: NodeId, id: RequestId, bytes: Vec<u8>) {
        match self.peers.take_request(id) {
            Some(Outstanding::Join(peer)) if peer == from => self.on_join_response(from, &bytes),
            Some(Outstanding::State(peer)) if peer == from => {
                self.stats.bytes_received += bytes.len() as u64;
                if bytes.is_empty() || !self.peers.is_admitted(&from) || self.disk_full() {
                    return;
                }
                match self.accept_update(from, &bytes) {
                    Ok(true) => self.persist(PersistOp::Append(bytes), After::Nothing),
                    Ok(false) => {}
                    Err(r) => self.refused_update(from, &r),
                }
            }
            Some(Outstanding::Events(batch)) => self.on_event_response(from, batch, &bytes),
            Some(Outstanding::Chunk(cmd)) => {
                let reply = ImageResponse::from_bytes(&bytes).map_err(FetchError::Malformed);
                self.emit(Output::Reply {
                    id: cmd,
                    reply: Reply::Chunk(reply),
                });
            }
            // Unknown, or answered by someone else than asked: ignored.
            _ => {}
        }
    }

    pub(super) fn on_request_failed(&mut self, to: NodeId, id: RequestId, error: String) {
        match self.peers.take_request(id) {
            Some(Outstanding::Chunk(cmd)) => self.emit(Output::Reply {
                id: cmd,
                reply: Reply::Chunk(Err(FetchError::NoAnswer { peer: to, error })),
            }),
            // Lost (sent down a closing connection): sent again on the next
            // dial round while the peer is connected.
            Some(Outstanding::Join(peer)) => self.join_lost(peer),
            Some(Outstanding::Events(batch)) => self.delivery.on_batch_failed(batch, &error),
            _ => {}
        }
    }

    // ----- images ----------------------------------------------------------------------

    fn serve_image(&mut self, from: NodeId, id: InboundId, bytes: &[u8]) {
        let refuse = |why: &str| ImageResponse::Refused(why.into()).to_bytes();
        let now = self.now.mono;
        let chunk = self.config.limits.image_chunk;
        let answer = if !self.gate(from, Protocol::Image) {
            refuse("not an admitted member")
        } else if !self.spend(from, Spend::ImageRequests, 1, true) {
            refuse("rate limited: too many image requests; retry later")
        } else if self.peers.in_flight() >= self.config.limits.max_requests_in_flight {
            refuse("busy; retry later")
        } else {
            match ImageRequest::from_bytes(bytes) {
                Err(e) => {
                    self.strike(from, &e.to_string());
                    refuse(&e.to_string())
                }
                Ok(_) if !self.guard.allow(from, Spend::ImageBytes, chunk as u64, now) => {
                    refuse("over this member's image byte budget; retry later")
                }
                Ok(r) => {
                    self.peers.add_read(id, from);
                    self.emit(Output::ReadBlob {
                        id,
                        content: r.content,
                        offset: r.offset,
                        max: chunk,
                    });
                    return;
                }
            }
        };
        self.emit(Output::Respond { id, bytes: answer });
    }

    pub(super) fn on_blob_read(
        &mut self,
        id: InboundId,
        result: Result<Option<(u64, Vec<u8>)>, String>,
    ) {
        if self.peers.take_read(id).is_none() {
            return;
        }
        let max = self.config.limits.image_chunk;
        let response = match result {
            Ok(Some((total, mut bytes))) => {
                bytes.truncate(max);
                ImageResponse::Chunk { total, bytes }
            }
            Ok(None) => ImageResponse::NotFound,
            Err(e) => ImageResponse::Refused(e),
        };
        self.emit(Output::Respond {
            id,
            bytes: response.to_bytes(),
        });
    }

    fn fetch_chunk(&mut self, cmd: CommandId, from: NodeId, request: &ImageRequest) {
        let refused = if !self.peers.is_ready(&from) {
            Some(FetchError::NotReady(from))
        } else if self.peers.in_flight() >= self.config.limits.max_requests_in_flight {
            Some(FetchError::Busy)
        } else {
            None
        };
        if let Some(why) = refused {
            self.emit(Output::Reply {
                id: cmd,
                reply: Reply::Chunk(Err(why)),
            });
            return;
        }
        let id = self.peers.request_id(Outstanding::Chunk(cmd));
        self.emit(Output::Request {
            to: from,
            protocol: Protocol::Image,
            id,
            bytes: request.to_bytes(),
        });
    }

    // ----- revocations -------------------------------------------------------------

    /// Applies the document's revocations not applied yet: a revoked node is
    /// removed from membership, refused, and disconnected; a revoked token
    /// expels every peer this node admitted with it.
    fn sync_revocations(&mut self) {
        let new: Vec<omega_identity::Did> = self
            .desired
            .revocations()
            .nodes
            .iter()
            .filter(|d| !self.revoked_applied.contains(*d))
            .copied()
            .collect();
        for did in new {
            self.revoked_applied.insert(did);
            let id = NodeId::from(&did);
            self.admission.with(|t| t.revoked.insert(id));
            self.membership.remove(id);
            self.statuses.forget(&id);
            self.book.forget(&id);
            self.expel(id, DisconnectReason::Revoked);
            self.report_out(Report::Revoked(Revocation::Node(did)));
            self.placement_dirty = true;
        }
        let tokens = self.desired.revocations().tokens.len();
        if tokens == self.revoked_tokens_seen {
            return;
        }
        self.revoked_tokens_seen = tokens;
        let revoked = &self.desired.revocations().tokens;
        let expelled: Vec<NodeId> = self
            .peers
            .admissions()
            .filter(|(_, a)| a.proofs.iter().any(|c| revoked.contains(c)))
            .map(|(id, _)| id)
            .collect();
        let max = self.config.limits.max_admissions.max(1);
        for id in expelled {
            self.admission.with(|t| {
                if t.expelled.len() >= max
                    && let Some(first) = t.expelled.iter().next().copied()
                {
                    t.expelled.remove(&first);
                }
                t.expelled.insert(id);
            });
            self.membership.remove(id);
            self.statuses.forget(&id);
            self.expel(id, DisconnectReason::TokenRevoked);
            self.placement_dirty = true;
        }
    }

    // ----- this node's status -------------------------------------------------------

    pub(super) fn publish_status_if_changed(&mut self) {
        let branes = self.reconciler.statuses();
        if self
            .own_status
            .as_ref()
            .is_some_and(|(s, _)| s.branes == branes)
        {
            return;
        }
        // Strictly growing, even for two changes within one millisecond.
        let last = self.own_status.as_ref().map_or(0, |(s, _)| s.seq);
        let status = NodeStatus {
            seq: self.now.unix.0.max(last + 1),
            branes,
        };
        self.statuses.offer(self.me, status.clone());
        self.publish_status(status);
    }

    fn publish_status(&mut self, status: NodeStatus) {
        let bytes = status.to_bytes();
        if bytes.len() <= self.config.limits.max_status_bytes {
            self.stats.bytes_sent += bytes.len() as u64;
            self.emit(Output::Publish {
                topic: Topic::Status,
                bytes,
            });
        }
        self.own_status = Some((status, self.now.mono));
    }

    pub(super) fn republish_status(&mut self) {
        let due = self
            .own_status
            .as_ref()
            .is_some_and(|(_, at)| self.now.mono.since(*at) >= self.config.timers.status_republish);
        if due && let Some((s, _)) = self.own_status.clone() {
            self.publish_status(s);
        }
    }
}
