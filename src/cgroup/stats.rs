//! Utilization read from a cgroup's own counters, cheaply: a handful of small files.

use serde::Serialize;

use super::{parse_flat_keyed, Cgroup, Mode};

/// One reading of a cgroup's counters. Cumulative counters (CPU, block I/O) need two readings
/// to become rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// CPU time used, nanoseconds since the cgroup was created.
    pub cpu_ns: u64,
    /// Time the cgroup was throttled by its CPU quota, nanoseconds.
    pub throttled_ns: u64,
    /// Memory in use without the page cache that can be dropped: usage − inactive file (v2),
    /// usage − cache (v1), as `docker stats` and ECS report it.
    pub memory_bytes: u64,
    /// The hard limit, None when unlimited.
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

/// Larger than any real limit: the kernel's "unlimited" on v1 is near i64::MAX.
const UNLIMITED_V1: u64 = 1 << 60;

impl Cgroup {
    /// The content of `file` in whichever of the cgroup's directories has it.
    fn read(&self, file: &str) -> Option<String> {
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        self.read(file)?.trim().parse().ok()
    }

    /// Reads the counters; a counter the host lacks reads as zero.
    pub fn sample(&self) -> Sample {
        match self.mode {
            Mode::V1 => self.sample_v1(),
            Mode::V2 => self.sample_v2(),
        }
    }

    fn sample_v1(&self) -> Sample {
        let stat = self.read("memory.stat").unwrap_or_default();
        let cache = parse_flat_keyed(&stat, "total_cache")
            .or_else(|| parse_flat_keyed(&stat, "cache"))
            .unwrap_or(0);
        let usage = self.read_u64("memory.usage_in_bytes").unwrap_or(0);
        let (r, w) = parse_blkio_v1(
            &self
                .read("blkio.throttle.io_service_bytes_recursive")
                .or_else(|| self.read("blkio.throttle.io_service_bytes"))
                .unwrap_or_default(),
        );
        Sample {
            cpu_ns: self.read_u64("cpuacct.usage").unwrap_or(0),
            throttled_ns: self
                .read("cpu.stat")
                .and_then(|s| parse_flat_keyed(&s, "throttled_time"))
                .unwrap_or(0),
            memory_bytes: usage.saturating_sub(cache),
            memory_limit: self
                .read_u64("memory.limit_in_bytes")
                .filter(|l| *l < UNLIMITED_V1),
            pids: self.read_u64("pids.current").unwrap_or(0),
            block_read_bytes: r,
            block_write_bytes: w,
        }
    }

    fn sample_v2(&self) -> Sample {
        let cpu = self.read("cpu.stat").unwrap_or_default();
        let stat = self.read("memory.stat").unwrap_or_default();
        let inactive = parse_flat_keyed(&stat, "inactive_file").unwrap_or(0);
        let (r, w) = parse_io_stat_v2(&self.read("io.stat").unwrap_or_default());
        Sample {
            cpu_ns: parse_flat_keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
            throttled_ns: parse_flat_keyed(&cpu, "throttled_usec").unwrap_or(0) * 1000,
            memory_bytes: self
                .read_u64("memory.current")
                .unwrap_or(0)
                .saturating_sub(inactive),
            memory_limit: self.read_u64("memory.max"),
            pids: self.read_u64("pids.current").unwrap_or(0),
            block_read_bytes: r,
            block_write_bytes: w,
        }
    }

    /// A process of the cgroup (for its network namespace's counters).
    pub fn first_pid(&self) -> Option<i32> {
        self.read("cgroup.procs")?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

/// `8:0 Read 4096` lines; the `Total` lines are skipped.
fn parse_blkio_v1(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let (Some(_dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match op {
            "Read" => r += v,
            "Write" => w += v,
            _ => {}
        }
    }
    (r, w)
}

/// `8:0 rbytes=1 wbytes=2 rios=...` lines.
fn parse_io_stat_v2(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        for kv in l.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("rbytes", v)) => r += v.parse().unwrap_or(0),
                Some(("wbytes", v)) => w += v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    (r, w)
}

/// Network counters of a namespace, summed over its interfaces but loopback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NetSample {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// Reads `/proc/<pid>/net/dev`, which shows the network namespace of `pid`.
pub fn net_sample(pid: i32) -> Option<NetSample> {
    parse_net_dev(&std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?)
}

fn parse_net_dev(text: &str) -> Option<NetSample> {
    let mut s = NetSample::default();
    for l in text.lines().skip(2) {
        let (iface, rest) = l.split_once(':')?;
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() < 10 {
            continue;
        }
        s.rx_bytes += f[0];
        s.rx_packets += f[1];
        s.tx_bytes += f[8];
        s.tx_packets += f[9];
    }
    Some(s)
}

/// CPU use between two samples in percent of the host's CPU capacity:
/// 100 × Δcpu / Δwall / cores, as ECS reports utilization (100 % = every core busy).
pub fn cpu_percent(prev: &Sample, cur: &Sample, wall_ns: u64, cores: u32) -> f64 {
    if wall_ns == 0 || cores == 0 {
        return 0.0;
    }
    100.0 * cur.cpu_ns.saturating_sub(prev.cpu_ns) as f64 / wall_ns as f64 / cores as f64
}

/// Aggregate of a metric over a reporting window: what ECS telemetry sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Window {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub sample_count: u64,
}

impl Window {
    pub fn add(&mut self, v: f64) {
        if self.sample_count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.sum += v;
        self.sample_count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_and_io_stat() {
        let v1 = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n";
        assert_eq!(parse_blkio_v1(v1), (4097, 8192));
        let v2 =
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=1 wbytes=2\n";
        assert_eq!(parse_io_stat_v2(v2), (101, 202));
    }

    #[test]
    fn net_dev_skips_loopback() {
        let t = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n";
        let s = parse_net_dev(t).unwrap();
        assert_eq!(
            s,
            NetSample {
                rx_bytes: 1000,
                rx_packets: 10,
                tx_bytes: 500,
                tx_packets: 5
            }
        );
    }

    #[test]
    fn cpu_and_windows() {
        let a = Sample {
            cpu_ns: 1_000_000_000,
            ..Default::default()
        };
        let b = Sample {
            cpu_ns: 1_500_000_000,
            ..Default::default()
        };
        assert!((cpu_percent(&a, &b, 1_000_000_000, 1) - 50.0).abs() < 1e-9);
        assert!((cpu_percent(&a, &b, 1_000_000_000, 2) - 25.0).abs() < 1e-9);
        let mut w = Window::default();
        for v in [3.0, 1.0, 2.0] {
            w.add(v);
        }
        assert_eq!(
            w,
            Window {
                min: 1.0,
                max: 3.0,
                sum: 6.0,
                sample_count: 3
            }
        );
    }
}
