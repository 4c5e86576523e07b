//! The agent's main loop over one byte channel (see [`crate::proto`] for
//! the sequence).

use std::io::{Read, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::proto::{
    AgentError, FrameError, FrameReader, GuestMsg, HELLO_INTERVAL, HostMsg, MAX_FRAME,
    PROTOCOL_VERSION, write_frame,
};
use crate::workload::Workload;

/// How long the agent says hello before giving up on the host.
pub const HELLO_MAX: Duration = Duration::from_secs(600);

/// Options of [`run`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Test knob: never answer events (the host must time out and kill
    /// the VM). Set by `omega.agent.test=hang` on the kernel command line.
    pub hang_events: bool,
}

/// Why the agent stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stop {
    /// The host asked for a shutdown.
    Shutdown,
    /// The channel closed or broke.
    Channel(FrameError),
    /// The host never said hello.
    NoHello,
    /// The host speaks another protocol version.
    Version(u32),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shutdown requested"),
            Self::Channel(e) => write!(f, "{e}"),
            Self::NoHello => write!(f, "no hello from the host within {HELLO_MAX:?}"),
            Self::Version(v) => {
                write!(f, "host speaks protocol {v}, this agent {PROTOCOL_VERSION}")
            }
        }
    }
}

/// Serve the host on (`reader`, `writer`) until shutdown or the channel
/// closes.
pub fn run(reader: impl Read + Send + 'static, mut writer: impl Write, options: &Options) -> Stop {
    let (tx, rx) = mpsc::sync_channel::<Result<HostMsg, FrameError>>(4);
    std::thread::spawn(move || {
        let mut frames = FrameReader::new(reader, MAX_FRAME);
        loop {
            let msg = frames.read_msg::<HostMsg>();
            let stop = msg.is_err();
            if tx.send(msg).is_err() || stop {
                return;
            }
        }
    });
    let hello = GuestMsg::Hello {
        version: PROTOCOL_VERSION,
        max_frame: MAX_FRAME,
        agent: format!("omega-agent {}", env!("CARGO_PKG_VERSION")),
    };
    let started = Instant::now();
    loop {
        if started.elapsed() > HELLO_MAX {
            return Stop::NoHello;
        }
        if let Err(e) = write_frame(&mut writer, &hello) {
            return Stop::Channel(e);
        }
        match rx.recv_timeout(HELLO_INTERVAL) {
            Ok(Ok(HostMsg::Hello { version, .. })) => {
                if version != PROTOCOL_VERSION {
                    let error = AgentError::Version {
                        host: version,
                        guest: PROTOCOL_VERSION,
                    };
                    let _ = write_frame(&mut writer, &GuestMsg::Error { error });
                    return Stop::Version(version);
                }
                break;
            }
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => return Stop::Channel(e),
            Err(RecvTimeoutError::Disconnected) => return Stop::Channel(FrameError::Closed),
        }
    }
    let mut workload: Option<Workload> = None;
    loop {
        let msg = match rx.recv() {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Stop::Channel(e),
            Err(_) => return Stop::Channel(FrameError::Closed),
        };
        let reply = match msg {
            HostMsg::Hello { .. } => continue,
            HostMsg::Start {
                workload: argv,
                env,
                emits,
                limits,
            } => {
                let mut w = Workload::new(argv, env, emits, limits);
                let reply = match w.start() {
                    Ok(()) => GuestMsg::Ready,
                    Err(error) => GuestMsg::Error { error },
                };
                workload = Some(w);
                reply
            }
            HostMsg::Event(ev) => {
                if options.hang_events {
                    continue;
                }
                let id = ev.id.clone();
                let Some(w) = workload.as_mut() else {
                    let error = AgentError::Protocol {
                        reason: "event before start".into(),
                    };
                    if let Err(e) = write_frame(&mut writer, &GuestMsg::Failed { id, error }) {
                        return Stop::Channel(e);
                    }
                    continue;
                };
                let mut broken = None;
                let result = w.handle(&ev, &mut |m| {
                    if broken.is_none()
                        && let Err(e) = write_frame(&mut writer, &m)
                    {
                        broken = Some(e);
                    }
                });
                if let Some(e) = broken {
                    return Stop::Channel(e);
                }
                match result {
                    Ok(refused) => GuestMsg::Done { id, refused },
                    Err(error) => GuestMsg::Failed { id, error },
                }
            }
            HostMsg::Shutdown => {
                drop(workload);
                return Stop::Shutdown;
            }
        };
        if let Err(e) = write_frame(&mut writer, &reply) {
            return Stop::Channel(e);
        }
    }
}
