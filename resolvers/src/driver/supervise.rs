//! Supervising a tunnel program: the `cloudflared` and `netbird` drivers run
//! a long-lived process whose output (and, for cloudflared, a local HTTP
//! endpoint) says whether the tunnel is up and at which URL.
//!
//! # The contract
//!
//! [`start`] spawns the program (its own process group, stdin from
//! `/dev/null`, stdout and stderr piped, killed if the supervisor is
//! dropped) and returns a [`Supervised`] once the program reported its
//! public URL ([`Event::Up`]), or a typed [`DriverError`]:
//!
//! - the program is not there (spawn fails with "not found" or "permission
//!   denied"): [`DriverError::Unavailable`] naming the program, at once — a
//!   missing binary is never restarted in a loop;
//! - the program's output or probe named a failure ([`Event::Fail`]:
//!   credentials missing, daemon not running, arguments refused): that
//!   error, after the process is stopped;
//! - the program exited before it came up: [`DriverError::Unavailable`]
//!   with its exit status and its last lines;
//! - nothing of that within [`Supervision::ready_timeout`]:
//!   [`DriverError::Timeout`] naming the last problem it printed.
//!
//! After that the supervisor owns the process until [`Supervised`] is
//! removed or dropped:
//!
//! - every stdout/stderr line (at most [`MAX_LINE`] bytes; longer lines are
//!   cut) goes to the driver's parser and into a ring of the last
//!   [`RING_LINES`] lines, used in `Down` reasons;
//! - the state is published on a [`watch`] channel: `Up { url }` whenever
//!   the program reports a URL (a restarted cloudflared quick tunnel
//!   reports a new one), `Down { reason }` when it reports a problem or
//!   exits;
//! - when the process exits it is restarted after a delay that starts at
//!   [`Supervision::restart_initial`] and doubles on every exit up to
//!   [`Supervision::restart_max`]; a run that lived at least
//!   [`Supervision::restart_reset`] resets the delay. While it waits the
//!   state is `Down { reason }` with the exit status, the problem it
//!   printed (or its last lines), and when it restarts;
//! - removing ([`Supervised::stop`], [`crate::Tunnel::remove`]) sends
//!   SIGTERM to the process group, waits [`Supervision::stop_grace`], then
//!   SIGKILLs the group, and returns once the process is reaped. Dropping
//!   a [`Supervised`] does the same in the background (and if the runtime
//!   is gone, `kill_on_drop` still kills the process).
//!
//! Everything is bounded: line length, the ring, the event queues, the
//! reason text ([`MAX_REASON`] bytes), every wait.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{DriverError, EXPOSE_TIMEOUT, Tunnel, TunnelState};

/// Longest line kept from the program's output, in bytes; the rest of a
/// longer line is dropped (the kept part ends with `…`).
pub const MAX_LINE: usize = 4096;
/// How many of the program's last lines are kept for error messages.
pub const RING_LINES: usize = 32;
/// Longest `Down` reason or error detail, in bytes.
pub const MAX_REASON: usize = 1024;
/// How many of the last lines a reason quotes when the program printed
/// nothing the driver recognised.
const REASON_LINES: usize = 3;
/// Lines read ahead of the parser.
const LINE_QUEUE: usize = 256;
/// Events queued from a probe.
const EVENT_QUEUE: usize = 64;
/// How long the output of an exited program is still read (a helper it
/// left behind may hold the pipes open).
const DRAIN: Duration = Duration::from_millis(300);
/// Extra time [`Supervised::stop`] allows beyond the grace period before it
/// gives up waiting (the process was SIGKILLed by then).
const STOP_SLACK: Duration = Duration::from_secs(2);

/// How a tunnel program is supervised (part of the `cloudflared` and
/// `netbird` driver configs; tests make it fast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    /// How long [`start`] waits for the first `Up`.
    pub ready_timeout: Duration,
    /// How long a stopped program may take after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// The first restart delay.
    pub restart_initial: Duration,
    /// The longest restart delay.
    pub restart_max: Duration,
    /// A run that lived this long resets the delay to `restart_initial`.
    pub restart_reset: Duration,
}

