//! cgroup v1: limits written to the per-controller hierarchies.

use std::path::Path;

use super::{write_file, Cgroup, CgroupError, Limits};

fn has(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

pub(super) fn apply(cg: &Cgroup, limits: &Limits) -> Result<(), CgroupError> {
    for dir in &cg.dirs {
        if has(dir, "memory.limit_in_bytes") {
            if let Some(max) = limits.memory_max {
                write_file(dir, "memory.limit_in_bytes", &max.to_string())?;
                // memory+swap = memory + allowed swap; absent when swap accounting is off.
                if has(dir, "memory.memsw.limit_in_bytes") {
                    let memsw = max + limits.swap_max.unwrap_or(0);
                    write_file(dir, "memory.memsw.limit_in_bytes", &memsw.to_string())?;
                }
            }
            if let Some(low) = limits.memory_low {
                write_file(dir, "memory.soft_limit_in_bytes", &low.to_string())?;
            }
            if let Some(sw) = limits.swappiness {
                write_file(dir, "memory.swappiness", &sw.to_string())?;
            }
        }
        if has(dir, "cpu.shares") {
            if let Some(shares) = limits.cpu_shares {
                write_file(dir, "cpu.shares", &shares.to_string())?;
            }
            if let Some(quota) = limits.cpu_quota_us {
                write_file(dir, "cpu.cfs_period_us", &limits.cpu_period_us.to_string())?;
                write_file(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if has(dir, "pids.max") {
            if let Some(p) = limits.pids_max {
                write_file(dir, "pids.max", &p.to_string())?;
            }
        }
    }
    Ok(())
}
