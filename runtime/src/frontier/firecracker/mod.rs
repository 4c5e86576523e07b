//! Firecracker backend: branes in Firecracker microVMs.
//!
//! The driver spawns `firecracker --api-sock …` (through the `jailer` when
//! configured), drives its REST API over the unix socket with a small
//! bounded HTTP/1.1 client, collects the serial console (Firecracker's
//! stdout), supervises the process and removes everything on stop, crash
//! or drop. Every resource of one VM lives in its run directory
//! `<run_root>/fc-<name>-<pid>-<n>/` (pid file, API socket, log, metrics,
//! vsock socket, snapshots, the jail), so [`reclaim`] can clean up after a
//! crashed node.
//!
//! - [`api`]: pure builders for every request (checked against the API's
//!   swagger description by the conformance test).
//! - [`Machine`]: one VMM process.
//! - [`Firecracker`]: the [`Backend`].
//! - [`guest`]: a minimal ELF guest generated in code, for the probe,
//!   tests and the benchmark.

pub mod api;
pub mod guest;
mod http;
pub mod jailer;
mod machine;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use jailer::JailerConfig;
pub use machine::{
    API_SOCK, LOG_FILE, METRICS_FILE, Machine, PID_FILE, SERIAL_KEEP, VSOCK_SOCK, firecracker_args,
};

use super::session::{AgentSession, limits_for};
use super::{Backend, FrontierError, ProbeReport, Vm, VmSpec};
use crate::error::{EventError, TrapKind};
use crate::event::{Event, LogSink, Outcome, discard_logs};

/// The backend's name.
pub const BACKEND: &str = "firecracker";
/// The guest CID every VM gets (each VM has its own vsock device).
pub const GUEST_CID: u32 = 3;
/// The vsock port the guest agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// The marker the probe's minimal guest writes.
pub const PROBE_MARKER: &[u8] = b"omega-frontier-probe-ok\n";

/// How to run Firecracker.
#[derive(Clone)]
pub struct FirecrackerConfig {
    /// The `firecracker` binary.
    pub binary: PathBuf,
    /// Run through the jailer, if set.
    pub jailer: Option<JailerConfig>,
    /// Where per-VM run directories are created (keep it short: socket
    /// paths are limited to 107 bytes).
    pub run_root: PathBuf,
    /// Per-request API timeout.
    pub api_timeout: Duration,
    /// Time for a fresh VMM's API socket to answer.
    pub start_timeout: Duration,
    /// Firecracker's log level (`Error`, `Warning`, `Info`, `Debug`).
    pub log_level: String,
    /// A Linux guest with the omega agent, which [`Backend::probe`] boots
    /// to check that frontier branes can run; without one the probe only
    /// boots the minimal guest and reports not usable.
    pub agent_guest: Option<VmSpec>,
    /// Emits per event (as a standard brane). Default: 64.
    pub max_emits: u32,
    /// Largest payload in or out, bytes. Default: 1 MiB.
    pub max_payload: u32,
    /// Log lines per event. Default: 64.
    pub max_log_lines: u32,
    /// How long past the per-event timeout the host waits for the agent
    /// before it kills the VM. Default: 5 s.
    pub event_grace: Duration,
    /// Where workload logs go.
    pub log: LogSink,
}

impl std::fmt::Debug for FirecrackerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirecrackerConfig")
            .field("binary", &self.binary)
            .field("jailer", &self.jailer)
            .field("run_root", &self.run_root)
            .finish_non_exhaustive()
    }
}

impl FirecrackerConfig {
    /// Defaults for `binary`, run directories under `run_root`.
    pub fn new(binary: impl Into<PathBuf>, run_root: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            jailer: None,
            run_root: run_root.into(),
            api_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(5),
            log_level: "Info".into(),
            agent_guest: None,
            max_emits: 64,
            max_payload: 1 << 20,
            max_log_lines: 64,
            event_grace: Duration::from_secs(5),
            log: discard_logs(),
        }
    }

    /// From the environment: `FIRECRACKER_BIN` (required, else `None`) and
    /// the jailer variables of [`JailerConfig::from_env`].
    pub fn from_env(run_root: impl Into<PathBuf>) -> Option<Self> {
        let bin = std::env::var_os("FIRECRACKER_BIN").filter(|v| !v.is_empty())?;
        let mut c = Self::new(bin, run_root);
        c.jailer = JailerConfig::from_env();
        Some(c)
    }
}

