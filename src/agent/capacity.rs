//! The instance's capacity as ECS counts it: CPU = cores × 1024 units, memory = MemTotal −
//! reserved memory (ECS_RESERVED_MEMORY).

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Capacity {
    pub cores: u32,
    pub cpu_units: u64,
    pub memory_total_mib: u64,
    pub memory_reserved_mib: u64,
    pub memory_mib: u64,
}

/// Online CPUs of the host (not this process's affinity: tasks are placed on the host).
pub fn online_cores() -> u32 {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u32
    } else {
        1
    }
}

/// MemTotal in MiB from /proc/meminfo.
pub fn mem_total_mib() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

pub fn capacity(reserved_mib: u64) -> Result<Capacity, String> {
    let cores = online_cores();
    let total = mem_total_mib().ok_or("cannot read MemTotal from /proc/meminfo")?;
    if reserved_mib >= total {
        return Err(format!(
            "reserved memory ({reserved_mib} MiB) must be less than the host's memory ({total} MiB)"
        ));
    }
    Ok(Capacity {
        cores,
        cpu_units: cores as u64 * 1024,
        memory_total_mib: total,
        memory_reserved_mib: reserved_mib,
        memory_mib: total - reserved_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_mem_total("MemTotal:       25165824 kB\nMemFree: 1 kB\n"),
            Some(24576)
        );
        assert_eq!(parse_mem_total("nothing"), None);
    }

    #[test]
    fn reserved_memory_is_subtracted_and_checked() {
        let c = capacity(100).unwrap();
        assert_eq!(c.cpu_units, c.cores as u64 * 1024);
        assert_eq!(c.memory_mib, c.memory_total_mib - 100);
        assert!(capacity(u64::MAX / 2).is_err());
    }
}
