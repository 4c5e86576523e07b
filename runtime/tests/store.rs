//! The image store and the precompiled cache.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::str::FromStr;

use common::{OK, wat_brane};
use omega_identity::Keypair;
use omega_runtime::{
    CacheStatus, ImageError, ImageRef, ImageStore, Runtime, RuntimeConfig, entry_paths,
};

#[test]
fn push_tag_resolve_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let bytes = wat_brane(OK, "");
    let hash = store.put(&rt, &bytes).unwrap();
    assert!(hash.to_string().starts_with("bafkr4i"));
    assert_eq!(store.get(&hash).unwrap(), bytes);
    let key = Keypair::from_seed([7; 32]);
    let r = ImageRef::from_str("ingest:1.0").unwrap();
    let record = store.tag(&r, &hash, &key).unwrap();
    assert_eq!(record.signer, key.did().to_string());
    assert_eq!(store.resolve(&r).unwrap(), hash);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].tags, vec!["ingest:1.0"]);
    assert_eq!(list[0].size, bytes.len() as u64);
}

#[test]
fn bad_references_non_components_and_corruption_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    for bad in ["noTag", "Upper:1", ":1", "a:", "../x:1", "a:b:c"] {
        assert!(ImageRef::from_str(bad).is_err(), "{bad}");
    }
    let core = wat::parse_str("(module)").unwrap();
    assert!(matches!(store.put(&rt, &core), Err(ImageError::Invalid(_))));
    let hash = store.put(&rt, &wat_brane(OK, "")).unwrap();
    let blob = dir.path().join("blobs").join(format!("{hash}.wasm"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    assert!(matches!(store.get(&hash), Err(ImageError::Corrupt { .. })));
}

#[test]
fn tampered_tag_records_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let a = store.put(&rt, &wat_brane(OK, "")).unwrap();
    let b = store
        .put(&rt, &wat_brane(&format!("(nop) {OK}"), ""))
        .unwrap();
    let r = ImageRef::from_str("app:1").unwrap();
    store.tag(&r, &a, &Keypair::from_seed([1; 32])).unwrap();
    let path = dir.path().join("tags/app/1.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(&a.to_string(), &b.to_string())).unwrap();
    assert!(matches!(
        store.resolve(&r),
        Err(ImageError::BadRecord { .. })
    ));
}

#[test]
fn precompiled_cache_is_used_verified_and_rebuilt_when_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        cache_dir: Some(dir.path().into()),
        ..RuntimeConfig::default()
    };
    let bytes = wat_brane(OK, "");
    let rt = Runtime::new(cfg.clone()).unwrap();
    assert_eq!(
        rt.load(&bytes).unwrap().cache_status(),
        CacheStatus::Compiled
    );
    assert_eq!(rt.load(&bytes).unwrap().cache_status(), CacheStatus::Memory);
    // A new process (new runtime) loads from disk.
    let rt2 = Runtime::new(cfg.clone()).unwrap();
    assert_eq!(rt2.fingerprint(), rt.fingerprint());
    let image = rt2.load(&bytes).unwrap();
    assert_eq!(image.cache_status(), CacheStatus::Disk);
    // Corrupt the artifact: it is detected and recompiled.
    let (artifact, _) = entry_paths(dir.path(), rt2.fingerprint(), image.hash());
    let mut a = std::fs::read(&artifact).unwrap();
    a[100] ^= 0xff;
    std::fs::write(&artifact, a).unwrap();
    let rt3 = Runtime::new(cfg).unwrap();
    assert_eq!(
        rt3.load(&bytes).unwrap().cache_status(),
        CacheStatus::Compiled
    );
    assert_eq!(rt.fingerprint().len(), 16);
}
