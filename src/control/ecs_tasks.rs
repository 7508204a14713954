//! The user API's task actions: RunTask, StartTask, StopTask, DescribeTasks, ListTasks.

use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::listed;
use super::error::ApiError;
use super::model::*;
use super::state::State;
use super::store::Write;

/// RunTask and StartTask place at most this many tasks per call (ECS's limit).
pub const MAX_TASKS_PER_CALL: usize = 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskReq {
    cluster: Option<String>,
    task_definition: String,
    count: Option<usize>,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
    launch_type: Option<String>,
    #[serde(default)]
    tags: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTaskReq {
    cluster: Option<String>,
    task_definition: String,
    container_instances: Vec<String>,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
    #[serde(default)]
    tags: Vec<Value>,
}

fn check_common(started_by: &Option<String>, overrides: &Option<Value>) -> Result<(), ApiError> {
    if started_by.as_ref().is_some_and(|s| s.len() > 128) {
        return Err(ApiError::invalid("startedBy: at most 128 characters"));
    }
    if overrides.as_ref().is_some_and(|o| !o.is_object()) {
        return Err(ApiError::invalid("overrides: must be an object"));
    }
    Ok(())
}

/// What a new task is made of, before an instance is chosen.
struct Launch {
    cluster: String,
    td: TaskDef,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
}

impl Launch {
    fn task(&self, instance_id: &str) -> Task {
        Task {
            id: new_id(),
            cluster: self.cluster.clone(),
            instance_id: instance_id.to_string(),
            taskdef_key: TaskDef::key(&self.td.family, self.td.revision),
            overrides: self.overrides.clone(),
            desired_status: "RUNNING".into(),
            last_status: "PROVISIONING".into(),
            started_by: self.started_by.clone(),
            group: Some(
                self.group
                    .clone()
                    .unwrap_or_else(|| format!("family:{}", self.td.family)),
            ),
            stopped_reason: None,
            stop_code: None,
            created_at: now(),
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            execution_stopped_at: None,
            containers: Vec::new(),
            attachments: Vec::new(),
            cpu: self.td.cpu,
            memory: self.td.memory,
            ports: self.td.ports.clone(),
            version: 1,
        }
    }
}

fn launch(
    s: &State,
    cluster: Option<&str>,
    td: &str,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
) -> Result<Launch, ApiError> {
    check_common(&started_by, &overrides)?;
    let cluster = s.cluster(cluster)?.name.clone();
    let td = s.taskdef(td)?.clone();
    if td.status != "ACTIVE" {
        return Err(ApiError::client(format!(
            "taskDefinition: {} is INACTIVE and runs no new tasks",
            td.arn()
        )));
    }
    Ok(Launch {
        cluster,
        td,
        started_by,
        group,
        overrides,
    })
}

/// Commits new tasks with their instances' bumped versions (which wakes their polls).
fn place(s: &mut State, tasks: Vec<Task>) -> Result<Vec<Value>, ApiError> {
    let mut batch = Vec::new();
    let mut bumped: std::collections::BTreeMap<String, Instance> = Default::default();
    for t in &tasks {
        batch.push(Write::put(KIND_TASK, &t.id, t));
        let i = bumped
            .entry(t.instance_id.clone())
            .or_insert_with(|| s.instances[&t.instance_id].clone());
        i.version += 1;
    }
    batch.extend(bumped.values().map(|i| Write::put(KIND_INSTANCE, &i.id, i)));
    s.commit(batch)?;
    let mut out = Vec::new();
    for t in tasks {
        let iarn = s.instances[&t.instance_id].arn();
        out.push(task_json(&t, &iarn, s.taskdefs.get(&t.taskdef_parts())));
        s.put_task_mem(t);
    }
    for i in bumped.into_values() {
        s.put_instance_mem(i);
    }
    Ok(out)
}

fn random_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("the kernel's random source is available");
    (u64::from_le_bytes(b) % n as u64) as usize
}

