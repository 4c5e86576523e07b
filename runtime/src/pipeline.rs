//! A whole graph of branes in one process. A [`Pipeline`] holds the running
//! branes; [`Pipeline::member`] finds one for a delivery. The mesh's
//! delivery — durable, retried, routed across nodes — is
//! `omega_gossip::events`, which `omega dev` and the daemon both drive;
//! [`cascade`] (breadth first, in memory, no retries) is this crate's own
//! test and embedding helper.
//!
//! Type rules: a brane may only emit the types of its outgoing edges (the
//! host refuses others, see [`crate::BraneSpec::emits`]), and an event only
//! reaches the branes whose incoming edge has its type.
//!
//! A pipeline holds standard branes ([`Pipeline::add`]) and frontier
//! branes — a booted microVM behind [`crate::frontier::Vm`]
//! ([`Pipeline::add_frontier`]) — alike: events flow standard → frontier →
//! standard with the same rules. Dropping the pipeline stops its VMs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::error::EventError;
use crate::event::{Emitted, Event};
use crate::frontier::Vm;
use crate::runtime::Brane;
use crate::serve::HttpBrane;

/// One running brane, whatever runs it.
pub enum Member {
    /// A standard brane: a component on Wasmtime.
    Standard(Brane),
    /// An HTTP brane (`wasi:http`): it serves requests, not events.
    Http(Arc<HttpBrane>),
    /// A frontier brane: a booted microVM (one event at a time).
    Frontier(Mutex<Box<dyn Vm>>),
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standard(b) => b.fmt(f),
            Self::Http(b) => write!(f, "Http({})", b.name()),
            Self::Frontier(_) => f.write_str("Frontier(..)"),
        }
    }
}

impl Member {
    /// Runs one event; `None` for an HTTP brane, which takes no events.
    pub fn handle(&self, event: &Event) -> Option<Result<Vec<Emitted>, EventError>> {
        Some(match self {
            Self::Standard(b) => b.handle(event).map(|o| o.emitted),
            Self::Frontier(vm) => match vm.lock() {
                Ok(mut vm) => vm.handle(event).map(|o| o.emitted),
                Err(_) => Err(EventError::Instantiate(
                    "frontier VM lock poisoned by an earlier panic".into(),
                )),
            },
            Self::Http(_) => return None,
        })
    }
}

/// A manifest edge: `from` emits `on`, delivered to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The emitting brane.
    pub from: String,
    /// The receiving brane.
    pub to: String,
    /// The event type carried.
    pub on: String,
}

impl From<&omega_zgraph::Edge> for Edge {
    fn from(e: &omega_zgraph::Edge) -> Self {
        Self {
            from: e.from.clone(),
            to: e.to.clone(),
            on: e.on.clone(),
        }
    }
}

/// The event types `brane` may emit: the `on` of its outgoing edges.
pub fn emits_of(edges: &[Edge], brane: &str) -> Vec<String> {
    let mut types: Vec<String> = edges
        .iter()
        .filter(|e| e.from == brane)
        .map(|e| e.on.clone())
        .collect();
    types.sort();
    types.dedup();
    types
}

/// The outcome of delivering one event to one brane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The receiving brane.
    pub brane: String,
    /// The event.
    pub event: Event,
    /// The events it emitted, or why it failed.
    pub result: Result<Vec<Emitted>, EventError>,
}

/// Why an event was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotDelivered {
    /// The target does not run here (another node, or skipped).
    NotHere,
    /// The target is an HTTP brane: it takes requests, not events.
    HttpBrane,
}

impl std::fmt::Display for NotDelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotHere => "does not run in this pipeline",
            Self::HttpBrane => "an HTTP brane takes requests, not events",
        })
    }
}

/// What happened during one delivery cascade.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineReport {
    /// Every delivery, in order.
    pub deliveries: Vec<Delivery>,
    /// Events not delivered: (target, event, why).
    pub undelivered: Vec<(String, Event, NotDelivered)>,
    /// Events not delivered because the run hit its event limit.
    pub dropped: u64,
}

