//! The per-task shim: a single-threaded re-exec of skiff that creates the task's containers,
//! forwards their output, reaps them, reads their OOM counters and reports events.
//!
//! stdin carries commands from the task engine; fd 3 carries events back. When stdin closes
//! (the engine is gone), the shim kills what still runs, reports, and exits.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::process::{self, adopt_fd};
use super::proto::{Command, Event, ShimConfig, EVENT_FD};
use super::spec::ContainerSpec;
use crate::cgroup::OomWatch;

struct Stream {
    fd: OwnedFd,
    to_stderr: bool,
    at_line_start: bool,
}

struct Container {
    spec: ContainerSpec,
    pid: Option<Pid>,
    streams: Vec<Stream>,
    exited: bool,
    oom: Option<OomWatch>,
}

struct Shim {
    prefix_output: bool,
    containers: Vec<Container>,
    events: File,
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
    let text =
        std::fs::read(config_path).map_err(|e| format!("read {}: {e}", config_path.display()))?;
    let cfg: ShimConfig = serde_json::from_slice(&text)
        .map_err(|e| format!("parse {}: {e}", config_path.display()))?;
    let events = adopt_fd(EVENT_FD).ok_or("fd 3 (events) is not open")?;
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

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
        prefix_output: cfg.prefix_output,
        containers: cfg
            .containers
            .into_iter()
            .map(|spec| Container {
                spec,
                pid: None,
                streams: Vec::new(),
                exited: false,
                oom: None,
            })
            .collect(),
        events: File::from(events),
    };
    let stdin = std::io::stdin();
    let stdin_fd = stdin.as_fd();
    set_nonblocking(stdin_fd);
    let mut cmd_buf: Vec<u8> = Vec::new();
    let mut stdin_open = true;

    loop {
        let running = shim.containers.iter().any(|c| c.pid.is_some() && !c.exited);
        let streams_open = shim.containers.iter().any(|c| !c.streams.is_empty());
        if !stdin_open && !running && !streams_open {
            return Ok(());
        }

        // Poll set: [stdin?, signalfd, streams...]
        let mut fds: Vec<PollFd> = Vec::new();
        let stdin_idx = stdin_open.then(|| {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let sfd_raw = sfd.as_raw_fd();
        let sfd_b = unsafe { BorrowedFd::borrow_raw(sfd_raw) };
        fds.push(PollFd::new(sfd_b, PollFlags::POLLIN));
        let sfd_idx = fds.len() - 1;
        let mut stream_ids = Vec::new();
        for (ci, c) in shim.containers.iter().enumerate() {
            for (si, s) in c.streams.iter().enumerate() {
                fds.push(PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(s.fd.as_raw_fd()) },
                    PollFlags::POLLIN,
                ));
                stream_ids.push((ci, si));
            }
        }
        let oom_base = fds.len();
        let mut oom_ids = Vec::new();
        for (ci, c) in shim.containers.iter().enumerate() {
            if let (Some(w), false) = (&c.oom, c.exited) {
                fds.push(PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(w.raw_fd()) },
                    PollFlags::POLLIN,
                ));
                oom_ids.push(ci);
            }
        }
        // A pending OOM notification is looked at again shortly, until its kill is counted.
        let oom_pending = shim
            .containers
            .iter()
            .any(|c| !c.exited && c.oom.as_ref().is_some_and(OomWatch::pending));
        let timeout = if oom_pending {
            PollTimeout::from(25u8)
        } else {
            PollTimeout::NONE
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
        let stdin_ready = stdin_idx.is_some_and(|i| ready(&fds[i]));
        let sfd_ready = ready(&fds[sfd_idx]);
        let ready_streams: Vec<(usize, usize)> = stream_ids
            .iter()
            .enumerate()
            .filter(|(k, _)| ready(&fds[sfd_idx + 1 + k]))
            .map(|(_, id)| *id)
            .collect();
        let ready_ooms: Vec<usize> = oom_ids
            .iter()
            .enumerate()
            .filter(|(k, _)| ready(&fds[oom_base + k]))
            .map(|(_, ci)| *ci)
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

        if sfd_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
            shim.reap();
        }

        if stdin_ready {
            let mut buf = [0u8; 4096];
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) => {
                    stdin_open = false;
                    shim.kill_all(Signal::SIGKILL);
                }
                Ok(n) => {
                    cmd_buf.extend_from_slice(&buf[..n]);
                    while let Some(pos) = cmd_buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = cmd_buf.drain(..=pos).collect();
                        match serde_json::from_slice::<Command>(&line) {
                            Ok(cmd) => shim.command(cmd),
                            Err(e) => eprintln!("skiff shim: bad command: {e}"),
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    stdin_open = false;
                    shim.kill_all(Signal::SIGKILL);
                }
            }
        }
    }
}

