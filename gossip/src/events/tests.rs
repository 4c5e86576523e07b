//! Sans-IO tests of the delivery machine: two or three machines wired by
//! hand, with an in-memory store each, so every loss, duplicate, reorder
//! and crash point is chosen by the test.

use std::collections::{BTreeMap, VecDeque};

use omega_identity::Keypair;
use omega_zgraph::Edge;

use super::*;
use crate::node::{CommandId, InboundId};
use crate::testkit::mesh::EventStore;
use crate::time::{Mono, Now, Unix};

fn node(seed: u8) -> NodeId {
    NodeId::from(Keypair::from_seed([seed; 32]).public())
}

fn now(ms: u64) -> Now {
    Now {
        mono: Mono(ms),
        unix: Unix(1_700_000_000_000 + ms),
    }
}

fn edge(from: &str, to: &str, on: &str, ordered: bool, max_attempts: Option<u32>) -> Edge {
    Edge {
        from: from.into(),
        to: to.into(),
        on: on.into(),
        key: None,
        ordered,
        max_attempts,
    }
}

/// Manifest `m`: `src --a--> dst --b--> sink`; `dst` on `b_node`, `sink`
/// on `c_node` (or `b_node`).
fn topology(edges: Vec<Edge>, dst: NodeId, sink: NodeId) -> Topology {
    let mut t = Topology::default();
    t.edges.insert("m".into(), edges);
    for (b, n) in [("src", dst), ("dst", dst), ("sink", sink)] {
        t.replicas.insert(BraneKey::new("m", b), vec![n]);
        t.branes.insert(BraneKey::new("m", b), 4);
    }
    t
}

/// One node: its machine, its store, and what it was asked to do.
struct Side {
    id: NodeId,
    d: Delivery,
    store: EventStore,
    /// Writes not yet applied (when `hold` is set).
    held: VecDeque<(u64, EventOps)>,
    hold: bool,
    sent: VecDeque<(NodeId, u64, Vec<u8>)>,
    answers: VecDeque<(InboundId, Vec<u8>)>,
    work: VecDeque<Process>,
    emitted: Vec<Result<Vec<EventId>, EmitError>>,
    dlq: Vec<Result<Vec<DeadLetter>, DlqError>>,
    /// Every event id a brane here ran, in order.
    ran: Vec<(String, EventId, String)>,
}

impl Side {
    fn new(seed: u8, config: DeliveryConfig, t: &Topology) -> Self {
        let id = node(seed);
        let mut d = Delivery::new(config, id, [seed; 32], now(0));
        d.set_topology(t.clone());
        Self {
            id,
            d,
            store: EventStore::default(),
            held: VecDeque::new(),
            hold: false,
            sent: VecDeque::new(),
            answers: VecDeque::new(),
            work: VecDeque::new(),
            emitted: Vec::new(),
            dlq: Vec::new(),
            ran: Vec::new(),
        }
    }

    /// Executes every act; writes are applied at once unless held.
    fn drain(&mut self) {
        while let Some(act) = self.d.poll_act() {
            match act {
                Act::Send { to, batch, bytes } => self.sent.push_back((to, batch, bytes)),
                Act::Respond { inbound, bytes } => self.answers.push_back((inbound, bytes)),
                Act::Process(p) => self.work.push_back(*p),
                Act::Persist { txn, ops } => {
                    if self.hold {
                        self.held.push_back((txn, ops));
                    } else {
                        self.store.apply(&ops);
                        self.d.on_persisted(txn, Ok(()));
                    }
                }
                Act::Emitted { result, .. } => self.emitted.push(result),
                Act::Dlq { result, .. } => self.dlq.push(result),
                Act::Acked(_) => {}
            }
        }
    }

    fn emit(&mut self, to: &str, ty: &str, key: &str, payload: &[u8]) {
        self.d.emit(
            CommandId(1),
            vec![NewEvent {
                to: BraneKey::new("m", to),
                ty: ty.into(),
                key: key.into(),
                payload: payload.to_vec(),
            }],
        );
        self.drain();
    }

    /// Runs every queued brane call: `dst` emits one `b` per event (same
    /// key), `sink` emits nothing; payload `poison` fails.
    fn run_branes(&mut self) {
        while let Some(p) = self.work.pop_front() {
            self.ran
                .push((p.to.brane.clone(), p.event.id, p.event.key.clone()));
            let result = if p.event.payload == b"poison" {
                Err(ProcessError::Failed("poisoned".into()))
            } else if p.to.brane == "dst" {
                Ok(vec![Emit {
                    ty: "b".into(),
                    key: p.event.key.clone(),
                    payload: p.event.payload.clone(),
                }])
            } else {
                Ok(Vec::new())
            };
            self.d.on_processed(p.ticket, result);
            self.drain();
        }
    }

