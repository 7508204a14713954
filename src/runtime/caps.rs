//! Linux capabilities of a container: the names, Docker's default set and its add/drop
//! rules, and the two steps that give the container process its capabilities (the bounding
//! set before anything else changes, the effective/permitted/inheritable sets after the
//! uid/gid switch).
//!
//! `drop_bounding` and `apply` run in the single-threaded container child, after
//! `pivot_root` and before `execve`: they use raw syscalls on the calling thread only and
//! start no threads.

use std::fmt;

/// Capability names without `CAP_`, indexed by number (`NAMES[n]` is capability `n`).
pub const NAMES: [&str; 41] = [
    "CHOWN",              // 0
    "DAC_OVERRIDE",       // 1
    "DAC_READ_SEARCH",    // 2
    "FOWNER",             // 3
    "FSETID",             // 4
    "KILL",               // 5
    "SETGID",             // 6
    "SETUID",             // 7
    "SETPCAP",            // 8
    "LINUX_IMMUTABLE",    // 9
    "NET_BIND_SERVICE",   // 10
    "NET_BROADCAST",      // 11
    "NET_ADMIN",          // 12
    "NET_RAW",            // 13
    "IPC_LOCK",           // 14
    "IPC_OWNER",          // 15
    "SYS_MODULE",         // 16
    "SYS_RAWIO",          // 17
    "SYS_CHROOT",         // 18
    "SYS_PTRACE",         // 19
    "SYS_PACCT",          // 20
    "SYS_ADMIN",          // 21
    "SYS_BOOT",           // 22
    "SYS_NICE",           // 23
    "SYS_RESOURCE",       // 24
    "SYS_TIME",           // 25
    "SYS_TTY_CONFIG",     // 26
    "MKNOD",              // 27
    "LEASE",              // 28
    "AUDIT_WRITE",        // 29
    "AUDIT_CONTROL",      // 30
    "SETFCAP",            // 31
    "MAC_OVERRIDE",       // 32
    "MAC_ADMIN",          // 33
    "SYSLOG",             // 34
    "WAKE_ALARM",         // 35
    "BLOCK_SUSPEND",      // 36
    "AUDIT_READ",         // 37
    "PERFMON",            // 38
    "BPF",                // 39
    "CHECKPOINT_RESTORE", // 40
];

/// The highest capability number skiff knows a name for.
pub const LAST_KNOWN: u32 = NAMES.len() as u32 - 1;

/// The capabilities Docker (and so ECS) gives a container by default.
pub const DEFAULT: &[&str] = &[
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
];

/// The magic value of `add`/`drop` lists that stands for every capability.
const ALL: &str = "ALL";

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapsError {
    /// A name that is no capability (as written by the user).
    #[error("unknown capability: {0:?}")]
    Unknown(String),
    /// A capability asked for by `add` that the running kernel does not support, or that
    /// skiff itself does not hold (its bounding set lacks it).
    #[error(
        "capability not supported by the running kernel or not available to skiff: \"CAP_{0}\""
    )]
    Unavailable(&'static str),
}

/// The number of capability `name`: case-insensitive, with or without `CAP_`.
pub fn number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// A set of capabilities, bit `n` = capability `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    pub const EMPTY: CapSet = CapSet(0);

    /// Docker's default set (`DEFAULT`).
    pub fn defaults() -> CapSet {
        CapSet::from_names(DEFAULT).expect("DEFAULT names are known")
    }

    /// Every capability 0..=`last` (at most 63).
    pub fn up_to(last: u32) -> CapSet {
        if last >= 63 {
            CapSet(u64::MAX)
        } else {
            CapSet((1u64 << (last + 1)) - 1)
        }
    }

    /// The set of the names given (case-insensitive, optional `CAP_`); `ALL` is no name here.
    pub fn from_names(names: &[impl AsRef<str>]) -> Result<CapSet, CapsError> {
        let mut set = CapSet::EMPTY;
        for name in names {
            let name = name.as_ref();
            let n = number(name).ok_or_else(|| CapsError::Unknown(name.to_string()))?;
            set.insert(n);
        }
        Ok(set)
    }

    /// The names (without `CAP_`) of the members, by number; members above `LAST_KNOWN`
    /// have no name and are left out.
    pub fn names(&self) -> Vec<&'static str> {
        (0..=LAST_KNOWN)
            .filter(|&n| self.has(n))
            .map(|n| NAMES[n as usize])
            .collect()
    }

    /// Whether capability `name` (case-insensitive, optional `CAP_`) is a member; false for
    /// unknown names.
    pub fn contains(&self, name: &str) -> bool {
        number(name).is_some_and(|n| self.has(n))
    }

    pub fn has(&self, n: u32) -> bool {
        n < 64 && self.0 & (1u64 << n) != 0
    }

    pub fn insert(&mut self, n: u32) {
        if n < 64 {
            self.0 |= 1u64 << n;
        }
    }

    #[cfg(test)]
    pub fn remove(&mut self, n: u32) {
        if n < 64 {
            self.0 &= !(1u64 << n);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }

    pub fn intersection(self, other: CapSet) -> CapSet {
        CapSet(self.0 & other.0)
    }

    pub fn difference(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }
}

