//! `skiff stats`: utilization of running tasks, like `docker stats`, or ECS-style telemetry
//! windows with `--telemetry`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;

use super::EXIT_RUNNER_ERROR;
use crate::agent::capacity::online_cores;
use crate::cgroup::stats::{cpu_percent, net_sample, NetSample, Sample, Window};
use crate::task::record::{self, TaskRecord};

#[derive(Args)]
pub struct StatsArgs {
    /// Task IDs (or unique prefixes) or families; every running task when none is given.
    tasks: Vec<String>,
    /// One reading, then exit.
    #[arg(long)]
    no_stream: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds between readings of the table or JSON view.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// ECS telemetry: sample every --sample seconds, print one JSON line per task and
    /// container for every --window seconds with min/max/sum/count.
    #[arg(long)]
    telemetry: bool,
    #[arg(long, default_value_t = 10.0)]
    sample: f64,
    #[arg(long, default_value_t = 20.0)]
    window: f64,
}

/// One reading of a task: its own cgroup and each container's.
#[derive(Clone)]
struct Reading {
    at: Instant,
    task: Sample,
    net: NetSample,
    containers: Vec<(String, Sample, NetSample)>,
}

fn read_task(rec: &TaskRecord) -> Reading {
    let mut net = NetSample::default();
    let containers = rec
        .containers
        .iter()
        .map(|c| {
            let n = c
                .cgroup
                .first_pid()
                .and_then(net_sample)
                .unwrap_or_default();
            net.rx_bytes += n.rx_bytes;
            net.rx_packets += n.rx_packets;
            net.tx_bytes += n.tx_bytes;
            net.tx_packets += n.tx_packets;
            (c.name.clone(), c.cgroup.sample(), n)
        })
        .collect();
    Reading {
        at: Instant::now(),
        task: rec.cgroup.sample(),
        net,
        containers,
    }
}

