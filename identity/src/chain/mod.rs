//! Validation of capability chains: an invocation and the delegations it cites
//! as proof, with revocation and replay protection, in two layers.
//!
//! - **The spec layer**, [`Validator`], accepts exactly what UCAN 1.0 accepts,
//!   so tokens made by other implementations validate: an invocation may have
//!   `exp: null`, and a delegation below the root may be a powerline
//!   (`sub: null`). Its failures are [`ChainError`]s.
//! - **The mesh layer**, [`MeshPolicy`], is what an Omega node applies on top:
//!   invocations must expire (so that the replay guard can forget them), and
//!   no powerline unless [`MeshPolicy::allow_powerline`]. Its failures are
//!   [`PolicyError`]s. [`MeshPolicy::validate`] runs both and says which layer
//!   refused ([`Refusal`]).
//!
//! # Contract of the spec layer
//!
//! [`Validator::validate`] takes a signed invocation, a [`ProofStore`] to look its
//! `prf` CIDs up in, the current unix time, a [`RevocationSet`] and a
//! [`ReplayGuard`]. It checks, in this order, and stops at the first failure,
//! each failure reported by its own class ([`ChainError::class`]):
//!
//! 1. **The invocation's signature** ([`ChainError::BadSignature`]; a
//!    signature that is not 64 bytes is a bad signature too, not a malformed
//!    token). Nothing the token says counts before its issuer is known to
//!    have said it.
//! 2. **Shape.** `prf` may be empty only when the invoker is the subject
//!    (`iss == sub`), else [`ChainError::EmptyChain`]; at most
//!    [`ValidatorConfig::max_chain_len`] proofs ([`ChainError::ChainTooLong`]).
//! 3. **Proof lookup.** Every CID in `prf` resolves
//!    ([`ChainError::MissingProof`]) to a token whose CID is that CID
//!    ([`ChainError::ProofCidMismatch`]).
//! 4. **Revocation.** No token of the chain, invocation included, is revoked
//!    ([`ChainError::Revoked`]).
//! 5. **The proofs' signatures**, root first ([`ChainError::BadSignature`]).
//!    Results are cached in each decoded token, so a store of decoded
//!    delegations pays for each once.
//! 6. **Time.** Every delegation, then the invocation, is within its bounds,
//!    allowing `clock_skew_secs` on both sides ([`ChainError::Expired`],
//!    [`ChainError::NotYetValid`]). A `null` `exp` never expires.
//! 7. **Principals.** The root names a subject ([`ChainError::PowerlineRoot`]:
//!    a powerline passes on authority the issuer already has, so it cannot
//!    start a chain) and is issued by it ([`ChainError::RootNotSubject`]);
//!    every non-null `sub` is the invocation's `sub`
//!    ([`ChainError::SubjectMismatch`]); each delegation's `aud` is the next
//!    token's `iss`, the last one's the invoker's
//!    ([`ChainError::AudienceIssuerMismatch`]).
//! 8. **Commands.** Each `cmd` covers the next token's
//!    ([`ChainError::CommandNotCovered`]).
//! 9. **Policies.** The invocation's `args` satisfy the policy of every
//!    delegation ([`ChainError::PolicyMismatch`]).
//! 10. **Replay.** An invocation with an `exp` has not been accepted before
//!     ([`ChainError::Replayed`]); it is then remembered until
//!     `exp + clock_skew_secs` ([`ReplayGuard`], bounded). An invocation with
//!     `exp: null` is valid by the spec but cannot be remembered for ever, so
//!     the spec layer does not record it and says so
//!     ([`ValidChain::replay_protected`] is false): guarding against its
//!     replay is the caller's concern. The mesh layer refuses such invocations.
//!
//! Time is an argument: this module never reads a clock. The executor must also
//! check that the invocation is meant for it (`sub` or `aud` is its own DID);
//! the validator does not know the executor's identity.

// Errors name tokens by CID and principals by DID so that they explain
// themselves; that makes `ChainError` large, which is fine for a function that
// runs a handful of signature checks per call.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;

