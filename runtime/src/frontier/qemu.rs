//! The QEMU backend: `qemu-system-x86_64` with KVM when a measured boot
//! says it is usable, TCG (software emulation) otherwise.
//!
//! One VM = one QEMU process and one run directory
//! (`<run_root>/<name>-<node pid>-<n>/`) holding everything it creates:
//!
//! ```text
//! pid            the QEMU pid (for reclaim_orphans)
//! owner          the pid of the node process that booted it
//! omega-vm       marker: this directory belongs to a frontier VM
//! console.log    the guest's serial console (ttyS0)
//! qemu.log       QEMU's own stdout/stderr
//! agent.sock     the agent channel (the guest's ttyS1)
//! qmp.sock       QMP control (quit, query-status)
//! ```
//!
//! The guest gets no network (`-nodefaults -nic none`), no display, no
//! disk unless the spec names a root disk (read-only), and QEMU runs under
//! its seccomp sandbox (`-sandbox on,…`) when [`QemuConfig::sandbox`] is
//! set. The VM is killed and its directory removed on drop, on shutdown,
//! when an event gets no answer within its timeout plus
//! [`QemuConfig::event_grace`], and when the agent breaks the protocol.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::gpu::GpuAssignment;
use super::session::{AgentSession, limits_for};
use super::{Backend, FrontierError, ProbeReport, Vm, VmSpec};
use crate::error::{EventError, TrapKind};
use crate::event::{Event, LogSink, Outcome, discard_logs};

/// Longest Unix socket path (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 100;
/// Bytes of serial console kept in error messages.
const SERIAL_TAIL: u64 = 2048;

/// Hardware acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (works everywhere, slow).
    Tcg,
    /// `/dev/kvm`.
    Kvm,
}

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `-M q35`: PCI (needed for VFIO), the agent on the second 8250 port.
    Q35,
    /// `-M microvm`: no PCI, no firmware; the agent on an extra ISA serial.
    Microvm,
}

/// Node-wide settings of the QEMU backend.
#[derive(Clone)]
pub struct QemuConfig {
    /// The QEMU binary. Default: `qemu-system-x86_64` (on `PATH`).
    pub binary: PathBuf,
    /// Acceleration. Default: TCG ([`QemuBackend::auto`] picks KVM only
    /// after a measured boot).
    pub accel: Accel,
    /// Machine type. Default: q35.
    pub machine: Machine,
    /// Where per-VM run directories go (short: it holds Unix sockets).
    /// Default: `/tmp/omega-frontier`.
    pub run_root: PathBuf,
    /// Most vCPUs one VM may have. Default: the host's CPU count.
    pub max_vcpus: u8,
    /// Most memory one VM may have, MiB. Default: 4096.
    pub max_memory_mib: u32,
    /// Emits per event (as a standard brane). Default: 64.
    pub max_emits: u32,
    /// Largest payload in or out, bytes (as a standard brane). Default: 1 MiB.
    pub max_payload: u32,
    /// Log lines per event. Default: 64.
    pub max_log_lines: u32,
    /// How long past the per-event timeout the host waits for the agent
    /// before it kills the VM. Default: 5 s.
    pub event_grace: Duration,
    /// Run QEMU under its seccomp sandbox. Default: true.
    pub sandbox: bool,
    /// The kernel [`Backend::probe`] boots. Default: the host's.
    pub probe_kernel: Option<PathBuf>,
    /// Where workload logs go.
    pub log: LogSink,
}

impl std::fmt::Debug for QemuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuConfig")
            .field("binary", &self.binary)
            .field("accel", &self.accel)
            .field("machine", &self.machine)
            .field("run_root", &self.run_root)
            .finish_non_exhaustive()
    }
}

impl Default for QemuConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            binary: PathBuf::from("qemu-system-x86_64"),
            accel: Accel::Tcg,
            machine: Machine::Q35,
            run_root: PathBuf::from("/tmp/omega-frontier"),
            max_vcpus: u8::try_from(cpus).unwrap_or(u8::MAX),
            max_memory_mib: 4096,
            max_emits: 64,
            max_payload: 1 << 20,
            max_log_lines: 64,
            event_grace: Duration::from_secs(5),
            sandbox: true,
            probe_kernel: None,
            log: discard_logs(),
        }
    }
}

/// The QEMU backend.
#[derive(Debug)]
pub struct QemuBackend {
    config: QemuConfig,
    next: AtomicU64,
}

/// Find `name` on `PATH` (or check it if it has a slash).
pub fn find_binary(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn read_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(SERIAL_TAIL)));
    let mut buf = Vec::new();
    let _ = f.take(SERIAL_TAIL).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if s.is_empty() { "vm".into() } else { s }
}

