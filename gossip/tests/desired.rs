//! The desired-state document: convergence, conflicts, authorization, garbage, churn.

use omega_gossip::desired::{
    Authority, Change, Config, DesiredRecord, DesiredState, RecordError, Refusal, Revocation,
    WriteError,
};
use omega_gossip::{Hlc, NodeId};
use omega_identity::policy::Policy;
use omega_identity::ucan::{Delegation, Signed};
use omega_identity::{Did, Keypair};
use omega_zgraph::{Format, Plan, load};
use proptest::prelude::*;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact, WriteTxn};

const NOW_MS: u64 = 1_700_000_000_000;
const NOW_S: u64 = NOW_MS / 1000;

fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

fn plan(replicas: u16) -> Plan {
    let src = format!("[brane.api]\nsubstrate = \"gaia\"\nreplicas = {replicas}\n");
    load(&src, "m.toml", Format::Toml).expect("valid manifest")
}

fn delegate(
    from: &Keypair,
    to: &Keypair,
    cmd: &str,
    policy: Option<serde_json::Value>,
    exp: u64,
) -> Signed<Delegation> {
    let root = key(1).did();
    let mut d = Delegation::new(
        from.did(),
        to.did(),
        Some(root),
        cmd.parse().expect("command"),
        vec![to.did().to_string().len() as u8],
    )
    .with_exp(exp);
    if let Some(p) = policy {
        d = d.with_policy(Policy::from_json(&p).expect("policy"));
    }
    Signed::sign(d, from).expect("sign")
}

fn auth<'a>(signer: &'a Keypair, proofs: Vec<Signed<Delegation>>, nonce: u64) -> Authority<'a> {
    Authority {
        signer,
        mesh_root: key(1).did(),
        proofs,
        exp: NOW_S + 3600,
        nonce: nonce.to_le_bytes().to_vec(),
    }
}

fn replica(client_id: u64) -> DesiredState {
    DesiredState::new(
        key(1).did(),
        Config {
            client_id,
            ..Config::default()
        },
    )
    .expect("config")
}

fn winners(s: &DesiredState) -> Vec<(String, String, Hlc)> {
    s.manifests()
        .map(|m| (m.name, m.plan_hash.to_hex(), m.stamp.hlc))
        .collect()
}

fn from() -> NodeId {
    NodeId::from_bytes([9; 32])
}

/// Anti-entropy between every pair until nothing changes (repairs included).
fn sync_all(replicas: &mut [DesiredState]) {
    for _round in 0..4 {
        for i in 0..replicas.len() {
            for j in 0..replicas.len() {
                if i == j {
                    continue;
                }
                let sv = replicas[j].state_vector();
                let diff = replicas[i].diff_since(&sv).expect("state vector");
                replicas[j]
                    .handle_update(from(), &diff, NOW_MS)
                    .expect("honest update");
                let _ = replicas[j].poll_update();
            }
        }
    }
}

#[test]
fn replicas_converge_in_any_order_and_the_highest_stamp_wins() {
    let root = key(1);
    let mut a = replica(10);
    let mut b = replica(20);
    let mut c = replica(30);
    let ua = a
        .apply_local(
            &DesiredRecord::apply("web", &plan(1), Hlc::new(NOW_MS, 0), auth(&root, vec![], 1))
                .unwrap(),
            NOW_MS,
        )
        .unwrap();
    let ub = b
        .apply_local(
            &DesiredRecord::apply("db", &plan(2), Hlc::new(NOW_MS, 1), auth(&root, vec![], 2))
                .unwrap(),
            NOW_MS,
        )
        .unwrap();
    // Later stamp from the lowest client id: yrs alone would keep the other one.
    let uc = c
        .apply_local(
            &DesiredRecord::apply(
                "web",
                &plan(3),
                Hlc::new(NOW_MS + 5, 0),
                auth(&root, vec![], 3),
            )
            .unwrap(),
            NOW_MS,
        )
        .unwrap();
    let updates = [ua, ub, uc];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let mut results = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let mut r = replica(100 + n as u64);
        for &i in order {
            r.handle_update(from(), &updates[i], NOW_MS)
                .expect("valid update");
        }
        results.push(winners(&r));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    assert_eq!(results[0][1].1, plan(3).hash().to_hex());
    let mut all = [a, b, c];
    sync_all(&mut all);
    let w = winners(&all[0]);
    assert_eq!(w, results[0]);
    assert!(all.iter().all(|r| winners(r) == w));
    // The documents themselves agree too (repairs wrote the maximum back).
    let docs: Vec<_> = all.iter().map(|r| r.manifest_stamp("web")).collect();
    assert!(docs.windows(2).all(|d| d[0] == d[1]));
}