use cid::Cid;

use crate::did::Did;
use crate::policy::{EvalError, Policy};
use crate::ucan::{Command, Delegation, Invocation, Signed};

#[cfg(test)]
mod tests;

/// Limits of a [`Validator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// Seconds of clock difference tolerated on `exp` and `nbf`. Default 60.
    pub clock_skew_secs: u64,
    /// Most delegations in one chain. Default 16.
    pub max_chain_len: usize,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            clock_skew_secs: 60,
            max_chain_len: 16,
        }
    }
}

/// Where a token sits in the chain under validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPos {
    /// The invocation.
    Invocation,
    /// The delegation at this index of `prf` (0 is the root).
    Delegation(usize),
}

/// A token named by its position and CID, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRef {
    /// Position in the chain.
    pub pos: TokenPos,
    /// The token's CID.
    pub cid: Cid,
}

impl fmt::Display for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            TokenPos::Invocation => write!(f, "invocation {}", self.cid),
            TokenPos::Delegation(i) => write!(f, "delegation[{i}] {}", self.cid),
        }
    }
}

/// Why a chain is not valid. Each variant names the token and field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A signature does not verify.
    #[error("{token}: signature does not verify against `iss`")]
    BadSignature {
        /// The token.
        token: TokenRef,
    },
    /// A token's `exp` has passed.
    #[error("{token}: field `exp`: expired at {exp}, now is {now}")]
    Expired {
        /// The token.
        token: TokenRef,
        /// Its `exp`.
        exp: u64,
        /// The time of validation.
        now: u64,
    },
    /// A delegation's `nbf` is still in the future.
    #[error("{token}: field `nbf`: not valid before {nbf}, now is {now}")]
    NotYetValid {
        /// The token.
        token: TokenRef,
        /// Its `nbf`.
        nbf: u64,
        /// The time of validation.
        now: u64,
    },
    /// A delegation's `aud` is not the next token's `iss`.
    #[error("{token}: field `aud` is {aud}, but the next token is issued by {next_iss}")]
    AudienceIssuerMismatch {
        /// The delegation.
        token: TokenRef,
        /// Its `aud`.
        aud: Did,
        /// The next token's `iss`.
        next_iss: Did,
    },
    /// A delegation's `sub` is not the chain's subject.
    #[error("{token}: field `sub` is {sub}, expected {expected}")]
    SubjectMismatch {
        /// The delegation.
        token: TokenRef,
        /// Its `sub`.
        sub: Did,
        /// The chain's subject.
        expected: Did,
    },
    /// A `prf` CID is not in the proof store.
    #[error("invocation field `prf[{index}]`: proof {cid} not found")]
    MissingProof {
        /// Index in `prf`.
        index: usize,
        /// The CID looked up.
        cid: Cid,
    },
    /// The proof store returned a token with another CID.
    #[error("invocation field `prf[{index}]`: store returned {found} for {expected}")]
    ProofCidMismatch {
        /// Index in `prf`.
        index: usize,
        /// The CID looked up.
        expected: Cid,
        /// The CID of what came back.
        found: Cid,
    },
    /// The root delegation has `sub: null`: a powerline cannot start a chain.
    #[error("{token}: field `sub` is null, but the root delegation must name the subject")]
    PowerlineRoot {
        /// The root delegation.
        token: TokenRef,
    },
    /// A command is wider than the one delegated to its issuer.
    #[error("{token}: field `cmd` {cmd} does not cover {next} in the next token")]
    CommandNotCovered {
        /// The delegation whose `cmd` is too narrow.
        token: TokenRef,
        /// Its `cmd`.
        cmd: Command,
        /// The next token's `cmd`.
        next: Command,
    },
    /// The invocation's `args` do not satisfy a delegation's `pol`.
    #[error("{token}: field `pol`: the invocation's `args` {}", match .error {
        None => "do not satisfy this policy".to_owned(),
        Some(e) => format!("could not be checked: {e}"),
    })]
    PolicyMismatch {
        /// The delegation.
        token: TokenRef,
        /// An evaluation error, when there was one instead of a verdict.
        error: Option<EvalError>,
    },
    /// A token is in the revocation set.
    #[error("{token}: revoked")]
    Revoked {
        /// The token.
        token: TokenRef,
    },
    /// The invocation was accepted before.
    #[error("invocation {cid}: already seen (replay)")]
    Replayed {
        /// The invocation's CID.
        cid: Cid,
    },
    /// The root delegation is not issued by the subject.
    #[error("{token}: field `iss` is {iss}, but the root must be issued by the subject {subject}")]
    RootNotSubject {
        /// The root delegation.
        token: TokenRef,
        /// Its `iss`.
        iss: Did,
        /// The subject.
        subject: Did,
    },
    /// No proofs, and the invoker is not the subject.
    #[error("no proofs, and the invoker is not the subject")]
    EmptyChain,
    /// More proofs than [`ValidatorConfig::max_chain_len`].
    #[error("chain has {len} delegations, more than the limit of {max}")]
    ChainTooLong {
        /// Proofs given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The replay guard is full of unexpired invocations.
    #[error(
        "invocation {cid}: replay guard is full ({max_entries} unexpired invocations); try again later"
    )]
    ReplayGuardFull {
        /// The invocation's CID.
        cid: Cid,
        /// The guard's capacity.
        max_entries: usize,
    },
}

