//! Guest images: a kernel and an initramfs (newc cpio, written here) whose
//! `/init` is the `omega-agent`, with busybox and the workload; built
//! offline ([`build_guest`]) and stored content-addressed by BLAKE3 with a
//! signed `name:tag` record ([`GuestStore`]).
//!
//! ```text
//! DIR/vmlinuz  DIR/initramfs.cpio  DIR/guest.json     (omega guest build)
//! <images>/guest-blobs/<bafkr4i…>                     kernel, initramfs
//! <images>/guests/<name>/<tag>.json                   signed GuestRecord
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use omega_identity::{ContentId, Did, Keypair, Signature};
use serde::{Deserialize, Serialize};

use super::FrontierError;
use crate::cache::write_atomic;
use crate::images::ImageRef;

/// Largest file put in an initramfs, and largest whole initramfs.
pub const MAX_INITRAMFS_BYTES: u64 = 1 << 30;
/// Most files copied from an `--include` tree.
const MAX_TREE_FILES: usize = 100_000;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FrontierError {
    let what = what.into();
    move |source| FrontierError::Io { what, source }
}

/// A newc (`070701`) cpio archive writer, as the kernel's initramfs
/// unpacker reads it.
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0,
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory (and its parents), once.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if self.dirs.insert(at.clone()) {
                let name = at.clone();
                self.entry(&name, 0o040755, &[], (0, 0));
            }
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.parent(path);
        self.entry(path, 0o100000 | (perm & 0o7777), data, (0, 0));
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.entry(path, 0o120777, target.as_bytes(), (0, 0));
    }

    /// A character device node.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.parent(path);
        self.entry(path, 0o020600, &[], (major, minor));
    }

    /// Size so far, bytes.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        // Round up to 512 like cpio(1) does.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

/// `guest.json` of a built guest directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestManifest {
    /// Format version (1).
    pub format: u32,
    /// Kernel file name in the directory.
    pub kernel: String,
    /// Initramfs file name in the directory.
    pub initrd: String,
    /// Extra kernel command line.
    pub cmdline: String,
    /// The default workload argv inside the guest.
    pub workload: Vec<String>,
    /// The agent version baked in.
    pub agent: String,
}

/// What [`build_guest`] puts together.
#[derive(Debug, Clone)]
pub struct GuestBuild {
    /// The kernel (bzImage or ELF).
    pub kernel: PathBuf,
    /// The static `omega-agent` binary (becomes `/init`).
    pub agent: PathBuf,
    /// A static busybox (becomes `/bin/busybox` with its applet links), or
    /// `None` for a guest without a shell.
    pub busybox: Option<PathBuf>,
    /// Workload programs, copied to `/workload/<file name>` (mode 0755);
    /// the first is the default workload.
    pub workloads: Vec<PathBuf>,
    /// Directory trees merged into the guest root (a bigger userland,
    /// e.g. an extracted Node.js package and its libraries).
    pub include: Vec<PathBuf>,
    /// Kernel modules copied to `/lib/modules/`; the agent loads them in
    /// this order at boot (e.g. `vsock.ko`,
    /// `vmw_vsock_virtio_transport_common.ko`,
    /// `vmw_vsock_virtio_transport.ko` for a vsock channel).
    pub modules: Vec<PathBuf>,
    /// Extra kernel command line stored with the image.
    pub cmdline: String,
}

/// The default host kernel: `/boot/vmlinuz-$(uname -r)` if readable, else
/// the last `/boot/vmlinuz-*`.
pub fn host_kernel() -> Option<PathBuf> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok();
    if let Some(r) = release {
        let p = PathBuf::from(format!("/boot/vmlinuz-{}", r.trim()));
        if std::fs::File::open(&p).is_ok() {
            return Some(p);
        }
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                && std::fs::File::open(p).is_ok()
        })
        .collect();
    all.sort();
    all.pop()
}

fn read(p: &Path) -> Result<Vec<u8>, FrontierError> {
    let meta = std::fs::metadata(p).map_err(io(format!("reading {}", p.display())))?;
    if meta.len() > MAX_INITRAMFS_BYTES {
        return Err(FrontierError::Spec(format!(
            "{} is {} bytes, over the {MAX_INITRAMFS_BYTES}-byte limit",
            p.display(),
            meta.len()
        )));
    }
    std::fs::read(p).map_err(io(format!("reading {}", p.display())))
}

