//! Leaderless placement: which members run which branes, as pure functions.
//!
//! Every node calls [`place`] with the same plan and the same member table and
//! gets the same answer; nothing is elected and nothing is stored. For each
//! brane the eligible members are filtered ([`Ineligible`] says why a member
//! is not), then ranked by rendezvous hashing (HRW): the member with the
//! highest [`hrw_score`] for the brane comes first.
//!
//! # The score
//!
//! `hrw_score(key, node) = BLAKE3(utf8(key) ‖ node_id)`, where `key` is the
//! brane name (or whatever key the caller passes to [`place_brane`]) and
//! `node_id` the 32 bytes of the member's Ed25519 public key; no separator is
//! needed because the id has a fixed length and comes last. The 32-byte
//! digests compare as big-endian numbers, highest first; equal digests (never
//! seen in practice) fall back to the lower node id.
//!
//! # Replica counts
//!
//! - `replicas = 0`: nothing runs ([`Status::Parked`]).
//! - `replicas = N`, `E` eligible: if `N ≤ E`, the top `N` run one instance
//!   each; if `N > E`, instances are dealt round-robin down the ranked list,
//!   so the member at rank `i` runs `⌊N/E⌋ + (i < N mod E)` instances.
//! - `replicas = "auto"`: every eligible member runs one instance.
//! - No eligible member (and a non-zero count): [`Status::Unplaceable`], with
//!   every member's reasons, so the operator sees why.
//!
//! This gives the minimal-movement property (tested by property tests):
//! removing a member moves only the instances it ran, and adding one moves at
//! most `N` instances, all of them to the new member — because the ranking of
//! the other members does not change and the per-rank counts only shrink as
//! `E` grows.
//!
//! # Liveness
//!
//! Alive and suspect members are eligible; dead and departed ones are not.
//! Suspicion is often a lost packet, and moving replicas on every suspicion
//! would make placement flap; SWIM turns a real failure into `Dead` within
//! the suspicion timeout.
//!
//! # Capacity
//!
//! Each brane is placed on its own against each member's advertised free
//! resources: a member is eligible when it has at least the brane's
//! `limits.memory` free for one instance. Placement does not pack branes
//! against each other (that would couple every brane's placement to every
//! other's and defeat minimal movement); the node's runtime refuses what does
//! not fit and reports it.

use std::collections::BTreeMap;

use omega_zgraph::{Brane, Capability, Gpu, PeersGlob, Plan, Replicas};

use crate::desired::Manifest;
use crate::id::NodeId;
use crate::membership::{MemberView, State};
use crate::record::{Capabilities, Substrate};

/// The capability bit a member sets when it can pass a GPU through to a
/// frontier microVM (bit 2 of the record's capabilities byte).
pub const GPU_PASSTHROUGH: Capabilities = Capabilities(4);

/// What placement needs to know about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub id: NodeId,
    /// Its node name (matched against `peers` and `hosts`).
    pub name: String,
    /// Its substrate.
    pub substrate: Substrate,
    /// The profiles it runs ([`Capabilities::STANDARD`], [`Capabilities::FRONTIER`],
    /// [`GPU_PASSTHROUGH`]).
    pub capabilities: Capabilities,
    /// Free memory, in bytes.
    pub free_memory_bytes: u64,
    /// What this node believes about its liveness.
    pub state: State,
}

impl Candidate {
    /// A candidate from a membership table entry, offering the memory its
    /// record advertises.
    pub fn from_view(view: &MemberView<'_>) -> Self {
        let r = &view.record.record;
        Self {
            id: r.id,
            name: r.profile.name.clone(),
            substrate: r.profile.substrate,
            capabilities: r.profile.capabilities,
            free_memory_bytes: r.profile.resources.memory_bytes,
            state: view.state,
        }
    }
}

