//! Creating a container's first process: `clone` into new namespaces from the
//! single-threaded shim, set up inside, exec. Errors inside the child travel back over a
//! close-on-exec pipe: EOF means exec happened, bytes are the reason it did not.
//!
//! The order inside the child follows what each step needs: the cgroup is joined before
//! anything is allocated; mounts, devices and sysctls need full privileges; the user is
//! resolved from the container's own files after `pivot_root`; the bounding set is dropped
//! while CAP_SETPCAP is still held; the uid switch comes before the final capability sets;
//! seccomp is installed last, right before exec.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};
use oci_spec::runtime::LinuxNamespaceType as Ns;

use super::caps::{self, CapSet};
use super::spec::ContainerSpec;
use super::{seccomp, user};
use crate::cgroup::Cgroup;

pub struct Spawned {
    pub pid: Pid,
    /// stdout and stderr pipes, or the pty master alone (as stdout) for a terminal.
    pub stdout: OwnedFd,
    pub stderr: Option<OwnedFd>,
    pub tty: bool,
}

/// Why a container did not start, and the exit code that stands for it (126: found but not
/// runnable; 127: not found; 125: anything else, as docker and podman report).
#[derive(Debug)]
pub struct StartFailure {
    pub exit_code: i32,
    pub msg: String,
}

impl StartFailure {
    pub(super) fn new(exit_code: i32, msg: impl Into<String>) -> Self {
        StartFailure {
            exit_code,
            msg: msg.into(),
        }
    }
}

/// Namespaces of other containers of the task to join (`pidMode`/`ipcMode` task): paths of
/// `/proc/<pid>/ns/*` files.
#[derive(Default)]
pub struct Joins {
    pub pid: Option<std::path::PathBuf>,
    pub ipc: Option<std::path::PathBuf>,
}

pub(super) fn open_ns(p: &Path) -> Result<OwnedFd, StartFailure> {
    File::open(p)
        .map(OwnedFd::from)
        .map_err(|e| StartFailure::new(125, format!("open {}: {e}", p.display())))
}

/// Starts the container described by `spec`. Must only be called from a single-threaded
/// process (the shim).
pub fn spawn(spec: &ContainerSpec, joins: &Joins) -> Result<Spawned, StartFailure> {
    let sys = |what: &str, e: nix::errno::Errno| StartFailure::new(125, format!("{what}: {e}"));
    let tty = spec.process().terminal() == Some(true);
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| sys("pipe", e))?;
    let tty_sock = if tty {
        let mut fds = [0; 2];
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } < 0
        {
            return Err(StartFailure::new(
                125,
                format!("socketpair: {}", std::io::Error::last_os_error()),
            ));
        }
        Some(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    } else {
        None
    };
    let ipc_fd = joins.ipc.as_deref().map(open_ns).transpose()?;
    // A network namespace prepared for the container (bridge, awsvpc), held by a file.
    let net_fd = spec
        .namespace_path(Ns::Network)
        .map(|p| open_ns(&p))
        .transpose()?;

    let mut flags = libc::SIGCHLD;
    for (t, f) in [
        (Ns::Mount, libc::CLONE_NEWNS),
        (Ns::Uts, libc::CLONE_NEWUTS),
        (Ns::Ipc, libc::CLONE_NEWIPC),
        (Ns::Network, libc::CLONE_NEWNET),
        (Ns::Pid, libc::CLONE_NEWPID),
    ] {
        if spec.new_namespace(t) {
            flags |= f;
        }
    }
    let pid_ns = joins.pid.as_deref().map(open_ns).transpose()?;
    // A raw clone with no new stack behaves like fork, into new namespaces; the child is PID 1
    // of its PID namespace (or, with a shared one, is born in the first container's).
    let (pid, born_in_cgroup) = fork_child(flags, &spec.cgroup, pid_ns.as_ref(), "task's")?;
    if pid == IN_CHILD {
        drop(out_r);
        drop(err_r);
        drop(sync_r);
        let (tty_parent, tty_child) = match tty_sock {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        drop(tty_parent);
        let sync_fd = sync_w.as_raw_fd();
        child_main(sync_w, || {
            child(
                spec,
                out_w,
                err_w,
                sync_fd,
                ipc_fd,
                net_fd,
                tty_child,
                born_in_cgroup,
            )
        });
    }
    drop(out_w);
    drop(err_w);
    drop(sync_w);
    let (tty_parent, tty_child) = match tty_sock {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    drop(tty_child);
    await_exec(pid, sync_r)?;
    if let Some(sock) = tty_parent {
        let master = recv_fd(sock.as_raw_fd()).map_err(|e| {
            StartFailure::new(125, format!("receive the terminal from the container: {e}"))
        })?;
        return Ok(Spawned {
            pid,
            stdout: master,
            stderr: None,
            tty: true,
        });
    }
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: Some(err_r),
        tty: false,
    })
}

