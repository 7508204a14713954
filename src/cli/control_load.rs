//! `skiff control-load` (hidden): many simulated agents in one process against a real
//! server, over TLS. They register, long-poll, report task events and utilization like
//! `skiff agent`; the tool then runs tasks one by one and measures, for each, the time from
//! sending RunTask to the simulated agent holding the task in its desired set.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::proto::*;

#[derive(Args)]
pub struct LoadArgs {
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    endpoint: String,
    /// The server's data directory: ca.pem, admin.token and join.token are read from it.
    #[arg(long)]
    data_dir: PathBuf,
    /// Simulated agents.
    #[arg(long, default_value_t = 2000)]
    agents: usize,
    /// RunTask calls measured, one after the other.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Pause between two RunTask calls, in milliseconds.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Long-poll wait the agents ask for, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Seconds between two utilization posts of an agent.
    #[arg(long, default_value_t = 20)]
    utilization_every: u64,
    /// Agents registering at once.
    #[arg(long, default_value_t = 64)]
    parallel_registrations: usize,
    /// The server's pid: its CPU time and memory are reported per phase.
    #[arg(long)]
    server_pid: Option<u32>,
    /// After the runs, keep the agents polling and posting utilization this many seconds
    /// (the steady state's server CPU is measured over it).
    #[arg(long, default_value_t = 0)]
    hold: u64,
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// VmRSS and VmHWM (peak) of a process in MiB.
fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |k: &str| -> Option<f64> {
        let l = status.lines().find(|l| l.starts_with(k))?;
        l.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

/// Prints the server's CPU use since the last mark, as a share of one core.
struct Meter {
    pid: Option<u32>,
    cpu: f64,
    at: Instant,
}

impl Meter {
    fn new(pid: Option<u32>) -> Meter {
        Meter {
            pid,
            cpu: pid.and_then(cpu_secs).unwrap_or(0.0),
            at: Instant::now(),
        }
    }
    fn mark(&mut self, phase: &str) {
        let Some(pid) = self.pid else { return };
        let (Some(cpu), Some((rss, peak))) = (cpu_secs(pid), rss_mib(pid)) else {
            return;
        };
        let wall = self.at.elapsed().as_secs_f64();
        println!(
            "server during {phase}: cpu {:.2} s over {wall:.1} s ({:.1}% of one core), rss {rss:.1} MiB (peak {peak:.1} MiB)",
            cpu - self.cpu,
            (cpu - self.cpu) / wall * 100.0
        );
        self.cpu = cpu;
        self.at = Instant::now();
    }
}

struct Shared {
    client: reqwest::Client,
    endpoint: String,
    /// Task ARN → when its agent first held it.
    held: Mutex<HashMap<String, Instant>>,
    polling: AtomicUsize,
    errors: AtomicUsize,
}

pub async fn run(args: LoadArgs) -> i32 {
    match load(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff control-load: {e:#}");
            1
        }
    }
}

fn read(dir: &std::path::Path, f: &str) -> anyhow::Result<String> {
    let p = dir.join(f);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| p.display().to_string())?
        .trim()
        .to_string())
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let nofile = crate::control::raise_nofile_limit();
    let ca = std::fs::read(args.data_dir.join("ca.pem")).context("ca.pem")?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .http1_only()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(args.wait + 30))
        .build()?;
    let admin = read(&args.data_dir, "admin.token")?;
    let join = read(&args.data_dir, "join.token")?;
    let sh = Arc::new(Shared {
        client,
        endpoint: args.endpoint.trim_end_matches('/').to_string(),
        held: Mutex::new(HashMap::new()),
        polling: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });
    eprintln!(
        "open files limit {nofile}; registering {} agents",
        args.agents
    );
    let mut meter = Meter::new(args.server_pid);
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.parallel_registrations));
    for n in 0..args.agents {
        let (sh, join, sem) = (sh.clone(), join.clone(), sem.clone());
        let (wait, every) = (args.wait, args.utilization_every);
        tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let cred = match register(&sh, &join, n).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("agent {n}: register: {e:#}");
                    sh.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            drop(permit);
            tokio::spawn(utilization_loop(sh.clone(), cred.clone(), every));
            agent_loop(sh, cred, wait).await;
        });
    }
    while sh.polling.load(Ordering::Relaxed) + sh.errors.load(Ordering::Relaxed) < args.agents {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("agents did not all register and poll within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reg = t0.elapsed();
    println!(
        "agents {} registered and polling in {:.1} s ({} errors)",
        args.agents,
        reg.as_secs_f64(),
        sh.errors.load(Ordering::Relaxed)
    );
    meter.mark("registration");
    let td = json!({"family": "load", "containerDefinitions": [
        {"name": "app", "image": "busybox", "cpu": 1, "memory": 6, "essential": true}]});
    ecs(&sh, &admin, "RegisterTaskDefinition", &td).await?;
    let mut lat = Vec::new();
    let mut missing = 0;
    for _ in 0..args.runs {
        let start = Instant::now();
        let r = ecs(&sh, &admin, "RunTask", &json!({"taskDefinition": "load"})).await?;
        let Some(arn) = r["tasks"][0]["taskArn"].as_str().map(str::to_string) else {
            bail!("RunTask placed nothing: {r}");
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = sh.held.lock().unwrap().get(&arn) {
                lat.push(at.duration_since(start).as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                missing += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "run-task to agent holding the task: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms missing={missing}",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    meter.mark("the runs");
    if args.hold > 0 {
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
        meter.mark("steady state (long-polls, utilization posts)");
    }
    println!("agent-side errors: {}", sh.errors.load(Ordering::Relaxed));
    Ok(())
}

async fn ecs(sh: &Shared, admin: &str, action: &str, body: &Value) -> anyhow::Result<Value> {
    let r = sh
        .client
        .post(format!("{}/", sh.endpoint))
        .header("x-amz-target", format!("{ECS_TARGET_PREFIX}{action}"))
        .bearer_auth(admin)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("{action}: {status}: {v}");
    }
    Ok(v)
}

async fn register(sh: &Shared, join: &str, n: usize) -> anyhow::Result<String> {
    let req = RegisterRequest {
        cluster: "default".into(),
        join_token: join.into(),
        hostname: format!("sim-{n}"),
        resources: Resources {
            cpu: 2048,
            memory: 4096,
            reserved_ports: vec![22],
            reserved_ports_udp: vec![],
        },
        attributes: vec![Attribute {
            name: "ecs.os-type".into(),
            value: Some("linux".into()),
        }],
        agent_version: "sim".into(),
    };
    let r = sh
        .client
        .post(format!("{}{REGISTER_PATH}", sh.endpoint))
        .json(&req)
        .send()
        .await?
        .error_for_status()?;
    Ok(r.json::<RegisterResponse>().await?.credential)
}

/// Polls the desired set; reports RUNNING for each new task, STOPPED for each to stop.
async fn agent_loop(sh: Arc<Shared>, cred: String, wait: u64) {
    let mut version = 0;
    let mut seq = 0;
    let mut running: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        let url = format!(
            "{}{DESIRED_PATH}?version={version}&wait={wait}",
            sh.endpoint
        );
        let fut = sh.client.get(url).bearer_auth(&cred).send();
        if first {
            sh.polling.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let d: DesiredResponse = match fut.await.and_then(|r| r.error_for_status()) {
            Ok(r) => match r.json().await {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(_) => {
                sh.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let now = Instant::now();
        version = d.version;
        let mut events = Vec::new();
        for t in &d.tasks {
            if t.desired_status == "RUNNING" && running.insert(t.task_arn.clone()) {
                sh.held
                    .lock()
                    .unwrap()
                    .entry(t.task_arn.clone())
                    .or_insert(now);
                seq += 1;
                events.push(event(seq, &t.task_arn, "RUNNING"));
            } else if t.desired_status == "STOPPED" && running.remove(&t.task_arn) {
                seq += 1;
                events.push(event(seq, &t.task_arn, "STOPPED"));
            }
        }
        if !events.is_empty() {
            let r = sh
                .client
                .post(format!("{}{EVENTS_PATH}", sh.endpoint))
                .bearer_auth(&cred)
                .json(&EventsRequest { events })
                .send()
                .await;
            if r.and_then(|r| r.error_for_status()).is_err() {
                sh.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn event(seq: u64, arn: &str, status: &str) -> TaskEvent {
    let at = crate::control::now();
    TaskEvent {
        seq,
        task_arn: arn.into(),
        last_status: status.into(),
        containers: vec![ContainerState {
            name: "app".into(),
            last_status: status.into(),
            exit_code: (status == "STOPPED").then_some(0),
            reason: None,
            network_bindings: vec![],
            health_status: None,
            image_digest: None,
            runtime_id: None,
        }],
        stopped_reason: None,
        stop_code: None,
        pull_started_at: None,
        pull_stopped_at: None,
        started_at: (status == "RUNNING").then_some(at),
        stopping_at: None,
        stopped_at: (status == "STOPPED").then_some(at),
        execution_stopped_at: None,
        attachments: vec![],
        at,
    }
}

async fn utilization_loop(sh: Arc<Shared>, cred: String, every: u64) {
    // Spread the agents' posts over the period, as real agents started at random times are.
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    tokio::time::sleep(Duration::from_millis(
        u64::from_le_bytes(b) % (every * 1000).max(1),
    ))
    .await;
    loop {
        let end = crate::control::now();
        let mut w = Usage::default();
        w.cpu.add(12.0);
        w.memory.add(300.0);
        let req = UtilizationRequest {
            window_start: end - every as f64,
            window_end: end,
            instance: w,
            tasks: vec![],
        };
        let r = sh
            .client
            .post(format!("{}{UTILIZATION_PATH}", sh.endpoint))
            .bearer_auth(&cred)
            .json(&req)
            .send()
            .await;
        if r.and_then(|r| r.error_for_status()).is_err() {
            sh.errors.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}
