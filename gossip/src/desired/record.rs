//! Signed desired-state records and their verification.
//!
//! Every record is a UCAN invocation on the mesh (its `sub` is the mesh
//! root's DID) plus the delegations that prove the right to invoke it, plus
//! an optional body. The invocation's `args` carry everything the record
//! claims, so one signature covers it all:
//!
//! | kind | `cmd` | `args` | body |
//! |---|---|---|---|
//! | apply | `/manifest/apply` | `name`, `plan` (plan hash, hex), `wall_ms`, `counter` | the plan's canonical JSON |
//! | delete | `/manifest/delete` | `name`, `wall_ms`, `counter` | empty |
//! | image | `/image/push` | `name` (`name:tag`), `content` (CID text), `wall_ms`, `counter` | empty |
//! | revoke | `/revoke` | `token` (CID text) or `node` (DID), `wall_ms`, `counter` | empty |
//! | revoke by the chain | `/ucan/revoke` | `token` (CID text), `path` (CID links), `wall_ms`, `counter` | empty |
//!
//! A delegation scopes a writer to some names with a policy on `.name`
//! (`["like", ".name", "team-a-*"]`); `/manifest` covers apply and delete.
//!
//! # Who may revoke a token
//!
//! Two routes, both ending in the same grow-only revocation set:
//!
//! - `/revoke`: mesh administration. The signer holds `/revoke` (or `/`)
//!   from the mesh root, proven like any other record; it may revoke any
//!   token or node.
//! - `/ucan/revoke`, after the UCAN revocation spec: the **issuer of the
//!   revoked delegation, or the issuer of any delegation in its proof
//!   chain**, may revoke it. The record carries that chain (the record's
//!   proofs, root first, the revoked delegation last; their CIDs are signed
//!   in `args.path`), and the invocation cites no proofs (`prf: []`): the
//!   right to revoke comes from being in the chain, not from a grant. The
//!   path must be a valid delegation chain (by the spec and the mesh policy,
//!   at the record's timestamp, revocations aside) from this mesh's root to
//!   the revoked delegation, and the signer must be the issuer of one of its
//!   delegations. Delegations in UCAN 1.0 do not name their parents, so "its
//!   proof chain" is any such valid chain; requiring it to reach the mesh
//!   root means only principals the root delegated to can write revocations
//!   (a stranger cannot fill the bounded set with tokens of its own).
//!
//! A revocation never depends on other revocations (an ancestor revoked
//! later does not undo it), so every node reaches the same set. The set is
//! bounded by [`Config::max_revocations`](super::Config::max_revocations):
//! an update that would exceed it is refused whole.
//!
//! # Validity is a function of the record
//!
//! A record is checked against its chain **at its own timestamp**
//! (`wall_ms / 1000` unix seconds), not at the time it arrives, so that a node
//! catching up after a week agrees with one that saw the record live. "An
//! expired chain takes nothing new" holds because a record stamped after the
//! chain's expiry is refused, and a timestamp more than `max_drift_ms` ahead
//! of the receiver's clock is refused on arrival. Revocations (which only
//! grow and converge) invalidate records retroactively.
//!
//! # Encoding
//!
//! `0x01` (version) ‖ varint len ‖ invocation envelope ‖ `u8` proof count ‖
//! (varint len ‖ delegation envelope)* ‖ varint len ‖ body.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use omega_identity::chain::{
    ChainError, MeshPolicy, Refusal, ReplayGuard, RevocationSet, TokenPos, TokenRef, Validator,
    ValidatorConfig,
};
use omega_identity::ucan::{Command, Delegation, Invocation, Signed, TokenError};
use omega_identity::{Cid, Did, Ipld, Keypair};
use omega_zgraph::{Plan, PlanHash};

use crate::hlc::{Hlc, Stamp};
use crate::id::NodeId;
use crate::wire::{DecodeError, Reader, Writer};

const VERSION: u8 = 1;
const CMD_APPLY: &str = "/manifest/apply";
const CMD_DELETE: &str = "/manifest/delete";
const CMD_IMAGE: &str = "/image/push";
const CMD_REVOKE: &str = "/revoke";
const CMD_UCAN_REVOKE: &str = "/ucan/revoke";
/// The command an emit from outside is authorized by.
pub const CMD_EMIT: &str = "/event/emit";

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// `/manifest/apply`: this plan is the manifest `name`.
    Apply,
    /// `/manifest/delete`: the manifest `name` is gone.
    Delete,
    /// `/image/push`: `name:tag` names this content id.
    Image,
    /// `/revoke`: a token or a node is revoked, forever.
    Revoke,
}

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Revocation {
    /// A token (invocation or delegation) by CID.
    Token(Cid),
    /// A principal: every token it issued or received stops counting, and the
    /// driver should remove it from membership.
    Node(Did),
}

