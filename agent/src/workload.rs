//! The workload contract: any Linux program, one process kept between
//! events (restarted after it fails), line-delimited JSON on stdin/stdout.
//!
//! For each event the agent writes one line to the program's stdin:
//!
//! ```json
//! {"id":"ev0.0","type":"tensor.shard","key":"","source":"transform","attempt":1,
//!  "payload_b64":"AAAAQA==","payload":"…"}
//! ```
//!
//! (`payload` only when the payload is valid UTF-8.) The program answers
//! with zero or more emit lines, then one result line:
//!
//! ```json
//! {"emit":{"type":"shard.stats","key":"","payload":"bytes=16"}}
//! {"emit":{"type":"shard.stats","payload_b64":"AAAA"}}
//! {"result":"ok"}
//! {"result":"err","code":"bad-input","message":"…"}
//! ```
//!
//! Other stdout lines and every stderr line are logs. Rules, as for a
//! standard brane: an emit of an undeclared type, over `max_payload`, past
//! `max_emits`, or malformed is refused (counted, the event still
//! succeeds); no result within the per-event timeout kills the program
//! (`timeout`); a line longer than [`Workload::max_line`] or more than
//! `max_log_lines` log lines kills it (`output_limit`); exiting before the
//! result is `crashed`. A killed or exited program is started again for the
//! next event. The program runs in its own process group: a kill takes its
//! children too.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::proto::{self, AgentError, GuestMsg, Limits, MAX_LOG_LINE, WireEmit, WireEvent};

/// One stdout line of the workload, as the reader thread sees it.
enum Line {
    Text(String),
    TooLong,
    Eof,
}

struct Running {
    child: Child,
    stdin: SyncSender<Vec<u8>>,
    lines: Receiver<Line>,
    stderr: Receiver<String>,
}