/// Why a member may not run a brane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Ineligible {
    /// Its substrate is not the brane's.
    WrongSubstrate {
        /// The brane's substrate.
        wanted: Substrate,
        /// The member's.
        found: Substrate,
    },
    /// A frontier brane never runs on a habitat member, whatever it claims.
    FrontierOnHabitat,
    /// It does not advertise the brane's capability profile.
    LacksCapability(Capability),
    /// The brane wants GPU passthrough and the member does not offer it.
    NoGpuPassthrough,
    /// Its name does not match the brane's `peers` glob.
    PeersGlobMismatch {
        /// The glob.
        glob: String,
    },
    /// The brane lists `hosts` and the member's name is not one of them.
    NotInHosts,
    /// Less free memory than the brane's `limits.memory`.
    NotEnoughMemory {
        /// Bytes the brane needs.
        needed: u64,
        /// Bytes the member has free.
        free: u64,
    },
    /// It is dead or has left.
    NotAlive(StateName),
    /// The brane's `peers` glob does not compile (a plan that skipped validation).
    InvalidPeersGlob {
        /// The glob.
        glob: String,
    },
}

/// A member's liveness, for [`Ineligible::NotAlive`] (ordered, hashable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateName {
    /// Declared dead.
    Dead,
    /// Left gracefully.
    Left,
}

/// The outcome for one brane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// At least one instance is assigned.
    Placed,
    /// `replicas = 0`: nothing should run.
    Parked,
    /// Instances are wanted and no member is eligible.
    Unplaceable,
}

/// Where one brane runs, and why the other members do not run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranePlacement {
    /// Members and their instance counts, best-ranked first.
    pub assignment: Vec<(NodeId, u32)>,
    /// Every ineligible member with all its reasons, by node id.
    pub ineligible: BTreeMap<NodeId, Vec<Ineligible>>,
    /// Placed, parked or unplaceable.
    pub status: Status,
}

impl BranePlacement {
    /// Instances assigned to `node`.
    pub fn instances_on(&self, node: &NodeId) -> u32 {
        self.assignment
            .iter()
            .find(|(id, _)| id == node)
            .map_or(0, |(_, n)| *n)
    }

    /// Total instances assigned.
    pub fn total_instances(&self) -> u64 {
        self.assignment.iter().map(|(_, n)| u64::from(*n)).sum()
    }
}

/// Placement of a whole plan, by brane name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Each brane's placement.
    pub branes: BTreeMap<String, BranePlacement>,
}

impl Placement {
    /// What `node` should run: brane name and instance count, by name.
    pub fn for_node(&self, node: &NodeId) -> BTreeMap<&str, u32> {
        self.branes
            .iter()
            .filter_map(|(name, p)| {
                let n = p.instances_on(node);
                (n > 0).then_some((name.as_str(), n))
            })
            .collect()
    }

    /// The branes nobody can run.
    pub fn unplaceable(&self) -> impl Iterator<Item = (&str, &BranePlacement)> {
        self.branes
            .iter()
            .filter(|(_, p)| p.status == Status::Unplaceable)
            .map(|(n, p)| (n.as_str(), p))
    }
}

/// The rendezvous score of `node` for `key` (see the module docs for the bytes).
pub fn hrw_score(key: &str, node: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// Places every brane of `plan`, each keyed by its brane name.
pub fn place(plan: &Plan, members: &[Candidate]) -> Placement {
    Placement {
        branes: plan
            .branes()
            .iter()
            .map(|(name, brane)| (name.clone(), place_brane(name, brane, members)))
            .collect(),
    }
}

/// One brane of one manifest and where it runs.
#[derive(Debug, Clone)]
pub struct Placed<'a> {
    /// Its manifest.
    pub manifest: &'a Manifest,
    /// The brane's name in the manifest.
    pub name: &'a str,
    /// Its spec.
    pub brane: &'a Brane,
    /// Where it runs.
    pub placement: BranePlacement,
}

/// Places every brane of every manifest, each under the HRW key
/// `MANIFEST/BRANE`, so two manifests with a brane of the same name spread
/// independently. Every node computes the same answer from the same state.
pub fn place_all<'a>(manifests: &'a [Manifest], members: &[Candidate]) -> Vec<Placed<'a>> {
    let mut out = Vec::new();
    for m in manifests {
        for (name, brane) in m.plan.branes() {
            out.push(Placed {
                manifest: m,
                name,
                brane,
                placement: place_brane(&format!("{}/{name}", m.name), brane, members),
            });
        }
    }
    out
}

