//! `omega bench coldstart`: cold-start latency of a brane, through Omega's
//! dispatch path and bare Wasmtime, pooling and on-demand, plus compile and
//! cache-hit load times. Prints a table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use omega_runtime::bench::{Percentiles, bare_floor, omega_path};
use omega_runtime::{Allocator, BraneSpec, Event, Runtime, RuntimeConfig, discard_logs};
use serde_json::json;

use super::output::{CliError, Output};
use super::run::{read_wasm, rt_err};

/// `omega bench` programs.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Instantiate + first `on-event`, P50/P99.
    Coldstart(ColdstartArgs),
    /// Durable, acknowledged events between daemons, beside NATS JetStream.
    Events(super::bench_events::EventsArgs),
    /// The simulator's speed and memory at 100, 1,000 and 10,000 nodes.
    Simulate(super::bench_simulate::SimulateBenchArgs),
    /// HTTP through the gateway, local and one hop, beside `wasmtime serve`.
    Gateway(super::bench_gateway::GatewayArgs),
}

/// Arguments of `omega bench coldstart`.
#[derive(Debug, Args)]
pub struct ColdstartArgs {
    /// The brane component to measure (an `omega:brane/brane` component).
    #[arg(
        long,
        default_value = "examples/branes/target/wasm32-wasip2/release/ingest.wasm"
    )]
    pub image: PathBuf,
    /// Measured runs per row.
    #[arg(long, default_value_t = 10_000)]
    pub runs: usize,
    /// The event type to send.
    #[arg(long, default_value = "tick")]
    pub event: String,
    /// The payload to send.
    #[arg(long, default_value = "1,2,3")]
    pub payload: String,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Run `omega bench`.
pub(super) fn run(cmd: &BenchCommand, out: &Output) -> Result<ExitCode, CliError> {
    let args = match cmd {
        BenchCommand::Coldstart(args) => args,
        BenchCommand::Events(args) => return super::bench_events::run(args, out),
        BenchCommand::Simulate(args) => return super::bench_simulate::run(args, out),
        BenchCommand::Gateway(args) => return super::bench_gateway::run(args, out),
    };
    let bytes = read_wasm(&args.image)?;
    let event = Event::external(
        "bench",
        args.event.as_str(),
        args.payload.as_bytes().to_vec(),
    );
    let warmup = (args.runs / 10).max(10);
    let mut rows: Vec<(String, Percentiles)> = Vec::new();
    for (label, allocator) in [
        ("pooling", Allocator::Pooling),
        ("on-demand", Allocator::OnDemand),
    ] {
        let rt = Runtime::new(RuntimeConfig {
            allocator,
            ..RuntimeConfig::default()
        })
        .map_err(rt_err)?;
        let image = rt.load(&bytes).map_err(rt_err)?;
        let brane = rt
            .brane(
                &image,
                BraneSpec {
                    name: "bench".into(),
                    ..BraneSpec::default()
                },
                discard_logs(),
            )
            .map_err(rt_err)?;
        brane
            .handle(&event)
            .map_err(|e| CliError::plain(format!("the brane fails the bench event: {e}")))?;
        omega_path(&brane, &event, warmup);
        rows.push((
            format!("omega path, {label}"),
            omega_path(&brane, &event, args.runs),
        ));
        bare_floor(&rt, &image, &event, warmup).map_err(rt_err)?;
        rows.push((
            format!("bare wasmtime, {label}"),
            bare_floor(&rt, &image, &event, args.runs).map_err(rt_err)?,
        ));
    }
    let cache = tempfile_dir()?;
    let cfg = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let t = Instant::now();
    Runtime::new(cfg.clone())
        .map_err(rt_err)?
        .load(&bytes)
        .map_err(rt_err)?;
    let compile = t.elapsed();
    let rt2 = Runtime::new(cfg).map_err(rt_err)?;
    let t = Instant::now();
    rt2.load(&bytes).map_err(rt_err)?;
    let hit = t.elapsed();
    let _ = std::fs::remove_dir_all(&cache);

    let mut text = format!(
        "cold start: instantiate + first on-event ({} runs per row, {} bytes image)\n\n| path | P50 µs | P99 µs |\n|---|---|---|\n",
        args.runs,
        bytes.len()
    );
    for (label, p) in &rows {
        text.push_str(&format!(
            "| {label} | {:.1} | {:.1} |\n",
            us(p.p50),
            us(p.p99)
        ));
    }
    let ratio = us(rows[0].1.p50) / us(rows[1].1.p50).max(f64::MIN_POSITIVE);
    text.push_str(&format!(
        "\nomega/bare P50 ratio (pooling): {ratio:.2}\ncompile + write cache: {:.1} ms\ncache hit (verify + deserialize): {:.2} ms",
        compile.as_secs_f64() * 1e3,
        hit.as_secs_f64() * 1e3
    ));
    let machine = json!({
        "ok": true,
        "runs": args.runs,
        "rows": rows.iter().map(|(l, p)| json!({"path": l, "p50_us": us(p.p50), "p99_us": us(p.p99)})).collect::<Vec<_>>(),
        "ratio_p50_pooling": ratio,
        "compile_ms": compile.as_secs_f64() * 1e3,
        "cache_hit_ms": hit.as_secs_f64() * 1e3,
    });
    out.print(text, machine);
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> Result<PathBuf, CliError> {
    let dir = std::env::temp_dir().join(format!("omega-bench-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| CliError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(dir)
}