impl QemuBackend {
    /// A backend with a fixed configuration.
    pub fn new(config: QemuConfig) -> Self {
        Self {
            config,
            next: AtomicU64::new(0),
        }
    }

    /// Probe KVM (when `/dev/kvm` opens) and then TCG with a tiny boot
    /// each, within `bound`; return a backend on the first that works,
    /// and every probe's report.
    pub fn auto(config: QemuConfig, bound: Duration) -> (Option<Self>, Vec<ProbeReport>) {
        let mut reports = Vec::new();
        for accel in [Accel::Kvm, Accel::Tcg] {
            let b = Self::new(QemuConfig {
                accel,
                ..config.clone()
            });
            let r = b.probe(bound);
            let usable = r.usable;
            reports.push(r);
            if usable {
                return (Some(b), reports);
            }
        }
        (None, reports)
    }

    /// The configuration.
    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    fn accel_args(&self) -> Vec<String> {
        match self.config.accel {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "qemu64"],
        }
        .map(String::from)
        .to_vec()
    }

    fn machine_args(&self) -> Vec<String> {
        match self.config.machine {
            Machine::Q35 => vec!["-M".into(), "q35".into()],
            Machine::Microvm => vec!["-M".into(), "microvm,acpi=off".into()],
        }
    }

    fn common_args(&self) -> Vec<String> {
        let mut a = vec![
            "-nodefaults".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-nic".into(),
            "none".into(),
        ];
        if self.config.sandbox {
            a.push("-sandbox".into());
            a.push(
                "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
            );
        }
        a
    }

    /// The QEMU command line (without the binary) for `spec` in `run_dir`,
    /// with `gpu`'s devices assigned.
    pub fn argv(&self, spec: &VmSpec, run_dir: &Path, gpu: Option<&GpuAssignment>) -> Vec<String> {
        let p = |n: &str| run_dir.join(n).display().to_string();
        let mut a = self.machine_args();
        a.extend(self.accel_args());
        a.extend(self.common_args());
        a.extend([
            "-name".into(),
            format!("omega-{}", sanitize(&spec.name)),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-m".into(),
            spec.memory_mib.to_string(),
            "-kernel".into(),
            spec.kernel.display().to_string(),
        ]);
        if let Some(initrd) = &spec.initrd {
            a.extend(["-initrd".into(), initrd.display().to_string()]);
        }
        let mut cmdline = "console=ttyS0 panic=-1 quiet omega.agent.port=/dev/ttyS1".to_string();
        if !spec.cmdline.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(spec.cmdline.trim());
        }
        a.extend(["-append".into(), cmdline]);
        a.extend([
            "-serial".into(),
            format!("file:{}", p("console.log")),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                p("agent.sock")
            ),
        ]);
        match self.config.machine {
            Machine::Q35 => a.extend(["-serial".into(), "chardev:agent".into()]),
            Machine::Microvm => a.extend([
                "-device".into(),
                "isa-serial,chardev=agent,iobase=0x2f8,irq=3".into(),
            ]),
        }
        a.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p("qmp.sock")),
        ]);
        if let Some(root) = &spec.rootfs {
            a.extend([
                "-drive".into(),
                format!(
                    "file={},format=raw,if=none,id=root,readonly=on",
                    root.display()
                ),
                "-device".into(),
                match self.config.machine {
                    Machine::Q35 => "virtio-blk-pci,drive=root".into(),
                    Machine::Microvm => "virtio-blk-device,drive=root".into(),
                },
            ]);
        }
        if let Some(g) = gpu {
            a.extend(g.qemu_args());
        }
        a
    }

    fn check_spec(&self, spec: &VmSpec, gpu: Option<&GpuAssignment>) -> Result<(), FrontierError> {
        let bad = |m: String| Err(FrontierError::Spec(format!("{}: {m}", spec.name)));
        if spec.vcpus == 0 || spec.vcpus > self.config.max_vcpus {
            return bad(format!(
                "vcpus = {} (allowed 1..={})",
                spec.vcpus, self.config.max_vcpus
            ));
        }
        if spec.memory_mib < 32 || spec.memory_mib > self.config.max_memory_mib {
            return bad(format!(
                "memory = {} MiB (allowed 32..={})",
                spec.memory_mib, self.config.max_memory_mib
            ));
        }
        if spec.workload.is_empty() {
            return bad("no workload command".into());
        }
        if spec.boot_timeout.is_zero() || spec.event_timeout.is_zero() {
            return bad("zero boot or event timeout".into());
        }
        for (what, p) in [
            ("kernel", Some(&spec.kernel)),
            ("initrd", spec.initrd.as_ref()),
        ] {
            if let Some(p) = p
                && File::open(p).is_err()
            {
                return bad(format!("{what} {} is not readable", p.display()));
            }
        }
        if let Some(root) = &spec.rootfs {
            let size = std::fs::metadata(root)
                .map_err(|e| {
                    FrontierError::Spec(format!("{}: rootfs {}: {e}", spec.name, root.display()))
                })?
                .len();
            if size > spec.max_disk_bytes {
                return bad(format!(
                    "rootfs {} is {size} bytes, over max_disk_bytes = {}",
                    root.display(),
                    spec.max_disk_bytes
                ));
            }
        }
        if gpu.is_some() && self.config.machine != Machine::Q35 {
            return bad("GPU passthrough needs the q35 machine (PCI)".into());
        }
        Ok(())
    }

    fn spawn(&self, spec: &VmSpec, gpu: Option<&GpuAssignment>) -> Result<QemuProc, FrontierError> {
        let binary = find_binary(&self.config.binary).ok_or_else(|| FrontierError::Binary {
            backend: self.name().into(),
            path: self.config.binary.clone(),
            reason: "not found (apt-get install qemu-system-x86)".into(),
        })?;
        let root = &self.config.run_root;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|source| FrontierError::Io {
                what: format!("creating {}", root.display()),
                source,
            })?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!(
            "{}-{}-{n}",
            sanitize(&spec.name),
            std::process::id()
        ));
        if dir.join("agent.sock").as_os_str().len() > MAX_SOCKET_PATH {
            return Err(FrontierError::Spec(format!(
                "run directory {} is too long for a Unix socket path; use a shorter run_root",
                dir.display()
            )));
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| FrontierError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
        let io = |what: String| move |source| FrontierError::Io { what, source };
        std::fs::write(dir.join("omega-vm"), format!("{}\n", self.name()))
            .map_err(io(format!("writing {}/omega-vm", dir.display())))?;
        std::fs::write(dir.join("owner"), format!("{}\n", std::process::id()))
            .map_err(io(format!("writing {}/owner", dir.display())))?;
        let log = File::create(dir.join("qemu.log"))
            .map_err(io(format!("creating {}/qemu.log", dir.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io("cloning the qemu.log handle".into()))?;
        let argv = self.argv(spec, &dir, gpu);
        let child = Command::new(&binary)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(FrontierError::Binary {
                    backend: self.name().into(),
                    path: binary,
                    reason: e.to_string(),
                });
            }
        };
        let proc = QemuProc {
            child,
            dir,
            backend: self.name().to_string(),
            removed: false,
        };
        std::fs::write(proc.dir.join("pid"), format!("{}\n", proc.child.id()))
            .map_err(io(format!("writing {}/pid", proc.dir.display())))?;
        Ok(proc)
    }

    /// Boot one VM (with `gpu`'s devices assigned, if any) and wait for its
    /// agent and workload.
    pub fn boot_vm(
        &self,
        spec: &VmSpec,
        gpu: Option<GpuAssignment>,
    ) -> Result<QemuVm, FrontierError> {
        self.check_spec(spec, gpu.as_ref())?;
        let started = Instant::now();
        let deadline = started + spec.boot_timeout;
        let mut proc = self.spawn(spec, gpu.as_ref())?;
        let sock = proc.dir.join("agent.sock");
        let stream = loop {
            if let Some(e) = proc.exited_error() {
                return Err(e);
            }
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => {
                    return Err(FrontierError::BootTimeout {
                        backend: self.name().into(),
                        after: spec.boot_timeout,
                        serial: proc.tail(),
                    });
                }
            }
        };
        let write_timeout = spec.event_timeout.max(Duration::from_secs(5));
        let reader = stream.try_clone().and_then(|r| {
            stream.set_write_timeout(Some(write_timeout))?;
            Ok(r)
        });
        let reader = reader.map_err(|source| FrontierError::Io {
            what: format!("agent socket {}", sock.display()),
            source,
        })?;
        let c = &self.config;
        let limits = limits_for(spec, c.max_emits, c.max_payload, c.max_log_lines);
        let session = AgentSession::establish(
            &spec.name,
            reader,
            stream,
            spec.workload.clone(),
            spec.emits.clone(),
            limits,
            self.config.log.clone(),
            deadline,
            &mut || proc.dead(),
        );
        let session = match session {
            Ok(s) => s,
            Err(b) => {
                if let Some(e) = proc.exited_error() {
                    return Err(e);
                }
                return Err(b.into_boot_error(self.name(), spec, proc.tail()));
            }
        };
        Ok(QemuVm {
            name: spec.name.clone(),
            proc,
            session,
            event_timeout: spec.event_timeout,
            grace: self.config.event_grace,
            booted_in: started.elapsed(),
            dead: None,
        })
    }

    fn probe_kernel(&self) -> Option<PathBuf> {
        self.config
            .probe_kernel
            .clone()
            .or_else(super::image::host_kernel)
    }
}

