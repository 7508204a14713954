//! JSON → [`TaskDefinition`], collecting every problem with its field path.

use serde_json::{Map, Value};

use super::linux::{self, TaskContext};
use super::units::{parse_cpu, parse_memory_mib};
use super::{lifecycle, network};
use super::{ContainerDefinition, NetworkMode, TaskDefError, TaskDefinition};

/// Read-only keys of `describe-task-definition` output and registration metadata: accepted,
/// and without effect on how a task runs.
const TASK_METADATA_KEYS: &[&str] = &[
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "requiresCompatibilities",
    "tags",
];

/// Task keys of the ECS API that skiff does not honour yet. They are rejected when they carry
/// a value rather than silently dropped; an empty value (null, false, [], {}, "") is accepted.
const TASK_PENDING_KEYS: &[&str] = &[
    "volumes",
    "placementConstraints",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "taskRoleArn",
    "executionRoleArn",
    "enableFaultInjection",
];

const CONTAINER_PENDING_KEYS: &[&str] = &[
    "mountPoints",
    "volumesFrom",
    "healthCheck",
    "dockerLabels",
    "logConfiguration",
    "resourceRequirements",
    "firelensConfiguration",
    "dockerSecurityOptions",
    "credentialSpecs",
    "versionConsistency",
];

const MAX_CONTAINERS: usize = 10;
/// ECS rejects container memory below 6 MiB.
const MIN_CONTAINER_MEMORY_MIB: u64 = 6;

pub(super) struct Errors(Vec<String>);

impl Errors {
    pub(super) fn push(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }
}

pub(super) fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses a task definition from JSON bytes. `family_hint` names the family when the input is
/// a bare `containerDefinitions` array (usually the file's stem).
pub fn parse_task_definition(
    bytes: &[u8],
    family_hint: Option<&str>,
) -> Result<TaskDefinition, TaskDefError> {
    let root: Value = serde_json::from_slice(bytes)
        .map_err(|e| TaskDefError::Json(format!("not valid JSON: {e}")))?;
    let mut errs = Errors(Vec::new());
    let td = match root {
        Value::Array(containers) => {
            let family = family_hint.unwrap_or_default().to_string();
            if !valid_name(&family) {
                errs.push(
                    "family",
                    format!("a bare containerDefinitions array needs a family; {family:?} is not a valid one (1-255 letters, digits, '_' or '-')"),
                );
            }
            let mut obj = Map::new();
            obj.insert("family".into(), Value::String(family));
            obj.insert("containerDefinitions".into(), Value::Array(containers));
            parse_task(&obj, &mut errs)
        }
        Value::Object(mut obj) => {
            // describe-task-definition output wraps the definition.
            if obj.len() == 1 && obj.contains_key("taskDefinition") {
                match obj.remove("taskDefinition") {
                    Some(Value::Object(inner)) => parse_task(&inner, &mut errs),
                    _ => {
                        errs.push("taskDefinition", "must be an object");
                        None
                    }
                }
            } else {
                parse_task(&obj, &mut errs)
            }
        }
        _ => {
            errs.push(
                "(root)",
                "must be a task definition object or a containerDefinitions array",
            );
            None
        }
    };
    match td {
        Some(td) if errs.0.is_empty() => Ok(td),
        _ => Err(TaskDefError::Invalid(errs.0)),
    }
}

