//! The Firecracker backend: request conformance against the API's swagger
//! description (always), and the driver against the real binary (when
//! `FIRECRACKER_BIN` names one; skipped with a message otherwise).

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "../../testing/prereq.rs"]
mod prereq;

use omega_runtime::frontier::firecracker::{
    self, API_SOCK, Firecracker, FirecrackerConfig, LOG_FILE, PID_FILE, api, guest,
};
use omega_runtime::frontier::{Backend, FrontierError, VmSpec};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------- YAML

/// Load a YAML document into JSON values (scalars: plain ones typed as
/// YAML 1.2 core; quoted ones strings). Enough for the swagger file.
fn yaml_to_json(text: &str) -> Value {
    use saphyr_parser::{Event, Parser, ScalarStyle};
    enum Frame {
        Seq(Vec<Value>),
        Map(Map<String, Value>, Option<String>),
    }
    fn scalar(s: &str, style: ScalarStyle) -> Value {
        if style != ScalarStyle::Plain {
            return Value::String(s.to_string());
        }
        match s {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" | "~" | "" => Value::Null,
            _ => s
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| s.parse::<f64>().map(Value::from))
                .unwrap_or_else(|_| Value::String(s.to_string())),
        }
    }
    fn push(stack: &mut [Frame], root: &mut Option<Value>, v: Value) {
        match stack.last_mut() {
            None => *root = Some(v),
            Some(Frame::Seq(items)) => items.push(v),
            Some(Frame::Map(map, key)) => match key.take() {
                None => {
                    *key = Some(
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                }
                Some(k) => {
                    map.insert(k, v);
                }
            },
        }
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = None;
    for ev in Parser::new_from_str(text) {
        let (ev, _) = ev.unwrap();
        match ev {
            Event::Scalar(s, style, _, _) => push(&mut stack, &mut root, scalar(&s, style)),
            Event::SequenceStart(..) => stack.push(Frame::Seq(Vec::new())),
            Event::MappingStart(..) => stack.push(Frame::Map(Map::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let v = match stack.pop().unwrap() {
                    Frame::Seq(items) => Value::Array(items),
                    Frame::Map(map, _) => Value::Object(map),
                };
                push(&mut stack, &mut root, v);
            }
            Event::Alias(_) => panic!("aliases are not used by the swagger file"),
            _ => {}
        }
    }
    root.unwrap()
}

fn swagger() -> Value {
    let path = std::env::var_os("FIRECRACKER_API_YAML")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/firecracker/firecracker.yaml")
        });
    yaml_to_json(&std::fs::read_to_string(&path).unwrap())
}

// ---------------------------------------------------------- validation

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/definitions/").unwrap();
            spec["definitions"]
                .get(name)
                .unwrap_or_else(|| panic!("dangling $ref {r}"))
        }
        None => schema,
    }
}

fn check(spec: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options
            .iter()
            .any(|o| o == v || (o.is_number() && v.as_str() == Some(&o.to_string())))
    {
        errors.push(format!("{at}: {v} not in {options:?}"));
    }
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object");
    match ty {
        "object" => {
            let Some(obj) = v.as_object() else {
                errors.push(format!("{at}: expected an object, got {v}"));
                return;
            };
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let req = req.as_str().unwrap();
                if !obj.contains_key(req) {
                    errors.push(format!("{at}: missing required `{req}`"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(p) => check(spec, p, val, &format!("{at}.{k}"), errors),
                    None => match extra {
                        Some(Value::Bool(true)) => {}
                        Some(s @ Value::Object(_)) => {
                            check(spec, s, val, &format!("{at}.{k}"), errors)
                        }
                        _ => errors.push(format!("{at}: unknown property `{k}`")),
                    },
                }
            }
        }
        "string" if !v.is_string() => errors.push(format!("{at}: expected a string, got {v}")),
        "boolean" if !v.is_boolean() => errors.push(format!("{at}: expected a boolean, got {v}")),
        "integer" => match v.as_i64() {
            None => errors.push(format!("{at}: expected an integer, got {v}")),
            Some(n) => {
                if let Some(min) = schema.get("minimum").and_then(Value::as_i64)
                    && n < min
                {
                    errors.push(format!("{at}: {n} < minimum {min}"));
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_i64)
                    && n > max
                {
                    errors.push(format!("{at}: {n} > maximum {max}"));
                }
            }
        },
        "array" => match v.as_array() {
            None => errors.push(format!("{at}: expected an array, got {v}")),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(spec, &schema["items"], item, &format!("{at}[{i}]"), errors);
                }
            }
        },
        _ => {}
    }
}

