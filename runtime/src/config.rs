//! Configuration: the node-wide [`RuntimeConfig`] (engine and pool), and the
//! per-brane [`BraneLimits`], [`Grants`] and [`InstanceMode`] that come from
//! the manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How instance memory is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Allocator {
    /// Wasmtime's pooling allocator: slots reserved up front, reused per
    /// event. The default, and the fast path.
    Pooling,
    /// Allocate (mmap) memories and tables for every instance.
    OnDemand,
}

/// Node-wide settings of the Wasmtime host. One [`crate::Runtime`] per node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instance allocation strategy. Default: [`Allocator::Pooling`].
    pub allocator: Allocator,
    /// Component instances alive at once (pool slots). Also the bound on
    /// concurrent events: callers beyond it wait (backpressure) or get
    /// [`crate::EventError::Busy`]. Default: 64.
    pub max_instances: u32,
    /// The largest linear memory any brane may ask for; a brane whose
    /// manifest asks for more is refused. Default: 256 MiB.
    pub max_memory_bytes: u64,
    /// Maximum wasm stack per call, in bytes. Default: 512 KiB.
    pub max_wasm_stack: usize,
    /// Period of the epoch ticker that enforces CPU time and wall-clock
    /// limits. Default: 1 ms.
    pub epoch_tick: Duration,
    /// Where precompiled artifacts are kept, or `None` to compile in memory
    /// on every load. Default: `None`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            allocator: Allocator::Pooling,
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(1),
            cache_dir: None,
        }
    }
}

/// Per-brane limits, from the manifest's `limits` table. Every field has a
/// safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BraneLimits {
    /// Linear memory, in bytes, summed over the brane's memories.
    /// Default: 64 MiB.
    pub memory_bytes: u64,
    /// CPU time one event may use (thread CPU time, checked every epoch
    /// tick). Default: 1 s.
    pub cpu: Duration,
    /// Wall-clock time one event may take. Default: 5 s.
    pub timeout: Duration,
    /// Events one call to `on-event` may emit. Further emits are refused
    /// with `too-many`. Default: 64.
    pub max_emits: u32,
    /// Largest payload, in bytes, of an incoming or emitted event.
    /// Default: 1 MiB.
    pub max_payload: usize,
    /// Table elements per table. Default: 20,000.
    pub max_table_elements: usize,
    /// Core instances, tables and memories per component instance.
    /// Default: 32 instances, 32 tables, 4 memories.
    pub max_core_instances: usize,
    /// See [`BraneLimits::max_core_instances`].
    pub max_tables: usize,
    /// See [`BraneLimits::max_core_instances`].
    pub max_memories: usize,
}

impl Default for BraneLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_emits: 64,
            max_payload: 1 << 20,
            max_table_elements: 20_000,
            max_core_instances: 32,
            max_tables: 32,
            max_memories: 4,
        }
    }
}

/// A host directory granted to a brane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the brane sees it, e.g. `/archive`.
    pub guest: String,
    /// Whether the brane may create, write and remove files in it.
    pub writable: bool,
}

/// What a brane may reach beyond its own memory. The default grants
/// nothing: no files, no sockets, no environment, frozen clocks, no
/// outbound HTTP, no stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Environment variables the brane sees.
    pub env: BTreeMap<String, String>,
    /// Hosts (`name` or `name:port`) the brane may send HTTP requests to.
    pub http_hosts: Vec<String>,
    /// Branes it may call by name: `NAME` (its own manifest) or
    /// `MANIFEST/NAME` ([`crate::calls`]).
    pub calls: Vec<String>,
    /// Whether the brane reads the real wall and monotonic clocks; without
    /// it both read zero.
    pub clocks: bool,
    /// Whether the brane's stdout and stderr go to the node's.
    pub stdio: bool,
}

impl BraneLimits {
    /// The limits a manifest's `limits` section sets, the defaults for the rest.
    pub fn from_manifest(l: &omega_zgraph::Limits) -> Self {
        let d = Self::default();
        Self {
            memory_bytes: l.memory_bytes.unwrap_or(d.memory_bytes),
            cpu: l.cpu_ms.map_or(d.cpu, Duration::from_millis),
            timeout: l.timeout_ms.map_or(d.timeout, Duration::from_millis),
            ..d
        }
    }
}

impl Grants {
    /// These grants plus what a manifest's `[brane.NAME.grants]` section
    /// grants: its directories first, then these; environment variables
    /// set here win; HTTP hosts and clocks add up.
    #[must_use]
    pub fn with_manifest(mut self, manifest: &omega_zgraph::Grants) -> Self {
        let mut dirs: Vec<DirGrant> = manifest
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: PathBuf::from(&d.host),
                guest: d.guest.clone(),
                writable: d.writable,
            })
            .collect();
        dirs.append(&mut self.dirs);
        self.dirs = dirs;
        for (k, v) in &manifest.env {
            self.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut http = manifest.http.clone();
        for h in std::mem::take(&mut self.http_hosts) {
            if !http.contains(&h) {
                http.push(h);
            }
        }
        self.http_hosts = http;
        for c in &manifest.call {
            if !self.calls.contains(c) {
                self.calls.push(c.clone());
            }
        }
        self.clocks |= manifest.clocks;
        self
    }
}

/// Whether a brane gets a fresh instance per event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceMode {
    /// A fresh instance for every event: no state survives an event. Default.
    #[default]
    PerEvent,
    /// One instance kept between events (state survives), replaced after a
    /// failed event. Holds one pool slot while alive.
    KeepWarm,
}

/// Everything the manifest says about running one brane.
#[derive(Debug, Clone, Default)]
pub struct BraneSpec {
    /// The brane's name, used in logs and as the `source` of its events.
    pub name: String,
    /// Its `config` table, read by the guest with `config(name)`.
    pub config: BTreeMap<String, String>,
    /// Its limits.
    pub limits: BraneLimits,
    /// Its grants.
    pub grants: Grants,
    /// Instance per event or kept warm.
    pub mode: InstanceMode,
    /// Event types the brane may emit (the `on` of its outgoing edges), or
    /// `None` to allow any type (`omega run`).
    pub emits: Option<Vec<String>>,
    /// The manifest it belongs to (what `NAME.brane` calls resolve in).
    pub manifest: String,
    /// Where its granted `NAME.brane` calls go; `None`: refused.
    pub router: Option<CallRouter>,
}

/// The host's router of brane calls ([`crate::calls`]).
#[derive(Clone)]
pub struct CallRouter(pub std::sync::Arc<dyn crate::calls::BraneCalls>);

impl std::fmt::Debug for CallRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallRouter")
    }
}
