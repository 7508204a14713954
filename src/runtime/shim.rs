//! The per-task shim: a single-threaded, tokio-free re-exec of skiff that detaches from the
//! skiff process that started it (double fork, setsid, child subreaper), creates the task's
//! containers, holds their output pipes and writes their logs, reaps them, watches their OOM
//! counters, applies ECS's stop rules (an essential container's exit stops the task; a stop
//! sends each container its stop signal, then SIGKILL after its stop timeout), and records all
//! of it in the task's state file. Clients (skiff processes) connect to its socket in the task
//! directory: they get every event so far, then live ones, and may send commands. A task
//! keeps running, and its end is recorded, when the skiff process that started it dies.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::exec::{exec_in, ExecProcess};
use super::health::{self, HealthState, Monitor};
use super::lifecycle;
use super::logfile::{LogStream, LogWriter};
use super::process::{self, adopt_fd, Joins};
use super::proto::{
    now_ms, Command, ContainerState, Event, OutputStream, ShimConfig, Status, TaskState, READY_FD,
    SOCKET_FILE,
};
use super::spec::ContainerSpec;
use crate::cgroup::{Cgroup, OomWatch};

/// Why the task stopped, in ECS's words.
pub const REASON_ESSENTIAL_EXITED: &str = "Essential container in task exited";
pub const REASON_USER: &str = "Task stopped by user";

/// The exit code reported for a container that could not start (Docker's).
pub const START_FAILURE: i32 = 125;

struct Stream {
    fd: OwnedFd,
    to_stderr: bool,
    at_line_start: bool,
}

struct Container {
    spec: ContainerSpec,
    pid: Option<Pid>,
    streams: Vec<Stream>,
    /// The pty master of a container with a terminal (also its only stream).
    tty: Option<OwnedFd>,
    exited: bool,
    oom: Option<OomWatch>,
    log: Option<LogWriter>,
    state: ContainerState,
    kill_at: Option<Instant>,
    /// Its (latest) start, for the restart policy's attempt period.
    running_since: Option<Instant>,
    /// It got its stop signal in this stop.
    signaled: bool,
    /// Its health checks' schedule while it runs (with a `healthCheck`).
    health: Option<Monitor>,
}

struct Client {
    id: u64,
    sock: UnixStream,
    /// Bytes read, up to the next newline.
    buf: Vec<u8>,
    /// Bytes the socket did not take yet.
    out: Vec<u8>,
    /// Removed (and its execs killed) at the end of the loop's turn.
    gone: bool,
}

/// A client with more than this waiting to be written is dropped rather than let the shim's
/// memory grow.
const CLIENT_BACKLOG: usize = 1 << 20;
/// An exec's pipes are read only while its client has less than this waiting: a slow client
/// slows the process down (its pipe fills) instead of growing the shim.
const EXEC_BACKLOG: usize = 64 << 10;
/// What is read from each of an exec's pipes once it has exited (a child it left behind may
/// hold them open and keep writing).
const EXEC_DRAIN_MAX: usize = 128 << 10;

/// A process started in a container by a client's `exec`.
struct Exec {
    /// The client's name for it.
    id: String,
    /// The client that asked, the only one its events go to; None once it has gone.
    client: Option<u64>,
    pid: Pid,
    streams: Vec<(OutputStream, OwnedFd)>,
    deadline: Option<Instant>,
    timed_out: bool,
    killed: bool,
    /// A health check of this container (index), whose output is kept here, not sent.
    health_of: Option<usize>,
    output: Vec<u8>,
}

struct Shim {
    task_id: String,
    task_dir: std::path::PathBuf,
    prefix_output: bool,
    echo_output: bool,
    containers: Vec<Container>,
    clients: Vec<Client>,
    next_client_id: u64,
    execs: Vec<Exec>,
    /// Every event so far, serialized: a client that connects late gets them first.
    history: Vec<Vec<u8>>,
    stopping: bool,
    stop_reason: Option<String>,
    exit_code: Option<i32>,
    task_cgroup: Option<Cgroup>,
    /// When the containers began waiting for their dependencies.
    waiting_since: Instant,
}

/// Entry point of `skiff shim`; returns the process exit code.
pub fn main(config_path: &Path) -> i32 {
    match run(config_path) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff shim: {e}");
            1
        }
    }
}

