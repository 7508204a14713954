//! The Linux runtime fields of a task definition: task `pidMode` / `ipcMode`, and per container
//! `privileged`, `readonlyRootFilesystem`, `user`, `ulimits`, `systemControls`, `interactive`,
//! `pseudoTerminal`, the DNS and hosts fields, and `linuxParameters.{capabilities, devices,
//! initProcessEnabled, sharedMemorySize, tmpfs}`. Every problem is reported with its field
//! path, as in [`super::parse`].

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::parse::{check_keys, get_string, is_empty_value, opt_value, Errors};
use super::{
    ContainerDefinition, Device, DevicePermission, IpcMode, NetworkMode, PidMode, Tmpfs, Ulimit,
};

/// Container keys handled here.
pub(super) const CONTAINER_KEYS: &[&str] = &[
    "privileged",
    "readonlyRootFilesystem",
    "user",
    "ulimits",
    "systemControls",
    "interactive",
    "pseudoTerminal",
    "dnsServers",
    "dnsSearchDomains",
    "extraHosts",
];

/// `linuxParameters` keys handled here (`maxSwap` and `swappiness` are parsed in `parse`).
pub(super) const LINUX_PARAMETERS_KEYS: &[&str] = &[
    "capabilities",
    "devices",
    "initProcessEnabled",
    "sharedMemorySize",
    "tmpfs",
];

/// The `ulimits` names ECS accepts.
const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Sysctls of the IPC namespace (besides `fs.mqueue.*`).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Linux capability names, without `CAP_`.
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Valueless tmpfs mount options ECS accepts.
const TMPFS_FLAGS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "unbindable",
    "runbindable",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
];

/// What the task level tells the container level.
#[derive(Debug, Clone, Copy)]
pub(super) struct TaskContext {
    pub(super) network_mode: NetworkMode,
    pub(super) ipc_mode: Option<IpcMode>,
}

/// Task `pidMode`: `task` or `host`.
pub(super) fn parse_pid_mode(obj: &Map<String, Value>, errs: &mut Errors) -> Option<PidMode> {
    match opt_value(obj, "pidMode")? {
        Value::String(s) => match s.as_str() {
            "task" => Some(PidMode::Task),
            "host" => Some(PidMode::Host),
            _ => {
                errs.push("pidMode", format!("{s:?} is not one of task, host"));
                None
            }
        },
        _ => {
            errs.push("pidMode", "must be a string (task or host)");
            None
        }
    }
}

/// Task `ipcMode`: `task`, `host` or `none`.
pub(super) fn parse_ipc_mode(obj: &Map<String, Value>, errs: &mut Errors) -> Option<IpcMode> {
    match opt_value(obj, "ipcMode")? {
        Value::String(s) => match s.as_str() {
            "task" => Some(IpcMode::Task),
            "host" => Some(IpcMode::Host),
            "none" => Some(IpcMode::None),
            _ => {
                errs.push("ipcMode", format!("{s:?} is not one of task, host, none"));
                None
            }
        },
        _ => {
            errs.push("ipcMode", "must be a string (task, host or none)");
            None
        }
    }
}

/// Parses the container fields of this module into `cd`. `obj` is the container object, `path`
/// its field path (`containerDefinitions[0]`).
pub(super) fn parse_container_linux(
    obj: &Map<String, Value>,
    path: &str,
    task: TaskContext,
    cd: &mut ContainerDefinition,
    errs: &mut Errors,
) {
    cd.privileged = get_bool(obj, "privileged", path, errs);
    cd.readonly_root_filesystem = get_bool(obj, "readonlyRootFilesystem", path, errs);
    cd.interactive = get_bool(obj, "interactive", path, errs);
    cd.pseudo_terminal = get_bool(obj, "pseudoTerminal", path, errs);
    cd.user = parse_user(obj, path, errs);
    cd.ulimits = parse_ulimits(obj, path, errs);
    cd.system_controls = parse_system_controls(obj, path, task, errs);
    parse_dns(obj, path, task, cd, errs);
    if let Some(Value::Object(lp)) = opt_value(obj, "linuxParameters") {
        let lp_path = format!("{path}.linuxParameters");
        parse_linux_parameters(lp, &lp_path, task, cd, errs);
    }
}

fn parse_linux_parameters(
    lp: &Map<String, Value>,
    path: &str,
    task: TaskContext,
    cd: &mut ContainerDefinition,
    errs: &mut Errors,
) {
    cd.init_process_enabled = get_bool(lp, "initProcessEnabled", path, errs);
    if let Some(v) = opt_value(lp, "capabilities") {
        let p = format!("{path}.capabilities");
        match v {
            Value::Object(caps) => {
                check_keys(caps, &["add", "drop"], &p, errs);
                cd.cap_add = parse_capabilities(caps, "add", &p, errs);
                cd.cap_drop = parse_capabilities(caps, "drop", &p, errs);
            }
            _ => errs.push(&p, "must be an object with add and drop lists"),
        }
    }
    cd.devices = parse_devices(lp, path, errs);
    cd.shared_memory_size = get_mib(lp, "sharedMemorySize", path, errs);
    if cd.shared_memory_size.is_some() && task.ipc_mode == Some(IpcMode::None) {
        errs.push(
            &format!("{path}.sharedMemorySize"),
            "cannot be used with ipcMode none, which mounts no /dev/shm",
        );
    }
    cd.tmpfs = parse_tmpfs(lp, path, errs);
}

/// `key` as a boolean; false when absent or null.
pub(super) fn get_bool(obj: &Map<String, Value>, key: &str, path: &str, errs: &mut Errors) -> bool {
    match opt_value(obj, key) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errs.push(&format!("{path}.{key}"), "must be true or false");
            false
        }
    }
}

/// A required string member of an array entry.
fn required_string(
    o: &Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Errors,
) -> Option<String> {
    if opt_value(o, key).is_none() {
        errs.push(&format!("{path}.{key}"), "is required");
        return None;
    }
    get_string(o, key, path, errs)
}

/// `key` as an array of `what`; empty when absent, or (after reporting) when not an array.
fn get_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    what: &str,
    errs: &mut Errors,
) -> &'a [Value] {
    match opt_value(obj, key) {
        None => &[],
        Some(Value::Array(a)) => a,
        Some(_) => {
            errs.push(
                &format!("{path}.{key}"),
                format!("must be an array of {what}"),
            );
            &[]
        }
    }
}

/// A size in MiB, at least 1.
fn get_mib(obj: &Map<String, Value>, key: &str, path: &str, errs: &mut Errors) -> Option<u64> {
    match opt_value(obj, key)? {
        Value::Number(n) => match n.as_u64() {
            Some(0) => {
                errs.push(&format!("{path}.{key}"), "must be at least 1 MiB, got 0");
                None
            }
            Some(m) => Some(m),
            None => {
                errs.push(
                    &format!("{path}.{key}"),
                    format!("must be a whole number of MiB, 1 or more; got {n}"),
                );
                None
            }
        },
        _ => {
            errs.push(
                &format!("{path}.{key}"),
                "must be a whole number of MiB, 1 or more",
            );
            None
        }
    }
}

