//! A container's remaining fields: `dockerLabels`, `logConfiguration`, `resourceRequirements`,
//! `versionConsistency`, `dockerSecurityOptions`, and those an edge host can never honour
//! (FireLens, gMSA credential specs), which are refused with "not supported".

use serde_json::{Map, Value};

use super::lifecycle::{objects, string_field};
use super::parse::{is_empty_value, object, opt_value, Errors};
use super::volumes::string_map;
use super::{ContainerDefinition, LogConfiguration, ResourceRequirement};

/// Container keys handled here.
pub(super) const CONTAINER_KEYS: &[&str] = &[
    "dockerLabels",
    "logConfiguration",
    "resourceRequirements",
    "versionConsistency",
    "dockerSecurityOptions",
    "firelensConfiguration",
    "credentialSpecs",
];

/// Log drivers ECS knows that skiff cannot feed: they ship logs to services or daemons
/// (CloudWatch, FireLens, Splunk, fluentd, ...) an edge host does not run for us.
const OTHER_LOG_DRIVERS: &[&str] = &[
    "awslogs",
    "awsfirelens",
    "fluentd",
    "gelf",
    "journald",
    "splunk",
    "syslog",
    "logentries",
];

/// Docker's json-file options.
const JSON_FILE_OPTIONS: &[&str] = &[
    "max-size",
    "max-file",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
];

/// Parses the fields of this module into `cd`.
pub(super) fn parse_container_meta(
    obj: &Map<String, Value>,
    path: &str,
    cd: &mut ContainerDefinition,
    errs: &mut Errors,
) {
    cd.docker_labels = string_map(obj, "dockerLabels", path, errs);
    if let Some(v) = opt_value(obj, "logConfiguration") {
        cd.log_configuration =
            parse_log_configuration(v, &format!("{path}.logConfiguration"), errs);
    }

    for (p, o) in objects(obj, "resourceRequirements", path, &["type", "value"], errs) {
        let value = string_field(o, "value", &p, errs);
        match string_field(o, "type", &p, errs) {
            Some(t) if t == "GPU" || t == "InferenceAccelerator" => {
                errs.push(
                    &format!("{p}.type"),
                    format!("{t} is not supported by skiff (no GPU or accelerator support)"),
                );
                if let Some(value) = value {
                    cd.resource_requirements
                        .push(ResourceRequirement { kind: t, value });
                }
            }
            Some(t) => errs.push(
                &format!("{p}.type"),
                format!("{t:?} is not one of GPU, InferenceAccelerator"),
            ),
            None => {}
        }
    }

    match opt_value(obj, "versionConsistency") {
        None => {}
        Some(Value::String(s)) if s == "enabled" || s == "disabled" => {}
        Some(_) => errs.push(
            &format!("{path}.versionConsistency"),
            "must be \"enabled\" or \"disabled\"",
        ),
    }

    match opt_value(obj, "dockerSecurityOptions") {
        None => {}
        Some(Value::Array(list)) => {
            for (k, o) in list.iter().enumerate() {
                let p = format!("{path}.dockerSecurityOptions[{k}]");
                match o.as_str() {
                    Some(s) => {
                        if let Err(e) = check_security_option(s) {
                            errs.push(&p, e);
                        }
                    }
                    None => errs.push(&p, "must be a string"),
                }
            }
        }
        Some(_) => errs.push(
            &format!("{path}.dockerSecurityOptions"),
            "must be an array of strings",
        ),
    }

    for (key, what) in [
        ("firelensConfiguration", "FireLens log routing is"),
        ("credentialSpecs", "gMSA credential specs are"),
    ] {
        if obj.get(key).is_some_and(|v| !is_empty_value(v)) {
            errs.push(
                &format!("{path}.{key}"),
                format!("{what} not supported by skiff"),
            );
        }
    }
}

/// `dockerSecurityOptions[]`: what skiff does anyway is accepted (`no_new_privs` is always
/// set; no AppArmor profile and no SELinux label are applied); asking for more is refused.
fn check_security_option(s: &str) -> Result<(), String> {
    match s.split_once(['=', ':']) {
        None if s == "no-new-privileges" => Ok(()),
        Some(("no-new-privileges", "true")) => Ok(()),
        Some(("apparmor", "unconfined")) | Some(("label", "disable")) => Ok(()),
        Some(("apparmor", _)) => Err(format!(
            "{s:?}: AppArmor profiles are not supported by skiff (only apparmor:unconfined)"
        )),
        Some(("label", _)) => Err(format!(
            "{s:?}: SELinux labels are not supported by skiff (only label:disable)"
        )),
        Some(("credentialspec", _)) => Err(format!(
            "{s:?}: gMSA credential specs are not supported by skiff"
        )),
        _ => Err(format!(
            "{s:?} is not one of no-new-privileges, apparmor:PROFILE, label:VALUE, credentialspec:PATH"
        )),
    }
}

