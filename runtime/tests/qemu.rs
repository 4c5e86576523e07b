//! The QEMU frontier backend: a real Linux guest (host kernel + busybox +
//! the static omega-agent) under TCG, an event round trip, hostile
//! workloads contained, a silent agent killed, cleanup after a crash and
//! orphan reclaim; GPU passthrough configuration and refusal on a fake
//! sysfs tree. The boot tests skip with a message when
//! `qemu-system-x86_64` is absent.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use omega_runtime::frontier::gpu::{GpuAssignment, select_passthrough};
use omega_runtime::frontier::image::{GuestBuild, build_guest, host_kernel, open_guest_dir};
use omega_runtime::frontier::qemu::{Accel, QemuBackend, QemuConfig, QemuVm};
use omega_runtime::frontier::{Backend, FrontierError, Vm, VmSpec, reclaim_orphans};
use omega_runtime::{Event, EventError, Pipeline, TrapKind};

#[path = "../../testing/prereq.rs"]
mod prereq;
#[path = "common/frontier.rs"]
mod support;

/// The test guest (built once): `/workload/shard-stats.sh` and
/// `/workload/hostile.sh`.
fn guest_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        support::qemu()?;
        let busybox = support::busybox()?;
        let kernel = host_kernel().or_else(|| {
            prereq::missing("no readable /boot/vmlinuz-* (apt-get install linux-image-amd64)");
            None
        })?;
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("frontier-guest");
        build_guest(
            &GuestBuild {
                kernel,
                agent: support::static_agent().to_path_buf(),
                busybox: Some(busybox),
                workloads: vec![
                    support::repo().join("examples/frontier/shard-stats.sh"),
                    support::repo().join("runtime/tests/frontier/hostile.sh"),
                ],
                include: vec![],
                modules: vsock_modules(),
                cmdline: String::new(),
            },
            &out,
        )
        .unwrap();
        Some(out)
    })
    .as_deref()
}

/// The host's vsock modules (the guest agent loads them at boot), if the
/// host kernel's modules are installed.
fn vsock_modules() -> Vec<PathBuf> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = Path::new("/lib/modules")
        .join(release.trim())
        .join("kernel/net/vmw_vsock");
    let mods: Vec<PathBuf> = [
        "vsock.ko",
        "vmw_vsock_virtio_transport_common.ko",
        "vmw_vsock_virtio_transport.ko",
    ]
    .iter()
    .map(|m| dir.join(m))
    .collect();
    if mods.iter().all(|m| m.is_file()) {
        mods
    } else {
        Vec::new()
    }
}

fn backend(run_root: &Path) -> QemuBackend {
    QemuBackend::new(QemuConfig {
        accel: Accel::Tcg,
        run_root: run_root.to_path_buf(),
        event_grace: Duration::from_secs(3),
        max_payload: 64 << 10,
        ..QemuConfig::default()
    })
}

fn spec(name: &str, workload: &str, emits: &[&str]) -> VmSpec {
    let g = open_guest_dir(guest_dir().unwrap()).unwrap();
    VmSpec {
        name: name.into(),
        kernel: g.kernel,
        initrd: Some(g.initrd),
        rootfs: None,
        cmdline: String::new(),
        vcpus: 1,
        memory_mib: 256,
        max_disk_bytes: 0,
        boot_timeout: Duration::from_secs(240),
        event_timeout: Duration::from_secs(4),
        workload: vec![format!("/workload/{workload}")],
        emits: emits.iter().map(|s| s.to_string()).collect(),
    }
}

fn boot(b: &QemuBackend, s: &VmSpec) -> QemuVm {
    b.boot_vm(s, None)
        .unwrap_or_else(|e| panic!("boot failed: {e}"))
}

