//! What one container runs: the task definition's container merged with its image's config,
//! the way Docker (and so ECS) merges them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::image::manifest::ImageConfig;

/// Docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the shim needs to create one container. Written by the task engine, read by the
/// single-threaded shim. What the container is (process, mounts, namespaces, devices,
/// capabilities, rlimits, sysctls, masks, seccomp) is an OCI runtime spec; the rest is how
/// skiff assembles and watches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// Overlay lower directories, top layer first.
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
    /// Where the overlay is mounted (inside the container's mount namespace only).
    pub rootfs: PathBuf,
    pub cgroup: Cgroup,
    pub oci: oci_spec::runtime::Spec,
    /// `user` as the task definition gives it (`uid`, `uid:gid`, `name`, `name:group`):
    /// resolved inside the container, against its own /etc/passwd and /etc/group.
    pub user: Option<String>,
    /// `initProcessEnabled`: a minimal init of ours runs as PID 1 and the command under it.
    pub init: bool,
    /// Join the PID namespace of this (earlier) container of the task (`pidMode: task`).
    pub share_pid_with: Option<String>,
    /// Join the IPC namespace of this (earlier) container of the task (`ipcMode: task`).
    pub share_ipc_with: Option<String>,
    pub essential: bool,
    /// The image's STOPSIGNAL, or SIGTERM.
    pub stop_signal: i32,
    /// Seconds between the stop signal and SIGKILL.
    pub stop_timeout: u64,
    /// The container's log, in Docker's json-file format.
    pub log_path: PathBuf,
    /// Holds the generated hosts, hostname and resolv.conf bound onto the container's /etc.
    pub etc_dir: PathBuf,
    /// `dependsOn`: started only once these hold.
    #[serde(default)]
    pub depends_on: Vec<super::lifecycle::Dependency>,
    /// `startTimeout` (s): how long containers that depend on this one wait for it.
    #[serde(default)]
    pub start_timeout: Option<u64>,
    /// `restartPolicy` when enabled.
    #[serde(default)]
    pub restart: Option<super::lifecycle::RestartPolicy>,
    /// `secrets`: environment variables whose values the shim reads from the secret store
    /// when it starts the container (never written to a state file).
    #[serde(default)]
    pub secrets: Vec<(String, super::secret::SecretRef)>,
    /// `healthCheck`: run in the container while it runs.
    #[serde(default)]
    pub health_check: Option<super::health::HealthCheckSpec>,
}

impl ContainerSpec {
    pub fn process(&self) -> &oci_spec::runtime::Process {
        self.oci
            .process()
            .as_ref()
            .expect("the spec builder sets a process")
    }

    pub fn args(&self) -> &[String] {
        self.process().args().as_deref().unwrap_or_default()
    }

    pub fn env(&self) -> &[String] {
        self.process().env().as_deref().unwrap_or_default()
    }

    pub fn linux(&self) -> Option<&oci_spec::runtime::Linux> {
        self.oci.linux().as_ref()
    }

    /// Whether the spec asks for a new namespace of this type.
    /// The file of an existing namespace of type `typ` the container joins.
    pub fn namespace_path(&self, typ: oci_spec::runtime::LinuxNamespaceType) -> Option<PathBuf> {
        self.linux()
            .and_then(|l| l.namespaces().as_ref())?
            .iter()
            .find(|n| n.typ() == typ)
            .and_then(|n| n.path().clone())
    }

    pub fn new_namespace(&self, typ: oci_spec::runtime::LinuxNamespaceType) -> bool {
        self.linux()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ && n.path().is_none()))
    }
}

/// Paths of /proc and /sys a container may not read (Docker's list): a file is covered by
/// /dev/null, a directory by an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths of /proc a container may read but not write (Docker's list).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices every container gets: (path, major, minor).
pub const DEFAULT_DEVICES: &[(&str, i64, i64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// ECS ulimit names → (OCI rlimit type, libc resource). The resource constants are u32 on
/// glibc and c_int on musl, hence the casts.
#[allow(clippy::unnecessary_cast)]
pub const ULIMITS: &[(&str, oci_spec::runtime::PosixRlimitType, u32)] = &[
    (
        "core",
        oci_spec::runtime::PosixRlimitType::RlimitCore,
        libc::RLIMIT_CORE as u32,
    ),
    (
        "cpu",
        oci_spec::runtime::PosixRlimitType::RlimitCpu,
        libc::RLIMIT_CPU as u32,
    ),
    (
        "data",
        oci_spec::runtime::PosixRlimitType::RlimitData,
        libc::RLIMIT_DATA as u32,
    ),
    (
        "fsize",
        oci_spec::runtime::PosixRlimitType::RlimitFsize,
        libc::RLIMIT_FSIZE as u32,
    ),
    (
        "locks",
        oci_spec::runtime::PosixRlimitType::RlimitLocks,
        libc::RLIMIT_LOCKS as u32,
    ),
    (
        "memlock",
        oci_spec::runtime::PosixRlimitType::RlimitMemlock,
        libc::RLIMIT_MEMLOCK as u32,
    ),
    (
        "msgqueue",
        oci_spec::runtime::PosixRlimitType::RlimitMsgqueue,
        libc::RLIMIT_MSGQUEUE as u32,
    ),
    (
        "nice",
        oci_spec::runtime::PosixRlimitType::RlimitNice,
        libc::RLIMIT_NICE as u32,
    ),
    (
        "nofile",
        oci_spec::runtime::PosixRlimitType::RlimitNofile,
        libc::RLIMIT_NOFILE as u32,
    ),
    (
        "nproc",
        oci_spec::runtime::PosixRlimitType::RlimitNproc,
        libc::RLIMIT_NPROC as u32,
    ),
    (
        "rss",
        oci_spec::runtime::PosixRlimitType::RlimitRss,
        libc::RLIMIT_RSS as u32,
    ),
    (
        "rtprio",
        oci_spec::runtime::PosixRlimitType::RlimitRtprio,
        libc::RLIMIT_RTPRIO as u32,
    ),
    (
        "rttime",
        oci_spec::runtime::PosixRlimitType::RlimitRttime,
        libc::RLIMIT_RTTIME as u32,
    ),
    (
        "sigpending",
        oci_spec::runtime::PosixRlimitType::RlimitSigpending,
        libc::RLIMIT_SIGPENDING as u32,
    ),
    (
        "stack",
        oci_spec::runtime::PosixRlimitType::RlimitStack,
        libc::RLIMIT_STACK as u32,
    ),
];

/// /dev/shm's size when `sharedMemorySize` is not set (Docker's 64 MiB).
pub const DEFAULT_SHM_MIB: u64 = 64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error(
        "no command specified: neither the container nor its image sets entryPoint or command"
    )]
    NoCommand,
}

