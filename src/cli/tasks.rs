//! The daemonless task commands: `skiff ps`, `stop`, `inspect`, `rm`. Each reads the state
//! directory as it is (reconciling tasks whose shim or creator died), and talks to a running
//! task's shim through its socket.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::EXIT_RUNNER_ERROR;
use crate::cgroup::Placement;
use crate::runtime::proto::{Command, Event, Status};
use crate::task::store::{self, TaskView};
use crate::task::volumes;

/// ECS's stop code for a stop reason.
fn stop_code(reason: &str) -> &'static str {
    if reason.starts_with("Essential container") || reason.starts_with("ContainerVanishedError") {
        "EssentialContainerExited"
    } else if reason.starts_with("Task stopped by user") {
        "UserInitiated"
    } else {
        "TaskFailedToStart"
    }
}

/// "3h", "90m", "1h30m", "45s", "500ms" (Go's duration syntax, as the ECS agent's variables).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: expected a duration like 3h, 90m, 1h30m or 45s");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
    }
    Ok(total)
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Pending => "PENDING",
        Status::Running => "RUNNING",
        Status::Stopped => "STOPPED",
    }
}

fn time_str(ms: Option<u64>) -> Value {
    match ms {
        Some(ms) if ms > 0 => json!(crate::runtime::logfile::time_string(
            std::time::UNIX_EPOCH + Duration::from_millis(ms)
        )),
        _ => Value::Null,
    }
}

/// "3 minutes ago"
fn ago(ms: u64) -> String {
    let secs = crate::runtime::proto::now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs} seconds ago"),
        60..=3599 => format!("{} minutes ago", secs / 60),
        3600..=172_799 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

fn subnet_base(ip: std::net::Ipv4Addr, prefix: u8) -> std::net::Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    std::net::Ipv4Addr::from(u32::from(ip) & mask)
}

/// The task as `inspect --json` and `ps --json` show it.
fn task_json(v: &TaskView) -> Value {
    let st = v.state.as_ref();
    let status = v.status();
    let containers: Vec<Value> = v
        .record
        .as_ref()
        .map(|r| r.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let cs = v.container_state(&c.name);
            let cstatus = v.container_status(&c.name);
            json!({
                "name": c.name,
                "image": c.image,
                "imageDigest": c.image_digest,
                "lastStatus": status_str(cstatus),
                "exitCode": cs.and_then(|x| x.exit_code),
                "reason": cs.and_then(|x| x.reason.clone()),
                "oomKilled": cs.is_some_and(|x| x.oom_killed),
                "restartCount": cs.map(|x| x.restart_count).unwrap_or(0),
                "pid": if cstatus == Status::Running { cs.and_then(|x| x.pid) } else { None },
                "healthStatus": cs.and_then(|x| x.health.as_ref()).map(|h| h.status.as_str()),
                "health": cs.and_then(|x| x.health.as_ref()).map(|h| json!({
                    "status": h.status.as_str(),
                    "output": h.output,
                    "exitCode": h.exit_code,
                    "checkedAt": time_str(h.checked_at),
                    "failingStreak": h.failing_streak,
                })),
                "networkBindings": c.network.as_ref().map(|n| {
                    n.bindings
                        .iter()
                        .map(|b| json!({
                            "bindIP": "0.0.0.0",
                            "containerPort": b.container_port,
                            "hostPort": b.host_port,
                            "protocol": b.proto,
                        }))
                        .collect::<Vec<_>>()
                }).unwrap_or_default(),
                "networks": c.network.as_ref().map(|n| vec![json!({
                    "networkMode": n.mode,
                    "ipv4Addresses": [n.ip.to_string()],
                    "macAddress": n.mac,
                    "ipv4SubnetCidrBlock": format!("{}/{}", subnet_base(n.ip, n.prefix), n.prefix),
                    "gateway": n.gateway.to_string(),
                })]).unwrap_or_default(),
                "mounts": c.mounts.iter().map(|m| json!({
                    "type": match m.kind {
                        volumes::Kind::Host => "bind",
                        volumes::Kind::Task | volumes::Kind::Shared => "volume",
                    },
                    "name": m.volume,
                    "scope": m.kind,
                    "source": m.source,
                    "destination": m.destination,
                    "readOnly": m.read_only,
                })).collect::<Vec<_>>(),
                "startedAt": time_str(cs.and_then(|x| x.started_at)),
                "stoppedAt": time_str(cs.and_then(|x| x.finished_at)),
            })
        })
        .collect();
    let reason = st.and_then(|s| s.stop_reason.clone());
    json!({
        "taskId": v.id,
        "name": v.name(),
        "family": v.family(),
        "desiredStatus": status_str(match st {
            Some(s) if v.shim_alive => s.desired_status,
            Some(_) => Status::Stopped,
            None => Status::Running,
        }),
        "lastStatus": status_str(status),
        "stoppedReason": reason,
        "stopCode": reason.as_deref().map(stop_code),
        "exitCode": st.and_then(|s| s.exit_code),
        "healthStatus": st.and_then(|s| s.health_status).map(|h| h.as_str()),
        "createdAt": time_str(Some(v.created_at())),
        "stoppedAt": time_str(v.stopped_at()),
        "containers": containers,
    })
}

