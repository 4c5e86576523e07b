//! Desired versus actual, computed from one [`DesiredView`]: what the
//! reconciler starts, and what `omega ps` and `omega describe` print.
//!
//! Every node computes the same placement from the same document and member
//! table: each brane is placed with [`place_brane`] under the key
//! `MANIFEST/BRANE` (so two manifests with a brane of the same name spread
//! independently). Actual state is what each node's signed status says.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use omega_gossip::placement::{BranePlacement, Ineligible, Status, place_brane};
use omega_gossip::{NodeId, State};
use omega_p2p::DesiredView;
use omega_p2p::join::substrate_name;
use omega_zgraph::{Capability, PlanHash, Replicas};
use serde_json::{Value, json};

/// One brane this node should run.
#[derive(Debug, Clone)]
pub struct Want {
    /// The plan hash.
    pub plan: PlanHash,
    /// Instances placed here.
    pub instances: u32,
    /// The brane's spec.
    pub brane: omega_zgraph::Brane,
    /// The plan's edges.
    pub edges: Vec<omega_zgraph::Edge>,
}

/// `(manifest, brane)`.
pub type Key = (String, String);

/// Placement of every brane of every manifest.
pub fn placements(view: &DesiredView) -> Vec<(Key, BranePlacement)> {
    let mut out = Vec::new();
    for m in &view.manifests {
        for (b, brane) in m.plan.branes() {
            let key = format!("{}/{b}", m.name);
            out.push((
                (m.name.clone(), b.clone()),
                place_brane(&key, brane, &view.members),
            ));
        }
    }
    out
}

/// What `me` should run.
pub fn wanted(view: &DesiredView) -> BTreeMap<Key, Want> {
    let mut out = BTreeMap::new();
    for m in &view.manifests {
        for (b, brane) in m.plan.branes() {
            let p = place_brane(&format!("{}/{b}", m.name), brane, &view.members);
            let n = p.instances_on(&view.me);
            if n > 0 {
                out.insert(
                    (m.name.clone(), b.clone()),
                    Want {
                        plan: m.plan_hash,
                        instances: n,
                        brane: brane.clone(),
                        edges: m.plan.edges().to_vec(),
                    },
                );
            }
        }
    }
    out
}

/// A line of a brane's recent history on this node.
#[derive(Debug, Clone)]
pub struct EventLine {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Manifest.
    pub manifest: String,
    /// Brane.
    pub brane: String,
    /// What happened.
    pub text: String,
}

/// Most event lines kept.
pub const MAX_EVENTS: usize = 256;

/// The recent events of this node's reconciler (bounded, oldest dropped).
#[derive(Debug, Default)]
pub struct Events(Mutex<VecDeque<EventLine>>);

impl Events {
    /// Records an event.
    pub fn push(&self, manifest: &str, brane: &str, text: String) {
        tracing::info!(manifest, brane, "{text}");
        let Ok(mut q) = self.0.lock() else { return };
        if q.len() >= MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(EventLine {
            at_ms: unix_ms(),
            manifest: manifest.into(),
            brane: brane.into(),
            text,
        });
    }

    /// The events of one brane, oldest first.
    pub fn of(&self, manifest: &str, brane: &str) -> Vec<EventLine> {
        let Ok(q) = self.0.lock() else {
            return Vec::new();
        };
        q.iter()
            .filter(|e| e.manifest == manifest && e.brane == brane)
            .cloned()
            .collect()
    }
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn names(view: &DesiredView) -> BTreeMap<NodeId, (&str, State)> {
    view.members
        .iter()
        .map(|c| (c.id, (c.name.as_str(), c.state)))
        .collect()
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Dead => "dead",
        State::Left => "left",
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Placed => "placed",
        Status::Parked => "parked",
        Status::Unplaceable => "unplaceable",
    }
}

