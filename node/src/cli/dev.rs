//! `omega dev MANIFEST`: the whole graph in one process. Every standard
//! brane runs locally; events flow along the edges in memory; type rules
//! are enforced (a brane emits only its outgoing edges' types); logs stream
//! to stderr tagged with brane names. Frontier branes boot in a microVM
//! when a backend is available (`--frontier-backend`, default `auto`:
//! QEMU with KVM if a measured boot says it is usable, else TCG) from
//! their guest image (`--guest NAME=DIR`, else the store: `omega guest
//! push`), and events flow standard → frontier → standard; without a
//! backend they are reported as skipped with the reason, and
//! `gpu = "passthrough"` without a GPU to pass through is refused. HTTP branes (`http = true`) are served on
//! loopback (`--http-listen`), one fresh instance per request, until Ctrl-C
//! or `--serve-for SECS`.
//!
//! Images: `--image NAME:TAG=PATH.wasm` overrides, else the local image
//! store (`omega image push`). Grants come from each brane's
//! `[brane.NAME.grants]` in the manifest; the `--dir` and `--allow-http`
//! flags add to them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use omega_runtime::frontier::image::open_guest_dir;
use omega_runtime::frontier::qemu::{Accel, QemuBackend, QemuConfig};
use omega_runtime::frontier::{Backend, reclaim_orphans};
use omega_runtime::{BraneLimits, BraneSpec, Edge, Grants, Pipeline};
use omega_zgraph::{Capability, Format};
use serde_json::json;

use super::http_serve::{self, DEFAULT_LISTEN};
use super::image::DataDir;
use super::output::{CliError, Output};
use super::run::{emitted_line, parse_dir, read_wasm, rt_err, split_pair, stderr_logs};

/// Most events delivered per injected event (a guard against emit cycles).
const MAX_EVENTS_PER_INJECT: usize = 10_000;
/// The manifest name events carry in `omega dev`.
const DEV_MANIFEST: &str = "dev";

/// Runs the injected events through the node brain's delivery machine
/// (`omega_gossip::events::Delivery`, the daemon's own), every brane on
/// this one node, the store in memory and the clock virtual (a retry's
/// backoff passes at once). Prints one line per delivery; returns the
/// lines, their JSON, and how many processings failed.
fn deliver(
    pipeline: &Pipeline,
    plan: &omega_zgraph::Plan,
    skipped: &[(String, String)],
    injects: &[(String, String, String)],
    out: &Output,
) -> Result<(Vec<String>, Vec<serde_json::Value>, u64), CliError> {
    use omega_gossip::events::{Act, Delivery, DeliveryConfig, NewEvent, Topology};
    use omega_gossip::node::{BraneKey, CommandId};
    use omega_gossip::{Mono, NodeId, Now, Unix};
    let me = NodeId::from(omega_identity::Keypair::from_seed([0x0d; 32]).public());
    let mut topology = Topology::default();
    topology
        .edges
        .insert(DEV_MANIFEST.into(), plan.edges().to_vec());
    topology.schemas.insert(
        DEV_MANIFEST.into(),
        plan.events()
            .iter()
            .filter_map(|(ty, e)| e.schema.clone().map(|s| (ty.clone(), s)))
            .collect(),
    );
    for (name, b) in plan.branes() {
        let key = BraneKey::new(DEV_MANIFEST, name);
        if b.http {
            topology.http.insert(key);
            continue;
        }
        topology.branes.insert(key.clone(), 1);
        if pipeline.member(name).is_some() {
            topology.replicas.insert(key, vec![me]);
        }
    }
    let mut now = Now {
        mono: Mono(0),
        unix: Unix(crate::unix_now().0),
    };
    let start = now.unix.0;
    let mut d = Delivery::new(DeliveryConfig::default(), me, [0x0d; 32], now);
    d.set_topology(topology);
    let say = |line: &str| out.say(line);
    for (i, (target, ty, payload)) in injects.iter().enumerate() {
        d.emit(
            CommandId(i as u64),
            vec![NewEvent {
                to: BraneKey::new(DEV_MANIFEST, target),
                ty: ty.clone(),
                key: String::new(),
                payload: payload.as_bytes().to_vec(),
            }],
        );
    }
    let (mut lines, mut deliveries) = (Vec::new(), Vec::new());
    let budget = MAX_EVENTS_PER_INJECT * injects.len().max(1);
    let mut steps = 0usize;
    loop {
        let Some(act) = d.poll_act() else {
            // Nothing to do now: let virtual time pass to the next retry.
            match d.poll_timeout() {
                Some(t) if steps < budget => {
                    now = Now {
                        mono: t,
                        unix: Unix(start + t.0),
                    };
                    d.handle_timeout(now);
                    continue;
                }
                _ => break,
            }
        };
        match act {
            Act::Persist { txn, .. } => d.on_persisted(txn, Ok(())),
            Act::Process(p) => {
                steps += 1;
                let event = crate::daemon::runner::brane_event(&p.event);
                let brane = &p.to.brane;
                let member = pipeline.member(brane);
                let result = crate::daemon::runner::run_event(member.as_deref(), &event);
                let line = match &result {
                    Ok(e) if e.is_empty() => format!("{brane} <- {} {}: ok", event.ty, event.id),
                    Ok(e) => format!(
                        "{brane} <- {} {}: emitted {}",
                        event.ty,
                        event.id,
                        e.iter().map(emitted_line).collect::<Vec<_>>().join("; ")
                    ),
                    Err(e) => format!(
                        "{brane} <- {} {} (attempt {}): FAILED {e}",
                        event.ty, event.id, event.attempt
                    ),
                };
                say(&line);
                deliveries.push(json!({
                    "brane": brane, "event": event.id, "type": event.ty,
                    "attempt": event.attempt, "ok": result.is_ok(),
                    "error": result.as_ref().err().map(ToString::to_string),
                }));
                lines.push(line);
                d.on_processed(p.ticket, result.map(crate::daemon::runner::emits));
            }
            Act::Emitted {
                result: Err(e),
                cmd,
                ..
            } => {
                let (target, ty, _) = &injects[cmd.0 as usize];
                return Err(CliError::plain(format!("--event {target}:{ty}: {e}")));
            }
            Act::Send { batch, .. } => d.on_batch_failed(batch, "omega dev runs on one node"),
            _ => {}
        }
    }
    let report = d.report();
    for e in report.edges.iter().filter(|e| e.queued > 0) {
        let why = skipped.iter().find(|(b, _)| *b == e.to).map_or_else(
            || e.stalled.clone().unwrap_or_default(),
            |(b, w)| format!("{b} skipped: {w}"),
        );
        say(&format!(
            "{} <- {}: {} event(s) not delivered ({why})",
            e.to, e.on, e.queued
        ));
    }
    if report.dead_letters > 0 {
        say(&format!(
            "{} event(s) dead-lettered after their last attempt",
            report.dead_letters
        ));
    }
    if steps >= budget {
        say(&format!(
            "delivery limit of {budget} reached (a cycle of emits?)"
        ));
    }
    Ok((lines, deliveries, report.failed))
}

