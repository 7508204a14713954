//! The container's root filesystem, assembled inside its new mount namespace from the spec:
//! the overlay, the spec's mounts, device nodes, the generated /etc files, sysctls, then
//! `pivot_root`, masked and read-only paths and a read-only root when asked. Runs in the
//! container's first process, in the single-threaded shim's child, before exec.
//!
//! Every mount target is resolved inside the root (`openat2` with `RESOLVE_IN_ROOT`, or a walk
//! that refuses symlinks on kernels without it) and mounted through its `/proc/self/fd` path,
//! so a symlink planted in the image cannot point a mount at the host.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{LinuxDeviceType, Mount};

use super::spec::ContainerSpec;
use crate::cgroup::Mode;

/// Overlay options must fit in one page.
const MAX_MOUNT_DATA: usize = 4095;

pub(super) fn overlay_options(spec: &ContainerSpec) -> Result<String, String> {
    let lowers: Vec<String> = spec
        .lower_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    if lowers.iter().any(|l| l.contains(':') || l.contains(',')) {
        return Err("layer paths may not contain ':' or ','".into());
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        spec.upper_dir.display(),
        spec.work_dir.display()
    );
    if opts.len() > MAX_MOUNT_DATA {
        return Err(format!(
            "{} layers make overlay options of {} bytes; the kernel takes at most {MAX_MOUNT_DATA}",
            lowers.len(),
            opts.len()
        ));
    }
    Ok(opts)
}

/// fstab-style options → (flags, propagation flags, data).
pub(super) fn parse_options(opts: &[String]) -> (MsFlags, MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut prop = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let (set, clear) = match o.as_str() {
            "defaults" | "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" => {
                prop |= MsFlags::MS_PRIVATE;
                continue;
            }
            "rprivate" => {
                prop |= MsFlags::MS_PRIVATE | MsFlags::MS_REC;
                continue;
            }
            "shared" => {
                prop |= MsFlags::MS_SHARED;
                continue;
            }
            "rshared" => {
                prop |= MsFlags::MS_SHARED | MsFlags::MS_REC;
                continue;
            }
            "slave" => {
                prop |= MsFlags::MS_SLAVE;
                continue;
            }
            "rslave" => {
                prop |= MsFlags::MS_SLAVE | MsFlags::MS_REC;
                continue;
            }
            "unbindable" => {
                prop |= MsFlags::MS_UNBINDABLE;
                continue;
            }
            "runbindable" => {
                prop |= MsFlags::MS_UNBINDABLE | MsFlags::MS_REC;
                continue;
            }
            other => {
                data.push(other);
                continue;
            }
        };
        flags |= set;
        flags &= !clear;
    }
    (flags, prop, data.join(","))
}

/// An O_PATH fd of `rel` inside the root `root_fd`, created (as a directory, or an empty file
/// when `file`) when missing. Symlinks resolve inside the root; a final symlink is refused.
fn open_in_root(root_fd: RawFd, rel: &Path, file: bool) -> Result<OwnedFd, String> {
    let comps: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            Component::ParentDir | Component::Prefix(_) => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{}: '..' is not allowed in a mount target", rel.display()))?;
    let show = || format!("/{}", rel.display().to_string().trim_start_matches('/'));
    let mut cur = dup_path(root_fd).map_err(|e| format!("{}: {e}", show()))?;
    let mut prefix: Vec<u8> = Vec::new();
    for (k, name) in comps.iter().enumerate() {
        let last = k + 1 == comps.len();
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(*name);
        let cname = CString::new(bytes).map_err(|_| format!("{}: NUL in path", show()))?;
        if k > 0 {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(bytes);
        let at = At {
            root: root_fd,
            prefix: CString::new(prefix.clone()).map_err(|_| format!("{}: NUL in path", show()))?,
            dir: cur.as_raw_fd(),
            name: &cname,
        };
        match resolve_one(&at, last) {
            Ok(fd) => cur = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let rc = if last && file {
                    let fd = unsafe {
                        libc::openat(
                            cur.as_raw_fd(),
                            cname.as_ptr(),
                            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        )
                    };
                    if fd >= 0 {
                        unsafe { libc::close(fd) };
                        0
                    } else {
                        -1
                    }
                } else {
                    unsafe { libc::mkdirat(cur.as_raw_fd(), cname.as_ptr(), 0o755) }
                };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(format!("create {}: {e}", show()));
                    }
                }
                cur = resolve_one(&at, last).map_err(|e| format!("{}: {e}", show()))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(format!("mount target {} is a symlink", show()));
            }
            Err(e) => return Err(format!("{}: {e}", show())),
        }
    }
    Ok(cur)
}

