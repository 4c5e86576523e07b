//! One run of a scenario with one seed: the schedule, the workload, the
//! faults, and the invariants checked as it goes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use omega_gossip::desired::{Authority, DesiredRecord};
use omega_gossip::events::{EventId, EventOps, NewEvent, Stored};
use omega_gossip::node::{BraneKey, Command, Protocol, Reply, Report as NodeReport, Topic};
use omega_gossip::placement::place_all;
use omega_gossip::testkit::mesh::{BraneModel, MeshConfig, MeshSim, Obs};
use omega_gossip::{Capabilities, NodeId, Substrate};
use omega_zgraph::{Capability, Replicas};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::report::{
    Convergence, EdgeSummary, EventsSummary, Invariant, Report, Sample, Span, Timeline, Violation,
    percentile,
};
use crate::scenario::{FaultKind, Loaded, Scenario, matches, parse_bytes, substrate};

/// The invariants, by the names reports use.
pub const INVARIANTS: [&str; 8] = [
    "convergence",
    "placement",
    "no-acknowledged-event-lost",
    "processed-once-per-replica",
    "per-key-order",
    "credits",
    "liveness",
    "authorization",
];

/// Lines of context kept for a violation's trace.
const TRACE_LINES: usize = 40;
/// How often workloads emit, virtual ms.
const EMIT_STEP: u64 = 100;

#[derive(Debug, Clone)]
struct NodeInfo {
    name: String,
    class: String,
    /// Crashed and not (yet) restarted.
    down: bool,
    /// Left or crashed for good.
    gone: bool,
}

/// Where an event was first committed, and what it is.
#[derive(Debug, Clone)]
struct Origin {
    source: usize,
    seq: u64,
    edge: String,
    target: String,
    key: String,
    ordered: bool,
    committed_at: u64,
}

#[derive(Debug, Default)]
struct Book {
    /// Acknowledged events (an emit's reply, or a durable commit), and when.
    acked: BTreeMap<EventId, u64>,
    origin: BTreeMap<EventId, Origin>,
    /// Nodes that committed any event to their outbox (`origin`'s sources).
    sources: BTreeSet<usize>,
    /// Durably processed or dead-lettered, and when.
    resolved: BTreeMap<EventId, u64>,
    /// Durable processed marks: (node, window order) → id, and the set.
    window: BTreeMap<(usize, u64), EventId>,
    processed_on: BTreeSet<(usize, EventId)>,
    /// Commit-time processing, for the order check: the first commit of each id.
    committed: BTreeSet<EventId>,
    /// Per (source, edge, key) on ordered edges: events not yet processed or dead, by seq.
    unresolved: BTreeMap<(usize, String, String), BTreeMap<u64, EventId>>,
    /// Hop latencies, ms, per edge.
    latency: BTreeMap<String, Vec<u64>>,
    /// Processed in the current sample window, per edge.
    window_counts: BTreeMap<String, u64>,
    window_latency: Vec<u64>,
    emitted: u64,
    refused: u64,
    processed: u64,
    dead: u64,
    last_emit: u64,
}

/// A crash of a node that ran branes: the first processing elsewhere ends it.
#[derive(Debug)]
struct Reroute {
    node: usize,
    at: u64,
    branes: BTreeSet<String>,
}

#[derive(Debug, Clone)]
enum Action {
    Join(usize),
    Apply(usize),
    FaultStart(usize),
    FaultEnd(usize, Vec<usize>),
    Restart(usize),
    Churn(usize),
    Byzantine(usize, usize),
    Crash(usize),
}

struct Runner<'a> {
    loaded: &'a Loaded,
    seed: u64,
    sim: MeshSim,
    rng: ChaCha8Rng,
    nodes: Vec<NodeInfo>,
    /// Class index of each node to add, in join order.
    actions: BTreeMap<(u64, u64), Action>,
    action_seq: u64,
    book: Book,
    coverage: BTreeMap<String, u64>,
    samples: Vec<Sample>,
    spans: Vec<Span>,
    violation: Option<Violation>,
    log: VecDeque<String>,
    quiet_at: u64,
    converged_at: Option<u64>,
    members_at: Option<u64>,
    reroutes: Vec<Reroute>,
    reroute_ms: Vec<u64>,
    last_assignment: Option<BTreeMap<String, Vec<NodeId>>>,
    counters: BTreeMap<usize, [u64; 4]>,
    sample_cursor: usize,
    workload_acc: Vec<f64>,
    forged: u64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// What the timeline shows.
    pub timeline: Timeline,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.report.violation.is_none()
    }
}

/// Runs `loaded` with `seed`; the same inputs give the same outcome, byte
/// for byte.
pub fn run(loaded: &Loaded, seed: u64) -> Outcome {
    // One verification per distinct record across every simulated node.
    let want = (loaded.scenario.node_count() * 64).clamp(1 << 16, 1 << 22);
    if omega_identity::cache::capacity() < want {
        omega_identity::cache::set_capacity(want);
    }
    let mut r = Runner::new(loaded, seed);
    r.go();
    r.finish()
}

fn sim_config(s: &Scenario) -> MeshConfig {
    let net = &s.network;
    let sync_interval = if s.disk.sync == "always" {
        None
    } else {
        humantime::parse_duration(&s.disk.sync)
            .ok()
            .map(|d| (d.as_millis() as u64).max(1))
    };
    let branes = s
        .branes
        .iter()
        .map(|(name, b)| {
            (
                name.clone(),
                BraneModel {
                    process_ms: (b.process_ms[0], b.process_ms[1]),
                    fail_per_mille: b.fail_per_mille,
                    emits: b.emits,
                },
            )
        })
        .collect();
    MeshConfig {
        latency: net.latency_ms[0],
        jitter: net.latency_ms[1] - net.latency_ms[0],
        loss_per_mille: net.loss_per_mille,
        tail_per_mille: net.tail_per_mille,
        tail_ms: net.tail_ms,
        dup_per_mille: net.dup_per_mille,
        reorder_per_mille: net.reorder_per_mille,
        reorder_ms: net.reorder_ms,
        bandwidth: net.bandwidth_kib_s * 1024 / 1000,
        disk_latency: s.disk.latency_ms,
        sync_interval,
        branes,
        trace: false,
        observe: true,
        ..MeshConfig::default()
    }
}

