//! The desired state of a mesh: a yrs CRDT document of signed records.
//!
//! [`DesiredState`] holds one yrs [`Doc`] per mesh with three root maps:
//! `manifests` (manifest name → apply or delete record), `images`
//! (`name:tag` → image record) and `revocations` (target → revoke record).
//! Every value is the encoding of a [`DesiredRecord`]: a UCAN invocation on
//! the mesh, its proof chain and a body (see [`record`](self::DesiredRecord)).
//! Membership is not here (it churns; it lives in [`Membership`](crate::Membership)).
//!
//! # Who wins
//!
//! Each name is a register. The winner is the valid record with the greatest
//! [`Stamp`] (HLC, then signer key bytes) — the same on every node. yrs
//! itself resolves two concurrent writes of one map key by client id, which
//! is not that order; so each node keeps the best record it has verified per
//! name, and when the document shows a lesser one it writes the best back
//! (a *repair*, returned by [`DesiredState::poll_update`]). At quiescence the
//! document holds the maximum everywhere and every node reports it.
//! A delete is a record too (a tombstone that wins like an apply), so honest
//! nodes never remove map keys; an update that removes one is refused.
//!
//! # Verification
//!
//! An incoming update is applied to a scratch copy of the document first.
//! Every value it changes is decoded and verified — signature, chain to this
//! mesh's root at the record's own timestamp, command and name scope by
//! policy, revocations, plan hash — and the update is refused whole
//! ([`Refusal`]) if any value is invalid, any key is removed, an unknown root
//! type appears, or it needs updates this node has not seen. Only then does
//! the scratch copy become the document. Records are re-checked against
//! revocations whenever one arrives.
//!
//! # Bounds and compaction
//!
//! [`Config`] bounds update size, record size, names per map, and the encoded
//! document (`max_document_bytes`, never above `max_update_bytes`, so a full
//! [`DesiredState::diff_since`] always fits one update). Churn does not grow
//! the document: a register overwrite deletes the previous value, and yrs'
//! garbage collection (on by default) replaces deleted content by a few-byte
//! `GC` range per client run, so the document is the live records plus a
//! small per-writer overhead (measured: see `tests/desired.rs`). Tombstones
//! stay, one per deleted name, and count toward `max_manifests`.

mod record;
mod shape;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use omega_identity::Did;
use omega_identity::chain::{MeshPolicy, RevocationSet, ValidatorConfig};
use omega_zgraph::{Plan, PlanHash};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, ClientID, Doc, Map, Options, Out, ReadTxn, StateVector, Transact, Update, WriteTxn,
};

pub use self::record::{Authority, CMD_EMIT, DesiredRecord, RecordError, RecordKind, Revocation};
use self::record::{Verified, verify};
use crate::hlc::{Hlc, HlcError, Stamp, check_drift};
use crate::id::NodeId;

const MANIFESTS: &str = "manifests";
const IMAGES: &str = "images";
const REVOCATIONS: &str = "revocations";
const ROOTS: [&str; 3] = [MANIFESTS, IMAGES, REVOCATIONS];

/// Limits of a [`DesiredState`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The yrs client id of this replica (53 bits, unique per node *and* per
    /// start without persisted state: derive it from the node id and a
    /// restart counter). Default 1.
    pub client_id: u64,
    /// How far (ms) a record's timestamp may be ahead of local time. Default 60 000.
    pub max_drift_ms: u64,
    /// Largest update accepted or produced, bytes. Default 8 MiB.
    pub max_update_bytes: usize,
    /// Largest encoded document; writes beyond it are refused. Default 8 MiB;
    /// at most `max_update_bytes`.
    pub max_document_bytes: usize,
    /// Largest record, bytes. Default 256 KiB.
    pub max_record_bytes: usize,
    /// Most manifest names (tombstones included). Default 1024.
    pub max_manifests: usize,
    /// Most image names. Default 4096.
    pub max_images: usize,
    /// Most revocations. Default 65 536.
    pub max_revocations: usize,
    /// Longest name, bytes. Default 253.
    pub max_name_len: usize,
    /// Chain validation by the spec (clock skew, chain length).
    pub validator: ValidatorConfig,
    /// The mesh's rules on top of the spec (records' invocations expire; no
    /// powerline unless allowed).
    pub policy: MeshPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            client_id: 1,
            max_drift_ms: 60_000,
            max_update_bytes: 8 << 20,
            max_document_bytes: 8 << 20,
            max_record_bytes: 256 << 10,
            max_manifests: 1024,
            max_images: 4096,
            max_revocations: 65_536,
            max_name_len: 253,
            validator: ValidatorConfig::default(),
            policy: MeshPolicy::default(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `client_id` is 0 or wider than 53 bits.
    #[error("client_id must be in 1..2^53")]
    ClientId,
    /// `max_document_bytes` exceeds `max_update_bytes`.
    #[error("max_document_bytes must not exceed max_update_bytes")]
    DocumentLargerThanUpdate,
    /// Proof chains longer than 255 cannot be encoded.
    #[error("validator.max_chain_len must be at most 255")]
    ChainTooLong,
}

