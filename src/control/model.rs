//! The server's records as the store keeps them, and their ECS JSON shapes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::proto::{Attribute, ContainerState, Resources, DEFAULT_ACCOUNT, DEFAULT_REGION};

pub const KIND_CLUSTER: &str = "cluster";
pub const KIND_JOIN_TOKEN: &str = "join-token";
pub const KIND_TASKDEF: &str = "taskdef";
pub const KIND_INSTANCE: &str = "instance";
pub const KIND_TASK: &str = "task";

pub fn arn(kind: &str, rest: &str) -> String {
    format!("arn:aws:ecs:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:{kind}/{rest}")
}

/// The last path element of an ARN (an id), or the input itself when it is no ARN.
pub fn short_id(s: &str) -> &str {
    if s.starts_with("arn:") {
        s.rsplit('/').next().unwrap_or(s)
    } else {
        s
    }
}

/// A cluster name from a name or an ARN.
pub fn cluster_name(s: &str) -> &str {
    match s.strip_prefix("arn:") {
        Some(_) => s.rsplit('/').next().unwrap_or(s),
        None => s,
    }
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A random id as ECS's task ids look: 32 hex digits.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the kernel's random source is available");
    hex::encode(b)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub created_at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    pub hash: String,
    pub cluster: String,
    pub created_at: f64,
}

/// Host ports a task takes, by protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ports {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDef {
    pub family: String,
    pub revision: u32,
    /// ACTIVE or INACTIVE.
    pub status: String,
    /// The definition in describe-task-definition form (with arn, revision, status).
    pub body: Value,
    pub tags: Vec<Value>,
    /// What one task of it takes from an instance.
    pub cpu: u64,
    pub memory: u64,
    pub ports: Ports,
}

impl TaskDef {
    pub fn key(family: &str, revision: u32) -> String {
        format!("{family}:{revision}")
    }
    pub fn arn(&self) -> String {
        arn(
            "task-definition",
            &TaskDef::key(&self.family, self.revision),
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub cluster: String,
    pub hostname: String,
    /// ACTIVE, DRAINING or INACTIVE (deregistered).
    pub status: String,
    pub resources: Resources,
    pub attributes: Vec<Attribute>,
    pub agent_version: String,
    pub credential_hash: String,
    pub registered_at: f64,
    /// The last event seq applied (kept with the task changes it came with).
    pub applied_seq: u64,
    /// The desired set's version: grows with every change of the set, across restarts.
    pub version: u64,
}

impl Instance {
    pub fn arn(&self) -> String {
        arn(
            "container-instance",
            &format!("{}/{}", self.cluster, self.id),
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub cluster: String,
    pub instance_id: String,
    pub taskdef_key: String,
    pub overrides: Option<Value>,
    pub desired_status: String,
    pub last_status: String,
    pub started_by: Option<String>,
    pub group: Option<String>,
    pub stopped_reason: Option<String>,
    pub stop_code: Option<String>,
    pub created_at: f64,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    pub stopping_at: Option<f64>,
    pub stopped_at: Option<f64>,
    pub execution_stopped_at: Option<f64>,
    pub containers: Vec<ContainerState>,
    pub attachments: Vec<Value>,
    pub cpu: u64,
    pub memory: u64,
    pub ports: Ports,
    /// ECS's task `version`: grows with every change of the task.
    pub version: u64,
}

impl Task {
    pub fn arn(&self) -> String {
        arn("task", &format!("{}/{}", self.cluster, self.id))
    }
    /// (family, revision) of its task definition.
    pub fn taskdef_parts(&self) -> (String, u32) {
        let (f, r) = self
            .taskdef_key
            .rsplit_once(':')
            .unwrap_or((&self.taskdef_key, "0"));
        (f.to_string(), r.parse().unwrap_or(0))
    }
    /// The server knows it stopped: it no longer holds resources nor belongs to the set.
    pub fn is_stopped(&self) -> bool {
        self.last_status == "STOPPED"
    }
    pub fn is_pending(&self) -> bool {
        !self.is_stopped() && self.last_status != "RUNNING" && !is_stopping(&self.last_status)
    }
}

fn is_stopping(s: &str) -> bool {
    matches!(s, "DEACTIVATING" | "STOPPING" | "DEPROVISIONING")
}

pub const TASK_STATUSES: &[&str] = &[
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];

pub fn cluster_json(c: &Cluster, instances: usize, running: usize, pending: usize) -> Value {
    json!({
        "clusterArn": arn("cluster", &c.name),
        "clusterName": c.name,
        "status": "ACTIVE",
        "registeredContainerInstancesCount": instances,
        "runningTasksCount": running,
        "pendingTasksCount": pending,
        "activeServicesCount": 0,
    })
}

pub fn task_json(t: &Task, instance_arn: &str, td: Option<&TaskDef>) -> Value {
    let containers: Vec<Value> = t
        .containers
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            v["taskArn"] = json!(t.arn());
            v
        })
        .collect();
    let mut v = json!({
        "taskArn": t.arn(),
        "clusterArn": arn("cluster", &t.cluster),
        "containerInstanceArn": instance_arn,
        "taskDefinitionArn": arn("task-definition", &t.taskdef_key),
        "lastStatus": t.last_status,
        "desiredStatus": t.desired_status,
        "cpu": t.cpu.to_string(),
        "memory": t.memory.to_string(),
        "containers": containers,
        "createdAt": t.created_at,
        "launchType": "EXTERNAL",
        "version": t.version,
        "attachments": t.attachments,
        "overrides": t.overrides.clone().unwrap_or_else(|| json!({"containerOverrides": []})),
    });
    let o = v.as_object_mut().expect("an object literal");
    let mut opt = |k: &str, x: Option<Value>| {
        if let Some(x) = x {
            o.insert(k.to_string(), x);
        }
    };
    opt("group", t.group.clone().map(Value::from));
    opt("startedBy", t.started_by.clone().map(Value::from));
    opt("stoppedReason", t.stopped_reason.clone().map(Value::from));
    opt("stopCode", t.stop_code.clone().map(Value::from));
    opt("pullStartedAt", t.pull_started_at.map(Value::from));
    opt("pullStoppedAt", t.pull_stopped_at.map(Value::from));
    opt("startedAt", t.started_at.map(Value::from));
    opt("stoppingAt", t.stopping_at.map(Value::from));
    opt("stoppedAt", t.stopped_at.map(Value::from));
    opt(
        "executionStoppedAt",
        t.execution_stopped_at.map(Value::from),
    );
    if t.containers.is_empty() {
        // Before the agent's first report, list the definition's containers as ECS does.
        if let Some(defs) = td.and_then(|d| d.body["containerDefinitions"].as_array()) {
            let cs: Vec<Value> = defs
                .iter()
                .map(|d| {
                    json!({"name": d["name"], "image": d["image"], "lastStatus": "PENDING",
                           "taskArn": t.arn(), "networkBindings": []})
                })
                .collect();
            o.insert("containers".into(), Value::Array(cs));
        }
    }
    v
}
