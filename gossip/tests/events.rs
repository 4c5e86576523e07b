//! Typed events across node brains in the deterministic mesh harness: the
//! example pipeline over three nodes, with a crash of the middle node, per-
//! key order, and a poison event — checked as sets, not samples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use omega_gossip::Substrate;
use omega_gossip::events::{EventId, NewEvent};
use omega_gossip::node::{BraneKey, CommandId, Reply};
use omega_gossip::testkit::mesh::{MeshConfig, MeshSim};

fn pipeline(ordered: bool) -> String {
    format!(
        r#"
[brane.ingest]
substrate = "habitat"
image = "ingest:1.0"
hosts = ["n0"]

[brane.transform]
substrate = "habitat"
image = "transform:1.0"
hosts = ["n1"]

[brane.archive]
substrate = "habitat"
image = "archive:1.0"
hosts = ["n2"]

[graph]
edges = [
  {{ from = "ingest", to = "transform", on = "raw.batch", ordered = {ordered} }},
  {{ from = "transform", to = "archive", on = "tensor.shard", ordered = {ordered}, max_attempts = 3 }},
]
"#
    )
}

fn mesh(seed: u64, manifest: &str) -> MeshSim {
    let mut sim = MeshSim::new(seed, MeshConfig::default());
    for i in 0..3 {
        sim.add_node(&format!("n{i}"), Substrate::Habitat);
    }
    assert!(sim.run_until(10_000, MeshSim::all_alive), "not all alive");
    let w = sim.apply(0, "lab", manifest);
    assert!(sim.run_until(5_000, |s| matches!(
        s.reply(0, w),
        Some(Reply::Written(Ok(())))
    )));
    // Every node knows where each brane runs once statuses went round.
    assert!(
        sim.run_until(10_000, |s| (0..3).all(|i| {
            s.node(i).is_some_and(|n| {
                ["ingest", "transform", "archive"].iter().all(|b| {
                    n.event_topology()
                        .replicas
                        .get(&BraneKey::new("lab", *b))
                        .is_some_and(|r| r.len() == 1)
                })
            })
        })),
        "statuses did not go round"
    );
    sim
}

fn event(key: &str, n: u32) -> NewEvent {
    NewEvent {
        to: BraneKey::new("lab", "ingest"),
        ty: "raw.batch".into(),
        key: key.into(),
        payload: format!("{key}:{n:06}").into_bytes(),
    }
}

/// Emits `events` on node 0 in batches of `batch`, retrying busy answers;
/// returns the payloads acknowledged.
fn emit_all(
    sim: &mut MeshSim,
    events: Vec<NewEvent>,
    batch: usize,
    mut between: impl FnMut(&mut MeshSim, usize),
) -> BTreeSet<Vec<u8>> {
    let mut acked = BTreeSet::new();
    let mut chunks: Vec<Vec<NewEvent>> = events.chunks(batch).map(<[NewEvent]>::to_vec).collect();
    chunks.reverse();
    let mut round = 0;
    while let Some(chunk) = chunks.pop() {
        round += 1;
        assert!(round < 100_000, "emitting did not finish");
        let id: CommandId = sim.emit(0, chunk.clone());
        assert!(
            sim.run_until(5_000, |s| s.reply(0, id).is_some()),
            "no answer"
        );
        match sim.reply(0, id) {
            Some(Reply::Emitted(Ok(ids))) => {
                assert_eq!(ids.len(), chunk.len());
                acked.extend(chunk.into_iter().map(|e| e.payload));
            }
            Some(Reply::Emitted(Err(e))) if e.to_string().starts_with("busy") => {
                chunks.push(chunk);
                sim.run_for(20);
            }
            other => panic!("emit refused: {other:?}"),
        }
        between(sim, round);
    }
    acked
}

fn settle(sim: &mut MeshSim) {
    assert!(
        sim.run_until(120_000, |s| (0..3).all(|i| s
            .events(i)
            .is_some_and(|r| r.outbox == r.dead_letters && r.inbox == 0))),
        "deliveries did not settle: {:?}",
        (0..3).map(|i| sim.events(i)).collect::<Vec<_>>()
    );
}

fn archived(sim: &MeshSim) -> Vec<(String, Vec<u8>, EventId)> {
    sim.processed()
        .iter()
        .filter(|r| r.brane.brane == "archive")
        .map(|r| (r.key.clone(), r.payload.clone(), r.id))
        .collect()
}

