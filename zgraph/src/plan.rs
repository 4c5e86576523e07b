//! The canonical [`Plan`]: a validated manifest with every default filled in.
//!
//! Maps are `BTreeMap`s (sorted by name), edges are sorted by
//! `(from, to, on, key)`, sizes are bytes. Two manifests that mean the same
//! thing — whatever their syntax or key order — give equal `Plan`s and equal
//! [`PlanHash`]es.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a brane lands: the placement substrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Substrate {
    /// Operator-run datacenter and edge nodes.
    Gaia,
    /// Long-lived provider peers.
    Biome,
    /// The tenant's own hardware.
    Habitat,
}

/// How a brane runs: the capability profile.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// A WASI 0.2 component on Wasmtime.
    #[default]
    Standard,
    /// A microVM (Firecracker, or QEMU `microvm`).
    Frontier,
}

/// GPU access for a brane.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Gpu {
    /// No GPU.
    #[default]
    None,
    /// A host GPU passed through to the microVM (frontier only).
    Passthrough,
}

/// The tunnel a resolver uses to reach the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResolverMode {
    /// Tailscale Funnel.
    TailscaleFunnel,
    /// Cloudflare Tunnel (`cloudflared`).
    Cloudflared,
    /// ngrok.
    Ngrok,
    /// NetBird.
    Netbird,
}

macro_rules! keyword_enum {
    ($ty:ty, $noun:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $ty {
            /// Every accepted spelling, in documentation order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The manifest spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!("unknown {} `{s}`", $noun)),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(Substrate, "substrate", [
    Gaia => "gaia",
    Biome => "biome",
    Habitat => "habitat",
]);
keyword_enum!(Capability, "capability", [
    Standard => "standard",
    Frontier => "frontier",
]);
keyword_enum!(Gpu, "gpu", [None => "none", Passthrough => "passthrough"]);
keyword_enum!(ResolverMode, "resolver mode", [
    TailscaleFunnel => "tailscale-funnel",
    Cloudflared => "cloudflared",
    Ngrok => "ngrok",
    Netbird => "netbird",
]);

/// How many replicas of a brane run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Replicas {
    /// Exactly this many (0..=1024; 0 parks the brane).
    Count(u16),
    /// One on every eligible node.
    Auto,
}

impl Replicas {
    /// The largest accepted count.
    pub const MAX: u16 = 1024;
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas::Count(1)
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replicas::Count(n) => write!(f, "{n}"),
            Replicas::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for Replicas {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Replicas::Count(n) => s.serialize_u16(*n),
            Replicas::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u16),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) if n <= Replicas::MAX => Ok(Replicas::Count(n)),
            Raw::Word(w) if w == "auto" => Ok(Replicas::Auto),
            _ => Err(serde::de::Error::custom(
                "replicas must be 0..=1024 or \"auto\"",
            )),
        }
    }
}

/// A brane's image: a tagged name or a BLAKE3 content id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageRef {
    /// `name:tag`, resolved through the mesh's image names.
    Tagged {
        /// The image name (lowercase, `[a-z0-9._/-]`).
        name: String,
        /// The tag.
        tag: String,
    },
    /// A CIDv1 (raw codec, BLAKE3 multihash) in base32 text, `bafkr4i…`.
    Content(String),
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Tagged { name, tag } => write!(f, "{name}:{tag}"),
            ImageRef::Content(cid) => f.write_str(cid),
        }
    }
}

impl FromStr for ImageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse_image(s)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Resource limits of a brane (all optional; the runtime has defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory ceiling in bytes (`memory = "128MiB"` in the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU time per event, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Wall-clock timeout per event, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl Limits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// A host directory a brane may open (`[brane.NAME.grants] dirs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// The directory on the host (an absolute path).
    pub host: String,
    /// Where the brane sees it (an absolute path, e.g. `/archive`).
    pub guest: String,
    /// `mode = "rw"`: the brane may create, write and remove files in it.
    pub writable: bool,
}

/// What a brane may reach beyond its own memory (`[brane.NAME.grants]`).
/// The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Preopened directories, in manifest order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirGrant>,
    /// Environment variables the brane sees.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Outbound HTTP allow-list: `host` or `host:port` (sorted, deduplicated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// Real wall and monotonic clocks (without it both read zero).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clocks: bool,
    /// Branes this one may call by name over `wasi:http`
    /// (`http://NAME.brane/`): `NAME` of this manifest or `MANIFEST/NAME`
    /// (sorted, deduplicated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call: Vec<String>,
}

impl Grants {
    /// True when nothing is granted.
    pub fn is_empty(&self) -> bool {
        *self == Grants::default()
    }
}

/// One workload of the graph, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Brane {
    /// Where it lands.
    pub substrate: Substrate,
    /// How it runs.
    pub capability: Capability,
    /// How many replicas.
    pub replicas: Replicas,
    /// Its image, if named in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Glob over node names that may run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// Explicit node names that may run it (sorted, deduplicated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Guest image of a frontier brane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// GPU access.
    pub gpu: Gpu,
    /// Whether it serves HTTP (`wasi:http`).
    pub http: bool,
    /// Configuration passed to the brane.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Capability grants (files, environment, outbound HTTP, clocks).
    #[serde(default, skip_serializing_if = "Grants::is_empty")]
    pub grants: Grants,
}

