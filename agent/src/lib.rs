//! `omega-agent`: the guest side of Omega's frontier branes, and the
//! protocol the host speaks with it.
//!
//! - [`proto`]: the host↔guest protocol. Length-prefixed frames (a 2-byte
//!   magic, a big-endian `u32` length, a JSON body) of at most
//!   [`proto::MAX_FRAME`] bytes; a hello exchange that checks
//!   [`proto::PROTOCOL_VERSION`]; typed errors ([`proto::AgentError`]).
//!   Shared by the host (the QEMU and Firecracker backends) and the guest.
//! - [`workload`]: runs the brane's workload — any Linux program — and
//!   carries one event in and the emits out as line-delimited JSON on its
//!   stdin/stdout, with the `omega:brane` type rules and limits.
//! - [`agent`]: the agent's main loop over a byte channel (the guest's
//!   second serial port, vsock, or stdio for tests).
//!
//! The binary (`omega-agent`) runs as PID 1 of the guest's initramfs.

pub mod agent;
pub mod proto;
pub mod workload;
