//! PLACEHOLDER: the fake `tailscale` (being written).

/// Runs the fake; returns the exit code.
pub fn main(_args: Vec<String>) -> i32 {
    eprintln!("omega-fake tailscale: not implemented yet");
    2
}