    /// A crash: everything in memory is gone; the store survives (held
    /// writes never happened).
    fn crash(&mut self, seed: u8, config: DeliveryConfig, at: u64) {
        let t = self.d.topology().clone();
        let mut d = Delivery::new(config, self.id, [seed; 32], now(at));
        d.set_topology(t);
        assert_eq!(d.restore(self.store.stored()), 0);
        self.d = d;
        self.held.clear();
        self.hold = false;
        self.sent.clear();
        self.answers.clear();
        self.work.clear();
        self.drain();
    }

    fn ran(&self, brane: &str) -> Vec<EventId> {
        self.ran
            .iter()
            .filter(|(b, _, _)| b == brane)
            .map(|(_, id, _)| *id)
            .collect()
    }
}

/// Carries every request from `a` to `b` and every answer back, running
/// `b`'s branes in between, until nothing moves.
fn exchange(a: &mut Side, b: &mut Side) {
    for _ in 0..1000 {
        let mut moved = false;
        while let Some((to, batch, bytes)) = a.sent.pop_front() {
            assert_eq!(to, b.id);
            b.d.on_deliver(a.id, InboundId(batch), &bytes)
                .expect("a well-formed batch");
            b.drain();
            b.run_branes();
            while let Some((inbound, answer)) = b.answers.pop_front() {
                a.d.on_acks(inbound.0, &answer).expect("well-formed acks");
                a.drain();
            }
            moved = true;
        }
        a.run_branes();
        b.run_branes();
        if !moved && a.sent.is_empty() {
            return;
        }
    }
    panic!("the exchange did not settle");
}

fn pair(edges: Vec<Edge>) -> (Side, Side, DeliveryConfig) {
    let config = DeliveryConfig::default();
    let (a_id, b_id) = (node(1), node(2));
    let _ = a_id;
    let t = topology(edges, b_id, b_id);
    (
        Side::new(1, config.clone(), &t),
        Side::new(2, config.clone(), &t),
        config,
    )
}

fn pipeline() -> Vec<Edge> {
    vec![
        edge("src", "dst", "a", false, None),
        edge("dst", "sink", "b", false, None),
    ]
}

#[test]
fn an_event_crosses_nodes_and_its_emit_runs_locally_there() {
    let (mut a, mut b, _) = pair(pipeline());
    a.emit("dst", "a", "k", b"one");
    let ids = a.emitted[0].clone().expect("durable");
    assert_eq!(a.store.outbox.len(), 1, "durable before answered");
    exchange(&mut a, &mut b);
    assert_eq!(b.ran("dst"), ids);
    assert_eq!(b.ran("sink").len(), 1, "the emit ran on the local sink");
    assert!(
        a.store.outbox.is_empty() && a.d.outbox_len() == 0,
        "acknowledged"
    );
    assert!(
        b.store.outbox.is_empty(),
        "the local child left with its processing"
    );
    assert_eq!(b.store.processed.len(), 2);
    let r = a.d.report();
    assert_eq!(r.edges[0].delivered, 1);
    assert!(b.d.is_idle() && a.d.is_idle());
}

#[test]
fn a_duplicate_delivery_is_answered_without_running_the_brane() {
    let (mut a, mut b, _) = pair(pipeline());
    a.emit("dst", "a", "k", b"x");
    let (_, batch, bytes) = a.sent.pop_front().expect("sent");
    b.d.on_deliver(a.id, InboundId(1), &bytes).expect("ok");
    b.drain();
    // The same batch again while the first is still running.
    b.d.on_deliver(a.id, InboundId(2), &bytes).expect("ok");
    b.drain();
    b.run_branes();
    assert_eq!(b.answers.len(), 2, "both answered, once processed");
    // And once more after it was processed.
    b.d.on_deliver(a.id, InboundId(3), &bytes).expect("ok");
    b.drain();
    let (_, last) = b.answers.pop_back().expect("answered at once");
    assert_eq!(
        Acks::from_bytes(&last).expect("acks").acks,
        vec![Ack::Duplicate]
    );
    assert_eq!(b.ran("dst").len(), 1, "processed once");
    let (_, first) = b.answers.pop_front().expect("first");
    a.d.on_acks(batch, &first).expect("ok");
    a.drain();
    assert_eq!(a.d.outbox_len(), 0);
}

