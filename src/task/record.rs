//! What a running task leaves in its directory for other commands (`skiff stats`, later `ps`
//! and re-attachment): `STATE/tasks/<id>/task.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    /// `skiff run --name`: unique among the tasks of the state directory.
    #[serde(default)]
    pub name: Option<String>,
    /// The control plane's ARN of a task `skiff agent` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    pub family: String,
    /// Unix seconds.
    pub started_at: u64,
    pub cgroup: Cgroup,
    pub containers: Vec<ContainerRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    /// The manifest digest the image resolved to (keeps it from garbage collection).
    #[serde(default)]
    pub image_digest: String,
    pub cgroup: Cgroup,
    /// Its address and port bindings (bridge and awsvpc modes).
    #[serde(default)]
    pub network: Option<super::net::NetRecord>,
    /// The volumes it mounts (`mountPoints` and `volumesFrom`).
    #[serde(default)]
    pub mounts: Vec<super::volumes::VolumeMount>,
}

pub const RECORD_FILE: &str = "task.json";

/// Writes the record atomically (rename), so readers never see half of it.
pub fn write(task_dir: &Path, rec: &TaskRecord) -> std::io::Result<()> {
    let tmp = task_dir.join(format!("{RECORD_FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(rec).expect("record serializes"),
    )?;
    std::fs::rename(&tmp, task_dir.join(RECORD_FILE))
}

/// The records of the tasks under `state_dir`, oldest first; unreadable ones are skipped (a
/// task may be ending while we look).
pub fn list(state_dir: &Path) -> Vec<TaskRecord> {
    let mut out: Vec<TaskRecord> = std::fs::read_dir(state_dir.join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let bytes = std::fs::read(e.path().join(RECORD_FILE)).ok()?;
            serde_json::from_slice(&bytes).ok()
        })
        .collect();
    out.sort_by(|a, b| (a.started_at, &a.task_id).cmp(&(b.started_at, &b.task_id)));
    out
}

/// Manifest digests of the images the tasks under `state_dir` use (running or kept
/// stopped): what image removal must leave alone.
pub fn images_in_use(state_dir: &Path) -> std::collections::HashSet<String> {
    list(state_dir)
        .into_iter()
        .flat_map(|t| t.containers.into_iter().map(|c| c.image_digest))
        .filter(|d| !d.is_empty())
        .collect()
}