/// Arguments of `omega dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The ZGraph manifest (TOML, JSON or YAML).
    pub manifest: PathBuf,
    /// Use this file for an image reference, `NAME:TAG=PATH.wasm`.
    #[arg(long = "image", value_name = "NAME:TAG=PATH")]
    pub images: Vec<String>,
    /// Inject an event, `BRANE:TYPE=PAYLOAD`. Default: one empty `start`
    /// event into every brane that has no incoming edge.
    #[arg(long = "event", value_name = "BRANE:TYPE=PAYLOAD")]
    pub events: Vec<String>,
    /// Grant a directory to a brane, `BRANE=HOST_DIR:GUEST_DIR[:rw]`.
    #[arg(long = "dir", value_name = "BRANE=HOST:GUEST[:rw]")]
    pub dirs: Vec<String>,
    /// Allow a brane outbound HTTP to a host, `BRANE=HOST`.
    #[arg(long = "allow-http", value_name = "BRANE=HOST")]
    pub allow_http: Vec<String>,
    /// Where to serve an `http = true` brane, `BRANE=127.0.0.1:PORT`
    /// (loopback only). Default: 127.0.0.1 on an ephemeral port.
    #[arg(long = "http-listen", value_name = "BRANE=ADDR")]
    pub http_listen: Vec<String>,
    /// With HTTP branes: stop serving after this many seconds instead of
    /// at Ctrl-C.
    #[arg(long = "serve-for", value_name = "SECS")]
    pub serve_for: Option<u64>,
    /// Frontier (microVM) backend: `auto` (QEMU, KVM only if a measured
    /// boot says it is usable, else TCG), `qemu-tcg`, `qemu-kvm`, or `none`
    /// (skip frontier branes).
    #[arg(
        long = "frontier-backend",
        value_name = "BACKEND",
        default_value = "auto"
    )]
    pub frontier_backend: String,
    /// Use a built guest directory for a guest name, `NAME=DIR` (`omega
    /// guest build` output). Default: the image store (`omega guest push`).
    #[arg(long = "guest", value_name = "NAME=DIR")]
    pub guests: Vec<String>,
    /// Data directory (image store and precompiled cache).
    #[command(flatten)]
    pub data: DataDir,
}

/// The frontier backend of one `omega dev` run, chosen on first use.
struct Frontier {
    choice: String,
    backend: Option<Result<QemuBackend, String>>,
}

