//! `ingest`: turns any incoming event into one `raw.batch` event.
//!
//! The payload of the incoming event is a comma-separated list of numbers;
//! when it is empty the brane makes `0..batch-size` (config `batch-size`,
//! default 4). The batch keeps the incoming key.

wit_bindgen::generate!({ path: "../../../wit", world: "omega:brane/brane" });

use exports::omega::brane::handler::{Error, Event, Guest};
use omega::brane::host::{config, emit, log};
use omega::brane::types::Level;

struct Ingest;

impl Guest for Ingest {
    fn on_event(event: Event) -> Result<(), Error> {
        let batch = if event.payload.is_empty() {
            let size: u32 = config("batch-size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(4);
            (0..size)
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::from_utf8(event.payload).map_err(|_| Error {
                code: "bad-input".into(),
                message: "payload is not UTF-8 text".into(),
            })?
        };
        log(
            Level::Info,
            &format!("ingest {} -> raw.batch [{batch}]", event.id),
        );
        emit("raw.batch", &event.key, batch.as_bytes()).map_err(|e| Error {
            code: "emit".into(),
            message: format!("emit refused: {e:?}"),
        })
    }
}

export!(Ingest);
