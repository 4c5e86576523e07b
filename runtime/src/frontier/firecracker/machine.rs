//! One Firecracker process: its run directory, its API, its serial console,
//! its supervision and cleanup.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{self, Action, ApiRequest, BootPlan, SnapshotType, VmState};
use super::http;
use super::jailer::JailerConfig;
use super::{BACKEND, FirecrackerConfig};
use crate::frontier::FrontierError;

/// The pid file in every run directory (its presence marks a Firecracker
/// run directory for [`super::reclaim`]).
pub const PID_FILE: &str = "firecracker.pid";
/// The API socket's file name.
pub const API_SOCK: &str = "api.sock";
/// The log file's name.
pub const LOG_FILE: &str = "firecracker.log";
/// The metrics file's name.
pub const METRICS_FILE: &str = "metrics.json";
/// The vsock host socket's file name.
pub const VSOCK_SOCK: &str = "vsock.sock";
/// Serial output kept in memory (the tail), bytes.
pub const SERIAL_KEEP: usize = 256 * 1024;
/// Longest unix socket path (`sun_path` less the NUL).
const MAX_SOCK_PATH: usize = 107;

/// Run directories of machines alive in this process (never reclaimed).
pub(super) static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FrontierError {
    let what = what.into();
    move |source| FrontierError::Io { what, source }
}

/// A bounded capture of one output stream of the VMM.
#[derive(Default)]
pub(super) struct Capture {
    state: Mutex<CaptureState>,
    cond: Condvar,
}

#[derive(Default)]
struct CaptureState {
    buf: Vec<u8>,
    dropped: u64,
    eof: bool,
}

