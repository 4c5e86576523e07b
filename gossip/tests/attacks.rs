//! Attacks from inside: an admitted member of a deterministic mesh that
//! floods every protocol and topic, asks for amplified answers, mints keys
//! from its invite, forges and replays desired-state records, and lies about
//! what it is. Each test counts what the victim answered or processed
//! against what was sent ([`MeshSim::wire`], the node's dispatch stats),
//! checks that an honest member is still served meanwhile, and that the
//! attacker ends up banned where the code means it to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_gossip::desired::{Authority, DesiredRecord};
use omega_gossip::node::{Config, ImageRequest, NodeStatus, Protocol, Report, Topic};
use omega_gossip::placement::place_all;
use omega_gossip::testkit::mesh::{MeshConfig, MeshSim, Obs};
use omega_gossip::{Capabilities, Substrate};
use omega_identity::Keypair;
use yrs::{Map, ReadTxn, StateVector, Transact, WriteTxn};

const VICTIM: usize = 0;
const HONEST: usize = 1;
const ATTACKER: usize = 2;

const WEB: &str = "[brane.web]\nsubstrate = \"habitat\"\nreplicas = 1\n";

fn config(f: impl FnOnce(&mut Config)) -> MeshConfig {
    let mut c = MeshConfig {
        tap: 64,
        count_wire: true,
        ..MeshConfig::default()
    };
    f(&mut c.node);
    c
}

/// Victim, honest member and attacker, all admitted to each other.
fn trio(seed: u64, c: MeshConfig) -> MeshSim {
    let mut sim = MeshSim::new(seed, c);
    for name in ["victim", "honest", "mallory"] {
        sim.add_node(name, Substrate::Habitat);
    }
    let joined = sim.run_until(20_000, |s| {
        (0..3).all(|i| s.node(i).unwrap().view().peers.len() == 2)
    });
    assert!(joined, "the trio did not form");
    sim
}

fn banned(sim: &MeshSim, by: usize, who: usize) -> bool {
    let id = sim.node_id(who).to_string();
    sim.node(by).unwrap().report().banned.contains(&id)
}

/// The honest member is still a live member of the victim's view and its
/// writes still replicate to the victim.
fn honest_still_served(sim: &mut MeshSim, name: &str) {
    let cmd = sim.apply(HONEST, name, WEB);
    let replicated = sim.run_until(10_000, |s| {
        s.node(VICTIM)
            .unwrap()
            .desired()
            .manifests()
            .any(|m| m.name == name)
    });
    assert!(
        replicated,
        "the honest member's write did not reach the victim"
    );
    assert!(sim.reply(HONEST, cmd).is_some());
    let did = sim.node_id(HONEST).to_string();
    let members = sim.node(VICTIM).unwrap().members();
    let m = members
        .iter()
        .find(|m| m.did == did)
        .expect("honest member");
    assert_eq!(m.state, "alive", "{m:?}");
}

/// Sends `per_ms` messages a millisecond for `ms` virtual milliseconds.
fn flood(sim: &mut MeshSim, ms: u64, per_ms: u64, mut send: impl FnMut(&mut MeshSim, u64)) {
    let mut k = 0;
    for _ in 0..ms {
        for _ in 0..per_ms {
            send(sim, k);
            k += 1;
        }
        sim.run_for(1);
    }
}

fn dispatch(sim: &MeshSim, i: usize) -> omega_gossip::node::DispatchStats {
    sim.node(i).unwrap().report().dispatch
}

// ----- 1. floods -------------------------------------------------------------

