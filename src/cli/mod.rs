//! Command-line entry: parse, then either enter the single-threaded shim (before any tokio
//! runtime exists) or run a command on a tokio runtime.

mod agent;
mod control_load;
mod ctl;
mod ctl_table;
mod exec;
mod images;
mod info;
mod logs;
mod net_debug;
mod run;
mod secret;
mod server;
mod stats;
mod tasks;
mod validate;
mod volume;

pub(crate) use tasks::parse_duration;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Bytes for people: 1.5MiB.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Exit code for errors of skiff itself rather than of a container (docker's and podman's).
pub const EXIT_RUNNER_ERROR: i32 = 125;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Run ECS-style tasks on edge hosts without a container daemon"
)]
struct Cli {
    /// Where images, layers and task state live.
    #[arg(
        long,
        global = true,
        env = "SKIFF_STATE_DIR",
        default_value = "/var/lib/skiff"
    )]
    state_dir: PathBuf,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, global = true, env = "SKIFF_LOG", default_value = "warn")]
    log_level: String,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Name of skiff's parent cgroup, beneath the cgroup skiff runs in.
    #[arg(long, global = true, env = "SKIFF_CGROUP_PARENT", default_value = crate::cgroup::DEFAULT_PARENT)]
    cgroup_parent: String,
    /// Put skiff's cgroups beneath this cgroup path (e.g. /skiff.slice, an empty delegated
    /// cgroup) instead of beneath the cgroup skiff runs in.
    #[arg(long, global = true, env = "SKIFF_CGROUP_ROOT")]
    cgroup_root: Option<String>,
    /// How long a stopped task stays listed before its files are removed (3h, 90m, ...).
    #[arg(long, global = true, env = "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION",
          default_value = "3h", value_parser = tasks::parse_duration)]
    task_cleanup_wait: std::time::Duration,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a task definition here: in the foreground, or detached with -d.
    Run(run::RunArgs),
    /// List tasks (running ones; -a: also stopped ones).
    Ps(tasks::PsArgs),
    /// Stop tasks: each container gets its stop signal, then SIGKILL after its stopTimeout.
    Stop(tasks::StopArgs),
    /// A task's status, containers, exit codes and reasons.
    Inspect(tasks::InspectArgs),
    /// Remove stopped tasks and their files (-f: stop running ones first).
    Rm(tasks::RmArgs),
    /// The local secret store that containers' `secrets[].valueFrom` resolve against.
    Secret(secret::SecretArgs),
    /// The shared named volumes that outlive their tasks: list, remove.
    Volume(volume::VolumeArgs),
    /// Check task definitions against ECS's rules, reporting every problem with its path.
    Validate(validate::ValidateArgs),
    /// Pull an image into the local store.
    Pull(images::PullArgs),
    /// List the images in the local store.
    Images(images::ImagesArgs),
    /// Remove images (references or digests) and the layers only they use.
    Rmi(images::RmiArgs),
    /// Remove unreferenced images, unused layers and stale temporary files.
    Prune(images::PruneArgs),
    /// Run a command in a running container of a task.
    Exec(exec::ExecArgs),
    /// A container's output, from its log file.
    Logs(logs::LogsArgs),
    /// Utilization of running tasks (CPU, memory, network, block I/O, pids).
    Stats(stats::StatsArgs),
    /// This host's capacity and cgroup setup.
    Info(info::InfoArgs),
    /// The edge daemon: join a control plane (`skiff server`), run the tasks it gives this
    /// host, report their state and utilization.
    Agent(agent::AgentArgs),
    /// The control plane: ECS API for users, desired state for agents (HTTPS).
    Server(server::ServerArgs),
    /// Drive a control plane server, verbs after `aws ecs`.
    Ctl(ctl::CtlArgs),
    /// Internal: simulated agents and run-task latency against a server (benchmarks).
    #[command(hide = true)]
    ControlLoad(control_load::LoadArgs),
    /// Internal: drive the networking primitives step by step (tests, debugging).
    #[command(hide = true)]
    NetDebug(net_debug::NetDebugArgs),
    /// Internal: the per-task monitor.
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_RUNNER_ERROR } else { 0 };
        }
    };
    // The shim forks container processes: it must stay single-threaded, so it runs before
    // (and instead of) any tokio runtime.
    if let Cmd::Shim { config } = &cli.cmd {
        return crate::runtime::shim::main(config);
    }
    crate::timing::mark("start");
    // Commands that print die quietly on a closed pipe (`skiff info | head`), as CLI tools
    // do; the shim above keeps ignoring SIGPIPE so that containers outlive a closed terminal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    init_logging(&cli.log_level, cli.log_format);
    let placement = crate::cgroup::Placement {
        parent: cli.cgroup_parent.clone(),
        root: cli.cgroup_root.clone(),
    };
    if let Cmd::Info(args) = cli.cmd {
        return info::run(args, &placement);
    }
    if let Cmd::NetDebug(args) = cli.cmd {
        return net_debug::run(args, &cli.state_dir);
    }
    // While an agent runs on this state directory, the task commands go through it.
    if matches!(
        cli.cmd,
        Cmd::Ps(_) | Cmd::Logs(_) | Cmd::Stop(_) | Cmd::Inspect(_) | Cmd::Stats(_)
    ) {
        if let Some(code) = crate::agent::local::forward(&cli.state_dir) {
            return code;
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start runtime: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    let code = rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(args) => run::run(args, cli.state_dir, placement, cli.task_cleanup_wait).await,
            Cmd::Ps(args) => tasks::ps(args, &cli.state_dir, &placement, cli.task_cleanup_wait),
            Cmd::Stop(args) => {
                tasks::stop(args, &cli.state_dir, &placement, cli.task_cleanup_wait).await
            }
            Cmd::Inspect(args) => {
                tasks::inspect(args, &cli.state_dir, &placement, cli.task_cleanup_wait)
            }
            Cmd::Secret(args) => secret::run(args, &cli.state_dir),
            Cmd::Volume(args) => volume::run(args, &cli.state_dir),
            Cmd::Validate(args) => validate::run(args),
            Cmd::Rm(args) => {
                tasks::rm(args, &cli.state_dir, &placement, cli.task_cleanup_wait).await
            }
            Cmd::Stats(args) => stats::run(args, &cli.state_dir).await,
            Cmd::Logs(args) => logs::run(args, &cli.state_dir),
            Cmd::Exec(args) => exec::run(args, &cli.state_dir).await,
            Cmd::Pull(args) => images::pull(args, &cli.state_dir).await,
            Cmd::Images(args) => images::images(args, &cli.state_dir),
            Cmd::Rmi(args) => images::rmi(args, &cli.state_dir).await,
            Cmd::Prune(args) => images::prune(args, &cli.state_dir).await,
            Cmd::Agent(args) => agent::run(args, placement).await,
            Cmd::Server(args) => server::run(args).await,
            Cmd::Ctl(args) => ctl::run(args).await,
            Cmd::ControlLoad(args) => control_load::run(args).await,
            Cmd::Shim { .. } | Cmd::Info(_) | Cmd::NetDebug(_) => unreachable!("handled above"),
        }
    });
    // The process exits next: no need to wait for idle worker threads to wind down.
    rt.shutdown_background();
    code
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
