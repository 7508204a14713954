//! The lines the task engine and the per-task shim exchange (JSON, one object a line): the
//! engine writes commands to the shim's stdin, the shim writes events to fd 3.

use serde::{Deserialize, Serialize};

use super::spec::ContainerSpec;

/// The fd on which the shim writes events.
pub const EVENT_FD: i32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub task_id: String,
    pub containers: Vec<ContainerSpec>,
    /// Prefix each output line with the container's name (tasks of several containers).
    pub prefix_output: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Start { container: String },
    Kill { container: String, signal: i32 },
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
}
