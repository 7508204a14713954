//! Task-level fields beyond the containers and their resources: `placementConstraints`,
//! `requiresCompatibilities`, `runtimePlatform`, `ephemeralStorage`, the IAM roles, `tags`,
//! and those an edge host can never honour (App Mesh proxies, inference accelerators, fault
//! injection), which are refused with "not supported".

use serde_json::{Map, Value};

use super::lifecycle::{objects, string_field};
use super::parse::{is_empty_value, object, opt_value, Errors};
use super::{NetworkMode, PlacementConstraint, RuntimePlatform};

/// Task keys handled here.
pub(super) const TASK_KEYS: &[&str] = &[
    "placementConstraints",
    "requiresCompatibilities",
    "runtimePlatform",
    "ephemeralStorage",
    "taskRoleArn",
    "executionRoleArn",
    "tags",
    "proxyConfiguration",
    "inferenceAccelerators",
    "enableFaultInjection",
];

const COMPATIBILITIES: &[&str] = &["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"];
/// ECS's limits.
const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
const MAX_EXPRESSION_LEN: usize = 2000;
const MAX_TAGS: usize = 50;
const EPHEMERAL_STORAGE_GIB: (u64, u64) = (21, 200);

/// What this module parses, for [`super::TaskDefinition`].
#[derive(Default)]
pub(super) struct TaskMeta {
    pub(super) placement_constraints: Vec<PlacementConstraint>,
    pub(super) requires_compatibilities: Vec<String>,
    pub(super) runtime_platform: Option<RuntimePlatform>,
    pub(super) ephemeral_storage_gib: Option<u64>,
    pub(super) task_role_arn: Option<String>,
    pub(super) execution_role_arn: Option<String>,
    pub(super) tags: Vec<(String, String)>,
}