/// A verified manifest: the winner for its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest name.
    pub name: String,
    /// The plan.
    pub plan: Plan,
    /// Its hash (signed by the writer).
    pub plan_hash: PlanHash,
    /// Its position in the total order.
    pub stamp: Stamp,
}

/// A verified image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `name:tag`.
    pub name: String,
    /// The content id it names (CID text).
    pub content: String,
    /// Its position in the total order.
    pub stamp: Stamp,
}

/// What changed in the verified view.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// A manifest has a new winning plan.
    Applied {
        /// The manifest name.
        name: String,
        /// The plan hash.
        plan_hash: PlanHash,
    },
    /// A manifest is gone (deleted, or its record revoked).
    Deleted {
        /// The manifest name.
        name: String,
    },
    /// An image name points at new content (or, with `None`, at nothing valid).
    Image {
        /// `name:tag`.
        name: String,
        /// The content id.
        content: Option<String>,
    },
    /// Something was revoked.
    Revoked(Revocation),
}

/// Why an update was refused; nothing of it took effect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Larger than `max_update_bytes`.
    #[error("update of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a yrs v1 update.
    #[error("malformed update: {0}")]
    Malformed(String),
    /// It builds on updates this node lacks: run anti-entropy with the sender.
    #[error("update depends on updates not seen yet")]
    MissingDependencies,
    /// A record in it is invalid.
    #[error("invalid record under `{key}`: {error}")]
    InvalidRecord {
        /// The document key.
        key: String,
        /// What is wrong.
        error: RecordError,
    },
    /// A value is not a record (wrong yrs type).
    #[error("value under `{key}` is not a record")]
    NotARecord {
        /// The document key.
        key: String,
    },
    /// It removes a key (honest replicas never do).
    #[error("update removes `{key}`")]
    Removal {
        /// The document key.
        key: String,
    },
    /// It creates a root type other than the three maps.
    #[error("update creates unknown root type `{0}`")]
    UnknownRoot(String),
    /// A record's timestamp is too far ahead of local time.
    #[error("record under `{key}`: {error}")]
    FromTheFuture {
        /// The document key.
        key: String,
        /// The drift.
        error: HlcError,
    },
    /// A map or the document would exceed its limit.
    #[error("{what} would exceed its limit of {max}")]
    Full {
        /// Which limit.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl Refusal {
    /// Whether the sender deserves a penalty (garbage, forgery, removal) rather
    /// than being merely ahead, behind, or full.
    pub fn penalty(&self) -> bool {
        !matches!(
            self,
            Self::MissingDependencies | Self::FromTheFuture { .. } | Self::Full { .. }
        )
    }
}

/// Why a local write was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The record is invalid, too far in the future, or does not fit.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The record is of another kind than the call expects.
    #[error("expected a {expected:?} record, got {found:?}")]
    WrongKind {
        /// Expected.
        expected: RecordKind,
        /// Found.
        found: RecordKind,
    },
    /// A record with a greater stamp already holds this name.
    #[error("`{name}` already holds a newer record")]
    Superseded {
        /// The name.
        name: String,
    },
}

/// The revoked tokens and nodes (grow-only).
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// Revoked token CIDs.
    pub tokens: RevocationSet,
    /// Revoked principals.
    pub nodes: BTreeSet<Did>,
}

/// One mesh's replicated desired state; see the module docs.
pub struct DesiredState {
    root: Did,
    config: Config,
    doc: Doc,
    clock: Hlc,
    /// The last value seen in the document per (map, key).
    values: BTreeMap<(&'static str, String), Arc<[u8]>>,
    /// The best verified record per (map, key), revoked ones excluded.
    best: BTreeMap<(&'static str, String), Verified>,
    revoked: Revocations,
    pending: Option<Vec<u8>>,
}

impl std::fmt::Debug for DesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredState")
            .field("root", &self.root)
            .field("records", &self.best.len())
            .finish_non_exhaustive()
    }
}