/// A workload: its command, its type rules and limits, and the running
/// process if any.
pub struct Workload {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    emits: Vec<String>,
    limits: Limits,
    running: Option<Running>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("argv", &self.argv)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Workload {
    /// A workload that is started by [`Workload::start`] or the first event.
    pub fn new(
        argv: Vec<String>,
        env: Vec<(String, String)>,
        emits: Vec<String>,
        limits: Limits,
    ) -> Self {
        Self {
            argv,
            env,
            emits,
            limits,
            running: None,
        }
    }

    /// The longest stdout line accepted: room for a `max_payload` payload
    /// as base64 or as escaped text.
    pub fn max_line(&self) -> usize {
        (self.limits.max_payload as usize).saturating_mul(2) + (64 << 10)
    }

    /// Start the program if it is not running.
    pub fn start(&mut self) -> Result<(), AgentError> {
        if self.running.is_some() {
            return Ok(());
        }
        let Some((program, args)) = self.argv.split_first() else {
            return Err(AgentError::Spawn {
                program: String::new(),
                reason: "empty workload command".into(),
            });
        };
        let spawn_err = |reason: String| AgentError::Spawn {
            program: program.clone(),
            reason,
        };
        let mut child = Command::new(program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| spawn_err(e.to_string()))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err("no stdio pipes".into()));
        };
        // stdin: a writer thread, so a program that does not read cannot
        // block the agent.
        let (stdin_tx, stdin_rx) = mpsc::sync_channel::<Vec<u8>>(4);
        std::thread::spawn(move || {
            while let Ok(bytes) = stdin_rx.recv() {
                if stdin
                    .write_all(&bytes)
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    break;
                }
            }
        });
        // stdout: bounded lines, backpressure through the channel bound.
        let (line_tx, lines) = mpsc::sync_channel::<Line>(16);
        let max_line = self.max_line();
        std::thread::spawn(move || read_lines(stdout, max_line, &line_tx));
        // stderr: bounded lines; dropped when nobody keeps up.
        let (err_tx, stderr_rx) = mpsc::sync_channel::<String>(64);
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            loop {
                let mut buf = Vec::new();
                match (&mut r)
                    .take(MAX_LOG_LINE as u64)
                    .read_until(b'\n', &mut buf)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let mut s = String::from_utf8_lossy(&buf).into_owned();
                        s.truncate(s.trim_end().len());
                        match err_tx.try_send(s) {
                            Ok(()) | Err(TrySendError::Full(_)) => {}
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                }
            }
        });
        self.running = Some(Running {
            child,
            stdin: stdin_tx,
            lines,
            stderr: stderr_rx,
        });
        Ok(())
    }

    /// Kill the program and its process group, if running.
    pub fn kill(&mut self) {
        if let Some(mut r) = self.running.take() {
            if let Ok(pid) = i32::try_from(r.child.id()) {
                // SAFETY: kill(2) on our own child's process group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = r.child.kill();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if !matches!(r.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The exit status of a program that closed its stdout, waiting at most
    /// a second; kills it if it is still running.
    fn exit_status(&mut self) -> String {
        let Some(r) = self.running.as_mut() else {
            return "not running".into();
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        let status = loop {
            match r.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => break "closed stdout".into(),
                Err(e) => break e.to_string(),
            }
        };
        self.kill();
        status
    }

    /// Run one event: emits and logs go to `out` as they come; returns the
    /// number of refused emits, or why the event failed.
    pub fn handle(
        &mut self,
        ev: &WireEvent,
        out: &mut dyn FnMut(GuestMsg),
    ) -> Result<u32, AgentError> {
        let payload = proto::unb64(&ev.payload_b64).map_err(|e| AgentError::Protocol {
            reason: format!("event {}: payload is not base64: {e}", ev.id),
        })?;
        if payload.len() > self.limits.max_payload as usize {
            return Err(AgentError::PayloadTooLarge {
                size: payload.len() as u64,
                limit: u64::from(self.limits.max_payload),
            });
        }
        // A program that exited since the last event (one-shot programs
        // do) is started again.
        if let Some(r) = self.running.as_mut() {
            let mut gone = !matches!(r.child.try_wait(), Ok(None));
            for _ in 0..1024 {
                match r.lines.try_recv() {
                    Ok(Line::Text(s)) => log(out, s),
                    Ok(Line::TooLong | Line::Eof) => gone = true,
                    Err(_) => break,
                }
            }
            if gone {
                self.kill();
            }
        }
        self.start()?;
        let mut line = serde_json::json!({
            "id": ev.id, "type": ev.ty, "key": ev.key, "source": ev.source,
            "attempt": ev.attempt, "payload_b64": ev.payload_b64,
        });
        if let (Ok(text), Some(obj)) = (std::str::from_utf8(&payload), line.as_object_mut()) {
            obj.insert("payload".into(), text.into());
        }
        let mut bytes = serde_json::to_vec(&line).map_err(|e| AgentError::Protocol {
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        let timeout = Duration::from_millis(self.limits.event_timeout_ms);
        let deadline = Instant::now() + timeout;
        let Some(r) = self.running.as_mut() else {
            return Err(AgentError::Protocol {
                reason: "workload not running".into(),
            });
        };
        if r.stdin.send(bytes).is_err() {
            let status = self.exit_status();
            return Err(AgentError::Crashed { status });
        }
        let mut emitted = 0u32;
        let mut refused = 0u32;
        let mut logs = 0u32;
        loop {
            let Some(r) = self.running.as_mut() else {
                return Err(AgentError::Protocol {
                    reason: "workload not running".into(),
                });
            };
            while let Ok(s) = r.stderr.try_recv() {
                logs += 1;
                if logs <= self.limits.max_log_lines {
                    log(out, s);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                return Err(AgentError::Timeout {
                    after_ms: self.limits.event_timeout_ms,
                });
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            let text = match r.lines.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(Line::Eof) | Err(RecvTimeoutError::Disconnected) => {
                    let status = self.exit_status();
                    return Err(AgentError::Crashed { status });
                }
                Ok(Line::TooLong) => {
                    let max = self.max_line();
                    self.kill();
                    return Err(AgentError::OutputLimit {
                        what: format!("a stdout line longer than {max} bytes"),
                    });
                }
                Ok(Line::Text(s)) => s,
            };
            match parse_line(&text) {
                Parsed::Emit(emit) => {
                    let size = proto::unb64(&emit.payload_b64).map(|p| p.len());
                    let ok = emitted < self.limits.max_emits
                        && self.emits.contains(&emit.ty)
                        && matches!(size, Ok(n) if n <= self.limits.max_payload as usize);
                    if ok {
                        emitted += 1;
                        out(GuestMsg::Emit(emit));
                    } else {
                        refused = refused.saturating_add(1);
                    }
                }
                Parsed::BadEmit => refused = refused.saturating_add(1),
                Parsed::Ok => return Ok(refused),
                Parsed::Err { code, message } => {
                    return Err(AgentError::Workload { code, message });
                }
                Parsed::Log(s) => {
                    logs += 1;
                    if logs > self.limits.max_log_lines {
                        self.kill();
                        return Err(AgentError::OutputLimit {
                            what: format!(
                                "more than {} log lines in one event",
                                self.limits.max_log_lines
                            ),
                        });
                    }
                    log(out, s);
                }
            }
            // Emits refused past the limit still cost a line each: bound
            // them like logs.
            if refused
                > self
                    .limits
                    .max_emits
                    .saturating_add(self.limits.max_log_lines)
            {
                self.kill();
                return Err(AgentError::OutputLimit {
                    what: format!("more than {refused} refused emits in one event"),
                });
            }
        }
    }
}

fn log(out: &mut dyn FnMut(GuestMsg), mut message: String) {
    proto::cut(&mut message, MAX_LOG_LINE);
    out(GuestMsg::Log { message });
}

/// Read `\n`-terminated lines of at most `max` bytes; a longer line is
/// reported once as [`Line::TooLong`] and the reader stops.
fn read_lines(stdout: impl Read, max: usize, tx: &SyncSender<Line>) {
    let mut r = BufReader::new(stdout);
    loop {
        let mut buf = Vec::new();
        let limit = max as u64 + 1;
        match (&mut r).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Line::Eof);
                return;
            }
            Ok(_) => {
                if buf.last() != Some(&b'\n') && buf.len() > max {
                    let _ = tx.send(Line::TooLong);
                    return;
                }
                let text = String::from_utf8_lossy(&buf).trim_end().to_string();
                if text.is_empty() {
                    continue;
                }
                if tx.send(Line::Text(text)).is_err() {
                    return;
                }
            }
        }
    }
}

enum Parsed {
    Emit(WireEmit),
    BadEmit,
    Ok,
    Err { code: String, message: String },
    Log(String),
}

fn parse_line(text: &str) -> Parsed {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Parsed::Log(text.to_string());
    };
    let Some(obj) = v.as_object() else {
        return Parsed::Log(text.to_string());
    };
    if let Some(e) = obj.get("emit") {
        let str_of = |k: &str| e.get(k).and_then(|x| x.as_str());
        let Some(ty) = str_of("type") else {
            return Parsed::BadEmit;
        };
        let payload_b64 = match (str_of("payload_b64"), str_of("payload")) {
            (Some(b), _) => {
                if proto::unb64(b).is_err() {
                    return Parsed::BadEmit;
                }
                b.to_string()
            }
            (None, Some(t)) => proto::b64(t.as_bytes()),
            (None, None) => String::new(),
        };
        return Parsed::Emit(WireEmit {
            ty: ty.to_string(),
            key: str_of("key").unwrap_or_default().to_string(),
            payload_b64,
        });
    }
    match obj.get("result").and_then(|r| r.as_str()) {
        Some("ok") => Parsed::Ok,
        Some(_) => {
            let field = |k: &str| {
                let mut s = obj
                    .get(k)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string();
                proto::cut(&mut s, MAX_LOG_LINE);
                s
            };
            Parsed::Err {
                code: field("code"),
                message: field("message"),
            }
        }
        None => match obj.get("log").and_then(|l| l.as_str()) {
            Some(l) => Parsed::Log(l.to_string()),
            None => Parsed::Log(text.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sh(script: &str, limits: Limits) -> Workload {
        Workload::new(
            vec!["/bin/sh".into(), "-c".into(), script.into()],
            vec![],
            vec!["out".into()],
            limits,
        )
    }

    fn event(payload: &[u8]) -> WireEvent {
        WireEvent {
            id: "e1".into(),
            ty: "in".into(),
            key: String::new(),
            payload_b64: proto::b64(payload),
            source: "external".into(),
            attempt: 1,
        }
    }

    fn run(w: &mut Workload, payload: &[u8]) -> (Result<u32, AgentError>, Vec<GuestMsg>) {
        let mut msgs = Vec::new();
        let r = w.handle(&event(payload), &mut |m| msgs.push(m));
        (r, msgs)
    }

    #[test]
    fn emits_and_type_rules() {
        let mut w = sh(
            r#"while read -r line; do
                 echo '{"emit":{"type":"out","payload":"a"}}'
                 echo '{"emit":{"type":"nope","payload":"b"}}'
                 echo 'just a log'
                 echo '{"result":"ok"}'
               done"#,
            Limits::default(),
        );
        for _ in 0..2 {
            let (r, msgs) = run(&mut w, b"x");
            assert_eq!(r.unwrap(), 1);
            let emits: Vec<_> = msgs
                .iter()
                .filter_map(|m| match m {
                    GuestMsg::Emit(e) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(emits.len(), 1);
            assert_eq!(proto::unb64(&emits[0].payload_b64).unwrap(), b"a");
        }
    }

    #[test]
    fn silent_workload_times_out_and_restarts() {
        let limits = Limits {
            event_timeout_ms: 300,
            ..Limits::default()
        };
        let mut w = sh("sleep 100", limits);
        let (r, _) = run(&mut w, b"");
        assert_eq!(r, Err(AgentError::Timeout { after_ms: 300 }));
        // Restarted for the next event, and times out again.
        let (r, _) = run(&mut w, b"");
        assert_eq!(r, Err(AgentError::Timeout { after_ms: 300 }));
    }

    #[test]
    fn crash_flood_and_long_line() {
        let (r, _) = run(&mut sh("read -r l; exit 3", Limits::default()), b"");
        assert!(matches!(r, Err(AgentError::Crashed { status }) if status.contains('3')));
        let (r, _) = run(&mut sh("yes", Limits::default()), b"");
        assert!(matches!(r, Err(AgentError::OutputLimit { .. })), "{r:?}");
        let limits = Limits {
            max_payload: 1024,
            ..Limits::default()
        };
        let (r, _) = run(&mut sh("tr -d '\\n' < /dev/zero", limits), b"");
        assert!(matches!(r, Err(AgentError::OutputLimit { .. })), "{r:?}");
    }

    #[test]
    fn workload_error_and_oversized_payload() {
        let mut w = sh(
            r#"read -r l; echo '{"result":"err","code":"bad","message":"no"}'; sleep 5"#,
            Limits {
                max_payload: 4,
                ..Limits::default()
            },
        );
        let (r, _) = run(&mut w, b"ab");
        assert_eq!(
            r,
            Err(AgentError::Workload {
                code: "bad".into(),
                message: "no".into()
            })
        );
        let (r, _) = run(&mut w, b"abcdef");
        assert!(matches!(
            r,
            Err(AgentError::PayloadTooLarge { size: 6, limit: 4 })
        ));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let mut w = Workload::new(
            vec!["/nonexistent".into()],
            vec![],
            vec![],
            Limits::default(),
        );
        assert!(matches!(run(&mut w, b"").0, Err(AgentError::Spawn { .. })));
    }
}