impl fmt::Display for CapSet {
    /// The names joined by commas (`CHOWN,KILL`), or `-` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        f.write_str(&self.names().join(","))
    }
}

/// The highest capability number of the running kernel (`/proc/sys/kernel/cap_last_cap`),
/// or 40 (CHECKPOINT_RESTORE, Linux 5.9) when that cannot be read.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&n| n < 64)
        .unwrap_or(LAST_KNOWN)
}

/// Every capability the running kernel supports and skiff knows by name.
pub fn kernel_supported() -> CapSet {
    CapSet::up_to(last_cap().min(LAST_KNOWN))
}

/// Every capability a container can be given here: those the running kernel supports
/// (`kernel_supported`) that skiff's own bounding set still holds. (This is Docker's "all
/// capabilities": the ones of the current environment, so that a privileged container
/// started from a restricted environment does not fail at `capset`.) When skiff's bounding
/// set cannot be read, the kernel's set.
pub fn all_supported() -> CapSet {
    let kernel = kernel_supported();
    match own_bounding_set() {
        Some(bnd) => kernel.intersection(bnd),
        None => kernel,
    }
}

/// `CapBnd` of /proc/self/status.
fn own_bounding_set() -> Option<CapSet> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field(&status, "CapBnd")
}

/// A hex capability mask field (`CapEff`, `CapBnd`, ...) of a /proc/<pid>/status text.
pub fn status_field(status: &str, field: &str) -> Option<CapSet> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        u64::from_str_radix(rest.trim(), 16).ok().map(CapSet)
    })
}

/// The capabilities of a container, from the `linuxParameters.capabilities` lists and
/// `privileged`, with Docker's rules:
///
/// - privileged: every capability available (`all_supported`); `add` and `drop` are only
///   checked for unknown names;
/// - `add` contains `ALL`: every capability available except those dropped (even when
///   `drop` contains `ALL` too);
/// - `drop` contains `ALL`: only those added;
/// - otherwise the defaults, minus those dropped, plus those added (an explicit add wins
///   over a drop of the same capability).
///
/// Names are case-insensitive, with or without `CAP_`. An unknown name is an error naming
/// it; so is adding a capability the kernel or skiff's environment lacks (dropping one is
/// fine). Defaults the environment lacks are left out silently.
pub fn resolve(add: &[String], drop: &[String], privileged: bool) -> Result<CapSet, CapsError> {
    resolve_in(add, drop, privileged, all_supported())
}

/// `resolve` against the given set of available capabilities.
pub fn resolve_in(
    add: &[String],
    drop: &[String],
    privileged: bool,
    available: CapSet,
) -> Result<CapSet, CapsError> {
    let (add_all, add) = parse_list(add)?;
    let (drop_all, drop) = parse_list(drop)?;
    if privileged {
        return Ok(available);
    }
    if let Some(missing) = add.difference(available).names().first() {
        return Err(CapsError::Unavailable(missing));
    }
    let set = if add_all {
        available.difference(drop)
    } else if drop_all {
        add
    } else {
        CapSet::defaults().difference(drop).union(add)
    };
    Ok(set.intersection(available))
}

