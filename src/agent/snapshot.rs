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
            let cs = st.and_then(|s| s.containers.iter().find(|x| x.name == c.name));
            let cstatus = match cs.map(|x| x.status) {
                Some(Status::Stopped) => Status::Stopped,
                Some(s) if v.shim_alive => s,
                Some(_) => Status::Stopped,
                None if status == Status::Stopped => Status::Stopped,
                None => Status::Pending,
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
                // The shim's state has no health yet; absent means "no health check" to ECS.
                health_status: None,
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
        attachments: Vec::new(),
        at: now(),
    }
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