#[test]
fn equal_clocks_resolve_by_signer() {
    let admin = key(2);
    let root = key(1);
    let d = delegate(&root, &admin, "/manifest", None, NOW_S + 3600);
    let hlc = Hlc::new(NOW_MS, 0);
    let mut a = replica(1);
    let mut b = replica(2);
    a.apply_local(
        &DesiredRecord::apply("web", &plan(1), hlc, auth(&root, vec![], 1)).unwrap(),
        NOW_MS,
    )
    .unwrap();
    b.apply_local(
        &DesiredRecord::apply("web", &plan(2), hlc, auth(&admin, vec![d], 2)).unwrap(),
        NOW_MS,
    )
    .unwrap();
    let mut all = [a, b];
    sync_all(&mut all);
    let want = if NodeId::from(&root.did()) > NodeId::from(&admin.did()) {
        plan(1)
    } else {
        plan(2)
    };
    for r in &all {
        assert_eq!(winners(r)[0].1, want.hash().to_hex());
    }
}

fn refused_unauthorized(r: Result<Vec<u8>, WriteError>) -> bool {
    matches!(
        r,
        Err(WriteError::Refused(Refusal::InvalidRecord {
            error: RecordError::Unauthorized(_),
            ..
        }))
    )
}

#[test]
fn unauthorized_writes_take_no_effect() {
    let root = key(1);
    let user = key(3);
    let stranger = key(4);
    let web_only = delegate(
        &root,
        &user,
        "/manifest/apply",
        Some(serde_json::json!([["==", ".name", "web"]])),
        NOW_S + 3600,
    );
    let mut s = replica(1);
    let hlc = Hlc::new(NOW_MS, 0);
    // In scope: fine.
    s.apply_local(
        &DesiredRecord::apply("web", &plan(1), hlc, auth(&user, vec![web_only.clone()], 1))
            .unwrap(),
        NOW_MS,
    )
    .unwrap();
    // Out of the policy's scope.
    let r = s.apply_local(
        &DesiredRecord::apply("db", &plan(1), hlc, auth(&user, vec![web_only.clone()], 2)).unwrap(),
        NOW_MS,
    );
    assert!(refused_unauthorized(r));
    // Apply right does not cover delete.
    let r = s.delete_local(
        &DesiredRecord::delete("web", Hlc::new(NOW_MS, 5), auth(&user, vec![web_only], 3)).unwrap(),
        NOW_MS,
    );
    assert!(refused_unauthorized(r));
    // No chain at all.
    let r = s.apply_local(
        &DesiredRecord::apply("db", &plan(1), hlc, auth(&stranger, vec![], 4)).unwrap(),
        NOW_MS,
    );
    assert!(refused_unauthorized(r));
    // A valid token for another mesh.
    let other = key(5);
    let mut foreign = auth(&other, vec![], 5);
    foreign.mesh_root = other.did();
    let r = s.apply_local(
        &DesiredRecord::apply("db", &plan(1), hlc, foreign).unwrap(),
        NOW_MS,
    );
    assert!(matches!(
        r,
        Err(WriteError::Refused(Refusal::InvalidRecord {
            error: RecordError::WrongMesh { .. },
            ..
        }))
    ));
    // An expired chain takes nothing new.
    let old = delegate(&root, &user, "/manifest", None, NOW_S - 3600);
    let r = s.apply_local(
        &DesiredRecord::apply("db", &plan(1), hlc, auth(&user, vec![old], 6)).unwrap(),
        NOW_MS,
    );
    assert!(refused_unauthorized(r));
    // Too far in the future.
    let r = s.apply_local(
        &DesiredRecord::apply(
            "db",
            &plan(1),
            Hlc::new(NOW_MS + 3_600_000, 0),
            auth(&root, vec![], 7),
        )
        .unwrap(),
        NOW_MS,
    );
    assert!(matches!(
        r,
        Err(WriteError::Refused(Refusal::FromTheFuture { .. }))
    ));
    assert_eq!(s.manifests().map(|m| m.name).collect::<Vec<_>>(), ["web"]);
}