/// A reason for people.
pub fn reason_text(r: &Ineligible) -> String {
    match r {
        Ineligible::WrongSubstrate { wanted, found } => format!(
            "substrate is {}, the brane wants {}",
            substrate_name(*found),
            substrate_name(*wanted)
        ),
        Ineligible::FrontierOnHabitat => "frontier branes never run on habitat".into(),
        Ineligible::LacksCapability(c) => format!(
            "does not run {} branes",
            match c {
                Capability::Standard => "standard",
                Capability::Frontier => "frontier",
            }
        ),
        Ineligible::NoGpuPassthrough => "no GPU passthrough".into(),
        Ineligible::PeersGlobMismatch { glob } => format!("name does not match peers = {glob:?}"),
        Ineligible::NotInHosts => "not in the brane's hosts".into(),
        Ineligible::NotEnoughMemory { needed, free } => {
            format!("{free} bytes free, the brane needs {needed}")
        }
        Ineligible::NotAlive(s) => format!("{s:?}").to_lowercase(),
        Ineligible::InvalidPeersGlob { glob } => format!("invalid peers glob {glob:?}"),
        other => format!("{other:?}"),
    }
}

/// The actual rows of one brane: every node whose status lists it.
fn actual(view: &DesiredView, key: &Key, plan: &str) -> Vec<Value> {
    let names = names(view);
    let mut rows = Vec::new();
    for (node, st) in &view.statuses {
        let (name, state) = names.get(node).copied().unwrap_or(("?", State::Dead));
        for b in &st.branes {
            if b.manifest == key.0 && b.brane == key.1 {
                rows.push(json!({
                    "node": name,
                    "did": node.to_string(),
                    "state": if state.is_live() { b.state.clone() } else { format!("{} (node {})", b.state, state_name(state)) },
                    "instances": b.instances,
                    "current": b.plan == plan,
                    "url": b.url,
                }));
            }
        }
    }
    rows
}

fn desired_rows(view: &DesiredView, p: &BranePlacement) -> Vec<Value> {
    let names = names(view);
    p.assignment
        .iter()
        .map(|(id, n)| {
            json!({
                "node": names.get(id).map_or("?", |x| x.0),
                "did": id.to_string(),
                "instances": n,
            })
        })
        .collect()
}

/// Whether every placed node reports the brane running at the current plan.
fn ready(desired: &[Value], actual: &[Value]) -> bool {
    desired.iter().all(|d| {
        actual.iter().any(|a| {
            a["did"] == d["did"]
                && a["state"] == "running"
                && a["current"] == true
                && a["instances"] == d["instances"]
        })
    })
}

/// `omega ps --json`.
pub fn ps(view: &DesiredView) -> Value {
    let placements: BTreeMap<Key, BranePlacement> = placements(view).into_iter().collect();
    let mut manifests = Vec::new();
    for m in &view.manifests {
        let plan = m.plan_hash.to_hex();
        let mut branes = Vec::new();
        for (b, brane) in m.plan.branes() {
            let key = (m.name.clone(), b.clone());
            let Some(p) = placements.get(&key) else {
                continue;
            };
            let desired = desired_rows(view, p);
            let actual = actual(view, &key, &plan);
            branes.push(json!({
                "brane": b,
                "substrate": format!("{:?}", brane.substrate).to_lowercase(),
                "capability": format!("{:?}", brane.capability).to_lowercase(),
                "replicas": match brane.replicas { Replicas::Auto => json!("auto"), Replicas::Count(n) => json!(n) },
                "status": status_name(p.status),
                "ready": p.status != Status::Unplaceable && ready(&desired, &actual),
                "desired": desired,
                "actual": actual,
            }));
        }
        manifests.push(json!({
            "name": m.name,
            "plan": plan,
            "signer": m.stamp.signer.to_string(),
            "stamp_ms": m.stamp.hlc.wall_ms,
            "branes": branes,
        }));
    }
    json!({
        "manifests": manifests,
        "rejected": view.refusals,
        "document_bytes": view.document_bytes,
    })
}

