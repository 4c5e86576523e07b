//! The scenario file, in the operator's vocabulary: node classes, the
//! manifests applied and when, a workload per brane, the network, the disk,
//! scheduled faults and the bounds the invariants hold the mesh to.
//!
//! Every duration is a string such as `"250ms"`, `"90s"` or `"10m"`.
//! Node selectors name one node (`"nas-1"`), a class's nodes (`"nas-*"`),
//! or any node (`"*"`); a selector that matches several nodes picks one
//! with the seed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A virtual duration in milliseconds, written `"90s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub u64);

impl Dur {
    /// Milliseconds.
    pub fn ms(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            write!(f, "0s")
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(|d| Dur(d.as_millis() as u64))
            .map_err(|e| serde::de::Error::custom(format!("duration `{s}`: {e}")))
    }
}

/// A scenario (`omega simulate SCENARIO.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it is, for the report.
    pub name: String,
    /// How long to simulate (virtual).
    pub duration: Dur,
    /// The seed when none is given on the command line.
    #[serde(default = "one")]
    pub seed: u64,
    /// Node classes, added in this order.
    #[serde(rename = "nodes")]
    pub classes: Vec<NodeClass>,
    /// Nodes join over this long from the start (default: 20 ms per node,
    /// at most 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_over: Option<Dur>,
    /// Manifests and when they are applied.
    #[serde(default, rename = "manifest", skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestSpec>,
    /// Modelled branes by brane name.
    #[serde(default, rename = "brane", skip_serializing_if = "BTreeMap::is_empty")]
    pub branes: BTreeMap<String, BraneSpec>,
    /// Events emitted from outside.
    #[serde(default, rename = "workload", skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Workload>,
    /// The network.
    #[serde(default)]
    pub network: Network,
    /// The disks.
    #[serde(default)]
    pub disk: Disk,
    /// Scheduled faults.
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// The bounds the invariants check.
    #[serde(default)]
    pub check: Check,
}

fn one() -> u64 {
    1
}

/// A class of nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClass {
    /// The class name; nodes are `CLASS-1`, `CLASS-2`, … unless `names` is given.
    pub class: String,
    /// How many.
    pub count: usize,
    /// `gaia`, `biome` or `habitat`.
    pub substrate: String,
    /// `standard`, `frontier`, `gpu` (default `["standard"]`).
    #[serde(default = "standard")]
    pub capabilities: Vec<String>,
    /// Memory each advertises (default `"8GiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Explicit names (as many as `count`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

fn standard() -> Vec<String> {
    vec!["standard".into()]
}

/// A manifest applied at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSpec {
    /// The manifest name.
    pub name: String,
    /// When (default at once).
    #[serde(default)]
    pub at: Dur,
    /// The node it is applied through (a selector, default `"*"`).
    #[serde(default = "any")]
    pub via: String,
    /// The manifest, inline (TOML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toml: Option<String>,
    /// Or a file beside the scenario (TOML, JSON or YAML by extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

fn any() -> String {
    "*".into()
}

/// A modelled brane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BraneSpec {
    /// Processing time, ms: `[min, max]`, uniform (default `[1, 1]`).
    #[serde(default = "one_ms")]
    pub process_ms: [u64; 2],
    /// Failed processings per thousand (default 0).
    #[serde(default)]
    pub fail_per_mille: u32,
    /// Events emitted per outgoing edge type, per event (default 1).
    #[serde(default = "one_u32")]
    pub emits: u32,
}

fn one_ms() -> [u64; 2] {
    [1, 1]
}

fn one_u32() -> u32 {
    1
}

