//! cgroups: where skiff's subtree lives, limits per task and container, OOM counters.
//!
//! skiff creates its cgroups beneath the cgroup it runs in (per controller on v1), never at a
//! hierarchy's root, and removes exactly what it created. The layout is
//! `<own cgroup>/<parent name>/<task id>/<container name>`.

mod detect;
pub mod devices;
mod oom;
pub mod stats;
mod v1;
mod v2;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use detect::{Hierarchy, Mode, Placement};
pub use oom::OomWatch;

/// Default name of skiff's parent cgroup beneath the cgroup it runs in.
pub const DEFAULT_PARENT: &str = "skiff";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup detection: {0}")]
    Detect(String),
    #[error("cgroup {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {path}: {msg}")]
    Setup { path: PathBuf, msg: String },
    /// A host device named for a container: missing, or not a device.
    #[cfg_attr(not(test), allow(dead_code))]
    #[error("device {path}: {msg}")]
    Device { path: PathBuf, msg: String },
}

pub(crate) fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { path, op, source }
}

/// Limits of one cgroup, in the task definition's units already converted to bytes/shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Hard memory limit in bytes.
    pub memory_max: Option<u64>,
    /// Soft memory limit (reservation) in bytes.
    pub memory_low: Option<u64>,
    /// CPU shares (v1 scale, 2..=262144), converted to a weight on v2.
    pub cpu_shares: Option<u64>,
    /// Hard CPU quota in microseconds per `cpu_period_us`.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    /// Swap the cgroup may use, in bytes, on top of `memory_max` (0 = none). Only applied
    /// together with a hard memory limit, as swap is accounted against it.
    pub swap_max: Option<u64>,
    /// v1 only: the cgroup's swappiness (0-100).
    pub swappiness: Option<u64>,
    /// Most processes (and threads) at once.
    pub pids_max: Option<u64>,
}

/// The smallest hard memory limit skiff applies (as the ECS agent does).
pub const MEMORY_FLOOR: u64 = 4 * 1024 * 1024;
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

/// Container `cpu` units → CPU shares: clamped to 2..=262144, and 0 → 2 as ECS does.
pub fn cpu_units_to_shares(units: u64) -> u64 {
    units.clamp(2, 262_144)
}

/// v1 shares → v2 weight, the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// Task-level CPU units → a CFS quota over `period_us`.
pub fn cpu_units_to_quota(units: u64, period_us: u64) -> u64 {
    // At least 1 ms, the kernel's minimum quota.
    (units * period_us / 1024).max(1000)
}

pub fn mib_to_bytes(mib: u64) -> u64 {
    (mib * 1024 * 1024).max(MEMORY_FLOOR)
}

/// One cgroup that skiff created: a directory per v1 hierarchy, or one on v2. Serializable so
/// that the shim can join it and read its OOM counter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cgroup {
    pub mode: Mode,
    /// v1: one directory per mounted hierarchy (memory, cpu, ...); v2: exactly one.
    pub dirs: Vec<PathBuf>,
    /// The directory holding the memory controller's files.
    pub memory_dir: Option<PathBuf>,
    /// Where the device allowlist is enforced (see [`Cgroup::apply_devices`]): v1, the
    /// directory in the devices hierarchy (None when the host has no devices controller; it is
    /// also one of `dirs`); v2, the cgroup's directory, to which a BPF program is attached.
    /// Records written before this field existed read as None.
    #[serde(default)]
    pub devices_dir: Option<PathBuf>,
}

