//! Utilization windows: each running task's cgroup and the host are sampled every few
//! seconds; every interval the min/max/sum/count windows go to the control plane and start
//! again. Windows are not kept across a failed post: utilization is a gauge, not a record.

use std::collections::HashMap;
use std::time::Instant;

use crate::cgroup::stats::Sample;
use crate::proto::{TaskUsage, Usage, UtilizationRequest};
use crate::task::record::TaskRecord;

const MIB: f64 = 1024.0 * 1024.0;

/// Host CPU counters from /proc/stat: (busy, total) jiffies.
fn host_cpu() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Memory in use on the host (MemTotal − MemAvailable), MiB.
fn host_memory_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |k: &str| -> Option<f64> {
        let l = text.lines().find(|l| l.starts_with(k))?;
        l.split_whitespace().nth(1)?.parse::<f64>().ok()
    };
    Some((field("MemTotal:")? - field("MemAvailable:")?) / 1024.0)
}

pub struct Sampler {
    cores: u32,
    window_start: f64,
    instance: Usage,
    tasks: HashMap<String, Usage>,
    prev_tasks: HashMap<String, (Sample, Instant)>,
    prev_host: Option<(u64, u64)>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler {
            cores: super::capacity::online_cores(),
            window_start: super::snapshot::now(),
            instance: Usage::default(),
            tasks: HashMap::new(),
            prev_tasks: HashMap::new(),
            prev_host: host_cpu(),
        }
    }

    /// One sample of the host and of each running task (by ARN). CPU is in CPU units (1024
    /// per busy core) over the time since the previous sample; the first sample of a task
    /// only sets its baseline.
    pub fn sample(&mut self, running: &[(String, TaskRecord)]) {
        if let (Some((b0, t0)), Some((b1, t1))) = (self.prev_host, host_cpu()) {
            if t1 > t0 {
                let busy = (b1 - b0) as f64 / (t1 - t0) as f64;
                self.instance.cpu.add(busy * self.cores as f64 * 1024.0);
                self.prev_host = Some((b1, t1));
            }
        } else {
            self.prev_host = host_cpu();
        }
        if let Some(m) = host_memory_mib() {
            self.instance.memory.add(m);
        }
        let now = Instant::now();
        let mut seen = HashMap::new();
        for (arn, rec) in running {
            let s = rec.cgroup.sample();
            if let Some((p, at)) = self.prev_tasks.get(arn) {
                let wall = now.duration_since(*at).as_nanos() as f64;
                let u = self.tasks.entry(arn.clone()).or_default();
                if wall > 0.0 {
                    u.cpu
                        .add(s.cpu_ns.saturating_sub(p.cpu_ns) as f64 / wall * 1024.0);
                }
                u.memory.add(s.memory_bytes as f64 / MIB);
            }
            seen.insert(arn.clone(), (s, now));
        }
        self.prev_tasks = seen;
    }

    /// The windows since the last report (None before any sample), and a fresh start.
    pub fn take(&mut self) -> Option<UtilizationRequest> {
        let end = super::snapshot::now();
        if self.instance.cpu.count == 0 && self.instance.memory.count == 0 {
            return None;
        }
        let mut tasks: Vec<TaskUsage> = self
            .tasks
            .drain()
            .map(|(task_arn, usage)| TaskUsage { task_arn, usage })
            .collect();
        tasks.sort_by(|a, b| a.task_arn.cmp(&b.task_arn));
        let req = UtilizationRequest {
            window_start: self.window_start,
            window_end: end,
            instance: std::mem::take(&mut self.instance),
            tasks,
        };
        self.window_start = end;
        Some(req)
    }
}