#[test]
fn a_lost_ack_leads_to_a_retry_that_is_deduplicated() {
    let (mut a, mut b, _) = pair(pipeline());
    a.emit("dst", "a", "k", b"x");
    let (_, batch, bytes) = a.sent.pop_front().expect("sent");
    b.d.on_deliver(a.id, InboundId(1), &bytes).expect("ok");
    b.drain();
    b.run_branes();
    b.answers.clear(); // the answer is lost
    a.d.on_batch_failed(batch, "timeout");
    a.drain();
    assert!(a.sent.is_empty(), "the retry waits for its backoff");
    a.d.handle_timeout(now(1_000));
    a.drain();
    exchange(&mut a, &mut b);
    assert_eq!(b.ran("dst").len(), 1, "processed once");
    assert_eq!(a.d.outbox_len(), 0);
    assert_eq!(b.d.report().duplicates, 1);
    assert_eq!(a.d.report().edges[0].retried, 1);
}

#[test]
fn answers_out_of_order_settle_their_own_events() {
    let (mut a, mut b, _) = pair(vec![edge("src", "dst", "a", false, None)]);
    for i in 0..3u8 {
        a.emit("dst", "a", "", &[i]);
    }
    let sent: Vec<_> = a.sent.drain(..).collect();
    assert_eq!(sent.len(), 3, "one batch per pump");
    for (_, batch, bytes) in &sent {
        b.d.on_deliver(a.id, InboundId(*batch), bytes).expect("ok");
        b.drain();
    }
    b.run_branes();
    let mut answers: Vec<_> = b.answers.drain(..).collect();
    answers.reverse();
    for (inbound, bytes) in answers {
        a.d.on_acks(inbound.0, &bytes).expect("ok");
        a.drain();
    }
    assert_eq!(a.d.outbox_len(), 0);
    assert_eq!(a.d.report().edges[0].delivered, 3);
}

#[test]
fn a_crash_after_the_commit_and_before_the_answer_loses_nothing_and_runs_nothing_twice() {
    let (mut a, mut b, config) = pair(vec![
        edge("src", "dst", "a", false, None),
        edge("dst", "sink", "b", false, None),
    ]);
    // The sink runs on a third node, so the child waits in b's outbox.
    let c_id = node(3);
    let mut t = b.d.topology().clone();
    t.replicas.insert(BraneKey::new("m", "sink"), vec![c_id]);
    a.d.set_topology(t.clone());
    b.d.set_topology(t.clone());
    a.emit("dst", "a", "k", b"x");
    let (_, batch, bytes) = a.sent.pop_front().expect("sent");
    b.d.on_deliver(a.id, InboundId(1), &bytes).expect("ok");
    b.drain();
    b.run_branes();
    assert_eq!(
        b.store.outbox.len(),
        1,
        "the emit is durable with the processed mark"
    );
    b.crash(9, config.clone(), 10);
    a.d.on_batch_failed(batch, "connection closed");
    a.drain();
    a.d.handle_timeout(now(1_000));
    a.drain();
    b.sent.clear();
    exchange(&mut a, &mut b);
    assert_eq!(b.ran("dst").len(), 1, "not run again after the restart");
    assert_eq!(a.d.outbox_len(), 0);
    assert_eq!(b.d.outbox_len(), 1, "the child survived the crash");
}

#[test]
fn a_crash_before_the_commit_runs_the_event_again_without_phantom_emits() {
    let (mut a, mut b, config) = pair(vec![
        edge("src", "dst", "a", false, None),
        edge("dst", "sink", "b", false, None),
    ]);
    let mut t = b.d.topology().clone();
    t.replicas.insert(BraneKey::new("m", "sink"), vec![node(3)]);
    b.d.set_topology(t);
    a.emit("dst", "a", "k", b"x");
    let (_, batch, bytes) = a.sent.pop_front().expect("sent");
    b.hold = true;
    b.d.on_deliver(a.id, InboundId(1), &bytes).expect("ok");
    b.drain();
    b.run_branes();
    assert!(b.answers.is_empty(), "nobody is answered before the commit");
    assert_eq!(b.held.len(), 1);
    b.crash(9, config.clone(), 10); // the write never happened
    assert!(b.store.outbox.is_empty(), "no phantom emit");
    a.d.on_batch_failed(batch, "connection closed");
    a.d.handle_timeout(now(1_000));
    a.drain();
    exchange(&mut a, &mut b);
    assert_eq!(
        b.ran("dst").len(),
        2,
        "run again: its first run was not committed"
    );
    assert_eq!(b.ran("dst")[0], b.ran("dst")[1], "with the same id");
    assert_eq!(b.store.outbox.len(), 1, "one child, not two");
    assert_eq!(a.d.outbox_len(), 0);
}

