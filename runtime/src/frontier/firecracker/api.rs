//! Pure builders for every Firecracker API request the driver sends.
//!
//! Each builder returns an [`ApiRequest`] (method, path, JSON body) and does
//! no I/O, so the conformance test can check every body against the API's
//! swagger description (`firecracker.yaml`) without a running VMM.

use serde_json::{Map, Value, json};

/// An HTTP method used by the Firecracker API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// One request to the Firecracker API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The path, e.g. `/boot-source` or `/drives/rootfs`.
    pub path: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

impl ApiRequest {
    fn put(path: impl Into<String>, body: Value) -> Self {
        Self {
            method: Method::Put,
            path: path.into(),
            body: Some(body),
        }
    }

    /// `METHOD /path`, as used in error messages (`PUT /boot-source`).
    pub fn what(&self) -> String {
        format!("{} {}", self.method.as_str(), self.path)
    }
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start the configured microVM.
    InstanceStart,
    /// Send Ctrl+Alt+Del to the guest (x86: a clean reboot request, which
    /// makes Firecracker exit).
    SendCtrlAltDel,
    /// Flush the metrics file.
    FlushMetrics,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Pause the vCPUs.
    Paused,
    /// Resume the vCPUs.
    Resumed,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotType {
    /// All guest memory.
    Full,
    /// Only the pages dirtied since the last snapshot (needs
    /// `track_dirty_pages`).
    Diff,
}

/// Whether `id` is acceptable as a Firecracker resource id (drive or
/// interface id): 1..=64 ASCII alphanumerics or `_`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `GET /`: instance information (state, version).
pub fn describe_instance() -> ApiRequest {
    ApiRequest {
        method: Method::Get,
        path: "/".into(),
        body: None,
    }
}

/// `PUT /machine-config`.
pub fn machine_config(vcpu_count: u32, mem_size_mib: u32, track_dirty_pages: bool) -> ApiRequest {
    ApiRequest::put(
        "/machine-config",
        json!({
            "vcpu_count": vcpu_count,
            "mem_size_mib": mem_size_mib,
            "smt": false,
            "track_dirty_pages": track_dirty_pages,
        }),
    )
}

/// `PUT /boot-source`. Paths are as the VMM sees them.
pub fn boot_source(
    kernel_image_path: &str,
    initrd_path: Option<&str>,
    boot_args: &str,
) -> ApiRequest {
    let mut body = Map::new();
    body.insert("kernel_image_path".into(), kernel_image_path.into());
    if let Some(initrd) = initrd_path {
        body.insert("initrd_path".into(), initrd.into());
    }
    if !boot_args.is_empty() {
        body.insert("boot_args".into(), boot_args.into());
    }
    ApiRequest::put("/boot-source", Value::Object(body))
}

/// `PUT /drives/{drive_id}` for a virtio-block drive backed by a host file.
pub fn drive(
    drive_id: &str,
    path_on_host: &str,
    is_root_device: bool,
    is_read_only: bool,
) -> ApiRequest {
    ApiRequest::put(
        format!("/drives/{drive_id}"),
        json!({
            "drive_id": drive_id,
            "path_on_host": path_on_host,
            "is_root_device": is_root_device,
            "is_read_only": is_read_only,
        }),
    )
}

/// `PUT /network-interfaces/{iface_id}` backed by a host tap device.
pub fn network_interface(
    iface_id: &str,
    host_dev_name: &str,
    guest_mac: Option<&str>,
) -> ApiRequest {
    let mut body = Map::new();
    body.insert("iface_id".into(), iface_id.into());
    body.insert("host_dev_name".into(), host_dev_name.into());
    if let Some(mac) = guest_mac {
        body.insert("guest_mac".into(), mac.into());
    }
    ApiRequest::put(
        format!("/network-interfaces/{iface_id}"),
        Value::Object(body),
    )
}

/// `PUT /vsock`: the guest's vsock device, proxied to the host unix socket
/// `uds_path` (host-initiated connections write `CONNECT <port>\n` there).
pub fn vsock(guest_cid: u32, uds_path: &str) -> ApiRequest {
    ApiRequest::put(
        "/vsock",
        json!({ "guest_cid": guest_cid, "uds_path": uds_path }),
    )
}

/// `PUT /logger`. The driver configures the log file on the command line
/// (`--log-path`) so that startup lines never reach the serial console
/// (stdout); this builder is for VMMs started without it.
pub fn logger(log_path: &str, level: &str) -> ApiRequest {
    ApiRequest::put(
        "/logger",
        json!({ "log_path": log_path, "level": level, "show_level": true }),
    )
}

/// `PUT /metrics`.
pub fn metrics(metrics_path: &str) -> ApiRequest {
    ApiRequest::put("/metrics", json!({ "metrics_path": metrics_path }))
}

/// `PUT /actions`.
pub fn action(action: Action) -> ApiRequest {
    let action_type = match action {
        Action::InstanceStart => "InstanceStart",
        Action::SendCtrlAltDel => "SendCtrlAltDel",
        Action::FlushMetrics => "FlushMetrics",
    };
    ApiRequest::put("/actions", json!({ "action_type": action_type }))
}

/// `PATCH /vm`: pause or resume.
pub fn vm_state(state: VmState) -> ApiRequest {
    let state = match state {
        VmState::Paused => "Paused",
        VmState::Resumed => "Resumed",
    };
    ApiRequest {
        method: Method::Patch,
        path: "/vm".into(),
        body: Some(json!({ "state": state })),
    }
}

/// `PUT /snapshot/create` (the VM must be paused).
pub fn snapshot_create(snapshot_path: &str, mem_file_path: &str, kind: SnapshotType) -> ApiRequest {
    let kind = match kind {
        SnapshotType::Full => "Full",
        SnapshotType::Diff => "Diff",
    };
    ApiRequest::put(
        "/snapshot/create",
        json!({ "snapshot_path": snapshot_path, "mem_file_path": mem_file_path, "snapshot_type": kind }),
    )
}

/// `PUT /snapshot/load` (on a fresh VMM), memory from a file; `vsock_uds`
/// overrides the vsock socket path the snapshot recorded.
pub fn snapshot_load(
    snapshot_path: &str,
    mem_file_path: &str,
    resume_vm: bool,
    vsock_uds: Option<&str>,
) -> ApiRequest {
    let mut body = Map::new();
    body.insert("snapshot_path".into(), snapshot_path.into());
    body.insert(
        "mem_backend".into(),
        json!({ "backend_type": "File", "backend_path": mem_file_path }),
    );
    body.insert("resume_vm".into(), resume_vm.into());
    if let Some(uds) = vsock_uds {
        body.insert("vsock_override".into(), json!({ "uds_path": uds }));
    }
    ApiRequest::put("/snapshot/load", Value::Object(body))
}

/// What one microVM is configured with before `InstanceStart`; paths are
/// as the VMM sees them (inside the chroot when jailed).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BootPlan {
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Kernel image path.
    pub kernel: String,
    /// Initrd path.
    pub initrd: Option<String>,
    /// Kernel command line (empty: Firecracker's default).
    pub cmdline: String,
    /// Drives: (id, path, is_root, read_only).
    pub drives: Vec<(String, String, bool, bool)>,
    /// Network interfaces: (iface id, tap name, guest MAC). None by default.
    pub taps: Vec<(String, String, Option<String>)>,
    /// Vsock: (guest CID, host unix socket path).
    pub vsock: Option<(u32, String)>,
    /// Metrics file path.
    pub metrics: Option<String>,
    /// Track dirty pages (for diff snapshots).
    pub track_dirty_pages: bool,
}

/// Every request, in order, that configures `plan` (not including
/// `InstanceStart`).
pub fn configure(plan: &BootPlan) -> Vec<ApiRequest> {
    let mut out = Vec::new();
    if let Some(m) = &plan.metrics {
        out.push(metrics(m));
    }
    out.push(machine_config(
        plan.vcpus,
        plan.memory_mib,
        plan.track_dirty_pages,
    ));
    out.push(boot_source(
        &plan.kernel,
        plan.initrd.as_deref(),
        &plan.cmdline,
    ));
    for (id, path, root, ro) in &plan.drives {
        out.push(drive(id, path, *root, *ro));
    }
    for (id, tap, mac) in &plan.taps {
        out.push(network_interface(id, tap, mac.as_deref()));
    }
    if let Some((cid, uds)) = &plan.vsock {
        out.push(vsock(*cid, uds));
    }
    out
}
