//! `skiff run TASKDEF.json`

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::images::PullOpts;
use super::EXIT_RUNNER_ERROR;
use crate::cgroup::Placement;
use crate::image::PullBehavior;
use crate::task::net::NetSettings;
use crate::task::{run_foreground, Attach, LimitSettings, RunOptions};

/// A task may hold this many processes unless told otherwise: enough for real services, few
/// enough that a fork bomb cannot exhaust a small host.
const DEFAULT_TASK_PIDS_LIMIT: u64 = 4096;
use crate::taskdef::{parse_task_definition, TaskDefError};

#[derive(Args)]
pub struct RunArgs {
    /// An ECS task definition (JSON).
    file: PathBuf,
    /// Seconds between SIGTERM and SIGKILL for containers without stopTimeout.
    #[arg(long, env = "ECS_CONTAINER_STOP_TIMEOUT", default_value_t = 30)]
    stop_timeout: u64,
    /// CFS period (µs) of task-level CPU quotas.
    #[arg(long, env = "SKIFF_CPU_PERIOD_US", default_value_t = crate::cgroup::DEFAULT_CPU_PERIOD_US,
          value_parser = clap::value_parser!(u64).range(1000..=1_000_000))]
    cpu_period_us: u64,
    /// Most processes per task; 0 = unlimited.
    #[arg(long, env = "ECS_TASK_PIDS_LIMIT", default_value_t = DEFAULT_TASK_PIDS_LIMIT)]
    task_pids_limit: u64,
    /// When to pull images (ECS_IMAGE_PULL_BEHAVIOR): default (pull; the cached image if the
    /// registry fails), always, once, prefer-cached.
    #[arg(long, env = "ECS_IMAGE_PULL_BEHAVIOR", default_value = "default")]
    pull_behavior: PullBehavior,
    /// Keep stdin open and pass it to the container's terminal (with `interactive` and
    /// `pseudoTerminal` in its definition).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Put this terminal in raw mode and pass its size to the container's terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Start the task, print its id once its containers run, and leave it running (`skiff
    /// ps`, `logs`, `stop`, `rm` manage it).
    #[arg(short = 'd', long, conflicts_with_all = ["interactive", "tty"])]
    detach: bool,
    /// A name for the task, unique on this host, usable wherever a task id is.
    #[arg(long)]
    name: Option<String>,
    /// The host bridge of bridge and awsvpc tasks.
    #[arg(long, env = "SKIFF_BRIDGE", default_value = crate::net::bridge::DEFAULT_BRIDGE)]
    bridge: String,
    /// Its subnet (the gateway is its first address).
    #[arg(long, env = "SKIFF_BRIDGE_SUBNET", default_value = crate::net::ipam::DEFAULT_SUBNET)]
    bridge_subnet: String,
    /// Host ports for dynamic port mappings, `a-b` (default: the kernel's
    /// ip_local_port_range).
    #[arg(long, env = "ECS_DYNAMIC_HOST_PORT_RANGE")]
    dynamic_host_port_range: Option<String>,
    /// Host ports never mapped, besides 22, 2375, 2376, 51678 and 51679 (comma-separated).
    #[arg(long, env = "ECS_RESERVED_PORTS", value_delimiter = ',')]
    reserved_ports: Vec<u16>,
    /// Firewall backend for NAT and port rules: nft or iptables (default: nft when installed).
    #[arg(long, env = "SKIFF_FIREWALL")]
    firewall: Option<String>,
    /// Internal (`skiff agent`): the task's id instead of a random one.
    #[arg(long, hide = true)]
    task_id: Option<String>,
    /// Internal (`skiff agent`): the control plane's ARN of the task, kept in its record.
    #[arg(long, hide = true)]
    task_arn: Option<String>,
    #[command(flatten)]
    pull: PullOpts,
}

pub async fn run(
    args: RunArgs,
    state_dir: PathBuf,
    cgroup: Placement,
    keep_stopped: Duration,
) -> i32 {
    let file = args.file.display().to_string();
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skiff: {file}: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    let family_hint = args.file.file_stem().and_then(|s| s.to_str());
    let td = match parse_task_definition(&bytes, family_hint) {
        Ok(td) => td,
        Err(TaskDefError::Invalid(errs)) if errs.len() > 1 => {
            eprintln!(
                "skiff: {file}: invalid task definition ({} problems):",
                errs.len()
            );
            for e in errs {
                eprintln!("  {e}");
            }
            return EXIT_RUNNER_ERROR;
        }
        Err(e) => {
            eprintln!("skiff: {file}: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    crate::timing::mark("parsed");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skiff: {file}: running a task needs root (namespaces, mounts and cgroups)");
        return EXIT_RUNNER_ERROR;
    }
    // Absolute, so that overlay options and the shim do not depend on the working directory.
    let state_dir = match std::fs::create_dir_all(&state_dir).and_then(|_| state_dir.canonicalize())
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skiff: state directory {}: {e}", state_dir.display());
            return EXIT_RUNNER_ERROR;
        }
    };
    let opts = RunOptions {
        state_dir,
        cgroup,
        store: match args.pull.store_options() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skiff: {e}");
                return EXIT_RUNNER_ERROR;
            }
        },
        pull_behavior: args.pull_behavior,
        limits: LimitSettings {
            cpu_period_us: args.cpu_period_us,
            task_pids_limit: (args.task_pids_limit > 0).then_some(args.task_pids_limit),
        },
        default_stop_timeout: Duration::from_secs(args.stop_timeout),
        attach: Attach {
            stdin: args.interactive,
            tty: args.tty,
        },
        detach: args.detach,
        name: args.name,
        keep_stopped,
        net: NetSettings {
            bridge: args.bridge,
            subnet: args.bridge_subnet,
            port_range: args.dynamic_host_port_range,
            reserved_ports: args.reserved_ports,
            firewall: args.firewall,
        },
        task_id: args.task_id,
        task_arn: args.task_arn,
    };
    let store_dir = opts.state_dir.clone();
    match run_foreground(td, opts).await {
        Ok(code) => {
            crate::timing::mark("end");
            // After the start (-d) or the end, never before: the task's start is not delayed.
            super::images::cleanup_if_due(&store_dir);
            code
        }
        Err(e) => {
            eprintln!("skiff: {file}: {e}");
            EXIT_RUNNER_ERROR
        }
    }
}
