//! Chain validation tests: one per failure, built from real signed chains
//! root → A → B → C with an invocation by C, plus property tests.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::Ipld;
use crate::keys::{Keypair, Signature};
use crate::ucan::SpecVersion;

const NOW: u64 = 1_700_000_000;
const ROOT: usize = 0;
const X: usize = 4;

struct World {
    keys: Vec<Keypair>,
}

fn cmd(s: &str) -> Command {
    Command::parse(s).unwrap()
}

fn pol(s: &str) -> Policy {
    s.parse().unwrap()
}

struct Built {
    dels: Vec<Signed<Delegation>>,
    inv: Signed<Invocation>,
}

impl Built {
    fn store(&self) -> HashMap<Cid, Signed<Delegation>> {
        self.dels.iter().map(|d| (d.cid(), d.clone())).collect()
    }

    fn validate_with(&self, config: ValidatorConfig) -> Result<ValidChain, ChainError> {
        Validator::new(config).validate(
            &self.inv,
            &self.store(),
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(16),
        )
    }

    fn validate(&self) -> Result<ValidChain, ChainError> {
        self.validate_with(ValidatorConfig::default())
    }

    fn mesh(&self, policy: &MeshPolicy) -> Result<ValidChain, Refusal> {
        policy.validate(
            &Validator::default(),
            &self.inv,
            &self.store(),
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(16),
        )
    }
}

impl World {
    fn new() -> Self {
        Self {
            keys: (1..=5u8).map(|i| Keypair::from_seed([i; 32])).collect(),
        }
    }

    fn did(&self, i: usize) -> Did {
        self.keys[i].did()
    }

    fn key_for(&self, did: &Did) -> &Keypair {
        self.keys.iter().find(|k| k.did() == *did).unwrap()
    }

