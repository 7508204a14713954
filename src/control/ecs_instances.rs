//! The user API's container instance actions, and skiff's GetUtilization.

use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::listed;
use super::error::ApiError;
use super::model::*;
use super::state::State;
use super::store::Write;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListInstancesReq {
    cluster: Option<String>,
    status: Option<String>,
    filter: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

pub fn list_instances(s: &mut State, r: ListInstancesReq) -> Result<Value, ApiError> {
    if r.filter.is_some() {
        return Err(ApiError::invalid(
            "filter: cluster query language expressions come with the scheduler",
        ));
    }
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    let arns = s
        .instances
        .values()
        .filter(|i| i.cluster == c)
        .filter(|i| match r.status.as_deref() {
            Some(st) => i.status == st,
            None => i.status != "INACTIVE",
        })
        .map(Instance::arn)
        .collect();
    listed(
        "containerInstanceArns",
        arns,
        r.max_results,
        r.next_token.as_deref(),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInstancesReq {
    cluster: Option<String>,
    container_instances: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

fn resources_json(cpu: u64, mem: u64, tcp: &[u16], udp: &[u16]) -> Value {
    let s = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>();
    json!([
        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": mem},
        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": s(tcp)},
        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": s(udp)},
    ])
}

pub fn instance_view(s: &State, i: &Instance) -> Value {
    let (ucpu, umem, used) = s.used(&i.id);
    let r = &i.resources;
    let with = |a: &[u16], b: &[u16]| {
        let mut v: Vec<u16> = a.iter().chain(b).copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (mut running, mut pending) = (0, 0);
    for t in s
        .active
        .get(&i.id)
        .into_iter()
        .flatten()
        .filter_map(|t| s.tasks.get(t))
    {
        running += usize::from(t.last_status == "RUNNING");
        pending += usize::from(t.is_pending());
    }
    json!({
        "containerInstanceArn": i.arn(),
        "ec2InstanceId": i.hostname,
        "status": i.status,
        "agentConnected": s.connected(&i.id),
        "registeredResources": resources_json(r.cpu, r.memory, &r.reserved_ports, &r.reserved_ports_udp),
        "remainingResources": resources_json(r.cpu.saturating_sub(ucpu), r.memory.saturating_sub(umem),
            &with(&r.reserved_ports, &used.tcp), &with(&r.reserved_ports_udp, &used.udp)),
        "runningTasksCount": running,
        "pendingTasksCount": pending,
        "attributes": i.attributes,
        "registeredAt": i.registered_at,
        "versionInfo": {"agentVersion": i.agent_version},
        "version": i.version,
    })
}

pub fn describe_instances(s: &mut State, r: DescribeInstancesReq) -> Result<Value, ApiError> {
    let _ = r.include;
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    if r.container_instances.len() > 100 {
        return Err(ApiError::invalid("containerInstances: at most 100"));
    }
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for x in &r.container_instances {
        match s.instance_in(&c, x) {
            Some(i) => found.push(instance_view(s, i)),
            None => failures.push(json!({"arn": x, "reason": "MISSING"})),
        }
    }
    Ok(json!({"containerInstances": found, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStateReq {
    cluster: Option<String>,
    container_instances: Vec<String>,
    status: String,
}

pub fn update_instances_state(s: &mut State, r: UpdateStateReq) -> Result<Value, ApiError> {
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    if !matches!(r.status.as_str(), "ACTIVE" | "DRAINING") {
        return Err(ApiError::invalid("status: ACTIVE or DRAINING"));
    }
    let (mut changed, mut failures) = (Vec::new(), Vec::new());
    for x in &r.container_instances {
        match s.instance_in(&c, x) {
            Some(i) if i.status != "INACTIVE" => {
                let mut i = i.clone();
                i.status = r.status.clone();
                changed.push(i);
            }
            _ => failures.push(json!({"arn": x, "reason": "MISSING"})),
        }
    }
    s.commit(
        changed
            .iter()
            .map(|i| Write::put(KIND_INSTANCE, &i.id, i))
            .collect(),
    )?;
    let mut out = Vec::new();
    for i in changed {
        s.put_instance_mem(i.clone());
        out.push(instance_view(s, &i));
    }
    Ok(json!({"containerInstances": out, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeregisterInstanceReq {
    cluster: Option<String>,
    container_instance: String,
    force: Option<bool>,
}

pub fn deregister_instance(s: &mut State, r: DeregisterInstanceReq) -> Result<Value, ApiError> {
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    let Some(i) = s.instance_in(&c, &r.container_instance).cloned() else {
        return Err(ApiError::invalid(format!(
            "containerInstance: {:?} not found in cluster {c:?}",
            r.container_instance
        )));
    };
    let busy = s.active.get(&i.id).is_some_and(|t| !t.is_empty());
    if busy && !r.force.unwrap_or(false) {
        return Err(ApiError::invalid(format!(
            "containerInstance: {:?} still has tasks; stop them or pass force",
            i.id
        )));
    }
    // Like ECS: the record stays INACTIVE (its tasks are left to the agent, which can no
    // longer reach the server with its credential).
    let mut i = i;
    i.status = "INACTIVE".into();
    i.version += 1;
    s.commit(vec![Write::put(KIND_INSTANCE, &i.id, &i)])?;
    s.put_instance_mem(i.clone());
    s.credentials.remove(&i.credential_hash);
    Ok(json!({"containerInstance": instance_view(s, &i)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UtilizationReq {
    cluster: Option<String>,
    container_instance: Option<String>,
    #[serde(default)]
    tasks: Vec<String>,
}

/// skiff's GetUtilization: the last windows (min/max/sum/count of CPU units and MiB) of one
/// instance and/or of tasks, as the agents posted them. Memory only: lost on restart.
pub fn utilization(s: &mut State, r: UtilizationReq) -> Result<Value, ApiError> {
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    let mut out = json!({});
    if let Some(x) = &r.container_instance {
        let i = s.instance_in(&c, x).ok_or_else(|| {
            ApiError::invalid(format!(
                "containerInstance: {x:?} not found in cluster {c:?}"
            ))
        })?;
        let windows: Vec<_> = s
            .live
            .get(&i.id)
            .map(|l| l.usage.iter().cloned().collect())
            .unwrap_or_default();
        out["containerInstance"] = json!({"containerInstanceArn": i.arn(), "windows": windows});
    }
    let mut tasks = Vec::new();
    for t in &r.tasks {
        let Some(task) = s.tasks.get(short_id(t)).filter(|x| x.cluster == c) else {
            return Err(ApiError::invalid(format!(
                "tasks: {t:?} not found in cluster {c:?}"
            )));
        };
        let windows: Vec<_> = s
            .task_usage
            .get(&task.id)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        tasks.push(json!({"taskArn": task.arn(), "windows": windows}));
    }
    out["tasks"] = json!(tasks);
    Ok(out)
}