/// The Firecracker [`Backend`].
#[derive(Debug, Clone)]
pub struct Firecracker {
    config: FirecrackerConfig,
}

impl Firecracker {
    /// A backend with `config`.
    pub fn new(config: FirecrackerConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &FirecrackerConfig {
        &self.config
    }

    /// Spawn a VMM for a VM named `name` (not configured yet).
    pub fn spawn(&self, name: &str) -> Result<Machine, FrontierError> {
        Machine::spawn(&self.config, name)
    }

    /// Boot the minimal guest (writes `marker`, then resets or halts) with
    /// a vsock device, start it, and wait for the marker on the serial
    /// console. Returns the machine and the time from `InstanceStart` to
    /// the marker.
    pub fn boot_minimal(
        &self,
        name: &str,
        marker: &[u8],
        ending: guest::Ending,
        timeout: Duration,
    ) -> Result<(Machine, Duration), FrontierError> {
        let mut m = self.spawn(name)?;
        let kernel = m.run_dir().join("guest.elf");
        guest::write(&kernel, marker, ending)?;
        let plan = api::BootPlan {
            vcpus: 1,
            memory_mib: 16,
            kernel: m.stage(&kernel, "guest_elf")?,
            vsock: Some((GUEST_CID, m.vsock_path()?)),
            metrics: Some(m.metrics_path()?),
            ..Default::default()
        };
        m.configure(&plan)?;
        let t0 = Instant::now();
        m.start()?;
        if !m.wait_serial(marker, timeout) {
            let serial = String::from_utf8_lossy(&m.serial()).into_owned();
            return Err(match m.wait_exit(Duration::from_millis(50)) {
                Some(status) => FrontierError::Exited {
                    backend: BACKEND.into(),
                    status: status.to_string(),
                    serial,
                },
                None => FrontierError::BootTimeout {
                    backend: BACKEND.into(),
                    after: timeout,
                    serial,
                },
            });
        }
        Ok((m, t0.elapsed()))
    }

    fn plan_for(&self, m: &Machine, spec: &VmSpec) -> Result<api::BootPlan, FrontierError> {
        validate(spec)?;
        let mut plan = api::BootPlan {
            vcpus: u32::from(spec.vcpus),
            memory_mib: spec.memory_mib,
            kernel: m.stage(&spec.kernel, "kernel")?,
            initrd: spec
                .initrd
                .as_deref()
                .map(|p| m.stage(p, "initrd"))
                .transpose()?,
            cmdline: boot_args(&spec.cmdline),
            vsock: Some((GUEST_CID, m.vsock_path()?)),
            metrics: Some(m.metrics_path()?),
            ..Default::default()
        };
        if let Some(rootfs) = &spec.rootfs {
            plan.drives
                .push(("rootfs".into(), m.stage(rootfs, "rootfs")?, true, false));
        }
        Ok(plan)
    }
}

/// The kernel command line for a frontier guest: the serial console, no
/// reboot loop, and the agent's channel (vsock port [`AGENT_PORT`]), then
/// the spec's own arguments.
pub fn boot_args(extra: &str) -> String {
    let mut args =
        format!("console=ttyS0 reboot=k panic=-1 quiet omega.agent.port=vsock:{AGENT_PORT}");
    if !extra.trim().is_empty() {
        args.push(' ');
        args.push_str(extra.trim());
    }
    args
}

/// Check a spec's limits and files before anything is started.
pub fn validate(spec: &VmSpec) -> Result<(), FrontierError> {
    if !(1..=32).contains(&spec.vcpus) {
        return Err(FrontierError::Spec(format!(
            "vcpus must be 1..=32, got {}",
            spec.vcpus
        )));
    }
    if spec.memory_mib == 0 {
        return Err(FrontierError::Spec("memory_mib must be positive".into()));
    }
    if spec.boot_timeout.is_zero() {
        return Err(FrontierError::Spec("boot_timeout must be positive".into()));
    }
    if !spec.kernel.is_file() {
        return Err(FrontierError::Spec(format!(
            "kernel {} is not a file",
            spec.kernel.display()
        )));
    }
    if let Some(initrd) = &spec.initrd
        && !initrd.is_file()
    {
        return Err(FrontierError::Spec(format!(
            "initrd {} is not a file",
            initrd.display()
        )));
    }
    if let Some(rootfs) = &spec.rootfs {
        let len = std::fs::metadata(rootfs)
            .map_err(|e| FrontierError::Spec(format!("rootfs {}: {e}", rootfs.display())))?
            .len();
        if len > spec.max_disk_bytes {
            return Err(FrontierError::Spec(format!(
                "rootfs {} is {len} bytes, over the limit of {}",
                rootfs.display(),
                spec.max_disk_bytes
            )));
        }
    }
    Ok(())
}

/// Whether the host CPU advertises hardware virtualization (`vmx`/`svm`).
pub fn host_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
}

