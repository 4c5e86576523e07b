//! `omega token issue|delegate|invoke|inspect|verify|revoke`: capability tokens (ACTs).
//!
//! Tokens are UCAN 1.0 envelopes. On the command line a token is given as
//! base64 text, as a file holding base64 text or raw DAG-CBOR bytes, or `-`
//! for standard input. Proof chains are given root first (`--proof` repeated).

use std::path::Path;
use std::process::ExitCode;

use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use omega_identity::chain::{
    MeshPolicy, Refusal, ReplayGuard, RevocationSet, Validator, ValidatorConfig,
};
use omega_identity::policy::{Policy, ipld_from_json};
use omega_identity::ucan::{AnyToken, Command, Delegation, Invocation, Signed, TokenError};
use omega_identity::{Cid, Did, Ipld, Keypair};
use serde_json::{Map, Value, json};

use super::{CliError, Output};
use crate::keystore;

/// `omega token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a root delegation: you are the subject and grant AUD a command.
    Issue(IssueArgs),
    /// Re-delegate a capability you hold (the proof's audience is you), narrowed.
    Delegate(DelegateArgs),
    /// Invoke a command, proving the right with a chain of delegations.
    Invoke(InvokeArgs),
    /// Decode a token and print its fields.
    Inspect {
        /// The token (base64, a file, or `-`).
        token: String,
    },
    /// Check a token: signature and time bounds; for an invocation, its whole
    /// proof chain. By the UCAN 1.0 spec, then (unless `--policy spec`) by
    /// the mesh policy; says which layer refused.
    Verify(VerifyArgs),
    /// Revoke a delegation you issued, or one below a delegation you issued:
    /// a signed `/ucan/revoke` written into the mesh's replicated state, after
    /// which every member refuses it and every chain through it.
    Revoke(RevokeArgs),
}

/// `omega token revoke`
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The delegation to revoke (a token, a file, `-`, or an `omega-join1.`
    /// join token: its invite), or its CID when the token itself is the last
    /// `--proof`.
    target: String,
    /// The chain from the mesh root down to the revoked delegation, root
    /// first (repeat). The revoked delegation may be left out when it is the
    /// target. Your key must have issued one of these delegations.
    #[arg(long = "proof", value_name = "TOKEN")]
    proofs: Vec<String>,
    /// The node to hand the revocation to.
    #[command(flatten)]
    node: super::peers::NodeDir,
}

/// Lifetime flags shared by the verbs that create tokens.
#[derive(Debug, Args)]
pub(super) struct Lifetime {
    /// Valid for this long from now (e.g. `90s`, `24h`, `30d`).
    #[arg(long, default_value = "24h", conflicts_with_all = ["exp", "no_expiry"])]
    expires: humantime::Duration,
    /// Expire at this unix time (seconds) instead.
    #[arg(long, value_name = "UNIX")]
    exp: Option<u64>,
    /// Never expire (the spec allows it; use sparingly).
    #[arg(long)]
    no_expiry: bool,
    /// Not valid before this unix time (seconds).
    #[arg(long, value_name = "UNIX")]
    nbf: Option<u64>,
}

impl Lifetime {
    fn exp(&self, now: u64) -> Option<u64> {
        if self.no_expiry {
            None
        } else {
            Some(
                self.exp
                    .unwrap_or_else(|| now.saturating_add(self.expires.as_secs())),
            )
        }
    }
}

/// Flags shared by `issue` and `delegate`.
#[derive(Debug, Args)]
pub(super) struct Grant {
    /// Who receives the capability (a did:key).
    #[arg(long, value_name = "DID")]
    aud: Did,
    /// The command granted, a path such as `/mesh/join` (covers its sub-paths).
    #[arg(long, value_name = "PATH")]
    cmd: Command,
    /// A policy on the invocation's arguments, as UCAN policy JSON,
    /// e.g. `[["==", ".substrate", "habitat"]]`.
    #[arg(long, value_name = "JSON", default_value = "[]")]
    pol: String,
    /// Free-form metadata (a JSON object).
    #[arg(long, value_name = "JSON")]
    meta: Option<String>,
    #[command(flatten)]
    lifetime: Lifetime,
    /// Write the token here (base64) instead of printing it.
    #[arg(long, short, value_name = "PATH")]
    output: Option<std::path::PathBuf>,
}

/// `omega token issue`
#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    grant: Grant,
    /// Grant over every subject you can act for (a "powerline": `sub` is null).
    #[arg(long)]
    powerline: bool,
}

