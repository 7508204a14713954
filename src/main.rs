//! skiff: run ECS-style tasks on edge hosts without a container daemon.

mod agent;
mod cgroup;
mod cli;
mod image;
mod net;
mod runtime;
mod task;
mod taskdef;

fn main() {
    std::process::exit(cli::main());
}
