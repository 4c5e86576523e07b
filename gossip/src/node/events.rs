//! The node's side of event delivery: it hands the [`Delivery`] machine its
//! routing facts (who runs what, each manifest's edges) and turns the
//! machine's [`Act`]s into the node's own outputs — requests on
//! [`Protocol::Event`], writes in the one ordered persist stream, brane
//! calls, replies.

use omega_zgraph::Capability;

use crate::events::{Act, EmitError, EventReport, StoredEvents, Topology};
use crate::id::NodeId;

use super::io::{BraneKey, CommandId, InboundId, Output, PersistOp, Protocol, Reply, RequestId};
use super::peers::Outstanding;
use super::state::After;
use super::status::BraneState;
use super::{Node, Report};

/// Most verified emit grants remembered.
pub(super) const GRANT_CACHE: usize = 64;

/// A verified emit grant: its manifest, expiry (unix s) and the revocation
/// generation it was checked at.
#[derive(Debug, Clone)]
pub(super) struct CachedGrant {
    manifest: String,
    exp: Option<u64>,
    generation: (usize, usize),
}

impl Node {
    /// Loads the event store (outbox and processed window) — once, right
    /// after [`Node::new`]. Rows that do not decode are reported and skipped.
    pub fn restore_events(&mut self, stored: StoredEvents) {
        let rows = stored.outbox.len();
        let bad = self.delivery.restore(stored);
        if bad > 0 {
            self.report_out(Report::PersistFailed(format!(
                "{bad} of {rows} stored events do not decode and were skipped"
            )));
        }
        self.topology_dirty = true;
        self.after_input();
    }

    /// The routing facts the delivery machine uses now.
    pub fn event_topology(&self) -> &Topology {
        self.delivery.topology()
    }

    /// Delivery figures: outbox, dead letters, window, per-edge counts.
    pub fn events(&self) -> EventReport {
        self.delivery.report()
    }

    /// Recomputes the routing facts when statuses or manifests changed.
    pub(super) fn refresh_topology(&mut self) {
        let generation = self.statuses.generation();
        if !self.topology_dirty && generation == self.topology_generation {
            return;
        }
        self.topology_dirty = false;
        self.topology_generation = generation;
        let mut t = Topology::default();
        for m in self.desired.manifests() {
            for (name, b) in m.plan.branes() {
                let key = BraneKey::new(&m.name, name);
                if b.http {
                    t.http.insert(key);
                } else {
                    let c = if b.capability == Capability::Frontier {
                        1
                    } else {
                        self.delivery.config().concurrency
                    };
                    t.branes.insert(key, c);
                }
            }
            let schemas = m
                .plan
                .events()
                .iter()
                .filter_map(|(ty, e)| e.schema.clone().map(|s| (ty.clone(), s)))
                .collect();
            t.schemas.insert(m.name.clone(), schemas);
            t.edges.insert(m.name.clone(), m.plan.edges().to_vec());
        }
        for (node, status) in self.statuses.all() {
            for b in &status.branes {
                if b.state == BraneState::Running {
                    t.replicas
                        .entry(BraneKey::new(&b.manifest, &b.brane))
                        .or_default()
                        .push(*node);
                }
            }
        }
        for r in t.replicas.values_mut() {
            r.sort();
            r.dedup();
        }
        self.delivery.set_topology(t);
    }

    /// Turns the machine's acts into outputs.
    pub(super) fn drain_delivery(&mut self) {
        while let Some(act) = self.delivery.poll_act() {
            match act {
                Act::Send { to, batch, bytes } => self.send_events(to, batch, bytes),
                Act::Respond { inbound, bytes } => {
                    self.emit(Output::Respond { id: inbound, bytes });
                }
                Act::Process(p) => self.emit(Output::Process(p)),
                Act::Persist { txn, ops } => {
                    self.persist(PersistOp::Events(ops), After::Events(txn));
                }
                Act::Emitted { cmd, result } => self.emit(Output::Reply {
                    id: cmd,
                    reply: Reply::Emitted(result),
                }),
                Act::Dlq { cmd, result } => self.emit(Output::Reply {
                    id: cmd,
                    reply: Reply::Dlq(result),
                }),
                Act::Acked(id) => self.report_out(Report::Delivered(id)),
            }
        }
    }

