//! Frontier branes: workloads in microVMs, behind one [`Backend`] trait so
//! a frontier brane looks like a standard one to the rest of the node.
//!
//! # Contract
//!
//! - A [`Backend`] (Firecracker, QEMU) is node-wide. [`Backend::probe`]
//!   measures whether it really works here (a boot within a bound, not just
//!   "the binary exists" or "/dev/kvm opens"): the node advertises
//!   `frontier` only when a probe passes.
//! - [`Backend::boot`] starts one microVM from a [`VmSpec`] (guest image,
//!   vCPUs, memory, disk, boot timeout) and returns a running [`Vm`] once
//!   the guest agent is ready, or a typed [`FrontierError`] (the VMM's own
//!   message, e.g. Firecracker's `fault_message`, is carried through).
//! - [`Vm::handle`] carries one event in and returns the [`Outcome`] (the
//!   emits, then the result), with the same semantics, type rules and
//!   limits as a standard brane's `on-event`. A guest that does not answer
//!   within the per-event timeout is killed: the `Vm` is then dead and
//!   every later call fails with [`EventError`].
//! - Dropping a `Vm` (or [`Vm::shutdown`]) stops the VMM process and removes
//!   every resource it created (sockets, taps, temporary files). Every
//!   resource lives under a per-VM run directory so a restarted node can
//!   reclaim what a crashed one left ([`reclaim_orphans`]).
//!
//! Modules: [`qemu`] and [`firecracker`] (backends), [`session`] (the host
//! side of the guest-agent protocol, `omega_agent::proto`, over any byte
//! stream), [`image`] (guest images: initramfs builder, signed store),
//! [`gpu`] (VFIO passthrough selection). The traits and `VmSpec` are
//! unchanged since the first version; everything else was added.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Event, EventError, Outcome};

pub mod firecracker;
pub mod gpu;
pub mod image;
pub mod qemu;
pub mod session;

/// What a microVM boots.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The brane name (for logs and resource names).
    pub name: String,
    /// Uncompressed kernel (`vmlinux` ELF for Firecracker; bzImage or ELF
    /// for QEMU).
    pub kernel: PathBuf,
    /// The initramfs (cpio, optionally compressed), if any.
    pub initrd: Option<PathBuf>,
    /// A root disk image, if any.
    pub rootfs: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Largest disk size allowed, bytes.
    pub max_disk_bytes: u64,
    /// Time from process start to agent-ready before the boot is abandoned.
    pub boot_timeout: Duration,
    /// Per-event timeout.
    pub event_timeout: Duration,
    /// The workload the agent runs (argv) inside the guest.
    pub workload: Vec<String>,
    /// Event types the brane may emit (the edge's types).
    pub emits: Vec<String>,
}

/// The result of a [`Backend::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The backend's name, e.g. `firecracker`, `qemu-kvm`, `qemu-tcg`.
    pub backend: String,
    /// Whether frontier branes can run here.
    pub usable: bool,
    /// Why (measured figures included), for `omega status`.
    pub reason: String,
}

/// A microVM backend.
pub trait Backend: Send + Sync {
    /// The backend's name, e.g. `firecracker`, `qemu-tcg`.
    fn name(&self) -> &str;
    /// Measure whether this backend really runs guests here, within `bound`.
    fn probe(&self, bound: Duration) -> ProbeReport;
    /// Boot one microVM and wait for its agent.
    fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, FrontierError>;
}

/// One running microVM with its guest agent.
pub trait Vm: Send {
    /// Run one event through the guest's workload.
    fn handle(&mut self, event: &Event) -> Result<Outcome, EventError>;
    /// Stop the VM and remove its resources.
    fn shutdown(self: Box<Self>) -> Result<(), FrontierError>;
}

/// A frontier operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontierError {
    /// The VMM binary is missing or not executable.
    #[error("{backend}: binary {path} not usable: {reason}")]
    Binary {
        /// Backend name.
        backend: String,
        /// The path tried.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The VMM refused a request (Firecracker's `fault_message`, a QEMU
    /// error line).
    #[error("{backend} refused {what}: {message}")]
    Refused {
        /// Backend name.
        backend: String,
        /// The request, e.g. `PUT /boot-source`.
        what: String,
        /// The VMM's own message.
        message: String,
    },
    /// The guest did not become ready within the boot timeout.
    #[error("{backend}: guest not ready after {after:?}; last serial output: {serial}")]
    BootTimeout {
        /// Backend name.
        backend: String,
        /// How long we waited.
        after: Duration,
        /// The tail of the serial console.
        serial: String,
    },
    /// The VMM process exited.
    #[error("{backend}: VMM exited ({status}); last serial output: {serial}")]
    Exited {
        /// Backend name.
        backend: String,
        /// Exit status.
        status: String,
        /// The tail of the serial console.
        serial: String,
    },
    /// The guest agent broke the protocol.
    #[error("guest agent protocol: {0}")]
    Protocol(String),
    /// A bad spec (limits, missing files).
    #[error("invalid VM spec: {0}")]
    Spec(String),
    /// Host I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Remove what crashed VMs left under `run_dir` (one directory per VM,
/// holding a pid file, sockets, and the resources it created): kill a VMM
/// process still running, delete the directory. Returns how many were
/// reclaimed.
///
/// Only directories marked as VM run directories (an `omega-vm` file) are
/// touched; a directory whose `owner` file names another live process (a
/// node still running) is left alone; a VMM pid is killed only if its
/// command line names the directory (a recycled pid is left alone). Call
/// it when the node starts, before it boots any VM: directories owned by
/// the calling process are reclaimed too. Firecracker run directories
/// (see [`firecracker::reclaim`]) are reclaimed as well.
pub fn reclaim_orphans(run_dir: &std::path::Path) -> Result<usize, FrontierError> {
    let entries = match std::fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(FrontierError::Io {
                what: format!("reading {}", run_dir.display()),
                source,
            });
        }
    };
    let mut reclaimed = 0;
    for entry in entries.flatten().take(10_000) {
        let dir = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || !dir.join("omega-vm").is_file() {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(owner) = owner
            && owner != std::process::id()
            && process_alive(owner)
        {
            continue;
        }
        let pid = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 1);
        if let Some(pid) = pid {
            kill_vmm(pid, &dir);
        }
        std::fs::remove_dir_all(&dir).map_err(|source| FrontierError::Io {
            what: format!("removing {}", dir.display()),
            source,
        })?;
        reclaimed += 1;
    }
    // Firecracker keeps its own layout (a `firecracker.pid` per VM).
    Ok(reclaimed + firecracker::reclaim(run_dir)?)
}

/// Whether `pid` is a live process (not a zombie).
pub(crate) fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Whether `pid` is a live process (not a zombie) whose command line names
/// `dir`.
fn vmm_alive(pid: i32, dir: &std::path::Path) -> bool {
    if !u32::try_from(pid).is_ok_and(process_alive) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.as_os_str().as_encoded_bytes();
    !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle)
}

/// SIGKILL a VMM left by a crashed node and wait (bounded) until it is gone.
fn kill_vmm(pid: i32, dir: &std::path::Path) {
    if !vmm_alive(pid, dir) {
        return;
    }
    // SAFETY: kill(2) on a pid whose command line names our run directory.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline && vmm_alive(pid, dir) {
        std::thread::sleep(Duration::from_millis(10));
    }
}
