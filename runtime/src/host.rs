//! The per-store host state: what one brane instance can call. Implements
//! the `omega:brane/host` imports (emit, log, config), the capability-scoped
//! WASI context, the outbound-HTTP allow-list, and the resource limiter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::omega::brane::{host, types};
use crate::calls::CallTarget;
use crate::config::{BraneLimits, BraneSpec, CallRouter};
use crate::error::{RuntimeError, TrapKind};
use crate::event::{Emitted, LogLevel, LogSink};

/// A limit the guest hit; carried as the error of the trap it causes so the
/// runtime can name it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LimitHit(pub(crate) TrapKind);

/// The part of a brane's setup shared by all its instances.
pub(crate) struct BraneShared {
    pub(crate) name: String,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) limits: BraneLimits,
    pub(crate) emits: Option<Vec<String>>,
    pub(crate) wasi: WasiTemplate,
    pub(crate) http_hosts: Arc<Vec<String>>,
    /// The brane's manifest (for `NAME.brane` calls).
    pub(crate) manifest: String,
    /// Its `grants.call`.
    pub(crate) calls: Vec<String>,
    /// Where granted calls go.
    pub(crate) router: Option<CallRouter>,
    pub(crate) log: LogSink,
}

/// The grants, checked once, from which each instance's `WasiCtx` is built.
pub(crate) struct WasiTemplate {
    dirs: Vec<(std::path::PathBuf, String, FsPerms)>,
    env: Vec<(String, String)>,
    clocks: bool,
    stdio: bool,
}

impl WasiTemplate {
    pub(crate) fn new(spec: &BraneSpec) -> Result<Self, RuntimeError> {
        let mut dirs = Vec::new();
        for d in &spec.grants.dirs {
            if !d.host.is_dir() {
                return Err(RuntimeError::Grant {
                    path: d.host.clone(),
                    reason: "not a directory".into(),
                });
            }
            let perms = if d.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            dirs.push((d.host.clone(), d.guest.clone(), perms));
        }
        Ok(Self {
            dirs,
            env: spec.grants.env.clone().into_iter().collect(),
            clocks: spec.grants.clocks,
            stdio: spec.grants.stdio,
        })
    }

    /// A fresh context: only what was granted. Sockets are never granted to
    /// event branes (the default `WasiCtxBuilder` denies every address and
    /// name lookup); HTTP goes through the allow-list instead.
    pub(crate) fn build(&self) -> Result<WasiCtx, String> {
        let mut b = WasiCtxBuilder::new();
        for (host, guest, perms) in &self.dirs {
            b.preopened_dir(host, guest, *perms)
                .map_err(|e| format!("grant {}: {e}", host.display()))?;
        }
        b.envs(&self.env);
        if !self.clocks {
            b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        if self.stdio {
            b.inherit_stdout().inherit_stderr();
        }
        Ok(b.build())
    }
}

/// A clock that always reads zero: what a brane sees without the `clocks`
/// grant.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The outbound-HTTP policy of one brane: `.brane` addresses go to the
/// host's [`BraneCalls`] when granted (see [`crate::calls`]), everything
/// else only to the allow-listed hosts.
pub(crate) struct HttpPolicy {
    shared: Arc<BraneShared>,
}

impl HttpPolicy {
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(auth) = uri.authority() else {
            return false;
        };
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        self.shared.http_hosts.iter().any(|h| {
            let h = h.as_str();
            h == auth.as_str() || h == host
        })
    }

    fn refuse(&self, message: String) -> SendFuture {
        (self.shared.log)(&self.shared.name, LogLevel::Warn, &message);
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }

