//! The precompiled-artifact cache: `<dir>/<image hash>-<engine
//! fingerprint>.cwasm`, with a sidecar `.b3` holding the BLAKE3 of the
//! artifact. An artifact is only deserialized after its bytes hash to the
//! sidecar; a missing, corrupt or incompatible entry is recompiled and
//! rewritten. Files are written to a temporary name and renamed into place.
//!
//! Trust: the cache directory belongs to the node. The hash check catches
//! truncation, bit rot and half-written files; someone who can write the
//! node's data directory can also replace its binary, so it is not a
//! defence against them.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use omega_identity::ContentId;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::RuntimeError;

/// How an image load was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Compiled now (and written to the cache, if there is one).
    Compiled,
    /// Loaded from a verified precompiled artifact on disk.
    Disk,
    /// Already compiled in this process.
    Memory,
}

/// A `Hasher` feeding BLAKE3, so the fingerprint does not depend on the
/// standard library's unstable `DefaultHasher`.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let bytes = self.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A short hex id of the engine's build and code-generation settings: two
/// engines with the same fingerprint can load each other's artifacts.
pub fn engine_fingerprint(engine: &Engine) -> String {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    let digest = h.0.finalize();
    digest.to_hex()[..16].to_string()
}

/// Paths of one cache entry: the artifact and its hash sidecar.
pub fn entry_paths(dir: &Path, fingerprint: &str, image: &ContentId) -> (PathBuf, PathBuf) {
    let stem = format!("{image}-{fingerprint}");
    (
        dir.join(format!("{stem}.cwasm")),
        dir.join(format!("{stem}.b3")),
    )
}

pub(crate) fn load_or_compile(
    engine: &Engine,
    dir: &Path,
    fingerprint: &str,
    image: &ContentId,
    bytes: &[u8],
) -> Result<(Component, crate::CacheStatus), RuntimeError> {
    let (artifact, sidecar) = entry_paths(dir, fingerprint, image);
    if let Some(component) = try_load(engine, &artifact, &sidecar) {
        return Ok((component, CacheStatus::Disk));
    }
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Cache { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_atomic(&artifact, &compiled).map_err(io(&artifact))?;
    let digest = blake3::hash(&compiled).to_hex();
    write_atomic(&sidecar, digest.as_bytes()).map_err(io(&sidecar))?;
    // SAFETY: `compiled` was produced just now by `precompile_component` on
    // this same engine.
    let component = unsafe { Component::deserialize(engine, &compiled) }
        .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
    Ok((component, CacheStatus::Compiled))
}

/// Load a verified artifact, or `None` on a miss, a hash mismatch or an
/// artifact this engine rejects.
fn try_load(engine: &Engine, artifact: &Path, sidecar: &Path) -> Option<Component> {
    let expected = std::fs::read_to_string(sidecar).ok()?;
    let bytes = std::fs::read(artifact).ok()?;
    if blake3::hash(&bytes).to_hex().as_str() != expected.trim() {
        return None;
    }
    // SAFETY: the file's bytes hash to the value recorded when this node
    // wrote it from `precompile_component`; Wasmtime also checks the
    // engine compatibility header and refuses a mismatch.
    unsafe { Component::deserialize_file(engine, artifact) }.ok()
}

/// Write `bytes` to `path` via a temporary file in the same directory,
/// fsync, and rename: readers see the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
