//! PLACEHOLDER: supervising a tunnel program (restart with backoff).
