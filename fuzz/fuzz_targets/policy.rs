//! The UCAN policy language: a policy (JSON, as `omega token delegate
//! --policy` takes it, or IPLD inside a token) and its evaluation against
//! arguments; selectors on their own.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_identity::policy::{Policy, Selector, ipld_from_json};

fuzz_target!(|data: &[u8]| {
    // Split at the first NUL: policy JSON, then the arguments' JSON.
    let (policy, args) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    if let Ok(text) = std::str::from_utf8(policy) {
        let _ = Selector::parse(text);
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(policy) else {
        return;
    };
    let Ok(policy) = Policy::from_json(&json) else {
        return;
    };
    // What decoded encodes and decodes to the same policy.
    let again = Policy::from_ipld(&policy.to_ipld()).expect("a policy's own IPLD decodes");
    assert_eq!(again.to_ipld(), policy.to_ipld());
    if let Ok(args) = serde_json::from_slice::<serde_json::Value>(args)
        && let Ok(value) = ipld_from_json(&args)
    {
        let _ = policy.matches_value(&value);
    }
});
