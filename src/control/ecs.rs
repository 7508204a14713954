//! The user API: dispatch, and the ECS actions on clusters and task definitions, plus
//! skiff's own CreateJoinToken. Instances: `ecs_instances`; tasks: `ecs_tasks`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::model::*;
use super::state::State;
use super::store::Write;
use super::tls::{hash_secret, new_secret};
use crate::taskdef::{parse_task_definition_with, NetworkMode, ParseOptions, PortProtocol};

/// Runs one action on the state (under its lock) and gives the answer's JSON.
pub fn dispatch(s: &mut State, action: &str, body: &[u8]) -> Result<Value, ApiError> {
    match action {
        "CreateCluster" => create_cluster(s, req(action, body)?),
        "ListClusters" => {
            let r: ListReq = req(action, body)?;
            let arns = s.clusters.keys().map(|n| arn("cluster", n)).collect();
            listed("clusterArns", arns, r.max_results, r.next_token.as_deref())
        }
        "DescribeClusters" => describe_clusters(s, req(action, body)?),
        "DeleteCluster" => delete_cluster(s, req(action, body)?),
        "RegisterTaskDefinition" => register_taskdef(s, body),
        "DescribeTaskDefinition" => describe_taskdef(s, req(action, body)?),
        "ListTaskDefinitions" => list_taskdefs(s, req(action, body)?),
        "DeregisterTaskDefinition" => deregister_taskdef(s, req(action, body)?),
        "ListContainerInstances" => super::ecs_instances::list_instances(s, req(action, body)?),
        "DescribeContainerInstances" => {
            super::ecs_instances::describe_instances(s, req(action, body)?)
        }
        "UpdateContainerInstancesState" => {
            super::ecs_instances::update_instances_state(s, req(action, body)?)
        }
        "DeregisterContainerInstance" => {
            super::ecs_instances::deregister_instance(s, req(action, body)?)
        }
        "CreateJoinToken" => create_join_token(s, req(action, body)?),
        "GetUtilization" => super::ecs_instances::utilization(s, req(action, body)?),
        "RunTask" => super::ecs_tasks::run_task(s, req(action, body)?),
        "StartTask" => super::ecs_tasks::start_task(s, req(action, body)?),
        "StopTask" => super::ecs_tasks::stop_task(s, req(action, body)?),
        "DescribeTasks" => super::ecs_tasks::describe_tasks(s, req(action, body)?),
        "ListTasks" => super::ecs_tasks::list_tasks(s, req(action, body)?),
        _ => Err(ApiError::unknown_operation(action)),
    }
}

/// Reads a request body; an empty body is `{}` (as `aws` sends for actions without input).
pub fn req<T: serde::de::DeserializeOwned>(action: &str, body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::with_kind(
                400,
                "SerializationException",
                format!("{action}: malformed JSON: {e}"),
            )
        } else {
            ApiError::invalid(format!("{action}: {e}"))
        }
    })
}

/// Pagination as ECS does it: `nextToken` is opaque to the caller (here: an offset).
pub fn page(
    items: Vec<String>,
    max: Option<usize>,
    token: Option<&str>,
) -> Result<Value, ApiError> {
    let start: usize = match token {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid("nextToken: not a token this server gave"))?,
        None => 0,
    };
    let max = max.unwrap_or(100);
    if !(1..=100).contains(&max) {
        return Err(ApiError::invalid("maxResults: must be between 1 and 100"));
    }
    let end = start.saturating_add(max).min(items.len());
    let slice = items.get(start..end).unwrap_or_default().to_vec();
    let mut v = json!({ "items": slice });
    if end < items.len() {
        v["nextToken"] = json!(end.to_string());
    }
    Ok(v)
}