#[test]
fn an_emit_is_answered_only_once_durable_and_a_failed_write_is_not_acknowledged() {
    let (mut a, _, _) = pair(pipeline());
    a.hold = true;
    a.emit("dst", "a", "", b"x");
    assert!(a.emitted.is_empty() && a.sent.is_empty());
    let (txn, _) = a.held.pop_front().expect("a write");
    a.d.on_persisted(txn, Err("disk full".into()));
    a.drain();
    assert!(matches!(a.emitted[0], Err(EmitError::NotDurable(_))));
    assert!(a.sent.is_empty() && a.d.outbox_len() == 0);
}

#[test]
fn ordered_edges_keep_one_event_per_key_in_flight_across_failures() {
    let edges = vec![
        edge("src", "dst", "a", false, None),
        edge("dst", "sink", "b", true, None),
    ];
    let config = DeliveryConfig::default();
    let (b_id, c_id) = (node(2), node(3));
    let t = topology(edges, b_id, c_id);
    let mut b = Side::new(2, config.clone(), &t);
    let mut c = Side::new(3, config, &t);
    // Three events for key k and one for key j reach dst on b.
    for (i, key) in [(0u8, "k"), (1, "k"), (2, "j"), (3, "k")] {
        b.d.tick(now(u64::from(i)));
        let bytes = Deliver {
            items: vec![Item {
                manifest: "m".into(),
                to: "dst".into(),
                event: Envelope {
                    id: EventId([i; 16]),
                    ty: "a".into(),
                    key: key.into(),
                    payload: vec![i],
                    source: Source {
                        manifest: "m".into(),
                        brane: "src".into(),
                        node: *node(1).as_bytes(),
                    },
                    attempt: 1,
                    trace: EventId([i; 16]),
                    created_ms: 0,
                },
            }],
        }
        .to_bytes();
        b.d.on_deliver(node(1), InboundId(u64::from(i)), &bytes)
            .expect("ok");
        b.drain();
        b.run_branes();
    }
    // b's outbox now holds 4 children for c: k0, k1, j2, k3; only k0 and j2 may fly.
    let in_flight: usize = b
        .sent
        .iter()
        .map(|(_, _, bytes)| Deliver::from_bytes(bytes).expect("ok").items.len())
        .sum();
    assert_eq!(in_flight, 2, "one per key");
    // c fails the first k once: the next k must still wait for it.
    let mut failed_once = false;
    for _ in 0..100 {
        while let Some((_, batch, bytes)) = b.sent.pop_front() {
            c.d.on_deliver(b.id, InboundId(batch), &bytes).expect("ok");
            c.drain();
            while let Some(p) = c.work.pop_front() {
                let result = if !failed_once && p.event.payload == [0] {
                    failed_once = true;
                    Err(ProcessError::Failed("flaky".into()))
                } else {
                    c.ran
                        .push((p.to.brane.clone(), p.event.id, p.event.key.clone()));
                    Ok(Vec::new())
                };
                c.d.on_processed(p.ticket, result);
                c.drain();
            }
            while let Some((inbound, answer)) = c.answers.pop_front() {
                b.d.on_acks(inbound.0, &answer).expect("ok");
                b.drain();
            }
        }
        b.d.handle_timeout(now(100_000));
        b.drain();
        if b.sent.is_empty() {
            break;
        }
    }
    let ks: Vec<u8> = c
        .ran
        .iter()
        .filter(|(_, _, k)| k == "k")
        .map(|(_, id, _)| *id)
        .map(|id| {
            (0..4u8)
                .find(|i| {
                    EventId::child(&EventId([*i; 16]), &BraneKey::new("m", "sink"), "b", 0) == id
                })
                .expect("a known child")
        })
        .collect();
    assert_eq!(ks, vec![0, 1, 3], "key k in emit order despite the failure");
    assert_eq!(c.ran.len(), 4);
    assert_eq!(b.d.outbox_len(), 0);
}

