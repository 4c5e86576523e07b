//! `omega validate`, `omega graph`, `omega fmt`: ZGraph manifests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use omega_zgraph::{Diagnostics, Format, Plan, render};
use serde_json::{Value, json};

use super::output::stderr_text;
use super::{CliError, Output};

/// A manifest syntax, as a command-line value.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Syntax {
    /// TOML (`.toml`)
    Toml,
    /// JSON (`.json`)
    Json,
    /// YAML (`.yaml`, `.yml`)
    Yaml,
}

impl From<Syntax> for Format {
    fn from(s: Syntax) -> Self {
        match s {
            Syntax::Toml => Format::Toml,
            Syntax::Json => Format::Json,
            Syntax::Yaml => Format::Yaml,
        }
    }
}

/// `omega validate FILE…`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files (`-` reads standard input; then --format is required).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Input syntax, when the file extension does not tell it.
    #[arg(long, value_enum)]
    format: Option<Syntax>,
}

/// How `omega graph` draws.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum GraphStyle {
    /// A readable tree of branes and edges.
    Text,
    /// Graphviz DOT (`omega graph m.toml --format dot | dot -Tsvg`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
}

/// `omega graph FILE`
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The manifest file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Output style.
    #[arg(long, value_enum, default_value = "text")]
    format: GraphStyle,
    /// Input syntax, when the file extension does not tell it.
    #[arg(long, value_enum)]
    input_format: Option<Syntax>,
}

/// `omega fmt FILE --to SYNTAX`
#[derive(Debug, Args)]
pub struct FmtArgs {
    /// The manifest file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Output syntax.
    #[arg(long, value_enum)]
    to: Syntax,
    /// Input syntax, when the file extension does not tell it.
    #[arg(long, value_enum)]
    format: Option<Syntax>,
    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
}

/// Why a manifest did not load: unreadable, or invalid (with diagnostics).
enum LoadError {
    Cli(CliError),
    Invalid(Box<Diagnostics>),
}

/// Read a manifest's bytes: at most one byte more than the largest manifest,
/// so a huge file costs no more than that; `load_bytes` refuses the excess.
fn read_source(path: &Path, syntax: Option<Syntax>) -> Result<(Vec<u8>, Format), CliError> {
    let format = match syntax {
        Some(s) => s.into(),
        None => Format::from_path(path).ok_or_else(|| {
            CliError::invalid(
                format!("cannot tell the syntax of {} from its name", path.display()),
                "name it *.toml, *.json, *.yaml or *.yml, or pass --format toml|json|yaml",
            )
        })?,
    };
    let source = crate::bounded::read_up_to(path, crate::bounded::MANIFEST)?;
    Ok((source, format))
}

fn load(path: &Path, syntax: Option<Syntax>) -> Result<Plan, LoadError> {
    let (source, format) = read_source(path, syntax).map_err(LoadError::Cli)?;
    omega_zgraph::load_bytes(&source, &path.display().to_string(), format)
        .map_err(|d| LoadError::Invalid(Box::new(d)))
}

fn diagnostics_json(d: &Diagnostics) -> Value {
    Value::Array(
        d.errors()
            .iter()
            .map(|e| {
                json!({
                    "code": e.kind.code(),
                    "message": e.message,
                    "help": e.help,
                    "file": e.file,
                    "line": e.line,
                    "column": e.column,
                })
            })
            .collect(),
    )
}

/// Print diagnostics for people, with source snippets (`Diagnostics`
/// escapes the manifest's control characters in both).
fn print_diagnostics(d: Diagnostics) {
    stderr_text(&format!("{:?}", miette::Report::new(d)));
}

/// Load one manifest for a verb that needs a valid plan; invalid manifests
/// are reported here and become exit code 1.
fn load_or_report(
    path: &Path,
    syntax: Option<Syntax>,
    out: &Output,
) -> Result<Result<Plan, ExitCode>, CliError> {
    match load(path, syntax) {
        Ok(plan) => Ok(Ok(plan)),
        Err(LoadError::Cli(e)) => Err(e),
        Err(LoadError::Invalid(d)) => {
            if out.is_json() {
                out.print(
                    "",
                    json!({ "ok": false, "file": path.display().to_string(), "errors": diagnostics_json(&d) }),
                );
            } else {
                print_diagnostics(*d);
            }
            Ok(Err(ExitCode::from(1)))
        }
    }
}

pub(super) fn validate(args: &ValidateArgs, out: &Output) -> Result<ExitCode, CliError> {
    let mut reports = Vec::new();
    let mut all_ok = true;
    for path in &args.files {
        let file = path.display().to_string();
        match load(path, args.format) {
            Ok(plan) => {
                let hash = plan.hash().to_string();
                out.say(format!(
                    "ok  {file}  plan {hash}  ({} branes, {} edges)",
                    plan.branes().len(),
                    plan.edges().len()
                ));
                reports.push(json!({
                    "file": file, "ok": true, "plan_hash": hash,
                    "branes": plan.branes().len(), "edges": plan.edges().len(),
                }));
            }
            Err(LoadError::Cli(e)) => {
                all_ok = false;
                if !out.is_json() {
                    out.error(&e);
                }
                reports.push(json!({ "file": file, "ok": false, "error": e.to_string() }));
            }
            Err(LoadError::Invalid(d)) => {
                all_ok = false;
                reports.push(json!({ "file": file, "ok": false, "errors": diagnostics_json(&d) }));
                if !out.is_json() {
                    print_diagnostics(*d);
                }
            }
        }
    }
    if out.is_json() {
        out.print("", json!({ "ok": all_ok, "manifests": reports }));
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) fn graph(args: &GraphArgs, out: &Output) -> Result<ExitCode, CliError> {
    let plan = match load_or_report(&args.file, args.input_format, out)? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let (style, drawing) = match args.format {
        GraphStyle::Text => ("text", render::text(&plan)),
        GraphStyle::Dot => ("dot", render::dot(&plan)),
        GraphStyle::Mermaid => ("mermaid", render::mermaid(&plan)),
    };
    out.print(
        drawing.trim_end(),
        json!({ "ok": true, "format": style, "plan_hash": plan.hash().to_string(), "graph": drawing }),
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn fmt(args: &FmtArgs, out: &Output) -> Result<ExitCode, CliError> {
    let plan = match load_or_report(&args.file, args.format, out)? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let text = plan.to_format(args.to.into());
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).map_err(|source| CliError::Io {
                path: path.display().to_string(),
                source,
            })?;
            out.print(
                format!("wrote {}", path.display()),
                json!({ "ok": true, "output": path.display().to_string(), "plan_hash": plan.hash().to_string() }),
            );
        }
        None => out.print(
            text.trim_end(),
            json!({ "ok": true, "manifest": text, "plan_hash": plan.hash().to_string() }),
        ),
    }
    Ok(ExitCode::SUCCESS)
}