fn parse_task(obj: &Map<String, Value>, errs: &mut Errors) -> Option<TaskDefinition> {
    for (key, value) in obj {
        match key.as_str() {
            "family"
            | "containerDefinitions"
            | "networkMode"
            | "cpu"
            | "memory"
            | "runtimePlatform"
            | "pidMode"
            | "ipcMode" => {}
            k if TASK_METADATA_KEYS.contains(&k) => {}
            k if TASK_PENDING_KEYS.contains(&k) => {
                if !is_empty_value(value) {
                    errs.push(k, "not supported by skiff yet");
                }
            }
            k => errs.push(k, "unknown field"),
        }
    }

    let family = match obj.get("family") {
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(Value::String(s)) => {
            errs.push(
                "family",
                format!("{s:?} is not valid (1-255 letters, digits, '_' or '-')"),
            );
            String::new()
        }
        Some(_) => {
            errs.push("family", "must be a string");
            String::new()
        }
        None => {
            errs.push("family", "is required");
            String::new()
        }
    };

    let network_mode = match obj.get("networkMode") {
        None | Some(Value::Null) => NetworkMode::Bridge,
        Some(Value::String(s)) => match s.as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            "bridge" => NetworkMode::Bridge,
            "awsvpc" => NetworkMode::Awsvpc,
            other => {
                errs.push(
                    "networkMode",
                    format!("{other:?} is not one of bridge, host, awsvpc, none"),
                );
                NetworkMode::Bridge
            }
        },
        Some(_) => {
            errs.push("networkMode", "must be a string");
            NetworkMode::Bridge
        }
    };

    let cpu =
        opt_value(obj, "cpu").and_then(|v| parse_cpu(v).map_err(|e| errs.push("cpu", e)).ok());
    let memory = opt_value(obj, "memory")
        .and_then(|v| parse_memory_mib(v).map_err(|e| errs.push("memory", e)).ok());

    if let Some(rp) = opt_value(obj, "runtimePlatform") {
        check_runtime_platform(rp, errs);
    }
    let pid_mode = linux::parse_pid_mode(obj, errs);
    let ipc_mode = linux::parse_ipc_mode(obj, errs);
    let ctx = TaskContext {
        network_mode,
        ipc_mode,
    };

    let mut containers = Vec::new();
    match obj.get("containerDefinitions") {
        Some(Value::Array(list)) => {
            if list.is_empty() {
                errs.push("containerDefinitions", "must hold at least one container");
            }
            if list.len() > MAX_CONTAINERS {
                errs.push(
                    "containerDefinitions",
                    format!(
                        "holds {} containers; at most {MAX_CONTAINERS} are allowed",
                        list.len()
                    ),
                );
            }
            for (i, c) in list.iter().enumerate() {
                let path = format!("containerDefinitions[{i}]");
                if let Some(cd) = parse_container(c, &path, memory.is_some(), ctx, errs) {
                    containers.push(cd);
                }
            }
        }
        Some(_) => errs.push("containerDefinitions", "must be an array"),
        None => errs.push("containerDefinitions", "is required"),
    }

    // Cross-container rules.
    let mut seen = std::collections::HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        if !c.name.is_empty() && !seen.insert(c.name.clone()) {
            errs.push(
                &format!("containerDefinitions[{i}].name"),
                format!("duplicate container name {:?}", c.name),
            );
        }
        if let (Some(task_mem), Some(mem)) = (memory, c.memory) {
            if mem > task_mem {
                errs.push(
                    &format!("containerDefinitions[{i}].memory"),
                    format!("{mem} MiB is more than the task's memory ({task_mem} MiB)"),
                );
            }
        }
    }
    network::check_task(&containers, errs);
    lifecycle::check_task(&containers, errs);
    if !containers.is_empty() && !containers.iter().any(|c| c.essential) {
        errs.push(
            "containerDefinitions",
            "at least one container must be essential",
        );
    }

    Some(TaskDefinition {
        family,
        network_mode,
        cpu,
        memory,
        containers,
        pid_mode,
        ipc_mode,
    })
}

fn check_runtime_platform(v: &Value, errs: &mut Errors) {
    let Value::Object(o) = v else {
        errs.push("runtimePlatform", "must be an object");
        return;
    };
    for (k, val) in o {
        match (k.as_str(), val) {
            ("cpuArchitecture", Value::String(a)) => {
                let host = match std::env::consts::ARCH {
                    "x86_64" => "X86_64",
                    "aarch64" => "ARM64",
                    other => other,
                };
                if a != "X86_64" && a != "ARM64" {
                    errs.push(
                        "runtimePlatform.cpuArchitecture",
                        format!("{a:?} is not X86_64 or ARM64"),
                    );
                } else if a != host {
                    errs.push(
                        "runtimePlatform.cpuArchitecture",
                        format!("{a} cannot run on this {host} host"),
                    );
                }
            }
            ("operatingSystemFamily", Value::String(f)) => {
                if f != "LINUX" {
                    errs.push(
                        "runtimePlatform.operatingSystemFamily",
                        format!("{f} cannot run on a Linux host"),
                    );
                }
            }
            (k @ ("cpuArchitecture" | "operatingSystemFamily"), _) => {
                errs.push(&format!("runtimePlatform.{k}"), "must be a string")
            }
            (k, _) => errs.push(&format!("runtimePlatform.{k}"), "unknown field"),
        }
    }
}

