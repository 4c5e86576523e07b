//! Faithful local fakes of the services the drivers talk to, for tests and
//! the demo: none of Tailscale, Cloudflare, ngrok or NetBird can be reached
//! from where Omega is tested. The `omega-fake` program runs them:
//! `omega-fake tailscaled|cloudflared|ngrok|netbird ARGS…`, or through a
//! symlink named `cloudflared`, `ngrok` or `netbird` (the name it is run by
//! picks the fake), so a driver runs it exactly as it runs the real program.

pub mod cloudflared;
pub mod netbird;
pub mod ngrok;
pub mod tailscale;

/// Runs the fake named `name` with `args` (the arguments after the name);
/// returns the process exit code.
pub fn main(name: &str, args: Vec<String>) -> i32 {
    match name {
        "tailscaled" => tailscale::main(args),
        "cloudflared" => cloudflared::main(args),
        "ngrok" => ngrok::main(args),
        "netbird" => netbird::main(args),
        other => {
            eprintln!(
                "omega-fake: unknown fake `{other}` (one of tailscaled, cloudflared, ngrok, netbird)"
            );
            2
        }
    }
}