// ---- ps ----

#[derive(Args)]
pub struct PsArgs {
    /// Also stopped tasks (kept for ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION).
    #[arg(short, long)]
    all: bool,
    /// One JSON array of tasks, as `inspect --json` shows each.
    #[arg(long)]
    json: bool,
}

pub fn ps(args: PsArgs, state_dir: &Path, placement: &Placement, keep: Duration) -> i32 {
    let views: Vec<TaskView> = store::sweep(state_dir, placement, keep)
        .into_iter()
        .filter(|v| args.all || v.status() != Status::Stopped)
        .collect();
    if args.json {
        let all: Vec<Value> = views.iter().map(task_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&all).expect("json serializes")
        );
        return 0;
    }
    let mut out = String::from("TASK ID       NAME                FAMILY              STATUS               CONTAINERS  CREATED\n");
    for v in &views {
        let st = v.state.as_ref();
        let status = match (v.status(), st.and_then(|s| s.exit_code)) {
            (Status::Stopped, Some(c)) => format!("STOPPED ({c})"),
            // Like podman's "Up 3s (healthy)".
            (Status::Running, _) => match st.and_then(|s| s.health_status) {
                Some(h) => format!("RUNNING ({})", h.as_str().to_lowercase()),
                None => "RUNNING".to_string(),
            },
            (s, _) => status_str(s).to_string(),
        };
        let n = v.record.as_ref().map(|r| r.containers.len()).unwrap_or(0);
        out.push_str(&format!(
            "{:<13} {:<19} {:<19} {:<20} {:<11} {}\n",
            &v.id[..v.id.len().min(12)],
            v.name().unwrap_or(""),
            v.family(),
            status,
            n,
            ago(v.created_at()),
        ));
    }
    print!("{out}");
    0
}

// ---- inspect ----

#[derive(Args)]
pub struct InspectArgs {
    /// Task id (or a unique prefix) or name.
    task: String,
    /// The whole record as JSON.
    #[arg(long)]
    json: bool,
}

pub fn inspect(args: InspectArgs, state_dir: &Path, placement: &Placement, keep: Duration) -> i32 {
    store::sweep(state_dir, placement, keep);
    let v = match store::find(state_dir, &args.task) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("skiff: inspect: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    let j = task_json(&v);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&j).expect("json serializes")
        );
        return 0;
    }
    let s = |k: &str| match &j[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    for (label, key) in [
        ("Task", "taskId"),
        ("Name", "name"),
        ("Family", "family"),
        ("Status", "lastStatus"),
        ("Desired", "desiredStatus"),
        ("Stopped reason", "stoppedReason"),
        ("Stop code", "stopCode"),
        ("Exit code", "exitCode"),
        ("Health", "healthStatus"),
        ("Created", "createdAt"),
        ("Stopped", "stoppedAt"),
    ] {
        out.push_str(&format!("{label:<16}{}\n", s(key)));
    }
    for c in j["containers"].as_array().into_iter().flatten() {
        let f = |k: &str| match &c[k] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("Container {}\n", f("name")));
        for (label, key) in [
            ("Image", "image"),
            ("Image digest", "imageDigest"),
            ("Status", "lastStatus"),
            ("Exit code", "exitCode"),
            ("Reason", "reason"),
            ("Health", "healthStatus"),
            ("Started", "startedAt"),
            ("Stopped", "stoppedAt"),
        ] {
            out.push_str(&format!("  {label:<14}{}\n", f(key)));
        }
        let h = &c["health"];
        if h["checkedAt"].is_string() {
            out.push_str(&format!(
                "  {:<14}exit {} at {}, {} failing: {}\n",
                "Last check",
                h["exitCode"],
                h["checkedAt"].as_str().unwrap_or(""),
                h["failingStreak"],
                // One line: the output's own newlines escaped.
                h["output"].as_str().unwrap_or("").trim_end().escape_debug(),
            ));
        }
        let bindings = c["networkBindings"].as_array().map(Vec::len).unwrap_or(0);
        if let Some(n) = c["networks"].as_array().and_then(|a| a.first()) {
            out.push_str(&format!(
                "  {:<14}{} {} mac {} gateway {}\n",
                "Network",
                n["networkMode"].as_str().unwrap_or(""),
                n["ipv4Addresses"][0].as_str().unwrap_or(""),
                n["macAddress"].as_str().unwrap_or(""),
                n["gateway"].as_str().unwrap_or(""),
            ));
        }
        for (k, m) in c["mounts"].as_array().into_iter().flatten().enumerate() {
            out.push_str(&format!(
                "  {:<14}{} <- {} ({} {}, {})\n",
                if k == 0 { "Mounts" } else { "" },
                m["destination"].as_str().unwrap_or(""),
                m["source"].as_str().unwrap_or(""),
                m["scope"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or(""),
                if m["readOnly"] == true { "ro" } else { "rw" },
            ));
        }
        out.push_str(&format!(
            "  {:<14}{}\n",
            "Ports",
            if bindings == 0 {
                "-".into()
            } else {
                c["networkBindings"].to_string()
            }
        ));
    }
    print!("{out}");
    0
}