/// A peer that skips verification and writes straight into its yrs document.
fn forged_update(entries: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
    let doc = Doc::with_client_id(777);
    let mut txn = doc.transact_mut();
    for (map, key, value) in entries {
        let m = txn.get_or_insert_map(*map);
        m.insert(&mut txn, *key, yrs::Any::Buffer(value.clone().into()));
    }
    txn.encode_state_as_update_v1(&StateVector::default())
}

#[test]
fn an_update_with_an_invalid_record_is_refused_whole() {
    let root = key(1);
    let stranger = key(4);
    let good = DesiredRecord::apply("web", &plan(1), Hlc::new(NOW_MS, 0), auth(&root, vec![], 1))
        .unwrap()
        .encode();
    let bad = DesiredRecord::apply(
        "db",
        &plan(1),
        Hlc::new(NOW_MS, 0),
        auth(&stranger, vec![], 2),
    )
    .unwrap()
    .encode();
    let mut s = replica(1);
    let update = forged_update(&[("manifests", "web", good.clone()), ("manifests", "db", bad)]);
    let err = s.handle_update(from(), &update, NOW_MS).unwrap_err();
    assert!(
        matches!(err, Refusal::InvalidRecord { ref key, .. } if key == "db"),
        "{err}"
    );
    assert!(err.penalty());
    assert_eq!(
        s.manifests().count(),
        0,
        "the valid record in it did not count either"
    );
    // A valid record under another name's key.
    let update = forged_update(&[("manifests", "api", good.clone())]);
    assert!(matches!(
        s.handle_update(from(), &update, NOW_MS),
        Err(Refusal::InvalidRecord {
            error: RecordError::KeyMismatch { .. },
            ..
        })
    ));
    // Unknown roots: refused by the update's shape, before yrs reads it.
    let update = forged_update(&[("junk", "x", vec![1])]);
    let err = s.handle_update(from(), &update, NOW_MS).unwrap_err();
    assert!(
        matches!(err, Refusal::Malformed(ref why) if why.contains("unknown root")),
        "{err}"
    );
    assert!(err.penalty());
    // The same valid record alone is fine.
    let update = forged_update(&[("manifests", "web", good)]);
    assert_eq!(s.handle_update(from(), &update, NOW_MS).unwrap().len(), 1);
}

#[test]
fn removing_a_key_is_refused() {
    let root = key(1);
    let mut a = replica(1);
    let u = a
        .apply_local(
            &DesiredRecord::apply("web", &plan(1), Hlc::new(NOW_MS, 0), auth(&root, vec![], 1))
                .unwrap(),
            NOW_MS,
        )
        .unwrap();
    let evil = Doc::with_client_id(666);
    let mut txn = evil.transact_mut();
    txn.apply_update(yrs::Update::decode_v1_checked(&u))
        .unwrap();
    let before = txn.state_vector();
    txn.get_or_insert_map("manifests").remove(&mut txn, "web");
    let removal = txn.encode_diff_v1(&before);
    drop(txn);
    let err = a.handle_update(from(), &removal, NOW_MS).unwrap_err();
    assert!(matches!(err, Refusal::Removal { .. }));
    assert_eq!(a.manifests().count(), 1);
}

trait DecodeChecked {
    fn decode_v1_checked(b: &[u8]) -> yrs::Update;
}

impl DecodeChecked for yrs::Update {
    fn decode_v1_checked(b: &[u8]) -> yrs::Update {
        use yrs::updates::decoder::Decode;
        yrs::Update::decode_v1(b).expect("own update")
    }
}

