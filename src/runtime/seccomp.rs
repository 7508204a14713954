//! Seccomp: skiff's default profile (the allowlist Docker users get, adjusted to the
//! container's capabilities), a compiler from an OCI seccomp profile to classic BPF for the
//! architecture skiff was built for, and the installer.
//!
//! The program checks `seccomp_data.arch` first (anything but the native audit arch is killed:
//! no 32-bit compat syscalls), then finds the syscall number with a balanced binary search
//! over ranges of numbers that share one decision, so a decision costs about log2(ranges)
//! comparisons. A syscall with argument rules gets its own range, whose leaf holds the rules
//! in profile order: the first rule whose conditions all hold decides, else the default
//! action. Arguments are compared as full 64-bit values (high and low 32-bit words).
//! On x86_64, x32 syscall numbers (bit 30 set) are above every known number and so land in
//! the last range, which always has the default action.
//!
//! Conditional jumps of classic BPF reach at most 255 instructions ahead: the assembler
//! works on symbolic labels and, where a target is farther, routes the jump through an
//! unconditional `BPF_JA` (32-bit offset) placed right after it.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::syscalls;
use libc::{BPF_JEQ as JEQ, BPF_JGE as JGE, BPF_JGT as JGT};

/// Why a profile cannot be compiled or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp action {action} for {what} is not supported")]
    UnsupportedAction { what: String, action: String },
    #[error("errnoRet {errno} for {what} is out of range (at most 65535)")]
    ErrnoOutOfRange { what: String, errno: u32 },
    #[error("argument index {index} for syscall {syscall} is out of range (0 to 5)")]
    ArgIndex { syscall: String, index: usize },
    #[error("seccomp is not supported on this architecture")]
    UnsupportedArch,
    #[error("seccomp program has {0} instructions, more than the kernel's limit of 4096")]
    TooLong(usize),
    #[error("seccomp program is empty")]
    Empty,
    #[error("seccomp(SECCOMP_SET_MODE_FILTER): {0}")]
    Install(#[source] std::io::Error),
}

// ---------------------------------------------------------------------------------------
// The default profile
// ---------------------------------------------------------------------------------------

/// Allowed for every container: the ordinary process syscalls of Docker's default profile,
/// as named on x86_64 and aarch64 (names a given architecture lacks are skipped when the
/// profile is compiled). io_uring is not allowed (as in moby since 25.0).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
    // Allowed by moby from kernel 4.8 on, when ptrace can no longer bypass seccomp.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    // x86_64 only (skipped on aarch64).
    "arch_prctl",
    "modify_ldt",
];

/// Syscalls a capability unlocks (capability names without "CAP_").
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("SYS_BOOT", &["reboot"]),
    ("SYS_CHROOT", &["chroot"]),
    (
        "SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("SYS_PACCT", &["acct"]),
    (
        "SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("SYS_RAWIO", &["iopl", "ioperm"]),
    ("SYS_TIME", &["settimeofday", "stime", "clock_settime"]),
    ("SYS_TTY_CONFIG", &["vhangup"]),
    (
        "SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("SYSLOG", &["syslog"]),
    ("BPF", &["bpf"]),
    ("PERFMON", &["perf_event_open"]),
];

/// clone(2) flags that create namespaces: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER
/// | NEWPID | NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// personality(2) values allowed: PER_LINUX, PER_LINUX32, UNAME26, UNAME26 | PER_LINUX32,
/// and 0xffffffff (query).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const AF_VSOCK: u64 = 40;

/// The default profile for a container whose effective capability set is `caps` (upper-case
/// names without "CAP_", e.g. "SYS_ADMIN"; a "CAP_" prefix and lower case are accepted).
///
/// Everything not allowed fails with EPERM; `clone3` fails with ENOSYS unless SYS_ADMIN is
/// held, so that the C library falls back to `clone`, whose namespace flags are then refused.
pub fn default_profile(caps: &[String]) -> LinuxSeccomp {
    let has = |cap: &str| {
        caps.iter().any(|c| {
            let c = c.trim();
            let bare = c
                .get(..4)
                .filter(|p| p.eq_ignore_ascii_case("CAP_"))
                .map_or(c, |_| &c[4..]);
            bare.eq_ignore_ascii_case(cap)
        })
    };
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut rules = vec![syscall(ALLOWED, allow, None, vec![])];

    // AF_VSOCK sockets are refused (as in moby). The domain is an int: compare the low
    // 32 bits only, so that garbage in the upper half cannot slip 40 past the rule.
    let vsock = arg(
        0,
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        0xffff_ffff,
        Some(AF_VSOCK),
    );
    rules.push(syscall(
        &["socket"],
        LinuxSeccompAction::ScmpActErrno,
        Some(libc::EPERM as u32),
        vec![vsock],
    ));
    rules.push(syscall(&["socket"], allow, None, vec![]));

    for &value in PERSONALITIES {
        let eq = arg(0, LinuxSeccompOperator::ScmpCmpEq, value, None);
        rules.push(syscall(&["personality"], allow, None, vec![eq]));
    }

    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(syscall(names, allow, None, vec![]));
        }
    }

    if !has("SYS_ADMIN") {
        let no_namespaces = arg(
            0,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
        );
        rules.push(syscall(&["clone"], allow, None, vec![no_namespaces]));
        rules.push(syscall(
            &["clone3"],
            LinuxSeccompAction::ScmpActErrno,
            Some(libc::ENOSYS as u32),
            vec![],
        ));
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(libc::EPERM as u32));
    profile.set_architectures(Some(vec![NATIVE_ARCH]));
    profile.set_syscalls(Some(rules));
    profile
}

fn syscall(
    names: &[&str],
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| n.to_string()).collect());
    rule.set_action(action);
    rule.set_errno_ret(errno_ret);
    if !args.is_empty() {
        rule.set_args(Some(args));
    }
    rule
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let mut builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if let Some(two) = value_two {
        builder = builder.value_two(two);
    }
    // Every field has a default: building cannot fail.
    builder
        .build()
        .expect("LinuxSeccompArg fields all have defaults")
}

