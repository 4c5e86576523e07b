//! `omega emit|tail|dlq`: events into a manifest's graph, the events a node
//! processes, and the events it gave up on.
//!
//! `emit` signs an emit grant (an invocation of `/event/emit` for the
//! manifest, with the `--proof` chain from the mesh root; none when your
//! key is the root) and hands the event to the node, which answers once it
//! is durable in its outbox; from there the node brain delivers it along
//! the manifest's edges, across nodes, at least once.

use std::fmt::Write as _;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Subcommand};
use omega_gossip::desired::{Authority, DesiredRecord};
use omega_gossip::events::EventReport;
use omega_identity::Did;
use serde_json::json;

use super::dispatch::Signing;
use super::peers::NodeDir;
use super::{CliError, Output};
use crate::api::{Client, ClientError, EmitEvent, EmitRequest};
use crate::keystore;

/// How long an emit grant is valid.
const GRANT_TTL_SECS: u64 = 3600;
/// How long `emit` waits for room in a full outbox before it gives up.
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);
/// Most events `--repeat` sends per request.
const BATCH: usize = 500;

/// `omega emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// The event type (one the target's incoming edges carry).
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// The payload: text, `@FILE` for a file's bytes, or `-` for stdin.
    #[arg(default_value = "")]
    pub payload: String,
    /// The target brane: `BRANE` or `MANIFEST/BRANE`.
    #[arg(long, value_name = "BRANE")]
    pub to: String,
    /// The routing key: events with the same key go to the same replica
    /// (and keep their order on `ordered` edges). (`--key` is the global
    /// identity flag.)
    #[arg(
        long = "routing-key",
        short = 'k',
        value_name = "KEY",
        default_value = ""
    )]
    pub routing_key: String,
    /// Emit N events; `{n}` in the payload and key becomes 0..N, and
    /// `{n%K}` becomes n modulo K (e.g. `--routing-key 'sensor-{n%4}'`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: u64,
    /// Signing.
    #[command(flatten)]
    pub signing: Signing,
    /// The node to hand it to.
    #[command(flatten)]
    pub node: NodeDir,
}

/// `omega tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// A brane (`BRANE` or `MANIFEST/BRANE`) or an event type (with a dot).
    pub what: String,
    /// Keep following (until interrupted); else print what the node holds
    /// and stop.
    #[arg(short, long)]
    pub follow: bool,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeDir,
}

/// `omega dlq`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead letters on a node.
    Ls(NodeDir),
    /// Show one, with its payload.
    Show(DlqOne),
    /// Put one back in the outbox, its failures reset.
    Replay(DlqOne),
    /// Remove one for good.
    Drop(DlqOne),
}

/// One dead letter.
#[derive(Debug, Args)]
pub struct DlqOne {
    /// The event id (32 hex digits, from `omega dlq ls`).
    pub id: String,
    /// The node that holds it.
    #[command(flatten)]
    pub node: NodeDir,
}

fn client_err(e: ClientError) -> CliError {
    match e {
        ClientError::Api {
            status: 403,
            message,
        } => CliError::invalid(
            format!("the node refused: {message}"),
            "emitting needs a chain from the mesh root granting `/event/emit` \
             (`omega token issue --cmd /event/emit --aud YOUR_DID` by the root), given with --proof",
        ),
        ClientError::Api { message, .. } => CliError::plain(format!("the node refused: {message}")),
        e => CliError::invalid(e.to_string(), "is `omega node --data-dir DIR` running?"),
    }
}

/// `-` (standard input), `@FILE`, or the text itself; files and stdin at
/// most [`crate::bounded::PAYLOAD`].
fn payload(p: &str) -> Result<Vec<u8>, CliError> {
    let file = if p == "-" {
        Some(p)
    } else {
        p.strip_prefix('@')
    };
    match file {
        Some(path) => Ok(crate::bounded::read(
            std::path::Path::new(path),
            crate::bounded::PAYLOAD,
        )?),
        None => Ok(p.as_bytes().to_vec()),
    }
}

