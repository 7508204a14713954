//! JSON → [`TaskDefinition`], collecting every problem with its field path.

use std::ops::RangeInclusive;
use std::path::Path;

use serde_json::{Map, Value};

use super::linux::{self, TaskContext};
use super::units::{parse_cpu, parse_memory_mib};
use super::{container_meta, lifecycle, network, task_meta, volumes};
use super::{ContainerDefinition, NetworkMode, TaskDefError, TaskDefinition};

/// Read-only keys of `describe-task-definition` output: accepted, and without effect on how
/// a task runs.
const TASK_METADATA_KEYS: &[&str] = &[
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
];

/// Most containers in one task definition (ECS's limit).
pub const MAX_CONTAINERS: usize = 10;
/// Largest task definition ECS registers, measured as compact JSON.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// ECS rejects container memory below 6 MiB.
const MIN_CONTAINER_MEMORY_MIB: u64 = 6;
/// Task-level `cpu` ECS accepts outside Fargate: 0.125 to 192 vCPU.
const TASK_CPU_UNITS: RangeInclusive<u64> = 128..=196_608;

/// How to read a task definition.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// The family, over the one in the file (as `aws ecs register-task-definition --family`
    /// over `--cli-input-json`); a bare `containerDefinitions` array needs it unless
    /// `file_name` gives one.
    pub family: Option<String>,
    /// The file's name or path: a bare array's family is its name without the extension,
    /// every character a family may not hold replaced with `-`.
    pub file_name: Option<String>,
    /// Unknown keys become warnings (and are ignored) instead of errors.
    pub lenient: bool,
}

/// What [`parse_task_definition_with`] gives: the definition or all its errors, and the
/// warnings (unknown keys in lenient mode) in either case.
#[derive(Debug)]
pub struct Parsed {
    pub result: Result<TaskDefinition, TaskDefError>,
    pub warnings: Vec<String>,
}

/// The problems found so far, each as `path: message`.
pub(super) struct Errors {
    errors: Vec<String>,
    warnings: Vec<String>,
    lenient: bool,
}

impl Errors {
    fn new(lenient: bool) -> Errors {
        Errors {
            errors: Vec::new(),
            warnings: Vec::new(),
            lenient,
        }
    }

    pub(super) fn push(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {msg}"));
    }

    /// A key ECS does not know: an error, as in ECS's API, or in lenient mode a warning.
    pub(super) fn unknown(&mut self, path: &str) {
        if self.lenient {
            self.warnings
                .push(format!("{path}: unknown field (ignored)"));
        } else {
            self.push(path, "unknown field");
        }
    }
}

/// Reports every key of `o` not in `allowed` as unknown.
pub(super) fn check_keys(o: &Map<String, Value>, allowed: &[&str], path: &str, errs: &mut Errors) {
    for k in o.keys().filter(|k| !allowed.contains(&k.as_str())) {
        errs.unknown(&format!("{path}.{k}"));
    }
}

/// `v` as an object, its keys checked against `allowed`.
pub(super) fn object<'a>(
    v: &'a Value,
    allowed: &[&str],
    path: &str,
    errs: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    let Some(o) = v.as_object() else {
        errs.push(path, "must be an object");
        return None;
    };
    check_keys(o, allowed, path, errs);
    Some(o)
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

/// ECS's rule for families, container and volume names: 1-255 letters, digits, `_`, `-`.
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `name` made a valid family: each character a family may not hold becomes `-`.
fn sanitize_family(name: &str) -> Option<String> {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(255)
        .collect();
    (!s.is_empty()).then_some(s)
}

/// Parses a task definition from JSON bytes. `family_hint` names the family when the input is
/// a bare `containerDefinitions` array (usually the file's stem; made valid as a family).
pub fn parse_task_definition(
    bytes: &[u8],
    family_hint: Option<&str>,
) -> Result<TaskDefinition, TaskDefError> {
    parse_bytes(bytes, None, family_hint.and_then(sanitize_family), false).result
}