/// `omega token delegate`
#[derive(Debug, Args)]
pub struct DelegateArgs {
    /// The delegation that grants you the capability (its `aud` must be you).
    #[arg(long, value_name = "TOKEN")]
    proof: String,
    #[command(flatten)]
    grant: Grant,
}

/// `omega token invoke`
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The delegation chain, root first, leaf (granted to you) last.
    #[arg(long = "proof", value_name = "TOKEN", required = true)]
    proofs: Vec<String>,
    /// The command to run.
    #[arg(long, value_name = "PATH")]
    cmd: Command,
    /// Arguments (a JSON object).
    #[arg(long, value_name = "JSON", default_value = "{}")]
    args: String,
    /// The executor the invocation is addressed to, when not the subject.
    #[arg(long, value_name = "DID")]
    aud: Option<Did>,
    #[command(flatten)]
    lifetime: Lifetime,
    /// Write the token here (base64) instead of printing it.
    #[arg(long, short, value_name = "PATH")]
    output: Option<std::path::PathBuf>,
}

/// `omega token verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The token to check.
    token: String,
    /// Proof delegations, root first (required for invocations).
    #[arg(long = "proof", value_name = "TOKEN")]
    proofs: Vec<String>,
    /// Check as of this unix time instead of now.
    #[arg(long, value_name = "UNIX")]
    at: Option<u64>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, default_value_t = 60)]
    skew: u64,
    /// Treat the token with this CID as revoked (repeatable).
    #[arg(long = "revoked", value_name = "CID")]
    revoked: Vec<Cid>,
    /// Which rules to check: `spec` (UCAN 1.0 only: an invocation may have
    /// no expiry, a delegation below the root may be a powerline) or `mesh`
    /// (the spec, then what an Omega node requires on top).
    #[arg(long, value_enum, default_value_t = PolicyArg::Mesh)]
    policy: PolicyArg,
    /// With `--policy mesh`: accept powerline delegations (`sub: null`).
    #[arg(long)]
    allow_powerline: bool,
}

/// `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum PolicyArg {
    /// UCAN 1.0 as specified.
    Spec,
    /// The spec, then the mesh policy (invocations expire; no powerline).
    Mesh,
}

pub(super) fn run(cmd: &TokenCommand, key_path: &Path, out: &Output) -> Result<ExitCode, CliError> {
    let now = now_unix();
    match cmd {
        TokenCommand::Issue(a) => {
            let key = keystore::load(key_path)?;
            let sub = if a.powerline { None } else { Some(key.did()) };
            let token = delegation(&key, sub, &a.grant, now)?;
            emit_token(out, &token, a.grant.output.as_deref())
        }
        TokenCommand::Delegate(a) => {
            let key = keystore::load(key_path)?;
            let proof = read_delegation(&a.proof)?;
            check_delegate(&key, proof.payload(), &a.grant, now)?;
            let token = delegation(&key, proof.payload().sub, &a.grant, now)?;
            emit_token(out, &token, a.grant.output.as_deref())
        }
        TokenCommand::Invoke(a) => invoke(a, key_path, now, out),
        TokenCommand::Inspect { token } => inspect(token, now, out),
        TokenCommand::Verify(a) => verify(a, now, out),
        TokenCommand::Revoke(a) => revoke(a, key_path, out),
    }
}

fn now_unix() -> u64 {
    crate::unix_now().secs()
}

pub(super) fn nonce() -> Result<Vec<u8>, CliError> {
    let mut n = vec![0u8; 12];
    getrandom::fill(&mut n)
        .map_err(|e| CliError::plain(format!("the operating system gave no randomness: {e}")))?;
    Ok(n)
}

fn json_arg(flag: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::invalid(
            format!("--{flag}: not valid JSON: {e}"),
            "quote the whole value for your shell, e.g. --pol '[[\"==\", \".name\", \"x\"]]'",
        )
    })
}

fn delegation(
    key: &Keypair,
    sub: Option<Did>,
    grant: &Grant,
    now: u64,
) -> Result<Signed<Delegation>, CliError> {
    let pol = Policy::from_json(&json_arg("pol", &grant.pol)?).map_err(|e| {
        CliError::invalid(
            format!("--pol: {e}"),
            "see `docs/src/tokens.md` for the policy language",
        )
    })?;
    let meta = match &grant.meta {
        None => None,
        Some(text) => match json_to_ipld("meta", &json_arg("meta", text)?)? {
            Ipld::Map(m) => Some(m),
            _ => return Err(CliError::plain("--meta: must be a JSON object")),
        },
    };
    let payload = Delegation {
        iss: key.did(),
        aud: grant.aud,
        sub,
        cmd: grant.cmd.clone(),
        pol,
        nonce: nonce()?,
        exp: grant.lifetime.exp(now),
        nbf: grant.lifetime.nbf,
        meta,
    };
    sign(payload, key)
}

