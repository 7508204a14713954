//! The container runtime: the container spec, the root filesystem, process creation in new
//! namespaces, and the per-task shim that watches the containers.
//!
//! Everything that forks lives in the shim, a single-threaded re-exec of the skiff binary
//! started before any tokio runtime exists: after `clone` in a multi-threaded process only
//! async-signal-safe calls are allowed, and the container setup needs far more.

pub mod caps;
pub mod exec;
pub mod health;
pub mod init;
pub mod lifecycle;
pub mod logfile;
mod process;
pub mod proto;
mod rootfs;
pub mod sealed;
pub mod seccomp;
pub mod secret;
pub mod shim;
pub mod spec;
mod syscalls;
pub mod user;