impl fmt::Display for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(cid) => write!(f, "token:{cid}"),
            Self::Node(did) => write!(f, "node:{did}"),
        }
    }
}

/// The authority a writer signs with: its key, the mesh it writes to, its
/// proof chain (root first) and the invocation's expiry and nonce.
#[derive(Clone)]
pub struct Authority<'a> {
    /// The writer's key (the invocation's issuer).
    pub signer: &'a Keypair,
    /// The mesh root's DID (the invocation's subject).
    pub mesh_root: Did,
    /// The delegations from the root to the signer, root first (empty when
    /// the signer is the root).
    pub proofs: Vec<Signed<Delegation>>,
    /// Expiry of the invocation, unix seconds.
    pub exp: u64,
    /// A nonce (makes two otherwise equal invocations distinct).
    pub nonce: Vec<u8>,
}

/// A signed desired-state record.
#[derive(Clone)]
pub struct DesiredRecord {
    invocation: Signed<Invocation>,
    proofs: Vec<Signed<Delegation>>,
    body: Vec<u8>,
}

impl fmt::Debug for DesiredRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesiredRecord")
            .field("cmd", &self.invocation.payload().cmd.as_str())
            .field("iss", &self.invocation.payload().iss)
            .field("proofs", &self.proofs.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why a record is not acceptable (when built, decoded or verified).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The bytes are not a record.
    #[error("malformed record: {0}")]
    Decode(#[from] DecodeError),
    /// A token inside does not decode.
    #[error("malformed token: {0}")]
    Token(String),
    /// Larger than the configured limit.
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The invocation's subject is another mesh's root.
    #[error("record is for mesh root {found}, this mesh's root is {expected}")]
    WrongMesh {
        /// This mesh's root.
        expected: Box<Did>,
        /// The record's subject.
        found: Box<Did>,
    },
    /// Not one of the desired-state commands.
    #[error("command `{0}` is not a desired-state command")]
    UnknownCommand(String),
    /// An argument is missing or of the wrong type.
    #[error("argument `{0}` is missing or malformed")]
    BadArgument(&'static str),
    /// The name is empty, too long or has control characters.
    #[error("name is empty, longer than {max} bytes, or has control characters")]
    BadName {
        /// The limit.
        max: usize,
    },
    /// The delegation chain does not authorize the record at its timestamp,
    /// by the spec or by the mesh policy ([`Refusal::layer`]).
    #[error("not authorized: {0}")]
    Unauthorized(Box<Refusal>),
    /// A principal in the chain is a revoked node.
    #[error("principal {0} is revoked")]
    RevokedPrincipal(Box<Did>),
    /// The body is not the plan whose hash the invocation signs.
    #[error("the plan body does not match the signed plan hash")]
    PlanMismatch,
    /// The body is not a plan in canonical JSON.
    #[error("the plan body is not a canonical plan: {0}")]
    BadPlan(String),
    /// A `/ucan/revoke` whose signer is not in the revoked token's chain.
    #[error(
        "{signer} may not revoke {token}: only its issuer or the issuer of a delegation in its proof chain may"
    )]
    NotInChain {
        /// The signer.
        signer: Box<Did>,
        /// The revoked token.
        token: Box<Cid>,
    },
    /// The record sits under a key or in a map that is not its own.
    #[error("record for `{record}` stored under `{key}`")]
    KeyMismatch {
        /// The document key.
        key: String,
        /// The record's own key.
        record: String,
    },
}

impl From<TokenError> for RecordError {
    fn from(e: TokenError) -> Self {
        Self::Token(e.to_string())
    }
}

impl DesiredRecord {
    /// A signed `/manifest/apply` of `plan` as manifest `name`, stamped `hlc`.
    pub fn apply(
        name: &str,
        plan: &Plan,
        hlc: Hlc,
        auth: Authority<'_>,
    ) -> Result<Self, RecordError> {
        let mut args = stamp_args(name, hlc);
        args.insert("plan".into(), Ipld::String(plan.hash().to_hex()));
        Self::sign(CMD_APPLY, args, plan.canonical_json().into_bytes(), auth)
    }