/// An absolute path in the container that may be mounted on: not `/`, no `..` components.
fn check_container_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if p.contains('\0') {
        return Err(format!("{p:?} must not contain a NUL character"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} must not contain '..' components"));
    }
    if p.split('/').all(|c| c.is_empty() || c == ".") {
        return Err(format!(
            "{p:?} is the container's root; give a path below /"
        ));
    }
    Ok(())
}

fn parse_user(obj: &Map<String, Value>, path: &str, errs: &mut Errors) -> Option<String> {
    let user = get_string(obj, "user", path, errs)?;
    let parts: Vec<&str> = user.split(':').collect();
    let ok = parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c.is_control()));
    if ok {
        Some(user)
    } else {
        errs.push(
            &format!("{path}.user"),
            format!("{user:?} is not a user or user:group (uid, uid:gid, name or name:group, without whitespace)"),
        );
        None
    }
}

fn fmt_limit(v: u64) -> String {
    if v == u64::MAX {
        "-1 (unlimited)".to_string()
    } else {
        v.to_string()
    }
}

/// A `softLimit` / `hardLimit`: an integer of 0 or more, or -1 for unlimited (`u64::MAX`).
fn ulimit_value(o: &Map<String, Value>, key: &str, path: &str, errs: &mut Errors) -> Option<u64> {
    let p = format!("{path}.{key}");
    match opt_value(o, key) {
        None => {
            errs.push(&p, "is required");
            None
        }
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => Some(u64::MAX),
        Some(v) => {
            errs.push(
                &p,
                format!("{v} is not an integer of 0 or more, or -1 for unlimited"),
            );
            None
        }
    }
}

fn parse_ulimits(obj: &Map<String, Value>, path: &str, errs: &mut Errors) -> Vec<Ulimit> {
    let mut out: Vec<Ulimit> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let items = get_array(
        obj,
        "ulimits",
        path,
        "objects with name, softLimit and hardLimit",
        errs,
    );
    for (i, it) in items.iter().enumerate() {
        let p = format!("{path}.ulimits[{i}]");
        let Value::Object(u) = it else {
            errs.push(&p, "must be an object with name, softLimit and hardLimit");
            continue;
        };
        check_keys(u, &["name", "softLimit", "hardLimit"], &p, errs);
        let name = match required_string(u, "name", &p, errs) {
            Some(n) if ULIMIT_NAMES.contains(&n.as_str()) => Some(n),
            Some(n) => {
                errs.push(
                    &format!("{p}.name"),
                    format!(
                        "{n:?} is not a ulimit name; valid names are {}",
                        ULIMIT_NAMES.join(", ")
                    ),
                );
                None
            }
            None => None,
        };
        let soft = ulimit_value(u, "softLimit", &p, errs);
        let hard = ulimit_value(u, "hardLimit", &p, errs);
        if let Some(n) = &name {
            if let Some(first) = seen.get(n) {
                errs.push(
                    &format!("{p}.name"),
                    format!("duplicate ulimit {n:?} (already set by ulimits[{first}])"),
                );
                continue;
            }
            seen.insert(n.clone(), i);
        }
        let (Some(name), Some(soft), Some(hard)) = (name, soft, hard) else {
            continue;
        };
        if soft > hard {
            errs.push(
                &format!("{p}.softLimit"),
                format!(
                    "{} is more than hardLimit {}",
                    fmt_limit(soft),
                    fmt_limit(hard)
                ),
            );
            continue;
        }
        out.push(Ulimit { name, soft, hard });
    }
    out
}

/// Why a sysctl name is not allowed, if it is not.
fn check_sysctl(name: &str, task: TaskContext) -> Result<(), String> {
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if name.is_empty()
        || !chars_ok
        || name.contains("..")
        || name.starts_with('.')
        || name.ends_with('.')
    {
        return Err(format!(
            "{name:?} is not a valid sysctl name (lower-case letters, digits, '_' and '-', with '.' between non-empty parts)"
        ));
    }
    let ipc = IPC_SYSCTLS.contains(&name) || name.starts_with("fs.mqueue.");
    let net = name.starts_with("net.");
    if !ipc && !net {
        return Err(format!(
            "{name} is not a namespaced sysctl; setting it would change the host"
        ));
    }
    if net && task.network_mode == NetworkMode::Host {
        return Err(format!(
            "{name} cannot be set in host network mode: it would change the host's network stack"
        ));
    }
    if ipc && task.ipc_mode == Some(IpcMode::Host) {
        return Err(format!(
            "{name} cannot be set with ipcMode host: it would change the host's IPC namespace"
        ));
    }
    Ok(())
}

fn parse_system_controls(
    obj: &Map<String, Value>,
    path: &str,
    task: TaskContext,
    errs: &mut Errors,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let items = get_array(
        obj,
        "systemControls",
        path,
        "objects with namespace and value",
        errs,
    );
    for (i, it) in items.iter().enumerate() {
        let p = format!("{path}.systemControls[{i}]");
        let Value::Object(sc) = it else {
            errs.push(&p, "must be an object with namespace and value");
            continue;
        };
        check_keys(sc, &["namespace", "value"], &p, errs);
        let name = required_string(sc, "namespace", &p, errs);
        let value = required_string(sc, "value", &p, errs);
        let Some(name) = name else { continue };
        if let Err(e) = check_sysctl(&name, task) {
            errs.push(&format!("{p}.namespace"), e);
            continue;
        }
        if let Some(first) = seen.get(&name) {
            errs.push(
                &format!("{p}.namespace"),
                format!("duplicate sysctl {name} (already set by systemControls[{first}])"),
            );
            continue;
        }
        seen.insert(name.clone(), i);
        if let Some(value) = value {
            out.push((name, value));
        }
    }
    out
}

/// `capabilities.add` or `.drop`: names normalised to upper case without `CAP_`, or `ALL`.
fn parse_capabilities(
    caps: &Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Errors,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, it) in get_array(caps, key, path, "capability names", errs)
        .iter()
        .enumerate()
    {
        let p = format!("{path}.{key}[{i}]");
        let Value::String(s) = it else {
            errs.push(&p, "must be a string");
            continue;
        };
        let upper = s.to_ascii_uppercase();
        // `ALL` is taken without the prefix only (as Docker does).
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if upper != "ALL" && !CAPABILITIES.contains(&name) {
            errs.push(
                &p,
                format!("{s:?} is not a Linux capability; give a name such as SYS_ADMIN or NET_RAW (CAP_ prefix optional, any case), or ALL"),
            );
            continue;
        }
        if !out.iter().any(|c| c == name) {
            out.push(name.to_string());
        }
    }
    out
}

