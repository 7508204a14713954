//! Starting and stopping the control plane's tasks.
//!
//! A task starts as a `skiff run -d --task-id <id>` child of our own binary rather than in the
//! agent's process. The agent stays small and long-lived on a 256 MB board: a pull's buffers
//! and whatever a start allocates go back to the system when the child exits, instead of
//! fragmenting a daemon's heap; a start that panics or hangs on a registry cannot take the
//! poll loop with it; and a start under way when the agent is killed still finishes (its
//! output goes to a file, not to a pipe the dead agent held). The id is taken by the task's
//! directory, made before the pull with a rename that never replaces, so two starts of one
//! task cannot both run it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::config::Config;
use super::AgentError;
use crate::cgroup::Placement;
use crate::proto::DesiredTask;
use crate::runtime::proto::{Command, Event, Status};

/// The task definition with RunTask's `overrides` applied: task `cpu`/`memory`, and per
/// container `command`, `environment` (by name: replaces or adds), `cpu`, `memory`,
/// `memoryReservation`.
pub fn apply_overrides(td: &Value, overrides: Option<&Value>) -> Result<Value, String> {
    let mut td = td.clone();
    let Some(ov) = overrides else {
        return Ok(td);
    };
    let Some(ov) = ov.as_object() else {
        return Err("overrides: must be an object".into());
    };
    for k in ["cpu", "memory"] {
        if let Some(v) = ov.get(k) {
            td[k] = v.clone();
        }
    }
    let Some(cos) = ov.get("containerOverrides") else {
        return Ok(td);
    };
    let cos = cos
        .as_array()
        .ok_or("overrides.containerOverrides: must be a list")?;
    for (i, co) in cos.iter().enumerate() {
        let at = |f: &str| format!("overrides.containerOverrides[{i}].{f}");
        let name = co
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: required", at("name")))?;
        let defs = td
            .get_mut("containerDefinitions")
            .and_then(Value::as_array_mut)
            .ok_or("taskDefinition.containerDefinitions: missing")?;
        let c = defs
            .iter_mut()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| {
                format!(
                    "{}: no container {name:?} in the task definition",
                    at("name")
                )
            })?;
        for k in ["command", "cpu", "memory", "memoryReservation"] {
            if let Some(v) = co.get(k) {
                c[k] = v.clone();
            }
        }
        if let Some(env) = co.get("environment") {
            let env = env
                .as_array()
                .ok_or_else(|| format!("{}: must be a list", at("environment")))?;
            let mut cur: Vec<Value> = c
                .get("environment")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (k, e) in env.iter().enumerate() {
                let n = e.get("name").and_then(Value::as_str).ok_or_else(|| {
                    format!("{}: required", at(&format!("environment[{k}].name")))
                })?;
                cur.retain(|x| x.get("name").and_then(Value::as_str) != Some(n));
                cur.push(e.clone());
            }
            c["environment"] = Value::Array(cur);
        }
    }
    Ok(td)
}

/// How to run our own binary for a task of this agent.
#[derive(Clone)]
pub struct Launcher {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub placement: Placement,
    pub config: Config,
}

/// What became of a start.
pub enum Started {
    /// The task has its directory (running, or stopped after a failed container start).
    Ok,
    /// It never got one: the error `skiff run` gave.
    Failed(String),
}

impl Launcher {
    fn starts_dir(&self) -> PathBuf {
        self.data_dir.join("agent").join("starts")
    }