// ---------------------------------------------------------------------------------------
// From the profile to resolved rules
// ---------------------------------------------------------------------------------------

/// AUDIT_ARCH_X86_64 or AUDIT_ARCH_AARCH64, the value of `seccomp_data.arch` for native calls.
#[cfg(target_arch = "x86_64")]
const NATIVE_AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_AUDIT_ARCH: u32 = 0;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: Arch = Arch::ScmpArchX86_64;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: Arch = Arch::ScmpArchAarch64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: Arch = Arch::ScmpArchNative;

/// Syscall numbers with this bit are the x32 ABI on x86_64; none is in the table.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const RET_TRAP: u32 = libc::SECCOMP_RET_TRAP;
const RET_ERRNO: u32 = libc::SECCOMP_RET_ERRNO;
const RET_TRACE: u32 = libc::SECCOMP_RET_TRACE;
const RET_LOG: u32 = libc::SECCOMP_RET_LOG;
const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

/// An argument comparison on the full 64-bit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`
    MaskedEq(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cond {
    index: u8,
    cmp: Cmp,
    value: u64,
}

/// Conditions (all must hold) and the return value of the filter when they do.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    conds: Vec<Cond>,
    action: u32,
}

/// A profile resolved for this architecture: the default return value, and per syscall
/// number the rules in profile order.
#[derive(Clone, Debug, Default)]
struct Filter {
    default: u32,
    syscalls: BTreeMap<u32, Vec<Rule>>,
}

fn action_value(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    what: &dyn Fn() -> String,
) -> Result<u32, SeccompError> {
    let data = |errno_ret: Option<u32>| {
        let errno = errno_ret.unwrap_or(libc::EPERM as u32);
        if errno > 0xffff {
            return Err(SeccompError::ErrnoOutOfRange {
                what: what(),
                errno,
            });
        }
        Ok(errno)
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data(errno_ret)?,
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data(errno_ret)?,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::UnsupportedAction {
                what: what(),
                action: "SCMP_ACT_NOTIFY".to_string(),
            })
        }
    })
}