impl Cgroup {
    /// The `cgroup.procs` files a process writes "0" into to join this cgroup.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Moves the calling process, which must have exactly one thread, into this cgroup.
    ///
    /// On v1 its one thread is written to each hierarchy's `tasks`: moving a single thread
    /// that is the writer itself spares the kernel the global threadgroup lock that a
    /// `cgroup.procs` write takes, whose first use waits for an RCU grace period (5-15 ms
    /// here, most of a container's start). v2 has no such move between domain cgroups; there
    /// the clone puts the process in its cgroup at birth (`CLONE_INTO_CGROUP`) when the kernel
    /// can, and `cgroup.procs` is the fallback.
    pub fn join_single_threaded(&self) -> Result<(), CgroupError> {
        let file = match self.mode {
            Mode::V1 => "tasks",
            Mode::V2 => "cgroup.procs",
        };
        for d in &self.dirs {
            let f = d.join(file);
            std::fs::write(&f, "0").map_err(io_err(&f, "join"))?;
        }
        Ok(())
    }

    /// The v2 cgroup directory a clone can be born in (`CLONE_INTO_CGROUP`).
    pub fn v2_dir(&self) -> Option<&Path> {
        match self.mode {
            Mode::V2 => self.dirs.first().map(PathBuf::as_path),
            Mode::V1 => None,
        }
    }

    /// How many processes the kernel's OOM killer killed in this cgroup (None when the kernel
    /// does not count it).
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory_dir.as_ref()?;
        let (file, key) = match self.mode {
            Mode::V1 => ("memory.oom_control", "oom_kill"),
            Mode::V2 => ("memory.events", "oom_kill"),
        };
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        parse_flat_keyed(&text, key)
    }

    /// Creates the cgroup (the parent must exist) and applies `limits`.
    pub fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        for d in &self.dirs {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(d, "create")(e)),
            }
        }
        let applied = match self.mode {
            Mode::V1 => v1::apply(self, limits),
            Mode::V2 => v2::apply(self, limits),
        };
        if let Err(e) = applied {
            self.remove();
            return Err(e);
        }
        Ok(())
    }

    /// Enables the controllers for children (v2 only; no-op on v1).
    pub fn enable_subtree(&self) -> Result<(), CgroupError> {
        match self.mode {
            Mode::V1 => Ok(()),
            Mode::V2 => v2::enable_subtree(&self.dirs[0]),
        }
    }

    /// Removes the cgroup's directories (the devices one among them: it is one of `dirs`),
    /// retrying briefly while exiting processes leave. Returns the directories that could not
    /// be removed. On v2 a device program attached to the cgroup goes away with it.
    pub fn remove(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for d in &self.dirs {
            if !remove_dir_retry(d) {
                left.push(d.clone());
            }
        }
        left
    }

    pub fn child(&self, name: &str) -> Cgroup {
        Cgroup {
            mode: self.mode,
            dirs: self.dirs.iter().map(|d| d.join(name)).collect(),
            memory_dir: self.memory_dir.as_ref().map(|d| d.join(name)),
            devices_dir: self.devices_dir.as_ref().map(|d| d.join(name)),
        }
    }
}

fn remove_dir_retry(d: &Path) -> bool {
    for attempt in 0..50 {
        match std::fs::remove_dir(d) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove cgroup");
                return false;
            }
        }
    }
    false
}

/// Reads `key value` lines (memory.events, memory.oom_control, cpu.stat).
pub fn parse_flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|source| CgroupError::Io {
        path: p,
        op: "write",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_weight() {
        assert_eq!(cpu_units_to_shares(0), 2);
        assert_eq!(cpu_units_to_shares(1), 2);
        assert_eq!(cpu_units_to_shares(512), 512);
        assert_eq!(cpu_units_to_shares(1 << 20), 262_144);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }

    #[test]
    fn quota_and_memory() {
        assert_eq!(cpu_units_to_quota(512, 100_000), 50_000);
        assert_eq!(cpu_units_to_quota(2048, 100_000), 200_000);
        assert_eq!(cpu_units_to_quota(1, 100_000), 1000);
        assert_eq!(mib_to_bytes(1), MEMORY_FLOOR);
        assert_eq!(mib_to_bytes(64), 64 << 20);
    }

    #[test]
    fn flat_keyed() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_flat_keyed(t, "oom_kill"), Some(3));
        assert_eq!(parse_flat_keyed(t, "oom"), None);
        assert_eq!(
            parse_flat_keyed("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
    }
}
