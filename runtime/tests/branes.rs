//! Running real branes: the Rust examples (cargo + wit-bindgen) and WAT
//! components (wit-component), limits, grants and the pool.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{OK, guest, wat_brane};
use omega_runtime::{
    BraneLimits, BraneSpec, DirGrant, Edge, Event, EventError, Grants, InstanceMode, Pipeline,
    Runtime, RuntimeConfig, RuntimeError, TrapKind, discard_logs,
};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

fn spec(name: &str) -> BraneSpec {
    BraneSpec {
        name: name.into(),
        ..BraneSpec::default()
    }
}

fn ev(ty: &str, payload: &[u8]) -> Event {
    Event::external("e1", ty, payload.to_vec())
}

fn trap_kind(r: Result<omega_runtime::Outcome, EventError>) -> TrapKind {
    match r {
        Err(EventError::Trap { kind, .. }) => kind,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn rust_ingest_emits_raw_batch_and_logs() {
    let rt = runtime();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let image = rt.load(&guest("ingest")).unwrap();
    let brane = rt
        .brane(
            &image,
            spec("ingest"),
            Arc::new(move |b, l, m| sink.lock().unwrap().push(format!("{b} {l} {m}"))),
        )
        .unwrap();
    let out = brane.handle(&ev("tick", b"1,2,3")).unwrap();
    assert_eq!(out.emitted.len(), 1);
    assert_eq!(out.emitted[0].ty, "raw.batch");
    assert_eq!(out.emitted[0].payload, b"1,2,3");
    assert!(lines.lock().unwrap()[0].starts_with("ingest INFO ingest e1"));
}

#[test]
fn config_reaches_the_guest() {
    let rt = runtime();
    let image = rt.load(&guest("transform")).unwrap();
    let mut s = spec("transform");
    s.config = BTreeMap::from([("scale".to_string(), "10".to_string())]);
    let brane = rt.brane(&image, s, discard_logs()).unwrap();
    let out = brane.handle(&ev("raw.batch", b"1,2.5")).unwrap();
    let floats: Vec<f32> = out.emitted[0]
        .payload
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, vec![10.0, 25.0]);
}

#[test]
fn brane_error_is_returned_and_its_emits_discarded() {
    let rt = runtime();
    let brane = rt
        .brane(
            &rt.load(&guest("transform")).unwrap(),
            spec("t"),
            discard_logs(),
        )
        .unwrap();
    match brane.handle(&ev("raw.batch", b"1,x")) {
        Err(EventError::Brane { code, message }) => {
            assert_eq!(code, "bad-input");
            assert!(message.contains("not a number"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wat_component_from_second_toolchain_runs() {
    let rt = runtime();
    let body = "(call $emit (i32.const 64) (i32.const 4) (local.get 4) (local.get 5)
                 (local.get 6) (local.get 7) (i32.const 32)) ";
    let image = rt.load(&wat_brane(&format!("{body}{OK}"), "")).unwrap();
    let brane = rt.brane(&image, spec("echo"), discard_logs()).unwrap();
    let mut e = ev("anything", b"payload");
    e.key = "k".into();
    let out = brane.handle(&e).unwrap();
    assert_eq!(out.emitted.len(), 1);
    assert_eq!(
        (out.emitted[0].ty.as_str(), out.emitted[0].key.as_str()),
        ("echo", "k")
    );
    assert_eq!(out.emitted[0].payload, b"payload");
}

#[test]
fn infinite_loop_is_stopped_by_cpu_limit_and_others_keep_running() {
    let rt = runtime();
    let mut s = spec("spin");
    s.limits.cpu = Duration::from_millis(50);
    let spin = rt
        .brane(
            &rt.load(&wat_brane("(loop $l (br $l)) (i32.const 0)", ""))
                .unwrap(),
            s,
            discard_logs(),
        )
        .unwrap();
    assert_eq!(trap_kind(spin.handle(&ev("x", b""))), TrapKind::Cpu);
    let ok = rt
        .brane(
            &rt.load(&wat_brane(OK, "")).unwrap(),
            spec("ok"),
            discard_logs(),
        )
        .unwrap();
    assert!(ok.handle(&ev("x", b"")).is_ok());
    assert_eq!(rt.free_slots(), rt.config().max_instances);
}

#[test]
fn wall_clock_timeout_applies() {
    let rt = runtime();
    let mut s = spec("spin");
    s.limits.cpu = Duration::from_secs(60);
    s.limits.timeout = Duration::from_millis(50);
    let spin = rt
        .brane(
            &rt.load(&wat_brane("(loop $l (br $l)) (i32.const 0)", ""))
                .unwrap(),
            s,
            discard_logs(),
        )
        .unwrap();
    assert_eq!(trap_kind(spin.handle(&ev("x", b""))), TrapKind::Timeout);
}

#[test]
fn memory_bomb_traps_at_the_limit() {
    let rt = runtime();
    let mut s = spec("bomb");
    s.limits.memory_bytes = 4 << 20;
    let body =
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (i32.const 0)";
    let bomb = rt
        .brane(&rt.load(&wat_brane(body, "")).unwrap(), s, discard_logs())
        .unwrap();
    // The 40-page initial memory is under 4 MiB; growth past it traps.
    assert_eq!(trap_kind(bomb.handle(&ev("x", b""))), TrapKind::Memory);
}

#[test]
fn deep_recursion_hits_the_stack_limit() {
    let rt = runtime();
    let extra =
        "(func $r (param i32) (result i32) (call $r (i32.add (local.get 0) (i32.const 1))))";
    let image = rt
        .load(&wat_brane(
            "(drop (call $r (i32.const 0))) (i32.const 0)",
            extra,
        ))
        .unwrap();
    let brane = rt.brane(&image, spec("deep"), discard_logs()).unwrap();
    assert_eq!(trap_kind(brane.handle(&ev("x", b""))), TrapKind::Stack);
}

#[test]
fn trap_in_on_event_is_an_error_not_a_crash() {
    let rt = runtime();
    let brane = rt
        .brane(
            &rt.load(&wat_brane("unreachable", "")).unwrap(),
            spec("trap"),
            discard_logs(),
        )
        .unwrap();
    for _ in 0..3 {
        assert_eq!(trap_kind(brane.handle(&ev("x", b""))), TrapKind::Other);
    }
}

#[test]
fn emit_flood_is_refused_at_the_limit() {
    let rt = runtime();
    let body = format!(
        "(local.set 0 (i32.const 1000))
         (loop $l
           (call $emit (i32.const 64) (i32.const 4) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const 32))
           (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
           (br_if $l (local.get 0)))
         {OK}"
    );
    let mut s = spec("flood");
    s.limits.max_emits = 10;
    let brane = rt
        .brane(&rt.load(&wat_brane(&body, "")).unwrap(), s, discard_logs())
        .unwrap();
    let out = brane.handle(&ev("x", b"")).unwrap();
    assert_eq!(out.emitted.len(), 10);
    assert_eq!(out.refused, 990);
}

#[test]
fn huge_payloads_are_refused_both_ways() {
    let rt = runtime();
    let body = format!(
        "(call $emit (i32.const 64) (i32.const 4) (i32.const 0) (i32.const 0)
                     (i32.const 0) (i32.const 2097152) (i32.const 32)) {OK}"
    );
    let mut s = spec("huge");
    s.limits.max_payload = 1 << 20;
    let brane = rt
        .brane(&rt.load(&wat_brane(&body, "")).unwrap(), s, discard_logs())
        .unwrap();
    let out = brane.handle(&ev("x", b"")).unwrap();
    assert_eq!((out.emitted.len(), out.refused), (0, 1));
    let big = Event::external("e2", "x", vec![0; (1 << 20) + 1]);
    assert!(matches!(
        brane.handle(&big),
        Err(EventError::PayloadTooLarge { .. })
    ));
}

#[test]
fn undeclared_emit_types_are_refused() {
    let rt = runtime();
    let mut s = spec("ingest");
    s.emits = Some(vec!["other.type".into()]);
    let brane = rt
        .brane(&rt.load(&guest("ingest")).unwrap(), s, discard_logs())
        .unwrap();
    match brane.handle(&ev("tick", b"1")) {
        Err(EventError::Brane { message, .. }) => {
            assert!(message.contains("undeclared-type"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

fn probe(rt: &Runtime, grants: Grants) -> omega_runtime::Brane {
    let mut s = spec("probe");
    s.grants = grants;
    rt.brane(&rt.load(&guest("probe")).unwrap(), s, discard_logs())
        .unwrap()
}

fn denied(r: Result<omega_runtime::Outcome, EventError>) -> bool {
    matches!(r, Err(EventError::Brane { ref code, .. }) if code == "denied")
}

#[test]
fn files_sockets_env_are_denied_by_default() {
    let rt = runtime();
    let p = probe(&rt, Grants::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    assert!(denied(p.handle(&ev("read-file", b"/etc/hostname"))));
    assert!(denied(p.handle(&ev("write-file", b"/tmp/omega-probe"))));
    assert!(denied(p.handle(&ev("connect", addr.as_bytes()))));
    assert!(denied(p.handle(&ev("env", b"PATH"))));
    assert!(denied(
        p.handle(&ev("http-get", format!("http://{addr}/").as_bytes()))
    ));
}

#[test]
fn granted_dirs_and_env_are_reachable_read_only_is_enforced() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), b"hello").unwrap();
    let ro = Grants {
        dirs: vec![DirGrant {
            host: dir.path().into(),
            guest: "/data".into(),
            writable: false,
        }],
        env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        ..Grants::default()
    };
    let p = probe(&rt, ro.clone());
    let out = p.handle(&ev("read-file", b"/data/in.txt")).unwrap();
    assert_eq!(out.emitted[0].payload, b"hello");
    assert!(denied(p.handle(&ev("write-file", b"/data/out.txt"))));
    assert!(denied(p.handle(&ev("read-file", b"/etc/hostname"))));
    assert_eq!(
        p.handle(&ev("env", b"GREETING")).unwrap().emitted[0].payload,
        b"hi"
    );
    let mut rw = ro;
    rw.dirs[0].writable = true;
    let p = probe(&rt, rw);
    p.handle(&ev("write-file", b"/data/out.txt")).unwrap();
    assert_eq!(std::fs::read(dir.path().join("out.txt")).unwrap(), b"probe");
}

/// A one-shot HTTP server on 127.0.0.1 answering `hi`; returns its address
/// and how many requests it saw.
fn local_http() -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicU32::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            seen.fetch_add(1, Ordering::SeqCst);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
        }
    });
    (addr, hits)
}

#[test]
fn outbound_http_follows_the_allow_list() {
    let rt = runtime();
    let (addr, hits) = local_http();
    let url = format!("http://{addr}/x");
    let p = probe(&rt, Grants::default());
    assert!(denied(p.handle(&ev("http-get", url.as_bytes()))));
    let other = probe(
        &rt,
        Grants {
            http_hosts: vec!["example.invalid".into()],
            ..Grants::default()
        },
    );
    assert!(denied(other.handle(&ev("http-get", url.as_bytes()))));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let allowed = probe(
        &rt,
        Grants {
            http_hosts: vec![addr.clone()],
            ..Grants::default()
        },
    );
    let out = allowed.handle(&ev("http-get", url.as_bytes())).unwrap();
    assert_eq!(out.emitted[0].payload, b"hi");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn keep_warm_keeps_state_per_event_does_not() {
    let rt = runtime();
    // Each call bumps a global counter and emits it as one byte.
    let extra = "(global $n (mut i32) (i32.const 0))";
    let body = format!(
        "(global.set $n (i32.add (global.get $n) (i32.const 1)))
         (i32.store8 (i32.const 100) (global.get $n))
         (call $emit (i32.const 64) (i32.const 4) (i32.const 0) (i32.const 0)
                     (i32.const 100) (i32.const 1) (i32.const 32)) {OK}"
    );
    let image = rt.load(&wat_brane(&body, extra)).unwrap();
    let counts = |mode| {
        let mut s = spec("counter");
        s.mode = mode;
        let b = rt.brane(&image, s, discard_logs()).unwrap();
        (0..3)
            .map(|_| b.handle(&ev("x", b"")).unwrap().emitted[0].payload[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(InstanceMode::PerEvent), vec![1, 1, 1]);
    assert_eq!(counts(InstanceMode::KeepWarm), vec![1, 2, 3]);
}

#[test]
fn a_thousand_concurrent_events_are_bounded_by_the_pool() {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let brane = rt
        .brane(
            &rt.load(&guest("ingest")).unwrap(),
            spec("ingest"),
            discard_logs(),
        )
        .unwrap();
    let (ok, busy) = (AtomicU32::new(0), AtomicU32::new(0));
    std::thread::scope(|s| {
        for t in 0..16 {
            let (brane, ok, busy) = (&brane, &ok, &busy);
            s.spawn(move || {
                for i in 0..(1000 / 16 + 1) {
                    if t * 63 + i >= 1000 {
                        break;
                    }
                    let e = ev("tick", b"1,2");
                    if t % 4 == 0 {
                        // try_handle never waits: it is refused when full.
                        match brane.try_handle(&e) {
                            Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(EventError::Busy(4)) => busy.fetch_add(1, Ordering::SeqCst),
                            Err(other) => panic!("{other:?}"),
                        };
                    } else {
                        brane.handle(&e).expect("waits for a slot, never fails");
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(
        ok.load(Ordering::SeqCst) + busy.load(Ordering::SeqCst),
        1000
    );
    // The bound, measured: at most four instances ran at once, and a busy
    // refusal came only while all four were taken.
    let peak = rt.peak_slots();
    assert!((1..=4).contains(&peak), "peak {peak}");
    if busy.load(Ordering::SeqCst) > 0 {
        assert_eq!(peak, 4, "refused as busy before the pool was full");
    }
    assert_eq!(rt.free_slots(), 4);
}

#[test]
fn core_modules_and_garbage_are_refused() {
    let rt = runtime();
    let core = wat::parse_str("(module)").unwrap();
    assert!(matches!(rt.load(&core), Err(RuntimeError::NotComponent(m)) if m.contains("core")));
    assert!(matches!(
        rt.load(b"hello"),
        Err(RuntimeError::NotComponent(_))
    ));
    let mut truncated = guest("ingest");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(rt.load(&truncated), Err(RuntimeError::Compile(_))));
}

#[test]
fn a_brane_must_fit_the_world() {
    let rt = runtime();
    let image = rt.load(&guest("hello-http")).unwrap();
    assert!(matches!(
        rt.brane(&image, spec("h"), discard_logs()),
        Err(RuntimeError::World { .. })
    ));
    let mut s = spec("big");
    s.limits = BraneLimits {
        memory_bytes: u64::MAX,
        ..BraneLimits::default()
    };
    assert!(matches!(
        rt.brane(&rt.load(&guest("ingest")).unwrap(), s, discard_logs()),
        Err(RuntimeError::LimitTooHigh { .. })
    ));
}

#[test]
fn example_pipeline_runs_end_to_end_in_memory() {
    let rt = runtime();
    let out = tempfile::tempdir().unwrap();
    let edges = vec![
        Edge {
            from: "ingest".into(),
            to: "transform".into(),
            on: "raw.batch".into(),
        },
        Edge {
            from: "transform".into(),
            to: "archive".into(),
            on: "tensor.shard".into(),
        },
    ];
    let mut p = Pipeline::new(edges.clone(), 100);
    for name in ["ingest", "transform", "archive"] {
        let mut s = spec(name);
        s.emits = Some(omega_runtime::emits_of(&edges, name));
        if name == "archive" {
            s.grants.dirs.push(DirGrant {
                host: out.path().into(),
                guest: "/archive".into(),
                writable: true,
            });
        }
        p.add(
            rt.brane(&rt.load(&guest(name)).unwrap(), s, discard_logs())
                .unwrap(),
        );
    }
    let report = p.inject("ingest", ev("tick", b"1,2,3"), &mut |_| {});
    assert_eq!(report.failures(), 0, "{report:?}");
    let order: Vec<_> = report.deliveries.iter().map(|d| d.brane.as_str()).collect();
    assert_eq!(order, ["ingest", "transform", "archive"]);
    let written = std::fs::read(out.path().join("e1_0_0.bin")).unwrap();
    assert_eq!(written.len(), 12);
    assert_eq!(f32::from_le_bytes(written[8..12].try_into().unwrap()), 6.0);
}

/// A router that answers every call with `called MANIFEST/BRANE PATH` and
/// records who called.
struct Echo(std::sync::Mutex<Vec<String>>);

impl omega_runtime::BraneCalls for Echo {
    fn call(
        &self,
        manifest: &str,
        caller: &str,
        target: omega_runtime::CallTarget,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> omega_runtime::CallFuture {
        use http_body_util::BodyExt;
        self.0
            .lock()
            .unwrap()
            .push(format!("{manifest}/{caller} -> {target}"));
        let text = format!("called {target} {}", request.uri().path());
        Box::pin(async move {
            Ok(http::Response::new(
                http_body_util::Full::new(hyper::body::Bytes::from(text))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ))
        })
    }
}

#[test]
fn brane_calls_by_name_follow_the_call_grants() {
    let rt = runtime();
    let echo = Arc::new(Echo(Default::default()));
    let logs = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = logs.clone();
    let sink: omega_runtime::LogSink = Arc::new(move |_, _, msg: &str| {
        seen.lock().unwrap().push(msg.to_owned());
    });
    let probe_with = |calls: &[&str], router: bool| {
        let mut s = spec("probe");
        s.manifest = "shop".into();
        s.grants.calls = calls.iter().map(|c| c.to_string()).collect();
        s.router = router.then(|| omega_runtime::CallRouter(echo.clone()));
        rt.brane(&rt.load(&guest("probe")).unwrap(), s, sink.clone())
            .unwrap()
    };
    let get = |b: &omega_runtime::Brane, url: &str| b.handle(&ev("http-get", url.as_bytes()));

    let granted = probe_with(&["api", "billing/invoices"], true);
    let out = get(&granted, "http://api.brane/v1").unwrap();
    assert_eq!(out.emitted[0].payload, b"called shop/api /v1");
    let out = get(&granted, "http://invoices.billing.brane/").unwrap();
    assert_eq!(out.emitted[0].payload, b"called billing/invoices /");
    assert_eq!(
        *echo.0.lock().unwrap(),
        ["shop/probe -> shop/api", "shop/probe -> billing/invoices"]
    );

    // Not granted: refused before the router, with the missing grant named.
    assert!(denied(get(&granted, "http://admin.brane/")));
    assert!(denied(get(&granted, "http://api.other.brane/")));
    assert_eq!(echo.0.lock().unwrap().len(), 2);
    let said = logs.lock().unwrap().join("\n");
    assert!(
        said.contains("call to brane `admin` refused: brane `probe` is not granted it (add `call = [\"admin\"]` to [brane.probe.grants])"),
        "{said}"
    );
    assert!(said.contains("add `call = [\"other/api\"]`"), "{said}");

    // Granted, but nothing routes calls (`omega run`): refused and said so.
    let alone = probe_with(&["api"], false);
    assert!(denied(get(&alone, "http://api.brane/")));
    assert!(
        logs.lock()
            .unwrap()
            .last()
            .unwrap()
            .contains("nothing routes brane calls here")
    );
    // A `.brane` host is never looked up or dialed, even when allow-listed.
    let mut s = spec("probe");
    s.grants.http_hosts = vec!["api.brane".into()];
    let listed = rt
        .brane(&rt.load(&guest("probe")).unwrap(), s, sink.clone())
        .unwrap();
    assert!(denied(get(&listed, "http://api.brane/")));
}
