//! The agent's loops: register once, long-poll the desired set, reconcile it with the local
//! tasks, watch them and emit numbered snapshots, deliver those, report utilization, clean up
//! images. Nothing here waits on a start or a stop: each runs in its own tokio task, and the
//! reconciler skips a task while one is under way.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use super::client::{self, Backoff, Client, Identity};
use super::config::Config;
use super::launch::{self, Launcher, Started};
use super::outbox::{task_id, Outbox};
use super::{snapshot, usage, AgentError};
use crate::cgroup::Placement;
use crate::proto::{Attribute, DesiredTask, RegisterRequest, Resources, MAX_EVENTS_PER_POST};
use crate::runtime::proto::Status;
use crate::task::store::{self, TaskView};

/// How often local tasks are looked at (and the desired set applied again).
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How often running tasks' cgroups are sampled, at most.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The stopped reason of a task whose directory was removed before it was reported stopped.
const REASON_REMOVED: &str =
    "ContainerVanishedError: the task's files were removed from the host while it ran";

struct Shared {
    cfg: Config,
    data_dir: PathBuf,
    placement: Placement,
    client: Client,
    launcher: Launcher,
    outbox: Mutex<Outbox>,
    /// None until the first answer of the server.
    desired: Mutex<Option<Vec<DesiredTask>>>,
    /// Tasks being started or stopped by a tokio task of ours right now.
    busy: Mutex<HashSet<String>>,
    changed: Arc<Notify>,
    send: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves data that is still consistent on disk.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Built-in attributes: those ECS defines that are true of this host and of skiff.
fn attributes(cfg: &Config) -> Vec<Attribute> {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        a => a,
    };
    let mut out: Vec<Attribute> = [
        ("ecs.os-type", Some("linux")),
        ("ecs.os-family", Some("LINUX")),
        ("ecs.cpu-architecture", Some(arch)),
        ("ecs.capability.container-ordering", None),
        ("ecs.capability.pid-ipc-namespace-sharing", None),
        ("com.amazonaws.ecs.capability.task-cpu-mem-limit", None),
        ("com.amazonaws.ecs.capability.privileged-container", None),
        ("com.amazonaws.ecs.capability.ecr-auth", None),
        (
            "com.amazonaws.ecs.capability.logging-driver.json-file",
            None,
        ),
    ]
    .into_iter()
    .map(|(n, v)| Attribute {
        name: n.into(),
        value: v.map(Into::into),
    })
    .collect();
    for (k, v) in &cfg.instance_attributes {
        out.push(Attribute {
            name: k.clone(),
            value: Some(v.clone()),
        });
    }
    out
}

