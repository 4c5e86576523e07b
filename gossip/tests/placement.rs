//! Placement: unit cases and property tests (determinism, constraints, minimal movement).

use omega_gossip::placement::{
    Candidate, GPU_PASSTHROUGH, Ineligible, Status, hrw_score, place, place_brane,
};
use omega_gossip::{Capabilities, NodeId, State, Substrate};
use omega_zgraph::{Brane, Capability, Format, Gpu, Replicas, load};
use proptest::prelude::*;

fn brane(toml: &str) -> Brane {
    let plan = load(toml, "t.toml", Format::Toml).expect("valid manifest");
    plan.branes().values().next().expect("one brane").clone()
}

fn base() -> Brane {
    brane("[brane.b]\nsubstrate = \"gaia\"\n")
}

fn node(seed: u8, name: &str, substrate: Substrate, caps: Capabilities) -> Candidate {
    Candidate {
        id: NodeId::from_bytes([seed; 32]),
        name: name.into(),
        substrate,
        capabilities: caps,
        free_memory_bytes: 8 << 30,
        state: State::Alive,
    }
}

#[test]
fn score_is_blake3_of_name_then_id() {
    let id = NodeId::from_bytes([7; 32]);
    let mut bytes = b"web".to_vec();
    bytes.extend_from_slice(&[7; 32]);
    assert_eq!(hrw_score("web", &id), *blake3::hash(&bytes).as_bytes());
}

#[test]
fn frontier_branes_without_frontier_nodes_are_unplaceable_with_reasons() {
    let plan = load(
        "[brane.train]\nsubstrate = \"gaia\"\ncapability = \"frontier\"\n",
        "t.toml",
        Format::Toml,
    )
    .expect("valid");
    let members = [
        node(1, "pi", Substrate::Habitat, Capabilities::STANDARD),
        // Lies about frontier on habitat: still never chosen.
        node(2, "nas", Substrate::Habitat, Capabilities(3)),
        node(3, "dc", Substrate::Gaia, Capabilities::STANDARD),
    ];
    let p = place(&plan, &members);
    let train = &p.branes["train"];
    assert_eq!(train.status, Status::Unplaceable);
    assert!(train.assignment.is_empty());
    assert_eq!(p.unplaceable().count(), 1);
    assert!(train.ineligible[&members[1].id].contains(&Ineligible::FrontierOnHabitat));
    assert!(
        train.ineligible[&members[2].id]
            .contains(&Ineligible::LacksCapability(Capability::Frontier))
    );
}

#[test]
fn replica_counts() {
    let members: Vec<_> = (1..=3)
        .map(|i| node(i, &format!("n{i}"), Substrate::Gaia, Capabilities::STANDARD))
        .collect();
    let mut b = base();
    b.replicas = Replicas::Count(0);
    assert_eq!(place_brane("b", &b, &members).status, Status::Parked);
    b.replicas = Replicas::Count(2);
    let two = place_brane("b", &b, &members);
    assert_eq!(two.assignment.len(), 2);
    assert!(two.assignment.iter().all(|(_, n)| *n == 1));
    b.replicas = Replicas::Count(7);
    let seven = place_brane("b", &b, &members);
    let counts: Vec<u32> = seven.assignment.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, [3, 2, 2]);
    b.replicas = Replicas::Auto;
    assert_eq!(place_brane("b", &b, &members).assignment.len(), 3);
}