/// Parses a task definition in any of the forms users have: the full object, the
/// `--cli-input-json` object (with `tags`), a bare `containerDefinitions` array, or the
/// `{"taskDefinition": {...}}` output of `describe-task-definition`.
pub fn parse_task_definition_with(bytes: &[u8], opts: &ParseOptions) -> Parsed {
    let from_file = opts
        .file_name
        .as_deref()
        .and_then(|f| Path::new(f).file_stem())
        .and_then(|s| sanitize_family(&s.to_string_lossy()));
    parse_bytes(bytes, opts.family.as_deref(), from_file, opts.lenient)
}

fn parse_bytes(
    bytes: &[u8],
    family: Option<&str>,
    bare_family: Option<String>,
    lenient: bool,
) -> Parsed {
    let root: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Parsed {
                result: Err(TaskDefError::Json(format!("not valid JSON: {e}"))),
                warnings: Vec::new(),
            }
        }
    };
    let mut errs = Errors::new(lenient);
    let obj = match root {
        Value::Array(containers) => {
            let mut obj = Map::new();
            match family.map(str::to_string).or(bare_family) {
                Some(f) => {
                    obj.insert("family".into(), Value::String(f));
                }
                None => errs.push(
                    "family",
                    "a bare containerDefinitions array needs a family (give --family, or name the file after it)",
                ),
            }
            obj.insert("containerDefinitions".into(), Value::Array(containers));
            Some(obj)
        }
        Value::Object(obj)
            if obj.contains_key("taskDefinition") && !obj.contains_key("containerDefinitions") =>
        {
            unwrap_describe(obj, &mut errs)
        }
        Value::Object(obj) => Some(obj),
        _ => {
            errs.push(
                "(root)",
                "must be a task definition object or a containerDefinitions array",
            );
            None
        }
    };
    let td = obj.and_then(|mut obj| {
        if let Some(f) = family {
            obj.insert("family".into(), Value::String(f.to_string()));
        }
        let size = serde_json::to_vec(&obj).map_or(0, |v| v.len());
        if size > MAX_JSON_BYTES {
            errs.push(
                "(root)",
                format!("the task definition is {size} bytes as compact JSON; ECS registers at most {MAX_JSON_BYTES} (64 KiB)"),
            );
        }
        parse_task(&obj, &mut errs)
    });
    Parsed {
        result: match td {
            Some(td) if errs.errors.is_empty() => Ok(td),
            _ => Err(TaskDefError::Invalid(errs.errors)),
        },
        warnings: errs.warnings,
    }
}

/// `{"taskDefinition": {...}, "tags": [...]}` (describe-task-definition output, tags with
/// `--include TAGS`) → the definition, with the tags.
fn unwrap_describe(mut obj: Map<String, Value>, errs: &mut Errors) -> Option<Map<String, Value>> {
    for k in obj
        .keys()
        .filter(|k| *k != "taskDefinition" && *k != "tags")
    {
        errs.unknown(k);
    }
    let tags = obj.remove("tags");
    match obj.remove("taskDefinition") {
        Some(Value::Object(mut inner)) => {
            if let Some(tags) = tags {
                if inner.contains_key("tags") {
                    errs.push("tags", "given both beside and inside taskDefinition");
                } else {
                    inner.insert("tags".into(), tags);
                }
            }
            Some(inner)
        }
        _ => {
            errs.push("taskDefinition", "must be an object");
            None
        }
    }
}

