//! `skiff run` in the foreground: pull, create cgroups and specs, start the shim, follow its
//! events with ECS's essential-container rules, stop on a signal, and remove everything.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

use super::limits::{container_limits, task_limits, LimitSettings};
use super::record::{self, ContainerRecord, TaskRecord};
use super::spec::{self, HostFacts};
use super::{TaskError, OOM_REASON};
use crate::cgroup::{Cgroup, Hierarchy, Placement};
use crate::image::auth::PullAuth;
use crate::image::pipeline::Quiet;
use crate::image::{Image, PullBehavior, Store, StoreOptions};
use crate::runtime::health::HealthCheckSpec;
use crate::runtime::lifecycle::{Condition, Dependency, RestartPolicy};
use crate::runtime::logfile::{DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE};
use crate::runtime::proto::{Command, Event, ShimConfig, Status, TaskState, READY_FD, SOCKET_FILE};
use crate::runtime::sealed::sealed_self;
use crate::runtime::spec::{merge_process, parse_signal, ContainerSpec};
use crate::taskdef::{IpcMode, PidMode, TaskDefinition};

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub cgroup: Placement,
    pub store: StoreOptions,
    pub pull_behavior: PullBehavior,
    /// Used for containers without `stopTimeout` (ECS_CONTAINER_STOP_TIMEOUT, default 30 s).
    pub default_stop_timeout: Duration,
    pub limits: LimitSettings,
    pub attach: Attach,
    /// `-d`: start the task, print its id once every container has started, and leave it
    /// to its shim.
    pub detach: bool,
    /// `--name`.
    pub name: Option<String>,
    /// How long stopped tasks stay listed before their files are removed.
    pub keep_stopped: Duration,
    /// The bridge network (bridge and awsvpc modes).
    pub net: super::net::NetSettings,
    /// A task id chosen by the caller (`skiff agent`: the id part of the task's ARN) instead
    /// of a random one. Its directory is made before the pull, so that the id is taken (and
    /// the task listed as PENDING) from the start: a second start of the same id fails.
    pub task_id: Option<String>,
    /// The control plane's ARN of the task, kept in its record.
    pub task_arn: Option<String>,
}

/// A caller-chosen task id must be a safe directory name.
pub fn check_task_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "task id {id:?}: must be 1-64 letters, digits or '-'"
        ));
    }
    Ok(())
}

/// What of the caller's terminal a foreground run hands to the task.
#[derive(Debug, Clone, Default)]
pub struct Attach {
    /// `-i`: the caller's stdin goes to the container's terminal.
    pub stdin: bool,
    /// `-t`: the caller's terminal is put in raw mode and its size follows.
    pub tty: bool,
}

fn new_task_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("getrandom");
    hex::encode(b)
}

/// What the task created, so that every path out removes exactly that.
struct Created {
    /// (task directory, task id) of a task whose network may hold something.
    net: Option<(PathBuf, String)>,
    task_dir: Option<PathBuf>,
    hierarchy: Option<Hierarchy>,
    task_cgroup: Option<Cgroup>,
    container_cgroups: Vec<Cgroup>,
}

impl Created {
    fn cleanup(&mut self) {
        if let Some((dir, id)) = self.net.take() {
            super::net::release(&dir, &id);
        }
        for cg in self.container_cgroups.drain(..) {
            cg.remove();
        }
        if let Some(cg) = self.task_cgroup.take() {
            cg.remove();
        }
        if let Some(h) = self.hierarchy.take() {
            h.release();
        }
        if let Some(d) = self.task_dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot remove task directory");
            }
        }
    }
}

