//! The tasks of a state directory as the daemonless commands see them (`skiff ps`,
//! `inspect`, `stop`, `rm`, `logs`): each task directory's record (`task.json`, written by the
//! engine that created it) and state (`state.json`, written by its shim), reconciled with
//! what still runs.
//!
//! A task directory is in one of these situations:
//! - being created: `creating` names the live skiff process that prepares it;
//! - running or stopped under a live shim: `state.json` says which;
//! - its shim gone while containers were still running (killed, host trouble): the containers
//!   died with it (PDEATHSIG); reconciling marks them STOPPED with `ContainerVanishedError`
//!   and removes what is left of the task's cgroups;
//! - its creator gone before the shim started: an orphan of a crash, removed whole.
//!
//! Mutations (reconcile, remove, retention) hold an exclusive lock on `STATE/locks/tasks`;
//! readers rely on every file being replaced atomically and tolerate a task vanishing while
//! they look.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::record::{TaskRecord, RECORD_FILE};
use crate::cgroup::{Cgroup, Hierarchy, Placement};
use std::os::unix::ffi::OsStrExt;

use crate::runtime::proto::{now_ms, Status, TaskState, SOCKET_FILE};

/// The file naming the skiff process that is creating a task (`pid starttime`); removed once
/// the task's shim runs.
pub const CREATING_FILE: &str = "creating";

/// ECS's reason for containers whose shim went away.
pub const VANISHED_REASON: &str =
    "ContainerVanishedError: the task's shim exited while the container was running";

/// One task directory, read.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub id: String,
    pub dir: PathBuf,
    pub record: Option<TaskRecord>,
    pub state: Option<TaskState>,
    /// The shim named in the state file still runs.
    pub shim_alive: bool,
    /// A live skiff process is still creating the task.
    pub creating: bool,
}

impl TaskView {
    /// What the shim last wrote of container `name`, if anything.
    pub fn container_state(&self, name: &str) -> Option<&crate::runtime::proto::ContainerState> {
        self.state
            .as_ref()
            .and_then(|s| s.containers.iter().find(|x| x.name == name))
    }

    /// Container `name`'s status: as its shim wrote it while the shim lives, STOPPED once
    /// the shim is gone, PENDING before the shim wrote anything of it.
    pub fn container_status(&self, name: &str) -> Status {
        match self.container_state(name).map(|x| x.status) {
            Some(Status::Stopped) => Status::Stopped,
            Some(s) if self.shim_alive => s,
            Some(_) => Status::Stopped,
            None => Status::Pending,
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.record.as_ref().and_then(|r| r.name.as_deref())
    }

    pub fn family(&self) -> &str {
        self.record
            .as_ref()
            .map(|r| r.family.as_str())
            .unwrap_or("")
    }

    /// The task's status as a user should see it.
    pub fn status(&self) -> Status {
        match &self.state {
            Some(st) if st.known_status == Status::Stopped => Status::Stopped,
            Some(st) if self.shim_alive => st.known_status,
            Some(_) => Status::Stopped,
            None if self.creating => Status::Pending,
            None => Status::Stopped,
        }
    }

    /// Unix milliseconds.
    pub fn created_at(&self) -> u64 {
        self.record
            .as_ref()
            .map(|r| r.started_at * 1000)
            .unwrap_or(0)
    }

    /// Unix milliseconds; None while it runs.
    pub fn stopped_at(&self) -> Option<u64> {
        self.state.as_ref().and_then(|s| s.stopped_at)
    }

    /// The shim's state says a container may still run but no shim watches it.
    fn vanished(&self) -> bool {
        matches!(&self.state, Some(st) if st.known_status != Status::Stopped && !self.shim_alive)
    }

    /// The directory was left by a skiff process that died before the shim started (a shim
    /// between its start and its first state file is not an orphan's).
    fn orphaned(&self) -> bool {
        self.state.is_none() && !self.creating && !shim_starting(&self.dir)
    }
}

/// The start time of a process (clock ticks since boot, field 22 of /proc/PID/stat): with the
/// pid it names one process, whatever pids are reused later.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Prefix of a task directory being made (see [`create_task_dir`]); listings skip them.
const NEW_PREFIX: &str = ".new-";

/// The hidden name a task directory is made under: `.new-<id>.<pid>.<start time>`. The name
/// itself says who makes it, so there is no instant at which a half-made directory has no
/// known creator (a file inside it would leave one between mkdir and write).
fn new_dir_name(id: &str, pid: i32, start: u64) -> String {
    format!("{NEW_PREFIX}{id}.{pid}.{start}")
}

/// The task id of a hidden directory's name and whether the process that makes it is alive.
fn parse_new_dir_name(name: &str) -> Option<(&str, bool)> {
    let rest = name.strip_prefix(NEW_PREFIX)?;
    let mut parts = rest.rsplitn(3, '.');
    let (Some(st), Some(pid), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        // An older skiff's name (`.new-<id>`, its creator in a file inside): made and renamed
        // by a process that has long ended if this one reads it.
        return Some((rest, false));
    };
    let alive = match (pid.parse::<i32>(), st.parse::<u64>()) {
        (Ok(pid), Ok(st)) => start_time(pid) == Some(st),
        _ => false,
    };
    Some((id, alive))
}

/// The directories under `tasks/` still under their hidden name: path, task id, whether
/// their maker is alive.
fn new_dirs(state_dir: &Path) -> impl Iterator<Item = (PathBuf, String, bool)> {
    std::fs::read_dir(state_dir.join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (id, alive) = parse_new_dir_name(&name)?;
            Some((e.path(), id.to_string(), alive))
        })
}