    /// root → A `/mesh`, A → B `/mesh/join` (policy on substrate), B → C `/mesh/join`.
    fn delegations(&self) -> Vec<Delegation> {
        let root = Some(self.did(ROOT));
        vec![
            Delegation::new(self.did(0), self.did(1), root, cmd("/mesh"), vec![0])
                .with_exp(NOW + 3600),
            Delegation::new(self.did(1), self.did(2), root, cmd("/mesh/join"), vec![1])
                .with_exp(NOW + 1800)
                .with_nbf(NOW - 10)
                .with_policy(pol(r#"[["==", ".substrate", "habitat"]]"#)),
            Delegation::new(self.did(2), self.did(3), root, cmd("/mesh/join"), vec![2])
                .with_policy(pol(r#"[["<=", ".replicas", 3]]"#)),
        ]
    }

    fn args() -> BTreeMap<String, Ipld> {
        BTreeMap::from([
            ("substrate".to_owned(), Ipld::String("habitat".into())),
            ("replicas".to_owned(), Ipld::Integer(2)),
        ])
    }

    fn invocation(&self, prf: Vec<Cid>) -> Invocation {
        Invocation::new(self.did(3), self.did(ROOT), cmd("/mesh/join"), vec![9])
            .with_args(Self::args())
            .with_proofs(prf)
            .with_exp(NOW + 60)
    }

    fn sign_inv(&self, inv: Invocation) -> Signed<Invocation> {
        let key = self.key_for(&inv.iss);
        Signed::sign(inv, key).unwrap()
    }

    fn build(
        &self,
        edit_d: impl FnOnce(&mut Vec<Delegation>),
        edit_i: impl FnOnce(&mut Invocation),
    ) -> Built {
        let mut ds = self.delegations();
        edit_d(&mut ds);
        let dels: Vec<_> = ds
            .into_iter()
            .map(|d| {
                let key = self.key_for(&d.iss);
                Signed::sign(d, key).unwrap()
            })
            .collect();
        let mut inv = self.invocation(dels.iter().map(Signed::cid).collect());
        edit_i(&mut inv);
        Built {
            inv: self.sign_inv(inv),
            dels,
        }
    }

    fn run(&self, edit_d: impl FnOnce(&mut Vec<Delegation>)) -> Result<ValidChain, ChainError> {
        self.build(edit_d, |_| {}).validate()
    }

    fn run_inv(&self, edit_i: impl FnOnce(&mut Invocation)) -> Result<ValidChain, ChainError> {
        self.build(|_| {}, edit_i).validate()
    }
}

fn pos(e: &ChainError) -> Option<TokenPos> {
    use ChainError::*;
    match e {
        BadSignature { token }
        | Expired { token, .. }
        | NotYetValid { token, .. }
        | AudienceIssuerMismatch { token, .. }
        | SubjectMismatch { token, .. }
        | PowerlineRoot { token }
        | CommandNotCovered { token, .. }
        | PolicyMismatch { token, .. }
        | Revoked { token }
        | RootNotSubject { token, .. } => Some(token.pos),
        _ => None,
    }
}

#[test]
fn depth_three_chain_is_valid() {
    let w = World::new();
    let b = w.build(|_| {}, |_| {});
    let ok = b.validate().unwrap();
    assert_eq!(ok.root_issuer, w.did(ROOT));
    assert_eq!(ok.subject, w.did(ROOT));
    assert_eq!(ok.invoker, w.did(3));
    assert_eq!(ok.cmd, cmd("/mesh/join"));
    assert_eq!(ok.proofs.len(), 3);
    assert_eq!(ok.expires_at, Some(NOW + 60));
    // Also valid when proofs come from a slice, and after a decode round trip.
    let decoded: Vec<_> = b
        .dels
        .iter()
        .map(|d| Signed::<Delegation>::decode(d.as_bytes()).unwrap())
        .collect();
    let inv = Signed::<Invocation>::decode(b.inv.as_bytes()).unwrap();
    Validator::default()
        .validate(
            &inv,
            decoded.as_slice(),
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(4),
        )
        .unwrap();
}

#[test]
fn bad_signature_on_a_delegation_and_on_the_invocation() {
    let w = World::new();
    let b = w.build(|_| {}, |_| {});
    let mut dels = b.dels.clone();
    let mut sig = dels[1].signature().unwrap().to_bytes();
    sig[10] ^= 1;
    dels[1] = Signed::from_parts(
        dels[1].payload().clone(),
        Signature::from_bytes(sig),
        SpecVersion::V1_0_0,
    )
    .unwrap();
    let inv = w.sign_inv(w.invocation(dels.iter().map(Signed::cid).collect()));
    let store: HashMap<_, _> = dels.iter().map(|d| (d.cid(), d.clone())).collect();
    let err = Validator::default()
        .validate(
            &inv,
            &store,
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(4),
        )
        .unwrap_err();
    assert!(matches!(err, ChainError::BadSignature { .. }), "{err}");
    assert_eq!(pos(&err), Some(TokenPos::Delegation(1)));

    let mut sig = b.inv.signature().unwrap().to_bytes();
    sig[63] ^= 0x10;
    let inv = Signed::from_parts(
        b.inv.payload().clone(),
        Signature::from_bytes(sig),
        SpecVersion::V1_0_0,
    )
    .unwrap();
    let err = Validator::default()
        .validate(
            &inv,
            &b.store(),
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(4),
        )
        .unwrap_err();
    assert_eq!(pos(&err), Some(TokenPos::Invocation), "{err}");
    assert!(matches!(err, ChainError::BadSignature { .. }));
}

#[test]
fn expired() {
    let w = World::new();
    let err = w.run(|d| d[1].exp = Some(NOW - 61)).unwrap_err();
    assert!(
        matches!(err, ChainError::Expired { exp, .. } if exp == NOW - 61),
        "{err}"
    );
    assert_eq!(pos(&err), Some(TokenPos::Delegation(1)));
    // Within the clock skew it still passes.
    w.run(|d| d[1].exp = Some(NOW - 60)).unwrap();
    let err = w.run_inv(|i| i.exp = Some(NOW - 100)).unwrap_err();
    assert_eq!(pos(&err), Some(TokenPos::Invocation), "{err}");
    assert!(err.to_string().contains("field `exp`"));
}

#[test]
fn not_yet_valid() {
    let w = World::new();
    let err = w.run(|d| d[2].nbf = Some(NOW + 61)).unwrap_err();
    assert!(matches!(err, ChainError::NotYetValid { .. }), "{err}");
    assert_eq!(pos(&err), Some(TokenPos::Delegation(2)));
    w.run(|d| d[2].nbf = Some(NOW + 60)).unwrap();
}

#[test]
fn audience_issuer_mismatch() {
    let w = World::new();
    let err = w.run(|d| d[0].aud = w.did(X)).unwrap_err();
    assert!(
        matches!(err, ChainError::AudienceIssuerMismatch { .. }),
        "{err}"
    );
    assert_eq!(pos(&err), Some(TokenPos::Delegation(0)));
    // The last delegation's audience is not the invoker.
    let err = w.run(|d| d[2].aud = w.did(X)).unwrap_err();
    assert!(
        matches!(err, ChainError::AudienceIssuerMismatch { .. }),
        "{err}"
    );
    assert_eq!(pos(&err), Some(TokenPos::Delegation(2)));
}

#[test]
fn subject_mismatch() {
    let w = World::new();
    let err = w.run(|d| d[1].sub = Some(w.did(X))).unwrap_err();
    assert!(matches!(err, ChainError::SubjectMismatch { .. }), "{err}");
    assert_eq!(pos(&err), Some(TokenPos::Delegation(1)));
}

#[test]
fn missing_proof_and_cid_mismatch() {
    let w = World::new();
    let b = w.build(|_| {}, |_| {});
    let mut store = b.store();
    store.remove(&b.dels[1].cid());
    let err = Validator::default()
        .validate(
            &b.inv,
            &store,
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(4),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ChainError::MissingProof {
            index: 1,
            cid: b.dels[1].cid()
        }
    );
    store.insert(b.dels[1].cid(), b.dels[2].clone());
    let err = Validator::default()
        .validate(
            &b.inv,
            &store,
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(4),
        )
        .unwrap_err();
    assert!(
        matches!(err, ChainError::ProofCidMismatch { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn powerline() {
    let w = World::new();
    // Below the root, a powerline is valid by the spec…
    let b = w.build(|d| d[1].sub = None, |_| {});
    let ok = b.validate().unwrap();
    assert_eq!(ok.powerlines, vec![1]);
    // …and refused by the mesh unless it allows them.
    let err = b.mesh(&MeshPolicy::default()).unwrap_err();
    assert!(
        matches!(err, Refusal::Mesh(PolicyError::PowerlineNotAllowed { token }) if token.pos == TokenPos::Delegation(1)),
        "{err}"
    );
    let allow = MeshPolicy {
        allow_powerline: true,
    };
    b.mesh(&allow).unwrap();
    // A powerline cannot be the root, whatever the policy.
    let err = w.run(|d| d[0].sub = None).unwrap_err();
    assert!(matches!(err, ChainError::PowerlineRoot { .. }), "{err}");
    assert_eq!(pos(&err), Some(TokenPos::Delegation(0)));
    let err = w
        .build(|d| d[0].sub = None, |_| {})
        .mesh(&allow)
        .unwrap_err();
    assert_eq!(err.layer(), Layer::Spec);
}

#[test]
fn command_not_covered() {
    let w = World::new();
    let err = w.run(|d| d[1].cmd = cmd("/mesh/leave")).unwrap_err();
    assert!(matches!(err, ChainError::CommandNotCovered { .. }), "{err}");
    assert_eq!(pos(&err), Some(TokenPos::Delegation(1)));
    // The invocation asks for more than the leaf delegation grants.
    let err = w.run_inv(|i| i.cmd = cmd("/mesh")).unwrap_err();
    assert!(matches!(err, ChainError::CommandNotCovered { .. }), "{err}");
    assert_eq!(pos(&err), Some(TokenPos::Delegation(2)));
}

#[test]
fn policy_mismatch() {
    let w = World::new();
    let err = w
        .run_inv(|i| {
            i.args
                .insert("substrate".into(), Ipld::String("gaia".into()));
        })
        .unwrap_err();
    assert!(
        matches!(err, ChainError::PolicyMismatch { error: None, .. }),
        "{err}"
    );
    assert_eq!(pos(&err), Some(TokenPos::Delegation(1)));
    let err = w
        .run_inv(|i| {
            i.args.remove("replicas");
        })
        .unwrap_err();
    assert_eq!(pos(&err), Some(TokenPos::Delegation(2)), "{err}");
}

#[test]
fn revoked() {
    let w = World::new();
    let b = w.build(|_| {}, |_| {});
    for (i, cid) in b
        .dels
        .iter()
        .map(Signed::cid)
        .chain([b.inv.cid()])
        .enumerate()
    {
        let revoked: RevocationSet = [cid].into_iter().collect();
        let err = Validator::default()
            .validate(&b.inv, &b.store(), NOW, &revoked, &mut ReplayGuard::new(4))
            .unwrap_err();
        assert!(matches!(err, ChainError::Revoked { .. }), "{err}");
        let want = if i == 3 {
            TokenPos::Invocation
        } else {
            TokenPos::Delegation(i)
        };
        assert_eq!(pos(&err), Some(want));
    }
}

#[test]
fn replayed() {
    let w = World::new();
    let b = w.build(|_| {}, |_| {});
    let v = Validator::default();
    let mut seen = ReplayGuard::new(4);
    v.validate(&b.inv, &b.store(), NOW, &RevocationSet::new(), &mut seen)
        .unwrap();
    let err = v
        .validate(&b.inv, &b.store(), NOW, &RevocationSet::new(), &mut seen)
        .unwrap_err();
    assert_eq!(err, ChainError::Replayed { cid: b.inv.cid() });
}

#[test]
fn replay_guard_is_bounded() {
    let w = World::new();
    let v = Validator::default();
    let mut seen = ReplayGuard::new(1);
    let first = w.build(|_| {}, |_| {});
    v.validate(
        &first.inv,
        &first.store(),
        NOW,
        &RevocationSet::new(),
        &mut seen,
    )
    .unwrap();
    let second = w.build(|_| {}, |i| i.nonce = vec![42]);
    let err = v
        .validate(
            &second.inv,
            &second.store(),
            NOW,
            &RevocationSet::new(),
            &mut seen,
        )
        .unwrap_err();
    assert!(
        matches!(err, ChainError::ReplayGuardFull { max_entries: 1, .. }),
        "{err}"
    );
    // Once the first invocation has expired (plus skew) its slot is reused.
    let later = NOW + 60 + 61;
    let third = w.build(
        |_| {},
        |i| {
            i.nonce = vec![43];
            i.exp = Some(later + 10);
        },
    );
    v.validate(
        &third.inv,
        &third.store(),
        later,
        &RevocationSet::new(),
        &mut seen,
    )
    .unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen.contains(&third.inv.cid()));
}

#[test]
fn root_not_subject() {
    let w = World::new();
    let err = w.run(|d| d[0].iss = w.did(X)).unwrap_err();
    assert!(matches!(err, ChainError::RootNotSubject { .. }), "{err}");
    assert_eq!(pos(&err), Some(TokenPos::Delegation(0)));
}

#[test]
fn empty_chain_and_self_invocation() {
    let w = World::new();
    let err = w.run_inv(|i| i.prf.clear()).unwrap_err();
    assert_eq!(err, ChainError::EmptyChain);
    // The subject may invoke on itself without proofs.
    let own = w.sign_inv(
        Invocation::new(w.did(ROOT), w.did(ROOT), cmd("/mesh/join"), vec![1]).with_exp(NOW + 5),
    );
    let ok = Validator::default()
        .validate(
            &own,
            &HashMap::new(),
            NOW,
            &RevocationSet::new(),
            &mut ReplayGuard::new(4),
        )
        .unwrap();
    assert_eq!(ok.root_issuer, w.did(ROOT));
}

#[test]
fn chain_too_long_and_unbounded_invocation() {
    let w = World::new();
    let short = ValidatorConfig {
        max_chain_len: 2,
        ..ValidatorConfig::default()
    };
    let err = w.build(|_| {}, |_| {}).validate_with(short).unwrap_err();
    assert_eq!(err, ChainError::ChainTooLong { len: 3, max: 2 });
    // `exp: null` is valid by the spec, but not recorded by the replay guard…
    let b = w.build(|_| {}, |i| i.exp = None);
    let mut seen = ReplayGuard::new(4);
    let v = Validator::default();
    for _ in 0..2 {
        let ok = v
            .validate(&b.inv, &b.store(), NOW, &RevocationSet::new(), &mut seen)
            .unwrap();
        assert!(!ok.replay_protected);
        assert_eq!(ok.expires_at, Some(NOW + 1800));
    }
    assert!(seen.is_empty());
    // …so the mesh refuses it, and records nothing.
    let err = MeshPolicy::default()
        .validate(
            &v,
            &b.inv,
            &b.store(),
            NOW,
            &RevocationSet::new(),
            &mut seen,
        )
        .unwrap_err();
    assert_eq!(
        err,
        Refusal::Mesh(PolicyError::UnboundedInvocation { cid: b.inv.cid() })
    );
    assert_eq!(err.layer(), Layer::Mesh);
    assert!(seen.is_empty());
}

#[test]
fn delegation_chain_without_invocation() {
    let w = World::new();
    let b = w.build(|_| {}, |_| {});
    let v = Validator::default();
    let ok = v
        .validate_delegation_chain(&b.dels, NOW, &RevocationSet::new())
        .unwrap();
    assert_eq!(ok.root_issuer, w.did(ROOT));
    assert_eq!(ok.holder, w.did(3));
    assert_eq!(ok.cmd, cmd("/mesh/join"));
    assert_eq!(ok.policies.len(), 3);
    assert_eq!(ok.expires_at, Some(NOW + 1800));
    assert_eq!(ok.not_before, Some(NOW - 10));
    assert!(ok.allows(&cmd("/mesh/join"), &World::args()).unwrap());
    assert!(!ok.allows(&cmd("/mesh"), &World::args()).unwrap());
    assert_eq!(
        v.validate_delegation_chain(&[], NOW, &RevocationSet::new()),
        Err(ChainError::EmptyChain)
    );
    let late = v.validate_delegation_chain(&b.dels, NOW + 7200, &RevocationSet::new());
    assert!(matches!(late, Err(ChainError::Expired { .. })));
    let revoked: RevocationSet = [b.dels[2].cid()].into_iter().collect();
    assert!(matches!(
        v.validate_delegation_chain(&b.dels, NOW, &revoked),
        Err(ChainError::Revoked { .. })
    ));
    let broken = w.build(|d| d[1].cmd = cmd("/mesh/leave"), |_| {});
    assert!(matches!(
        v.validate_delegation_chain(&broken.dels, NOW, &RevocationSet::new()),
        Err(ChainError::CommandNotCovered { .. })
    ));
}

// ------------------------------------------- both layers, every failure class

/// One row: a chain with one defect, the inputs to validate it with, and
/// whether it makes sense with an invocation whose `exp` is null.
struct Case {
    built: Built,
    store: HashMap<Cid, Signed<Delegation>>,
    revoked: RevocationSet,
    seen: ReplayGuard,
    config: ValidatorConfig,
}

impl Case {
    fn new(built: Built) -> Self {
        Self {
            store: built.store(),
            built,
            revoked: RevocationSet::new(),
            seen: ReplayGuard::new(16),
            config: ValidatorConfig::default(),
        }
    }

    fn spec(&self) -> Result<ValidChain, ChainError> {
        let mut seen = self.seen.clone();
        Validator::new(self.config.clone()).validate(
            &self.built.inv,
            &self.store,
            NOW,
            &self.revoked,
            &mut seen,
        )
    }

    fn mesh(&self) -> Result<ValidChain, Refusal> {
        let mut seen = self.seen.clone();
        MeshPolicy::default().validate(
            &Validator::new(self.config.clone()),
            &self.built.inv,
            &self.store,
            NOW,
            &self.revoked,
            &mut seen,
        )
    }
}

type Make = fn(&World, bool) -> Case;

/// Builds with the delegation edit `d` and invocation edit `i`, then sets the
/// invocation's `exp` to null when `null_exp`.
fn make(
    w: &World,
    null_exp: bool,
    d: impl FnOnce(&mut Vec<Delegation>),
    i: impl FnOnce(&mut Invocation),
) -> Case {
    Case::new(w.build(d, |inv| {
        i(inv);
        if null_exp {
            inv.exp = None;
        }
    }))
}

/// A token whose signature field is 3 bytes long (as in the spec fixture).
fn short_signature<T: crate::ucan::Payload>(t: &Signed<T>) -> Signed<T> {
    let inner = t.signature_payload();
    let mut bytes = vec![0x82, 0x43, 1, 2, 3];
    bytes.extend_from_slice(inner);
    Signed::decode(&bytes).unwrap()
}

/// `(name, build, null exp applies, spec class or None for valid, mesh class)`.
/// The mesh column is `(layer, class)`; for the null-`exp` variant of a row
/// the spec class is unchanged and the mesh column follows from it.
#[allow(clippy::type_complexity)]
fn rows() -> Vec<(
    &'static str,
    Make,
    bool,
    Option<&'static str>,
    Option<(Layer, &'static str)>,
)> {
    use Layer::{Mesh, Spec};
    vec![
        ("valid", |w, n| make(w, n, |_| {}, |_| {}), true, None, None),
        (
            "valid powerline below the root",
            |w, n| make(w, n, |d| d[1].sub = None, |_| {}),
            true,
            None,
            Some((Mesh, "powerline-not-allowed")),
        ),
        (
            "bad delegation signature",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                // The forgery has its own CID; the invoker points `prf` at it.
                let forged = flip_signature(&c.built.dels[1], 7);
                let mut p = c.built.inv.payload().clone();
                p.prf[1] = forged.cid();
                c.store.insert(forged.cid(), forged);
                c.built.inv = w.sign_inv(p);
                c
            },
            true,
            Some("bad-signature"),
            Some((Spec, "bad-signature")),
        ),
        (
            "invocation signature of the wrong length",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                c.built.inv = short_signature(&c.built.inv);
                c
            },
            true,
            Some("bad-signature"),
            Some((Spec, "bad-signature")),
        ),
        (
            "expired proof",
            |w, n| make(w, n, |d| d[1].exp = Some(NOW - 100), |_| {}),
            true,
            Some("expired"),
            Some((Spec, "expired")),
        ),
        (
            "expired invocation",
            |w, n| make(w, n, |_| {}, |i| i.exp = Some(NOW - 100)),
            false,
            Some("expired"),
            Some((Spec, "expired")),
        ),
        (
            "proof not yet valid",
            |w, n| make(w, n, |d| d[2].nbf = Some(NOW + 100), |_| {}),
            true,
            Some("not-yet-valid"),
            Some((Spec, "not-yet-valid")),
        ),
        (
            "proof audience misaligned",
            |w, n| make(w, n, |d| d[0].aud = w.did(X), |_| {}),
            true,
            Some("audience-mismatch"),
            Some((Spec, "audience-mismatch")),
        ),
        (
            "invoker is not the last audience",
            |w, n| make(w, n, |d| d[2].aud = w.did(X), |_| {}),
            true,
            Some("audience-mismatch"),
            Some((Spec, "audience-mismatch")),
        ),
        (
            "proof subject misaligned",
            |w, n| make(w, n, |d| d[1].sub = Some(w.did(X)), |_| {}),
            true,
            Some("subject-mismatch"),
            Some((Spec, "subject-mismatch")),
        ),
        (
            "invocation subject misaligned",
            |w, n| make(w, n, |_| {}, |i| i.sub = w.did(X)),
            true,
            Some("root-not-subject"),
            Some((Spec, "root-not-subject")),
        ),
        (
            "root not issued by the subject",
            |w, n| make(w, n, |d| d[0].iss = w.did(X), |_| {}),
            true,
            Some("root-not-subject"),
            Some((Spec, "root-not-subject")),
        ),
        (
            "powerline root",
            |w, n| make(w, n, |d| d[0].sub = None, |_| {}),
            true,
            Some("powerline-root"),
            Some((Spec, "powerline-root")),
        ),
        (
            "missing proof",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                c.store.remove(&c.built.dels[1].cid());
                c
            },
            true,
            Some("missing-proof"),
            Some((Spec, "missing-proof")),
        ),
        (
            "store answers with another token",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                c.store
                    .insert(c.built.dels[1].cid(), c.built.dels[2].clone());
                c
            },
            true,
            Some("proof-cid-mismatch"),
            Some((Spec, "proof-cid-mismatch")),
        ),
        (
            "command widened",
            |w, n| make(w, n, |d| d[1].cmd = cmd("/mesh/leave"), |_| {}),
            true,
            Some("command-not-covered"),
            Some((Spec, "command-not-covered")),
        ),
        (
            "policy violated",
            |w, n| {
                make(
                    w,
                    n,
                    |_| {},
                    |i| {
                        i.args
                            .insert("substrate".into(), Ipld::String("gaia".into()));
                    },
                )
            },
            true,
            Some("policy-mismatch"),
            Some((Spec, "policy-mismatch")),
        ),
        (
            "proof revoked",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                c.revoked.insert(c.built.dels[0].cid());
                c
            },
            true,
            Some("revoked"),
            Some((Spec, "revoked")),
        ),
        (
            "replayed",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                c.seen
                    .check_and_insert(c.built.inv.cid(), NOW + 120, NOW)
                    .unwrap();
                c
            },
            false,
            Some("replayed"),
            Some((Spec, "replayed")),
        ),
        (
            "replay guard full",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                c.seen = ReplayGuard::new(1);
                c.seen
                    .check_and_insert(
                        w.build(|_| {}, |i| i.nonce = vec![77]).inv.cid(),
                        NOW + 120,
                        NOW,
                    )
                    .unwrap();
                c
            },
            false,
            Some("replay-guard-full"),
            Some((Spec, "replay-guard-full")),
        ),
        (
            "no proofs",
            |w, n| make(w, n, |_| {}, |i| i.prf.clear()),
            true,
            Some("empty-chain"),
            Some((Spec, "empty-chain")),
        ),
        (
            "chain too long",
            |w, n| {
                let mut c = make(w, n, |_| {}, |_| {});
                c.config.max_chain_len = 2;
                c
            },
            true,
            Some("chain-too-long"),
            Some((Spec, "chain-too-long")),
        ),
    ]
}

/// Every failure class, through both layers, with the invocation's `exp`
/// set and (where it applies) null: each defect is reported as itself by
/// the spec layer, and the mesh layer reports the same spec-layer defect;
/// only a chain the spec accepts can be refused by the mesh policy.
#[test]
fn every_failure_class_through_both_layers() {
    let w = World::new();
    let mut classes = std::collections::BTreeSet::new();
    for (name, build, null_applies, spec, mesh) in rows() {
        for null_exp in [false, true] {
            if null_exp && !null_applies {
                continue;
            }
            let case = build(&w, null_exp);
            let got_spec = case.spec().map(|_| ()).map_err(|e| e.class());
            assert_eq!(
                got_spec,
                spec.map_or(Ok(()), Err),
                "{name} (null exp: {null_exp}), spec layer"
            );
            let want_mesh = match (spec, null_exp) {
                (Some(class), _) => Some((Layer::Spec, class)),
                (None, true) => Some((Layer::Mesh, "unbounded-invocation")),
                (None, false) => mesh,
            };
            let got_mesh = case.mesh().map(|_| ()).map_err(|e| (e.layer(), e.class()));
            assert_eq!(
                got_mesh,
                want_mesh.map_or(Ok(()), Err),
                "{name} (null exp: {null_exp}), mesh layer"
            );
            if let Some(c) = spec {
                classes.insert(c);
            }
        }
    }
    // The table covers every spec class but none of the mesh ones by accident.
    assert_eq!(classes.len(), 16, "{classes:?}");
}

// ------------------------------------------------------------ property tests

/// Changes one field of a delegation; `k` picks the variant of the change.
fn tamper_delegation(w: &World, d: &mut Delegation, field: usize, k: u8) {
    match field {
        0 => d.iss = w.did(X),
        1 => d.aud = w.did(X),
        2 => {
            d.sub = if k.is_multiple_of(2) {
                None
            } else {
                Some(w.did(X))
            }
        }
        3 => {
            d.cmd = if d.cmd.as_str() == "/" {
                cmd("/x")
            } else {
                Command::root()
            }
        }
        4 => d.pol = pol(&format!(r#"[["!=", ".n", {k}]]"#)),
        5 => d.nonce.push(k),
        6 => d.exp = Some(d.exp.unwrap_or(NOW).wrapping_add(1 + u64::from(k))),
        7 => d.nbf = Some(d.nbf.unwrap_or(0).wrapping_add(1 + u64::from(k))),
        _ => {}
    }
}

/// Changes one field of an invocation.
fn tamper_invocation(w: &World, i: &mut Invocation, field: usize, k: u8) {
    match field {
        0 => i.iss = w.did(X),
        1 => i.aud = Some(w.did(X)),
        2 => i.sub = w.did(X),
        3 => i.cmd = cmd("/mesh/join/now"),
        4 => {
            i.args.insert(format!("extra{k}"), Ipld::Integer(k.into()));
        }
        5 => i.nonce.push(k),
        6 => i.exp = Some(NOW + 1 + u64::from(k)),
        7 => {
            if k.is_multiple_of(2) {
                i.prf.reverse();
            } else {
                i.prf.pop();
            }
        }
        _ => i.iat = Some(u64::from(k)),
    }
}

fn flip_signature<T: crate::ucan::Payload + Clone>(t: &Signed<T>, k: u8) -> Signed<T> {
    let mut sig = t.signature().unwrap().to_bytes();
    sig[usize::from(k) % 64] ^= 1 << (k % 8);
    Signed::from_parts(t.payload().clone(), Signature::from_bytes(sig), t.version()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Changing any one field (or one signature bit) of any token, without the
    /// issuer re-signing, makes the chain invalid — whether the store keeps the
    /// tampered proof under its old CID or the invocation is re-pointed at it.
    #[test]
    fn any_single_tamper_is_rejected(token in 0usize..4, field in 0usize..10, k in any::<u8>(), repoint in any::<bool>()) {
        let w = World::new();
        let b = w.build(|_| {}, |_| {});
        let v = Validator::default();
        if token == 3 {
            let inv = if field == 9 {
                flip_signature(&b.inv, k)
            } else {
                let mut p = b.inv.payload().clone();
                tamper_invocation(&w, &mut p, field, k);
                Signed::from_parts(p, *b.inv.signature().unwrap(), b.inv.version()).unwrap()
            };
            let r = v.validate(&inv, &b.store(), NOW, &RevocationSet::new(), &mut ReplayGuard::new(4));
            prop_assert!(r.is_err(), "tampered invocation field {} accepted", field);
        } else {
            let original = &b.dels[token];
            let tampered = if field >= 8 {
                flip_signature(original, k)
            } else {
                let mut p = original.payload().clone();
                tamper_delegation(&w, &mut p, field, k);
                Signed::from_parts(p, *original.signature().unwrap(), original.version()).unwrap()
            };
            prop_assume!(tampered.as_bytes() != original.as_bytes());
            let mut store = b.store();
            let inv = if repoint {
                store.insert(tampered.cid(), tampered.clone());
                let mut p = b.inv.payload().clone();
                p.prf[token] = tampered.cid();
                // The invoker re-signs: only the delegation is forged.
                w.sign_inv(p)
            } else {
                store.insert(original.cid(), tampered.clone());
                b.inv.clone()
            };
            let r = v.validate(&inv, &store, NOW, &RevocationSet::new(), &mut ReplayGuard::new(4));
            prop_assert!(r.is_err(), "tampered delegation[{}] field {} accepted", token, field);
            let r = v.validate_delegation_chain(
                &b.dels.iter().enumerate().map(|(i, d)| if i == token { tampered.clone() } else { d.clone() }).collect::<Vec<_>>(),
                NOW,
                &RevocationSet::new(),
            );
            prop_assert!(r.is_err());
        }
    }

    /// A delegation never widens what its parent granted: whatever commands and
    /// numeric limits the tokens carry, validation succeeds exactly when each
    /// command covers the next and every policy holds, and a valid chain's
    /// invoked command is covered by the root's.
    #[test]
    fn delegations_never_widen(
        root_cmd in prop::sample::select(vec!["/", "/mesh", "/mesh/join", "/image", "/mesh/leave"]),
        mid_cmd in prop::sample::select(vec!["/", "/mesh", "/mesh/join", "/image/push", "/meshes"]),
        inv_cmd in prop::sample::select(vec!["/mesh", "/mesh/join", "/mesh/join/x", "/image/push", "/meshes/a"]),
        root_max in 0i64..10,
        mid_min in 0i64..10,
        n in 0i64..10,
    ) {
        let w = World::new();
        let (root_cmd, mid_cmd, inv_cmd) = (cmd(root_cmd), cmd(mid_cmd), cmd(inv_cmd));
        let b = w.build(
            |d| {
                d[0].cmd = root_cmd.clone();
                d[0].pol = pol(&format!(r#"[["<=", ".n", {root_max}]]"#));
                d[1].cmd = mid_cmd.clone();
                d[1].pol = pol(&format!(r#"[[">=", ".n", {mid_min}]]"#));
                d[2].cmd = mid_cmd.clone();
                d[2].pol = Policy::new();
            },
            |i| {
                i.cmd = inv_cmd.clone();
                i.args = BTreeMap::from([("n".to_owned(), Ipld::Integer(n.into()))]);
            },
        );
        let r = b.validate();
        let expected = root_cmd.covers(&mid_cmd) && mid_cmd.covers(&inv_cmd) && n <= root_max && n >= mid_min;
        prop_assert_eq!(r.is_ok(), expected, "{:?}", r);
        if let Ok(ok) = r {
            prop_assert!(root_cmd.covers(&ok.cmd));
            prop_assert!(b.dels[0].payload().pol.matches(&b.inv.payload().args).unwrap());
        }
    }
}
