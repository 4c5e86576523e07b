//! The host side of the guest-agent protocol ([`omega_agent::proto`]), over
//! any byte stream (a QEMU serial socket, a Firecracker vsock). Everything
//! the guest sends is hostile input: frames are size-limited, emits are
//! checked again against the edge's types and the limits, logs are cut and
//! counted, and every wait has a deadline.

use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use omega_agent::proto::{
    self, AgentError, FrameError, FrameReader, GuestMsg, HostMsg, Limits, MAX_FRAME,
    PROTOCOL_VERSION, WireEvent,
};

use super::{FrontierError, VmSpec};
use crate::error::{EventError, TrapKind};
use crate::event::{Emitted, Event, LogLevel, LogSink, Outcome};

/// How often a wait checks whether the VMM is still alive.
const POLL: Duration = Duration::from_millis(50);

/// The session cannot continue: the VM must be killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Whether a deadline passed (rather than a protocol violation or a
    /// closed channel).
    pub timeout: bool,
    /// What happened.
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl Broken {
    /// The error of a boot whose agent session broke while the VMM still
    /// runs: a [`FrontierError::BootTimeout`] when the deadline passed, a
    /// protocol error otherwise; both carry the tail of the serial console.
    pub(crate) fn into_boot_error(
        self,
        backend: &str,
        spec: &VmSpec,
        serial: String,
    ) -> FrontierError {
        if self.timeout {
            return FrontierError::BootTimeout {
                backend: backend.into(),
                after: spec.boot_timeout,
                serial,
            };
        }
        FrontierError::Protocol(format!(
            "{}: {}; last serial output: {serial}",
            spec.name, self.reason
        ))
    }
}

/// The agent's per-event limits: the backend's node-wide bounds and the
/// spec's per-event timeout.
pub(crate) fn limits_for(
    spec: &VmSpec,
    max_emits: u32,
    max_payload: u32,
    max_log_lines: u32,
) -> Limits {
    Limits {
        max_emits,
        max_payload,
        event_timeout_ms: u64::try_from(spec.event_timeout.as_millis()).unwrap_or(u64::MAX),
        max_log_lines,
    }
}

/// A connected, greeted guest agent.
pub struct AgentSession {
    name: String,
    writer: Box<dyn Write + Send>,
    rx: Receiver<Result<GuestMsg, FrameError>>,
    emits: Vec<String>,
    limits: Limits,
    log: LogSink,
    agent: String,
}

impl std::fmt::Debug for AgentSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSession")
            .field("name", &self.name)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

/// Checks, during a wait, whether the VMM died: `Some(why)` if it did.
pub type AliveCheck<'a> = &'a mut dyn FnMut() -> Option<String>;