impl Frontier {
    fn new(choice: &str) -> Result<Self, CliError> {
        if !crate::frontier::CHOICES.contains(&choice) {
            return Err(CliError::invalid(
                format!("unknown --frontier-backend {choice:?}"),
                "use auto, qemu-tcg, qemu-kvm or none",
            ));
        }
        Ok(Self {
            choice: choice.to_string(),
            backend: None,
        })
    }

    fn backend(&mut self, data: &DataDir) -> Result<&QemuBackend, String> {
        let choice = self.choice.clone();
        let b = self.backend.get_or_insert_with(|| {
            let run_root = crate::frontier::run_root(&data.path());
            if let Ok(n) = reclaim_orphans(&run_root)
                && n > 0
            {
                eprintln!("[omega] reclaimed {n} microVM(s) left by a crashed run");
            }
            let config = QemuConfig {
                run_root,
                log: stderr_logs(),
                ..QemuConfig::default()
            };
            let with = |accel| {
                QemuBackend::new(QemuConfig {
                    accel,
                    ..config.clone()
                })
            };
            match choice.as_str() {
                "qemu-tcg" => Ok(with(Accel::Tcg)),
                "qemu-kvm" => Ok(with(Accel::Kvm)),
                "auto" => {
                    let selection = crate::frontier::select("auto", config, true);
                    for r in &selection.probes {
                        eprintln!(
                            "[omega] frontier probe {}: {} ({})",
                            r.backend,
                            if r.usable { "usable" } else { "not usable" },
                            r.reason
                        );
                    }
                    selection.backend
                }
                _ => Err("disabled by --frontier-backend none".into()),
            }
        });
        b.as_ref().map_err(Clone::clone)
    }