/// What `fork_child` returns in the child.
pub(super) const IN_CHILD: Pid = Pid::from_raw(0);

/// Forks (a raw clone with no new stack) with `flags` (namespaces and the exit signal); on
/// v2 into `cgroup` at birth when the kernel can (5.7+). With `pid_ns`, the child is born in
/// that PID namespace: the caller enters it for the duration of the fork (`setns` on a PID
/// namespace only places the children made afterwards). Returns the child's pid (`IN_CHILD`
/// in the child) and whether the child was born in the cgroup.
pub(super) fn fork_child(
    flags: libc::c_int,
    cgroup: &Cgroup,
    pid_ns: Option<&OwnedFd>,
    whose: &str,
) -> Result<(Pid, bool), StartFailure> {
    let restore = match pid_ns {
        Some(target) => {
            let own = open_ns(Path::new("/proc/self/ns/pid"))?;
            nix::sched::setns(target, nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| {
                StartFailure::new(125, format!("join the {whose} PID namespace: {e}"))
            })?;
            Some(own)
        }
        None => None,
    };
    let forked = clone_raw(flags, cgroup);
    if let Some(own) = restore {
        // Only the caller goes back: in the child, this would place its children (an init's
        // command) outside the container's PID namespace.
        if !matches!(forked, Ok((IN_CHILD, _))) {
            let _ = nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWPID);
        }
    }
    forked.map_err(|e| StartFailure::new(125, format!("clone: {e}")))
}

fn clone_raw(flags: libc::c_int, cgroup: &Cgroup) -> std::io::Result<(Pid, bool)> {
    let cgroup_dir = cgroup
        .v2_dir()
        .and_then(|d| File::open(d).ok().map(OwnedFd::from));
    if let Some(Ok(pid)) = cgroup_dir.as_ref().map(|d| clone_into(flags, d)) {
        return Ok((Pid::from_raw(pid as i32), true));
    }
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((Pid::from_raw(pid as i32), false))
}

/// The child's side: runs `setup`, which only returns on failure; the failure's message goes
/// to the parent over `sync_w` and its code becomes the exit status.
pub(super) fn child_main(
    sync_w: OwnedFd,
    setup: impl FnOnce() -> Result<Never, StartFailure>,
) -> ! {
    let failure = match setup() {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let mut w = File::from(sync_w);
    let _ = w.write_all(failure.msg.as_bytes());
    unsafe { libc::_exit(failure.exit_code) };
}

/// The parent's side: EOF on the close-on-exec pipe means the child exec'd; bytes are why
/// it did not, and then the child is reaped for its exit code.
pub(super) fn await_exec(pid: Pid, sync_r: OwnedFd) -> Result<(), StartFailure> {
    let mut msg = String::new();
    let _ = File::from(sync_r).read_to_string(&mut msg);
    if msg.is_empty() {
        return Ok(());
    }
    let exit_code = match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, c)) => c,
        _ => 125,
    };
    Err(StartFailure::new(exit_code, msg))
}

pub(super) enum Never {}

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3 with no new stack (fork-like) into `cgroup_dir`: Ok(0) in the child, Ok(pid) in the
/// parent, Err when the kernel cannot (then nothing was created).
fn clone_into(flags: libc::c_int, cgroup_dir: &OwnedFd) -> std::io::Result<libc::c_long> {
    let signal = (flags & 0xff) as u64;
    let args = CloneArgs {
        flags: (flags as u64 & !0xff) | CLONE_INTO_CGROUP,
        exit_signal: signal,
        cgroup: cgroup_dir.as_raw_fd() as u64,
        ..Default::default()
    };
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid)
}