#[test]
fn a_poison_event_is_dead_lettered_after_max_attempts_while_others_flow_and_replay_works() {
    let (mut a, mut b, _) = pair(vec![edge("src", "dst", "a", false, Some(3))]);
    a.emit("dst", "a", "", b"poison");
    a.emit("dst", "a", "", b"fine");
    for t in 1..10 {
        exchange(&mut a, &mut b);
        a.d.handle_timeout(now(t * 20_000));
        a.drain();
    }
    assert_eq!(b.ran("dst").len(), 4, "3 failed tries and the good one");
    let r = a.d.report();
    assert_eq!(r.dead_letters, 1);
    assert_eq!(r.edges[0].dead_lettered, 1);
    a.d.dlq(CommandId(2), DlqCommand::List);
    a.drain();
    let list = a.dlq.pop().expect("answer").expect("listed");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].failures, 3);
    assert_eq!(list[0].error, "poisoned");
    let id: EventId = list[0].id.parse().expect("an id");
    // Survives a restart as a dead letter.
    let stored = Stored::from_bytes(a.store.outbox.values().next().expect("row")).expect("decodes");
    assert!(stored.dead.is_some());
    a.d.dlq(CommandId(3), DlqCommand::Replay(id));
    a.drain();
    assert!(a.dlq.pop().expect("answer").is_ok());
    assert_eq!(a.d.report().dead_letters, 0);
    exchange(&mut a, &mut b);
    assert_eq!(b.ran("dst").len(), 5, "replayed");
    // And dropping: dead-letter it again, then drop it.
    for t in 10..20 {
        exchange(&mut a, &mut b);
        a.d.handle_timeout(now(t * 20_000));
        a.drain();
    }
    a.d.dlq(CommandId(4), DlqCommand::Drop(id));
    a.drain();
    assert!(a.dlq.pop().expect("answer").is_ok());
    assert!(a.store.outbox.is_empty() && a.d.outbox_len() == 0);
    a.d.dlq(CommandId(5), DlqCommand::Show(id));
    a.drain();
    assert_eq!(a.dlq.pop().expect("answer"), Err(DlqError::NotFound(id)));
}

#[test]
fn credits_bound_what_is_in_flight_and_a_full_outbox_refuses_emits() {
    let config = DeliveryConfig {
        edge_credits: 4,
        max_outbox: 70,
        emit_reserve: 60,
        ..DeliveryConfig::default()
    };
    let t = topology(vec![edge("src", "dst", "a", false, None)], node(2), node(2));
    let mut a = Side::new(1, config, &t);
    for i in 0..10u8 {
        a.emit("dst", "a", "", &[i]);
    }
    let ok = a.emitted.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 10, "room for ten");
    a.emit("dst", "a", "", b"one too many");
    assert!(matches!(a.emitted.last(), Some(Err(EmitError::Busy(10)))));
    let in_flight: usize = a
        .sent
        .iter()
        .map(|(_, _, b)| Deliver::from_bytes(b).expect("ok").items.len())
        .sum();
    assert_eq!(in_flight, 4, "edge credits");
    let r = a.d.report();
    assert_eq!(r.edges[0].in_flight, 4);
    assert_eq!(r.edges[0].queued, 6);
    assert!(
        r.edges[0]
            .stalled
            .as_deref()
            .is_some_and(|s| s.contains("in flight"))
    );
}

#[test]
fn events_for_a_replica_that_moved_are_rerouted() {
    let (mut a, mut b, config) = pair(vec![edge("src", "dst", "a", false, None)]);
    let mut c = Side::new(3, config, b.d.topology());
    a.emit("dst", "a", "k", b"x");
    // dst moved from b to c before b saw the event.
    let mut t = b.d.topology().clone();
    t.replicas.insert(BraneKey::new("m", "dst"), vec![c.id]);
    b.d.set_topology(t.clone());
    exchange(&mut a, &mut b);
    assert!(b.ran("dst").is_empty());
    a.d.set_topology(t.clone());
    c.d.set_topology(t);
    a.d.handle_timeout(now(1_000));
    a.drain();
    exchange(&mut a, &mut c);
    assert_eq!(c.ran("dst").len(), 1);
    assert_eq!(a.d.report().edges[0].rerouted, 1);
    assert_eq!(a.d.outbox_len(), 0);
}

