//! `transform`: `raw.batch` (comma-separated numbers) → `tensor.shard`
//! (little-endian `f32`s, each multiplied by config `scale`, default 2).

wit_bindgen::generate!({ path: "../../../wit", world: "omega:brane/brane" });

use exports::omega::brane::handler::{Error, Event, Guest};
use omega::brane::host::{config, emit, log};
use omega::brane::types::Level;

struct Transform;

fn bad(message: String) -> Error {
    Error {
        code: "bad-input".into(),
        message,
    }
}

impl Guest for Transform {
    fn on_event(event: Event) -> Result<(), Error> {
        if event.type_ != "raw.batch" {
            return Err(bad(format!("unexpected event type {}", event.type_)));
        }
        let scale: f32 = config("scale").and_then(|s| s.parse().ok()).unwrap_or(2.0);
        let text =
            String::from_utf8(event.payload).map_err(|_| bad("payload is not UTF-8".into()))?;
        let mut shard = Vec::new();
        for field in text.split(',').filter(|f| !f.trim().is_empty()) {
            let x: f32 = field
                .trim()
                .parse()
                .map_err(|_| bad(format!("not a number: {field:?}")))?;
            shard.extend_from_slice(&(x * scale).to_le_bytes());
        }
        log(
            Level::Info,
            &format!(
                "transform {}: {} values x{scale}",
                event.id,
                shard.len() / 4
            ),
        );
        emit("tensor.shard", &event.key, &shard).map_err(|e| Error {
            code: "emit".into(),
            message: format!("emit refused: {e:?}"),
        })
    }
}

export!(Transform);
