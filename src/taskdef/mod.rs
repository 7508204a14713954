//! The ECS task definition: the JSON users bring, parsed into a validated model.
//!
//! Parsing walks the JSON by hand rather than through serde derive so that every problem is
//! reported with its field path, and all problems of a file are reported at once.

mod container_meta;
mod lifecycle;
mod linux;
mod network;
mod parse;
mod runnable;
pub mod task_meta;
pub mod units;
mod volumes;

use std::collections::BTreeMap;

pub use parse::{parse_task_definition, parse_task_definition_with, ParseOptions};
pub use runnable::not_yet_runnable;

/// Errors of reading a task definition. Each carries the field paths of every problem found.
#[derive(Debug, thiserror::Error)]
pub enum TaskDefError {
    #[error("{0}")]
    Json(String),
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    None,
    Host,
    Bridge,
    Awsvpc,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Awsvpc => "awsvpc",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskDefinition {
    pub family: String,
    pub network_mode: NetworkMode,
    /// Task-level CPU units (1024 = one vCPU): a hard quota on the task.
    pub cpu: Option<u64>,
    /// Task-level memory in MiB: a hard limit on the task.
    pub memory: Option<u64>,
    /// `pidMode`: None = a PID namespace per container (Docker's default).
    pub pid_mode: Option<PidMode>,
    /// `ipcMode`: None = a private IPC namespace per container (Docker's default).
    pub ipc_mode: Option<IpcMode>,
    pub containers: Vec<ContainerDefinition>,
    pub volumes: Vec<Volume>,
    // The fields below describe the task to a scheduler or a person; a task run here needs
    // none of them (the runtime platform is checked against the host while parsing).
    /// `placementConstraints` (`memberOf` only in a task definition).
    #[cfg_attr(not(test), allow(dead_code))]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// `requiresCompatibilities`: `EC2`, `FARGATE`, `EXTERNAL`, `MANAGED_INSTANCES`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub requires_compatibilities: Vec<String>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub runtime_platform: Option<RuntimePlatform>,
    /// `ephemeralStorage.sizeInGiB` (21-200).
    pub ephemeral_storage_gib: Option<u64>,
    pub task_role_arn: Option<String>,
    /// `executionRoleArn`: the role ECS's agent pulls images and reads secrets with; skiff
    /// uses the host's own registry credentials and secret store instead.
    #[cfg_attr(not(test), allow(dead_code))]
    pub execution_role_arn: Option<String>,
    /// `tags`: (key, value), in the order given.
    #[cfg_attr(not(test), allow(dead_code))]
    pub tags: Vec<(String, String)>,
}

/// One entry of the task's `volumes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub kind: VolumeKind,
}

/// Where a volume's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// `host.sourcePath`: a directory of the host, bind-mounted.
    Host { source_path: String },
    /// `dockerVolumeConfiguration`: a named volume of the `local` driver.
    Docker(DockerVolumeConfiguration),
    /// Neither (or `host` without `sourcePath`): an empty volume that lives as long as the
    /// task, shared by the containers that mount it.
    Task,
}

/// `dockerVolumeConfiguration.scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeScope {
    /// Removed when the task stops.
    #[default]
    Task,
    /// Outlives the task; reused by name.
    Shared,
}

/// `dockerVolumeConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerVolumeConfiguration {
    pub scope: VolumeScope,
    /// Create a shared volume that does not exist yet (ECS uses it with `shared` scope only).
    pub autoprovision: bool,
    /// Always `local`: other drivers are volume plugins skiff cannot load.
    pub driver: String,
    /// Kept with a shared volume it creates (`skiff volume ls --json`).
    pub labels: BTreeMap<String, String>,
}

/// `mountPoints[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Names an entry of the task's `volumes`.
    pub source_volume: String,
    pub container_path: String,
    pub read_only: bool,
}

/// `volumesFrom[]`: every mount point of another container of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFrom {
    pub source_container: String,
    pub read_only: bool,
}

/// `healthCheck`, with ECS's defaults filled in. Times are in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `["CMD", prog, args...]` or `["CMD-SHELL", "shell command"]`.
    pub command: Vec<String>,
    /// 5-300, default 30.
    pub interval: u64,
    /// 2-60, default 5.
    pub timeout: u64,
    /// 1-10, default 3.
    pub retries: u64,
    /// 0-300, default 0: failures during this time after the start do not count.
    pub start_period: u64,
}

/// `logConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfiguration {
    /// `json-file` or `none` (other drivers are refused by validation).
    pub log_driver: String,
    pub options: BTreeMap<String, String>,
    /// `secretOptions`: (option name, valueFrom).
    pub secret_options: Vec<(String, String)>,
}

/// `resourceRequirements[]`: `type` GPU or InferenceAccelerator (validation refuses both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequirement {
    pub kind: String,
    pub value: String,
}

/// `placementConstraints[]` of a task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementConstraint {
    /// Always `memberOf` in a task definition.
    pub kind: String,
    /// A cluster query language expression.
    pub expression: String,
}

