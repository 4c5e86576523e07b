//! Error types of the runtime.

use std::path::PathBuf;

/// A brane or image could not be loaded or prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Wasmtime could not be configured (bad [`crate::RuntimeConfig`]).
    #[error("cannot configure the Wasmtime engine: {0}")]
    Engine(String),
    /// The bytes are not a WebAssembly component (a core module, or not
    /// WebAssembly at all).
    #[error("not a WebAssembly component: {0}")]
    NotComponent(String),
    /// The component failed to compile or validate.
    #[error("invalid component: {0}")]
    Compile(String),
    /// The component imports something the host does not provide, or does
    /// not export what the world requires.
    #[error("component does not fit the {world} world: {reason}")]
    World {
        /// `omega:brane/brane` or `wasi:http/proxy`.
        world: &'static str,
        /// What is missing.
        reason: String,
    },
    /// The manifest asks for more than the node allows.
    #[error("limit {what} = {asked} exceeds the node's maximum {max}")]
    LimitTooHigh {
        /// Which limit.
        what: &'static str,
        /// What the brane asked for.
        asked: u64,
        /// What the node allows.
        max: u64,
    },
    /// A granted directory could not be opened.
    #[error("grant {path}: {reason}")]
    Grant {
        /// The host directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The precompiled cache failed (other than a miss or a corrupt entry,
    /// which are recompiled).
    #[error("precompiled cache {path}: {source}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What went wrong running one event. The node keeps serving other events
/// and branes after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The brane returned `err` from `on-event`.
    #[error("brane error {code}: {message}")]
    Brane {
        /// The brane's code.
        code: String,
        /// The brane's message.
        message: String,
    },
    /// The brane was stopped: it trapped or hit a limit.
    #[error("brane trapped ({kind}): {message}")]
    Trap {
        /// Why.
        kind: TrapKind,
        /// Wasmtime's description.
        message: String,
    },
    /// Every pool slot is busy (only from `try_handle`).
    #[error("all {0} instance slots are busy")]
    Busy(u32),
    /// The incoming payload is larger than the brane's `max_payload`.
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The instance could not be created (e.g. a granted directory vanished).
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
}

/// Why a brane's execution was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrapKind {
    /// It used more CPU time than its limit.
    Cpu,
    /// It ran longer than its wall-clock timeout.
    Timeout,
    /// It tried to grow memory (or a table) past its limit.
    Memory,
    /// Its wasm stack overflowed.
    Stack,
    /// Any other trap: `unreachable`, a panic, out-of-bounds access, …
    Other,
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu limit",
            Self::Timeout => "timeout",
            Self::Memory => "memory limit",
            Self::Stack => "stack overflow",
            Self::Other => "trap",
        })
    }
}

/// An image store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a component the runtime can load.
    #[error(transparent)]
    Invalid(#[from] RuntimeError),
    /// A stored blob's content does not match its name.
    #[error("image {expected} is corrupt: its content hashes to {actual}")]
    Corrupt {
        /// The name (expected hash).
        expected: String,
        /// What the content hashes to.
        actual: String,
    },
    /// No image with this hash or name.
    #[error("no image {0} in the store")]
    NotFound(String),
    /// A `name:tag` reference is malformed.
    #[error("bad image reference {0:?}: expected NAME:TAG with [a-z0-9._-] characters")]
    BadReference(String),
    /// A tag record's signature or content is wrong.
    #[error("tag record {name}: {reason}")]
    BadRecord {
        /// The `name:tag`.
        name: String,
        /// What is wrong.
        reason: String,
    },
}