fn parse_task(obj: &Map<String, Value>, errs: &mut Errors) -> Option<TaskDefinition> {
    for key in obj.keys() {
        match key.as_str() {
            "family"
            | "containerDefinitions"
            | "networkMode"
            | "cpu"
            | "memory"
            | "pidMode"
            | "ipcMode"
            | "volumes" => {}
            k if task_meta::TASK_KEYS.contains(&k) || TASK_METADATA_KEYS.contains(&k) => {}
            k => errs.unknown(k),
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
    if let Some(c) = cpu.filter(|c| !TASK_CPU_UNITS.contains(c)) {
        errs.push(
            "cpu",
            format!(
                "{c} units is outside {}-{} (0.125 to 192 vCPU)",
                TASK_CPU_UNITS.start(),
                TASK_CPU_UNITS.end()
            ),
        );
    }
    let memory = opt_value(obj, "memory")
        .and_then(|v| parse_memory_mib(v).map_err(|e| errs.push("memory", e)).ok());

    let meta = task_meta::parse_task_meta(obj, errs);
    let pid_mode = linux::parse_pid_mode(obj, errs);
    let ipc_mode = linux::parse_ipc_mode(obj, errs);
    let ctx = TaskContext {
        network_mode,
        ipc_mode,
    };
    let volumes = volumes::parse_volumes(obj, errs);

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
    }
    check_resources(cpu, memory, &containers, errs);
    network::check_task(&containers, errs);
    lifecycle::check_task(&containers, errs);
    volumes::check_task(&volumes, &containers, errs);
    task_meta::check_task(&meta, network_mode, cpu, memory, errs);
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
        volumes,
        placement_constraints: meta.placement_constraints,
        requires_compatibilities: meta.requires_compatibilities,
        runtime_platform: meta.runtime_platform,
        ephemeral_storage_gib: meta.ephemeral_storage_gib,
        task_role_arn: meta.task_role_arn,
        execution_role_arn: meta.execution_role_arn,
        tags: meta.tags,
    })
}