#[test]
fn revocation_removes_past_and_future_effect_everywhere() {
    let root = key(1);
    let admin = key(2);
    let d = delegate(&root, &admin, "/manifest", None, NOW_S + 3600);
    let mut a = replica(1);
    let mut b = replica(2);
    let u = a
        .apply_local(
            &DesiredRecord::apply(
                "web",
                &plan(1),
                Hlc::new(NOW_MS, 0),
                auth(&admin, vec![d.clone()], 1),
            )
            .unwrap(),
            NOW_MS,
        )
        .unwrap();
    b.handle_update(from(), &u, NOW_MS).unwrap();
    assert_eq!(b.manifests().count(), 1);
    let rev = DesiredRecord::revoke(
        Revocation::Token(d.cid()),
        Hlc::new(NOW_MS, 1),
        auth(&root, vec![], 2),
    )
    .unwrap();
    let u = a.write_local(&rev, NOW_MS).unwrap();
    assert_eq!(a.manifests().count(), 0);
    let changes = b.handle_update(from(), &u, NOW_MS).unwrap();
    assert!(changes.contains(&Change::Revoked(Revocation::Token(d.cid()))));
    assert!(changes.contains(&Change::Deleted { name: "web".into() }));
    assert_eq!(b.manifests().count(), 0);
    assert!(b.revocations().tokens.contains(&d.cid()));
    let r = b.apply_local(
        &DesiredRecord::apply(
            "web",
            &plan(2),
            Hlc::new(NOW_MS, 5),
            auth(&admin, vec![d], 3),
        )
        .unwrap(),
        NOW_MS,
    );
    assert!(matches!(
        r,
        Err(WriteError::Refused(Refusal::InvalidRecord { .. }))
    ));
    // Revoking a node.
    let user = key(3);
    let d2 = delegate(&root, &user, "/manifest", None, NOW_S + 3600);
    let rev = DesiredRecord::revoke(
        Revocation::Node(user.did()),
        Hlc::new(NOW_MS, 6),
        auth(&root, vec![], 4),
    )
    .unwrap();
    b.write_local(&rev, NOW_MS).unwrap();
    assert!(b.revocations().nodes.contains(&user.did()));
    let r = b.apply_local(
        &DesiredRecord::apply(
            "db",
            &plan(2),
            Hlc::new(NOW_MS, 7),
            auth(&user, vec![d2], 5),
        )
        .unwrap(),
        NOW_MS,
    );
    assert!(matches!(
        r,
        Err(WriteError::Refused(Refusal::InvalidRecord {
            error: RecordError::RevokedPrincipal(_),
            ..
        }))
    ));
}

#[test]
fn deletes_win_like_applies_and_images_are_registers() {
    let root = key(1);
    let mut a = replica(1);
    let mut b = replica(2);
    let mut t = 0;
    let mut next = || {
        t += 1;
        Hlc::new(NOW_MS, t)
    };
    let u1 = a
        .apply_local(
            &DesiredRecord::apply("web", &plan(1), next(), auth(&root, vec![], 1)).unwrap(),
            NOW_MS,
        )
        .unwrap();
    let u2 = a
        .delete_local(
            &DesiredRecord::delete("web", next(), auth(&root, vec![], 2)).unwrap(),
            NOW_MS,
        )
        .unwrap();
    let u3 = a
        .write_local(
            &DesiredRecord::image(
                "hello:1.0",
                "bafkr4iexample",
                next(),
                auth(&root, vec![], 3),
            )
            .unwrap(),
            NOW_MS,
        )
        .unwrap();
    for u in [&u3, &u1, &u2] {
        // Out of order: an update depending on one not yet seen is deferred, not applied.
        match b.handle_update(from(), u, NOW_MS) {
            Ok(_) | Err(Refusal::MissingDependencies) => {}
            Err(e) => panic!("{e}"),
        }
    }
    sync_all(std::slice::from_mut(&mut b));
    let diff = a.diff_since(&b.state_vector()).unwrap();
    b.handle_update(from(), &diff, NOW_MS).unwrap();
    assert_eq!(b.manifests().count(), 0);
    assert_eq!(b.manifest_stamp("web"), a.manifest_stamp("web"));
    assert_eq!(
        b.images().map(|i| i.content).collect::<Vec<_>>(),
        ["bafkr4iexample"]
    );
    // An older apply arriving late does not resurrect the name.
    let late = DesiredRecord::apply(
        "web",
        &plan(1),
        Hlc::new(NOW_MS - 1, 0),
        auth(&root, vec![], 9),
    )
    .unwrap();
    assert!(matches!(
        b.apply_local(&late, NOW_MS),
        Err(WriteError::Superseded { .. })
    ));
}