/// Events emitted into a brane from outside (`omega emit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The manifest.
    pub manifest: String,
    /// The target brane.
    pub to: String,
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Events per second.
    pub rate: f64,
    /// From when (default the start).
    #[serde(default)]
    pub from: Dur,
    /// Until when (default the end less the drain time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Dur>,
    /// Keys: this many distinct ones (0: no key, round-robin delivery).
    #[serde(default)]
    pub keys: u32,
    /// `uniform` (default) or `zipf` (s = 1: a few hot keys).
    #[serde(default = "uniform")]
    pub key_dist: String,
    /// Payload bytes (default 64).
    #[serde(default = "sixty_four")]
    pub payload_bytes: usize,
    /// Events whose payload is `poison` (the modelled brane fails them all:
    /// they end as dead letters), per thousand.
    #[serde(default)]
    pub poison_per_mille: u32,
    /// Where they are emitted (a selector, default `"*"`).
    #[serde(default = "any")]
    pub via: String,
}

fn uniform() -> String {
    "uniform".into()
}

fn sixty_four() -> usize {
    64
}

/// The network between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// One-way latency, ms: `[min, max]`, uniform (default `[1, 3]`).
    #[serde(default = "latency")]
    pub latency_ms: [u64; 2],
    /// A slow tail: this many messages per thousand take `tail_ms` more.
    #[serde(default)]
    pub tail_per_mille: u32,
    /// The tail's extra latency, ms.
    #[serde(default)]
    pub tail_ms: u64,
    /// Messages lost per thousand.
    #[serde(default)]
    pub loss_per_mille: u32,
    /// SWIM messages and event requests delivered twice, per thousand.
    #[serde(default)]
    pub dup_per_mille: u32,
    /// Messages held back `reorder_ms` (later ones overtake), per thousand.
    #[serde(default)]
    pub reorder_per_mille: u32,
    /// How long a reordered message is held back, ms.
    #[serde(default)]
    pub reorder_ms: u64,
    /// Egress bandwidth per node, KiB/s (0: unlimited).
    #[serde(default)]
    pub bandwidth_kib_s: u64,
}

fn latency() -> [u64; 2] {
    [1, 3]
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency_ms: latency(),
            tail_per_mille: 0,
            tail_ms: 0,
            loss_per_mille: 0,
            dup_per_mille: 0,
            reorder_per_mille: 0,
            reorder_ms: 0,
            bandwidth_kib_s: 0,
        }
    }
}

/// The disks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Write latency, ms (default 1).
    #[serde(default = "one_u64")]
    pub latency_ms: u64,
    /// `"always"` (default: the daemon's `--event-sync always`) or a sync
    /// interval such as `"100ms"` (`--event-sync 100`).
    #[serde(default = "always")]
    pub sync: String,
}

fn one_u64() -> u64 {
    1
}

fn always() -> String {
    "always".into()
}

impl Default for Disk {
    fn default() -> Self {
        Self {
            latency_ms: 1,
            sync: always(),
        }
    }
}

/// A scheduled fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// When it starts.
    pub at: Dur,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let at = t
            .remove("at")
            .ok_or_else(|| D::Error::missing_field("at"))?;
        let at: Dur = at.try_into().map_err(D::Error::custom)?;
        let kind: FaultKind = toml::Value::Table(t).try_into().map_err(D::Error::custom)?;
        Ok(Self { at, kind })
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// A node's process dies; it restarts after `restart_after` (never
    /// when absent). `lose_unsynced`: a power loss, which also loses
    /// event-store writes not yet synced (only `disk.sync` intervals have any).
    Crash {
        /// Which node.
        node: String,
        /// When it comes back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restart_after: Option<Dur>,
        /// A power loss rather than a killed process.
        #[serde(default)]
        lose_unsynced: bool,
    },
    /// The network splits: `groups` lists selectors per side (nodes
    /// matched by none form a side of their own); heals after `heal_after`.
    Partition {
        /// Selectors per side.
        groups: Vec<Vec<String>>,
        /// When it heals (never when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heal_after: Option<Dur>,
    },
    /// A node's wall clock runs `ms` off (negative: behind) for `for`.
    Skew {
        /// Which node.
        node: String,
        /// Offset, ms.
        ms: i64,
        /// How long (for ever when absent).
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        lasts: Option<Dur>,
    },
    /// A node handles every message and event `ms` late.
    Slow {
        /// Which node.
        node: String,
        /// Extra ms.
        ms: u64,
        /// How long.
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        lasts: Option<Dur>,
    },
    /// A node's disk takes `ms` per write.
    SlowDisk {
        /// Which node.
        node: String,
        /// Write latency, ms.
        ms: u64,
        /// How long.
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        lasts: Option<Dur>,
    },
    /// Members join and leave: new nodes of `class` join, random nodes of
    /// it leave (gracefully, half of them; the others crash for good).
    Churn {
        /// The class that grows and shrinks.
        class: String,
        /// Joins per minute.
        joins_per_min: f64,
        /// Leaves per minute.
        leaves_per_min: f64,
        /// How long.
        #[serde(rename = "for")]
        lasts: Dur,
    },
    /// An admitted member turns hostile: every `every` it publishes a
    /// manifest signed with its own key, a tampered copy of a real record,
    /// garbage on both gossip topics, and garbage event and SWIM requests.
    Byzantine {
        /// Which node.
        node: String,
        /// How often.
        #[serde(default = "second")]
        every: Dur,
        /// How long.
        #[serde(rename = "for")]
        lasts: Dur,
    },
}