    /// A signed `/manifest/delete` of manifest `name`, stamped `hlc`.
    pub fn delete(name: &str, hlc: Hlc, auth: Authority<'_>) -> Result<Self, RecordError> {
        Self::sign(CMD_DELETE, stamp_args(name, hlc), Vec::new(), auth)
    }

    /// A signed `/image/push`: `name_tag` (`name:tag`) names `content` (CID text).
    pub fn image(
        name_tag: &str,
        content: &str,
        hlc: Hlc,
        auth: Authority<'_>,
    ) -> Result<Self, RecordError> {
        let mut args = stamp_args(name_tag, hlc);
        args.insert("content".into(), Ipld::String(content.into()));
        Self::sign(CMD_IMAGE, args, Vec::new(), auth)
    }

    /// A signed `/revoke` of `target`, stamped `hlc`.
    pub fn revoke(target: Revocation, hlc: Hlc, auth: Authority<'_>) -> Result<Self, RecordError> {
        let mut args = BTreeMap::new();
        insert_hlc(&mut args, hlc);
        match target {
            Revocation::Token(cid) => args.insert("token".into(), Ipld::String(cid.to_string())),
            Revocation::Node(did) => args.insert("node".into(), Ipld::String(did.to_string())),
        };
        Self::sign(CMD_REVOKE, args, Vec::new(), auth)
    }

    /// A signed `/ucan/revoke` of the delegation `chain.last()`, by its
    /// issuer or the issuer of a delegation in `chain` (root first, from the
    /// mesh root to the revoked delegation). `auth.proofs` is ignored: the
    /// right comes from the chain.
    pub fn revoke_by_chain(
        chain: Vec<Signed<Delegation>>,
        hlc: Hlc,
        auth: Authority<'_>,
    ) -> Result<Self, RecordError> {
        let target = chain.last().ok_or(RecordError::BadArgument("path"))?.cid();
        let mut args = BTreeMap::new();
        insert_hlc(&mut args, hlc);
        args.insert("token".into(), Ipld::String(target.to_string()));
        args.insert(
            "path".into(),
            Ipld::List(chain.iter().map(|d| Ipld::Link(d.cid())).collect()),
        );
        Self::sign(
            CMD_UCAN_REVOKE,
            args,
            Vec::new(),
            Authority {
                proofs: Vec::new(),
                ..auth
            },
        )
        .map(|r| Self { proofs: chain, ..r })
    }

    fn sign(
        cmd: &str,
        args: BTreeMap<String, Ipld>,
        body: Vec<u8>,
        auth: Authority<'_>,
    ) -> Result<Self, RecordError> {
        let cmd = Command::parse(cmd).map_err(|e| RecordError::Token(e.to_string()))?;
        let inv = Invocation::new(auth.signer.did(), auth.mesh_root, cmd, auth.nonce)
            .with_args(args)
            .with_proofs(auth.proofs.iter().map(Signed::cid).collect())
            .with_exp(auth.exp);
        Ok(Self {
            invocation: Signed::sign(inv, auth.signer)?,
            proofs: auth.proofs,
            body,
        })
    }

    /// A grant to emit events into manifest `manifest` from outside
    /// (`omega emit`): an invocation of [`CMD_EMIT`], valid until the
    /// authority's `exp`. Not a desired-state record: it is checked by the
    /// node that takes the emit ([`crate::DesiredState::authorize_emit`]).
    pub fn emit_grant(manifest: &str, auth: Authority<'_>) -> Result<Self, RecordError> {
        let mut args = BTreeMap::new();
        args.insert("manifest".into(), Ipld::String(manifest.into()));
        Self::sign(CMD_EMIT, args, Vec::new(), auth)
    }

    /// Builds a record from tokens and a body made elsewhere (not verified here).
    pub fn from_parts(
        invocation: Signed<Invocation>,
        proofs: Vec<Signed<Delegation>>,
        body: Vec<u8>,
    ) -> Self {
        Self {
            invocation,
            proofs,
            body,
        }
    }

    /// The invocation.
    pub fn invocation(&self) -> &Signed<Invocation> {
        &self.invocation
    }

