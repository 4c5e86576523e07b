//! Shrinking a failing run: fewer nodes, fewer faults, less load, a
//! shorter run — kept only while the same invariant still fails with the
//! same seed — down to a scenario small enough to read.

use crate::report::Report;
use crate::run::run;
use crate::scenario::{Dur, Loaded, Scenario};

/// A smaller scenario that fails the same way.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The scenario (print it with [`Scenario::to_toml`]).
    pub scenario: Scenario,
    /// Its failing report.
    pub report: Report,
    /// Runs tried.
    pub runs: usize,
}

/// Every one-step simplification of `s`, most effective first.
fn candidates(s: &Scenario, failed_at: u64) -> Vec<Scenario> {
    let mut out = Vec::new();
    let shorter = failed_at.div_ceil(1000) * 1000 + 1000;
    if shorter < s.duration.ms() {
        let mut c = s.clone();
        c.duration = Dur(shorter);
        out.push(c);
    }
    for k in 0..s.faults.len() {
        let mut c = s.clone();
        c.faults.remove(k);
        out.push(c);
    }
    for k in 0..s.classes.len() {
        if s.classes.len() > 1 {
            let mut c = s.clone();
            c.classes.remove(k);
            out.push(c);
        }
        let n = s.classes[k].count;
        for smaller in [n / 2, n.saturating_sub(1)] {
            if smaller >= 1 && smaller < n && s.classes[k].names.is_empty() {
                let mut c = s.clone();
                c.classes[k].count = smaller;
                out.push(c);
            }
        }
    }
    for k in 0..s.workloads.len() {
        let mut c = s.clone();
        c.workloads.remove(k);
        out.push(c);
        if s.workloads[k].rate > 1.0 {
            let mut c = s.clone();
            c.workloads[k].rate = (s.workloads[k].rate / 2.0).max(1.0).floor();
            out.push(c);
        }
    }
    let net = &s.network;
    if net.loss_per_mille + net.dup_per_mille + net.reorder_per_mille + net.tail_per_mille > 0 {
        let mut c = s.clone();
        c.network.loss_per_mille = 0;
        c.network.dup_per_mille = 0;
        c.network.reorder_per_mille = 0;
        c.network.tail_per_mille = 0;
        out.push(c);
    }
    out
}

/// Shrinks a run of `loaded` with `seed` that failed as `failing` did,
/// trying at most `budget` runs.
pub fn shrink(loaded: &Loaded, seed: u64, failing: &Report, budget: usize) -> Option<Shrunk> {
    let want = failing.violation.as_ref()?.invariant.clone();
    let mut best = loaded.clone();
    let mut best_report = failing.clone();
    let mut runs = 0;
    'outer: loop {
        let at = best_report.violation.as_ref().map_or(0, |v| v.at_ms);
        for c in candidates(&best.scenario, at) {
            if runs >= budget {
                break 'outer;
            }
            let Ok(next) = c.check(&loaded.path) else {
                continue;
            };
            runs += 1;
            let out = run(&next, seed);
            if out
                .report
                .violation
                .as_ref()
                .is_some_and(|v| v.invariant == want)
            {
                best = next;
                best_report = out.report;
                continue 'outer;
            }
        }
        break;
    }
    Some(Shrunk {
        scenario: best.scenario,
        report: best_report,
        runs,
    })
}
