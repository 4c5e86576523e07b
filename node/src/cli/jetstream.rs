//! JetStream half of the durable-pipeline benchmark.
//!
//! [`run_with_ack`] starts a private `nats-server` with JetStream (file storage, fresh
//! temp store dir, ephemeral port on 127.0.0.1), publishes `events` messages
//! with publish acks, consumes them through a durable pull consumer with
//! explicit acks, and returns one [`Row`] of results. The server is killed and
//! its store dir removed when the run ends, also on error or panic.
//!
//! Needs `async-nats` (feature `jetstream`),
//! `futures` and `tokio` (`rt`, `macros`, `time`, `sync`, `io-util`,
//! `process`).
//!
//! Definitions used by the measurement:
//! * a message is *done* when its PubAck has been received by the producer
//!   **and** the consumer's ack for it has completed (with
//!   [`AckMode::DoubleAck`]: the server confirmed the ack; with
//!   [`AckMode::Ack`]: the `+ACK` was handed to the client connection);
//! * latency of a message = time from just before the publish call to the
//!   moment it is done;
//! * in-flight bound: message `i + inflight` is not published before message
//!   `i` (and every message before it) is done;
//! * throughput = `events` / wall time from the first publish to the last
//!   message done;
//! * p50/p99 are nearest-rank percentiles over all per-message latencies.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream::{self, StorageType},
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// Any single wait (server start, publish, PubAck, fetch, ack) that makes no
/// progress for this long aborts the run with `Err`.
const STALL: Duration = Duration::from_secs(30);
/// Upper bound for the server to print "Server is ready".
const SERVER_START: Duration = Duration::from_secs(10);
const STREAM: &str = "JSBENCH";
const SUBJECT: &str = "jsbench.events";
const DURABLE: &str = "jsbench";

/// One result line of the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// Always `"jetstream"`.
    pub system: &'static str,
    /// Storage / durability / ack mode, e.g. `"file, default sync, double_ack"`.
    pub mode: String,
    /// End-to-end in-flight bound used for the run.
    pub inflight: usize,
    /// `events` divided by the total wall time of the workload.
    pub msgs_per_s: f64,
    /// Median per-message latency in microseconds (nearest rank).
    pub p50_us: f64,
    /// 99th percentile per-message latency in microseconds (nearest rank).
    pub p99_us: f64,
}

/// How the consumer acknowledges each message (both use `AckKind::Ack`,
/// i.e. `+ACK`, under `AckPolicy::Explicit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMode {
    /// `Message::ack()`: fire-and-forget `+ACK`; done when the ack is handed
    /// to the client connection.
    Ack,
    /// `Message::double_ack()`: `+ACK` as a request; done when the server has
    /// confirmed it processed the ack (the stricter of the two).
    DoubleAck,
}

impl AckMode {
    fn label(self) -> &'static str {
        match self {
            AckMode::Ack => "ack",
            AckMode::DoubleAck => "double_ack",
        }
    }
}

/// Runs the JetStream workload with the consumer acking in mode `ack` and
/// returns one row.
///
/// Starts `nats-server` (binary from `$NATS_SERVER`, else `nats-server` on
/// `PATH`, else `/usr/sbin/nats-server`) with JetStream on a fresh temp store
/// dir and an ephemeral 127.0.0.1 port, runs the workload, stops the server
/// (also on error/panic: kill on drop) and returns the measured row.
///
/// Errors if an argument is zero (or `payload_bytes < 8`), if the server
/// cannot be started, or if any step makes no progress for 30 s.
pub(crate) async fn run_with_ack(
    events: usize,
    payload_bytes: usize,
    inflight: usize,
    ack: AckMode,
) -> Result<Row, String> {
    if events == 0 || inflight == 0 {
        return Err("events and inflight must be at least 1".into());
    }
    if payload_bytes < 8 {
        return Err("payload_bytes must be at least 8 (message index)".into());
    }
    let server = Server::start().await?;
    // `workload` owns every client handle, so all connections are closed
    // before the server goes away.
    let measured = workload(server.port, events, payload_bytes, inflight, ack).await;
    let stopped = server.stop().await;
    let (elapsed, mut lat_us) = measured?;
    stopped?;
    lat_us.sort_by(f64::total_cmp);
    Ok(Row {
        system: "jetstream",
        mode: format!("file, default sync, {}", ack.label()),
        inflight,
        msgs_per_s: events as f64 / elapsed.as_secs_f64(),
        p50_us: nearest_rank(&lat_us, 50.0),
        p99_us: nearest_rank(&lat_us, 99.0),
    })
}