fn file_name(p: &Path) -> Result<String, FrontierError> {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| FrontierError::Spec(format!("{} has no file name", p.display())))
}

/// Applets of a busybox binary (`busybox --list`), bounded.
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let Ok(out) = std::process::Command::new(busybox).arg("--list").output() else {
        return ["sh", "cat", "echo", "ls", "sleep", "base64", "wc", "sed"]
            .map(String::from)
            .to_vec();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.[".contains(&b))
        })
        .filter(|a| *a != "init" && *a != "linuxrc")
        .take(1024)
        .map(String::from)
        .collect()
}

fn add_tree(cpio: &mut Cpio, root: &Path, count: &mut usize) -> Result<(), FrontierError> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))?;
        for e in entries.flatten() {
            *count += 1;
            if *count > MAX_TREE_FILES {
                return Err(FrontierError::Spec(format!(
                    "{} has more than {MAX_TREE_FILES} files",
                    root.display()
                )));
            }
            let rel = rel.join(e.file_name());
            let name = format!("/{}", rel.to_string_lossy());
            let meta = std::fs::symlink_metadata(e.path())
                .map_err(io(format!("reading {}", e.path().display())))?;
            if meta.is_symlink() {
                let target = std::fs::read_link(e.path())
                    .map_err(io(format!("reading {}", e.path().display())))?;
                cpio.symlink(&name, &target.to_string_lossy());
            } else if meta.is_dir() {
                cpio.dir(&name);
                stack.push(rel);
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                cpio.file(&name, meta.permissions().mode(), &read(&e.path())?);
            }
            if cpio.len() as u64 > MAX_INITRAMFS_BYTES {
                return Err(FrontierError::Spec(format!(
                    "initramfs over {MAX_INITRAMFS_BYTES} bytes"
                )));
            }
        }
    }
    Ok(())
}

/// Whether `bytes` are an x86-64 ELF executable without an interpreter
/// (statically linked): `Err` says what it is instead.
pub fn check_static_elf(bytes: &[u8]) -> Result<(), String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    if u16_at(0x12) != Some(62) {
        return Err("not an x86-64 executable".into());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err("truncated ELF header".into());
    };
    for i in 0..usize::from(phnum.min(256)) {
        let at = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        match u32_at(at) {
            Some(3) => return Err("dynamically linked (has an ELF interpreter)".into()),
            Some(_) => {}
            None => return Err("truncated ELF program headers".into()),
        }
    }
    Ok(())
}

/// Build a guest into `out`: `vmlinuz`, `initramfs.cpio`, `guest.json`.
/// The agent and busybox must be static x86-64 executables (the guest has
/// no C library unless an `include` tree brings one).
pub fn build_guest(b: &GuestBuild, out: &Path) -> Result<GuestManifest, FrontierError> {
    let agent = read(&b.agent)?;
    check_static_elf(&agent).map_err(|e| {
        FrontierError::Spec(format!(
            "agent {}: {e}; build it with RUSTFLAGS='-C target-feature=+crt-static' cargo build -p omega-agent --release --target x86_64-unknown-linux-gnu",
            b.agent.display()
        ))
    })?;
    let busybox = match &b.busybox {
        Some(p) => {
            let bytes = read(p)?;
            check_static_elf(&bytes).map_err(|e| {
                FrontierError::Spec(format!(
                    "busybox {}: {e}; install busybox-static",
                    p.display()
                ))
            })?;
            Some((p, bytes))
        }
        None => None,
    };
    let mut cpio = Cpio::new();
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "etc",
        "workload",
        "lib/modules",
    ] {
        cpio.dir(d);
    }
    cpio.char_dev("/dev/console", 5, 1);
    cpio.char_dev("/dev/null", 1, 3);
    cpio.file("/init", 0o755, &agent);
    if let Some((bb, bytes)) = &busybox {
        cpio.file("/bin/busybox", 0o755, bytes);
        for applet in busybox_applets(bb) {
            if applet != "busybox" {
                cpio.symlink(&format!("/bin/{applet}"), "busybox");
            }
        }
    }
    let mut workload = Vec::new();
    for (i, w) in b.workloads.iter().enumerate() {
        let name = file_name(w)?;
        let path = format!("/workload/{name}");
        cpio.file(&path, 0o755, &read(w)?);
        if i == 0 {
            workload.push(path);
        }
    }
    let mut order = String::new();
    for m in &b.modules {
        let name = file_name(m)?;
        cpio.file(&format!("/lib/modules/{name}"), 0o644, &read(m)?);
        order.push_str(&name);
        order.push('\n');
    }
    if !order.is_empty() {
        // The agent loads these, in this order, before it opens its channel.
        cpio.file("/lib/modules/order", 0o644, order.as_bytes());
    }
    let mut count = 0;
    for t in &b.include {
        add_tree(&mut cpio, t, &mut count)?;
    }
    cpio.file(
        "/etc/omega-guest",
        0o644,
        format!("omega guest image, agent {}\n", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    let initrd = cpio.finish();
    std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
    let kernel = read(&b.kernel)?;
    let write = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        write_atomic(&p, bytes).map_err(io(format!("writing {}", p.display())))
    };
    write("vmlinuz", &kernel)?;
    write("initramfs.cpio", &initrd)?;
    let manifest = GuestManifest {
        format: 1,
        kernel: "vmlinuz".into(),
        initrd: "initramfs.cpio".into(),
        cmdline: b.cmdline.clone(),
        workload,
        agent: format!("omega-agent {}", env!("CARGO_PKG_VERSION")),
    };
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write("guest.json", &json)?;
    Ok(manifest)
}

