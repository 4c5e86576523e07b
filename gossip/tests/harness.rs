//! Scenario tests over the in-memory harness (virtual time, seeded network).

use omega_gossip::testkit::{NetConfig, Sim};
use omega_gossip::{Event, State};

fn mesh(seed: u64, n: usize, net: NetConfig) -> Sim {
    let mut sim = Sim::new(seed, net);
    for _ in 0..n {
        sim.add_node();
    }
    for i in 1..n {
        sim.join(i, &[0]);
    }
    sim
}

#[test]
fn three_nodes_converge_to_all_alive() {
    let mut sim = mesh(1, 3, NetConfig::default());
    let t = sim
        .run_until_true(50, 5_000, Sim::all_alive)
        .expect("converged");
    assert!(t <= 1_000, "converged at {t} ms");
    assert!((0..3).all(|i| sim.node(i).unwrap().is_joined() || i == 0));
}

/// Kill one node in meshes of 3..=10; every survivor marks it dead within 3 s.
#[test]
fn dead_node_is_marked_dead_everywhere_within_3s() {
    for n in [3usize, 5, 10] {
        for seed in 0..5 {
            let mut sim = mesh(100 + seed, n, NetConfig::default());
            sim.run_until_true(50, 10_000, Sim::all_alive)
                .expect("converged");
            sim.run_for(2_000);
            let victim = n - 1;
            let killed_at = sim.now();
            sim.crash(victim);
            let t = sim
                .run_until_true(10, 10_000, |s| s.all_see(victim, State::Dead))
                .expect("declared dead");
            assert!(
                t - killed_at <= 3_000,
                "n={n} seed={seed}: dead everywhere after {} ms",
                t - killed_at
            );
        }
    }
}

#[test]
fn restarted_node_comes_back_with_higher_incarnation() {
    let mut sim = mesh(3, 4, NetConfig::default());
    sim.run_until_true(50, 5_000, Sim::all_alive)
        .expect("converged");
    sim.crash(2);
    sim.run_until_true(50, 5_000, |s| s.all_see(2, State::Dead))
        .expect("dead");
    let old = sim
        .node(0)
        .unwrap()
        .member(&sim.id(2))
        .unwrap()
        .record
        .record
        .incarnation;
    sim.restart(2);
    sim.join(2, &[0, 1]);
    sim.run_until_true(50, 5_000, Sim::all_alive)
        .expect("alive again");
    let me = sim.node(2).unwrap();
    assert!(
        me.incarnation() > old,
        "incarnation {} must exceed {old}",
        me.incarnation()
    );
    for i in [0, 1, 3] {
        let seen = sim
            .node(i)
            .unwrap()
            .member(&sim.id(2))
            .unwrap()
            .record
            .record
            .incarnation;
        assert_eq!(seen, me.incarnation());
    }
}

#[test]
fn partition_then_heal() {
    let mut sim = mesh(4, 6, NetConfig::default());
    sim.run_until_true(50, 5_000, Sim::all_alive)
        .expect("converged");
    sim.partition(&[&[0, 1, 2], &[3, 4, 5]]);
    sim.run_until_true(100, 20_000, |s| {
        (0..3).all(|a| {
            (3..6).all(|b| {
                s.state_of(a, b) == Some(State::Dead) && s.state_of(b, a) == Some(State::Dead)
            })
        })
    })
    .expect("each side marks the other dead");
    assert!((0..3).all(|a| (0..3).all(|b| a == b || sim.state_of(a, b) == Some(State::Alive))));
    sim.heal();
    let healed = sim.now();
    let t = sim
        .run_until_true(100, 30_000, Sim::all_alive)
        .expect("healed");
    assert!(t - healed <= 15_000, "healed after {} ms", t - healed);
}

#[test]
fn lossy_network_still_converges_and_detects() {
    let net = NetConfig {
        loss_per_mille: 50,
        ..NetConfig::default()
    };
    let mut sim = mesh(5, 8, net);
    sim.run_until_true(50, 10_000, Sim::all_alive)
        .expect("converged despite 5% loss");
    sim.crash(7);
    sim.run_until_true(50, 10_000, |s| s.all_see(7, State::Dead))
        .expect("dead");
}

#[test]
fn graceful_leave_is_seen_as_left() {
    let mut sim = mesh(6, 4, NetConfig::default());
    sim.run_until_true(50, 5_000, Sim::all_alive)
        .expect("converged");
    sim.leave(3);
    sim.run_for(1_000);
    sim.crash(3);
    assert!(sim.all_see(3, State::Left));
    sim.run_for(10_000);
    assert!(
        sim.all_see(3, State::Left),
        "a left node is never suspected"
    );
}

#[test]
fn thousand_members_converge() {
    let n = 1000;
    let mut sim = Sim::new(7, NetConfig::default());
    for _ in 0..n {
        sim.add_node();
    }
    // Staggered joins through random earlier members, like a growing mesh.
    for i in 1..n {
        let seeds = [0, (i * 7919) % i];
        sim.join(i, &seeds);
        sim.run_for(10);
    }
    let t = sim
        .run_until_true(1_000, 120_000, |s| {
            (0..n).all(|i| s.node(i).unwrap().live_count() == n - 1)
        })
        .expect("1000 members converge");
    eprintln!("1000 members converged at {t} ms virtual");
    assert!(sim.all_alive());
}

#[test]
fn garbage_does_not_panic_and_penalizes_the_sender() {
    let mut sim = mesh(8, 3, NetConfig::default());
    sim.run_until_true(50, 5_000, Sim::all_alive)
        .expect("converged");
    let attacker = sim.id(1);
    let before = sim.trace().len();
    for bytes in [
        vec![],
        vec![1],
        vec![9, 9, 9],
        vec![1, 1, 0xff, 0xff],
        vec![1, 5, 0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0u8; 70_000],
    ] {
        sim.inject(attacker, 0, bytes);
    }
    let refused = sim.trace()[before..]
        .iter()
        .filter(|e| e.node == 0 && matches!(&e.event, Event::Refused { peer, penalty: true, .. } if *peer == attacker))
        .count();
    assert_eq!(refused, 6);
    sim.run_for(2_000);
    assert!(sim.all_alive(), "garbage changes nothing");
}

#[test]
fn same_seed_same_trace() {
    let run = |seed| {
        let net = NetConfig {
            loss_per_mille: 20,
            ..NetConfig::default()
        };
        let mut sim = mesh(seed, 6, net);
        sim.run_for(3_000);
        sim.crash(5);
        sim.run_for(3_000);
        sim.restart(5);
        sim.join(5, &[0]);
        sim.run_for(3_000);
        let bytes: Vec<u64> = (0..6).map(|i| sim.bytes_sent(i)).collect();
        (format!("{:?}", sim.trace()), bytes)
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
}