impl Capture {
    fn pump(self: Arc<Self>, mut from: impl Read + Send + 'static) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                let n = match from.read(&mut chunk) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    st.eof = true;
                    self.cond.notify_all();
                    return;
                }
                st.buf.extend_from_slice(&chunk[..n]);
                if st.buf.len() > SERIAL_KEEP {
                    let cut = st.buf.len() - SERIAL_KEEP / 2;
                    st.buf.drain(..cut);
                    st.dropped += cut as u64;
                }
                self.cond.notify_all();
            }
        })
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buf
            .clone()
    }

    fn tail(&self, n: usize) -> String {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start = st.buf.len().saturating_sub(n);
        String::from_utf8_lossy(&st.buf[start..]).into_owned()
    }

    /// Wait until `needle` appears, the stream ends, or `timeout` passes.
    fn wait_for(&self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !needle.is_empty() && st.buf.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            let now = Instant::now();
            if st.eof || now >= deadline {
                return false;
            }
            st = match self.cond.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// A unique, filesystem- and jailer-safe id for a VM named `name`.
fn make_id(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let clean = if clean.is_empty() {
        "vm".to_string()
    } else {
        clean
    };
    format!(
        "fc-{clean}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Firecracker's own arguments (paths as the VMM sees them).
pub fn firecracker_args(
    api_sock: &str,
    id: Option<&str>,
    log_path: &str,
    level: &str,
) -> Vec<String> {
    let mut args = vec!["--api-sock".to_string(), api_sock.to_string()];
    if let Some(id) = id {
        args.push("--id".into());
        args.push(id.into());
    }
    args.extend([
        "--log-path".into(),
        log_path.into(),
        "--level".into(),
        level.into(),
    ]);
    args
}

/// A running (or exited) Firecracker process driven over its API.
///
/// Dropping it kills the process and removes its run directory.
pub struct Machine {
    id: String,
    run_dir: PathBuf,
    /// The chroot root when jailed (paths the VMM sees are relative to it).
    jail_root: Option<PathBuf>,
    jail_ids: Option<(u32, u32)>,
    api_sock: PathBuf,
    child: Option<Child>,
    pid: u32,
    exit: Option<ExitStatus>,
    serial: Arc<Capture>,
    stderr: Arc<Capture>,
    pumps: Vec<JoinHandle<()>>,
    sent: Vec<ApiRequest>,
    api_timeout: Duration,
    vsock: Option<PathBuf>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .field("run_dir", &self.run_dir)
            .finish()
    }
}

impl Machine {
    /// Create the run directory, start Firecracker (through the jailer when
    /// configured) and wait until its API socket answers.
    pub fn spawn(config: &FirecrackerConfig, name: &str) -> Result<Machine, FrontierError> {
        check_executable(&config.binary)?;
        if let Some(j) = &config.jailer {
            check_executable(&j.binary)?;
        }
        std::fs::create_dir_all(&config.run_root)
            .map_err(io_err(format!("create {}", config.run_root.display())))?;
        let run_root = config
            .run_root
            .canonicalize()
            .map_err(io_err(format!("resolve {}", config.run_root.display())))?;
        let id = make_id(name);
        let run_dir = run_root.join(&id);
        let jail_root = config
            .jailer
            .as_ref()
            .map(|_| JailerConfig::chroot_root(&run_dir, &config.binary, &id));
        let files_dir = jail_root.clone().unwrap_or_else(|| run_dir.clone());
        for f in [API_SOCK, VSOCK_SOCK] {
            let p = files_dir.join(f);
            if p.as_os_str().len() > MAX_SOCK_PATH {
                return Err(FrontierError::Spec(format!(
                    "socket path {} is longer than {MAX_SOCK_PATH} bytes: use a shorter run directory",
                    p.display()
                )));
            }
        }
        std::fs::create_dir(&run_dir).map_err(io_err(format!("create {}", run_dir.display())))?;
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run_dir.clone());
        let mut m = Machine {
            id: id.clone(),
            run_dir: run_dir.clone(),
            jail_root: jail_root.clone(),
            jail_ids: config.jailer.as_ref().map(|j| (j.uid, j.gid)),
            api_sock: files_dir.join(API_SOCK),
            child: None,
            pid: 0,
            exit: None,
            serial: Arc::default(),
            stderr: Arc::default(),
            pumps: Vec::new(),
            sent: Vec::new(),
            api_timeout: config.api_timeout,
            vsock: None,
        };
        // From here on, `m`'s Drop removes whatever was created.
        std::fs::create_dir_all(&files_dir)
            .map_err(io_err(format!("create {}", files_dir.display())))?;
        let (_, log_vmm) = m.vmm_file(LOG_FILE)?;
        let (_, sock_vmm) = m.vmm_file(API_SOCK)?;
        let argv: Vec<OsString> = match &config.jailer {
            None => {
                let mut a = vec![OsString::from(&config.binary)];
                a.extend(
                    firecracker_args(&sock_vmm, Some(&id), &log_vmm, &config.log_level)
                        .into_iter()
                        .map(OsString::from),
                );
                a
            }
            Some(j) => j.argv(
                &config.binary,
                &id,
                &run_dir,
                &firecracker_args(&sock_vmm, None, &log_vmm, &config.log_level),
            ),
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| FrontierError::Binary {
            backend: BACKEND.into(),
            path: PathBuf::from(&argv[0]),
            reason: e.to_string(),
        })?;
        m.pid = child.id();
        if let Some(out) = child.stdout.take() {
            m.pumps.push(Arc::clone(&m.serial).pump(out));
        }
        if let Some(err) = child.stderr.take() {
            m.pumps.push(Arc::clone(&m.stderr).pump(err));
        }
        m.child = Some(child);
        std::fs::write(run_dir.join(PID_FILE), format!("{}\n", m.pid))
            .map_err(io_err("write pid file"))?;
        m.wait_api(config.start_timeout)?;
        Ok(m)
    }

    /// A file in the VM's directory (the chroot root when jailed): its host
    /// path, and its path as the VMM sees it. Pre-creates nothing.
    fn vmm_file(&self, name: &str) -> Result<(PathBuf, String), FrontierError> {
        match &self.jail_root {
            None => {
                let host = self.run_dir.join(name);
                let s = host
                    .to_str()
                    .ok_or_else(|| {
                        FrontierError::Spec(format!("non UTF-8 path {}", host.display()))
                    })?
                    .to_string();
                if name == LOG_FILE || name == METRICS_FILE {
                    std::fs::File::create(&host)
                        .map_err(io_err(format!("create {}", host.display())))?;
                }
                Ok((host, s))
            }
            Some(root) => {
                let host = root.join(name);
                if name == LOG_FILE || name == METRICS_FILE {
                    std::fs::File::create(&host)
                        .map_err(io_err(format!("create {}", host.display())))?;
                    self.chown(&host)?;
                }
                Ok((host, format!("/{name}")))
            }
        }
    }

    fn chown(&self, path: &Path) -> Result<(), FrontierError> {
        if let Some((uid, gid)) = self.jail_ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// Make a host file available to the VMM and return its path as the
    /// VMM sees it: the canonical host path, or (jailed) a hard link (or a
    /// copy, across file systems) named `name` in the chroot.
    pub fn stage(&self, host: &Path, name: &str) -> Result<String, FrontierError> {
        let canon = host
            .canonicalize()
            .map_err(io_err(format!("resolve {}", host.display())))?;
        if !canon.is_file() {
            return Err(FrontierError::Spec(format!(
                "{} is not a regular file",
                host.display()
            )));
        }
        match &self.jail_root {
            None => canon
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| FrontierError::Spec(format!("non UTF-8 path {}", canon.display()))),
            Some(root) => {
                if !api::valid_id(name) {
                    return Err(FrontierError::Spec(format!(
                        "bad staged file name {name:?}"
                    )));
                }
                let dest = root.join(name);
                if std::fs::hard_link(&canon, &dest).is_err() {
                    std::fs::copy(&canon, &dest)
                        .map_err(io_err(format!("copy {} into the jail", canon.display())))?;
                }
                self.chown(&dest)?;
                Ok(format!("/{name}"))
            }
        }
    }

    fn wait_api(&mut self, timeout: Duration) -> Result<(), FrontierError> {
        let deadline = Instant::now() + timeout;
        loop {
            if UnixStream::connect(&self.api_sock).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.try_exit() {
                return Err(self.exited(status));
            }
            if Instant::now() >= deadline {
                return Err(FrontierError::BootTimeout {
                    backend: BACKEND.into(),
                    after: timeout,
                    serial: format!(
                        "API socket {} never answered; {}",
                        self.api_sock.display(),
                        self.output_tail()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn output_tail(&self) -> String {
        let mut s = self.serial.tail(2048);
        let e = self.stderr.tail(1024);
        if !e.trim().is_empty() {
            s.push_str("\n[stderr] ");
            s.push_str(&e);
        }
        if let Some(log) = self.log_tail(1024) {
            s.push_str("\n[log] ");
            s.push_str(&log);
        }
        s
    }

    fn log_tail(&self, n: usize) -> Option<String> {
        let path = self
            .jail_root
            .as_ref()
            .unwrap_or(&self.run_dir)
            .join(LOG_FILE);
        let bytes = std::fs::read(path).ok()?;
        let start = bytes.len().saturating_sub(n);
        let s = String::from_utf8_lossy(&bytes[start..]).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    fn exited(&self, status: ExitStatus) -> FrontierError {
        FrontierError::Exited {
            backend: BACKEND.into(),
            status: status.to_string(),
            serial: self.output_tail(),
        }
    }

    /// Send one request; a 2xx answer's JSON body (or `null`) is returned.
    /// A refusal becomes [`FrontierError::Refused`] with the VMM's
    /// `fault_message`; a VMM that died becomes [`FrontierError::Exited`].
    pub fn request(&mut self, req: ApiRequest) -> Result<Value, FrontierError> {
        if let Some(status) = self.try_exit() {
            return Err(self.exited(status));
        }
        let what = req.what();
        let result = http::send(&self.api_sock, &req, self.api_timeout);
        self.sent.push(req);
        match result {
            Ok(resp) if (200..300).contains(&resp.status) => {
                Ok(serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
            }
            Ok(resp) => Err(FrontierError::Refused {
                backend: BACKEND.into(),
                what,
                message: format!("{} (HTTP {})", http::fault_message(&resp.body), resp.status),
            }),
            Err(source) => {
                // Give a dying VMM a moment to be reaped so the error says why.
                if let Some(status) = self.wait_exit(Duration::from_millis(50)) {
                    return Err(self.exited(status));
                }
                Err(FrontierError::Io {
                    what: format!("{BACKEND} {what}"),
                    source,
                })
            }
        }
    }

    /// Configure the VM (every request of [`api::configure`]).
    pub fn configure(&mut self, plan: &BootPlan) -> Result<(), FrontierError> {
        for req in api::configure(plan) {
            self.request(req)?;
        }
        if let Some((_, uds)) = &plan.vsock {
            self.vsock = Some(match &self.jail_root {
                Some(root) => root.join(uds.trim_start_matches('/')),
                None => PathBuf::from(uds),
            });
        }
        Ok(())
    }

    /// The paths (as the VMM sees them) for the run directory's vsock
    /// socket and metrics file.
    pub fn vsock_path(&self) -> Result<String, FrontierError> {
        Ok(self.vmm_file(VSOCK_SOCK)?.1)
    }

    /// See [`Machine::vsock_path`].
    pub fn metrics_path(&self) -> Result<String, FrontierError> {
        Ok(self.vmm_file(METRICS_FILE)?.1)
    }

    /// `InstanceStart`. A guest that finishes (and the VMM that exits with
    /// it) before the answer arrives is not an error: the exit is seen by
    /// [`Machine::wait_exit`].
    pub fn start(&mut self) -> Result<(), FrontierError> {
        match self.request(api::action(Action::InstanceStart)) {
            Err(FrontierError::Exited { .. }) if self.exit.is_some_and(|s| s.success()) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// `SendCtrlAltDel`.
    pub fn ctrl_alt_del(&mut self) -> Result<(), FrontierError> {
        self.request(api::action(Action::SendCtrlAltDel))
            .map(|_| ())
    }

    /// `PATCH /vm` Paused.
    pub fn pause(&mut self) -> Result<(), FrontierError> {
        self.request(api::vm_state(VmState::Paused)).map(|_| ())
    }

    /// `PATCH /vm` Resumed.
    pub fn resume(&mut self) -> Result<(), FrontierError> {
        self.request(api::vm_state(VmState::Resumed)).map(|_| ())
    }

    /// The instance state (`Not started`, `Running`, `Paused`).
    pub fn state(&mut self) -> Result<String, FrontierError> {
        let v = self.request(api::describe_instance())?;
        Ok(v.get("state")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Pause, write a full snapshot (state and memory files named
    /// `snapshot` and `memory` in the VM's directory) and return their host
    /// paths. The VM stays paused.
    pub fn snapshot(&mut self) -> Result<(PathBuf, PathBuf), FrontierError> {
        self.pause()?;
        let (state_host, state_vmm) = self.vmm_file("snapshot")?;
        let (mem_host, mem_vmm) = self.vmm_file("memory")?;
        self.request(api::snapshot_create(
            &state_vmm,
            &mem_vmm,
            SnapshotType::Full,
        ))?;
        Ok((state_host, mem_host))
    }

    /// On a fresh machine: load a snapshot (host paths, staged like any
    /// file) and optionally resume it. The vsock socket, if the snapshot
    /// has one, is moved into this machine's directory.
    pub fn restore(
        &mut self,
        state: &Path,
        memory: &Path,
        resume: bool,
    ) -> Result<(), FrontierError> {
        let state = self.stage(state, "snapshot_in")?;
        let memory = self.stage(memory, "memory_in")?;
        let vsock = self.vsock_path()?;
        self.request(api::snapshot_load(&state, &memory, resume, Some(&vsock)))?;
        Ok(())
    }

    /// The serial console so far (the last [`SERIAL_KEEP`] bytes at most).
    pub fn serial(&self) -> Vec<u8> {
        self.serial.snapshot()
    }

    /// Wait until the serial console shows `needle` (false: timeout or the
    /// VMM closed its output).
    pub fn wait_serial(&self, needle: &[u8], timeout: Duration) -> bool {
        self.serial.wait_for(needle, timeout)
    }

    /// The exit status, if the VMM has exited (non-blocking).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    /// Wait up to `timeout` for the VMM to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The process id (of the jailer-exec'd Firecracker when jailed).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The run directory (removed when the machine is dropped).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The VM's id (also the run directory's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every request sent so far, in order.
    pub fn sent_requests(&self) -> &[ApiRequest] {
        &self.sent
    }

    /// Open a host-initiated vsock connection to guest `port`: connect to
    /// the vsock unix socket, write `CONNECT <port>\n`, read `OK <n>\n`.
    /// Retries (the guest may not listen yet) until `timeout`.
    pub fn vsock_connect(
        &mut self,
        port: u32,
        timeout: Duration,
    ) -> Result<UnixStream, FrontierError> {
        let path = self
            .vsock
            .clone()
            .ok_or_else(|| FrontierError::Spec("the VM has no vsock device".into()))?;
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(self.exited(status));
            }
            match vsock_handshake(&path, port, deadline) {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(FrontierError::BootTimeout {
                    backend: BACKEND.into(),
                    after: timeout,
                    serial: format!("vsock port {port}: {last}; {}", self.output_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the VM: ask the guest (`SendCtrlAltDel`) and wait up to `grace`
    /// when it still runs, then kill the VMM; remove the run directory.
    pub fn stop(mut self, grace: Duration) -> Result<Option<ExitStatus>, FrontierError> {
        if self.try_exit().is_none() && !grace.is_zero() && self.ctrl_alt_del().is_ok() {
            self.wait_exit(grace);
        }
        self.kill();
        let status = self.exit;
        self.cleanup()?;
        Ok(status)
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.as_mut()
            && self.exit.is_none()
        {
            let _ = child.kill();
            if let Ok(s) = child.wait() {
                self.exit = Some(s);
            }
        }
        // The output threads end at EOF; never wait on them (a stray
        // holder of the pipe must not block a stop).
        self.pumps.clear();
    }

    fn cleanup(&mut self) -> Result<(), FrontierError> {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.run_dir);
        match std::fs::remove_dir_all(&self.run_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FrontierError::Io {
                what: format!("remove {}", self.run_dir.display()),
                source,
            }),
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
        let _ = self.cleanup();
    }
}

fn vsock_handshake(path: &Path, port: u32, deadline: Instant) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(path)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    s.set_read_timeout(Some(left))?;
    s.set_write_timeout(Some(left))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Read the answer line byte by byte so no guest data is consumed.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        if s.read(&mut b)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "vsock: connection closed (guest not listening?)",
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    if !line.starts_with(b"OK ") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "vsock: unexpected answer {:?}",
                String::from_utf8_lossy(&line)
            ),
        ));
    }
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    Ok(s)
}

fn check_executable(path: &Path) -> Result<(), FrontierError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |reason: String| FrontierError::Binary {
        backend: BACKEND.into(),
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(bad("not an executable file".into()));
    }
    Ok(())
}