/// Every way `req` breaks the API description (empty: conforms).
fn violations(spec: &Value, req: &api::ApiRequest) -> Vec<String> {
    let segments: Vec<&str> = req.path.split('/').collect();
    let template = spec["paths"].as_object().unwrap().iter().find(|(tpl, _)| {
        let t: Vec<&str> = tpl.split('/').collect();
        t.len() == segments.len()
            && t.iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
    });
    let Some((_, ops)) = template else {
        return vec![format!("no path matches {}", req.path)];
    };
    let method = req.method.as_str().to_ascii_lowercase();
    let Some(op) = ops.get(&method) else {
        return vec![format!(
            "{} is not allowed on {}",
            req.method.as_str(),
            req.path
        )];
    };
    let body_param = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p["in"] == "body");
    let mut errors = Vec::new();
    match (body_param, &req.body) {
        (None, None) => {}
        (None, Some(_)) => errors.push(format!("{} takes no body", req.what())),
        (Some(p), None) if p["required"] == true => {
            errors.push(format!("{} needs a body", req.what()))
        }
        (Some(_), None) => {}
        (Some(p), Some(body)) => check(spec, &p["schema"], body, &req.what(), &mut errors),
    }
    errors
}

fn assert_conforms(spec: &Value, reqs: &[api::ApiRequest]) {
    let errors: Vec<String> = reqs.iter().flat_map(|r| violations(spec, r)).collect();
    assert!(
        errors.is_empty(),
        "requests break firecracker.yaml:\n{}",
        errors.join("\n")
    );
}

fn every_builder() -> Vec<api::ApiRequest> {
    let plan = api::BootPlan {
        vcpus: 2,
        memory_mib: 256,
        kernel: "/k/vmlinux".into(),
        initrd: Some("/k/initrd".into()),
        cmdline: "console=ttyS0 reboot=k panic=1".into(),
        drives: vec![
            ("rootfs".into(), "/k/root.ext4".into(), true, false),
            ("data".into(), "/k/d".into(), false, true),
        ],
        taps: vec![
            (
                "eth0".into(),
                "tap0".into(),
                Some("06:00:AC:10:00:02".into()),
            ),
            ("eth1".into(), "tap1".into(), None),
        ],
        vsock: Some((3, "/r/vsock.sock".into())),
        metrics: Some("/r/metrics.json".into()),
        track_dirty_pages: true,
    };
    let mut reqs = api::configure(&plan);
    reqs.extend(api::configure(&api::BootPlan {
        vcpus: 1,
        memory_mib: 16,
        kernel: "/k".into(),
        ..Default::default()
    }));
    reqs.extend([
        api::describe_instance(),
        api::logger("/r/firecracker.log", "Debug"),
        api::action(api::Action::InstanceStart),
        api::action(api::Action::SendCtrlAltDel),
        api::action(api::Action::FlushMetrics),
        api::vm_state(api::VmState::Paused),
        api::vm_state(api::VmState::Resumed),
        api::snapshot_create("/r/snap", "/r/mem", api::SnapshotType::Full),
        api::snapshot_create("/r/snap", "/r/mem", api::SnapshotType::Diff),
        api::snapshot_load("/r/snap", "/r/mem", true, Some("/r/vsock.sock")),
        api::snapshot_load("/r/snap", "/r/mem", false, None),
    ]);
    reqs
}

#[test]
fn every_request_body_conforms_to_the_api_description() {
    let spec = swagger();
    let reqs = every_builder();
    // Every endpoint family the driver uses is covered.
    for path in [
        "/machine-config",
        "/boot-source",
        "/drives/rootfs",
        "/network-interfaces/eth0",
        "/vsock",
        "/logger",
        "/metrics",
        "/actions",
        "/vm",
        "/snapshot/create",
        "/snapshot/load",
        "/",
    ] {
        assert!(reqs.iter().any(|r| r.path == path), "no request to {path}");
    }
    assert_conforms(&spec, &reqs);
}

