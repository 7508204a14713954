//! A container of a task definition → the OCI runtime spec skiff runs it with: the process
//! merged with the image config, and the defaults a Docker or ECS user gets (capabilities,
//! masked and read-only paths, devices, mounts, seccomp, no_new_privs) adjusted by the
//! container's own settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder,
    PosixRlimitBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
};

use crate::cgroup::devices::{self, DeviceRule};
use crate::runtime::caps;
use crate::runtime::seccomp;
use crate::runtime::spec::{
    Process, DEFAULT_DEVICES, DEFAULT_SHM_MIB, MASKED_PATHS, READONLY_PATHS, ULIMITS,
};
use crate::taskdef::{ContainerDefinition, DevicePermission, IpcMode, NetworkMode, TaskDefinition};

/// What the spec builder produces for one container besides the spec: the device rules for
/// its cgroup and the generated /etc files to write before it starts.
pub struct Built {
    pub oci: Spec,
    pub device_rules: Vec<DeviceRule>,
    pub etc_files: Vec<(&'static str, String)>,
}

/// What the task's network mode gives one container.
#[derive(Debug, Clone, Default)]
pub struct NetView {
    /// The network namespace prepared for it (bridge: its own; awsvpc: the task's), joined
    /// instead of a new one.
    pub netns: Option<std::path::PathBuf>,
    /// Its address: its hostname resolves to it in /etc/hosts.
    pub ip: Option<std::net::Ipv4Addr>,
    /// More /etc/hosts lines (`links`): an address and its names.
    pub hosts: Vec<(std::net::Ipv4Addr, Vec<String>)>,
}

/// Host facts the builder needs, gathered once per task.
pub struct HostFacts {
    /// This process's hard rlimits by ECS ulimit name; containers cannot go above them unless
    /// skiff holds CAP_SYS_RESOURCE.
    pub hard_limits: HashMap<&'static str, u64>,
    pub has_sys_resource: bool,
    /// The host's /etc/resolv.conf.
    pub resolv_conf: String,
}

impl HostFacts {
    pub fn gather() -> HostFacts {
        let mut hard_limits = HashMap::new();
        for (name, _, res) in ULIMITS {
            let mut rl = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if unsafe { libc::getrlimit(*res as _, &mut rl) } == 0 {
                hard_limits.insert(*name, rl.rlim_max);
            }
        }
        let has_sys_resource = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|eff| caps::CapSet(eff).contains("SYS_RESOURCE"));
        HostFacts {
            hard_limits,
            has_sys_resource,
            resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        }
    }
}

