//! `omega bench gateway`: requests/s and P50/P99 of `GET /` to the
//! `hello-http` brane through the gateway, on the node that runs it and one
//! hop away over `/omega/http/1`, beside the same component served by
//! `wasmtime serve` (wasmtime-cli) in the same run as the floor.
//!
//! Two daemons run in this process on their own threads (QUIC on
//! 127.0.0.1): `a` with `--gateway` runs brane `near`, `b` runs brane
//! `far`; resolver hosts `near.bench` and `far.bench` route to them. The
//! load generator is the same for every row: `concurrency` HTTP/1.1
//! keep-alive connections, each sending its next request when the last
//! answered, `requests` in all (a bounded loop), after a warm-up. A row
//! with a non-200 answer fails the run. The brane's own loopback server
//! (the `url` in its status, no gateway) is a row too: the gateway's cost
//! is the difference.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::bench_events::{Lab, check_images, image_file, nearest_rank, runtime};
use super::output::{CliError, Output};

/// Arguments of `omega bench gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Requests per row.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent connections to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub concurrency: Vec<usize>,
    /// The directory with `hello_http.wasm` (examples/branes built for
    /// wasm32-wasip2).
    #[arg(long, default_value = "examples/branes/target/wasm32-wasip2/release")]
    pub images: PathBuf,
    /// The `wasmtime` executable for the floor rows (wasmtime-cli 48).
    #[arg(long, default_value = "wasmtime")]
    pub wasmtime: PathBuf,
    /// Skip the `wasmtime serve` rows (e.g. no wasmtime-cli here).
    #[arg(long)]
    pub no_wasmtime: bool,
}

#[derive(Debug, Clone)]
struct Row {
    system: String,
    path: String,
    concurrency: usize,
    req_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::plain(format!("bench gateway: {e}"))
}

const MANIFEST: &str = r#"
[brane.near]
substrate = "habitat"
http = true
image = "hello-http:bench"
hosts = ["a"]

[brane.far]
substrate = "habitat"
http = true
image = "hello-http:bench"
hosts = ["b"]

[resolver.near]
host = "near.bench"
mode = "ngrok"
brane = "near"

[resolver.far]
host = "far.bench"
mode = "ngrok"
brane = "far"
"#;

/// Sends `requests` `GET /` with `Host: host` to `addr` over `concurrency`
/// keep-alive connections; (wall time, sorted latencies µs).
async fn drive(
    addr: &str,
    host: &str,
    requests: usize,
    concurrency: usize,
) -> Result<(Duration, Vec<f64>), CliError> {
    let left = Arc::new(AtomicUsize::new(requests));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, requests.max(1)) {
        let (addr, host, left) = (addr.to_owned(), host.to_owned(), left.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake {addr}: {e}"))?;
            tokio::spawn(conn);
            let mut lat = Vec::new();
            // Bounded: each pass takes one of the `requests`.
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let req = http::Request::get("/")
                    .header(http::header::HOST, &host)
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let t = Instant::now();
                send.ready().await.map_err(|e| format!("{addr}: {e}"))?;
                let resp = send
                    .send_request(req)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?
                    .to_bytes();
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                if status != http::StatusCode::OK || !body.starts_with(b"hello from omega") {
                    return Err(format!(
                        "{host} at {addr}: {status} {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await.map_err(fail)?.map_err(fail)?);
    }
    let wall = start.elapsed();
    all.sort_by(f64::total_cmp);
    Ok((wall, all))
}

/// Warms `addr` up, then one row per concurrency.
async fn rows_for(
    a: &GatewayArgs,
    system: &str,
    path: &str,
    addr: &str,
    host: &str,
) -> Result<Vec<Row>, CliError> {
    drive(addr, host, (a.requests / 10).clamp(50, 2_000), 4).await?;
    let mut rows = Vec::new();
    for &c in &a.concurrency {
        let (wall, lat) = drive(addr, host, a.requests, c).await?;
        rows.push(Row {
            system: system.into(),
            path: path.into(),
            concurrency: c.max(1),
            req_per_s: lat.len() as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE),
            p50_us: nearest_rank(&lat, 50.0),
            p99_us: nearest_rank(&lat, 99.0),
        });
    }
    Ok(rows)
}

fn free_addr() -> Result<String, CliError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(fail)?;
    Ok(l.local_addr().map_err(fail)?.to_string())
}

/// `wasmtime serve` of the same component, killed when dropped.
struct WasmtimeServe(std::process::Child);

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wasmtime_rows(a: &GatewayArgs, wasm: &std::path::Path) -> Result<Vec<Row>, CliError> {
    let hint = "install wasmtime-cli 48 (cargo install wasmtime-cli@48.0.8 --locked), \
                pass --wasmtime PATH, or --no-wasmtime";
    let version = std::process::Command::new(&a.wasmtime)
        .arg("--version")
        .output()
        .map_err(|e| CliError::invalid(format!("{}: {e}", a.wasmtime.display()), hint))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let addr = free_addr()?;
    let child = std::process::Command::new(&a.wasmtime)
        .args(["serve", "--addr", &addr])
        .arg(wasm)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| CliError::invalid(format!("{}: {e}", a.wasmtime.display()), hint))?;
    let serve = WasmtimeServe(child);
    let mut up = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        return Err(fail(format!("wasmtime serve does not listen on {addr}")));
    }
    let rows = rows_for(a, &version, "wasmtime serve (floor)", &addr, "localhost").await;
    drop(serve);
    rows
}