impl Backend for QemuBackend {
    fn name(&self) -> &str {
        match self.config.accel {
            Accel::Tcg => "qemu-tcg",
            Accel::Kvm => "qemu-kvm",
        }
    }

    /// Boot the kernel with no root filesystem and time how long it takes
    /// to reach its "cannot mount root" panic (which `-no-reboot` turns
    /// into a QEMU exit). Usable only if that happens within `bound`.
    fn probe(&self, bound: Duration) -> ProbeReport {
        let report = |usable, reason: String| ProbeReport {
            backend: self.name().into(),
            usable,
            reason,
        };
        let Some(binary) = find_binary(&self.config.binary) else {
            return report(
                false,
                format!(
                    "{} not found (apt-get install qemu-system-x86)",
                    self.config.binary.display()
                ),
            );
        };
        if self.config.accel == Accel::Kvm
            && let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
        {
            return report(false, format!("/dev/kvm: {e}"));
        }
        let Some(kernel) = self.probe_kernel() else {
            return report(false, "no kernel to probe with (/boot/vmlinuz-*)".into());
        };
        let dir = match tempfile_dir(&self.config.run_root) {
            Ok(d) => d,
            Err(e) => return report(false, format!("run dir: {e}")),
        };
        let console = dir.join("console.log");
        let mut args = self.machine_args();
        args.extend(self.accel_args());
        args.extend(self.common_args());
        args.extend([
            "-m".into(),
            "128".into(),
            "-kernel".into(),
            kernel.display().to_string(),
            "-append".into(),
            "console=ttyS0 panic=-1 quiet".into(),
            "-serial".into(),
            format!("file:{}", console.display()),
        ]);
        let started = Instant::now();
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut proc = match child {
            Ok(c) => QemuProc {
                child: c,
                dir: dir.clone(),
                backend: self.name().into(),
                removed: false,
            },
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return report(false, format!("{}: {e}", binary.display()));
            }
        };
        let status = loop {
            if let Ok(Some(s)) = proc.child.try_wait() {
                break Some(s);
            }
            if started.elapsed() > bound {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        let serial = read_tail(&console);
        let mut stderr = String::new();
        if let Some(e) = proc.child.stderr.take() {
            let _ = e.take(4096).read_to_string(&mut stderr);
        }
        drop(proc);
        match status {
            None => report(
                false,
                format!(
                    "a tiny boot of {} did not finish within {bound:?}",
                    kernel.display()
                ),
            ),
            Some(_) if serial.contains("Kernel panic") || serial.contains("VFS") => report(
                true,
                format!(
                    "a tiny boot of {} took {} ms (bound {} ms)",
                    kernel.display(),
                    took.as_millis(),
                    bound.as_millis()
                ),
            ),
            Some(s) => report(
                false,
                format!(
                    "QEMU exited ({s}) before the kernel booted: {}",
                    stderr.trim()
                ),
            ),
        }
    }

    fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, FrontierError> {
        Ok(Box::new(self.boot_vm(spec, None)?))
    }
}

fn tempfile_dir(root: &Path) -> std::io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = root.join(format!(
        "probe-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    std::fs::write(dir.join("omega-vm"), "probe\n")?;
    Ok(dir)
}

/// The QEMU process and its run directory: killed and removed on drop.
#[derive(Debug)]
struct QemuProc {
    child: Child,
    dir: PathBuf,
    backend: String,
    removed: bool,
}

impl QemuProc {
    /// `Some(status)` once QEMU has exited.
    fn dead(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    fn tail(&self) -> String {
        read_tail(&self.dir.join("console.log"))
    }

    /// QEMU's own output plus the serial console tail.
    fn exited_error(&mut self) -> Option<FrontierError> {
        let status = self.dead()?;
        let qemu = read_tail(&self.dir.join("qemu.log"));
        let serial = self.tail();
        Some(if qemu.is_empty() {
            FrontierError::Exited {
                backend: self.backend.clone(),
                status,
                serial,
            }
        } else {
            FrontierError::Refused {
                backend: self.backend.clone(),
                what: "boot".into(),
                message: format!("{qemu} ({status}); last serial output: {serial}"),
            }
        })
    }

    /// Kill QEMU (bounded wait) and remove the run directory.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.removed {
            let _ = std::fs::remove_dir_all(&self.dir);
            self.removed = true;
        }
    }
}

impl Drop for QemuProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running QEMU VM with its agent.
#[derive(Debug)]
pub struct QemuVm {
    name: String,
    proc: QemuProc,
    session: AgentSession,
    event_timeout: Duration,
    grace: Duration,
    booted_in: Duration,
    dead: Option<String>,
}

impl QemuVm {
    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.proc.dir
    }