fn select(state_dir: &Path, wanted: &[String]) -> Result<Vec<TaskRecord>, String> {
    let all = record::list(state_dir);
    if wanted.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for w in wanted {
        let hits: Vec<&TaskRecord> = all
            .iter()
            .filter(|r| r.task_id.starts_with(w.as_str()) || r.family == *w)
            .collect();
        if hits.is_empty() {
            return Err(format!("no running task matches {w:?}"));
        }
        if hits.len() > 1 && hits.iter().any(|r| r.family != *w) {
            return Err(format!(
                "{w:?} matches several tasks; give more of the task ID"
            ));
        }
        for h in hits {
            if !out.iter().any(|r: &TaskRecord| r.task_id == h.task_id) {
                out.push(h.clone());
            }
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct Usage {
    cpu_percent: f64,
    throttled_ns: u64,
    memory_bytes: u64,
    memory_limit_bytes: Option<u64>,
    pids: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
    net: NetSample,
}

fn usage(prev: &Sample, cur: &Sample, net: NetSample, wall_ns: u64, cores: u32) -> Usage {
    Usage {
        cpu_percent: cpu_percent(prev, cur, wall_ns, cores),
        throttled_ns: cur.throttled_ns,
        memory_bytes: cur.memory_bytes,
        memory_limit_bytes: cur.memory_limit,
        pids: cur.pids,
        block_read_bytes: cur.block_read_bytes,
        block_write_bytes: cur.block_write_bytes,
        net,
    }
}

use super::human_bytes as human;

fn secs(f: f64, what: &str) -> Result<Duration, String> {
    if f.is_finite() && f > 0.0 && f <= 86_400.0 {
        Ok(Duration::from_secs_f64(f))
    } else {
        Err(format!(
            "--{what} must be between 0 and 86400 seconds, got {f}"
        ))
    }
}

pub async fn run(args: StatsArgs, state_dir: &Path) -> i32 {
    match run_inner(args, state_dir).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff: stats: {e}");
            EXIT_RUNNER_ERROR
        }
    }
}

async fn run_inner(args: StatsArgs, state_dir: &Path) -> Result<(), String> {
    let cores = online_cores();
    if args.telemetry {
        return telemetry(&args, state_dir, cores).await;
    }
    let interval = secs(args.interval, "interval")?;
    let mut prev: HashMap<String, Reading> = HashMap::new();
    for rec in select(state_dir, &args.tasks)? {
        prev.insert(rec.task_id.clone(), read_task(&rec));
    }
    loop {
        tokio::time::sleep(interval).await;
        let recs = select(state_dir, &args.tasks)?;
        let mut lines = Vec::new();
        if !args.json {
            lines.push(format!(
                "{:<14} {:<20} {:>7} {:>22} {:>7} {:>19} {:>19} {:>5}",
                "TASK",
                "CONTAINER",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS"
            ));
        }
        let mut next = HashMap::new();
        for rec in &recs {
            let cur = read_task(rec);
            let Some(p) = prev.get(&rec.task_id) else {
                next.insert(rec.task_id.clone(), cur);
                continue;
            };
            let wall = cur.at.duration_since(p.at).as_nanos() as u64;
            let mut containers = Vec::new();
            for (name, s, n) in &cur.containers {
                let ps = p
                    .containers
                    .iter()
                    .find(|(pn, _, _)| pn == name)
                    .map(|x| x.1)
                    .unwrap_or(*s);
                containers.push((name.clone(), usage(&ps, s, *n, wall, cores)));
            }
            let task = usage(&p.task, &cur.task, cur.net, wall, cores);
            if args.json {
                let v = serde_json::json!({
                    "task_id": rec.task_id,
                    "family": rec.family,
                    "task": task,
                    "containers": containers.iter().map(|(n, u)| serde_json::json!({"name": n, "usage": u})).collect::<Vec<_>>(),
                });
                lines.push(v.to_string());
            } else {
                for (name, u) in &containers {
                    let limit = u.memory_limit_bytes;
                    let mem_pct = limit.map(|l| 100.0 * u.memory_bytes as f64 / l as f64);
                    lines.push(format!(
                        "{:<14} {:<20} {:>6.2}% {:>22} {:>7} {:>19} {:>19} {:>5}",
                        &rec.task_id[..12.min(rec.task_id.len())],
                        name,
                        u.cpu_percent,
                        format!(
                            "{} / {}",
                            human(u.memory_bytes),
                            limit.map(human).unwrap_or_else(|| "-".into())
                        ),
                        mem_pct
                            .map(|p| format!("{p:.2}%"))
                            .unwrap_or_else(|| "-".into()),
                        format!("{} / {}", human(u.net.rx_bytes), human(u.net.tx_bytes)),
                        format!(
                            "{} / {}",
                            human(u.block_read_bytes),
                            human(u.block_write_bytes)
                        ),
                        u.pids,
                    ));
                }
            }
            next.insert(rec.task_id.clone(), cur);
        }
        println!("{}", lines.join("\n"));
        if args.no_stream {
            return Ok(());
        }
        prev = next;
    }
}

#[derive(Default)]
struct Agg {
    cpu: Window,
    memory_mib: Window,
}

/// ECS telemetry: samples every `--sample` seconds, a window summary every `--window`.
async fn telemetry(args: &StatsArgs, state_dir: &Path, cores: u32) -> Result<(), String> {
    let sample = secs(args.sample, "sample")?;
    let window = secs(args.window, "window")?;
    let now_unix = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let mut prev: HashMap<String, Reading> = HashMap::new();
    let mut aggs: HashMap<(String, String), Agg> = HashMap::new();
    let mut first: HashMap<String, Reading> = HashMap::new();
    let mut window_start = now_unix();
    let mut window_began = Instant::now();
    for rec in select(state_dir, &args.tasks)? {
        let r = read_task(&rec);
        first.insert(rec.task_id.clone(), read_task(&rec));
        prev.insert(rec.task_id.clone(), r);
    }
    loop {
        tokio::time::sleep(sample).await;
        let recs = select(state_dir, &args.tasks)?;
        for rec in &recs {
            let cur = read_task(rec);
            if let Some(p) = prev.get(&rec.task_id) {
                let wall = cur.at.duration_since(p.at).as_nanos() as u64;
                let mut add = |name: &str, ps: &Sample, cs: &Sample| {
                    let a = aggs
                        .entry((rec.task_id.clone(), name.to_string()))
                        .or_default();
                    a.cpu.add(cpu_percent(ps, cs, wall, cores));
                    a.memory_mib.add(cs.memory_bytes as f64 / (1024.0 * 1024.0));
                };
                add("", &p.task, &cur.task);
                for (name, s, _) in &cur.containers {
                    if let Some((_, ps, _)) = p.containers.iter().find(|(pn, _, _)| pn == name) {
                        add(name, ps, s);
                    }
                }
            } else {
                first.insert(rec.task_id.clone(), read_task(rec));
            }
            prev.insert(rec.task_id.clone(), cur);
        }
        if window_began.elapsed() + sample / 2 < window {
            continue;
        }
        let end = now_unix();
        for rec in &recs {
            let (Some(f), Some(c)) = (first.get(&rec.task_id), prev.get(&rec.task_id)) else {
                continue;
            };
            let emit = |name: &str, fs: &Sample, cs: &Sample, fnet: NetSample, cnet: NetSample| {
                let Some(a) = aggs.get(&(rec.task_id.clone(), name.to_string())) else {
                    return;
                };
                let v = serde_json::json!({
                    "task_id": rec.task_id,
                    "family": rec.family,
                    "container": if name.is_empty() { None } else { Some(name) },
                    "window_start": window_start,
                    "window_end": end,
                    "cpu_percent": a.cpu,
                    "memory_mib": a.memory_mib,
                    "network": {
                        "rx_bytes": cnet.rx_bytes.saturating_sub(fnet.rx_bytes),
                        "rx_packets": cnet.rx_packets.saturating_sub(fnet.rx_packets),
                        "tx_bytes": cnet.tx_bytes.saturating_sub(fnet.tx_bytes),
                        "tx_packets": cnet.tx_packets.saturating_sub(fnet.tx_packets),
                    },
                    "storage": {
                        "read_bytes": cs.block_read_bytes.saturating_sub(fs.block_read_bytes),
                        "write_bytes": cs.block_write_bytes.saturating_sub(fs.block_write_bytes),
                    },
                });
                println!("{v}");
            };
            emit("", &f.task, &c.task, f.net, c.net);
            for (name, s, n) in &c.containers {
                if let Some((_, fs, fnet)) = f.containers.iter().find(|(fnm, _, _)| fnm == name) {
                    emit(name, fs, s, *fnet, *n);
                }
            }
        }
        if args.no_stream {
            return Ok(());
        }
        aggs.clear();
        first = prev.clone();
        window_start = end;
        window_began = Instant::now();
    }
}