fn run(config_path: &Path) -> Result<(), String> {
    crate::timing::mark("shim_exec");
    let text =
        std::fs::read(config_path).map_err(|e| format!("read {}: {e}", config_path.display()))?;
    let cfg: ShimConfig = serde_json::from_slice(&text)
        .map_err(|e| format!("parse {}: {e}", config_path.display()))?;
    let ready = adopt_fd(READY_FD).ok_or("fd 3 (ready) is not open")?;

    // Detach: the skiff process that started us waits only for this first process; the
    // shim proper is its child, in a session of its own, re-parented to init (or to a
    // subreaper) when the first process exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        nix::unistd::ForkResult::Child => {}
    }
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Its working directory is the task's: the socket path stays short whatever the state
    // directory's length (sun_path holds 108 bytes).
    std::env::set_current_dir(&cfg.task_dir)
        .map_err(|e| format!("chdir {}: {e}", cfg.task_dir.display()))?;
    let _ = std::fs::remove_file(SOCKET_FILE);
    let listener =
        UnixListener::bind(SOCKET_FILE).map_err(|e| format!("bind {SOCKET_FILE}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("socket: {e}"))?;

    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    let mut shim = Shim {
        task_id: cfg.task_id.clone(),
        task_dir: cfg.task_dir.clone(),
        prefix_output: cfg.prefix_output,
        echo_output: cfg.echo_output,
        containers: cfg
            .containers
            .into_iter()
            .map(|spec| Container {
                log: LogWriter::open(&spec.log_path, cfg.log_max_size, cfg.log_max_files)
                    .map_err(|e| {
                        eprintln!(
                            "skiff shim: container {}: log {}: {e}",
                            spec.name,
                            spec.log_path.display()
                        )
                    })
                    .ok(),
                state: ContainerState {
                    name: spec.name.clone(),
                    status: Status::Pending,
                    pid: None,
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    reason: None,
                    started_at: None,
                    finished_at: None,
                    restart_count: 0,
                    health: None,
                },
                spec,
                pid: None,
                streams: Vec::new(),
                tty: None,
                exited: false,
                oom: None,
                kill_at: None,
                running_since: None,
                signaled: false,
                health: None,
            })
            .collect(),
        clients: Vec::new(),
        next_client_id: 0,
        execs: Vec::new(),
        history: Vec::new(),
        stopping: false,
        stop_reason: None,
        exit_code: None,
        task_cgroup: cfg.task_cgroup,
        waiting_since: Instant::now(),
    };
    shim.save();
    {
        let mut r = std::fs::File::from(ready);
        let _ = writeln!(r, "{}", std::process::id());
    }

    if cfg.wait_for_client {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(30_000u16));
        if let Ok((sock, _)) = listener.accept() {
            shim.attach(sock);
        }
    }
    shim.waiting_since = Instant::now();
    shim.refuse_cycles();
    shim.start_ready();

    let stdin_fd = std::io::stdin().as_fd().as_raw_fd();
    let mut forward_stdin = shim.containers.iter().any(|c| c.tty.is_some());
    if forward_stdin {
        set_nonblocking(stdin_fd);
    }

    loop {
        shim.sweep_clients();
        let running = shim.containers.iter().any(|c| c.pid.is_some() && !c.exited);
        let streams_open = shim.containers.iter().any(|c| !c.streams.is_empty());
        let waiting = shim.waiting();
        if !running && !streams_open && !waiting && shim.execs.is_empty() {
            break;
        }
        if !running {
            // Their containers are gone: nothing they do matters any more.
            shim.kill_execs();
        }

        // Poll set: [listener, signalfd, stdin?, clients..., streams..., ooms...]
        let b = |fd: i32| unsafe { BorrowedFd::borrow_raw(fd) };
        let mut fds: Vec<PollFd> = vec![
            PollFd::new(b(listener.as_raw_fd()), PollFlags::POLLIN),
            PollFd::new(b(sfd.as_raw_fd()), PollFlags::POLLIN),
        ];
        let stdin_idx = forward_stdin.then(|| {
            fds.push(PollFd::new(b(stdin_fd), PollFlags::POLLIN));
            fds.len() - 1
        });
        let client_base = fds.len();
        for c in &shim.clients {
            let mut ev = PollFlags::POLLIN;
            if !c.out.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(b(c.sock.as_raw_fd()), ev));
        }
        let stream_base = fds.len();
        let mut stream_ids = Vec::new();
        for (ci, c) in shim.containers.iter().enumerate() {
            for (si, s) in c.streams.iter().enumerate() {
                fds.push(PollFd::new(b(s.fd.as_raw_fd()), PollFlags::POLLIN));
                stream_ids.push((ci, si));
            }
        }
        let exec_base = fds.len();
        let mut exec_stream_ids = Vec::new();
        for (ei, e) in shim.execs.iter().enumerate() {
            if shim.backlog(e.client) >= EXEC_BACKLOG {
                continue;
            }
            for (si, (_, fd)) in e.streams.iter().enumerate() {
                fds.push(PollFd::new(b(fd.as_raw_fd()), PollFlags::POLLIN));
                exec_stream_ids.push((ei, si));
            }
        }
        let oom_base = fds.len();
        let mut oom_ids = Vec::new();
        for (ci, c) in shim.containers.iter().enumerate() {
            if let (Some(w), false) = (&c.oom, c.exited) {
                fds.push(PollFd::new(b(w.raw_fd()), PollFlags::POLLIN));
                oom_ids.push(ci);
            }
        }
        // A pending OOM notification is looked at again shortly, until its kill is counted.
        let oom_pending = shim
            .containers
            .iter()
            .any(|c| !c.exited && c.oom.as_ref().is_some_and(OomWatch::pending));
        let now = Instant::now();
        let mut wait: Option<Duration> = shim
            .containers
            .iter()
            .filter_map(|c| c.kill_at)
            .chain(shim.execs.iter().filter_map(|e| e.deadline))
            .chain(
                shim.containers
                    .iter()
                    .filter(|_| !shim.stopping)
                    .filter_map(|c| c.health.as_ref().and_then(|h| h.next_at)),
            )
            .min()
            .map(|k| k.saturating_duration_since(now));
        if oom_pending {
            wait = Some(wait.map_or(Duration::from_millis(25), |w| {
                w.min(Duration::from_millis(25))
            }));
        }
        // Containers waiting for a dependency look again at least every 250 ms (a
        // startTimeout may run out with nothing else happening).
        if waiting {
            wait = Some(wait.map_or(Duration::from_millis(250), |w| {
                w.min(Duration::from_millis(250))
            }));
        }
        let timeout = match wait {
            Some(w) => PollTimeout::try_from(w.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::NONE),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready = |f: &PollFd| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let listener_ready = ready(&fds[0]);
        let sfd_ready = ready(&fds[1]);
        let stdin_ready = stdin_idx.is_some_and(|i| ready(&fds[i]));
        let fds_ref = &fds;
        let ready_ids = |base: usize, n: usize| (0..n).filter(move |k| ready(&fds_ref[base + k]));
        let ready_clients: Vec<usize> = ready_ids(client_base, shim.clients.len()).collect();
        let writable_clients: Vec<usize> = (0..shim.clients.len())
            .filter(|k| {
                fds[client_base + k]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLOUT))
            })
            .collect();
        let ready_exec_streams: Vec<(usize, usize)> = ready_ids(exec_base, exec_stream_ids.len())
            .map(|k| exec_stream_ids[k])
            .collect();
        let ready_streams: Vec<(usize, usize)> = ready_ids(stream_base, stream_ids.len())
            .map(|k| stream_ids[k])
            .collect();
        let ready_ooms: Vec<usize> = ready_ids(oom_base, oom_ids.len())
            .map(|k| oom_ids[k])
            .collect();
        drop(fds);

        for ci in ready_ooms {
            shim.oom_notified(ci, true);
        }
        if oom_pending {
            for ci in 0..shim.containers.len() {
                shim.oom_notified(ci, false);
            }
        }

        // Output first, so that an exit event follows the container's last lines.
        let mut closed = Vec::new();
        for (ci, si) in ready_streams {
            if !shim.pump(ci, si) {
                closed.push((ci, si));
            }
        }
        for (ci, si) in closed.into_iter().rev() {
            shim.containers[ci].streams.remove(si);
        }
        for k in writable_clients {
            shim.flush_client(k);
        }
        let mut closed = Vec::new();
        for (ei, si) in ready_exec_streams {
            if !shim.pump_exec(ei, si, EXEC_BACKLOG) {
                closed.push((ei, si));
            }
        }
        for (ei, si) in closed.into_iter().rev() {
            shim.execs[ei].streams.remove(si);
        }

        if sfd_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGTERM || sig == libc::SIGINT {
                    // Someone asked the shim itself to stop: stop the task properly.
                    shim.stop_task(REASON_USER, false);
                }
            }
            shim.reap();
        }

        if listener_ready {
            while let Ok((sock, _)) = listener.accept() {
                shim.attach(sock);
            }
        }
        for k in ready_clients {
            shim.read_client(k);
        }

        if stdin_ready && !shim.forward_stdin(stdin_fd) {
            forward_stdin = false;
        }

        if shim.stopping {
            shim.signal_stoppable();
        } else {
            shim.start_ready();
            shim.start_health_checks();
        }
        let now = Instant::now();
        for c in shim.containers.iter_mut() {
            if c.kill_at.is_some_and(|k| k <= now) {
                c.kill_at = None;
                if let (Some(pid), false) = (c.pid, c.exited) {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        }
        for e in shim.execs.iter_mut() {
            if e.deadline.is_some_and(|d| d <= now) {
                e.deadline = None;
                e.timed_out = true;
                e.killed = true;
                let _ = kill(e.pid, Signal::SIGKILL);
            }
        }
    }

    shim.finish();
    Ok(())
}

