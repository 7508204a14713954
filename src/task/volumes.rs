//! A task's volumes on the host, and what each container mounts of them.
//!
//! - `host.sourcePath`: that host directory, created when missing (the ECS agent hands it to
//!   Docker as a bind, and Docker creates a missing bind source).
//! - no `host` and no configuration, or `dockerVolumeConfiguration` with scope `task`: an
//!   empty directory under the task directory (`TASK/volumes/<name>`), removed with the task.
//! - `dockerVolumeConfiguration` with scope `shared`: `STATE/volumes/<name>/_data`, kept
//!   after the task; created when absent only with `autoprovision`.
//!
//! New volumes start empty: unlike Docker, skiff does not copy the image's files at the mount
//! point into a new volume (copy-up); the volume hides them, as a bind mount does.
//!
//! The mounts themselves are bind mounts made by the runtime inside the container's mount
//! namespace, each target resolved within the container's root.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::taskdef::{TaskDefinition, VolumeKind, VolumeScope};

/// Under the state directory: the shared volumes, one directory each.
pub const SHARED_DIR: &str = "volumes";
/// Under a task directory: its task-scoped volumes.
pub const TASK_DIR: &str = "volumes";
/// A shared volume's data, inside its directory (Docker's layout).
const DATA_DIR: &str = "_data";
/// A shared volume's description, inside its directory.
const META_FILE: &str = "volume.json";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?}: the shared volume does not exist and autoprovision is false (run a task that creates it with autoprovision: true)")]
    Missing(String),
    #[error("volume {name:?}: {what}: {source}")]
    Io {
        name: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {0:?}: no such shared volume")]
    NotFound(String),
    #[error("volume {name:?}: in use by running task {task}")]
    InUse { name: String, task: String },
}

/// What kind of storage a mount comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `host.sourcePath`.
    Host,
    /// Lives and dies with the task.
    Task,
    /// A shared named volume under the state directory.
    Shared,
}

/// One volume mounted into one container, as `skiff inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub volume: String,
    pub kind: Kind,
    /// The host directory (or file) bound.
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// A task volume's host directory.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kind: Kind,
    pub source: PathBuf,
}

/// Whether the task uses a shared volume (whose existence `skiff volume rm` may change).
pub fn uses_shared(td: &TaskDefinition) -> bool {
    td.volumes
        .iter()
        .any(|v| matches!(&v.kind, VolumeKind::Docker(d) if d.scope == VolumeScope::Shared))
}

/// Makes (or finds) the host directory of every volume of the task.
pub fn prepare(
    td: &TaskDefinition,
    task_dir: &Path,
    state_dir: &Path,
) -> Result<HashMap<String, Prepared>, VolumeError> {
    let mut out = HashMap::new();
    for v in &td.volumes {
        let io = |what: String| {
            let name = v.name.clone();
            move |source| VolumeError::Io { name, what, source }
        };
        let p = match &v.kind {
            VolumeKind::Host { source_path } => {
                let src = PathBuf::from(source_path);
                if std::fs::metadata(&src).is_err() {
                    std::fs::create_dir_all(&src)
                        .map_err(io(format!("create host directory {source_path}")))?;
                }
                Prepared {
                    kind: Kind::Host,
                    source: src,
                }
            }
            VolumeKind::Task
            | VolumeKind::Docker(crate::taskdef::DockerVolumeConfiguration {
                scope: VolumeScope::Task,
                ..
            }) => {
                let d = task_dir.join(TASK_DIR).join(&v.name);
                std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
                Prepared {
                    kind: Kind::Task,
                    source: d,
                }
            }
            VolumeKind::Docker(c) => Prepared {
                kind: Kind::Shared,
                source: shared(state_dir, &v.name, c.autoprovision, &c.driver, &c.labels)?,
            },
        };
        out.insert(v.name.clone(), p);
    }
    Ok(out)
}

/// What `skiff volume ls` shows of a shared volume (and its `volume.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedVolume {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Its data directory (not stored: derived from where it lies).
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

