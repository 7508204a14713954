//! The network fields of a container: `portMappings`, `links`, `disableNetworking`, with
//! ECS's rules per network mode. Every problem is reported with its field path, as in
//! [`super::parse`].

use serde_json::{Map, Value};

use super::linux::TaskContext;
use super::parse::{object, opt_value, Errors};
use super::{ContainerDefinition, NetworkMode, PortMapping, PortProtocol};

/// Container keys handled here.
pub(super) const CONTAINER_KEYS: &[&str] = &["portMappings", "links", "disableNetworking"];

const PORT_MAPPING_KEYS: &[&str] = &[
    "containerPort",
    "hostPort",
    "protocol",
    "name",
    "containerPortRange",
    "appProtocol",
];

fn port_number(v: &Value, min: u64) -> Option<u16> {
    v.as_u64()
        .filter(|n| (min..=65535).contains(n))
        .map(|n| n as u16)
}

/// `"8000-8010"` → (8000, 11).
fn port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a >= 1 && b > a).then_some((a, b - a + 1))
}

/// Parses the fields of this module into `cd`.
pub(super) fn parse_container_network(
    obj: &Map<String, Value>,
    path: &str,
    task: TaskContext,
    cd: &mut ContainerDefinition,
    errs: &mut Errors,
) {
    if task.network_mode == NetworkMode::Awsvpc && cd.hostname.is_some() {
        errs.push(
            &format!("{path}.hostname"),
            "cannot be used in awsvpc network mode",
        );
    }
    match opt_value(obj, "disableNetworking") {
        None => {}
        Some(Value::Bool(b)) => {
            cd.disable_networking = *b;
            if *b && task.network_mode == NetworkMode::Awsvpc {
                errs.push(
                    &format!("{path}.disableNetworking"),
                    "is not supported in awsvpc network mode",
                );
            }
        }
        Some(_) => errs.push(&format!("{path}.disableNetworking"), "must be a boolean"),
    }

    match opt_value(obj, "portMappings") {
        None => {}
        Some(Value::Array(list)) => {
            if task.network_mode == NetworkMode::None && !list.is_empty() {
                errs.push(
                    &format!("{path}.portMappings"),
                    "cannot be used in none network mode (no connectivity)",
                );
            }
            for (k, m) in list.iter().enumerate() {
                let mpath = format!("{path}.portMappings[{k}]");
                if let Some(pm) = parse_port_mapping(m, &mpath, task, errs) {
                    cd.port_mappings.push(pm);
                }
            }
        }
        Some(_) => errs.push(&format!("{path}.portMappings"), "must be an array"),
    }

    match opt_value(obj, "links") {
        None => {}
        Some(Value::Array(list)) => {
            if task.network_mode != NetworkMode::Bridge && !list.is_empty() {
                errs.push(
                    &format!("{path}.links"),
                    format!(
                        "only in bridge network mode (this task uses {})",
                        task.network_mode.as_str()
                    ),
                );
            }
            for (k, l) in list.iter().enumerate() {
                let lpath = format!("{path}.links[{k}]");
                let Some(s) = l.as_str() else {
                    errs.push(&lpath, "must be a string (name or name:alias)");
                    continue;
                };
                let (name, alias) = match s.split_once(':') {
                    Some((n, a)) => (n, Some(a)),
                    None => (s, None),
                };
                let ok = |x: &str| {
                    !x.is_empty()
                        && x.len() <= 255
                        && x.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                };
                if !ok(name) || alias.is_some_and(|a| !ok(a)) {
                    errs.push(
                        &lpath,
                        format!("{s:?}: expected name or name:alias of letters, digits, - and _"),
                    );
                    continue;
                }
                cd.links.push((name.to_string(), alias.map(str::to_string)));
            }
        }
        Some(_) => errs.push(&format!("{path}.links"), "must be an array"),
    }
}