/// `runtimePlatform`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimePlatform {
    /// `X86_64` or `ARM64`.
    pub cpu_architecture: Option<String>,
    /// `LINUX`.
    pub operating_system_family: Option<String>,
}

/// `pidMode`: `task` shares one PID namespace among the task's containers; `host` uses the
/// host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidMode {
    Task,
    Host,
}

/// `ipcMode`: `task` shares one IPC namespace among the task's containers; `host` uses the
/// host's; `none` gives each container a private one with /dev/shm not mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcMode {
    Task,
    Host,
    None,
}

/// One `ulimits` entry; `name` is ECS's lower-case name (`nofile`, `nproc`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// `linuxParameters.devices[]` permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePermission {
    Read,
    Write,
    Mknod,
}

/// `linuxParameters.devices[]`: a host device made available in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub host_path: String,
    /// Defaults to `host_path`.
    pub container_path: String,
    /// Empty in the JSON means all three (Docker's "rwm").
    pub permissions: Vec<DevicePermission>,
}

/// `linuxParameters.tmpfs[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub container_path: String,
    /// MiB.
    pub size: u64,
    /// Mount options as given (`ro`, `noexec`, `mode=1777`, ...), validated.
    pub mount_options: Vec<String>,
}

/// `portMappings[].protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// One `portMappings` entry: `count` container ports from `container_port` (more than one
/// for a `containerPortRange`), to `host_port` (None: a dynamic host port, or a host range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: Option<u16>,
    pub protocol: PortProtocol,
    pub count: u16,
    pub name: Option<String>,
}

/// `dependsOn[]`: `condition` is START, COMPLETE, SUCCESS or HEALTHY (the target has a
/// `healthCheck`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependsOn {
    pub container: String,
    pub condition: String,
}

/// `restartPolicy` with `enabled: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    pub ignored_exit_codes: Vec<i32>,
    /// Seconds (60-1800, default 300).
    pub restart_attempt_period: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    /// CPU units (relative weight); 0 when absent.
    pub cpu: u64,
    /// Hard memory limit in MiB.
    pub memory: Option<u64>,
    /// Soft memory limit in MiB.
    pub memory_reservation: Option<u64>,
    pub essential: bool,
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub environment: Vec<(String, String)>,
    pub working_directory: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when the container is stopped.
    pub stop_timeout: Option<u64>,
    pub hostname: Option<String>,
    /// `linuxParameters.maxSwap` in MiB (0 = no swap; absent = no swap either).
    pub max_swap: Option<u64>,
    /// `linuxParameters.swappiness` (0-100).
    pub swappiness: Option<u64>,
    /// `repositoryCredentials.credentialsParameter`: the name of a credential in skiff's
    /// credentials file (`named`).
    pub repository_credentials: Option<String>,
    pub privileged: bool,
    pub readonly_root_filesystem: bool,
    /// `user`: `uid`, `uid:gid`, `name`, `name:group` (resolved inside the container).
    pub user: Option<String>,
    pub ulimits: Vec<Ulimit>,
    /// `systemControls`: (name, value), namespaced sysctls only.
    pub system_controls: Vec<(String, String)>,
    pub interactive: bool,
    pub pseudo_terminal: bool,
    /// `linuxParameters.capabilities.add` / `.drop`: upper-case names without `CAP_`, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub devices: Vec<Device>,
    pub init_process_enabled: bool,
    /// `linuxParameters.sharedMemorySize` in MiB (size of /dev/shm).
    pub shared_memory_size: Option<u64>,
    pub tmpfs: Vec<Tmpfs>,
    /// `dnsServers`, `dnsSearchDomains`: written to the container's /etc/resolv.conf.
    pub dns_servers: Vec<String>,
    pub dns_search_domains: Vec<String>,
    /// `extraHosts`: (hostname, ipAddress) lines added to the container's /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    pub port_mappings: Vec<PortMapping>,
    /// `links`: (container name, alias).
    pub links: Vec<(String, Option<String>)>,
    /// `disableNetworking`: loopback only, whatever the task's network mode.
    pub disable_networking: bool,
    pub depends_on: Vec<DependsOn>,
    /// `startTimeout` (s): how long containers depending on this one wait for it.
    pub start_timeout: Option<u64>,
    pub restart_policy: Option<RestartPolicy>,
    /// `secrets`: (environment variable, valueFrom).
    pub secrets: Vec<(String, String)>,
    /// `environmentFiles` given as local absolute paths.
    pub environment_files: Vec<String>,
    pub mount_points: Vec<MountPoint>,
    pub volumes_from: Vec<VolumeFrom>,
    pub health_check: Option<HealthCheck>,
    /// `dockerLabels`: metadata; nothing on this host reads them.
    pub docker_labels: BTreeMap<String, String>,
    pub log_configuration: Option<LogConfiguration>,
    pub resource_requirements: Vec<ResourceRequirement>,
}