impl Backend for Firecracker {
    fn name(&self) -> &str {
        BACKEND
    }

    fn probe(&self, bound: Duration) -> ProbeReport {
        let report = |usable, reason: String| ProbeReport {
            backend: BACKEND.into(),
            usable,
            reason,
        };
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            return report(false, format!("/dev/kvm: {e}"));
        }
        let hw = if host_has_hw_virt() {
            "hardware virtualization present"
        } else {
            "no vmx/svm CPU flag: /dev/kvm is software-emulated"
        };
        let t0 = Instant::now();
        let minimal = self
            .boot_minimal("probe", PROBE_MARKER, guest::Ending::Reset, bound)
            .and_then(|(mut m, to_marker)| {
                let left = bound.saturating_sub(t0.elapsed());
                let exited = m.wait_exit(left);
                let total = t0.elapsed();
                m.stop(Duration::ZERO)?;
                Ok((to_marker, total, exited))
            });
        let (to_marker, total) = match minimal {
            Ok((to_marker, total, Some(_))) => (to_marker, total),
            Ok((_, _, None)) => {
                return report(
                    false,
                    format!("minimal guest did not exit within {bound:?} ({hw})"),
                );
            }
            Err(e) => return report(false, format!("minimal guest failed: {e} ({hw})")),
        };
        let measured = format!(
            "minimal guest: InstanceStart→serial marker {:.1} ms, spawn→exit {:.1} ms ({hw})",
            to_marker.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
        let Some(spec) = &self.config.agent_guest else {
            return report(
                false,
                format!(
                    "{measured}; no agent guest configured, so a frontier brane cannot be checked"
                ),
            );
        };
        let mut spec = spec.clone();
        spec.boot_timeout = spec.boot_timeout.min(
            bound
                .saturating_sub(t0.elapsed())
                .max(Duration::from_millis(1)),
        );
        let t1 = Instant::now();
        match self.boot(&spec) {
            Ok(vm) => {
                let ready = t1.elapsed();
                let _ = vm.shutdown();
                report(
                    true,
                    format!(
                        "{measured}; agent guest ready in {:.1} ms",
                        ready.as_secs_f64() * 1e3
                    ),
                )
            }
            Err(e) => report(false, format!("{measured}; agent guest: {e}")),
        }
    }

    fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, FrontierError> {
        validate(spec)?;
        let started = Instant::now();
        let deadline = started + spec.boot_timeout;
        let mut m = self.spawn(&spec.name)?;
        let plan = self.plan_for(&m, spec)?;
        m.configure(&plan)?;
        m.start()?;
        let stream = m.vsock_connect(
            AGENT_PORT,
            deadline.saturating_duration_since(Instant::now()),
        )?;
        let io = |source| FrontierError::Io {
            what: format!("{BACKEND} agent vsock"),
            source,
        };
        stream
            .set_write_timeout(Some(spec.event_timeout.max(Duration::from_secs(5))))
            .map_err(io)?;
        let reader = stream.try_clone().map_err(io)?;
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
            &mut || m.try_exit().map(|s| s.to_string()),
        );
        let session = match session {
            Ok(s) => s,
            Err(broken) => {
                let serial = String::from_utf8_lossy(&m.serial())
                    .chars()
                    .rev()
                    .take(2048)
                    .collect::<Vec<_>>();
                let serial: String = serial.into_iter().rev().collect();
                if let Some(status) = m.try_exit() {
                    return Err(FrontierError::Exited {
                        backend: BACKEND.into(),
                        status: status.to_string(),
                        serial,
                    });
                }
                return Err(broken.into_boot_error(BACKEND, spec, serial));
            }
        };
        Ok(Box::new(FirecrackerVm {
            name: spec.name.clone(),
            machine: Some(m),
            session,
            event_timeout: spec.event_timeout,
            grace: self.config.event_grace,
            booted_in: started.elapsed(),
            dead: None,
        }))
    }
}

/// A Firecracker microVM with its guest agent (from [`Backend::boot`]).
pub struct FirecrackerVm {
    name: String,
    machine: Option<Machine>,
    session: AgentSession,
    event_timeout: Duration,
    grace: Duration,
    booted_in: Duration,
    dead: Option<String>,
}

impl std::fmt::Debug for FirecrackerVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirecrackerVm")
            .field("name", &self.name)
            .field("machine", &self.machine)
            .finish_non_exhaustive()
    }
}

impl FirecrackerVm {
    /// From process start to agent and workload ready.
    pub fn booted_in(&self) -> Duration {
        self.booted_in
    }

    /// The underlying machine (pause, snapshot, serial), while alive.
    pub fn machine(&mut self) -> Option<&mut Machine> {
        self.machine.as_mut()
    }
}

