//! Helpers for the dispatch tests: a mesh directory, daemons with any
//! substrate and name, the seed example's images, and `omega ps` polling.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

#[path = "../../../runtime/tests/common/guests.rs"]
mod guests;

pub use super::mesh_common::{node_command, omega, wait_for};

/// Runs `omega --json ARGS`: (success, stdout JSON, stderr text).
pub fn run(args: &[&str]) -> (bool, Value, String) {
    let out = omega()
        .arg("--json")
        .args(args)
        .output()
        .expect("run omega");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A mesh: its directory with the root key.
pub struct Mesh {
    pub dir: PathBuf,
}

impl Mesh {
    pub fn init(dir: &Path) -> Self {
        let (ok, v, e) = run(&["mesh", "init", "--mesh-dir", dir.to_str().unwrap()]);
        assert!(ok, "{e}");
        assert!(v["mesh"].is_string());
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn root_key(&self) -> String {
        self.dir.join("mesh-root.key").display().to_string()
    }

    pub fn root_did(&self) -> String {
        run(&["--key", &self.root_key(), "id", "show"]).1["did"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn invite(&self, substrate: &str) -> String {
        let (ok, v, e) = run(&[
            "mesh",
            "invite",
            "--substrate",
            substrate,
            "--mesh-dir",
            self.dir.to_str().unwrap(),
        ]);
        assert!(ok, "{e}");
        v["token"].as_str().unwrap().to_owned()
    }
}

/// A daemon; killed with SIGKILL when dropped.
pub struct Node {
    pub dir: PathBuf,
    pub name: String,
    pub substrate: String,
    child: Child,
}

impl Node {
    pub fn start(
        dir: &Path,
        name: &str,
        substrate: &str,
        token: Option<&str>,
        peers: &[String],
    ) -> Self {
        Self::spawn(
            dir,
            name,
            substrate,
            token,
            peers,
            None,
            "/ip4/127.0.0.1/udp/0/quic-v1",
        )
    }

    pub fn spawn(
        dir: &Path,
        name: &str,
        substrate: &str,
        token: Option<&str>,
        peers: &[String],
        netns: Option<&str>,
        listen: &str,
    ) -> Self {
        Self::spawn_with(
            dir,
            name,
            substrate,
            token,
            peers,
            netns,
            listen,
            &[],
            Duration::from_secs(20),
        )
    }

    /// [`Node::spawn`] with extra daemon flags and a start-up ceiling (a
    /// frontier probe boot runs before the API is up).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_with(
        dir: &Path,
        name: &str,
        substrate: &str,
        token: Option<&str>,
        peers: &[String],
        netns: Option<&str>,
        listen: &str,
        extra: &[&str],
        up_within: Duration,
    ) -> Self {
        let mut flags = vec!["--memory-mib", "2048"];
        flags.extend_from_slice(extra);
        let child = node_command(dir, name, substrate, token, peers, netns, listen, &flags)
            .spawn()
            .expect("spawn omega node");
        let n = Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            substrate: substrate.to_owned(),
            child,
        };
        let up = wait_for(up_within, || {
            n.status()["listen"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        });
        assert!(up.is_some(), "{name} did not come up; log:\n{}", n.log());
        n
    }

    pub fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn status(&self) -> Value {
        run(&["status", "--data-dir", self.d()]).1
    }

    pub fn ps(&self) -> Value {
        run(&["ps", "--data-dir", self.d()]).1
    }

    pub fn describe(&self, brane: &str) -> Value {
        run(&["describe", brane, "--data-dir", self.d()]).1
    }

    pub fn addr(&self) -> String {
        self.status()["listen"][0].as_str().unwrap().to_owned()
    }

    pub fn live(&self) -> usize {
        self.status()["live_members"].as_u64().unwrap_or(0) as usize
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn kill9(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wasm(name: &str) -> String {
    guests::guests()
        .join(format!("{}.wasm", name.replace('-', "_")))
        .display()
        .to_string()
}

/// Pushes the seed example's images (hello-http stands in for `api`) into
/// `node`'s store, signed by the mesh root, which replicates their names.
pub fn push_seed_images(node: &Node, mesh: &Mesh) {
    for (file, name) in [
        ("ingest", "ingest:1.0"),
        ("transform", "transform:2.4.1"),
        ("archive", "archive:1.2"),
        ("hello-http", "api:0.9"),
        ("ingest", "hello:1.0"),
    ] {
        let (ok, v, e) = run(&[
            "--key",
            &mesh.root_key(),
            "image",
            "push",
            &wasm(file),
            "--name",
            name,
            "--data-dir",
            node.d(),
        ]);
        assert!(ok && v["replicated"] == true, "{e}");
    }
}

pub fn seed() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/multi-substrate-pipeline.zgraph.toml")
        .display()
        .to_string()
}

pub fn hello() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/hello.zgraph.toml")
        .display()
        .to_string()
}

/// One brane's row in `omega ps --json`.
pub fn brane<'a>(ps: &'a Value, manifest: &str, brane: &str) -> Option<&'a Value> {
    ps["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == manifest)?["branes"]
        .as_array()?
        .iter()
        .find(|b| b["brane"] == brane)
}

/// The desired placement of every brane, as (manifest/brane, sorted node:count).
pub fn placement(ps: &Value) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for m in ps["manifests"].as_array().into_iter().flatten() {
        for b in m["branes"].as_array().into_iter().flatten() {
            let mut nodes: Vec<String> = b["desired"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| format!("{}:{}", d["node"].as_str().unwrap_or("?"), d["instances"]))
                .collect();
            nodes.sort();
            out.push((
                format!(
                    "{}/{}",
                    m["name"].as_str().unwrap_or(""),
                    b["brane"].as_str().unwrap_or("")
                ),
                nodes,
            ));
        }
    }
    out
}

/// Whether every placed brane of `manifest` is ready (desired = actual).
pub fn all_ready(ps: &Value, manifest: &str) -> bool {
    ps["manifests"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == manifest))
        .and_then(|m| m["branes"].as_array())
        .is_some_and(|bs| {
            // Not vacuously: at least one brane is placed, and every placed
            // brane is ready.
            let mut placed = bs.iter().filter(|b| b["status"] == "placed").peekable();
            placed.peek().is_some() && placed.all(|b| b["ready"] == true)
        })
}
