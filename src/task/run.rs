//! `skiff run` in the foreground: pull, create cgroups and specs, start the shim, follow its
//! events with ECS's essential-container rules, stop on a signal, and remove everything.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use super::limits::{container_limits, task_limits, LimitSettings};
use super::record::{self, ContainerRecord, TaskRecord};
use super::{TaskError, OOM_REASON};
use crate::cgroup::{Cgroup, Hierarchy, Placement};
use crate::image::auth::PullAuth;
use crate::image::pipeline::Quiet;
use crate::image::{Image, PullBehavior, Store, StoreOptions};
use crate::runtime::proto::{Command, Event, ShimConfig, EVENT_FD};
use crate::runtime::spec::{merge_process, parse_signal, ContainerSpec};
use crate::taskdef::{NetworkMode, TaskDefinition};

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub cgroup: Placement,
    pub store: StoreOptions,
    pub pull_behavior: PullBehavior,
    /// Used for containers without `stopTimeout` (ECS_CONTAINER_STOP_TIMEOUT, default 30 s).
    pub default_stop_timeout: Duration,
    pub limits: LimitSettings,
}

fn new_task_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("getrandom");
    hex::encode(b)
}

/// What the task created, so that every path out removes exactly that.
struct Created {
    task_dir: Option<PathBuf>,
    hierarchy: Option<Hierarchy>,
    task_cgroup: Option<Cgroup>,
    container_cgroups: Vec<Cgroup>,
}

impl Created {
    fn cleanup(&mut self) {
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
    if td.network_mode != NetworkMode::None {
        return Err(TaskError::Unsupported(format!(
            "networkMode: {} is not supported yet (only none)",
            td.network_mode.as_str()
        )));
    }
    let mut created = Created {
        task_dir: None,
        hierarchy: None,
        task_cgroup: None,
        container_cgroups: Vec::new(),
    };
    let result = run_inner(&td, &opts, &mut created).await;
    created.cleanup();
    result
}

async fn run_inner(
    td: &TaskDefinition,
    opts: &RunOptions,
    created: &mut Created,
) -> Result<i32, TaskError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| TaskError::Shim(e.to_string()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| TaskError::Shim(e.to_string()))?;

    let task_id = new_task_id();
    tracing::info!(task = %task_id, family = %td.family, "starting task");

    // Images, each once, in parallel; a signal aborts the pull.
    let store = Store::open(&opts.state_dir, opts.store.clone())?;
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

    // Task directory and cgroups.
    let task_dir = opts.state_dir.join("tasks").join(&task_id);
    std::fs::create_dir_all(&task_dir).map_err(|e| TaskError::Io {
        what: format!("create {}", task_dir.display()),
        source: e,
    })?;
    created.task_dir = Some(task_dir.clone());

    let hierarchy = Hierarchy::detect(&opts.cgroup)?;
    tracing::info!(mode = ?hierarchy.mode, controllers = ?hierarchy.controllers, "cgroups");
    created.hierarchy = Some(hierarchy.clone());
    let task_cg = hierarchy.create_task(&task_id, &task_limits(td, &opts.limits))?;
    created.task_cgroup = Some(task_cg.clone());
    task_cg.enable_subtree()?;

    let mut specs = Vec::new();
    let mut plans = Vec::new();
    for c in &td.containers {
        let image = image_of(c);
        let hostname = c.hostname.clone().unwrap_or_else(|| c.name.clone());
        let process = merge_process(
            c.entry_point.as_deref(),
            c.command.as_deref(),
            &c.environment,
            c.working_directory.as_deref(),
            &hostname,
            &image.config,
        )
        .map_err(|e| TaskError::Create {
            container: c.name.clone(),
            msg: e.to_string(),
        })?;

        let cg = task_cg.child(&c.name);
        cg.create(&container_limits(c, &opts.limits))?;
        created.container_cgroups.push(cg.clone());

        let cdir = task_dir.join("containers").join(&c.name);
        let (upper, work, rootfs) = (cdir.join("upper"), cdir.join("work"), cdir.join("rootfs"));
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).map_err(|e| TaskError::Io {
                what: format!("create {}", d.display()),
                source: e,
            })?;
        }
        specs.push(ContainerSpec {
            name: c.name.clone(),
            hostname,
            lower_dirs: image
                .chain_ids
                .iter()
                .rev()
                .map(|id| store.layer_dir(id))
                .collect(),
            upper_dir: upper,
            work_dir: work,
            rootfs,
            args: process.args,
            env: process.env,
            cwd: process.cwd,
            cgroup: cg,
        });
        plans.push(Plan {
            name: c.name.clone(),
            essential: c.essential,
            stop_signal: image
                .config
                .stop_signal
                .as_deref()
                .and_then(parse_signal)
                .unwrap_or(libc::SIGTERM),
            stop_timeout: c
                .stop_timeout
                .map(Duration::from_secs)
                .unwrap_or(opts.default_stop_timeout),
        });
    }

    let record = TaskRecord {
        task_id: task_id.clone(),
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
            .map(|(c, s)| ContainerRecord {
                name: c.name.clone(),
                image: c.image.clone(),
                image_digest: image_of(c).manifest_digest.to_string(),
                cgroup: s.cgroup.clone(),
            })
            .collect(),
    };
    record::write(&task_dir, &record).map_err(|e| TaskError::Io {
        what: format!("write {}", task_dir.join(record::RECORD_FILE).display()),
        source: e,
    })?;

    let config = ShimConfig {
        task_id: task_id.clone(),
        containers: specs,
        prefix_output: td.containers.len() > 1,
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

    supervise(&config_path, plans, &mut sigint, &mut sigterm).await
}

