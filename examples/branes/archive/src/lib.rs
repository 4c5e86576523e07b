//! `archive`: writes each payload to `<dir>/<event id>.bin`. `dir` comes
//! from config (default `/archive`), a directory the manifest must grant
//! read-write; without the grant the write is denied and the event fails.
//! With config `index = "NAME"` it also appends one line per event it runs,
//! `<id> <key> <bytes>`, to `<dir>/NAME` (so repeats show as repeated lines).
//! A payload that starts with `poison` fails the event. Config `delay_ms`
//! makes it a slow consumer (it sleeps that long per event; the manifest
//! must grant it real clocks).

wit_bindgen::generate!({ path: "../../../wit", world: "omega:brane/brane" });

use exports::omega::brane::handler::{Error, Event, Guest};
use omega::brane::host::{config, log};
use omega::brane::types::Level;

struct Archive;

impl Guest for Archive {
    fn on_event(event: Event) -> Result<(), Error> {
        let dir = config("dir").unwrap_or_else(|| "/archive".into());
        let name: String = event
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if let Some(ms) = config("delay_ms").and_then(|s| s.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if event.payload.starts_with(b"poison") {
            return Err(Error {
                code: "poison".into(),
                message: "refusing a poisoned payload".into(),
            });
        }
        if let Some(index) = config("index") {
            use std::io::Write as _;
            let line = format!("{} {} {}\n", event.id, event.key, event.payload.len());
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(format!("{dir}/{index}"))
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| Error {
                    code: "io".into(),
                    message: format!("append {dir}/{index}: {e}"),
                })?;
        }
        let path = format!("{dir}/{name}.bin");
        std::fs::write(&path, &event.payload).map_err(|e| Error {
            code: "io".into(),
            message: format!("write {path}: {e}"),
        })?;
        log(
            Level::Info,
            &format!("archived {} bytes to {path}", event.payload.len()),
        );
        Ok(())
    }
}

export!(Archive);
