//! The manifest parser and validator, Yaml syntax: any text a user (or a
//! peer, through the desired state) hands `omega validate`/`apply`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use omega_zgraph::{Format, load};

fuzz_target!(|data: &[u8]| {
    // The CLI reads bytes; what is not UTF-8 is refused before the parser.
    if let Ok(text) = std::str::from_utf8(data) {
        match load(text, "fuzz.yaml", Format::Yaml) {
            // Rendering a diagnostic walks the source by line and column.
            Err(diags) => drop(diags.to_string()),
            Ok(plan) => drop(format!("{plan:?}")),
        }
    }
});