/// Runs a task in the foreground and returns the exit code `skiff run` exits with.
pub async fn run_foreground(td: TaskDefinition, opts: RunOptions) -> Result<i32, TaskError> {
    if let Some(m) = crate::taskdef::task_meta::platform_mismatch(&td) {
        return Err(TaskError::Unsupported(m));
    }
    let pending = crate::taskdef::not_yet_runnable(&td);
    if !pending.is_empty() {
        return Err(TaskError::Unsupported(pending.join("; ")));
    }
    let mut created = Created {
        net: None,
        task_dir: None,
        hierarchy: None,
        task_cgroup: None,
        container_cgroups: Vec::new(),
    };
    let result = run_inner(&td, &opts, &mut created).await;
    // A detached task that started belongs to its shim now; anything else is undone.
    if !(opts.detach && result.is_ok()) {
        created.cleanup();
    }
    result
}

/// The container's `environment` with the variables of its `environmentFiles` (Docker's
/// env-file format: `NAME=value` lines, `#` comments, blank lines) that it does not set
/// itself; of two files setting one name, the first one's value holds.
fn with_env_files(
    c: &crate::taskdef::ContainerDefinition,
    i: usize,
) -> Result<Vec<(String, String)>, String> {
    let mut env = c.environment.clone();
    for (k, f) in c.environment_files.iter().enumerate() {
        let text = std::fs::read_to_string(f).map_err(|e| {
            format!("containerDefinitions[{i}].environmentFiles[{k}].value: {f}: {e}")
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(format!(
                    "containerDefinitions[{i}].environmentFiles[{k}].value: {f}:{}: expected NAME=value",
                    n + 1
                ));
            };
            if !env.iter().any(|(e, _)| e == name) {
                env.push((name.to_string(), value.to_string()));
            }
        }
    }
    Ok(env)
}

/// Fails when `name` is already taken by a task of the state directory.
fn check_name_free(state_dir: &Path, name: &str) -> Result<(), TaskError> {
    let bad = |msg: String| TaskError::Unsupported(format!("--name {name:?}: {msg}"));
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(bad(
            "must be 1-255 letters, digits, '_', '-' or '.'".to_string()
        ));
    }
    if name.len() == 32 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("looks like a task id".to_string()));
    }
    if let Some(t) = super::store::list(state_dir)
        .into_iter()
        .find(|t| t.name() == Some(name))
    {
        return Err(bad(format!(
            "already in use by task {} (remove it with `skiff rm`)",
            t.id
        )));
    }
    Ok(())
}

