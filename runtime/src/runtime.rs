//! The Wasmtime host: one [`Runtime`] per node (engine, linker, pool, epoch
//! ticker, precompiled cache), an [`Image`] per compiled component, and a
//! [`Brane`] per manifest brane (an `InstancePre` plus its limits, grants
//! and config) that runs events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use omega_identity::ContentId;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use crate::bindings::exports::omega::brane::handler;
use crate::bindings::{Brane as BraneWorld, BranePre};
use crate::cache::{self, CacheStatus};
use crate::config::{Allocator, BraneSpec, InstanceMode, RuntimeConfig};
use crate::error::{EventError, RuntimeError, TrapKind};
use crate::event::{Event, LogSink, Outcome};
use crate::host::{BraneShared, HostState, LimitHit, WasiTemplate};

/// A compiled component, named by the BLAKE3 hash of its bytes. Cheap to
/// clone.
#[derive(Clone)]
pub struct Image {
    hash: ContentId,
    component: Component,
    cache: CacheStatus,
}

impl Image {
    /// The content hash of the component's bytes.
    pub fn hash(&self) -> &ContentId {
        &self.hash
    }

    /// How this load was served: compiled, from the on-disk cache, or from
    /// memory.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache
    }

    pub(crate) fn component(&self) -> &Component {
        &self.component
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("hash", &self.hash).finish()
    }
}

/// Counting semaphore over the pool's instance slots.
pub(crate) struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
    total: u32,
    /// Most slots ever held at once.
    peak: AtomicU32,
}

impl Slots {
    fn new(total: u32) -> Self {
        Self {
            free: Mutex::new(total),
            freed: Condvar::new(),
            total,
            peak: AtomicU32::new(0),
        }
    }

