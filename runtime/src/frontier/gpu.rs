//! `gpu = "passthrough"`: VFIO assignment of a host GPU to a microVM.
//!
//! A GPU (PCI class `0x03xxxx`) can be passed through only when it sits in
//! an IOMMU group of its own (its other functions, e.g. the HDMI audio
//! function `.1`, may share the group and are passed through with it) and
//! every device of the group is bound to `vfio-pci`. Anything else is a
//! refusal with the reason: a brane that asks for a GPU never silently runs
//! on the CPU.

use std::path::{Path, PathBuf};

/// The devices to hand to the VMM (`-device vfio-pci,host=…` each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuAssignment {
    /// The GPU's PCI address, e.g. `0000:01:00.0`.
    pub gpu: String,
    /// Its IOMMU group.
    pub iommu_group: u32,
    /// Every device of the group (the GPU first), all bound to `vfio-pci`.
    pub devices: Vec<String>,
}

impl GpuAssignment {
    /// The QEMU arguments that assign the group's devices.
    pub fn qemu_args(&self) -> Vec<String> {
        self.devices
            .iter()
            .flat_map(|d| ["-device".to_string(), format!("vfio-pci,host={d}")])
            .collect()
    }
}

/// Why no GPU can be passed through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gpu = \"passthrough\" refused: {0}")]
pub struct GpuRefusal(pub String);

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// The slot of a PCI address (`0000:01:00.1` → `0000:01:00`).
fn slot(addr: &str) -> &str {
    addr.rsplit_once('.').map_or(addr, |(s, _)| s)
}

/// Pick a GPU to pass through from the sysfs tree at `sysfs` (`/sys` on a
/// real host): the first (by address) that is alone in its IOMMU group
/// (with its own functions) and bound to `vfio-pci`.
pub fn select_passthrough(sysfs: &Path) -> Result<GpuAssignment, GpuRefusal> {
    let devices_dir = sysfs.join("bus/pci/devices");
    let mut gpus: Vec<String> = std::fs::read_dir(&devices_dir)
        .map_err(|e| {
            GpuRefusal(format!(
                "cannot list PCI devices in {}: {e}",
                devices_dir.display()
            ))
        })?
        .flatten()
        .filter_map(|d| {
            let class = read_trim(&d.path().join("class"))?;
            let class = u32::from_str_radix(class.trim_start_matches("0x"), 16).ok()?;
            (class >> 16 == 0x03).then(|| d.file_name().to_string_lossy().into_owned())
        })
        .take(256)
        .collect();
    gpus.sort();
    if gpus.is_empty() {
        return Err(GpuRefusal(format!(
            "this host has no GPU (no PCI device of class 0x03xxxx under {})",
            devices_dir.display()
        )));
    }
    let groups = sysfs.join("kernel/iommu_groups");
    let has_groups = std::fs::read_dir(&groups)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !has_groups {
        return Err(GpuRefusal(format!(
            "the IOMMU is off (no groups under {}): enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on",
            groups.display()
        )));
    }
    let mut reasons = Vec::new();
    for gpu in &gpus {
        match check(sysfs, &devices_dir, gpu) {
            Ok(a) => return Ok(a),
            Err(r) => reasons.push(r),
        }
    }
    Err(GpuRefusal(reasons.join("; ")))
}

fn check(sysfs: &Path, devices_dir: &Path, gpu: &str) -> Result<GpuAssignment, String> {
    let dev = devices_dir.join(gpu);
    let group = link_name(&dev.join("iommu_group"))
        .ok_or_else(|| format!("GPU {gpu} has no IOMMU group"))?;
    let group_no: u32 = group
        .parse()
        .map_err(|_| format!("GPU {gpu}: IOMMU group {group:?} is not a number"))?;
    let members_dir: PathBuf = sysfs
        .join("kernel/iommu_groups")
        .join(&group)
        .join("devices");
    let mut members: Vec<String> = std::fs::read_dir(&members_dir)
        .map_err(|e| format!("GPU {gpu}: {}: {e}", members_dir.display()))?
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .take(256)
        .collect();
    members.sort();
    let strangers: Vec<&String> = members.iter().filter(|m| slot(m) != slot(gpu)).collect();
    if !strangers.is_empty() {
        return Err(format!(
            "GPU {gpu} shares IOMMU group {group_no} with {} (not its own group; try another slot or an ACS-capable bridge)",
            strangers
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for m in &members {
        let driver = link_name(&devices_dir.join(m).join("driver"));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(format!(
                "{m} (IOMMU group {group_no}) is bound to {}, not vfio-pci: echo vfio-pci > /sys/bus/pci/devices/{m}/driver_override, unbind it, and echo {m} > /sys/bus/pci/drivers_probe",
                driver.as_deref().unwrap_or("no driver")
            ));
        }
    }
    if !members.iter().any(|m| m == gpu) {
        members.push(gpu.to_string());
    }
    members.sort_by_key(|m| m != gpu);
    Ok(GpuAssignment {
        gpu: gpu.to_string(),
        iommu_group: group_no,
        devices: members,
    })
}