async fn measure(a: &GatewayArgs) -> Result<Vec<Row>, CliError> {
    let gateway = free_addr()?;
    let flags = [
        "--gateway".to_owned(),
        gateway.clone(),
        // No ngrok agent: the driver's failure shows in `omega ps`; the
        // gateway routes the hosts all the same.
        "--ngrok-api".to_owned(),
        "127.0.0.1:9".to_owned(),
    ];
    let lab = Lab::start(
        &[("a", "habitat"), ("b", "habitat")],
        "always",
        (&a.images, &["hello-http"]),
        MANIFEST,
        &flags,
    )
    .await?;
    let measured = async {
        let mut direct = None;
        if let Some(v) = lab.daemons[0].handle.view().await {
            direct = v
                .statuses
                .values()
                .flat_map(|s| s.branes.iter())
                .find(|b| b.brane == "near")
                .and_then(|b| b.url.clone());
        }
        let mut rows = Vec::new();
        if let Some(url) = direct {
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            rows.extend(
                rows_for(a, "omega", "brane's own server, no gateway", &addr, "near").await?,
            );
        }
        // The far brane becomes routable once the gateway's directory has
        // b's status (refreshed every 500 ms): wait for a 200.
        let mut ready = false;
        for _ in 0..600 {
            if drive(&gateway, "far.bench", 1, 1).await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !ready {
            return Err(fail("far.bench is not served through the gateway"));
        }
        rows.extend(
            rows_for(
                a,
                "omega",
                "gateway, replica on this node",
                &gateway,
                "near.bench",
            )
            .await?,
        );
        rows.extend(
            rows_for(
                a,
                "omega",
                "gateway, replica one hop away",
                &gateway,
                "far.bench",
            )
            .await?,
        );
        Ok(rows)
    }
    .await;
    lab.stop().await;
    let mut rows = measured?;
    if !a.no_wasmtime {
        rows.extend(wasmtime_rows(a, &image_file(&a.images, "hello-http")).await?);
    }
    Ok(rows)
}

fn find<'a>(rows: &'a [Row], path: &str, c: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.path == path && r.concurrency == c)
}

/// `omega bench gateway`.
pub(super) fn run(a: &GatewayArgs, out: &Output) -> Result<ExitCode, CliError> {
    check_images(&a.images, &["hello-http"])?;
    let rows = runtime()?.block_on(measure(a))?;
    let mut text = format!(
        "HTTP GET / to hello-http: {} requests per row, HTTP/1.1 keep-alive\n\n| system | path | connections | req/s | P50 µs | P99 µs |\n|---|---|---:|---:|---:|---:|\n",
        a.requests
    );
    for r in &rows {
        text.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
            r.system, r.path, r.concurrency, r.req_per_s, r.p50_us, r.p99_us
        ));
    }
    let mut ratios = Vec::new();
    for &c in &a.concurrency {
        let local = find(&rows, "gateway, replica on this node", c.max(1));
        let hop = find(&rows, "gateway, replica one hop away", c.max(1));
        let floor = find(&rows, "wasmtime serve (floor)", c.max(1));
        let vs_floor = local.zip(floor).map(|(l, f)| l.req_per_s / f.req_per_s);
        let hop_p50 = local.zip(hop).map(|(l, h)| h.p50_us / l.p50_us);
        if let Some(v) = vs_floor {
            text.push_str(&format!(
                "\n{c} connection(s): local req/s ÷ wasmtime serve: {v:.2} (goal ≥ 0.9)"
            ));
        }
        if let Some(v) = hop_p50 {
            text.push_str(&format!(
                "\n{c} connection(s): one-hop P50 ÷ local P50: {v:.2} (goal ≤ 2)"
            ));
        }
        ratios.push(json!({"concurrency": c.max(1), "local_vs_wasmtime_req_per_s": vs_floor, "one_hop_vs_local_p50": hop_p50}));
    }
    let machine = json!({
        "ok": true,
        "requests": a.requests,
        "rows": rows.iter().map(|r| json!({
            "system": r.system,
            "path": r.path,
            "concurrency": r.concurrency,
            "req_per_s": r.req_per_s,
            "p50_us": r.p50_us,
            "p99_us": r.p99_us,
        })).collect::<Vec<_>>(),
        "ratios": ratios,
    });
    out.print(text.trim_end(), machine);
    Ok(ExitCode::SUCCESS)
}
