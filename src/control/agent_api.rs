//! The agent side of the protocol (src/proto), on the state: register, the desired set,
//! numbered events applied exactly once, utilization windows.

use super::error::ApiError;
use super::model::*;
use super::state::State;
use super::store::Write;
use super::tls::{hash_secret, new_secret};
use crate::proto::{
    DesiredResponse, DesiredTask, EventsRequest, EventsResponse, RegisterRequest, RegisterResponse,
    TaskEvent, UtilizationRequest, MAX_EVENTS_PER_POST,
};

pub fn register(s: &mut State, r: RegisterRequest) -> Result<RegisterResponse, ApiError> {
    let Some(token) = s.join_tokens.get(&hash_secret(&r.join_token)) else {
        return Err(ApiError::unauthenticated(
            "joinToken: not a join token of this server",
        ));
    };
    let cluster = s.cluster(Some(&r.cluster))?.name.clone();
    if token.cluster != cluster {
        return Err(ApiError::forbidden(format!(
            "joinToken: not a join token of cluster {cluster:?}"
        )));
    }
    if r.hostname.is_empty() || r.hostname.len() > 255 {
        return Err(ApiError::invalid("hostname: 1 to 255 characters"));
    }
    if r.resources.cpu == 0 || r.resources.memory == 0 {
        return Err(ApiError::invalid(
            "resources: cpu and memory must be above 0",
        ));
    }
    for (k, a) in r.attributes.iter().enumerate() {
        if a.name.is_empty() || a.name.len() > 128 {
            return Err(ApiError::invalid(format!(
                "attributes[{k}].name: 1 to 128 characters"
            )));
        }
        if a.value.as_ref().is_some_and(|v| v.len() > 128) {
            return Err(ApiError::invalid(format!(
                "attributes[{k}].value: at most 128 characters"
            )));
        }
    }
    let credential = new_secret("ski_");
    let i = Instance {
        id: new_id(),
        cluster,
        hostname: r.hostname,
        status: "ACTIVE".into(),
        resources: r.resources,
        attributes: r.attributes,
        agent_version: r.agent_version,
        credential_hash: hash_secret(&credential),
        registered_at: now(),
        applied_seq: 0,
        version: 1,
    };
    s.commit(vec![Write::put(KIND_INSTANCE, &i.id, &i)])?;
    let arn = i.arn();
    let id = i.id.clone();
    s.put_instance_mem(i);
    s.seen(&id);
    Ok(RegisterResponse {
        container_instance_arn: arn,
        credential,
    })
}

/// The instance of an agent credential.
pub fn authenticate(s: &State, credential: &str) -> Result<String, ApiError> {
    s.credentials
        .get(&hash_secret(credential))
        .cloned()
        .ok_or_else(|| {
            ApiError::unauthenticated("not a container instance credential of this server")
        })
}

/// The whole desired set of an instance: its tasks the server does not know STOPPED.
pub fn desired(s: &State, id: &str) -> DesiredResponse {
    let i = &s.instances[id];
    let tasks = s
        .active
        .get(id)
        .into_iter()
        .flatten()
        .filter_map(|t| s.tasks.get(t))
        .map(|t| DesiredTask {
            task_arn: t.arn(),
            task_definition_arn: arn("task-definition", &t.taskdef_key),
            task_definition: s
                .taskdefs
                .get(&t.taskdef_parts())
                .map(|d| d.body.clone())
                .unwrap_or_default(),
            overrides: t.overrides.clone(),
            desired_status: t.desired_status.clone(),
            started_by: t.started_by.clone(),
            group: t.group.clone(),
            stopped_reason: (t.desired_status == "STOPPED")
                .then(|| t.stopped_reason.clone())
                .flatten(),
        })
        .collect();
    DesiredResponse {
        version: i.version,
        tasks,
        applied_seq: i.applied_seq,
    }
}