#[allow(clippy::too_many_arguments)]
fn child(
    spec: &ContainerSpec,
    out_w: OwnedFd,
    err_w: OwnedFd,
    sync_fd: RawFd,
    ipc_fd: Option<OwnedFd>,
    net_fd: Option<OwnedFd>,
    tty_sock: Option<OwnedFd>,
    born_in_cgroup: bool,
) -> Result<Never, StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    crate::timing::mark("cloned");

    reset_process_state()?;
    set_output(&out_w, &err_w)?;

    // Join the cgroup before anything is allocated on the container's behalf, then a cgroup
    // namespace rooted there.
    if !born_in_cgroup {
        spec.cgroup
            .join_single_threaded()
            .map_err(|e| fail(e.to_string()))?;
    }
    if spec.new_namespace(Ns::Cgroup) {
        // Kernels without cgroup namespaces (before 4.6) show the host's paths, as Docker does.
        match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(fail(format!("cgroup namespace: {e}"))),
        }
    }
    crate::timing::mark("cgroup_joined");
    if let Some(fd) = ipc_fd {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWIPC)
            .map_err(|e| fail(format!("join the task's IPC namespace: {e}")))?;
    }
    // Before the root: net.* sysctls are written through /proc/sys of this namespace.
    if let Some(fd) = net_fd {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| fail(format!("join the container's network namespace: {e}")))?;
    }

    super::rootfs::setup(spec, &spec.etc_dir).map_err(fail)?;
    crate::timing::mark("rootfs_done");
    stdin_from_dev_null()?;
    if spec.new_namespace(Ns::Uts) {
        if let Some(h) = spec.oci.hostname() {
            nix::unistd::sethostname(h).map_err(|e| fail(format!("sethostname: {e}")))?;
        }
    }
    if spec.new_namespace(Ns::Network) {
        crate::net::loopback_up().map_err(|e| fail(format!("loopback: {e}")))?;
    }

    apply_rlimits(spec)?;
    // The user, from the container's own files (we are inside its root now).
    let ids = resolve_user(spec.user.as_deref())?;
    let env = process_env(spec.env(), &[], &ids);
    enter_working_dir(spec, true)?;

    let tty_master = match tty_sock {
        Some(sock) => Some(setup_tty(sock).map_err(fail)?),
        None => None,
    };
    drop(tty_master);

    let plan = ExecPlan::new(spec, spec.args(), env, ids)?;
    plan.drop_privileges()?;
    // A change of credentials clears the parent-death signal: set it again, so that a
    // container of another user does not outlive its shim either.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if spec.init {
        // PID 1 stays ours: it reaps and forwards signals; the command runs as its child.
        super::init::start(&[sync_fd]).map_err(fail)?;
    }
    crate::timing::mark("exec");
    plan.exec()
}

/// The shim blocks signals for its signalfd and Rust ignores SIGPIPE: neither may leak into
/// the container. Its own session: a terminal's Ctrl-C reaches skiff, which decides how to
/// stop. Death with the shim: a container process must not outlive its monitor unwatched.
pub(super) fn reset_process_state() -> Result<(), StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| fail(format!("reset signal mask: {e}")))?;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    nix::unistd::setsid().map_err(|e| fail(format!("setsid: {e}")))?;
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    Ok(())
}

/// The pipes to the shim become stdout and stderr.
pub(super) fn set_output(out_w: &OwnedFd, err_w: &OwnedFd) -> Result<(), StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    nix::unistd::dup2(out_w.as_raw_fd(), 1).map_err(|e| fail(format!("stdout: {e}")))?;
    nix::unistd::dup2(err_w.as_raw_fd(), 2).map_err(|e| fail(format!("stderr: {e}")))?;
    Ok(())
}

/// stdin is the container's own /dev/null, opened inside its root.
pub(super) fn stdin_from_dev_null() -> Result<(), StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    let devnull = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
        .map_err(|e| fail(format!("open /dev/null: {e}")))?;
    nix::unistd::dup2(devnull, 0).map_err(|e| fail(format!("stdin: {e}")))?;
    let _ = nix::unistd::close(devnull);
    Ok(())
}

