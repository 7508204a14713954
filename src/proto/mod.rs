//! The versioned wire types between `skiff agent` and `skiff server` (protocol v1).
//!
//! The agent always dials out. It registers once with a join token and from then on holds a
//! credential of its own instance (`Authorization: Bearer <credential>`). It long-polls its
//! desired task set, which the server versions: a poll answers as soon as the set's version
//! exceeds the one the agent holds, or after `wait` seconds with the same version. Every poll
//! is also the instance's heartbeat. State changes go up as numbered events: the server
//! applies an event only if its `seq` is greater than the last one it applied for that
//! instance, so a retry is never applied twice, and answers with that number so that the
//! agent can drop what is delivered.
//!
//! The user API (`skiff ctl`) is the ECS API itself, in the AWS JSON 1.1 shape: `POST /` with
//! `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Action>`, a JSON body as `aws ecs`
//! sends it, errors as `{"__type": "<ECS error type>", "message": ...}` with a 4xx status.
//! Users authenticate with `Authorization: Bearer <admin token>`.
//!
//! Field names are camelCase as in ECS. Times are seconds since the epoch as JSON numbers
//! (ECS's own JSON shape for timestamps).

use serde::{Deserialize, Serialize};

pub const REGISTER_PATH: &str = "/v1/agent/register";
/// `GET /v1/agent/desired?version=<held version>&wait=<seconds, at most 60>`.
pub const DESIRED_PATH: &str = "/v1/agent/desired";
pub const EVENTS_PATH: &str = "/v1/agent/events";
pub const UTILIZATION_PATH: &str = "/v1/agent/utilization";
/// The user API's single endpoint; the action is in `X-Amz-Target`.
pub const ECS_API_PATH: &str = "/";
pub const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
/// At most this many events in one `EVENTS_PATH` post.
pub const MAX_EVENTS_PER_POST: usize = 100;
/// Request bodies beyond this size are refused with 413 and an ECS error body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// ARNs look like ECS's: `arn:aws:ecs:<region>:<account>:<kind>/<cluster>/<id>` (task,
/// container-instance), `arn:aws:ecs:<region>:<account>:cluster/<name>`,
/// `arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>`.
pub const DEFAULT_REGION: &str = "local";
pub const DEFAULT_ACCOUNT: &str = "000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What an instance offers, as ECS counts it: CPU units (1024 per core), memory in MiB,
/// host ports the instance keeps for itself (ECS_RESERVED_PORTS, ECS_RESERVED_PORTS_UDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu: u64,
    pub memory: u64,
    #[serde(default)]
    pub reserved_ports: Vec<u16>,
    #[serde(default)]
    pub reserved_ports_udp: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub cluster: String,
    pub join_token: String,
    pub hostname: String,
    pub resources: Resources,
    /// Built-in (`ecs.os-type`, `ecs.cpu-architecture`, ...) and custom attributes.
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub container_instance_arn: String,
    /// The instance's own bearer credential; the agent keeps it (root-only) with the ARN in
    /// its data directory and never registers again while it has them.
    pub credential: String,
}

/// One task the server wants on this instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredTask {
    pub task_arn: String,
    pub task_definition_arn: String,
    /// The registered task definition in `describe-task-definition` form (the same JSON
    /// `skiff run` accepts).
    pub task_definition: serde_json::Value,
    /// ECS `overrides` of RunTask/StartTask, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<serde_json::Value>,
    /// `RUNNING` or `STOPPED`.
    pub desired_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// StopTask's reason, when desired is STOPPED by a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredResponse {
    /// Grows whenever the set changes.
    pub version: u64,
    /// Every task of this instance whose desired or known status is not yet STOPPED on
    /// the server's side: the whole set, not a delta.
    pub tasks: Vec<DesiredTask>,
    /// The last event seq the server applied for this instance (lets a restarted agent
    /// drop what was delivered before it died).
    pub applied_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub name: String,
    /// PENDING, RUNNING, STOPPED.
    pub last_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// HEALTHY, UNHEALTHY, UNKNOWN (absent without a health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
}

/// The whole known state of one task at one moment. Events carry snapshots rather than
/// deltas, so applying the newest one is always right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskEvent {
    /// Per instance, strictly increasing, starting at 1, kept across agent restarts.
    pub seq: u64,
    pub task_arn: String,
    /// PROVISIONING, PENDING, ACTIVATING, RUNNING, DEACTIVATING, STOPPING,
    /// DEPROVISIONING, STOPPED.
    pub last_status: String,
    #[serde(default)]
    pub containers: Vec<ContainerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// TaskFailedToStart, EssentialContainerExited, UserInitiated, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    /// ECS task `attachments` (the awsvpc ENI-like attachment), as `inspect` shows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<serde_json::Value>,
    /// When the agent observed this state (epoch seconds).
    pub at: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsRequest {
    /// In seq order, at most MAX_EVENTS_PER_POST.
    pub events: Vec<TaskEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsResponse {
    /// The last seq applied for this instance (events at or below it are delivered).
    pub applied_seq: u64,
}

/// A statistics window as CloudWatch keeps one: min, max, sum and count of the samples.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

impl Window {
    pub fn add(&mut self, v: f64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if self.count == 0 || v > self.max {
            self.max = v;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// CPU in CPU units (1024 = one core busy), memory in MiB.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu: Window,
    pub memory: Window,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    pub task_arn: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// Posted every 20 s: one window per running task and one for the instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UtilizationRequest {
    pub window_start: f64,
    pub window_end: f64,
    pub instance: Usage,
    #[serde(default)]
    pub tasks: Vec<TaskUsage>,
}

/// Error body of every 4xx/5xx answer, agent and user API alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "__type")]
    pub kind: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_min_max_sum_count() {
        let mut w = Window::default();
        for v in [3.0, 1.0, 5.0] {
            w.add(v);
        }
        assert_eq!((w.min, w.max, w.sum, w.count), (1.0, 5.0, 9.0, 3));
    }

    #[test]
    fn events_are_camel_case_and_skip_absent_fields() {
        let e = TaskEvent {
            seq: 7,
            task_arn: "arn:aws:ecs:local:000000000000:task/default/ab".into(),
            last_status: "STOPPED".into(),
            containers: vec![ContainerState {
                name: "web".into(),
                last_status: "STOPPED".into(),
                exit_code: Some(137),
                reason: Some("OutOfMemoryError: Container killed due to memory usage".into()),
                network_bindings: vec![],
                health_status: None,
                image_digest: None,
                runtime_id: None,
            }],
            stopped_reason: Some("Essential container in task exited".into()),
            stop_code: Some("EssentialContainerExited".into()),
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: Some(1.5),
            stopping_at: None,
            stopped_at: Some(2.5),
            execution_stopped_at: None,
            attachments: vec![],
            at: 2.5,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v["taskArn"],
            "arn:aws:ecs:local:000000000000:task/default/ab"
        );
        assert_eq!(v["containers"][0]["exitCode"], 137);
        assert_eq!(v["stopCode"], "EssentialContainerExited");
        assert!(v.get("pullStartedAt").is_none());
        assert!(v.get("attachments").is_none());
        let back: TaskEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
