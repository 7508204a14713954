//! A task's state as ECS words it (proto::TaskEvent), from its directory: the record the
//! engine wrote and the state its shim keeps. Stop codes: the agent's own stop for the
//! control plane is UserInitiated; an essential container's exit (or a vanished shim) is
//! EssentialContainerExited; a start that failed is TaskFailedToStart.

use crate::proto::{ContainerState, NetworkBinding, TaskEvent};
use crate::runtime::proto::Status;
use crate::runtime::shim::{REASON_ESSENTIAL_EXITED, REASON_USER};
use crate::task::store::{TaskView, VANISHED_REASON};

use super::outbox::Entry;

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "PENDING",
        Status::Running => "RUNNING",
        Status::Stopped => "STOPPED",
    }
}

fn stop_code(reason: &str, entry: &Entry) -> &'static str {
    if entry.stop_reason.is_some() || reason == REASON_USER {
        "UserInitiated"
    } else if reason.starts_with(REASON_ESSENTIAL_EXITED) || reason == VANISHED_REASON {
        "EssentialContainerExited"
    } else {
        "TaskFailedToStart"
    }
}

/// The snapshot of a task that has a directory (seq is set when it is emitted).
pub fn of_view(v: &TaskView, entry: &Entry) -> TaskEvent {
    let st = v.state.as_ref();
    let status = v.status();
    let containers: Vec<ContainerState> = v
        .record
        .as_ref()
        .map(|r| r.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let cs = v.container_state(&c.name);
            // A container of a stopped task that never started is STOPPED to the server.
            let cstatus = match (cs, status) {
                (None, Status::Stopped) => Status::Stopped,
                _ => v.container_status(&c.name),
            };
            ContainerState {
                name: c.name.clone(),
                last_status: status_word(cstatus).into(),
                exit_code: cs.and_then(|x| x.exit_code),
                reason: cs.and_then(|x| x.reason.clone()),
                network_bindings: c
                    .network
                    .as_ref()
                    .map(|n| {
                        n.bindings
                            .iter()
                            .map(|b| NetworkBinding {
                                bind_ip: Some("0.0.0.0".into()),
                                container_port: Some(b.container_port),
                                host_port: Some(b.host_port),
                                protocol: Some(b.proto.to_string()),
                                container_port_range: None,
                                host_port_range: None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                // Absent without a health check, as ECS shows it.
                health_status: cs
                    .and_then(|x| x.health.as_ref())
                    .map(|h| h.status.as_str().to_string()),
                image_digest: (!c.image_digest.is_empty()).then(|| c.image_digest.clone()),
                runtime_id: Some(format!("{}-{}", v.id, c.name)),
            }
        })
        .collect();
    let reason = match (status, st.and_then(|s| s.stop_reason.clone())) {
        (Status::Stopped, Some(r)) => Some(r),
        (Status::Stopped, None) => Some(VANISHED_REASON.to_string()),
        _ => None,
    };
    // The control plane's StopTask reason replaces the shim's generic "stopped by user".
    let stopped_reason = match (&reason, &entry.stop_reason) {
        (Some(r), Some(user)) if r == REASON_USER => Some(user.clone()),
        (r, _) => r.clone(),
    };
    let started_at = st
        .into_iter()
        .flat_map(|s| s.containers.iter().filter_map(|c| c.started_at))
        .min()
        .map(secs);
    let container_stops: Vec<u64> = st
        .into_iter()
        .flat_map(|s| s.containers.iter().filter_map(|c| c.finished_at))
        .collect();
    let stopped_at = (status == Status::Stopped)
        .then(|| st.and_then(|s| s.stopped_at).map(secs))
        .flatten();
    TaskEvent {
        seq: 0,
        task_arn: entry.task_arn.clone(),
        last_status: status_word(status).into(),
        containers,
        stop_code: reason.as_deref().map(|r| stop_code(r, entry).to_string()),
        stopped_reason,
        pull_started_at: entry.start_requested_at,
        // The record is written once the images are in place.
        pull_stopped_at: v.record.as_ref().map(|r| r.started_at as f64),
        started_at,
        stopping_at: entry.stopping_at,
        stopped_at,
        execution_stopped_at: (status == Status::Stopped)
            .then(|| container_stops.iter().max().copied().map(secs))
            .flatten(),
        attachments: attachments(v),
        at: now(),
    }
}

/// An awsvpc task's network as ECS describes its ENI: one attachment with the task's
/// address and MAC (all containers share them).
fn attachments(v: &TaskView) -> Vec<serde_json::Value> {
    let Some(n) = v
        .record
        .as_ref()
        .and_then(|r| r.containers.iter().find_map(|c| c.network.as_ref()))
        .filter(|n| n.mode == "awsvpc")
    else {
        return Vec::new();
    };
    let status = if v.status() == Status::Stopped {
        "DELETED"
    } else {
        "ATTACHED"
    };
    vec![serde_json::json!({
        "id": v.id,
        "type": "ElasticNetworkInterface",
        "status": status,
        "details": [
            {"name": "macAddress", "value": n.mac},
            {"name": "privateIPv4Address", "value": n.ip.to_string()},
            {"name": "subnetGatewayIpv4Address", "value": format!("{}/{}", n.gateway, n.prefix)},
        ],
    })]
}

/// The snapshot of a task that ended without a directory (its start failed, it was stopped
/// before it started, or its directory was removed).
pub fn without_dir(entry: &Entry, reason: &str, code: &str) -> TaskEvent {
    TaskEvent {
        seq: 0,
        task_arn: entry.task_arn.clone(),
        last_status: "STOPPED".into(),
        containers: Vec::new(),
        stopped_reason: Some(reason.to_string()),
        stop_code: Some(code.to_string()),
        pull_started_at: entry.start_requested_at,
        pull_stopped_at: None,
        started_at: None,
        stopping_at: entry.stopping_at,
        stopped_at: Some(now()),
        execution_stopped_at: None,
        attachments: Vec::new(),
        at: now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(state: serde_json::Value, shim_alive: bool) -> TaskView {
        let cg = json!({"mode": "V1", "dirs": [], "memory_dir": null});
        let record = json!({
            "task_id": "t1", "family": "f", "started_at": 100, "task_arn": "arn:x/t1",
            "cgroup": cg,
            "containers": [{"name": "web", "image": "i", "image_digest": "sha256:ab",
                "cgroup": cg,
                "network": {"mode": "awsvpc", "ip": "10.0.0.5", "prefix": 24,
                    "gateway": "10.0.0.1", "mac": "02:00:00:00:00:01",
                    "bindings": [{"proto": "tcp", "container_port": 80, "host_port": 8080}]}}]
        });
        TaskView {
            id: "t1".into(),
            dir: "/nonexistent".into(),
            record: Some(serde_json::from_value(record).unwrap()),
            state: Some(serde_json::from_value(state).unwrap()),
            shim_alive,
            creating: false,
        }
    }

    fn state(known: &str, reason: Option<&str>, exit: Option<i32>, oom: bool) -> serde_json::Value {
        json!({"task_id": "t1", "shim_pid": 1, "desired_status": known, "known_status": known,
            "stop_reason": reason, "exit_code": exit, "stopped_at": 200000,
            "containers": [{"name": "web", "status": known, "pid": 5, "exit_code": exit,
                "signal": null, "oom_killed": oom,
                "reason": if oom { Some(crate::task::OOM_REASON) } else { None },
                "started_at": 101000, "finished_at": 199000, "restart_count": 0}]})
    }

    #[test]
    fn running_tasks_carry_bindings_and_their_eni() {
        let entry = Entry {
            task_arn: "arn:x/t1".into(),
            ..Entry::default()
        };
        let e = of_view(&view(state("RUNNING", None, None, false), true), &entry);
        assert_eq!(e.last_status, "RUNNING");
        assert_eq!(e.stop_code, None);
        let b = &e.containers[0].network_bindings[0];
        assert_eq!((b.container_port, b.host_port), (Some(80), Some(8080)));
        assert_eq!(b.protocol.as_deref(), Some("tcp"));
        assert_eq!(e.started_at, Some(101.0));
        assert_eq!(e.attachments[0]["status"], "ATTACHED");
        assert_eq!(e.attachments[0]["details"][1]["value"], "10.0.0.5");
    }

    #[test]
    fn stop_codes_and_reasons_follow_ecs() {
        let plain = Entry {
            task_arn: "arn:x/t1".into(),
            ..Entry::default()
        };
        let oom = of_view(
            &view(
                state("STOPPED", Some(REASON_ESSENTIAL_EXITED), Some(137), true),
                false,
            ),
            &plain,
        );
        assert_eq!(oom.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert_eq!(
            oom.containers[0].reason.as_deref(),
            Some(crate::task::OOM_REASON)
        );
        assert_eq!(oom.containers[0].exit_code, Some(137));
        assert_eq!(oom.stopped_at, Some(200.0));
        assert_eq!(oom.execution_stopped_at, Some(199.0));
        assert_eq!(oom.attachments[0]["status"], "DELETED");
        // The control plane's stop: its reason replaces the shim's generic one.
        let asked = Entry {
            stop_reason: Some("Scaling down".into()),
            ..plain.clone()
        };
        let e = of_view(
            &view(state("STOPPED", Some(REASON_USER), Some(0), false), false),
            &asked,
        );
        assert_eq!(e.stop_code.as_deref(), Some("UserInitiated"));
        assert_eq!(e.stopped_reason.as_deref(), Some("Scaling down"));
        // A shim that vanished while the task ran.
        let e = of_view(&view(state("RUNNING", None, None, false), false), &plain);
        assert_eq!(e.last_status, "STOPPED");
        assert_eq!(e.stop_code.as_deref(), Some("EssentialContainerExited"));
    }
}
