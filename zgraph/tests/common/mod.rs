//! Helpers shared by the error tests: load a manifest that must fail with
//! exactly one error, and check that error's kind and location.

#![allow(dead_code)]

use omega_zgraph::{Diagnostics, ErrorKind, Format, ManifestError, load};

pub(crate) fn diagnostics(source: &str, format: Format) -> Diagnostics {
    match load(source, "test.zgraph", format) {
        Ok(plan) => panic!("expected errors, got a plan: {plan:?}"),
        Err(d) => d,
    }
}

/// The single error of a manifest (fails if there are several).
pub(crate) fn only(source: &str, format: Format) -> ManifestError {
    let d = diagnostics(source, format);
    assert_eq!(d.errors().len(), 1, "expected one error, got:\n{d}");
    d.errors()[0].clone()
}

#[track_caller]
pub(crate) fn check_fmt(
    source: &str,
    format: Format,
    kind: ErrorKind,
    line: usize,
    column: usize,
) -> ManifestError {
    let e = only(source, format);
    assert_eq!(
        (e.kind, e.line, e.column),
        (kind, line, column),
        "wrong error: {e}"
    );
    e
}