fn dup_path(fd: RawFd) -> io::Result<OwnedFd> {
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

/// One step of a walk: `prefix` (relative to `root`) names the component `name` of `dir`.
struct At<'a> {
    root: RawFd,
    prefix: CString,
    dir: RawFd,
    name: &'a CString,
}

/// One component: the path so far is resolved from the container's root (RESOLVE_IN_ROOT),
/// so that an absolute symlink met on the way (in the image, or in a volume the container
/// wrote) lands inside the root, where it would point for the container too; the last
/// component must not be a symlink. Without openat2, `name` is opened below `dir` and any
/// symlink is refused.
fn resolve_one(at: &At, last: bool) -> io::Result<OwnedFd> {
    let (dir, name) = (at.dir, at.name);
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    if !last {
        // Intermediate symlinks are followed, but only within the root.
        how.flags &= !(libc::O_NOFOLLOW as u64);
    }
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            at.root,
            at.prefix.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        if last && is_symlink(&fd) {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        return Ok(fd);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if is_symlink(&fd) {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(fd)
}

fn is_symlink(fd: &OwnedFd) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let empty = c"";
    let rc = unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            empty.as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mount_err(what: &str, dst: &Path, e: nix::errno::Errno) -> String {
    format!("mount {what} on {}: {e}", dst.display())
}

/// Mounts one spec mount inside the root.
fn mount_one(root_fd: RawFd, m: &Mount, cgroup_mode: Mode) -> Result<(), String> {
    let dst = m.destination();
    let typ = m.typ().as_deref().unwrap_or("bind");
    let opts = m.options().clone().unwrap_or_default();
    let (mut flags, prop, data) = parse_options(&opts);
    let src = m
        .source()
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| typ.to_string());
    let is_bind = typ == "bind" || flags.contains(MsFlags::MS_BIND);
    let file_target = is_bind && fs::metadata(&src).is_ok_and(|md| !md.is_dir());
    let target = open_in_root(root_fd, dst, file_target)?;
    let tp = fd_path(&target);
    let data_opt = (!data.is_empty()).then_some(data.as_str());

    if typ == "cgroup" {
        return mount_cgroup(root_fd, &target, dst, flags, cgroup_mode);
    }
    if is_bind {
        let bind = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
        mount(
            Some(src.as_str()),
            tp.as_str(),
            None::<&str>,
            bind,
            None::<&str>,
        )
        .map_err(|e| mount_err(&src, dst, e))?;
        // Flags other than bind/rec apply through a remount of the new bind mount.
        let rest = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            let t2 = open_in_root(root_fd, dst, file_target)?;
            mount(
                None::<&str>,
                fd_path(&t2).as_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | rest,
                None::<&str>,
            )
            .map_err(|e| mount_err("(remount)", dst, e))?;
        }
    } else {
        flags &= !MsFlags::MS_REMOUNT;
        match mount(Some(src.as_str()), tp.as_str(), Some(typ), flags, data_opt) {
            Ok(()) => {}
            // A kernel without POSIX message queues: the container goes without.
            Err(nix::errno::Errno::ENODEV) if typ == "mqueue" => return Ok(()),
            Err(e) => return Err(mount_err(typ, dst, e)),
        }
    }
    if !prop.is_empty() {
        let t2 = open_in_root(root_fd, dst, file_target)?;
        mount(
            None::<&str>,
            fd_path(&t2).as_str(),
            None::<&str>,
            prop,
            None::<&str>,
        )
        .map_err(|e| mount_err("(propagation)", dst, e))?;
    }
    Ok(())
}