/// The data directory of shared volume `name`, provisioned when absent if `autoprovision`.
/// Made under a temporary name and renamed into place, so that two tasks provisioning the
/// same volume at once end up with one.
fn shared(
    state_dir: &Path,
    name: &str,
    autoprovision: bool,
    driver: &str,
    labels: &BTreeMap<String, String>,
) -> Result<PathBuf, VolumeError> {
    let root = state_dir.join(SHARED_DIR);
    let dir = root.join(name);
    if dir.join(DATA_DIR).is_dir() {
        return Ok(dir.join(DATA_DIR));
    }
    if !autoprovision {
        return Err(VolumeError::Missing(name.to_string()));
    }
    let io = |what: String| {
        let name = name.to_string();
        move |source| VolumeError::Io { name, what, source }
    };
    let tmp = root.join(format!(".new-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join(DATA_DIR)).map_err(io(format!("create {}", tmp.display())))?;
    let meta = SharedVolume {
        name: name.to_string(),
        driver: driver.to_string(),
        labels: labels.clone(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        mountpoint: PathBuf::new(),
    };
    std::fs::write(
        tmp.join(META_FILE),
        serde_json::to_vec_pretty(&meta).expect("volume serializes"),
    )
    .map_err(io(format!("write {}", tmp.join(META_FILE).display())))?;
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another task made it first: use that one.
        if !dir.join(DATA_DIR).is_dir() {
            return Err(io(format!("create {}", dir.display()))(e));
        }
    }
    Ok(dir.join(DATA_DIR))
}

/// The mounts of container `i`: its own `mountPoints`, then those of the containers named in
/// its `volumesFrom` (theirs in turn included), where its own are not already mounted. A
/// volume from `volumesFrom` with `readOnly` is read-only; without, it keeps its source's mode
/// (Docker's `--volumes-from`). Parents are mounted before what lies beneath them.
pub fn container_mounts(
    td: &TaskDefinition,
    i: usize,
    prepared: &HashMap<String, Prepared>,
) -> Vec<VolumeMount> {
    let mut out = Vec::new();
    collect(td, i, false, prepared, &mut Vec::new(), &mut out);
    out.sort_by_key(|m| depth(&m.destination));
    out
}

fn collect(
    td: &TaskDefinition,
    i: usize,
    force_ro: bool,
    prepared: &HashMap<String, Prepared>,
    seen: &mut Vec<usize>,
    out: &mut Vec<VolumeMount>,
) {
    // Validation refuses volumesFrom cycles; this only keeps the walk finite.
    if seen.contains(&i) {
        return;
    }
    seen.push(i);
    let c = &td.containers[i];
    for m in &c.mount_points {
        if out
            .iter()
            .any(|o: &VolumeMount| same(&o.destination, &m.container_path))
        {
            continue;
        }
        // Validation guarantees every mount point names a volume of the task.
        let Some(p) = prepared.get(&m.source_volume) else {
            continue;
        };
        out.push(VolumeMount {
            volume: m.source_volume.clone(),
            kind: p.kind,
            source: p.source.clone(),
            destination: m.container_path.clone(),
            read_only: m.read_only || force_ro,
        });
    }
    for vf in &c.volumes_from {
        if let Some(k) = td
            .containers
            .iter()
            .position(|o| o.name == vf.source_container)
        {
            collect(td, k, force_ro || vf.read_only, prepared, seen, out);
        }
    }
    seen.pop();
}

/// `/data` and `/data/` name one place.
fn same(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn depth(p: &str) -> usize {
    Path::new(p)
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count()
}

/// The shared volumes of the state directory, by name.
pub fn list_shared(state_dir: &Path) -> Vec<SharedVolume> {
    let mut out: Vec<SharedVolume> = std::fs::read_dir(state_dir.join(SHARED_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let dir = e.path();
            let bytes = std::fs::read(dir.join(META_FILE)).ok()?;
            let mut v: SharedVolume = serde_json::from_slice(&bytes).ok()?;
            v.mountpoint = dir.join(DATA_DIR);
            Some(v)
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Removes shared volume `name` and its data, unless a task that has not stopped mounts it.
pub fn remove_shared(state_dir: &Path, name: &str) -> Result<(), VolumeError> {
    let dir = state_dir.join(SHARED_DIR).join(name);
    if name.starts_with('.') || name.contains('/') || !dir.join(META_FILE).is_file() {
        return Err(VolumeError::NotFound(name.to_string()));
    }
    let io = |what: String| {
        let name = name.to_string();
        move |source| VolumeError::Io { name, what, source }
    };
    // Held while deciding and removing: a task being created takes it before it looks for
    // its shared volumes and keeps it until its record (naming them) is written.
    let _lock = super::store::lock(state_dir).map_err(io("lock the tasks".into()))?;
    for t in super::store::list(state_dir) {
        if t.status() == crate::runtime::proto::Status::Stopped {
            continue;
        }
        let uses = t.record.iter().flat_map(|r| &r.containers).any(|c| {
            c.mounts
                .iter()
                .any(|m| m.kind == Kind::Shared && m.volume == name)
        });
        if uses {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                task: t.id,
            });
        }
    }
    std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskdef::parse_task_definition;

    fn td(json: &str) -> TaskDefinition {
        parse_task_definition(json.as_bytes(), None).unwrap()
    }

    fn prep(names: &[&str]) -> HashMap<String, Prepared> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Prepared {
                        kind: Kind::Task,
                        source: PathBuf::from(format!("/t/{n}")),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn volumes_from_is_transitive_own_mounts_win_and_read_only_sticks() {
        let t = td(
            r#"{"family":"f","volumes":[{"name":"a"},{"name":"b"},{"name":"c"}],
            "containerDefinitions":[
              {"name":"x","image":"i","memory":8,"mountPoints":[{"sourceVolume":"a","containerPath":"/a/sub"},
                 {"sourceVolume":"b","containerPath":"/b","readOnly":true}]},
              {"name":"y","image":"i","memory":8,"volumesFrom":[{"sourceContainer":"x","readOnly":true}],
                 "mountPoints":[{"sourceVolume":"c","containerPath":"/a"}]},
              {"name":"z","image":"i","memory":8,"volumesFrom":[{"sourceContainer":"y"}],
                 "mountPoints":[{"sourceVolume":"c","containerPath":"/b/"}]}]}"#,
        );
        let p = prep(&["a", "b", "c"]);
        let show = |i| {
            container_mounts(&t, i, &p)
                .into_iter()
                .map(|m| (m.volume, m.destination, m.read_only))
                .collect::<Vec<_>>()
        };
        let s = |v: &str, d: &str, ro| (v.to_string(), d.to_string(), ro);
        assert_eq!(show(0), vec![s("b", "/b", true), s("a", "/a/sub", false)]);
        assert_eq!(
            show(1),
            vec![
                s("c", "/a", false),
                s("b", "/b", true),
                s("a", "/a/sub", true)
            ]
        );
        assert_eq!(
            show(2),
            vec![
                s("c", "/b/", false),
                s("c", "/a", false),
                s("a", "/a/sub", true)
            ]
        );
    }

    #[test]
    fn shared_volumes_are_provisioned_once_and_missing_ones_refused() {
        let state = std::env::temp_dir().join(format!("skiff-vol-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let labels: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        let e = shared(&state, "data", false, "local", &labels).unwrap_err();
        assert!(
            matches!(e, VolumeError::Missing(ref n) if n == "data"),
            "{e}"
        );
        let d = shared(&state, "data", true, "local", &labels).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        assert_eq!(shared(&state, "data", false, "local", &labels).unwrap(), d);
        assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "x");
        let l = list_shared(&state);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].name.as_str(), &l[0].labels), ("data", &labels));
        assert_eq!(l[0].mountpoint, d);
        remove_shared(&state, "data").unwrap();
        assert!(list_shared(&state).is_empty());
        assert!(matches!(
            remove_shared(&state, "data"),
            Err(VolumeError::NotFound(_))
        ));
        std::fs::remove_dir_all(&state).unwrap();
    }
}
