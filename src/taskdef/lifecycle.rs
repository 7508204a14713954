//! A container's lifecycle fields: `dependsOn`, `startTimeout`, `restartPolicy`, `secrets`
//! and `environmentFiles`, with ECS's rules. Every problem is reported with its field path,
//! as in [`super::parse`].

use serde_json::{Map, Value};

use super::parse::{opt_value, Errors};
use super::{ContainerDefinition, DependsOn, RestartPolicy};

/// Container keys handled here.
pub(super) const CONTAINER_KEYS: &[&str] = &[
    "dependsOn",
    "startTimeout",
    "restartPolicy",
    "secrets",
    "environmentFiles",
];

fn string_field(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Errors,
) -> Option<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            errs.push(&format!("{path}.{key}"), "is required");
            None
        }
        Some(_) => {
            errs.push(&format!("{path}.{key}"), "must be a string");
            None
        }
    }
}

fn objects<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    allowed: &[&str],
    errs: &mut Errors,
) -> Vec<(String, &'a Map<String, Value>)> {
    let mut out = Vec::new();
    match opt_value(obj, key) {
        None => {}
        Some(Value::Array(list)) => {
            for (k, v) in list.iter().enumerate() {
                let p = format!("{path}.{key}[{k}]");
                match v.as_object() {
                    Some(o) => {
                        for f in o.keys() {
                            if !allowed.contains(&f.as_str()) {
                                errs.push(&format!("{p}.{f}"), "unknown field");
                            }
                        }
                        out.push((p, o));
                    }
                    None => errs.push(&p, "must be an object"),
                }
            }
        }
        Some(_) => errs.push(&format!("{path}.{key}"), "must be an array"),
    }
    out
}

/// Parses the fields of this module into `cd`.
pub(super) fn parse_container_lifecycle(
    obj: &Map<String, Value>,
    path: &str,
    cd: &mut ContainerDefinition,
    errs: &mut Errors,
) {
    for (p, o) in objects(
        obj,
        "dependsOn",
        path,
        &["containerName", "condition"],
        errs,
    ) {
        let container = string_field(o, "containerName", &p, errs);
        let condition = match o.get("condition") {
            Some(Value::String(s)) => match s.as_str() {
                "START" | "COMPLETE" | "SUCCESS" => Some(s.clone()),
                "HEALTHY" => {
                    errs.push(
                        &format!("{p}.condition"),
                        "HEALTHY: health checks are not supported by skiff yet",
                    );
                    None
                }
                other => {
                    errs.push(
                        &format!("{p}.condition"),
                        format!("{other:?} is not one of START, COMPLETE, SUCCESS, HEALTHY"),
                    );
                    None
                }
            },
            _ => {
                errs.push(&format!("{p}.condition"), "is required");
                None
            }
        };
        if let (Some(container), Some(condition)) = (container, condition) {
            cd.depends_on.push(DependsOn {
                container,
                condition,
            });
        }
    }

    match opt_value(obj, "startTimeout") {
        None => {}
        Some(v) => match v.as_u64() {
            Some(t) if t >= 1 => cd.start_timeout = Some(t),
            _ => errs.push(
                &format!("{path}.startTimeout"),
                "must be a whole number of seconds, at least 1",
            ),
        },
    }

    if let Some(v) = opt_value(obj, "restartPolicy") {
        let p = format!("{path}.restartPolicy");
        match v.as_object() {
            None => errs.push(&p, "must be an object"),
            Some(o) => {
                for f in o.keys() {
                    if !["enabled", "ignoredExitCodes", "restartAttemptPeriod"]
                        .contains(&f.as_str())
                    {
                        errs.push(&format!("{p}.{f}"), "unknown field");
                    }
                }
                let enabled = match o.get("enabled") {
                    Some(Value::Bool(b)) => *b,
                    _ => {
                        errs.push(&format!("{p}.enabled"), "is required (true or false)");
                        false
                    }
                };
                let mut codes = Vec::new();
                match o.get("ignoredExitCodes") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(list)) => {
                        if list.len() > 50 {
                            errs.push(
                                &format!("{p}.ignoredExitCodes"),
                                "holds more than 50 exit codes",
                            );
                        }
                        for (k, c) in list.iter().enumerate() {
                            match c.as_i64().and_then(|c| i32::try_from(c).ok()) {
                                Some(c) => codes.push(c),
                                None => errs.push(
                                    &format!("{p}.ignoredExitCodes[{k}]"),
                                    "must be an integer",
                                ),
                            }
                        }
                    }
                    Some(_) => errs.push(&format!("{p}.ignoredExitCodes"), "must be an array"),
                }
                let period = match o.get("restartAttemptPeriod") {
                    None | Some(Value::Null) => 300,
                    Some(v) => match v.as_u64() {
                        Some(s) if (60..=1800).contains(&s) => s,
                        _ => {
                            errs.push(
                                &format!("{p}.restartAttemptPeriod"),
                                "must be 60-1800 seconds",
                            );
                            300
                        }
                    },
                };
                if enabled {
                    cd.restart_policy = Some(RestartPolicy {
                        ignored_exit_codes: codes,
                        restart_attempt_period: period,
                    });
                }
            }
        }
    }

    for (p, o) in objects(obj, "secrets", path, &["name", "valueFrom"], errs) {
        let name = string_field(o, "name", &p, errs);
        let value_from = string_field(o, "valueFrom", &p, errs);
        if let (Some(n), Some(v)) = (name, value_from) {
            cd.secrets.push((n, v));
        }
    }

    for (p, o) in objects(obj, "environmentFiles", path, &["value", "type"], errs) {
        let value = string_field(o, "value", &p, errs);
        match o.get("type") {
            Some(Value::String(t)) if t == "s3" => {}
            _ => errs.push(&format!("{p}.type"), "must be \"s3\""),
        }
        match value {
            Some(v) if v.starts_with('/') => cd.environment_files.push(v),
            Some(v) => errs.push(
                &format!("{p}.value"),
                format!(
                    "{v:?}: environment files in S3 are not supported (give a local absolute path)"
                ),
            ),
            None => {}
        }
    }
}

/// Task-wide rules: dependencies name other containers, never an essential one for COMPLETE
/// or SUCCESS (it would stop the task), and form no cycle.
pub(super) fn check_task(containers: &[ContainerDefinition], errs: &mut Errors) {
    for (i, c) in containers.iter().enumerate() {
        for (k, d) in c.depends_on.iter().enumerate() {
            let p = format!("containerDefinitions[{i}].dependsOn[{k}]");
            match containers.iter().find(|o| o.name == d.container) {
                None => errs.push(
                    &format!("{p}.containerName"),
                    format!("{:?} is not a container of this task", d.container),
                ),
                Some(o) if o.name == c.name => errs.push(
                    &format!("{p}.containerName"),
                    "a container cannot depend on itself",
                ),
                Some(o)
                    if o.essential && (d.condition == "COMPLETE" || d.condition == "SUCCESS") =>
                {
                    errs.push(
                        &format!("{p}.condition"),
                        format!(
                            "{} cannot target {:?}, an essential container",
                            d.condition, o.name
                        ),
                    )
                }
                Some(_) => {}
            }
        }
    }
    let graph: Vec<(String, Vec<String>)> = containers
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.depends_on.iter().map(|d| d.container.clone()).collect(),
            )
        })
        .collect();
    if let Some(cycle) = crate::runtime::lifecycle::find_cycle(&graph) {
        errs.push(
            "containerDefinitions",
            format!("dependsOn forms a cycle: {}", cycle.join(" -> ")),
        );
    }
}