    /// The canonical encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        len_bytes(&mut w, self.invocation.as_bytes());
        // At most max_chain_len (≤ 255 by Config::validate) proofs are ever accepted.
        w.u8(self.proofs.len().min(255) as u8);
        for p in self.proofs.iter().take(255) {
            len_bytes(&mut w, p.as_bytes());
        }
        len_bytes(&mut w, &self.body);
        w.buf
    }

    /// Decodes a record of at most `max_len` bytes. Never panics.
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, RecordError> {
        if bytes.len() > max_len {
            return Err(RecordError::TooLarge {
                len: bytes.len(),
                max: max_len,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("record version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version).into());
        }
        let invocation = Signed::<Invocation>::decode(take_len(&mut r, "invocation")?)?;
        let count = r.u8("proof count")?;
        let mut proofs = Vec::with_capacity(usize::from(count).min(r.remaining()));
        for _ in 0..count {
            proofs.push(Signed::<Delegation>::decode(take_len(&mut r, "proof")?)?);
        }
        let body = take_len(&mut r, "body")?.to_vec();
        r.finish()?;
        Ok(Self {
            invocation,
            proofs,
            body,
        })
    }
}

fn stamp_args(name: &str, hlc: Hlc) -> BTreeMap<String, Ipld> {
    let mut args = BTreeMap::new();
    args.insert("name".into(), Ipld::String(name.into()));
    insert_hlc(&mut args, hlc);
    args
}

fn insert_hlc(args: &mut BTreeMap<String, Ipld>, hlc: Hlc) {
    args.insert("wall_ms".into(), Ipld::Integer(hlc.wall_ms.into()));
    args.insert("counter".into(), Ipld::Integer(hlc.counter.into()));
}

fn len_bytes(w: &mut Writer, b: &[u8]) {
    w.varint(b.len() as u64);
    w.bytes(b);
}

fn take_len<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], DecodeError> {
    let len = r.varint(what)?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { what })?;
    r.take(len, what)
}

/// What a record establishes once verified.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) kind: RecordKind,
    /// The document key: the manifest name, `name:tag`, or the revocation target.
    pub(crate) key: String,
    pub(crate) stamp: Stamp,
    pub(crate) plan: Option<Arc<(Plan, PlanHash)>>,
    pub(crate) content: Option<String>,
    pub(crate) revocation: Option<Revocation>,
    /// Every token CID (invocation and proofs) and principal in the chain.
    pub(crate) tokens: Vec<Cid>,
    pub(crate) principals: Vec<Did>,
    pub(crate) bytes: Arc<[u8]>,
}

impl Verified {
    pub(crate) fn is_revoked(
        &self,
        tokens: &RevocationSet,
        nodes: &std::collections::BTreeSet<Did>,
    ) -> bool {
        self.tokens.iter().any(|c| tokens.contains(c))
            || self.principals.iter().any(|d| nodes.contains(d))
    }
}

/// Decodes and verifies `bytes` as an emit grant of mesh `root` at
/// `now_secs`: returns the signer, the manifest it names, and when the
/// grant expires (unix seconds; the earliest `exp` of the invocation and
/// its proofs, `None` if none expires).
pub(crate) fn verify_emit(
    bytes: &[u8],
    root: &Did,
    validator: &ValidatorConfig,
    policy: &MeshPolicy,
    now_secs: u64,
    revoked: &RevocationSet,
    revoked_nodes: &std::collections::BTreeSet<Did>,
) -> Result<(Did, String, Option<u64>), RecordError> {
    let rec = DesiredRecord::decode(bytes, 64 << 10)?;
    let p = rec.invocation.payload();
    if p.sub != *root {
        return Err(RecordError::WrongMesh {
            expected: Box::new(*root),
            found: Box::new(p.sub),
        });
    }
    if p.cmd.as_str() != CMD_EMIT {
        return Err(RecordError::UnknownCommand(p.cmd.as_str().into()));
    }
    let mut principals = vec![p.iss];
    for d in &rec.proofs {
        principals.extend([d.payload().iss, d.payload().aud]);
    }
    if let Some(d) = principals.iter().find(|d| revoked_nodes.contains(d)) {
        return Err(RecordError::RevokedPrincipal(Box::new(*d)));
    }
    let manifest = str_arg(&p.args, "manifest")?.to_owned();
    let mut fresh = ReplayGuard::new(1);
    policy
        .validate(
            &Validator::new(validator.clone()),
            &rec.invocation,
            rec.proofs.as_slice(),
            now_secs,
            revoked,
            &mut fresh,
        )
        .map_err(|e| RecordError::Unauthorized(Box::new(e)))?;
    let exp = std::iter::once(p.exp)
        .chain(rec.proofs.iter().map(|d| d.payload().exp))
        .flatten()
        .min();
    Ok((p.iss, manifest, exp))
}