impl ChainError {
    /// The failure class, a stable name for scripts and tables:
    /// `bad-signature`, `expired`, `not-yet-valid`, `audience-mismatch`,
    /// `subject-mismatch`, `root-not-subject`, `powerline-root`,
    /// `missing-proof`, `proof-cid-mismatch`, `command-not-covered`,
    /// `policy-mismatch`, `revoked`, `replayed`, `replay-guard-full`,
    /// `empty-chain`, `chain-too-long`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::BadSignature { .. } => "bad-signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not-yet-valid",
            Self::AudienceIssuerMismatch { .. } => "audience-mismatch",
            Self::SubjectMismatch { .. } => "subject-mismatch",
            Self::RootNotSubject { .. } => "root-not-subject",
            Self::PowerlineRoot { .. } => "powerline-root",
            Self::MissingProof { .. } => "missing-proof",
            Self::ProofCidMismatch { .. } => "proof-cid-mismatch",
            Self::CommandNotCovered { .. } => "command-not-covered",
            Self::PolicyMismatch { .. } => "policy-mismatch",
            Self::Revoked { .. } => "revoked",
            Self::Replayed { .. } => "replayed",
            Self::ReplayGuardFull { .. } => "replay-guard-full",
            Self::EmptyChain => "empty-chain",
            Self::ChainTooLong { .. } => "chain-too-long",
        }
    }
}

/// Why the mesh layer ([`MeshPolicy`]) refuses a chain the spec accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The invocation has `exp: null`; the mesh requires invocations to
    /// expire so that replay protection stays bounded.
    #[error("invocation {cid}: field `exp` is null; this mesh requires invocations to expire")]
    UnboundedInvocation {
        /// The invocation's CID.
        cid: Cid,
    },
    /// A powerline delegation (`sub: null`) where the policy refuses them.
    #[error("{token}: field `sub` is null (powerline), which this mesh does not accept")]
    PowerlineNotAllowed {
        /// The delegation.
        token: TokenRef,
    },
}

impl PolicyError {
    /// The failure class: `unbounded-invocation` or `powerline-not-allowed`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::UnboundedInvocation { .. } => "unbounded-invocation",
            Self::PowerlineNotAllowed { .. } => "powerline-not-allowed",
        }
    }
}

/// Which layer refused a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// UCAN 1.0 itself ([`Validator`]).
    Spec,
    /// The mesh's stricter rules ([`MeshPolicy`]).
    Mesh,
}

impl Layer {
    /// `spec` or `mesh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::Mesh => "mesh",
        }
    }
}