impl Default for Supervision {
    /// 20 s to come up, 5 s to stop, restarts after 0.5 s doubling to 30 s,
    /// reset after a run of 60 s.
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(5),
            restart_initial: Duration::from_millis(500),
            restart_max: Duration::from_secs(30),
            restart_reset: Duration::from_secs(60),
        }
    }
}

impl Supervision {
    /// Checks the values: nothing zero, `restart_initial <= restart_max`,
    /// and `ready_timeout + stop_grace` plus 2 s to reap within
    /// [`EXPOSE_TIMEOUT`] (expose may have to stop a program that did not
    /// come up).
    pub fn validate(&self, driver: &'static str) -> Result<(), DriverError> {
        let bad = |detail: String| Err(DriverError::Config { driver, detail });
        for (name, v) in [
            ("ready_timeout", self.ready_timeout),
            ("stop_grace", self.stop_grace),
            ("restart_initial", self.restart_initial),
            ("restart_max", self.restart_max),
            ("restart_reset", self.restart_reset),
        ] {
            if v.is_zero() {
                return bad(format!(
                    "supervision.{name} is zero; give it a positive duration"
                ));
            }
        }
        if self.restart_initial > self.restart_max {
            return bad(format!(
                "supervision.restart_initial ({:?}) exceeds restart_max ({:?})",
                self.restart_initial, self.restart_max
            ));
        }
        if self
            .ready_timeout
            .saturating_add(self.stop_grace)
            .saturating_add(STOP_SLACK)
            > EXPOSE_TIMEOUT
        {
            return bad(format!(
                "supervision.ready_timeout ({:?}) + stop_grace ({:?}) + {} s to reap exceed the {} s an expose may take; shorten them",
                self.ready_timeout,
                self.stop_grace,
                STOP_SLACK.as_secs(),
                EXPOSE_TIMEOUT.as_secs()
            ));
        }
        Ok(())
    }

    /// The delay before restart number `failures` (0 for the first):
    /// `restart_initial * 2^failures`, at most `restart_max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.restart_initial
            .checked_mul(factor)
            .unwrap_or(self.restart_max)
            .min(self.restart_max)
    }
}

/// What a parser or probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The tunnel is reachable at this URL.
    Up(String),
    /// The program runs but the tunnel is not reachable, and why.
    Down(String),
    /// A problem worth naming if the tunnel does not come up or the
    /// program exits (an edge error line, say); does not change the state.
    Note(String),
    /// A failure the driver recognised (credentials, daemon, arguments).
    /// Before the first `Up` it fails [`start`] (the process is stopped);
    /// afterwards it is a `Down` reason.
    Fail(DriverError),
}

/// Where a probe sends its events.
#[derive(Debug, Clone)]
pub struct Events(mpsc::Sender<Event>);

impl Events {
    /// Sends `event`; `false` once the run it belongs to is over.
    pub async fn send(&self, event: Event) -> bool {
        self.0.send(event).await.is_ok()
    }
}

/// Reads one output line (without the line end) and says what it means.
pub type Parser = Box<dyn FnMut(&str) -> Option<Event> + Send>;
/// A task that runs beside the process (e.g. polling its metrics server)
/// and reports through [`Events`]; it is cancelled when the process exits.
pub type Probe = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One start of the program.
pub struct Launch {
    /// The arguments (after the program).
    pub args: Vec<OsString>,
    /// Reads its output lines.
    pub parser: Parser,
    /// Runs beside it, if the driver has one.
    pub probe: Option<Probe>,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("args", &self.args)
            .field("probe", &self.probe.is_some())
            .finish_non_exhaustive()
    }
}

/// What a driver supervises: how to start it, once per (re)start.
pub trait Program: Send + Sync + 'static {
    /// The arguments, parser and probe for the next start (a driver may
    /// pick a fresh port each time). An error here fails [`start`] when
    /// it is the first start, and is a `Down` reason on a restart.
    fn launch(&self, events: Events) -> Result<Launch, DriverError>;
}