async fn run_inner(
    td: &TaskDefinition,
    opts: &RunOptions,
    created: &mut Created,
) -> Result<i32, TaskError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| TaskError::Shim(e.to_string()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| TaskError::Shim(e.to_string()))?;

    let task_id = match &opts.task_id {
        Some(id) => {
            check_task_id(id).map_err(TaskError::Unsupported)?;
            id.clone()
        }
        None => new_task_id(),
    };
    tracing::info!(task = %task_id, family = %td.family, "starting task");
    super::store::sweep(&opts.state_dir, &opts.cgroup, opts.keep_stopped);
    let task_dir = opts.state_dir.join("tasks").join(&task_id);
    if opts.task_id.is_some() {
        super::store::create_task_dir(&task_dir).map_err(|e| TaskError::Io {
            what: format!("create {}", task_dir.display()),
            source: e,
        })?;
        created.task_dir = Some(task_dir.clone());
    }
    // Whatever the new task's mode: what a crash left of another task's network goes now.
    if opts.state_dir.join("net").exists() {
        tokio::task::block_in_place(|| {
            crate::net::settings::reconcile_orphans(&opts.net, &opts.state_dir)
        });
    }

    // Images, each once, in parallel; a signal aborts the pull.
    let store = Store::open(&opts.state_dir, opts.store.clone())?;
    let store_hold = tokio::select! {
        r = store.hold() => r?,
        _ = sigint.recv() => return Err(TaskError::Interrupted),
        _ = sigterm.recv() => return Err(TaskError::Interrupted),
    };
    // An image pulled with a container's repositoryCredentials counts apart from the same
    // image pulled with the configured ones.
    let mut unique: Vec<(&str, Option<&str>)> = td
        .containers
        .iter()
        .map(|c| (c.image.as_str(), c.repository_credentials.as_deref()))
        .collect();
    unique.sort();
    unique.dedup();
    let pulls = futures_util::future::try_join_all(unique.iter().map(|(i, creds)| {
        let auth = match creds {
            Some(name) => PullAuth::Named(name.to_string()),
            None => PullAuth::Configured,
        };
        store.ensure(i, opts.pull_behavior, auth, &Quiet)
    }));
    let images: Vec<Image> = tokio::select! {
        r = pulls => r?,
        _ = sigint.recv() => return Err(TaskError::Interrupted),
        _ = sigterm.recv() => return Err(TaskError::Interrupted),
    };
    let by_key: HashMap<(&str, Option<&str>), &Image> =
        unique.iter().copied().zip(images.iter()).collect();
    let image_of = |c: &crate::taskdef::ContainerDefinition| {
        by_key[&(c.image.as_str(), c.repository_credentials.as_deref())]
    };

    crate::timing::mark("image_ready");
    // Task directory and cgroups. A name is checked and taken under the tasks lock, held
    // until the record that carries it is written; so are the shared volumes the task uses
    // (`skiff volume rm` takes the lock and then reads the records).
    let name_lock = if opts.name.is_some() || super::volumes::uses_shared(td) {
        let l = super::store::lock(&opts.state_dir).map_err(|e| TaskError::Io {
            what: "lock the tasks".into(),
            source: e,
        })?;
        if let Some(name) = &opts.name {
            check_name_free(&opts.state_dir, name)?;
        }
        Some(l)
    } else {
        None
    };
    if opts.task_id.is_none() {
        super::store::create_task_dir(&task_dir).map_err(|e| TaskError::Io {
            what: format!("create {}", task_dir.display()),
            source: e,
        })?;
        created.task_dir = Some(task_dir.clone());
    }

    let hierarchy = Hierarchy::detect(&opts.cgroup)?;
    tracing::info!(mode = ?hierarchy.mode, controllers = ?hierarchy.controllers, "cgroups");
    created.hierarchy = Some(hierarchy.clone());
    let task_cg = hierarchy.create_task(&task_id, &task_limits(td, &opts.limits))?;
    created.task_cgroup = Some(task_cg.clone());
    task_cg.enable_subtree()?;

    // The network (bridge, awsvpc): namespaces, addresses, veths and port rules, before the
    // specs that name them.
    created.net = Some((task_dir.clone(), task_id.clone()));
    let task_net = tokio::task::block_in_place(|| {
        super::net::setup(td, &task_id, &task_dir, &opts.state_dir, &opts.net)
    })
    .map_err(|e| TaskError::Network(e.to_string()))?;

    let prepared = super::volumes::prepare(td, &task_dir, &opts.state_dir)?;
    let host = HostFacts::gather();
    let mut specs: Vec<ContainerSpec> = Vec::new();
    let mut mounts: Vec<Vec<super::volumes::VolumeMount>> = Vec::new();
    for (i, c) in td.containers.iter().enumerate() {
        let image = image_of(c);
        // Host mode: the host's name, as Docker gives a container on the host's network.
        let hostname = match (&c.hostname, td.network_mode) {
            (Some(h), _) => h.clone(),
            (None, crate::taskdef::NetworkMode::Host) => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| c.name.clone()),
            (None, _) => c.name.clone(),
        };
        let create_err = |msg: String| TaskError::Create {
            container: c.name.clone(),
            msg,
        };
        let environment = with_env_files(c, i).map_err(&create_err)?;
        let secrets = c
            .secrets
            .iter()
            .enumerate()
            .map(|(k, (name, from))| {
                super::secrets::resolve(&opts.state_dir, from)
                    .map(|r| (name.clone(), r))
                    .map_err(|e| {
                        TaskError::Secrets(format!(
                            "containerDefinitions[{i}].secrets[{k}].valueFrom: {e}"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let process = merge_process(
            c.entry_point.as_deref(),
            c.command.as_deref(),
            &environment,
            c.working_directory.as_deref(),
            &hostname,
            &image.config,
        )
        .map_err(|e| create_err(e.to_string()))?;
        let volume_mounts = super::volumes::container_mounts(td, i, &prepared);
        let built = spec::build(
            td,
            i,
            process,
            &hostname,
            &host,
            &task_net.views[i],
            &volume_mounts,
        )
        .map_err(create_err)?;
        mounts.push(volume_mounts);

        let cg = task_cg.child(&c.name);
        cg.create(&container_limits(c, &opts.limits))?;
        created.container_cgroups.push(cg.clone());
        cg.apply_devices(&built.device_rules)?;

        let cdir = task_dir.join("containers").join(&c.name);
        let (upper, work, rootfs, etc) = (
            cdir.join("upper"),
            cdir.join("work"),
            cdir.join("rootfs"),
            cdir.join("etc"),
        );
        for d in [&upper, &work, &rootfs, &etc] {
            std::fs::create_dir_all(d).map_err(|e| TaskError::Io {
                what: format!("create {}", d.display()),
                source: e,
            })?;
        }
        for (name, text) in &built.etc_files {
            let p = etc.join(name);
            std::fs::write(&p, text).map_err(|e| TaskError::Io {
                what: format!("write {}", p.display()),
                source: e,
            })?;
        }
        let first = td.containers.first().map(|f| f.name.clone());
        specs.push(ContainerSpec {
            name: c.name.clone(),
            lower_dirs: image
                .chain_ids
                .iter()
                .rev()
                .map(|id| store.layer_dir(id))
                .collect(),
            upper_dir: upper,
            work_dir: work,
            rootfs,
            cgroup: cg,
            oci: built.oci,
            user: c.user.clone(),
            init: c.init_process_enabled,
            share_pid_with: (td.pid_mode == Some(PidMode::Task) && i > 0)
                .then(|| first.clone())
                .flatten(),
            share_ipc_with: (td.ipc_mode == Some(IpcMode::Task) && i > 0)
                .then(|| first.clone())
                .flatten(),
            essential: c.essential,
            stop_signal: image
                .config
                .stop_signal
                .as_deref()
                .and_then(parse_signal)
                .unwrap_or(libc::SIGTERM),
            stop_timeout: c
                .stop_timeout
                .unwrap_or(opts.default_stop_timeout.as_secs()),
            log_path: cdir.join("container.log"),
            etc_dir: etc,
            depends_on: c
                .depends_on
                .iter()
                .map(|d| Dependency {
                    container: d.container.clone(),
                    condition: match d.condition.as_str() {
                        "COMPLETE" => Condition::Complete,
                        "SUCCESS" => Condition::Success,
                        "HEALTHY" => Condition::Healthy,
                        _ => Condition::Start,
                    },
                })
                .collect(),
            start_timeout: c.start_timeout,
            restart: c.restart_policy.as_ref().map(|r| RestartPolicy {
                ignored_exit_codes: r.ignored_exit_codes.clone(),
                attempt_period_secs: r.restart_attempt_period,
            }),
            secrets,
            health_check: c.health_check.as_ref().map(|h| {
                HealthCheckSpec::new(&h.command, h.interval, h.timeout, h.retries, h.start_period)
            }),
        });
    }

    let record = TaskRecord {
        task_id: task_id.clone(),
        name: opts.name.clone(),
        task_arn: opts.task_arn.clone(),
        family: td.family.clone(),
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        cgroup: task_cg.clone(),
        containers: td
            .containers
            .iter()
            .zip(&specs)
            .enumerate()
            .map(|(i, (c, s))| ContainerRecord {
                name: c.name.clone(),
                image: c.image.clone(),
                image_digest: image_of(c).manifest_digest.to_string(),
                cgroup: s.cgroup.clone(),
                network: task_net.records[i].clone(),
                mounts: mounts[i].clone(),
            })
            .collect(),
    };
    record::write(&task_dir, &record).map_err(|e| TaskError::Io {
        what: format!("write {}", task_dir.join(record::RECORD_FILE).display()),
        source: e,
    })?;
    drop(name_lock);
    // The record names the images now: a cleanup sees them in use.
    drop(store_hold);

    crate::timing::mark("prepared");
    let config = ShimConfig {
        task_id: task_id.clone(),
        task_dir: task_dir.clone(),
        containers: specs,
        prefix_output: td.containers.len() > 1,
        echo_output: !opts.detach,
        task_cgroup: Some(task_cg.clone()),
        log_max_size: DEFAULT_MAX_SIZE,
        log_max_files: DEFAULT_MAX_FILES,
        wait_for_client: !opts.detach,
    };
    let config_path = task_dir.join("shim.json");
    std::fs::write(
        &config_path,
        serde_json::to_vec(&config).expect("config serializes"),
    )
    .map_err(|e| TaskError::Io {
        what: format!("write {}", config_path.display()),
        source: e,
    })?;

    let shim_out = if opts.detach {
        // Nobody reads a detached shim's terminal: its own messages go to a file.
        let p = task_dir.join(SHIM_LOG);
        Some(std::fs::File::create(&p).map_err(|e| TaskError::Io {
            what: format!("create {}", p.display()),
            source: e,
        })?)
    } else {
        None
    };
    let empty = opts.state_dir.join(SEALED_LOWER_DIR);
    let shim_pid = spawn_shim(&config_path, &empty, opts.attach.stdin, shim_out).await?;
    crate::timing::mark("shim_ready");
    // The shim's state file exists now: the task is no longer "being created".
    let _ = std::fs::remove_file(task_dir.join(super::store::CREATING_FILE));
    if opts.detach {
        return wait_started(&task_dir, &task_id).await;
    }
    let r = supervise(&task_dir, shim_pid, &opts.attach, &mut sigint, &mut sigterm).await;
    if r.is_err() {
        // The task must not run on unwatched while its files are removed.
        let _ = nix::sys::signal::kill(shim_pid, nix::sys::signal::SIGKILL);
    }
    r
}

/// An empty directory in the state directory: the second lower layer of the read-only
/// overlay the shim's binary is seen through (see [`crate::runtime::sealed`]).
const SEALED_LOWER_DIR: &str = "empty";

/// Starts the shim from a sealed copy of our binary and waits until it is ready (its socket
/// listens); returns its pid.
async fn spawn_shim(
    config_path: &Path,
    empty_dir: &Path,
    stdin: bool,
    output: Option<std::fs::File>,
) -> Result<Pid, TaskError> {
    let shim_err = |what: &str, e: std::io::Error| TaskError::Shim(format!("{what}: {e}"));
    let exe = sealed_self(empty_dir).map_err(|e| shim_err("sealed copy of /proc/self/exe", e))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| TaskError::Shim(format!("pipe: {e}")))?;
    let w = ready_w.as_raw_fd();
    let mut cmd = std::process::Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0("skiff")
        .arg("shim")
        .arg("--config")
        .arg(config_path)
        .stdin(if stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(match &output {
            Some(f) => Stdio::from(f.try_clone().map_err(|e| shim_err("shim log", e))?),
            None => Stdio::inherit(),
        })
        .stderr(match output {
            Some(f) => Stdio::from(f),
            None => Stdio::inherit(),
        })
        // Its own process group: a terminal's Ctrl-C reaches skiff, which decides.
        .process_group(0);
    // Only dup2/fcntl between fork and exec: both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if w == READY_FD {
                if libc::fcntl(w, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(w, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| shim_err("start shim", e))?;
    drop(ready_w);
    drop(exe);
    // The first process exits as soon as the detached shim is forked.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| TaskError::Shim(e.to_string()))?
        .map_err(|e| shim_err("wait for shim", e))?;
    if !status.success() {
        return Err(TaskError::Shim(format!("shim exited with {status}")));
    }
    let line = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        std::fs::File::from(ready_r)
            .read_to_string(&mut s)
            .map(|_| s)
    })
    .await
    .map_err(|e| TaskError::Shim(e.to_string()))?
    .map_err(|e| shim_err("read shim readiness", e))?;
    let pid: i32 = line
        .trim()
        .parse()
        .map_err(|_| TaskError::Shim("the shim failed before it was ready".into()))?;
    Ok(Pid::from_raw(pid))
}

/// A detached task's shim writes its own messages here.
pub const SHIM_LOG: &str = "shim.log";

/// `run -d`: follows the shim's events until every container has started (prints the task id,
/// returns 0) or the start failed (prints why, returns the failure's exit code; the stopped
/// task stays listed for `skiff ps -a` and `skiff logs`).
async fn wait_started(task_dir: &Path, task_id: &str) -> Result<i32, TaskError> {
    let sock = match connect(task_dir).await {
        Ok(s) => s,
        // The shim may have finished (a start failure, a quick command) before we connected.
        Err(e) => {
            return outcome_from_state(task_dir, task_id)
                .ok_or_else(|| TaskError::Shim(format!("connect to the shim: {e}")))
        }
    };
    let n = TaskState::read(task_dir)
        .map(|st| st.containers.len())
        .unwrap_or(1);
    let (rd, _wr) = sock.into_split();
    let mut lines = BufReader::new(rd).lines();
    let mut started = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(ev) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        match ev {
            Event::Started { .. } => {
                started += 1;
                if started == n {
                    println!("{task_id}");
                    return Ok(0);
                }
            }
            Event::StartFailed {
                container,
                error,
                exit_code,
            } => {
                eprintln!("skiff: container {container}: CannotStartContainerError: {error}");
                eprintln!("skiff: task {task_id} stopped");
                return Ok(exit_code);
            }
            Event::TaskStopped { exit_code, reason } => {
                // Every container ran and the task already ended (a quick command).
                println!("{task_id}");
                tracing::info!(?exit_code, reason, "task already stopped");
                return Ok(0);
            }
            _ => {}
        }
    }
    // The events went out before we listened: the state file has the outcome.
    outcome_from_state(task_dir, task_id)
        .ok_or_else(|| TaskError::Shim("the shim ended before the task started".into()))
}

/// How a `run -d` whose shim already ended turned out, from the task's state file: a
/// container that could not start (its error, exit 125), or a task that ran and stopped.
fn outcome_from_state(task_dir: &Path, task_id: &str) -> Option<i32> {
    let st = TaskState::read(task_dir).ok()?;
    if let Some(c) = st.containers.iter().find(|c| {
        c.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("CannotStartContainerError"))
    }) {
        eprintln!(
            "skiff: container {}: {}",
            c.name,
            c.reason.as_deref().unwrap_or_default()
        );
        eprintln!("skiff: task {task_id} stopped");
        return Some(crate::runtime::shim::START_FAILURE);
    }
    if st.known_status == Status::Stopped {
        println!("{task_id}");
        return Some(0);
    }
    None
}

/// Connects to the shim's socket in `task_dir` (through /proc/self/fd, so that a long state
/// directory path does not exceed sun_path).
pub async fn connect(task_dir: &Path) -> std::io::Result<tokio::net::UnixStream> {
    let dir = std::fs::File::open(task_dir)?;
    let path = format!("/proc/self/fd/{}/{SOCKET_FILE}", dir.as_raw_fd());
    let r = tokio::net::UnixStream::connect(&path).await;
    drop(dir);
    r
}

/// Restores the terminal's mode when the run ends.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter(enable: bool) -> RawTerminal {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        if !enable || !nix::unistd::isatty(stdin.as_raw_fd()).unwrap_or(false) {
            return RawTerminal(None);
        }
        let Ok(orig) = termios::tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        RawTerminal(Some(orig))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}

