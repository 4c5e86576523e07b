//! Validation of capability chains: an invocation and the delegations it cites
//! as proof, with revocation and replay protection.
//!
//! # Contract
//!
//! [`Validator::validate`] takes a signed invocation, a [`ProofStore`] to look its
//! `prf` CIDs up in, the current unix time, a [`RevocationSet`] and a
//! [`ReplayGuard`]. It checks, in this order, and stops at the first failure:
//!
//! 1. **Shape.** `prf` may be empty only when the invoker is the subject
//!    (`iss == sub`), else [`ChainError::EmptyChain`]; at most
//!    [`ValidatorConfig::max_chain_len`] proofs ([`ChainError::ChainTooLong`]);
//!    the invocation must have an `exp` ([`ChainError::UnboundedInvocation`]),
//!    because the replay guard has to forget it some day.
//! 2. **The invocation's own bounds.** Not revoked; not expired
//!    (`now > exp + clock_skew_secs`).
//! 3. **Proof lookup.** Every CID in `prf` resolves
//!    ([`ChainError::MissingProof`]) to a token whose CID is that CID
//!    ([`ChainError::ProofCidMismatch`]).
//! 4. **The delegations**, root first (the same checks as
//!    [`Validator::validate_delegation_chain`]):
//!    a. none is revoked; b. each is within its time bounds, allowing
//!    `clock_skew_secs` on both sides; c. a delegation with `sub: null`
//!    (powerline) is refused unless [`ValidatorConfig::allow_powerline`]; every
//!    non-null `sub` equals the invocation's `sub` ([`ChainError::SubjectMismatch`]);
//!    d. the root's `iss` is the subject ([`ChainError::RootNotSubject`]) — this
//!    holds for a powerline root too: a powerline passes on its issuer's
//!    authority, and an issuer only has authority of its own over itself;
//!    e. each delegation's `aud` is the next one's `iss`
//!    ([`ChainError::AudienceIssuerMismatch`]); f. each delegation's `cmd`
//!    covers the next one's ([`ChainError::CommandNotCovered`]); g. every
//!    signature verifies ([`ChainError::BadSignature`]; results are cached in
//!    the decoded token, so a store of decoded delegations pays for each once).
//! 5. **The invoker.** The last delegation's `aud` is the invocation's `iss`, and
//!    its `cmd` covers the invocation's `cmd`.
//! 6. **The invocation's signature.**
//! 7. **Policies.** The invocation's `args` satisfy the policy of every
//!    delegation in the chain ([`ChainError::PolicyMismatch`]).
//! 8. **Replay.** The invocation's CID has not been accepted before; it is then
//!    remembered until `exp + clock_skew_secs` ([`ReplayGuard`]).
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