fn parse_devices(lp: &Map<String, Value>, path: &str, errs: &mut Errors) -> Vec<Device> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let items = get_array(
        lp,
        "devices",
        path,
        "objects with hostPath, containerPath and permissions",
        errs,
    );
    for (i, it) in items.iter().enumerate() {
        let p = format!("{path}.devices[{i}]");
        let Value::Object(d) = it else {
            errs.push(
                &p,
                "must be an object with hostPath, containerPath and permissions",
            );
            continue;
        };
        check_keys(d, &["hostPath", "containerPath", "permissions"], &p, errs);
        let host_path = match required_string(d, "hostPath", &p, errs) {
            Some(h) if h.starts_with('/') && !h.contains('\0') => Some(h),
            Some(h) => {
                errs.push(
                    &format!("{p}.hostPath"),
                    format!("{h:?} is not an absolute path"),
                );
                None
            }
            None => None,
        };
        let container_path = match get_string(d, "containerPath", &p, errs) {
            Some(c) => match check_container_path(&c) {
                Ok(()) => Some(c),
                Err(e) => {
                    errs.push(&format!("{p}.containerPath"), e);
                    None
                }
            },
            None if d.get("containerPath").is_some_and(|v| !v.is_null()) => None,
            // Defaults to hostPath, which must then be usable in the container.
            None => host_path
                .as_ref()
                .and_then(|h| match check_container_path(h) {
                    Ok(()) => Some(h.clone()),
                    Err(e) => {
                        errs.push(
                            &format!("{p}.hostPath"),
                            format!("{e} (containerPath defaults to hostPath)"),
                        );
                        None
                    }
                }),
        };
        let mut permissions = Vec::new();
        for (j, pv) in get_array(d, "permissions", &p, "read, write or mknod", errs)
            .iter()
            .enumerate()
        {
            let perm = match pv {
                Value::String(s) if s == "read" => DevicePermission::Read,
                Value::String(s) if s == "write" => DevicePermission::Write,
                Value::String(s) if s == "mknod" => DevicePermission::Mknod,
                other => {
                    errs.push(
                        &format!("{p}.permissions[{j}]"),
                        format!("{other} is not one of read, write, mknod"),
                    );
                    continue;
                }
            };
            if !permissions.contains(&perm) {
                permissions.push(perm);
            }
        }
        if permissions.is_empty() {
            permissions = vec![
                DevicePermission::Read,
                DevicePermission::Write,
                DevicePermission::Mknod,
            ];
        }
        let (Some(host_path), Some(container_path)) = (host_path, container_path) else {
            continue;
        };
        if let Some(first) = seen.get(&container_path) {
            errs.push(
                &format!("{p}.containerPath"),
                format!(
                    "duplicate container path {container_path:?} (already used by devices[{first}])"
                ),
            );
            continue;
        }
        seen.insert(container_path.clone(), i);
        out.push(Device {
            host_path,
            container_path,
            permissions,
        });
    }
    out
}

/// Why a tmpfs mount option is not allowed, if it is not.
fn check_tmpfs_option(o: &str) -> Result<(), String> {
    if TMPFS_FLAGS.contains(&o) {
        return Ok(());
    }
    let digits = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    match o.split_once('=') {
        Some(("mode", v)) if !v.is_empty() && v.len() <= 4 && v.chars().all(|c| ('0'..='7').contains(&c)) => Ok(()),
        Some(("mode", _)) => Err(format!(
            "{o:?} needs an octal mode of up to 4 digits, such as mode=1777"
        )),
        Some((k @ ("uid" | "gid" | "nr_inodes" | "nr_blocks"), v)) => {
            if digits(v) {
                Ok(())
            } else {
                Err(format!("{o:?} needs a whole number, such as {k}=1000"))
            }
        }
        Some(("mpol", v)) if !v.is_empty() && !v.contains(char::is_whitespace) => Ok(()),
        Some(("mpol", _)) => Err(format!(
            "{o:?} needs a memory policy, such as mpol=interleave"
        )),
        _ => Err(format!(
            "{o:?} is not a tmpfs mount option ECS accepts; valid are {}, and mode=<octal>, uid=<n>, gid=<n>, nr_inodes=<n>, nr_blocks=<n>, mpol=<policy>",
            TMPFS_FLAGS.join(", ")
        )),
    }
}

fn parse_tmpfs(lp: &Map<String, Value>, path: &str, errs: &mut Errors) -> Vec<Tmpfs> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let items = get_array(
        lp,
        "tmpfs",
        path,
        "objects with containerPath, size and mountOptions",
        errs,
    );
    for (i, it) in items.iter().enumerate() {
        let p = format!("{path}.tmpfs[{i}]");
        let Value::Object(t) = it else {
            errs.push(
                &p,
                "must be an object with containerPath, size and mountOptions",
            );
            continue;
        };
        check_keys(t, &["containerPath", "size", "mountOptions"], &p, errs);
        let container_path = match required_string(t, "containerPath", &p, errs) {
            Some(c) => match check_container_path(&c) {
                Ok(()) => Some(c),
                Err(e) => {
                    errs.push(&format!("{p}.containerPath"), e);
                    None
                }
            },
            None => None,
        };
        let size = if opt_value(t, "size").is_none() {
            errs.push(&format!("{p}.size"), "is required (MiB)");
            None
        } else {
            get_mib(t, "size", &p, errs)
        };
        let mut mount_options = Vec::new();
        for (j, ov) in get_array(t, "mountOptions", &p, "mount option strings", errs)
            .iter()
            .enumerate()
        {
            let op = format!("{p}.mountOptions[{j}]");
            match ov {
                Value::String(o) => match check_tmpfs_option(o) {
                    Ok(()) => mount_options.push(o.clone()),
                    Err(e) => errs.push(&op, e),
                },
                _ => errs.push(&op, "must be a string"),
            }
        }
        let (Some(container_path), Some(size)) = (container_path, size) else {
            continue;
        };
        if let Some(first) = seen.get(&container_path) {
            errs.push(
                &format!("{p}.containerPath"),
                format!(
                    "duplicate container path {container_path:?} (already used by tmpfs[{first}])"
                ),
            );
            continue;
        }
        seen.insert(container_path.clone(), i);
        out.push(Tmpfs {
            container_path,
            size,
            mount_options,
        });
    }
    out
}

