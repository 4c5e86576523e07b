//! The host↔guest protocol.
//!
//! Every message is one frame: the magic `OM`, a big-endian `u32` body
//! length, then the body, one JSON document ([`HostMsg`] host→guest,
//! [`GuestMsg`] guest→host). A frame larger than [`MAX_FRAME`] is a
//! protocol error: the reader stops without allocating it.
//!
//! Sequence:
//!
//! 1. The guest sends [`GuestMsg::Hello`] (repeated every
//!    [`HELLO_INTERVAL`] until answered: the host may connect late);
//!    bytes before the first magic are skipped (bounded by
//!    [`MAX_SKIP`]).
//! 2. The host answers [`HostMsg::Hello`]; either side refuses a different
//!    [`PROTOCOL_VERSION`] with [`AgentError::Version`].
//! 3. The host sends [`HostMsg::Start`] (workload argv, declared emit types,
//!    limits); the guest answers [`GuestMsg::Ready`] or
//!    [`GuestMsg::Error`].
//! 4. For each [`HostMsg::Event`]: zero or more [`GuestMsg::Emit`] (and
//!    [`GuestMsg::Log`]), then exactly one [`GuestMsg::Done`] or
//!    [`GuestMsg::Failed`] with the event's id.
//! 5. [`HostMsg::Shutdown`] stops the workload and powers the guest off.

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The protocol version both sides must speak.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame body, bytes (a 1 MiB payload is ~1.4 MiB in base64).
pub const MAX_FRAME: u32 = 4 << 20;

/// Bytes of garbage skipped while looking for the first magic before the
/// reader gives up.
pub const MAX_SKIP: usize = 1 << 20;

/// How often the guest repeats its hello until the host answers.
pub const HELLO_INTERVAL: Duration = Duration::from_millis(250);

/// Start of every frame.
pub const MAGIC: [u8; 2] = *b"OM";

/// Limits the agent enforces on the workload, per event. The host checks
/// the same limits again on what the agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Emits one event may produce; further emits are refused (counted).
    pub max_emits: u32,
    /// Largest payload of an incoming or emitted event, bytes.
    pub max_payload: u32,
    /// Wall-clock time the workload has for one event, milliseconds.
    pub event_timeout_ms: u64,
    /// Non-emit lines (logged) one event may print before the workload is
    /// killed for flooding.
    pub max_log_lines: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_emits: 64,
            max_payload: 1 << 20,
            event_timeout_ms: 5_000,
            max_log_lines: 64,
        }
    }
}

/// One event, as carried to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Unique id.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Routing key.
    pub key: String,
    /// Payload, base64.
    pub payload_b64: String,
    /// Emitting brane or `external`.
    pub source: String,
    /// Delivery attempt, from 1.
    pub attempt: u32,
}