fn set_nonblocking(fd: BorrowedFd) {
    let raw = fd.as_raw_fd();
    unsafe {
        let fl = libc::fcntl(raw, libc::F_GETFL);
        libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

impl Shim {
    fn emit(&mut self, ev: &Event) {
        let mut line = serde_json::to_vec(ev).expect("event serializes");
        line.push(b'\n');
        // The engine may be gone; the containers are handled either way.
        let _ = self.events.write_all(&line);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Start { container } => self.start(&container),
            Command::Kill { container, signal } => {
                if let Some(c) = self.containers.iter().find(|c| c.spec.name == container) {
                    if let (Some(pid), false) = (c.pid, c.exited) {
                        if let Ok(sig) = Signal::try_from(signal) {
                            let _ = kill(pid, sig);
                        }
                    }
                }
            }
        }
    }

    fn start(&mut self, name: &str) {
        let Some(ci) = self.containers.iter().position(|c| c.spec.name == name) else {
            self.emit(&Event::StartFailed {
                container: name.to_string(),
                exit_code: 125,
                error: "no such container in this task".into(),
            });
            return;
        };
        if self.containers[ci].pid.is_some() {
            return;
        }
        // Watch before the start, so that no OOM kill can slip by unseen.
        match OomWatch::new(&self.containers[ci].spec.cgroup) {
            Ok(w) => self.containers[ci].oom = Some(w),
            Err(e) => eprintln!("skiff shim: container {name}: no live OOM events: {e}"),
        }
        match process::spawn(&self.containers[ci].spec) {
            Ok(sp) => {
                set_nonblocking(sp.stdout.as_fd());
                set_nonblocking(sp.stderr.as_fd());
                let c = &mut self.containers[ci];
                c.pid = Some(sp.pid);
                c.streams = vec![
                    Stream {
                        fd: sp.stdout,
                        to_stderr: false,
                        at_line_start: true,
                    },
                    Stream {
                        fd: sp.stderr,
                        to_stderr: true,
                        at_line_start: true,
                    },
                ];
                self.emit(&Event::Started {
                    container: name.to_string(),
                    pid: sp.pid.as_raw(),
                });
            }
            Err(f) => {
                // Never started: it counts as exited for the shim's bookkeeping.
                let c = &mut self.containers[ci];
                c.exited = true;
                self.emit(&Event::StartFailed {
                    container: name.to_string(),
                    exit_code: f.exit_code,
                    error: f.msg,
                });
            }
        }
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

    fn kill_all(&mut self, sig: Signal) {
        for c in &self.containers {
            if let (Some(pid), false) = (c.pid, c.exited) {
                let _ = kill(pid, sig);
            }
        }
    }

    /// Copies what is available on one stream; false once it reached EOF.
    fn pump(&mut self, ci: usize, si: usize) -> bool {
        let prefix = self
            .prefix_output
            .then(|| format!("{} | ", self.containers[ci].spec.name));
        let s = &mut self.containers[ci].streams[si];
        let mut buf = [0u8; 16384];
        loop {
            let n = match nix::unistd::read(s.fd.as_raw_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            };
            let chunk = &buf[..n];
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
            let Some(ci) = self
                .containers
                .iter()
                .position(|c| c.pid == Some(pid) && !c.exited)
            else {
                continue;
            };
            self.drain(ci);
            // The kernel rate-limits memory.events notifications: a kill just before the
            // exit may not have been announced yet. Report it before the exit.
            self.oom_notified(ci, false);
            self.containers[ci].exited = true;
            let oom_killed = self.containers[ci].spec.cgroup.oom_kills().unwrap_or(0) > 0;
            let name = self.containers[ci].spec.name.clone();
            self.emit(&Event::Exited {
                container: name,
                exit_code,
                signal,
                oom_killed,
            });
        }
    }
}