#[test]
fn every_filter_reports_its_reason() {
    let mut b = brane(
        "[brane.b]\nsubstrate = \"gaia\"\ncapability = \"frontier\"\ngpu = \"passthrough\"\npeers = \"dc/*\"\nhosts = [\"dc/a\"]\n[brane.b.limits]\nmemory = \"1GiB\"\n",
    );
    b.replicas = Replicas::Count(1);
    let full = Capabilities::FRONTIER.with(GPU_PASSTHROUGH);
    let good = node(1, "dc/a", Substrate::Gaia, full);
    let mut poor = node(2, "dc/b", Substrate::Gaia, Capabilities::FRONTIER);
    poor.free_memory_bytes = 1;
    let mut dead = node(3, "dc/a/x", Substrate::Biome, full);
    dead.state = State::Dead;
    let p = place_brane("b", &b, &[good.clone(), poor.clone(), dead.clone()]);
    assert_eq!(p.assignment, vec![(good.id, 1)]);
    let r = &p.ineligible[&poor.id];
    assert!(r.contains(&Ineligible::NoGpuPassthrough));
    assert!(r.contains(&Ineligible::NotInHosts));
    assert!(r.contains(&Ineligible::NotEnoughMemory {
        needed: 1 << 30,
        free: 1
    }));
    let r = &p.ineligible[&dead.id];
    assert!(r.iter().any(|x| matches!(x, Ineligible::NotAlive(_))));
    assert!(
        r.iter()
            .any(|x| matches!(x, Ineligible::WrongSubstrate { .. }))
    );
    // `*` does not cross `/`.
    assert!(r.contains(&Ineligible::PeersGlobMismatch {
        glob: "dc/*".into()
    }));
}

const NAMES: [&str; 5] = ["dc/a", "dc/b", "edge/c", "dc/d/e", "home"];
const SUBSTRATES: [Substrate; 3] = [Substrate::Gaia, Substrate::Biome, Substrate::Habitat];

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        any::<[u8; 32]>(),
        0..NAMES.len(),
        0..3usize,
        0u8..8,
        prop_oneof![Just(1u64 << 20), Just(1u64 << 30), Just(8u64 << 30)],
        prop_oneof![4 => Just(State::Alive), 1 => Just(State::Suspect), 1 => Just(State::Dead), 1 => Just(State::Left)],
    )
        .prop_map(|(id, n, s, caps, mem, state)| Candidate {
            id: NodeId::from_bytes(id),
            name: NAMES[n].into(),
            substrate: SUBSTRATES[s],
            capabilities: Capabilities(caps),
            free_memory_bytes: mem,
            state,
        })
}

fn any_brane() -> impl Strategy<Value = Brane> {
    (
        0..3usize,
        any::<bool>(),
        prop_oneof![(0u16..12).prop_map(Replicas::Count), Just(Replicas::Auto)],
        prop_oneof![Just(None), Just(Some("dc/*")), Just(Some("**"))],
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(1u64 << 30))],
        any::<bool>(),
    )
        .prop_map(|(s, frontier, replicas, peers, hosts, mem, gpu)| {
            let mut b = base();
            b.substrate = [
                omega_zgraph::Substrate::Gaia,
                omega_zgraph::Substrate::Biome,
                omega_zgraph::Substrate::Habitat,
            ][s];
            b.capability = if frontier {
                Capability::Frontier
            } else {
                Capability::Standard
            };
            b.replicas = replicas;
            b.peers = peers.map(String::from);
            b.hosts = if hosts {
                vec!["dc/a".into(), "home".into()]
            } else {
                vec![]
            };
            b.limits.memory_bytes = mem;
            b.gpu = if gpu { Gpu::Passthrough } else { Gpu::None };
            b
        })
}

/// An independent statement of the rules, to check assignments against.
fn allowed(b: &Brane, m: &Candidate) -> bool {
    let sub = match b.substrate {
        omega_zgraph::Substrate::Gaia => Substrate::Gaia,
        omega_zgraph::Substrate::Biome => Substrate::Biome,
        omega_zgraph::Substrate::Habitat => Substrate::Habitat,
    };
    let cap = match b.capability {
        Capability::Standard => Capabilities::STANDARD,
        Capability::Frontier => Capabilities::FRONTIER,
    };
    let glob_ok = match b.peers.as_deref() {
        None | Some("**") => true,
        Some(_) => m.name == "dc/a" || m.name == "dc/b",
    };
    matches!(m.state, State::Alive | State::Suspect)
        && m.substrate == sub
        && m.capabilities.contains(cap)
        && !(b.capability == Capability::Frontier && m.substrate == Substrate::Habitat)
        && (b.gpu == Gpu::None || m.capabilities.contains(GPU_PASSTHROUGH))
        && glob_ok
        && (b.hosts.is_empty() || b.hosts.contains(&m.name))
        && b.limits
            .memory_bytes
            .is_none_or(|need| m.free_memory_bytes >= need)
}