#[test]
fn churn_keeps_the_document_bounded() {
    let root = key(1);
    let mut a = replica(1);
    let mut b = replica(2);
    let p = plan(1);
    let mut sizes = Vec::new();
    let cycles = 10_000u64;
    for i in 0..cycles {
        let hlc = a.tick(NOW_MS);
        let u = a
            .apply_local(
                &DesiredRecord::apply("web", &p, hlc, auth(&root, vec![], 2 * i)).unwrap(),
                NOW_MS,
            )
            .unwrap();
        if i % 100 == 0 {
            b.handle_update(from(), &a.diff_since(&b.state_vector()).unwrap(), NOW_MS)
                .unwrap();
        }
        let _ = u;
        let hlc = a.tick(NOW_MS);
        a.delete_local(
            &DesiredRecord::delete("web", hlc, auth(&root, vec![], 2 * i + 1)).unwrap(),
            NOW_MS,
        )
        .unwrap();
        if i == 0 || i == 99 || i == 999 || i == cycles - 1 {
            sizes.push((i + 1, a.encoded_len()));
        }
    }
    b.handle_update(from(), &a.diff_since(&b.state_vector()).unwrap(), NOW_MS)
        .unwrap();
    println!(
        "encoded document size after N apply/delete cycles: {sizes:?}; replica b: {}",
        b.encoded_len()
    );
    let first = sizes[0].1;
    let last = sizes[sizes.len() - 1].1;
    assert!(
        last <= first + 64,
        "document grew from {first} to {last} bytes"
    );
    assert!(b.encoded_len() <= first + 256);
    assert_eq!(b.manifest_stamp("web"), a.manifest_stamp("web"));
}

#[test]
fn restoring_from_a_snapshot_reverifies() {
    let root = key(1);
    let mut a = replica(1);
    a.apply_local(
        &DesiredRecord::apply("web", &plan(1), Hlc::new(NOW_MS, 0), auth(&root, vec![], 1))
            .unwrap(),
        NOW_MS,
    )
    .unwrap();
    let snapshot = a.encode();
    let mut back = replica(1);
    back.handle_update(from(), &snapshot, NOW_MS).unwrap();
    assert_eq!(winners(&back), winners(&a));
    let mut other_mesh = DesiredState::new(key(5).did(), Config::default()).unwrap();
    assert!(other_mesh.handle_update(from(), &snapshot, NOW_MS).is_err());
    let _: Did = key(1).did();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut s = replica(1);
        let _ = s.handle_update(from(), &bytes, NOW_MS);
        let _ = s.diff_since(&bytes);
        prop_assert_eq!(s.manifests().count(), 0);
    }

    #[test]
    fn mutated_updates_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let root = key(1);
        let mut a = replica(1);
        let mut u = a.apply_local(&DesiredRecord::apply("web", &plan(1), Hlc::new(NOW_MS, 0), auth(&root, vec![], 1)).unwrap(), NOW_MS).unwrap();
        let i = pos.index(u.len());
        u[i] = byte;
        let mut s = replica(2);
        if s.handle_update(from(), &u, NOW_MS).is_ok() {
            prop_assert!(s.manifests().count() <= 1);
        }
    }
}