#[test]
fn bad_input_is_refused_with_a_reason_and_never_panics() {
    let (mut a, mut b, _) = pair(pipeline());
    assert!(
        b.d.on_deliver(a.id, InboundId(1), b"\xff\x00garbage")
            .is_err()
    );
    a.d.emit(
        CommandId(1),
        vec![NewEvent {
            to: BraneKey::new("m", "dst"),
            ty: "nope".into(),
            key: String::new(),
            payload: Vec::new(),
        }],
    );
    a.d.emit(
        CommandId(2),
        vec![NewEvent {
            to: BraneKey::new("x", "dst"),
            ty: "a".into(),
            key: String::new(),
            payload: Vec::new(),
        }],
    );
    a.d.emit(
        CommandId(3),
        vec![NewEvent {
            to: BraneKey::new("m", "dst"),
            ty: "a".into(),
            key: String::new(),
            payload: vec![0; (256 << 10) + 1],
        }],
    );
    a.drain();
    let errors: Vec<String> = a
        .emitted
        .iter()
        .map(|r| r.clone().expect_err("refused").to_string())
        .collect();
    assert_eq!(errors[0], "`dst` takes `a`, not `nope`");
    assert_eq!(errors[1], "no manifest `x` is applied");
    assert!(
        errors[2].starts_with("payload (bytes) of 262145 exceeds"),
        "{errors:?}"
    );
    // A batch claiming another source node is refused item by item.
    a.emit("dst", "a", "", b"x");
    let (_, _, bytes) = a.sent.pop_front().expect("sent");
    b.d.on_deliver(node(7), InboundId(9), &bytes)
        .expect("decodes");
    b.drain();
    let (_, answer) = b.answers.pop_front().expect("answered");
    assert!(matches!(
        Acks::from_bytes(&answer).expect("acks").acks[0],
        Ack::Refused(_)
    ));
    // Malformed acks do not lose the events.
    a.d.on_acks(1, b"\x00").expect_err("malformed");
    a.drain();
    a.d.handle_timeout(now(5_000));
    a.drain();
    assert_eq!(a.sent.len(), 1, "sent again");
}

#[test]
fn the_window_is_bounded_and_forgets_the_oldest() {
    let config = DeliveryConfig {
        window: 3,
        ..DeliveryConfig::default()
    };
    let t = topology(vec![edge("src", "dst", "a", false, None)], node(2), node(2));
    let mut a = Side::new(1, config.clone(), &t);
    let mut b = Side::new(2, config, &t);
    for i in 0..5u8 {
        a.emit("dst", "a", "", &[i]);
        exchange(&mut a, &mut b);
    }
    assert_eq!(b.store.processed.len(), 3, "stored window bounded");
    assert_eq!(b.d.report().window, 3);
}

#[test]
fn payloads_are_checked_against_their_types_schema_at_emit_and_at_commit() {
    let (mut a, mut b, _) = pair(pipeline());
    let mut t = a.d.topology().clone();
    let schema = serde_json::json!({
        "type": "object",
        "required": ["sensor"],
        "properties": { "sensor": { "type": "string" } }
    });
    let mut types = BTreeMap::new();
    types.insert("a".to_owned(), schema.clone());
    types.insert("b".to_owned(), schema);
    t.schemas.insert("m".into(), types);
    a.d.set_topology(t.clone());
    b.d.set_topology(t);
    a.emit("dst", "a", "", br#"{"sensor": 7}"#);
    a.emit("dst", "a", "", b"not json");
    let errors: Vec<String> = a
        .emitted
        .iter()
        .map(|r| r.clone().expect_err("refused").to_string())
        .collect();
    assert!(
        errors[0].starts_with("payload of `a` does not match its schema at `/sensor`"),
        "{errors:?}"
    );
    assert!(errors[1].contains("is not JSON"), "{errors:?}");
    assert_eq!(a.d.outbox_len(), 0);
    // dst copies its payload into a `b`, whose schema requires `sensor`:
    // once `a` has no schema, an `a` without it makes dst's emit invalid,
    // which fails the processing.
    let mut t = a.d.topology().clone();
    t.schemas.get_mut("m").expect("m").remove("a");
    a.d.set_topology(t.clone());
    b.d.set_topology(t);
    a.emit("dst", "a", "", br#"{"other": 1}"#);
    exchange(&mut a, &mut b);
    assert_eq!(b.ran("dst").len(), 1);
    assert_eq!(
        b.d.report().failed,
        1,
        "the invalid emit failed the processing"
    );
    assert!(b.store.outbox.is_empty(), "nothing of it committed");
    assert_eq!(a.d.outbox_len(), 1, "kept for a retry");
}