/// `page` under the key ECS uses for the list.
pub fn listed(
    key: &str,
    items: Vec<String>,
    max: Option<usize>,
    token: Option<&str>,
) -> Result<Value, ApiError> {
    let mut v = page(items, max, token)?;
    let items = v["items"].take();
    let o = v.as_object_mut().expect("page gives an object");
    o.remove("items");
    o.insert(key.to_string(), items);
    Ok(v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListReq {
    max_results: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterReq {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<Value>,
    #[serde(default)]
    settings: Vec<Value>,
}

fn create_cluster(s: &mut State, r: ClusterReq) -> Result<Value, ApiError> {
    let _ = (r.tags, r.settings);
    let name = r.cluster_name.unwrap_or_else(|| "default".into());
    if !valid_name(&name) {
        return Err(ApiError::invalid(
            "clusterName: 1-255 letters, digits, hyphens and underscores",
        ));
    }
    if !s.clusters.contains_key(&name) {
        let c = Cluster {
            name: name.clone(),
            created_at: now(),
        };
        s.commit(vec![Write::put(KIND_CLUSTER, &name, &c)])?;
        s.clusters.insert(name.clone(), c);
    }
    Ok(json!({ "cluster": cluster_view(s, &s.clusters[&name]) }))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn cluster_view(s: &State, c: &Cluster) -> Value {
    let instances = s
        .instances
        .values()
        .filter(|i| i.cluster == c.name && i.status != "INACTIVE")
        .count();
    let (mut running, mut pending) = (0, 0);
    for t in s.tasks.values().filter(|t| t.cluster == c.name) {
        running += usize::from(t.last_status == "RUNNING");
        pending += usize::from(t.is_pending());
    }
    cluster_json(c, instances, running, pending)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeClustersReq {
    clusters: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
}

fn describe_clusters(s: &mut State, r: DescribeClustersReq) -> Result<Value, ApiError> {
    let _ = r.include;
    let names = r.clusters.unwrap_or_else(|| vec!["default".into()]);
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for n in &names {
        match s.clusters.get(cluster_name(n)) {
            Some(c) => found.push(cluster_view(s, c)),
            None => {
                failures.push(json!({"arn": arn("cluster", cluster_name(n)), "reason": "MISSING"}))
            }
        }
    }
    Ok(json!({"clusters": found, "failures": failures}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRef {
    cluster: Option<String>,
}

fn delete_cluster(s: &mut State, r: ClusterRef) -> Result<Value, ApiError> {
    let Some(name) = r.cluster.as_deref().map(cluster_name) else {
        return Err(ApiError::invalid("cluster: required"));
    };
    let c = s.cluster(Some(name))?.clone();
    if c.name == "default" {
        return Err(ApiError::invalid(
            "cluster: the default cluster always exists",
        ));
    }
    if s.instances
        .values()
        .any(|i| i.cluster == c.name && i.status != "INACTIVE")
    {
        return Err(ApiError::with_kind(
            400,
            "ClusterContainsContainerInstancesException",
            format!(
                "cluster {:?} has registered container instances: deregister them first",
                c.name
            ),
        ));
    }
    if s.tasks
        .values()
        .any(|t| t.cluster == c.name && !t.is_stopped())
    {
        return Err(ApiError::with_kind(
            400,
            "ClusterContainsTasksException",
            format!("cluster {:?} has tasks that are not stopped", c.name),
        ));
    }
    let mut batch = vec![Write::delete(KIND_CLUSTER, &c.name)];
    let tokens: Vec<String> = s
        .join_tokens
        .values()
        .filter(|t| t.cluster == c.name)
        .map(|t| t.hash.clone())
        .collect();
    batch.extend(tokens.iter().map(|h| Write::delete(KIND_JOIN_TOKEN, h)));
    let view = cluster_view(s, &c);
    s.commit(batch)?;
    s.clusters.remove(&c.name);
    for h in tokens {
        s.join_tokens.remove(&h);
    }
    let mut view = view;
    view["status"] = json!("INACTIVE");
    Ok(json!({"cluster": view}))
}

fn register_taskdef(s: &mut State, body: &[u8]) -> Result<Value, ApiError> {
    let parsed = parse_task_definition_with(body, &ParseOptions::default());
    let td = match parsed.result {
        Ok(td) => td,
        Err(crate::taskdef::TaskDefError::Json(m)) => {
            return Err(ApiError::with_kind(400, "SerializationException", m))
        }
        Err(e) => return Err(ApiError::client(e.to_string())),
    };
    let mut obj: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => o,
        _ => {
            return Err(ApiError::client(
                "RegisterTaskDefinition: the input must be a JSON object",
            ))
        }
    };
    if let Some(Value::Object(inner)) = obj.remove("taskDefinition") {
        let tags = obj.remove("tags");
        obj = inner;
        if let Some(t) = tags {
            obj.insert("tags".into(), t);
        }
    }
    let tags = match obj.remove("tags") {
        Some(Value::Array(t)) => t,
        _ => Vec::new(),
    };
    for k in [
        "taskDefinitionArn",
        "revision",
        "status",
        "registeredAt",
        "registeredBy",
        "deregisteredAt",
        "compatibilities",
        "requiresAttributes",
    ] {
        obj.remove(k);
    }
    let revision = s
        .taskdefs
        .range((td.family.clone(), 0)..=(td.family.clone(), u32::MAX))
        .next_back()
        .map_or(1, |((_, r), _)| r + 1);
    let cpu = td
        .cpu
        .unwrap_or_else(|| td.containers.iter().map(|c| c.cpu).sum());
    let memory = td.memory.unwrap_or_else(|| {
        td.containers
            .iter()
            .map(|c| c.memory.or(c.memory_reservation).unwrap_or(0))
            .sum()
    });
    let mut ports = Ports::default();
    for c in &td.containers {
        for m in &c.port_mappings {
            // Host ports an instance gives up: fixed ones in bridge mode, every one in host
            // mode; awsvpc tasks have their own network namespace and none.
            let first = match td.network_mode {
                NetworkMode::Host => m.host_port.filter(|p| *p != 0).unwrap_or(m.container_port),
                NetworkMode::Bridge => match m.host_port.filter(|p| *p != 0) {
                    Some(p) => p,
                    None => continue,
                },
                _ => continue,
            };
            let list = match m.protocol {
                PortProtocol::Tcp => &mut ports.tcp,
                PortProtocol::Udp => &mut ports.udp,
            };
            list.extend((0..m.count.max(1)).filter_map(|k| first.checked_add(k)));
        }
    }
    let mut d = TaskDef {
        family: td.family.clone(),
        revision,
        status: "ACTIVE".into(),
        body: Value::Null,
        tags,
        cpu,
        memory,
        ports,
    };
    obj.insert("family".into(), json!(d.family));
    obj.insert("taskDefinitionArn".into(), json!(d.arn()));
    obj.insert("revision".into(), json!(revision));
    obj.insert("status".into(), json!("ACTIVE"));
    obj.insert("compatibilities".into(), json!(["EC2", "EXTERNAL"]));
    obj.insert("registeredAt".into(), json!(now()));
    d.body = Value::Object(obj);
    s.commit(vec![Write::put(
        KIND_TASKDEF,
        &TaskDef::key(&d.family, revision),
        &d,
    )])?;
    let out = json!({"taskDefinition": d.body, "tags": d.tags});
    s.taskdefs.insert((d.family.clone(), revision), d);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskDefRef {
    task_definition: String,
    #[serde(default)]
    include: Vec<String>,
}

fn describe_taskdef(s: &mut State, r: TaskDefRef) -> Result<Value, ApiError> {
    let d = s.taskdef(&r.task_definition)?;
    let mut v = json!({"taskDefinition": d.body});
    if r.include.iter().any(|i| i == "TAGS") {
        v["tags"] = json!(d.tags);
    }
    Ok(v)
}

fn deregister_taskdef(s: &mut State, r: TaskDefRef) -> Result<Value, ApiError> {
    if !r.task_definition.contains(':') || r.task_definition.ends_with(':') {
        return Err(ApiError::client(
            "taskDefinition: give family:revision or the full ARN",
        ));
    }
    let mut d = s.taskdef(&r.task_definition)?.clone();
    d.status = "INACTIVE".into();
    d.body["status"] = json!("INACTIVE");
    d.body["deregisteredAt"] = json!(now());
    s.commit(vec![Write::put(
        KIND_TASKDEF,
        &TaskDef::key(&d.family, d.revision),
        &d,
    )])?;
    let out = json!({"taskDefinition": d.body});
    s.taskdefs.insert((d.family.clone(), d.revision), d);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTaskDefsReq {
    family_prefix: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

fn list_taskdefs(s: &mut State, r: ListTaskDefsReq) -> Result<Value, ApiError> {
    let status = r.status.unwrap_or_else(|| "ACTIVE".into());
    if !matches!(
        status.as_str(),
        "ACTIVE" | "INACTIVE" | "DELETE_IN_PROGRESS"
    ) {
        return Err(ApiError::invalid(
            "status: ACTIVE, INACTIVE or DELETE_IN_PROGRESS",
        ));
    }
    let mut arns: Vec<String> = s
        .taskdefs
        .values()
        .filter(|d| d.status == status)
        .filter(|d| {
            r.family_prefix
                .as_deref()
                .map_or(true, |p| d.family.starts_with(p))
        })
        .map(TaskDef::arn)
        .collect();
    match r.sort.as_deref() {
        None | Some("ASC") => {}
        Some("DESC") => arns.reverse(),
        Some(_) => return Err(ApiError::invalid("sort: ASC or DESC")),
    }
    listed(
        "taskDefinitionArns",
        arns,
        r.max_results,
        r.next_token.as_deref(),
    )
}

fn create_join_token(s: &mut State, r: ClusterRef) -> Result<Value, ApiError> {
    let c = s.cluster(r.cluster.as_deref())?.name.clone();
    let token = new_secret("skj_");
    let t = JoinToken {
        hash: hash_secret(&token),
        cluster: c.clone(),
        created_at: now(),
    };
    s.commit(vec![Write::put(KIND_JOIN_TOKEN, &t.hash, &t)])?;
    s.join_tokens.insert(t.hash.clone(), t);
    Ok(json!({"joinToken": token, "clusterArn": arn("cluster", &c)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_a_next_token_until_the_end() {
        let items: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let p = listed("xs", items.clone(), Some(2), None).unwrap();
        assert_eq!(p, json!({"xs": ["0", "1"], "nextToken": "2"}));
        let p = listed("xs", items.clone(), Some(2), Some("4")).unwrap();
        assert_eq!(p, json!({"xs": ["4"]}));
        assert!(listed("xs", items.clone(), Some(0), None).is_err());
        assert!(listed("xs", items.clone(), None, Some("x")).is_err());
        assert_eq!(
            listed("xs", items, None, Some("9")).unwrap(),
            json!({"xs": []})
        );
    }

    #[test]
    fn empty_bodies_are_empty_objects_and_bad_json_is_a_serialization_error() {
        let r: ClusterRef = req("X", b"  ").unwrap();
        assert!(r.cluster.is_none());
        let e = req::<ClusterRef>("X", b"{").err().unwrap();
        assert_eq!((e.status, e.kind), (400, "SerializationException"));
        let e = req::<ClusterRef>("X", br#"{"cluster": 1}"#).err().unwrap();
        assert_eq!(e.kind, "InvalidParameterException");
    }
}