fn rlimit_str(v: u64) -> String {
    if v == u64::MAX || v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Builds the spec of container `c` (index `i`) of `td`.
pub fn build(
    td: &TaskDefinition,
    i: usize,
    process: Process,
    hostname: &str,
    host: &HostFacts,
    net: &NetView,
    volumes: &[super::volumes::VolumeMount],
) -> Result<Built, String> {
    let c = &td.containers[i];
    let path = format!("containerDefinitions[{i}]");

    // Capabilities: the same set bounds, permits and is effective (for root).
    let capset = caps::resolve(&c.cap_add, &c.cap_drop, c.privileged)
        .map_err(|e| format!("{path}.linuxParameters.capabilities: {e}"))?;
    let cap_names: Vec<String> = capset.names().iter().map(|n| n.to_string()).collect();
    let oci_caps: std::collections::HashSet<Capability> = cap_names
        .iter()
        .map(|n| {
            n.parse::<Capability>()
                .map_err(|_| format!("{path}: capability {n} has no OCI name"))
        })
        .collect::<Result<_, _>>()?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(oci_caps.clone())
        .effective(oci_caps.clone())
        .permitted(oci_caps)
        .build()
        .map_err(|e| e.to_string())?;

    // rlimits, checked against what the host lets skiff give.
    let mut rlimits = Vec::new();
    for u in &c.ulimits {
        let Some((_, typ, _)) = ULIMITS.iter().find(|(n, _, _)| *n == u.name) else {
            return Err(format!("{path}.ulimits: unknown ulimit {}", u.name));
        };
        if let Some(&host_hard) = host.hard_limits.get(u.name.as_str()) {
            let want = if u.hard == u64::MAX {
                libc::RLIM_INFINITY
            } else {
                u.hard
            };
            if want > host_hard && host_hard != libc::RLIM_INFINITY && !host.has_sys_resource {
                return Err(format!(
                    "{path}.ulimits: {} hard limit {} is above the host's hard limit {} (skiff lacks CAP_SYS_RESOURCE to raise it)",
                    u.name,
                    rlimit_str(u.hard),
                    rlimit_str(host_hard)
                ));
            }
        }
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(*typ)
                .soft(u.soft)
                .hard(u.hard)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }

    let proc_ = ProcessBuilder::default()
        .terminal(c.interactive && c.pseudo_terminal)
        .args(process.args)
        .env(process.env)
        .cwd(PathBuf::from(&process.cwd))
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(true)
        .build()
        .map_err(|e| e.to_string())?;

    // Namespaces: mount, uts and cgroup always new; net new except in host mode; pid and ipc
    // per the task's modes (a shared one is joined by the shim, not described here).
    let mut ns = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ];
    let mut joined = Vec::new();
    match (&net.netns, td.network_mode) {
        (Some(p), _) => joined.push((LinuxNamespaceType::Network, p.clone())),
        (None, NetworkMode::Host) => {}
        (None, _) => ns.push(LinuxNamespaceType::Network),
    }
    if td.pid_mode.is_none() || (td.pid_mode == Some(crate::taskdef::PidMode::Task) && i == 0) {
        ns.push(LinuxNamespaceType::Pid);
    }
    if td.ipc_mode != Some(IpcMode::Host) && !(td.ipc_mode == Some(IpcMode::Task) && i > 0) {
        ns.push(LinuxNamespaceType::Ipc);
    }
    let namespaces = ns
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .chain(
            joined
                .into_iter()
                .map(|(typ, p)| LinuxNamespaceBuilder::default().typ(typ).path(p).build()),
        )
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;

    // Devices: nodes to create, and the cgroup rules that let the container use them.
    let mut nodes: Vec<LinuxDevice> = Vec::new();
    let mut device_rules = devices::default_rules();
    let node = |p: &str, typ: LinuxDeviceType, major: i64, minor: i64, mode: u32| {
        LinuxDeviceBuilder::default()
            .path(PathBuf::from(p))
            .typ(typ)
            .major(major)
            .minor(minor)
            .file_mode(mode)
            .uid(0u32)
            .gid(0u32)
            .build()
            .map_err(|e| e.to_string())
    };
    if c.privileged {
        device_rules = devices::privileged_rules();
        for (p, typ, major, minor, mode) in host_devices() {
            nodes.push(node(&p, typ, major, minor, mode)?);
        }
    } else {
        for (p, major, minor) in DEFAULT_DEVICES {
            nodes.push(node(p, LinuxDeviceType::C, *major, *minor, 0o666)?);
        }
    }
    for (k, d) in c.devices.iter().enumerate() {
        let perms = |p| d.permissions.is_empty() || d.permissions.contains(&p);
        let (rule, mode, rdev) = devices::host_device_rule(
            Path::new(&d.host_path),
            perms(DevicePermission::Read),
            perms(DevicePermission::Write),
            perms(DevicePermission::Mknod),
        )
        .map_err(|e| format!("{path}.linuxParameters.devices[{k}].hostPath: {e}"))?;
        let typ = if mode & libc::S_IFMT == libc::S_IFBLK {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        };
        nodes.retain(|n| n.path() != Path::new(&d.container_path));
        nodes.push(node(
            &d.container_path,
            typ,
            libc::major(rdev) as i64,
            libc::minor(rdev) as i64,
            mode & 0o7777,
        )?);
        device_rules.push(rule);
    }

    let mut mounts = default_mounts(c, td.ipc_mode)?;
    for t in &c.tmpfs {
        let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
        opts.extend(t.mount_options.iter().cloned());
        opts.push(format!("size={}k", t.size * 1024));
        mounts.push(mount(&t.container_path, "tmpfs", "tmpfs", &opts)?);
    }
    // Volumes: recursive binds (what is mounted beneath a host directory comes along), kept
    // private to the container; the runtime turns `ro` into a read-only remount of the bind.
    for v in volumes {
        let mut opts = strs(&["rbind", "rprivate"]);
        if v.read_only {
            opts.push("ro".into());
        }
        mounts.push(mount(
            &v.destination,
            "bind",
            &v.source.to_string_lossy(),
            &opts,
        )?);
    }

    let mut sysctl = HashMap::new();
    for (k, v) in &c.system_controls {
        sysctl.insert(k.clone(), v.clone());
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(nodes)
        .sysctl(sysctl)
        .resources(oci_spec::runtime::LinuxResources::default());
    if !c.privileged {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .seccomp(seccomp::default_profile(&cap_names));
    }
    let linux = linux.build().map_err(|e| e.to_string())?;

    let oci = SpecBuilder::default()
        .version("1.2.0")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(c.readonly_root_filesystem)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .hostname(hostname)
        .process(proc_)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(|e| e.to_string())?;

    Ok(Built {
        oci,
        device_rules,
        etc_files: etc_files(
            c,
            hostname,
            &host.resolv_conf,
            net,
            td.network_mode == NetworkMode::Host,
        ),
    })
}

fn mount(dst: &str, typ: &str, src: &str, opts: &[String]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(PathBuf::from(dst))
        .typ(typ)
        .source(PathBuf::from(src))
        .options(opts.to_vec())
        .build()
        .map_err(|e| format!("mount {dst}: {e}"))
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The mounts every container gets, in order.
fn default_mounts(c: &ContainerDefinition, ipc: Option<IpcMode>) -> Result<Vec<Mount>, String> {
    let mut m = vec![
        mount(
            "/proc",
            "proc",
            "proc",
            &strs(&["nosuid", "noexec", "nodev"]),
        )?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &strs(&["nosuid", "strictatime", "mode=755", "size=65536k"]),
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &strs(&[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ]),
        )?,
    ];
    if ipc != Some(IpcMode::None) {
        let size = c.shared_memory_size.unwrap_or(DEFAULT_SHM_MIB) * 1024;
        m.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &[
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "mode=1777".into(),
                format!("size={size}k"),
            ],
        )?);
    }
    m.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &strs(&["nosuid", "noexec", "nodev"]),
    )?);
    let sys_ro = if c.privileged { "rw" } else { "ro" };
    m.push(mount(
        "/sys",
        "sysfs",
        "sysfs",
        &strs(&["nosuid", "noexec", "nodev", sys_ro]),
    )?);
    m.push(mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &strs(&["nosuid", "noexec", "nodev", "relatime", sys_ro]),
    )?);
    Ok(m)
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf of a container (bind-mounted by the shim
/// from the container's directory).
fn etc_files(
    c: &ContainerDefinition,
    hostname: &str,
    host_resolv: &str,
    net: &NetView,
    host_network: bool,
) -> Vec<(&'static str, String)> {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = net.ip {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    for (ip, names) in &net.hosts {
        hosts.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    for (h, ip) in &c.extra_hosts {
        hosts.push_str(&format!("{ip}\t{h}\n"));
    }

    // The host's resolvers, minus loopback ones (unreachable from the container's network
    // namespace), replaced by dnsServers / dnsSearchDomains when given.
    let mut servers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host_resolv.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => {
                if let Some(ip) = f.next() {
                    let loopback = !host_network
                        && ip
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|a| a.is_loopback());
                    if !loopback {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => search = f.map(String::from).collect(),
            Some("options") => options.extend(f.map(String::from)),
            _ => {}
        }
    }
    if !c.dns_servers.is_empty() {
        servers = c.dns_servers.clone();
    }
    if !c.dns_search_domains.is_empty() {
        search = c.dns_search_domains.clone();
    }
    let mut resolv = String::new();
    if !search.is_empty() {
        resolv.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in &servers {
        resolv.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        resolv.push_str(&format!("options {}\n", options.join(" ")));
    }
    vec![
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ]
}

/// The host's devices (top level of /dev), for privileged containers.
fn host_devices() -> Vec<(String, LinuxDeviceType, i64, i64, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/dev") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ft = m.file_type();
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        let name = e.file_name().to_string_lossy().to_string();
        // The container's own console and pty multiplexer come from its devpts.
        if name == "console" || name == "ptmx" {
            continue;
        }
        out.push((
            format!("/dev/{name}"),
            typ,
            libc::major(m.rdev()) as i64,
            libc::minor(m.rdev()) as i64,
            m.mode() & 0o7777,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::Capability;

    #[test]
    fn every_capability_has_an_oci_name() {
        for n in crate::runtime::caps::NAMES {
            let c: Capability = n.parse().unwrap_or_else(|_| panic!("{n}"));
            assert_eq!(c.to_string(), *n);
        }
    }
}