pub fn run_task(s: &mut State, r: RunTaskReq) -> Result<Value, ApiError> {
    let _ = r.tags;
    let count = r.count.unwrap_or(1);
    if !(1..=MAX_TASKS_PER_CALL).contains(&count) {
        return Err(ApiError::invalid("count: must be between 1 and 10"));
    }
    if let Some(lt) = r
        .launch_type
        .as_deref()
        .filter(|l| !matches!(*l, "EC2" | "EXTERNAL"))
    {
        return Err(ApiError::invalid(format!(
            "launchType: {lt} is not available here (EC2 or EXTERNAL)"
        )));
    }
    let l = launch(
        s,
        r.cluster.as_deref(),
        &r.task_definition,
        r.started_by,
        r.group,
        r.overrides,
    )?;
    let candidates: Vec<Instance> = s
        .instances
        .values()
        .filter(|i| i.cluster == l.cluster && i.status == "ACTIVE")
        .cloned()
        .collect();
    if candidates.is_empty() {
        return Err(ApiError::invalid(format!(
            "no container instances were found in cluster {:?}",
            l.cluster
        )));
    }
    let mut tasks: Vec<Task> = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..count {
        // Tasks placed earlier in this call count against their instance too.
        let fits: Vec<&Instance> = candidates
            .iter()
            .filter(|i| s.connected(&i.id) && fits_with(s, i, &tasks, &l.td))
            .collect();
        if fits.is_empty() {
            for i in &candidates {
                let reason = if !s.connected(&i.id) {
                    "AGENT"
                } else {
                    misfit_with(s, i, &tasks, &l.td).unwrap_or("RESOURCE:CPU")
                };
                failures.push(json!({"arn": i.arn(), "reason": reason}));
            }
            break;
        }
        let i = fits[random_index(fits.len())];
        tasks.push(l.task(&i.id));
    }
    let tasks = place(s, tasks)?;
    Ok(json!({"tasks": tasks, "failures": failures}))
}

/// Why `td` does not fit on `i` beside the tasks of this call placed there already.
/// An instance whose `ecs.cpu-architecture` is not the definition's
/// `runtimePlatform.cpuArchitecture` (ECS's failure reason for it is ATTRIBUTE).
fn wrong_architecture(i: &Instance, td: &TaskDef) -> bool {
    let Some(want) = td.body["runtimePlatform"]["cpuArchitecture"].as_str() else {
        return false;
    };
    let have = i
        .attributes
        .iter()
        .find(|a| a.name == "ecs.cpu-architecture")
        .and_then(|a| a.value.as_deref())
        .unwrap_or("");
    let have = match have {
        "arm64" | "aarch64" => "ARM64",
        "x86_64" | "amd64" => "X86_64",
        other => other,
    };
    !want.eq_ignore_ascii_case(have)
}

fn misfit_with(s: &State, i: &Instance, placed: &[Task], td: &TaskDef) -> Option<&'static str> {
    if wrong_architecture(i, td) {
        return Some("ATTRIBUTE");
    }
    let mut need_cpu = td.cpu;
    let mut need_mem = td.memory;
    let mut ports = td.ports.clone();
    for t in placed.iter().filter(|t| t.instance_id == i.id) {
        need_cpu += t.cpu;
        need_mem += t.memory;
        ports.tcp.extend(&t.ports.tcp);
        ports.udp.extend(&t.ports.udp);
    }
    let dup = |v: &mut Vec<u16>| {
        let n = v.len();
        v.sort_unstable();
        v.dedup();
        v.len() != n
    };
    let mut check = ports.clone();
    if let Some(r) = s.misfit(i, need_cpu, need_mem, &ports) {
        return Some(r);
    }
    (dup(&mut check.tcp) || dup(&mut check.udp)).then_some("RESOURCE:PORTS")
}

fn fits_with(s: &State, i: &Instance, placed: &[Task], td: &TaskDef) -> bool {
    misfit_with(s, i, placed, td).is_none()
}

