//! What the task engine and the per-task shim exchange: the shim's config file, the commands
//! and events (JSON, one object a line) on the shim's socket, and the task state file the
//! shim keeps in the task's directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::ContainerSpec;
use crate::cgroup::Cgroup;

/// The reason ECS gives for an OOM kill.
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";

/// The fd on which a starting shim reports that it is ready (its pid, then EOF).
pub const READY_FD: i32 = 3;
/// The shim's socket, in the task's directory.
pub const SOCKET_FILE: &str = "shim.sock";
/// The task's state as the shim last wrote it, in the task's directory.
pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub task_id: String,
    pub task_dir: PathBuf,
    /// In start order.
    pub containers: Vec<ContainerSpec>,
    /// Prefix each output line with the container's name (tasks of several containers).
    pub prefix_output: bool,
    /// Also copy the containers' output to the shim's stdout/stderr (a foreground run).
    pub echo_output: bool,
    /// Removed by the shim, with the containers' cgroups, when the task has stopped.
    pub task_cgroup: Option<Cgroup>,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Start the containers only once a client is attached (or after 30 s), so that a
    /// foreground run sees every event and every line.
    pub wait_for_client: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Stop the task: each running container gets its stop signal, then SIGKILL after its
    /// stop timeout (`force`: SIGKILL now).
    Stop {
        #[serde(default)]
        force: bool,
        #[serde(default)]
        reason: Option<String>,
    },
    Kill {
        container: String,
        signal: i32,
    },
    /// The attached terminal's size, for containers with a pty.
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Run a process in a running container (`skiff exec`, health checks). Its events
    /// (`exec_output`, then `exec_exited` or `exec_failed`) go to the asking client only, and
    /// it is killed when that client goes away.
    Exec {
        container: String,
        /// Chosen by the client; names the exec in its events.
        id: String,
        #[serde(rename = "command")]
        cmd: Vec<String>,
        /// `NAME=value` on top of the container's environment.
        #[serde(default)]
        env: Vec<String>,
        /// The container's user when absent.
        #[serde(default)]
        user: Option<String>,
        /// SIGKILL after this long, reported as `timed_out`.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
}

/// Which output of an exec'd process a chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        container: String,
        pid: i32,
    },
    StartFailed {
        container: String,
        exit_code: i32,
        error: String,
    },
    /// The kernel's OOM killer killed a process in the container's cgroup (live; the
    /// container may go on running).
    OomKill {
        container: String,
        oom_kills: u64,
    },
    Exited {
        container: String,
        exit_code: i32,
        signal: Option<i32>,
        oom_killed: bool,
    },
    /// Output of an exec'd process: `data` is base64 (output need not be text, and a chunk
    /// may end inside a UTF-8 sequence).
    ExecOutput {
        id: String,
        stream: OutputStream,
        data: String,
    },
    /// The exec'd process ended (its output was sent before). `exit_code` is 128 + the
    /// signal for a killed one; `timed_out`: killed because its timeout passed.
    ExecExited {
        id: String,
        exit_code: i32,
        timed_out: bool,
    },
    /// The process could not be started (125, 126 not executable, 127 not found).
    ExecFailed {
        id: String,
        exit_code: i32,
        error: String,
    },
    /// Every container has stopped. `exit_code`: that of the essential container that
    /// stopped first.
    TaskStopped {
        exit_code: Option<i32>,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Running,
    Stopped,
}

/// One container in the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    pub status: Status,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// Why it stopped when that is not a plain exit (start failure, OOM kill).
    pub reason: Option<String>,
    /// Milliseconds since the epoch.
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// Restarts under its `restartPolicy` so far.
    #[serde(default)]
    pub restart_count: u32,
    /// Its `healthCheck`'s results (None without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::HealthState>,
}

/// The task as its shim knows it, written atomically after every change: a skiff process
/// that comes later (or after a crash) reads what happened here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub task_id: String,
    pub shim_pid: i32,
    pub desired_status: Status,
    pub known_status: Status,
    pub stop_reason: Option<String>,
    pub exit_code: Option<i32>,
    pub stopped_at: Option<u64>,
    pub containers: Vec<ContainerState>,
    /// From the essential containers' health checks (None when none has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<super::health::HealthStatus>,
}

impl TaskState {
    pub fn read(task_dir: &Path) -> std::io::Result<TaskState> {
        let bytes = std::fs::read(task_dir.join(STATE_FILE))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    pub fn write(&self, task_dir: &Path) -> std::io::Result<()> {
        let tmp = task_dir.join(format!(".{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(self).expect("state serializes"))?;
        std::fs::rename(&tmp, task_dir.join(STATE_FILE))
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let c = Command::Kill {
            container: "a".into(),
            signal: 15,
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(s, r#"{"cmd":"kill","container":"a","signal":15}"#);
        assert_eq!(
            serde_json::from_str::<Command>(r#"{"cmd":"stop"}"#).unwrap(),
            Command::Stop {
                force: false,
                reason: None
            }
        );
        assert_eq!(serde_json::from_str::<Command>(&s).unwrap(), c);
        let e = Event::Exited {
            container: "a".into(),
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
    }

    #[test]
    fn exec_wire_shapes() {
        let c: Command = serde_json::from_str(
            r#"{"cmd":"exec","container":"web","id":"h1","command":["curl","-f","localhost"]}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Command::Exec {
                container: "web".into(),
                id: "h1".into(),
                cmd: vec!["curl".into(), "-f".into(), "localhost".into()],
                env: vec![],
                user: None,
                timeout_ms: None,
            }
        );
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.starts_with(r#"{"cmd":"exec","#), "{s}");
        assert_eq!(serde_json::from_str::<Command>(&s).unwrap(), c);
        let e = Event::ExecOutput {
            id: "h1".into(),
            stream: OutputStream::Stderr,
            data: "aGk=".into(),
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(
            s,
            r#"{"event":"exec_output","id":"h1","stream":"stderr","data":"aGk="}"#
        );
        let e = Event::ExecExited {
            id: "h1".into(),
            exit_code: 137,
            timed_out: true,
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
    }
}