    /// Boot one frontier brane; `Ok(Err(why))` means skipped (or refused).
    fn boot(
        &mut self,
        bname: &str,
        b: &omega_zgraph::Brane,
        edges: &[Edge],
        guests: &BTreeMap<&str, &str>,
        data: &DataDir,
    ) -> Result<Result<Box<dyn omega_runtime::frontier::Vm>, String>, CliError> {
        if self.choice == "none" {
            return Ok(Err("disabled by --frontier-backend none".into()));
        }
        let (guest, gpu) = match crate::frontier::requirements(b) {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        let image = match guests.get(guest) {
            Some(dir) => open_guest_dir(std::path::Path::new(dir)).map_err(|e| {
                CliError::invalid(
                    format!("brane {bname}: --guest {guest}={dir}: {e}"),
                    "point it at an `omega guest build --out DIR` directory",
                )
            })?,
            None => match crate::frontier::resolve_stored(&data.path(), guest) {
                Ok(image) => image,
                Err(e) => return Ok(Err(format!("{e}; or pass --guest {guest}=DIR"))),
            },
        };
        let backend = match self.backend(data) {
            Ok(b) => b,
            Err(why) => return Ok(Err(why)),
        };
        let spec = crate::frontier::vm_spec(bname, b, image, omega_runtime::emits_of(edges, bname));
        let vm = crate::frontier::boot(backend, &spec, gpu).map_err(CliError::plain)?;
        eprintln!(
            "[omega] {bname}: {} microVM ready in {} ms ({})",
            backend.name(),
            vm.booted_in().as_millis(),
            vm.agent()
        );
        Ok(Ok(Box::new(vm)))
    }
}

/// Run `omega dev`.
pub(super) fn run(args: &DevArgs, out: &Output) -> Result<ExitCode, CliError> {
    let source = crate::bounded::read_to_string(&args.manifest, crate::bounded::MANIFEST)?;
    let name = args.manifest.display().to_string();
    let format = Format::from_path(&args.manifest).unwrap_or(Format::Toml);
    let plan =
        omega_zgraph::load(&source, &name, format).map_err(|d| CliError::plain(format!("{d}")))?;
    let overrides: BTreeMap<&str, &str> = args
        .images
        .iter()
        .map(|s| split_pair(s, "--image NAME:TAG=PATH"))
        .collect::<Result<_, _>>()?;
    let mut grants: BTreeMap<&str, Grants> = BTreeMap::new();
    for d in &args.dirs {
        let (brane, dir) = split_pair(d, "--dir BRANE=HOST:GUEST")?;
        grants.entry(brane).or_default().dirs.push(parse_dir(dir)?);
    }
    for h in &args.allow_http {
        let (brane, host) = split_pair(h, "--allow-http BRANE=HOST")?;
        grants
            .entry(brane)
            .or_default()
            .http_hosts
            .push(host.into());
    }
    let edges: Vec<Edge> = plan
        .edges()
        .iter()
        .map(|e| Edge {
            from: e.from.clone(),
            to: e.to.clone(),
            on: e.on.clone(),
        })
        .collect();
    let mut listen = http_serve::parse_listen(&args.http_listen)?;
    let mut http = Vec::new();
    let rt = args.data.runtime()?;
    let mut pipeline = Pipeline::new(edges.clone(), MAX_EVENTS_PER_INJECT);
    let mut skipped = Vec::new();
    let guests: BTreeMap<&str, &str> = args
        .guests
        .iter()
        .map(|s| split_pair(s, "--guest NAME=DIR"))
        .collect::<Result<_, _>>()?;
    let mut frontier = Frontier::new(&args.frontier_backend)?;
    for (bname, b) in plan.branes() {
        if b.capability == Capability::Frontier {
            match frontier.boot(bname, b, &edges, &guests, &args.data)? {
                Ok(vm) => pipeline.add_frontier(bname.clone(), vm),
                Err(why) => {
                    skipped.push((bname.clone(), format!("frontier (microVM) brane: {why}")))
                }
            }
            continue;
        }
        let Some(image_ref) = &b.image else {
            skipped.push((bname.clone(), "no image".to_string()));
            continue;
        };
        let image_text = image_ref.to_string();
        let bytes = match overrides.get(image_text.as_str()) {
            Some(path) => read_wasm(std::path::Path::new(path))?,
            None => {
                let store = args.data.images()?;
                let hash = match image_text.parse::<omega_identity::ContentId>() {
                    Ok(h) => h,
                    Err(_) => store.resolve(&image_text.parse().map_err(rt_err)?).map_err(|e| {
                        CliError::invalid(
                            format!("brane {bname}: image {image_text}: {e}"),
                            format!("omega image push FILE --name {image_text}, or --image {image_text}=FILE"),
                        )
                    })?,
                };
                store.get(&hash).map_err(rt_err)?
            }
        };
        let image = rt
            .load(&bytes)
            .map_err(|e| CliError::plain(format!("brane {bname}: {e}")))?;
        let limits = BraneLimits::from_manifest(&b.limits);
        let spec = BraneSpec {
            name: bname.clone(),
            config: b.config.clone(),
            limits,
            grants: grants
                .remove(bname.as_str())
                .unwrap_or_default()
                .with_manifest(&b.grants),
            emits: Some(omega_runtime::emits_of(&edges, bname)),
            ..BraneSpec::default()
        };
        if b.http {
            let brane = rt
                .http_brane(&image, spec, stderr_logs())
                .map_err(|e| CliError::plain(format!("brane {bname}: {e}")))?;
            let addr = listen.remove(bname.as_str()).unwrap_or(DEFAULT_LISTEN);
            http.push(http_serve::bind(brane, addr, out)?);
            continue;
        }
        let brane = rt
            .brane(&image, spec, stderr_logs())
            .map_err(|e| CliError::plain(format!("brane {bname}: {e}")))?;
        pipeline.add(brane);
    }
    if let Some(unknown) = listen.keys().next() {
        return Err(CliError::plain(format!(
            "--http-listen for unknown, skipped or non-HTTP brane {unknown}"
        )));
    }
    if let Some(unknown) = grants.keys().next() {
        return Err(CliError::plain(format!(
            "grant for unknown or skipped brane {unknown}"
        )));
    }
    for (b, why) in &skipped {
        eprintln!("[omega] skipped {b}: {why}");
    }
    let mut injects = Vec::new();
    for e in &args.events {
        let (target, rest) = e.split_once(':').ok_or_else(|| {
            CliError::invalid(format!("bad --event {e:?}"), "write BRANE:TYPE=PAYLOAD")
        })?;
        let (ty, payload) = split_pair(rest, "--event BRANE:TYPE=PAYLOAD")?;
        injects.push((target.to_string(), ty.to_string(), payload.to_string()));
    }
    if injects.is_empty() {
        for b in pipeline.branes() {
            if !edges.iter().any(|e| e.to == b) {
                injects.push((b.to_string(), "start".into(), String::new()));
            }
        }
    }
    let (lines, deliveries, failures) = deliver(&pipeline, &plan, &skipped, &injects, out)?;
    if out.is_json() {
        out.print(
            "",
            json!({
                "ok": failures == 0,
                "deliveries": deliveries,
                "skipped": skipped.iter().map(|(b, w)| json!({"brane": b, "reason": w})).collect::<Vec<_>>(),
                "serving": http.iter().map(|s| json!({"brane": s.name(), "url": s.url()})).collect::<Vec<_>>(),
            }),
        );
    } else {
        out.say(format!(
            "{} deliveries, {failures} failed, {} branes skipped",
            lines.len(),
            skipped.len()
        ));
    }
    http_serve::serve(http, args.serve_for)?;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
