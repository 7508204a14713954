//! The task's `volumes` and each container's `mountPoints` and `volumesFrom`, with ECS's
//! rules. Every problem is reported with its field path, as in [`super::parse`].

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::lifecycle::{objects, string_field};
use super::linux::get_bool;
use super::parse::{is_empty_value, object, opt_value, valid_name, Errors};
use super::{
    ContainerDefinition, DockerVolumeConfiguration, MountPoint, Volume, VolumeFrom, VolumeKind,
    VolumeScope,
};

/// Container keys handled here.
pub(super) const CONTAINER_KEYS: &[&str] = &["mountPoints", "volumesFrom"];

/// Volume types that need AWS storage services (or Windows) an edge host does not have.
const UNSUPPORTED_VOLUME_KEYS: &[(&str, &str)] = &[
    ("efsVolumeConfiguration", "EFS volumes"),
    (
        "fsxWindowsFileServerVolumeConfiguration",
        "FSx for Windows File Server volumes",
    ),
    ("configuredAtLaunch", "EBS volumes configured at launch"),
];

/// `key` as an object of strings (`driverOpts`, `labels`, `dockerLabels`).
pub(super) fn string_map(
    o: &Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Errors,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match opt_value(o, key) {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if !k.is_empty() => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::String(_) => errs.push(&format!("{path}.{key}"), "has an empty key"),
                    _ => errs.push(&format!("{path}.{key}.{k}"), "must be a string"),
                }
            }
        }
        Some(_) => errs.push(
            &format!("{path}.{key}"),
            "must be an object of string values",
        ),
    }
    out
}

/// The task's `volumes`.
pub(super) fn parse_volumes(obj: &Map<String, Value>, errs: &mut Errors) -> Vec<Volume> {
    let allowed: Vec<&str> = ["name", "host", "dockerVolumeConfiguration"]
        .into_iter()
        .chain(UNSUPPORTED_VOLUME_KEYS.iter().map(|(k, _)| *k))
        .collect();
    let mut out: Vec<Volume> = Vec::new();
    for (p, o) in objects(obj, "volumes", "", &allowed, errs) {
        for (key, what) in UNSUPPORTED_VOLUME_KEYS {
            if o.get(*key).is_some_and(|v| !is_empty_value(v)) {
                errs.push(
                    &format!("{p}.{key}"),
                    format!("{what} are not supported by skiff"),
                );
            }
        }
        let name = match string_field(o, "name", &p, errs) {
            Some(n) if valid_name(&n) => n,
            Some(n) => {
                errs.push(
                    &format!("{p}.name"),
                    format!("{n:?} is not valid (1-255 letters, digits, '_' or '-')"),
                );
                continue;
            }
            None => continue,
        };
        if out.iter().any(|v| v.name == name) {
            errs.push(
                &format!("{p}.name"),
                format!("duplicate volume name {name:?}"),
            );
        }
        let host = opt_value(o, "host");
        let docker = opt_value(o, "dockerVolumeConfiguration");
        let kind = match (host, docker) {
            (Some(_), Some(_)) => {
                errs.push(&p, "give host or dockerVolumeConfiguration, not both");
                continue;
            }
            (Some(h), None) => match parse_host(h, &format!("{p}.host"), errs) {
                Some(k) => k,
                None => continue,
            },
            (None, Some(d)) => {
                match parse_docker(d, &format!("{p}.dockerVolumeConfiguration"), errs) {
                    Some(c) => VolumeKind::Docker(c),
                    None => continue,
                }
            }
            (None, None) => VolumeKind::Task,
        };
        out.push(Volume { name, kind });
    }
    out
}

/// `host`: `sourcePath` names a host directory; without one the volume is the task's own.
fn parse_host(v: &Value, path: &str, errs: &mut Errors) -> Option<VolumeKind> {
    let h = object(v, &["sourcePath"], path, errs)?;
    match opt_value(h, "sourcePath") {
        None => Some(VolumeKind::Task),
        Some(Value::String(s)) if s.is_empty() => Some(VolumeKind::Task),
        Some(Value::String(s)) if s.starts_with('/') && !s.contains('\0') => {
            Some(VolumeKind::Host {
                source_path: s.clone(),
            })
        }
        Some(Value::String(s)) => {
            errs.push(
                &format!("{path}.sourcePath"),
                format!("{s:?} is not an absolute path"),
            );
            None
        }
        Some(_) => {
            errs.push(&format!("{path}.sourcePath"), "must be a string");
            None
        }
    }
}