pub(super) fn parse_task_meta(obj: &Map<String, Value>, errs: &mut Errors) -> TaskMeta {
    let mut meta = TaskMeta::default();
    let constraints = objects(
        obj,
        "placementConstraints",
        "",
        &["type", "expression"],
        errs,
    );
    if constraints.len() > MAX_PLACEMENT_CONSTRAINTS {
        errs.push(
            "placementConstraints",
            format!(
                "holds {}; at most {MAX_PLACEMENT_CONSTRAINTS} are allowed",
                constraints.len()
            ),
        );
    }
    for (p, o) in constraints {
        let kind = string_field(o, "type", &p, errs);
        if kind.as_deref().is_some_and(|k| k != "memberOf") {
            errs.push(
                &format!("{p}.type"),
                "must be memberOf (distinctInstance is for services and RunTask, not task definitions)",
            );
            continue;
        }
        let expression = string_field(o, "expression", &p, errs);
        if let Some(e) = expression.as_ref().filter(|e| e.len() > MAX_EXPRESSION_LEN) {
            errs.push(
                &format!("{p}.expression"),
                format!("is {} characters; at most {MAX_EXPRESSION_LEN}", e.len()),
            );
        }
        if let (Some(kind), Some(expression)) = (kind, expression) {
            meta.placement_constraints
                .push(PlacementConstraint { kind, expression });
        }
    }

    match opt_value(obj, "requiresCompatibilities") {
        None => {}
        Some(Value::Array(list)) => {
            for (k, c) in list.iter().enumerate() {
                match c.as_str() {
                    Some(s) if COMPATIBILITIES.contains(&s) => {
                        meta.requires_compatibilities.push(s.to_string())
                    }
                    _ => errs.push(
                        &format!("requiresCompatibilities[{k}]"),
                        format!("{c} is not one of {}", COMPATIBILITIES.join(", ")),
                    ),
                }
            }
        }
        Some(_) => errs.push("requiresCompatibilities", "must be an array of strings"),
    }

    if let Some(rp) = opt_value(obj, "runtimePlatform") {
        meta.runtime_platform = parse_runtime_platform(rp, errs);
    }

    if let Some(v) = opt_value(obj, "ephemeralStorage") {
        let (lo, hi) = EPHEMERAL_STORAGE_GIB;
        if let Some(o) = object(v, &["sizeInGiB"], "ephemeralStorage", errs) {
            match opt_value(o, "sizeInGiB") {
                None => errs.push("ephemeralStorage.sizeInGiB", "is required"),
                Some(s) => match s.as_u64().filter(|n| (lo..=hi).contains(n)) {
                    Some(n) => meta.ephemeral_storage_gib = Some(n),
                    None => errs.push(
                        "ephemeralStorage.sizeInGiB",
                        format!("must be a whole number from {lo} to {hi}, got {s}"),
                    ),
                },
            }
        }
    }

    for (key, field) in [
        ("taskRoleArn", &mut meta.task_role_arn),
        ("executionRoleArn", &mut meta.execution_role_arn),
    ] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => *field = Some(s.clone()),
            Some(_) => errs.push(key, "must be a string (a role name or ARN)"),
        }
    }

    let tags = objects(obj, "tags", "", &["key", "value"], errs);
    if tags.len() > MAX_TAGS {
        errs.push(
            "tags",
            format!("holds {} tags; at most {MAX_TAGS} are allowed", tags.len()),
        );
    }
    for (p, o) in tags {
        let key = string_field(o, "key", &p, errs);
        let value = match opt_value(o, "value") {
            None => Some(String::new()),
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errs.push(&format!("{p}.value"), "must be a string");
                None
            }
        };
        let (Some(key), Some(value)) = (key, value) else {
            continue;
        };
        if key.chars().count() > 128 {
            errs.push(&format!("{p}.key"), "is longer than 128 characters");
        } else if key.to_ascii_lowercase().starts_with("aws:") {
            errs.push(&format!("{p}.key"), "the aws: prefix is reserved for AWS");
        } else if meta.tags.iter().any(|(k, _)| *k == key) {
            errs.push(&format!("{p}.key"), format!("duplicate tag key {key:?}"));
        }
        if value.chars().count() > 256 {
            errs.push(&format!("{p}.value"), "is longer than 256 characters");
        }
        meta.tags.push((key, value));
    }

    for (key, what) in [
        ("proxyConfiguration", "App Mesh proxy configuration is"),
        (
            "inferenceAccelerators",
            "Elastic Inference accelerators are",
        ),
        ("enableFaultInjection", "fault injection is"),
    ] {
        if obj.get(key).is_some_and(|v| !is_empty_value(v)) {
            errs.push(key, format!("{what} not supported by skiff"));
        }
    }
    meta
}

/// ECS's name of the architecture skiff runs on.
pub fn host_cpu_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "ARM64",
        "x86_64" => "X86_64",
        other => other,
    }
}

/// `runtimePlatform.cpuArchitecture` naming another architecture than this host's.
pub fn platform_mismatch(td: &super::TaskDefinition) -> Option<String> {
    let want = td.runtime_platform.as_ref()?.cpu_architecture.as_deref()?;
    let host = host_cpu_architecture();
    (want != host)
        .then(|| format!("runtimePlatform.cpuArchitecture: {want} cannot run on this {host} host"))
}

fn parse_runtime_platform(v: &Value, errs: &mut Errors) -> Option<RuntimePlatform> {
    let keys = ["cpuArchitecture", "operatingSystemFamily"];
    let o = object(v, &keys, "runtimePlatform", errs)?;
    let mut rp = RuntimePlatform::default();
    match opt_value(o, "cpuArchitecture") {
        None => {}
        // Whether this host can run it is a question for the host that runs the task (`skiff
        // run`) or the server placing it, not for the definition: a server on x86_64 keeps
        // ARM64 definitions for its arm64 agents.
        Some(Value::String(a)) => {
            if a != "X86_64" && a != "ARM64" {
                errs.push(
                    "runtimePlatform.cpuArchitecture",
                    format!("{a:?} is not X86_64 or ARM64"),
                );
            }
            rp.cpu_architecture = Some(a.clone());
        }
        Some(_) => errs.push("runtimePlatform.cpuArchitecture", "must be a string"),
    }
    match opt_value(o, "operatingSystemFamily") {
        None => {}
        Some(Value::String(f)) if f == "LINUX" => rp.operating_system_family = Some(f.clone()),
        Some(Value::String(f)) if f.starts_with("WINDOWS_SERVER_") => errs.push(
            "runtimePlatform.operatingSystemFamily",
            format!("{f}: Windows containers are not supported by skiff"),
        ),
        Some(Value::String(f)) => errs.push(
            "runtimePlatform.operatingSystemFamily",
            format!("{f:?} is not LINUX or a WINDOWS_SERVER_* family"),
        ),
        Some(_) => errs.push("runtimePlatform.operatingSystemFamily", "must be a string"),
    }
    Some(rp)
}