fn ev(id: &str, payload: &str) -> Event {
    Event::external(id, "in", payload.as_bytes().to_vec())
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

#[test]
fn linux_guest_boots_and_round_trips_events() {
    if guest_dir().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let mut vm = boot(&b, &spec("stats", "shard-stats.sh", &["shard.stats"]));
    assert!(vm.agent().starts_with("omega-agent"));
    assert_eq!(vm.status().unwrap(), "running");
    let run_dir = vm.run_dir().to_path_buf();
    assert!(run_dir.join("console.log").is_file());
    for i in 0..3 {
        let shard: Vec<u8> = (0..4 + i).flat_map(|x| (x as f32).to_le_bytes()).collect();
        let event = Event {
            source: "transform".into(),
            ..Event::external(format!("e{i}"), "tensor.shard", shard)
        };
        let out = vm.handle(&event).unwrap();
        assert_eq!(out.emitted.len(), 1, "{out:?}");
        assert_eq!(out.emitted[0].ty, "shard.stats");
        let text = String::from_utf8(out.emitted[0].payload.clone()).unwrap();
        assert!(
            text.starts_with(&format!("bytes={} floats={}", 16 + 4 * i, 4 + i)),
            "{text}"
        );
    }
    Box::new(vm).shutdown().unwrap();
    assert!(!run_dir.exists(), "run dir left behind");
}

#[test]
fn hostile_workloads_are_contained() {
    if guest_dir().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let mut vm = boot(&b, &spec("hostile", "hostile.sh", &["out"]));
    let ok = |vm: &mut QemuVm, id: &str| {
        let out = vm.handle(&ev(id, "hi")).unwrap();
        assert_eq!(out.emitted[0].payload, b"echo:hi");
    };
    ok(&mut vm, "a");
    // Silent: the agent kills the workload at the per-event timeout.
    let err = vm.handle(&ev("b", "silent")).unwrap_err();
    assert!(
        matches!(
            err,
            EventError::Trap {
                kind: TrapKind::Timeout,
                ..
            }
        ),
        "{err}"
    );
    ok(&mut vm, "c");
    // Floods: cut, killed, and the next event works.
    for (id, what) in [("d", "flood"), ("e", "flood-emits"), ("f", "bigline")] {
        let err = vm.handle(&ev(id, what)).unwrap_err();
        assert!(
            err.to_string().contains("output over limit"),
            "{what}: {err}"
        );
        ok(&mut vm, &format!("{id}2"));
    }
    // Crash: an error, then restarted.
    let err = vm.handle(&ev("g", "crash")).unwrap_err();
    assert!(err.to_string().contains("exited before answering"), "{err}");
    ok(&mut vm, "h");
    // Type rules: an undeclared type is refused, the declared one passes.
    let out = vm.handle(&ev("i", "undeclared")).unwrap();
    assert_eq!((out.emitted.len(), out.refused), (1, 1));
    // A workload error is the brane's error.
    let err = vm.handle(&ev("j", "fail")).unwrap_err();
    assert_eq!(
        err,
        EventError::Brane {
            code: "bad-input".into(),
            message: "asked to fail".into()
        }
    );
    // Modules listed at build time are loaded by the agent at boot.
    if !vsock_modules().is_empty() {
        let out = vm.handle(&ev("m", "vsock")).unwrap();
        assert_eq!(out.emitted[0].payload, b"vsock:yes");
        let console = std::fs::read_to_string(vm.run_dir().join("console.log")).unwrap();
        assert!(!console.contains("omega-agent: module"), "{console}");
    }
    // Oversized payloads never reach the guest.
    let big = Event::external("k", "in", vec![b'x'; 65 << 10]);
    assert!(matches!(
        vm.handle(&big),
        Err(EventError::PayloadTooLarge { .. })
    ));
    ok(&mut vm, "l");
}

#[test]
fn silent_agent_is_killed_and_reclaimed() {
    if guest_dir().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let b = QemuBackend::new(QemuConfig {
        event_grace: Duration::from_secs(1),
        ..backend(root.path()).config().clone()
    });
    let mut s = spec("hang", "hostile.sh", &["out"]);
    s.cmdline = "omega.agent.test=hang".into();
    s.event_timeout = Duration::from_secs(1);
    let mut vm = boot(&b, &s);
    let (pid, run_dir) = (vm.pid(), vm.run_dir().to_path_buf());
    let err = vm.handle(&ev("a", "hi")).unwrap_err();
    assert!(
        matches!(&err, EventError::Trap { kind: TrapKind::Timeout, message } if message.contains("VM killed")),
        "{err}"
    );
    assert!(!alive(pid), "qemu {pid} still running");
    assert!(!run_dir.exists());
    // The VM is dead for good.
    assert!(vm.handle(&ev("b", "hi")).is_err());
}

#[test]
fn cleanup_after_kill_9_and_orphan_reclaim() {
    if guest_dir().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    // kill -9 the VMM: Exited, run dir removed, events fail.
    let mut vm = boot(&b, &spec("victim", "hostile.sh", &["out"]));
    let run_dir = vm.run_dir().to_path_buf();
    let status = std::process::Command::new("kill")
        .args(["-9", &vm.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..500 {
        match vm.check() {
            Err(e) => {
                exited = Some(e);
                break;
            }
            Ok(()) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(
        matches!(exited, Some(FrontierError::Exited { .. })),
        "{exited:?}"
    );
    assert!(!run_dir.exists(), "run dir left after kill -9");
    assert!(vm.handle(&ev("a", "hi")).is_err());
    // A node that crashed leaves a running VM and its directory behind.
    let orphan = boot(&b, &spec("orphan", "hostile.sh", &["out"]));
    let (pid, dir) = (orphan.pid(), orphan.run_dir().to_path_buf());
    std::mem::forget(orphan);
    assert!(alive(pid));
    // Junk that is not a VM directory is left alone.
    std::fs::create_dir(root.path().join("not-a-vm")).unwrap();
    assert_eq!(reclaim_orphans(root.path()).unwrap(), 1);
    assert!(!alive(pid), "orphan qemu {pid} still running");
    assert!(!dir.exists());
    assert!(root.path().join("not-a-vm").exists());
    assert_eq!(reclaim_orphans(root.path()).unwrap(), 0);
}

#[test]
fn pipeline_carries_events_through_a_frontier_brane() {
    if guest_dir().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let edges = vec![omega_runtime::Edge {
        from: "stats".into(),
        to: "sink".into(),
        on: "shard.stats".into(),
    }];
    let emits = omega_runtime::emits_of(&edges, "stats");
    assert_eq!(emits, ["shard.stats"]);
    let vm = b
        .boot(&spec("stats", "shard-stats.sh", &["shard.stats"]))
        .unwrap();
    let mut p = Pipeline::new(edges, 100);
    p.add_frontier("stats", vm);
    let report = p.inject("stats", ev("e0", "abcd"), &mut |_| {});
    assert_eq!(report.failures(), 0, "{report:?}");
    assert_eq!(report.deliveries.len(), 1);
    assert_eq!(report.undelivered.len(), 1);
    assert_eq!(report.undelivered[0].0, "sink");
    assert_eq!(report.undelivered[0].1.source, "stats");
}

#[test]
fn tcg_probe_measures_a_boot() {
    if support::qemu().is_none() || host_kernel().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = backend(root.path()).probe(Duration::from_secs(240));
    assert_eq!(r.backend, "qemu-tcg");
    assert!(r.usable, "{}", r.reason);
    assert!(r.reason.contains(" ms"), "{}", r.reason);
    // A bound nothing meets is reported, not hung on.
    let r = backend(root.path()).probe(Duration::from_millis(1));
    assert!(
        !r.usable && r.reason.contains("did not finish"),
        "{}",
        r.reason
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn bad_specs_and_missing_binaries_are_typed_errors() {
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let mut s = VmSpec {
        name: "bad".into(),
        kernel: "/nonexistent/vmlinuz".into(),
        initrd: None,
        rootfs: None,
        cmdline: String::new(),
        vcpus: 1,
        memory_mib: 128,
        max_disk_bytes: 0,
        boot_timeout: Duration::from_secs(5),
        event_timeout: Duration::from_secs(1),
        workload: vec!["/w".into()],
        emits: vec![],
    };
    let err = b.boot_vm(&s, None).unwrap_err();
    assert!(err.to_string().contains("kernel"), "{err}");
    s.vcpus = 0;
    assert!(matches!(b.boot_vm(&s, None), Err(FrontierError::Spec(_))));
    s.vcpus = 1;
    s.kernel = std::env::current_exe().unwrap();
    let missing = QemuBackend::new(QemuConfig {
        binary: "/nonexistent/qemu".into(),
        ..b.config().clone()
    });
    assert!(matches!(
        missing.boot_vm(&s, None),
        Err(FrontierError::Binary { .. })
    ));
    assert!(!missing.probe(Duration::from_secs(1)).usable);
}

/// A fake sysfs: `gpus` are (address, group, driver); `others` share
/// groups as (address, group).
fn fake_sysfs(
    gpus: &[(&str, u32, &str)],
    others: &[(&str, u32)],
    iommu: bool,
) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let devs = t.path().join("bus/pci/devices");
    let groups = t.path().join("kernel/iommu_groups");
    std::fs::create_dir_all(&devs).unwrap();
    std::fs::create_dir_all(&groups).unwrap();
    let drivers = t.path().join("bus/pci/drivers");
    let add = |addr: &str, class: &str, group: u32, driver: &str| {
        let d = devs.join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
        let drv = drivers.join(driver);
        std::fs::create_dir_all(&drv).unwrap();
        std::os::unix::fs::symlink(&drv, d.join("driver")).unwrap();
        if iommu {
            let g = groups.join(group.to_string());
            std::fs::create_dir_all(g.join("devices")).unwrap();
            std::os::unix::fs::symlink(&g, d.join("iommu_group")).unwrap();
            std::os::unix::fs::symlink(&d, g.join("devices").join(addr)).unwrap();
        }
    };
    for (addr, group, driver) in gpus {
        add(addr, "0x030000", *group, driver);
    }
    for (addr, group) in others {
        add(addr, "0x040300", *group, "vfio-pci");
    }
    t
}

#[test]
fn gpu_passthrough_builds_vfio_argv_for_a_gpu_in_its_own_group() {
    // A GPU and its HDMI audio function, alone in group 12, on vfio-pci.
    let sys = fake_sysfs(
        &[("0000:01:00.0", 12, "vfio-pci")],
        &[("0000:01:00.1", 12)],
        true,
    );
    let a = select_passthrough(sys.path()).unwrap();
    assert_eq!(
        a,
        GpuAssignment {
            gpu: "0000:01:00.0".into(),
            iommu_group: 12,
            devices: vec!["0000:01:00.0".into(), "0000:01:00.1".into()],
        }
    );
    let root = tempfile::tempdir().unwrap();
    let s = VmSpec {
        name: "train".into(),
        kernel: "/boot/vmlinuz".into(),
        initrd: Some("/g/initramfs.cpio".into()),
        rootfs: None,
        cmdline: String::new(),
        vcpus: 2,
        memory_mib: 1024,
        max_disk_bytes: 0,
        boot_timeout: Duration::from_secs(5),
        event_timeout: Duration::from_secs(1),
        workload: vec!["/w".into()],
        emits: vec![],
    };
    let argv = backend(root.path()).argv(&s, Path::new("/run/vm"), Some(&a));
    let joined = argv.join(" ");
    assert!(
        joined.contains("-device vfio-pci,host=0000:01:00.0"),
        "{joined}"
    );
    assert!(
        joined.contains("-device vfio-pci,host=0000:01:00.1"),
        "{joined}"
    );
    assert!(joined.contains("-M q35"), "{joined}");
    assert!(
        joined.contains("-nic none") && joined.contains("-nodefaults"),
        "{joined}"
    );
    assert!(joined.contains("-smp 2 -m 1024"), "{joined}");
    assert!(
        joined.contains("-qmp unix:/run/vm/qmp.sock,server=on,wait=off"),
        "{joined}"
    );
    // Without a GPU: no vfio device.
    let argv = backend(root.path()).argv(&s, Path::new("/run/vm"), None);
    assert!(!argv.join(" ").contains("vfio"));
}

#[test]
fn gpu_passthrough_is_refused_with_the_reason() {
    let refusal = |sys: &tempfile::TempDir| select_passthrough(sys.path()).unwrap_err().to_string();
    // No GPU at all.
    let r = refusal(&fake_sysfs(&[], &[("0000:00:1f.3", 3)], true));
    assert!(r.contains("no GPU"), "{r}");
    // IOMMU off.
    let r = refusal(&fake_sysfs(&[("0000:01:00.0", 1, "vfio-pci")], &[], false));
    assert!(r.contains("IOMMU is off"), "{r}");
    // Shares its group with another device.
    let r = refusal(&fake_sysfs(
        &[("0000:01:00.0", 1, "vfio-pci")],
        &[("0000:00:1f.3", 1)],
        true,
    ));
    assert!(r.contains("shares IOMMU group 1 with 0000:00:1f.3"), "{r}");
    // Bound to the host driver.
    let r = refusal(&fake_sysfs(&[("0000:01:00.0", 1, "nouveau")], &[], true));
    assert!(r.contains("bound to nouveau, not vfio-pci"), "{r}");
    assert!(r.starts_with("gpu = \"passthrough\" refused"), "{r}");
    // This host, for the record (refused here unless it really has one).
    match select_passthrough(Path::new("/sys")) {
        Ok(a) => eprintln!("this host can pass through {a:?}"),
        Err(e) => eprintln!("this host: {e}"),
    }
}
