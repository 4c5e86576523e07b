//! The `omega` binary; everything lives in [`omega_node::cli`].

fn main() -> std::process::ExitCode {
    omega_node::cli::main()
}