#[test]
fn the_validator_catches_bad_bodies() {
    let spec = swagger();
    let bad = |method, path: &str, body: Value| api::ApiRequest {
        method,
        path: path.into(),
        body: Some(body),
    };
    use api::Method::{Patch, Put};
    let cases = [
        (
            bad(Put, "/machine-config", json!({"vcpu_count": 1})),
            "missing required `mem_size_mib`",
        ),
        (
            bad(
                Put,
                "/machine-config",
                json!({"vcpu_count": 1, "mem_size_mib": 1, "cpus": 1}),
            ),
            "unknown property `cpus`",
        ),
        (
            bad(
                Put,
                "/machine-config",
                json!({"vcpu_count": "1", "mem_size_mib": 1}),
            ),
            "expected an integer",
        ),
        (
            bad(
                Put,
                "/machine-config",
                json!({"vcpu_count": 0, "mem_size_mib": 1}),
            ),
            "minimum",
        ),
        (
            bad(Put, "/actions", json!({"action_type": "Reboot"})),
            "not in",
        ),
        (
            bad(Patch, "/boot-source", json!({"kernel_image_path": "/k"})),
            "not allowed",
        ),
        (bad(Put, "/nope", json!({})), "no path matches"),
        (
            bad(
                Put,
                "/drives/x",
                json!({"drive_id": "x", "is_root_device": "yes"}),
            ),
            "expected a boolean",
        ),
    ];
    for (req, want) in cases {
        let errors = violations(&spec, &req);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{} {:?}: wanted {want:?}, got {errors:?}",
            req.what(),
            req.body
        );
    }
}

// ------------------------------------------------------- real binary

fn fc_bin() -> Option<PathBuf> {
    match std::env::var_os("FIRECRACKER_BIN").map(PathBuf::from) {
        Some(p) if p.is_file() => {
            if std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_err()
            {
                prereq::hardware("/dev/kvm is not usable here");
                return None;
            }
            Some(p)
        }
        Some(p) => {
            prereq::missing(&format!("FIRECRACKER_BIN={} is not a file", p.display()));
            None
        }
        None => {
            prereq::missing(
                "FIRECRACKER_BIN is unset (scripts/test finds shared/tools/firecracker; or point it at a firecracker binary)",
            );
            None
        }
    }
}

fn backend(run_root: &Path) -> Option<Firecracker> {
    let bin = fc_bin()?;
    Some(Firecracker::new(FirecrackerConfig::new(bin, run_root)))
}

const T: Duration = Duration::from_secs(20);

fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn minimal_guest_boots_writes_its_marker_and_resets() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let (mut m, to_marker) = fc
        .boot_minimal("boot", b"OMEGA-MARKER-42\n", guest::Ending::Reset, T)
        .unwrap();
    let pid = m.pid();
    let run_dir = m.run_dir().to_path_buf();
    assert!(run_dir.join(API_SOCK).exists() || m.try_exit().is_some());
    assert!(run_dir.join(PID_FILE).is_file());
    assert!(to_marker < T);
    let serial = String::from_utf8_lossy(&m.serial()).into_owned();
    assert!(serial.contains("OMEGA-MARKER-42"), "{serial}");
    // The keyboard-controller reset makes Firecracker exit cleanly.
    let status = m
        .wait_exit(T)
        .expect("firecracker exits after the guest resets");
    assert!(status.success(), "{status}");
    // Every request the driver actually sent conforms.
    assert_conforms(&swagger(), m.sent_requests());
    let log = std::fs::read_to_string(run_dir.join(LOG_FILE)).unwrap();
    assert!(log.contains("Running Firecracker"), "{log}");
    m.stop(Duration::ZERO).unwrap();
    assert!(!run_dir.exists());
    assert!(is_gone(pid));
    assert!(empty_dir(root.path()));
}