fn parse_port_mapping(
    v: &Value,
    path: &str,
    task: TaskContext,
    errs: &mut Errors,
) -> Option<PortMapping> {
    let obj = object(v, PORT_MAPPING_KEYS, path, errs)?;
    let protocol = match opt_value(obj, "protocol") {
        None => PortProtocol::Tcp,
        Some(Value::String(s)) if s == "tcp" => PortProtocol::Tcp,
        Some(Value::String(s)) if s == "udp" => PortProtocol::Udp,
        Some(_) => {
            errs.push(&format!("{path}.protocol"), "must be tcp or udp");
            return None;
        }
    };
    let host_port = match opt_value(obj, "hostPort") {
        None => None,
        Some(v) => match port_number(v, 0) {
            Some(0) => None,
            Some(p) => Some(p),
            None => {
                errs.push(
                    &format!("{path}.hostPort"),
                    "must be a port number (0-65535)",
                );
                return None;
            }
        },
    };
    let (container_port, count) = match (
        opt_value(obj, "containerPort"),
        opt_value(obj, "containerPortRange"),
    ) {
        (Some(_), Some(_)) => {
            errs.push(path, "give containerPort or containerPortRange, not both");
            return None;
        }
        (None, None) => {
            errs.push(&format!("{path}.containerPort"), "is required");
            return None;
        }
        (Some(v), None) => match port_number(v, 1) {
            Some(p) => (p, 1),
            None => {
                errs.push(
                    &format!("{path}.containerPort"),
                    "must be a port number (1-65535)",
                );
                return None;
            }
        },
        (None, Some(v)) => {
            let rpath = format!("{path}.containerPortRange");
            if task.network_mode == NetworkMode::Host {
                errs.push(&rpath, "only in bridge or awsvpc network mode");
                return None;
            }
            match v.as_str().and_then(port_range) {
                Some(r) if host_port.is_none() => r,
                Some(_) => {
                    errs.push(
                        &format!("{path}.hostPort"),
                        "cannot be given with containerPortRange (the host range is chosen)",
                    );
                    return None;
                }
                None => {
                    errs.push(&rpath, "must be a range like \"8000-8010\"");
                    return None;
                }
            }
        }
    };
    if matches!(task.network_mode, NetworkMode::Host | NetworkMode::Awsvpc) {
        if let Some(h) = host_port.filter(|h| *h != container_port) {
            errs.push(
                &format!("{path}.hostPort"),
                format!(
                    "must equal containerPort ({container_port}) in {} network mode, not {h}",
                    task.network_mode.as_str()
                ),
            );
            return None;
        }
    }
    // Service Connect's protocol: metadata only, for a proxy skiff does not run.
    if let Some(a) = opt_value(obj, "appProtocol") {
        if !matches!(a.as_str(), Some("http" | "http2" | "grpc")) {
            errs.push(
                &format!("{path}.appProtocol"),
                "must be http, http2 or grpc",
            );
        }
    }
    let name = match opt_value(obj, "name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errs.push(&format!("{path}.name"), "must be a string");
            None
        }
    };
    Some(PortMapping {
        container_port,
        // In host and awsvpc mode the host port is the container port.
        host_port: match task.network_mode {
            NetworkMode::Host | NetworkMode::Awsvpc if count == 1 => Some(container_port),
            _ => host_port,
        },
        protocol,
        count,
        name,
    })
}

/// Task-wide rules: links name other containers of the task; no host port is mapped twice.
pub(super) fn check_task(containers: &[ContainerDefinition], errs: &mut Errors) {
    let mut static_ports = std::collections::HashMap::new();
    for (i, c) in containers.iter().enumerate() {
        for (k, (name, _)) in c.links.iter().enumerate() {
            if name == &c.name || !containers.iter().any(|o| &o.name == name) {
                errs.push(
                    &format!("containerDefinitions[{i}].links[{k}]"),
                    format!("{name:?} is not another container of this task"),
                );
            }
        }
        for (k, m) in c.port_mappings.iter().enumerate() {
            let Some(h) = m.host_port else { continue };
            if let Some(prev) = static_ports.insert((h, m.protocol), (i, k)) {
                errs.push(
                    &format!("containerDefinitions[{i}].portMappings[{k}].hostPort"),
                    format!(
                        "{h}/{} is already mapped by containerDefinitions[{}].portMappings[{}]",
                        m.protocol.as_str(),
                        prev.0,
                        prev.1
                    ),
                );
            }
        }
    }
}