fn parse_log_configuration(v: &Value, path: &str, errs: &mut Errors) -> Option<LogConfiguration> {
    let o = object(v, &["logDriver", "options", "secretOptions"], path, errs)?;
    let driver = string_field(o, "logDriver", path, errs)?;
    match driver.as_str() {
        "json-file" | "none" => {}
        d if OTHER_LOG_DRIVERS.contains(&d) => {
            errs.push(
                &format!("{path}.logDriver"),
                format!("{d} is not supported by skiff (json-file and none are)"),
            );
            return None;
        }
        d => {
            errs.push(
                &format!("{path}.logDriver"),
                format!("{d:?} is not a log driver (json-file, none, awslogs, awsfirelens, fluentd, gelf, journald, splunk, syslog)"),
            );
            return None;
        }
    }
    let options = string_map(o, "options", path, errs);
    let opath = format!("{path}.options");
    if driver == "none" && !options.is_empty() {
        errs.push(&opath, "the none driver takes no options");
    }
    if driver == "json-file" {
        for (k, v) in &options {
            let kpath = format!("{opath}.{k}");
            match k.as_str() {
                "max-size" if docker_size(v).is_none() => {
                    errs.push(&kpath, format!("{v:?} is not a size like 10m or 1g"))
                }
                "max-file" if !v.parse::<u32>().is_ok_and(|n| n >= 1) => {
                    errs.push(&kpath, format!("{v:?} is not a whole number, 1 or more"))
                }
                "max-file" if v != "1" && !options.contains_key("max-size") => {
                    errs.push(&kpath, "needs max-size (files rotate by size)")
                }
                "compress" if v != "true" && v != "false" => {
                    errs.push(&kpath, "must be \"true\" or \"false\"")
                }
                k if !JSON_FILE_OPTIONS.contains(&k) => {
                    errs.push(&kpath, "is not an option of the json-file driver")
                }
                _ => {}
            }
        }
    }
    let mut secret_options = Vec::new();
    for (p, so) in objects(o, "secretOptions", path, &["name", "valueFrom"], errs) {
        let name = string_field(so, "name", &p, errs);
        let value_from = string_field(so, "valueFrom", &p, errs);
        if let (Some(n), Some(v)) = (name, value_from) {
            secret_options.push((n, v));
        }
    }
    Some(LogConfiguration {
        log_driver: driver,
        options,
        secret_options,
    })
}