impl PipelineReport {
    /// Deliveries that failed.
    pub fn failures(&self) -> usize {
        self.deliveries.iter().filter(|d| d.result.is_err()).count()
    }
}

/// Delivers `event` to `target`, then every event that follows from it
/// along `edges`, breadth first, at most `max_events` deliveries (a guard
/// against cycles of emits). `lookup` finds a running brane by name;
/// `observe` sees each delivery as it completes. The one delivery loop.
pub fn cascade(
    edges: &[Edge],
    lookup: &dyn Fn(&str) -> Option<Arc<Member>>,
    target: &str,
    event: Event,
    max_events: usize,
    observe: &mut dyn FnMut(&Delivery),
) -> PipelineReport {
    let mut report = PipelineReport::default();
    let mut queue = VecDeque::from([(target.to_string(), event)]);
    let mut delivered = 0usize;
    while let Some((to, event)) = queue.pop_front() {
        let Some(brane) = lookup(&to) else {
            report.undelivered.push((to, event, NotDelivered::NotHere));
            continue;
        };
        if delivered >= max_events {
            report.dropped += 1 + queue.len() as u64;
            break;
        }
        let Some(result) = brane.handle(&event) else {
            report
                .undelivered
                .push((to, event, NotDelivered::HttpBrane));
            continue;
        };
        delivered += 1;
        if let Ok(emitted) = &result {
            for (i, e) in emitted.iter().enumerate() {
                for edge in edges.iter().filter(|x| x.from == to && x.on == e.ty) {
                    queue.push_back((
                        edge.to.clone(),
                        Event {
                            id: format!("{}.{i}", event.id),
                            ty: e.ty.clone(),
                            key: e.key.clone(),
                            payload: e.payload.clone(),
                            source: to.clone(),
                            attempt: 1,
                        },
                    ));
                }
            }
        }
        let delivery = Delivery {
            brane: to,
            event,
            result,
        };
        observe(&delivery);
        report.deliveries.push(delivery);
    }
    report
}

/// Branes and edges run together in one process.
#[derive(Debug)]
pub struct Pipeline {
    branes: BTreeMap<String, Arc<Member>>,
    edges: Vec<Edge>,
    max_events: usize,
}

impl Pipeline {
    /// A pipeline over `edges` that delivers at most `max_events` events per
    /// injected event (a guard against cycles of emits).
    pub fn new(edges: Vec<Edge>, max_events: usize) -> Self {
        Self {
            branes: BTreeMap::new(),
            edges,
            max_events,
        }
    }

    /// Add a prepared brane (its name must match the edges' names).
    pub fn add(&mut self, brane: Brane) {
        self.branes
            .insert(brane.name().to_string(), Arc::new(Member::Standard(brane)));
    }

    /// Add a frontier brane: a booted microVM running the brane's workload
    /// (its `emits` must be [`emits_of`] the brane).
    pub fn add_frontier(&mut self, name: impl Into<String>, vm: Box<dyn Vm>) {
        self.branes
            .insert(name.into(), Arc::new(Member::Frontier(Mutex::new(vm))));
    }

    /// Names of the branes running here.
    pub fn branes(&self) -> impl Iterator<Item = &str> {
        self.branes.keys().map(String::as_str)
    }

    /// The running brane `name`, if it runs here.
    pub fn member(&self, name: &str) -> Option<Arc<Member>> {
        self.branes.get(name).cloned()
    }

    /// Deliver `event` to `target`, then every event that follows from it.
    /// `observe` sees each delivery as it completes.
    pub fn inject(
        &self,
        target: &str,
        event: Event,
        observe: &mut dyn FnMut(&Delivery),
    ) -> PipelineReport {
        let lookup = |name: &str| self.branes.get(name).cloned();
        cascade(
            &self.edges,
            &lookup,
            target,
            event,
            self.max_events,
            observe,
        )
    }
}