/// Regression: a signed record whose plan has a `peers` glob of ~90,000 `*`
/// (built without the CLI, which refuses it) used to panic globset inside
/// placement on every node. The plan is validated again on arrival, so the
/// record is refused with the reason; and placement never panics on a plan
/// that skipped validation anyway.
#[test]
fn a_hostile_plan_in_a_signed_record_is_refused_and_never_panics_placement() {
    let root = key(1);
    let mut v: serde_json::Value = serde_json::from_str(&plan(1).canonical_json()).unwrap();
    v["branes"]["api"]["peers"] = serde_json::Value::String("*".repeat(90_000));
    let hostile: Plan = serde_json::from_value(v).unwrap();
    let record = DesiredRecord::apply(
        "evil",
        &hostile,
        Hlc::new(NOW_MS, 0),
        auth(&root, vec![], 9),
    )
    .unwrap();
    let mut s = replica(10);
    let err = s.apply_local(&record, NOW_MS).unwrap_err();
    assert!(
        matches!(&err, WriteError::Refused(Refusal::InvalidRecord { error: RecordError::BadPlan(why), .. }) if why.contains("longest allowed")),
        "{err:?}"
    );
    assert_eq!(s.manifests().count(), 0);
    // The same plan handed straight to placement: ineligible everywhere, no panic.
    let member = omega_gossip::Candidate {
        id: NodeId::from(key(2).public()),
        name: "n".into(),
        substrate: omega_gossip::Substrate::Gaia,
        capabilities: omega_gossip::Capabilities::STANDARD,
        free_memory_bytes: 1 << 30,
        state: omega_gossip::State::Alive,
    };
    let placed = omega_gossip::place(&hostile, &[member]);
    let api = &placed.branes["api"];
    assert!(api.assignment.is_empty());
    assert!(matches!(
        api.ineligible.values().next().unwrap()[0],
        omega_gossip::Ineligible::InvalidPeersGlob { .. }
    ));
}

/// Found by the `desired` fuzz target: seven bytes of state vector declaring
/// 230 million clients made yrs reserve (and initialise) a hash map that
/// size — hundreds of megabytes per anti-entropy request. The same for an
/// update's client count. Both are refused before yrs decodes them.
#[test]
fn counts_larger_than_the_bytes_that_follow_are_refused_before_decoding() {
    let mut s = replica(1);
    let bomb = [0x81, 0xfe, 0xff, 0xff, 0x6d, 0x01, 0xc2];
    let err = s
        .diff_since(&bomb)
        .expect_err("an impossible count is refused");
    assert!(err.to_string().contains("declares"), "{err}");
    assert!(!s.has_news_for(&bomb));
    let from: NodeId = key(2).public().into();
    let err = s
        .handle_update(from, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00], 1_000)
        .expect_err("an impossible client count is refused");
    assert!(err.to_string().contains("declares"), "{err}");
    // Honest state vectors and updates still pass.
    let other = replica(2);
    assert!(s.diff_since(&other.state_vector()).is_ok());
    assert!(other.diff_since(&s.state_vector()).is_ok());
}