    /// From process start to agent and workload ready.
    pub fn booted_in(&self) -> Duration {
        self.booted_in
    }

    /// The agent's name and version.
    pub fn agent(&self) -> &str {
        self.session.agent()
    }

    /// Whether the VM still runs: `Err(Exited)` once QEMU has exited (the
    /// run directory is then removed).
    pub fn check(&mut self) -> Result<(), FrontierError> {
        if let Some(e) = self.proc.exited_error() {
            self.dead = Some(e.to_string());
            self.proc.kill();
            return Err(e);
        }
        if let Some(why) = &self.dead {
            return Err(FrontierError::Exited {
                backend: self.proc.backend.clone(),
                status: why.clone(),
                serial: String::new(),
            });
        }
        Ok(())
    }

    /// QMP `query-status`: e.g. `running`.
    pub fn status(&self) -> Result<String, FrontierError> {
        let v = qmp(&self.proc.dir.join("qmp.sock"), "query-status")?;
        Ok(v.get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_string())
    }
}

impl Vm for QemuVm {
    fn handle(&mut self, event: &Event) -> Result<Outcome, EventError> {
        if let Some(why) = &self.dead {
            return Err(EventError::Instantiate(format!(
                "frontier VM {} is gone: {why}",
                self.name
            )));
        }
        let deadline = Instant::now() + self.event_timeout + self.grace;
        let proc = &mut self.proc;
        match self.session.handle(event, deadline, &mut || proc.dead()) {
            Ok(r) => r,
            Err(broken) => {
                let exited = self.proc.exited_error().map(|e| e.to_string());
                self.proc.kill();
                let message = match exited {
                    Some(e) => format!("{e}; VM removed"),
                    None if broken.timeout => format!(
                        "guest did not answer within {:?} (+{:?} grace): {broken}; VM killed",
                        self.event_timeout, self.grace
                    ),
                    None => format!("{broken}; VM killed"),
                };
                self.dead = Some(message.clone());
                Err(EventError::Trap {
                    kind: if broken.timeout {
                        TrapKind::Timeout
                    } else {
                        TrapKind::Other
                    },
                    message,
                })
            }
        }
    }

