//! Choosing the node's microVM backend for frontier branes, by measuring.
//!
//! `/dev/kvm` opening is not enough (these development machines have a
//! software KVM ~1000× slow): a backend is chosen only after a probe boot
//! passes within a bound. `auto` tries QEMU with KVM — only when the CPU
//! advertises `vmx`/`svm` — and then, where the caller allows it, QEMU with
//! TCG; `qemu-kvm` and `qemu-tcg` force one (for tests and slow hosts);
//! `none` disables frontier branes.

use std::path::Path;
use std::time::Duration;

use omega_runtime::BraneLimits;
use omega_runtime::frontier::firecracker::host_has_hw_virt;
use omega_runtime::frontier::gpu::{GpuAssignment, select_passthrough};
use omega_runtime::frontier::image::{GuestImage, GuestStore, guest_ref};
use omega_runtime::frontier::qemu::{Accel, QemuBackend, QemuConfig, QemuVm};
use omega_runtime::frontier::{Backend as _, ProbeReport, VmSpec};
use omega_zgraph::Gpu;

/// The values of `--frontier-backend`.
pub const CHOICES: [&str; 4] = ["auto", "qemu-tcg", "qemu-kvm", "none"];

/// Bound of a KVM probe boot (a usable KVM boots the probe kernel in well
/// under a second).
pub const KVM_PROBE_BOUND: Duration = Duration::from_secs(15);
/// Bound of a TCG probe boot (~5 s measured on a 2-core machine).
pub const TCG_PROBE_BOUND: Duration = Duration::from_secs(120);

/// The outcome of [`select`]: the backend, or why there is none, and every
/// probe that ran (for logs and `omega status`).
#[derive(Debug)]
pub struct Selection {
    /// The chosen backend.
    pub backend: Result<QemuBackend, String>,
    /// The probes that ran, in order.
    pub probes: Vec<ProbeReport>,
}

impl Selection {
    /// One line for logs and status: `qemu-tcg (probe boot 4.8 s)` or the
    /// reason there is no backend.
    pub fn summary(&self) -> String {
        match &self.backend {
            Ok(b) => {
                let why = self
                    .probes
                    .iter()
                    .rfind(|p| p.usable)
                    .map_or("forced", |p| p.reason.as_str());
                format!("{} ({why})", b.name())
            }
            Err(why) => why.clone(),
        }
    }
}

/// Choose a backend for `choice` (one of [`CHOICES`]). With `auto`, TCG is
/// tried after KVM only if `auto_tcg` (`omega dev` waits for a slow boot; a
/// daemon does not advertise `frontier` on an emulated CPU unless forced).
pub fn select(choice: &str, config: QemuConfig, auto_tcg: bool) -> Selection {
    let mut probes = Vec::new();
    let attempt = |probes: &mut Vec<ProbeReport>, accel, bound| {
        let b = QemuBackend::new(QemuConfig {
            accel,
            ..config.clone()
        });
        let r = b.probe(bound);
        let usable = r.usable;
        probes.push(r);
        usable.then_some(b)
    };
    let backend = match choice {
        "qemu-tcg" => {
            attempt(&mut probes, Accel::Tcg, TCG_PROBE_BOUND).ok_or("qemu-tcg probe failed")
        }
        "qemu-kvm" => {
            attempt(&mut probes, Accel::Kvm, KVM_PROBE_BOUND).ok_or("qemu-kvm probe failed")
        }
        "auto" => {
            let kvm = if host_has_hw_virt() {
                attempt(&mut probes, Accel::Kvm, KVM_PROBE_BOUND)
            } else {
                probes.push(ProbeReport {
                    backend: "qemu-kvm".into(),
                    usable: false,
                    reason: "no vmx/svm CPU flag: /dev/kvm, if present, is software-emulated"
                        .into(),
                });
                None
            };
            match kvm {
                Some(b) => Ok(b),
                None if auto_tcg => {
                    attempt(&mut probes, Accel::Tcg, TCG_PROBE_BOUND).ok_or("no probe passed")
                }
                None => {
                    Err("no probe passed (force an emulated CPU with --frontier-backend qemu-tcg)")
                }
            }
        }
        _ => Err("disabled by --frontier-backend none"),
    };
    let backend = backend.map_err(|why| {
        let details: Vec<String> = probes
            .iter()
            .map(|p| format!("{}: {}", p.backend, p.reason))
            .collect();
        if details.is_empty() {
            why.to_string()
        } else {
            format!("{why} ({})", details.join("; "))
        }
    });
    Selection { backend, probes }
}

/// Boot timeout of a frontier brane (TCG is slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The run directory of a data directory's microVMs (reclaimed at start).
pub fn run_root(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("frontier-run")
}

/// The first checks of a frontier brane, before any guest is looked at:
/// its guest name, and the GPU group to pass through when it asks for one.
/// `Err` is why the brane cannot run here (a missing guest, a refused GPU;
/// never a fallback to the CPU).
pub fn requirements(b: &omega_zgraph::Brane) -> Result<(&str, Option<GpuAssignment>), String> {
    let guest = b
        .guest
        .as_deref()
        .ok_or("frontier brane without a guest image (guest = \"NAME\")")?;
    let gpu = if b.gpu == Gpu::Passthrough {
        Some(select_passthrough(Path::new("/sys")).map_err(|refusal| refusal.to_string())?)
    } else {
        None
    };
    Ok((guest, gpu))
}

/// Resolve guest `guest` (`NAME` or `NAME:TAG`) from the guest store in
/// `data_dir` (`omega guest push`).
pub fn resolve_stored(data_dir: &Path, guest: &str) -> Result<GuestImage, String> {
    GuestStore::open(data_dir.join("images"))
        .and_then(|s| s.resolve(&guest_ref(guest)?))
        .map_err(|e| e.to_string())
}

/// The microVM of frontier brane `name`: the guest's kernel and initramfs,
/// the brane's `workload` config (else the guest's), its memory limit
/// (default 256 MiB), its per-event timeout, and `emits` (its outgoing
/// edges' types).
pub fn vm_spec(
    name: &str,
    b: &omega_zgraph::Brane,
    image: GuestImage,
    emits: Vec<String>,
) -> VmSpec {
    let workload = match b.config.get("workload") {
        Some(w) => w.split_whitespace().map(String::from).collect(),
        None => image.workload.clone(),
    };
    let memory_mib = b
        .limits
        .memory_bytes
        .map_or(256, |m| u32::try_from(m >> 20).unwrap_or(u32::MAX));
    VmSpec {
        name: name.to_string(),
        kernel: image.kernel,
        initrd: Some(image.initrd),
        rootfs: None,
        cmdline: image.cmdline,
        vcpus: 1,
        memory_mib,
        max_disk_bytes: 0,
        boot_timeout: BOOT_TIMEOUT,
        event_timeout: b
            .limits
            .timeout_ms
            .map_or(BraneLimits::default().timeout, Duration::from_millis),
        workload,
        emits,
    }
}

/// Boot `spec` on `backend` (blocking: seconds under TCG) and say so on
/// stderr-bound logs: `Err` carries the backend's message.
pub fn boot(
    backend: &QemuBackend,
    spec: &VmSpec,
    gpu: Option<GpuAssignment>,
) -> Result<QemuVm, String> {
    backend
        .boot_vm(spec, gpu)
        .map_err(|e| format!("brane {}: {e}", spec.name))
}