/// Directories under `tasks/` whose maker died between mkdir and rename.
fn abandoned_new_dirs(state_dir: &Path) -> Vec<PathBuf> {
    new_dirs(state_dir)
        .filter(|(_, _, alive)| !alive)
        .map(|(path, _, _)| path)
        .collect()
}

/// Whether task `id` has a directory, in place or still being made.
pub fn task_dir_exists(state_dir: &Path, id: &str) -> bool {
    state_dir.join("tasks").join(id).exists() || new_dirs(state_dir).any(|(_, t, _)| t == id)
}

/// Creates a task's directory already holding `creating` for the calling process: made under
/// a hidden name and renamed into place, so that no other command ever sees the directory
/// without its creator (and takes it for a crash's orphan).
pub fn create_task_dir(task_dir: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (task_dir.parent(), task_dir.file_name()) else {
        return Err(std::io::Error::other("a task directory needs a parent"));
    };
    std::fs::create_dir_all(parent)?;
    let pid = std::process::id() as i32;
    let st = start_time(pid).unwrap_or(0);
    let tmp = parent.join(new_dir_name(&name.to_string_lossy(), pid, st));
    std::fs::create_dir(&tmp)?;
    let made = std::fs::write(tmp.join(CREATING_FILE), format!("{pid} {st}\n"))
        .and_then(|()| rename_noreplace(&tmp, task_dir));
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    made
}

/// rename(2) that fails with EEXIST instead of replacing an existing (empty) directory: a
/// task id is taken once.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("path holds a NUL byte"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // The raw syscall: musl's libc has no renameat2 wrapper (the static build links against it).
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn creator_alive(task_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(task_dir.join(CREATING_FILE)) else {
        return false;
    };
    let mut it = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(st))) = (
        it.next().map(str::parse::<i32>),
        it.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    start_time(pid) == Some(st)
}

/// Whether process `pid` is the shim of the task in `task_dir`, which runs as
/// `skiff shim --config <task dir>/shim.json`.
fn is_shim_of(pid: i32, task_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.get(1) == Some(&&b"shim"[..])
        && args
            .iter()
            .any(|a| Path::new(std::ffi::OsStr::from_bytes(a)).parent() == Some(task_dir))
}

fn shim_alive(task_dir: &Path, st: &TaskState) -> bool {
    is_shim_of(st.shim_pid, task_dir)
}

/// Some process is the task's shim, though it has not written its state yet.
fn shim_starting(task_dir: &Path) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| is_shim_of(pid, task_dir))
}