/// Decodes and verifies `bytes` as a record of mesh `root`.
pub(crate) fn verify(
    bytes: &[u8],
    root: &Did,
    config: &super::Config,
    revoked: &RevocationSet,
    revoked_nodes: &std::collections::BTreeSet<Did>,
) -> Result<Verified, RecordError> {
    let (validator, policy) = (&config.validator, &config.policy);
    let max_name_len = config.max_name_len;
    let rec = DesiredRecord::decode(bytes, config.max_record_bytes)?;
    let p = rec.invocation.payload();
    if p.sub != *root {
        return Err(RecordError::WrongMesh {
            expected: Box::new(*root),
            found: Box::new(p.sub),
        });
    }
    if p.cmd.as_str() == CMD_UCAN_REVOKE {
        return verify_ucan_revoke(&rec, bytes, validator, policy, revoked_nodes);
    }
    let kind = match p.cmd.as_str() {
        CMD_APPLY => RecordKind::Apply,
        CMD_DELETE => RecordKind::Delete,
        CMD_IMAGE => RecordKind::Image,
        CMD_REVOKE => RecordKind::Revoke,
        other => return Err(RecordError::UnknownCommand(other.into())),
    };
    let hlc = Hlc::new(
        int_arg(&p.args, "wall_ms")?,
        u32::try_from(int_arg(&p.args, "counter")?)
            .map_err(|_| RecordError::BadArgument("counter"))?,
    );
    let mut principals = vec![p.iss];
    for d in &rec.proofs {
        principals.extend([d.payload().iss, d.payload().aud]);
    }
    if let Some(d) = principals.iter().find(|d| revoked_nodes.contains(d)) {
        return Err(RecordError::RevokedPrincipal(Box::new(*d)));
    }
    let mut fresh = ReplayGuard::new(1);
    policy
        .validate(
            &Validator::new(validator.clone()),
            &rec.invocation,
            rec.proofs.as_slice(),
            hlc.wall_ms / 1000,
            revoked,
            &mut fresh,
        )
        .map_err(|e| RecordError::Unauthorized(Box::new(e)))?;
    let mut out = Verified {
        kind,
        key: String::new(),
        stamp: Stamp {
            hlc,
            signer: NodeId::from(&p.iss),
        },
        plan: None,
        content: None,
        revocation: None,
        tokens: std::iter::once(rec.invocation.cid())
            .chain(rec.proofs.iter().map(Signed::cid))
            .collect(),
        principals,
        bytes: Arc::from(bytes),
    };
    if kind == RecordKind::Revoke {
        let target = match (str_arg(&p.args, "token"), str_arg(&p.args, "node")) {
            (Ok(t), Err(_)) => {
                Revocation::Token(t.parse().map_err(|_| RecordError::BadArgument("token"))?)
            }
            (Err(_), Ok(n)) => {
                Revocation::Node(n.parse().map_err(|_| RecordError::BadArgument("node"))?)
            }
            _ => return Err(RecordError::BadArgument("token")),
        };
        out.key = target.to_string();
        out.revocation = Some(target);
        return Ok(out);
    }
    let name = str_arg(&p.args, "name")?;
    if name.is_empty() || name.len() > max_name_len || name.chars().any(char::is_control) {
        return Err(RecordError::BadName { max: max_name_len });
    }
    out.key = name.to_owned();
    match kind {
        RecordKind::Apply => {
            let signed: PlanHash = str_arg(&p.args, "plan")?
                .parse()
                .map_err(|_| RecordError::BadArgument("plan"))?;
            let plan: Plan = serde_json::from_slice(&rec.body)
                .map_err(|e| RecordError::BadPlan(e.to_string()))?;
            if plan.canonical_json().as_bytes() != rec.body.as_slice() {
                return Err(RecordError::BadPlan("not in canonical form".into()));
            }
            if plan.hash() != signed {
                return Err(RecordError::PlanMismatch);
            }
            // A signature says who wrote the plan, not that it is sound:
            // every manifest rule (and every bound, such as the length of a
            // `peers` glob) is checked again before placement sees it.
            plan.revalidate().map_err(RecordError::BadPlan)?;
            out.plan = Some(Arc::new((plan, signed)));
        }
        RecordKind::Image => out.content = Some(str_arg(&p.args, "content")?.to_owned()),
        RecordKind::Delete | RecordKind::Revoke => {}
    }
    if kind != RecordKind::Apply && !rec.body.is_empty() {
        return Err(RecordError::BadArgument("body"));
    }
    Ok(out)
}

