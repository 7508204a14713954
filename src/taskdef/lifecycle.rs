//! A container's lifecycle fields: `dependsOn`, `startTimeout`, `healthCheck`,
//! `restartPolicy`, `secrets` and `environmentFiles`, with ECS's rules. Every problem is
//! reported with its field path, as in [`super::parse`].

use serde_json::{Map, Value};

use super::parse::{check_keys, object, opt_value, Errors};
use super::{ContainerDefinition, DependsOn, HealthCheck, RestartPolicy};

/// Container keys handled here.
pub(super) const CONTAINER_KEYS: &[&str] = &[
    "dependsOn",
    "startTimeout",
    "healthCheck",
    "restartPolicy",
    "secrets",
    "environmentFiles",
];

/// A required, non-empty string member.
pub(super) fn string_field(
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

/// The objects of the array `key` (empty when absent), each with its path; other entries and
/// unknown members are reported. `path` is the object's own path, empty at the task level.
pub(super) fn objects<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    allowed: &[&str],
    errs: &mut Errors,
) -> Vec<(String, &'a Map<String, Value>)> {
    let mut out = Vec::new();
    let kpath = if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    };
    match opt_value(obj, key) {
        None => {}
        Some(Value::Array(list)) => {
            for (k, v) in list.iter().enumerate() {
                let p = format!("{kpath}[{k}]");
                match v.as_object() {
                    Some(o) => {
                        check_keys(o, allowed, &p, errs);
                        out.push((p, o));
                    }
                    None => errs.push(&p, "must be an object"),
                }
            }
        }
        Some(_) => errs.push(&kpath, "must be an array"),
    }
    out
}

/// ECS's limit on `environmentFiles` per container.
const MAX_ENVIRONMENT_FILES: usize = 10;

/// `healthCheck`: (key, ECS's default, allowed range) of its numeric members, in seconds but
/// for `retries`.
const HEALTH_CHECK_NUMBERS: [(&str, u64, (u64, u64)); 4] = [
    ("interval", 30, (5, 300)),
    ("timeout", 5, (2, 60)),
    ("retries", 3, (1, 10)),
    ("startPeriod", 0, (0, 300)),
];

