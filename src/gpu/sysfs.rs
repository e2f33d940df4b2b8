//! AMD VRAM from sysfs: `/sys/class/drm/card*/device/mem_info_vram_{total,used}`
//! (amdgpu), and the gfx arch from the KFD topology, so VRAM is known even
//! where the HIP runtime is not installed.

use std::path::Path;

use super::{Backend, Device};

/// AMD's PCI vendor id.
const AMD_VENDOR: &str = "0x1002";

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// `gfx_target_version 110501` → `gfx1151` (major, then minor and stepping in hex).
pub fn gfx_arch(target_version: u64) -> Option<String> {
    if target_version == 0 {
        return None;
    }
    let major = target_version / 10_000;
    let minor = (target_version / 100) % 100;
    let step = target_version % 100;
    Some(format!("gfx{major}{minor:x}{step:x}"))
}

/// The gfx archs of the KFD topology's GPU nodes under `kfd_nodes`, in node order.
pub fn kfd_archs(kfd_nodes: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(kfd_nodes) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u64, String)> = entries
        .flatten()
        .filter_map(|e| {
            let index: u64 = e.file_name().to_str()?.parse().ok()?;
            let props = std::fs::read_to_string(e.path().join("properties")).ok()?;
            let version = props
                .lines()
                .find_map(|l| l.strip_prefix("gfx_target_version "))
                .and_then(|v| v.trim().parse().ok())?;
            Some((index, gfx_arch(version)?))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, arch)| arch).collect()
}

/// AMD cards under `drm` (`/sys/class/drm`) with their VRAM; archs from `kfd_nodes`.
pub fn probe_at(drm: &Path, kfd_nodes: &Path) -> Result<Vec<Device>, String> {
    let entries = std::fs::read_dir(drm).map_err(|e| format!("{}: {e}", drm.display()))?;
    let mut cards: Vec<(u32, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            // card0, not card0-DP-1.
            let n: u32 = name.strip_prefix("card")?.parse().ok()?;
            Some((n, e.path().join("device")))
        })
        .collect();
    cards.sort();
    let archs = kfd_archs(kfd_nodes);
    let mut devices = Vec::new();
    for (_, dev) in cards {
        if read_trimmed(&dev.join("vendor")).as_deref() != Some(AMD_VENDOR) {
            continue;
        }
        let (Some(total), Some(used)) = (
            read_u64(&dev.join("mem_info_vram_total")),
            read_u64(&dev.join("mem_info_vram_used")),
        ) else {
            continue;
        };
        let index = u32::try_from(devices.len()).unwrap_or(u32::MAX);
        let name = read_trimmed(&dev.join("product_name"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("AMD GPU {index}"));
        devices.push(Device {
            backend: Backend::Sysfs,
            index,
            name,
            arch: archs.get(devices.len()).cloned(),
            total_bytes: total,
            free_bytes: total.saturating_sub(used),
            kind: crate::gpu::DeviceKind::Unknown,
            ggml_name: None,
            usable: false,
            arch_override: crate::gpu::amd_arch_override(),
        });
    }
    if devices.is_empty() {
        return Err(format!(
            "no amdgpu card with mem_info_vram_total under {}",
            drm.display()
        ));
    }
    Ok(devices)
}

/// The machine's AMD cards.
pub fn probe() -> Result<Vec<Device>, String> {
    probe_at(
        Path::new("/sys/class/drm"),
        Path::new("/sys/class/kfd/kfd/topology/nodes"),
    )
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn card(root: &Path, name: &str, vendor: &str, total: &str, used: &str, product: Option<&str>) {
        let dev = root.join(name).join("device");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("vendor"), format!("{vendor}\n")).unwrap();
        if !total.is_empty() {
            fs::write(dev.join("mem_info_vram_total"), format!("{total}\n")).unwrap();
            fs::write(dev.join("mem_info_vram_used"), format!("{used}\n")).unwrap();
        }
        if let Some(p) = product {
            fs::write(dev.join("product_name"), p).unwrap();
        }
    }

    #[test]
    fn amd_cards_are_read_with_their_vram_and_arch() {
        let tmp = tempfile::tempdir().unwrap();
        let (drm, kfd) = (tmp.path().join("drm"), tmp.path().join("kfd"));
        card(
            &drm,
            "card1",
            "0x1002",
            "68719476736",
            "1073741824",
            Some("AMD Radeon 8060S"),
        );
        card(&drm, "card0", "0x10de", "100", "0", None); // NVIDIA: not ours
        card(&drm, "card2", "0x1002", "", "", None); // no VRAM figures: skipped
        fs::create_dir_all(drm.join("card1-DP-1")).unwrap();
        for (node, props) in [
            ("0", "cpu_cores_count 16\ngfx_target_version 0\n"),
            ("1", "simd_count 80\ngfx_target_version 110501\n"),
        ] {
            fs::create_dir_all(kfd.join(node)).unwrap();
            fs::write(kfd.join(node).join("properties"), props).unwrap();
        }
        let devices = probe_at(&drm, &kfd).unwrap();
        assert_eq!(
            devices,
            vec![Device {
                backend: Backend::Sysfs,
                index: 0,
                name: "AMD Radeon 8060S".into(),
                arch: Some("gfx1151".into()),
                total_bytes: 64 << 30,
                free_bytes: (64 << 30) - (1 << 30),
                kind: crate::gpu::DeviceKind::Unknown,
                ggml_name: None,
                usable: false,
                arch_override: crate::gpu::amd_arch_override(),
            }]
        );
    }

    #[test]
    fn no_cards_is_a_reason_not_a_failure() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            probe_at(&tmp.path().join("missing"), tmp.path())
                .unwrap_err()
                .contains("missing")
        );
        assert!(
            probe_at(tmp.path(), tmp.path())
                .unwrap_err()
                .contains("no amdgpu card")
        );
    }

    #[test]
    fn gfx_target_versions_become_arch_names() {
        assert_eq!(gfx_arch(110501).as_deref(), Some("gfx1151"));
        assert_eq!(gfx_arch(90010).as_deref(), Some("gfx90a"));
        assert_eq!(gfx_arch(100300).as_deref(), Some("gfx1030"));
        assert_eq!(gfx_arch(0), None);
    }
}