/// A chain refused by one of the two layers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[allow(clippy::large_enum_variant)] // both are returned by value, like `ChainError`
#[non_exhaustive]
pub enum Refusal {
    /// Invalid by UCAN 1.0.
    #[error("refused by the spec: {0}")]
    Spec(ChainError),
    /// Valid by UCAN 1.0, refused by the mesh policy.
    #[error("refused by the mesh policy: {0}")]
    Mesh(PolicyError),
}

impl Refusal {
    /// The layer that refused.
    pub fn layer(&self) -> Layer {
        match self {
            Self::Spec(_) => Layer::Spec,
            Self::Mesh(_) => Layer::Mesh,
        }
    }

    /// The failure class ([`ChainError::class`], [`PolicyError::class`]).
    pub fn class(&self) -> &'static str {
        match self {
            Self::Spec(e) => e.class(),
            Self::Mesh(e) => e.class(),
        }
    }

    /// The spec-layer error, if that layer refused.
    pub fn as_spec(&self) -> Option<&ChainError> {
        match self {
            Self::Spec(e) => Some(e),
            Self::Mesh(_) => None,
        }
    }
}

impl From<ChainError> for Refusal {
    fn from(e: ChainError) -> Self {
        Self::Spec(e)
    }
}

impl From<PolicyError> for Refusal {
    fn from(e: PolicyError) -> Self {
        Self::Mesh(e)
    }
}

/// The mesh's rules on top of the spec: what an Omega node accepts.
///
/// - Invocations must have an `exp` ([`PolicyError::UnboundedInvocation`]),
///   so that every accepted invocation is in the bounded [`ReplayGuard`]
///   until it expires.
/// - No delegation may be a powerline unless [`MeshPolicy::allow_powerline`]
///   ([`PolicyError::PowerlineNotAllowed`]).
///
/// The spec layer runs first; a chain it refuses is reported as
/// [`Refusal::Spec`] whatever the policy, so the reason is always the
/// chain's own defect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshPolicy {
    /// Accept delegations with `sub: null` (powerline). Default `false`.
    pub allow_powerline: bool,
}

impl MeshPolicy {
    /// Validates by the spec ([`Validator::check`]), then by this policy, then
    /// records the invocation in `seen` (which the policy has made sure it can).
    pub fn validate<P: ProofStore + ?Sized>(
        &self,
        validator: &Validator,
        inv: &Signed<Invocation>,
        proofs: &P,
        now: u64,
        revoked: &RevocationSet,
        seen: &mut ReplayGuard,
    ) -> Result<ValidChain, Refusal> {
        let mut ok = validator.check(inv, proofs, now, revoked)?;
        if inv.payload().exp.is_none() {
            return Err(PolicyError::UnboundedInvocation { cid: inv.cid() }.into());
        }
        self.check_powerlines(&ok.powerlines, &ok.proofs)?;
        validator.record(inv, now, seen)?;
        ok.replay_protected = true;
        Ok(ok)
    }

    /// [`Validator::validate_delegation_chain`], then this policy.
    pub fn validate_delegation_chain(
        &self,
        validator: &Validator,
        chain: &[Signed<Delegation>],
        now: u64,
        revoked: &RevocationSet,
    ) -> Result<ValidDelegationChain, Refusal> {
        let ok = validator.validate_delegation_chain(chain, now, revoked)?;
        self.check_powerlines(&ok.powerlines, &ok.cids)?;
        Ok(ok)
    }

    fn check_powerlines(&self, powerlines: &[usize], cids: &[Cid]) -> Result<(), PolicyError> {
        match powerlines.first() {
            Some(&i) if !self.allow_powerline => Err(PolicyError::PowerlineNotAllowed {
                token: TokenRef {
                    pos: TokenPos::Delegation(i),
                    cid: cids[i],
                },
            }),
            _ => Ok(()),
        }
    }
}

/// Looks delegations up by CID.
pub trait ProofStore {
    /// The delegation with this CID, if known.
    fn get_proof(&self, cid: &Cid) -> Option<&Signed<Delegation>>;
}