/// /sys/fs/cgroup: the container's own cgroup as the root (the process joined its cgroup and
/// then a new cgroup namespace). v2: one cgroup2 mount; v1: a tmpfs with one mount per
/// controller, then the tmpfs made read-only too.
fn mount_cgroup(
    root_fd: RawFd,
    target: &OwnedFd,
    dst: &Path,
    flags: MsFlags,
    mode: Mode,
) -> Result<(), String> {
    let tp = fd_path(target);
    let flags = flags & !MsFlags::MS_REMOUNT;
    match mode {
        Mode::V2 => mount(
            Some("cgroup"),
            tp.as_str(),
            Some("cgroup2"),
            flags,
            None::<&str>,
        )
        .map_err(|e| mount_err("cgroup2", dst, e)),
        Mode::V1 => {
            mount(
                Some("tmpfs"),
                tp.as_str(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(|e| mount_err("tmpfs", dst, e))?;
            // The O_PATH target still names the directory under the new tmpfs: look the
            // path up again to reach the tmpfs itself.
            let t2 = reopen_dir(&open_in_root(root_fd, dst, false)?)?;
            for (subsys, opts) in v1_hierarchies() {
                let name = CString::new(subsys.clone()).map_err(|e| e.to_string())?;
                if unsafe { libc::mkdirat(t2.as_raw_fd(), name.as_ptr(), 0o755) } < 0 {
                    continue;
                }
                let at = format!("{}/{}", fd_path(&t2), subsys);
                // A hierarchy this kernel refuses to mount again is left out, not fatal.
                let _ = mount(
                    Some("cgroup"),
                    at.as_str(),
                    Some("cgroup"),
                    flags,
                    Some(opts.as_str()),
                );
            }
            drop(t2);
            let t3 = open_in_root(root_fd, dst, false)?;
            mount(
                None::<&str>,
                fd_path(&t3).as_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(|e| mount_err("(remount ro)", dst, e))
        }
    }
}

/// The tmpfs just mounted on an O_PATH target: a directory fd of the new mount's root.
fn reopen_dir(target: &OwnedFd) -> Result<OwnedFd, String> {
    let p = CString::new(fd_path(target)).map_err(|e| e.to_string())?;
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!("open cgroup tmpfs: {}", io::Error::last_os_error()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The host's v1 hierarchies as (directory name, mount options): `cpu,cpuacct` style names and
/// named hierarchies such as `name=systemd`.
fn v1_hierarchies() -> Vec<(String, String)> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut f = post.split_whitespace();
        if f.next() != Some("cgroup") {
            continue;
        }
        let _src = f.next();
        let Some(sopts) = f.next() else { continue };
        let subs: Vec<&str> = sopts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
            .filter(|o| {
                !matches!(
                    *o,
                    "nosuid" | "nodev" | "noexec" | "relatime" | "xattr" | "clone_children"
                )
            })
            .collect();
        if subs.is_empty() {
            continue;
        }
        let dir = subs
            .iter()
            .map(|s| s.strip_prefix("name=").unwrap_or(s))
            .collect::<Vec<_>>()
            .join(",");
        let entry = (dir, subs.join(","));
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

fn mknod_in_root(root_fd: RawFd, d: &oci_spec::runtime::LinuxDevice) -> Result<(), String> {
    let p = d.path();
    let parent = p.parent().unwrap_or(Path::new("/"));
    let name = p
        .file_name()
        .ok_or_else(|| format!("device {}: no file name", p.display()))?;
    let dir = open_in_root(root_fd, parent, false)?;
    let dirfd = reopen_dir(&dir)?;
    let cname = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(|_| format!("device {}: NUL in path", p.display()))?;
    let kind = match d.typ() {
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        _ => libc::S_IFCHR,
    };
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    let dev = libc::makedev(d.major() as u32, d.minor() as u32);
    unsafe { libc::unlinkat(dirfd.as_raw_fd(), cname.as_ptr(), 0) };
    if unsafe { libc::mknodat(dirfd.as_raw_fd(), cname.as_ptr(), kind | mode, dev) } < 0 {
        return Err(format!(
            "mknod {}: {}",
            p.display(),
            io::Error::last_os_error()
        ));
    }
    // The umask must not narrow the mode the spec asks for.
    unsafe {
        libc::fchmodat(dirfd.as_raw_fd(), cname.as_ptr(), mode, 0);
        libc::fchownat(
            dirfd.as_raw_fd(),
            cname.as_ptr(),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
    Ok(())
}

/// Assembles the root and pivots into it. `etc_dir` holds the generated hosts, hostname and
/// resolv.conf.
pub(super) fn setup(spec: &ContainerSpec, etc_dir: &Path) -> Result<(), String> {
    // Nothing mounted here may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;

    let root = spec.rootfs.as_path();
    let opts = overlay_options(spec)?;
    mount(
        Some("overlay"),
        root,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| mount_err("overlay", root, e))?;
    crate::timing::mark("overlay_mounted");
    let root_fd = {
        let p = CString::new(root.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!("open rootfs: {}", io::Error::last_os_error()));
        }
        unsafe { OwnedFd::from_raw_fd(fd) }
    };

    let mut mounts: Vec<Mount> = spec.oci.mounts().clone().unwrap_or_default();
    for f in ["hosts", "hostname", "resolv.conf"] {
        let src = etc_dir.join(f);
        if src.exists() {
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination(format!("/etc/{f}"))
                    .typ("bind")
                    .source(src)
                    .options(vec!["rbind".to_string(), "rprivate".to_string()])
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    for m in &mounts {
        mount_one(root_fd.as_raw_fd(), m, spec.cgroup.mode)?;
    }

    if let Some(linux) = spec.linux() {
        for d in linux.devices().iter().flatten() {
            mknod_in_root(root_fd.as_raw_fd(), d)?;
        }
    }
    let dev = open_in_root(root_fd.as_raw_fd(), Path::new("dev"), false)?;
    let dev_dir = reopen_dir(&dev)?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let (l, t) = (CString::new(link).unwrap(), CString::new(to).unwrap());
        unsafe { libc::symlinkat(t.as_ptr(), dev_dir.as_raw_fd(), l.as_ptr()) };
    }
    drop(dev_dir);

    // Sysctls go through the container's /proc before /proc/sys turns read-only. net.* ones
    // land in the container's network namespace, the IPC ones in its IPC namespace.
    if let Some(linux) = spec.linux() {
        for (k, v) in linux.sysctl().iter().flatten() {
            let rel = format!("proc/sys/{}", k.replace('.', "/"));
            let fd = open_in_root(root_fd.as_raw_fd(), Path::new(&rel), true)
                .map_err(|e| format!("sysctl {k}: {e}"))?;
            let p = fd_path(&fd);
            fs::write(&p, v.as_bytes()).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
        }
    }

    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
    // container's tree, with no path back to the host's.
    nix::unistd::fchdir(root_fd.as_raw_fd()).map_err(|e| format!("chdir rootfs: {e}"))?;
    drop(root_fd);
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;

    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            mask(p)?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            readonly(p)?;
        }
    }
    if spec.oci.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("make the root filesystem read-only: {e}"))?;
    }
    Ok(())
}

/// A masked path: /dev/null over a file, an empty read-only tmpfs over a directory; missing
/// paths are fine (the kernel may not have them).
fn mask(p: &str) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
        .map_err(|e| format!("mask {p}: {e}")),
        Ok(_) => mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("mask {p}: {e}")),
    }
}

/// A read-only path: bound onto itself, then remounted read-only.
fn readonly(p: &str) -> Result<(), String> {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("read-only {p}: {e}"))?;
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("read-only {p}: {e}"))
}