    /// Pulls and starts `task` detached under the id `id`; returns when `skiff run -d` ends.
    pub async fn start(&self, id: &str, task: &DesiredTask) -> Result<Started, AgentError> {
        let td = match apply_overrides(&task.task_definition, task.overrides.as_ref()) {
            Ok(td) => td,
            Err(e) => return Ok(Started::Failed(format!("ClientException: {e}"))),
        };
        let dir = self.starts_dir();
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::Io {
            what: format!("create {}", dir.display()),
            source: e,
        })?;
        let spec = dir.join(format!("{id}.json"));
        let log = dir.join(format!("{id}.log"));
        let io = |what: String| move |e| AgentError::Io { what, source: e };
        std::fs::write(&spec, serde_json::to_vec(&td).expect("json serializes"))
            .map_err(io(format!("write {}", spec.display())))?;
        let log_file =
            std::fs::File::create(&log).map_err(io(format!("create {}", log.display())))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--state-dir")
            .arg(&self.data_dir)
            .arg("--cgroup-parent")
            .arg(&self.placement.parent);
        if let Some(r) = &self.placement.root {
            cmd.arg("--cgroup-root").arg(r);
        }
        let c = &self.config;
        cmd.arg("--task-cleanup-wait")
            .arg(format!("{}ms", c.task_cleanup_wait.as_millis()))
            .args(["run", "-d", "--task-id", id, "--task-arn", &task.task_arn])
            .arg("--stop-timeout")
            .arg(c.container_stop_timeout.as_secs().to_string())
            .arg("--pull-behavior")
            .arg(&c.image_pull_behavior);
        if !c.reserved_ports.is_empty() {
            let ports: Vec<String> = c.reserved_ports.iter().map(u16::to_string).collect();
            cmd.arg("--reserved-ports").arg(ports.join(","));
        }
        cmd.arg(&spec)
            .env_remove(super::local::PROXIED_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            // Not in the agent's process group: a Ctrl-C meant for the agent does not cut a
            // start short.
            .process_group(0);
        let status = cmd
            .status()
            .await
            .map_err(io(format!("run {}", self.exe.display())))?;
        let _ = std::fs::remove_file(&spec);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let task_dir = self.data_dir.join("tasks").join(id);
        if status.success() || task_dir.exists() {
            return Ok(Started::Ok);
        }
        let spec_prefix = format!("skiff: {}: ", spec.display());
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| {
                l.strip_prefix(&spec_prefix)
                    .or_else(|| l.strip_prefix("skiff: "))
                    .unwrap_or(l)
                    .to_string()
            })
            .unwrap_or_else(|| format!("skiff run exited with {status}"));
        Ok(Started::Failed(reason))
    }
}

/// Asks a task's shim to stop it with `reason`, and waits until it has stopped.
pub async fn stop(task_dir: &Path, reason: &str) -> Result<(), String> {
    let mut sock = crate::task::connect(task_dir)
        .await
        .map_err(|e| format!("connect to the task's shim: {e}"))?;
    let mut line = serde_json::to_vec(&Command::Stop {
        force: false,
        reason: Some(reason.to_string()),
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
    match crate::runtime::proto::TaskState::read(task_dir) {
        Ok(st) if st.known_status == Status::Stopped => Ok(()),
        _ => Err("the shim went away before the task stopped".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_replace_command_and_merge_environment() {
        let td = json!({"family": "f", "containerDefinitions": [
            {"name": "a", "image": "x", "command": ["old"],
             "environment": [{"name": "K", "value": "1"}, {"name": "L", "value": "2"}]},
            {"name": "b", "image": "y"}]});
        let ov = json!({"memory": "256", "containerOverrides": [
            {"name": "a", "command": ["new"], "memory": 64,
             "environment": [{"name": "K", "value": "9"}, {"name": "M", "value": "3"}]}]});
        let out = apply_overrides(&td, Some(&ov)).unwrap();
        assert_eq!(out["memory"], "256");
        let a = &out["containerDefinitions"][0];
        assert_eq!(a["command"], json!(["new"]));
        assert_eq!(a["memory"], 64);
        let env: Vec<(String, String)> = a["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            env,
            [
                ("L".into(), "2".into()),
                ("K".into(), "9".into()),
                ("M".into(), "3".into())
            ]
        );
        assert_eq!(
            out["containerDefinitions"][1],
            td["containerDefinitions"][1]
        );
        let bad = json!({"containerOverrides": [{"name": "zz", "command": []}]});
        let e = apply_overrides(&td, Some(&bad)).unwrap_err();
        assert!(
            e.contains("containerOverrides[0].name") && e.contains("zz"),
            "{e}"
        );
    }
}