impl<S: BuildHasher> ProofStore for HashMap<Cid, Signed<Delegation>, S> {
    fn get_proof(&self, cid: &Cid) -> Option<&Signed<Delegation>> {
        self.get(cid)
    }
}

impl ProofStore for [Signed<Delegation>] {
    fn get_proof(&self, cid: &Cid) -> Option<&Signed<Delegation>> {
        self.iter().find(|d| d.cid() == *cid)
    }
}

/// CIDs of revoked tokens. It only grows.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet(HashSet<Cid>);

impl RevocationSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes `cid`; returns false if it was already revoked.
    pub fn insert(&mut self, cid: Cid) -> bool {
        self.0.insert(cid)
    }

    /// True if `cid` is revoked.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.0.contains(cid)
    }

    /// Number of revoked CIDs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The revoked CIDs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Cid> {
        self.0.iter()
    }
}

impl FromIterator<Cid> for RevocationSet {
    fn from_iter<I: IntoIterator<Item = Cid>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Extend<Cid> for RevocationSet {
    fn extend<I: IntoIterator<Item = Cid>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// The CIDs of accepted invocations, each kept until it has expired, so that an
/// invocation is accepted at most once.
///
/// Bounded by `max_entries`. When full, it first forgets the entries whose
/// expiry has passed (they would be refused as expired anyway); if it is still
/// full, the new invocation is **refused** ([`ChainError::ReplayGuardFull`]),
/// never admitted unrecorded. Invocations without `exp` never reach the
/// guard: it could never forget them (see the module docs, step 10).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    max_entries: usize,
    entries: HashMap<Cid, u64>,
    by_expiry: BTreeSet<(u64, Cid)>,
}

/// Why the [`ReplayGuard`] refused an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Seen before.
    #[error("already seen")]
    Replayed,
    /// Full of unexpired entries.
    #[error("replay guard is full")]
    Full,
}

impl ReplayGuard {
    /// A guard that remembers at most `max_entries` invocations.
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Capacity.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True if `cid` is remembered.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.entries.contains_key(cid)
    }

    /// Forgets entries that expired before `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some(&(exp, cid)) = self.by_expiry.first() {
            if exp >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&cid);
        }
    }

    /// Records `cid` until `keep_until` (unix seconds), or refuses it.
    pub fn check_and_insert(
        &mut self,
        cid: Cid,
        keep_until: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        if self.entries.contains_key(&cid) {
            return Err(ReplayError::Replayed);
        }
        if self.entries.len() >= self.max_entries {
            self.prune(now);
            if self.entries.len() >= self.max_entries {
                return Err(ReplayError::Full);
            }
        }
        self.entries.insert(cid, keep_until);
        self.by_expiry.insert((keep_until, cid));
        Ok(())
    }
}

/// What a valid invocation chain establishes.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidChain {
    /// The invocation's CID.
    pub invocation: Cid,
    /// Who invoked.
    pub invoker: Did,
    /// Whose resource.
    pub subject: Did,
    /// The root delegation's issuer (the subject itself).
    pub root_issuer: Did,
    /// The command invoked.
    pub cmd: Command,
    /// The proof CIDs, root first.
    pub proofs: Vec<Cid>,
    /// The earliest `exp` in the chain (`None`: nothing in it expires).
    pub expires_at: Option<u64>,
    /// Indices in `proofs` of the powerline delegations (`sub: null`).
    pub powerlines: Vec<usize>,
    /// True when the invocation was recorded in the replay guard, so that a
    /// second presentation is refused. False for an invocation with
    /// `exp: null` (valid by the spec, but no bounded guard can hold it) and
    /// for [`Validator::check`], which does not record.
    pub replay_protected: bool,
}