fn sign<T: omega_identity::ucan::Payload>(
    payload: T,
    key: &Keypair,
) -> Result<Signed<T>, CliError> {
    Signed::sign(payload, key).map_err(|e| CliError::plain(format!("cannot sign the token: {e}")))
}

/// Refuse, early and with a reason, a delegation the chain check would reject.
fn check_delegate(
    key: &Keypair,
    proof: &Delegation,
    grant: &Grant,
    now: u64,
) -> Result<(), CliError> {
    if proof.aud != key.did() {
        return Err(CliError::invalid(
            format!(
                "the proof is granted to {}, not to you ({})",
                proof.aud,
                key.did()
            ),
            "delegate with the key the proof was issued to (--key)",
        ));
    }
    if !proof.cmd.covers(&grant.cmd) {
        return Err(CliError::invalid(
            format!(
                "the proof grants `{}`, which does not cover `{}`",
                proof.cmd, grant.cmd
            ),
            "a delegation can only narrow the command: use the proof's command or a sub-path of it",
        ));
    }
    if let Some(limit) = proof.exp
        && grant.lifetime.exp(now).is_none_or(|e| e > limit)
    {
        return Err(CliError::invalid(
            format!("the proof expires at {limit}; a delegation cannot outlive it"),
            format!("pass --exp {limit} or a shorter --expires"),
        ));
    }
    Ok(())
}

fn invoke(a: &InvokeArgs, key_path: &Path, now: u64, out: &Output) -> Result<ExitCode, CliError> {
    let key = keystore::load(key_path)?;
    let proofs = a
        .proofs
        .iter()
        .map(|p| read_delegation(p))
        .collect::<Result<Vec<_>, _>>()?;
    let root = proofs[0].payload();
    let sub = root.sub.unwrap_or(root.iss);
    let args = match json_to_ipld("args", &json_arg("args", &a.args)?)? {
        Ipld::Map(m) => m,
        _ => return Err(CliError::plain("--args: must be a JSON object")),
    };
    let payload = Invocation {
        iss: key.did(),
        sub,
        aud: a.aud,
        cmd: a.cmd.clone(),
        args,
        prf: proofs.iter().map(Signed::cid).collect(),
        nonce: nonce()?,
        exp: a.lifetime.exp(now),
        iat: Some(now),
        meta: None,
        cause: None,
    };
    let token = sign(payload, &key)?;
    // Check the chain we just built, so a mistake surfaces here and not at the executor.
    let store = proofs
        .iter()
        .map(|p| (p.cid(), p.clone()))
        .collect::<std::collections::HashMap<_, _>>();
    Validator::new(ValidatorConfig::default())
        .validate(&token, &store, now, &RevocationSet::new(), &mut ReplayGuard::new(1))
        .map_err(|e| CliError::invalid(format!("this invocation would be refused: {e}"), "check the proofs' order (root first), audiences, commands and policies with `omega token inspect`"))?;
    emit_token(out, &token, a.output.as_deref())
}