/// The identity kept on disk, or a new one from the server (retried while unreachable).
async fn identity(cfg: &Config, client: &Client) -> Result<Identity, AgentError> {
    if let Some(id) = client::load_identity(&cfg.data_dir)? {
        if id.server != cfg.server || id.cluster != cfg.cluster {
            tracing::warn!(held = %id.container_instance_arn, server = %id.server, cluster = %id.cluster,
                "the configured server or cluster differs from the one this instance registered with; keeping the registration (remove DATA/agent/identity.json to register anew)");
        }
        return Ok(id);
    }
    let token = cfg.join_token.clone().ok_or_else(|| {
        AgentError::Config(
            "join_token: not set (SKIFF_JOIN_TOKEN), and this instance has not registered yet"
                .into(),
        )
    })?;
    let cap = super::capacity::capacity(cfg.reserved_memory).map_err(AgentError::Config)?;
    let req = RegisterRequest {
        cluster: cfg.cluster.clone(),
        join_token: token,
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        resources: Resources {
            cpu: cap.cpu_units,
            memory: cap.memory_mib,
            reserved_ports: cfg.reserved_ports.clone(),
            reserved_ports_udp: cfg.reserved_ports_udp.clone(),
        },
        attributes: attributes(cfg),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut backoff = Backoff::new(cfg.max_backoff);
    loop {
        match client.register(&req).await {
            Ok(r) => {
                let id = Identity {
                    container_instance_arn: r.container_instance_arn,
                    credential: r.credential,
                    server: cfg.server.clone(),
                    cluster: cfg.cluster.clone(),
                };
                client::save_identity(&cfg.data_dir, &id)?;
                tracing::info!(instance = %id.container_instance_arn, "registered");
                return Ok(id);
            }
            // A refusal (bad token, unknown cluster) will not change by retrying; a server
            // error may.
            Err(e @ AgentError::Refused { status, .. }) if status < 500 => return Err(e),
            Err(e) => {
                let d = backoff.step();
                tracing::warn!(error = %e, retry_in = ?d, "cannot register");
                tokio::time::sleep(d).await;
            }
        }
    }
}

pub async fn run(mut cfg: Config, placement: Placement) -> Result<(), AgentError> {
    let io = |what: String| move |e| AgentError::Io { what, source: e };
    // From the start: a stop request during registration still ends the agent cleanly.
    let mut term = signal(SignalKind::terminate()).map_err(io("signal handler".into()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("signal handler".into()))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(io(format!("create {}", cfg.data_dir.display())))?;
    cfg.data_dir = cfg
        .data_dir
        .canonicalize()
        .map_err(io(format!("resolve {}", cfg.data_dir.display())))?;
    let agent_dir = cfg.data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir).map_err(io(format!("create {}", agent_dir.display())))?;
    std::fs::set_permissions(
        &agent_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(io(format!("chmod {}", agent_dir.display())))?;
    // One agent per data directory: the socket says whether another one is there.
    let listener = super::local::bind(&cfg.data_dir)?;
    let outbox = Outbox::open(&agent_dir)?;
    let mut client = Client::new(&cfg)?;
    let socket = cfg.data_dir.join(super::local::SOCKET_FILE);
    let id = tokio::select! {
        r = identity(&cfg, &client) => r,
        _ = term.recv() => Err(AgentError::Interrupted),
        _ = int.recv() => Err(AgentError::Interrupted),
    };
    let id = match id {
        Ok(id) => id,
        Err(AgentError::Interrupted) => {
            let _ = std::fs::remove_file(&socket);
            return Ok(());
        }
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    };
    client.set_credential(id.credential.clone());
    let exe = std::env::current_exe().map_err(io("find our own binary".into()))?;
    let changed = Arc::new(Notify::new());
    let sh = Arc::new(Shared {
        launcher: Launcher {
            exe: exe.clone(),
            data_dir: cfg.data_dir.clone(),
            placement: placement.clone(),
            config: cfg.clone(),
        },
        data_dir: cfg.data_dir.clone(),
        placement: placement.clone(),
        client,
        outbox: Mutex::new(outbox),
        desired: Mutex::new(None),
        busy: Mutex::new(HashSet::new()),
        changed: changed.clone(),
        send: Notify::new(),
        cfg,
    });
    tracing::info!(instance = %id.container_instance_arn, data_dir = %sh.data_dir.display(), "agent running");
    let server = Arc::new(super::local::Server {
        exe,
        data_dir: sh.data_dir.clone(),
        placement,
        changed,
    });
    let mut jobs = vec![
        tokio::spawn(server.serve(listener)),
        tokio::spawn(poll_loop(sh.clone())),
        tokio::spawn(send_loop(sh.clone())),
        tokio::spawn(usage_loop(sh.clone())),
    ];
    if !sh.cfg.disable_image_cleanup {
        jobs.push(tokio::spawn(image_cleanup_loop(sh.clone())));
    }
    loop {
        let sh2 = sh.clone();
        // Reading task directories is blocking work.
        let r = tokio::task::spawn_blocking(move || tick(&sh2)).await;
        if let Ok(Err(e)) = r {
            tracing::error!(error = %e, "cannot record task state");
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = sh.changed.notified() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Tasks stay under their shims; starts under way finish on their own.
    for j in jobs {
        j.abort();
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("agent stopped; its tasks keep running");
    Ok(())
}

/// One look at the local tasks: apply the desired set, emit what changed.
fn tick(sh: &Arc<Shared>) -> Result<(), AgentError> {
    let views = store::sweep(&sh.data_dir, &sh.placement, sh.cfg.task_cleanup_wait);
    let by_id: HashMap<&str, &TaskView> = views.iter().map(|v| (v.id.as_str(), v)).collect();
    reconcile(sh, &by_id)?;
    let mut emitted = false;
    {
        let mut ob = lock(&sh.outbox);
        // Snapshots of every task of ours that has a directory.
        for v in &views {
            let Some(arn) = v
                .record
                .as_ref()
                .and_then(|r| r.task_arn.clone())
                .or_else(|| ob.entry(&v.id).map(|e| e.task_arn.clone()))
            else {
                continue;
            };
            let entry = ob
                .entry(&v.id)
                .cloned()
                .unwrap_or_else(|| super::outbox::Entry {
                    task_arn: arn,
                    ..Default::default()
                });
            emitted |= ob.emit(snapshot::of_view(v, &entry))?;
        }
        // Tasks that never got a directory.
        let never: Vec<_> = ob
            .entries()
            .filter(|(id, e)| !by_id.contains_key(id.as_str()) && !e.emitted_stopped())
            .filter_map(|(_, e)| e.ended_without_dir.clone().map(|ns| (e.clone(), ns)))
            .collect();
        for (e, (reason, code)) in never {
            emitted |= ob.emit(snapshot::without_dir(&e, &reason, &code))?;
        }
        // Forget what is stopped, delivered, gone from disk and no longer desired (known only
        // once the server answered: until then a restarted agent keeps everything).
        let desired: Option<HashSet<String>> = lock(&sh.desired)
            .as_ref()
            .map(|d| d.iter().map(|d| task_id(&d.task_arn).to_string()).collect());
        if let Some(desired) = desired {
            let busy = lock(&sh.busy).clone();
            let pending: HashSet<String> = ob
                .entries()
                .filter(|(_, e)| ob.is_pending(&e.task_arn))
                .map(|(id, _)| id.clone())
                .collect();
            ob.retain(|id, e| {
                !(e.emitted_stopped()
                    && !by_id.contains_key(id)
                    && !desired.contains(id)
                    && !busy.contains(id)
                    && !pending.contains(id))
            })?;
        }
    }
    if emitted {
        sh.send.notify_one();
    }
    Ok(())
}

fn reconcile(sh: &Arc<Shared>, local: &HashMap<&str, &TaskView>) -> Result<(), AgentError> {
    let desired = lock(&sh.desired).clone().unwrap_or_default();
    for d in desired {
        let id = task_id(&d.task_arn).to_string();
        if crate::task::check_task_id(&id).is_err() {
            tracing::warn!(task = %d.task_arn, "task ARN without a usable id; ignored");
            continue;
        }
        if lock(&sh.busy).contains(&id) {
            continue;
        }
        let entry = lock(&sh.outbox).entry(&id).cloned();
        let view = local.get(id.as_str());
        match (d.desired_status.as_str(), view) {
            ("RUNNING", None) => match &entry {
                Some(e) if e.ended_without_dir.is_some() || e.emitted_stopped() => {}
                // It had a directory (a snapshot of it was emitted) and someone removed it:
                // it ran once, it does not start again.
                Some(e) if e.last.is_some() => {
                    lock(&sh.outbox).update(&id, &d.task_arn, |e| {
                        e.ended_without_dir =
                            Some((REASON_REMOVED.into(), "EssentialContainerExited".into()));
                    })?;
                }
                _ => start(sh, id, d)?,
            },
            ("STOPPED", Some(v)) if v.status() != Status::Stopped && !v.creating => {
                stop(sh, id, d, v.dir.clone())?;
            }
            ("STOPPED", None) => {
                let settled = entry
                    .as_ref()
                    .is_some_and(|e| e.ended_without_dir.is_some() || e.emitted_stopped());
                if !settled {
                    let reason = d
                        .stopped_reason
                        .clone()
                        .unwrap_or_else(|| crate::runtime::shim::REASON_USER.into());
                    lock(&sh.outbox).update(&id, &d.task_arn, |e| {
                        e.ended_without_dir = Some((reason, "UserInitiated".into()));
                    })?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn start(sh: &Arc<Shared>, id: String, d: DesiredTask) -> Result<(), AgentError> {
    // Recorded before the start, so that its first snapshot has the ARN and pull time.
    lock(&sh.outbox).update(&id, &d.task_arn, |e| {
        e.start_requested_at = Some(snapshot::now());
    })?;
    lock(&sh.busy).insert(id.clone());
    tracing::info!(task = %d.task_arn, "starting");
    let sh = sh.clone();
    tokio::runtime::Handle::current().spawn(async move {
        let r = sh.launcher.start(&id, &d).await;
        let failed = match r {
            Ok(Started::Ok) => None,
            Ok(Started::Failed(reason)) => Some(reason),
            // The agent itself could not run the start: try again on a later tick.
            Err(e) => {
                tracing::error!(task = %d.task_arn, error = %e, "cannot start");
                None
            }
        };
        if let Some(reason) = failed {
            tracing::warn!(task = %d.task_arn, reason, "task failed to start");
            if let Err(e) = lock(&sh.outbox).update(&id, &d.task_arn, |e| {
                e.ended_without_dir = Some((reason, "TaskFailedToStart".into()));
            }) {
                tracing::error!(error = %e, "cannot record a failed start");
            }
        }
        lock(&sh.busy).remove(&id);
        sh.changed.notify_one();
    });
    Ok(())
}

fn stop(sh: &Arc<Shared>, id: String, d: DesiredTask, dir: PathBuf) -> Result<(), AgentError> {
    let reason = d
        .stopped_reason
        .clone()
        .unwrap_or_else(|| crate::runtime::shim::REASON_USER.into());
    lock(&sh.outbox).update(&id, &d.task_arn, |e| {
        e.stop_reason = Some(reason.clone());
        e.stopping_at.get_or_insert_with(snapshot::now);
    })?;
    lock(&sh.busy).insert(id.clone());
    tracing::info!(task = %d.task_arn, reason, "stopping");
    let sh = sh.clone();
    tokio::runtime::Handle::current().spawn(async move {
        if let Err(e) = launch::stop(&dir, &reason).await {
            tracing::warn!(task = %d.task_arn, error = e, "stop");
        }
        lock(&sh.busy).remove(&id);
        sh.changed.notify_one();
    });
    Ok(())
}

async fn poll_loop(sh: Arc<Shared>) {
    let mut version = 0;
    let mut backoff = Backoff::new(sh.cfg.max_backoff);
    loop {
        match sh.client.desired(version, sh.cfg.poll_wait).await {
            Ok(r) => {
                backoff.reset();
                if let Err(e) = lock(&sh.outbox).observe_applied(r.applied_seq) {
                    tracing::error!(error = %e, "cannot drop delivered events");
                }
                let first = lock(&sh.desired).is_none();
                if r.version != version || first {
                    tracing::debug!(version = r.version, tasks = r.tasks.len(), "desired set");
                    version = r.version;
                    *lock(&sh.desired) = Some(r.tasks);
                    sh.changed.notify_one();
                }
                sh.send.notify_one();
            }
            Err(e) => {
                let d = backoff.step();
                tracing::warn!(error = %e, retry_in = ?d, "desired set poll failed");
                tokio::time::sleep(d).await;
            }
        }
    }
}

async fn send_loop(sh: Arc<Shared>) {
    let mut backoff = Backoff::new(sh.cfg.max_backoff);
    loop {
        let batch = lock(&sh.outbox).batch(MAX_EVENTS_PER_POST);
        if batch.is_empty() {
            tokio::select! {
                _ = sh.send.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        }
        let n = batch.len();
        match sh.client.events(batch).await {
            Ok(r) => {
                tracing::debug!(events = n, applied = r.applied_seq, "events delivered");
                let before = lock(&sh.outbox).pending_len();
                if let Err(e) = lock(&sh.outbox).observe_applied(r.applied_seq) {
                    tracing::error!(error = %e, "cannot drop delivered events");
                }
                if lock(&sh.outbox).pending_len() < before {
                    backoff.reset();
                } else {
                    // Answered but applied none of them: not a reason to post in a tight loop.
                    let d = backoff.step();
                    tracing::warn!(applied = r.applied_seq, retry_in = ?d, "the server applied none of the events");
                    tokio::time::sleep(d).await;
                }
            }
            Err(e) => {
                let d = backoff.step();
                tracing::warn!(error = %e, pending = lock(&sh.outbox).pending_len(), retry_in = ?d,
                    "cannot deliver events");
                tokio::time::sleep(d).await;
            }
        }
    }
}

async fn usage_loop(sh: Arc<Shared>) {
    let mut sampler = usage::Sampler::new();
    let every = SAMPLE_EVERY.min(sh.cfg.utilization_interval / 4);
    let mut next_report = tokio::time::Instant::now() + sh.cfg.utilization_interval;
    loop {
        tokio::time::sleep(every).await;
        let data_dir = sh.data_dir.clone();
        let running = tokio::task::spawn_blocking(move || {
            store::list(&data_dir)
                .into_iter()
                .filter(|v| v.status() == Status::Running)
                .filter_map(|v| {
                    let rec = v.record?;
                    Some((rec.task_arn.clone()?, rec))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        sampler.sample(&running);
        if tokio::time::Instant::now() >= next_report {
            next_report += sh.cfg.utilization_interval;
            if let Some(req) = sampler.take() {
                if let Err(e) = sh.client.utilization(&req).await {
                    tracing::warn!(error = %e, "cannot post utilization");
                }
            }
        }
    }
}

/// The ECS agent's image cleanup, every ECS_IMAGE_CLEANUP_INTERVAL: never an image a local
/// task (in any status) uses.
async fn image_cleanup_loop(sh: Arc<Shared>) {
    let policy = crate::image::gc::CleanupPolicy {
        disabled: sh.cfg.disable_image_cleanup,
        interval: sh.cfg.image_cleanup_interval,
        minimum_age: sh.cfg.image_minimum_cleanup_age,
        images_per_cycle: sh.cfg.num_images_delete_per_cycle,
    };
    loop {
        tokio::time::sleep(sh.cfg.image_cleanup_interval).await;
        let store = match crate::image::Store::open(&sh.data_dir, Default::default()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "image cleanup: cannot open the store");
                continue;
            }
        };
        match store
            .cleanup(|| crate::task::record::images_in_use(&sh.data_dir), &policy)
            .await
        {
            Ok(r) if !r.images.is_empty() => {
                tracing::info!(images = ?r.images, layers = r.layers, bytes = r.bytes, "image cleanup")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image cleanup"),
        }
    }
}
