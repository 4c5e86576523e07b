//! `sink`: takes any event and does nothing with it — the smallest
//! consumer, for benchmarks (`omega bench events`) and as a template.
//! A payload that starts with `poison` fails the event.

wit_bindgen::generate!({ path: "../../../wit", world: "omega:brane/brane" });

use exports::omega::brane::handler::{Error, Event, Guest};

struct Sink;

impl Guest for Sink {
    fn on_event(event: Event) -> Result<(), Error> {
        if event.payload.starts_with(b"poison") {
            return Err(Error {
                code: "poison".into(),
                message: "refusing a poisoned payload".into(),
            });
        }
        Ok(())
    }
}

export!(Sink);