/// Limits and switches of a [`Validator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// Seconds of clock difference tolerated on `exp` and `nbf`. Default 60.
    pub clock_skew_secs: u64,
    /// Accept delegations with `sub: null` (powerline). Default `false`.
    pub allow_powerline: bool,
    /// Most delegations in one chain. Default 16.
    pub max_chain_len: usize,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            clock_skew_secs: 60,
            allow_powerline: false,
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
    /// A powerline delegation (`sub: null`) where the configuration refuses them.
    #[error("{token}: field `sub` is null (powerline), which this validator does not accept")]
    PowerlineNotAllowed {
        /// The delegation.
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
    /// The invocation has `exp: null`, which replay protection cannot bound.
    #[error("invocation {cid}: field `exp` is null; invocations must expire")]
    UnboundedInvocation {
        /// The invocation's CID.
        cid: Cid,
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
/// never admitted unrecorded. Invocations without `exp` are refused by the
/// validator before they reach the guard.
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
    /// The earliest `exp` in the chain.
    pub expires_at: Option<u64>,
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

/// Checks chains; see the module docs for the contract.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    /// Limits and switches.
    pub config: ValidatorConfig,
}

impl Validator {
    /// A validator with `config`.
    pub fn new(config: ValidatorConfig) -> Self {
        Self { config }
    }

    fn check_exp(&self, token: TokenRef, exp: Option<u64>, now: u64) -> Result<(), ChainError> {
        match exp {
            Some(exp) if now > exp.saturating_add(self.config.clock_skew_secs) => {
                Err(ChainError::Expired { token, exp, now })
            }
            _ => Ok(()),
        }
    }

    /// Validates an invocation and its proofs at `now` (unix seconds).
    pub fn validate<P: ProofStore + ?Sized>(
        &self,
        inv: &Signed<Invocation>,
        proofs: &P,
        now: u64,
        revoked: &RevocationSet,
        seen: &mut ReplayGuard,
    ) -> Result<ValidChain, ChainError> {
        let p = inv.payload();
        let inv_ref = TokenRef {
            pos: TokenPos::Invocation,
            cid: inv.cid(),
        };
        // 1. Shape.
        if p.prf.is_empty() && p.iss != p.sub {
            return Err(ChainError::EmptyChain);
        }
        if p.prf.len() > self.config.max_chain_len {
            return Err(ChainError::ChainTooLong {
                len: p.prf.len(),
                max: self.config.max_chain_len,
            });
        }
        let Some(exp) = p.exp else {
            return Err(ChainError::UnboundedInvocation { cid: inv.cid() });
        };
        // 2. The invocation's own bounds.
        if revoked.contains(&inv_ref.cid) {
            return Err(ChainError::Revoked { token: inv_ref });
        }
        self.check_exp(inv_ref, p.exp, now)?;
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
        // 4. The delegations.
        self.check_delegations(&chain, &p.sub, now, revoked)?;
        // 5. The invoker.
        if let Some((i, last)) = chain.iter().enumerate().next_back() {
            let token = TokenRef {
                pos: TokenPos::Delegation(i),
                cid: last.cid(),
            };
            let l = last.payload();
            if l.aud != p.iss {
                return Err(ChainError::AudienceIssuerMismatch {
                    token,
                    aud: l.aud,
                    next_iss: p.iss,
                });
            }
            if !l.cmd.covers(&p.cmd) {
                return Err(ChainError::CommandNotCovered {
                    token,
                    cmd: l.cmd.clone(),
                    next: p.cmd.clone(),
                });
            }
        }
        // 6. The invocation's signature.
        inv.verify_signature()
            .map_err(|_| ChainError::BadSignature { token: inv_ref })?;
        // 7. Policies.
        for (i, d) in chain.iter().enumerate() {
            let token = TokenRef {
                pos: TokenPos::Delegation(i),
                cid: d.cid(),
            };
            match d.payload().pol.matches(&p.args) {
                Ok(true) => {}
                Ok(false) => return Err(ChainError::PolicyMismatch { token, error: None }),
                Err(e) => {
                    return Err(ChainError::PolicyMismatch {
                        token,
                        error: Some(e),
                    });
                }
            }
        }
        // 8. Replay.
        let keep_until = exp.saturating_add(self.config.clock_skew_secs);
        seen.check_and_insert(inv.cid(), keep_until, now)
            .map_err(|e| match e {
                ReplayError::Replayed => ChainError::Replayed { cid: inv.cid() },
                ReplayError::Full => ChainError::ReplayGuardFull {
                    cid: inv.cid(),
                    max_entries: seen.max_entries(),
                },
            })?;
        let expires_at = Some(
            chain
                .iter()
                .filter_map(|d| d.payload().exp)
                .fold(exp, u64::min),
        );
        Ok(ValidChain {
            invocation: inv.cid(),
            invoker: p.iss,
            subject: p.sub,
            root_issuer: chain.first().map_or(p.sub, |d| d.payload().iss),
            cmd: p.cmd.clone(),
            proofs: p.prf.clone(),
            expires_at,
        })
    }

    /// Validates a delegation chain presented without an invocation (such as a
    /// join token), root first: signatures, time bounds at `now`, revocation,
    /// subject, principal alignment and command attenuation. The subject is the
    /// first non-null `sub` in the chain, or the root's issuer if all are null.
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
        let subject = chain
            .iter()
            .find_map(|d| d.payload().sub)
            .unwrap_or(root.payload().iss);
        let refs: Vec<&Signed<Delegation>> = chain.iter().collect();
        self.check_delegations(&refs, &subject, now, revoked)?;
        Ok(ValidDelegationChain {
            root_issuer: root.payload().iss,
            subject,
            holder: leaf.payload().aud,
            cmd: leaf.payload().cmd.clone(),
            policies: chain.iter().map(|d| d.payload().pol.clone()).collect(),
            expires_at: chain.iter().filter_map(|d| d.payload().exp).min(),
            not_before: chain.iter().filter_map(|d| d.payload().nbf).max(),
            cids: chain.iter().map(Signed::cid).collect(),
        })
    }

    /// Step 4 of the contract, for delegations given root first.
    fn check_delegations(
        &self,
        chain: &[&Signed<Delegation>],
        subject: &Did,
        now: u64,
        revoked: &RevocationSet,
    ) -> Result<(), ChainError> {
        let tref = |i: usize, d: &Signed<Delegation>| TokenRef {
            pos: TokenPos::Delegation(i),
            cid: d.cid(),
        };
        for (i, d) in chain.iter().enumerate() {
            if revoked.contains(&d.cid()) {
                return Err(ChainError::Revoked { token: tref(i, d) });
            }
        }
        for (i, d) in chain.iter().enumerate() {
            let p = d.payload();
            self.check_exp(tref(i, d), p.exp, now)?;
            if let Some(nbf) = p.nbf
                && now.saturating_add(self.config.clock_skew_secs) < nbf
            {
                return Err(ChainError::NotYetValid {
                    token: tref(i, d),
                    nbf,
                    now,
                });
            }
        }
        for (i, d) in chain.iter().enumerate() {
            match d.payload().sub {
                None if !self.config.allow_powerline => {
                    return Err(ChainError::PowerlineNotAllowed { token: tref(i, d) });
                }
                Some(sub) if sub != *subject => {
                    return Err(ChainError::SubjectMismatch {
                        token: tref(i, d),
                        sub,
                        expected: *subject,
                    });
                }
                _ => {}
            }
        }
        if let Some(root) = chain.first()
            && root.payload().iss != *subject
        {
            return Err(ChainError::RootNotSubject {
                token: tref(0, root),
                iss: root.payload().iss,
                subject: *subject,
            });
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
            if !a.cmd.covers(&b.cmd) {
                return Err(ChainError::CommandNotCovered {
                    token: tref(i, pair[0]),
                    cmd: a.cmd.clone(),
                    next: b.cmd.clone(),
                });
            }
        }
        for (i, d) in chain.iter().enumerate() {
            d.verify_signature()
                .map_err(|_| ChainError::BadSignature { token: tref(i, d) })?;
        }
        Ok(())
    }
}