#[test]
fn a_state_request_flood_is_rate_limited_then_banned() {
    let mut sim = trio(
        1,
        config(|c| {
            c.guard.flood_strike = 100;
        }),
    );
    sim.apply(HONEST, "seed", WEB);
    sim.run_for(2_000);
    let before = dispatch(&sim, VICTIM).rate_limited;
    // 5 000 anti-entropy requests in one second, each asking for everything.
    flood(&mut sim, 1_000, 5, |s, _| {
        s.inject_request(ATTACKER, VICTIM, Protocol::State, vec![0]);
    });
    let (sent, _) = sim.wire(ATTACKER, VICTIM, "state");
    let (_, answered) = sim.wire(VICTIM, ATTACKER, "response");
    let doc = sim
        .node(VICTIM)
        .unwrap()
        .desired()
        .diff_since(&[0])
        .unwrap()
        .len() as u64;
    let limited = dispatch(&sim, VICTIM).rate_limited - before;
    eprintln!(
        "state flood: {sent} sent, {answered} B answered (document {doc} B), {limited} rate limited"
    );
    // 50/s burst 100 requests looked at; of those, at most 4 + 2/s answered
    // with content; the ban (3 strikes = 300 refusals) closed the
    // connection soon after.
    assert!(limited >= 300, "{limited}");
    assert!(
        answered <= (4 + 2 * 2) * doc + 1024,
        "{answered} B to {sent} requests"
    );
    assert!(sent < 1_000, "the ban cut the flood off: {sent} arrived");
    assert!(banned(&sim, VICTIM, ATTACKER));
    honest_still_served(&mut sim, "after-state-flood");
}

#[test]
fn a_state_gossip_flood_is_rate_limited_then_banned() {
    let mut sim = trio(
        2,
        config(|c| {
            c.guard.flood_strike = 100;
        }),
    );
    sim.apply(HONEST, "seed", WEB);
    sim.run_for(2_000);
    let update = sim.tapped()["gossip-state"][0].clone();
    let before = dispatch(&sim, VICTIM).rate_limited;
    // Genuine updates, replayed 5 000 times as fresh gossip messages.
    flood(&mut sim, 1_000, 5, |s, _| {
        s.inject_gossip(ATTACKER, Topic::State, update.clone());
    });
    let limited = dispatch(&sim, VICTIM).rate_limited - before;
    let (arrived, _) = sim.wire(ATTACKER, VICTIM, "gossip-state");
    eprintln!("state gossip flood: {arrived} arrived, {limited} rate limited");
    assert!(limited >= 300, "{limited}");
    assert!(
        arrived - limited <= 100 + 50 * 2,
        "processed {} of {arrived}",
        arrived - limited
    );
    assert!(banned(&sim, VICTIM, ATTACKER));
    honest_still_served(&mut sim, "after-gossip-flood");
}

#[test]
fn a_status_flood_is_rate_limited_then_banned() {
    let mut sim = trio(
        3,
        config(|c| {
            c.guard.flood_strike = 100;
        }),
    );
    let attacker = sim.node_id(ATTACKER);
    let before = dispatch(&sim, VICTIM).rate_limited;
    flood(&mut sim, 1_000, 5, |s, k| {
        let status = NodeStatus {
            seq: 1 << 50 | k,
            branes: Vec::new(),
        };
        s.inject_gossip(ATTACKER, Topic::Status, status.to_bytes());
    });
    let limited = dispatch(&sim, VICTIM).rate_limited - before;
    let (arrived, _) = sim.wire(ATTACKER, VICTIM, "gossip-status");
    eprintln!("status flood: {arrived} arrived, {limited} rate limited");
    // 10/s, burst 50: the rest is ignored unread.
    assert!(arrived - limited <= 50 + 10 * 2, "{arrived} - {limited}");
    assert!(banned(&sim, VICTIM, ATTACKER));
    // What was taken is the newest the bucket let through, not the last sent.
    let seen = sim
        .node(VICTIM)
        .unwrap()
        .view()
        .statuses
        .get(&attacker)
        .map(|s| s.seq);
    assert!(seen.is_some_and(|s| s < 1 << 50 | 1_000), "{seen:?}");
    honest_still_served(&mut sim, "after-status-flood");
}

