//! The simulator without the rest of `omega` (a quicker build when working
//! on it): `cargo run --release -p omega-simulate --example simulate -- SCENARIO.toml [SEED]`.
//! Prints the text report, and the wall time on stderr.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: simulate SCENARIO.toml [SEED]");
        return ExitCode::from(2);
    };
    let loaded = match omega_simulate::Scenario::load(std::path::Path::new(&path)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let seed = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(loaded.scenario.seed);
    let wall = std::time::Instant::now();
    let out = omega_simulate::run(&loaded, seed);
    let secs = wall.elapsed().as_secs_f64();
    print!("{}", out.report.to_text());
    eprintln!(
        "{} node-virtual-seconds in {secs:.2} s wall ({:.0} per wall second)",
        out.report.nodes_total as u64 * out.report.virtual_ms / 1000,
        out.report.nodes_total as f64 * out.report.virtual_ms as f64 / 1000.0 / secs
    );
    if out.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
