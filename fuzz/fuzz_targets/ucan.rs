//! UCAN 1.0 envelopes (DAG-CBOR, varsig header, payload tag) as they arrive
//! in join requests, desired-state records and `omega token` input: decode
//! either kind, then check the signature and re-encode what decoded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_identity::ucan::{AnyToken, decode_base64};

fuzz_target!(|data: &[u8]| {
    check(data);
    // The text form `omega token verify` reads.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bytes) = decode_base64(text)
    {
        check(&bytes);
    }
});

fn check(bytes: &[u8]) {
    match AnyToken::decode(bytes) {
        Ok(AnyToken::Delegation(d)) => {
            let _ = d.verify_signature();
            let _ = format!("{:?}", d.payload());
            assert_eq!(d.as_bytes(), bytes, "a decoded token keeps its bytes");
        }
        Ok(AnyToken::Invocation(i)) => {
            let _ = i.verify_signature();
            let _ = format!("{:?}", i.payload());
            assert_eq!(i.as_bytes(), bytes, "a decoded token keeps its bytes");
        }
        Err(e) => drop(e.to_string()),
    }
}