    fn shutdown(mut self: Box<Self>) -> Result<(), FrontierError> {
        if self.dead.is_none() && self.proc.dead().is_none() {
            let _ = qmp(&self.proc.dir.join("qmp.sock"), "quit");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && self.proc.dead().is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.proc.kill();
        Ok(())
    }
}

/// One QMP command on `sock`; its `return` value.
fn qmp(sock: &Path, command: &str) -> Result<serde_json::Value, FrontierError> {
    let fail = |message: String| FrontierError::Refused {
        backend: "qemu".into(),
        what: format!("QMP {command}"),
        message,
    };
    let mut s = UnixStream::connect(sock).map_err(|e| fail(format!("{}: {e}", sock.display())))?;
    let t = Some(Duration::from_secs(2));
    s.set_read_timeout(t)
        .and_then(|()| s.set_write_timeout(t))
        .map_err(|e| fail(e.to_string()))?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| fail(e.to_string()))?);
    let mut line = String::new();
    let mut next = |r: &mut BufReader<UnixStream>| -> Result<serde_json::Value, FrontierError> {
        for _ in 0..32 {
            line.clear();
            let n = r
                .by_ref()
                .take(1 << 20)
                .read_line(&mut line)
                .map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                return Err(fail("QMP socket closed".into()));
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| fail(e.to_string()))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
        Err(fail("too many QMP events".into()))
    };
    next(&mut r)?; // greeting
    for cmd in ["qmp_capabilities", command] {
        writeln!(s, "{}", serde_json::json!({ "execute": cmd }))
            .map_err(|e| fail(e.to_string()))?;
        let v = next(&mut r)?;
        if let Some(e) = v.get("error") {
            return Err(fail(e.to_string()));
        }
        if cmd == command {
            return Ok(v.get("return").cloned().unwrap_or_default());
        }
    }
    Err(fail("no answer".into()))
}