    pub(crate) fn acquire(self: &Arc<Self>, wait: bool) -> Result<SlotGuard, EventError> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            if !wait {
                return Err(EventError::Busy(self.total));
            }
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        self.peak.fetch_max(self.total - *free, Ordering::Relaxed);
        Ok(SlotGuard(self.clone()))
    }

    /// Slots not in use right now.
    pub(crate) fn available(&self) -> u32 {
        *self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One held slot; released on drop.
pub(crate) struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// Increments the engine's epoch every tick until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The brane host of one node.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    slots: Arc<Slots>,
    config: RuntimeConfig,
    fingerprint: String,
    compiled: Mutex<HashMap<ContentId, Component>>,
    _ticker: Ticker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// The Wasmtime engine configuration for a [`RuntimeConfig`].
pub(crate) fn engine_config(cfg: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.max_wasm_stack(cfg.max_wasm_stack);
    if cfg.allocator == Allocator::Pooling {
        let n = cfg.max_instances;
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .max_memory_size(usize::try_from(cfg.max_memory_bytes).unwrap_or(usize::MAX))
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(32)
            .table_elements(20_000);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

impl Runtime {
    /// Build the engine, the linker (WASI 0.2 scoped per brane, outbound
    /// `wasi:http`, `omega:brane/host`) and start the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        if config.max_instances == 0 {
            return Err(RuntimeError::Engine(
                "max_instances must be at least 1".into(),
            ));
        }
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::<HostState>::new(&engine);
        let link = |r: wasmtime::Result<()>| r.map_err(|e| RuntimeError::Engine(format!("{e:#}")));
        link(wasmtime_wasi::p2::add_to_linker_sync(&mut linker))?;
        link(wasmtime_wasi_http::p2::add_only_http_to_linker_sync(
            &mut linker,
        ))?;
        link(BraneWorld::add_to_linker::<
            _,
            wasmtime::component::HasSelf<_>,
        >(&mut linker, |s| s))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, stop, tick) = (engine.clone(), stop.clone(), config.epoch_tick);
            std::thread::Builder::new()
                .name("omega-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("epoch thread: {e}")))?
        };
        let fingerprint = cache::engine_fingerprint(&engine);
        Ok(Self {
            slots: Arc::new(Slots::new(config.max_instances)),
            engine,
            linker,
            config,
            fingerprint,
            compiled: Mutex::new(HashMap::new()),
            _ticker: Ticker {
                stop,
                thread: Some(thread),
            },
        })
    }

    /// The Wasmtime engine (for embedders that run other worlds on it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The node-wide configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Identifies the engine build and settings; part of every precompiled
    /// artifact's cache key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Pool slots free right now.
    pub fn free_slots(&self) -> u32 {
        self.slots.available()
    }

    /// Most pool slots ever in use at once (instances running together).
    pub fn peak_slots(&self) -> u32 {
        self.slots.peak.load(Ordering::Relaxed)
    }

    /// Compile a component, or load it from the in-memory map or the
    /// on-disk cache (verified before use). Compiles at most once per image
    /// per process, and once per image per node when `cache_dir` is set.
    pub fn load(&self, bytes: &[u8]) -> Result<Image, RuntimeError> {
        check_component_header(bytes)?;
        let hash = ContentId::of(bytes);
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(component) = compiled.get(&hash) {
            return Ok(Image {
                hash,
                component: component.clone(),
                cache: CacheStatus::Memory,
            });
        }
        let (component, status) = match &self.config.cache_dir {
            Some(dir) => {
                cache::load_or_compile(&self.engine, dir, &self.fingerprint, &hash, bytes)?
            }
            None => (
                Component::new(&self.engine, bytes)
                    .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?,
                CacheStatus::Compiled,
            ),
        };
        compiled.insert(hash, component.clone());
        Ok(Image {
            hash,
            component,
            cache: status,
        })
    }

    /// Check that an image fits the `omega:brane/brane` world on this host
    /// (imports satisfiable, `handler` exported).
    pub fn check_brane_world(&self, image: &Image) -> Result<(), RuntimeError> {
        self.brane_pre(image).map(drop)
    }

    fn brane_pre(&self, image: &Image) -> Result<BranePre<HostState>, RuntimeError> {
        let world = |reason: String| RuntimeError::World {
            world: "omega:brane/brane",
            reason,
        };
        let pre = self
            .linker
            .instantiate_pre(&image.component)
            .map_err(|e| world(format!("{e:#}")))?;
        BranePre::new(pre).map_err(|e| world(format!("{e:#}")))
    }

    /// Prepare a brane: check its world and limits, resolve its grants, and
    /// pre-instantiate it.
    pub fn brane(
        &self,
        image: &Image,
        spec: BraneSpec,
        log: LogSink,
    ) -> Result<Brane, RuntimeError> {
        self.check_limits(&spec)?;
        let pre = self.brane_pre(image)?;
        let mode = spec.mode;
        let shared = shared(spec, log)?;
        Ok(Brane {
            pre,
            shared,
            slots: self.slots.clone(),
            engine: self.engine.clone(),
            warm: (mode == InstanceMode::KeepWarm).then(|| Mutex::new(None)),
        })
    }

    /// Refuse limits above what the engine was sized for.
    pub(crate) fn check_limits(&self, spec: &BraneSpec) -> Result<(), RuntimeError> {
        if spec.limits.memory_bytes > self.config.max_memory_bytes {
            return Err(RuntimeError::LimitTooHigh {
                what: "memory",
                asked: spec.limits.memory_bytes,
                max: self.config.max_memory_bytes,
            });
        }
        Ok(())
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    pub(crate) fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }
}

/// The per-brane state shared by all its instances: grants resolved once.
pub(crate) fn shared(spec: BraneSpec, log: LogSink) -> Result<Arc<BraneShared>, RuntimeError> {
    Ok(Arc::new(BraneShared {
        wasi: WasiTemplate::new(&spec)?,
        http_hosts: Arc::new(spec.grants.http_hosts.clone()),
        manifest: spec.manifest,
        calls: spec.grants.calls,
        router: spec.router,
        name: spec.name,
        config: spec.config,
        limits: spec.limits,
        emits: spec.emits,
        log,
    }))
}

/// A fresh store for one instance of a brane: its WASI context (only what
/// was granted), memory/table limiter, and the epoch callback enforcing the
/// CPU and wall-clock limits. The call clock starts now.
pub(crate) fn new_store(
    engine: &Engine,
    shared: &Arc<BraneShared>,
) -> Result<Store<HostState>, EventError> {
    let state = HostState::new(shared.clone()).map_err(EventError::Instantiate)?;
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|ctx| match ctx.data().check_time() {
        Ok(()) => Ok(UpdateDeadline::Continue(1)),
        Err(hit) => Err(wasmtime::Error::new(hit)),
    });
    store.set_epoch_deadline(1);
    store.data_mut().begin_call();
    Ok(store)
}

/// The first 8 bytes of a component binary: magic, version 0x0d, layer 1.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

