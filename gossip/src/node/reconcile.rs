//! The reconciler's decisions: from what placement puts on this node to
//! which branes start, stop and retry. The driver only executes them.
//!
//! - A brane placed here and not running is started (a new *attempt*
//!   number each time, so a late completion of an older attempt is told
//!   apart and stopped).
//! - A brane no longer placed here, or placed with another plan, is
//!   stopped; the new plan starts as a new attempt.
//! - A failed start is retried after a backoff that doubles from
//!   `retry_base` up to `retry_max` with each failure in a row; a success
//!   resets it.
//! - Every change is a line in a bounded history (`omega describe`).

use std::collections::{BTreeMap, VecDeque};

use omega_zgraph::{Brane, Edge, PlanHash};
use serde::{Deserialize, Serialize};

use crate::time::{Mono, Now};

use super::io::{BraneKey, Started};
use super::status::{BraneState, BraneStatus};

/// Timing and bounds of the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Wait after the first failed start, ms. Default 2 000.
    pub retry_base: u64,
    /// Longest wait between attempts, ms. Default 60 000.
    pub retry_max: u64,
    /// History lines kept (all branes together). Default 256; the oldest goes.
    pub max_events: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            retry_base: 2_000,
            retry_max: 60_000,
            max_events: 256,
        }
    }
}

/// What placement wants of this node for one brane.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Want {
    pub(crate) plan: PlanHash,
    pub(crate) instances: u32,
    pub(crate) brane: Brane,
    pub(crate) edges: Vec<Edge>,
}

/// A decision for the driver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Start {
        key: BraneKey,
        attempt: u64,
        want: Box<Want>,
    },
    Stop {
        key: BraneKey,
        attempt: u64,
    },
}

/// One line of a brane's history on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BraneEvent {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The manifest.
    pub manifest: String,
    /// The brane.
    pub brane: String,
    /// What happened.
    pub text: String,
}

#[derive(Debug)]
struct Local {
    want: Want,
    state: BraneState,
    attempt: u64,
    failures: u32,
    retry_at: Option<Mono>,
    url: Option<String>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Reconciler {
    config: ReconcileConfig,
    local: BTreeMap<BraneKey, Local>,
    next_attempt: u64,
    events: VecDeque<BraneEvent>,
    /// History lines not yet handed out as reports.
    fresh: Vec<(BraneKey, String)>,
}

impl Reconciler {
    pub(crate) fn new(config: ReconcileConfig) -> Self {
        Self {
            config,
            local: BTreeMap::new(),
            next_attempt: 0,
            events: VecDeque::new(),
            fresh: Vec::new(),
        }
    }

    fn log(&mut self, key: &BraneKey, text: String, now: Now) {
        if self.events.len() >= self.config.max_events.max(1) {
            self.events.pop_front();
        }
        self.events.push_back(BraneEvent {
            at_ms: now.unix.0,
            manifest: key.manifest.clone(),
            brane: key.brane.clone(),
            text: text.clone(),
        });
        self.fresh.push((key.clone(), text));
    }

    fn start(&mut self, key: BraneKey, want: Want, now: Now) -> Decision {
        self.next_attempt += 1;
        let attempt = self.next_attempt;
        let failures = self.local.get(&key).map_or(0, |l| l.failures);
        self.log(
            &key,
            format!("placed here ({} instance(s)): starting", want.instances),
            now,
        );
        self.local.insert(
            key.clone(),
            Local {
                want: want.clone(),
                state: BraneState::Starting,
                attempt,
                failures,
                retry_at: None,
                url: None,
            },
        );
        Decision::Start {
            key,
            attempt,
            want: Box::new(want),
        }
    }