/// What a `/ucan/revoke` write did: `Ok`, or the refusal's short name.
fn ucan_revoke_outcome(r: Result<Vec<u8>, WriteError>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(WriteError::Refused(Refusal::InvalidRecord { error, .. })) => Err(match error {
            RecordError::NotInChain { .. } => "not-in-chain".into(),
            RecordError::Unauthorized(e) => format!("{}:{}", e.layer().as_str(), e.class()),
            other => format!("{other}"),
        }),
        Err(WriteError::Refused(Refusal::Full { what, .. })) => Err(format!("full:{what}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The UCAN revocation rule, case by case: the issuer of the revoked
/// delegation or of any delegation in its chain (from the mesh root) may
/// revoke it; its audience, a stranger, or a forged chain may not.
#[test]
fn ucan_revoke_is_authorized_by_the_chain() {
    let root = key(1);
    let admin = key(2);
    let ci = key(3);
    let stranger = key(4);
    let d1 = delegate(&root, &admin, "/manifest", None, NOW_S + 3600);
    let d2 = delegate(&admin, &ci, "/manifest/apply", None, NOW_S + 3600);
    let forged = delegate(&stranger, &admin, "/manifest", None, NOW_S + 3600);
    let powerline = {
        let mut d = d2.payload().clone();
        d.sub = None;
        Signed::sign(d, &admin).unwrap()
    };
    #[allow(clippy::type_complexity)]
    let rows: Vec<(&str, &Keypair, Vec<Signed<Delegation>>, Result<(), &str>)> = vec![
        (
            "the root, above the issuer",
            &root,
            vec![d1.clone(), d2.clone()],
            Ok(()),
        ),
        ("the issuer", &admin, vec![d1.clone(), d2.clone()], Ok(())),
        (
            "the audience",
            &ci,
            vec![d1.clone(), d2.clone()],
            Err("not-in-chain"),
        ),
        (
            "a stranger",
            &stranger,
            vec![d1.clone(), d2.clone()],
            Err("not-in-chain"),
        ),
        (
            "a forged chain",
            &stranger,
            vec![forged.clone(), d2.clone()],
            Err("spec:root-not-subject"),
        ),
        (
            "a path that skips the root",
            &admin,
            vec![d2.clone()],
            Err("spec:root-not-subject"),
        ),
        (
            "a powerline in the path",
            &admin,
            vec![d1.clone(), powerline],
            Err("mesh:powerline-not-allowed"),
        ),
    ];
    for (i, (name, signer, path, want)) in rows.into_iter().enumerate() {
        let mut s = replica(1);
        let rec = DesiredRecord::revoke_by_chain(
            path,
            Hlc::new(NOW_MS, 1),
            auth(signer, vec![], i as u64),
        )
        .unwrap();
        let got = ucan_revoke_outcome(s.write_local(&rec, NOW_MS));
        assert_eq!(got, want.map_err(str::to_owned), "{name}");
    }
    // A record whose signed path is not the chain it carries is refused.
    let rec = DesiredRecord::revoke_by_chain(
        vec![d1.clone(), d2.clone()],
        Hlc::new(NOW_MS, 1),
        auth(&admin, vec![], 9),
    )
    .unwrap();
    let swapped = DesiredRecord::from_parts(rec.invocation().clone(), vec![d1.clone()], vec![]);
    assert_eq!(
        ucan_revoke_outcome(replica(1).write_local(&swapped, NOW_MS)),
        Err("argument `path` is missing or malformed".into())
    );
}

/// A token revoked by its issuer is refused on every replica, with
/// everything that needs it; its parent still works; the set is bounded.
#[test]
fn ucan_revoke_replicates_and_the_set_is_bounded() {
    let root = key(1);
    let admin = key(2);
    let ci = key(3);
    let d1 = delegate(&root, &admin, "/manifest", None, NOW_S + 3600);
    let d2 = delegate(&admin, &ci, "/manifest/apply", None, NOW_S + 3600);
    let mut a = replica(1);
    let mut b = replica(2);
    let apply = |signer: &Keypair, proofs: Vec<Signed<Delegation>>, name: &str, n: u64| {
        DesiredRecord::apply(
            name,
            &plan(1),
            Hlc::new(NOW_MS, n as u32),
            auth(signer, proofs, n),
        )
        .unwrap()
    };
    let u = a
        .apply_local(&apply(&ci, vec![d1.clone(), d2.clone()], "web", 1), NOW_MS)
        .unwrap();
    b.handle_update(from(), &u, NOW_MS).unwrap();
    assert_eq!(b.manifests().count(), 1);
    let rev = DesiredRecord::revoke_by_chain(
        vec![d1.clone(), d2.clone()],
        Hlc::new(NOW_MS, 2),
        auth(&admin, vec![], 2),
    )
    .unwrap();
    let u = a.write_local(&rev, NOW_MS).unwrap();
    let changes = b.handle_update(from(), &u, NOW_MS).unwrap();
    assert!(changes.contains(&Change::Revoked(Revocation::Token(d2.cid()))));
    assert!(changes.contains(&Change::Deleted { name: "web".into() }));
    for s in [&mut a, &mut b] {
        assert!(s.revocations().tokens.contains(&d2.cid()));
        assert_eq!(s.manifests().count(), 0);
        let r = s.apply_local(&apply(&ci, vec![d1.clone(), d2.clone()], "web", 3), NOW_MS);
        assert!(refused_unauthorized(r));
        // The parent delegation was not revoked.
        s.apply_local(&apply(&admin, vec![d1.clone()], "db", 4), NOW_MS)
            .unwrap();
    }
    // Bounded: with room for one revocation, a second is refused, not kept.
    let mut small = DesiredState::new(
        root.did(),
        Config {
            max_revocations: 1,
            ..Config::default()
        },
    )
    .unwrap();
    small.write_local(&rev, NOW_MS).unwrap();
    let second = DesiredRecord::revoke_by_chain(
        vec![d1.clone()],
        Hlc::new(NOW_MS, 5),
        auth(&root, vec![], 5),
    )
    .unwrap();
    assert_eq!(
        ucan_revoke_outcome(small.write_local(&second, NOW_MS)),
        Err("full:revocations".into())
    );
    assert_eq!(small.revocations().tokens.len(), 1);
}

/// Found by the `desired` fuzz target: an update whose delete set points
/// past a client's blocks makes yrs index out of bounds while applying it.
/// The trial copy panics under `catch_unwind`; the update is refused and
/// the document is untouched.
#[test]
fn an_update_that_panics_yrs_is_refused_and_changes_nothing() {
    let mut s = replica(1);
    let before = s.state_vector();
    let hostile = [
        0x03, 0x03, 0x03, 0x03, 0x21, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,
        0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x02, 0x02,
        0x06, 0x01, 0x01, 0x01, 0x01, 0x4a, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0xde,
        0xde, 0xde, 0xde, 0xde, 0xde, 0xde, 0xde, 0xde, 0x01, 0x01, 0x01, 0x01, 0x08, 0x01, 0x01,
        0x01, 0x01, 0xfa, 0x67, 0x01, 0x01, 0x01, 0x03, 0x41, 0x03, 0x03, 0x02, 0x61, 0x02, 0x06,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x7e, 0x01, 0x7a, 0x00, 0x88, 0x88, 0x88, 0x88,
        0x88, 0x63, 0x00, 0x00, 0xff, 0x88, 0x2a, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x88,
    ];
    let from: NodeId = key(2).public().into();
    assert!(s.handle_update(from, &hostile, 1_000).is_err());
    assert_eq!(s.state_vector(), before);
    assert!(s.poll_update().is_none());
}

/// Found by the `desired` fuzz target: an update that made yrs read freed
/// memory while integrating it (a heap use-after-free under the address
/// sanitizer; `catch_unwind` cannot contain that). Updates are now walked
/// first and refused unless they have the shape honest replicas produce
/// (items in the root maps holding record bytes or tombstones, no GC or
/// skip blocks, no nested types); this one is refused by that walk.
#[test]
fn an_update_that_corrupted_yrs_memory_is_refused_by_its_shape() {
    let mut s = replica(1);
    let before = s.state_vector();
    let hostile = [
        0x04, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x26, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x81, 0xec, 0xfb, 0x00, 0xcc, 0xff, 0xff, 0xff, 0x00, 0xfe,
        0xfe, 0x00, 0x0a, 0x0a, 0x0a, 0x00, 0x0a, 0x0a, 0x0a, 0x0a, 0xff, 0xff, 0xff,
    ];
    let from: NodeId = key(2).public().into();
    let err = s.handle_update(from, &hostile, 1_000).unwrap_err();
    assert!(
        matches!(err, Refusal::Malformed(ref why) if why.starts_with("update:")),
        "{err}"
    );
    assert_eq!(s.state_vector(), before);
}

/// Every update an honest replica produces has the shape the walk accepts:
/// first writes, overwrites of the same key, deletes and a full-state sync.
#[test]
fn honest_updates_pass_the_shape_check() {
    let root = key(1);
    let mut a = replica(1);
    let mut b = replica(2);
    let from: NodeId = key(2).public().into();
    for round in 0..5u64 {
        for name in ["web", "api", "db"] {
            let rec = DesiredRecord::apply(
                name,
                &plan(1 + round as u16),
                Hlc::new(NOW_MS + round, 0),
                auth(&root, vec![], 10 * round + name.len() as u64),
            )
            .unwrap();
            let u = a.apply_local(&rec, NOW_MS + round).unwrap();
            b.handle_update(from, &u, NOW_MS + round)
                .expect("an honest update passes");
        }
    }
    // A full-state sync from scratch.
    let mut c = replica(3);
    let full = a.diff_since(&c.state_vector()).unwrap();
    c.handle_update(from, &full, NOW_MS + 10)
        .expect("a full state passes");
    assert_eq!(c.manifests().count(), 3);
}