/// What to supervise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The driver (`cloudflared`, `netbird`), for messages.
    pub driver: &'static str,
    /// The program to run (a name looked up on `PATH`, or a path).
    pub program: PathBuf,
    /// What is being set up, for messages: "the quick tunnel".
    pub what: String,
    /// How to get the program, for "not found": "install cloudflared
    /// (URL) or set `program` in the cloudflared driver config".
    pub install: String,
    /// Timing.
    pub supervision: Supervision,
}

/// A supervised tunnel program (see the module docs). Implements
/// [`Tunnel`].
#[derive(Debug)]
pub struct Supervised {
    driver: &'static str,
    grace: Duration,
    state: watch::Receiver<TunnelState>,
    pid: Arc<AtomicU32>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Supervised {
    /// The process id of the current run, if one is running.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Acquire) {
            0 => None,
            p => Some(p),
        }
    }

    /// The state, now and as it changes.
    pub fn state(&self) -> watch::Receiver<TunnelState> {
        self.state.clone()
    }

    /// Stops the program (SIGTERM, SIGKILL after the grace period) and
    /// waits until it is reaped.
    pub async fn stop(&mut self) -> Result<(), DriverError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        let limit = self.grace.saturating_add(STOP_SLACK * 2);
        match tokio::time::timeout(limit, &mut task).await {
            Ok(_) => Ok(()),
            Err(_) => {
                // Dropping the task drops the child: kill_on_drop.
                task.abort();
                Err(DriverError::Timeout {
                    driver: self.driver,
                    what: "stopping the supervised program (it was killed)".into(),
                    secs: limit.as_secs().max(1),
                })
            }
        }
    }
}

#[async_trait]
impl Tunnel for Supervised {
    fn watch(&self) -> watch::Receiver<TunnelState> {
        self.state()
    }

    async fn remove(mut self: Box<Self>) -> Result<(), DriverError> {
        self.stop().await
    }
}

/// Starts supervising (see the module docs): returns once the program
/// reported its URL, or the error that kept it from coming up.
pub async fn start(spec: Spec, program: impl Program) -> Result<Supervised, DriverError> {
    spec.supervision.validate(spec.driver)?;
    let (state_tx, state_rx) = watch::channel(TunnelState::Starting);
    let (stop_tx, stop_rx) = oneshot::channel();
    let (first_tx, first_rx) = oneshot::channel();
    let pid = Arc::new(AtomicU32::new(0));
    let driver = spec.driver;
    let grace = spec.supervision.stop_grace;
    let task = tokio::spawn(
        Supervisor {
            spec,
            program: Box::new(program),
            state: state_tx,
            pid: pid.clone(),
            first: Some(first_tx),
            failures: 0,
            restarts: 0,
        }
        .run(stop_rx),
    );
    let mut supervised = Supervised {
        driver,
        grace,
        state: state_rx,
        pid,
        stop: Some(stop_tx),
        task: Some(task),
    };
    match tokio::time::timeout(EXPOSE_TIMEOUT, first_rx).await {
        Ok(Ok(Ok(()))) => Ok(supervised),
        Ok(Ok(Err(e))) => {
            // The supervisor stopped the process before it reported this.
            let _ = supervised.stop().await;
            Err(e)
        }
        Ok(Err(_)) => {
            let _ = supervised.stop().await;
            Err(DriverError::Protocol {
                driver,
                what: "the supervisor".into(),
                detail: "it ended without reporting (a bug in omega-resolvers)".into(),
            })
        }
        Err(_) => {
            let _ = supervised.stop().await;
            Err(DriverError::Timeout {
                driver,
                what: "bringing the tunnel up".into(),
                secs: EXPOSE_TIMEOUT.as_secs(),
            })
        }
    }
}

/// Why a run ended.
enum End {
    Stop,
    Exited(std::io::Result<ExitStatus>),
    Failed(DriverError),
    Timeout,
}

struct Supervisor {
    spec: Spec,
    program: Box<dyn Program>,
    state: watch::Sender<TunnelState>,
    pid: Arc<AtomicU32>,
    /// Pending until the first `Up` (or the failure that ends [`start`]).
    first: Option<oneshot::Sender<Result<(), DriverError>>>,
    /// Consecutive short runs (for the backoff).
    failures: u32,
    restarts: u64,
}

