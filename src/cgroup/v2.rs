//! cgroup v2: one unified hierarchy; controllers must be enabled down the tree.

use std::path::Path;

use super::{shares_to_weight, write_file, Cgroup, CgroupError, Limits};

/// Controllers skiff needs below its parent cgroup.
pub(super) const WANTED: &[&str] = &["cpu", "memory", "pids", "io"];

pub(super) fn enable_subtree(dir: &Path) -> Result<(), CgroupError> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(super::io_err(dir, "read cgroup.controllers"))?;
    let want: Vec<String> = WANTED
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    write_file(dir, "cgroup.subtree_control", &want.join(" ")).map_err(|e| match e {
        CgroupError::Io { path, source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
            CgroupError::Setup {
                path,
                msg: "cannot enable controllers: the cgroup holds processes; run skiff in a delegated cgroup (e.g. systemd-run --scope -p Delegate=yes skiff ...)".into(),
            }
        }
        other => other,
    })
}

pub(super) fn apply(cg: &Cgroup, limits: &Limits) -> Result<(), CgroupError> {
    let dir = &cg.dirs[0];
    if let Some(max) = limits.memory_max {
        write_file(dir, "memory.max", &max.to_string())?;
        if dir.join("memory.swap.max").exists() {
            let swap = limits.swap_max.unwrap_or(0);
            write_file(dir, "memory.swap.max", &swap.to_string())?;
        }
    }
    if let Some(low) = limits.memory_low {
        write_file(dir, "memory.low", &low.to_string())?;
    }
    if let Some(shares) = limits.cpu_shares {
        write_file(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
    }
    if let Some(quota) = limits.cpu_quota_us {
        write_file(dir, "cpu.max", &format!("{quota} {}", limits.cpu_period_us))?;
    }
    if let Some(p) = limits.pids_max {
        write_file(dir, "pids.max", &p.to_string())?;
    }
    Ok(())
}