fn parse_docker(v: &Value, path: &str, errs: &mut Errors) -> Option<DockerVolumeConfiguration> {
    let keys = ["scope", "autoprovision", "driver", "driverOpts", "labels"];
    let d = object(v, &keys, path, errs)?;
    let scope = match opt_value(d, "scope") {
        None => VolumeScope::Task,
        Some(Value::String(s)) if s == "task" => VolumeScope::Task,
        Some(Value::String(s)) if s == "shared" => VolumeScope::Shared,
        Some(_) => {
            errs.push(&format!("{path}.scope"), "must be \"task\" or \"shared\"");
            return None;
        }
    };
    let driver = match opt_value(d, "driver") {
        None => "local".to_string(),
        Some(Value::String(s)) if s == "local" => s.clone(),
        Some(Value::String(s)) => {
            errs.push(
                &format!("{path}.driver"),
                format!("{s:?} is not supported by skiff (volume plugins need Docker; only \"local\" is available)"),
            );
            return None;
        }
        Some(_) => {
            errs.push(&format!("{path}.driver"), "must be a string");
            return None;
        }
    };
    let driver_opts = string_map(d, "driverOpts", path, errs);
    if !driver_opts.is_empty() {
        // The local driver's options mount a device or a tmpfs as the volume; skiff's local
        // volumes are plain directories.
        errs.push(
            &format!("{path}.driverOpts"),
            "is not supported by skiff (local volumes are directories on the host)",
        );
        return None;
    }
    Some(DockerVolumeConfiguration {
        scope,
        autoprovision: get_bool(d, "autoprovision", path, errs),
        driver,
        labels: string_map(d, "labels", path, errs),
    })
}

/// Parses `mountPoints` and `volumesFrom` into `cd`.
pub(super) fn parse_container_volumes(
    obj: &Map<String, Value>,
    path: &str,
    cd: &mut ContainerDefinition,
    errs: &mut Errors,
) {
    let keys = ["sourceVolume", "containerPath", "readOnly"];
    for (p, o) in objects(obj, "mountPoints", path, &keys, errs) {
        let source_volume = string_field(o, "sourceVolume", &p, errs);
        let container_path = match string_field(o, "containerPath", &p, errs) {
            Some(c) if c.starts_with('/') && !c.contains('\0') => {
                if cd
                    .mount_points
                    .iter()
                    .any(|m| same_path(&m.container_path, &c))
                {
                    errs.push(
                        &format!("{p}.containerPath"),
                        format!("{c:?} is already a mount point of this container"),
                    );
                }
                Some(c)
            }
            Some(c) => {
                errs.push(
                    &format!("{p}.containerPath"),
                    format!("{c:?} is not an absolute path"),
                );
                None
            }
            None => None,
        };
        let read_only = get_bool(o, "readOnly", &p, errs);
        if let (Some(source_volume), Some(container_path)) = (source_volume, container_path) {
            cd.mount_points.push(MountPoint {
                source_volume,
                container_path,
                read_only,
            });
        }
    }
    let keys = ["sourceContainer", "readOnly"];
    for (p, o) in objects(obj, "volumesFrom", path, &keys, errs) {
        let source = string_field(o, "sourceContainer", &p, errs);
        let read_only = get_bool(o, "readOnly", &p, errs);
        if let Some(source_container) = source {
            cd.volumes_from.push(VolumeFrom {
                source_container,
                read_only,
            });
        }
    }
}