/// The container's rlimits; one skiff cannot set is an error naming it and both numbers.
pub(super) fn apply_rlimits(spec: &ContainerSpec) -> Result<(), StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    for rl in spec.process().rlimits().iter().flatten() {
        let res = rlimit_resource(rl.typ())
            .ok_or_else(|| fail(format!("rlimit {} is not supported", rl.typ())))?;
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        if unsafe { libc::setrlimit(res as _, &lim) } != 0 {
            let e = std::io::Error::last_os_error();
            let mut host = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            unsafe { libc::getrlimit(res as _, &mut host) };
            return Err(fail(format!(
                "ulimit {}: soft {} hard {} (the host's hard limit is {}): {e}",
                ulimit_name(rl.typ()),
                rl.soft(),
                rl.hard(),
                host.rlim_max
            )));
        }
    }
    Ok(())
}

/// Resolves `user` against the container's /etc/passwd and /etc/group: call it inside the
/// container's root.
pub(super) fn resolve_user(user: Option<&str>) -> Result<user::Ids, StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    let passwd = user::read_etc_file("/etc/passwd").map_err(|e| fail(e.to_string()))?;
    let group = user::read_etc_file("/etc/group").map_err(|e| fail(e.to_string()))?;
    user::resolve(user, passwd.as_deref(), group.as_deref()).map_err(|e| fail(e.to_string()))
}

/// The process's environment: the container's, then `overrides` (`NAME=value`; a name
/// already set takes the new value), and `HOME` from passwd when neither sets it.
pub(super) fn process_env(base: &[String], overrides: &[String], ids: &user::Ids) -> Vec<String> {
    let name = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut env: Vec<String> = base.to_vec();
    for kv in overrides {
        let k = name(kv);
        match env.iter_mut().find(|e| name(e) == k) {
            Some(slot) => *slot = kv.clone(),
            None => env.push(kv.clone()),
        }
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", ids.home));
    }
    env
}

/// Enters the container's working directory (`create`: making it first, as at the start)
/// and checks that it lies inside the root: one reached through a leaked fd of the host
/// (CVE-2024-21626) has no path from this root, and getcwd says so.
pub(super) fn enter_working_dir(spec: &ContainerSpec, create: bool) -> Result<(), StartFailure> {
    let fail = |msg: String| StartFailure::new(125, msg);
    let cwd_s = spec.process().cwd().display().to_string();
    let cwd = Path::new(&cwd_s);
    if create {
        std::fs::create_dir_all(cwd)
            .map_err(|e| fail(format!("working directory {cwd_s}: {e}")))?;
    }
    nix::unistd::chdir(cwd)
        .map_err(|e| fail(format!("chdir to working directory {cwd_s}: {e}")))?;
    match nix::unistd::getcwd() {
        Ok(p) if p.starts_with("/") => Ok(()),
        _ => Err(fail(format!(
            "working directory {cwd_s} is outside the container"
        ))),
    }
}

