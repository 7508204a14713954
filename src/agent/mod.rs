//! The edge daemon (`skiff agent`): joins a control plane, runs the tasks it is given with
//! the task engine, and reports their state and utilization, also across outages of the
//! server and restarts of its own.

pub mod capacity;
mod client;
pub mod config;
mod daemon;
mod launch;
pub mod local;
mod outbox;
mod snapshot;
mod tls;
mod usage;

pub use daemon::run;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("config: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: corrupt: {msg}", file.display())]
    Corrupt { file: PathBuf, msg: String },
    #[error("server unreachable ({path}): {msg}")]
    Unreachable { path: String, msg: String },
    #[error("server refused {path} ({status} {kind}): {message}")]
    Refused {
        path: String,
        status: u16,
        kind: String,
        message: String,
    },
    #[error("interrupted")]
    Interrupted,
}