#[test]
fn a_join_request_flood_is_rate_limited_then_banned() {
    let mut sim = trio(
        4,
        config(|c| {
            c.guard.flood_strike = 50;
        }),
    );
    let token = sim.token(Substrate::Habitat).unwrap().clone();
    let key = sim.key(ATTACKER).clone();
    let now = sim.now() / 1000 + 1_800_000_000;
    let before = dispatch(&sim, VICTIM).rate_limited;
    // Fresh, valid invocations: each costs a chain validation if let in.
    flood(&mut sim, 500, 2, |s, k| {
        let req = token
            .invoke(
                &key.did(),
                "mallory",
                Substrate::Habitat,
                now,
                k.to_le_bytes().to_vec(),
            )
            .unwrap();
        s.inject_request(ATTACKER, VICTIM, Protocol::Join, req.to_bytes());
    });
    let limited = dispatch(&sim, VICTIM).rate_limited - before;
    let (arrived, _) = sim.wire(ATTACKER, VICTIM, "join");
    eprintln!("join flood: {arrived} arrived, {limited} rate limited");
    // 2/s, burst 10 (the trio's own joins spent some).
    assert!(arrived - limited <= 10 + 2, "{arrived} - {limited}");
    assert!(banned(&sim, VICTIM, ATTACKER));
    honest_still_served(&mut sim, "after-join-flood");
}

#[test]
fn an_image_request_flood_is_rate_limited_then_banned() {
    let mut sim = trio(
        5,
        config(|c| {
            c.guard.flood_strike = 100;
        }),
    );
    let content = sim.add_blob(VICTIM, vec![7; 1000]);
    let req = ImageRequest { content, offset: 0 }.to_bytes();
    let before = dispatch(&sim, VICTIM).rate_limited;
    flood(&mut sim, 1_000, 5, |s, _| {
        s.inject_request(ATTACKER, VICTIM, Protocol::Image, req.clone());
    });
    let limited = dispatch(&sim, VICTIM).rate_limited - before;
    let (arrived, _) = sim.wire(ATTACKER, VICTIM, "image");
    eprintln!("image flood: {arrived} arrived, {limited} rate limited");
    // 64/s, burst 128.
    assert!(arrived - limited <= 128 + 64 * 2, "{arrived} - {limited}");
    assert!(banned(&sim, VICTIM, ATTACKER));
    honest_still_served(&mut sim, "after-image-flood");
}

#[test]
fn an_event_batch_flood_of_garbage_is_banned_at_the_third() {
    let mut sim = trio(6, config(|_| {}));
    flood(&mut sim, 100, 5, |s, k| {
        s.inject_request(
            ATTACKER,
            VICTIM,
            Protocol::Event,
            vec![0xa5; 16 + k as usize % 7],
        );
    });
    let (arrived, _) = sim.wire(ATTACKER, VICTIM, "event");
    eprintln!("event flood: {arrived} arrived before the ban");
    assert!(banned(&sim, VICTIM, ATTACKER));
    assert!(arrived < 100, "{arrived}");
    honest_still_served(&mut sim, "after-event-flood");
}

#[test]
fn a_swim_replay_flood_is_rate_limited_then_banned() {
    let mut sim = trio(
        7,
        config(|c| {
            c.guard.flood_strike = 100;
        }),
    );
    let replays = sim.tapped()["swim"].clone();
    let before = sim.wire(VICTIM, ATTACKER, "swim").1 + sim.wire(VICTIM, HONEST, "swim").1;
    flood(&mut sim, 1_000, 5, |s, k| {
        let m = replays[k as usize % replays.len()].clone();
        s.inject_request(ATTACKER, VICTIM, Protocol::Swim, m);
    });
    let (arrived, bytes_in) = sim.wire(ATTACKER, VICTIM, "swim");
    let out = sim.wire(VICTIM, ATTACKER, "swim").1 + sim.wire(VICTIM, HONEST, "swim").1 - before;
    let limited = dispatch(&sim, VICTIM).rate_limited;
    eprintln!(
        "swim flood: {arrived} arrived ({bytes_in} B), {limited} limited, victim sent {out} B"
    );
    assert!(banned(&sim, VICTIM, ATTACKER));
    assert!(
        out <= bytes_in,
        "SWIM amplification: {out} B out for {bytes_in} B in"
    );
    honest_still_served(&mut sim, "after-swim-flood");
}