/// The last steps before exec, everything that allocates or reads files done up front: the
/// capabilities, the compiled seccomp filter, the executable found in PATH, argv and envp.
pub(super) struct ExecPlan {
    capset: CapSet,
    filter: Option<Vec<libc::sock_filter>>,
    ids: user::Ids,
    no_new_privs: bool,
    exe: String,
    exe_c: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl ExecPlan {
    pub(super) fn new(
        spec: &ContainerSpec,
        args: &[String],
        env: Vec<String>,
        ids: user::Ids,
    ) -> Result<ExecPlan, StartFailure> {
        let fail = |msg: String| StartFailure::new(125, msg);
        let process = spec.process();
        let capset = match process
            .capabilities()
            .as_ref()
            .and_then(|c| c.bounding().as_ref())
        {
            Some(b) => {
                let names: Vec<String> = b
                    .iter()
                    .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
                    .collect();
                CapSet::from_names(&names).map_err(|e| fail(e.to_string()))?
            }
            None => CapSet::default(),
        };
        let filter = match spec.linux().and_then(|l| l.seccomp().as_ref()) {
            Some(profile) => Some(seccomp::compile(profile).map_err(|e| fail(e.to_string()))?),
            None => None,
        };

        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(super::spec::DEFAULT_PATH)
            .to_string();
        let arg0 = args
            .first()
            .ok_or_else(|| fail("no command given".to_string()))?;
        let exe = resolve_exe(arg0, &path_var)?;
        let c = |s: &str| {
            CString::new(s).map_err(|_| fail(format!("argument {s:?} contains a NUL byte")))
        };
        let argv: Vec<CString> = args.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let exe_c = c(&exe)?;
        Ok(ExecPlan {
            capset,
            filter,
            ids,
            no_new_privs: process.no_new_privileges() == Some(true),
            exe,
            exe_c,
            argv,
            envp,
        })
    }

    /// Bounding set (while CAP_SETPCAP is still held), user and groups, the final
    /// capability sets, no_new_privs.
    pub(super) fn drop_privileges(&self) -> Result<(), StartFailure> {
        let fail = |msg: String| StartFailure::new(125, msg);
        caps::drop_bounding(self.capset).map_err(fail)?;
        user::switch(&self.ids).map_err(fail)?;
        caps::apply(self.capset, self.ids.uid).map_err(fail)?;
        if self.no_new_privs && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail(format!(
                "no_new_privs: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Installs seccomp, marks every fd above stdio close-on-exec and execs; returns only
    /// why it could not (126 for a file that cannot run, 127 for one that is not there).
    pub(super) fn exec(self) -> Result<Never, StartFailure> {
        if let Some(prog) = &self.filter {
            seccomp::install(prog).map_err(|e| StartFailure::new(125, e.to_string()))?;
        }
        close_other_fds();
        let exe = self.exe;
        let err = nix::unistd::execve(&self.exe_c, &self.argv, &self.envp).unwrap_err();
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
}

fn rlimit_resource(t: oci_spec::runtime::PosixRlimitType) -> Option<u32> {
    crate::runtime::spec::ULIMITS
        .iter()
        .find(|(_, ty, _)| *ty == t)
        .map(|(_, _, r)| *r)
}

fn ulimit_name(t: oci_spec::runtime::PosixRlimitType) -> &'static str {
    crate::runtime::spec::ULIMITS
        .iter()
        .find(|(_, ty, _)| *ty == t)
        .map(|(n, _, _)| *n)
        .unwrap_or("?")
}

/// A pty from the container's own devpts: the slave becomes the controlling terminal and
/// stdio, the master goes to the shim over `sock`.
fn setup_tty(sock: OwnedFd) -> Result<OwnedFd, String> {
    let master = unsafe {
        libc::open(
            c"/dev/pts/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if master < 0 {
        return Err(format!(
            "open /dev/pts/ptmx: {}",
            std::io::Error::last_os_error()
        ));
    }
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(format!("unlock pty: {}", std::io::Error::last_os_error()));
    }
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(format!(
            "open pty peer: {}",
            std::io::Error::last_os_error()
        ));
    }
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for fd in 0..3 {
        if unsafe { libc::dup2(slave, fd) } < 0 {
            return Err(format!("pty stdio: {}", std::io::Error::last_os_error()));
        }
    }
    unsafe { libc::close(slave) };
    send_fd(sock.as_raw_fd(), master.as_raw_fd())
        .map_err(|e| format!("send the terminal to the shim: {e}"))?;
    Ok(master)
}

fn send_fd(sock: RawFd, fd: RawFd) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    }
    if unsafe { libc::sendmsg(sock, &msg, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    if unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) } <= 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no terminal received",
        ));
    }
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("no terminal received"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_and_home() {
        let ids = user::Ids {
            uid: 65534,
            gid: 65534,
            additional_gids: vec![],
            home: "/nonexistent".into(),
        };
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        assert_eq!(
            process_env(&base, &[], &ids),
            ["PATH=/bin", "A=1", "HOME=/nonexistent"]
        );
        let over = vec!["A=2=3".to_string(), "B=".to_string(), "HOME=/h".to_string()];
        assert_eq!(
            process_env(&base, &over, &ids),
            ["PATH=/bin", "A=2=3", "B=", "HOME=/h"]
        );
    }
}
