//! The task engine: from a validated task definition to running containers and back to
//! nothing. So far the foreground run of `skiff run`.

mod limits;
pub mod net;
pub mod record;
mod run;
pub mod secrets;
mod spec;
pub mod store;
pub mod volumes;

pub use limits::LimitSettings;
pub use run::{check_task_id, connect, run_foreground, Attach, RunOptions};

use crate::cgroup::CgroupError;
use crate::image::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{}: {0}", pull_error_name(.0))]
    Pull(#[from] ImageError),
    #[error("ResourceInitializationError: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("CannotCreateContainerError: container {container}: {msg}")]
    Create { container: String, msg: String },
    #[error("task state: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("shim: {0}")]
    Shim(String),
    #[error("ResourceInitializationError: network: {0}")]
    Network(String),
    #[error("ResourceInitializationError: unable to pull secrets: {0}")]
    Secrets(String),
    #[error("ResourceInitializationError: {0}")]
    Volume(#[from] volumes::VolumeError),
    #[error("interrupted before the task started")]
    Interrupted,
}

/// ECS's name for a pull failure: the registry refusing our credentials is an auth error.
fn pull_error_name(e: &ImageError) -> &'static str {
    match e {
        ImageError::Registry { source, .. } if source.is_auth() => "CannotPullContainerAuthError",
        _ => "CannotPullContainerError",
    }
}

pub use crate::runtime::proto::OOM_REASON;