pub fn start_task(s: &mut State, r: StartTaskReq) -> Result<Value, ApiError> {
    let _ = r.tags;
    if r.container_instances.is_empty() || r.container_instances.len() > MAX_TASKS_PER_CALL {
        return Err(ApiError::invalid("containerInstances: 1 to 10 instances"));
    }
    let l = launch(
        s,
        r.cluster.as_deref(),
        &r.task_definition,
        r.started_by,
        r.group,
        r.overrides,
    )?;
    let mut tasks: Vec<Task> = Vec::new();
    let mut failures = Vec::new();
    for x in &r.container_instances {
        let Some(i) = s.instance_in(&l.cluster, x) else {
            failures.push(json!({"arn": x, "reason": "MISSING"}));
            continue;
        };
        let reason = if i.status != "ACTIVE" {
            Some(if i.status == "DRAINING" {
                "DRAINING"
            } else {
                "INACTIVE"
            })
        } else if !s.connected(&i.id) {
            Some("AGENT")
        } else {
            misfit_with(s, i, &tasks, &l.td)
        };
        match reason {
            Some(reason) => failures.push(json!({"arn": i.arn(), "reason": reason})),
            None => tasks.push(l.task(&i.id)),
        }
    }
    let tasks = place(s, tasks)?;
    Ok(json!({"tasks": tasks, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTaskReq {
    cluster: Option<String>,
    task: String,
    reason: Option<String>,
}

pub fn stop_task(s: &mut State, r: StopTaskReq) -> Result<Value, ApiError> {
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    if r.reason.as_ref().is_some_and(|x| x.len() > 255) {
        return Err(ApiError::invalid("reason: at most 255 characters"));
    }
    let Some(t) = s.tasks.get(short_id(&r.task)).filter(|t| t.cluster == c) else {
        return Err(ApiError::invalid(format!(
            "task: {:?} not found in cluster {c:?}",
            r.task
        )));
    };
    let mut t = t.clone();
    if t.desired_status != "STOPPED" {
        t.desired_status = "STOPPED".into();
        t.stopped_reason = Some(r.reason.unwrap_or_else(|| "Task stopped by user".into()));
        t.stop_code = Some("UserInitiated".into());
        t.version += 1;
        let mut batch = vec![Write::put(KIND_TASK, &t.id, &t)];
        let bumped = if t.is_stopped() {
            None
        } else {
            s.bumped(&t.instance_id)
        };
        if let Some(i) = &bumped {
            batch.push(Write::put(KIND_INSTANCE, &i.id, i));
        }
        s.commit(batch)?;
        s.put_task_mem(t.clone());
        if let Some(i) = bumped {
            s.put_instance_mem(i);
        }
    }
    Ok(json!({"task": view(s, &t)}))
}

pub fn view(s: &State, t: &Task) -> Value {
    let iarn = s
        .instances
        .get(&t.instance_id)
        .map(Instance::arn)
        .unwrap_or_default();
    task_json(t, &iarn, s.taskdefs.get(&t.taskdef_parts()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTasksReq {
    cluster: Option<String>,
    tasks: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

pub fn describe_tasks(s: &mut State, r: DescribeTasksReq) -> Result<Value, ApiError> {
    let _ = r.include;
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    if r.tasks.is_empty() || r.tasks.len() > 100 {
        return Err(ApiError::invalid("tasks: 1 to 100 tasks"));
    }
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for x in &r.tasks {
        match s.tasks.get(short_id(x)).filter(|t| t.cluster == c) {
            Some(t) => found.push(view(s, t)),
            None => failures.push(json!({"arn": x, "reason": "MISSING"})),
        }
    }
    Ok(json!({"tasks": found, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksReq {
    cluster: Option<String>,
    container_instance: Option<String>,
    family: Option<String>,
    desired_status: Option<String>,
    started_by: Option<String>,
    service_name: Option<String>,
    launch_type: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

pub fn list_tasks(s: &mut State, r: ListTasksReq) -> Result<Value, ApiError> {
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    let _ = r.launch_type;
    if r.service_name.is_some() {
        return Err(ApiError::invalid(
            "serviceName: services come with the scheduler",
        ));
    }
    let desired = r.desired_status.unwrap_or_else(|| "RUNNING".into());
    if !matches!(desired.as_str(), "RUNNING" | "PENDING" | "STOPPED") {
        return Err(ApiError::invalid(
            "desiredStatus: RUNNING, PENDING or STOPPED",
        ));
    }
    let instance = match &r.container_instance {
        Some(x) => Some(
            s.instance_in(&c, x)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "containerInstance: {x:?} not found in cluster {c:?}"
                    ))
                })?
                .id
                .clone(),
        ),
        None => None,
    };
    let arns = s
        .tasks
        .values()
        .filter(|t| t.cluster == c)
        .filter(|t| instance.as_ref().map_or(true, |i| &t.instance_id == i))
        .filter(|t| {
            r.family
                .as_ref()
                .map_or(true, |f| t.taskdef_parts().0 == *f)
        })
        .filter(|t| {
            r.started_by
                .as_ref()
                .map_or(true, |b| t.started_by.as_ref() == Some(b))
        })
        .filter(|t| match desired.as_str() {
            // ECS: PENDING lists tasks whose desired status is RUNNING but not yet running.
            "PENDING" => t.desired_status == "RUNNING" && t.is_pending(),
            d => t.desired_status == d,
        })
        .map(Task::arn)
        .collect();
    listed("taskArns", arns, r.max_results, r.next_token.as_deref())
}
