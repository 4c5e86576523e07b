//! `omega bench simulate`: how fast and how big the simulator is — nodes ×
//! virtual seconds per wall second, peak memory per simulated node, and how
//! the time for membership to converge grows with N next to log₂ N (the
//! epidemic-gossip bound). Each size runs in its own process so its peak
//! memory is its own.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};

use super::output::{CliError, Output};

/// Arguments of `omega bench simulate`.
#[derive(Debug, Args)]
pub struct SimulateBenchArgs {
    /// Mesh sizes to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub nodes: Vec<usize>,
    /// Virtual time per run, e.g. 10m.
    #[arg(long, default_value = "10m")]
    pub virtual_time: humantime::Duration,
    /// The seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Internal: run one size in this process and print its row as JSON.
    #[arg(long, hide = true)]
    pub one: Option<usize>,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::plain(format!("bench simulate: {e}"))
}

/// Peak resident memory of this process, bytes (VmHWM).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// MemAvailable, bytes.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .map_or(0, |kb| kb * 1024)
}

fn one(n: usize, virtual_ms: u64, seed: u64) -> Result<Value, CliError> {
    let loaded = omega_simulate::scale_scenario(n, virtual_ms).map_err(fail)?;
    let join_end = loaded.scenario.join_over.map_or(0, |d| d.ms());
    let wall = Instant::now();
    let out = omega_simulate::run(&loaded, seed);
    let secs = wall.elapsed().as_secs_f64();
    let r = &out.report;
    let node_secs = r.nodes_total as f64 * r.virtual_ms as f64 / 1000.0;
    let rss = peak_rss();
    Ok(json!({
        "nodes": n,
        "virtual_s": r.virtual_ms as f64 / 1000.0,
        "wall_s": secs,
        "node_virtual_s_per_wall_s": node_secs / secs.max(1e-9),
        "peak_rss_bytes": rss,
        "rss_per_node_bytes": rss / n.max(1) as u64,
        "members_converged_ms": r.convergence.members_agree_at_ms.map(|t| t.saturating_sub(join_end)),
        "log2_n": (n as f64).log2(),
        "events_processed": r.events.processed,
        "passed": r.passed(),
        "violation": r.violation.as_ref().map(|v| format!("{} at {} ms: {}", v.invariant, v.at_ms, v.detail)),
    }))
}

/// Run `omega bench simulate`.
pub(super) fn run(args: &SimulateBenchArgs, out: &Output) -> Result<ExitCode, CliError> {
    let virtual_ms = args.virtual_time.as_millis() as u64;
    if let Some(n) = args.one {
        super::output::stdout_line(&one(n, virtual_ms, args.seed)?.to_string());
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().map_err(fail)?;
    let mut rows: Vec<Value> = Vec::new();
    for &n in &args.nodes {
        // Each node knows every member: a run's memory grows with N².
        // Refuse a size the previous one says cannot fit, rather than
        // letting the kernel kill it.
        if let Some(prev) = rows.last()
            && let (Some(pn), Some(prss)) =
                (prev["nodes"].as_u64(), prev["peak_rss_bytes"].as_u64())
        {
            let ratio = n as f64 / pn.max(1) as f64;
            let projected = prss as f64 * ratio * ratio;
            let available = mem_available();
            if projected > available as f64 * 0.9 {
                rows.push(json!({
                    "nodes": n,
                    "skipped": format!(
                        "not run: projected peak {:.1} GB (N² from {pn} nodes) exceeds the {:.1} GB available",
                        projected / 1e9,
                        available as f64 / 1e9
                    ),
                }));
                continue;
            }
        }
        eprintln!("simulating {n} nodes for {} …", args.virtual_time);
        let o = std::process::Command::new(&exe)
            .args(["bench", "simulate", "--one", &n.to_string()])
            .args(["--virtual-time", &args.virtual_time.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .output()
            .map_err(fail)?;
        if !o.status.success() {
            return Err(fail(format!(
                "{n} nodes: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        let row: Value = serde_json::from_slice(&o.stdout).map_err(fail)?;
        rows.push(row);
    }
    let mut text = format!(
        "{:>7} {:>9} {:>9} {:>14} {:>10} {:>10} {:>13} {:>7} {:>9}  {}\n",
        "nodes",
        "virtual s",
        "wall s",
        "node·vs/wall s",
        "peak MB",
        "KB/node",
        "converged ms",
        "log2 N",
        "ms/log2N",
        "verdict"
    );
    for r in &rows {
        if let Some(why) = r["skipped"].as_str() {
            text.push_str(&format!("{:>7}  {why}\n", r["nodes"].as_u64().unwrap_or(0)));
            continue;
        }
        let conv = r["members_converged_ms"].as_u64();
        let log2 = r["log2_n"].as_f64().unwrap_or(1.0);
        text.push_str(&format!(
            "{:>7} {:>9.0} {:>9.1} {:>14.0} {:>10.0} {:>10.1} {:>13} {:>7.1} {:>9}  {}\n",
            r["nodes"].as_u64().unwrap_or(0),
            r["virtual_s"].as_f64().unwrap_or(0.0),
            r["wall_s"].as_f64().unwrap_or(0.0),
            r["node_virtual_s_per_wall_s"].as_f64().unwrap_or(0.0),
            r["peak_rss_bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
            r["rss_per_node_bytes"].as_u64().unwrap_or(0) as f64 / 1e3,
            conv.map_or("-".into(), |c| c.to_string()),
            log2,
            conv.map_or("-".into(), |c| format!("{:.0}", c as f64 / log2)),
            if r["passed"].as_bool() == Some(true) {
                "pass".to_owned()
            } else {
                format!("FAIL {}", r["violation"].as_str().unwrap_or(""))
            }
        ));
    }
    out.print(
        text.trim_end(),
        json!({ "tool": omega_simulate::version(), "rows": rows }),
    );
    Ok(ExitCode::SUCCESS)
}
