//! Whole node brains in the deterministic mesh harness: membership,
//! admission, the desired state, placement and the reconciler together,
//! under crashes and partitions, and reproducible from the seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use omega_gossip::Substrate;
use omega_gossip::node::Reply;
use omega_gossip::testkit::mesh::{MeshConfig, MeshSim};

const WEB: &str = r#"
[brane.web]
substrate = "habitat"
image = "web:1.0"
replicas = 3

[brane.api]
substrate = "biome"
image = "api:1.0"
replicas = "auto"
"#;

const WEB_V2: &str = r#"
[brane.web]
substrate = "habitat"
image = "web:2.0"
replicas = 2
"#;

fn substrate(i: usize) -> Substrate {
    if i % 3 == 2 {
        Substrate::Biome
    } else {
        Substrate::Habitat
    }
}

fn mesh(seed: u64, n: usize) -> MeshSim {
    let mut sim = MeshSim::new(seed, MeshConfig::default());
    for i in 0..n {
        sim.add_node(&format!("n{i}"), substrate(i));
    }
    sim
}

fn written(sim: &MeshSim, node: usize, id: omega_gossip::node::CommandId) -> bool {
    matches!(sim.reply(node, id), Some(Reply::Written(Ok(()))))
}

#[test]
fn a_small_mesh_admits_everyone_and_runs_what_it_places() {
    let mut sim = mesh(1, 5);
    assert!(sim.run_until(10_000, MeshSim::all_alive), "not all alive");
    let w = sim.apply(2, "shop", WEB);
    assert!(
        sim.run_until(5_000, |s| written(s, 2, w)),
        "write not acknowledged"
    );
    assert!(
        sim.run_until(10_000, MeshSim::converged),
        "did not converge"
    );
    let running: usize = (0..5).map(|i| sim.running(i).len()).sum();
    // web: 3 habitat replicas; api: every biome node (n2).
    assert_eq!(running, 3 + 1);
}

#[test]
fn fifty_nodes_converge_through_crashes_and_a_partition_and_replay_identically() {
    let wall = Instant::now();
    let (hash, len, virtual_ms) = fifty(7);
    let secs = wall.elapsed().as_secs_f64();
    let (hash2, len2, _) = fifty(7);
    assert_eq!(len, len2, "same seed, same number of outputs");
    assert_eq!(hash, hash2, "same seed, byte-identical output trace");
    let (hash3, _, _) = fifty(8);
    assert_ne!(hash, hash3, "another seed, another run");
    eprintln!(
        "50 nodes x {:.0} virtual s in {secs:.1} wall s: {:.0} node-virtual-seconds per wall second ({len} outputs)",
        virtual_ms as f64 / 1000.0,
        50.0 * virtual_ms as f64 / 1000.0 / secs
    );
}

/// Returns the trace hash, its length and the virtual time run.
fn fifty(seed: u64) -> ([u8; 32], u64, u64) {
    let n = 50;
    let mut sim = mesh(seed, n);
    assert!(
        sim.run_until(30_000, MeshSim::all_alive),
        "50 nodes: not all alive"
    );
    let w = sim.apply(10, "shop", WEB);
    assert!(sim.run_until(5_000, |s| written(s, 10, w)));
    assert!(
        sim.run_until(20_000, MeshSim::converged),
        "no convergence after apply"
    );

    // Crash three nodes (one of which may run web): placement moves.
    for i in [3, 4, 5] {
        sim.crash(i);
    }
    assert!(
        sim.run_until(30_000, MeshSim::converged),
        "no convergence after crashes"
    );

    // Partition 30 | 17 and write on both sides: the later write wins.
    let groups: Vec<u32> = (0..n).map(|i| u32::from(i >= 30)).collect();
    sim.partition(groups);
    sim.run_for(2_000);
    let a = sim.apply(1, "shop", WEB);
    sim.run_for(10);
    let b = sim.apply(40, "shop", WEB_V2);
    sim.run_for(8_000);
    assert!(
        written(&sim, 1, a) && written(&sim, 40, b),
        "writes on both sides"
    );
    sim.heal();
    for i in [3, 4, 5] {
        sim.restart(i);
    }
    assert!(
        sim.run_until(60_000, |s| s.all_alive() && s.converged()),
        "no convergence after the partition healed"
    );
    // Steady state, no checks in between: what the nodes themselves cost.
    let wall = Instant::now();
    sim.run_for(20_000);
    eprintln!(
        "steady state: 50 nodes x 20 virtual s in {:.2} wall s: {:.0} node-virtual-seconds per wall second",
        wall.elapsed().as_secs_f64(),
        50.0 * 20.0 / wall.elapsed().as_secs_f64()
    );
    assert!(sim.converged());
    let view = sim.node(0).unwrap().view();
    assert_eq!(view.manifests.len(), 1);
    assert_eq!(
        view.manifests[0]
            .plan
            .brane("web")
            .unwrap()
            .image
            .as_ref()
            .unwrap()
            .to_string(),
        "web:2.0",
        "the later write wins everywhere"
    );
    (sim.trace_hash(), sim.trace_len(), sim.now())
}