/// `dnsServers`, `dnsSearchDomains`, `extraHosts`; none of them in awsvpc mode.
fn parse_dns(
    obj: &Map<String, Value>,
    path: &str,
    task: TaskContext,
    cd: &mut ContainerDefinition,
    errs: &mut Errors,
) {
    if task.network_mode == NetworkMode::Awsvpc {
        for key in ["dnsServers", "dnsSearchDomains", "extraHosts"] {
            if obj.get(key).is_some_and(|v| !is_empty_value(v)) {
                errs.push(
                    &format!("{path}.{key}"),
                    format!("{key} cannot be used in awsvpc network mode, where the task's containers share one network namespace"),
                );
            }
        }
    }

    for (i, it) in get_array(obj, "dnsServers", path, "IP address strings", errs)
        .iter()
        .enumerate()
    {
        let p = format!("{path}.dnsServers[{i}]");
        match it {
            Value::String(s) => match s.parse::<IpAddr>() {
                Ok(ip) => cd.dns_servers.push(ip.to_string()),
                Err(_) => errs.push(&p, format!("{s:?} is not an IPv4 or IPv6 address")),
            },
            _ => errs.push(&p, "must be a string holding an IP address"),
        }
    }

    for (i, it) in get_array(obj, "dnsSearchDomains", path, "domain name strings", errs)
        .iter()
        .enumerate()
    {
        let p = format!("{path}.dnsSearchDomains[{i}]");
        match it {
            Value::String(s) if s.is_empty() => errs.push(&p, "must not be empty"),
            Value::String(s) if s.len() > 253 => errs.push(
                &p,
                format!("is {} characters long; at most 253 are allowed", s.len()),
            ),
            Value::String(s) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                errs.push(&p, format!("{s:?} must not contain whitespace"))
            }
            Value::String(s) => cd.dns_search_domains.push(s.clone()),
            _ => errs.push(&p, "must be a string"),
        }
    }

    for (i, it) in get_array(
        obj,
        "extraHosts",
        path,
        "objects with hostname and ipAddress",
        errs,
    )
    .iter()
    .enumerate()
    {
        let p = format!("{path}.extraHosts[{i}]");
        let Value::Object(h) = it else {
            errs.push(&p, "must be an object with hostname and ipAddress");
            continue;
        };
        check_keys(h, &["hostname", "ipAddress"], &p, errs);
        let hostname = match required_string(h, "hostname", &p, errs) {
            Some(n) if n.is_empty() => {
                errs.push(&format!("{p}.hostname"), "must not be empty");
                None
            }
            Some(n) if n.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                errs.push(
                    &format!("{p}.hostname"),
                    format!("{n:?} must not contain whitespace"),
                );
                None
            }
            other => other,
        };
        let ip = match required_string(h, "ipAddress", &p, errs) {
            Some(a) => match a.parse::<IpAddr>() {
                Ok(ip) => Some(ip.to_string()),
                Err(_) => {
                    errs.push(
                        &format!("{p}.ipAddress"),
                        format!("{a:?} is not an IPv4 or IPv6 address"),
                    );
                    None
                }
            },
            None => None,
        };
        if let (Some(hostname), Some(ip)) = (hostname, ip) {
            cd.extra_hosts.push((hostname, ip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_task_definition, TaskDefError, TaskDefinition};
    use super::*;

    /// A task with one container: `task` and `container` are extra JSON members (each empty
    /// or ending in a comma).
    fn json(task: &str, container: &str) -> String {
        format!(
            r#"{{"family":"f",{task}"containerDefinitions":[{{{container}"name":"a","image":"i","memory":64}}]}}"#
        )
    }

    fn parse(task: &str, container: &str) -> TaskDefinition {
        let j = json(task, container);
        parse_task_definition(j.as_bytes(), None).unwrap_or_else(|e| panic!("{j}: {e}"))
    }

    fn errors(task: &str, container: &str) -> Vec<String> {
        match parse_task_definition(json(task, container).as_bytes(), None) {
            Err(TaskDefError::Invalid(e)) => e,
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    /// Asserts that exactly these errors (in any order) are reported.
    #[track_caller]
    fn assert_errors(task: &str, container: &str, want: &[&str]) {
        let mut got = errors(task, container);
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    const C: &str = "containerDefinitions[0]";

    #[test]
    fn accepts_every_field() {
        let td = parse(
            r#""pidMode":"task","ipcMode":"task","#,
            r#""privileged":true,"readonlyRootFilesystem":true,"interactive":true,
               "pseudoTerminal":true,"user":"1000:100",
               "ulimits":[{"name":"nofile","softLimit":1024,"hardLimit":4096},
                          {"name":"core","softLimit":0,"hardLimit":-1},
                          {"name":"memlock","softLimit":-1,"hardLimit":-1}],
               "systemControls":[{"namespace":"net.ipv4.ip_forward","value":"1"},
                                 {"namespace":"kernel.shmmax","value":"68719476736"},
                                 {"namespace":"fs.mqueue.msg_max","value":"20"}],
               "dnsServers":["10.0.0.2","2001:db8::1"],
               "dnsSearchDomains":["example.com","corp.internal"],
               "extraHosts":[{"hostname":"db","ipAddress":"10.1.2.3"},
                             {"hostname":"v6.local","ipAddress":"::1"}],
               "linuxParameters":{
                 "capabilities":{"add":["sys_admin","CAP_NET_ADMIN","NET_ADMIN"],"drop":["ALL"]},
                 "devices":[{"hostPath":"/dev/fuse"},
                            {"hostPath":"/dev/xvda","containerPath":"/dev/sda","permissions":["read","write"]},
                            {"hostPath":"/dev/null","containerPath":"/dev/nul2","permissions":[]}],
                 "initProcessEnabled":true,"sharedMemorySize":256,"maxSwap":0,
                 "tmpfs":[{"containerPath":"/run","size":64},
                          {"containerPath":"/scratch","size":1,
                           "mountOptions":["rw","noexec","mode=1777","uid=1000","gid=100","nr_inodes=0","nr_blocks=10","mpol=interleave"]}]},"#,
        );
        assert_eq!(td.pid_mode, Some(PidMode::Task));
        assert_eq!(td.ipc_mode, Some(IpcMode::Task));
        let c = &td.containers[0];
        assert!(c.privileged && c.readonly_root_filesystem && c.interactive && c.pseudo_terminal);
        assert!(c.init_process_enabled);
        assert_eq!(c.user.as_deref(), Some("1000:100"));
        assert_eq!(
            c.ulimits,
            vec![
                Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 4096
                },
                Ulimit {
                    name: "core".into(),
                    soft: 0,
                    hard: u64::MAX
                },
                Ulimit {
                    name: "memlock".into(),
                    soft: u64::MAX,
                    hard: u64::MAX
                },
            ]
        );
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            c.system_controls,
            pairs(&[
                ("net.ipv4.ip_forward", "1"),
                ("kernel.shmmax", "68719476736"),
                ("fs.mqueue.msg_max", "20")
            ])
        );
        assert_eq!(c.dns_servers, vec!["10.0.0.2", "2001:db8::1"]);
        assert_eq!(c.dns_search_domains, vec!["example.com", "corp.internal"]);
        assert_eq!(
            c.extra_hosts,
            pairs(&[("db", "10.1.2.3"), ("v6.local", "::1")])
        );
        assert_eq!(c.cap_add, vec!["SYS_ADMIN", "NET_ADMIN"]);
        assert_eq!(c.cap_drop, vec!["ALL"]);
        use DevicePermission::*;
        assert_eq!(
            c.devices,
            vec![
                Device {
                    host_path: "/dev/fuse".into(),
                    container_path: "/dev/fuse".into(),
                    permissions: vec![Read, Write, Mknod]
                },
                Device {
                    host_path: "/dev/xvda".into(),
                    container_path: "/dev/sda".into(),
                    permissions: vec![Read, Write]
                },
                Device {
                    host_path: "/dev/null".into(),
                    container_path: "/dev/nul2".into(),
                    permissions: vec![Read, Write, Mknod]
                },
            ]
        );
        assert_eq!(c.shared_memory_size, Some(256));
        assert_eq!(c.max_swap, Some(0));
        assert_eq!(
            c.tmpfs,
            vec![
                Tmpfs {
                    container_path: "/run".into(),
                    size: 64,
                    mount_options: vec![]
                },
                Tmpfs {
                    container_path: "/scratch".into(),
                    size: 1,
                    mount_options: [
                        "rw",
                        "noexec",
                        "mode=1777",
                        "uid=1000",
                        "gid=100",
                        "nr_inodes=0",
                        "nr_blocks=10",
                        "mpol=interleave"
                    ]
                    .map(String::from)
                    .to_vec()
                },
            ]
        );
    }

    #[test]
    fn defaults_when_absent_or_empty() {
        let td = parse(
            "",
            r#""privileged":false,"ulimits":[],"systemControls":[],"dnsServers":[],"user":null,
               "linuxParameters":{"capabilities":{},"devices":[],"tmpfs":[]},"#,
        );
        assert_eq!(td.pid_mode, None);
        assert_eq!(td.ipc_mode, None);
        let c = &td.containers[0];
        assert!(!c.privileged && !c.readonly_root_filesystem && !c.init_process_enabled);
        assert!(!c.interactive && !c.pseudo_terminal);
        assert_eq!(c.user, None);
        assert!(c.ulimits.is_empty() && c.system_controls.is_empty() && c.devices.is_empty());
        assert!(c.cap_add.is_empty() && c.cap_drop.is_empty() && c.tmpfs.is_empty());
        assert_eq!(c.shared_memory_size, None);
        // Empty DNS lists are fine in awsvpc mode.
        parse(
            r#""networkMode":"awsvpc","#,
            r#""dnsServers":[],"dnsSearchDomains":[],"extraHosts":[],"#,
        );
    }

    #[test]
    fn pid_and_ipc_modes() {
        let td = parse(r#""pidMode":"host","ipcMode":"none","#, "");
        assert_eq!(td.pid_mode, Some(PidMode::Host));
        assert_eq!(td.ipc_mode, Some(IpcMode::None));
        assert_eq!(
            parse(r#""ipcMode":"host","#, "").ipc_mode,
            Some(IpcMode::Host)
        );
        assert_errors(
            r#""pidMode":"container","ipcMode":"shareable","#,
            "",
            &[
                "pidMode: \"container\" is not one of task, host",
                "ipcMode: \"shareable\" is not one of task, host, none",
            ],
        );
        assert_errors(
            r#""pidMode":1,"ipcMode":true,"#,
            "",
            &[
                "pidMode: must be a string (task or host)",
                "ipcMode: must be a string (task, host or none)",
            ],
        );
    }

    #[test]
    fn boolean_and_user_errors() {
        assert_errors(
            "",
            r#""privileged":"true","readonlyRootFilesystem":1,"interactive":"yes",
               "pseudoTerminal":[],"linuxParameters":{"initProcessEnabled":"true"},"#,
            &[
                "containerDefinitions[0].privileged: must be true or false",
                "containerDefinitions[0].readonlyRootFilesystem: must be true or false",
                "containerDefinitions[0].interactive: must be true or false",
                "containerDefinitions[0].pseudoTerminal: must be true or false",
                "containerDefinitions[0].linuxParameters.initProcessEnabled: must be true or false",
            ],
        );
        for ok in ["0", "nobody", "1000:1000", "app:staff", "www-data:0"] {
            let td = parse("", &format!(r#""user":"{ok}","#));
            assert_eq!(td.containers[0].user.as_deref(), Some(ok));
        }
        for bad in ["", ":", "a:", ":b", "a:b:c", "a b"] {
            assert_errors(
                "",
                &format!(r#""user":"{bad}","#),
                &[&format!(
                    "containerDefinitions[0].user: {bad:?} is not a user or user:group (uid, uid:gid, name or name:group, without whitespace)"
                )],
            );
        }
        assert_errors(
            "",
            r#""user":1000,"#,
            &["containerDefinitions[0].user: must be a string"],
        );
    }

    #[test]
    fn ulimit_errors() {
        assert_errors(
            "",
            r#""ulimits":[{"name":"nofiles","softLimit":1,"hardLimit":2},
                          {"name":"nofile","softLimit":300,"hardLimit":200},
                          {"name":"nproc","softLimit":-1,"hardLimit":100},
                          {"name":"stack","softLimit":-2,"hardLimit":1.5,"x":0},
                          {"softLimit":"1"},
                          {"name":"core","softLimit":1,"hardLimit":2},
                          {"name":"core","softLimit":1,"hardLimit":2},
                          "nofile=1"],"#,
            &[
                "containerDefinitions[0].ulimits[0].name: \"nofiles\" is not a ulimit name; valid names are core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack",
                "containerDefinitions[0].ulimits[1].softLimit: 300 is more than hardLimit 200",
                "containerDefinitions[0].ulimits[2].softLimit: -1 (unlimited) is more than hardLimit 100",
                "containerDefinitions[0].ulimits[3].x: unknown field",
                "containerDefinitions[0].ulimits[3].softLimit: -2 is not an integer of 0 or more, or -1 for unlimited",
                "containerDefinitions[0].ulimits[3].hardLimit: 1.5 is not an integer of 0 or more, or -1 for unlimited",
                "containerDefinitions[0].ulimits[4].name: is required",
                "containerDefinitions[0].ulimits[4].softLimit: \"1\" is not an integer of 0 or more, or -1 for unlimited",
                "containerDefinitions[0].ulimits[4].hardLimit: is required",
                "containerDefinitions[0].ulimits[6].name: duplicate ulimit \"core\" (already set by ulimits[5])",
                "containerDefinitions[0].ulimits[7]: must be an object with name, softLimit and hardLimit",
            ],
        );
        assert_errors(
            "",
            r#""ulimits":{"nofile":1},"#,
            &["containerDefinitions[0].ulimits: must be an array of objects with name, softLimit and hardLimit"],
        );
    }

    #[test]
    fn sysctl_errors() {
        assert_errors(
            "",
            r#""systemControls":[{"namespace":"kernel.panic","value":"1"},
                                 {"namespace":"vm.swappiness","value":"1"},
                                 {"namespace":"Net.ipv4.ip_forward","value":"1"},
                                 {"namespace":"net..ipv4","value":"1"},
                                 {"namespace":".net.ipv4","value":"1"},
                                 {"namespace":"/proc/sys/net","value":"1"},
                                 {"namespace":"net.core.somaxconn","value":"1"},
                                 {"namespace":"net.core.somaxconn","value":"2"},
                                 {"namespace":"kernel.sem"},
                                 {"value":"1","other":2},
                                 {"namespace":"net.ipv4.tcp_syncookies","value":1},
                                 []],"#,
            &[
                "containerDefinitions[0].systemControls[0].namespace: kernel.panic is not a namespaced sysctl; setting it would change the host",
                "containerDefinitions[0].systemControls[1].namespace: vm.swappiness is not a namespaced sysctl; setting it would change the host",
                "containerDefinitions[0].systemControls[2].namespace: \"Net.ipv4.ip_forward\" is not a valid sysctl name (lower-case letters, digits, '_' and '-', with '.' between non-empty parts)",
                "containerDefinitions[0].systemControls[3].namespace: \"net..ipv4\" is not a valid sysctl name (lower-case letters, digits, '_' and '-', with '.' between non-empty parts)",
                "containerDefinitions[0].systemControls[4].namespace: \".net.ipv4\" is not a valid sysctl name (lower-case letters, digits, '_' and '-', with '.' between non-empty parts)",
                "containerDefinitions[0].systemControls[5].namespace: \"/proc/sys/net\" is not a valid sysctl name (lower-case letters, digits, '_' and '-', with '.' between non-empty parts)",
                "containerDefinitions[0].systemControls[7].namespace: duplicate sysctl net.core.somaxconn (already set by systemControls[6])",
                "containerDefinitions[0].systemControls[8].value: is required",
                "containerDefinitions[0].systemControls[9].other: unknown field",
                "containerDefinitions[0].systemControls[9].namespace: is required",
                "containerDefinitions[0].systemControls[10].value: must be a string",
                "containerDefinitions[0].systemControls[11]: must be an object with namespace and value",
            ],
        );
        // Host network mode: net.* would change the host's network stack; IPC ones are fine.
        assert_errors(
            r#""networkMode":"host","#,
            r#""systemControls":[{"namespace":"net.ipv4.ip_forward","value":"1"},
                                 {"namespace":"kernel.msgmax","value":"65536"}],"#,
            &["containerDefinitions[0].systemControls[0].namespace: net.ipv4.ip_forward cannot be set in host network mode: it would change the host's network stack"],
        );
        // ipcMode host: the IPC ones would change the host's; net.* is fine in bridge mode.
        assert_errors(
            r#""ipcMode":"host","#,
            r#""systemControls":[{"namespace":"kernel.shm_rmid_forced","value":"1"},
                                 {"namespace":"fs.mqueue.queues_max","value":"10"},
                                 {"namespace":"net.ipv4.ip_forward","value":"1"}],"#,
            &[
                "containerDefinitions[0].systemControls[0].namespace: kernel.shm_rmid_forced cannot be set with ipcMode host: it would change the host's IPC namespace",
                "containerDefinitions[0].systemControls[1].namespace: fs.mqueue.queues_max cannot be set with ipcMode host: it would change the host's IPC namespace",
            ],
        );
        // Private or task IPC namespaces and awsvpc / none network modes accept both kinds.
        for task in [
            r#""ipcMode":"none","networkMode":"awsvpc","#,
            r#""ipcMode":"task","networkMode":"none","#,
        ] {
            let td = parse(
                task,
                r#""systemControls":[{"namespace":"kernel.msgmni","value":"64"},
                                     {"namespace":"net.ipv4.ping_group_range","value":"0 1000"}],"#,
            );
            assert_eq!(td.containers[0].system_controls.len(), 2);
        }
    }

    #[test]
    fn capability_errors() {
        assert_errors(
            "",
            r#""linuxParameters":{"capabilities":{"add":["SYS_ADMIN","CAP_FOO",""],"drop":["cap_all",7],"keep":[]}},"#,
            &[
                "containerDefinitions[0].linuxParameters.capabilities.add[1]: \"CAP_FOO\" is not a Linux capability; give a name such as SYS_ADMIN or NET_RAW (CAP_ prefix optional, any case), or ALL",
                "containerDefinitions[0].linuxParameters.capabilities.add[2]: \"\" is not a Linux capability; give a name such as SYS_ADMIN or NET_RAW (CAP_ prefix optional, any case), or ALL",
                "containerDefinitions[0].linuxParameters.capabilities.drop[0]: \"cap_all\" is not a Linux capability; give a name such as SYS_ADMIN or NET_RAW (CAP_ prefix optional, any case), or ALL",
                "containerDefinitions[0].linuxParameters.capabilities.drop[1]: must be a string",
                "containerDefinitions[0].linuxParameters.capabilities.keep: unknown field",
            ],
        );
        assert_errors(
            "",
            r#""linuxParameters":{"capabilities":["SYS_ADMIN"]},"#,
            &["containerDefinitions[0].linuxParameters.capabilities: must be an object with add and drop lists"],
        );
        assert_errors(
            "",
            r#""linuxParameters":{"capabilities":{"add":"SYS_ADMIN"}},"#,
            &["containerDefinitions[0].linuxParameters.capabilities.add: must be an array of capability names"],
        );
        // Every listed name (41) is accepted, in any case and with or without CAP_.
        assert_eq!(CAPABILITIES.len(), 41);
        let all: Vec<String> = CAPABILITIES
            .iter()
            .map(|c| format!("\"cap_{}\"", c.to_ascii_lowercase()))
            .collect();
        let td = parse(
            "",
            &format!(
                r#""linuxParameters":{{"capabilities":{{"add":[{}]}}}},"#,
                all.join(",")
            ),
        );
        assert_eq!(td.containers[0].cap_add, CAPABILITIES);
    }

    #[test]
    fn device_errors() {
        let lp = |devices: &str| format!(r#""linuxParameters":{{"devices":{devices}}},"#);
        assert_errors(
            "",
            &lp(r#"[{"hostPath":"dev/sda"},
                    {"containerPath":"/dev/x"},
                    {"hostPath":"/dev/sdb","containerPath":"/"},
                    {"hostPath":"/dev/sdc","containerPath":"/dev/../etc/passwd"},
                    {"hostPath":"/dev/sdd","containerPath":"dev/sdd"},
                    {"hostPath":"/dev/sde","permissions":["rw","read",1],"mode":"0666"},
                    {"hostPath":"/dev/../dev/sdf"},
                    {"hostPath":"/dev/sdg","containerPath":"/dev/disk"},
                    {"hostPath":"/dev/sdh","containerPath":"/dev/disk"},
                    {"hostPath":"/dev/sdi","permissions":"rwm"},
                    "/dev/sdj"]"#),
            &[
                "containerDefinitions[0].linuxParameters.devices[0].hostPath: \"dev/sda\" is not an absolute path",
                "containerDefinitions[0].linuxParameters.devices[1].hostPath: is required",
                "containerDefinitions[0].linuxParameters.devices[2].containerPath: \"/\" is the container's root; give a path below /",
                "containerDefinitions[0].linuxParameters.devices[3].containerPath: \"/dev/../etc/passwd\" must not contain '..' components",
                "containerDefinitions[0].linuxParameters.devices[4].containerPath: \"dev/sdd\" is not an absolute path",
                "containerDefinitions[0].linuxParameters.devices[5].mode: unknown field",
                "containerDefinitions[0].linuxParameters.devices[5].permissions[0]: \"rw\" is not one of read, write, mknod",
                "containerDefinitions[0].linuxParameters.devices[5].permissions[2]: 1 is not one of read, write, mknod",
                "containerDefinitions[0].linuxParameters.devices[6].hostPath: \"/dev/../dev/sdf\" must not contain '..' components (containerPath defaults to hostPath)",
                "containerDefinitions[0].linuxParameters.devices[8].containerPath: duplicate container path \"/dev/disk\" (already used by devices[7])",
                "containerDefinitions[0].linuxParameters.devices[9].permissions: must be an array of read, write or mknod",
                "containerDefinitions[0].linuxParameters.devices[10]: must be an object with hostPath, containerPath and permissions",
            ],
        );
        // hostPath may be any absolute path; a defaulted containerPath collides too.
        assert_errors(
            "",
            &lp(r#"[{"hostPath":"/srv/disk.img","containerPath":"/dev/loop9"},{"hostPath":"/dev/loop9"}]"#),
            &["containerDefinitions[0].linuxParameters.devices[1].containerPath: duplicate container path \"/dev/loop9\" (already used by devices[0])"],
        );
    }

    #[test]
    fn shared_memory_size_errors() {
        for (v, msg) in [
            ("0", "must be at least 1 MiB, got 0"),
            ("-1", "must be a whole number of MiB, 1 or more; got -1"),
            ("1.5", "must be a whole number of MiB, 1 or more; got 1.5"),
            ("\"64\"", "must be a whole number of MiB, 1 or more"),
        ] {
            assert_errors(
                "",
                &format!(r#""linuxParameters":{{"sharedMemorySize":{v}}},"#),
                &[&format!(
                    "containerDefinitions[0].linuxParameters.sharedMemorySize: {msg}"
                )],
            );
        }
        assert_errors(
            r#""ipcMode":"none","#,
            r#""linuxParameters":{"sharedMemorySize":64},"#,
            &["containerDefinitions[0].linuxParameters.sharedMemorySize: cannot be used with ipcMode none, which mounts no /dev/shm"],
        );
    }

    #[test]
    fn tmpfs_errors() {
        let lp = |tmpfs: &str| format!(r#""linuxParameters":{{"tmpfs":{tmpfs}}},"#);
        assert_errors(
            "",
            &lp(r#"[{"size":10},
                    {"containerPath":"/run"},
                    {"containerPath":"run","size":0},
                    {"containerPath":"//","size":10},
                    {"containerPath":"/a/..","size":10},
                    {"containerPath":"/b","size":10,"mountOptions":["size=10m","mode=999","uid=root","mpol=","nosuid",3],"type":"tmpfs"},
                    {"containerPath":"/c","size":10},
                    {"containerPath":"/c","size":20},
                    {"containerPath":"/d","size":10,"mountOptions":"ro"}]"#),
            &[
                "containerDefinitions[0].linuxParameters.tmpfs[0].containerPath: is required",
                "containerDefinitions[0].linuxParameters.tmpfs[1].size: is required (MiB)",
                "containerDefinitions[0].linuxParameters.tmpfs[2].containerPath: \"run\" is not an absolute path",
                "containerDefinitions[0].linuxParameters.tmpfs[2].size: must be at least 1 MiB, got 0",
                "containerDefinitions[0].linuxParameters.tmpfs[3].containerPath: \"//\" is the container's root; give a path below /",
                "containerDefinitions[0].linuxParameters.tmpfs[4].containerPath: \"/a/..\" must not contain '..' components",
                "containerDefinitions[0].linuxParameters.tmpfs[5].type: unknown field",
                "containerDefinitions[0].linuxParameters.tmpfs[5].mountOptions[0]: \"size=10m\" is not a tmpfs mount option ECS accepts; valid are defaults, ro, rw, suid, nosuid, dev, nodev, exec, noexec, sync, async, dirsync, remount, mand, nomand, atime, noatime, diratime, nodiratime, bind, rbind, unbindable, runbindable, private, rprivate, shared, rshared, slave, rslave, relatime, norelatime, strictatime, nostrictatime, and mode=<octal>, uid=<n>, gid=<n>, nr_inodes=<n>, nr_blocks=<n>, mpol=<policy>",
                "containerDefinitions[0].linuxParameters.tmpfs[5].mountOptions[1]: \"mode=999\" needs an octal mode of up to 4 digits, such as mode=1777",
                "containerDefinitions[0].linuxParameters.tmpfs[5].mountOptions[2]: \"uid=root\" needs a whole number, such as uid=1000",
                "containerDefinitions[0].linuxParameters.tmpfs[5].mountOptions[3]: \"mpol=\" needs a memory policy, such as mpol=interleave",
                "containerDefinitions[0].linuxParameters.tmpfs[5].mountOptions[5]: must be a string",
                "containerDefinitions[0].linuxParameters.tmpfs[7].containerPath: duplicate container path \"/c\" (already used by tmpfs[6])",
                "containerDefinitions[0].linuxParameters.tmpfs[8].mountOptions: must be an array of mount option strings",
            ],
        );
    }

    #[test]
    fn dns_and_hosts_errors() {
        assert_errors(
            "",
            r#""dnsServers":["8.8.8.8","1.2.3","dns.google",53],
               "dnsSearchDomains":["ok.example","","a b",7],
               "extraHosts":[{"hostname":"h","ipAddress":"10.0.0.300"},
                             {"hostname":"","ipAddress":"10.0.0.1"},
                             {"hostname":"my host","ipAddress":"10.0.0.1","alias":"x"},
                             {"ipAddress":"10.0.0.1"},
                             {"hostname":"h2"},
                             "h3:10.0.0.3"],"#,
            &[
                "containerDefinitions[0].dnsServers[1]: \"1.2.3\" is not an IPv4 or IPv6 address",
                "containerDefinitions[0].dnsServers[2]: \"dns.google\" is not an IPv4 or IPv6 address",
                "containerDefinitions[0].dnsServers[3]: must be a string holding an IP address",
                "containerDefinitions[0].dnsSearchDomains[1]: must not be empty",
                "containerDefinitions[0].dnsSearchDomains[2]: \"a b\" must not contain whitespace",
                "containerDefinitions[0].dnsSearchDomains[3]: must be a string",
                "containerDefinitions[0].extraHosts[0].ipAddress: \"10.0.0.300\" is not an IPv4 or IPv6 address",
                "containerDefinitions[0].extraHosts[1].hostname: must not be empty",
                "containerDefinitions[0].extraHosts[2].alias: unknown field",
                "containerDefinitions[0].extraHosts[2].hostname: \"my host\" must not contain whitespace",
                "containerDefinitions[0].extraHosts[3].hostname: is required",
                "containerDefinitions[0].extraHosts[4].ipAddress: is required",
                "containerDefinitions[0].extraHosts[5]: must be an object with hostname and ipAddress",
            ],
        );
        let long = "a".repeat(254);
        assert_errors(
            "",
            &format!(r#""dnsSearchDomains":["{long}","{}"],"#, "a".repeat(253)),
            &["containerDefinitions[0].dnsSearchDomains[0]: is 254 characters long; at most 253 are allowed"],
        );
        assert_errors(
            r#""networkMode":"awsvpc","#,
            r#""dnsServers":["10.0.0.2"],"dnsSearchDomains":["example.com"],
               "extraHosts":[{"hostname":"db","ipAddress":"10.1.2.3"}],"#,
            &[
                "containerDefinitions[0].dnsServers: dnsServers cannot be used in awsvpc network mode, where the task's containers share one network namespace",
                "containerDefinitions[0].dnsSearchDomains: dnsSearchDomains cannot be used in awsvpc network mode, where the task's containers share one network namespace",
                "containerDefinitions[0].extraHosts: extraHosts cannot be used in awsvpc network mode, where the task's containers share one network namespace",
            ],
        );
        // Host and none network modes accept them.
        for mode in ["host", "none", "bridge"] {
            let td = parse(
                &format!(r#""networkMode":"{mode}","#),
                r#""dnsServers":["10.0.0.2"],"extraHosts":[{"hostname":"db","ipAddress":"10.1.2.3"}],"#,
            );
            assert_eq!(td.containers[0].dns_servers, vec!["10.0.0.2"]);
        }
    }

    /// Problems in every new field, and in two containers, come back together.
    #[test]
    fn reports_all_errors_at_once() {
        let j = r#"{"family":"f","networkMode":"awsvpc","pidMode":"shared","ipcMode":"host",
            "containerDefinitions":[
              {"name":"a","image":"i","memory":64,"privileged":"yes","user":"a:b:c",
               "ulimits":[{"name":"nofile","softLimit":2,"hardLimit":1}],
               "systemControls":[{"namespace":"kernel.sem","value":"1 2 3 4"}],
               "dnsServers":["x"],
               "linuxParameters":{"capabilities":{"add":["FLY"]},"devices":[{"hostPath":"x"}],
                 "initProcessEnabled":1,"sharedMemorySize":0,"tmpfs":[{"containerPath":"/t"}]}},
              {"name":"b","image":"i","memory":64,"interactive":"no",
               "systemControls":[{"namespace":"kernel.hostname","value":"x"}],
               "extraHosts":[{"hostname":"h","ipAddress":"nope"}]}]}"#;
        let mut got = match parse_task_definition(j.as_bytes(), None) {
            Err(TaskDefError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        let mut want = vec![
            "pidMode: \"shared\" is not one of task, host".to_string(),
            format!("{C}.privileged: must be true or false"),
            format!("{C}.user: \"a:b:c\" is not a user or user:group (uid, uid:gid, name or name:group, without whitespace)"),
            format!("{C}.ulimits[0].softLimit: 2 is more than hardLimit 1"),
            format!("{C}.systemControls[0].namespace: kernel.sem cannot be set with ipcMode host: it would change the host's IPC namespace"),
            format!("{C}.dnsServers: dnsServers cannot be used in awsvpc network mode, where the task's containers share one network namespace"),
            format!("{C}.dnsServers[0]: \"x\" is not an IPv4 or IPv6 address"),
            format!("{C}.linuxParameters.capabilities.add[0]: \"FLY\" is not a Linux capability; give a name such as SYS_ADMIN or NET_RAW (CAP_ prefix optional, any case), or ALL"),
            format!("{C}.linuxParameters.devices[0].hostPath: \"x\" is not an absolute path"),
            format!("{C}.linuxParameters.initProcessEnabled: must be true or false"),
            format!("{C}.linuxParameters.sharedMemorySize: must be at least 1 MiB, got 0"),
            format!("{C}.linuxParameters.tmpfs[0].size: is required (MiB)"),
            "containerDefinitions[1].interactive: must be true or false".to_string(),
            "containerDefinitions[1].systemControls[0].namespace: kernel.hostname is not a namespaced sysctl; setting it would change the host".to_string(),
            "containerDefinitions[1].extraHosts: extraHosts cannot be used in awsvpc network mode, where the task's containers share one network namespace".to_string(),
            "containerDefinitions[1].extraHosts[0].ipAddress: \"nope\" is not an IPv4 or IPv6 address".to_string(),
        ];
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    /// The agent's functional-test task definitions for these fields parse into the model.
    #[test]
    fn fixtures_parse_into_model() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/taskdefs");
        let read = |n: &str| {
            let bytes = std::fs::read(format!("{dir}/{n}")).unwrap();
            parse_task_definition(&bytes, None).unwrap_or_else(|e| panic!("{n}: {e}"))
        };

        let td = read("add-drop-capabilities.json");
        assert_eq!(td.containers[0].cap_add, vec!["SYS_ADMIN"]);
        assert_eq!(td.containers[0].cap_drop, vec!["MKNOD"]);

        let td = read("devices.json");
        assert_eq!(
            td.containers[0].devices,
            vec![Device {
                host_path: "/dev/xvda".into(),
                container_path: "/dev/sda".into(),
                permissions: vec![DevicePermission::Read],
            }]
        );

        let td = read("init-process.json");
        assert!(td.containers[0].init_process_enabled);

        let td = read("nofiles-ulimit.json");
        assert_eq!(
            td.containers[0].ulimits,
            vec![Ulimit {
                name: "nofile".into(),
                soft: 123,
                hard: 234
            }]
        );

        let td = read("sysctl.json");
        assert_eq!(
            td.containers[0].system_controls,
            vec![(
                "net.ipv4.conf.default.rp_filter".to_string(),
                "0".to_string()
            )]
        );

        let td = read("tmpfs.json");
        assert_eq!(
            td.containers[0].tmpfs,
            vec![Tmpfs {
                container_path: "/dev/tmpfs".into(),
                size: 100,
                mount_options: vec!["ro".into(), "noexec".into()],
            }]
        );

        let td = read("pid-namespace-task-share.json");
        assert_eq!(td.pid_mode, Some(PidMode::Task));
        assert_eq!(td.ipc_mode, None);
        assert_eq!(td.containers[0].name, "pidProducer");
    }
}