/// What a valid delegation chain (without an invocation) grants its holder.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidDelegationChain {
    /// The root's issuer, who is the subject.
    pub root_issuer: Did,
    /// The subject.
    pub subject: Did,
    /// The last delegation's `aud`, who now holds the capability.
    pub holder: Did,
    /// The effective command: the leaf's, which every earlier one covers.
    pub cmd: Command,
    /// Every delegation's policy, root first; all must hold.
    pub policies: Vec<Policy>,
    /// The earliest `exp` in the chain (`None`: none expires).
    pub expires_at: Option<u64>,
    /// The latest `nbf` in the chain.
    pub not_before: Option<u64>,
    /// The delegations' CIDs, root first.
    pub cids: Vec<Cid>,
    /// Indices in `cids` of the powerline delegations (`sub: null`).
    pub powerlines: Vec<usize>,
}

impl ValidDelegationChain {
    /// True if the holder may invoke `cmd` with `args` under this chain.
    pub fn allows(
        &self,
        cmd: &Command,
        args: &std::collections::BTreeMap<String, crate::Ipld>,
    ) -> Result<bool, EvalError> {
        if !self.cmd.covers(cmd) {
            return Ok(false);
        }
        for p in &self.policies {
            if !p.matches(args)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Checks chains by UCAN 1.0; see the module docs for the contract.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    /// Limits.
    pub config: ValidatorConfig,
}

fn tref(i: usize, d: &Signed<Delegation>) -> TokenRef {
    TokenRef {
        pos: TokenPos::Delegation(i),
        cid: d.cid(),
    }
}

impl Validator {
    /// A validator with `config`.
    pub fn new(config: ValidatorConfig) -> Self {
        Self { config }
    }

    fn check_time(
        &self,
        token: TokenRef,
        exp: Option<u64>,
        nbf: Option<u64>,
        now: u64,
    ) -> Result<(), ChainError> {
        let skew = self.config.clock_skew_secs;
        if let Some(exp) = exp
            && now > exp.saturating_add(skew)
        {
            return Err(ChainError::Expired { token, exp, now });
        }
        if let Some(nbf) = nbf
            && now.saturating_add(skew) < nbf
        {
            return Err(ChainError::NotYetValid { token, nbf, now });
        }
        Ok(())
    }

    /// Validates an invocation and its proofs at `now` (unix seconds), steps
    /// 1–10 of the module docs: [`Validator::check`], then replay protection
    /// for an invocation that has an `exp`.
    pub fn validate<P: ProofStore + ?Sized>(
        &self,
        inv: &Signed<Invocation>,
        proofs: &P,
        now: u64,
        revoked: &RevocationSet,
        seen: &mut ReplayGuard,
    ) -> Result<ValidChain, ChainError> {
        let mut ok = self.check(inv, proofs, now, revoked)?;
        if inv.payload().exp.is_some() {
            self.record(inv, now, seen)?;
            ok.replay_protected = true;
        }
        Ok(ok)
    }

    /// Steps 1–9 of the module docs, without replay protection: nothing is
    /// recorded, and [`ValidChain::replay_protected`] is false.
    pub fn check<P: ProofStore + ?Sized>(
        &self,
        inv: &Signed<Invocation>,
        proofs: &P,
        now: u64,
        revoked: &RevocationSet,
    ) -> Result<ValidChain, ChainError> {
        let p = inv.payload();
        let inv_ref = TokenRef {
            pos: TokenPos::Invocation,
            cid: inv.cid(),
        };
        // 1. The invocation's signature (checked once: not worth the
        // process-wide cache, see `Signed::verify_signature_once`).
        inv.verify_signature_once()
            .map_err(|_| ChainError::BadSignature { token: inv_ref })?;
        // 2. Shape.
        if p.prf.is_empty() && p.iss != p.sub {
            return Err(ChainError::EmptyChain);
        }
        if p.prf.len() > self.config.max_chain_len {
            return Err(ChainError::ChainTooLong {
                len: p.prf.len(),
                max: self.config.max_chain_len,
            });
        }
        // 3. Proof lookup.
        let mut chain = Vec::with_capacity(p.prf.len());
        for (index, cid) in p.prf.iter().enumerate() {
            let d = proofs
                .get_proof(cid)
                .ok_or(ChainError::MissingProof { index, cid: *cid })?;
            if d.cid() != *cid {
                return Err(ChainError::ProofCidMismatch {
                    index,
                    expected: *cid,
                    found: d.cid(),
                });
            }
            chain.push(d);
        }
        // 4. Revocation.
        if revoked.contains(&inv_ref.cid) {
            return Err(ChainError::Revoked { token: inv_ref });
        }
        self.check_revoked(&chain, revoked)?;
        // 5. The proofs' signatures.
        self.check_signatures(&chain)?;
        // 6. Time.
        self.check_times(&chain, now)?;
        self.check_time(inv_ref, p.exp, None, now)?;
        // 7. Principals, within the chain, then to the invoker.
        self.check_links(&chain, &p.sub)?;
        let last = chain.iter().enumerate().next_back();
        if let Some((i, last)) = last
            && last.payload().aud != p.iss
        {
            return Err(ChainError::AudienceIssuerMismatch {
                token: tref(i, last),
                aud: last.payload().aud,
                next_iss: p.iss,
            });
        }
        // 8. Commands, within the chain, then to the invocation.
        self.check_commands(&chain)?;
        if let Some((i, last)) = last {
            let l = last.payload();
            if !l.cmd.covers(&p.cmd) {
                return Err(ChainError::CommandNotCovered {
                    token: tref(i, last),
                    cmd: l.cmd.clone(),
                    next: p.cmd.clone(),
                });
            }
        }
        // 9. Policies.
        for (i, d) in chain.iter().enumerate() {
            match d.payload().pol.matches(&p.args) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ChainError::PolicyMismatch {
                        token: tref(i, d),
                        error: None,
                    });
                }
                Err(e) => {
                    return Err(ChainError::PolicyMismatch {
                        token: tref(i, d),
                        error: Some(e),
                    });
                }
            }
        }
        let expires_at = chain
            .iter()
            .map(|d| d.payload().exp)
            .chain([p.exp])
            .flatten()
            .min();
        Ok(ValidChain {
            invocation: inv.cid(),
            invoker: p.iss,
            subject: p.sub,
            root_issuer: chain.first().map_or(p.sub, |d| d.payload().iss),
            cmd: p.cmd.clone(),
            proofs: p.prf.clone(),
            expires_at,
            powerlines: powerlines(&chain),
            replay_protected: false,
        })
    }

    /// Step 10: remembers an invocation that has an `exp` until it expires, or
    /// refuses it as a replay (or because the guard is full).
    fn record(
        &self,
        inv: &Signed<Invocation>,
        now: u64,
        seen: &mut ReplayGuard,
    ) -> Result<(), ChainError> {
        let Some(exp) = inv.payload().exp else {
            return Ok(());
        };
        let keep_until = exp.saturating_add(self.config.clock_skew_secs);
        seen.check_and_insert(inv.cid(), keep_until, now)
            .map_err(|e| match e {
                ReplayError::Replayed => ChainError::Replayed { cid: inv.cid() },
                ReplayError::Full => ChainError::ReplayGuardFull {
                    cid: inv.cid(),
                    max_entries: seen.max_entries(),
                },
            })
    }

    /// Validates a delegation chain presented without an invocation (such as a
    /// join token), root first: the same steps as for an invocation's proofs
    /// (revocation, signatures, time bounds at `now`, principals, commands).
    /// The subject is the root's `sub`.
    pub fn validate_delegation_chain(
        &self,
        chain: &[Signed<Delegation>],
        now: u64,
        revoked: &RevocationSet,
    ) -> Result<ValidDelegationChain, ChainError> {
        let (Some(root), Some(leaf)) = (chain.first(), chain.last()) else {
            return Err(ChainError::EmptyChain);
        };
        if chain.len() > self.config.max_chain_len {
            return Err(ChainError::ChainTooLong {
                len: chain.len(),
                max: self.config.max_chain_len,
            });
        }
        let refs: Vec<&Signed<Delegation>> = chain.iter().collect();
        self.check_revoked(&refs, revoked)?;
        self.check_signatures(&refs)?;
        self.check_times(&refs, now)?;
        let subject = root.payload().sub.unwrap_or(root.payload().iss);
        self.check_links(&refs, &subject)?;
        self.check_commands(&refs)?;
        Ok(ValidDelegationChain {
            root_issuer: root.payload().iss,
            subject,
            holder: leaf.payload().aud,
            cmd: leaf.payload().cmd.clone(),
            policies: chain.iter().map(|d| d.payload().pol.clone()).collect(),
            expires_at: chain.iter().filter_map(|d| d.payload().exp).min(),
            not_before: chain.iter().filter_map(|d| d.payload().nbf).max(),
            cids: chain.iter().map(Signed::cid).collect(),
            powerlines: powerlines(&refs),
        })
    }

    fn check_revoked(
        &self,
        chain: &[&Signed<Delegation>],
        revoked: &RevocationSet,
    ) -> Result<(), ChainError> {
        if revoked.is_empty() {
            return Ok(());
        }
        match chain
            .iter()
            .enumerate()
            .find(|(_, d)| revoked.contains(&d.cid()))
        {
            Some((i, d)) => Err(ChainError::Revoked { token: tref(i, d) }),
            None => Ok(()),
        }
    }

    fn check_signatures(&self, chain: &[&Signed<Delegation>]) -> Result<(), ChainError> {
        for (i, d) in chain.iter().enumerate() {
            d.verify_signature()
                .map_err(|_| ChainError::BadSignature { token: tref(i, d) })?;
        }
        Ok(())
    }

    fn check_times(&self, chain: &[&Signed<Delegation>], now: u64) -> Result<(), ChainError> {
        for (i, d) in chain.iter().enumerate() {
            let p = d.payload();
            self.check_time(tref(i, d), p.exp, p.nbf, now)?;
        }
        Ok(())
    }

    /// Step 7 within the delegations, root first.
    fn check_links(&self, chain: &[&Signed<Delegation>], subject: &Did) -> Result<(), ChainError> {
        if let Some(root) = chain.first() {
            let r = root.payload();
            if r.sub.is_none() {
                return Err(ChainError::PowerlineRoot {
                    token: tref(0, root),
                });
            }
            if r.iss != *subject {
                return Err(ChainError::RootNotSubject {
                    token: tref(0, root),
                    iss: r.iss,
                    subject: *subject,
                });
            }
        }
        for (i, d) in chain.iter().enumerate() {
            if let Some(sub) = d.payload().sub
                && sub != *subject
            {
                return Err(ChainError::SubjectMismatch {
                    token: tref(i, d),
                    sub,
                    expected: *subject,
                });
            }
        }
        for (i, pair) in chain.windows(2).enumerate() {
            let (a, b) = (pair[0].payload(), pair[1].payload());
            if a.aud != b.iss {
                return Err(ChainError::AudienceIssuerMismatch {
                    token: tref(i, pair[0]),
                    aud: a.aud,
                    next_iss: b.iss,
                });
            }
        }
        Ok(())
    }

    /// Step 8 within the delegations, root first.
    fn check_commands(&self, chain: &[&Signed<Delegation>]) -> Result<(), ChainError> {
        for (i, pair) in chain.windows(2).enumerate() {
            let (a, b) = (pair[0].payload(), pair[1].payload());
            if !a.cmd.covers(&b.cmd) {
                return Err(ChainError::CommandNotCovered {
                    token: tref(i, pair[0]),
                    cmd: a.cmd.clone(),
                    next: b.cmd.clone(),
                });
            }
        }
        Ok(())
    }
}

fn powerlines(chain: &[&Signed<Delegation>]) -> Vec<usize> {
    chain
        .iter()
        .enumerate()
        .filter(|(_, d)| d.payload().sub.is_none())
        .map(|(i, _)| i)
        .collect()
}
