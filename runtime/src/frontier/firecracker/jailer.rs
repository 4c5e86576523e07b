//! Running Firecracker through the `jailer` (chroot, uid/gid drop, network
//! namespace, cgroups). Only the argv is built here: the driver spawns it.
//!
//! Layout: the jailer's chroot base is `<run dir>/jail`, so the chroot root
//! is `<run dir>/jail/<exec file name>/<id>/root` and everything the VM
//! uses (kernel and disks, hard-linked or copied in; the API and vsock
//! sockets; the log) lives under the per-VM run directory and is removed
//! with it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How to run the jailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary.
    pub binary: PathBuf,
    /// The uid Firecracker runs as.
    pub uid: u32,
    /// The gid Firecracker runs as.
    pub gid: u32,
    /// A network namespace to join (`/var/run/netns/NAME`), if any.
    pub netns: Option<PathBuf>,
    /// cgroup version (1 or 2); `None`: the jailer's default.
    pub cgroup_version: Option<u8>,
    /// `--parent-cgroup`, if any.
    pub parent_cgroup: Option<String>,
    /// `--cgroup` settings, e.g. `cpu.max=50000 100000`.
    pub cgroups: Vec<String>,
}

impl JailerConfig {
    /// From the environment: `JAILER_BIN` (required; unset or empty means
    /// no jailer), `JAILER_UID` and `JAILER_GID` (default: the current
    /// user's), `JAILER_NETNS`, `JAILER_CGROUP_VERSION`.
    pub fn from_env() -> Option<Self> {
        let binary = std::env::var_os("JAILER_BIN").filter(|v| !v.is_empty())?;
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Some(Self {
            binary: PathBuf::from(binary),
            uid: num("JAILER_UID").unwrap_or(uid),
            gid: num("JAILER_GID").unwrap_or(gid),
            netns: std::env::var_os("JAILER_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            cgroup_version: num("JAILER_CGROUP_VERSION").and_then(|v| u8::try_from(v).ok()),
            parent_cgroup: None,
            cgroups: Vec::new(),
        })
    }

    /// The chroot base directory for a VM whose run directory is `run_dir`.
    pub fn chroot_base(run_dir: &Path) -> PathBuf {
        run_dir.join("jail")
    }

    /// The chroot root the jailer creates for `id`.
    pub fn chroot_root(run_dir: &Path, firecracker: &Path, id: &str) -> PathBuf {
        let exec_name = firecracker
            .file_name()
            .map(OsString::from)
            .unwrap_or_else(|| "firecracker".into());
        Self::chroot_base(run_dir)
            .join(exec_name)
            .join(id)
            .join("root")
    }

    /// The jailer's argv (program first): `firecracker_args` are passed to
    /// Firecracker after `--`, with paths as seen inside the chroot.
    pub fn argv(
        &self,
        firecracker: &Path,
        id: &str,
        run_dir: &Path,
        firecracker_args: &[String],
    ) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            self.binary.clone().into(),
            "--id".into(),
            id.into(),
            "--exec-file".into(),
            firecracker.into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            Self::chroot_base(run_dir).into(),
        ];
        if let Some(netns) = &self.netns {
            argv.push("--netns".into());
            argv.push(netns.into());
        }
        if let Some(v) = self.cgroup_version {
            argv.push("--cgroup-version".into());
            argv.push(v.to_string().into());
        }
        if let Some(parent) = &self.parent_cgroup {
            argv.push("--parent-cgroup".into());
            argv.push(parent.into());
        }
        for c in &self.cgroups {
            argv.push("--cgroup".into());
            argv.push(c.into());
        }
        argv.push("--".into());
        argv.extend(firecracker_args.iter().map(OsString::from));
        argv
    }
}