pub(super) fn opt_value<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn get_u64(obj: &Map<String, Value>, key: &str, path: &str, errs: &mut Errors) -> Option<u64> {
    match opt_value(obj, key)? {
        Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
        _ => {
            errs.push(&format!("{path}.{key}"), "must be a non-negative integer");
            None
        }
    }
}

pub(super) fn get_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Errors,
) -> Option<String> {
    match opt_value(obj, key)? {
        Value::String(s) => Some(s.clone()),
        _ => {
            errs.push(&format!("{path}.{key}"), "must be a string");
            None
        }
    }
}

fn get_string_list(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Errors,
) -> Option<Vec<String>> {
    match opt_value(obj, key)? {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                match it {
                    Value::String(s) => out.push(s.clone()),
                    _ => errs.push(&format!("{path}.{key}[{i}]"), "must be a string"),
                }
            }
            Some(out)
        }
        _ => {
            errs.push(&format!("{path}.{key}"), "must be an array of strings");
            None
        }
    }
}

fn parse_container(
    v: &Value,
    path: &str,
    task_has_memory: bool,
    ctx: TaskContext,
    errs: &mut Errors,
) -> Option<ContainerDefinition> {
    let Value::Object(obj) = v else {
        errs.push(path, "must be an object");
        return None;
    };
    for (key, value) in obj {
        match key.as_str() {
            "name"
            | "image"
            | "cpu"
            | "memory"
            | "memoryReservation"
            | "essential"
            | "entryPoint"
            | "command"
            | "environment"
            | "workingDirectory"
            | "stopTimeout"
            | "hostname"
            | "linuxParameters"
            | "repositoryCredentials" => {}
            k if linux::CONTAINER_KEYS.contains(&k) => {}
            k if network::CONTAINER_KEYS.contains(&k) => {}
            k if lifecycle::CONTAINER_KEYS.contains(&k) => {}
            k if CONTAINER_PENDING_KEYS.contains(&k) => {
                if !is_empty_value(value) {
                    errs.push(&format!("{path}.{k}"), "not supported by skiff yet");
                }
            }
            k => errs.push(&format!("{path}.{k}"), "unknown field"),
        }
    }

    let name = match get_string(obj, "name", path, errs) {
        Some(n) if valid_name(&n) => n,
        Some(n) => {
            errs.push(
                &format!("{path}.name"),
                format!("{n:?} is not valid (1-255 letters, digits, '_' or '-')"),
            );
            String::new()
        }
        None => {
            if !obj.contains_key("name") {
                errs.push(&format!("{path}.name"), "is required");
            }
            String::new()
        }
    };
    let image = match get_string(obj, "image", path, errs) {
        Some(i) if !i.trim().is_empty() => i,
        Some(_) => {
            errs.push(&format!("{path}.image"), "must not be empty");
            String::new()
        }
        None => {
            if !obj.contains_key("image") {
                errs.push(&format!("{path}.image"), "is required");
            }
            String::new()
        }
    };
    let cpu = get_u64(obj, "cpu", path, errs).unwrap_or(0);
    let memory = get_u64(obj, "memory", path, errs);
    let memory_reservation = get_u64(obj, "memoryReservation", path, errs);
    if let Some(m) = memory {
        if m < MIN_CONTAINER_MEMORY_MIB {
            errs.push(
                &format!("{path}.memory"),
                format!("{m} MiB is below the minimum of {MIN_CONTAINER_MEMORY_MIB} MiB"),
            );
        }
    }
    if let (Some(m), Some(r)) = (memory, memory_reservation) {
        if r >= m {
            errs.push(
                &format!("{path}.memoryReservation"),
                format!("{r} MiB must be less than memory ({m} MiB)"),
            );
        }
    }
    if memory.is_none() && memory_reservation.is_none() && !task_has_memory {
        errs.push(
            &format!("{path}.memory"),
            "memory or memoryReservation is required when the task sets no memory",
        );
    }
    let essential = match opt_value(obj, "essential") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errs.push(&format!("{path}.essential"), "must be true or false");
            true
        }
    };
    let entry_point = get_string_list(obj, "entryPoint", path, errs);
    let command = get_string_list(obj, "command", path, errs);
    let working_directory = get_string(obj, "workingDirectory", path, errs);
    if let Some(wd) = &working_directory {
        if !wd.starts_with('/') {
            errs.push(
                &format!("{path}.workingDirectory"),
                format!("{wd:?} must be an absolute path"),
            );
        }
    }
    let stop_timeout = get_u64(obj, "stopTimeout", path, errs);
    let hostname = get_string(obj, "hostname", path, errs);
    let (max_swap, swappiness) = parse_linux_parameters(obj, path, memory.is_some(), errs);
    let repository_credentials = match opt_value(obj, "repositoryCredentials") {
        None => None,
        Some(Value::Object(rc)) => {
            let p = format!("{path}.repositoryCredentials");
            for k in rc.keys().filter(|k| *k != "credentialsParameter") {
                errs.push(&format!("{p}.{k}"), "unknown field");
            }
            match rc.get("credentialsParameter") {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                _ => {
                    errs.push(
                        &format!("{p}.credentialsParameter"),
                        "must be a non-empty string naming a credential",
                    );
                    None
                }
            }
        }
        Some(_) => {
            errs.push(
                &format!("{path}.repositoryCredentials"),
                "must be an object",
            );
            None
        }
    };
    let mut environment = Vec::new();
    match opt_value(obj, "environment") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let p = format!("{path}.environment[{i}]");
                let Value::Object(kv) = it else {
                    errs.push(&p, "must be an object with name and value");
                    continue;
                };
                for k in kv.keys() {
                    if k != "name" && k != "value" {
                        errs.push(&format!("{p}.{k}"), "unknown field");
                    }
                }
                let name = match kv.get("name") {
                    Some(Value::String(n))
                        if !n.is_empty() && !n.contains('=') && !n.contains('\0') =>
                    {
                        n.clone()
                    }
                    _ => {
                        errs.push(
                            &format!("{p}.name"),
                            "must be a non-empty string without '='",
                        );
                        continue;
                    }
                };
                let value = match kv.get("value") {
                    Some(Value::String(v)) if !v.contains('\0') => v.clone(),
                    None | Some(Value::Null) => String::new(),
                    _ => {
                        errs.push(&format!("{p}.value"), "must be a string");
                        continue;
                    }
                };
                environment.push((name, value));
            }
        }
        Some(_) => errs.push(&format!("{path}.environment"), "must be an array"),
    }
    let mut cd = ContainerDefinition {
        name,
        image,
        cpu,
        memory,
        memory_reservation,
        essential,
        entry_point,
        command,
        environment,
        working_directory,
        stop_timeout,
        hostname,
        max_swap,
        swappiness,
        repository_credentials,
        ..Default::default()
    };
    linux::parse_container_linux(obj, path, ctx, &mut cd, errs);
    network::parse_container_network(obj, path, ctx, &mut cd, errs);
    lifecycle::parse_container_lifecycle(obj, path, &mut cd, errs);
    Some(cd)
}

