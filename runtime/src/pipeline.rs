//! A whole graph of branes in one process: events flow along the edges in
//! memory, breadth first, until none are left. This is `omega dev`.
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
use std::sync::Mutex;

use crate::error::EventError;
use crate::event::{Emitted, Event};
use crate::frontier::Vm;
use crate::runtime::Brane;

/// One brane of a pipeline.
enum Member {
    Standard(Brane),
    Frontier(Mutex<Box<dyn Vm>>),
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standard(b) => b.fmt(f),
            Self::Frontier(_) => f.write_str("Frontier(..)"),
        }
    }
}

impl Member {
    fn handle(&self, event: &Event) -> Result<Vec<Emitted>, EventError> {
        match self {
            Self::Standard(b) => b.handle(event).map(|o| o.emitted),
            Self::Frontier(vm) => match vm.lock() {
                Ok(mut vm) => vm.handle(event).map(|o| o.emitted),
                Err(_) => Err(EventError::Instantiate(
                    "frontier VM lock poisoned by an earlier panic".into(),
                )),
            },
        }
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

/// What happened during one [`Pipeline::inject`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineReport {
    /// Every delivery, in order.
    pub deliveries: Vec<Delivery>,
    /// Events emitted on edges whose target is not running here (e.g. a
    /// skipped frontier brane): (target, event).
    pub undelivered: Vec<(String, Event)>,
    /// Events not delivered because the run hit its event limit.
    pub dropped: u64,
}

impl PipelineReport {
    /// Deliveries that failed.
    pub fn failures(&self) -> usize {
        self.deliveries.iter().filter(|d| d.result.is_err()).count()
    }
}

/// Branes and edges run together in one process.
#[derive(Debug)]
pub struct Pipeline {
    branes: BTreeMap<String, Member>,
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

    /// Add a prepared brane (its name must match the edges' names).
    pub fn add(&mut self, brane: Brane) {
        self.branes
            .insert(brane.name().to_string(), Member::Standard(brane));
    }

    /// Add a frontier brane: a booted microVM running the brane's workload
    /// (its `emits` must be [`Pipeline::emits_of`] the brane).
    pub fn add_frontier(&mut self, name: impl Into<String>, vm: Box<dyn Vm>) {
        self.branes
            .insert(name.into(), Member::Frontier(Mutex::new(vm)));
    }

    /// Names of the branes running here.
    pub fn branes(&self) -> impl Iterator<Item = &str> {
        self.branes.keys().map(String::as_str)
    }

    /// Deliver `event` to `target`, then every event that follows from it.
    /// `observe` sees each delivery as it completes.
    pub fn inject(
        &self,
        target: &str,
        event: Event,
        observe: &mut dyn FnMut(&Delivery),
    ) -> PipelineReport {
        let mut report = PipelineReport::default();
        let mut queue = VecDeque::from([(target.to_string(), event)]);
        let mut delivered = 0usize;
        while let Some((to, event)) = queue.pop_front() {
            let Some(brane) = self.branes.get(&to) else {
                report.undelivered.push((to, event));
                continue;
            };
            if delivered >= self.max_events {
                report.dropped += 1 + queue.len() as u64;
                break;
            }
            delivered += 1;
            let result = brane.handle(&event);
            if let Ok(emitted) = &result {
                for (i, e) in emitted.iter().enumerate() {
                    for edge in self.edges.iter().filter(|x| x.from == to && x.on == e.ty) {
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
}