fn parse_health_check(v: &Value, path: &str, errs: &mut Errors) -> Option<HealthCheck> {
    let keys = ["command", "interval", "timeout", "retries", "startPeriod"];
    let o = object(v, &keys, path, errs)?;
    let mut ok = true;
    let mut numbers = [0; 4];
    for ((key, default, (lo, hi)), n) in HEALTH_CHECK_NUMBERS.iter().zip(numbers.iter_mut()) {
        *n = match opt_value(o, key) {
            None => *default,
            Some(v) => match v.as_u64() {
                Some(x) if (*lo..=*hi).contains(&x) => x,
                _ => {
                    errs.push(
                        &format!("{path}.{key}"),
                        format!("must be a whole number from {lo} to {hi}, got {v}"),
                    );
                    ok = false;
                    *default
                }
            },
        };
    }
    let cpath = format!("{path}.command");
    let command: Option<Vec<String>> = match opt_value(o, "command") {
        None => {
            errs.push(&cpath, "is required");
            None
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .or_else(|| {
                errs.push(&cpath, "must be an array of strings");
                None
            }),
        Some(_) => {
            errs.push(&cpath, "must be an array of strings");
            None
        }
    };
    let command = command.filter(|c| match c.first().map(String::as_str) {
        Some("CMD" | "CMD-SHELL") if c.len() >= 2 && !c[1].is_empty() => true,
        Some("CMD" | "CMD-SHELL") => {
            errs.push(&cpath, format!("{:?} needs a command after it", c[0]));
            false
        }
        _ => {
            errs.push(
                &cpath,
                "must start with \"CMD\" (then the program and its arguments) or \"CMD-SHELL\" (then a shell command)",
            );
            false
        }
    });
    let [interval, timeout, retries, start_period] = numbers;
    Some(HealthCheck {
        command: command?,
        interval,
        timeout,
        retries,
        start_period,
    })
    .filter(|_| ok)
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
                "START" | "COMPLETE" | "SUCCESS" | "HEALTHY" => Some(s.clone()),
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

    if let Some(v) = opt_value(obj, "healthCheck") {
        cd.health_check = parse_health_check(v, &format!("{path}.healthCheck"), errs);
    }

    if let Some(v) = opt_value(obj, "restartPolicy") {
        let p = format!("{path}.restartPolicy");
        match v.as_object() {
            None => errs.push(&p, "must be an object"),
            Some(o) => {
                check_keys(
                    o,
                    &["enabled", "ignoredExitCodes", "restartAttemptPeriod"],
                    &p,
                    errs,
                );
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

    let files = objects(obj, "environmentFiles", path, &["value", "type"], errs);
    if files.len() > MAX_ENVIRONMENT_FILES {
        errs.push(
            &format!("{path}.environmentFiles"),
            format!(
                "holds {} files; at most {MAX_ENVIRONMENT_FILES} are allowed",
                files.len()
            ),
        );
    }
    for (p, o) in files {
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
/// or SUCCESS (it would stop the task), only one with a health check for HEALTHY, and form
/// no cycle.
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
                Some(o) if d.condition == "HEALTHY" && o.health_check.is_none() => errs.push(
                    &format!("{p}.condition"),
                    format!("HEALTHY needs {:?} to have a healthCheck", o.name),
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
    // As in ECS's agent, links and volumesFrom order containers too: a container starts after
    // those it links to or takes volumes from.
    let graph: Vec<(String, Vec<String>)> = containers
        .iter()
        .map(|c| {
            let deps = c.depends_on.iter().map(|d| d.container.clone());
            let links = c.links.iter().map(|(n, _)| n.clone());
            let from = c.volumes_from.iter().map(|v| v.source_container.clone());
            // Self-references are reported on their own.
            let others = deps.chain(links).chain(from).filter(|n| *n != c.name);
            (c.name.clone(), others.collect())
        })
        .collect();
    if let Some(cycle) = crate::runtime::lifecycle::find_cycle(&graph) {
        errs.push(
            "containerDefinitions",
            format!(
                "dependsOn, links and volumesFrom form a cycle: {}",
                cycle.join(" -> ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::testing::{assert_errors, parse, task};
    use super::super::HealthCheck;

    #[test]
    fn health_check_defaults_and_ranges() {
        let td = parse(&task(
            "",
            &[
                r#""name":"a","healthCheck":{"command":["CMD-SHELL","curl -f localhost || exit 1"]}"#,
            ],
        ));
        assert_eq!(
            td.containers[0].health_check,
            Some(HealthCheck {
                command: vec!["CMD-SHELL".into(), "curl -f localhost || exit 1".into()],
                interval: 30,
                timeout: 5,
                retries: 3,
                start_period: 0,
            })
        );
        let td = parse(&task(
            "",
            &[
                r#""name":"a","healthCheck":{"command":["CMD","/bin/check","-q"],"interval":300,
                 "timeout":60,"retries":10,"startPeriod":300}"#,
            ],
        ));
        let h = td.containers[0].health_check.as_ref().unwrap();
        assert_eq!(
            (h.interval, h.timeout, h.retries, h.start_period),
            (300, 60, 10, 300)
        );
        let p = "containerDefinitions[0].healthCheck";
        assert_errors(
            &task(
                "",
                &[
                    r#""name":"a","healthCheck":{"command":["CMD"],"interval":4,"timeout":61,
                     "retries":0,"startPeriod":301}"#,
                ],
            ),
            &[
                &format!("{p}.interval: must be a whole number from 5 to 300, got 4"),
                &format!("{p}.timeout: must be a whole number from 2 to 60, got 61"),
                &format!("{p}.retries: must be a whole number from 1 to 10, got 0"),
                &format!("{p}.startPeriod: must be a whole number from 0 to 300, got 301"),
                &format!("{p}.command: \"CMD\" needs a command after it"),
            ],
        );
        assert_errors(
            &task("", &[r#""name":"a","healthCheck":{"command":["NONE"],"retries":"3"}"#]),
            &[
                &format!("{p}.retries: must be a whole number from 1 to 10, got \"3\""),
                &format!("{p}.command: must start with \"CMD\" (then the program and its arguments) or \"CMD-SHELL\" (then a shell command)"),
            ],
        );
        assert_errors(
            &task("", &[r#""name":"a","healthCheck":{"interval":10}"#]),
            &[&format!("{p}.command: is required")],
        );
    }

    #[test]
    fn depends_on_rules() {
        let check = r#""healthCheck":{"command":["CMD","true"]}"#;
        let td = parse(&task(
            "",
            &[
                r#""name":"app","dependsOn":[{"containerName":"db","condition":"HEALTHY"},
                   {"containerName":"init","condition":"SUCCESS"}]"#,
                &format!(r#""name":"db",{check}"#),
                r#""name":"init","essential":false"#,
            ],
        ));
        assert_eq!(td.containers[0].depends_on[0].condition, "HEALTHY");
        assert_errors(
            &task(
                "",
                &[
                    r#""name":"app","dependsOn":[{"containerName":"db","condition":"HEALTHY"},
                       {"containerName":"db","condition":"COMPLETE"},{"containerName":"nope","condition":"START"},
                       {"containerName":"app","condition":"START"},{"containerName":"db","condition":"READY"}]"#,
                    r#""name":"db""#,
                ],
            ),
            &[
                "containerDefinitions[0].dependsOn[0].condition: HEALTHY needs \"db\" to have a healthCheck",
                "containerDefinitions[0].dependsOn[1].condition: COMPLETE cannot target \"db\", an essential container",
                "containerDefinitions[0].dependsOn[2].containerName: \"nope\" is not a container of this task",
                "containerDefinitions[0].dependsOn[3].containerName: a container cannot depend on itself",
                "containerDefinitions[0].dependsOn[4].condition: \"READY\" is not one of START, COMPLETE, SUCCESS, HEALTHY",
            ],
        );
    }

    #[test]
    fn cycles_through_depends_on_links_and_volumes_from() {
        assert_errors(
            &task(
                "",
                &[
                    r#""name":"a","dependsOn":[{"containerName":"b","condition":"START"}]"#,
                    r#""name":"b","dependsOn":[{"containerName":"a","condition":"START"}]"#,
                ],
            ),
            &["containerDefinitions: dependsOn, links and volumesFrom form a cycle: a -> b -> a"],
        );
        assert_errors(
            &task(
                r#""networkMode":"bridge","#,
                &[
                    r#""name":"a","links":["b"]"#,
                    r#""name":"b","volumesFrom":[{"sourceContainer":"c"}]"#,
                    r#""name":"c","dependsOn":[{"containerName":"a","condition":"START"}]"#,
                ],
            ),
            &["containerDefinitions: dependsOn, links and volumesFrom form a cycle: a -> b -> c -> a"],
        );
        // A chain is fine.
        parse(&task(
            "",
            &[
                r#""name":"a","links":["b"]"#,
                r#""name":"b","volumesFrom":[{"sourceContainer":"c"}]"#,
                r#""name":"c""#,
            ],
        ));
    }

    #[test]
    fn secrets_and_environment_files() {
        let td = parse(&task(
            "",
            &[
                r#""name":"a","secrets":[{"name":"DB_PASSWORD","valueFrom":"arn:aws:ssm:us-east-1:1:parameter/db"}],
                 "environmentFiles":[{"value":"/etc/app/app.env","type":"s3"}]"#,
            ],
        ));
        let c = &td.containers[0];
        assert_eq!(c.secrets[0].0, "DB_PASSWORD");
        assert_eq!(c.environment_files, vec!["/etc/app/app.env"]);
        let p = "containerDefinitions[0]";
        assert_errors(
            &task(
                "",
                &[r#""name":"a","secrets":[{"name":"A"},{"valueFrom":"x"},{"name":"","valueFrom":"y"}],
                     "environmentFiles":[{"value":"arn:aws:s3:::bucket/app.env","type":"s3"},{"value":"/x.env"}]"#],
            ),
            &[
                &format!("{p}.secrets[0].valueFrom: is required"),
                &format!("{p}.secrets[1].name: is required"),
                &format!("{p}.secrets[2].name: is required"),
                &format!("{p}.environmentFiles[0].value: \"arn:aws:s3:::bucket/app.env\": environment files in S3 are not supported (give a local absolute path)"),
                &format!("{p}.environmentFiles[1].type: must be \"s3\""),
            ],
        );
        let files: Vec<String> = (0..11)
            .map(|i| format!(r#"{{"value":"/e{i}.env","type":"s3"}}"#))
            .collect();
        assert_errors(
            &task(
                "",
                &[&format!(
                    r#""name":"a","environmentFiles":[{}]"#,
                    files.join(",")
                )],
            ),
            &[&format!(
                "{p}.environmentFiles: holds 11 files; at most 10 are allowed"
            )],
        );
    }
}