/// One run's bookkeeping.
struct RunLog {
    ring: VecDeque<String>,
    /// The last problem the parser or probe named.
    problem: Option<String>,
}

impl RunLog {
    fn push(&mut self, line: &str) {
        if self.ring.len() == RING_LINES {
            self.ring.pop_front();
        }
        self.ring.push_back(line.to_owned());
    }

    /// The problem, else the last few lines, for a reason.
    fn summary(&self) -> String {
        if let Some(p) = &self.problem {
            return p.clone();
        }
        let n = self.ring.len().min(REASON_LINES);
        if n == 0 {
            return "it printed nothing".into();
        }
        let lines: Vec<&str> = self
            .ring
            .iter()
            .skip(self.ring.len() - n)
            .map(String::as_str)
            .collect();
        format!("its last output: {}", lines.join(" | "))
    }
}

impl Supervisor {
    fn program_name(&self) -> String {
        self.spec.program.display().to_string()
    }

    fn set(&self, state: TunnelState) {
        self.state.send_if_modified(|s| {
            if *s == state {
                false
            } else {
                *s = state;
                true
            }
        });
    }

    fn down(&self, reason: String) {
        self.set(TunnelState::Down {
            reason: bounded(reason),
        });
    }

    /// Fails [`start`] (when still pending) or records a `Down`.
    fn fail_or_down(&mut self, error: DriverError) -> bool {
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(error));
            true
        } else {
            self.down(error.to_string());
            false
        }
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let deadline = Instant::now() + self.spec.supervision.ready_timeout;
        loop {
            let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
            let launch = match self.program.launch(Events(events_tx)) {
                Ok(l) => l,
                Err(e) => {
                    if self.fail_or_down(e) {
                        return;
                    }
                    if !self.pause(&mut stop, "could not prepare a restart").await {
                        return;
                    }
                    continue;
                }
            };
            let Launch {
                args,
                mut parser,
                probe,
            } = launch;
            let mut child = match self.spawn(&args) {
                Ok(c) => c,
                Err(e) => {
                    if self.fail_or_down(e) {
                        return;
                    }
                    if !self.pause(&mut stop, "could not start it").await {
                        return;
                    }
                    continue;
                }
            };
            let pgid = child.id().unwrap_or(0);
            self.pid.store(pgid, Ordering::Release);
            let started = Instant::now();
            let (lines_tx, mut lines) = mpsc::channel::<String>(LINE_QUEUE);
            if let Some(out) = child.stdout.take() {
                tokio::spawn(read_lines(out, lines_tx.clone()));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(read_lines(err, lines_tx.clone()));
            }
            drop(lines_tx);
            let probe = probe.map(|p| AbortOnDrop(tokio::spawn(p)));
            let mut log = RunLog {
                ring: VecDeque::with_capacity(RING_LINES),
                problem: None,
            };
            let mut lines_open = true;
            let mut events_open = true;
            let end = loop {
                let event = tokio::select! {
                    biased;
                    _ = &mut stop => break End::Stop,
                    line = lines.recv(), if lines_open => match line {
                        Some(line) => {
                            log.push(&line);
                            parser(&line)
                        }
                        None => {
                            lines_open = false;
                            None
                        }
                    },
                    event = events.recv(), if events_open => {
                        events_open &= event.is_some();
                        event
                    }
                    status = child.wait() => break End::Exited(status),
                    _ = tokio::time::sleep_until(deadline), if self.first.is_some() => break End::Timeout,
                };
                if let Some(event) = event
                    && let Some(end) = self.apply(event, &mut log)
                {
                    break end;
                }
            };
            // The probe belongs to this run only.
            drop(probe);
            match end {
                End::Stop => {
                    terminate(&mut child, pgid, self.spec.supervision.stop_grace).await;
                    self.pid.store(0, Ordering::Release);
                    self.down("removed".into());
                    return;
                }
                End::Failed(e) => {
                    terminate(&mut child, pgid, self.spec.supervision.stop_grace).await;
                    self.pid.store(0, Ordering::Release);
                    self.fail_or_down(e);
                    return;
                }
                End::Timeout => {
                    terminate(&mut child, pgid, self.spec.supervision.stop_grace).await;
                    self.pid.store(0, Ordering::Release);
                    let what = bounded(format!(
                        "bringing up {} (last: {})",
                        self.spec.what,
                        log.summary()
                    ));
                    self.fail_or_down(DriverError::Timeout {
                        driver: self.spec.driver,
                        what,
                        secs: self.spec.supervision.ready_timeout.as_secs().max(1),
                    });
                    return;
                }
                End::Exited(status) => {
                    self.pid.store(0, Ordering::Release);
                    // Read what it printed last: its error line often
                    // arrives after the exit is noticed.
                    let mut failure = None;
                    let drain_until = Instant::now() + DRAIN;
                    while lines_open {
                        match tokio::time::timeout_at(drain_until, lines.recv()).await {
                            Ok(Some(line)) => {
                                log.push(&line);
                                if let Some(ev) = parser(&line) {
                                    failure = failure.or(self.absorb(ev, &mut log));
                                }
                            }
                            Ok(None) | Err(_) => lines_open = false,
                        }
                    }
                    while let Ok(ev) = events.try_recv() {
                        failure = failure.or(self.absorb(ev, &mut log));
                    }
                    let status = describe_status(&status);
                    let lived = started.elapsed();
                    if self.first.is_some() {
                        let error = failure.unwrap_or_else(|| DriverError::Unavailable {
                            driver: self.spec.driver,
                            what: format!("{} ({})", self.spec.what, self.program_name()),
                            detail: bounded(format!(
                                "it exited ({status}) after {:.1} s before the tunnel came up; {}",
                                lived.as_secs_f64(),
                                log.summary()
                            )),
                        });
                        self.fail_or_down(error);
                        return;
                    }
                    if lived >= self.spec.supervision.restart_reset {
                        self.failures = 0;
                    }
                    let why = format!(
                        "{} exited ({status}) after {:.1} s: {}",
                        self.program_name(),
                        lived.as_secs_f64(),
                        log.summary()
                    );
                    if !self.pause(&mut stop, &why).await {
                        return;
                    }
                }
            }
        }
    }

    /// Applies an event during a run; `Some` ends the run.
    fn apply(&mut self, event: Event, log: &mut RunLog) -> Option<End> {
        match event {
            Event::Up(url) => {
                log.problem = None;
                if let Some(first) = self.first.take() {
                    let _ = first.send(Ok(()));
                }
                self.set(TunnelState::Up { url });
                None
            }
            Event::Down(reason) => {
                if self.first.is_none() {
                    self.down(reason.clone());
                }
                log.problem = Some(bounded(reason));
                None
            }
            Event::Note(problem) => {
                log.problem = Some(bounded(problem));
                None
            }
            Event::Fail(e) => {
                if self.first.is_some() {
                    Some(End::Failed(e))
                } else {
                    let reason = e.to_string();
                    self.down(reason.clone());
                    log.problem = Some(bounded(reason));
                    None
                }
            }
        }
    }

    /// Records an event seen after the program exited; returns a failure.
    fn absorb(&mut self, event: Event, log: &mut RunLog) -> Option<DriverError> {
        match event {
            Event::Fail(e) => {
                log.problem = Some(bounded(e.to_string()));
                Some(e)
            }
            Event::Down(p) | Event::Note(p) => {
                log.problem = Some(bounded(p));
                None
            }
            // A URL from a program that already exited is not reachable.
            Event::Up(_) => None,
        }
    }

    /// Waits out the restart delay with `Down { why; restarting in … }`;
    /// `false` when stopped meanwhile.
    async fn pause(&mut self, stop: &mut oneshot::Receiver<()>, why: &str) -> bool {
        let delay = self.spec.supervision.backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.restarts = self.restarts.saturating_add(1);
        self.down(format!(
            "{why}; restarting in {:.1} s (restart {})",
            delay.as_secs_f64(),
            self.restarts
        ));
        tokio::select! {
            biased;
            _ = stop => {
                self.down("removed".into());
                false
            }
            _ = tokio::time::sleep(delay) => true,
        }
    }

    fn spawn(&self, args: &[OsString]) -> Result<Child, DriverError> {
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        cmd.spawn().map_err(|e| {
            let name = self.program_name();
            let detail = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("`{name}` was not found ({e}); {}", self.spec.install)
                }
                std::io::ErrorKind::PermissionDenied => {
                    format!("`{name}` cannot be executed ({e}); check its permissions")
                }
                _ => format!("`{name}` could not be started: {e}"),
            };
            DriverError::Unavailable {
                driver: self.spec.driver,
                what: format!("the program `{name}`"),
                detail,
            }
        })
    }
}