#[test]
fn the_pipeline_runs_across_three_nodes_through_a_crash_of_the_middle_one() {
    let mut sim = mesh(7, &pipeline(false));
    let events: Vec<NewEvent> = (0..3_000)
        .map(|n| event(&format!("s{}", n % 17), n))
        .collect();
    let acked = emit_all(&mut sim, events, 50, |sim, round| {
        if round == 20 {
            sim.crash(1);
        }
        if round == 35 {
            sim.restart(1);
        }
    });
    assert_eq!(acked.len(), 3_000);
    settle(&mut sim);
    let archived = archived(&sim);
    let ids: BTreeSet<EventId> = archived.iter().map(|a| a.2).collect();
    assert_eq!(ids.len(), archived.len(), "archive ran an id twice");
    let payloads: BTreeSet<Vec<u8>> = archived.into_iter().map(|a| a.1).collect();
    assert_eq!(payloads, acked, "every acknowledged emit reached archive");
    let transform_runs = sim
        .processed()
        .iter()
        .filter(|r| r.brane.brane == "transform")
        .count();
    assert!(transform_runs >= 3_000, "transform ran {transform_runs}");
    let r0 = sim.events(0).expect("runs");
    let edge = r0.edges.iter().find(|e| e.to == "transform").expect("edge");
    assert_eq!(edge.delivered, 3_000);
    assert!(edge.retried > 0, "the crash caused retries: {edge:?}");
}

#[test]
fn ordered_edges_keep_per_key_order_end_to_end_through_a_crash() {
    let mut sim = mesh(11, &pipeline(true));
    let events: Vec<NewEvent> = (0..1_500)
        .map(|n| event(&format!("s{}", n % 5), n))
        .collect();
    let acked = emit_all(&mut sim, events, 25, |sim, round| {
        if round == 15 {
            sim.crash(1);
        }
        if round == 30 {
            sim.restart(1);
        }
    });
    settle(&mut sim);
    let archived = archived(&sim);
    assert_eq!(archived.len(), acked.len(), "each exactly once");
    let mut last: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (key, payload, _) in archived {
        if let Some(prev) = last.get(&key) {
            assert!(
                payload > *prev,
                "key {key}: {} after {}",
                String::from_utf8_lossy(&payload),
                String::from_utf8_lossy(prev)
            );
        }
        last.insert(key, payload);
    }
    assert_eq!(last.len(), 5);
}

#[test]
fn a_poison_event_is_dead_lettered_while_the_rest_flows_and_the_run_is_reproducible() {
    let run = |seed| {
        let mut sim = mesh(seed, &pipeline(false));
        let mut events: Vec<NewEvent> = (0..200).map(|n| event("k", n)).collect();
        events[50].payload = b"poison".to_vec();
        let acked = emit_all(&mut sim, events, 20, |_, _| {});
        settle(&mut sim);
        (
            sim.trace_hash(),
            acked.len(),
            archived(&sim).len(),
            sim.events(0),
        )
    };
    let (hash, acked, archived, report) = run(5);
    assert_eq!(acked, 200);
    assert_eq!(archived, 199);
    let report = report.expect("runs");
    assert_eq!(report.dead_letters, 1);
    let edge = report
        .edges
        .iter()
        .find(|e| e.to == "ingest")
        .expect("edge");
    assert_eq!(edge.dead_lettered, 1);
    assert_eq!(run(5).0, hash, "same seed, same trace");
}

#[test]
fn an_emit_without_a_grant_from_the_mesh_root_is_refused() {
    use omega_gossip::desired::{Authority, DesiredRecord};
    use omega_gossip::node::Command;
    let mut sim = mesh(3, &pipeline(false));
    let stranger = omega_identity::Keypair::from_seed([77; 32]);
    let grant = |signer: &omega_identity::Keypair, manifest: &str, root: omega_identity::Did| {
        DesiredRecord::emit_grant(
            manifest,
            Authority {
                signer,
                mesh_root: root,
                proofs: Vec::new(),
                exp: 1_900_000_000,
                nonce: vec![1; 16],
            },
        )
        .unwrap()
        .encode()
    };
    let root = sim.root().did();
    let root_key = sim.root().clone();
    for (g, why) in [
        (grant(&stranger, "lab", root), "unauthorized"),
        (
            grant(&root_key, "other", root),
            "the grant is for manifest `other`",
        ),
        (b"garbage".to_vec(), "unauthorized"),
    ] {
        let id = sim.command(
            0,
            Command::Emit {
                grant: g,
                events: vec![event("k", 1)],
            },
        );
        assert!(sim.run_until(1_000, |s| s.reply(0, id).is_some()));
        match sim.reply(0, id) {
            Some(Reply::Emitted(Err(e))) => {
                assert!(e.to_string().contains(why), "{e}");
            }
            other => panic!("not refused: {other:?}"),
        }
    }
    assert_eq!(sim.events(0).unwrap().outbox, 0);
}