fn second() -> Dur {
    Dur(1000)
}

impl FaultKind {
    /// The kind's name, as in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Crash { .. } => "crash",
            Self::Partition { .. } => "partition",
            Self::Skew { .. } => "skew",
            Self::Slow { .. } => "slow",
            Self::SlowDisk { .. } => "slow_disk",
            Self::Churn { .. } => "churn",
            Self::Byzantine { .. } => "byzantine",
        }
    }

    /// How long it lasts, if it ends.
    pub fn lasts(&self) -> Option<Dur> {
        match self {
            Self::Crash { restart_after, .. } => *restart_after,
            Self::Partition { heal_after, .. } => *heal_after,
            Self::Skew { lasts, .. } | Self::Slow { lasts, .. } | Self::SlowDisk { lasts, .. } => {
                *lasts
            }
            Self::Churn { lasts, .. } | Self::Byzantine { lasts, .. } => Some(*lasts),
        }
    }
}

/// Bounds of the invariants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// After the last fault ends, live nodes agree on desired state and
    /// placement, and run what it gives them, within this (default 60 s).
    #[serde(default = "minute")]
    pub converge_within: Dur,
    /// Every acknowledged event is processed or dead-lettered within this
    /// after the last fault and the last emit (default 60 s).
    #[serde(default = "minute")]
    pub drain_within: Dur,
    /// Nodes whose views the continuous checks read per check (default 16;
    /// the final checks read every node).
    #[serde(default = "sixteen")]
    pub sample: usize,
    /// How often the continuous checks run (default 1 s).
    #[serde(default = "second")]
    pub every: Dur,
}

fn minute() -> Dur {
    Dur(60_000)
}

fn sixteen() -> usize {
    16
}

impl Default for Check {
    fn default() -> Self {
        Self {
            converge_within: minute(),
            drain_within: minute(),
            sample: 16,
            every: second(),
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: String,
        /// What and where.
        error: Box<toml::de::Error>,
    },
    /// A value is out of range or refers to nothing.
    #[error("{path}: {what}: {why}")]
    Invalid {
        /// The file.
        path: String,
        /// The key, e.g. `fault[2].node`.
        what: String,
        /// Why.
        why: String,
    },
    /// A manifest does not load.
    #[error("{path}: manifest `{name}`: {error}")]
    Manifest {
        /// The file.
        path: String,
        /// The manifest name.
        name: String,
        /// The loader's error.
        error: String,
    },
}

/// A scenario with its manifests loaded and checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The scenario as written (inline manifests filled in from files).
    pub scenario: Scenario,
    /// Where it came from (for the reproduce command).
    pub path: String,
    /// Each manifest's plan, by position in `scenario.manifests`.
    pub plans: Vec<omega_zgraph::Plan>,
}