// ---- stop ----

#[derive(Args)]
pub struct StopArgs {
    /// Task ids (or unique prefixes) or names.
    #[arg(required = true)]
    tasks: Vec<String>,
    /// SIGKILL at once instead of the stop signal and stopTimeout.
    #[arg(short, long)]
    force: bool,
}

/// Asks the shim to stop the task and waits for its `task_stopped` event.
async fn stop_one(v: &TaskView, force: bool) -> Result<(), String> {
    let mut sock = crate::task::connect(&v.dir)
        .await
        .map_err(|e| format!("connect to the task's shim: {e}"))?;
    let mut line = serde_json::to_vec(&Command::Stop {
        force,
        reason: Some(crate::runtime::shim::REASON_USER.to_string()),
    })
    .expect("command serializes");
    line.push(b'\n');
    sock.write_all(&line)
        .await
        .map_err(|e| format!("send stop: {e}"))?;
    let mut lines = BufReader::new(sock).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if let Ok(Event::TaskStopped { .. }) = serde_json::from_str::<Event>(&l) {
            return Ok(());
        }
    }
    // The shim exits right after its last event; its state file says how it ended.
    match crate::runtime::proto::TaskState::read(&v.dir) {
        Ok(st) if st.known_status == Status::Stopped => Ok(()),
        _ => Err("the shim went away before the task stopped".into()),
    }
}

pub async fn stop(args: StopArgs, state_dir: &Path, placement: &Placement, keep: Duration) -> i32 {
    store::sweep(state_dir, placement, keep);
    let mut rc = 0;
    for key in &args.tasks {
        let r = match store::find(state_dir, key) {
            Ok(v) if v.status() == Status::Stopped => Ok(v),
            Ok(v) if v.creating => Err(format!("task {} is still starting", v.id)),
            Ok(v) => stop_one(&v, args.force).await.map(|()| v),
            Err(e) => Err(e),
        };
        match r {
            Ok(v) => println!("{}", v.id),
            Err(e) => {
                eprintln!("skiff: stop {key}: {e}");
                rc = EXIT_RUNNER_ERROR;
            }
        }
    }
    rc
}

// ---- rm ----

#[derive(Args)]
pub struct RmArgs {
    /// Task ids (or unique prefixes) or names.
    #[arg(required = true)]
    tasks: Vec<String>,
    /// Stop running tasks first (SIGKILL).
    #[arg(short, long)]
    force: bool,
}

pub async fn rm(args: RmArgs, state_dir: &Path, placement: &Placement, keep: Duration) -> i32 {
    store::sweep(state_dir, placement, keep);
    let mut rc = 0;
    for key in &args.tasks {
        let r = async {
            let v = store::find(state_dir, key)?;
            if v.status() != Status::Stopped {
                if !args.force {
                    return Err(format!(
                        "task {} is {}: stop it first, or use --force",
                        v.id,
                        status_str(v.status()).to_lowercase()
                    ));
                }
                if v.creating {
                    return Err(format!("task {} is still starting", v.id));
                }
                stop_one(&v, true).await?;
                // The shim still tidies up after its last event: its files go once it is gone.
                for _ in 0..250 {
                    if !store::read(&v.dir).is_some_and(|v| v.shim_alive) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let _lock = store::lock(state_dir).map_err(|e| format!("lock the tasks: {e}"))?;
            // Read again under the lock: the shim may just have written its last state.
            let v = store::read(&v.dir).ok_or_else(|| format!("task {} is gone", v.id))?;
            if v.status() != Status::Stopped {
                return Err(format!("task {} started again", v.id));
            }
            store::remove(&v).map_err(|e| format!("remove {}: {e}", v.dir.display()))?;
            Ok(v.id)
        }
        .await;
        match r {
            Ok(id) => println!("{id}"),
            Err(e) => {
                eprintln!("skiff: rm {key}: {e}");
                rc = EXIT_RUNNER_ERROR;
            }
        }
    }
    if let Ok(h) = crate::cgroup::Hierarchy::detect(placement) {
        h.release();
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("3h").unwrap(), Duration::from_secs(10800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "3", "h", "3x", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stop_codes_follow_the_reason() {
        assert_eq!(
            stop_code("Essential container in task exited"),
            "EssentialContainerExited"
        );
        assert_eq!(stop_code("Task stopped by user"), "UserInitiated");
    }
}
