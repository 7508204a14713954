//! Creating a container's first process: `clone` into new namespaces from the
//! single-threaded shim, set up inside, exec. Errors inside the child travel back over a
//! close-on-exec pipe: EOF means exec happened, bytes are the reason it did not.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};

use super::spec::ContainerSpec;

pub struct Spawned {
    pub pid: Pid,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Why a container did not start, and the exit code that stands for it (126: found but not
/// runnable; 127: not found; 125: anything else, as docker and podman report).
#[derive(Debug)]
pub struct StartFailure {
    pub exit_code: i32,
    pub msg: String,
}

impl StartFailure {
    fn new(exit_code: i32, msg: impl Into<String>) -> Self {
        StartFailure {
            exit_code,
            msg: msg.into(),
        }
    }
}

const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET;

/// Starts the container described by `spec`. Must only be called from a single-threaded
/// process (the shim).
pub fn spawn(spec: &ContainerSpec) -> Result<Spawned, StartFailure> {
    let sys = |what: &str, e: nix::errno::Errno| StartFailure::new(125, format!("{what}: {e}"));
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;

    // A raw clone with no new stack behaves like fork, into new namespaces; the child is PID 1
    // of its PID namespace.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (CLONE_FLAGS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(StartFailure::new(
            125,
            format!("clone: {}", std::io::Error::last_os_error()),
        ));
    }
    if pid == 0 {
        drop(out_r);
        drop(err_r);
        drop(sync_r);
        let failure = match child(spec, out_w, err_w) {
            Ok(never) => match never {},
            Err(f) => f,
        };
        let mut w = File::from(sync_w);
        let _ = w.write_all(failure.msg.as_bytes());
        unsafe { libc::_exit(failure.exit_code) };
    }
    let pid = Pid::from_raw(pid as i32);
    drop(out_w);
    drop(err_w);
    drop(sync_w);
    let mut msg = String::new();
    let _ = File::from(sync_r).read_to_string(&mut msg);
    if msg.is_empty() {
        return Ok(Spawned {
            pid,
            stdout: out_r,
            stderr: err_r,
        });
    }
    let exit_code = match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, c)) => c,
        _ => 125,
    };
    Err(StartFailure::new(exit_code, msg))
}

enum Never {}

fn child(spec: &ContainerSpec, out_w: OwnedFd, err_w: OwnedFd) -> Result<Never, StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);

    // The shim blocks signals for its signalfd and Rust ignores SIGPIPE: neither may leak
    // into the container.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| fail(format!("reset signal mask: {e}")))?;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // Its own session: a terminal's Ctrl-C reaches skiff, which decides how to stop.
    nix::unistd::setsid().map_err(|e| fail(format!("setsid: {e}")))?;
    // If the shim dies, the container must not outlive it unwatched.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };

    let devnull = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
        .map_err(|e| fail(format!("open /dev/null: {e}")))?;
    nix::unistd::dup2(devnull, 0).map_err(|e| fail(format!("stdin: {e}")))?;
    let _ = nix::unistd::close(devnull);
    nix::unistd::dup2(out_w.as_raw_fd(), 1).map_err(|e| fail(format!("stdout: {e}")))?;
    nix::unistd::dup2(err_w.as_raw_fd(), 2).map_err(|e| fail(format!("stderr: {e}")))?;

    // Join the cgroup before anything is allocated on the container's behalf.
    for f in spec.cgroup.procs_files() {
        std::fs::write(&f, "0").map_err(|e| fail(format!("join cgroup {}: {e}", f.display())))?;
    }

    super::rootfs::setup(spec).map_err(fail)?;
    nix::unistd::sethostname(&spec.hostname).map_err(|e| fail(format!("sethostname: {e}")))?;
    crate::net::loopback_up().map_err(|e| fail(format!("loopback: {e}")))?;

    let cwd = Path::new(&spec.cwd);
    std::fs::create_dir_all(cwd)
        .map_err(|e| fail(format!("working directory {}: {e}", spec.cwd)))?;
    nix::unistd::chdir(cwd)
        .map_err(|e| fail(format!("chdir to working directory {}: {e}", spec.cwd)))?;
    // The working directory must be inside the new root: a cwd reached through a leaked fd
    // of the host would make getcwd fail with "unreachable".
    nix::unistd::getcwd().map_err(|e| {
        fail(format!(
            "working directory {} is outside the container: {e}",
            spec.cwd
        ))
    })?;

    let path_var = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(super::spec::DEFAULT_PATH);
    let exe = resolve_exe(&spec.args[0], path_var)?;
    let c =
        |s: &str| CString::new(s).map_err(|_| fail(format!("argument {s:?} contains a NUL byte")));
    let argv: Vec<CString> = spec.args.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = spec.env.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    let exe_c = c(&exe)?;

    close_other_fds();
    let err = nix::unistd::execve(&exe_c, &argv, &envp).unwrap_err();
    Err(match err {
        nix::errno::Errno::ENOENT => {
            StartFailure::new(127, format!("exec {exe}: no such file or directory"))
        }
        nix::errno::Errno::EACCES => {
            StartFailure::new(126, format!("exec {exe}: permission denied"))
        }
        nix::errno::Errno::ENOEXEC => {
            StartFailure::new(126, format!("exec {exe}: exec format error"))
        }
        e => StartFailure::new(126, format!("exec {exe}: {e}")),
    })
}

/// PATH lookup inside the container's root, as Docker reports it.
fn resolve_exe(arg0: &str, path_var: &str) -> Result<String, StartFailure> {
    if arg0.contains('/') {
        return Ok(arg0.to_string());
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let cand = format!("{}/{arg0}", dir.trim_end_matches('/'));
        if let Ok(m) = std::fs::metadata(&cand) {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(cand);
            }
        }
    }
    Err(StartFailure::new(
        127,
        format!("exec: {arg0:?}: executable file not found in $PATH"),
    ))
}

/// Marks every fd above stdio close-on-exec, so that nothing of the shim's reaches the
/// container (the error pipe is close-on-exec already and stays usable until exec).
fn close_other_fds() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return;
    }
    // Older kernels: walk the fd table.
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect();
        for fd in fds {
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Turns a raw fd the shim inherited into an owned one.
pub fn adopt_fd(fd: i32) -> Option<OwnedFd> {
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
