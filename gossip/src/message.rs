//! Messages between members and their encoding (see [`wire`](crate::wire) for the grammar).

use crate::config::Limits;
use crate::id::NodeId;
use crate::membership::State;
use crate::record::{MIN_RECORD_LEN, SignedRecord};
use crate::wire::{DecodeError, Reader, WIRE_VERSION, Writer};

/// One piece of membership news, piggybacked on probes or gossiped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Update {
    /// The member's own signed record (new member, refutation, profile change, leave).
    Alive(SignedRecord),
    /// `from` suspects `id` at `incarnation`.
    Suspect {
        id: NodeId,
        incarnation: u64,
        from: NodeId,
    },
    /// `from` declared `id` dead at `incarnation`.
    Dead {
        id: NodeId,
        incarnation: u64,
        from: NodeId,
    },
}

impl Update {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Self::Alive(r) => {
                w.u8(1);
                r.encode(&mut w);
            }
            Self::Suspect {
                id,
                incarnation,
                from,
            }
            | Self::Dead {
                id,
                incarnation,
                from,
            } => {
                w.u8(if matches!(self, Self::Suspect { .. }) {
                    2
                } else {
                    3
                });
                w.id(id);
                w.varint(*incarnation);
                w.id(from);
            }
        }
        w.buf
    }

    fn decode(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        match r.u8("update tag")? {
            1 => Ok(Self::Alive(SignedRecord::decode(r, limits)?)),
            tag @ (2 | 3) => {
                let id = r.id("update id")?;
                let incarnation = r.varint("update incarnation")?;
                let from = r.id("update from")?;
                Ok(if tag == 2 {
                    Self::Suspect {
                        id,
                        incarnation,
                        from,
                    }
                } else {
                    Self::Dead {
                        id,
                        incarnation,
                        from,
                    }
                })
            }
            v => Err(DecodeError::UnknownValue {
                what: "update tag",
                value: v.into(),
            }),
        }
    }
}

/// Flags of a sync message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SyncFlags {
    /// This is an answer (do not answer it).
    pub(crate) reply: bool,
    /// The sender is joining and asks for the full state.
    pub(crate) join: bool,
    /// The last page of an answer.
    pub(crate) last: bool,
}

impl SyncFlags {
    fn to_byte(self) -> u8 {
        u8::from(self.reply) | u8::from(self.join) << 1 | u8::from(self.last) << 2
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        if b & !7 != 0 {
            return Err(DecodeError::UnknownValue {
                what: "sync flags",
                value: b.into(),
            });
        }
        Ok(Self {
            reply: b & 1 != 0,
            join: b & 2 != 0,
            last: b & 4 != 0,
        })
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Ping {
        seq: u32,
        updates: Vec<Update>,
    },
    Ack {
        seq: u32,
        updates: Vec<Update>,
    },
    PingReq {
        seq: u32,
        target: NodeId,
        updates: Vec<Update>,
    },
    Gossip {
        updates: Vec<Update>,
    },
    Sync {
        flags: SyncFlags,
        entries: Vec<(State, SignedRecord)>,
    },
    Unknown,
}

/// The fixed part of a message, before its updates or entries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Head {
    Ping { seq: u32 },
    Ack { seq: u32 },
    PingReq { seq: u32, target: NodeId },
    Gossip,
    Sync { flags: SyncFlags },
    Unknown,
}

impl Head {
    pub(crate) fn write(self, w: &mut Writer) {
        w.u8(WIRE_VERSION);
        match self {
            Self::Ping { seq } => {
                w.u8(1);
                w.varint(seq.into());
            }
            Self::Ack { seq } => {
                w.u8(2);
                w.varint(seq.into());
            }
            Self::PingReq { seq, target } => {
                w.u8(3);
                w.varint(seq.into());
                w.id(&target);
            }
            Self::Gossip => w.u8(4),
            Self::Sync { flags } => {
                w.u8(5);
                w.u8(flags.to_byte());
            }
            Self::Unknown => w.u8(6),
        }
    }
}

/// Encodes a head followed by pre-encoded updates.
pub(crate) fn encode_with_updates(head: Head, updates: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::default();
    head.write(&mut w);
    if !matches!(head, Head::Unknown | Head::Sync { .. }) {
        w.varint(updates.len() as u64);
        for u in updates {
            w.bytes(u);
        }
    }
    w.buf
}

/// Encodes one sync entry.
pub(crate) fn encode_entry(w: &mut Writer, state: State, record: &SignedRecord) {
    w.u8(state.code());
    record.encode(w);
}

/// Decodes a whole message, enforcing every limit.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    if bytes.len() > limits.max_message_size {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_message_size,
        });
    }
    let mut r = Reader::new(bytes);
    let version = r.u8("version")?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let updates = |r: &mut Reader<'_>| -> Result<Vec<Update>, DecodeError> {
        let n = r.count("updates", limits.max_updates_per_message, 1 + 32 + 1 + 32)?;
        (0..n).map(|_| Update::decode(r, limits)).collect()
    };
    let msg = match r.u8("message kind")? {
        1 => Message::Ping {
            seq: r.varint_u32("seq")?,
            updates: updates(&mut r)?,
        },
        2 => Message::Ack {
            seq: r.varint_u32("seq")?,
            updates: updates(&mut r)?,
        },
        3 => Message::PingReq {
            seq: r.varint_u32("seq")?,
            target: r.id("target")?,
            updates: updates(&mut r)?,
        },
        4 => Message::Gossip {
            updates: updates(&mut r)?,
        },
        5 => {
            let flags = SyncFlags::from_byte(r.u8("sync flags")?)?;
            let n = r.count(
                "sync entries",
                limits.max_sync_entries_per_message,
                1 + MIN_RECORD_LEN,
            )?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let state = State::from_code(r.u8("entry state")?)?;
                entries.push((state, SignedRecord::decode(&mut r, limits)?));
            }
            Message::Sync { flags, entries }
        }
        6 => Message::Unknown,
        v => {
            return Err(DecodeError::UnknownValue {
                what: "message kind",
                value: v.into(),
            });
        }
    };
    r.finish()?;
    Ok(msg)
}
