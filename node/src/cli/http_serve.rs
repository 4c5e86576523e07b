//! Serving `http = true` branes in `omega dev`: listeners bound on loopback
//! as each brane is ready, then served (one fresh instance per request)
//! until Ctrl-C or `--serve-for SECS`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use omega_runtime::{HttpBrane, serve_http};

use super::output::{CliError, Output};
use super::run::split_pair;

/// Where an HTTP brane is served without `--http-listen`.
pub(super) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// Parse the `--http-listen BRANE=ADDR` flags; only loopback addresses are
/// accepted for now.
pub(super) fn parse_listen(flags: &[String]) -> Result<BTreeMap<String, SocketAddr>, CliError> {
    let mut map = BTreeMap::new();
    for f in flags {
        let (brane, addr) = split_pair(f, "--http-listen BRANE=127.0.0.1:PORT")?;
        let addr: SocketAddr = addr.parse().map_err(|_| {
            CliError::invalid(
                format!("--http-listen {f:?}: {addr:?} is not an IP:PORT address"),
                "write it as --http-listen BRANE=127.0.0.1:PORT",
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(CliError::invalid(
                format!(
                    "--http-listen {f:?}: {} is not a loopback address",
                    addr.ip()
                ),
                "omega dev serves HTTP branes on loopback only for now: use 127.0.0.1:PORT",
            ));
        }
        map.insert(brane.to_string(), addr);
    }
    Ok(map)
}

/// An HTTP brane with its bound listener.
pub(super) struct Serving {
    brane: Arc<HttpBrane>,
    listener: std::net::TcpListener,
    url: String,
}

impl Serving {
    pub(super) fn name(&self) -> &str {
        self.brane.name()
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }
}

/// Bind `addr` for `brane` and announce it (`serving BRANE on URL`).
/// Requests wait in the listen backlog until [`serve`] runs.
pub(super) fn bind(brane: HttpBrane, addr: SocketAddr, out: &Output) -> Result<Serving, CliError> {
    let fail = |e: std::io::Error| {
        CliError::plain(format!("brane {}: listen on {addr}: {e}", brane.name()))
    };
    let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let url = format!("http://{}", listener.local_addr().map_err(fail)?);
    let line = format!("serving {} on {url}", brane.name());
    if out.is_json() {
        eprintln!("[omega] {line}");
    } else {
        out.say(line);
    }
    Ok(Serving {
        brane: Arc::new(brane),
        listener,
        url,
    })
}

/// Serve every bound brane until Ctrl-C (SIGINT) or `serve_for` seconds.
/// Returns at once when there is nothing to serve.
pub(super) fn serve(list: Vec<Serving>, serve_for: Option<u64>) -> Result<(), CliError> {
    if list.is_empty() {
        return Ok(());
    }
    let io = |e: std::io::Error| CliError::plain(format!("http server: {e}"));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    tokio.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let mut servers = tokio::task::JoinSet::new();
        for s in list {
            let listener = tokio::net::TcpListener::from_std(s.listener).map_err(io)?;
            let mut stopped = stopped.clone();
            servers.spawn(serve_http(s.brane, listener, async move {
                let _ = stopped.changed().await;
            }));
        }
        match serve_for {
            Some(secs) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(secs)) => {}
                    r = tokio::signal::ctrl_c() => r.map_err(io)?,
                }
            }
            None => {
                eprintln!("[omega] serving until Ctrl-C");
                tokio::signal::ctrl_c().await.map_err(io)?;
            }
        }
        let _ = stop.send(());
        while let Some(r) = servers.join_next().await {
            r.map_err(|e| CliError::plain(format!("http server: {e}")))?
                .map_err(io)?;
        }
        Ok(())
    })
}
