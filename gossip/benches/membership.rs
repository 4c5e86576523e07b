//! Membership benchmark: prints idle gossip traffic per node at 3, 100 and 1,000
//! members, time to detect a death, and memory per member at 10,000 members.
//! Virtual time throughout (the numbers do not depend on this machine's speed,
//! except the wall-clock column).
//!
//! Run: `cargo bench -p omega-gossip --bench membership`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use omega_gossip::testkit::{NetConfig, Sim};
use omega_gossip::{
    AllowAll, Capabilities, Config, LocalMember, Membership, MeshId, Profile, Resources, State,
    Substrate,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mesh(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, NetConfig::default());
    for _ in 0..n {
        sim.add_node();
    }
    for i in 1..n {
        sim.join(i, &[0, (i * 7919) % i]);
        sim.run_for(10);
    }
    sim
}

/// Idle bytes/s sent per node, mean and max, over `window` ms after convergence.
fn idle_traffic(n: usize, window: u64) -> (f64, f64, u64) {
    let mut sim = mesh(1, n);
    let t = sim
        .run_until_true(500, 300_000, |s| {
            (0..n).all(|i| s.node(i).is_some_and(|m| m.live_count() == n - 1))
        })
        .unwrap_or(u64::MAX);
    // Let join-time dissemination drain before measuring the steady state.
    sim.run_for(30_000);
    let before: Vec<u64> = (0..n).map(|i| sim.bytes_sent(i)).collect();
    sim.run_for(window);
    let rates: Vec<f64> = (0..n)
        .map(|i| (sim.bytes_sent(i) - before[i]) as f64 * 1000.0 / window as f64)
        .collect();
    let mean = rates.iter().sum::<f64>() / n as f64;
    let max = rates.iter().copied().fold(0.0, f64::max);
    (mean, max, t)
}

/// Time (virtual ms) from a crash until every survivor marks the node dead.
fn detection(n: usize, seeds: u64) -> (u64, u64) {
    let mut times: Vec<u64> = (0..seeds)
        .map(|seed| {
            let mut sim = mesh(1000 + seed, n);
            sim.run_until_true(50, 10_000, Sim::all_alive);
            sim.run_for(1_000 + seed * 37);
            let t0 = sim.now();
            sim.crash(n - 1);
            sim.run_until_true(10, 20_000, |s| s.all_see(n - 1, State::Dead))
                .map_or(u64::MAX, |t| t - t0)
        })
        .collect();
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() - 1])
}

/// Live heap bytes per member in one node's table at `n` members, and the
/// machine's own estimate.
fn memory(n: u32) -> (f64, f64) {
    let config = Config::new(MeshId([3; 16]));
    let profile = |i: u32| Profile {
        name: format!("node-{i:05}"),
        substrate: Substrate::Biome,
        capabilities: Capabilities::STANDARD,
        resources: Resources {
            cpu_millis: 8000,
            memory_bytes: 16 << 30,
        },
        addresses: vec![format!(
            "/ip4/10.0.{}.{}/udp/4001/quic-v1",
            i / 256,
            i % 256
        )],
    };
    let key = |i: u32| Sim::key_for(99, i as usize);
    let start = LIVE.load(Ordering::Relaxed);
    let local = LocalMember {
        keypair: key(0),
        profile: profile(0),
        incarnation: 0,
    };
    let mut table =
        Membership::new(config.clone(), local, Box::new(AllowAll), [0; 32], 0).expect("config");
    for i in 1..=n {
        let local = LocalMember {
            keypair: key(i),
            profile: profile(i),
            incarnation: 0,
        };
        let mut joiner =
            Membership::new(config.clone(), local, Box::new(AllowAll), [1; 32], 0).expect("config");
        joiner.join(&[table.id()], 0).expect("join");
        while let Some(t) = joiner.poll_transmit() {
            table.handle_message(joiner.id(), &t.bytes, 0);
        }
        while table.poll_transmit().is_some() {}
        while table.poll_event().is_some() {}
    }
    assert_eq!(table.len(), n as usize);
    let live = (LIVE.load(Ordering::Relaxed) - start) as f64 / f64::from(n);
    let estimate = table.memory_estimate() as f64 / f64::from(n);
    drop(table);
    (live, estimate)
}

fn main() {
    println!(
        "omega-gossip membership benchmark (defaults: probe 200 ms, timeout 100 ms, suspicion 4x, gossip 200 ms, sync page 32 / 10 s)\n"
    );
    println!("| measure | members | value | notes |");
    println!("|---|---|---|---|");
    for n in [3usize, 100, 1000] {
        let wall = Instant::now();
        let (mean, max, converged) = idle_traffic(n, 60_000);
        println!(
            "| idle bytes/s sent per node | {n} | mean {mean:.0}, max {max:.0} | converged at {:.1} s virtual; 60 s window; wall {:.1} s |",
            converged as f64 / 1000.0,
            wall.elapsed().as_secs_f64()
        );
    }
    for n in [3usize, 10] {
        let (median, worst) = detection(n, 10);
        println!(
            "| crash to dead on every survivor | {n} | median {median} ms, worst {worst} ms | 10 seeds, virtual time, 1-3 ms latency |"
        );
    }
    let (live, estimate) = memory(10_000);
    println!(
        "| memory per member (live heap, counting allocator) | 10000 | {live:.0} B | includes the dissemination queue; estimate of table alone: {estimate:.0} B |"
    );
}
