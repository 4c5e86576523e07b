//! What the gateway and the mesh forwarder ask of the node: which brane a
//! host names, where its healthy replicas are, who is admitted, what is
//! authorized, and how to open a stream to a member. The node implements
//! [`Directory`] from its view of the mesh (manifests, statuses, members)
//! and [`Dialer`] with libp2p streams; tests implement both in memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Bytes;

/// Errors of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A streamed body, either way.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
/// A boxed future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A brane, by manifest and name (`MANIFEST/BRANE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BraneName {
    /// The manifest.
    pub manifest: String,
    /// The brane.
    pub brane: String,
}

impl BraneName {
    /// `manifest/brane`.
    pub fn new(manifest: impl Into<String>, brane: impl Into<String>) -> Self {
        Self {
            manifest: manifest.into(),
            brane: brane.into(),
        }
    }

    /// Parses `MANIFEST/BRANE` (as the `omega-brane` header carries it).
    pub fn parse(s: &str) -> Option<Self> {
        let (m, b) = s.split_once('/')?;
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        (ok(m) && ok(b)).then(|| Self::new(m, b))
    }
}

impl std::fmt::Display for BraneName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.manifest, self.brane)
    }
}

/// A replica of an HTTP brane running on this node.
pub trait LocalBrane: Send + Sync {
    /// Serves one request (never fails: limits and traps are responses).
    fn handle(&self, request: Request<Body>) -> BoxFuture<Response<Body>>;
}

/// Where a replica runs.
#[derive(Clone)]
pub enum Replica {
    /// Here.
    Local(Arc<dyn LocalBrane>),
    /// On the member with this peer id.
    Remote(String),
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(_) => f.write_str("Local"),
            Self::Remote(p) => write!(f, "Remote({p})"),
        }
    }
}

/// The node's answers about routing and authorization. Cheap, non-blocking
/// calls (the node keeps a snapshot).
pub trait Directory: Send + Sync + 'static {
    /// The brane a resolver `host` (lowercase, no port) routes to.
    fn host(&self, host: &str) -> Option<BraneName>;
    /// The brane's healthy replicas: this node's first when it runs one,
    /// then the members whose status says it is running.
    fn replicas(&self, brane: &BraneName) -> Vec<Replica>;
    /// Whether `peer` is an admitted member (only members are served).
    fn admits(&self, peer: &str) -> bool;
    /// Whether a request for `target` may be served: from the gateway
    /// (`caller` `None`: some resolver must route to it) or from brane
    /// `caller` (its `grants.call` must name it). `Err` says why not.
    fn authorize(&self, caller: Option<&BraneName>, target: &BraneName) -> Result<(), String>;
}

/// A bidirectional byte stream to a member.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens `/omega/http/1` streams to members.
pub trait Dialer: Send + Sync + 'static {
    /// A new stream to `peer`.
    fn open(&self, peer: &str) -> BoxFuture<std::io::Result<Box<dyn Io>>>;
}