/// A guest ready to boot: files on disk plus its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel file.
    pub kernel: PathBuf,
    /// The initramfs file.
    pub initrd: PathBuf,
    /// Extra kernel command line.
    pub cmdline: String,
    /// Default workload argv.
    pub workload: Vec<String>,
}

/// Read a built guest directory (`omega guest build` output).
pub fn open_guest_dir(dir: &Path) -> Result<GuestImage, FrontierError> {
    let p = dir.join("guest.json");
    let text = std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?;
    let m: GuestManifest = serde_json::from_slice(&text)
        .map_err(|e| FrontierError::Spec(format!("{}: {e}", p.display())))?;
    let inside = |name: &str| -> Result<PathBuf, FrontierError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(FrontierError::Spec(format!(
                "{}: file name {name:?} must be a plain name in the directory",
                p.display()
            )));
        }
        Ok(dir.join(name))
    };
    Ok(GuestImage {
        kernel: inside(&m.kernel)?,
        initrd: inside(&m.initrd)?,
        cmdline: m.cmdline,
        workload: m.workload,
    })
}

/// A signed `name:tag → guest image` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRecord {
    /// `name:tag`.
    pub reference: String,
    /// The kernel's hash (CID).
    pub kernel: String,
    /// The initramfs' hash (CID).
    pub initrd: String,
    /// Extra kernel command line.
    pub cmdline: String,
    /// Default workload argv.
    pub workload: Vec<String>,
    /// The `did:key` of the signer.
    pub signer: String,
    /// Ed25519 signature over [`GuestRecord::signing_bytes`], hex.
    pub signature: String,
}

impl GuestRecord {
    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let doc = serde_json::json!([
            "omega-guest-image/v1",
            self.reference,
            self.kernel,
            self.initrd,
            self.cmdline,
            self.workload
        ]);
        doc.to_string().into_bytes()
    }
}

/// Guest images in a node's image store directory.
#[derive(Debug, Clone)]
pub struct GuestStore {
    dir: PathBuf,
}

