//! Chain verification throughput: a depth-3 chain (root → A → B → C delegations)
//! and an invocation by C, validated in full, single thread.
//!
//! Run with `cargo bench -p omega-identity --bench verify_chain`. Prints a table:
//!
//! - `ed25519 verify_strict (raw)` — ed25519-dalek itself, no cache, over each
//!   invocation's signature payload: the floor of everything;
//! - `validate, cold` — every iteration decodes the three delegations and
//!   the invocation from bytes, with the process-wide cache off, so all four
//!   signatures are checked and every key is decompressed;
//! - `validate, re-decoded proofs` — the same with the cache on: the
//!   delegations' signatures are found in it;
//! - `validate, warm proofs` — delegations decoded once and kept in the proof
//!   store (as a node does), so their cached signature results are reused; each
//!   iteration still decodes and verifies a fresh invocation;
//! - `parse did:key` — base58 and Ed25519 point decompression, done for every
//!   DID in a decoded token;
//! - `decode invocation` — decoding plus CID hashing alone.
//!
//! Every iteration uses a distinct invocation (its nonce is the iteration
//! number), so replay protection never short-circuits.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use omega_identity::chain::{ReplayGuard, RevocationSet, Validator};
use omega_identity::policy::Policy;
use omega_identity::ucan::{Command, Delegation, Invocation, Signed};
use omega_identity::{Ipld, Keypair};

const ITERATIONS: usize = 20_000;
const NOW: u64 = 1_700_000_000;

fn cmd(s: &str) -> Command {
    Command::parse(s).expect("valid command")
}