fn verify(a: &VerifyArgs, now: u64, out: &Output) -> Result<ExitCode, CliError> {
    let at = a.at.unwrap_or(now);
    let token = read_any(&a.token)?;
    let validator = Validator::new(ValidatorConfig {
        clock_skew_secs: a.skew,
        ..ValidatorConfig::default()
    });
    let policy = MeshPolicy {
        allow_powerline: a.allow_powerline,
    };
    let mesh = a.policy == PolicyArg::Mesh;
    let revoked: RevocationSet = a.revoked.iter().cloned().collect();
    let proofs = a
        .proofs
        .iter()
        .map(|p| read_delegation(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = ReplayGuard::new(1);
    let result: Result<(), Refusal> = match &token {
        AnyToken::Invocation(inv) => {
            let store = proofs
                .iter()
                .map(|p| (p.cid(), p.clone()))
                .collect::<std::collections::HashMap<_, _>>();
            if mesh {
                policy
                    .validate(&validator, inv, &store, at, &revoked, &mut seen)
                    .map(|_| ())
            } else {
                validator
                    .validate(inv, &store, at, &revoked, &mut seen)
                    .map(|_| ())
                    .map_err(Refusal::Spec)
            }
        }
        AnyToken::Delegation(dlg) => {
            let mut chain = proofs;
            chain.push(dlg.clone());
            if mesh {
                policy
                    .validate_delegation_chain(&validator, &chain, at, &revoked)
                    .map(|_| ())
            } else {
                validator
                    .validate_delegation_chain(&chain, at, &revoked)
                    .map(|_| ())
                    .map_err(Refusal::Spec)
            }
        }
    };
    let cid = token.cid().to_string();
    let checked = if mesh { "spec + mesh policy" } else { "spec" };
    match result {
        Ok(()) => {
            out.print(
                format!("valid  {cid}  ({checked})"),
                json!({ "ok": true, "valid": true, "cid": cid, "policy": a.policy_name() }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let layer = match e.layer() {
                omega_identity::chain::Layer::Spec => "the UCAN 1.0 spec",
                omega_identity::chain::Layer::Mesh => "the mesh policy",
            };
            let reason = match &e {
                Refusal::Spec(e) => e.to_string(),
                Refusal::Mesh(e) => e.to_string(),
                other => other.to_string(),
            };
            if out.is_json() {
                out.print(
                    "",
                    json!({
                        "ok": true, "valid": false, "cid": cid, "policy": a.policy_name(),
                        "layer": e.layer().as_str(), "class": e.class(), "reason": reason,
                    }),
                );
            } else {
                eprintln!(
                    "invalid  {cid}\n  refused by: {layer} ({})\n  reason: {reason}{}",
                    e.class(),
                    match e.layer() {
                        omega_identity::chain::Layer::Mesh => {
                            "\n  (valid by the spec: `--policy spec` checks only that)"
                        }
                        omega_identity::chain::Layer::Spec => "",
                    }
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

impl VerifyArgs {
    fn policy_name(&self) -> &'static str {
        match self.policy {
            PolicyArg::Spec => "spec",
            PolicyArg::Mesh => "mesh",
        }
    }
}

fn revoke(a: &RevokeArgs, key_path: &Path, out: &Output) -> Result<ExitCode, CliError> {
    let mut chain = a
        .proofs
        .iter()
        .map(|p| read_delegation(p))
        .collect::<Result<Vec<_>, _>>()?;
    let target = match a.target.trim().parse::<Cid>() {
        Ok(cid) => cid,
        Err(_) => {
            let d = read_revocable(&a.target)?;
            let cid = d.cid();
            if chain.last().map(Signed::cid) != Some(cid) {
                chain.push(d);
            }
            cid
        }
    };
    if chain.last().map(Signed::cid) != Some(target) {
        return Err(CliError::invalid(
            format!("the chain does not end with the token {target}"),
            "pass the token to revoke itself (not its CID), or make it the last --proof",
        ));
    }
    let signer = super::dispatch::sign_and_write(
        &a.node.data_dir,
        key_path,
        &super::dispatch::Signing { proofs: Vec::new() },
        |hlc, auth| omega_gossip::desired::DesiredRecord::revoke_by_chain(chain, hlc, auth),
    )?;
    out.print(
        format!("revoked token {target}"),
        json!({ "ok": true, "revoked": target.to_string(), "kind": "token", "by": signer.to_string() }),
    );
    Ok(ExitCode::SUCCESS)
}

/// The delegation a revoke target names: a token (as [`read_delegation`]
/// takes it) or an `omega-join1.` join token, whose delegation (mesh root →
/// invite key) is what the mesh checks on every join.
fn read_revocable(arg: &str) -> Result<Signed<Delegation>, CliError> {
    let text = arg.trim();
    if !text.starts_with(omega_gossip::join::TOKEN_PREFIX) {
        return read_delegation(arg);
    }
    omega_gossip::join::JoinToken::decode(text)
        .map(|t| t.delegation)
        .map_err(|e| CliError::invalid(format!("the join token: {e}"), "paste the whole token"))
}

fn inspect(text: &str, now: u64, out: &Output) -> Result<ExitCode, CliError> {
    let token = read_any(text)?;
    let (kind, payload, sig_ok, exp) = match &token {
        AnyToken::Delegation(d) => (
            "delegation",
            delegation_json(d.payload()),
            d.verify_signature().is_ok(),
            d.payload().exp,
        ),
        AnyToken::Invocation(i) => (
            "invocation",
            invocation_json(i.payload()),
            i.verify_signature().is_ok(),
            i.payload().exp,
        ),
    };
    let expired = exp.is_some_and(|e| e < now);
    let doc = json!({
        "kind": kind, "cid": token.cid().to_string(), "signature_valid": sig_ok,
        "expired": expired, "payload": payload,
    });
    let human = format!(
        "{kind} {}\nsignature: {}{}\n{}",
        token.cid(),
        if sig_ok { "valid" } else { "INVALID" },
        if expired { " (expired)" } else { "" },
        serde_json::to_string_pretty(&doc["payload"]).unwrap_or_default()
    );
    out.print(human, doc);
    Ok(ExitCode::SUCCESS)
}

fn delegation_json(d: &Delegation) -> Value {
    json!({
        "iss": d.iss.to_string(), "aud": d.aud.to_string(),
        "sub": d.sub.as_ref().map(ToString::to_string),
        "cmd": d.cmd.to_string(), "pol": ipld_to_json(&d.pol.to_ipld()),
        "nonce": b64(&d.nonce), "exp": d.exp, "nbf": d.nbf,
        "meta": d.meta.as_ref().map(|m| ipld_to_json(&Ipld::Map(m.clone()))),
    })
}

fn invocation_json(i: &Invocation) -> Value {
    json!({
        "iss": i.iss.to_string(), "sub": i.sub.to_string(),
        "aud": i.aud.as_ref().map(ToString::to_string),
        "cmd": i.cmd.to_string(), "args": ipld_to_json(&Ipld::Map(i.args.clone())),
        "prf": i.prf.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "nonce": b64(&i.nonce), "exp": i.exp, "iat": i.iat,
        "meta": i.meta.as_ref().map(|m| ipld_to_json(&Ipld::Map(m.clone()))),
        "cause": i.cause.as_ref().map(ToString::to_string),
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn emit_token<T: omega_identity::ucan::Payload>(
    out: &Output,
    token: &Signed<T>,
    path: Option<&Path>,
) -> Result<ExitCode, CliError> {
    let text = token.to_base64();
    let cid = token.cid();
    if let Some(path) = path {
        std::fs::write(path, format!("{text}\n")).map_err(|source| CliError::Io {
            path: path.display().to_string(),
            source,
        })?;
        out.print(
            format!("{cid}\n(token written to {})", path.display()),
            json!({ "ok": true, "cid": cid.to_string(), "output": path.display().to_string() }),
        );
    } else {
        out.print(
            &text,
            json!({ "ok": true, "cid": cid.to_string(), "token": text }),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The raw bytes of a token argument: `-` (stdin), a file, or base64 text.
fn token_bytes(arg: &str) -> Result<Vec<u8>, CliError> {
    let raw = if arg == "-" || Path::new(arg).is_file() {
        crate::bounded::read(Path::new(arg), crate::bounded::TOKEN)?
    } else {
        arg.as_bytes().to_vec()
    };
    // A DAG-CBOR token starts with a 2-element array (0x82); anything else is base64 text.
    if raw.first() == Some(&0x82) {
        return Ok(raw);
    }
    let text = String::from_utf8(raw).map_err(|_| {
        CliError::plain(format!(
            "token {}: neither base64 text nor a DAG-CBOR token",
            short(arg)
        ))
    })?;
    omega_identity::ucan::decode_base64(&text).map_err(|e: TokenError| {
        CliError::invalid(
            format!("token {}: {e}", short(arg)),
            "pass base64 text as printed by `omega token issue`, a file holding it, or - for stdin",
        )
    })
}

fn short(arg: &str) -> String {
    if arg.len() > 24 {
        format!("`{}…`", &arg[..arg.floor_char_boundary(24)])
    } else {
        format!("`{arg}`")
    }
}

fn read_any(arg: &str) -> Result<AnyToken, CliError> {
    AnyToken::decode(&token_bytes(arg)?)
        .map_err(|e| CliError::plain(format!("token {}: {e}", short(arg))))
}

pub(super) fn read_delegation(arg: &str) -> Result<Signed<Delegation>, CliError> {
    match read_any(arg)? {
        AnyToken::Delegation(d) => Ok(d),
        AnyToken::Invocation(_) => Err(CliError::invalid(
            format!(
                "token {} is an invocation; a proof must be a delegation",
                short(arg)
            ),
            "pass the delegations of the chain as --proof, root first",
        )),
    }
}

/// DAG-JSON style: bytes as `{"/": {"bytes": b64}}`, links as `{"/": cid}`.
fn ipld_to_json(v: &Ipld) -> Value {
    match v {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => i64::try_from(*i)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(i.to_string())),
        Ipld::Float(f) => json!(f),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => json!({ "/": { "bytes": b64(b) } }),
        Ipld::List(l) => Value::Array(l.iter().map(ipld_to_json).collect()),
        Ipld::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Ipld::Link(c) => json!({ "/": c.to_string() }),
    }
}

fn json_to_ipld(flag: &str, v: &Value) -> Result<Ipld, CliError> {
    ipld_from_json(v).map_err(|e| CliError::plain(format!("--{flag}: {e}")))
}