fn capabilities(names: &[String]) -> Capabilities {
    let mut c = Capabilities(0);
    for n in names {
        c = c.with(match n.as_str() {
            "frontier" => Capabilities::FRONTIER,
            "gpu" => omega_gossip::placement::GPU_PASSTHROUGH,
            _ => Capabilities::STANDARD,
        });
    }
    c
}

impl<'a> Runner<'a> {
    fn new(loaded: &'a Loaded, seed: u64) -> Self {
        let s = &loaded.scenario;
        let sim = MeshSim::new(seed, sim_config(s));
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
        rng_seed[8] = 0x5e;
        let mut r = Self {
            loaded,
            seed,
            sim,
            rng: ChaCha8Rng::from_seed(rng_seed),
            nodes: Vec::new(),
            actions: BTreeMap::new(),
            action_seq: 0,
            book: Book::default(),
            coverage: BTreeMap::new(),
            samples: Vec::new(),
            spans: Vec::new(),
            violation: None,
            log: VecDeque::new(),
            quiet_at: 0,
            converged_at: None,
            members_at: None,
            reroutes: Vec::new(),
            reroute_ms: Vec::new(),
            last_assignment: None,
            counters: BTreeMap::new(),
            sample_cursor: 0,
            workload_acc: vec![0.0; s.workloads.len()],
            forged: 0,
        };
        for key in [
            "crashes",
            "restarts",
            "messages dropped",
            "suspicions",
            "suspicions refuted",
            "members declared dead",
            "events acknowledged",
            "events processed",
            "retries",
            "re-routes",
            "dead letters",
            "placement moves",
        ] {
            r.coverage.insert(key.into(), 0);
        }
        r.schedule_all();
        r
    }

    fn at(&mut self, t: u64, a: Action) {
        self.action_seq += 1;
        self.actions.insert((t, self.action_seq), a);
    }

    fn count(&mut self, what: &str, n: u64) {
        *self.coverage.entry(what.into()).or_default() += n;
    }

    fn note(&mut self, line: String) {
        if self.log.len() == TRACE_LINES {
            self.log.pop_front();
        }
        self.log
            .push_back(format!("{:>9} ms  {line}", self.sim.now()));
    }

    fn schedule_all(&mut self) {
        let s = &self.loaded.scenario;
        let total = s.node_count();
        let over = s
            .join_over
            .map_or((total as u64 * 20).min(60_000), |d| d.ms());
        let mut k = 0u64;
        for (ci, c) in s.classes.iter().enumerate() {
            for j in 0..c.count {
                let name = c
                    .names
                    .get(j)
                    .cloned()
                    .unwrap_or_else(|| format!("{}-{}", c.class, j + 1));
                self.nodes.push(NodeInfo {
                    name,
                    class: s.classes[ci].class.clone(),
                    down: true,
                    gone: false,
                });
                let t = if total <= 1 {
                    0
                } else {
                    over * k / total as u64
                };
                let idx = self.nodes.len() - 1;
                self.at(t, Action::Join(idx));
                k += 1;
            }
        }
        let mut quiet = over;
        for (m, spec) in s.manifests.iter().enumerate() {
            self.at(spec.at.ms(), Action::Apply(m));
            quiet = quiet.max(spec.at.ms());
        }
        for (f, fault) in s.faults.iter().enumerate() {
            self.at(fault.at.ms(), Action::FaultStart(f));
        }
        self.quiet_at = quiet.max(s.quiet_at());
    }