    /// Moves toward `want` (everything placement puts on this node).
    pub(crate) fn apply(&mut self, want: BTreeMap<BraneKey, Want>, now: Now) -> Vec<Decision> {
        let mut out = Vec::new();
        let stale: Vec<(BraneKey, u64, bool)> = self
            .local
            .iter()
            .filter(|(k, l)| want.get(*k).is_none_or(|w| w.plan != l.want.plan))
            .map(|(k, l)| (k.clone(), l.attempt, want.contains_key(k)))
            .collect();
        for (key, attempt, replanned) in stale {
            self.local.remove(&key);
            let why = if replanned {
                "stopped: a new plan replaces it"
            } else {
                "stopped: no longer placed here"
            };
            self.log(&key, why.into(), now);
            out.push(Decision::Stop { key, attempt });
        }
        for (key, w) in want {
            match self.local.get_mut(&key) {
                Some(l) => {
                    if l.want.instances != w.instances {
                        let text =
                            format!("instances here: {} -> {}", l.want.instances, w.instances);
                        l.want.instances = w.instances;
                        self.log(&key, text, now);
                    }
                }
                None => out.push(self.start(key, w, now)),
            }
        }
        out
    }

    /// Attempt `attempt` of `key` finished starting.
    pub(crate) fn started(
        &mut self,
        key: BraneKey,
        attempt: u64,
        result: Result<Started, String>,
        now: Now,
    ) -> Vec<Decision> {
        let Some(l) = self.local.get_mut(&key).filter(|l| l.attempt == attempt) else {
            // Stopped, replaced or retried meanwhile: whatever it started goes.
            return if result.is_ok() {
                vec![Decision::Stop { key, attempt }]
            } else {
                Vec::new()
            };
        };
        let text = match result {
            Ok(started) => {
                l.state = BraneState::Running;
                l.failures = 0;
                l.retry_at = None;
                let text = match &started.url {
                    Some(url) => format!("running, serving on {url}"),
                    None => "running".to_owned(),
                };
                l.url = started.url;
                text
            }
            Err(reason) => {
                l.failures = l.failures.saturating_add(1);
                let wait = self
                    .config
                    .retry_base
                    .saturating_mul(1u64 << (l.failures - 1).min(32))
                    .min(self.config.retry_max);
                l.retry_at = Some(now.mono.plus(wait));
                let text = format!(
                    "failed: {reason} (attempt {}, retry in {} ms)",
                    l.failures, wait
                );
                l.state = BraneState::Failed {
                    reason,
                    attempts: l.failures,
                };
                text
            }
        };
        self.log(&key, text, now);
        Vec::new()
    }

    /// Retries whose time has come.
    pub(crate) fn due(&mut self, now: Now) -> Vec<Decision> {
        let due: Vec<(BraneKey, Want)> = self
            .local
            .iter()
            .filter(|(_, l)| l.retry_at.is_some_and(|t| t <= now.mono))
            .map(|(k, l)| (k.clone(), l.want.clone()))
            .collect();
        due.into_iter()
            .map(|(key, want)| self.start(key, want, now))
            .collect()
    }

    /// When the next retry is due.
    pub(crate) fn next_retry(&self) -> Option<Mono> {
        self.local.values().filter_map(|l| l.retry_at).min()
    }

    /// What this node runs, for its status.
    pub(crate) fn statuses(&self) -> Vec<BraneStatus> {
        self.local
            .iter()
            .map(|(k, l)| BraneStatus {
                manifest: k.manifest.clone(),
                brane: k.brane.clone(),
                plan: l.want.plan.to_hex(),
                instances: l.want.instances,
                state: l.state.clone(),
                url: l.url.clone(),
            })
            .collect()
    }

    /// The history, oldest first.
    pub(crate) fn events(&self) -> impl Iterator<Item = &BraneEvent> {
        self.events.iter()
    }

    /// History lines since the last call (for reports).
    pub(crate) fn take_fresh(&mut self) -> Vec<(BraneKey, String)> {
        std::mem::take(&mut self.fresh)
    }

    /// The state of `key` here, if it is placed here.
    #[cfg(test)]
    pub(crate) fn state(&self, key: &BraneKey) -> Option<&BraneState> {
        self.local.get(key).map(|l| &l.state)
    }
}