/// `omega emit TYPE --to BRANE [--key K] [PAYLOAD]`.
pub(super) fn emit(
    a: &EmitArgs,
    key_path: &std::path::Path,
    out: &Output,
) -> Result<ExitCode, CliError> {
    let client = Client::new(&a.node.data_dir);
    let manifest = match a.to.split_once('/') {
        Some((m, _)) => m.to_owned(),
        None => match client.describe(&a.to).map_err(client_err)? {
            crate::api::DescribeResponse::One(d) => d.manifest,
            crate::api::DescribeResponse::Many { matches } => {
                return Err(CliError::invalid(
                    format!("several manifests have a brane `{}`", a.to),
                    format!(
                        "say which: {}",
                        matches
                            .iter()
                            .map(|d| format!("--to {}/{}", d.manifest, d.brane))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ));
            }
        },
    };
    let key = keystore::load(key_path)?;
    let proofs = a
        .signing
        .proofs
        .iter()
        .map(|p| super::token::read_delegation(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mesh: Did = client
        .tick()
        .map_err(client_err)?
        .mesh
        .parse()
        .map_err(|_| CliError::plain("the node reported no mesh root"))?;
    let grant = DesiredRecord::emit_grant(
        &manifest,
        Authority {
            signer: &key,
            mesh_root: mesh,
            proofs,
            exp: crate::unix_now().secs() + GRANT_TTL_SECS,
            nonce: super::token::nonce()?,
        },
    )
    .map_err(|e| CliError::plain(format!("signing the emit grant: {e}")))?;
    let grant = base64::engine::general_purpose::STANDARD.encode(grant.encode());
    let body = payload(&a.payload)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ids = Vec::new();
    let mut n = 0u64;
    let mut batch = BATCH as u64;
    while n < a.repeat.max(1) {
        let end = (n + batch).min(a.repeat.max(1));
        let events = (n..end)
            .map(|i| {
                let subst = |s: &str| substitute(s, i);
                let bytes = match std::str::from_utf8(&body) {
                    Ok(text) if a.repeat > 1 => subst(text).into_bytes(),
                    _ => body.clone(),
                };
                EmitEvent {
                    brane: a.to.clone(),
                    ty: a.ty.clone(),
                    key: subst(&a.routing_key),
                    payload: String::new(),
                    payload_base64: Some(b64.encode(bytes)),
                }
            })
            .collect();
        let request = EmitRequest {
            grant: grant.clone(),
            events,
        };
        // A full outbox is backpressure from a slow consumer: wait for room.
        let waited = std::time::Instant::now();
        let r = loop {
            match client.emit(&request) {
                Err(ClientError::Api { status: 503, .. }) if waited.elapsed() < BUSY_PATIENCE => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                // More than this node's outbox can ever take at once: smaller batches.
                Err(ClientError::Api { status: 413, .. }) if end - n > 1 => break None,
                other => break Some(other.map_err(client_err)?),
            }
        };
        let Some(r) = r else {
            batch = (batch / 2).max(1);
            continue;
        };
        ids.extend(r.ids);
        n = end;
    }
    let text = if ids.len() == 1 {
        format!(
            "emitted {} to {manifest}/{}: {}",
            a.ty,
            short(&a.to),
            ids[0]
        )
    } else {
        format!(
            "emitted {} {} events to {manifest}/{}",
            ids.len(),
            a.ty,
            short(&a.to)
        )
    };
    out.print(text, json!({ "manifest": manifest, "ids": ids }));
    Ok(ExitCode::SUCCESS)
}

/// `{n}` → `n`, `{n%K}` → `n % K` (K ≥ 1); anything else is kept.
fn substitute(s: &str, n: u64) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("{n") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let modulo = tail
            .strip_prefix('%')
            .and_then(|t| t.split_once('}'))
            .and_then(|(k, after)| Some((k.parse::<u64>().ok().filter(|k| *k > 0)?, after)));
        match (tail.strip_prefix('}'), modulo) {
            (Some(after), _) => {
                out.push_str(&n.to_string());
                rest = after;
            }
            (None, Some((k, after))) => {
                out.push_str(&(n % k).to_string());
                rest = after;
            }
            (None, None) => {
                out.push_str("{n");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

fn short(to: &str) -> &str {
    to.split_once('/').map_or(to, |(_, b)| b)
}

/// `omega tail BRANE|TYPE [-f]`.
pub(super) fn tail(a: &TailArgs, out: &Output) -> Result<ExitCode, CliError> {
    let client = Client::new(&a.node.data_dir);
    let filter = if a.what.contains('.') && !a.what.contains('/') {
        format!("type={}", a.what)
    } else {
        format!("brane={}", a.what)
    };
    let mut after = 0u64;
    loop {
        let r = client
            .tail(&format!("after={after}&{filter}"))
            .map_err(client_err)?;
        if r.skipped > 0 {
            eprintln!("({} events passed before this reader caught up)", r.skipped);
        }
        for l in &r.lines {
            let status = match (&l.error, l.emitted.is_empty()) {
                (Some(e), _) => format!("failed: {e}"),
                (None, true) => "ok".into(),
                (None, false) => format!("emitted {}", l.emitted.join(", ")),
            };
            let text = format!(
                "{} {}/{} <- {} {} key={:?} from {} attempt {} ({} bytes): {status}",
                l.at_ms, l.manifest, l.brane, l.ty, l.id, l.key, l.source, l.attempt, l.bytes
            );
            out.print(text, serde_json::to_value(l).unwrap_or_default());
        }
        after = r.next;
        if !a.follow && r.lines.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// `omega dlq ls|show|replay|drop`.
pub(super) fn dlq(cmd: &DlqCommand, out: &Output) -> Result<ExitCode, CliError> {
    let (dir, method, rest, verb) = match cmd {
        DlqCommand::Ls(d) => (&d.data_dir, "GET", String::new(), "ls"),
        DlqCommand::Show(o) => (&o.node.data_dir, "GET", format!("/{}", o.id), "show"),
        DlqCommand::Replay(o) => (
            &o.node.data_dir,
            "POST",
            format!("/{}/replay", o.id),
            "replay",
        ),
        DlqCommand::Drop(o) => (&o.node.data_dir, "POST", format!("/{}/drop", o.id), "drop"),
    };
    let r = Client::new(dir).dlq(method, &rest).map_err(client_err)?;
    let text = match verb {
        "ls" if r.letters.is_empty() => "no dead letters on this node".to_owned(),
        "ls" | "show" => {
            let mut t = format!(
                "{:<32} {:<24} {:<16} {:<8} {}\n",
                "ID", "TARGET", "TYPE", "FAILED", "LAST ERROR"
            );
            for l in &r.letters {
                let _ = writeln!(
                    t,
                    "{:<32} {:<24} {:<16} {:<8} {}",
                    l.id,
                    format!("{}/{}", l.manifest, l.to),
                    l.ty,
                    l.failures,
                    l.error
                );
                if let Some(p) = &l.payload {
                    let _ = writeln!(
                        t,
                        "payload ({} bytes): {}",
                        p.len(),
                        String::from_utf8_lossy(p)
                    );
                }
            }
            t.trim_end().to_owned()
        }
        "replay" => format!("replayed {}: back in the outbox", short_id(&rest)),
        _ => format!("dropped {}", short_id(&rest)),
    };
    out.print(text, serde_json::to_value(&r).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn short_id(rest: &str) -> &str {
    rest.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or(rest)
}

/// The EDGES section of `omega ps`: what this node sends along each edge.
pub(super) fn edges_table(ev: &EventReport) -> String {
    let mut t = format!(
        "\nEVENTS on this node: outbox {}, dead letters {}, processed {}, duplicates {}\n{:<32} {:<16} {:>9} {:>8} {:>7} {:>8} {:>5} {:>8}  {}\n",
        ev.outbox,
        ev.dead_letters,
        ev.processed,
        ev.duplicates,
        "EDGE",
        "TYPE",
        "DELIVERED",
        "INFLIGHT",
        "QUEUED",
        "RETRIED",
        "DEAD",
        "LAG(ms)",
        "STALLED"
    );
    if let Some(s) = &ev.stalled {
        let _ = writeln!(t, "stalled: {s}");
    }
    for e in &ev.edges {
        let from = if e.from.is_empty() { "(emit)" } else { &e.from };
        let _ = writeln!(
            t,
            "{:<32} {:<16} {:>9} {:>8} {:>7} {:>8} {:>5} {:>8}  {}",
            format!("{}/{from}->{}", e.manifest, e.to),
            e.on,
            e.delivered,
            e.in_flight,
            e.queued,
            e.retried,
            e.dead_lettered,
            e.lag_ms,
            e.stalled.as_deref().unwrap_or("")
        );
    }
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeat_placeholders_are_substituted() {
        assert_eq!(super::substitute("s{n%4}-{n}", 10), "s2-10");
        assert_eq!(super::substitute("{n%0} {n", 3), "{n%0} {n");
        assert_eq!(super::substitute("plain", 3), "plain");
    }
}