#[test]
fn pause_resume_snapshot_restore_and_stop() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let (mut m, _) = fc
        .boot_minimal("halt", b"HALTED-GUEST\n", guest::Ending::Halt, T)
        .unwrap();
    assert_eq!(m.state().unwrap(), "Running");
    m.pause().unwrap();
    assert_eq!(m.state().unwrap(), "Paused");
    m.resume().unwrap();
    assert_eq!(m.state().unwrap(), "Running");
    let (state, memory) = m.snapshot().unwrap();
    assert!(state.is_file() && memory.is_file());
    assert_eq!(m.state().unwrap(), "Paused");
    // Restore into a fresh VMM.
    let mut r = fc.spawn("restored").unwrap();
    match r.restore(&state, &memory, true) {
        Ok(()) => assert_eq!(r.state().unwrap(), "Running"),
        // A software KVM may lack what restoring needs: the VMM's own
        // message must come through.
        Err(FrontierError::Refused { what, message, .. }) => {
            assert_eq!(what, "PUT /snapshot/load");
            assert!(!message.is_empty());
            eprintln!("snapshot restore refused here: {message}");
        }
        Err(e) => panic!("restore: {e}"),
    }
    assert_conforms(&swagger(), r.sent_requests());
    let (rpid, rdir) = (r.pid(), r.run_dir().to_path_buf());
    r.stop(Duration::ZERO).unwrap();
    assert!(is_gone(rpid) && !rdir.exists());
    m.resume().unwrap();
    // Ctrl+Alt+Del is delivered (this guest ignores it); stop then kills.
    m.ctrl_alt_del().unwrap();
    assert_conforms(&swagger(), m.sent_requests());
    let (pid, dir) = (m.pid(), m.run_dir().to_path_buf());
    m.stop(Duration::from_millis(200)).unwrap();
    assert!(is_gone(pid) && !dir.exists());
    assert!(empty_dir(root.path()));
}

#[test]
fn bad_kernel_path_surfaces_fault_message() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let mut m = fc.spawn("badkernel").unwrap();
    let err = m
        .request(api::boot_source("/nonexistent/vmlinux", None, ""))
        .unwrap_err();
    match &err {
        FrontierError::Refused {
            backend,
            what,
            message,
        } => {
            assert_eq!(backend, "firecracker");
            assert_eq!(what, "PUT /boot-source");
            assert!(message.contains("kernel"), "{message}");
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains("PUT /boot-source"));
    // Starting without a kernel is refused too.
    let err = m.start().unwrap_err();
    assert!(
        matches!(&err, FrontierError::Refused { what, .. } if what == "PUT /actions"),
        "{err:?}"
    );
    drop(m);
    assert!(empty_dir(root.path()));
}

#[test]
fn garbage_kernel_is_refused_by_boot() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let kernel = root.path().join("not-a-kernel");
    std::fs::write(&kernel, b"this is not an ELF file").unwrap();
    let spec = spec_for(&kernel, Duration::from_secs(5));
    let err = fc.boot(&spec).err().expect("boot must fail");
    match &err {
        FrontierError::Refused { what, message, .. } => {
            assert!(what.starts_with("PUT /"), "{what}");
            assert!(!message.is_empty());
        }
        e => panic!("unexpected {e:?}"),
    }
    std::fs::remove_file(&kernel).unwrap();
    assert!(empty_dir(root.path()));
}

#[test]
fn bad_machine_config_surfaces_fault_message() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let mut m = fc.spawn("badcfg").unwrap();
    let err = m.request(api::machine_config(0, 128, false)).unwrap_err();
    match &err {
        FrontierError::Refused { what, message, .. } => {
            assert_eq!(what, "PUT /machine-config");
            assert!(message.contains("vCPU"), "{message}");
        }
        e => panic!("unexpected {e:?}"),
    }
    // Absurd memory: refused at configuration or at start, never a panic.
    let kernel = m.run_dir().join("guest.elf");
    guest::write(&kernel, b"never\n", guest::Ending::Reset).unwrap();
    let plan = api::BootPlan {
        vcpus: 1,
        memory_mib: u32::MAX,
        kernel: m.stage(&kernel, "g").unwrap(),
        ..Default::default()
    };
    let result = m.configure(&plan).and_then(|()| m.start());
    match result {
        Err(FrontierError::Refused { message, .. }) => assert!(!message.is_empty()),
        Err(FrontierError::Exited { .. }) => {}
        other => panic!("absurd memory was accepted: {other:?}"),
    }
    drop(m);
    assert!(empty_dir(root.path()));
}

