//! `skiff agent [--config FILE]`

use std::path::PathBuf;

use clap::Args;

use super::EXIT_RUNNER_ERROR;
use crate::agent::config::Config;
use crate::cgroup::Placement;

#[derive(Args)]
pub struct AgentArgs {
    /// The agent's settings (TOML; default /etc/skiff/agent.toml, which may be absent when
    /// the environment sets everything).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: AgentArgs, placement: Placement) -> i32 {
    let cfg = match Config::load(args.config.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skiff agent: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skiff agent: needs root (it runs tasks: namespaces, mounts and cgroups)");
        return EXIT_RUNNER_ERROR;
    }
    // On cgroup v2 the agent moves into a leaf of its cgroup before any child shares it.
    let placement = match crate::cgroup::Hierarchy::for_supervisor(&placement) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skiff agent: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    match crate::agent::run(cfg, placement).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff agent: {e}");
            EXIT_RUNNER_ERROR
        }
    }
}