impl GuestStore {
    /// Open (creating) the guest part of the image store at `dir` (the
    /// same directory as [`crate::ImageStore`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, FrontierError> {
        let dir = dir.into();
        for sub in ["guest-blobs", "guests"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        }
        Ok(Self { dir })
    }

    fn blob(&self, hash: &str) -> PathBuf {
        self.dir.join("guest-blobs").join(hash)
    }

    fn record_path(&self, r: &ImageRef) -> PathBuf {
        self.dir
            .join("guests")
            .join(&r.name)
            .join(format!("{}.json", r.tag))
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<String, FrontierError> {
        let hash = ContentId::of(bytes).to_string();
        let p = self.blob(&hash);
        if !p.exists() {
            write_atomic(&p, bytes).map_err(io(format!("writing {}", p.display())))?;
        }
        Ok(hash)
    }

    /// Store a built guest directory under `reference`, signed by `key`.
    pub fn push(
        &self,
        dir: &Path,
        reference: &ImageRef,
        key: &Keypair,
    ) -> Result<GuestRecord, FrontierError> {
        let g = open_guest_dir(dir)?;
        let kernel = self.put_blob(&read(&g.kernel)?)?;
        let initrd = self.put_blob(&read(&g.initrd)?)?;
        let mut record = GuestRecord {
            reference: reference.to_string(),
            kernel,
            initrd,
            cmdline: g.cmdline,
            workload: g.workload,
            signer: key.did().to_string(),
            signature: String::new(),
        };
        record.signature = crate::images::to_hex(key.sign(&record.signing_bytes()).as_bytes());
        let p = self.record_path(reference);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        write_atomic(&p, &json).map_err(io(format!("writing {}", p.display())))?;
        Ok(record)
    }

    /// The verified record of `reference`.
    pub fn record(&self, reference: &ImageRef) -> Result<GuestRecord, FrontierError> {
        let p = self.record_path(reference);
        let bad = |why: String| FrontierError::Spec(format!("guest image {reference}: {why}"));
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(
                    "not in the store (omega guest build, then omega guest push DIR --name NAME:TAG)"
                        .into(),
                ));
            }
            Err(e) => return Err(io(format!("reading {}", p.display()))(e)),
        };
        let r: GuestRecord = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if r.reference != reference.to_string() {
            return Err(bad(format!("record names {}", r.reference)));
        }
        let did = Did::from_str(&r.signer).map_err(|e| bad(format!("signer: {e}")))?;
        let sig = crate::images::from_hex(&r.signature)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| bad("signature is not 64 hex bytes".into()))?;
        did.public_key()
            .verify(&r.signing_bytes(), &Signature::from_bytes(sig))
            .map_err(|_| bad("signature does not verify".into()))?;
        Ok(r)
    }

    /// Resolve `reference` to files on disk, verifying their hashes.
    pub fn resolve(&self, reference: &ImageRef) -> Result<GuestImage, FrontierError> {
        let r = self.record(reference)?;
        let check = |hash: &str| -> Result<PathBuf, FrontierError> {
            let id = ContentId::from_str(hash)
                .map_err(|e| FrontierError::Spec(format!("guest image {reference}: {e}")))?;
            let p = self.blob(&id.to_string());
            let bytes = read(&p)?;
            let actual = ContentId::of(&bytes);
            if actual != id {
                return Err(FrontierError::Spec(format!(
                    "guest image {reference}: blob {id} is corrupt (hashes to {actual})"
                )));
            }
            Ok(p)
        };
        Ok(GuestImage {
            kernel: check(&r.kernel)?,
            initrd: check(&r.initrd)?,
            cmdline: r.cmdline,
            workload: r.workload,
        })
    }
}

/// A manifest's `guest = "NAME"` (or `NAME:TAG`) as a reference; the tag
/// defaults to `latest`.
pub fn guest_ref(guest: &str) -> Result<ImageRef, FrontierError> {
    let text = if guest.contains(':') {
        guest.to_string()
    } else {
        format!("{guest}:latest")
    };
    text.parse()
        .map_err(|e| FrontierError::Spec(format!("guest {guest:?}: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpio_layout_is_newc() {
        let mut c = Cpio::new();
        c.file("/a/b", 0o755, b"hello");
        let bytes = c.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 512, 0);
        // dir "a" first, then "a/b".
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("a\0"));
        assert!(text.contains("a/b\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
        // The header of "a/b": mode 0o100755, size 5.
        assert!(text.contains(&format!("{:08x}", 0o100755)));
    }

    #[test]
    fn cpio_is_readable_by_cpio_tool_when_present() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            return;
        };
        if !status.status.success() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cpio::new();
        c.file("/x/y.txt", 0o644, b"data");
        c.symlink("/x/z", "y.txt");
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, c.finish()).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "-F"])
            .arg(&archive)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(list.contains("x/y.txt") && list.contains("x/z"), "{list}");
    }

    #[test]
    fn static_elf_check() {
        let bb = std::fs::read("/bin/busybox").unwrap_or_default();
        if !bb.is_empty() {
            // Whatever it is, the check does not panic.
            let _ = check_static_elf(&bb);
        }
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(
            check_static_elf(&me)
                .unwrap_err()
                .contains("dynamically linked")
        );
        assert!(check_static_elf(b"#!/bin/sh\n").is_err());
        assert!(check_static_elf(&me[..70]).is_err());
    }

    #[test]
    fn guest_refs_default_to_latest() {
        assert_eq!(
            guest_ref("debian-node20").unwrap().to_string(),
            "debian-node20:latest"
        );
        assert_eq!(guest_ref("a:1").unwrap().to_string(), "a:1");
        assert!(guest_ref("Bad Name").is_err());
    }
}