/// Places one brane under the HRW key `key` (its name, or a name qualified by
/// its manifest when several manifests share brane names).
pub fn place_brane(key: &str, brane: &Brane, members: &[Candidate]) -> BranePlacement {
    let glob = brane.peers.as_deref().map(|g| (g, PeersGlob::new(g)));
    let mut eligible: Vec<([u8; 32], NodeId)> = Vec::new();
    let mut ineligible = BTreeMap::new();
    for m in members {
        let reasons = reasons(brane, glob.as_ref(), m);
        if reasons.is_empty() {
            eligible.push((hrw_score(key, &m.id), m.id));
        } else {
            ineligible.insert(m.id, reasons);
        }
    }
    // Highest score first; a duplicate member (same id twice) counts once.
    eligible.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    eligible.dedup_by(|a, b| a.1 == b.1);
    let ranked: Vec<NodeId> = eligible.into_iter().map(|(_, id)| id).collect();
    let assignment = assign(brane.replicas, &ranked);
    let status = match (brane.replicas, assignment.is_empty()) {
        (Replicas::Count(0), _) => Status::Parked,
        (_, false) => Status::Placed,
        (_, true) => Status::Unplaceable,
    };
    BranePlacement {
        assignment,
        ineligible,
        status,
    }
}

fn assign(replicas: Replicas, ranked: &[NodeId]) -> Vec<(NodeId, u32)> {
    let e = ranked.len() as u32;
    match replicas {
        _ if e == 0 => Vec::new(),
        Replicas::Auto => ranked.iter().map(|id| (*id, 1)).collect(),
        Replicas::Count(n) => {
            let n = u32::from(n);
            let (q, r) = (n / e, n % e);
            ranked
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, q + u32::from((i as u32) < r)))
                .take_while(|(_, c)| *c > 0)
                .collect()
        }
    }
}

fn reasons(
    brane: &Brane,
    glob: Option<&(&str, Result<PeersGlob, String>)>,
    m: &Candidate,
) -> Vec<Ineligible> {
    let mut out = Vec::new();
    match m.state {
        State::Alive | State::Suspect => {}
        State::Dead => out.push(Ineligible::NotAlive(StateName::Dead)),
        State::Left => out.push(Ineligible::NotAlive(StateName::Left)),
    }
    let wanted = Substrate::from(brane.substrate);
    if m.substrate != wanted {
        out.push(Ineligible::WrongSubstrate {
            wanted,
            found: m.substrate,
        });
    }
    match brane.capability {
        Capability::Frontier if m.substrate == Substrate::Habitat => {
            out.push(Ineligible::FrontierOnHabitat);
        }
        Capability::Frontier if !m.capabilities.contains(Capabilities::FRONTIER) => {
            out.push(Ineligible::LacksCapability(Capability::Frontier));
        }
        Capability::Standard if !m.capabilities.contains(Capabilities::STANDARD) => {
            out.push(Ineligible::LacksCapability(Capability::Standard));
        }
        _ => {}
    }
    if brane.gpu == Gpu::Passthrough && !m.capabilities.contains(GPU_PASSTHROUGH) {
        out.push(Ineligible::NoGpuPassthrough);
    }
    match glob {
        Some((g, Ok(matcher))) if !matcher.is_match(&m.name) => {
            out.push(Ineligible::PeersGlobMismatch {
                glob: (*g).to_owned(),
            });
        }
        Some((g, Err(_))) => out.push(Ineligible::InvalidPeersGlob {
            glob: (*g).to_owned(),
        }),
        _ => {}
    }
    if !brane.hosts.is_empty() && !brane.hosts.contains(&m.name) {
        out.push(Ineligible::NotInHosts);
    }
    if let Some(needed) = brane.limits.memory_bytes
        && m.free_memory_bytes < needed
    {
        out.push(Ineligible::NotEnoughMemory {
            needed,
            free: m.free_memory_bytes,
        });
    }
    out
}

/// Whether two placements assign the same instance counts to the same
/// members, whatever the rank order.
pub fn same_assignment(a: &BranePlacement, b: &BranePlacement) -> bool {
    let mut x = a.assignment.clone();
    let mut y = b.assignment.clone();
    x.sort();
    y.sort();
    x == y
}