/// Nearest-rank percentile of an ascending slice (0.0 for an empty slice).
fn nearest_rank(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/// A running `nats-server`; killed (and its store dir removed) on drop.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Server {
    async fn start() -> Result<Server, String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "jsbench-{}-{}-{}",
            std::process::id(),
            nanos,
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // `create_dir` (not `_all`) fails if it exists: the store is fresh.
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // From here on the guard owns the dir (and later the child).
        let mut server = Server {
            child: None,
            dir,
            port: 0,
        };

        let mut child = spawn_server(&server.dir)?;
        let stderr = child.stderr.take();
        server.child = Some(child);
        let stderr = stderr.ok_or("nats-server stderr not captured")?;

        let mut lines = BufReader::new(stderr).lines();
        let mut log = Vec::new();
        let mut port = None;
        let deadline = tokio::time::Instant::now() + SERVER_START;
        // Bounded: the deadline ends the loop even if the server keeps logging.
        loop {
            let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Err(_) => {
                    return Err(format!(
                        "nats-server not ready after {SERVER_START:?}; log:\n{}",
                        log.join("\n")
                    ));
                }
                Ok(Err(e)) => return Err(format!("reading nats-server log: {e}")),
                Ok(Ok(None)) => {
                    return Err(format!(
                        "nats-server exited before ready; log:\n{}",
                        log.join("\n")
                    ));
                }
                Ok(Ok(Some(line))) => line,
            };
            const LISTEN: &str = "Listening for client connections on ";
            if let Some(pos) = line.find(LISTEN) {
                let addr = line[pos + LISTEN.len()..].trim();
                let p = addr
                    .strip_prefix("127.0.0.1:")
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| format!("unexpected listen address {addr:?}"))?;
                port = Some(p);
            }
            let ready = line.contains("Server is ready");
            if log.len() < 200 {
                log.push(line);
            }
            if ready {
                break;
            }
        }
        server.port = port.ok_or_else(|| {
            format!(
                "nats-server ready but no client port logged; log:\n{}",
                log.join("\n")
            )
        })?;
        // Keep draining the log so the server never blocks on a full pipe;
        // the task ends when the server's stderr closes.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(server)
    }

    /// Kills the server, waits for it to exit and removes the store dir.
    async fn stop(mut self) -> Result<(), String> {
        let killed = match self.child.take() {
            Some(mut child) => match timeout(STALL, child.kill()).await {
                Ok(r) => r.map_err(|e| format!("kill nats-server: {e}")),
                Err(_) => Err("nats-server did not exit after kill".to_string()),
            },
            None => Ok(()),
        };
        let removed = std::fs::remove_dir_all(&self.dir)
            .map_err(|e| format!("remove {}: {e}", self.dir.display()));
        killed.and(removed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Give the killed process a moment to exit before removing its
            // files (bounded: at most ~2 s).
            for _ in 0..200 {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    _ => break,
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_server(store: &std::path::Path) -> Result<Child, String> {
    let from_env = std::env::var_os("NATS_SERVER");
    let candidates: Vec<std::ffi::OsString> = match from_env {
        Some(bin) => vec![bin],
        None => vec!["nats-server".into(), "/usr/sbin/nats-server".into()],
    };
    let mut last_err = String::from("no nats-server candidate");
    for bin in &candidates {
        let spawned = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(child) => return Ok(child),
            Err(e) => last_err = format!("spawn {}: {e}", bin.to_string_lossy()),
        }
    }
    Err(last_err)
}

// ---------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------

const PUBACKED: u8 = 1;
const CONSUMED: u8 = 2;

/// Per-message bookkeeping shared by producer, PubAck waiter and consumer.
struct Tracker {
    sent_at: Vec<Option<Instant>>,
    flags: Vec<u8>,
    lat_us: Vec<f64>,
    /// Number of leading messages (0..watermark) that are done.
    watermark: usize,
}

impl Tracker {
    fn new(events: usize) -> Tracker {
        Tracker {
            sent_at: vec![None; events],
            flags: vec![0; events],
            lat_us: Vec::with_capacity(events),
            watermark: 0,
        }
    }

    /// Records `flag` for message `i`; returns the new watermark.
    fn mark(&mut self, i: usize, flag: u8, now: Instant) -> Result<usize, String> {
        let f = self
            .flags
            .get_mut(i)
            .ok_or_else(|| format!("message index {i} out of range"))?;
        if *f & flag != 0 {
            return Err(format!("message {i} marked twice (flag {flag})"));
        }
        *f |= flag;
        if *f == PUBACKED | CONSUMED {
            let sent = self.sent_at[i].ok_or_else(|| format!("message {i} done but never sent"))?;
            self.lat_us
                .push(now.duration_since(sent).as_secs_f64() * 1e6);
        }
        while self.flags.get(self.watermark) == Some(&(PUBACKED | CONSUMED)) {
            self.watermark += 1;
        }
        Ok(self.watermark)
    }
}

fn mark(
    tracker: &Mutex<Tracker>,
    progress: &watch::Sender<usize>,
    i: usize,
    flag: u8,
) -> Result<(), String> {
    let now = Instant::now();
    let wm = tracker
        .lock()
        .map_err(|_| "tracker lock poisoned".to_string())?
        .mark(i, flag, now)?;
    progress.send_replace(wm);
    Ok(())
}

fn stalled(what: &str) -> String {
    format!("no progress for {STALL:?} while {what}")
}

async fn workload(
    port: u16,
    events: usize,
    payload_bytes: usize,
    inflight: usize,
    ack: AckMode,
) -> Result<(Duration, Vec<f64>), String> {
    let url = format!("nats://127.0.0.1:{port}");
    let client = timeout(
        STALL,
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(0)
            .connect(url.as_str()),
    )
    .await
    .map_err(|_| stalled("connecting"))?
    .map_err(|e| format!("connect {url}: {e}"))?;
    let mut js = jetstream::new(client);
    js.set_timeout(STALL);

    let stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create stream: {e}"))?;
    let max_ack_pending = inflight.max(1000) as i64;
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(DURABLE.into()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            max_ack_pending,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create consumer: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(inflight.clamp(100, 1000))
        .expires(STALL)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| format!("start pull stream: {e}"))?;

    let tracker = Mutex::new(Tracker::new(events));
    let (progress, progress_rx) = watch::channel(0usize);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let started = Instant::now();

    let producer = async {
        let mut wm = progress_rx;
        for i in 0..events {
            timeout(STALL, wm.wait_for(|&done| done + inflight > i))
                .await
                .map_err(|_| stalled("waiting for in-flight window"))?
                .map_err(|_| "progress channel closed".to_string())?;
            let mut payload = vec![0u8; payload_bytes];
            payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
            tracker
                .lock()
                .map_err(|_| "tracker lock poisoned".to_string())?
                .sent_at[i] = Some(Instant::now());
            let puback = timeout(STALL, js.publish(SUBJECT, payload.into()))
                .await
                .map_err(|_| stalled("publishing"))?
                .map_err(|e| format!("publish {i}: {e}"))?;
            ack_tx
                .send((i, puback))
                .map_err(|_| "PubAck waiter stopped".to_string())?;
        }
        Ok::<(), String>(())
    };

    let puback_waiter = async {
        for _ in 0..events {
            let (i, puback) = timeout(STALL, ack_rx.recv())
                .await
                .map_err(|_| stalled("waiting for the producer"))?
                .ok_or("producer stopped")?;
            let got = timeout(STALL, puback.into_future())
                .await
                .map_err(|_| stalled("waiting for a PubAck"))?
                .map_err(|e| format!("PubAck {i}: {e}"))?;
            if got.stream != STREAM || got.duplicate {
                return Err(format!("unexpected PubAck for {i}: {got:?}"));
            }
            mark(&tracker, &progress, i, PUBACKED)?;
        }
        Ok::<(), String>(())
    };

    let consumer_loop = async {
        let mut seen = vec![false; events];
        let mut received = 0usize;
        let mut acked = 0usize;
        let mut pending = FuturesUnordered::new();
        // Each iteration receives a message or completes an ack (or fails on
        // the stall timer); redeliveries are tolerated up to `events` extra.
        let max_iterations = 4 * events + 1000;
        for _ in 0..max_iterations {
            if acked == events {
                return Ok(());
            }
            tokio::select! {
                Some((i, res)) = pending.next(), if !pending.is_empty() => {
                    let res: Result<(), async_nats::Error> = res;
                    res.map_err(|e| format!("double_ack {i}: {e}"))?;
                    mark(&tracker, &progress, i, CONSUMED)?;
                    acked += 1;
                }
                item = messages.next(), if received < 2 * events + 1000 => {
                    let msg = item
                        .ok_or("pull stream ended")?
                        .map_err(|e| format!("pull: {e}"))?;
                    received += 1;
                    let i = msg
                        .payload
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(|b| u64::from_le_bytes(b) as usize)
                        .filter(|&i| i < events)
                        .ok_or("message without a valid index")?;
                    let first = !std::mem::replace(&mut seen[i], true);
                    match ack {
                        AckMode::Ack => {
                            msg.ack().await.map_err(|e| format!("ack {i}: {e}"))?;
                            if first {
                                mark(&tracker, &progress, i, CONSUMED)?;
                                acked += 1;
                            }
                        }
                        AckMode::DoubleAck if first => {
                            pending.push(async move { (i, msg.double_ack().await) });
                        }
                        AckMode::DoubleAck => {
                            // Redelivery of a message already in hand: ack it
                            // so the consumer advances, count it once.
                            msg.ack().await.map_err(|e| format!("ack {i}: {e}"))?;
                        }
                    }
                }
                _ = tokio::time::sleep(STALL) => {
                    return Err(stalled(&format!("consuming ({acked}/{events} acked)")));
                }
            }
        }
        Err(format!("consumer loop bound hit ({acked}/{events} acked)"))
    };

    tokio::try_join!(producer, puback_waiter, consumer_loop)?;
    let elapsed = started.elapsed();
    let lat_us = tracker
        .into_inner()
        .map_err(|_| "tracker lock poisoned".to_string())?
        .lat_us;
    if lat_us.len() != events {
        return Err(format!("{} latencies for {events} events", lat_us.len()));
    }
    Ok((elapsed, lat_us))
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;

    #[test]
    fn nearest_rank_matches_definition() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), 50.0);
        assert_eq!(nearest_rank(&v, 99.0), 99.0);
        assert_eq!(nearest_rank(&[7.0], 99.0), 7.0);
        assert_eq!(nearest_rank(&[], 50.0), 0.0);
    }
}