/// Fargate's rules, for a definition that asks to be Fargate-compatible: awsvpc, and a task
/// size.
pub(super) fn check_task(
    meta: &TaskMeta,
    network_mode: NetworkMode,
    cpu: Option<u64>,
    memory: Option<u64>,
    errs: &mut Errors,
) {
    if !meta.requires_compatibilities.iter().any(|c| c == "FARGATE") {
        return;
    }
    if network_mode != NetworkMode::Awsvpc {
        errs.push(
            "networkMode",
            format!(
                "must be awsvpc for requiresCompatibilities FARGATE, not {}",
                network_mode.as_str()
            ),
        );
    }
    if cpu.is_none() {
        errs.push("cpu", "is required for requiresCompatibilities FARGATE");
    }
    if memory.is_none() {
        errs.push("memory", "is required for requiresCompatibilities FARGATE");
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::testing::{assert_errors, parse, task};
    use super::*;

    fn host_arch() -> &'static str {
        if cfg!(target_arch = "aarch64") {
            "ARM64"
        } else {
            "X86_64"
        }
    }

    #[test]
    fn another_architecture_parses_and_only_running_it_here_is_refused() {
        let other = if host_arch() == "ARM64" {
            "X86_64"
        } else {
            "ARM64"
        };
        let td = parse(&task(
            &format!(r#""runtimePlatform":{{"cpuArchitecture":"{other}"}},"#),
            &[r#""name":"a""#],
        ));
        let m = platform_mismatch(&td).unwrap();
        assert!(m.starts_with("runtimePlatform.cpuArchitecture: "), "{m}");
        assert!(
            m.contains(other) && m.contains(host_cpu_architecture()),
            "{m}"
        );
        let here = parse(&task(
            &format!(
                r#""runtimePlatform":{{"cpuArchitecture":"{}"}},"#,
                host_arch()
            ),
            &[r#""name":"a""#],
        ));
        assert_eq!(platform_mismatch(&here), None);
    }

    #[test]
    fn accepted_into_the_model() {
        let td = parse(&task(
            &format!(
                r#""placementConstraints":[{{"type":"memberOf","expression":"attribute:ecs.os-type == linux"}}],
                "requiresCompatibilities":["EC2","EXTERNAL"],
                "runtimePlatform":{{"cpuArchitecture":"{}","operatingSystemFamily":"LINUX"}},
                "ephemeralStorage":{{"sizeInGiB":21}},"taskRoleArn":"arn:aws:iam::1:role/app",
                "executionRoleArn":"ecsTaskExecutionRole","tags":[{{"key":"env","value":"prod"}},{{"key":"empty"}}],"#,
                host_arch()
            ),
            &[r#""name":"a""#],
        ));
        assert_eq!(
            td.placement_constraints,
            vec![PlacementConstraint {
                kind: "memberOf".into(),
                expression: "attribute:ecs.os-type == linux".into()
            }]
        );
        assert_eq!(td.requires_compatibilities, vec!["EC2", "EXTERNAL"]);
        assert_eq!(
            td.runtime_platform,
            Some(RuntimePlatform {
                cpu_architecture: Some(host_arch().into()),
                operating_system_family: Some("LINUX".into())
            })
        );
        assert_eq!(td.ephemeral_storage_gib, Some(21));
        assert_eq!(td.task_role_arn.as_deref(), Some("arn:aws:iam::1:role/app"));
        assert_eq!(
            td.execution_role_arn.as_deref(),
            Some("ecsTaskExecutionRole")
        );
        assert_eq!(
            td.tags,
            vec![
                ("env".into(), "prod".into()),
                ("empty".into(), String::new())
            ]
        );
        // The skeleton of `--generate-cli-skeleton` leaves empty strings.
        let td = parse(&task(
            r#""taskRoleArn":"","executionRoleArn":"","#,
            &[r#""name":"a""#],
        ));
        assert_eq!((td.task_role_arn, td.execution_role_arn), (None, None));
    }

    #[test]
    fn task_level_errors() {
        let many: Vec<String> = (0..11)
            .map(|_| r#"{"type":"memberOf","expression":"x"}"#.to_string())
            .collect();
        assert_errors(
            &task(
                &format!(
                    r#""placementConstraints":[{}],"requiresCompatibilities":["EC2","LAMBDA"],
                    "ephemeralStorage":{{"sizeInGiB":20}},"taskRoleArn":1,
                    "tags":[{{"key":"aws:owner","value":"x"}},{{"key":"k"}},{{"key":"k"}},{{"value":"v"}}],"#,
                    many.join(",")
                ),
                &[r#""name":"a""#],
            ),
            &[
                "placementConstraints: holds 11; at most 10 are allowed",
                "requiresCompatibilities[1]: \"LAMBDA\" is not one of EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES",
                "ephemeralStorage.sizeInGiB: must be a whole number from 21 to 200, got 20",
                "taskRoleArn: must be a string (a role name or ARN)",
                "tags[0].key: the aws: prefix is reserved for AWS",
                "tags[2].key: duplicate tag key \"k\"",
                "tags[3].key: is required",
            ],
        );
        assert_errors(
            &task(
                r#""placementConstraints":[{"type":"distinctInstance"},{"type":"memberOf"}],
                   "runtimePlatform":{"cpuArchitecture":"RISCV","operatingSystemFamily":"WINDOWS_SERVER_2022_CORE","x":1},"#,
                &[r#""name":"a""#],
            ),
            &[
                "placementConstraints[0].type: must be memberOf (distinctInstance is for services and RunTask, not task definitions)",
                "placementConstraints[1].expression: is required",
                "runtimePlatform.x: unknown field",
                "runtimePlatform.cpuArchitecture: \"RISCV\" is not X86_64 or ARM64",
                "runtimePlatform.operatingSystemFamily: WINDOWS_SERVER_2022_CORE: Windows containers are not supported by skiff",
            ],
        );
    }

    #[test]
    fn never_supported_task_features() {
        assert_errors(
            &task(
                r#""proxyConfiguration":{"type":"APPMESH","containerName":"envoy"},
                   "inferenceAccelerators":[{"deviceName":"d1","deviceType":"eia2.medium"}],
                   "enableFaultInjection":true,"#,
                &[r#""name":"a""#],
            ),
            &[
                "proxyConfiguration: App Mesh proxy configuration is not supported by skiff",
                "inferenceAccelerators: Elastic Inference accelerators are not supported by skiff",
                "enableFaultInjection: fault injection is not supported by skiff",
            ],
        );
    }

    #[test]
    fn fargate_needs_awsvpc_and_a_task_size() {
        assert_errors(
            &task(
                r#""requiresCompatibilities":["FARGATE"],"#,
                &[r#""name":"a""#],
            ),
            &[
                "networkMode: must be awsvpc for requiresCompatibilities FARGATE, not bridge",
                "cpu: is required for requiresCompatibilities FARGATE",
                "memory: is required for requiresCompatibilities FARGATE",
            ],
        );
        parse(&task(
            r#""requiresCompatibilities":["FARGATE"],"networkMode":"awsvpc","cpu":"256","memory":"512","#,
            &[r#""name":"a""#],
        ));
    }
}