/// The process of a container: argv, environment and working directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
}

/// Merges a container's `entryPoint`, `command`, `environment` and `workingDirectory` with the
/// image config as Docker does:
/// - a non-empty `entryPoint` replaces the image's, and then the image's Cmd is not used;
/// - an empty `entryPoint` ([]) clears the image's entrypoint;
/// - `command`, when non-empty, replaces the image's Cmd;
/// - environment: the image's, then the container's (same name: the container wins), PATH
///   defaulted, HOSTNAME set.
pub fn merge_process(
    entry_point: Option<&[String]>,
    command: Option<&[String]>,
    environment: &[(String, String)],
    working_directory: Option<&str>,
    hostname: &str,
    image: &ImageConfig,
) -> Result<Process, SpecError> {
    let user_cmd = command.filter(|c| !c.is_empty());
    let (ep, cmd): (Vec<String>, Vec<String>) = match entry_point {
        Some(ep) if !ep.is_empty() => (
            ep.to_vec(),
            user_cmd.map(<[String]>::to_vec).unwrap_or_default(),
        ),
        Some(_) => (
            Vec::new(),
            user_cmd
                .map(<[String]>::to_vec)
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            user_cmd
                .map(<[String]>::to_vec)
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
    };
    let args: Vec<String> = ep.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }

    let mut env: Vec<(String, String)> = Vec::new();
    let set = |k: &str, v: &str, env: &mut Vec<(String, String)>| match env
        .iter_mut()
        .find(|(n, _)| n == k)
    {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v, &mut env);
    }
    for (k, v) in environment {
        set(k, v, &mut env);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), hostname.to_string()));
    }
    let cwd = working_directory
        .filter(|w| !w.is_empty())
        .map(String::from)
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    Ok(Process {
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
    })
}

/// Parses an image's StopSignal ("SIGTERM", "TERM", "15"); None when absent or unknown.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn img(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        ImageConfig {
            entrypoint: ep.map(s),
            cmd: cmd.map(s),
            env: Some(s(&["PATH=/bin", "A=image", "B=image"])),
            working_dir: Some("/srv".into()),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_command_merge() {
        let i = img(Some(&["/entry"]), Some(&["default"]));
        let m = |ep: Option<&[&str]>, cmd: Option<&[&str]>| {
            let ep = ep.map(s);
            let cmd = cmd.map(s);
            merge_process(ep.as_deref(), cmd.as_deref(), &[], None, "h", &i).map(|p| p.args)
        };
        assert_eq!(m(None, None).unwrap(), s(&["/entry", "default"]));
        assert_eq!(m(None, Some(&["x"])).unwrap(), s(&["/entry", "x"]));
        assert_eq!(m(Some(&["/other"]), None).unwrap(), s(&["/other"]));
        assert_eq!(
            m(Some(&["/other"]), Some(&["y"])).unwrap(),
            s(&["/other", "y"])
        );
        assert_eq!(m(Some(&[]), None).unwrap(), s(&["default"]));
        assert_eq!(m(Some(&[]), Some(&["z"])).unwrap(), s(&["z"]));
        assert_eq!(m(None, Some(&[])).unwrap(), s(&["/entry", "default"]));
        let empty = ImageConfig::default();
        assert_eq!(
            merge_process(None, None, &[], None, "h", &empty),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn env_and_cwd() {
        let i = img(None, Some(&["sh"]));
        let env = vec![
            ("B".to_string(), "task".to_string()),
            ("C".to_string(), "task".to_string()),
        ];
        let p = merge_process(None, None, &env, None, "web", &i).unwrap();
        assert_eq!(
            p.env,
            s(&["PATH=/bin", "A=image", "B=task", "C=task", "HOSTNAME=web"])
        );
        assert_eq!(p.cwd, "/srv");
        let p = merge_process(
            None,
            None,
            &[],
            Some("/data"),
            "web",
            &ImageConfig {
                cmd: Some(s(&["x"])),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.cwd, "/data");
        assert_eq!(p.env[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
