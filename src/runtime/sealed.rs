//! A sealed in-memory copy of the skiff binary, from which the shim (and so every container's
//! setup process and init) runs: `/proc/<pid>/exe` of those processes then names a memfd that
//! nobody can write to, so a container cannot overwrite the host's binary through it
//! (CVE-2019-5736).

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

/// Copies `/proc/self/exe` into a sealed memfd (close-on-exec; exec it through
/// `/proc/self/fd/N`, which the kernel opens before closing the fd).
pub fn sealed_self() -> io::Result<File> {
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
    use std::os::fd::AsRawFd;

    #[test]
    fn the_copy_is_whole_and_cannot_be_written() {
        let mut f = super::sealed_self().unwrap();
        let exe = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(f.metadata().unwrap().len(), exe);
        assert!(f.write_all(b"x").is_err());
        assert!(f.set_len(1).is_err());
        // Reopened through /proc (as a container would try), it is still sealed.
        let p = format!("/proc/self/fd/{}", f.as_raw_fd());
        let mut again = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        assert!(again.write_all(b"x").is_err());
    }
}