/// `linuxParameters`: `maxSwap` and `swappiness`; its other keys are parsed in
/// [`linux::parse_container_linux`].
fn parse_linux_parameters(
    obj: &Map<String, Value>,
    path: &str,
    has_memory: bool,
    errs: &mut Errors,
) -> (Option<u64>, Option<u64>) {
    let lp_path = format!("{path}.linuxParameters");
    let lp = match opt_value(obj, "linuxParameters") {
        None => return (None, None),
        Some(Value::Object(lp)) => lp,
        Some(_) => {
            errs.push(&lp_path, "must be an object");
            return (None, None);
        }
    };
    for k in lp.keys() {
        match k.as_str() {
            "maxSwap" | "swappiness" => {}
            k if linux::LINUX_PARAMETERS_KEYS.contains(&k) => {}
            _ => errs.push(&format!("{lp_path}.{k}"), "unknown field"),
        }
    }
    let max_swap = get_u64(lp, "maxSwap", &lp_path, errs);
    let swappiness = get_u64(lp, "swappiness", &lp_path, errs);
    if let Some(s) = swappiness {
        if s > 100 {
            errs.push(
                &format!("{lp_path}.swappiness"),
                format!("{s} is not between 0 and 100"),
            );
        }
    }
    if max_swap.is_some_and(|m| m > 0) && !has_memory {
        errs.push(
            &format!("{lp_path}.maxSwap"),
            "needs the container's hard memory limit (memory) as swap is accounted against it",
        );
    }
    (max_swap, swappiness)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(json: &str) -> Vec<String> {
        match parse_task_definition(json.as_bytes(), Some("hint")) {
            Err(TaskDefError::Invalid(e)) => e,
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn full_object() {
        let td = parse_task_definition(
            br#"{"family":"web","networkMode":"none","cpu":"0.5 vCPU","memory":"1 GB",
                "containerDefinitions":[{"name":"a","image":"busybox","cpu":10,"memory":64,
                "command":["sleep","1"],"environment":[{"name":"A","value":"1"}]}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(td.family, "web");
        assert_eq!(td.network_mode, NetworkMode::None);
        assert_eq!(td.cpu, Some(512));
        assert_eq!(td.memory, Some(1024));
        let c = &td.containers[0];
        assert!(c.essential);
        assert_eq!(c.cpu, 10);
        assert_eq!(
            c.command.as_deref(),
            Some(&["sleep".to_string(), "1".to_string()][..])
        );
        assert_eq!(c.environment, vec![("A".to_string(), "1".to_string())]);
    }

    #[test]
    fn describe_wrapper_and_bare_array() {
        let td = parse_task_definition(
            br#"{"taskDefinition":{"family":"f","revision":3,"status":"ACTIVE",
                "containerDefinitions":[{"name":"a","image":"i","memory":10}]}}"#,
            None,
        )
        .unwrap();
        assert_eq!(td.family, "f");
        assert_eq!(td.network_mode, NetworkMode::Bridge);
        let td = parse_task_definition(
            br#"[{"name":"a","image":"i","memory":10}]"#,
            Some("fromfile"),
        )
        .unwrap();
        assert_eq!(td.family, "fromfile");
    }

    #[test]
    fn port_mapping_rules_per_network_mode() {
        let e = errors_of(
            r#"{"family":"a","networkMode":"awsvpc","containerDefinitions":[
                {"name":"a","image":"i","memory":10,"portMappings":[{"containerPort":8080,"hostPort":80}],
                 "links":["b"]},
                {"name":"b","image":"i","memory":10,"disableNetworking":true}]}"#,
        );
        for w in [
            "containerDefinitions[0].portMappings[0].hostPort: must equal containerPort (8080) in awsvpc network mode, not 80",
            "containerDefinitions[0].links: only in bridge network mode (this task uses awsvpc)",
            "containerDefinitions[1].disableNetworking: is not supported in awsvpc network mode",
        ] {
            assert!(e.iter().any(|x| x == w), "missing {w:?} in {e:#?}");
        }
        let e = errors_of(
            r#"{"family":"a","networkMode":"bridge","containerDefinitions":[
                {"name":"a","image":"i","memory":10,"portMappings":[{"containerPort":80,"hostPort":8080},
                  {"containerPortRange":"9000-9010","hostPort":9000}]},
                {"name":"b","image":"i","memory":10,"portMappings":[{"containerPort":81,"hostPort":8080}]}]}"#,
        );
        for w in [
            "containerDefinitions[0].portMappings[1].hostPort: cannot be given with containerPortRange (the host range is chosen)",
            "containerDefinitions[1].portMappings[0].hostPort: 8080/tcp is already mapped by containerDefinitions[0].portMappings[0]",
        ] {
            assert!(e.iter().any(|x| x == w), "missing {w:?} in {e:#?}");
        }
        let e = errors_of(
            r#"{"family":"a","networkMode":"none","containerDefinitions":[
                {"name":"a","image":"i","memory":10,"portMappings":[{"containerPort":80}]}]}"#,
        );
        assert!(
            e.iter()
                .any(|x| x
                    .starts_with("containerDefinitions[0].portMappings: cannot be used in none")),
            "{e:?}"
        );
    }

    #[test]
    fn reports_all_errors_with_paths() {
        let e = errors_of(
            r#"{"family":"bad family!","ipcMode":"private","containerDefinitions":[
                {"name":"a","image":"i","memory":10,"memoryReservation":20,"essential":false,
                 "ulimits":[{"name":"nofile","softLimit":2,"hardLimit":1}]},
                {"name":"a","image":"","memory":2,"essential":false,"healthCheck":{"command":["CMD","true"]},
                 "portMappings":[{"containerPort":80,"hostPort":70000},{"containerPort":81,"protocol":"sctp"}],
                 "links":["b"]},
                {"image":"x","bogus":1,"essential":false}]}"#,
        );
        let want = [
            "family: \"bad family!\" is not valid",
            "ipcMode: \"private\" is not one of task, host, none",
            "containerDefinitions[0].memoryReservation: 20 MiB must be less than memory (10 MiB)",
            "containerDefinitions[0].ulimits[0].softLimit: 2 is more than hardLimit 1",
            "containerDefinitions[1].image: must not be empty",
            "containerDefinitions[1].memory: 2 MiB is below the minimum of 6 MiB",
            "containerDefinitions[1].healthCheck: not supported by skiff yet",
            "containerDefinitions[1].portMappings[0].hostPort: must be a port number (0-65535)",
            "containerDefinitions[1].portMappings[1].protocol: must be tcp or udp",
            "containerDefinitions[1].links[0]: \"b\" is not another container of this task",
            "containerDefinitions[1].name: duplicate container name \"a\"",
            "containerDefinitions[2].bogus: unknown field",
            "containerDefinitions[2].name: is required",
            "containerDefinitions[2].memory: memory or memoryReservation is required",
            "containerDefinitions: at least one container must be essential",
        ];
        for w in want {
            assert!(
                e.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {e:#?}"
            );
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(errors_of("not json")[0].starts_with("not valid JSON"));
        assert_eq!(
            errors_of(r#"{"family":"f","containerDefinitions":[]}"#),
            vec!["containerDefinitions: must hold at least one container".to_string()]
        );
        assert!(errors_of(r#"{"family":"f"}"#)
            .contains(&"containerDefinitions: is required".to_string()));
        let e = errors_of(
            r#"{"family":"f","memory":"64","containerDefinitions":[{"name":"a","image":"i","memory":128}]}"#,
        );
        assert_eq!(
            e,
            vec![
                "containerDefinitions[0].memory: 128 MiB is more than the task's memory (64 MiB)"
                    .to_string()
            ]
        );
        let many: Vec<String> = (0..11)
            .map(|i| format!(r#"{{"name":"c{i}","image":"i","memory":10}}"#))
            .collect();
        let e = errors_of(&format!(
            r#"{{"family":"f","containerDefinitions":[{}]}}"#,
            many.join(",")
        ));
        assert!(e[0].contains("at most 10"), "{e:?}");
    }

    #[test]
    fn linux_parameters_swap() {
        let td = parse_task_definition(
            br#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":64,
                "linuxParameters":{"maxSwap":128,"swappiness":10,"tmpfs":[],
                "initProcessEnabled":true}}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(td.containers[0].max_swap, Some(128));
        assert_eq!(td.containers[0].swappiness, Some(10));
        assert!(td.containers[0].init_process_enabled);
        let e = errors_of(
            r#"{"family":"f","memory":"128","containerDefinitions":[{"name":"a","image":"i",
                "linuxParameters":{"maxSwap":64,"swappiness":101,"initProcessEnabled":"on","x":1}}]}"#,
        );
        for w in [
            "containerDefinitions[0].linuxParameters.swappiness: 101 is not between 0 and 100",
            "containerDefinitions[0].linuxParameters.maxSwap: needs the container's hard memory limit",
            "containerDefinitions[0].linuxParameters.initProcessEnabled: must be true or false",
            "containerDefinitions[0].linuxParameters.x: unknown field",
        ] {
            assert!(e.iter().any(|x| x.starts_with(w)), "missing {w:?} in {e:#?}");
        }
    }

    #[test]
    fn empty_pending_fields_are_accepted() {
        parse_task_definition(
            br#"{"family":"f","volumes":[],"placementConstraints":[],"containerDefinitions":[
                {"name":"a","image":"i","memory":10,"portMappings":[],"mountPoints":[],"privileged":false}]}"#,
            None,
        )
        .unwrap();
    }

    /// The real task definitions in tests/fixtures/taskdefs (written by others): each parses,
    /// or fails with errors that all carry a field path.
    #[test]
    fn real_fixtures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/taskdefs");
        let mut seen = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            seen += 1;
            let text = std::fs::read_to_string(&p).unwrap().replace("$$$", "");
            let stem = p.file_stem().unwrap().to_str().unwrap();
            match parse_task_definition(text.as_bytes(), Some(stem)) {
                Ok(td) => assert!(!td.containers.is_empty(), "{stem}"),
                Err(TaskDefError::Invalid(errs)) => {
                    for e in &errs {
                        let path = e.split(": ").next().unwrap();
                        let is_path = !path.is_empty()
                            && path
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c));
                        assert!(is_path, "{stem}: error without a field path: {e}");
                    }
                }
                Err(e) => panic!("{stem}: {e}"),
            }
        }
        assert!(seen >= 20, "fixtures found: {seen}");

        let read = |n: &str| std::fs::read(format!("{dir}/{n}")).unwrap();
        let td = parse_task_definition(&read("aws-cli-ex1-register-output.json"), None).unwrap();
        assert_eq!(td.family, "sleep360");
        assert_eq!(td.network_mode, NetworkMode::Bridge);
        assert_eq!(td.containers[0].memory, Some(10));
        let td = parse_task_definition(&read("oom-task.json"), None).unwrap();
        assert_eq!(td.memory, Some(64));
        assert_eq!(td.containers[0].memory, None);
        let td = parse_task_definition(&read("busybox-port-5180.json"), None).unwrap();
        assert_eq!(
            td.containers[0].port_mappings,
            vec![super::super::PortMapping {
                container_port: 80,
                host_port: Some(5180),
                protocol: super::super::PortProtocol::Tcp,
                count: 1,
                name: None,
            }]
        );
        let td = parse_task_definition(&read("network-link.json"), None).unwrap();
        assert_eq!(
            td.containers[1].links,
            vec![("nginx".to_string(), Some("nginx".to_string()))]
        );
        match parse_task_definition(&read("nvidia-gpu.json"), None) {
            Err(TaskDefError::Invalid(e)) => assert!(
                e.iter()
                    .any(|x| x.contains("resourceRequirements: not supported")),
                "{e:?}"
            ),
            other => panic!("{other:?}"),
        }
        // The runtime fields (privileged here) are no longer "not supported"; the rest are.
        match parse_task_definition(
            String::from_utf8(read("appmesh-plugin-validator.json"))
                .unwrap()
                .replace("$$$", "")
                .as_bytes(),
            None,
        ) {
            Err(TaskDefError::Invalid(e)) => assert_eq!(
                e,
                vec![
                    "proxyConfiguration: not supported by skiff yet".to_string(),
                    "volumes: not supported by skiff yet".to_string(),
                    "containerDefinitions[0].logConfiguration: not supported by skiff yet"
                        .to_string(),
                    "containerDefinitions[0].mountPoints: not supported by skiff yet".to_string(),
                ]
            ),
            other => panic!("{other:?}"),
        }
        for ok in [
            "add-drop-capabilities.json",
            "devices.json",
            "init-process.json",
            "nofiles-ulimit.json",
            "sysctl.json",
            "tmpfs.json",
            "pid-namespace-task-share.json",
        ] {
            if let Err(e) = parse_task_definition(&read(ok), None) {
                panic!("{ok}: {e}");
            }
        }
    }
}