    /// A request to a `.brane` address.
    fn call(
        &self,
        target: Result<CallTarget, String>,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> SendFuture {
        let s = &self.shared;
        let mut target = match target {
            Ok(t) => t,
            Err(reason) => return self.refuse(format!("call refused: {reason}")),
        };
        if !target.granted(&s.manifest, &s.calls) {
            return self.refuse(format!(
                "call to brane `{target}` refused: brane `{}` is not granted it \
                 (add `call = [\"{}\"]` to [brane.{}.grants])",
                s.name,
                target.grant(&s.manifest),
                s.name
            ));
        }
        let Some(router) = &s.router else {
            return self.refuse(format!(
                "call to brane `{target}` refused: nothing routes brane calls here \
                 (they run in a mesh node, `omega node`)"
            ));
        };
        target.manifest.get_or_insert_with(|| s.manifest.clone());
        let answer = router.0.call(&s.manifest, &s.name, target, request);
        Box::new(async move {
            let resp = answer.await?;
            Ok((
                resp,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        if let Some(target) = request.uri().host().and_then(CallTarget::parse) {
            return self.call(target, request);
        }
        if !self.allows(request.uri()) {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Memory and table limits of one instance. Growth past a limit traps
/// with a [`LimitHit`] naming it.
pub(crate) struct Limiter {
    memory: usize,
    table_elements: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return Err(wasmtime::Error::new(LimitHit(TrapKind::Memory)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(LimitHit(TrapKind::Memory)));
        }
        Ok(true)
    }
}

/// The `T` of each brane's `Store<T>`.
pub(crate) struct HostState {
    pub(crate) shared: Arc<BraneShared>,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_policy: HttpPolicy,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// Events emitted during the current call.
    pub(crate) emitted: Vec<Emitted>,
    /// Emits refused during the current call.
    pub(crate) refused: u32,
    /// When the current call started (wall clock and thread CPU time).
    pub(crate) started: Instant,
    pub(crate) cpu_started: Duration,
}

impl HostState {
    pub(crate) fn new(shared: Arc<BraneShared>) -> Result<Self, String> {
        let wasi = shared.wasi.build()?;
        let limiter = Limiter {
            memory: usize::try_from(shared.limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: shared.limits.max_table_elements,
        };
        Ok(Self {
            http_policy: HttpPolicy {
                shared: shared.clone(),
            },
            shared,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter,
            emitted: Vec::new(),
            refused: 0,
            started: Instant::now(),
            cpu_started: Duration::ZERO,
        })
    }

    /// Reset the per-call counters and clocks.
    pub(crate) fn begin_call(&mut self) {
        self.emitted.clear();
        self.refused = 0;
        self.started = Instant::now();
        self.cpu_started = thread_cpu_time();
    }

    /// Called every epoch tick while the guest runs: `Err` stops it.
    pub(crate) fn check_time(&self) -> Result<(), LimitHit> {
        let limits = &self.shared.limits;
        if self.started.elapsed() > limits.timeout {
            return Err(LimitHit(TrapKind::Timeout));
        }
        if thread_cpu_time().saturating_sub(self.cpu_started) > limits.cpu {
            return Err(LimitHit(TrapKind::Cpu));
        }
        Ok(())
    }
}

/// CPU time used by the calling thread. Branes run synchronously on the
/// caller's thread, so this counts exactly the guest's (and its host
/// calls') CPU time during a call.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported on every Linux and macOS version Omega runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn emit(&mut self, ty: String, key: String, payload: Vec<u8>) -> Result<(), types::EmitError> {
        let limits = &self.shared.limits;
        let refusal = if self.emitted.len() >= limits.max_emits as usize {
            Some(types::EmitError::TooMany)
        } else if payload.len() > limits.max_payload {
            Some(types::EmitError::TooLarge)
        } else if let Some(allowed) = &self.shared.emits
            && !allowed.contains(&ty)
        {
            Some(types::EmitError::UndeclaredType)
        } else {
            None
        };
        if let Some(err) = refusal {
            self.refused = self.refused.saturating_add(1);
            return Err(err);
        }
        self.emitted.push(Emitted { ty, key, payload });
        Ok(())
    }

    fn log(&mut self, level: types::Level, message: String) {
        let level = match level {
            types::Level::Trace => LogLevel::Trace,
            types::Level::Debug => LogLevel::Debug,
            types::Level::Info => LogLevel::Info,
            types::Level::Warn => LogLevel::Warn,
            types::Level::Error => LogLevel::Error,
        };
        // Bound what one line can cost the node.
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        (self.shared.log)(&self.shared.name, level, &message);
    }

    fn config(&mut self, name: String) -> Option<String> {
        self.shared.config.get(&name).cloned()
    }
}

/// Longest log line kept; longer lines are cut.
pub(crate) const MAX_LOG_LINE: usize = 4096;