/// No container asks for more memory or CPU than the task has, nor all of them together.
fn check_resources(
    task_cpu: Option<u64>,
    task_memory: Option<u64>,
    containers: &[ContainerDefinition],
    errs: &mut Errors,
) {
    if let Some(tm) = task_memory {
        let mut over = false;
        for (i, c) in containers.iter().enumerate() {
            for (key, v) in [
                ("memory", c.memory),
                ("memoryReservation", c.memory_reservation),
            ] {
                if let Some(m) = v.filter(|m| *m > tm) {
                    over = true;
                    errs.push(
                        &format!("containerDefinitions[{i}].{key}"),
                        format!("{m} MiB is more than the task's memory ({tm} MiB)"),
                    );
                }
            }
        }
        // What ECS reserves for a container: memoryReservation, else memory.
        let total: u64 = containers
            .iter()
            .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0))
            .sum();
        if !over && total > tm {
            errs.push(
                "memory",
                format!("{tm} MiB is less than the {total} MiB the containers reserve together (memoryReservation, else memory)"),
            );
        }
    }
    if let Some(tc) = task_cpu {
        let mut over = false;
        for (i, c) in containers.iter().enumerate() {
            if c.cpu > tc {
                over = true;
                errs.push(
                    &format!("containerDefinitions[{i}].cpu"),
                    format!("{} units are more than the task's cpu ({tc} units)", c.cpu),
                );
            }
        }
        let total: u64 = containers.iter().map(|c| c.cpu).sum();
        if !over && total > tc {
            errs.push(
                "cpu",
                format!(
                    "{tc} units are less than the {total} units the containers reserve together"
                ),
            );
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
    for key in obj.keys() {
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
            k if [
                linux::CONTAINER_KEYS,
                network::CONTAINER_KEYS,
                lifecycle::CONTAINER_KEYS,
                volumes::CONTAINER_KEYS,
                container_meta::CONTAINER_KEYS,
            ]
            .iter()
            .any(|keys| keys.contains(&k)) => {}
            k => errs.unknown(&format!("{path}.{k}")),
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
            check_keys(rc, &["credentialsParameter"], &p, errs);
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
                check_keys(kv, &["name", "value"], &p, errs);
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
                // A name given twice: the last value holds, as with `docker run -e`.
                match environment.iter_mut().find(|(n, _)| *n == name) {
                    Some(e) => e.1 = value,
                    None => environment.push((name, value)),
                }
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
    volumes::parse_container_volumes(obj, path, &mut cd, errs);
    container_meta::parse_container_meta(obj, path, &mut cd, errs);
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
            _ => errs.unknown(&format!("{lp_path}.{k}")),
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
            r#"{"family":"a","networkMode":"host","containerDefinitions":[
                {"name":"a","image":"i","memory":10,"portMappings":[{"containerPortRange":"9000-9010"}]}]}"#,
        );
        assert_eq!(
            e,
            vec!["containerDefinitions[0].portMappings[0].containerPortRange: only in bridge or awsvpc network mode"]
        );
        let e = errors_of(
            r#"{"family":"a","networkMode":"bridge","containerDefinitions":[
                {"name":"a","image":"i","memory":10,"portMappings":[{"containerPort":80,"appProtocol":"http2"},
                  {"containerPort":81,"appProtocol":"ftp"}]}]}"#,
        );
        assert_eq!(
            e,
            vec![
                "containerDefinitions[0].portMappings[1].appProtocol: must be http, http2 or grpc"
            ]
        );
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
                {"name":"a","image":"","memory":2,"essential":false,"healthCheck":{"command":["true"],"interval":1},
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
            "containerDefinitions[1].healthCheck.interval: must be a whole number from 5 to 300, got 1",
            "containerDefinitions[1].healthCheck.command: must start with \"CMD\"",
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
    fn empty_fields_are_accepted() {
        parse_task_definition(
            br#"{"family":"f","volumes":[],"placementConstraints":[],"proxyConfiguration":null,
                "inferenceAccelerators":[],"enableFaultInjection":false,"containerDefinitions":[
                {"name":"a","image":"i","memory":10,"portMappings":[],"mountPoints":[],"privileged":false,
                 "firelensConfiguration":null,"credentialSpecs":[],"resourceRequirements":[]}]}"#,
            None,
        )
        .unwrap();
    }

    fn with(json: &str, opts: &ParseOptions) -> Parsed {
        parse_task_definition_with(json.as_bytes(), opts)
    }

    #[test]
    fn every_form() {
        let no_opts = ParseOptions::default();
        // The --cli-input-json object, with tags.
        let td = with(
            r#"{"family":"web","tags":[{"key":"team","value":"edge"}],
                "containerDefinitions":[{"name":"a","image":"i","memory":10}]}"#,
            &no_opts,
        )
        .result
        .unwrap();
        assert_eq!(td.tags, vec![("team".to_string(), "edge".to_string())]);
        // describe-task-definition output: every read-only field, tags beside the definition.
        let td = with(
            r#"{"taskDefinition":{"family":"web","taskDefinitionArn":"arn:aws:ecs:us-east-1:1:task-definition/web:3",
                "revision":3,"status":"ACTIVE","requiresAttributes":[{"name":"com.amazonaws.ecs.capability.docker-remote-api.1.18"}],
                "compatibilities":["EC2","EXTERNAL"],"registeredAt":"2024-01-01T00:00:00Z","registeredBy":"arn:aws:iam::1:user/x",
                "deregisteredAt":"2024-02-01T00:00:00Z",
                "containerDefinitions":[{"name":"a","image":"i","memory":10}]},
                "tags":[{"key":"k","value":"v"}]}"#,
            &no_opts,
        )
        .result
        .unwrap();
        assert_eq!((td.family.as_str(), td.tags.len()), ("web", 1));
        let e =
            errors_of(r#"{"taskDefinition":{"family":"f","containerDefinitions":[]},"extra":1}"#);
        assert!(e.contains(&"extra: unknown field".to_string()), "{e:?}");
        // A bare array takes --family, else the file name made valid as a family.
        let bare = r#"[{"name":"a","image":"i","memory":10}]"#;
        let opts = |family: Option<&str>, file: Option<&str>| ParseOptions {
            family: family.map(str::to_string),
            file_name: file.map(str::to_string),
            lenient: false,
        };
        let family = |o: ParseOptions| with(bare, &o).result.map(|td| td.family);
        assert_eq!(
            family(opts(Some("given"), Some("x.json"))).unwrap(),
            "given"
        );
        assert_eq!(
            family(opts(None, Some("/tmp/my task.v2.json"))).unwrap(),
            "my-task-v2"
        );
        assert_eq!(family(opts(None, Some("app.json"))).unwrap(), "app");
        match family(opts(None, None)) {
            Err(TaskDefError::Invalid(e)) => assert!(
                e[0].starts_with("family: a bare containerDefinitions array needs a family"),
                "{e:?}"
            ),
            other => panic!("{other:?}"),
        }
        // The old entry point: its hint is made valid too.
        let td = parse_task_definition(bare.as_bytes(), Some("a.b c")).unwrap();
        assert_eq!(td.family, "a-b-c");
        // --family wins over the file's own, as in the AWS CLI; it must be valid itself.
        let full =
            r#"{"family":"inside","containerDefinitions":[{"name":"a","image":"i","memory":10}]}"#;
        let td = with(full, &opts(Some("outside"), None)).result.unwrap();
        assert_eq!(td.family, "outside");
        match with(full, &opts(Some("no good"), None)).result {
            Err(TaskDefError::Invalid(e)) => assert_eq!(
                e,
                vec!["family: \"no good\" is not valid (1-255 letters, digits, '_' or '-')"]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            errors_of("42"),
            vec!["(root): must be a task definition object or a containerDefinitions array"]
        );
    }

    #[test]
    fn lenient_turns_unknown_keys_into_warnings() {
        let json = r#"{"family":"f","x":1,"volumes":[{"name":"v","y":2}],"containerDefinitions":[
            {"name":"a","image":"i","memory":10,"foo":true,"environment":[{"name":"A","value":"1","z":0}],
             "linuxParameters":{"w":1},"healthCheck":{"command":["CMD","true"],"q":1},
             "mountPoints":[{"sourceVolume":"v","containerPath":"/v","r":1}]}]}"#;
        let unknown = [
            "x",
            "volumes[0].y",
            "containerDefinitions[0].foo",
            "containerDefinitions[0].environment[0].z",
            "containerDefinitions[0].linuxParameters.w",
            "containerDefinitions[0].healthCheck.q",
            "containerDefinitions[0].mountPoints[0].r",
        ];
        let strict = with(json, &ParseOptions::default());
        assert!(strict.warnings.is_empty());
        match strict.result {
            Err(TaskDefError::Invalid(mut e)) => {
                e.sort();
                let mut want: Vec<String> = unknown
                    .iter()
                    .map(|p| format!("{p}: unknown field"))
                    .collect();
                want.sort();
                assert_eq!(e, want);
            }
            other => panic!("{other:?}"),
        }
        let lenient = with(
            json,
            &ParseOptions {
                lenient: true,
                ..Default::default()
            },
        );
        let td = lenient.result.unwrap();
        assert_eq!(td.containers[0].environment, vec![("A".into(), "1".into())]);
        let mut w = lenient.warnings;
        w.sort();
        let mut want: Vec<String> = unknown
            .iter()
            .map(|p| format!("{p}: unknown field (ignored)"))
            .collect();
        want.sort();
        assert_eq!(w, want);
        // Lenient forgives unknown keys only: a broken rule is still an error.
        let r = with(
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i"}]}"#,
            &ParseOptions {
                lenient: true,
                ..Default::default()
            },
        );
        assert!(r.result.is_err());
    }

    /// A definition whose compact JSON is `size` bytes.
    fn definition_of_size(size: usize) -> String {
        let head = r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":10,"environment":[{"name":"A","value":""#;
        let tail = r#""}]}]}"#;
        format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()))
    }

    #[test]
    fn at_most_64_kib() {
        let ok = definition_of_size(MAX_JSON_BYTES);
        parse_task_definition(ok.as_bytes(), None).unwrap();
        // Whitespace does not count: ECS measures what is sent, compact.
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&ok).unwrap()).unwrap();
        assert!(pretty.len() > MAX_JSON_BYTES);
        parse_task_definition(pretty.as_bytes(), None).unwrap();
        assert_eq!(
            errors_of(&definition_of_size(MAX_JSON_BYTES + 1)),
            vec![format!(
                "(root): the task definition is {} bytes as compact JSON; ECS registers at most 65536 (64 KiB)",
                MAX_JSON_BYTES + 1
            )]
        );
    }

    #[test]
    fn at_most_10_containers() {
        let containers = |n: usize| -> String {
            let list: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"name":"c{i}","image":"i","memory":10}}"#))
                .collect();
            format!(
                r#"{{"family":"f","containerDefinitions":[{}]}}"#,
                list.join(",")
            )
        };
        let td = parse_task_definition(containers(10).as_bytes(), None).unwrap();
        assert_eq!(td.containers.len(), 10);
        assert_eq!(
            errors_of(&containers(11)),
            vec!["containerDefinitions: holds 11 containers; at most 10 are allowed"]
        );
    }

    #[test]
    fn task_resources_and_container_shares() {
        let e = errors_of(
            r#"{"family":"f","cpu":"0.25 vCPU","memory":"512","containerDefinitions":[
                {"name":"a","image":"i","cpu":200,"memoryReservation":300},
                {"name":"b","image":"i","cpu":100,"memory":400,"memoryReservation":250}]}"#,
        );
        assert_eq!(
            e,
            vec![
                "memory: 512 MiB is less than the 550 MiB the containers reserve together (memoryReservation, else memory)",
                "cpu: 256 units are less than the 300 units the containers reserve together",
            ]
        );
        let e = errors_of(
            r#"{"family":"f","cpu":"100","memory":"1 GB","containerDefinitions":[
                {"name":"a","image":"i","cpu":200,"memoryReservation":2048}]}"#,
        );
        assert_eq!(
            e,
            vec![
                "cpu: 100 units is outside 128-196608 (0.125 to 192 vCPU)",
                "containerDefinitions[0].memoryReservation: 2048 MiB is more than the task's memory (1024 MiB)",
                "containerDefinitions[0].cpu: 200 units are more than the task's cpu (100 units)",
            ]
        );
        // Each form of the units.
        for (cpu, memory, want) in [
            (r#""256""#, r#""512""#, (256, 512)),
            ("256", "512", (256, 512)),
            (r#""0.25 vCPU""#, r#""1 GB""#, (256, 1024)),
            (r#""1 vCPU""#, r#""2GB""#, (1024, 2048)),
        ] {
            let td = parse_task_definition(
                format!(
                    r#"{{"family":"f","cpu":{cpu},"memory":{memory},"containerDefinitions":[{{"name":"a","image":"i"}}]}}"#
                )
                .as_bytes(),
                None,
            )
            .unwrap();
            assert_eq!(
                (td.cpu.unwrap(), td.memory.unwrap()),
                want,
                "{cpu} {memory}"
            );
        }
    }

    #[test]
    fn environment_names_given_twice_keep_the_last_value() {
        let td = parse_task_definition(
            br#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":10,
                "environment":[{"name":"A","value":"1"},{"name":"B","value":"2"},{"name":"A","value":"3"}]}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            td.containers[0].environment,
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
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
                    .any(|x| x.contains("resourceRequirements[0].type: GPU is not supported")),
                "{e:?}"
            ),
            other => panic!("{other:?}"),
        }
        // Its host volumes and mount points are valid; App Mesh and awslogs cannot be had.
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
                    "proxyConfiguration: App Mesh proxy configuration is not supported by skiff"
                        .to_string(),
                    "containerDefinitions[0].logConfiguration.logDriver: awslogs is not supported by skiff (json-file and none are)".to_string(),
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

/// Helpers for the tests of the task definition's modules.
#[cfg(test)]
pub(super) mod testing {
    use super::{parse_task_definition, TaskDefError, TaskDefinition};

    /// A task definition: `task` holds extra task members (each followed by a comma), each of
    /// `containers` the members of one container, which has `"image":"i","memory":64` unless
    /// it gives its own.
    pub(in crate::taskdef) fn task(task: &str, containers: &[&str]) -> String {
        let cs: Vec<String> = containers
            .iter()
            .map(|c| format!(r#"{{"image":"i","memory":64,{c}}}"#))
            .collect();
        format!(
            r#"{{"family":"f",{task}"containerDefinitions":[{}]}}"#,
            cs.join(",")
        )
    }

    /// The errors of `json`; empty when it parses.
    pub(in crate::taskdef) fn errors(json: &str) -> Vec<String> {
        match parse_task_definition(json.as_bytes(), None) {
            Err(TaskDefError::Invalid(e)) => e,
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    #[track_caller]
    pub(in crate::taskdef) fn parse(json: &str) -> TaskDefinition {
        parse_task_definition(json.as_bytes(), None).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    /// Asserts that exactly these errors (in any order) are reported.
    #[track_caller]
    pub(in crate::taskdef) fn assert_errors(json: &str, want: &[&str]) {
        let mut got = errors(json);
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{json}");
    }
}
