//! A minimal init for containers with `initProcessEnabled`, in the manner of tini and
//! docker-init: the container's first process forks; the child goes on to exec the
//! container's command, the parent stays as PID 1, reaps every process re-parented to it,
//! forwards the signals it receives to the command, and exits with the command's status.
//!
//! Why: a PID 1 gets no default signal actions (a command that never installs a SIGTERM
//! handler would ignore `docker stop`), and orphans of a PID namespace are re-parented to
//! PID 1, which must wait for them or they stay zombies.

use std::os::fd::RawFd;

/// Forks. In the child, returns Ok(()) so that the caller goes on to execve the container's
/// command (signal mask and dispositions restored to default in the child, as they were on
/// entry). The parent never returns: it renames itself "init" (prctl PR_SET_NAME), reaps
/// every child that is re-parented to it, forwards every catchable signal it receives
/// (everything except SIGCHLD, SIGKILL, SIGSTOP) to the main child, and when the main child
/// ends, exits with its status: exit(N) → N, killed by signal S → 128 + S. A main child that
/// is only stopped does not end it.
///
/// `close_fds`: fds the init must close after forking (e.g. the caller's error-report pipe,
/// so that the caller's parent sees EOF when the child execs). The init also closes every
/// close-on-exec fd above 2, as the exec it stands in for would have: it keeps only stdio.
///
/// The signal dispositions are never changed: every signal is blocked before the fork and
/// the init takes them with `rt_sigtimedwait` (a blocked signal is queued even when its
/// action is to ignore it, and even for a namespace's PID 1).
pub fn start(close_fds: &[RawFd]) -> Result<(), String> {
    let all: KernelSigset = [u64::MAX; KERNEL_SIGSET_WORDS];
    let mut entry: KernelSigset = [0; KERNEL_SIGSET_WORDS];
    set_mask(&all, Some(&mut entry)).map_err(|e| format!("init: block signals: {e}"))?;
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        let _ = set_mask(&entry, None);
        return Err(format!("init: fork: {e}"));
    }
    if pid == 0 {
        // Signals that arrived for the parent before the fork stay with it (a child starts
        // with nothing pending): the parent forwards them.
        set_mask(&entry, None).map_err(|e| format!("init: restore signal mask: {e}"))?;
        return Ok(());
    }
    run(pid, &all, close_fds)
}

/// The kernel's signal set: 64 signals, 128 on MIPS. The raw system calls are used rather
/// than the C library's wrappers, which leave out the signals the library keeps for itself
/// (32 and 33 with glibc, 32 to 34 with musl): unblocked, those would be swallowed by the
/// library's handler, or kill the init by their default action, instead of being forwarded.
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
))]
const KERNEL_SIGSET_WORDS: usize = 2;
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
)))]
const KERNEL_SIGSET_WORDS: usize = 1;
type KernelSigset = [u64; KERNEL_SIGSET_WORDS];

fn set_mask(set: &KernelSigset, old: Option<&mut KernelSigset>) -> std::io::Result<()> {
    let old = old.map_or(std::ptr::null_mut(), |o| o as *mut KernelSigset);
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            set as *const KernelSigset,
            old,
            std::mem::size_of::<KernelSigset>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The init's life: wait for signals, forward them, reap on SIGCHLD, exit with the main
/// child's status. Nothing allocates in the loop.
fn run(child: libc::pid_t, all: &KernelSigset, close_fds: &[RawFd]) -> ! {
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"init".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    for &fd in close_fds {
        unsafe { libc::close(fd) };
    }
    close_cloexec_fds();

    loop {
        let sig = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                all as *const KernelSigset,
                std::ptr::null_mut::<libc::siginfo_t>(),
                std::ptr::null::<libc::timespec>(),
                std::mem::size_of::<KernelSigset>(),
            )
        } as libc::c_int;
        if sig < 0 {
            // EINTR (a stop and continue of the init itself); nothing else can fail here.
            continue;
        }
        if sig != libc::SIGCHLD {
            // The main child may be gone already (a zombie until reaped): nothing to do.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        if let Some(code) = reap(child) {
            // `reap` waited for every child that had ended, orphans too. In a PID namespace
            // the kernel kills whatever is left when the init goes. `_exit`: the atexit
            // handlers and stdio buffers are the caller's, copied by fork.
            unsafe { libc::_exit(code) };
        }
    }
}

