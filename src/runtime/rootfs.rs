//! The container's root filesystem, assembled inside its new mount namespace: overlay, /proc,
//! a minimal /dev, read-only /sys, then `pivot_root`. Runs in the container's first process,
//! in the single-threaded shim's child, before exec.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::spec::ContainerSpec;

/// Overlay options must fit in one page.
const MAX_MOUNT_DATA: usize = 4095;

/// Character devices every container gets: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// A mount point inside the root: created when missing, refused when it is a symlink (which
/// could point the mount anywhere on the host).
fn target(root: &Path, rel: &str) -> Result<std::path::PathBuf, String> {
    let p = root.join(rel);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(m) if m.file_type().is_symlink() => Err(format!("mount target /{rel} is a symlink")),
        Ok(_) => Err(format!("mount target /{rel} is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&p)
                .map_err(|e| format!("create /{rel}: {e}"))?;
            Ok(p)
        }
        Err(e) => Err(format!("/{rel}: {e}")),
    }
}

fn mnt(
    src: &str,
    dst: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(Some(src), dst, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on {}: {e}", dst.display()))
}

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

pub(super) fn setup(spec: &ContainerSpec) -> Result<(), String> {
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
    mnt("overlay", root, "overlay", MsFlags::empty(), Some(&opts))?;

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(
        "proc",
        &target(root, "proc")?,
        "proc",
        nosuid_nodev_noexec,
        None,
    )?;

    let dev = target(root, "dev")?;
    mnt(
        "tmpfs",
        &dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in DEVICES {
        let p = dev.join(name);
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(*major, *minor),
        )
        .map_err(|e| format!("mknod /dev/{name}: {e}"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("chmod /dev/{name}: {e}"))?;
    }
    let pts = target(root, "dev/pts")?;
    mnt(
        "devpts",
        &pts,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = target(root, "dev/shm")?;
    mnt(
        "shm",
        &shm,
        "tmpfs",
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    let mq = target(root, "dev/mqueue")?;
    match mount(
        Some("mqueue"),
        &mq,
        Some("mqueue"),
        nosuid_nodev_noexec,
        None::<&str>,
    ) {
        Ok(()) | Err(nix::errno::Errno::ENODEV) => {}
        Err(e) => return Err(format!("mount mqueue: {e}")),
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).map_err(|e| format!("/dev/{link}: {e}"))?;
    }
    mnt(
        "sysfs",
        &target(root, "sys")?,
        "sysfs",
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )?;

    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
    // container's tree, with no path back to the host's.
    nix::unistd::chdir(root).map_err(|e| format!("chdir rootfs: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}