/// Aborts a probe when its run ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGTERM to the group, SIGKILL after `grace`, then reap.
async fn terminate(child: &mut Child, pgid: u32, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if !sys::signal_group(pgid, sys::SIGTERM) {
        let _ = child.start_kill();
    }
    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
        return;
    }
    // Not reaped yet, so the group id cannot have been reused.
    if !sys::signal_group(pgid, sys::SIGKILL) {
        let _ = child.start_kill();
    }
    let _ = tokio::time::timeout(STOP_SLACK, child.wait()).await;
}

fn describe_status(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        Err(e) => format!("status unknown: {e}"),
    }
}

/// Cuts `s` to [`MAX_REASON`] bytes (on a character boundary).
pub fn bounded(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let cut = s.floor_char_boundary(MAX_REASON - '…'.len_utf8());
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Reads `r` line by line into `tx`, each line at most [`MAX_LINE`] bytes
/// (the rest of a longer line is skipped), escape sequences removed.
async fn read_lines<R: AsyncRead + Unpin>(r: R, tx: mpsc::Sender<String>) {
    let mut r = BufReader::with_capacity(8 * 1024, r);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    while let Ok(buf) = r.fill_buf().await {
        if buf.is_empty() {
            if (!line.is_empty() || cut) && tx.send(finish(&line, cut)).await.is_err() {
                return;
            }
            break;
        }
        let (chunk, newline) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i)),
            None => (buf, None),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        match newline {
            Some(i) => {
                r.consume(i + 1);
                if tx.send(finish(&line, cut)).await.is_err() {
                    return;
                }
                line.clear();
                cut = false;
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

fn finish(line: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out = strip_escapes(text.trim_end_matches('\r'));
    if cut {
        out.push('…');
    }
    out
}

/// Removes ANSI escape sequences (`ESC [ … letter`) and other control
/// characters but tab.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        out.push(c);
    }
    out
}

mod sys {
    //! Signalling a process group: std has no SIGTERM, and the crate does
    //! not depend on `libc`; `kill(2)` is declared here (POSIX, the same
    //! signature on every Unix Omega runs on).

    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }

    /// SIGTERM (15 on Linux, macOS and the BSDs).
    pub(super) const SIGTERM: i32 = 15;
    /// SIGKILL (9 everywhere).
    pub(super) const SIGKILL: i32 = 9;

    /// Sends `sig` to process group `pgid`; `false` if it could not be
    /// sent (or `pgid` is not a real group: never 0 or 1, which would
    /// mean our own group or every process).
    pub(super) fn signal_group(pgid: u32, sig: i32) -> bool {
        let Ok(pgid) = i32::try_from(pgid) else {
            return false;
        };
        if pgid <= 1 {
            return false;
        }
        // SAFETY: kill(2) takes two integers and has no memory-safety
        // preconditions; a negative pid addresses the process group.
        unsafe { kill(-pgid, sig) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Supervision {
        Supervision {
            ready_timeout: Duration::from_secs(3),
            stop_grace: Duration::from_millis(500),
            restart_initial: Duration::from_millis(50),
            restart_max: Duration::from_millis(400),
            restart_reset: Duration::from_secs(60),
        }
    }

    fn spec(program: &str, supervision: Supervision) -> Spec {
        Spec {
            driver: "test",
            program: program.into(),
            what: "the test tunnel".into(),
            install: "install it".into(),
            supervision,
        }
    }

    /// `sh -c SCRIPT`; a line `URL x` means Up(x), `FAIL x` a failure,
    /// `NOTE x` a note.
    struct Sh(String);

    impl Program for Sh {
        fn launch(&self, _events: Events) -> Result<Launch, DriverError> {
            Ok(Launch {
                args: vec!["-c".into(), self.0.clone().into()],
                parser: Box::new(|line| {
                    if let Some(url) = line.strip_prefix("URL ") {
                        Some(Event::Up(url.into()))
                    } else if let Some(f) = line.strip_prefix("FAIL ") {
                        Some(Event::Fail(DriverError::Unauthorized {
                            driver: "test",
                            detail: f.into(),
                        }))
                    } else {
                        line.strip_prefix("NOTE ").map(|n| Event::Note(n.into()))
                    }
                }),
                probe: None,
            })
        }
    }

    fn alive(pid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    }

    async fn wait_for(
        rx: &mut watch::Receiver<TunnelState>,
        what: impl Fn(&TunnelState) -> bool,
    ) -> TunnelState {
        let state = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| what(s)))
            .await
            .expect("state in time")
            .expect("supervisor alive");
        state.clone()
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let s = Supervision::default();
        let d: Vec<u128> = (0..9).map(|n| s.backoff(n).as_millis()).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn validate_names_the_field() {
        let s = Supervision {
            stop_grace: Duration::ZERO,
            ..Supervision::default()
        };
        let e = s.validate("test").unwrap_err().to_string();
        assert!(e.contains("supervision.stop_grace"), "{e}");
        let s = Supervision {
            ready_timeout: Duration::from_secs(24),
            ..Supervision::default()
        };
        let e = s.validate("test").unwrap_err().to_string();
        assert!(e.contains("ready_timeout"), "{e}");
        assert!(Supervision::default().validate("test").is_ok());
    }

    #[test]
    fn bounded_and_escapes() {
        let s = bounded("é".repeat(MAX_REASON));
        assert!(s.len() <= MAX_REASON);
        assert!(s.ends_with('…'));
        assert_eq!(
            strip_escapes("\u{1b}[90m2024\u{1b}[0m \u{1b}[32mINF\u{1b}[0m hi\u{7}"),
            "2024 INF hi"
        );
    }

    #[tokio::test]
    async fn missing_program_is_unavailable_at_once() {
        let t0 = std::time::Instant::now();
        let e = start(spec("/nonexistent/omega-test-prog", fast()), Sh("".into()))
            .await
            .unwrap_err();
        match &e {
            DriverError::Unavailable { what, detail, .. } => {
                assert!(what.contains("/nonexistent/omega-test-prog"), "{e}");
                assert!(detail.contains("not found"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn up_then_stop_kills_the_group() {
        // The shell ignores SIGTERM and so does its child: only the
        // SIGKILL after the grace period ends them.
        let mut s = start(
            spec("sh", fast()),
            Sh("trap '' TERM; echo URL https://a.example; sleep 30 & wait; sleep 30".into()),
        )
        .await
        .expect("up");
        assert_eq!(
            *s.state().borrow(),
            TunnelState::Up {
                url: "https://a.example".into()
            }
        );
        let pid = s.pid().expect("running");
        assert!(alive(pid));
        let t0 = std::time::Instant::now();
        s.stop().await.expect("stopped");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(!alive(pid));
        assert_eq!(s.pid(), None);
        assert_eq!(
            *s.state().borrow(),
            TunnelState::Down {
                reason: "removed".into()
            }
        );
    }

    #[tokio::test]
    async fn sigterm_stops_a_well_behaved_program_quickly() {
        let mut s = start(
            spec("sh", fast()),
            Sh("echo URL https://a.example; exec sleep 30".into()),
        )
        .await
        .expect("up");
        let pid = s.pid().expect("running");
        let t0 = std::time::Instant::now();
        s.stop().await.expect("stopped");
        assert!(t0.elapsed() < Duration::from_millis(400));
        assert!(!alive(pid));
    }

    #[tokio::test]
    async fn failure_line_fails_start_and_stops_the_process() {
        let e = start(
            spec("sh", fast()),
            Sh("echo FAIL bad secret; exec sleep 30".into()),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e,
            DriverError::Unauthorized {
                driver: "test",
                detail: "bad secret".into()
            }
        );
    }

    #[tokio::test]
    async fn failure_printed_just_before_exit_is_reported() {
        let e = start(spec("sh", fast()), Sh("echo FAIL no daemon; exit 1".into()))
            .await
            .unwrap_err();
        assert!(matches!(e, DriverError::Unauthorized { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn early_exit_names_status_and_last_lines() {
        let e = start(
            spec("sh", fast()),
            Sh("echo one; echo two >&2; exit 7".into()),
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, DriverError::Unavailable { .. }), "{text}");
        assert!(text.contains("exit status 7"), "{text}");
        assert!(text.contains("one") && text.contains("two"), "{text}");
    }

    #[tokio::test]
    async fn never_up_times_out_with_the_last_problem() {
        let mut sup = fast();
        sup.ready_timeout = Duration::from_millis(400);
        let t0 = std::time::Instant::now();
        let e = start(
            spec("sh", sup),
            Sh("echo NOTE edge unreachable; exec sleep 30".into()),
        )
        .await
        .unwrap_err();
        let took = t0.elapsed();
        match &e {
            DriverError::Timeout { what, .. } => assert!(what.contains("edge unreachable"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn exits_are_restarted_with_doubling_delays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("starts");
        let script = format!(
            "date +%s%N >> {}; echo URL https://a.example; echo bye; exit 3",
            log.display()
        );
        let mut sup = fast();
        sup.restart_initial = Duration::from_millis(100);
        sup.restart_max = Duration::from_millis(400);
        let s = start(spec("sh", sup), Sh(script)).await.expect("up");
        let mut rx = s.state();
        let down = wait_for(&mut rx, |s| matches!(s, TunnelState::Down { .. })).await;
        let TunnelState::Down { reason } = down else {
            unreachable!()
        };
        assert!(reason.contains("exit status 3"), "{reason}");
        assert!(reason.contains("bye"), "{reason}");
        assert!(
            reason.contains("restarting in 0.1 s (restart 1)"),
            "{reason}"
        );
        // Delays 100, 200, 400, 400 ms: five starts within 1.1 s and
        // whatever starting a shell costs.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        drop(s);
        let starts: Vec<u128> = std::fs::read_to_string(&log)
            .expect("log")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert!(starts.len() >= 5, "{starts:?}");
        let gaps: Vec<u128> = starts
            .windows(2)
            .map(|w| (w[1] - w[0]) / 1_000_000)
            .collect();
        // A delay is a minimum; the cap keeps the fourth at 400 ms, not 800.
        assert!(gaps[0] >= 100, "{gaps:?}");
        assert!(gaps[1] >= 200, "{gaps:?}");
        assert!(gaps[2] >= 400, "{gaps:?}");
        assert!(gaps[3] >= 400 && gaps[3] < 750, "{gaps:?}");
    }

    #[tokio::test]
    async fn lines_are_bounded_and_cleaned() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.extend_from_slice(b"\n\x1b[32mINF\x1b[0m ok\r\nlast");
        let (tx, mut rx) = mpsc::channel(8);
        read_lines(&input[..], tx).await;
        let long = rx.recv().await.expect("line");
        assert_eq!(long.len(), MAX_LINE + '…'.len_utf8());
        assert_eq!(rx.recv().await.as_deref(), Some("INF ok"));
        assert_eq!(rx.recv().await.as_deref(), Some("last"));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn long_lines_are_cut() {
        let s = start(
            spec("sh", fast()),
            Sh(format!(
                "head -c {} /dev/zero | tr '\\0' x; echo; echo URL https://b.example; exec sleep 30",
                MAX_LINE * 3
            )),
        )
        .await
        .expect("up");
        assert_eq!(s.state().borrow().url(), Some("https://b.example"));
    }

    #[tokio::test]
    async fn dropping_stops_the_process() {
        let s = start(
            spec("sh", fast()),
            Sh("echo URL https://a.example; exec sleep 30".into()),
        )
        .await
        .expect("up");
        let pid = s.pid().expect("running");
        drop(s);
        for _ in 0..50 {
            if !alive(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{pid} still alive");
    }
}
