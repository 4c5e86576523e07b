//! The `omega` command line.
//!
//! Every verb prints text for people by default and one JSON document on
//! stdout with `--json`. Exit codes, the same for every verb:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (for `validate` and `token verify`: everything was valid) |
//! | 1 | invalid input or a failed operation: a bad manifest, token or key, a file that cannot be read |
//! | 2 | usage error: unknown verb or flag, missing argument (clap's own code) |
//!
//! Errors are written for people: what went wrong, where (file:line:col,
//! token field, path), and how to fix it.

mod bench;
mod bench_events;
mod bench_gateway;
mod bench_simulate;
mod dev;
mod dispatch;
mod events;
mod guest;
mod http_serve;
mod id;
mod image;
mod jetstream;
mod manifest;
mod mesh;
mod node;
mod output;
mod peers;
mod run;
mod simulate;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::CliError;
use output::Output;

/// Omega: a leaderless peer-to-peer mesh runtime.
#[derive(Debug, Parser)]
#[command(name = "omega", version, about, long_about = None)]
pub struct Cli {
    /// Print one machine-readable JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The key file of the identity to act as.
    /// [default: $OMEGA_HOME/identity.key, OMEGA_HOME defaults to ~/.omega]
    #[arg(long, global = true, env = "OMEGA_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs of `omega`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or show this user's identity (an Ed25519 key and its did:key).
    #[command(subcommand)]
    Id(id::IdCommand),
    /// Validate ZGraph manifests and print each one's plan hash.
    Validate(manifest::ValidateArgs),
    /// Render a manifest's graph as a text tree, Graphviz DOT or Mermaid.
    Graph(manifest::GraphArgs),
    /// Convert a manifest to TOML, JSON or YAML.
    Fmt(manifest::FmtArgs),
    /// Issue, delegate, invoke, inspect and verify capability tokens (ACTs).
    #[command(subcommand)]
    Token(Box<token::TokenCommand>),
    /// Create a mesh and invite nodes into it.
    #[command(subcommand)]
    Mesh(mesh::MeshCommand),
    /// Run the mesh daemon, or manage members (`omega node revoke`).
    Node(Box<node::NodeArgs>),
    /// List the mesh members a running node knows.
    Peers(peers::NodeDir),
    /// Show a running node's status.
    Status(peers::NodeDir),
    /// Run one brane component on one event and print what it emitted.
    Run(run::RunArgs),
    /// Run a whole manifest in this process: standard branes local, events in memory.
    Dev(dev::DevArgs),
    /// Store components in the content-addressed image store and list them.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Apply a manifest to the mesh (signed with your key; works from any node).
    Apply(dispatch::ApplyArgs),
    /// Delete a manifest from the mesh.
    Delete(dispatch::DeleteArgs),
    /// Desired versus actual state: every brane, where it should run and where it runs.
    Ps(peers::NodeDir),
    /// One brane: placement, why each other node was skipped, actual state, recent events.
    Describe(dispatch::DescribeArgs),
    /// Emit an event into a manifest's graph (durable once answered).
    Emit(events::EmitArgs),
    /// Follow the events processed on a node, as they pass.
    Tail(events::TailArgs),
    /// The dead-letter queue of a node: list, show, replay, drop.
    #[command(subcommand)]
    Dlq(events::DlqCommand),
    /// Benchmarks that print tables (`coldstart`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Build, store and probe guest images of frontier (microVM) branes.
    #[command(subcommand)]
    Guest(guest::GuestCommand),
    /// Simulate a mesh before you build it: the node brains the daemon runs, in virtual time, with faults and invariants.
    Simulate(simulate::SimulateArgs),
}

/// Parse the process arguments, run the verb, print, and return the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let out = Output::new(cli.json);
    match run(&cli, &out) {
        Ok(code) => code,
        Err(err) => {
            out.error(&err);
            ExitCode::from(1)
        }
    }
}

/// Run one parsed command line. Returns the exit code on success paths that
/// still report a failure (e.g. `validate` with an invalid file).
pub fn run(cli: &Cli, out: &Output) -> Result<ExitCode, CliError> {
    let key_path = cli
        .key
        .clone()
        .unwrap_or_else(crate::keystore::default_key_path);
    match &cli.command {
        Command::Id(cmd) => id::run(cmd, &key_path, out),
        Command::Validate(args) => manifest::validate(args, out),
        Command::Graph(args) => manifest::graph(args, out),
        Command::Fmt(args) => manifest::fmt(args, out),
        Command::Token(cmd) => token::run(cmd, &key_path, out),
        Command::Mesh(cmd) => mesh::run(cmd, out),
        Command::Node(args) => node::run(args, out),
        Command::Peers(dir) => peers::peers(dir, out),
        Command::Status(dir) => peers::status(dir, out),
        Command::Run(args) => run::run(args, out),
        Command::Dev(args) => dev::run(args, out),
        Command::Image(cmd) => image::run(cmd, &key_path, out),
        Command::Apply(args) => dispatch::apply(args, &key_path, out),
        Command::Delete(args) => dispatch::delete(args, &key_path, out),
        Command::Ps(dir) => dispatch::ps(dir, out),
        Command::Describe(args) => dispatch::describe(args, out),
        Command::Emit(args) => events::emit(args, &key_path, out),
        Command::Tail(args) => events::tail(args, out),
        Command::Dlq(cmd) => events::dlq(cmd, out),
        Command::Bench(cmd) => bench::run(cmd, out),
        Command::Guest(cmd) => guest::run(cmd, &key_path, out),
        Command::Simulate(args) => simulate::run_cmd(args, out),
    }
}

#[cfg(test)]
mod tests {
    /// Every verb's flags are consistent (no flag defined twice, e.g. a
    /// verb's own `--key` beside the global identity `--key`).
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
