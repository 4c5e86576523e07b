//! `omega-fake`: faithful local fakes of tailscaled's LocalAPI,
//! `cloudflared`, the ngrok agent and `netbird` (see
//! `omega_resolvers::fake`). Run as `omega-fake NAME ARGS…` or through a
//! symlink called NAME.

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.remove(0);
    let called = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if called == "omega-fake" || called.is_empty() {
        if args.is_empty() {
            eprintln!("usage: omega-fake tailscaled|cloudflared|ngrok|netbird ARGS…");
            std::process::exit(2);
        }
        args.remove(0)
    } else {
        called
    };
    std::process::exit(omega_resolvers::fake::main(&name, args));
}
