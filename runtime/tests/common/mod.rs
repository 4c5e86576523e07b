//! Shared test support: building the example branes once per test run, and
//! making components from WAT with `wit-component` (a second toolchain).

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

mod guests;
pub(crate) use guests::guests;

/// The bytes of one example brane.
pub fn guest(name: &str) -> Vec<u8> {
    let path = guests().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A component for the `omega:brane/brane` world from a WAT core module,
/// encoded with `wit-component`. `body` is the body of
/// `on-event(id, type, key, payload, source, attempt)` (params 0..=10) and
/// must leave the result pointer on the stack; `extra` adds module fields.
/// Memory: result area at 0, the string "echo" at 64, heap from 1024.
pub fn wat_brane(body: &str, extra: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
  (import "omega:brane/host@0.1.0" "emit"
    (func $emit (param i32 i32 i32 i32 i32 i32 i32)))
  (memory (export "memory") 40)
  (data (i32.const 64) "echo")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (local.get $p))
  {extra}
  (func (export "omega:brane/handler@0.1.0#on-event")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (global.set $heap (i32.const 1024))
    {body})
)"#
    );
    let mut module = wat::parse_str(&wat).expect("valid WAT");
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve
        .push_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit"))
        .expect("wit parses")
        .0;
    let world = resolve
        .select_world(&[pkg], Some("brane"))
        .expect("world exists");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata embeds");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module accepted")
        .validate(true)
        .encode()
        .expect("component encodes")
}

/// `on-event` body: return `ok`.
pub const OK: &str = "(i32.store8 (i32.const 0) (i32.const 0)) (i32.const 0)";