/// The spec with its secrets' values added to the environment (replacing variables of the
/// same name), read from the store now. The copy lives only until the clone.
fn with_secret_env(spec: &ContainerSpec) -> Result<ContainerSpec, String> {
    let mut spec = spec.clone();
    let mut env = spec.process().env().clone().unwrap_or_default();
    for (name, r) in &spec.secrets {
        let v = super::secret::value(r).map_err(|e| format!("secret {name}: {e}"))?;
        env.retain(|e| e.split('=').next() != Some(name.as_str()));
        env.push(format!("{name}={v}"));
    }
    let mut process = spec.process().clone();
    process.set_env(Some(env));
    spec.oci.set_process(Some(process));
    Ok(spec)
}

fn set_nonblocking(raw: i32) {
    unsafe {
        let fl = libc::fcntl(raw, libc::F_GETFL);
        libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

impl Shim {
    fn save(&self) {
        let all_stopped = self
            .containers
            .iter()
            .all(|c| c.state.status == Status::Stopped);
        let st = TaskState {
            task_id: self.task_id.clone(),
            shim_pid: std::process::id() as i32,
            desired_status: if self.stopping {
                Status::Stopped
            } else {
                Status::Running
            },
            known_status: if all_stopped {
                Status::Stopped
            } else if self
                .containers
                .iter()
                .any(|c| c.state.status == Status::Running)
            {
                Status::Running
            } else {
                Status::Pending
            },
            stop_reason: self.stop_reason.clone(),
            exit_code: self.exit_code,
            stopped_at: all_stopped
                .then(|| {
                    self.containers
                        .iter()
                        .filter_map(|c| c.state.finished_at)
                        .max()
                })
                .flatten(),
            containers: self.containers.iter().map(|c| c.state.clone()).collect(),
            health_status: health::task_health(
                self.containers
                    .iter()
                    .map(|c| (c.spec.essential, c.state.health.as_ref())),
            ),
        };
        if let Err(e) = st.write(&self.task_dir) {
            eprintln!("skiff shim: write task state: {e}");
        }
    }

    /// An event for every client, and for the history that later clients get first.
    fn emit(&mut self, ev: &Event) {
        let line = event_line(ev);
        for c in self.clients.iter_mut() {
            c.send(&line);
        }
        self.history.push(line);
    }

    /// An event for one client only, kept out of the history (an exec's events).
    fn send_to(&mut self, client: Option<u64>, ev: &Event) {
        if let Some(c) = self.clients.iter_mut().find(|c| Some(c.id) == client) {
            c.send(&event_line(ev));
        }
    }

    fn attach(&mut self, sock: UnixStream) {
        let _ = sock.set_nonblocking(true);
        self.next_client_id += 1;
        let mut c = Client {
            id: self.next_client_id,
            sock,
            buf: Vec::new(),
            out: Vec::new(),
            gone: false,
        };
        for line in &self.history {
            c.send(line);
        }
        self.clients.push(c);
    }

    fn read_client(&mut self, k: usize) {
        let mut buf = [0u8; 1024];
        let c = &mut self.clients[k];
        if c.gone {
            return;
        }
        let n = match c.sock.read(&mut buf) {
            Ok(0) => {
                c.gone = true;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(_) => {
                c.gone = true;
                return;
            }
        };
        c.buf.extend_from_slice(&buf[..n]);
        if c.buf.len() > 64 * 1024 {
            c.gone = true;
            return;
        }
        let id = c.id;
        while let Some(pos) = self.clients[k].buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.clients[k].buf.drain(..=pos).collect();
            match serde_json::from_slice::<Command>(&line) {
                Ok(cmd) => self.command(cmd, id),
                Err(e) => eprintln!("skiff shim: bad command: {e}"),
            }
        }
    }

    fn flush_client(&mut self, k: usize) {
        self.clients[k].flush();
    }

    /// What waits to be written to `client` (0 for one that has gone).
    fn backlog(&self, client: Option<u64>) -> usize {
        self.clients
            .iter()
            .find(|c| Some(c.id) == client && !c.gone)
            .map_or(0, |c| c.out.len())
    }

    /// Drops the clients that went away; their execs are killed (nobody waits for them).
    fn sweep_clients(&mut self) {
        self.clients.retain(|c| !c.gone);
        for e in self.execs.iter_mut() {
            if e.client.is_some() && !self.clients.iter().any(|c| Some(c.id) == e.client) {
                e.client = None;
                e.streams.clear();
                if !e.killed {
                    e.killed = true;
                    let _ = kill(e.pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn kill_execs(&mut self) {
        for e in self.execs.iter_mut().filter(|e| !e.killed) {
            e.killed = true;
            let _ = kill(e.pid, Signal::SIGKILL);
        }
    }

    fn start_exec(
        &mut self,
        client: u64,
        container: String,
        id: String,
        p: ExecProcess,
        timeout_ms: Option<u64>,
    ) {
        let failed = |exit_code: i32, error: String| Event::ExecFailed {
            id: id.clone(),
            exit_code,
            error,
        };
        let target = match self.containers.iter().find(|c| c.spec.name == container) {
            None => Err("no such container in the task".to_string()),
            Some(c) => match (c.pid, c.exited) {
                (Some(pid), false) => Ok((pid, c)),
                (None, _) => Err("not started yet".to_string()),
                (Some(_), true) => Err(format!(
                    "not running (exited{})",
                    c.state
                        .exit_code
                        .map(|code| format!(" with {code}"))
                        .unwrap_or_default()
                )),
            },
        };
        let ev = match target {
            Err(msg) => failed(125, msg),
            Ok(_)
                if self
                    .execs
                    .iter()
                    .any(|e| e.client == Some(client) && e.id == id) =>
            {
                failed(125, format!("exec id {id:?} is in use"))
            }
            Ok((pid, c)) => match exec_in(&c.spec, pid, &p) {
                Err(f) => failed(f.exit_code, f.msg),
                Ok(sp) => {
                    let mut streams = vec![(OutputStream::Stdout, sp.stdout)];
                    streams.extend(sp.stderr.map(|e| (OutputStream::Stderr, e)));
                    for (_, fd) in &streams {
                        set_nonblocking(fd.as_raw_fd());
                    }
                    self.execs.push(Exec {
                        id,
                        client: Some(client),
                        pid: sp.pid,
                        streams,
                        deadline: timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
                        timed_out: false,
                        killed: false,
                        health_of: None,
                        output: Vec::new(),
                    });
                    return;
                }
            },
        };
        self.send_to(Some(client), &ev);
    }

    /// Sends what is available on one of an exec's pipes to its client, until that client has
    /// `limit` bytes waiting; false once the pipe reached EOF.
    fn pump_exec(&mut self, ei: usize, si: usize, limit: usize) -> bool {
        let mut buf = [0u8; 16384];
        let mut sent = 0;
        loop {
            let e = &self.execs[ei];
            if self.backlog(e.client) >= limit || sent >= EXEC_DRAIN_MAX {
                return true;
            }
            let (stream, fd) = &e.streams[si];
            let n = match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            };
            sent += n;
            if e.health_of.is_some() {
                let room = health::OUTPUT_MAX.saturating_sub(e.output.len());
                self.execs[ei].output.extend_from_slice(&buf[..n.min(room)]);
                continue;
            }
            use base64::Engine as _;
            let ev = Event::ExecOutput {
                id: e.id.clone(),
                stream: *stream,
                data: base64::engine::general_purpose::STANDARD.encode(&buf[..n]),
            };
            self.send_to(e.client, &ev);
        }
    }

    fn command(&mut self, cmd: Command, from: u64) {
        match cmd {
            Command::Stop { force, reason } => {
                let reason = reason.unwrap_or_else(|| REASON_USER.to_string());
                self.stop_task(&reason, force)
            }
            Command::Kill { container, signal } => {
                if let Some(c) = self.containers.iter().find(|c| c.spec.name == container) {
                    if let (Some(pid), false) = (c.pid, c.exited) {
                        if let Ok(sig) = Signal::try_from(signal) {
                            let _ = kill(pid, sig);
                        }
                    }
                }
            }
            Command::Exec {
                container,
                id,
                cmd,
                env,
                user,
                timeout_ms,
            } => {
                let p = ExecProcess {
                    args: cmd,
                    env,
                    user,
                };
                self.start_exec(from, container, id, p, timeout_ms);
            }
            Command::Resize { rows, cols } => {
                let ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                for c in &self.containers {
                    if let Some(t) = &c.tty {
                        unsafe { libc::ioctl(t.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                    }
                }
            }
        }
    }

    /// ECS's stop: the stop signal to every running container, SIGKILL after its timeout.
    fn stop_task(&mut self, reason: &str, force: bool) {
        if self.stopping && !force {
            return;
        }
        if !self.stopping {
            self.stopping = true;
            self.stop_reason = Some(reason.to_string());
        }
        if force {
            for c in self.containers.iter_mut() {
                if let (Some(pid), false) = (c.pid, c.exited) {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        } else {
            self.signal_stoppable();
        }
        self.save();
    }

    /// In a stop, the stop signal (then SIGKILL after the stop timeout) goes to each running
    /// container once no running container depends on it any more: ECS stops containers in
    /// reverse dependency order.
    fn signal_stoppable(&mut self) {
        let now = Instant::now();
        let running: Vec<bool> = self
            .containers
            .iter()
            .map(|c| c.pid.is_some() && !c.exited)
            .collect();
        for ci in 0..self.containers.len() {
            let c = &self.containers[ci];
            let (Some(pid), false, false) = (c.pid, c.exited, c.signaled) else {
                continue;
            };
            let name = &c.spec.name;
            let dependents_running = self.containers.iter().enumerate().any(|(di, d)| {
                running[di] && d.spec.depends_on.iter().any(|x| &x.container == name)
            });
            if dependents_running {
                continue;
            }
            let c = &mut self.containers[ci];
            if let Ok(sig) = Signal::try_from(c.spec.stop_signal) {
                let _ = kill(pid, sig);
            }
            c.signaled = true;
            c.kill_at = Some(now + Duration::from_secs(c.spec.stop_timeout));
        }
    }

    /// Containers not started yet that still may be (the task is not stopping).
    fn waiting(&self) -> bool {
        !self.stopping && self.containers.iter().any(|c| c.pid.is_none() && !c.exited)
    }

    /// What the ordering rules need to know of the container named `name`.
    fn observed(&self, name: &str) -> Option<lifecycle::Observed> {
        let c = self.containers.iter().find(|c| c.spec.name == name)?;
        let started = c.state.started_at.is_some();
        Some(lifecycle::Observed {
            started,
            exited: c.exited && started,
            failed: c.exited && !started,
            exit_code: c.state.exit_code,
            healthy: c
                .state
                .health
                .as_ref()
                .is_some_and(|h| h.status == health::HealthStatus::Healthy),
        })
    }

    /// Starts every waiting container whose dependencies hold (in definition order, again
    /// until none more can start: one start may satisfy the next container's START), and
    /// gives up on those that can never start.
    fn start_ready(&mut self) {
        loop {
            if self.stopping {
                return;
            }
            let waited = self.waiting_since.elapsed();
            let mut acted = false;
            for ci in 0..self.containers.len() {
                let c = &self.containers[ci];
                if c.pid.is_some() || c.exited {
                    continue;
                }
                let verdict = lifecycle::readiness(
                    &c.spec.depends_on,
                    |n| self.observed(n),
                    |n| {
                        self.containers
                            .iter()
                            .find(|d| d.spec.name == n)
                            .and_then(|d| d.spec.start_timeout)
                    },
                    waited,
                );
                match verdict {
                    lifecycle::Readiness::Wait => continue,
                    lifecycle::Readiness::Start => self.start(ci),
                    lifecycle::Readiness::Never(why) => self.give_up(ci, why),
                }
                acted = true;
                if self.stopping {
                    return;
                }
            }
            if !acted {
                return;
            }
        }
    }

    /// A container that can never start counts as stopped, with the reason.
    fn give_up(&mut self, ci: usize, why: String) {
        let c = &mut self.containers[ci];
        c.exited = true;
        c.state.status = Status::Stopped;
        c.state.exit_code = None;
        c.state.reason = Some(format!("CannotStartContainerError: {why}"));
        c.state.finished_at = Some(now_ms());
        let essential = c.spec.essential;
        let name = c.spec.name.clone();
        self.emit(&Event::StartFailed {
            container: name,
            exit_code: START_FAILURE,
            error: why,
        });
        self.stopped(essential, START_FAILURE);
    }

    /// Validation refuses dependency cycles; should one reach the shim, its containers are
    /// given up on rather than waited for forever.
    fn refuse_cycles(&mut self) {
        let deps: Vec<(String, Vec<String>)> = self
            .containers
            .iter()
            .map(|c| {
                (
                    c.spec.name.clone(),
                    c.spec
                        .depends_on
                        .iter()
                        .map(|d| d.container.clone())
                        .collect(),
                )
            })
            .collect();
        if let Some(cycle) = lifecycle::find_cycle(&deps) {
            let why = format!("dependsOn cycle: {}", cycle.join(" -> "));
            for ci in 0..self.containers.len() {
                if cycle.contains(&self.containers[ci].spec.name) && !self.containers[ci].exited {
                    self.give_up(ci, why.clone());
                }
            }
        }
    }

    /// The namespaces of earlier containers this one shares.
    fn joins(&self, spec: &ContainerSpec) -> Joins {
        let ns_of = |name: &Option<String>, ns: &str| {
            let c = self
                .containers
                .iter()
                .find(|c| Some(&c.spec.name) == name.as_ref())?;
            let pid = c.pid.filter(|_| !c.exited)?;
            Some(std::path::PathBuf::from(format!("/proc/{pid}/ns/{ns}")))
        };
        Joins {
            pid: ns_of(&spec.share_pid_with, "pid"),
            ipc: ns_of(&spec.share_ipc_with, "ipc"),
        }
    }

    fn start(&mut self, ci: usize) {
        let name = self.containers[ci].spec.name.clone();
        // Watch before the start, so that no OOM kill can slip by unseen.
        match OomWatch::new(&self.containers[ci].spec.cgroup) {
            Ok(w) => self.containers[ci].oom = Some(w),
            Err(e) => eprintln!("skiff shim: container {name}: no live OOM events: {e}"),
        }
        let joins = self.joins(&self.containers[ci].spec);
        let with_secrets;
        let spec = if self.containers[ci].spec.secrets.is_empty() {
            &self.containers[ci].spec
        } else {
            match with_secret_env(&self.containers[ci].spec) {
                Ok(s) => {
                    with_secrets = s;
                    &with_secrets
                }
                Err(e) => {
                    let why = format!("ResourceInitializationError: {e}");
                    self.start_failed(ci, START_FAILURE, why.clone(), why);
                    return;
                }
            }
        };
        match process::spawn(spec, &joins) {
            Ok(sp) => {
                set_nonblocking(sp.stdout.as_raw_fd());
                let c = &mut self.containers[ci];
                c.pid = Some(sp.pid);
                c.running_since = Some(Instant::now());
                c.signaled = false;
                c.state.status = Status::Running;
                c.state.pid = Some(sp.pid.as_raw());
                c.state.started_at = Some(now_ms());
                // A (re)started container's health is unknown until its first check.
                c.health = c
                    .spec
                    .health_check
                    .clone()
                    .map(|h| Monitor::new(h, Instant::now()));
                c.state.health = c.health.as_ref().map(|_| HealthState::unknown());
                if sp.tty {
                    let dup = sp.stdout.try_clone().ok();
                    c.tty = dup;
                }
                c.streams.push(Stream {
                    fd: sp.stdout,
                    to_stderr: false,
                    at_line_start: true,
                });
                if let Some(e) = sp.stderr {
                    set_nonblocking(e.as_raw_fd());
                    c.streams.push(Stream {
                        fd: e,
                        to_stderr: true,
                        at_line_start: true,
                    });
                }
                self.save();
                self.emit(&Event::Started {
                    container: name,
                    pid: sp.pid.as_raw(),
                });
            }
            Err(f) => {
                let reason = format!("CannotStartContainerError: {}", f.msg);
                self.start_failed(ci, f.exit_code, reason, f.msg);
            }
        }
    }

    /// Never started: it counts as stopped, with the reason.
    fn start_failed(&mut self, ci: usize, exit_code: i32, reason: String, error: String) {
        let c = &mut self.containers[ci];
        c.exited = true;
        c.state.status = Status::Stopped;
        c.state.exit_code = Some(exit_code);
        c.state.reason = Some(reason);
        c.state.finished_at = Some(now_ms());
        let essential = c.spec.essential;
        let name = c.spec.name.clone();
        self.emit(&Event::StartFailed {
            container: name,
            exit_code,
            error,
        });
        self.stopped(essential, exit_code);
    }

    /// A container stopped: an essential one stops the task.
    fn stopped(&mut self, essential: bool, exit_code: i32) {
        if essential && self.exit_code.is_none() {
            self.exit_code = Some(exit_code);
            self.stop_task(REASON_ESSENTIAL_EXITED, false);
        }
        self.save();
    }

    /// `ready`: the watch fd signalled; otherwise a look at the counter (a pending
    /// notification's re-check, or the last look before the exit is reported).
    fn oom_notified(&mut self, ci: usize, ready: bool) {
        let c = &mut self.containers[ci];
        let Some(w) = c.oom.as_mut() else { return };
        let risen = if ready {
            w.check()
        } else if !c.exited {
            w.recheck()
        } else {
            None
        };
        if let Some(n) = risen {
            let ev = Event::OomKill {
                container: c.spec.name.clone(),
                oom_kills: n,
            };
            self.emit(&ev);
        }
    }

    /// Copies what is available on one stream to the log (and the terminal when attached);
    /// false once it reached EOF.
    fn pump(&mut self, ci: usize, si: usize) -> bool {
        let prefix = self
            .prefix_output
            .then(|| format!("{} | ", self.containers[ci].spec.name));
        let echo = self.echo_output;
        let c = &mut self.containers[ci];
        let s = &mut c.streams[si];
        let mut buf = [0u8; 16384];
        loop {
            let n = match nix::unistd::read(s.fd.as_raw_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                // EIO: the pty's last holder closed it.
                Err(_) => return false,
            };
            let chunk = &buf[..n];
            if let Some(log) = c.log.as_mut() {
                let stream = if s.to_stderr {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                };
                if let Err(e) = log.write(stream, chunk) {
                    eprintln!("skiff shim: container {}: log: {e}", c.spec.name);
                    c.log = None;
                }
            }
            if !echo {
                continue;
            }
            let mut out: Vec<u8> = Vec::with_capacity(n + 32);
            match &prefix {
                None => out.extend_from_slice(chunk),
                Some(p) => {
                    for piece in chunk.split_inclusive(|b| *b == b'\n') {
                        if s.at_line_start {
                            out.extend_from_slice(p.as_bytes());
                        }
                        out.extend_from_slice(piece);
                        s.at_line_start = piece.ends_with(b"\n");
                    }
                }
            }
            // A closed terminal must not stop the containers.
            let _ = if s.to_stderr {
                std::io::stderr().write_all(&out)
            } else {
                std::io::stdout().write_all(&out)
            };
        }
    }

    /// The attached terminal's input → the pty of the (first) container that has one; false
    /// at EOF.
    fn forward_stdin(&mut self, fd: i32) -> bool {
        let Some(tty) = self
            .containers
            .iter()
            .find(|c| !c.exited)
            .and_then(|c| c.tty.as_ref())
        else {
            return false;
        };
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    let mut off = 0;
                    while off < n {
                        match nix::unistd::write(tty.as_fd(), &buf[off..n]) {
                            Ok(w) => off += w,
                            Err(nix::errno::Errno::EINTR) => {}
                            Err(_) => return false,
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// Drains every stream of a container (after its exit) so its output precedes the event.
    fn drain(&mut self, ci: usize) {
        let mut si = 0;
        while si < self.containers[ci].streams.len() {
            if self.pump(ci, si) {
                si += 1;
            } else {
                self.containers[ci].streams.remove(si);
            }
        }
        if let Some(log) = self.containers[ci].log.as_mut() {
            log.flush_partial();
        }
    }

    fn reap(&mut self) {
        loop {
            let st = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => st,
            };
            let (pid, exit_code, signal) = match st {
                WaitStatus::Exited(pid, code) => (pid, code, None),
                WaitStatus::Signaled(pid, sig, _) => (pid, 128 + sig as i32, Some(sig as i32)),
                _ => continue,
            };
            if let Some(ei) = self.execs.iter().position(|e| e.pid == pid) {
                self.exec_exited(ei, exit_code);
                continue;
            }
            let Some(ci) = self
                .containers
                .iter()
                .position(|c| c.pid == Some(pid) && !c.exited)
            else {
                continue;
            };
            crate::timing::mark("exited");
            self.drain(ci);
            // The kernel rate-limits memory.events notifications: a kill just before the
            // exit may not have been announced yet. Report it before the exit.
            self.oom_notified(ci, false);
            let c = &mut self.containers[ci];
            c.exited = true;
            c.kill_at = None;
            c.tty = None;
            c.health = None;
            let oom_killed = c.spec.cgroup.oom_kills().unwrap_or(0) > 0;
            c.state.status = Status::Stopped;
            c.state.exit_code = Some(exit_code);
            c.state.signal = signal;
            c.state.oom_killed = oom_killed;
            if oom_killed {
                c.state.reason = Some(super::proto::OOM_REASON.to_string());
            }
            c.state.finished_at = Some(now_ms());
            let name = c.spec.name.clone();
            let essential = c.spec.essential;
            let restart = lifecycle::should_restart(
                c.spec.restart.as_ref(),
                exit_code,
                self.stopping,
                c.running_since.unwrap_or_else(Instant::now),
                Instant::now(),
            );
            self.emit(&Event::Exited {
                container: name,
                exit_code,
                signal,
                oom_killed,
            });
            if restart {
                let c = &mut self.containers[ci];
                c.state.restart_count += 1;
                c.pid = None;
                c.exited = false;
                c.state.reason = None;
                c.state.finished_at = None;
                self.start(ci);
                continue;
            }
            self.stopped(essential, exit_code);
        }
    }

    /// Starts the health checks that are due, each as an exec in its container with the
    /// container's user and environment, killed at its timeout.
    fn start_health_checks(&mut self) {
        let now = Instant::now();
        for ci in 0..self.containers.len() {
            let c = &mut self.containers[ci];
            let (Some(pid), false, Some(m)) = (c.pid, c.exited, c.health.as_mut()) else {
                continue;
            };
            if !m.due(now) {
                continue;
            }
            let deadline = m.begin(now);
            let p = ExecProcess {
                args: m.spec.args.clone(),
                env: Vec::new(),
                user: None,
            };
            match exec_in(&c.spec, pid, &p) {
                Ok(sp) => {
                    let mut streams = vec![(OutputStream::Stdout, sp.stdout)];
                    streams.extend(sp.stderr.map(|e| (OutputStream::Stderr, e)));
                    for (_, fd) in &streams {
                        set_nonblocking(fd.as_raw_fd());
                    }
                    self.execs.push(Exec {
                        id: format!("health-{}", c.spec.name),
                        client: None,
                        pid: sp.pid,
                        streams,
                        deadline: Some(deadline),
                        timed_out: false,
                        killed: false,
                        health_of: Some(ci),
                        output: Vec::new(),
                    });
                }
                // Not found, not executable...: a failed check, with the reason as output.
                Err(f) => self.health_checked(ci, f.exit_code, false, f.msg.as_bytes()),
            }
        }
    }

    /// A health check of container `ci` ended: its result is recorded and saved, unless the
    /// container stopped (or restarted) meanwhile.
    fn health_checked(&mut self, ci: usize, exit_code: i32, timed_out: bool, output: &[u8]) {
        let c = &mut self.containers[ci];
        let (false, Some(m), Some(st)) = (c.exited, c.health.as_mut(), c.state.health.as_mut())
        else {
            return;
        };
        if m.next_at.is_some() {
            return;
        }
        let (code, text) = if timed_out {
            (
                health::TIMED_OUT_EXIT,
                format!(
                    "health check exceeded its timeout ({} s)",
                    m.spec.timeout_secs
                ),
            )
        } else {
            (exit_code, health::output_text(output))
        };
        m.record(st, code, text, now_ms(), Instant::now());
        self.save();
    }

    /// An exec'd process ended: what is left in its pipes, then its exit, to its client.
    fn exec_exited(&mut self, ei: usize, exit_code: i32) {
        for si in 0..self.execs[ei].streams.len() {
            // No backlog limit now: the exit follows right after.
            self.pump_exec(ei, si, usize::MAX);
        }
        let e = self.execs.remove(ei);
        if let Some(ci) = e.health_of {
            self.health_checked(ci, exit_code, e.timed_out, &e.output);
            return;
        }
        let ev = Event::ExecExited {
            id: e.id,
            exit_code,
            timed_out: e.timed_out,
        };
        self.send_to(e.client, &ev);
    }

    /// Every container has stopped: final state, the event, and the cgroups removed.
    fn finish(&mut self) {
        for c in self.containers.iter_mut() {
            if c.state.status == Status::Pending {
                c.state.status = Status::Stopped;
                c.state.reason = Some("not started: the task stopped first".into());
            }
        }
        for c in &self.containers {
            c.spec.cgroup.remove();
        }
        if let Some(cg) = &self.task_cgroup {
            cg.remove();
        }
        // The task's network (bridge, awsvpc), before anyone hears that the task stopped.
        crate::net::settings::release(&self.task_dir, &self.task_id);
        self.save();
        let ev = Event::TaskStopped {
            exit_code: self.exit_code,
            reason: self
                .stop_reason
                .clone()
                .unwrap_or_else(|| REASON_ESSENTIAL_EXITED.to_string()),
        };
        self.emit(&ev);
        // What clients have not taken yet (the last of an exec's output, this event): a
        // second at most each, as the shim exits next.
        for c in self
            .clients
            .iter_mut()
            .filter(|c| !c.gone && !c.out.is_empty())
        {
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = c.sock.write_all(&c.out);
        }
        let _ = std::fs::remove_file(SOCKET_FILE);
    }
}

fn event_line(ev: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(ev).expect("event serializes");
    line.push(b'\n');
    line
}

impl Client {
    /// Writes `line` as far as the socket takes it now and keeps the rest; a client that
    /// cannot keep up (or has gone) is marked gone rather than stall the task.
    fn send(&mut self, line: &[u8]) {
        if self.gone {
            return;
        }
        self.out.extend_from_slice(line);
        self.flush();
        if self.out.len() > CLIENT_BACKLOG {
            self.gone = true;
        }
    }

    fn flush(&mut self) {
        while !self.out.is_empty() && !self.gone {
            match self.sock.write(&self.out) {
                Ok(0) => self.gone = true,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.gone = true,
            }
        }
    }
}