fn resolve(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    if NATIVE_AUDIT_ARCH == 0 {
        return Err(SeccompError::UnsupportedArch);
    }
    let default = action_value(
        profile.default_action(),
        profile.default_errno_ret(),
        &|| "defaultAction".to_string(),
    )?;
    let mut filter = Filter {
        default,
        syscalls: BTreeMap::new(),
    };
    for entry in profile.syscalls().iter().flatten() {
        let what = || format!("syscall {}", entry.names().join(","));
        let action = action_value(entry.action(), entry.errno_ret(), &what)?;
        let mut conds = Vec::new();
        for a in entry.args().iter().flatten() {
            if a.index() > 5 {
                return Err(SeccompError::ArgIndex {
                    syscall: entry.names().join(","),
                    index: a.index(),
                });
            }
            let (cmp, value) = match a.op() {
                LinuxSeccompOperator::ScmpCmpEq => (Cmp::Eq, a.value()),
                LinuxSeccompOperator::ScmpCmpNe => (Cmp::Ne, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (Cmp::Lt, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (Cmp::Le, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (Cmp::Gt, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (Cmp::Ge, a.value()),
                // As libseccomp: `value` is the mask, `valueTwo` the expected result.
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    (Cmp::MaskedEq(a.value()), a.value_two().unwrap_or(0))
                }
            };
            conds.push(Cond {
                index: a.index() as u8,
                cmp,
                value,
            });
        }
        for name in entry.names() {
            // Names this architecture does not have are skipped, as libseccomp does.
            let Some(nr) = syscalls::number(name) else {
                continue;
            };
            let Ok(nr) = u32::try_from(nr) else { continue };
            filter.add(
                nr,
                Rule {
                    conds: conds.clone(),
                    action,
                },
            );
        }
    }
    Ok(filter)
}

impl Filter {
    fn add(&mut self, nr: u32, rule: Rule) {
        let rules = self.syscalls.entry(nr).or_default();
        // After an unconditional rule nothing else for this syscall can match.
        if !rules.last().is_some_and(|r| r.conds.is_empty()) {
            rules.push(rule);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Code generation
// ---------------------------------------------------------------------------------------

/// Compiles `profile` for the architecture skiff was built for (x86_64 or aarch64).
///
/// `architectures` other than the native one are ignored (a foreign `seccomp_data.arch` is
/// killed), as are names of syscalls this architecture lacks. Flags and listener fields are
/// not used; SCMP_ACT_NOTIFY is refused.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let filter = resolve(profile)?;
    generate(&filter)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

/// An instruction with symbolic jump targets (all jumps go forward).
#[derive(Clone, Copy, Debug)]
enum Ins {
    /// `A = seccomp_data[k..k+4]`
    Ld(u32),
    /// `A &= k`
    And(u32),
    Ret(u32),
    /// Conditional jump `op` (BPF_JEQ, BPF_JGT, BPF_JGE) on `A` against `k`.
    Jmp {
        op: u32,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Ja(Label),
    /// Marks the position of the next instruction; no code.
    Mark(Label),
}

#[derive(Default)]
struct Asm {
    ins: Vec<Ins>,
    labels: usize,
}

/// What a range of syscall numbers leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    Ret(u32),
    Rules(u32),
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn mark(&mut self, l: Label) {
        self.ins.push(Ins::Mark(l));
    }

    fn push(&mut self, i: Ins) {
        self.ins.push(i);
    }

    /// A conditional jump whose false branch is the next instruction.
    fn jmp_else_next(&mut self, op: u32, k: u32, jt: Label) {
        let next = self.label();
        self.push(Ins::Jmp {
            op,
            k,
            jt,
            jf: next,
        });
        self.mark(next);
    }

    /// A conditional jump whose true branch is the next instruction.
    fn jmp_then_next(&mut self, op: u32, k: u32, jf: Label) {
        let next = self.label();
        self.push(Ins::Jmp {
            op,
            k,
            jt: next,
            jf,
        });
        self.mark(next);
    }

    /// Jumps to `pass` when `cond` holds, to `fail` otherwise.
    fn cond(&mut self, c: &Cond, pass: Label, fail: Label) {
        let base = 16 + 8 * u32::from(c.index);
        let (lo, hi) = if cfg!(target_endian = "little") {
            (base, base + 4)
        } else {
            (base + 4, base)
        };
        let (v_hi, v_lo) = ((c.value >> 32) as u32, c.value as u32);
        match c.cmp {
            Cmp::Eq | Cmp::Ne => {
                let (equal, differ) = if c.cmp == Cmp::Eq {
                    (pass, fail)
                } else {
                    (fail, pass)
                };
                self.push(Ins::Ld(hi));
                self.jmp_then_next(JEQ, v_hi, differ);
                self.push(Ins::Ld(lo));
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: v_lo,
                    jt: equal,
                    jf: differ,
                });
            }
            Cmp::Gt | Cmp::Ge | Cmp::Lt | Cmp::Le => {
                // a > v (or a >= v): the high words decide unless they are equal.
                let (above, below) = match c.cmp {
                    Cmp::Gt | Cmp::Ge => (pass, fail),
                    _ => (fail, pass),
                };
                let op = match c.cmp {
                    Cmp::Gt | Cmp::Le => JGT,
                    _ => JGE,
                };
                self.push(Ins::Ld(hi));
                self.jmp_else_next(JGT, v_hi, above);
                self.jmp_then_next(JEQ, v_hi, below);
                self.push(Ins::Ld(lo));
                self.push(Ins::Jmp {
                    op,
                    k: v_lo,
                    jt: above,
                    jf: below,
                });
            }
            Cmp::MaskedEq(mask) => {
                let (m_hi, m_lo) = ((mask >> 32) as u32, mask as u32);
                if m_hi != 0 || v_hi != 0 {
                    self.push(Ins::Ld(hi));
                    if m_hi != u32::MAX {
                        self.push(Ins::And(m_hi));
                    }
                    self.jmp_then_next(JEQ, v_hi, fail);
                }
                self.push(Ins::Ld(lo));
                if m_lo != u32::MAX {
                    self.push(Ins::And(m_lo));
                }
                self.push(Ins::Jmp {
                    op: JEQ,
                    k: v_lo,
                    jt: pass,
                    jf: fail,
                });
            }
        }
    }

    /// The rules of one syscall: the first whose conditions all hold returns its action.
    fn rules(&mut self, rules: &[Rule], default: u32) {
        for rule in rules {
            if rule.conds.is_empty() {
                self.push(Ins::Ret(rule.action));
                return;
            }
            let next_rule = self.label();
            for (i, c) in rule.conds.iter().enumerate() {
                let pass = self.label();
                self.cond(c, pass, next_rule);
                self.mark(pass);
                if i + 1 == rule.conds.len() {
                    self.push(Ins::Ret(rule.action));
                }
            }
            self.mark(next_rule);
        }
        self.push(Ins::Ret(default));
    }

    /// Binary search over `ranges` (start of each range, sorted; a range ends where the
    /// next starts), with the syscall number in A.
    fn search(&mut self, ranges: &[(u32, Leaf)], filter: &Filter) {
        if let [(_, leaf)] = ranges {
            match *leaf {
                Leaf::Ret(ret) => self.push(Ins::Ret(ret)),
                Leaf::Rules(nr) => self.rules(&filter.syscalls[&nr], filter.default),
            }
            return;
        }
        let mid = ranges.len() / 2;
        let right = self.label();
        self.jmp_else_next(libc::BPF_JGE, ranges[mid].0, right);
        self.search(&ranges[..mid], filter);
        self.mark(right);
        self.search(&ranges[mid..], filter);
    }
}

/// Ranges of syscall numbers that share one decision, covering 0 to u32::MAX.
fn ranges(filter: &Filter) -> Vec<(u32, Leaf)> {
    let mut out: Vec<(u32, Leaf)> = Vec::new();
    let mut push = |start: u32, leaf: Leaf| {
        if let Some(&(_, last)) = out.last() {
            if matches!(last, Leaf::Ret(_)) && last == leaf {
                return;
            }
        }
        out.push((start, leaf));
    };
    let mut next = 0u32;
    for (&nr, rules) in &filter.syscalls {
        // x32 numbers cannot be reached with the native arch; they keep the default.
        if nr >= X32_SYSCALL_BIT {
            break;
        }
        if nr > next {
            push(next, Leaf::Ret(filter.default));
        }
        match rules.as_slice() {
            [] => push(nr, Leaf::Ret(filter.default)),
            [only] if only.conds.is_empty() => push(nr, Leaf::Ret(only.action)),
            _ => push(nr, Leaf::Rules(nr)),
        }
        next = nr + 1;
    }
    push(next, Leaf::Ret(filter.default));
    out
}

fn generate(filter: &Filter) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut asm = Asm::default();
    let native = asm.label();
    asm.push(Ins::Ld(4)); // seccomp_data.arch
    asm.jmp_else_next(libc::BPF_JEQ, NATIVE_AUDIT_ARCH, native);
    asm.push(Ins::Ret(RET_KILL_PROCESS));
    asm.mark(native);
    asm.push(Ins::Ld(0)); // seccomp_data.nr
    asm.search(&ranges(filter), filter);
    assemble(asm)
}

/// Resolves labels, inserting `BPF_JA` trampolines where a conditional jump cannot reach.
fn assemble(asm: Asm) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut ins = asm.ins;
    let mut labels = asm.labels;
    loop {
        let pos = positions(&ins, labels);
        let mut far: Vec<(usize, bool, bool)> = Vec::new();
        let mut pc = 0usize;
        for (i, x) in ins.iter().enumerate() {
            match *x {
                Ins::Mark(_) => continue,
                Ins::Jmp { jt, jf, .. } => {
                    let too_far = |l: Label| pos[l.0] - (pc + 1) > u8::MAX as usize;
                    if too_far(jt) || too_far(jf) {
                        far.push((i, too_far(jt), too_far(jf)));
                    }
                }
                _ => {}
            }
            pc += 1;
        }
        if pc > libc::BPF_MAXINSNS as usize {
            return Err(SeccompError::TooLong(pc));
        }
        if far.is_empty() {
            break;
        }
        for &(i, fix_t, fix_f) in far.iter().rev() {
            let Ins::Jmp {
                op,
                k,
                mut jt,
                mut jf,
            } = ins[i]
            else {
                unreachable!("only conditional jumps are relaxed")
            };
            let mut trampolines = Vec::new();
            for (fix, target) in [(fix_t, &mut jt), (fix_f, &mut jf)] {
                if fix {
                    let t = Label(labels);
                    labels += 1;
                    trampolines.push(Ins::Mark(t));
                    trampolines.push(Ins::Ja(*target));
                    *target = t;
                }
            }
            ins[i] = Ins::Jmp { op, k, jt, jf };
            ins.splice(i + 1..i + 1, trampolines);
        }
    }

    let pos = positions(&ins, labels);
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut out = Vec::with_capacity(ins.len());
    for x in &ins {
        let pc = out.len();
        let offset = |l: Label| pos[l.0] - (pc + 1);
        out.push(match *x {
            Ins::Mark(_) => continue,
            Ins::Ld(k) => stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, k),
            Ins::And(k) => stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, k),
            Ins::Ret(k) => stmt(libc::BPF_RET | libc::BPF_K, k),
            Ins::Ja(l) => stmt(libc::BPF_JMP | libc::BPF_JA, offset(l) as u32),
            Ins::Jmp { op, k, jt, jf } => libc::sock_filter {
                code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
                jt: offset(jt) as u8,
                jf: offset(jf) as u8,
                k,
            },
        });
    }
    Ok(out)
}

