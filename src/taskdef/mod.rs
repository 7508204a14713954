//! The ECS task definition: the JSON users bring, parsed into a validated model.
//!
//! Parsing walks the JSON by hand rather than through serde derive so that every problem is
//! reported with its field path, and all problems of a file are reported at once.

mod parse;
pub mod units;

pub use parse::parse_task_definition;

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
    pub containers: Vec<ContainerDefinition>,
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
}