/// One emitted event, as carried to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEmit {
    /// Event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Routing key.
    pub key: String,
    /// Payload, base64.
    pub payload_b64: String,
}

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostMsg {
    /// The host's hello.
    Hello {
        /// [`PROTOCOL_VERSION`] of the host.
        version: u32,
        /// Largest frame the host accepts.
        max_frame: u32,
    },
    /// Start the workload.
    Start {
        /// Program and arguments.
        workload: Vec<String>,
        /// Environment of the workload.
        #[serde(default)]
        env: Vec<(String, String)>,
        /// Event types the workload may emit.
        emits: Vec<String>,
        /// Limits per event.
        limits: Limits,
    },
    /// Run one event.
    Event(WireEvent),
    /// Stop the workload and power off.
    Shutdown,
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GuestMsg {
    /// The agent's hello.
    Hello {
        /// [`PROTOCOL_VERSION`] of the agent.
        version: u32,
        /// Largest frame the agent accepts.
        max_frame: u32,
        /// The agent's name and version, e.g. `omega-agent 0.1.0`.
        agent: String,
    },
    /// The workload started; events may follow.
    Ready,
    /// One emit of the current event.
    Emit(WireEmit),
    /// A log line of the workload (its stderr, or stdout lines that are
    /// not protocol lines), cut to [`MAX_LOG_LINE`].
    Log {
        /// The line.
        message: String,
    },
    /// The current event succeeded.
    Done {
        /// The event id.
        id: String,
        /// Emits the agent refused (too many, too large, undeclared type,
        /// malformed).
        refused: u32,
    },
    /// The current event failed.
    Failed {
        /// The event id.
        id: String,
        /// Why.
        error: AgentError,
    },
    /// A failure outside any event (start, version).
    Error {
        /// Why.
        error: AgentError,
    },
}

/// Longest log line carried, bytes.
pub const MAX_LOG_LINE: usize = 4096;

/// What went wrong in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentError {
    /// The workload answered `{"result":"err",…}`.
    Workload {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The workload did not answer within the per-event timeout; it was
    /// killed (and restarts for the next event).
    Timeout {
        /// The timeout, milliseconds.
        after_ms: u64,
    },
    /// The workload exited (or closed stdout) before answering.
    Crashed {
        /// Its exit status.
        status: String,
    },
    /// The workload printed more than the limits allow; it was killed.
    OutputLimit {
        /// Which limit.
        what: String,
    },
    /// The workload could not be started.
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// The incoming payload is over `max_payload`.
    PayloadTooLarge {
        /// Size, bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The two sides speak different protocol versions.
    Version {
        /// The host's version.
        host: u32,
        /// The agent's version.
        guest: u32,
    },
    /// A message out of sequence or malformed.
    Protocol {
        /// What was wrong.
        reason: String,
    },
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Workload { code, message } => write!(f, "workload error {code}: {message}"),
            Self::Timeout { after_ms } => {
                write!(f, "workload did not answer within {after_ms} ms (killed)")
            }
            Self::Crashed { status } => write!(f, "workload exited before answering ({status})"),
            Self::OutputLimit { what } => write!(f, "workload output over limit: {what} (killed)"),
            Self::Spawn { program, reason } => {
                write!(f, "cannot start workload {program}: {reason}")
            }
            Self::PayloadTooLarge { size, limit } => {
                write!(f, "payload of {size} bytes exceeds the limit of {limit}")
            }
            Self::Version { host, guest } => {
                write!(f, "protocol version mismatch: host {host}, agent {guest}")
            }
            Self::Protocol { reason } => write!(f, "protocol: {reason}"),
        }
    }
}

/// Reading or writing a frame failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The channel failed.
    Io(std::io::Error),
    /// The channel closed (at a frame boundary).
    Closed,
    /// A frame announced more than the maximum.
    TooLarge {
        /// Announced size.
        size: u32,
        /// Maximum.
        max: u32,
    },
    /// No magic within [`MAX_SKIP`] bytes, or a frame did not start with it.
    BadMagic,
    /// The body is not a message of this protocol.
    Decode(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "channel: {e}"),
            Self::Closed => f.write_str("channel closed"),
            Self::TooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the maximum of {max}")
            }
            Self::BadMagic => f.write_str("no frame magic where one was expected"),
            Self::Decode(e) => write!(f, "undecodable frame: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encode one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(|e| FrameError::Decode(e.to_string()))?;
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            size: len,
            max: MAX_FRAME,
        });
    }
    let mut out = Vec::with_capacity(body.len() + 6);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Write one message as a frame and flush.
pub fn write_frame<T: Serialize, W: Write + ?Sized>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let frame = encode(msg)?;
    w.write_all(&frame).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads frames from a byte channel.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max: u32,
    /// Whether to skip garbage before a magic (only before the first frame).
    resync: bool,
}

impl<R: Read> FrameReader<R> {
    /// A reader accepting frames up to `max` bytes (at most [`MAX_FRAME`]),
    /// skipping up to [`MAX_SKIP`] bytes of garbage before the first frame.
    pub fn new(inner: R, max: u32) -> Self {
        Self {
            inner,
            max: max.min(MAX_FRAME),
            resync: true,
        }
    }

