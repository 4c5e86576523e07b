//! `omega simulate SCENARIO.toml`: the mesh's own node brains in virtual
//! time, with the scenario's faults; the report says which invariants held,
//! what happened, and how to reproduce it. A failing run is shrunk.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use omega_simulate::{Loaded, Scenario, run, shrink, timeline};

use super::output::{CliError, Output};

/// Arguments of `omega simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The scenario file (see examples/simulate/).
    pub scenario: PathBuf,
    /// The seed (default: the scenario's `seed`).
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Sweep seeds `A..B` (B excluded); stops at the first failing seed and shrinks it.
    #[arg(long, value_name = "A..B")]
    pub seeds: Option<String>,
    /// Write the timeline (one self-contained HTML page) here.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Runs the shrinker may try on a failure (0: do not shrink).
    #[arg(long, default_value_t = 48)]
    pub shrink_budget: usize,
    /// Write the shrunk scenario here as well as printing it.
    #[arg(long, value_name = "FILE")]
    pub shrunk_out: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, CliError> {
    let bad = || CliError::invalid(format!("--seeds `{s}`"), "write a range such as 0..200");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if b <= a || b - a > 1_000_000 {
        return Err(bad());
    }
    Ok(a..b)
}

fn load(path: &std::path::Path) -> Result<Loaded, CliError> {
    Scenario::load(path).map_err(|e| {
        CliError::invalid(
            e.to_string(),
            "see docs/src/simulate.md for the scenario format",
        )
    })
}

/// Run `omega simulate`.
pub(super) fn run_cmd(args: &SimulateArgs, out: &Output) -> Result<ExitCode, CliError> {
    let loaded = load(&args.scenario)?;
    if let Some(range) = &args.seeds {
        return sweep(&loaded, parse_range(range)?, args, out);
    }
    let seed = args.seed.unwrap_or(loaded.scenario.seed);
    let wall = std::time::Instant::now();
    let outcome = run(&loaded, seed);
    let secs = wall.elapsed().as_secs_f64();
    if let Some(path) = &args.timeline {
        std::fs::write(path, timeline::html(&outcome.timeline, &outcome.report))
            .map_err(|e| CliError::plain(format!("{}: {e}", path.display())))?;
    }
    let report = &outcome.report;
    // Wall time is the machine's, not the run's: stderr only, so the report stays byte-identical.
    eprintln!(
        "simulated {} node-virtual-seconds in {secs:.2} s wall",
        report.nodes_total as u64 * report.virtual_ms / 1000
    );
    let shrunk = failing_shrunk(&loaded, seed, report, args)?;
    let mut text = report.to_text();
    if let Some(toml) = &shrunk {
        text.push_str("\nshrunk to a smaller scenario that fails the same way:\n\n");
        text.push_str(toml);
    }
    let mut json = serde_json::to_value(report).unwrap_or_default();
    if let (Some(toml), Some(obj)) = (&shrunk, json.as_object_mut()) {
        obj.insert("shrunk".into(), serde_json::Value::String(toml.clone()));
    }
    out.print(text.trim_end(), json);
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn failing_shrunk(
    loaded: &Loaded,
    seed: u64,
    report: &omega_simulate::Report,
    args: &SimulateArgs,
) -> Result<Option<String>, CliError> {
    if report.passed() || args.shrink_budget == 0 {
        return Ok(None);
    }
    let Some(s) = shrink::shrink(loaded, seed, report, args.shrink_budget) else {
        return Ok(None);
    };
    let toml = format!(
        "# shrunk from {} (seed {seed}) in {} runs: fails `{}` at {} ms\n# reproduce: omega simulate SHRUNK.toml --seed {seed}\n{}",
        loaded.path,
        s.runs,
        s.report
            .violation
            .as_ref()
            .map_or("", |v| v.invariant.as_str()),
        s.report.violation.as_ref().map_or(0, |v| v.at_ms),
        s.scenario.to_toml()
    );
    if let Some(path) = &args.shrunk_out {
        std::fs::write(path, &toml)
            .map_err(|e| CliError::plain(format!("{}: {e}", path.display())))?;
    }
    Ok(Some(toml))
}

fn sweep(
    loaded: &Loaded,
    seeds: std::ops::Range<u64>,
    args: &SimulateArgs,
    out: &Output,
) -> Result<ExitCode, CliError> {
    let wall = std::time::Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8) as u64;
    let mut reports = Vec::new();
    // In chunks of `threads` seeds, so a failure stops the sweep soon.
    let mut next = seeds.start;
    while next < seeds.end {
        let chunk: Vec<u64> = (next..seeds.end.min(next + threads)).collect();
        next += chunk.len() as u64;
        let done: Vec<omega_simulate::Report> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&seed| (seed, s.spawn(move || run(loaded, seed).report)))
                .collect();
            handles
                .into_iter()
                .map(|(seed, h)| h.join().map_err(|_| seed))
                .collect::<Result<Vec<_>, u64>>()
        })
        .map_err(|seed| {
            CliError::plain(format!(
                "simulate: seed {seed} panicked (a bug in the simulator or the node brain); reproduce with: omega simulate {} --seed {seed}",
                loaded.path
            ))
        })?;
        let failed = done.iter().any(|r| !r.passed());
        reports.extend(done);
        if failed {
            break;
        }
    }
    eprintln!(
        "{} seeds in {:.1} s wall",
        reports.len(),
        wall.elapsed().as_secs_f64()
    );
    let first_fail = reports.iter().find(|r| !r.passed()).cloned();
    let mut text = String::new();
    for r in &reports {
        text.push_str(&format!(
            "seed {:>6}  {}  {}\n",
            r.seed,
            if r.passed() { "pass" } else { "FAIL" },
            r.violation
                .as_ref()
                .map(|v| format!("{} at {} ms: {}", v.invariant, v.at_ms, v.detail))
                .unwrap_or_default()
        ));
    }
    let passed = reports.iter().filter(|r| r.passed()).count();
    text.push_str(&format!(
        "\n{passed} of {} seeds passed ({})\n",
        reports.len(),
        omega_simulate::version()
    ));
    let mut shrunk = None;
    if let Some(r) = &first_fail {
        text.push_str("\nthe first failing seed:\n\n");
        text.push_str(&r.to_text());
        shrunk = failing_shrunk(loaded, r.seed, r, args)?;
        if let Some(t) = &shrunk {
            text.push_str("\nshrunk to a smaller scenario that fails the same way:\n\n");
            text.push_str(t);
        }
    }
    let json = serde_json::json!({
        "seeds": reports.iter().map(|r| serde_json::json!({
            "seed": r.seed,
            "passed": r.passed(),
            "violation": r.violation,
        })).collect::<Vec<_>>(),
        "passed": passed,
        "runs": reports.len(),
        "tool": omega_simulate::version(),
        "first_failure": first_fail,
        "shrunk": shrunk,
    });
    out.print(text.trim_end(), json);
    Ok(if first_fail.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