fn recv(
    rx: &Receiver<Result<GuestMsg, FrameError>>,
    deadline: Instant,
    dead: AliveCheck<'_>,
    what: &str,
) -> Result<GuestMsg, Broken> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(Broken {
                timeout: true,
                reason: format!("no answer from the guest agent while waiting for {what}"),
            });
        }
        match rx.recv_timeout((deadline - now).min(POLL)) {
            Ok(Ok(m)) => return Ok(m),
            Ok(Err(e)) => {
                let why = dead().map(|d| format!(" ({d})")).unwrap_or_default();
                return Err(Broken {
                    timeout: false,
                    reason: format!("guest agent channel while waiting for {what}: {e}{why}"),
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Broken {
                    timeout: false,
                    reason: format!("guest agent channel closed while waiting for {what}"),
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(why) = dead() {
                    return Err(Broken {
                        timeout: false,
                        reason: format!("VMM died while waiting for {what}: {why}"),
                    });
                }
            }
        }
    }
}

impl AgentSession {
    /// Wait for the agent's hello on (`reader`, `writer`) until `deadline`,
    /// answer it, start the workload, and wait for it to be ready.
    #[allow(clippy::too_many_arguments)]
    pub fn establish(
        name: &str,
        reader: impl Read + Send + 'static,
        mut writer: impl Write + Send + 'static,
        workload: Vec<String>,
        emits: Vec<String>,
        limits: Limits,
        log: LogSink,
        deadline: Instant,
        dead: AliveCheck<'_>,
    ) -> Result<Self, Broken> {
        let (tx, rx) = mpsc::sync_channel(16);
        std::thread::Builder::new()
            .name(format!("agent-{name}"))
            .spawn(move || {
                let mut frames = FrameReader::new(reader, MAX_FRAME);
                loop {
                    let msg = frames.read_msg::<GuestMsg>();
                    let stop = msg.is_err();
                    if tx.send(msg).is_err() || stop {
                        return;
                    }
                }
            })
            .map_err(|e| Broken {
                timeout: false,
                reason: format!("cannot start the agent reader thread: {e}"),
            })?;
        let agent = match recv(&rx, deadline, dead, "the agent's hello")? {
            GuestMsg::Hello { version, agent, .. } => {
                if version != PROTOCOL_VERSION {
                    return Err(Broken {
                        timeout: false,
                        reason: AgentError::Version {
                            host: PROTOCOL_VERSION,
                            guest: version,
                        }
                        .to_string(),
                    });
                }
                agent
            }
            other => {
                return Err(Broken {
                    timeout: false,
                    reason: format!("expected the agent's hello, got {}", kind(&other)),
                });
            }
        };
        let send = |w: &mut dyn Write, m: &HostMsg| {
            proto::write_frame(w, m).map_err(|e| Broken {
                timeout: false,
                reason: format!("writing to the guest agent: {e}"),
            })
        };
        send(
            &mut writer,
            &HostMsg::Hello {
                version: PROTOCOL_VERSION,
                max_frame: MAX_FRAME,
            },
        )?;
        send(
            &mut writer,
            &HostMsg::Start {
                workload,
                env: vec![("OMEGA_BRANE".into(), name.to_string())],
                emits: emits.clone(),
                limits: limits.clone(),
            },
        )?;
        loop {
            match recv(&rx, deadline, dead, "the workload to start")? {
                GuestMsg::Hello { .. } | GuestMsg::Log { .. } => {}
                GuestMsg::Ready => break,
                GuestMsg::Error { error } => {
                    return Err(Broken {
                        timeout: false,
                        reason: error.to_string(),
                    });
                }
                other => {
                    return Err(Broken {
                        timeout: false,
                        reason: format!("expected ready, got {}", kind(&other)),
                    });
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            writer: Box::new(writer),
            rx,
            emits,
            limits,
            log,
            agent,
        })
    }

    /// The agent's name and version.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Run one event. `Ok(Err(_))`: the event failed, the session goes on;
    /// `Err(Broken)`: the VM must be killed.
    pub fn handle(
        &mut self,
        event: &Event,
        deadline: Instant,
        dead: AliveCheck<'_>,
    ) -> Result<Result<Outcome, EventError>, Broken> {
        let limit = self.limits.max_payload as usize;
        if event.payload.len() > limit {
            return Ok(Err(EventError::PayloadTooLarge {
                size: event.payload.len(),
                limit,
            }));
        }
        let msg = HostMsg::Event(WireEvent {
            id: event.id.clone(),
            ty: event.ty.clone(),
            key: event.key.clone(),
            payload_b64: proto::b64(&event.payload),
            source: event.source.clone(),
            attempt: event.attempt,
        });
        proto::write_frame(&mut self.writer, &msg).map_err(|e| Broken {
            timeout: false,
            reason: format!("sending event {} to the guest agent: {e}", event.id),
        })?;
        let mut outcome = Outcome::default();
        let mut logs = 0u32;
        let mut frames = 0u64;
        // What an honest agent sends at most for one event.
        let max_frames =
            u64::from(self.limits.max_emits) + u64::from(self.limits.max_log_lines) * 2 + 16;
        let what = format!("the result of event {}", event.id);
        loop {
            let msg = recv(&self.rx, deadline, dead, &what)?;
            frames += 1;
            if frames > max_frames {
                return Err(Broken {
                    timeout: false,
                    reason: format!(
                        "guest agent sent more than {max_frames} frames for event {}",
                        event.id
                    ),
                });
            }
            match msg {
                GuestMsg::Emit(e) => {
                    let payload = proto::unb64(&e.payload_b64);
                    match payload {
                        Ok(payload)
                            if outcome.emitted.len() < self.limits.max_emits as usize
                                && payload.len() <= limit
                                && self.emits.contains(&e.ty) =>
                        {
                            outcome.emitted.push(Emitted {
                                ty: e.ty,
                                key: e.key,
                                payload,
                            });
                        }
                        _ => outcome.refused = outcome.refused.saturating_add(1),
                    }
                }
                GuestMsg::Log { mut message } => {
                    logs += 1;
                    if logs <= self.limits.max_log_lines * 2 {
                        proto::cut(&mut message, proto::MAX_LOG_LINE);
                        (self.log)(&self.name, LogLevel::Info, &message);
                    }
                }
                GuestMsg::Done { id, refused } if id == event.id => {
                    outcome.refused = outcome.refused.saturating_add(refused);
                    return Ok(Ok(outcome));
                }
                GuestMsg::Failed { id, error } if id == event.id => {
                    return Ok(Err(event_error(error)));
                }
                GuestMsg::Hello { .. } | GuestMsg::Ready => {}
                other => {
                    return Err(Broken {
                        timeout: false,
                        reason: format!(
                            "unexpected {} from the guest agent during event {}",
                            kind(&other),
                            event.id
                        ),
                    });
                }
            }
        }
    }

    /// Ask the agent to stop the workload and power off (best effort).
    pub fn shutdown(&mut self) {
        let _ = proto::write_frame(&mut self.writer, &HostMsg::Shutdown);
    }
}

fn kind(m: &GuestMsg) -> &'static str {
    match m {
        GuestMsg::Hello { .. } => "hello",
        GuestMsg::Ready => "ready",
        GuestMsg::Emit(_) => "emit",
        GuestMsg::Log { .. } => "log",
        GuestMsg::Done { .. } => "done",
        GuestMsg::Failed { .. } => "failed",
        GuestMsg::Error { .. } => "error",
        _ => "unknown message",
    }
}

/// The [`EventError`] of an agent-side failure.
pub fn event_error(error: AgentError) -> EventError {
    match error {
        AgentError::Workload { code, message } => EventError::Brane { code, message },
        AgentError::Timeout { .. } => EventError::Trap {
            kind: TrapKind::Timeout,
            message: error.to_string(),
        },
        AgentError::PayloadTooLarge { size, limit } => EventError::PayloadTooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        },
        AgentError::Spawn { .. } => EventError::Instantiate(error.to_string()),
        other => EventError::Trap {
            kind: TrapKind::Other,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A fake guest on the other end of a socket pair.
    fn fake_guest(
        script: impl FnOnce(&mut FrameReader<UnixStream>, &mut UnixStream) + Send + 'static,
    ) -> UnixStream {
        let (host, guest) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut w = guest.try_clone().unwrap();
            let mut r = FrameReader::new(guest, MAX_FRAME);
            proto::write_frame(
                &mut w,
                &GuestMsg::Hello {
                    version: PROTOCOL_VERSION,
                    max_frame: MAX_FRAME,
                    agent: "fake".into(),
                },
            )
            .unwrap();
            let _: HostMsg = r.read_msg().unwrap();
            let _: HostMsg = r.read_msg().unwrap();
            proto::write_frame(&mut w, &GuestMsg::Ready).unwrap();
            script(&mut r, &mut w);
        });
        host
    }

    fn session(host: UnixStream) -> AgentSession {
        AgentSession::establish(
            "t",
            host.try_clone().unwrap(),
            host,
            vec!["/w".into()],
            vec!["out".into()],
            Limits {
                max_emits: 2,
                max_payload: 8,
                ..Limits::default()
            },
            crate::event::discard_logs(),
            Instant::now() + Duration::from_secs(5),
            &mut || None,
        )
        .unwrap()
    }

    fn emit(ty: &str, payload: &[u8]) -> GuestMsg {
        GuestMsg::Emit(proto::WireEmit {
            ty: ty.into(),
            key: String::new(),
            payload_b64: proto::b64(payload),
        })
    }

    #[test]
    fn host_rechecks_what_a_hostile_agent_emits() {
        let host = fake_guest(|r, w| {
            let _: HostMsg = r.read_msg().unwrap();
            for m in [
                emit("out", b"ok"),
                emit("undeclared", b"x"),
                emit("out", b"far too large"),
                emit("out", b"2"),
                emit("out", b"3"),
                GuestMsg::Done {
                    id: "e".into(),
                    refused: 1,
                },
            ] {
                proto::write_frame(w, &m).unwrap();
            }
        });
        let mut s = session(host);
        let out = s
            .handle(
                &Event::external("e", "in", vec![]),
                Instant::now() + Duration::from_secs(5),
                &mut || None,
            )
            .unwrap()
            .unwrap();
        assert_eq!(out.emitted.len(), 2);
        assert_eq!(out.refused, 4);
    }

    #[test]
    fn silent_agent_breaks_the_session_at_the_deadline() {
        let host = fake_guest(|r, _| {
            let _: HostMsg = r.read_msg().unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        let mut s = session(host);
        let err = s
            .handle(
                &Event::external("e", "in", vec![]),
                Instant::now() + Duration::from_millis(200),
                &mut || None,
            )
            .unwrap_err();
        assert!(err.timeout);
    }

    #[test]
    fn flooding_agent_breaks_the_session() {
        let host = fake_guest(|r, w| {
            let _: HostMsg = r.read_msg().unwrap();
            for _ in 0..10_000 {
                if proto::write_frame(
                    w,
                    &GuestMsg::Log {
                        message: "x".into(),
                    },
                )
                .is_err()
                {
                    return;
                }
            }
        });
        let mut s = session(host);
        let err = s
            .handle(
                &Event::external("e", "in", vec![]),
                Instant::now() + Duration::from_secs(5),
                &mut || None,
            )
            .unwrap_err();
        assert!(!err.timeout && err.reason.contains("frames"), "{err}");
    }
}