fn window_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    (unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0)
        .then_some((ws.ws_row, ws.ws_col))
}

async fn send(sock: &mut tokio::net::unix::OwnedWriteHalf, cmd: &Command) {
    let mut line = serde_json::to_vec(cmd).expect("command serializes");
    line.push(b'\n');
    let _ = sock.write_all(&line).await;
}

/// Follows the shim's events until the task has stopped; returns `skiff run`'s exit code.
async fn supervise(
    task_dir: &Path,
    shim_pid: Pid,
    attach: &Attach,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<i32, TaskError> {
    let sock = connect(task_dir)
        .await
        .map_err(|e| TaskError::Shim(format!("connect to the shim: {e}")))?;
    let (rd, mut wr) = sock.into_split();
    let mut lines = BufReader::new(rd).lines();
    let _raw = RawTerminal::enter(attach.tty);
    let mut sigwinch =
        signal(SignalKind::window_change()).map_err(|e| TaskError::Shim(e.to_string()))?;
    if attach.tty {
        if let Some((rows, cols)) = window_size() {
            send(&mut wr, &Command::Resize { rows, cols }).await;
        }
    }

    let mut interrupts = 0;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    _ => break,
                };
                let ev: Event = match serde_json::from_str(&line) {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(error = %e, line, "bad shim event");
                        continue;
                    }
                };
                tracing::debug!(?ev, "shim event");
                match ev {
                    Event::Started { container, pid } => {
                        tracing::info!(container, pid, "container started");
                    }
                    Event::StartFailed { container, error, .. } => {
                        eprintln!("skiff: container {container}: CannotStartContainerError: {error}");
                    }
                    Event::OomKill { container, oom_kills } => {
                        eprintln!("skiff: container {container}: the OOM killer killed a process (memory limit reached; {oom_kills} so far)");
                    }
                    Event::Exited { container, exit_code, signal, oom_killed } => {
                        if oom_killed {
                            eprintln!("skiff: container {container}: {OOM_REASON}");
                        }
                        tracing::info!(container, exit_code, ?signal, oom_killed, "container exited");
                    }
                    // Events of execs go only to the client that asked: never this one.
                    Event::ExecOutput { .. } | Event::ExecExited { .. } | Event::ExecFailed { .. } => {}
                    Event::TaskStopped { exit_code, reason } => {
                        crate::timing::mark("task_stopped");
                        tracing::info!(?exit_code, reason, "task stopped");
                        // The shim removes its socket and exits right after this line.
                        let _ = lines.next_line().await;
                        return exit_code.ok_or_else(|| {
                            TaskError::Shim(format!("the task stopped ({reason}) before any essential container ran"))
                        });
                    }
                }
            }
            _ = sigint.recv() => {
                interrupts += 1;
                send(&mut wr, &Command::Stop { force: interrupts >= 2, reason: None }).await;
            }
            _ = sigterm.recv() => {
                interrupts += 1;
                send(&mut wr, &Command::Stop { force: interrupts >= 2, reason: None }).await;
            }
            _ = sigwinch.recv() => {
                if let Some((rows, cols)) = window_size() {
                    send(&mut wr, &Command::Resize { rows, cols }).await;
                }
            }
        }
    }
    // The shim went away without its last event: what it recorded is the truth.
    let _ = shim_pid;
    match TaskState::read(task_dir) {
        Ok(st) if st.known_status == Status::Stopped => st.exit_code.ok_or_else(|| {
            TaskError::Shim("the shim ended before any essential container stopped".into())
        }),
        _ => Err(TaskError::Shim(
            "the shim ended before the task stopped".into(),
        )),
    }
}