// ----- 2. amplification ----------------------------------------------------------

#[test]
fn anti_entropy_answers_are_bounded_per_peer_however_often_everything_is_asked() {
    // No flood strike: the attacker stays within its request rate (40/s of
    // 50/s) for 10 s, every request a 1-byte state vector asking for all.
    let mut sim = trio(
        8,
        config(|c| {
            c.guard.flood_strike = u32::MAX;
        }),
    );
    for k in 0..20 {
        sim.apply(HONEST, &format!("m{k}"), WEB);
    }
    sim.run_for(3_000);
    let doc = sim
        .node(VICTIM)
        .unwrap()
        .desired()
        .diff_since(&[0])
        .unwrap()
        .len() as u64;
    let (_, out_before) = sim.wire(VICTIM, ATTACKER, "response");
    let (_, in_before) = sim.wire(ATTACKER, VICTIM, "state");
    let secs = 10;
    for _ in 0..secs * 40 {
        sim.inject_request(ATTACKER, VICTIM, Protocol::State, vec![0]);
        sim.run_for(25);
    }
    let out = sim.wire(VICTIM, ATTACKER, "response").1 - out_before;
    let bytes_in = sim.wire(ATTACKER, VICTIM, "state").1 - in_before;
    let bound = (4 + 2 * secs) * doc;
    eprintln!(
        "anti-entropy: document {doc} B, {bytes_in} B in, {out} B out (ratio {:.0}), bound {bound} B; unbounded it would be {} B",
        out as f64 / bytes_in as f64,
        secs * 40 * doc
    );
    assert!(out <= bound, "{out} > {bound}");
    assert!(out >= doc, "the first ask for everything is answered");
    assert!(!banned(&sim, VICTIM, ATTACKER), "within its request rate");
    honest_still_served(&mut sim, "after-amplification");
}

#[test]
fn image_answers_stay_within_the_byte_budget() {
    let mut sim = trio(
        9,
        config(|c| {
            c.guard.flood_strike = u32::MAX;
            c.guard.image_bytes.per_sec = 1 << 20;
            c.guard.image_bytes.burst = 2 << 20;
        }),
    );
    let content = sim.add_blob(VICTIM, vec![3; 256 << 10]);
    let secs = 5;
    for k in 0..secs * 50 {
        let req = ImageRequest {
            content,
            offset: k % 4 * 1024,
        };
        sim.inject_request(ATTACKER, VICTIM, Protocol::Image, req.to_bytes());
        sim.run_for(20);
    }
    let (_, out) = sim.wire(VICTIM, ATTACKER, "response");
    let (_, bytes_in) = sim.wire(ATTACKER, VICTIM, "image");
    // A chunk costs its full size of the budget, answered or not.
    let bound = (2 << 20) + (1 << 20) * secs + (1 << 10);
    eprintln!(
        "images: {bytes_in} B in, {out} B out (ratio {:.0}), bound {bound} B",
        out as f64 / bytes_in as f64
    );
    assert!(out <= bound, "{out} > {bound}");
    assert!(out >= 256 << 10);
}

// ----- 3. one invite, many keys ----------------------------------------------------

#[test]
fn an_invite_admits_a_bounded_number_of_keys_then_refuses() {
    let mut sim = MeshSim::new(
        10,
        config(|c| {
            c.limits.max_nodes_per_invite = 2;
        }),
    );
    // The victim was admitted by nobody; every other node is a fresh key
    // from the same habitat invite dialing it first.
    for i in 0..5 {
        sim.add_node(&format!("n{i}"), Substrate::Habitat);
        sim.run_for(2_000);
    }
    sim.run_for(5_000);
    let v = sim.node(VICTIM).unwrap();
    let refused: Vec<_> = v
        .report()
        .refusals
        .into_iter()
        .filter(|r| r.reason.contains("max_nodes_per_invite"))
        .collect();
    eprintln!(
        "invite: victim ready with {:?}, refusals {refused:?}",
        v.view().peers
    );
    assert!(!refused.is_empty(), "no key refused");
    // The victim admitted at most two keys itself (its peers are admitted
    // both ways).
    assert!(v.view().peers.len() <= 2, "{:?}", v.view().peers);
}