    fn send_events(&mut self, to: NodeId, batch: u64, bytes: Vec<u8>) {
        if !self.peers.is_ready(&to) {
            // Not a neighbour yet (a large mesh is not a full mesh): connect.
            let why = if self.dial_for_events(to) {
                "not connected yet (dialing it)"
            } else {
                "not connected and admitted both ways"
            };
            self.delivery.on_batch_failed(batch, why);
            return;
        }
        let id: RequestId = self.peers.request_id(Outstanding::Events(batch));
        self.emit(Output::Request {
            to,
            protocol: Protocol::Event,
            id,
            bytes,
        });
    }

    /// A batch of events from `from`.
    pub(super) fn on_event_request(&mut self, from: NodeId, id: InboundId, bytes: &[u8]) {
        if !self.gate(from, Protocol::Event) {
            self.emit(Output::Respond {
                id,
                bytes: Vec::new(),
            });
            return;
        }
        if let Err(e) = self.delivery.on_deliver(from, id, bytes) {
            self.strike(from, &format!("bad event batch: {e}"));
            self.emit(Output::Respond {
                id,
                bytes: Vec::new(),
            });
        }
    }

    /// The manifest an emit grant allows. A grant verified once is
    /// remembered (at most [`GRANT_CACHE`], by its BLAKE3 hash) until it
    /// expires or anything is revoked, so a stream of emits under one grant
    /// costs one signature check.
    fn authorize_emit(&mut self, grant: &[u8]) -> Result<String, String> {
        let hash = *blake3::hash(grant).as_bytes();
        let now_s = self.now.unix.0 / 1000;
        let generation = (self.revoked_applied.len(), self.revoked_tokens_seen);
        if let Some(g) = self.grants.get(&hash)
            && g.generation == generation
            && g.exp.is_none_or(|e| now_s < e)
        {
            return Ok(g.manifest.clone());
        }
        let (_, manifest, exp) = self
            .desired
            .authorize_emit(grant, self.now.unix.0)
            .map_err(|e| e.to_string())?;
        if self.grants.len() >= GRANT_CACHE {
            self.grants.pop_first();
        }
        self.grants.insert(
            hash,
            CachedGrant {
                manifest: manifest.clone(),
                exp,
                generation,
            },
        );
        Ok(manifest)
    }

    /// The answer to event batch `batch` from `from`.
    pub(super) fn on_event_response(&mut self, from: NodeId, batch: u64, bytes: &[u8]) {
        if let Err(e) = self.delivery.on_acks(batch, bytes) {
            self.strike(from, &format!("bad event acks: {e}"));
        }
    }

    /// Write `txn` of the event store is done.
    pub(super) fn on_events_persisted(&mut self, txn: u64, result: Result<(), String>) {
        self.delivery.on_persisted(txn, result);
    }

    /// An emit or dead-letter command.
    pub(super) fn on_event_command(&mut self, id: CommandId, command: super::Command) {
        match command {
            super::Command::Emit { grant, events } => match self.authorize_emit(&grant) {
                Ok(manifest) => match events.iter().find(|e| e.to.manifest != manifest) {
                    Some(e) => self.emit(Output::Reply {
                        id,
                        reply: Reply::Emitted(Err(EmitError::Unauthorized(format!(
                            "the grant is for manifest `{manifest}`, not `{}`",
                            e.to.manifest
                        )))),
                    }),
                    None => self.delivery.emit(id, events),
                },
                Err(e) => self.emit(Output::Reply {
                    id,
                    reply: Reply::Emitted(Err(EmitError::Unauthorized(e))),
                }),
            },
            super::Command::Dlq(c) => self.delivery.dlq(id, c),
            _ => {}
        }
    }
}
