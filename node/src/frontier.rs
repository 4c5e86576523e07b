//! Choosing the node's microVM backend for frontier branes, by measuring.
//!
//! `/dev/kvm` opening is not enough (these development machines have a
//! software KVM ~1000× slow): a backend is chosen only after a probe boot
//! passes within a bound. `auto` tries QEMU with KVM — only when the CPU
//! advertises `vmx`/`svm` — and then, where the caller allows it, QEMU with
//! TCG; `qemu-kvm` and `qemu-tcg` force one (for tests and slow hosts);
//! `none` disables frontier branes.

use std::time::Duration;

use omega_runtime::frontier::firecracker::host_has_hw_virt;
use omega_runtime::frontier::qemu::{Accel, QemuBackend, QemuConfig};
use omega_runtime::frontier::{Backend as _, ProbeReport};

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
