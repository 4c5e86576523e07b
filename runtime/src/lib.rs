//! `omega-runtime` runs branes: WASI 0.2 components targeting the
//! `omega:brane/brane` world (see `wit/brane.wit` at the repository root).
//!
//! - [`Runtime`]: one per node. A Wasmtime engine with the pooling
//!   allocator sized from [`RuntimeConfig`], epoch interruption driven by a
//!   ticker thread, the linker (capability-scoped WASI, outbound
//!   `wasi:http` behind an allow-list, `omega:brane/host`), and the
//!   precompiled cache keyed by (image hash, engine fingerprint).
//! - [`Image`]: a compiled component named by its BLAKE3 hash.
//! - [`Brane`]: an image prepared with a manifest's [`BraneSpec`] (limits,
//!   grants, config): runs [`Event`]s and returns the [`Outcome`].
//! - [`ImageStore`]: the content-addressed image store of the data dir, with
//!   signed `name:tag` records.
//! - [`HttpBrane`] and [`serve_http`]: `wasi:http/proxy` branes served over
//!   HTTP/1.1, one fresh instance per request under the same limits.
//! - [`Pipeline`]: a whole graph of branes in one process, events flowing
//!   along edges in memory (`omega dev`).
//! - [`bench`]: cold-start measurements (`omega bench coldstart`).
//!
//! Everything a brane does that could hurt the node is bounded: memory and
//! tables (a limiter that traps), CPU time and wall-clock time per event
//! (epoch checks), wasm stack, emits per event and payload size, and the
//! number of live instances (pool slots, with backpressure).

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "omega:brane/brane",
    });
}

pub mod bench;
mod cache;
pub mod calls;
mod config;
mod error;
mod event;
pub mod frontier;
mod host;
mod images;
mod pipeline;
mod runtime;
mod serve;

pub use cache::{CacheStatus, engine_fingerprint, entry_paths, write_atomic};
pub use calls::{BraneCalls, CallFuture, CallTarget};
pub use config::{
    Allocator, BraneLimits, BraneSpec, CallRouter, DirGrant, Grants, InstanceMode, RuntimeConfig,
};
pub use error::{EventError, ImageError, RuntimeError, TrapKind};
pub use event::{Emitted, Event, LogLevel, LogSink, Outcome, discard_logs};
pub use images::{ImageRef, ImageStore, MAX_IMAGE_BYTES, StoredImage, TagRecord};
pub use pipeline::{
    Delivery, Edge, Member, NotDelivered, Pipeline, PipelineReport, cascade, emits_of,
};
pub use runtime::{Brane, Image, Runtime};
pub use serve::{HttpBody, HttpBrane, serve_http};