/// Reaps every child that has ended; the exit code for the main child when it was one of
/// them. Stopped and continued children are not reported (no WUNTRACED/WCONTINUED).
fn reap(child: libc::pid_t) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status = 0;
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            // 0: children left, none ended; -1: ECHILD.
            return code;
        }
        if pid == child {
            if libc::WIFEXITED(status) {
                code = Some(libc::WEXITSTATUS(status));
            } else if libc::WIFSIGNALED(status) {
                code = Some(128 + libc::WTERMSIG(status));
            }
        }
    }
}

/// Closes the fds above stdio that an exec would have closed.
fn close_cloexec_fds() {
    let cloexec = |fd: RawFd| {
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    };
    // /proc/self/fd when /proc is there (the directory's own fd is listed, but closed by
    // the time the list is walked: fcntl fails on it and it is skipped).
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        for fd in fds {
            if cloexec(fd) {
                unsafe { libc::close(fd) };
            }
        }
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 16) as RawFd
    } else {
        1024
    };
    for fd in 3..max {
        if cloexec(fd) {
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each test forks a process T that makes itself a child subreaper (standing in for a
    //! PID namespace's PID 1) and calls `start`; the code after `start` returns is the
    //! container's command M. T and M end with `_exit` and never return into the test
    //! harness; they stay away from its locks (no printing, no panics).

    use super::*;
    use std::time::{Duration, Instant};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn empty_sigset() -> libc::sigset_t {
        let mut s = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        unsafe {
            libc::sigemptyset(s.as_mut_ptr());
            s.assume_init()
        }
    }

    /// A pipe from the test's processes to the test; its write end is not close-on-exec in
    /// T, so that only `close_fds` takes it from the init.
    struct Pipe {
        r: RawFd,
        w: RawFd,
    }

    impl Pipe {
        fn new() -> Pipe {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            Pipe {
                r: fds[0],
                w: fds[1],
            }
        }

        /// Reads exactly `buf.len()` bytes, or fewer at EOF; panics after TIMEOUT.
        fn read(&self, buf: &mut [u8]) -> usize {
            let deadline = Instant::now() + TIMEOUT;
            let mut got = 0;
            while got < buf.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "timed out reading from the test processes");
                let mut pfd = libc::pollfd {
                    fd: self.r,
                    events: libc::POLLIN,
                    revents: 0,
                };
                if unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) } <= 0 {
                    continue;
                }
                let n =
                    unsafe { libc::read(self.r, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
                if n == 0 {
                    break;
                }
                if n > 0 {
                    got += n as usize;
                }
            }
            got
        }

        fn read_pid(&self) -> libc::pid_t {
            let mut b = [0u8; 4];
            assert_eq!(self.read(&mut b), 4);
            libc::pid_t::from_ne_bytes(b)
        }
    }

    impl Drop for Pipe {
        fn drop(&mut self) {
            unsafe {
                libc::close(self.r);
                if self.w >= 0 {
                    libc::close(self.w);
                }
            }
        }
    }

    fn write_pid(fd: RawFd, pid: libc::pid_t) {
        let b = pid.to_ne_bytes();
        unsafe { libc::write(fd, b.as_ptr().cast(), 4) };
    }

    /// Closes every fd above 2 but `keep` (so that T does not hold pipes of tests running
    /// in parallel).
    fn close_all_but(keep: RawFd) {
        for fd in 3..4096 {
            if fd != keep {
                unsafe { libc::close(fd) };
            }
        }
    }

    /// Forks T: a subreaper that runs `start(close)` and, in the returned child, `main`
    /// (which must not return). Returns T's pid; the pipe's write end is closed here.
    fn spawn_init(
        pipe: &mut Pipe,
        before: impl FnOnce(RawFd),
        main: impl FnOnce(RawFd),
    ) -> libc::pid_t {
        let w = pipe.w;
        let t = unsafe { libc::fork() };
        assert!(t >= 0);
        if t == 0 {
            close_all_but(w);
            unsafe {
                libc::fcntl(w, libc::F_SETFD, 0);
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            }
            before(w);
            if start(&[w]).is_err() {
                unsafe { libc::_exit(90) };
            }
            main(w);
            unsafe { libc::_exit(91) };
        }
        unsafe { libc::close(w) };
        pipe.w = -1;
        t
    }

    /// T's exit code (or 1000 + signal); kills it and panics after TIMEOUT.
    fn wait_exit(t: libc::pid_t) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut status = 0;
            let r = unsafe { libc::waitpid(t, &mut status, libc::WNOHANG) };
            assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
            if r == t {
                if libc::WIFEXITED(status) {
                    return libc::WEXITSTATUS(status);
                }
                if libc::WIFSIGNALED(status) {
                    return 1000 + libc::WTERMSIG(status);
                }
                continue;
            }
            if Instant::now() > deadline {
                unsafe { libc::kill(t, libc::SIGKILL) };
                unsafe { libc::waitpid(t, &mut status, 0) };
                panic!("init {t} did not exit");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn alive(t: libc::pid_t) -> bool {
        let mut status = 0;
        (unsafe { libc::waitpid(t, &mut status, libc::WNOHANG) }) == 0
    }

    /// The state letter in /proc/<pid>/stat, None once the process is gone.
    fn proc_state(pid: libc::pid_t) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].chars().next()
    }

    fn comm(pid: libc::pid_t) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
    }

    #[test]
    fn forwards_sigterm_and_reaps_orphans() {
        let mut pipe = Pipe::new();
        let t = spawn_init(
            &mut pipe,
            |_| {},
            |w| unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                // G1 forks G2 and exits at once: G2 is re-parented to the init, exits
                // shortly after and must be reaped by it.
                let g1 = libc::fork();
                if g1 == 0 {
                    let g2 = libc::fork();
                    if g2 == 0 {
                        libc::usleep(50_000);
                        libc::_exit(0);
                    }
                    write_pid(w, g2);
                    libc::_exit(0);
                }
                let mut st = 0;
                libc::waitpid(g1, &mut st, 0);
                write_pid(w, libc::getpid());
                libc::close(w);
                libc::sleep(30);
                libc::_exit(92);
            },
        );
        let g2 = pipe.read_pid();
        let m = pipe.read_pid();
        // Every writer is gone but M, which closed its end: the init closed its copy.
        assert_eq!(
            pipe.read(&mut [0u8; 1]),
            0,
            "the init kept a close_fds fd open"
        );

        let deadline = Instant::now() + TIMEOUT;
        while let Some(state) = proc_state(g2) {
            assert!(
                Instant::now() < deadline,
                "orphan {g2} not reaped (state {state})"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(alive(t), "the init exited before its main child");
        assert_eq!(proc_state(m), Some('S'));
        assert_eq!(comm(t), "init\n");

        unsafe { libc::kill(t, libc::SIGTERM) };
        assert_eq!(wait_exit(t), 128 + libc::SIGTERM);
    }

    #[test]
    fn exits_with_main_child_status_and_restores_mask() {
        let mut pipe = Pipe::new();
        let t = spawn_init(
            &mut pipe,
            |_| unsafe {
                // The entry mask the child must get back: SIGUSR1 blocked, nothing else.
                let mut set = empty_sigset();
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            },
            |_| unsafe {
                let mut cur = empty_sigset();
                libc::sigprocmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
                for sig in 1..libc::SIGRTMIN() {
                    if (libc::sigismember(&cur, sig) == 1) != (sig == libc::SIGUSR1) {
                        libc::_exit(100 + sig);
                    }
                }
                libc::_exit(7);
            },
        );
        assert_eq!(wait_exit(t), 7);
    }

    #[test]
    fn main_child_killed_by_signal() {
        let mut pipe = Pipe::new();
        let t = spawn_init(
            &mut pipe,
            |_| {},
            |_| unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
                libc::sleep(30);
            },
        );
        assert_eq!(wait_exit(t), 128 + libc::SIGKILL);
    }

    #[test]
    fn stopped_child_does_not_end_init() {
        let mut pipe = Pipe::new();
        let t = spawn_init(
            &mut pipe,
            |_| {},
            |w| unsafe {
                write_pid(w, libc::getpid());
                libc::close(w);
                libc::kill(libc::getpid(), libc::SIGSTOP);
                libc::_exit(3);
            },
        );
        let m = pipe.read_pid();
        let deadline = Instant::now() + TIMEOUT;
        while proc_state(m) != Some('T') {
            assert!(Instant::now() < deadline, "main child never stopped");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(alive(t), "the init exited when its main child stopped");
        // SIGCONT to the init reaches the child, which goes on and exits.
        unsafe { libc::kill(t, libc::SIGCONT) };
        assert_eq!(wait_exit(t), 3);
    }

    #[test]
    fn forwards_signals_ignored_by_default() {
        let mut pipe = Pipe::new();
        let t = spawn_init(
            &mut pipe,
            |_| {},
            |w| unsafe {
                let mut set = empty_sigset();
                libc::sigaddset(&mut set, libc::SIGWINCH);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                write_pid(w, libc::getpid());
                libc::close(w);
                let ts = libc::timespec {
                    tv_sec: 10,
                    tv_nsec: 0,
                };
                let mut got = 0;
                for _ in 0..2 {
                    match libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) {
                        s if s == libc::SIGWINCH => got |= 1,
                        s if s == libc::SIGUSR2 => got |= 2,
                        _ => libc::_exit(1),
                    }
                }
                libc::_exit(40 + got);
            },
        );
        pipe.read_pid();
        unsafe {
            libc::kill(t, libc::SIGWINCH);
            libc::kill(t, libc::SIGUSR2);
        }
        assert_eq!(wait_exit(t), 43);
    }

    #[test]
    fn forwards_signals_the_c_library_keeps() {
        // Signal 33 (glibc's SIGSETXID, within musl's reserved 32..=34) and a real-time one.
        let rt = libc::SIGRTMIN() + 3;
        let mut pipe = Pipe::new();
        let t = spawn_init(
            &mut pipe,
            |_| {},
            move |w| unsafe {
                let mut set: KernelSigset = [0; KERNEL_SIGSET_WORDS];
                set[0] = 1 << (33 - 1) | 1 << (rt - 1);
                if set_mask(&set, None).is_err() {
                    libc::_exit(1);
                }
                write_pid(w, libc::getpid());
                libc::close(w);
                let ts = libc::timespec {
                    tv_sec: 10,
                    tv_nsec: 0,
                };
                let mut got = 0;
                for _ in 0..2 {
                    let sig = libc::syscall(
                        libc::SYS_rt_sigtimedwait,
                        &set as *const KernelSigset,
                        std::ptr::null_mut::<libc::siginfo_t>(),
                        &ts as *const libc::timespec,
                        std::mem::size_of::<KernelSigset>(),
                    ) as libc::c_int;
                    match sig {
                        33 => got |= 1,
                        s if s == rt => got |= 2,
                        _ => libc::_exit(2),
                    }
                }
                libc::_exit(40 + got);
            },
        );
        pipe.read_pid();
        unsafe {
            libc::kill(t, 33);
            libc::kill(t, rt);
        }
        assert_eq!(wait_exit(t), 43);
    }
}