/// A typed event edge: `from` emits events of type `on` that `to` handles.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Edge {
    /// The producing brane.
    pub from: String,
    /// The consuming brane.
    pub to: String,
    /// The event type.
    pub on: String,
    /// Routing key selector (`.field.sub`): events with the same key go to
    /// the same replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Per-key order: events with the same key from one source are
    /// processed in emit order (one in flight per key).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
    /// Failed processing attempts before an event is dead-lettered
    /// (`None`: the node's default, 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// A declared event type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventType {
    /// JSON Schema of the payload (always a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// Public ingress to an HTTP brane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolver {
    /// The public DNS name.
    pub host: String,
    /// The tunnel.
    pub mode: ResolverMode,
    /// The brane it routes to (filled in when the manifest left it implicit).
    pub brane: String,
}

/// The validated, normalized manifest.
///
/// Built by [`crate::load`]. `Deserialize` is provided so other crates can
/// ship a plan; it checks shapes, not the manifest rules — a plan received
/// from elsewhere should be trusted by its signature, or re-validated by
/// converting it with [`Plan::to_format`] and loading it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mesh: Option<String>,
    pub(crate) branes: BTreeMap<String, Brane>,
    #[serde(default)]
    pub(crate) edges: Vec<Edge>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) events: BTreeMap<String, EventType>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) resolvers: BTreeMap<String, Resolver>,
}

impl Plan {
    /// The mesh name, if the manifest gave one.
    pub fn mesh(&self) -> Option<&str> {
        self.mesh.as_deref()
    }

    /// The branes, by name.
    pub fn branes(&self) -> &BTreeMap<String, Brane> {
        &self.branes
    }

    /// One brane by name.
    pub fn brane(&self, name: &str) -> Option<&Brane> {
        self.branes.get(name)
    }

    /// The edges, sorted by `(from, to, on, key)`.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The declared event types (those with an `[event.X]` section).
    pub fn events(&self) -> &BTreeMap<String, EventType> {
        &self.events
    }

    /// The resolvers, by name.
    pub fn resolvers(&self) -> &BTreeMap<String, Resolver> {
        &self.resolvers
    }

    /// The canonical JSON encoding described on [`PlanHash`].
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }

    /// BLAKE3 of the canonical encoding: equal for equal plans, whatever
    /// syntax or key order the manifest used.
    pub fn hash(&self) -> PlanHash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(PlanHash::DOMAIN);
        hasher.update(self.canonical_json().as_bytes());
        PlanHash(*hasher.finalize().as_bytes())
    }

    /// The plan written back as a manifest in `format` (defaults written
    /// out); loading the result gives a plan with the same hash.
    pub fn to_format(&self, format: crate::Format) -> String {
        crate::emit::to_format(self, format)
    }

    /// Checks every manifest rule again on a plan that did not come from
    /// [`crate::load`] here (one deserialized from a record a peer sent):
    /// the plan is written back as a manifest and loaded, and the result
    /// must be this very plan. `Err` carries the first problem, for people.
    pub fn revalidate(&self) -> Result<(), String> {
        let text = self.to_format(crate::Format::Json);
        match crate::load_unbounded(&text, "plan", crate::Format::Json) {
            Ok(again) if again == *self => Ok(()),
            Ok(_) => Err("the plan is not in normal form".into()),
            Err(d) => Err(d
                .errors()
                .first()
                .map_or_else(|| "invalid plan".to_owned(), |e| e.message.clone())),
        }
    }
}

/// The BLAKE3 hash of a [`Plan`]'s canonical encoding; displays as 64
/// lowercase hex digits.
///
/// # Canonical encoding
///
/// [`Plan::hash`] is BLAKE3 over `b"omega-zgraph/plan/v1\n"` followed by the
/// plan's canonical JSON: the serde shape of [`Plan`] written by this crate's
/// own writer (not serde_json's formatter), so it does not drift with serde
/// versions. Canonical JSON here means: no whitespace; object keys sorted by
/// their UTF-8 bytes; absent optional fields omitted; strings escaped as
/// `\"`, `\\`, `\n`, `\r`, `\t`, other characters below U+0020 as `\u00XX`
/// (lowercase hex), everything else verbatim UTF-8; integers in decimal;
/// floats (only inside event schemas) in Rust's shortest round-trip `{:?}`
/// form (`1.0`, `1e300`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlanHash([u8; 32]);

impl PlanHash {
    /// The domain-separation prefix hashed before the canonical JSON.
    pub const DOMAIN: &'static [u8] = b"omega-zgraph/plan/v1\n";

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-hex-digit text form.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for PlanHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for PlanHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not 64 lowercase hex digits");
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(PlanHash(out))
    }
}

impl Serialize for PlanHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PlanHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Write `v` as canonical JSON (see the module docs).
pub(crate) fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&format!("{:?}", n.as_f64().unwrap_or(0.0)));
            }
        }
        J::String(s) => write_string(s, out),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
