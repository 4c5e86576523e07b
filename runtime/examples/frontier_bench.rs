//! Frontier latency: boot → agent-ready and first-event latency, P50/P99
//! over repeated boots of a QEMU microVM, plus warm-event latency.
//!
//! ```sh
//! RUSTFLAGS='-C target-feature=+crt-static' cargo build -p omega-agent --release \
//!   --target x86_64-unknown-linux-gnu --target-dir target/guest-agent
//! cargo run -p omega-runtime --release --example frontier_bench -- \
//!   --agent target/guest-agent/x86_64-unknown-linux-gnu/release/omega-agent \
//!   [--boots 5] [--accel auto|kvm|tcg] [--machine q35|microvm] [--kernel PATH] [--guest DIR]
//! ```
//!
//! With `--guest DIR` (an `omega guest build` output) the agent is not
//! needed; otherwise a guest with an echo workload is built in a temporary
//! directory. `--accel auto` measures KVM first and uses it only if a tiny
//! boot finishes within 15 s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use omega_runtime::Event;
use omega_runtime::frontier::image::{GuestBuild, build_guest, host_kernel, open_guest_dir};
use omega_runtime::frontier::qemu::{Accel, Machine, QemuBackend, QemuConfig};
use omega_runtime::frontier::{Backend, Vm, VmSpec};

const ECHO: &str = "#!/bin/sh\nwhile IFS= read -r line; do\n  printf '{\"emit\":{\"type\":\"out\",\"payload\":\"pong\"}}\\n{\"result\":\"ok\"}\\n'\ndone\n";

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut boots, mut accel, mut machine) = (5usize, "auto".to_string(), Machine::Q35);
    let (mut agent, mut kernel, mut guest) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--boots" => boots = val()?.parse::<usize>()?.clamp(1, 100),
            "--accel" => accel = val()?,
            "--machine" => {
                machine = match val()?.as_str() {
                    "microvm" => Machine::Microvm,
                    _ => Machine::Q35,
                }
            }
            "--agent" => agent = Some(val()?.into()),
            "--kernel" => kernel = Some(val()?.into()),
            "--guest" => guest = Some(val()?.into()),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tmp = std::env::temp_dir().join(format!("omega-frontier-bench-{}", std::process::id()));
    let guest_dir = match guest {
        Some(g) => g,
        None => {
            let agent = agent.ok_or("pass --agent PATH (a static omega-agent) or --guest DIR")?;
            let kernel = kernel
                .clone()
                .or_else(host_kernel)
                .ok_or("no kernel: pass --kernel")?;
            std::fs::create_dir_all(&tmp)?;
            let echo = tmp.join("echo.sh");
            std::fs::write(&echo, ECHO)?;
            let out = tmp.join("guest");
            build_guest(
                &GuestBuild {
                    kernel,
                    agent,
                    busybox: Some("/bin/busybox".into()),
                    workloads: vec![echo],
                    include: vec![],
                    modules: vec![],
                    cmdline: String::new(),
                },
                &out,
            )?;
            out
        }
    };
    let image = open_guest_dir(&guest_dir)?;
    let config = QemuConfig {
        run_root: tmp.join("run"),
        machine,
        probe_kernel: kernel,
        ..QemuConfig::default()
    };
    let backend = match accel.as_str() {
        "kvm" => QemuBackend::new(QemuConfig {
            accel: Accel::Kvm,
            ..config
        }),
        "tcg" => QemuBackend::new(QemuConfig {
            accel: Accel::Tcg,
            ..config
        }),
        _ => {
            let kvm = QemuBackend::new(QemuConfig {
                accel: Accel::Kvm,
                ..config.clone()
            });
            let r = kvm.probe(Duration::from_secs(15));
            println!("probe {}: usable={} ({})", r.backend, r.usable, r.reason);
            if r.usable {
                kvm
            } else {
                let tcg = QemuBackend::new(QemuConfig {
                    accel: Accel::Tcg,
                    ..config
                });
                let r = tcg.probe(Duration::from_secs(120));
                println!("probe {}: usable={} ({})", r.backend, r.usable, r.reason);
                tcg
            }
        }
    };
    let spec = VmSpec {
        name: "bench".into(),
        kernel: image.kernel,
        initrd: Some(image.initrd),
        rootfs: None,
        cmdline: image.cmdline,
        vcpus: 1,
        memory_mib: 256,
        max_disk_bytes: 0,
        boot_timeout: Duration::from_secs(300),
        event_timeout: Duration::from_secs(30),
        workload: image.workload,
        emits: vec!["out".into()],
    };
    let (mut ready, mut first, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..boots {
        let mut vm = backend.boot_vm(&spec, None)?;
        ready.push(vm.booted_in());
        for j in 0..10 {
            let t = Instant::now();
            let out = vm.handle(&Event::external(format!("b{i}e{j}"), "ping", vec![]))?;
            let took = t.elapsed();
            if out.emitted.len() != 1 {
                return Err(format!("boot {i} event {j}: {out:?}").into());
            }
            if j == 0 {
                first.push(took);
            } else {
                warm.push(took);
            }
        }
        println!(
            "boot {i}: ready in {} ms, first event {} ms",
            ms(vm.booted_in()),
            ms(first[i])
        );
        Box::new(vm).shutdown()?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    for v in [&mut ready, &mut first, &mut warm] {
        v.sort();
    }
    println!("\nbackend {} ({boots} boots, {machine:?})", backend.name());
    println!("{:<26} {:>10} {:>10}", "metric", "P50 ms", "P99 ms");
    for (name, v) in [
        ("boot -> agent ready", &ready),
        ("first event", &first),
        ("warm event (9 per boot)", &warm),
    ] {
        println!(
            "{name:<26} {:>10} {:>10}",
            ms(pct(v, 50.0)),
            ms(pct(v, 99.0))
        );
    }
    Ok(())
}