    /// Nodes (by index) a selector matches now among live nodes.
    fn select(&self, sel: &str) -> Vec<usize> {
        (0..self.sim.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                !n.down && !n.gone && matches(sel, &n.name, &n.class)
            })
            .collect()
    }

    fn pick(&mut self, sel: &str) -> Option<usize> {
        let c = self.select(sel);
        if c.is_empty() {
            None
        } else {
            Some(c[(self.rng.next_u64() % c.len() as u64) as usize])
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.sim.len())
            .filter(|&i| !self.nodes[i].down && !self.nodes[i].gone)
            .collect()
    }

    fn end(&self) -> u64 {
        let s = &self.loaded.scenario;
        s.duration
            .ms()
            .max(self.quiet_at + s.check.converge_within.ms())
    }

    fn go(&mut self) {
        let every = self.loaded.scenario.check.every.ms();
        let end = self.end();
        let mut t = 0;
        while t < end && self.violation.is_none() {
            let next = (t + EMIT_STEP).min(end);
            while let Some((&(at, seq), _)) = self.actions.first_key_value() {
                if at > next {
                    break;
                }
                let Some(a) = self.actions.remove(&(at, seq)) else {
                    break;
                };
                if at > self.sim.now() {
                    self.sim.run_for(at - self.sim.now());
                }
                self.act(a);
            }
            if next > self.sim.now() {
                self.sim.run_for(next - self.sim.now());
            }
            self.observe();
            self.emit_workloads(EMIT_STEP);
            if next.is_multiple_of(every) || next == end {
                self.check(next);
            }
            t = next;
            if t >= self.loaded.scenario.duration.ms() && self.done_early() {
                break;
            }
        }
        if self.violation.is_none() {
            self.final_checks();
        }
    }

    /// After the scenario's duration: stop once converged and drained.
    fn done_early(&self) -> bool {
        self.converged_at.is_some() && self.pending_events() == 0
    }

    // ----- actions ---------------------------------------------------------------

    fn act(&mut self, a: Action) {
        match a {
            Action::Join(i) => self.join(i),
            Action::Apply(m) => {
                let spec = self.loaded.scenario.manifests[m].clone();
                let via = self
                    .pick(&spec.via)
                    .or_else(|| self.live().first().copied());
                if let (Some(via), Some(body)) = (via, spec.toml.as_deref()) {
                    self.sim.apply(via, &spec.name, body);
                    self.note(format!(
                        "apply manifest {} via {}",
                        spec.name, self.nodes[via].name
                    ));
                    self.count("manifests applied", 1);
                    self.spans
                        .push(Span::mark("apply", &spec.name, self.sim.now()));
                }
            }
            Action::FaultStart(f) => self.fault_start(f),
            Action::FaultEnd(f, nodes) => self.fault_end(f, nodes),
            Action::Restart(i) => {
                if self.nodes[i].down && !self.nodes[i].gone {
                    self.sim.restart(i);
                    self.nodes[i].down = false;
                    self.count("restarts", 1);
                    self.note(format!("restart {}", self.nodes[i].name));
                }
            }
            Action::Crash(i) => {
                if !self.nodes[i].down {
                    self.crash(i, false);
                    self.nodes[i].gone = true;
                }
            }
            Action::Churn(f) => self.churn_step(f),
            Action::Byzantine(f, i) => self.byzantine_step(f, i),
        }
    }

    fn join(&mut self, i: usize) {
        let s = &self.loaded.scenario;
        let Some(class) = s.classes.iter().find(|c| c.class == self.nodes[i].class) else {
            return;
        };
        let sub = substrate(&class.substrate).unwrap_or(Substrate::Habitat);
        let caps = capabilities(&class.capabilities);
        let memory = class
            .memory
            .as_deref()
            .and_then(parse_bytes)
            .unwrap_or(8 << 30);
        let name = self.nodes[i].name.clone();
        let token = self.sim.token(sub).cloned();
        let idx = self.sim.add_node_full(&name, sub, caps, memory, token);
        debug_assert_eq!(idx, i);
        self.nodes[i].down = false;
    }

    fn crash(&mut self, i: usize, power: bool) {
        let running: BTreeSet<String> = self
            .sim
            .running(i)
            .into_iter()
            .map(|k| format!("{}/{}", k.manifest, k.brane))
            .collect();
        if !running.is_empty() {
            self.reroutes.push(Reroute {
                node: i,
                at: self.sim.now(),
                branes: running,
            });
        }
        self.harvest(i);
        if power {
            self.sim.power_loss(i);
            self.count("power losses", 1);
        } else {
            self.sim.crash(i);
        }
        self.nodes[i].down = true;
        self.count("crashes", 1);
        self.observe();
    }

    fn fault_start(&mut self, f: usize) {
        let fault = self.loaded.scenario.faults[f].clone();
        let now = self.sim.now();
        let end = fault.kind.lasts().map(|d| now + d.ms());
        let kind = fault.kind.name();
        match &fault.kind {
            FaultKind::Crash {
                node,
                restart_after,
                lose_unsynced,
            } => {
                let Some(i) = self.pick(node) else {
                    return self.note(format!("crash {node}: no live node matches"));
                };
                self.note(format!(
                    "{} {}",
                    if *lose_unsynced {
                        "power loss of"
                    } else {
                        "crash"
                    },
                    self.nodes[i].name
                ));
                self.spans
                    .push(Span::new(kind, &self.nodes[i].name, now, end));
                self.crash(i, *lose_unsynced);
                if let Some(d) = restart_after {
                    self.at(now + d.ms(), Action::Restart(i));
                }
            }
            FaultKind::Partition { groups, heal_after } => {
                let mut side = vec![groups.len() as u32; self.sim.len()];
                for (g, sels) in groups.iter().enumerate() {
                    for (i, s) in side.iter_mut().enumerate() {
                        let n = &self.nodes[i];
                        if sels.iter().any(|sel| matches(sel, &n.name, &n.class)) {
                            *s = g as u32;
                        }
                    }
                }
                self.sim.partition(side);
                self.count("partitions", 1);
                let label = groups
                    .iter()
                    .map(|g| g.join(","))
                    .collect::<Vec<_>>()
                    .join(" | ");
                self.note(format!("partition {label}"));
                self.spans.push(Span::new(kind, &label, now, end));
                if let Some(d) = heal_after {
                    self.at(now + d.ms(), Action::FaultEnd(f, Vec::new()));
                }
            }
            FaultKind::Skew { node, ms, lasts } => {
                let ms = *ms;
                self.node_fault(f, node, *lasts, "clock skews", move |sim, i| {
                    sim.set_skew(i, ms);
                    format!("skew by {ms} ms")
                });
            }
            FaultKind::Slow { node, ms, lasts } => {
                let ms = *ms;
                self.node_fault(f, node, *lasts, "slow nodes", move |sim, i| {
                    sim.set_slow(i, ms);
                    format!("slow by {ms} ms")
                });
            }
            FaultKind::SlowDisk { node, ms, lasts } => {
                let ms = *ms;
                self.node_fault(f, node, *lasts, "slow disks", move |sim, i| {
                    sim.set_disk(i, Some(ms));
                    format!("disk at {ms} ms per write")
                });
            }
            FaultKind::Churn { class, lasts, .. } => {
                self.note(format!("churn of {class} for {lasts}"));
                self.spans.push(Span::new(kind, class, now, end));
                self.at(now, Action::Churn(f));
            }
            FaultKind::Byzantine { node, lasts, .. } => {
                let Some(i) = self.pick(node) else { return };
                self.note(format!(
                    "{} turns byzantine for {lasts}",
                    self.nodes[i].name
                ));
                self.spans
                    .push(Span::new(kind, &self.nodes[i].name, now, end));
                self.at(now, Action::Byzantine(f, i));
            }
        }
    }

    /// A fault on one node that lasts a while (skew, slowness).
    fn node_fault(
        &mut self,
        f: usize,
        node: &str,
        lasts: Option<crate::scenario::Dur>,
        counter: &str,
        apply: impl FnOnce(&mut MeshSim, usize) -> String,
    ) {
        let Some(i) = self.pick(node) else {
            return self.note(format!("{counter}: no live node matches {node}"));
        };
        let now = self.sim.now();
        let end = lasts.map(|d| now + d.ms());
        let what = apply(&mut self.sim, i);
        self.count(counter, 1);
        self.note(format!("{} {what}", self.nodes[i].name));
        let kind = self.loaded.scenario.faults[f].kind.name();
        self.spans
            .push(Span::new(kind, &self.nodes[i].name, now, end));
        if let Some(d) = lasts {
            self.at(now + d.ms(), Action::FaultEnd(f, vec![i]));
        }
    }

    fn fault_end(&mut self, f: usize, nodes: Vec<usize>) {
        let kind = self.loaded.scenario.faults[f].kind.clone();
        match kind {
            FaultKind::Partition { .. } => {
                self.sim.heal();
                self.count("partitions healed", 1);
                self.note("partition healed".into());
            }
            FaultKind::Skew { .. } => nodes.iter().for_each(|&i| self.sim.set_skew(i, 0)),
            FaultKind::Slow { .. } => nodes.iter().for_each(|&i| self.sim.set_slow(i, 0)),
            FaultKind::SlowDisk { .. } => nodes.iter().for_each(|&i| self.sim.set_disk(i, None)),
            _ => {}
        }
    }

    fn churn_step(&mut self, f: usize) {
        let fault = self.loaded.scenario.faults[f].clone();
        let FaultKind::Churn {
            class,
            joins_per_min,
            leaves_per_min,
            lasts,
        } = &fault.kind
        else {
            return;
        };
        let now = self.sim.now();
        if now >= fault.at.ms() + lasts.ms() {
            return;
        }
        // One step a second; fractional rates accumulate by chance.
        let per_sec = |r: f64, rng: &mut ChaCha8Rng| {
            let whole = (r / 60.0).floor();
            let frac = r / 60.0 - whole;
            whole as u64 + u64::from((rng.next_u64() % 1_000_000) as f64 / 1e6 < frac)
        };
        let joins = per_sec(*joins_per_min, &mut self.rng);
        let leaves = per_sec(*leaves_per_min, &mut self.rng);
        for _ in 0..joins {
            let n = self.nodes.iter().filter(|n| n.class == *class).count();
            self.nodes.push(NodeInfo {
                name: format!("{class}-{}", n + 1),
                class: class.clone(),
                down: true,
                gone: false,
            });
            let i = self.nodes.len() - 1;
            self.join(i);
            self.count("churn joins", 1);
            self.note(format!("{} joins", self.nodes[i].name));
        }
        for _ in 0..leaves {
            let Some(i) = self.pick(&format!("{class}-*")) else {
                break;
            };
            if self.rng.next_u64().is_multiple_of(2) {
                self.sim.command(i, Command::Leave);
                self.at(now + 2_000, Action::Crash(i));
                self.nodes[i].gone = true;
                self.count("churn leaves", 1);
                self.note(format!("{} leaves", self.nodes[i].name));
            } else {
                self.crash(i, false);
                self.nodes[i].gone = true;
                self.count("churn crashes", 1);
                self.note(format!("{} crashes for good", self.nodes[i].name));
            }
        }
        self.at(now + 1_000, Action::Churn(f));
    }

    fn byzantine_step(&mut self, f: usize, i: usize) {
        let fault = self.loaded.scenario.faults[f].clone();
        let FaultKind::Byzantine { every, lasts, .. } = &fault.kind else {
            return;
        };
        let now = self.sim.now();
        if now >= fault.at.ms() + lasts.ms() || self.nodes[i].down || self.nodes[i].gone {
            return;
        }
        self.forged += 1;
        let k = self.forged;
        let plan = self.loaded.plans.first().cloned();
        if let Some(plan) = plan {
            // A manifest signed with the member's own key: no delegation from the root.
            let hlc = self.sim.hlc();
            let key = self.sim.key(i).clone();
            let root = self.sim.root().did();
            let auth = Authority {
                signer: &key,
                mesh_root: root,
                proofs: Vec::new(),
                exp: 1_800_000_000 + 86_400,
                nonce: k.to_le_bytes().to_vec(),
            };
            if let Ok(r) = DesiredRecord::apply(&format!("forged-{k}"), &plan, hlc, auth) {
                self.sim.inject_gossip(i, Topic::State, r.encode());
            }
            // A root-signed record, tampered with in flight.
            let hlc = self.sim.hlc();
            let root_key = self.sim.root().clone();
            let auth = Authority {
                signer: &root_key,
                mesh_root: root_key.did(),
                proofs: Vec::new(),
                exp: 1_800_000_000 + 86_400,
                nonce: k.to_le_bytes().to_vec(),
            };
            if let Ok(r) = DesiredRecord::apply(&format!("tampered-{k}"), &plan, hlc, auth) {
                let mut bytes = r.encode();
                let at = (self.rng.next_u64() as usize) % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 0x55;
                }
                self.sim.inject_gossip(i, Topic::State, bytes);
            }
        }
        let mut garbage = vec![0u8; 64 + (self.rng.next_u64() % 512) as usize];
        self.rng.fill_bytes(&mut garbage);
        self.sim.inject_gossip(i, Topic::Status, garbage.clone());
        self.sim.inject_gossip(i, Topic::State, garbage.clone());
        let peers = self.live();
        if !peers.is_empty() {
            let j = peers[(self.rng.next_u64() % peers.len() as u64) as usize];
            if j != i {
                self.sim
                    .inject_request(i, j, Protocol::Event, garbage.clone());
                self.sim.inject_request(i, j, Protocol::Swim, garbage);
            }
        }
        self.count("byzantine messages", 6);
        self.at(now + every.ms(), Action::Byzantine(f, i));
    }

    // ----- workload ----------------------------------------------------------------

    fn emit_workloads(&mut self, step: u64) {
        let now = self.sim.now();
        let s = &self.loaded.scenario;
        let default_until = s
            .duration
            .ms()
            .saturating_sub(s.check.drain_within.ms().min(s.duration.ms() / 3));
        for (w, spec) in s.workloads.clone().iter().enumerate() {
            let until = spec.until.map_or(default_until, |d| d.ms());
            if now < spec.from.ms() || now >= until {
                continue;
            }
            self.workload_acc[w] += spec.rate * step as f64 / 1000.0;
            let n = self.workload_acc[w].floor() as usize;
            if n == 0 {
                continue;
            }
            self.workload_acc[w] -= n as f64;
            let Some(via) = self.pick(&spec.via) else {
                continue;
            };
            let events: Vec<NewEvent> = (0..n)
                .map(|_| {
                    let key = match (spec.keys, spec.key_dist.as_str()) {
                        (0, _) => String::new(),
                        (k, "zipf") => format!("k{}", zipf(&mut self.rng, k)),
                        (k, _) => format!("k{}", self.rng.next_u64() % u64::from(k)),
                    };
                    let poison = spec.poison_per_mille > 0
                        && (self.rng.next_u64() % 1000) < u64::from(spec.poison_per_mille);
                    let payload = if poison {
                        b"poison".to_vec()
                    } else {
                        let mut p = vec![b'x'; spec.payload_bytes];
                        if let Some(b) = p.first_mut() {
                            *b = b'a' + (self.rng.next_u64() % 26) as u8;
                        }
                        p
                    };
                    NewEvent {
                        to: BraneKey::new(&spec.manifest, &spec.to),
                        ty: spec.ty.clone(),
                        key,
                        payload,
                    }
                })
                .collect();
            self.book.emitted += n as u64;
            self.book.last_emit = now;
            self.sim.emit(via, events);
        }
    }

    // ----- observations ----------------------------------------------------------

    fn observe(&mut self) {
        for (at, o) in self.sim.drain() {
            match o {
                Obs::Committed { node, ops, durable } => {
                    self.committed(node, &ops, at);
                    if durable {
                        self.durable(node, &ops, at);
                    }
                }
                Obs::Sealed { node, ops } => self.durable(node, &ops, at),
                Obs::Lost { node, writes } => {
                    self.count("unsynced writes lost", writes as u64);
                    self.note(format!(
                        "{} lost {writes} event-store writes not yet synced",
                        self.nodes[node].name
                    ));
                    // Order across a power loss of the source is not judged.
                    self.book.unresolved.retain(|(s, _, _), _| *s != node);
                }
                Obs::Reply { reply, .. } => match reply {
                    Reply::Emitted(Ok(ids)) => {
                        for id in ids {
                            self.book.acked.entry(id).or_insert(at);
                        }
                    }
                    Reply::Emitted(Err(_)) => self.book.refused += 1,
                    _ => {}
                },
                Obs::Report { report, .. } => match *report {
                    NodeReport::Member { event, .. } => {
                        use omega_gossip::Event;
                        match event {
                            Event::Suspect { .. } => self.count("suspicions", 1),
                            Event::Alive { .. } => self.count("suspicions refuted", 1),
                            Event::Dead { .. } => self.count("members declared dead", 1),
                            _ => {}
                        }
                    }
                    NodeReport::Refusal(_) => self.count("refusals", 1),
                    NodeReport::Strike { .. } => self.count("strikes", 1),
                    NodeReport::Banned { .. } => self.count("bans", 1),
                    _ => {}
                },
                _ => {}
            }
        }
    }

    fn committed(&mut self, node: usize, ops: &EventOps, now: u64) {
        for (seq, bytes) in &ops.put {
            let Ok(st) = Stored::from_bytes(bytes) else {
                continue;
            };
            let id = st.event.id;
            if !self.book.origin.contains_key(&id) {
                let from = if st.event.source.brane.is_empty() {
                    "outside".to_owned()
                } else {
                    st.event.source.brane.clone()
                };
                let edge = format!("{}: {} → {} ({})", st.manifest, from, st.to, st.event.ty);
                let o = Origin {
                    source: node,
                    seq: *seq,
                    edge: edge.clone(),
                    target: format!("{}/{}", st.manifest, st.to),
                    key: st.event.key.clone(),
                    ordered: st.ordered,
                    committed_at: now,
                };
                if o.ordered {
                    self.book
                        .unresolved
                        .entry((node, edge, o.key.clone()))
                        .or_default()
                        .insert(*seq, id);
                }
                self.book.sources.insert(o.source);
                self.book.origin.insert(id, o);
            }
            if st.dead.is_some()
                && let Some(o) = self.book.origin.get(&id).cloned()
                && let Some(q) = self.book.unresolved.get_mut(&(o.source, o.edge, o.key))
            {
                q.remove(&o.seq);
            }
        }
        for (_, id) in &ops.processed {
            if !self.book.committed.insert(*id) {
                continue;
            }
            let Some(o) = self.book.origin.get(id).cloned() else {
                continue;
            };
            let lat = now.saturating_sub(o.committed_at);
            self.book
                .latency
                .entry(o.edge.clone())
                .or_default()
                .push(lat);
            *self.book.window_counts.entry(o.edge.clone()).or_default() += 1;
            self.book.window_latency.push(lat);
            // Re-routes: the first processing of a crashed node's brane elsewhere.
            let mut done = Vec::new();
            for (k, r) in self.reroutes.iter().enumerate() {
                if r.node != node && r.at <= now && r.branes.contains(&o.target) {
                    done.push(k);
                }
            }
            for k in done.into_iter().rev() {
                let r = self.reroutes.remove(k);
                self.reroute_ms.push(now - r.at);
            }
            if o.ordered {
                let group = (o.source, o.edge.clone(), o.key.clone());
                let mut early = None;
                if let Some(q) = self.book.unresolved.get_mut(&group) {
                    if let Some((&first, &earlier)) = q.first_key_value()
                        && first < o.seq
                    {
                        early = Some((first, earlier));
                    }
                    q.remove(&o.seq);
                }
                if let Some((first, earlier)) = early {
                    let detail = format!(
                        "on {} key `{}`: event {id} (outbox seq {} on {}) was processed on {} before event {earlier} (seq {first}), which is neither processed nor dead-lettered",
                        o.edge, o.key, o.seq, self.nodes[o.source].name, self.nodes[node].name
                    );
                    self.violate("per-key-order", detail);
                }
            }
        }
    }

    fn durable(&mut self, node: usize, ops: &EventOps, now: u64) {
        for (_, bytes) in &ops.put {
            if let Ok(st) = Stored::from_bytes(bytes) {
                self.book.acked.entry(st.event.id).or_insert(now);
                if st.dead.is_some() && !self.book.resolved.contains_key(&st.event.id) {
                    self.book.resolved.insert(st.event.id, now);
                    self.book.dead += 1;
                }
            }
        }
        for o in &ops.forget {
            if let Some(id) = self.book.window.remove(&(node, *o)) {
                self.book.processed_on.remove(&(node, id));
            }
        }
        for (o, id) in &ops.processed {
            self.book.window.insert((node, *o), *id);
            if !self.book.processed_on.insert((node, *id)) {
                let detail = format!(
                    "event {id} was processed twice on {} (both marks durable, inside the window)",
                    self.nodes[node].name
                );
                self.violate("processed-once-per-replica", detail);
            }
            self.book.processed += 1;
            self.book.resolved.entry(*id).or_insert(now);
        }
    }

    fn pending_events(&self) -> usize {
        self.book
            .acked
            .keys()
            .filter(|id| !self.book.resolved.contains_key(id))
            .filter(|id| {
                self.book
                    .origin
                    .get(id)
                    .is_none_or(|o| !self.nodes[o.source].gone)
            })
            .count()
    }

    fn violate(&mut self, invariant: &str, detail: String) {
        if self.violation.is_some() {
            return;
        }
        self.note(format!("VIOLATION {invariant}: {detail}"));
        self.violation = Some(Violation {
            invariant: invariant.into(),
            at_ms: self.sim.now(),
            detail,
            trace: self.log.iter().cloned().collect(),
        });
    }

    // ----- checks ------------------------------------------------------------------

    /// The nodes the continuous checks read this time (rotating).
    fn sample(&mut self) -> Vec<usize> {
        let live = self.live();
        let k = self.loaded.scenario.check.sample;
        if live.len() <= k {
            return live;
        }
        let start = self.sample_cursor % live.len();
        self.sample_cursor += k;
        (0..k).map(|j| live[(start + j) % live.len()]).collect()
    }

    fn check(&mut self, now: u64) {
        let sample = self.sample();
        let live = self.live();
        self.check_placement(&sample, false);
        self.check_credits();
        self.check_authorization(&sample);
        if self.violation.is_some() {
            return;
        }
        let members_ok = sample.iter().all(|&i| {
            self.sim
                .node(i)
                .is_some_and(|n| n.membership().live_count() + 1 == live.len())
        });
        if members_ok {
            self.members_at.get_or_insert(now);
        } else if now < self.quiet_at {
            self.members_at = None;
        }
        if now >= self.quiet_at {
            if self.converged_at.is_none() && members_ok && self.sim.converged_among(&sample) {
                self.converged_at = Some(now);
                self.note("converged".into());
            }
            let bound = self.quiet_at + self.loaded.scenario.check.converge_within.ms();
            if self.converged_at.is_none() && now >= bound {
                let detail = format!(
                    "{} ms after the last fault, the live nodes do not agree on membership, desired state and placement, or do not run what it gives them",
                    now - self.quiet_at
                );
                self.violate("convergence", detail);
            }
        } else {
            self.converged_at = None;
        }
        self.sample_point(now, &sample, live.len());
    }

    fn sample_point(&mut self, now: u64, sample: &[usize], live: usize) {
        let mut lat = std::mem::take(&mut self.book.window_latency);
        lat.sort_unstable();
        let seeing = sample
            .iter()
            .filter_map(|&i| self.sim.node(i))
            .map(|n| n.membership().live_count() + 1)
            .min()
            .unwrap_or(0);
        let moves = self.placement_moves(sample);
        self.count("placement moves", moves);
        let running = self.live().iter().map(|&i| self.sim.running(i).len()).sum();
        self.samples.push(Sample {
            t: now,
            live,
            seeing,
            running,
            partitioned: self.sim.partitioned(),
            edges: std::mem::take(&mut self.book.window_counts),
            p50: percentile(&lat, 50.0),
            p99: percentile(&lat, 99.0),
            moves,
        });
    }

    fn placement_moves(&mut self, sample: &[usize]) -> u64 {
        let Some(&i) = sample.first() else { return 0 };
        let Some(node) = self.sim.node(i) else {
            return 0;
        };
        let view = node.view();
        let now: BTreeMap<String, Vec<NodeId>> = place_all(&view.manifests, &view.members)
            .into_iter()
            .map(|p| {
                let mut a: Vec<NodeId> = p.placement.assignment.iter().map(|(n, _)| *n).collect();
                a.sort();
                (format!("{}/{}", p.manifest.name, p.name), a)
            })
            .collect();
        let moves = match &self.last_assignment {
            Some(prev) => now
                .iter()
                .filter(|(k, v)| prev.get(*k).is_some_and(|p| p != *v))
                .count() as u64,
            None => 0,
        };
        self.last_assignment = Some(now);
        moves
    }

    fn check_placement(&mut self, sample: &[usize], final_check: bool) {
        let Some(&i) = sample.first() else { return };
        let Some(node) = self.sim.node(i) else { return };
        let view = node.view();
        let mut problem = None;
        for p in place_all(&view.manifests, &view.members) {
            let b = p.brane;
            let mut total = 0u32;
            for (id, count) in &p.placement.assignment {
                total += count;
                let Some(j) = self.sim.index_of(id) else {
                    problem = Some(format!(
                        "{}/{} placed on a node that is not in the mesh",
                        p.manifest.name, p.name
                    ));
                    break;
                };
                let prof = self.sim.profile(j);
                let name = &prof.name;
                let why = if prof.substrate != Substrate::from(b.substrate) {
                    Some(format!(
                        "substrate {} ≠ {}",
                        prof.substrate.as_str(),
                        Substrate::from(b.substrate).as_str()
                    ))
                } else if b.capability == Capability::Frontier
                    && (prof.substrate == Substrate::Habitat
                        || !prof.capabilities.contains(Capabilities::FRONTIER))
                {
                    Some("frontier on a node without frontier (or on habitat)".into())
                } else if !b.hosts.is_empty() && !b.hosts.contains(name) {
                    Some("not in its hosts".into())
                } else if b
                    .limits
                    .memory_bytes
                    .is_some_and(|m| m > prof.resources.memory_bytes)
                {
                    Some("more memory than the node has".into())
                } else if final_check && self.nodes[j].gone {
                    Some("a node that left".into())
                } else {
                    None
                };
                if let Some(why) = why {
                    problem = Some(format!(
                        "{}/{} placed on {name}, as seen by {}: {why}",
                        p.manifest.name, p.name, self.nodes[i].name
                    ));
                    break;
                }
            }
            if problem.is_none()
                && let Replicas::Count(n) = b.replicas
                && total > u32::from(n)
            {
                problem = Some(format!(
                    "{}/{}: {total} replicas placed, {n} asked for",
                    p.manifest.name, p.name
                ));
            }
            if problem.is_some() {
                break;
            }
        }
        if let Some(detail) = problem {
            self.violate("placement", detail);
        }
    }

    fn check_credits(&mut self) {
        let credits = omega_gossip::events::DeliveryConfig::default().edge_credits;
        let active: Vec<usize> = self.book.sources.iter().copied().collect();
        for i in active {
            let Some(node) = self.sim.node(i) else {
                continue;
            };
            let report = node.events();
            for e in &report.edges {
                if e.in_flight > credits {
                    let detail = format!(
                        "{}: {} in flight from {} on edge {} → {}, above the {credits} credits",
                        e.manifest, e.in_flight, self.nodes[i].name, e.from, e.to
                    );
                    return self.violate("credits", detail);
                }
            }
            let c = self.counters.entry(i).or_default();
            let now = [
                report.edges.iter().map(|e| e.retried).sum::<u64>(),
                report.edges.iter().map(|e| e.rerouted).sum(),
                report.duplicates,
                report.edges.iter().map(|e| e.dead_lettered).sum(),
            ];
            let mut delta = [0u64; 4];
            for k in 0..4 {
                delta[k] = if now[k] >= c[k] {
                    now[k] - c[k]
                } else {
                    now[k]
                };
                c[k] = now[k];
            }
            self.count("retries", delta[0]);
            self.count("re-routes", delta[1]);
            self.count("duplicates answered", delta[2]);
            self.count("dead letters", delta[3]);
        }
    }

    /// Counters of node `i` before it crashes (they restart from zero).
    fn harvest(&mut self, i: usize) {
        if self.book.sources.contains(&i) {
            self.check_credits();
        }
        self.counters.remove(&i);
    }

    fn check_authorization(&mut self, sample: &[usize]) {
        for &i in sample {
            let Some(node) = self.sim.node(i) else {
                continue;
            };
            let found = node
                .desired()
                .manifests()
                .find(|m| m.name.starts_with("forged-") || m.name.starts_with("tampered-"));
            if let Some(m) = found {
                let detail = format!(
                    "{} holds manifest `{}`, which no authorized principal signed",
                    self.nodes[i].name, m.name
                );
                return self.violate("authorization", detail);
            }
        }
    }

    fn final_checks(&mut self) {
        self.observe();
        self.sim.seal_due();
        self.observe();
        let all = self.live();
        let wide: Vec<usize> = if all.len() <= 512 {
            all.clone()
        } else {
            let step = all.len() / 512;
            all.iter().step_by(step.max(1)).copied().collect()
        };
        self.check_authorization(&wide);
        self.check_placement(&wide, true);
        if self.violation.is_some() {
            return;
        }
        // Every acknowledged event processed or dead-lettered.
        let unresolved: Vec<EventId> = self
            .book
            .acked
            .keys()
            .filter(|id| !self.book.resolved.contains_key(id))
            .copied()
            .collect();
        let mut lost = Vec::new();
        let mut waiting = Vec::new();
        let mut departed = 0;
        for id in unresolved {
            let Some(o) = self.book.origin.get(&id) else {
                lost.push(id);
                continue;
            };
            if self.nodes[o.source].gone {
                // Durable on a node that left or died for good: its disk
                // went with it (the promise is durability on that node).
                departed += 1;
            } else if self.sim.event_store(o.source).outbox.contains_key(&o.seq) {
                waiting.push(id);
            } else {
                lost.push(id);
            }
        }
        if departed > 0 {
            self.count("events lost with departed nodes", departed);
        }
        if let Some(id) = lost.first() {
            let origin = self
                .book
                .origin
                .get(id)
                .map(|o| {
                    format!(
                        " (first committed on {} for {})",
                        self.nodes[o.source].name, o.edge
                    )
                })
                .unwrap_or_default();
            let detail = format!(
                "{} acknowledged events were never processed and are in no outbox; the first: {id}{origin}",
                lost.len()
            );
            self.violate("no-acknowledged-event-lost", detail);
            return;
        }
        if let Some(id) = waiting.first() {
            let mut holders: BTreeMap<String, usize> = BTreeMap::new();
            for w in &waiting {
                if let Some(o) = self.book.origin.get(w) {
                    *holders
                        .entry(format!("{} ({})", self.nodes[o.source].name, o.edge))
                        .or_default() += 1;
                }
            }
            let why = self.book.origin.get(id).and_then(|o| {
                let report = self.sim.node(o.source)?.events();
                let edge = report
                    .edges
                    .iter()
                    .find(|e| o.edge.contains(&format!("→ {} ", e.to)))?;
                Some(format!(
                    "; that edge on its node: {} queued, {} in flight, lag {} ms{}",
                    edge.queued,
                    edge.in_flight,
                    edge.lag_ms,
                    edge.stalled
                        .as_deref()
                        .map(|s| format!(", stalled: {s}"))
                        .unwrap_or_default()
                ))
            });
            let detail = format!(
                "{} acknowledged events still wait in outboxes at the end, {} ms after the last emit (bound {}); held by {}; the first: {id}{}",
                waiting.len(),
                self.sim.now().saturating_sub(self.book.last_emit),
                self.loaded.scenario.check.drain_within,
                holders
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                why.unwrap_or_default()
            );
            self.violate("liveness", detail);
            return;
        }
        // Liveness of placement: every brane with an eligible live node runs.
        if let Some(&i) = all.first()
            && let Some(node) = self.sim.node(i)
        {
            let view = node.view();
            let running: BTreeSet<String> = all
                .iter()
                .flat_map(|&j| self.sim.running(j))
                .map(|k| format!("{}/{}", k.manifest, k.brane))
                .collect();
            for p in place_all(&view.manifests, &view.members) {
                let key = format!("{}/{}", p.manifest.name, p.name);
                if !p.placement.assignment.is_empty() && !running.contains(&key) {
                    let detail = format!("{key} has eligible nodes but runs nowhere");
                    return self.violate("liveness", detail);
                }
            }
        }
    }

    fn finish(self) -> Outcome {
        let s = &self.loaded.scenario;
        let mut per_edge: Vec<EdgeSummary> = self
            .book
            .latency
            .iter()
            .map(|(edge, l)| {
                let mut l = l.clone();
                l.sort_unstable();
                EdgeSummary {
                    edge: edge.clone(),
                    processed: l.len() as u64,
                    p50_ms: percentile(&l, 50.0),
                    p99_ms: percentile(&l, 99.0),
                    max_ms: l.last().copied().unwrap_or(0),
                }
            })
            .collect();
        per_edge.sort_by(|a, b| a.edge.cmp(&b.edge));
        let mut coverage = self.coverage.clone();
        let t = self.sim.counters();
        coverage.insert("messages dropped".into(), t.dropped);
        for (k, v) in [
            ("messages duplicated", t.duplicated),
            ("messages reordered", t.reordered),
            ("messages throttled", t.throttled),
            ("failed processings", t.failed_processings),
        ] {
            if v > 0 {
                coverage.insert(k.into(), v);
            }
        }
        coverage.insert("events acknowledged".into(), self.book.acked.len() as u64);
        coverage.insert("events processed".into(), self.book.processed);
        let pending = self.pending_events() as u64;
        let invariants = INVARIANTS
            .iter()
            .map(|name| {
                let violated = self
                    .violation
                    .as_ref()
                    .is_some_and(|v| v.invariant == *name);
                Invariant {
                    name: (*name).into(),
                    status: if violated {
                        "violated"
                    } else if self.violation.is_some() {
                        "held until the first violation stopped the run"
                    } else {
                        "held"
                    }
                    .into(),
                }
            })
            .collect();
        let file = self.loaded.path.clone();
        let report = Report {
            tool: crate::version(),
            scenario: s.name.clone(),
            file: file.clone(),
            seed: self.seed,
            reproduce: format!("omega simulate {file} --seed {}", self.seed),
            nodes: s.node_count(),
            nodes_total: self.sim.len(),
            virtual_ms: self.sim.now(),
            violation: self.violation.clone(),
            invariants,
            convergence: Convergence {
                quiet_at_ms: self.quiet_at,
                converged_at_ms: self.converged_at,
                members_agree_at_ms: self.members_at,
            },
            events: EventsSummary {
                emitted: self.book.emitted,
                refused: self.book.refused,
                acknowledged: self.book.acked.len() as u64,
                processed: self.book.processed,
                dead_lettered: self.book.dead,
                pending,
                edges: per_edge,
            },
            reroute_ms: self.reroute_ms.clone(),
            coverage,
        };
        let timeline = Timeline {
            title: format!("{} · seed {}", s.name, self.seed),
            end_ms: self.sim.now(),
            samples: self.samples,
            spans: self.spans,
            violation: self
                .violation
                .as_ref()
                .map(|v| (v.at_ms, v.invariant.clone())),
            reroute_ms: self.reroute_ms,
        };
        Outcome { report, timeline }
    }
}

/// A Zipf(1) draw in `0..k` (rank 0 the hottest).
fn zipf(rng: &mut ChaCha8Rng, k: u32) -> u32 {
    let h: f64 = (1..=k).map(|i| 1.0 / f64::from(i)).sum();
    let mut u = (rng.next_u64() % 1_000_000) as f64 / 1e6 * h;
    for i in 1..=k {
        u -= 1.0 / f64::from(i);
        if u <= 0.0 {
            return i - 1;
        }
    }
    k - 1
}