struct Plan {
    name: String,
    essential: bool,
    stop_signal: i32,
    stop_timeout: Duration,
}

#[derive(PartialEq)]
enum Status {
    Starting,
    Running,
    Stopped,
}

struct Tracked {
    plan: Plan,
    status: Status,
    kill_at: Option<Instant>,
}

fn spawn_shim(config_path: &Path) -> Result<(tokio::process::Child, OwnedFd), TaskError> {
    let (ev_r, ev_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| TaskError::Shim(format!("pipe: {e}")))?;
    let w = ev_w.as_raw_fd();
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg0("skiff")
        .arg("shim")
        .arg("--config")
        .arg(config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // Its own process group: a terminal's Ctrl-C reaches skiff, which decides.
        .process_group(0);
    // Only dup2/fcntl between fork and exec: both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if w == EVENT_FD {
                if libc::fcntl(w, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(w, EVENT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| TaskError::Shim(format!("start shim: {e}")))?;
    drop(ev_w);
    Ok((child, ev_r))
}

async fn supervise(
    config_path: &Path,
    plans: Vec<Plan>,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<i32, TaskError> {
    let (mut child, ev_r) = spawn_shim(config_path)?;
    let mut stdin = child.stdin.take();
    let events = tokio::net::unix::pipe::Receiver::from_owned_fd(ev_r)
        .map_err(|e| TaskError::Shim(format!("event pipe: {e}")))?;
    let mut lines = BufReader::new(events).lines();

    let mut tracked: Vec<Tracked> = plans
        .into_iter()
        .map(|plan| Tracked {
            plan,
            status: Status::Starting,
            kill_at: None,
        })
        .collect();
    async fn send(stdin: &mut Option<tokio::process::ChildStdin>, cmd: &Command) {
        if let Some(s) = stdin.as_mut() {
            let mut line = serde_json::to_vec(cmd).expect("command serializes");
            line.push(b'\n');
            if s.write_all(&line).await.is_err() {
                *stdin = None;
            }
        }
    }
    for t in &tracked {
        send(
            &mut stdin,
            &Command::Start {
                container: t.plan.name.clone(),
            },
        )
        .await;
    }

    let mut stopping = false;
    let mut interrupts = 0;
    let mut exit_code: Option<i32> = None;
    loop {
        if tracked.iter().all(|t| t.status == Status::Stopped) {
            // Closing stdin tells the shim it may exit.
            stdin = None;
        }
        let deadline = tracked.iter().filter_map(|t| t.kill_at).min();
        let mut stop_now = false;
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
                let (name, stopped_code) = match &ev {
                    Event::Started { container, pid } => {
                        tracing::info!(container, pid, "container started");
                        (container, None)
                    }
                    Event::StartFailed { container, exit_code, error } => {
                        eprintln!("skiff: container {container}: CannotStartContainerError: {error}");
                        (container, Some(*exit_code))
                    }
                    Event::OomKill { container, oom_kills } => {
                        eprintln!("skiff: container {container}: the OOM killer killed a process (memory limit reached; {oom_kills} so far)");
                        continue;
                    }
                    Event::Exited { container, exit_code, signal, oom_killed } => {
                        if *oom_killed {
                            eprintln!("skiff: container {container}: {OOM_REASON}");
                        }
                        tracing::info!(container, exit_code, ?signal, oom_killed, "container exited");
                        (container, Some(*exit_code))
                    }
                };
                let Some(t) = tracked.iter_mut().find(|t| &t.plan.name == name) else { continue };
                match stopped_code {
                    None => {
                        t.status = Status::Running;
                        if stopping {
                            // Started after the task began stopping: stop it too.
                            t.kill_at = Some(Instant::now() + t.plan.stop_timeout);
                            let cmd = Command::Kill { container: name.clone(), signal: t.plan.stop_signal };
                            send(&mut stdin, &cmd).await;
                        }
                    }
                    Some(code) => {
                        t.status = Status::Stopped;
                        t.kill_at = None;
                        if t.plan.essential && exit_code.is_none() {
                            exit_code = Some(code);
                            stop_now = true;
                        }
                    }
                }
            }
            _ = sigint.recv() => { interrupts += 1; stop_now = true; }
            _ = sigterm.recv() => { interrupts += 1; stop_now = true; }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let now = Instant::now();
                for t in tracked.iter_mut().filter(|t| t.kill_at.is_some_and(|k| k <= now)) {
                    t.kill_at = None;
                    let cmd = Command::Kill { container: t.plan.name.clone(), signal: libc::SIGKILL };
                    send(&mut stdin, &cmd).await;
                }
            }
        }
        if stop_now {
            let force = interrupts >= 2;
            if !stopping || force {
                stopping = true;
                for t in tracked.iter_mut().filter(|t| t.status == Status::Running) {
                    let signal = if force {
                        libc::SIGKILL
                    } else {
                        t.plan.stop_signal
                    };
                    if !force {
                        t.kill_at = Some(Instant::now() + t.plan.stop_timeout);
                    }
                    let cmd = Command::Kill {
                        container: t.plan.name.clone(),
                        signal,
                    };
                    send(&mut stdin, &cmd).await;
                }
            }
        }
    }
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| TaskError::Shim(format!("wait for shim: {e}")))?;
    if !status.success() {
        return Err(TaskError::Shim(format!("shim exited with {status}")));
    }
    exit_code
        .ok_or_else(|| TaskError::Shim("shim ended before any essential container stopped".into()))
}
