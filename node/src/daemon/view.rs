//! Desired versus actual, computed from one node [`View`]: what `omega ps`
//! and `omega describe` print.
//!
//! Every node computes the same placement from the same document and member
//! table ([`place_all`], the same function the node brain places with).
//! Actual state is what each node's signed status says.

use std::collections::BTreeMap;

use omega_gossip::node::{BraneStatus, View};
use omega_gossip::placement::{BranePlacement, Ineligible, Placed, Status, place_all};
use omega_gossip::{NodeId, State};
use omega_zgraph::Capability;

use crate::api::{
    Actual, Describe, DescribeResponse, EventRow, IneligibleRow, PsBrane, PsManifest, PsResponse,
    Slot,
};

fn names(view: &View) -> BTreeMap<NodeId, (&str, State)> {
    view.members
        .iter()
        .map(|c| (c.id, (c.name.as_str(), c.state)))
        .collect()
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Placed => "placed",
        Status::Parked => "parked",
        Status::Unplaceable => "unplaceable",
    }
}

fn capability_name(c: Capability) -> &'static str {
    match c {
        Capability::Standard => "standard",
        Capability::Frontier => "frontier",
    }
}

/// A reason for people.
pub fn reason_text(r: &Ineligible) -> String {
    match r {
        Ineligible::WrongSubstrate { wanted, found } => {
            format!("substrate is {found}, the brane wants {wanted}")
        }
        Ineligible::FrontierOnHabitat => "frontier branes never run on habitat".into(),
        Ineligible::LacksCapability(c) => format!("does not run {} branes", capability_name(*c)),
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
fn actual(view: &View, manifest: &str, brane: &str, plan: &str) -> Vec<Actual> {
    let names = names(view);
    let mut rows = Vec::new();
    for (node, st) in &view.statuses {
        let (name, state) = names.get(node).copied().unwrap_or(("?", State::Dead));
        for b in st
            .branes
            .iter()
            .filter(|b| b.manifest == manifest && b.brane == brane)
        {
            rows.push(actual_row(node, name, state, b, plan));
        }
    }
    rows
}

fn actual_row(node: &NodeId, name: &str, state: State, b: &BraneStatus, plan: &str) -> Actual {
    Actual {
        node: name.into(),
        did: node.to_string(),
        state: b.state.name().into(),
        reason: match &b.state {
            omega_gossip::node::BraneState::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        },
        node_state: state.name().into(),
        instances: b.instances,
        current: b.plan == plan,
        url: b.url.clone(),
    }
}

fn desired(view: &View, p: &BranePlacement) -> Vec<Slot> {
    let names = names(view);
    p.assignment
        .iter()
        .map(|(id, n)| Slot {
            node: names.get(id).map_or("?", |x| x.0).into(),
            did: id.to_string(),
            instances: *n,
        })
        .collect()
}

/// Whether every placed node reports the brane running at the current plan.
fn ready(p: &BranePlacement, desired: &[Slot], actual: &[Actual]) -> bool {
    p.status != Status::Unplaceable
        && desired.iter().all(|d| {
            actual.iter().any(|a| {
                a.did == d.did && a.state == "running" && a.current && a.instances == d.instances
            })
        })
}

/// `omega ps`.
pub fn ps(view: &View) -> PsResponse {
    let placed = place_all(&view.manifests, &view.members);
    let manifests = view
        .manifests
        .iter()
        .map(|m| {
            let plan = m.plan_hash.to_hex();
            let branes = placed
                .iter()
                .filter(|p| p.manifest.name == m.name)
                .map(|p| {
                    let desired = desired(view, &p.placement);
                    let actual = actual(view, &m.name, p.name, &plan);
                    PsBrane {
                        brane: p.name.into(),
                        substrate: omega_gossip::Substrate::from(p.brane.substrate).to_string(),
                        capability: capability_name(p.brane.capability).into(),
                        replicas: p.brane.replicas,
                        status: status_name(p.placement.status).into(),
                        ready: ready(&p.placement, &desired, &actual),
                        desired,
                        actual,
                    }
                })
                .collect();
            PsManifest {
                name: m.name.clone(),
                plan,
                signer: m.stamp.signer.to_string(),
                stamp_ms: m.stamp.hlc.wall_ms,
                branes,
            }
        })
        .collect();
    PsResponse {
        manifests,
        rejected: view.refusals.clone(),
        document_bytes: view.document_bytes,
        events: None,
        resolvers: Vec::new(),
    }
}

fn describe_one(view: &View, p: &Placed<'_>) -> Describe {
    let names = names(view);
    let plan = p.manifest.plan_hash.to_hex();
    let desired = desired(view, &p.placement);
    let actual = actual(view, &p.manifest.name, p.name, &plan);
    Describe {
        manifest: p.manifest.name.clone(),
        brane: p.name.into(),
        spec: p.brane.clone(),
        status: status_name(p.placement.status).into(),
        ready: ready(&p.placement, &desired, &actual),
        ineligible: p
            .placement
            .ineligible
            .iter()
            .map(|(id, rs)| IneligibleRow {
                node: names.get(id).map_or("?", |x| x.0).into(),
                did: id.to_string(),
                reasons: rs.iter().map(reason_text).collect(),
            })
            .collect(),
        events: view
            .events
            .iter()
            .filter(|e| e.manifest == p.manifest.name && e.brane == p.name)
            .map(|e| EventRow {
                at_ms: e.at_ms,
                text: e.text.clone(),
            })
            .collect(),
        plan,
        placement: desired,
        actual,
        resolvers: Vec::new(),
    }
}

/// `omega describe BRANE` (`BRANE` or `MANIFEST/BRANE`); `None` if unknown.
pub fn describe(view: &View, which: &str) -> Option<DescribeResponse> {
    let (want_m, want_b) = match which.split_once('/') {
        Some((m, b)) => (Some(m), b),
        None => (None, which),
    };
    let mut found: Vec<Describe> = place_all(&view.manifests, &view.members)
        .iter()
        .filter(|p| p.name == want_b && want_m.is_none_or(|m| m == p.manifest.name))
        .map(|p| describe_one(view, p))
        .collect();
    match found.len() {
        0 => None,
        1 => found.pop().map(|d| DescribeResponse::One(Box::new(d))),
        _ => Some(DescribeResponse::Many { matches: found }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use omega_gossip::desired::Manifest;
    use omega_gossip::node::{BraneState, NodeStatus};
    use omega_gossip::{Candidate, Capabilities, Hlc, Stamp, Substrate};
    use omega_identity::Keypair;

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

    fn view(statuses: &[(u8, BraneState, u32)]) -> View {
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
        View {
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
                            state: state.clone(),
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
            events: Vec::new(),
        }
    }

    #[test]
    fn ready_means_every_placed_node_runs_the_current_plan() {
        let v = view(&[(1, BraneState::Running, 1)]);
        let ps = ps(&v);
        let web = &ps.manifests[0].branes[0];
        assert_eq!(web.status, "placed");
        assert_eq!(web.desired.len(), 2);
        assert!(!web.ready, "b does not report yet");
        let ps2 = super::ps(&view(&[
            (1, BraneState::Running, 1),
            (2, BraneState::Starting, 1),
        ]));
        assert!(!ps2.manifests[0].branes[0].ready);
        let ps3 = super::ps(&view(&[
            (1, BraneState::Running, 1),
            (2, BraneState::Running, 1),
        ]));
        assert!(ps3.manifests[0].branes[0].ready);
    }

    #[test]
    fn describe_names_every_reason() {
        let v = view(&[]);
        let Some(DescribeResponse::One(d)) = describe(&v, "web") else {
            panic!("one brane");
        };
        let text = format!("{:?}", d.ineligible);
        assert!(
            text.contains("substrate is gaia, the brane wants habitat"),
            "{text}"
        );
        assert!(text.contains("dead"), "{text}");
        assert!(describe(&v, "nope").is_none());
        assert!(describe(&v, "w/web").is_some());
    }
}
