//! Published test vectors: did:key (Ed25519), the UCAN 1.0 delegation fixture and
//! the UCAN 1.0 policy-language cases. The files are copies kept in
//! `tests/vectors/`, unchanged from the published ones.

// Test helpers outside `#[test]` functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use omega_identity::policy::{Policy, ipld_from_json};
use omega_identity::ucan::{Delegation, Signed, SpecVersion};
use omega_identity::{Did, Ipld, Keypair};
use serde_json::Value;

fn vector(name: &str) -> String {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn did_key_ed25519_vectors() {
    let v: Value = serde_json::from_str(&vector("did-key-ed25519-x25519.json")).unwrap();
    let cases = v.as_object().unwrap();
    assert!(!cases.is_empty());
    let mut checked = 0;
    for (did, case) in cases {
        let seed: [u8; 32] = hex::decode(case["seed"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = Keypair::from_seed(seed);
        assert_eq!(key.did().to_string(), *did);
        let vkp = &case["verificationKeyPair"];
        if let Some(b58) = vkp["publicKeyBase58"].as_str() {
            assert_eq!(bs58::encode(key.public().as_bytes()).into_string(), b58);
        } else {
            // One entry gives the key as a JWK (OKP, Ed25519) instead: `x` is
            // base64url of the public key, `d` of the seed.
            assert_eq!(vkp["publicKeyJwk"]["crv"], "Ed25519");
            let x = vkp["publicKeyJwk"]["x"].as_str().unwrap();
            assert_eq!(URL_SAFE_NO_PAD.encode(key.public().as_bytes()), x);
            let d = vkp["privateKeyJwk"]["d"].as_str().unwrap();
            assert_eq!(URL_SAFE_NO_PAD.encode(seed), d);
        }
        assert_eq!(did.parse::<Did>().unwrap(), key.did());
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}

/// Private keys in the fixture are base64pad(varint(0x1300) ‖ 32-byte seed).
fn principal(v: &Value, name: &str) -> Keypair {
    let raw = STANDARD
        .decode(v["principals"][name].as_str().unwrap())
        .unwrap();
    assert_eq!(&raw[..2], &[0x80, 0x26], "varint(0x1300)");
    Keypair::from_seed(raw[2..].try_into().unwrap())
}

#[test]
fn ucan_delegation_fixture() {
    let v: Value = serde_json::from_str(&vector("ucan-1.0.0-delegation.json")).unwrap();
    let cases = v["valid"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let token_b64 = case["token"].as_str().unwrap();
        let token = Signed::<Delegation>::from_base64(token_b64).unwrap();
        let bytes = STANDARD.decode(token_b64).unwrap();

        // Every payload field matches the fixture's envelope.
        let want = &case["envelope"]["payload"];
        let p = token.payload();
        assert_eq!(p.iss.to_string(), want["iss"].as_str().unwrap());
        assert_eq!(p.aud.to_string(), want["aud"].as_str().unwrap());
        assert_eq!(
            p.sub.map(|s| s.to_string()).as_deref(),
            want["sub"].as_str()
        );
        assert_eq!(p.cmd.as_str(), want["cmd"].as_str().unwrap());
        assert_eq!(p.pol, Policy::from_json(&want["pol"]).unwrap());
        assert_eq!(p.exp, want["exp"].as_u64());
        assert_eq!(p.nbf, want.get("nbf").and_then(Value::as_u64));
        assert_eq!(
            p.nonce,
            STANDARD.decode(want["nonce"].as_str().unwrap()).unwrap()
        );
        assert!(p.meta.is_none() && want.get("meta").is_none());
        let sig = STANDARD
            .decode(case["envelope"]["signature"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            token.signature().unwrap().as_bytes().as_slice(),
            sig.as_slice()
        );
        assert_eq!(token.version(), SpecVersion::V1_0_0);

        // CID, signature, byte-identical re-encoding.
        assert_eq!(token.cid().to_string(), case["cid"].as_str().unwrap());
        token.verify_signature().unwrap();
        assert_eq!(token.to_bytes(), bytes);
        assert_eq!(token.to_base64(), token_b64);
        let rebuilt =
            Signed::from_parts(p.clone(), *token.signature().unwrap(), token.version()).unwrap();
        assert_eq!(rebuilt.to_bytes(), bytes);

        // Re-signing the payload with the issuer's key reproduces the token.
        let issuer = ["alice", "bob", "carol"]
            .into_iter()
            .map(|n| principal(&v, n))
            .find(|k| k.did() == p.iss)
            .expect("the issuer is one of the fixture's principals");
        assert_eq!(issuer.did(), principal(&v, "bob").did());
        let resigned = Signed::sign(p.clone(), &issuer).unwrap();
        assert_eq!(resigned.to_bytes(), bytes);
        assert_eq!(resigned.cid(), token.cid());
    }
}

/// Loads the policy vectors. The published file is not strict JSON: in the
/// `newsletters` case an object sits directly inside an object
/// (`"newsletters": { { "christmas": … } }`). We repair exactly that one defect
/// here, turning it into `"newsletters": { "christmas": … }`, and leave the
/// copied file untouched.
fn policy_vectors() -> Value {
    let text = vector("ucan-1.0.0-policy.json");
    let start = text
        .find("\"newsletters\": {")
        .expect("newsletters case present");
    let open = start + "\"newsletters\": {".len();
    let inner = open + text[open..].find('{').unwrap();
    assert!(
        text[open..inner].trim().is_empty(),
        "doubled brace expected"
    );
    // The stray inner object closes with the first `}` line at its indentation.
    let close_pat = "\n\t\t\t\t\t}\n\t\t\t\t}";
    let close = inner
        + text[inner..]
            .find(close_pat)
            .expect("stray object's closing brace");
    let repaired = format!(
        "{}{}{}",
        &text[..inner],
        &text[inner + 1..close + 1],
        &text[close + 1 + "\t\t\t\t\t}\n".len()..]
    );
    serde_json::from_str(&repaired).expect("repaired policy vectors are JSON")
}

fn args_of(case: &Value) -> BTreeMap<String, Ipld> {
    match ipld_from_json(&case["args"]).unwrap() {
        Ipld::Map(m) => m,
        other => panic!("args must be a map, found {other:?}"),
    }
}

#[test]
fn ucan_policy_vectors() {
    let v = policy_vectors();
    let mut counted = (0, 0);
    for (group, expected) in [("valid", true), ("invalid", false)] {
        for case in v[group].as_array().unwrap() {
            let args = args_of(case);
            for policy in case["policies"].as_array().unwrap() {
                let parsed = Policy::from_json(policy).unwrap_or_else(|e| panic!("{policy}: {e}"));
                assert_eq!(
                    parsed.matches(&args).unwrap(),
                    expected,
                    "{group} policy {policy} against {}",
                    case["args"]
                );
                if expected {
                    counted.0 += 1;
                } else {
                    counted.1 += 1;
                }
            }
        }
    }
    assert_eq!(counted, (17, 8), "(valid, invalid) policies checked");
}

#[test]
fn newsletters_repair_keeps_the_intended_shape() {
    let v = policy_vectors();
    let n = &v["valid"][4]["args"]["newsletters"];
    assert!(n["christmas"]["recipients"].is_array(), "{n}");
}