#[test]
fn a_revoked_invite_is_refused_on_every_node_and_its_members_are_expelled() {
    use omega_gossip::desired::Revocation;
    use omega_gossip::join::{InviteSpec, JoinToken};
    let mut sim = mesh(3, 6);
    let spec = InviteSpec {
        substrate: Substrate::Habitat,
        name_pattern: None,
        expires_at: MeshConfig::default().epoch / 1000 + 86_400,
    };
    let leaked = JoinToken::mint(sim.root(), &spec, [77; 32], vec![77]).unwrap();
    let caps = omega_gossip::Capabilities::STANDARD;
    let intruder = sim.add_node_with("intruder", Substrate::Habitat, caps, Some(leaked.clone()));
    assert!(
        sim.run_until(15_000, MeshSim::all_alive),
        "the invite works before it is revoked"
    );
    let w = sim.revoke(2, Revocation::Token(leaked.delegation.cid()));
    assert!(sim.run_until(5_000, |s| written(s, 2, w)));
    let gone = |s: &MeshSim, who: usize| {
        (0..6).all(|i| {
            let n = s.node(i).unwrap();
            n.membership()
                .member(&s.node_id(who))
                .is_none_or(|m| !m.state.is_live())
                && !n.view().peers.contains(&s.node_id(who))
        })
    };
    assert!(
        sim.run_until(20_000, |s| gone(s, intruder)),
        "the intruder was not expelled everywhere"
    );
    // A new node with the same invite is refused by every member.
    let late = sim.add_node_with("late", Substrate::Habitat, caps, Some(leaked));
    sim.run_for(10_000);
    assert!(gone(&sim, late), "a node joined with a revoked invite");
    assert!(sim.node(late).unwrap().view().peers.is_empty());
    let refusals = &sim.node(0).unwrap().report().refusals;
    assert!(
        refusals.iter().any(|r| r.reason.contains("revoked")),
        "{refusals:?}"
    );
    // The honest members are untouched.
    assert!((0..6).all(|i| sim.node(i).unwrap().membership().live_count() >= 5));
}

#[test]
fn anti_entropy_repairs_what_a_partition_kept_away() {
    let mut sim = mesh(4, 3);
    assert!(sim.run_until(10_000, MeshSim::all_alive));
    sim.partition(vec![0, 1, 1]);
    sim.run_for(500);
    let w = sim.apply(0, "shop", WEB_V2);
    sim.run_for(3_000);
    assert!(written(&sim, 0, w));
    assert!(
        sim.node(1).unwrap().view().manifests.is_empty(),
        "it crossed the partition"
    );
    sim.heal();
    // Gossip of the write is long over: only anti-entropy can bring it.
    assert!(sim.run_until(10_000, |s| {
        (1..3).all(|i| s.node(i).unwrap().view().manifests.len() == 1)
    }));
    let d = sim.node(1).unwrap().report().dispatch;
    assert!(d.anti_entropy_rounds > 0 && d.updates_accepted > 0, "{d:?}");
    assert!(sim.run_until(10_000, MeshSim::converged));
}

#[test]
fn statuses_of_crashed_members_are_pruned() {
    let mut sim = mesh(5, 4);
    assert!(sim.run_until(10_000, MeshSim::all_alive));
    let w = sim.apply(0, "shop", WEB);
    assert!(sim.run_until(5_000, |s| written(s, 0, w)));
    assert!(sim.run_until(10_000, MeshSim::converged));
    let victim = sim.node_id(3);
    assert!(sim.node(0).unwrap().view().statuses.contains_key(&victim));
    sim.crash(3);
    assert!(
        sim.run_until(10_000, |s| !s
            .node(0)
            .unwrap()
            .view()
            .statuses
            .contains_key(&victim)),
        "the dead member's status stayed"
    );
    assert!(sim.run_until(10_000, MeshSim::converged));
}
