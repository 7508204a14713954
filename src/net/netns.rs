//! Network namespaces held by a file rather than a process: a short-lived thread unshares a
//! new namespace and bind-mounts its `/proc/thread-self/ns/net` onto an empty file, which
//! keeps the namespace alive until the file is unmounted (no pause process to supervise).
//!
//! Namespaces are per thread, so entering one (`in_netns`) happens on a dedicated thread
//! that ends with the closure; the caller's threads never change namespace.
//!
//! Files live in `STATE/netns/`, named `<task>` (one namespace per task, awsvpc) or
//! `<task>-<container>` (bridge mode): task ids are hex, so the first `-` ends the task id
//! and `reconcile` can find the namespaces of tasks that are gone.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::{invalid, io_err, NetError};

/// `NSFS_MAGIC`: what statfs says of a namespace file.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The file name of a task's namespace (`container` None) or of one container's.
pub fn file_name(task: &str, container: Option<&str>) -> String {
    match container {
        Some(c) => format!("{task}-{c}"),
        None => task.to_string(),
    }
}

/// The task id a namespace file belongs to.
pub fn file_task(name: &str) -> &str {
    name.split_once('-').map_or(name, |(t, _)| t)
}

fn object(path: &Path) -> String {
    format!("netns {}", path.display())
}

/// Creates a new network namespace held by the file `path` (which must not exist), with
/// loopback up inside.
pub fn create(path: &Path) -> Result<(), NetError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(object(path), "create directory"))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(io_err(object(path), "create"))?;
    let made = std::thread::scope(|s| {
        let t = s.spawn(|| -> Result<(), NetError> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| io_err(object(path), "unshare")(e.into()))?;
            super::loopback_up().map_err(io_err(object(path), "loopback up"))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| io_err(object(path), "bind mount")(e.into()))
        });
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

/// Unmounts and removes a namespace file. A missing file, or one that is not mounted, is
/// fine. The namespace itself goes when nothing else holds it (a process in it, an open fd).
pub fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(io_err(object(path), "unmount")(e.into())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(object(path), "remove")(e)),
    }
}

/// Opens a namespace file for `setns` or for moving a link into it.
pub fn open(path: &Path) -> Result<OwnedFd, NetError> {
    let f = fs::File::open(path).map_err(io_err(object(path), "open"))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } < 0 {
        return Err(io_err(object(path), "statfs")(io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on some targets, i32/u32 on others
    if st.f_type as i64 != NSFS_MAGIC {
        return Err(invalid(
            object(path),
            "not a namespace (the file is not mounted)",
        ));
    }
    Ok(f.into())
}

/// Runs `f` on a new thread that has entered the network namespace `ns`; sockets it creates
/// (netlink ones included) belong to that namespace for their whole life.
pub fn in_netns<T: Send, F: FnOnce() -> T + Send>(ns: BorrowedFd<'_>, f: F) -> Result<T, NetError> {
    std::thread::scope(|s| {
        let t = s.spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| io_err(format!("netns fd {}", ns.as_raw_fd()), "setns")(e.into()))?;
            Ok(f())
        });
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The namespace files in `dir`, with the task each belongs to.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, String)>, NetError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("netns dir {}", dir.display()), "read")(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err(format!("netns dir {}", dir.display()), "read"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((entry.path(), file_task(&name).to_string()));
    }
    out.sort();
    Ok(out)
}

/// Removes the namespace files of tasks `keep` rejects; returns the paths removed.
pub fn reconcile(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, NetError> {
    let mut removed = Vec::new();
    for (path, task) in list(dir)? {
        if !keep(&task) {
            remove(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_task() {
        let n = file_name("0a1b", Some("web-1"));
        assert_eq!(n, "0a1b-web-1");
        assert_eq!(file_task(&n), "0a1b");
        assert_eq!(file_task(&file_name("0a1b", None)), "0a1b");
    }
}
