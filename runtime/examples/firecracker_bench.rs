//! Boot latency of the minimal guest through the Firecracker driver.
//!
//! ```text
//! FIRECRACKER_BIN=/path/to/firecracker \
//!     cargo run --release -p omega-runtime --example firecracker_bench -- 200
//! ```
//!
//! Boots the minimal ELF guest N times (default 50, at most 10,000) and
//! prints P50/P99 of: process spawn → API socket ready, configuration
//! (machine-config, boot-source, vsock, metrics), `InstanceStart` → serial
//! marker, and spawn → marker. On a host without hardware virtualization
//! the numbers measure the software KVM, not Firecracker.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use omega_runtime::frontier::FrontierError;
use omega_runtime::frontier::firecracker::{self, Firecracker, FirecrackerConfig, api, guest};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    let Some(bin) = std::env::var_os("FIRECRACKER_BIN") else {
        eprintln!("FIRECRACKER_BIN is unset: point it at a firecracker binary");
        return ExitCode::FAILURE;
    };
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50)
        .clamp(1, 10_000);
    let run_root = match tempfile::Builder::new().prefix("fcb").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fc = Firecracker::new(FirecrackerConfig::new(bin, run_root.path()));
    let marker = b"omega-bench-marker\n";
    let kernel = run_root.path().join("guest.elf");
    if let Err(e) = guest::write(&kernel, marker, guest::Ending::Reset) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let (mut ready, mut config, mut to_marker, mut total) = (vec![], vec![], vec![], vec![]);
    let mut failures = 0usize;
    for _ in 0..n {
        let t0 = Instant::now();
        let result = (|| {
            let mut m = fc.spawn("bench")?;
            let t_ready = t0.elapsed();
            let plan = api::BootPlan {
                vcpus: 1,
                memory_mib: 16,
                kernel: m.stage(&kernel, "guest")?,
                vsock: Some((firecracker::GUEST_CID, m.vsock_path()?)),
                ..Default::default()
            };
            m.configure(&plan)?;
            let t_config = t0.elapsed() - t_ready;
            let t1 = Instant::now();
            m.start()?;
            let ok = m.wait_serial(marker, Duration::from_secs(10));
            let (t_marker, t_total) = (t1.elapsed(), t0.elapsed());
            m.wait_exit(Duration::from_secs(5));
            m.stop(Duration::ZERO)?;
            Ok::<_, FrontierError>((ok, t_ready, t_config, t_marker, t_total))
        })();
        match result {
            Ok((true, a, b, c, d)) => {
                ready.push(a);
                config.push(b);
                to_marker.push(c);
                total.push(d);
            }
            Ok((false, ..)) => failures += 1,
            Err(e) => {
                eprintln!("boot failed: {e}");
                failures += 1;
            }
        }
    }
    println!(
        "firecracker minimal-guest boots: {} ok, {failures} failed",
        total.len()
    );
    println!(
        "hardware virtualization: {}",
        if firecracker::host_has_hw_virt() {
            "yes"
        } else {
            "no (software KVM)"
        }
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "phase (ms)", "P50", "P99", "min", "max"
    );
    for (name, v) in [
        ("spawn → API ready", &mut ready),
        ("configure (4 API requests)", &mut config),
        ("InstanceStart → serial marker", &mut to_marker),
        ("spawn → serial marker", &mut total),
    ] {
        v.sort();
        println!(
            "{name:<34} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 0.0),
            pct(v, 1.0)
        );
    }
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