/// Docker's sizes (`10m`, `1.5g`, `512k`, `100`, with an optional `b`/`ib`): bytes.
fn docker_size(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let f: f64 = num.trim().parse().ok()?;
    (f.is_finite() && f > 0.0).then_some((f * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::super::parse::testing::{assert_errors, parse, task};
    use super::*;

    #[test]
    fn labels_logging_and_accepted_options() {
        let td = parse(&task(
            "",
            &[r#""name":"a","dockerLabels":{"com.example.team":"edge"},
                 "logConfiguration":{"logDriver":"json-file","options":{"max-size":"10m","max-file":"3","compress":"true"}},
                 "dockerSecurityOptions":["no-new-privileges","apparmor:unconfined","label:disable","no-new-privileges:true"],
                 "versionConsistency":"disabled""#],
        ));
        let c = &td.containers[0];
        assert_eq!(c.docker_labels["com.example.team"], "edge");
        let lc = c.log_configuration.as_ref().unwrap();
        assert_eq!(lc.log_driver, "json-file");
        assert_eq!(lc.options["max-size"], "10m");
        let td = parse(&task(
            "",
            &[r#""name":"a","logConfiguration":{"logDriver":"none"}"#],
        ));
        assert_eq!(
            td.containers[0]
                .log_configuration
                .as_ref()
                .unwrap()
                .log_driver,
            "none"
        );
    }

    #[test]
    fn what_an_edge_host_cannot_honour_is_not_supported() {
        let p = "containerDefinitions";
        assert_errors(
            &task(
                "",
                &[
                    r#""name":"a","logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"g"}},
                       "firelensConfiguration":{"type":"fluentbit"},"credentialSpecs":["credentialspecdomainless:arn"],
                       "resourceRequirements":[{"type":"GPU","value":"1"},{"type":"InferenceAccelerator","value":"d1"},{"type":"TPU","value":"1"}],
                       "dockerSecurityOptions":["credentialspec:file://x.json","apparmor:docker-default","label:type:svirt_apache_t","seccomp=unconfined",3]"#,
                    r#""name":"b","logConfiguration":{"logDriver":"awsfirelens"}"#,
                ],
            ),
            &[
                &format!("{p}[0].logConfiguration.logDriver: awslogs is not supported by skiff (json-file and none are)"),
                &format!("{p}[0].firelensConfiguration: FireLens log routing is not supported by skiff"),
                &format!("{p}[0].credentialSpecs: gMSA credential specs are not supported by skiff"),
                &format!("{p}[0].resourceRequirements[0].type: GPU is not supported by skiff (no GPU or accelerator support)"),
                &format!("{p}[0].resourceRequirements[1].type: InferenceAccelerator is not supported by skiff (no GPU or accelerator support)"),
                &format!("{p}[0].resourceRequirements[2].type: \"TPU\" is not one of GPU, InferenceAccelerator"),
                &format!("{p}[0].dockerSecurityOptions[0]: \"credentialspec:file://x.json\": gMSA credential specs are not supported by skiff"),
                &format!("{p}[0].dockerSecurityOptions[1]: \"apparmor:docker-default\": AppArmor profiles are not supported by skiff (only apparmor:unconfined)"),
                &format!("{p}[0].dockerSecurityOptions[2]: \"label:type:svirt_apache_t\": SELinux labels are not supported by skiff (only label:disable)"),
                &format!("{p}[0].dockerSecurityOptions[3]: \"seccomp=unconfined\" is not one of no-new-privileges, apparmor:PROFILE, label:VALUE, credentialspec:PATH"),
                &format!("{p}[0].dockerSecurityOptions[4]: must be a string"),
                &format!("{p}[1].logConfiguration.logDriver: awsfirelens is not supported by skiff (json-file and none are)"),
            ],
        );
    }

    #[test]
    fn log_configuration_errors() {
        let p = "containerDefinitions[0].logConfiguration";
        assert_errors(
            &task(
                "",
                &[
                    r#""name":"a","logConfiguration":{"logDriver":"json-file","options":{"max-size":"lots",
                     "max-file":"0","compress":"yes","colour":"red","tag":"{{.Name}}"},
                     "secretOptions":[{"name":"k"}],"extra":1}"#,
                ],
            ),
            &[
                &format!("{p}.extra: unknown field"),
                &format!("{p}.options.max-size: \"lots\" is not a size like 10m or 1g"),
                &format!("{p}.options.max-file: \"0\" is not a whole number, 1 or more"),
                &format!("{p}.options.compress: must be \"true\" or \"false\""),
                &format!("{p}.options.colour: is not an option of the json-file driver"),
                &format!("{p}.secretOptions[0].valueFrom: is required"),
            ],
        );
        assert_errors(
            &task(
                "",
                &[
                    r#""name":"a","logConfiguration":{"logDriver":"json-file","options":{"max-file":"5"}}"#,
                ],
            ),
            &[&format!(
                "{p}.options.max-file: needs max-size (files rotate by size)"
            )],
        );
        assert_errors(
            &task(
                "",
                &[r#""name":"a","logConfiguration":{"logDriver":"none","options":{"a":"b"}}"#],
            ),
            &[&format!("{p}.options: the none driver takes no options")],
        );
        assert_errors(
            &task("", &[r#""name":"a","logConfiguration":{"logDriver":"loki"},"versionConsistency":"on""#]),
            &[
                &format!("{p}.logDriver: \"loki\" is not a log driver (json-file, none, awslogs, awsfirelens, fluentd, gelf, journald, splunk, syslog)"),
                "containerDefinitions[0].versionConsistency: must be \"enabled\" or \"disabled\"",
            ],
        );
        assert_errors(
            &task(
                "",
                &[r#""name":"a","logConfiguration":{"options":{}},"dockerLabels":{"a":1}"#],
            ),
            &[
                &format!("{p}.logDriver: is required"),
                "containerDefinitions[0].dockerLabels.a: must be a string",
            ],
        );
    }

    #[test]
    fn docker_sizes() {
        assert_eq!(docker_size("10m"), Some(10 << 20));
        assert_eq!(docker_size("1.5g"), Some(3 << 29));
        assert_eq!(docker_size("512k"), Some(512 << 10));
        assert_eq!(docker_size("100"), Some(100));
        assert_eq!(docker_size("10MB"), Some(10 << 20));
        assert_eq!(docker_size("10mib"), Some(10 << 20));
        assert_eq!(docker_size("0"), None);
        assert_eq!(docker_size("m"), None);
        assert_eq!(docker_size(""), None);
    }
}
