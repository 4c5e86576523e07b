//! PLACEHOLDER: the fake `cloudflared` (being written).

/// Runs the fake; returns the exit code.
pub fn main(_args: Vec<String>) -> i32 {
    eprintln!("omega-fake cloudflared: not implemented yet");
    2
}
