//! Cold-start measurements for `omega bench coldstart`: the Omega dispatch
//! path (store, WASI context from grants, limits, host imports, one
//! `on-event`) against bare Wasmtime (`instantiate` + one call with the
//! minimum host state the component's imports need).

use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::omega::brane::{host, types};
use crate::bindings::{Brane as BraneWorld, BranePre};
use crate::error::RuntimeError;
use crate::event::Event;
use crate::runtime::{Brane, Image, Runtime};

/// Percentiles of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Samples.
    pub runs: usize,
}

/// Sort samples and take P50/P99.
pub fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or_default()
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        runs: samples.len(),
    }
}

/// Time `runs` events through a prepared brane (the Omega path).
pub fn omega_path(brane: &Brane, event: &Event, runs: usize) -> Percentiles {
    let samples = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let _ = brane.handle(event);
            t.elapsed()
        })
        .collect();
    percentiles(samples)
}

struct FloorState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for FloorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for FloorState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

impl types::Host for FloorState {}

impl host::Host for FloorState {
    fn emit(&mut self, _: String, _: String, _: Vec<u8>) -> Result<(), types::EmitError> {
        Ok(())
    }
    fn log(&mut self, _: types::Level, _: String) {}
    fn config(&mut self, _: String) -> Option<String> {
        None
    }
}

/// Time `runs` bare instantiations + one `on-event` call on the runtime's
/// engine: no limiter, no epoch callback, an empty WASI context, no-op
/// host imports. The floor Omega's path is compared against.
pub fn bare_floor(
    rt: &Runtime,
    image: &Image,
    event: &Event,
    runs: usize,
) -> Result<Percentiles, RuntimeError> {
    let engine = rt.engine();
    let mut linker = Linker::<FloorState>::new(engine);
    let e = |r: wasmtime::Result<()>| r.map_err(|e| RuntimeError::Engine(format!("{e:#}")));
    e(wasmtime_wasi::p2::add_to_linker_sync(&mut linker))?;
    e(wasmtime_wasi_http::p2::add_only_http_to_linker_sync(
        &mut linker,
    ))?;
    e(BraneWorld::add_to_linker::<_, HasSelf<_>>(
        &mut linker,
        |s| s,
    ))?;
    let world = |e: wasmtime::Error| RuntimeError::World {
        world: "omega:brane/brane",
        reason: format!("{e:#}"),
    };
    let pre =
        BranePre::new(linker.instantiate_pre(image.component()).map_err(world)?).map_err(world)?;
    let wit_event = crate::runtime::wit_event(event);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let mut store = Store::new(
            engine,
            FloorState {
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        // A delta from the current epoch: u64::MAX would overflow the sum.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre.instantiate(&mut store).map_err(world)?;
        let _ = instance
            .omega_brane_handler()
            .call_on_event(&mut store, &wit_event);
        drop(store);
        samples.push(t.elapsed());
    }
    Ok(percentiles(samples))
}