/// The capabilities of an add or drop list, and whether it holds `ALL`.
fn parse_list(names: &[String]) -> Result<(bool, CapSet), CapsError> {
    let mut all = false;
    let mut set = CapSet::EMPTY;
    for name in names {
        if name.trim().eq_ignore_ascii_case(ALL) {
            all = true;
            continue;
        }
        let n = number(name).ok_or_else(|| CapsError::Unknown(name.clone()))?;
        set.insert(n);
    }
    Ok((all, set))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Removes from the calling thread's bounding set every capability not in `keep`, up to the
/// kernel's last one (found with PR_CAPBSET_READ, so /proc is not needed). Needs
/// CAP_SETPCAP in the effective set: call it before the uid switch and `apply`.
pub fn drop_bounding(keep: CapSet) -> Result<(), String> {
    for cap in 0..64u32 {
        let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if present < 0 {
            if errno() == libc::EINVAL {
                // Past the kernel's last capability.
                break;
            }
            return Err(format!(
                "read bounding capability {}: {}",
                cap_label(cap),
                std::io::Error::last_os_error()
            ));
        }
        if present == 0 || keep.has(cap) {
            continue;
        }
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            return Err(format!(
                "drop bounding capability {}: {}",
                cap_label(cap),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// `CAP_NAME`, or the number for capabilities without a name.
fn cap_label(cap: u32) -> String {
    match NAMES.get(cap as usize) {
        Some(name) => format!("CAP_{name}"),
        None => format!("{cap}"),
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The effective, permitted and inheritable sets of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ThreadCaps {
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
}

/// The calling thread's capability sets (capget).
pub fn current() -> Result<ThreadCaps, String> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    let join = |lo: u32, hi: u32| CapSet(u64::from(lo) | (u64::from(hi) << 32));
    Ok(ThreadCaps {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// Gives the calling thread its final capabilities; called after the uid/gid switch, just
/// before exec. The ambient set is cleared; then for root (`uid == 0`) effective = permitted
/// = `keep` and inheritable = nothing, and for any other user all three sets are empty (what
/// Docker gives a non-root user: the bounding set still limits what setuid/file-capability
/// binaries can gain).
pub fn apply(keep: CapSet, uid: u32) -> Result<(), String> {
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // Kernels before 4.3 have no ambient set.
    if r < 0 && errno() != libc::EINVAL {
        return Err(format!(
            "clear ambient capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    let set = if uid == 0 { keep } else { CapSet::EMPTY };
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: set.0 as u32,
            permitted: set.0 as u32,
            inheritable: 0,
        },
        CapData {
            effective: (set.0 >> 32) as u32,
            permitted: (set.0 >> 32) as u32,
            inheritable: 0,
        },
    ];
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        // Say which capabilities are missing when the reason is that the process lacks them.
        if err.raw_os_error() == Some(libc::EPERM) {
            if let Ok(now) = current() {
                let missing = set.difference(now.permitted);
                if !missing.is_empty() {
                    return Err(format!(
                        "set capabilities: {err} (not permitted to skiff: {missing})"
                    ));
                }
            }
        }
        return Err(format!("set capabilities: {err}"));
    }
    Ok(())
}

/// Helpers for tests that change credentials in a forked child.
#[cfg(test)]
pub(crate) mod test_support {
    use super::current;

    /// Reads /proc/self/status into a stack buffer (no allocation in a forked child) and
    /// returns the value of a hex field.
    pub(crate) fn child_status_field(buf: &[u8], field: &[u8]) -> Option<u64> {
        for line in buf.split(|&b| b == b'\n') {
            if line.len() > field.len() + 1 && line.starts_with(field) && line[field.len()] == b':'
            {
                let mut v: u64 = 0;
                for &b in line[field.len() + 1..].iter() {
                    let d = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'\t' | b' ' => continue,
                        _ => return None,
                    };
                    v = (v << 4) | u64::from(d);
                }
                return Some(v);
            }
        }
        None
    }

    fn read_own_status(buf: &mut [u8]) -> Option<usize> {
        let fd = unsafe {
            libc::open(
                c"/proc/self/status".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        loop {
            let n = unsafe {
                libc::read(
                    fd,
                    buf[len..].as_mut_ptr() as *mut libc::c_void,
                    buf.len() - len,
                )
            };
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        unsafe { libc::close(fd) };
        Some(len)
    }

    /// Runs `f` in a forked child and returns its exit code.
    pub(crate) fn in_child(f: impl FnOnce() -> i32) -> i32 {
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = f();
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    /// Whether this process can change capability sets at all.
    pub(crate) fn can_set_caps() -> bool {
        let euid = unsafe { libc::geteuid() };
        euid == 0
            && current()
                .is_ok_and(|c| c.effective.contains("SETPCAP") && c.effective.contains("SETUID"))
    }

    /// Checks the calling process's sets: exit code 0 when they are as expected.
    pub(crate) fn check_status(eff: u64, prm: u64, inh: u64, bnd: u64) -> i32 {
        let mut buf = [0u8; 8192];
        let Some(len) = read_own_status(&mut buf) else {
            return 10;
        };
        let buf = &buf[..len];
        let checks: [(&[u8], u64); 5] = [
            (b"CapEff", eff),
            (b"CapPrm", prm),
            (b"CapInh", inh),
            (b"CapBnd", bnd),
            (b"CapAmb", 0),
        ];
        for (i, (field, want)) in checks.iter().enumerate() {
            if child_status_field(buf, field) != Some(*want) {
                return 11 + i as i32;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{can_set_caps, check_status, in_child};
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const DEFAULT_MASK: u64 = 0x0000_0000_a804_25fb;
    /// What the kernel of a 5.9+ host supports, all held.
    const EVERYTHING: CapSet = CapSet((1u64 << 41) - 1);

    fn set(names: &[&str]) -> CapSet {
        CapSet::from_names(names).unwrap()
    }

    #[test]
    fn table_is_consistent() {
        assert_eq!(NAMES.len(), 41);
        assert_eq!(LAST_KNOWN, 40);
        let mut seen = std::collections::HashSet::new();
        for (i, name) in NAMES.iter().enumerate() {
            assert!(seen.insert(*name), "duplicate {name}");
            assert_eq!(number(name), Some(i as u32));
            assert!(!name.starts_with("CAP_"));
        }
        // Spot checks against the kernel's numbers (linux/capability.h).
        assert_eq!(number("CHOWN"), Some(0));
        assert_eq!(number("SYS_ADMIN"), Some(21));
        assert_eq!(number("SYS_RESOURCE"), Some(24));
        assert_eq!(number("AUDIT_READ"), Some(37));
        assert_eq!(number("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(DEFAULT.len(), 14);
        assert_eq!(CapSet::defaults().0, DEFAULT_MASK);
    }

    #[test]
    fn capset_round_trip() {
        let s = CapSet::from_names(&["cap_kill", "Net_Raw", "CAP_SYS_ADMIN", "BPF"]).unwrap();
        assert_eq!(s.names(), vec!["KILL", "NET_RAW", "SYS_ADMIN", "BPF"]);
        assert_eq!(CapSet::from_names(&s.names()).unwrap(), s);
        assert!(s.contains("sys_admin") && s.contains("CAP_BPF") && !s.contains("CHOWN"));
        assert!(!s.contains("NOPE"));
        assert_eq!(s.len(), 4);
        let mut t = s;
        t.remove(number("KILL").unwrap());
        t.remove(63);
        assert_eq!(t.names(), vec!["NET_RAW", "SYS_ADMIN", "BPF"]);
        t.insert(63);
        assert!(t.has(63) && !t.has(64) && t.names().len() == 3);
        assert_eq!(s.to_string(), "KILL,NET_RAW,SYS_ADMIN,BPF");
        assert_eq!(CapSet::EMPTY.to_string(), "-");
        let all = CapSet::up_to(40);
        assert_eq!(all.names(), NAMES.to_vec());
        assert_eq!(CapSet::from_names(&all.names()).unwrap(), all);
        assert_eq!(CapSet::up_to(63).0, u64::MAX);
        assert_eq!(
            CapSet::from_names(&["KILL", "CAP_NOPE"])
                .unwrap_err()
                .to_string(),
            "unknown capability: \"CAP_NOPE\""
        );
        assert_eq!(
            CapSet::from_names(&["ALL"]).unwrap_err(),
            CapsError::Unknown("ALL".into())
        );
    }

    #[test]
    fn resolve_default() {
        let r = resolve_in(&[], &[], false, EVERYTHING).unwrap();
        assert_eq!(r.0, DEFAULT_MASK);
        assert_eq!(resolve(&[], &[], false).unwrap().0 & !DEFAULT_MASK, 0);
    }

    #[test]
    fn resolve_add_and_drop() {
        let r = resolve_in(
            &strings(&["SYS_ADMIN", "cap_net_admin"]),
            &strings(&["mknod", "CAP_NET_RAW"]),
            false,
            EVERYTHING,
        )
        .unwrap();
        let want = CapSet::defaults()
            .difference(set(&["MKNOD", "NET_RAW"]))
            .union(set(&["SYS_ADMIN", "NET_ADMIN"]));
        assert_eq!(r, want);
        assert!(!r.contains("MKNOD") && r.contains("SYS_ADMIN") && r.contains("CHOWN"));
        // Added and dropped: the add wins, as in Docker.
        let r = resolve_in(&strings(&["KILL"]), &strings(&["KILL"]), false, EVERYTHING).unwrap();
        assert!(r.contains("KILL"));
    }

    #[test]
    fn resolve_all_in_add() {
        let r = resolve_in(&strings(&["ALL"]), &[], false, EVERYTHING).unwrap();
        assert_eq!(r, EVERYTHING);
        let r = resolve_in(
            &strings(&["all"]),
            &strings(&["SYS_ADMIN"]),
            false,
            EVERYTHING,
        )
        .unwrap();
        assert_eq!(r, EVERYTHING.difference(set(&["SYS_ADMIN"])));
        // ALL on both sides: the add wins.
        let r = resolve_in(&strings(&["ALL"]), &strings(&["ALL"]), false, EVERYTHING).unwrap();
        assert_eq!(r, EVERYTHING);
        // Only what the environment has.
        let some = CapSet::up_to(37);
        let r = resolve_in(&strings(&["ALL"]), &[], false, some).unwrap();
        assert_eq!(r, some);
    }

    #[test]
    fn resolve_all_in_drop() {
        let r = resolve_in(&[], &strings(&["ALL"]), false, EVERYTHING).unwrap();
        assert_eq!(r, CapSet::EMPTY);
        let r = resolve_in(
            &strings(&["NET_BIND_SERVICE", "CAP_CHOWN"]),
            &strings(&["all", "CHOWN"]),
            false,
            EVERYTHING,
        )
        .unwrap();
        assert_eq!(r, set(&["NET_BIND_SERVICE", "CHOWN"]));
    }

    #[test]
    fn resolve_privileged() {
        let r = resolve_in(&[], &strings(&["ALL"]), true, EVERYTHING).unwrap();
        assert_eq!(r, EVERYTHING);
        let limited = EVERYTHING.difference(set(&["SYS_RESOURCE"]));
        assert_eq!(resolve_in(&[], &[], true, limited).unwrap(), limited);
        // Names are still checked.
        assert!(resolve_in(&strings(&["NOPE"]), &[], true, EVERYTHING).is_err());
        // The real thing: whatever the kernel and this environment offer, nothing above.
        let r = resolve(&[], &[], true).unwrap();
        assert_eq!(r, all_supported());
        assert_eq!(r.0 & !CapSet::up_to(last_cap()).0, 0);
        assert!(r.difference(kernel_supported()).is_empty());
    }

    #[test]
    fn resolve_errors_name_the_capability() {
        let e = resolve_in(&strings(&["CAP_SYS_ADMN"]), &[], false, EVERYTHING).unwrap_err();
        assert_eq!(e.to_string(), "unknown capability: \"CAP_SYS_ADMN\"");
        let e = resolve_in(&[], &strings(&["KILL", "chwon"]), false, EVERYTHING).unwrap_err();
        assert_eq!(e.to_string(), "unknown capability: \"chwon\"");
        // Known to skiff, but not offered by this kernel (e.g. a 5.4 kernel's last is 37).
        let old_kernel = CapSet::up_to(37);
        let e = resolve_in(&strings(&["bpf"]), &[], false, old_kernel).unwrap_err();
        assert_eq!(
            e.to_string(),
            "capability not supported by the running kernel or not available to skiff: \"CAP_BPF\""
        );
        // Dropping it is fine, and defaults are never above what is available.
        let r = resolve_in(&[], &strings(&["CAP_BPF"]), false, old_kernel).unwrap();
        assert_eq!(r.0, DEFAULT_MASK);
        let no_mknod = EVERYTHING.difference(set(&["MKNOD"]));
        let r = resolve_in(&[], &[], false, no_mknod).unwrap();
        assert_eq!(r, CapSet::defaults().difference(set(&["MKNOD"])));
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n";
        assert_eq!(status_field(status, "CapBnd"), Some(CapSet(0x1fffeffffff)));
        assert_eq!(status_field(status, "CapInh"), Some(CapSet::EMPTY));
        assert_eq!(status_field(status, "CapEff"), None);
    }

    #[test]
    fn drop_bounding_and_apply_in_a_child() {
        if !can_set_caps() {
            eprintln!("skipped: needs root with CAP_SETPCAP");
            return;
        }
        let keep = CapSet::defaults();
        let code = in_child(|| {
            if drop_bounding(keep).is_err() {
                return 1;
            }
            if apply(keep, 0).is_err() {
                return 2;
            }
            check_status(DEFAULT_MASK, DEFAULT_MASK, 0, DEFAULT_MASK)
        });
        assert_eq!(
            code, 0,
            "child exit code (1 drop, 2 apply, 10+ status field)"
        );
    }

    #[test]
    fn apply_reports_missing_capabilities() {
        if !can_set_caps() {
            eprintln!("skipped: needs root with CAP_SETPCAP");
            return;
        }
        let code = in_child(|| {
            if apply(set(&["KILL"]), 0).is_err() {
                return 1;
            }
            match apply(set(&["KILL", "CHOWN"]), 0) {
                Err(e) if e.contains("not permitted to skiff: CHOWN") => 0,
                _ => 2,
            }
        });
        assert_eq!(code, 0);
    }
}