    fn read_byte(&mut self) -> Result<Option<u8>, FrameError> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Closed
            } else {
                FrameError::Io(e)
            }
        })
    }

    /// The next frame's body.
    pub fn next_body(&mut self) -> Result<Vec<u8>, FrameError> {
        if self.resync {
            // Look for the magic, skipping bounded garbage.
            let mut prev = None;
            let mut skipped = 0usize;
            loop {
                let Some(b) = self.read_byte()? else {
                    return Err(FrameError::Closed);
                };
                if prev == Some(MAGIC[0]) && b == MAGIC[1] {
                    break;
                }
                prev = Some(b);
                skipped += 1;
                if skipped > MAX_SKIP {
                    return Err(FrameError::BadMagic);
                }
            }
            self.resync = false;
        } else {
            let mut m = [0u8; 2];
            match self.read_byte()? {
                None => return Err(FrameError::Closed),
                Some(b) => m[0] = b,
            }
            self.read_exact(&mut m[1..])?;
            if m != MAGIC {
                return Err(FrameError::BadMagic);
            }
        }
        let mut len = [0u8; 4];
        self.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > self.max {
            return Err(FrameError::TooLarge {
                size: len,
                max: self.max,
            });
        }
        let mut body = vec![0u8; len as usize];
        self.read_exact(&mut body)?;
        Ok(body)
    }

    /// The next frame, decoded.
    pub fn read_msg<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, FrameError> {
        let body = self.next_body()?;
        serde_json::from_slice(&body).map_err(|e| FrameError::Decode(e.to_string()))
    }
}

/// Base64 (standard, padded) of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode base64 (standard, padded).
pub fn unb64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_with_leading_garbage() {
        let mut bytes = b"garbage\r\nOx".to_vec();
        bytes.extend(encode(&GuestMsg::Ready).unwrap());
        bytes.extend(
            encode(&GuestMsg::Done {
                id: "e1".into(),
                refused: 2,
            })
            .unwrap(),
        );
        let mut r = FrameReader::new(&bytes[..], MAX_FRAME);
        assert_eq!(r.read_msg::<GuestMsg>().unwrap(), GuestMsg::Ready);
        assert_eq!(
            r.read_msg::<GuestMsg>().unwrap(),
            GuestMsg::Done {
                id: "e1".into(),
                refused: 2
            }
        );
        assert!(matches!(r.read_msg::<GuestMsg>(), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_frame_is_refused_without_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(u32::MAX.to_be_bytes());
        let mut r = FrameReader::new(&bytes[..], 1024);
        assert!(matches!(
            r.next_body(),
            Err(FrameError::TooLarge {
                size: u32::MAX,
                max: 1024
            })
        ));
    }

    #[test]
    fn bad_magic_after_first_frame() {
        let mut bytes = encode(&GuestMsg::Ready).unwrap();
        bytes.extend(b"XX\0\0\0\0");
        let mut r = FrameReader::new(&bytes[..], MAX_FRAME);
        r.read_msg::<GuestMsg>().unwrap();
        assert!(matches!(r.next_body(), Err(FrameError::BadMagic)));
    }

    #[test]
    fn truncated_and_undecodable_frames() {
        let frame = encode(&GuestMsg::Ready).unwrap();
        let mut r = FrameReader::new(&frame[..frame.len() - 1], MAX_FRAME);
        assert!(matches!(r.next_body(), Err(FrameError::Closed)));
        let mut bytes = MAGIC.to_vec();
        bytes.extend(3u32.to_be_bytes());
        bytes.extend(b"{x}");
        let mut r = FrameReader::new(&bytes[..], MAX_FRAME);
        assert!(matches!(
            r.read_msg::<GuestMsg>(),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn cut_respects_char_boundaries() {
        let mut s = "héllo".to_string();
        cut(&mut s, 2);
        assert_eq!(s, "h");
    }
}