/// `/data` and `/data/` are one mount point.
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Task-wide rules: mount points name volumes of the task, `volumesFrom` names another
/// container of the task.
pub(super) fn check_task(
    volumes: &[Volume],
    containers: &[ContainerDefinition],
    errs: &mut Errors,
) {
    let names: HashSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    for (i, c) in containers.iter().enumerate() {
        for (k, m) in c.mount_points.iter().enumerate() {
            if !names.contains(m.source_volume.as_str()) {
                errs.push(
                    &format!("containerDefinitions[{i}].mountPoints[{k}].sourceVolume"),
                    format!("{:?} is not a volume of this task", m.source_volume),
                );
            }
        }
        for (k, v) in c.volumes_from.iter().enumerate() {
            if v.source_container == c.name
                || !containers.iter().any(|o| o.name == v.source_container)
            {
                errs.push(
                    &format!("containerDefinitions[{i}].volumesFrom[{k}].sourceContainer"),
                    format!(
                        "{:?} is not another container of this task",
                        v.source_container
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::testing::{assert_errors, parse, task};
    use super::*;

    #[test]
    fn every_kind_of_volume() {
        let td = parse(&task(
            r#""volumes":[{"name":"hostdir","host":{"sourcePath":"/srv/data"}},
                {"name":"scratch"},{"name":"anon","host":{}},
                {"name":"named","dockerVolumeConfiguration":{"scope":"shared","autoprovision":true,
                 "driver":"local","labels":{"a":"b"}}},
                {"name":"plain","dockerVolumeConfiguration":{}}],"#,
            &[
                r#""name":"a","mountPoints":[{"sourceVolume":"hostdir","containerPath":"/data","readOnly":true},
                   {"sourceVolume":"scratch","containerPath":"/scratch"}]"#,
                r#""name":"b","volumesFrom":[{"sourceContainer":"a","readOnly":true}]"#,
            ],
        ));
        let kinds: Vec<&VolumeKind> = td.volumes.iter().map(|v| &v.kind).collect();
        assert_eq!(
            kinds,
            vec![
                &VolumeKind::Host {
                    source_path: "/srv/data".into()
                },
                &VolumeKind::Task,
                &VolumeKind::Task,
                &VolumeKind::Docker(DockerVolumeConfiguration {
                    scope: VolumeScope::Shared,
                    autoprovision: true,
                    driver: "local".into(),
                    labels: [("a".to_string(), "b".to_string())].into(),
                }),
                &VolumeKind::Docker(DockerVolumeConfiguration {
                    driver: "local".into(),
                    ..Default::default()
                }),
            ]
        );
        assert_eq!(
            td.containers[0].mount_points,
            vec![
                MountPoint {
                    source_volume: "hostdir".into(),
                    container_path: "/data".into(),
                    read_only: true
                },
                MountPoint {
                    source_volume: "scratch".into(),
                    container_path: "/scratch".into(),
                    read_only: false
                },
            ]
        );
        assert_eq!(
            td.containers[1].volumes_from,
            vec![VolumeFrom {
                source_container: "a".into(),
                read_only: true
            }]
        );
    }

    #[test]
    fn volume_errors() {
        assert_errors(
            &task(
                r#""volumes":[{"name":"v"},{"name":"v"},{"name":"bad name"},{"host":{}},
                    {"name":"both","host":{"sourcePath":"/x"},"dockerVolumeConfiguration":{}},
                    {"name":"rel","host":{"sourcePath":"data"}},
                    {"name":"plugin","dockerVolumeConfiguration":{"driver":"rexray/ebs","scope":"task"}},
                    {"name":"scope","dockerVolumeConfiguration":{"scope":"global"}},
                    {"name":"efs","efsVolumeConfiguration":{"fileSystemId":"fs-1"}},
                    {"name":"fsx","fsxWindowsFileServerVolumeConfiguration":{"fileSystemId":"fs-2"}},
                    {"name":"ebs","configuredAtLaunch":true},
                    {"name":"opts","dockerVolumeConfiguration":{"driverOpts":{"o":1},"labels":[]}},
                    {"name":"tmpfs","dockerVolumeConfiguration":{"driverOpts":{"type":"tmpfs"}}}],"#,
                &[r#""name":"a""#],
            ),
            &[
                "volumes[1].name: duplicate volume name \"v\"",
                "volumes[2].name: \"bad name\" is not valid (1-255 letters, digits, '_' or '-')",
                "volumes[3].name: is required",
                "volumes[4]: give host or dockerVolumeConfiguration, not both",
                "volumes[5].host.sourcePath: \"data\" is not an absolute path",
                "volumes[6].dockerVolumeConfiguration.driver: \"rexray/ebs\" is not supported by skiff (volume plugins need Docker; only \"local\" is available)",
                "volumes[7].dockerVolumeConfiguration.scope: must be \"task\" or \"shared\"",
                "volumes[8].efsVolumeConfiguration: EFS volumes are not supported by skiff",
                "volumes[9].fsxWindowsFileServerVolumeConfiguration: FSx for Windows File Server volumes are not supported by skiff",
                "volumes[10].configuredAtLaunch: EBS volumes configured at launch are not supported by skiff",
                "volumes[11].dockerVolumeConfiguration.driverOpts.o: must be a string",
                "volumes[11].dockerVolumeConfiguration.labels: must be an object of string values",
                "volumes[12].dockerVolumeConfiguration.driverOpts: is not supported by skiff (local volumes are directories on the host)",
            ],
        );
        assert_errors(
            &task(r#""volumes":{"name":"v"},"#, &[r#""name":"a""#]),
            &["volumes: must be an array"],
        );
    }

    #[test]
    fn mount_point_and_volumes_from_errors() {
        let p = "containerDefinitions[0]";
        assert_errors(
            &task(
                r#""volumes":[{"name":"v"}],"#,
                &[
                    r#""name":"a","mountPoints":[{"sourceVolume":"w","containerPath":"/w"},
                       {"sourceVolume":"v","containerPath":"rel"},{"containerPath":"/x"},
                       {"sourceVolume":"v","containerPath":"/v","readOnly":"yes"},
                       {"sourceVolume":"v","containerPath":"/v/"}],
                       "volumesFrom":[{"sourceContainer":"a"},{"sourceContainer":"zz"},{"readOnly":true}]"#,
                    r#""name":"b""#,
                ],
            ),
            &[
                &format!("{p}.mountPoints[0].sourceVolume: \"w\" is not a volume of this task"),
                &format!("{p}.mountPoints[1].containerPath: \"rel\" is not an absolute path"),
                &format!("{p}.mountPoints[2].sourceVolume: is required"),
                &format!("{p}.mountPoints[3].readOnly: must be true or false"),
                &format!("{p}.mountPoints[4].containerPath: \"/v/\" is already a mount point of this container"),
                &format!("{p}.volumesFrom[0].sourceContainer: \"a\" is not another container of this task"),
                &format!("{p}.volumesFrom[1].sourceContainer: \"zz\" is not another container of this task"),
                &format!("{p}.volumesFrom[2].sourceContainer: is required"),
            ],
        );
    }
}