fn check_component_header(bytes: &[u8]) -> Result<(), RuntimeError> {
    match bytes.get(..8) {
        Some(h) if h == COMPONENT_HEADER => Ok(()),
        Some(h) if h[..4] == COMPONENT_HEADER[..4] => Err(RuntimeError::NotComponent(
            "this is a core WebAssembly module; wrap it into a component \
             (cargo build --target wasm32-wasip2, or wasm-tools component new)"
                .into(),
        )),
        _ => Err(RuntimeError::NotComponent(
            "the file does not start with the WebAssembly magic bytes".into(),
        )),
    }
}

/// A warm instance (keep-warm mode) and the slot it holds.
struct Warm {
    store: Store<HostState>,
    instance: BraneWorld,
    _slot: SlotGuard,
}

/// A prepared brane: runs events, one instance per event by default.
pub struct Brane {
    pre: BranePre<HostState>,
    shared: Arc<BraneShared>,
    slots: Arc<Slots>,
    engine: wasmtime::Engine,
    warm: Option<Mutex<Option<Warm>>>,
}

impl std::fmt::Debug for Brane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brane")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl Brane {
    /// The brane's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Run one event, waiting for a free pool slot (backpressure).
    pub fn handle(&self, event: &Event) -> Result<Outcome, EventError> {
        self.run(event, true)
    }

    /// Run one event, or fail with [`EventError::Busy`] if every pool slot
    /// is taken.
    pub fn try_handle(&self, event: &Event) -> Result<Outcome, EventError> {
        self.run(event, false)
    }

    fn run(&self, event: &Event, wait: bool) -> Result<Outcome, EventError> {
        let limit = self.shared.limits.max_payload;
        if event.payload.len() > limit {
            return Err(EventError::PayloadTooLarge {
                size: event.payload.len(),
                limit,
            });
        }
        match &self.warm {
            None => {
                let slot = self.slots.acquire(wait)?;
                let (mut store, instance) = self.instantiate()?;
                let out = call(&mut store, &instance, event);
                drop(store);
                drop(slot);
                out
            }
            Some(warm) => {
                let mut warm = warm.lock().unwrap_or_else(PoisonError::into_inner);
                let mut w = match warm.take() {
                    Some(w) => w,
                    None => {
                        let slot = self.slots.acquire(wait)?;
                        let (store, instance) = self.instantiate()?;
                        Warm {
                            store,
                            instance,
                            _slot: slot,
                        }
                    }
                };
                let out = call(&mut w.store, &w.instance, event);
                if out.is_ok() {
                    *warm = Some(w);
                }
                out
            }
        }
    }

    fn instantiate(&self) -> Result<(Store<HostState>, BraneWorld), EventError> {
        let mut store = new_store(&self.engine, &self.shared)?;
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
            classify(&e).unwrap_or_else(|| EventError::Instantiate(format!("{e:#}")))
        })?;
        Ok((store, instance))
    }
}

fn call(
    store: &mut Store<HostState>,
    instance: &BraneWorld,
    event: &Event,
) -> Result<Outcome, EventError> {
    store.data_mut().begin_call();
    store.set_epoch_deadline(1);
    let wit_event = wit_event(event);
    let result = instance
        .omega_brane_handler()
        .call_on_event(&mut *store, &wit_event);
    let data = store.data_mut();
    match result {
        Ok(Ok(())) => Ok(Outcome {
            emitted: std::mem::take(&mut data.emitted),
            refused: data.refused,
        }),
        Ok(Err(e)) => {
            data.emitted.clear();
            Err(EventError::Brane {
                code: e.code,
                message: e.message,
            })
        }
        Err(e) => {
            data.emitted.clear();
            Err(classify(&e).unwrap_or_else(|| EventError::Trap {
                kind: TrapKind::Other,
                message: format!("{e:#}"),
            }))
        }
    }
}

/// The WIT record of an event.
pub(crate) fn wit_event(event: &Event) -> handler::Event {
    handler::Event {
        id: event.id.clone(),
        type_: event.ty.clone(),
        key: event.key.clone(),
        payload: event.payload.clone(),
        source: event.source.clone(),
        attempt: event.attempt,
    }
}

/// Name the limit or trap behind a Wasmtime error, if it is one.
pub(crate) fn classify(e: &wasmtime::Error) -> Option<EventError> {
    let kind = if let Some(hit) = e.downcast_ref::<LimitHit>() {
        hit.0
    } else if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::StackOverflow => TrapKind::Stack,
            Trap::Interrupt => TrapKind::Timeout,
            _ => TrapKind::Other,
        }
    } else {
        return None;
    };
    Some(EventError::Trap {
        kind,
        message: format!("{e:#}"),
    })
}