/// A `/ucan/revoke` record (see the module docs, "Who may revoke a token").
fn verify_ucan_revoke(
    rec: &DesiredRecord,
    bytes: &[u8],
    validator: &ValidatorConfig,
    policy: &MeshPolicy,
    revoked_nodes: &std::collections::BTreeSet<Did>,
) -> Result<Verified, RecordError> {
    let inv = &rec.invocation;
    let p = inv.payload();
    let unauthorized = |e: Refusal| RecordError::Unauthorized(Box::new(e));
    let inv_ref = TokenRef {
        pos: TokenPos::Invocation,
        cid: inv.cid(),
    };
    let hlc = Hlc::new(
        int_arg(&p.args, "wall_ms")?,
        u32::try_from(int_arg(&p.args, "counter")?)
            .map_err(|_| RecordError::BadArgument("counter"))?,
    );
    let at = hlc.wall_ms / 1000;
    if revoked_nodes.contains(&p.iss) {
        return Err(RecordError::RevokedPrincipal(Box::new(p.iss)));
    }
    inv.verify_signature()
        .map_err(|_| unauthorized(Refusal::Spec(ChainError::BadSignature { token: inv_ref })))?;
    if !p.prf.is_empty() {
        return Err(RecordError::BadArgument("prf"));
    }
    // The mesh policy: invocations expire, and this one is checked at its
    // own timestamp like every record.
    let Some(exp) = p.exp else {
        return Err(unauthorized(Refusal::Mesh(
            omega_identity::chain::PolicyError::UnboundedInvocation { cid: inv.cid() },
        )));
    };
    if at > exp.saturating_add(validator.clock_skew_secs) {
        return Err(unauthorized(Refusal::Spec(ChainError::Expired {
            token: inv_ref,
            exp,
            now: at,
        })));
    }
    let target: Cid = str_arg(&p.args, "token")?
        .parse()
        .map_err(|_| RecordError::BadArgument("token"))?;
    let path: Vec<Cid> = match p.args.get("path") {
        Some(Ipld::List(items)) => items
            .iter()
            .map(|i| match i {
                Ipld::Link(c) => Ok(*c),
                _ => Err(RecordError::BadArgument("path")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(RecordError::BadArgument("path")),
    };
    let cids: Vec<Cid> = rec.proofs.iter().map(Signed::cid).collect();
    if path != cids || cids.last() != Some(&target) {
        return Err(RecordError::BadArgument("path"));
    }
    // Revocations aside: a revocation must not depend on other ones.
    let valid = policy
        .validate_delegation_chain(
            &Validator::new(validator.clone()),
            &rec.proofs,
            at,
            &RevocationSet::new(),
        )
        .map_err(unauthorized)?;
    let in_chain = rec.proofs.iter().any(|d| d.payload().iss == p.iss);
    if valid.root_issuer != p.sub || !in_chain {
        return Err(RecordError::NotInChain {
            signer: Box::new(p.iss),
            token: Box::new(target),
        });
    }
    if !rec.body.is_empty() {
        return Err(RecordError::BadArgument("body"));
    }
    let revocation = Revocation::Token(target);
    Ok(Verified {
        kind: RecordKind::Revoke,
        key: revocation.to_string(),
        stamp: Stamp {
            hlc,
            signer: NodeId::from(&p.iss),
        },
        plan: None,
        content: None,
        revocation: Some(revocation),
        // Only the revocation itself: its path is evidence, not authority
        // that a later revocation could take back.
        tokens: vec![inv.cid()],
        principals: vec![p.iss],
        bytes: Arc::from(bytes),
    })
}

fn int_arg(args: &BTreeMap<String, Ipld>, key: &'static str) -> Result<u64, RecordError> {
    match args.get(key) {
        Some(Ipld::Integer(i)) => u64::try_from(*i).map_err(|_| RecordError::BadArgument(key)),
        _ => Err(RecordError::BadArgument(key)),
    }
}

fn str_arg<'a>(
    args: &'a BTreeMap<String, Ipld>,
    key: &'static str,
) -> Result<&'a str, RecordError> {
    match args.get(key) {
        Some(Ipld::String(s)) => Ok(s),
        _ => Err(RecordError::BadArgument(key)),
    }
}