fn main() {
    let keys: Vec<Keypair> = (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect();
    let root = keys[0].did();
    let pol: Policy = r#"[["==", ".substrate", "habitat"]]"#.parse().expect("policy");
    let cmds = ["/mesh", "/mesh/join", "/mesh/join"];
    let dels: Vec<Signed<Delegation>> = (0..3)
        .map(|i| {
            let d = Delegation::new(
                keys[i].did(),
                keys[i + 1].did(),
                Some(root),
                cmd(cmds[i]),
                vec![i as u8],
            )
            .with_exp(NOW + 3600)
            .with_policy(pol.clone());
            Signed::sign(d, &keys[i]).expect("sign delegation")
        })
        .collect();
    let prf: Vec<_> = dels.iter().map(Signed::cid).collect();
    let args = BTreeMap::from([("substrate".to_owned(), Ipld::String("habitat".into()))]);
    // Each row gets invocations of its own (nonces `batch * ITERATIONS + n`),
    // so that no row finds another's signatures in the process-wide cache.
    let batch = |batch: usize| -> Vec<Vec<u8>> {
        (0..ITERATIONS)
            .map(|n| {
                let inv = Invocation::new(
                    keys[3].did(),
                    root,
                    cmd("/mesh/join"),
                    ((batch * ITERATIONS + n) as u64).to_be_bytes().to_vec(),
                )
                .with_args(args.clone())
                .with_proofs(prf.clone())
                .with_exp(NOW + 60);
                Signed::sign(inv, &keys[3])
                    .expect("sign invocation")
                    .to_bytes()
            })
            .collect()
    };
    let invocations = batch(0);
    let del_bytes: Vec<Vec<u8>> = dels.iter().map(Signed::to_bytes).collect();
    let validator = Validator::default();
    let revoked = RevocationSet::new();
    let mut rows: Vec<(&str, usize, Duration)> = Vec::new();

    // Floor: raw ed25519-dalek `verify_strict`, no cache, over each
    // invocation's own signature payload (what the warm path must check).
    let raw: Vec<(Vec<u8>, ed25519_dalek::Signature)> = invocations
        .iter()
        .map(|b| {
            let inv = Signed::<Invocation>::decode(b).expect("decodes");
            let sig = ed25519_dalek::Signature::from_bytes(
                inv.signature().expect("64-byte signature").as_bytes(),
            );
            (inv.signature_payload().to_vec(), sig)
        })
        .collect();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(keys[3].public().as_bytes()).expect("key");
    let t = Instant::now();
    for (msg, sig) in &raw {
        vk.verify_strict(black_box(msg), black_box(sig))
            .expect("verifies");
    }
    rows.push(("ed25519 verify_strict (raw)", ITERATIONS, t.elapsed()));

    // did:key parsing (base58 + point decompression), twice per invocation.
    let did_text = keys[3].did().to_string();
    let t = Instant::now();
    for _ in 0..ITERATIONS {
        black_box(
            black_box(did_text.as_str())
                .parse::<omega_identity::Did>()
                .expect("parses"),
        );
    }
    rows.push(("parse did:key", ITERATIONS, t.elapsed()));

    // Decode + CID only.
    let t = Instant::now();
    for bytes in &invocations {
        black_box(Signed::<Invocation>::decode(bytes).expect("decodes"));
    }
    rows.push(("decode invocation (+CID)", ITERATIONS, t.elapsed()));

    // Cold: decode all four tokens, four signature checks, per iteration,
    // with the process-wide cache off (every key decompressed, every
    // signature checked).
    let cold = |invocations: &[Vec<u8>]| {
        let mut seen = ReplayGuard::new(ITERATIONS);
        let t = Instant::now();
        for bytes in invocations {
            let store: HashMap<_, _> = del_bytes
                .iter()
                .map(|b| {
                    let d = Signed::<Delegation>::decode(b).expect("decodes");
                    (d.cid(), d)
                })
                .collect();
            let inv = Signed::<Invocation>::decode(bytes).expect("decodes");
            black_box(
                validator
                    .validate(&inv, &store, NOW, &revoked, &mut seen)
                    .expect("valid"),
            );
        }
        t.elapsed()
    };
    omega_identity::cache::set_capacity(0);
    rows.push((
        "validate, cold (4 sig checks, no cache)",
        ITERATIONS,
        cold(&batch(1)),
    ));
    // The same with the process-wide cache on: proofs arrive again as bytes
    // (each request carries them) and their signatures are remembered.
    omega_identity::cache::set_capacity(omega_identity::cache::DEFAULT_CAPACITY);
    rows.push((
        "validate, re-decoded proofs (sig cache)",
        ITERATIONS,
        cold(&batch(2)),
    ));

    // Warm: delegations decoded once and kept.
    let store: HashMap<_, _> = del_bytes
        .iter()
        .map(|b| {
            let d = Signed::<Delegation>::decode(b).expect("decodes");
            (d.cid(), d)
        })
        .collect();
    let mut seen = ReplayGuard::new(ITERATIONS);
    let warm = batch(3);
    let t = Instant::now();
    for bytes in &warm {
        let inv = Signed::<Invocation>::decode(bytes).expect("decodes");
        black_box(
            validator
                .validate(&inv, &store, NOW, &revoked, &mut seen)
                .expect("valid"),
        );
    }
    rows.push((
        "validate, warm proofs (1 sig check)",
        ITERATIONS,
        t.elapsed(),
    ));

    let per_sec = |name: &str| {
        rows.iter()
            .find(|r| r.0.starts_with(name))
            .map(|(_, ops, d)| *ops as f64 / d.as_secs_f64())
            .expect("row measured")
    };
    let ratio = per_sec("validate, warm") / per_sec("ed25519 verify_strict");
    println!(
        "{:<40} {:>10} {:>12} {:>12} {:>14}",
        "operation", "ops", "total ms", "us/op", "ops/s"
    );
    for (name, ops, d) in rows {
        let secs = d.as_secs_f64();
        println!(
            "{:<40} {:>10} {:>12.1} {:>12.2} {:>14.0}",
            name,
            ops,
            secs * 1e3,
            secs * 1e6 / ops as f64,
            ops as f64 / secs
        );
    }
    println!("warm validation / raw verify_strict: {ratio:.2}x");
}