/// The instruction index of every label. Labels are only ever jumped to forwards.
fn positions(ins: &[Ins], labels: usize) -> Vec<usize> {
    let mut pos = vec![usize::MAX; labels];
    let mut pc = 0;
    for x in ins {
        match *x {
            Ins::Mark(l) => pos[l.0] = pc,
            _ => pc += 1,
        }
    }
    pos
}

// ---------------------------------------------------------------------------------------
// Installation
// ---------------------------------------------------------------------------------------

/// Installs `prog` for the calling thread: `seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)`.
/// Needs no_new_privs (set by the caller) or CAP_SYS_ADMIN. Does not allocate, so it may run
/// in a child forked from a multi-threaded process.
pub fn install(prog: &[libc::sock_filter]) -> Result<(), SeccompError> {
    if prog.is_empty() {
        return Err(SeccompError::Empty);
    }
    if prog.len() > libc::BPF_MAXINSNS as usize {
        return Err(SeccompError::TooLong(prog.len()));
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points to `prog`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            0 as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Install(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    /// Docker's default capability set (containers.md, "Runtime defaults").
    fn default_caps() -> Vec<String> {
        [
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "MKNOD",
            "NET_RAW",
            "SETGID",
            "SETUID",
            "SETFCAP",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "KILL",
            "AUDIT_WRITE",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect()
    }

    fn with(extra: &[&str]) -> Vec<String> {
        let mut caps = default_caps();
        caps.extend(extra.iter().map(|c| c.to_string()));
        caps
    }

    fn nr(name: &str) -> u32 {
        let nr = syscalls::number(name).unwrap_or_else(|| panic!("no syscall {name}"));
        nr as u32
    }

    /// A `struct seccomp_data`: nr, arch, instruction_pointer, args[6].
    fn data(nr: u32, arch: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_ne_bytes());
        d[4..8].copy_from_slice(&arch.to_ne_bytes());
        d[8..16].copy_from_slice(&0x7f00_dead_beefu64.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        d
    }

    /// Checks what the kernel's checker checks for the instructions we emit.
    fn validate(prog: &[libc::sock_filter]) {
        assert!(
            !prog.is_empty() && prog.len() <= 4096,
            "length {}",
            prog.len()
        );
        for (pc, i) in prog.iter().enumerate() {
            let code = u32::from(i.code);
            if code & 0x07 == libc::BPF_JMP {
                let (a, b) = if code == libc::BPF_JMP | libc::BPF_JA {
                    (i.k as usize, i.k as usize)
                } else {
                    (usize::from(i.jt), usize::from(i.jf))
                };
                assert!(
                    pc + 1 + a.max(b) < prog.len(),
                    "jump out of the program at {pc}"
                );
            }
        }
        let last = prog[prog.len() - 1];
        assert_eq!(u32::from(last.code), libc::BPF_RET | libc::BPF_K);
    }

    /// A classic BPF interpreter for the instructions seccomp filters use. Returns the
    /// filter's value and the number of instructions executed.
    fn run(prog: &[libc::sock_filter], d: &[u8; 64]) -> (u32, usize) {
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            steps += 1;
            let code = u32::from(i.code);
            let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                let k = i.k as usize;
                assert!(k & 3 == 0 && k + 4 <= 64, "bad load offset {k}");
                a = u32::from_ne_bytes(d[k..k + 4].try_into().unwrap());
            } else if code == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K {
                a &= i.k;
            } else if code == libc::BPF_RET | libc::BPF_K {
                return (i.k, steps);
            } else if code == libc::BPF_JMP | libc::BPF_JA {
                pc += i.k as usize;
            } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                pc += jump(a == i.k);
            } else if code == libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K {
                pc += jump(a > i.k);
            } else if code == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K {
                pc += jump(a >= i.k);
            } else if code == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K {
                pc += jump(a & i.k != 0);
            } else {
                panic!("unexpected opcode {code:#x} at {}", pc - 1);
            }
        }
    }

    fn decide(prog: &[libc::sock_filter], name: &str, args: [u64; 6]) -> u32 {
        run(prog, &data(nr(name), NATIVE_AUDIT_ARCH, args)).0
    }

    fn default_prog(caps: &[String]) -> Vec<libc::sock_filter> {
        let prog = compile(&default_profile(caps)).expect("default profile compiles");
        validate(&prog);
        prog
    }

    /// What the filter must decide, evaluated directly on the resolved rules.
    fn reference(f: &Filter, nr: u32, args: &[u64; 6]) -> u32 {
        let holds = |c: &Cond| {
            let a = args[usize::from(c.index)];
            match c.cmp {
                Cmp::Eq => a == c.value,
                Cmp::Ne => a != c.value,
                Cmp::Lt => a < c.value,
                Cmp::Le => a <= c.value,
                Cmp::Gt => a > c.value,
                Cmp::Ge => a >= c.value,
                Cmp::MaskedEq(mask) => a & mask == c.value,
            }
        };
        if nr < X32_SYSCALL_BIT {
            for rule in f.syscalls.get(&nr).into_iter().flatten() {
                if rule.conds.iter().all(holds) {
                    return rule.action;
                }
            }
        }
        f.default
    }

    fn profile(default: LinuxSeccompAction, rules: Vec<LinuxSyscall>) -> LinuxSeccomp {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(default);
        p.set_syscalls(Some(rules));
        p
    }

    #[test]
    fn default_profile_allows_ordinary_syscalls() {
        let prog = default_prog(&default_caps());
        for name in [
            "read",
            "write",
            "openat",
            "close",
            "mmap",
            "execve",
            "futex",
            "exit_group",
            "getpid",
            "wait4",
            "epoll_pwait",
            "rt_sigreturn",
            "chroot",
            "ptrace",
            "fchmodat2",
        ] {
            assert_eq!(decide(&prog, name, [0; 6]), RET_ALLOW, "{name}");
        }
        let af_inet = libc::AF_INET as u64;
        assert_eq!(decide(&prog, "socket", [af_inet, 1, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn default_profile_denies_privileged_syscalls_with_eperm() {
        let prog = default_prog(&default_caps());
        for name in [
            "unshare",
            "mount",
            "umount2",
            "setns",
            "pivot_root",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "open_by_handle_at",
            "fsopen",
            "reboot",
            "init_module",
            "io_uring_setup",
            "swapon",
            "syslog",
            "kcmp",
        ] {
            assert_eq!(decide(&prog, name, [0; 6]), EPERM, "{name}");
        }
    }

    #[test]
    fn sys_admin_unlocks_mount_and_unshare_but_not_keyctl() {
        let prog = default_prog(&with(&["SYS_ADMIN"]));
        for name in ["unshare", "mount", "umount2", "setns", "fsopen", "bpf"] {
            assert_eq!(decide(&prog, name, [0; 6]), RET_ALLOW, "{name}");
        }
        for name in ["keyctl", "kexec_load", "add_key", "reboot"] {
            assert_eq!(decide(&prog, name, [0; 6]), EPERM, "{name}");
        }
        // "CAP_" prefixes and lower case are accepted too.
        let prog = default_prog(&["cap_sys_admin".to_string()]);
        assert_eq!(decide(&prog, "mount", [0; 6]), RET_ALLOW);
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let without = default_prog(&[]);
        for (cap, name) in [
            ("SYS_CHROOT", "chroot"),
            ("SYS_BOOT", "reboot"),
            ("SYS_MODULE", "finit_module"),
            ("SYS_PACCT", "acct"),
            ("SYS_PTRACE", "kcmp"),
            ("SYS_TIME", "clock_settime"),
            ("SYS_TTY_CONFIG", "vhangup"),
            ("SYS_NICE", "mbind"),
            ("SYSLOG", "syslog"),
            ("BPF", "bpf"),
            ("PERFMON", "perf_event_open"),
            ("DAC_READ_SEARCH", "open_by_handle_at"),
        ] {
            assert_eq!(decide(&without, name, [0; 6]), EPERM, "{name}");
            let prog = default_prog(&[cap.to_string()]);
            assert_eq!(decide(&prog, name, [0; 6]), RET_ALLOW, "{name} with {cap}");
            assert_eq!(decide(&prog, "keyctl", [0; 6]), EPERM);
        }
    }

    #[test]
    fn clone_with_namespace_flags_is_denied() {
        let prog = default_prog(&default_caps());
        let fork = (libc::SIGCHLD | libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(decide(&prog, "clone", [fork, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(decide(&prog, "clone", [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            let flags = fork | flag as u64;
            assert_eq!(
                decide(&prog, "clone", [flags, 0, 0, 0, 0, 0]),
                EPERM,
                "{flag:#x}"
            );
        }
        let admin = default_prog(&with(&["SYS_ADMIN"]));
        let newuser = fork | libc::CLONE_NEWUSER as u64;
        assert_eq!(decide(&admin, "clone", [newuser, 0, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn clone3_fails_with_enosys_unless_sys_admin() {
        let prog = default_prog(&default_caps());
        assert_eq!(decide(&prog, "clone3", [0; 6]), ENOSYS);
        let admin = default_prog(&with(&["SYS_ADMIN"]));
        assert_eq!(decide(&admin, "clone3", [0; 6]), RET_ALLOW);
    }

    #[test]
    fn personality_allows_only_known_values() {
        let prog = default_prog(&default_caps());
        for value in [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                decide(&prog, "personality", [value, 0, 0, 0, 0, 0]),
                RET_ALLOW
            );
        }
        for value in [0x1234, 0x0040_0000, 0x1_0000_0000, u64::MAX] {
            let got = decide(&prog, "personality", [value, 0, 0, 0, 0, 0]);
            assert_eq!(got, EPERM, "{value:#x}");
        }
    }

    #[test]
    fn socket_vsock_is_denied_on_the_low_32_bits() {
        let prog = default_prog(&default_caps());
        let vsock = libc::AF_VSOCK as u64;
        assert_eq!(vsock, AF_VSOCK);
        assert_eq!(decide(&prog, "socket", [vsock, 1, 0, 0, 0, 0]), EPERM);
        let sneaky = (1 << 32) | vsock;
        assert_eq!(decide(&prog, "socket", [sneaky, 1, 0, 0, 0, 0]), EPERM);
        let unix = libc::AF_UNIX as u64;
        assert_eq!(decide(&prog, "socket", [unix, 1, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn foreign_architecture_is_killed() {
        let prog = default_prog(&default_caps());
        let other = if NATIVE_AUDIT_ARCH == AUDIT_ARCH_X86_64 {
            AUDIT_ARCH_AARCH64
        } else {
            AUDIT_ARCH_X86_64
        };
        for arch in [AUDIT_ARCH_I386, other, 0] {
            let (ret, steps) = run(&prog, &data(nr("read"), arch, [0; 6]));
            assert_eq!(ret, RET_KILL_PROCESS, "arch {arch:#x}");
            assert_eq!(steps, 3);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscalls_get_the_default_action() {
        let prog = default_prog(&default_caps());
        for n in [0, 1, 59, 63, 0x3fff_ffff, 0xbfff_ffff, u32::MAX] {
            let x32 = X32_SYSCALL_BIT | n;
            let (ret, _) = run(&prog, &data(x32, AUDIT_ARCH_X86_64, [0; 6]));
            assert_eq!(ret, EPERM, "{x32:#x}");
        }
        // With a default-allow profile the default is to allow, even where the x86_64
        // number has a rule.
        let deny_uname = syscall(&["uname"], LinuxSeccompAction::ScmpActErrno, None, vec![]);
        let prog = compile(&profile(LinuxSeccompAction::ScmpActAllow, vec![deny_uname])).unwrap();
        let uname = nr("uname");
        let (ret, _) = run(&prog, &data(uname, AUDIT_ARCH_X86_64, [0; 6]));
        assert_eq!(ret, EPERM);
        let (ret, _) = run(
            &prog,
            &data(X32_SYSCALL_BIT | uname, AUDIT_ARCH_X86_64, [0; 6]),
        );
        assert_eq!(ret, RET_ALLOW);
    }

    #[test]
    fn arguments_are_compared_on_all_64_bits() {
        let eq = arg(1, LinuxSeccompOperator::ScmpCmpEq, 0x1_0000_0001, None);
        let rule = syscall(&["fcntl"], LinuxSeccompAction::ScmpActAllow, None, vec![eq]);
        let prog = compile(&profile(LinuxSeccompAction::ScmpActErrno, vec![rule])).unwrap();
        validate(&prog);
        assert_eq!(
            decide(&prog, "fcntl", [0, 0x1_0000_0001, 0, 0, 0, 0]),
            RET_ALLOW
        );
        for value in [0x1, 0x2_0000_0001, 0x1_0000_0000, 0x1_0000_0002, u64::MAX] {
            let got = decide(&prog, "fcntl", [0, value, 0, 0, 0, 0]);
            assert_eq!(got, EPERM, "{value:#x}");
        }
        // The argument index matters.
        assert_eq!(
            decide(&prog, "fcntl", [0x1_0000_0001, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(decide(&prog, "read", [0, 0x1_0000_0001, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn every_operator_agrees_with_the_reference() {
        let edges: [u64; 12] = [
            0,
            1,
            2,
            0x7fff_ffff,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x2_0000_0000,
            0x2_0000_0001,
            0x8000_0000_0000_0000,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ops = [
            LinuxSeccompOperator::ScmpCmpEq,
            LinuxSeccompOperator::ScmpCmpNe,
            LinuxSeccompOperator::ScmpCmpLt,
            LinuxSeccompOperator::ScmpCmpLe,
            LinuxSeccompOperator::ScmpCmpGt,
            LinuxSeccompOperator::ScmpCmpGe,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        ];
        for (i, &op) in ops.iter().enumerate() {
            for (j, &value) in edges.iter().enumerate() {
                let index = (i + j) % 6;
                // For MASKED_EQ, `value` is the mask and the expected value is masked edges.
                let two = edges[(j * 5 + 3) % edges.len()] & value;
                let a = arg(index, op, value, Some(two));
                let rule = syscall(&["ioctl"], LinuxSeccompAction::ScmpActLog, None, vec![a]);
                let p = profile(LinuxSeccompAction::ScmpActTrap, vec![rule]);
                let filter = resolve(&p).unwrap();
                let prog = generate(&filter).unwrap();
                validate(&prog);
                for &x in &edges {
                    let mut args = [0x5555_5555_5555_5555u64; 6];
                    args[index] = x;
                    let want = reference(&filter, nr("ioctl"), &args);
                    let got = run(&prog, &data(nr("ioctl"), NATIVE_AUDIT_ARCH, args)).0;
                    assert_eq!(got, want, "{op:?} {value:#x} ({two:#x}) on {x:#x}");
                }
            }
        }
    }

    #[test]
    fn rules_for_one_syscall_are_tried_in_order() {
        use LinuxSeccompOperator::*;
        let rules = vec![
            // Both conditions must hold.
            syscall(
                &["lseek"],
                LinuxSeccompAction::ScmpActErrno,
                Some(5),
                vec![arg(0, ScmpCmpEq, 3, None), arg(2, ScmpCmpGe, 1, None)],
            ),
            syscall(
                &["lseek"],
                LinuxSeccompAction::ScmpActErrno,
                Some(6),
                vec![arg(0, ScmpCmpEq, 3, None)],
            ),
            syscall(
                &["lseek", "read"],
                LinuxSeccompAction::ScmpActKillProcess,
                None,
                vec![arg(1, ScmpCmpGt, 100, None)],
            ),
            syscall(&["lseek"], LinuxSeccompAction::ScmpActAllow, None, vec![]),
            // Unreachable: the unconditional rule above decides first.
            syscall(&["lseek"], LinuxSeccompAction::ScmpActKill, None, vec![]),
        ];
        let prog = compile(&profile(LinuxSeccompAction::ScmpActErrno, rules)).unwrap();
        validate(&prog);
        assert_eq!(decide(&prog, "lseek", [3, 0, 2, 0, 0, 0]), RET_ERRNO | 5);
        assert_eq!(decide(&prog, "lseek", [3, 500, 0, 0, 0, 0]), RET_ERRNO | 6);
        assert_eq!(
            decide(&prog, "lseek", [4, 500, 0, 0, 0, 0]),
            RET_KILL_PROCESS
        );
        assert_eq!(decide(&prog, "lseek", [4, 5, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            decide(&prog, "read", [4, 500, 0, 0, 0, 0]),
            RET_KILL_PROCESS
        );
        assert_eq!(decide(&prog, "read", [4, 5, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn actions_map_to_seccomp_return_values() {
        use LinuxSeccompAction::*;
        let cases = [
            (ScmpActAllow, None, RET_ALLOW),
            (ScmpActErrno, None, EPERM),
            (ScmpActErrno, Some(13), RET_ERRNO | 13),
            (ScmpActKill, None, RET_KILL_THREAD),
            (ScmpActKillThread, None, RET_KILL_THREAD),
            (ScmpActKillProcess, None, RET_KILL_PROCESS),
            (ScmpActTrap, None, RET_TRAP),
            (ScmpActLog, None, RET_LOG),
            (ScmpActTrace, Some(7), RET_TRACE | 7),
        ];
        for (action, errno, want) in cases {
            let rule = syscall(&["getppid"], action, errno, vec![]);
            let mut p = profile(ScmpActErrno, vec![rule]);
            p.set_default_errno_ret(Some(libc::EACCES as u32));
            let prog = compile(&p).unwrap();
            assert_eq!(decide(&prog, "getppid", [0; 6]), want, "{action:?}");
            let default = RET_ERRNO | libc::EACCES as u32;
            assert_eq!(decide(&prog, "getpid", [0; 6]), default, "{action:?}");
        }
    }

    #[test]
    fn unknown_names_and_foreign_architectures_are_ignored() {
        let allow = LinuxSeccompAction::ScmpActAllow;
        let plain = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(&["read", "write"], allow, None, vec![])],
        );
        let mut noisy = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![
                syscall(
                    &["read", "no_such_syscall", "chown32", "write"],
                    allow,
                    None,
                    vec![],
                ),
                syscall(&["_llseek"], LinuxSeccompAction::ScmpActKill, None, vec![]),
            ],
        );
        noisy.set_architectures(Some(vec![
            Arch::ScmpArchX86,
            Arch::ScmpArchArm,
            NATIVE_ARCH,
        ]));
        let a = compile(&plain).unwrap();
        let b = compile(&noisy).unwrap();
        let words = |p: &[libc::sock_filter]| -> Vec<(u16, u8, u8, u32)> {
            p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
        };
        assert_eq!(words(&a), words(&b));
    }

    #[test]
    fn invalid_profiles_are_refused_with_the_syscall_named() {
        let notify = syscall(&["openat"], LinuxSeccompAction::ScmpActNotify, None, vec![]);
        let err = compile(&profile(LinuxSeccompAction::ScmpActAllow, vec![notify])).unwrap_err();
        assert!(matches!(err, SeccompError::UnsupportedAction { .. }));
        assert_eq!(
            err.to_string(),
            "seccomp action SCMP_ACT_NOTIFY for syscall openat is not supported"
        );

        let a = arg(6, LinuxSeccompOperator::ScmpCmpEq, 1, None);
        let bad = syscall(
            &["read", "write"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![a],
        );
        let err = compile(&profile(LinuxSeccompAction::ScmpActErrno, vec![bad])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument index 6 for syscall read,write is out of range (0 to 5)"
        );

        let bad = syscall(
            &["read"],
            LinuxSeccompAction::ScmpActErrno,
            Some(70000),
            vec![],
        );
        let err = compile(&profile(LinuxSeccompAction::ScmpActAllow, vec![bad])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "errnoRet 70000 for syscall read is out of range (at most 65535)"
        );

        let mut p = profile(LinuxSeccompAction::ScmpActNotify, vec![]);
        let err = compile(&p).unwrap_err();
        assert!(err.to_string().contains("defaultAction"), "{err}");
        p.set_default_action(LinuxSeccompAction::ScmpActErrno);
        p.set_default_errno_ret(Some(1 << 16));
        let err = compile(&p).unwrap_err();
        assert!(err.to_string().contains("defaultAction"), "{err}");
    }

    /// 600 unconditionally allowed syscalls, none adjacent (so no range merges), with
    /// assorted actions and argument rules: the tree spans thousands of instructions and
    /// needs trampolines; the interpreter must agree with the rules for every number.
    #[test]
    fn large_profile_keeps_every_jump_in_range() {
        let mut filter = Filter {
            default: EPERM,
            syscalls: BTreeMap::new(),
        };
        let actions = [RET_ALLOW, RET_LOG, RET_ERRNO | 13, RET_TRAP];
        for i in 0..600u32 {
            let nr = 2 * i + 1;
            let action = actions[(i % 4) as usize];
            if i % 37 == 0 {
                let conds = vec![
                    Cond {
                        index: (i % 6) as u8,
                        cmp: Cmp::MaskedEq(0xff00_0000_0000_00ff),
                        value: 0x0100_0000_0000_0002,
                    },
                    Cond {
                        index: ((i + 1) % 6) as u8,
                        cmp: Cmp::Lt,
                        value: 0x1_0000_0000,
                    },
                ];
                filter.add(
                    nr,
                    Rule {
                        conds,
                        action: RET_KILL_PROCESS,
                    },
                );
                let ne = Cond {
                    index: 0,
                    cmp: Cmp::Ne,
                    value: 7,
                };
                filter.add(
                    nr,
                    Rule {
                        conds: vec![ne],
                        action: RET_ERRNO | 99,
                    },
                );
            }
            filter.add(
                nr,
                Rule {
                    conds: vec![],
                    action,
                },
            );
        }
        let prog = generate(&filter).unwrap();
        validate(&prog);
        let trampolines = prog
            .iter()
            .filter(|i| u32::from(i.code) == libc::BPF_JMP | libc::BPF_JA)
            .count();
        println!("{} instructions, {trampolines} trampolines", prog.len());
        assert!(prog.len() > 1200 && trampolines > 0);

        let samples: [[u64; 6]; 4] = [
            [0; 6],
            [7, 0, 0, 0, 0, 0],
            [0x0100_0000_0000_0002; 6],
            [0x01ff_ffff_ffff_ff02, 5, 5, 5, 5, 5],
        ];
        let mut max_steps = 0;
        for nr in 0..1300u32 {
            for args in &samples {
                let (got, steps) = run(&prog, &data(nr, NATIVE_AUDIT_ARCH, *args));
                assert_eq!(got, reference(&filter, nr, args), "nr {nr} args {args:x?}");
                max_steps = max_steps.max(steps);
            }
        }
        println!("at most {max_steps} instructions per decision");
        assert!(max_steps < 40, "{max_steps}");
    }

    /// Every syscall this architecture knows, through names, half of them with rules.
    #[test]
    fn every_known_syscall_by_name() {
        let mut rules = Vec::new();
        for (i, (name, _)) in syscalls::all().enumerate() {
            let action = if i % 3 == 0 {
                LinuxSeccompAction::ScmpActLog
            } else {
                LinuxSeccompAction::ScmpActAllow
            };
            let args = if i % 2 == 0 {
                vec![arg(i % 6, LinuxSeccompOperator::ScmpCmpLe, i as u64, None)]
            } else {
                vec![]
            };
            rules.push(syscall(&[name], action, None, args));
        }
        let p = profile(LinuxSeccompAction::ScmpActKillProcess, rules);
        let filter = resolve(&p).unwrap();
        let prog = compile(&p).unwrap();
        validate(&prog);
        println!(
            "{} syscalls, {} instructions",
            filter.syscalls.len(),
            prog.len()
        );
        for (_, n) in syscalls::all() {
            for x in [0u64, 100, 200, 1 << 40] {
                let args = [x; 6];
                let got = run(&prog, &data(n as u32, NATIVE_AUDIT_ARCH, args)).0;
                assert_eq!(got, reference(&filter, n as u32, &args), "nr {n}");
            }
        }
    }

    #[test]
    fn default_profile_is_small() {
        for caps in [
            vec![],
            default_caps(),
            with(&["SYS_ADMIN", "SYS_PTRACE", "SYS_NICE"]),
        ] {
            let prog = default_prog(&caps);
            let mut max_steps = 0;
            for n in 0..1024 {
                max_steps = max_steps.max(run(&prog, &data(n, NATIVE_AUDIT_ARCH, [0; 6])).1);
            }
            println!(
                "default profile, {} capabilities: {} instructions, at most {max_steps} per decision",
                caps.len(),
                prog.len()
            );
            assert!(prog.len() < 1024, "{}", prog.len());
            assert!(max_steps < 32, "{max_steps}");
        }
    }

    #[test]
    fn install_refuses_empty_and_oversized_programs() {
        assert!(matches!(install(&[]), Err(SeccompError::Empty)));
        let ret = libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        };
        let huge = vec![ret; 4097];
        assert!(matches!(install(&huge), Err(SeccompError::TooLong(4097))));
    }

    /// Forks; the child sets no_new_privs, installs `prog`, runs `check` and exits with its
    /// result. Only async-signal-safe work happens in the child (`prog` is built first).
    fn in_child(prog: &[libc::sock_filter], check: fn() -> i32) -> i32 {
        // SAFETY: the child only makes raw syscalls and leaves with _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(100);
                }
                if install(prog).is_err() {
                    libc::_exit(101);
                }
                libc::_exit(check());
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "child status {status:#x}");
            libc::WEXITSTATUS(status)
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn installed_filter_denies_uname_in_a_child() {
        let rule = syscall(&["uname"], LinuxSeccompAction::ScmpActErrno, None, vec![]);
        let prog = compile(&profile(LinuxSeccompAction::ScmpActAllow, vec![rule])).unwrap();
        let code = in_child(&prog, || {
            let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::syscall(libc::SYS_uname, &mut buf as *mut libc::utsname) };
            if rc == -1 && errno() == libc::EPERM {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }

    /// The kernel's checker accepts a program with trampolines, and it decides as ours does.
    #[test]
    fn installed_large_filter_in_a_child() {
        // Numbers from 1000 on are no syscall on x86_64 or aarch64: the filter answers.
        let mut filter = Filter {
            default: RET_ALLOW,
            syscalls: BTreeMap::new(),
        };
        for i in 0..600u32 {
            let action = RET_ERRNO | ((1 + i % 2) * libc::EACCES as u32);
            filter.add(
                1000 + 2 * i,
                Rule {
                    conds: vec![],
                    action,
                },
            );
        }
        let prog = generate(&filter).unwrap();
        assert!(prog
            .iter()
            .any(|i| u32::from(i.code) == libc::BPF_JMP | libc::BPF_JA));
        let code = in_child(&prog, || unsafe {
            if libc::syscall(libc::SYS_getpid) <= 0 {
                return 1;
            }
            if libc::syscall(1000 + 2 * 598) != -1 || errno() != libc::EACCES {
                return 2;
            }
            if libc::syscall(1000 + 2 * 599) != -1 || errno() != 2 * libc::EACCES {
                return 3;
            }
            if libc::syscall(1001) != -1 || errno() != libc::ENOSYS {
                return 4;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn installed_default_profile_in_a_child() {
        let prog = default_prog(&default_caps());
        let code = in_child(&prog, || unsafe {
            if libc::syscall(libc::SYS_getpid) <= 0 {
                return 1;
            }
            // KEYCTL_GET_KEYRING_ID of KEY_SPEC_THREAD_KEYRING, no create.
            if libc::syscall(libc::SYS_keyctl, 0, -1, 0) != -1 || errno() != libc::EPERM {
                return 2;
            }
            if libc::syscall(libc::SYS_clone3, 0usize, 0usize) != -1 || errno() != libc::ENOSYS {
                return 3;
            }
            let newuser = libc::CLONE_NEWUSER as libc::c_ulong;
            if libc::syscall(libc::SYS_unshare, newuser) != -1 || errno() != libc::EPERM {
                return 4;
            }
            if libc::syscall(libc::SYS_personality, 0xffff_ffffu64) == -1 {
                return 5;
            }
            if libc::syscall(libc::SYS_personality, 0x1234u64) != -1 || errno() != libc::EPERM {
                return 6;
            }
            0
        });
        assert_eq!(code, 0);
    }
}