pub fn events(s: &mut State, id: &str, r: EventsRequest) -> Result<EventsResponse, ApiError> {
    if r.events.len() > MAX_EVENTS_PER_POST {
        return Err(ApiError::invalid(format!(
            "events: at most {MAX_EVENTS_PER_POST} per post"
        )));
    }
    for (k, e) in r.events.iter().enumerate() {
        if k > 0 && e.seq <= r.events[k - 1].seq {
            return Err(ApiError::invalid(format!(
                "events[{k}].seq: must grow within a post"
            )));
        }
        if !TASK_STATUSES.contains(&e.last_status.as_str()) {
            return Err(ApiError::invalid(format!(
                "events[{k}].lastStatus: {:?} is not a task status",
                e.last_status
            )));
        }
        // Checked before anything is applied: an agent reports only its own tasks.
        if let Some(t) = s.tasks.get(short_id(&e.task_arn)) {
            if t.instance_id != id {
                return Err(ApiError::forbidden(format!(
                    "events[{k}].taskArn: {} is not a task of this instance",
                    e.task_arn
                )));
            }
        }
    }
    let mut inst = s.instances[id].clone();
    let mut changed: std::collections::BTreeMap<String, Task> = Default::default();
    let mut set_changed = false;
    for e in &r.events {
        if e.seq <= inst.applied_seq {
            continue;
        }
        inst.applied_seq = e.seq;
        let tid = short_id(&e.task_arn).to_string();
        // A task the server no longer has (removed after its retention) is skipped; its seq
        // still counts as applied so that the agent can drop the event.
        let Some(t) = changed.get(&tid).or_else(|| s.tasks.get(&tid)).cloned() else {
            continue;
        };
        if t.is_stopped() {
            continue;
        }
        let t = apply_event(t, e);
        set_changed |= t.is_stopped();
        changed.insert(tid, t);
    }
    if set_changed {
        inst.version += 1;
    }
    if inst.applied_seq == s.instances[id].applied_seq {
        return Ok(EventsResponse {
            applied_seq: inst.applied_seq,
        });
    }
    let mut batch: Vec<Write> = changed
        .values()
        .map(|t| Write::put(KIND_TASK, &t.id, t))
        .collect();
    batch.push(Write::put(KIND_INSTANCE, &inst.id, &inst));
    s.commit(batch)?;
    for t in changed.into_values() {
        s.put_task_mem(t);
    }
    let applied_seq = inst.applied_seq;
    s.put_instance_mem(inst);
    Ok(EventsResponse { applied_seq })
}

/// An event is a snapshot: it replaces what it carries.
fn apply_event(mut t: Task, e: &TaskEvent) -> Task {
    t.last_status = e.last_status.clone();
    if !e.containers.is_empty() {
        t.containers = e.containers.clone();
    }
    // A user's StopTask reason stays the task's reason.
    if t.stop_code.as_deref() != Some("UserInitiated") {
        if e.stopped_reason.is_some() {
            t.stopped_reason = e.stopped_reason.clone();
        }
        if e.stop_code.is_some() {
            t.stop_code = e.stop_code.clone();
        }
    }
    let keep = |old: Option<f64>, new: Option<f64>| new.or(old);
    t.pull_started_at = keep(t.pull_started_at, e.pull_started_at);
    t.pull_stopped_at = keep(t.pull_stopped_at, e.pull_stopped_at);
    t.started_at = keep(t.started_at, e.started_at);
    t.stopping_at = keep(t.stopping_at, e.stopping_at);
    t.stopped_at = keep(t.stopped_at, e.stopped_at);
    t.execution_stopped_at = keep(t.execution_stopped_at, e.execution_stopped_at);
    if !e.attachments.is_empty() {
        t.attachments = e.attachments.clone();
    }
    if t.is_stopped() {
        t.desired_status = "STOPPED".into();
        t.stopped_at = t.stopped_at.or(Some(e.at));
    }
    t.version += 1;
    t
}

pub fn utilization(s: &mut State, id: &str, r: UtilizationRequest) -> Result<(), ApiError> {
    if r.window_end < r.window_start || r.window_end.is_nan() || r.window_start.is_nan() {
        return Err(ApiError::invalid(
            "windowEnd: must not be before windowStart",
        ));
    }
    for (k, t) in r.tasks.iter().enumerate() {
        match s.tasks.get(short_id(&t.task_arn)) {
            Some(task) if task.instance_id == id => {}
            Some(_) => {
                return Err(ApiError::forbidden(format!(
                    "tasks[{k}].taskArn: {} is not a task of this instance",
                    t.task_arn
                )))
            }
            // Removed after its retention: nothing to keep the window for.
            None => {}
        }
    }
    let tasks = r
        .tasks
        .into_iter()
        .filter(|t| s.tasks.contains_key(short_id(&t.task_arn)))
        .collect();
    s.record_usage(id, r.window_start, r.window_end, r.instance, tasks);
    Ok(())
}