type Snapshot = BTreeMap<(&'static str, String), Result<Arc<[u8]>, ()>>;

impl DesiredState {
    /// An empty desired state for the mesh whose root is `mesh_root`.
    pub fn new(mesh_root: Did, config: Config) -> Result<Self, ConfigError> {
        if config.client_id == 0 || config.client_id >= 1 << 53 {
            return Err(ConfigError::ClientId);
        }
        if config.max_document_bytes > config.max_update_bytes {
            return Err(ConfigError::DocumentLargerThanUpdate);
        }
        if config.validator.max_chain_len > 255 {
            return Err(ConfigError::ChainTooLong);
        }
        Ok(Self {
            doc: new_doc(config.client_id),
            root: mesh_root,
            config,
            clock: Hlc::default(),
            values: BTreeMap::new(),
            best: BTreeMap::new(),
            revoked: Revocations::default(),
            pending: None,
        })
    }

    /// A fresh timestamp for a local write at wall time `now_ms` (unix ms).
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.clock.tick(now_ms)
    }

    /// Writes a verified `/manifest/apply` record; returns the update to announce.
    pub fn apply_local(
        &mut self,
        record: &DesiredRecord,
        now_ms: u64,
    ) -> Result<Vec<u8>, WriteError> {
        self.write_kind(record, RecordKind::Apply, now_ms)
    }

    /// Writes a verified `/manifest/delete` record (a tombstone).
    pub fn delete_local(
        &mut self,
        record: &DesiredRecord,
        now_ms: u64,
    ) -> Result<Vec<u8>, WriteError> {
        self.write_kind(record, RecordKind::Delete, now_ms)
    }

    /// Writes any verified record (apply, delete, image, revoke).
    pub fn write_local(
        &mut self,
        record: &DesiredRecord,
        now_ms: u64,
    ) -> Result<Vec<u8>, WriteError> {
        let bytes = record.encode();
        let v = self.verify("", &bytes, now_ms)?;
        if let Some(best) = self.best.get(&(map_of(v.kind), v.key.clone()))
            && best.stamp >= v.stamp
            && v.kind != RecordKind::Revoke
        {
            return Err(WriteError::Superseded { name: v.key });
        }
        let _ = self
            .clock
            .observe(v.stamp.hlc, now_ms, self.config.max_drift_ms);
        Ok(self.write(&[v])?)
    }

    fn write_kind(
        &mut self,
        record: &DesiredRecord,
        expected: RecordKind,
        now_ms: u64,
    ) -> Result<Vec<u8>, WriteError> {
        let found = match record.invocation().payload().cmd.as_str() {
            "/manifest/apply" => RecordKind::Apply,
            "/manifest/delete" => RecordKind::Delete,
            "/image/push" => RecordKind::Image,
            _ => RecordKind::Revoke,
        };
        if found != expected {
            return Err(WriteError::WrongKind { expected, found });
        }
        self.write_local(record, now_ms)
    }

    /// Writes verified records into the document and the index; returns the update.
    fn write(&mut self, records: &[Verified]) -> Result<Vec<u8>, Refusal> {
        // Checked before writing (a write cannot be taken back without a
        // removal, which peers refuse): the new values plus a generous 64
        // bytes of item overhead each must fit.
        let growth: usize = records
            .iter()
            .map(|v| v.bytes.len() + v.key.len() + 64)
            .sum();
        if self.encoded_len() + growth > self.config.max_document_bytes {
            return Err(Refusal::Full {
                what: "document bytes",
                max: self.config.max_document_bytes,
            });
        }
        // The per-map limits peers enforce on our updates, enforced here first.
        for (what, root, max) in [
            ("manifests", MANIFESTS, self.config.max_manifests),
            ("images", IMAGES, self.config.max_images),
            ("revocations", REVOCATIONS, self.config.max_revocations),
        ] {
            let existing = self.values.keys().filter(|s| s.0 == root).count();
            let new: BTreeSet<&str> = records
                .iter()
                .filter(|v| map_of(v.kind) == root)
                .filter(|v| !self.values.contains_key(&(root, v.key.clone())))
                .map(|v| v.key.as_str())
                .collect();
            if existing + new.len() > max {
                return Err(Refusal::Full { what, max });
            }
        }
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            for v in records {
                let map = txn.get_or_insert_map(map_of(v.kind));
                map.insert(&mut txn, v.key.as_str(), Any::Buffer(v.bytes.clone()));
            }
        }
        let update = self.doc.transact().encode_diff_v1(&before);
        for v in records {
            let slot = (map_of(v.kind), v.key.clone());
            self.values.insert(slot.clone(), v.bytes.clone());
            if v.kind == RecordKind::Revoke {
                self.add_revocation(v);
            }
            self.best.insert(slot, v.clone());
        }
        if records.iter().any(|v| v.kind == RecordKind::Revoke) {
            self.drop_revoked();
        }
        Ok(update)
    }

    /// Handles an update `from` a peer received at wall time `now_ms`.
    ///
    /// On success returns what changed in the verified view (possibly nothing);
    /// then drain [`DesiredState::poll_update`]. On refusal nothing changed.
    pub fn handle_update(
        &mut self,
        from: NodeId,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Change>, Refusal> {
        let _ = from;
        if bytes.len() > self.config.max_update_bytes {
            return Err(Refusal::TooLarge {
                len: bytes.len(),
                max: self.config.max_update_bytes,
            });
        }
        // yrs is not written against hostile input: run it on a scratch copy
        // and treat a panic as a malformed update (the copy is discarded).
        let trial = catch_unwind(AssertUnwindSafe(|| self.trial(bytes)))
            .map_err(|_| Refusal::Malformed("the CRDT decoder failed".into()))??;
        let Some((doc, after)) = trial else {
            return Ok(Vec::new());
        };
        let mut verified = Vec::new();
        for (slot, value) in &after {
            if self.values.get(slot).map(|v| Ok(v.clone())).as_ref() == Some(value) {
                continue;
            }
            let value = value.clone().map_err(|()| Refusal::NotARecord {
                key: slot.1.clone(),
            })?;
            let v = self.verify(&slot.1, &value, now_ms)?;
            if map_of(v.kind) != slot.0 || v.key != slot.1 {
                return Err(Refusal::InvalidRecord {
                    key: slot.1.clone(),
                    error: RecordError::KeyMismatch {
                        key: slot.1.clone(),
                        record: v.key,
                    },
                });
            }
            verified.push(v);
        }
        if let Some(slot) = self.values.keys().find(|s| !after.contains_key(*s)) {
            return Err(Refusal::Removal {
                key: slot.1.clone(),
            });
        }
        for (what, root, max) in [
            ("manifests", MANIFESTS, self.config.max_manifests),
            ("images", IMAGES, self.config.max_images),
            ("revocations", REVOCATIONS, self.config.max_revocations),
        ] {
            if after.keys().filter(|s| s.0 == root).count() > max {
                return Err(Refusal::Full { what, max });
            }
        }
        // Accepted: adopt the scratch copy.
        self.doc = doc;
        for v in &verified {
            let _ = self
                .clock
                .observe(v.stamp.hlc, now_ms, self.config.max_drift_ms);
        }
        self.values = after
            .into_iter()
            .filter_map(|(k, v)| v.ok().map(|v| (k, v)))
            .collect();
        Ok(self.integrate(verified))
    }

    /// Applies `bytes` to a copy of the document; `None` if it adds nothing.
    #[allow(clippy::type_complexity)]
    fn trial(&self, bytes: &[u8]) -> Result<Option<(Doc, Snapshot)>, Refusal> {
        shape::check_update(bytes, &ROOTS)
            .map_err(|why| Refusal::Malformed(format!("update: {why}")))?;
        let update = Update::decode_v1(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let sv = self.doc.transact().state_vector();
        if !update.extends(&sv) && update.delete_set().is_empty() {
            return Ok(None);
        }
        let doc = new_doc(self.config.client_id);
        {
            let full = self
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            let mut txn = doc.transact_mut();
            let copy = Update::decode_v1(&full).map_err(|e| Refusal::Malformed(e.to_string()))?;
            txn.apply_update(copy)
                .map_err(|e| Refusal::Malformed(e.to_string()))?;
            txn.apply_update(update)
                .map_err(|e| Refusal::Malformed(e.to_string()))?;
            if txn.store().pending_update().is_some() || txn.store().pending_ds().is_some() {
                return Err(Refusal::MissingDependencies);
            }
            // Give the three roots their type (a root first seen in a remote
            // update is untyped until someone asks for it).
            for root in ROOTS {
                txn.get_or_insert_map(root);
            }
        }
        let txn = doc.transact();
        let size = txn.encode_state_as_update_v1(&StateVector::default()).len();
        if size > self.config.max_document_bytes {
            return Err(Refusal::Full {
                what: "document bytes",
                max: self.config.max_document_bytes,
            });
        }
        let mut snapshot = BTreeMap::new();
        for (name, out) in txn.root_refs() {
            let Some(root) = ROOTS.iter().find(|r| **r == name) else {
                return Err(Refusal::UnknownRoot(name.chars().take(64).collect()));
            };
            let Out::YMap(map) = out else {
                return Err(Refusal::UnknownRoot(name.into()));
            };
            for (key, value) in map.iter(&txn) {
                let value = match value {
                    Out::Any(Any::Buffer(b)) => Ok(b),
                    _ => Err(()),
                };
                snapshot.insert((*root, key.to_owned()), value);
            }
        }
        drop(txn);
        Ok(Some((doc, snapshot)))
    }

    /// Folds newly verified records into the index; writes repairs.
    fn integrate(&mut self, verified: Vec<Verified>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut repairs = Vec::new();
        let (revokes, others): (Vec<_>, Vec<_>) = verified
            .into_iter()
            .partition(|v| v.kind == RecordKind::Revoke);
        for v in revokes {
            let target = v.revocation;
            let slot = (REVOCATIONS, v.key.clone());
            let new = !self.best.contains_key(&slot);
            self.best.insert(slot, v.clone());
            if new && let Some(t) = target {
                self.add_revocation(&v);
                changes.push(Change::Revoked(t));
            }
        }
        if !changes.is_empty() {
            changes.extend(self.drop_revoked());
        }
        for v in others {
            if v.is_revoked(&self.revoked.tokens, &self.revoked.nodes) {
                continue;
            }
            let slot = (map_of(v.kind), v.key.clone());
            match self.best.get(&slot) {
                Some(best) if best.stamp > v.stamp => repairs.push(best.clone()),
                Some(best) if best.stamp == v.stamp => {}
                _ => {
                    changes.push(change_for(&v));
                    self.best.insert(slot, v);
                }
            }
        }
        if !repairs.is_empty()
            && let Ok(update) = self.write(&repairs)
        {
            self.pending = Some(match self.pending.take() {
                // Two repairs in a row: announce the union (both are diffs of ours).
                Some(_) => self.diff_since(&[0]).unwrap_or(update),
                None => update,
            });
        }
        changes
    }

    fn add_revocation(&mut self, v: &Verified) {
        match v.revocation {
            Some(Revocation::Token(cid)) => {
                self.revoked.tokens.insert(cid);
            }
            Some(Revocation::Node(did)) => {
                self.revoked.nodes.insert(did);
            }
            None => {}
        }
    }

    /// Removes revoked records from the index; falls back to the document's
    /// value for the name when that one is still valid.
    fn drop_revoked(&mut self) -> Vec<Change> {
        let revoked: Vec<_> = self
            .best
            .iter()
            .filter(|(s, v)| {
                s.0 != REVOCATIONS && v.is_revoked(&self.revoked.tokens, &self.revoked.nodes)
            })
            .map(|(s, _)| s.clone())
            .collect();
        let mut changes = Vec::new();
        for slot in revoked {
            self.best.remove(&slot);
            let fallback = self
                .values
                .get(&slot)
                .and_then(|b| self.verify(&slot.1, b, u64::MAX).ok())
                .filter(|v| !v.is_revoked(&self.revoked.tokens, &self.revoked.nodes));
            match fallback {
                Some(v) => {
                    changes.push(change_for(&v));
                    self.best.insert(slot, v);
                }
                None if slot.0 == MANIFESTS => changes.push(Change::Deleted { name: slot.1 }),
                None => changes.push(Change::Image {
                    name: slot.1,
                    content: None,
                }),
            }
        }
        changes
    }

    /// Checks an emit grant ([`DesiredRecord::emit_grant`]) at `now_ms`
    /// against the mesh root and every revocation: the signer, the
    /// manifest it may emit into, and when the grant expires (unix s).
    pub fn authorize_emit(
        &self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<(omega_identity::Did, String, Option<u64>), RecordError> {
        record::verify_emit(
            bytes,
            &self.root,
            &self.config.validator,
            &self.config.policy,
            now_ms / 1000,
            &self.revoked.tokens,
            &self.revoked.nodes,
        )
    }

    fn verify(&self, key: &str, bytes: &[u8], now_ms: u64) -> Result<Verified, Refusal> {
        let v = verify(
            bytes,
            &self.root,
            &self.config,
            &self.revoked.tokens,
            &self.revoked.nodes,
        )
        .map_err(|error| Refusal::InvalidRecord {
            key: key.to_owned(),
            error,
        })?;
        check_drift(v.stamp.hlc, now_ms, self.config.max_drift_ms).map_err(|error| {
            Refusal::FromTheFuture {
                key: v.key.clone(),
                error,
            }
        })?;
        Ok(v)
    }

    /// A write this node made on its own (a repair) that the driver should
    /// announce like any local update.
    pub fn poll_update(&mut self) -> Option<Vec<u8>> {
        self.pending.take()
    }

    /// This replica's yrs state vector (v1 encoding), for anti-entropy.
    pub fn state_vector(&self) -> Vec<u8> {
        use yrs::updates::encoder::Encode;
        self.doc.transact().state_vector().encode_v1()
    }

    /// Everything this replica has that a replica with `state_vector` lacks
    /// (an update for [`DesiredState::handle_update`]), or a refusal when the
    /// state vector does not decode.
    pub fn diff_since(&self, state_vector: &[u8]) -> Result<Vec<u8>, Refusal> {
        if state_vector.len() > self.config.max_update_bytes {
            return Err(Refusal::TooLarge {
                len: state_vector.len(),
                max: self.config.max_update_bytes,
            });
        }
        shape::check_state_vector(state_vector)
            .map_err(|why| Refusal::Malformed(format!("state vector: {why}")))?;
        // Decoding is run under catch_unwind for the same reason as in
        // `handle_update`; the document is only read.
        catch_unwind(|| StateVector::decode_v1(state_vector))
            .map_err(|_| Refusal::Malformed("the state vector decoder failed".into()))?
            .map(|sv| self.doc.transact().encode_diff_v1(&sv))
            .map_err(|e| Refusal::Malformed(e.to_string()))
    }

    /// Whether this replica holds updates that a replica with `state_vector`
    /// lacks (false when the state vector does not decode), so anti-entropy
    /// answers "nothing new" without building a diff.
    pub fn has_news_for(&self, state_vector: &[u8]) -> bool {
        if state_vector.len() > self.config.max_update_bytes
            || shape::check_state_vector(state_vector).is_err()
        {
            return false;
        }
        let Ok(Ok(theirs)) = catch_unwind(|| StateVector::decode_v1(state_vector)) else {
            return false;
        };
        let ours = self.doc.transact().state_vector();
        ours.iter()
            .any(|(client, clock)| theirs.get(client) < *clock)
    }

    /// The whole document as one update (for durable snapshots).
    pub fn encode(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// The encoded document size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }

    /// The winning manifests, by name (tombstones and revoked records excluded).
    pub fn manifests(&self) -> impl Iterator<Item = Manifest> + '_ {
        self.best
            .iter()
            .filter(|(s, _)| s.0 == MANIFESTS)
            .filter_map(|(_, v)| {
                let plan = v.plan.as_ref()?;
                Some(Manifest {
                    name: v.key.clone(),
                    plan: plan.0.clone(),
                    plan_hash: plan.1,
                    stamp: v.stamp,
                })
            })
    }

    /// The winning image names.
    pub fn images(&self) -> impl Iterator<Item = Image> + '_ {
        self.best
            .iter()
            .filter(|(s, _)| s.0 == IMAGES)
            .filter_map(|(_, v)| {
                Some(Image {
                    name: v.key.clone(),
                    content: v.content.clone()?,
                    stamp: v.stamp,
                })
            })
    }

    /// The stamp holding manifest `name`, tombstone or not.
    pub fn manifest_stamp(&self, name: &str) -> Option<Stamp> {
        self.best
            .get(&(MANIFESTS, name.to_owned()))
            .map(|v| v.stamp)
    }

    /// Revoked tokens and nodes.
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }
}

fn new_doc(client_id: u64) -> Doc {
    let mut options = Options::with_client_id(ClientID::new(client_id));
    options.guid = "omega-desired-state".into();
    options.skip_gc = false;
    Doc::with_options(options)
}

fn map_of(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Apply | RecordKind::Delete => MANIFESTS,
        RecordKind::Image => IMAGES,
        RecordKind::Revoke => REVOCATIONS,
    }
}

fn change_for(v: &Verified) -> Change {
    match (v.kind, &v.plan, &v.content) {
        (RecordKind::Apply, Some(p), _) => Change::Applied {
            name: v.key.clone(),
            plan_hash: p.1,
        },
        (RecordKind::Image, _, content) => Change::Image {
            name: v.key.clone(),
            content: content.clone(),
        },
        _ => Change::Deleted {
            name: v.key.clone(),
        },
    }
}
