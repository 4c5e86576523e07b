//! What several fuzz targets share.

/// yrs can panic on hostile update bytes; the desired state applies every
/// update to a copy of its document under `catch_unwind` and refuses it
/// (see `DesiredState::handle_update`). libFuzzer's panic hook would abort
/// on such a caught panic; this hook does nothing instead, so only a panic
/// that escapes the code under test (libfuzzer-sys aborts on it) is a crash.
pub fn panics_caught_by_the_code_are_not_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}
