//! `omega guest build|push|probe`: guest images of frontier branes.
//!
//! - `build --out DIR`: a minimal guest, offline: the kernel (the host's
//!   `/boot/vmlinuz-*` by default), an initramfs (newc cpio) with the
//!   static `omega-agent` as `/init`, a static busybox, and the workload
//!   programs under `/workload/`.
//! - `push DIR --name NAME:TAG`: store the kernel and initramfs in the
//!   node's image store, content-addressed by BLAKE3, with a signed
//!   guest-image record. A manifest's `guest = "NAME"` means `NAME:latest`.
//! - `probe`: measure whether a backend boots guests here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use omega_runtime::ImageRef;
use omega_runtime::frontier::Backend;
use omega_runtime::frontier::image::{GuestBuild, GuestStore, build_guest, host_kernel};
use omega_runtime::frontier::qemu::{Accel, QemuBackend, QemuConfig};
use serde_json::json;

use super::image::DataDir;
use super::output::{CliError, Output};
use super::run::rt_err;

/// `omega guest` verbs.
#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Build a minimal guest (kernel + initramfs with the agent, busybox and the workload).
    Build(BuildArgs),
    /// Store a built guest under `--name NAME:TAG` (signed by your key).
    Push {
        /// The directory `omega guest build` wrote.
        dir: PathBuf,
        /// The name and tag, e.g. `shard-stats:latest`.
        #[arg(long)]
        name: String,
        /// Data directory.
        #[command(flatten)]
        data: DataDir,
    },
    /// Measure whether a microVM backend boots here (a tiny boot within a bound).
    Probe {
        /// `qemu` (KVM if it measures usable, else TCG), `qemu-tcg` or `qemu-kvm`.
        #[arg(long, default_value = "qemu")]
        backend: String,
        /// The bound, seconds.
        #[arg(long, default_value_t = 120)]
        bound: u64,
        /// The kernel to boot [default: the host's].
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
}

/// Arguments of `omega guest build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Where to write `vmlinuz`, `initramfs.cpio` and `guest.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// The kernel [default: /boot/vmlinuz-$(uname -r)].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The static guest agent [default: `omega-agent` next to this binary].
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// A static busybox [default: /bin/busybox]; `none` for no shell.
    #[arg(long)]
    pub busybox: Option<String>,
    /// Workload programs copied to /workload/ (the first is the default).
    #[arg(long = "workload", value_name = "PROGRAM")]
    pub workloads: Vec<PathBuf>,
    /// Directory trees merged into the guest's root (a bigger userland).
    #[arg(long = "include", value_name = "DIR")]
    pub include: Vec<PathBuf>,
    /// Kernel modules copied to /lib/modules/.
    #[arg(long = "module", value_name = "FILE")]
    pub modules: Vec<PathBuf>,
    /// Extra kernel command line stored with the image.
    #[arg(long, default_value = "")]
    pub cmdline: String,
}

fn default_agent() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("omega-agent");
    p.is_file().then_some(p)
}

/// Run an `omega guest` verb.
pub(super) fn run(cmd: &GuestCommand, key_path: &Path, out: &Output) -> Result<ExitCode, CliError> {
    match cmd {
        GuestCommand::Build(args) => build(args, out),
        GuestCommand::Push { dir, name, data } => {
            let reference: ImageRef = name.parse().map_err(|e| {
                CliError::invalid(
                    format!("{e}"),
                    "use lowercase NAME:TAG, e.g. shard-stats:latest",
                )
            })?;
            let key = crate::keystore::load(key_path)?;
            let store = GuestStore::open(data.path().join("images")).map_err(rt_err)?;
            let record = store.push(dir, &reference, &key).map_err(|e| {
                CliError::invalid(
                    format!("{}: {e}", dir.display()),
                    "build it first: omega guest build --out DIR --workload PROGRAM",
                )
            })?;
            out.print(
                format!(
                    "{reference} -> kernel {} initramfs {}",
                    record.kernel, record.initrd
                ),
                json!({ "ok": true, "name": reference.to_string(), "kernel": record.kernel,
                        "initrd": record.initrd, "workload": record.workload, "signer": record.signer }),
            );
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Probe {
            backend,
            bound,
            kernel,
        } => {
            let config = QemuConfig {
                probe_kernel: kernel.clone(),
                ..QemuConfig::default()
            };
            let bound = Duration::from_secs(*bound);
            let reports = match backend.as_str() {
                "qemu" => QemuBackend::auto(config, bound).1,
                "qemu-tcg" => vec![
                    QemuBackend::new(QemuConfig {
                        accel: Accel::Tcg,
                        ..config
                    })
                    .probe(bound),
                ],
                "qemu-kvm" => vec![
                    QemuBackend::new(QemuConfig {
                        accel: Accel::Kvm,
                        ..config
                    })
                    .probe(bound),
                ],
                other => {
                    return Err(CliError::invalid(
                        format!("unknown backend {other:?}"),
                        "use qemu, qemu-tcg or qemu-kvm (firecracker: see docs/src/frontier-firecracker.md)",
                    ));
                }
            };
            let usable = reports.iter().any(|r| r.usable);
            out.print(
                reports
                    .iter()
                    .map(|r| {
                        format!(
                            "{}: {} ({})",
                            r.backend,
                            if r.usable { "usable" } else { "not usable" },
                            r.reason
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                json!({ "ok": usable, "probes": reports.iter().map(|r| json!({
                    "backend": r.backend, "usable": r.usable, "reason": r.reason })).collect::<Vec<_>>() }),
            );
            Ok(if usable {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn build(args: &BuildArgs, out: &Output) -> Result<ExitCode, CliError> {
    let kernel = args.kernel.clone().or_else(host_kernel).ok_or_else(|| {
        CliError::invalid(
            "no readable kernel in /boot",
            "pass --kernel PATH (e.g. a Debian linux-image package extracted with dpkg-deb -x)",
        )
    })?;
    let agent = args.agent.clone().or_else(default_agent).ok_or_else(|| {
        CliError::invalid(
            "no omega-agent binary next to omega",
            "build it: RUSTFLAGS='-C target-feature=+crt-static' cargo build -p omega-agent --release --target x86_64-unknown-linux-gnu, then pass --agent PATH",
        )
    })?;
    let busybox = match args.busybox.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from("/bin/busybox")),
    };
    if args.workloads.is_empty() {
        return Err(CliError::invalid(
            "no workload",
            "pass --workload PROGRAM (any Linux program speaking the line-delimited JSON contract, see docs/src/frontier.md)",
        ));
    }
    let manifest = build_guest(
        &GuestBuild {
            kernel,
            agent,
            busybox,
            workloads: args.workloads.clone(),
            include: args.include.clone(),
            modules: args.modules.clone(),
            cmdline: args.cmdline.clone(),
        },
        &args.out,
    )
    .map_err(|e| CliError::plain(format!("guest build: {e}")))?;
    let size = |n: &str| {
        std::fs::metadata(args.out.join(n))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    out.print(
        format!(
            "built {} (kernel {} bytes, initramfs {} bytes, workload {})",
            args.out.display(),
            size("vmlinuz"),
            size("initramfs.cpio"),
            manifest.workload.join(" ")
        ),
        json!({ "ok": true, "dir": args.out.display().to_string(), "workload": manifest.workload,
                "kernel_bytes": size("vmlinuz"), "initrd_bytes": size("initramfs.cpio") }),
    );
    Ok(ExitCode::SUCCESS)
}