fn counts(p: &omega_gossip::BranePlacement) -> std::collections::BTreeMap<NodeId, u32> {
    p.assignment.iter().copied().collect()
}

fn dedup(mut members: Vec<Candidate>) -> Vec<Candidate> {
    members.sort_by_key(|m| m.id);
    members.dedup_by_key(|m| m.id);
    members
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deterministic_and_respects_constraints(b in any_brane(), members in prop::collection::vec(candidate(), 0..12), rot in 0usize..12) {
        let members = dedup(members);
        let p = place_brane("b", &b, &members);
        let mut shuffled = members.clone();
        shuffled.reverse();
        if !shuffled.is_empty() { let k = rot % shuffled.len(); shuffled.rotate_left(k); }
        prop_assert_eq!(&p, &place_brane("b", &b, &shuffled));
        let eligible = members.iter().filter(|m| allowed(&b, m)).count();
        for (id, n) in &p.assignment {
            let m = members.iter().find(|m| m.id == *id).expect("assigned member exists");
            prop_assert!(allowed(&b, m), "assigned {:?} breaks a rule", m);
            prop_assert!(*n > 0);
        }
        for m in &members {
            prop_assert_eq!(allowed(&b, m), !p.ineligible.contains_key(&m.id));
        }
        let want = match b.replicas {
            _ if eligible == 0 => 0,
            Replicas::Auto => eligible as u64,
            Replicas::Count(n) => u64::from(n),
        };
        prop_assert_eq!(p.total_instances(), want);
        if eligible == 0 && b.replicas != Replicas::Count(0) {
            prop_assert_eq!(p.status, Status::Unplaceable);
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_instances(b in any_brane(), members in prop::collection::vec(candidate(), 1..12), k in 0usize..12) {
        let members = dedup(members);
        let k = k % members.len();
        let before = counts(&place_brane("b", &b, &members));
        let mut rest = members.clone();
        let gone = rest.remove(k).id;
        let after = counts(&place_brane("b", &b, &rest));
        if b.replicas == Replicas::Auto {
            // One instance per eligible member: the survivors keep exactly
            // theirs, and the one that left takes its instance with it.
            let mut expected = before.clone();
            expected.remove(&gone);
            prop_assert_eq!(after, expected);
            return Ok(());
        }
        if after.is_empty() {
            return Ok(());
        }
        for (id, n) in &before {
            if *id != gone {
                prop_assert!(after.get(id).copied().unwrap_or(0) >= *n, "a survivor lost instances");
            }
        }
        let moved: u32 = after.iter().map(|(id, n)| n - before.get(id).copied().unwrap_or(0)).sum();
        prop_assert_eq!(moved, before.get(&gone).copied().unwrap_or(0));
    }

    #[test]
    fn adding_a_member_moves_at_most_n_and_only_to_it(b in any_brane(), members in prop::collection::vec(candidate(), 0..12), new in candidate()) {
        let members = dedup(members);
        prop_assume!(members.iter().all(|m| m.id != new.id));
        let before = counts(&place_brane("b", &b, &members));
        let mut more = members.clone();
        more.push(new.clone());
        let after = counts(&place_brane("b", &b, &more));
        if before.is_empty() {
            return Ok(());
        }
        for (id, n) in &after {
            if *id != new.id {
                prop_assert!(*n <= before.get(id).copied().unwrap_or(0), "an old member gained instances");
            }
        }
        match b.replicas {
            Replicas::Count(n) => {
                prop_assert!(after.get(&new.id).copied().unwrap_or(0) <= u32::from(n));
            }
            Replicas::Auto => {
                // Nothing moves: every old member keeps its one instance,
                // and the newcomer gets one if it is eligible.
                for (id, n) in &before {
                    prop_assert_eq!(after.get(id).copied(), Some(*n));
                }
                prop_assert!(after.get(&new.id).copied().unwrap_or(0) <= 1);
            }
        }
    }
}