impl Scenario {
    /// Reads and checks a scenario file; manifest files are read relative to it.
    pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read {
            path: shown.clone(),
            error,
        })?;
        let mut scenario = Self::parse(&text, &shown)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for m in &mut scenario.manifests {
            if let Some(file) = m.file.take() {
                let p = dir.join(&file);
                let body = std::fs::read_to_string(&p).map_err(|error| ScenarioError::Read {
                    path: p.display().to_string(),
                    error,
                })?;
                let format =
                    omega_zgraph::Format::from_path(&p).unwrap_or(omega_zgraph::Format::Toml);
                if format != omega_zgraph::Format::Toml {
                    return Err(ScenarioError::Invalid {
                        path: shown,
                        what: format!("manifest `{}`.file", m.name),
                        why: "only TOML manifests can be embedded in a scenario".into(),
                    });
                }
                m.toml = Some(body);
            }
        }
        scenario.check(&shown)
    }

    /// Parses scenario TOML (`path` names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        toml::from_str(text).map_err(|error| ScenarioError::Parse {
            path: path.into(),
            error: Box::new(error),
        })
    }

    /// The scenario as TOML (what the shrinker prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the scenario: {e}\n"))
    }

    /// Total nodes at the start.
    pub fn node_count(&self) -> usize {
        self.classes.iter().map(|c| c.count).sum()
    }

    /// When the last fault ends (or the start, with none); a fault that
    /// never ends counts as ending at the end.
    pub fn quiet_at(&self) -> u64 {
        self.faults
            .iter()
            .map(|f| match f.kind.lasts() {
                Some(d) => f.at.ms() + d.ms(),
                None => self.duration.ms(),
            })
            .max()
            .unwrap_or(0)
    }

    /// Checks ranges and references; loads every manifest.
    pub fn check(self, path: &str) -> Result<Loaded, ScenarioError> {
        let bad = |what: String, why: &str| ScenarioError::Invalid {
            path: path.into(),
            what,
            why: why.into(),
        };
        if self.duration.ms() == 0 || self.duration.ms() > 24 * 3_600_000 {
            return Err(bad("duration".into(), "must be above 0 and at most 24h"));
        }
        if self.classes.is_empty() {
            return Err(bad("nodes".into(), "no node classes"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (k, c) in self.classes.iter().enumerate() {
            if c.count == 0 || c.count > 100_000 {
                return Err(bad(format!("nodes[{k}].count"), "must be 1..=100000"));
            }
            if substrate(&c.substrate).is_none() {
                return Err(bad(
                    format!("nodes[{k}].substrate"),
                    "must be gaia, biome or habitat",
                ));
            }
            for cap in &c.capabilities {
                if !matches!(cap.as_str(), "standard" | "frontier" | "gpu") {
                    return Err(bad(
                        format!("nodes[{k}].capabilities"),
                        "each must be standard, frontier or gpu",
                    ));
                }
            }
            if let Some(m) = &c.memory
                && parse_bytes(m).is_none()
            {
                return Err(bad(format!("nodes[{k}].memory"), "not a size such as 8GiB"));
            }
            if !c.names.is_empty() && c.names.len() != c.count {
                return Err(bad(format!("nodes[{k}].names"), "must list `count` names"));
            }
            if !names.insert(c.class.clone()) {
                return Err(bad(format!("nodes[{k}].class"), "two classes of that name"));
            }
        }
        if self.check.sample == 0 || self.check.every.ms() == 0 {
            return Err(bad("check".into(), "sample and every must be above 0"));
        }
        let net = &self.network;
        if net.latency_ms[0] > net.latency_ms[1] || net.latency_ms[1] > 60_000 {
            return Err(bad(
                "network.latency_ms".into(),
                "[min, max] with min <= max <= 60000",
            ));
        }
        for (what, v) in [
            ("network.loss_per_mille", net.loss_per_mille),
            ("network.dup_per_mille", net.dup_per_mille),
            ("network.reorder_per_mille", net.reorder_per_mille),
            ("network.tail_per_mille", net.tail_per_mille),
        ] {
            if v > 1000 {
                return Err(bad(what.into(), "at most 1000"));
            }
        }
        if self.disk.sync != "always" && humantime::parse_duration(&self.disk.sync).is_err() {
            return Err(bad(
                "disk.sync".into(),
                "`always` or an interval such as `100ms`",
            ));
        }
        for (name, b) in &self.branes {
            if b.process_ms[0] > b.process_ms[1] || b.fail_per_mille > 1000 || b.emits > 16 {
                return Err(bad(
                    format!("brane.{name}"),
                    "process_ms [min, max] with min <= max, fail_per_mille <= 1000, emits <= 16",
                ));
            }
        }
        let mut plans = Vec::new();
        for (k, m) in self.manifests.iter().enumerate() {
            let Some(body) = &m.toml else {
                return Err(bad(format!("manifest[{k}]"), "needs `toml` or `file`"));
            };
            let plan =
                omega_zgraph::load(body, &m.name, omega_zgraph::Format::Toml).map_err(|e| {
                    ScenarioError::Manifest {
                        path: path.into(),
                        name: m.name.clone(),
                        error: e.to_string(),
                    }
                })?;
            plans.push(plan);
        }
        for (k, w) in self.workloads.iter().enumerate() {
            let Some(plan) = self
                .manifests
                .iter()
                .zip(&plans)
                .find(|(m, _)| m.name == w.manifest)
                .map(|(_, p)| p)
            else {
                return Err(bad(format!("workload[{k}].manifest"), "no such manifest"));
            };
            if plan.brane(&w.to).is_none() {
                return Err(bad(
                    format!("workload[{k}].to"),
                    "no such brane in the manifest",
                ));
            }
            if !(w.rate > 0.0 && w.rate <= 100_000.0) {
                return Err(bad(format!("workload[{k}].rate"), "must be in (0, 100000]"));
            }
            if !matches!(w.key_dist.as_str(), "uniform" | "zipf") {
                return Err(bad(format!("workload[{k}].key_dist"), "uniform or zipf"));
            }
            if w.poison_per_mille > 1000 || w.payload_bytes > 64 << 10 {
                return Err(bad(
                    format!("workload[{k}]"),
                    "poison_per_mille <= 1000, payload_bytes <= 65536",
                ));
            }
        }
        for (k, f) in self.faults.iter().enumerate() {
            if let FaultKind::Churn {
                class,
                joins_per_min,
                leaves_per_min,
                ..
            } = &f.kind
            {
                if !names.contains(class) {
                    return Err(bad(format!("fault[{k}].class"), "no such node class"));
                }
                if !(0.0..=6000.0).contains(joins_per_min)
                    || !(0.0..=6000.0).contains(leaves_per_min)
                {
                    return Err(bad(
                        format!("fault[{k}]"),
                        "rates must be in 0..=6000 per minute",
                    ));
                }
            }
            if let FaultKind::Partition { groups, .. } = &f.kind
                && groups.len() < 2
            {
                return Err(bad(
                    format!("fault[{k}].groups"),
                    "needs at least two sides",
                ));
            }
            if let FaultKind::Byzantine { every, .. } = &f.kind
                && every.ms() < 10
            {
                return Err(bad(format!("fault[{k}].every"), "at least 10ms"));
            }
        }
        Ok(Loaded {
            scenario: self,
            path: path.into(),
            plans,
        })
    }
}

/// `gaia` / `biome` / `habitat`.
pub fn substrate(s: &str) -> Option<omega_gossip::Substrate> {
    omega_gossip::Substrate::ALL
        .into_iter()
        .find(|x| x.as_str() == s)
}

/// `8GiB`, `512MiB`, `1000000`.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Whether `name` (node `class`) matches selector `sel`.
pub fn matches(sel: &str, name: &str, class: &str) -> bool {
    match sel.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => name.starts_with(prefix) || format!("{class}-").starts_with(prefix),
        None => sel == name,
    }
}