// ----- 4. forged and replayed records -------------------------------------------

/// A member that skips verification and writes straight into a yrs
/// document of its own: the update carries `value` under `manifests/key`.
/// Each gets a yrs client id of its own (a reused one at a clock already
/// seen would be taken for a duplicate and skipped).
fn forged_update(key: &str, value: Vec<u8>) -> Vec<u8> {
    static CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(4242);
    let client = CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let doc = yrs::Doc::with_client_id(client);
    {
        let mut txn = doc.transact_mut();
        let m = txn.get_or_insert_map("manifests");
        m.insert(&mut txn, key, yrs::Any::Buffer(value.into()));
    }
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn signed_by(sim: &mut MeshSim, signer: &Keypair, name: &str, manifest: &str) -> Vec<u8> {
    let plan = omega_zgraph::load(manifest, name, omega_zgraph::Format::Toml).unwrap();
    let hlc = sim.hlc();
    let auth = Authority {
        signer,
        mesh_root: sim.root().did(),
        proofs: Vec::new(),
        exp: 1_800_000_000 + 86_400,
        nonce: vec![1, 2, 3],
    };
    DesiredRecord::apply(name, &plan, hlc, auth)
        .unwrap()
        .encode()
}

fn manifest_names(sim: &MeshSim, i: usize) -> Vec<String> {
    sim.node(i)
        .unwrap()
        .desired()
        .manifests()
        .map(|m| m.name)
        .collect()
}

fn strikes_against(sim: &mut MeshSim, who: usize) -> Vec<String> {
    let id = sim.node_id(who);
    sim.drain()
        .into_iter()
        .filter_map(|(_, o)| match o {
            Obs::Report { node, report } if node == VICTIM => match *report {
                Report::Strike { peer, why, .. } if peer == id => Some(why),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn forged_tampered_and_replayed_records_are_refused_and_penalized() {
    let mut c = config(|_| {});
    c.observe = true;
    let mut sim = trio(11, c);
    let _ = sim.drain();

    // A record signed by a key the root never authorized.
    let stranger = Keypair::from_seed([66; 32]);
    let forged = forged_update("evil", signed_by(&mut sim, &stranger, "evil", WEB));
    let mut forgeries = vec![forged.clone()];
    sim.inject_gossip(ATTACKER, Topic::State, forged);
    sim.run_for(500);
    assert!(!manifest_names(&sim, VICTIM).contains(&"evil".into()));
    let why = strikes_against(&mut sim, ATTACKER);
    eprintln!("forged: {why:?}");
    assert!(
        why.iter()
            .any(|w| w.contains("invalid desired-state update")),
        "{why:?}"
    );

    // A root-signed record with one byte changed.
    let root = sim.root().clone();
    let mut tampered = signed_by(&mut sim, &root, "web", WEB);
    let n = tampered.len();
    tampered[n / 2] ^= 0x01;
    let tampered = forged_update("web", tampered);
    forgeries.push(tampered.clone());
    sim.inject_gossip(ATTACKER, Topic::State, tampered);
    sim.run_for(500);
    assert!(!manifest_names(&sim, VICTIM).contains(&"web".into()));
    let why = strikes_against(&mut sim, ATTACKER);
    eprintln!("tampered: {why:?}");
    assert!(!why.is_empty());

    // Two strikes so far; replays of genuine old updates are no fault.
    let old = signed_by(&mut sim, &root, "web", WEB);
    let cmd = sim.command(HONEST, omega_gossip::node::Command::Write(old.clone()));
    sim.run_for(1_000);
    assert!(sim.reply(HONEST, cmd).is_some());
    sim.delete(HONEST, "web");
    sim.run_for(1_000);
    assert!(
        !manifest_names(&sim, VICTIM).contains(&"web".into()),
        "deleted"
    );
    let tapped: Vec<Vec<u8>> = sim.tapped()["gossip-state"]
        .iter()
        .filter(|u| !forgeries.contains(u))
        .cloned()
        .collect();
    for update in &tapped {
        sim.inject_gossip(ATTACKER, Topic::State, update.clone());
    }
    // And the old record, genuine and root-signed, under a fresh yrs item.
    sim.inject_gossip(ATTACKER, Topic::State, forged_update("web", old));
    sim.run_for(1_000);
    assert!(
        !manifest_names(&sim, VICTIM).contains(&"web".into()),
        "a replayed apply brought back a deleted manifest"
    );
    assert!(!manifest_names(&sim, HONEST).contains(&"web".into()));
    let why = strikes_against(&mut sim, ATTACKER);
    eprintln!("replayed {} tapped updates: strikes {why:?}", tapped.len());
    assert!(why.is_empty(), "a genuine replay is no fault: {why:?}");
    assert!(!banned(&sim, VICTIM, ATTACKER));

    // A third forgery bans.
    let forged = signed_by(&mut sim, &stranger, "evil2", WEB);
    sim.inject_gossip(ATTACKER, Topic::State, forged_update("evil2", forged));
    sim.run_for(500);
    assert!(banned(&sim, VICTIM, ATTACKER));
    honest_still_served(&mut sim, "after-forgeries");
}

// ----- 5. lying about what it is ---------------------------------------------------

const GAIA: &str = "[brane.core]\nsubstrate = \"gaia\"\nreplicas = 1\n";

#[test]
fn a_habitat_invite_claiming_another_substrate_is_refused_and_never_placed() {
    for claim in [Substrate::Gaia, Substrate::Biome] {
        let mut sim = MeshSim::new(12, config(|_| {}));
        sim.add_node("victim", Substrate::Habitat);
        sim.add_node("core", claim);
        let token = sim.token(Substrate::Habitat).cloned();
        let liar = sim.add_node_with("liar", claim, Capabilities::STANDARD, token.clone());
        sim.run_for(5_000);
        // It cannot present a habitat invite for a gaia or biome profile...
        let v = sim.node(VICTIM).unwrap();
        let liar_id = sim.node_id(liar);
        assert!(!v.view().peers.contains(&liar_id), "{claim:?} admitted");
        assert!(
            v.report()
                .refusals
                .iter()
                .any(|r| r.peer == liar_id.to_string()),
            "{:?}",
            v.report().refusals
        );
        // ...and presenting it as habitat by hand gets it admitted as
        // habitat, so its own record claiming otherwise is refused.
        let now = sim.now() / 1000 + 1_800_000_000;
        let key = sim.key(liar).clone();
        let req = token
            .unwrap()
            .invoke(&key.did(), "liar", Substrate::Habitat, now, vec![9])
            .unwrap();
        sim.inject_request(liar, VICTIM, Protocol::Join, req.to_bytes());
        let brane = GAIA.replace("gaia", claim.as_str());
        sim.apply(VICTIM, "core", &brane);
        sim.run_for(5_000);
        for i in [0, 1] {
            let view = sim.node(i).unwrap().view();
            let placed = place_all(&view.manifests, &view.members);
            assert!(!placed.is_empty());
            for p in placed {
                assert_eq!(
                    p.placement.instances_on(&liar_id),
                    0,
                    "{claim:?} placed on the liar by node {i}"
                );
            }
            assert!(
                view.members
                    .iter()
                    .all(|m| m.id != liar_id || m.substrate == Substrate::Habitat),
                "node {i} believes the liar's {claim:?}"
            );
        }
    }
}
