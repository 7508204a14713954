//! A copy of the skiff binary that nobody can write to, from which the shim (and so every
//! container's setup process and init) runs: `/proc/<pid>/exe` of those processes then names
//! a file a container cannot write through, so it cannot overwrite the host's binary
//! (CVE-2019-5736).
//!
//! First choice: the binary as seen through a private, detached overlay mount that has only
//! lower layers. Such a superblock is read-only for everyone (a privileged container that
//! clones the mount and clears its read-only flag still gets EROFS), it costs a few
//! system calls, and its pages are the host binary's own page cache, shared by every shim.
//! Overlayfs wants a second lower layer when there is no upper one: an empty directory skiff
//! keeps for that (kernels before 6.15 refuse a detached mount, such as a fresh tmpfs, as a
//! layer, and log "failed to clone lowerpath"); a detached tmpfs when that directory cannot
//! serve (it lies inside the binary's directory, say).
//! Fallback (no overlayfs, no new mount API, not allowed to mount): a sealed memfd copy, as
//! runc did first; it costs a copy of the binary per task, in time and in memory.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::fs::MetadataExt;
use std::path::Path;

/// A file of the running skiff binary that cannot be written (close-on-exec; exec it through
/// `/proc/self/fd/N`, which the kernel opens before closing the fd).
/// `empty_dir` is a directory skiff keeps empty (made if missing).
pub fn sealed_self(empty_dir: &Path) -> io::Result<File> {
    let on_disk = || {
        std::fs::create_dir_all(empty_dir)?;
        let fd: OwnedFd = File::open(empty_dir)?.into();
        overlay_self(fd)
    };
    on_disk()
        .or_else(|_| overlay_self(detached_mount(c"tmpfs", &[("size", "4k")])?))
        .or_else(|_| memfd_self())
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A detached mount of a new filesystem of `fstype` configured with `options`.
fn detached_mount(fstype: &std::ffi::CStr, options: &[(&str, &str)]) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR: libc::c_uint = 0x1 | 0x2 | 0x4; // RDONLY | NOSUID | NODEV

    let fs = unsafe {
        OwnedFd::from_raw_fd(check(libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            FSOPEN_CLOEXEC,
        ))? as i32)
    };
    for (key, value) in options {
        let (k, v) = (CString::new(*key)?, CString::new(*value)?);
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        })?;
    }
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    let mnt = check(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

/// The binary through a detached overlay mount with no upper layer: the binary's own
/// directory over `second`, an empty directory (overlayfs wants two lower layers when there
/// is no upper one, and refuses the same directory twice).
fn overlay_self(second: OwnedFd) -> io::Result<File> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(io::Error::other("no directory for /proc/self/exe"));
    };
    let own = std::fs::metadata("/proc/self/exe")?;
    let dir_fd: OwnedFd = File::open(dir)?.into();
    let lower = format!(
        "/proc/self/fd/{}:/proc/self/fd/{}",
        dir_fd.as_raw_fd(),
        second.as_raw_fd()
    );
    let mnt = detached_mount(c"overlay", &[("lowerdir", &lower), ("xino", "off")])?;
    let cname = CString::new(name.as_encoded_bytes())?;
    let fd = check(unsafe {
        libc::openat(
            mnt.as_raw_fd(),
            cname.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        ) as libc::c_long
    })?;
    let file = unsafe { File::from_raw_fd(fd as i32) };
    // The name may have been replaced since this process started (an upgrade): only the very
    // file that runs now will do.
    let m = file.metadata()?;
    if (m.st_ino(), m.st_size(), m.st_mtime(), m.st_mtime_nsec())
        != (
            own.st_ino(),
            own.st_size(),
            own.st_mtime(),
            own.st_mtime_nsec(),
        )
    {
        return Err(io::Error::other(
            "the binary's directory holds another file by its name",
        ));
    }
    Ok(file)
}

/// A sealed memfd copy of the binary.
fn memfd_self() -> io::Result<File> {
    let fd = unsafe {
        libc::memfd_create(
            c"skiff".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mem = unsafe { File::from_raw_fd(fd) };
    let mut exe = File::open("/proc/self/exe")?;
    let len = exe.metadata()?.len();
    mem.set_len(len)?;
    // std's copy uses copy_file_range/sendfile: the bytes never pass through user space.
    let copied = io::copy(&mut exe, &mut mem)?;
    if copied != len {
        return Err(io::Error::other(format!(
            "copied {copied} of {len} bytes of /proc/self/exe"
        )));
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn unwritable(mut f: std::fs::File) {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(f.metadata().unwrap().len(), exe.len() as u64);
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap(),
            exe
        );
        assert!(f.write_all(b"x").is_err());
        assert!(f.set_len(1).is_err());
        // Reopened through /proc for writing (as a container would try): refused.
        let p = format!("/proc/self/fd/{}", f.as_raw_fd());
        if let Ok(mut again) = std::fs::OpenOptions::new().write(true).open(p) {
            assert!(again.write_all(b"x").is_err());
        }
    }

    #[test]
    fn the_memfd_copy_is_whole_and_cannot_be_written() {
        unwritable(super::memfd_self().unwrap());
    }

    fn read_only_view(f: std::fs::File) {
        let p = format!("/proc/self/fd/{}", f.as_raw_fd());
        let e = std::fs::OpenOptions::new().write(true).open(p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        unwritable(f);
    }

    #[test]
    fn the_overlay_view_is_the_binary_and_cannot_be_written() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // Over an empty directory on disk: every kernel with the new mount API takes it.
        let dir = std::env::temp_dir().join(format!("skiff-sealed-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let fd: OwnedFd = std::fs::File::open(&dir).unwrap().into();
        let view = super::overlay_self(fd);
        std::fs::remove_dir(&dir).unwrap();
        read_only_view(view.unwrap());
        // sealed_self makes its directory and takes that path on this kernel too.
        let f = super::sealed_self(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        read_only_view(f);
    }
}