/// `omega describe BRANE` (`BRANE` or `MANIFEST/BRANE`); `None` if unknown.
pub fn describe(view: &DesiredView, events: &Events, which: &str) -> Option<Value> {
    let (want_m, want_b) = match which.split_once('/') {
        Some((m, b)) => (Some(m), b),
        None => (None, which),
    };
    let names = names(view);
    let mut found = Vec::new();
    for ((m, b), p) in placements(view) {
        if b != want_b || want_m.is_some_and(|x| x != m) {
            continue;
        }
        let Some(manifest) = view.manifests.iter().find(|x| x.name == m) else {
            continue;
        };
        let plan = manifest.plan_hash.to_hex();
        let key = (m.clone(), b.clone());
        let ineligible: Vec<Value> = p
            .ineligible
            .iter()
            .map(|(id, rs)| {
                json!({
                    "node": names.get(id).map_or("?", |x| x.0),
                    "did": id.to_string(),
                    "reasons": rs.iter().map(reason_text).collect::<Vec<_>>(),
                })
            })
            .collect();
        let desired = desired_rows(view, &p);
        let actual = actual(view, &key, &plan);
        found.push(json!({
            "manifest": m,
            "brane": b,
            "plan": plan,
            "spec": manifest.plan.brane(&b),
            "status": status_name(p.status),
            "ready": p.status != Status::Unplaceable && ready(&desired, &actual),
            "placement": desired,
            "ineligible": ineligible,
            "actual": actual,
            "events": events.of(&m, &b).iter().map(|e| json!({"at_ms": e.at_ms, "text": e.text})).collect::<Vec<_>>(),
        }));
    }
    match found.len() {
        0 => None,
        1 => found.pop(),
        _ => Some(json!({ "matches": found })),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use omega_gossip::desired::Manifest;
    use omega_gossip::{Candidate, Capabilities, Hlc, Stamp, Substrate};
    use omega_identity::Keypair;
    use omega_p2p::dispatch::{BraneStatus, NodeStatus};

    fn node(seed: u8, name: &str, substrate: Substrate, state: State) -> Candidate {
        Candidate {
            id: NodeId::from(Keypair::from_seed([seed; 32]).public()),
            name: name.into(),
            substrate,
            capabilities: Capabilities::STANDARD,
            free_memory_bytes: 1 << 30,
            state,
        }
    }

    fn view(statuses: &[(u8, &str, u32)]) -> DesiredView {
        let plan = omega_zgraph::load(
            "[brane.web]\nsubstrate = \"habitat\"\nimage = \"hello:1.0\"\nreplicas = 2\n",
            "w.toml",
            omega_zgraph::Format::Toml,
        )
        .unwrap();
        let members = vec![
            node(1, "a", Substrate::Habitat, State::Alive),
            node(2, "b", Substrate::Habitat, State::Alive),
            node(3, "c", Substrate::Gaia, State::Alive),
            node(4, "d", Substrate::Habitat, State::Dead),
        ];
        let hash = plan.hash();
        DesiredView {
            me: members[0].id,
            manifests: vec![Manifest {
                name: "w".into(),
                plan,
                plan_hash: hash,
                stamp: Stamp {
                    hlc: Hlc::new(1, 0),
                    signer: members[0].id,
                },
            }],
            images: Vec::new(),
            statuses: statuses
                .iter()
                .map(|(seed, state, n)| {
                    let id = members[usize::from(*seed) - 1].id;
                    let st = NodeStatus {
                        seq: 1,
                        branes: vec![BraneStatus {
                            manifest: "w".into(),
                            brane: "web".into(),
                            plan: hash.to_hex(),
                            instances: *n,
                            state: (*state).into(),
                            url: None,
                        }],
                    };
                    (id, st)
                })
                .collect(),
            members,
            peers: Vec::new(),
            refusals: Vec::new(),
            document_bytes: 0,
        }
    }

    #[test]
    fn ready_means_every_placed_node_runs_the_current_plan() {
        let v = view(&[(1, "running", 1)]);
        assert_eq!(
            wanted(&v).len(),
            1,
            "a is one of the two habitat nodes alive"
        );
        let ps = ps(&v);
        let web = &ps["manifests"][0]["branes"][0];
        assert_eq!(web["status"], "placed");
        assert_eq!(web["desired"].as_array().unwrap().len(), 2);
        assert_eq!(web["ready"], false, "b does not report yet");
        let ps2 = super::ps(&view(&[(1, "running", 1), (2, "starting", 1)]));
        assert_eq!(ps2["manifests"][0]["branes"][0]["ready"], false);
        let ps3 = super::ps(&view(&[(1, "running", 1), (2, "running", 1)]));
        assert_eq!(ps3["manifests"][0]["branes"][0]["ready"], true);
    }

    #[test]
    fn describe_names_every_reason() {
        let v = view(&[]);
        let d = describe(&v, &Events::default(), "web").unwrap();
        let text = d["ineligible"].to_string();
        assert!(
            text.contains("substrate is gaia, the brane wants habitat"),
            "{text}"
        );
        assert!(text.contains("dead"), "{text}");
        assert!(describe(&v, &Events::default(), "nope").is_none());
        assert!(describe(&v, &Events::default(), "w/web").is_some());
    }
}