impl Vm for FirecrackerVm {
    fn handle(&mut self, event: &Event) -> Result<Outcome, EventError> {
        if let Some(why) = &self.dead {
            return Err(EventError::Instantiate(format!(
                "frontier VM {} is gone: {why}",
                self.name
            )));
        }
        let Some(m) = self.machine.as_mut() else {
            return Err(EventError::Instantiate(format!(
                "frontier VM {} is gone",
                self.name
            )));
        };
        let deadline = Instant::now() + self.event_timeout + self.grace;
        match self
            .session
            .handle(event, deadline, &mut || m.try_exit().map(|s| s.to_string()))
        {
            Ok(r) => r,
            Err(broken) => {
                let exited = m.try_exit();
                let message = match exited {
                    Some(s) => format!("{BACKEND} exited ({s}): {broken}; VM removed"),
                    None if broken.timeout => format!(
                        "guest did not answer within {:?} (+{:?} grace): {broken}; VM killed",
                        self.event_timeout, self.grace
                    ),
                    None => format!("{broken}; VM killed"),
                };
                // Dropping the machine kills the VMM and removes its files.
                self.machine = None;
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
        self.session.shutdown();
        match self.machine.take() {
            // The agent powers the guest off; Ctrl+Alt+Del and then a kill
            // if it does not.
            Some(m) => m.stop(Duration::from_secs(3)).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Reclaim what crashed nodes left under `run_root`: for every Firecracker
/// run directory (one holding [`PID_FILE`]) not owned by a live [`Machine`]
/// of this process, kill its VMM if it still runs (only if that process's
/// command line names the directory, so a reused pid is never killed) and
/// remove the directory. Returns how many directories were reclaimed.
pub fn reclaim(run_root: &Path) -> Result<usize, FrontierError> {
    let entries = match std::fs::read_dir(run_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(FrontierError::Io {
                what: format!("read {}", run_root.display()),
                source,
            });
        }
    };
    let live = machine::LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut count = 0;
    for entry in entries.take(100_000).flatten() {
        let dir = entry.path();
        if !dir.join(PID_FILE).is_file() || dir.canonicalize().is_ok_and(|c| live.contains(&c)) {
            continue;
        }
        reclaim_dir(&dir)?;
        count += 1;
    }
    Ok(count)
}

/// Reclaim one run directory (see [`reclaim`]).
pub fn reclaim_dir(dir: &Path) -> Result<(), FrontierError> {
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let pid = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|p| *p > 1)
        && !id.is_empty()
        && process_mentions(pid, &id)
    {
        // SAFETY: plain syscalls on a pid we checked is this VM's VMM.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while u32::try_from(pid).is_ok_and(super::process_alive) && Instant::now() < deadline {
            // Reap it if it is our child; harmless otherwise.
            // SAFETY: waitpid with WNOHANG on a specific pid.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FrontierError::Io {
            what: format!("remove {}", dir.display()),
            source,
        }),
    }
}

/// Whether `pid`'s command line contains `needle`.
fn process_mentions(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .any(|arg| arg.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jailer_argv() {
        let j = JailerConfig {
            binary: "/usr/bin/jailer".into(),
            uid: 123,
            gid: 456,
            netns: Some("/var/run/netns/vm0".into()),
            cgroup_version: Some(2),
            parent_cgroup: Some("omega".into()),
            cgroups: vec!["cpu.max=50000 100000".into()],
        };
        let run_dir = Path::new("/run/omega/fc-x-1-0");
        let fc_args = firecracker_args("/api.sock", None, "/firecracker.log", "Info");
        let argv = j.argv(
            Path::new("/opt/fc/firecracker"),
            "fc-x-1-0",
            run_dir,
            &fc_args,
        );
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "/usr/bin/jailer",
                "--id",
                "fc-x-1-0",
                "--exec-file",
                "/opt/fc/firecracker",
                "--uid",
                "123",
                "--gid",
                "456",
                "--chroot-base-dir",
                "/run/omega/fc-x-1-0/jail",
                "--netns",
                "/var/run/netns/vm0",
                "--cgroup-version",
                "2",
                "--parent-cgroup",
                "omega",
                "--cgroup",
                "cpu.max=50000 100000",
                "--",
                "--api-sock",
                "/api.sock",
                "--log-path",
                "/firecracker.log",
                "--level",
                "Info",
            ]
        );
        assert_eq!(
            JailerConfig::chroot_root(run_dir, Path::new("/opt/fc/firecracker"), "fc-x-1-0"),
            Path::new("/run/omega/fc-x-1-0/jail/firecracker/fc-x-1-0/root")
        );
    }

    #[test]
    fn direct_args_name_the_socket_and_id() {
        assert_eq!(
            firecracker_args(
                "/r/api.sock",
                Some("fc-a-1-0"),
                "/r/firecracker.log",
                "Debug"
            ),
            [
                "--api-sock",
                "/r/api.sock",
                "--id",
                "fc-a-1-0",
                "--log-path",
                "/r/firecracker.log",
                "--level",
                "Debug"
            ]
        );
    }

    #[test]
    fn missing_binary_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let fc = Firecracker::new(FirecrackerConfig::new(
            dir.path().join("nope"),
            dir.path().join("run"),
        ));
        assert!(matches!(fc.spawn("x"), Err(FrontierError::Binary { .. })));
        let report = fc.probe(Duration::from_secs(1));
        assert!(!report.usable);
    }

    #[test]
    fn reclaim_skips_foreign_pids_and_removes_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path().join("fc-old-1-0");
        std::fs::create_dir(&vm).unwrap();
        // Our own pid: alive, but its command line does not name the dir.
        std::fs::write(vm.join(PID_FILE), format!("{}\n", std::process::id())).unwrap();
        std::fs::create_dir(dir.path().join("unrelated")).unwrap();
        assert_eq!(reclaim(dir.path()).unwrap(), 1);
        assert!(!vm.exists());
        assert!(dir.path().join("unrelated").exists());
        assert_eq!(reclaim(&dir.path().join("absent")).unwrap(), 0);
    }
}