#[test]
fn killed_vmm_is_reported_as_exited_and_cleaned_up() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let (mut m, _) = fc
        .boot_minimal("crash", b"ALIVE\n", guest::Ending::Halt, T)
        .unwrap();
    let pid = m.pid();
    assert!(!is_gone(pid));
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let status = m.wait_exit(T).expect("the killed VMM is seen exiting");
    assert!(!status.success());
    let err = m.state().unwrap_err();
    assert!(
        matches!(&err, FrontierError::Exited { status, .. } if status.contains('9')),
        "{err:?}"
    );
    let dir = m.run_dir().to_path_buf();
    m.stop(Duration::ZERO).unwrap();
    assert!(is_gone(pid) && !dir.exists());
}

#[test]
fn dropping_a_running_machine_kills_and_removes_it() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let (m, _) = fc
        .boot_minimal("drop", b"UP\n", guest::Ending::Halt, T)
        .unwrap();
    let pid = m.pid();
    drop(m);
    assert!(is_gone(pid));
    assert!(empty_dir(root.path()));
}

#[test]
fn reclaim_kills_orphaned_vmm_and_removes_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let Some(bin) = fc_bin() else { return };
    // What a crashed node leaves: a run directory with a live VMM.
    let dir = root.path().join("fc-orphan-1-0");
    std::fs::create_dir(&dir).unwrap();
    let sock = dir.join(API_SOCK);
    let mut child = Command::new(&bin)
        .arg("--api-sock")
        .arg(&sock)
        .arg("--log-path")
        .arg(dir.join(LOG_FILE))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::File::create(dir.join(LOG_FILE)).unwrap();
    std::fs::write(dir.join(PID_FILE), child.id().to_string()).unwrap();
    for _ in 0..1000 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!is_gone(child.id()));
    // A live machine of this process in the same root is left alone.
    let fc = Firecracker::new(FirecrackerConfig::new(&bin, root.path()));
    let live = fc.spawn("live").unwrap();
    assert_eq!(firecracker::reclaim(root.path()).unwrap(), 1);
    assert!(is_gone(child.id()));
    // Already reaped by reclaim (it was our child): this returns at once.
    let _ = child.wait();
    assert!(!dir.exists());
    assert!(live.run_dir().exists());
    drop(live);
    assert!(empty_dir(root.path()));
}

fn spec_for(kernel: &Path, boot_timeout: Duration) -> VmSpec {
    VmSpec {
        name: "spec".into(),
        kernel: kernel.to_path_buf(),
        initrd: None,
        rootfs: None,
        cmdline: String::new(),
        vcpus: 1,
        memory_mib: 16,
        max_disk_bytes: 1 << 20,
        boot_timeout,
        event_timeout: Duration::from_secs(1),
        workload: vec![],
        emits: vec![],
    }
}

#[test]
fn boot_without_an_agent_times_out_on_vsock_and_cleans_up() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let kernel_dir = tempfile::tempdir().unwrap();
    let kernel = kernel_dir.path().join("halt.elf");
    guest::write(&kernel, b"no agent here\n", guest::Ending::Halt).unwrap();
    let err = fc
        .boot(&spec_for(&kernel, Duration::from_millis(800)))
        .err()
        .expect("no agent");
    match &err {
        FrontierError::BootTimeout { serial, .. } => {
            assert!(serial.contains("vsock port 1024"), "{serial}")
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(empty_dir(root.path()));
    // Spec errors come before anything starts.
    let mut bad = spec_for(&kernel, Duration::from_secs(1));
    bad.vcpus = 0;
    assert!(matches!(fc.boot(&bad), Err(FrontierError::Spec(_))));
    bad = spec_for(&kernel_dir.path().join("missing"), Duration::from_secs(1));
    assert!(matches!(fc.boot(&bad), Err(FrontierError::Spec(_))));
}

#[test]
fn probe_boots_the_minimal_guest_and_reports_honestly() {
    let root = tempfile::tempdir().unwrap();
    let Some(fc) = backend(root.path()) else {
        return;
    };
    let report = fc.probe(T);
    eprintln!("probe: {report:?}");
    assert_eq!(report.backend, "firecracker");
    assert!(
        report.reason.contains("InstanceStart→serial marker"),
        "{}",
        report.reason
    );
    // No agent guest is configured: frontier branes cannot be vouched for.
    assert!(!report.usable);
    assert!(empty_dir(root.path()));
}