/// Reads one task directory (None when it vanished or is not a task's).
pub fn read(dir: &Path) -> Option<TaskView> {
    let id = dir.file_name()?.to_str()?.to_string();
    if !dir.is_dir() {
        return None;
    }
    let record = std::fs::read(dir.join(RECORD_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let state = TaskState::read(dir).ok();
    let shim_alive = state.as_ref().is_some_and(|st| shim_alive(dir, st));
    let creating = state.is_none() && creator_alive(dir);
    Some(TaskView {
        id,
        dir: dir.to_path_buf(),
        record,
        state,
        shim_alive,
        creating,
    })
}

/// Every task directory under `state_dir`, oldest first.
pub fn list(state_dir: &Path) -> Vec<TaskView> {
    let mut out: Vec<TaskView> = std::fs::read_dir(state_dir.join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| read(&e.path()))
        .collect();
    out.sort_by(|a, b| (a.created_at(), &a.id).cmp(&(b.created_at(), &b.id)));
    out
}

/// The one task named by `key`: its name, or its id or a unique prefix of it.
pub fn find(state_dir: &Path, key: &str) -> Result<TaskView, String> {
    if key.is_empty() {
        return Err("the task id is empty".into());
    }
    let all = list(state_dir);
    if let Some(t) = all.iter().find(|t| t.name() == Some(key) || t.id == key) {
        return Ok(t.clone());
    }
    let mut hits: Vec<&TaskView> = all.iter().filter(|t| t.id.starts_with(key)).collect();
    match hits.len() {
        0 => Err(format!(
            "no task {key:?} in {}",
            state_dir.join("tasks").display()
        )),
        1 => Ok(hits.remove(0).clone()),
        n => Err(format!("{n} tasks start with {key:?}: give more of the id")),
    }
}

/// An exclusive lock over task mutations in `state_dir`, held until dropped.
pub struct TasksLock(#[allow(dead_code)] std::fs::File);

pub fn lock(state_dir: &Path) -> std::io::Result<TasksLock> {
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("tasks"))?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TasksLock(f))
}

/// Kills every process left in a cgroup tree skiff created and removes it, deepest first.
fn kill_and_remove(cg: &Cgroup) {
    for d in &cg.dirs {
        kill_tree(d);
    }
    cg.remove();
}

fn kill_tree(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            kill_tree(&e.path());
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir(dir);
}

/// Brings one task's files in line with what runs: a vanished shim's task is marked stopped
/// (and its cgroups removed), an orphan of a crashed start is removed whole. Returns the
/// view as it is afterwards (None when it was removed). Call with the lock held.
pub fn reconcile(view: TaskView, hierarchy: Option<&Hierarchy>) -> Option<TaskView> {
    if view.vanished() {
        let mut st = view.state.clone().expect("vanished implies a state");
        let now = now_ms();
        for c in st.containers.iter_mut() {
            if c.status != Status::Stopped {
                if c.status == Status::Running {
                    c.reason = Some(VANISHED_REASON.to_string());
                    c.finished_at = Some(now);
                } else {
                    c.reason = Some("not started: the task's shim exited first".to_string());
                }
                c.status = Status::Stopped;
            }
        }
        st.known_status = Status::Stopped;
        st.desired_status = Status::Stopped;
        st.stopped_at = Some(now);
        if st.stop_reason.is_none() {
            st.stop_reason = Some(VANISHED_REASON.to_string());
        }
        if let Some(rec) = &view.record {
            for c in &rec.containers {
                kill_and_remove(&c.cgroup);
            }
            kill_and_remove(&rec.cgroup);
        }
        crate::net::settings::release(&view.dir, &view.id);
        let _ = std::fs::remove_file(view.dir.join(SOCKET_FILE));
        if let Err(e) = st.write(&view.dir) {
            tracing::warn!(task = %view.id, error = %e, "cannot record the vanished shim");
            return Some(view);
        }
        return read(&view.dir);
    }
    if view.orphaned() {
        tracing::info!(task = %view.id, "removing the remains of a task whose start was cut off");
        match &view.record {
            Some(rec) => {
                for c in &rec.containers {
                    kill_and_remove(&c.cgroup);
                }
                kill_and_remove(&rec.cgroup);
            }
            None => {
                if let Some(h) = hierarchy {
                    kill_and_remove(&h.parent.child(&view.id));
                }
            }
        }
        crate::net::settings::release(&view.dir, &view.id);
        remove_dir(&view.dir);
        return None;
    }
    Some(view)
}

/// Removes a stopped task's directory (the caller checked that nothing runs).
pub fn remove(view: &TaskView) -> std::io::Result<()> {
    crate::net::settings::release(&view.dir, &view.id);
    if let Some(rec) = &view.record {
        for c in &rec.containers {
            c.cgroup.remove();
        }
        rec.cgroup.remove();
        // skiff's parent cgroup goes with its last task wherever the task was placed: an
        // agent's tasks sit beneath the agent's cgroup, not beneath the caller's. A parent
        // with tasks left stays (rmdir refuses).
        for d in &rec.cgroup.dirs {
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    // A process that still writes there (a shim ending, a log reader) can make one pass meet
    // a new entry (ENOTEMPTY): a few passes.
    let mut attempt = 0;
    loop {
        match std::fs::remove_dir_all(&view.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && attempt < 10 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn remove_dir(d: &Path) {
    if let Err(e) = std::fs::remove_dir_all(d) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %d.display(), error = %e, "cannot remove task directory");
        }
    }
}

/// Reconciles every task and removes those stopped for longer than `keep`; releases skiff's
/// parent cgroup when no task is left in it. Every daemonless command that lists or changes
/// tasks calls this first, as Podman's commands clean up after crashed ones.
pub fn sweep(state_dir: &Path, placement: &Placement, keep: Duration) -> Vec<TaskView> {
    crate::image::gc::clear_debris_if_idle(state_dir);
    let views = list(state_dir);
    let needs_lock = views.iter().any(|v| {
        v.vanished()
            || v.orphaned()
            || (v.status() == Status::Stopped && v.stopped_at().is_some_and(|t| expired(t, keep)))
    }) || !abandoned_new_dirs(state_dir).is_empty();
    if !needs_lock {
        return views;
    }
    let Ok(_lock) = lock(state_dir) else {
        return views;
    };
    let hierarchy = Hierarchy::detect(placement).ok();
    let mut out = Vec::new();
    // Read again under the lock: another command may have acted meanwhile.
    for v in list(state_dir) {
        let Some(v) = reconcile(v, hierarchy.as_ref()) else {
            continue;
        };
        if v.status() == Status::Stopped && v.stopped_at().is_some_and(|t| expired(t, keep)) {
            if let Err(e) = remove(&v) {
                tracing::warn!(task = %v.id, error = %e, "cannot remove an expired task");
                out.push(v);
            }
            continue;
        }
        out.push(v);
    }
    // A directory still under its hidden name: its creator died between mkdir and rename.
    for d in abandoned_new_dirs(state_dir) {
        remove_dir(&d);
    }
    if let Some(h) = hierarchy {
        h.release();
    }
    out
}

fn expired(stopped_at_ms: u64, keep: Duration) -> bool {
    now_ms().saturating_sub(stopped_at_ms) >= keep.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_names_this_process() {
        let me = std::process::id() as i32;
        let a = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(a));
        assert!(start_time(i32::MAX).is_none());
    }

    #[test]
    fn a_task_id_is_taken_once() {
        let dir = std::env::temp_dir().join(format!("skiff-store-once-{}", std::process::id()));
        let t = dir.join("tasks").join("chosen-id");
        create_task_dir(&t).unwrap();
        // Even an empty directory of that name (a rename would replace it) is taken.
        std::fs::remove_file(t.join(CREATING_FILE)).unwrap();
        let e = create_task_dir(&t).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        let hidden = std::fs::read_dir(dir.join("tasks")).unwrap().count();
        assert_eq!(hidden, 1, "only the task's own directory is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hidden_directory_is_abandoned_only_when_its_maker_is_gone() {
        let dir = std::env::temp_dir().join(format!("skiff-store-new-{}", std::process::id()));
        let tasks = dir.join("tasks");
        std::fs::create_dir_all(&tasks).unwrap();
        let me = std::process::id() as i32;
        let live = tasks.join(new_dir_name("aaaa", me, start_time(me).unwrap()));
        let dead = tasks.join(new_dir_name("bbbb", me, start_time(me).unwrap() + 1));
        let old_style = tasks.join(".new-cccc");
        for d in [&live, &dead, &old_style] {
            std::fs::create_dir(d).unwrap();
        }
        let mut gone = abandoned_new_dirs(&dir);
        gone.sort();
        assert_eq!(gone, vec![dead.clone(), old_style.clone()]);
        assert!(task_dir_exists(&dir, "aaaa") && task_dir_exists(&dir, "bbbb"));
        assert!(!task_dir_exists(&dir, "aaa") && !task_dir_exists(&dir, "dddd"));
        // The sweep removes the abandoned ones even when no task needs anything else.
        let placement = Placement::beneath_own(&format!("skiff-unit-new-{me}"));
        sweep(&dir, &placement, Duration::from_secs(3600));
        assert!(live.exists() && !dead.exists() && !old_style.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_a_live_creator_or_state_is_an_orphan() {
        let dir = std::env::temp_dir().join(format!("skiff-store-{}", std::process::id()));
        let tasks = dir.join("tasks");
        let t = tasks.join("0123abcd");
        create_task_dir(&t).unwrap();
        let v = read(&t).unwrap();
        assert!(v.creating && !v.orphaned());
        assert_eq!(v.status(), Status::Pending);
        std::fs::write(t.join(CREATING_FILE), "1 1\n").unwrap();
        let v = read(&t).unwrap();
        assert!(v.orphaned());
        assert!(reconcile(v, None).is_none());
        assert!(!t.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
