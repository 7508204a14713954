//! Applies one layer tar into an empty directory, in the overlay whiteout format.
//!
//! The `tar` crate is only the parser; every filesystem effect is ours so that no entry can
//! write outside the layer directory: `..` is refused, parent components are checked with
//! lstat and must be real directories, final components are never followed, and hardlinks
//! must point at entries already inside the layer.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?}: {msg}")]
    Entry { path: String, msg: String },
    #[error("reading layer: {0}")]
    Read(#[from] io::Error),
}

fn entry_err(path: &Path, msg: impl std::fmt::Display) -> UnpackError {
    UnpackError::Entry {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// A path from the archive made relative and free of `.` and `..`; None for the root itself.
fn sanitize(p: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(entry_err(p, "path leaves the layer root"))
            }
        }
    }
    if out.as_os_str().len() > 4096 {
        return Err(entry_err(p, "path too long"));
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Creates the missing directories of `rel` below `root`, refusing to pass through anything
/// but a real directory.
fn ensure_dirs(root: &Path, rel: Option<&Path>, entry: &Path) -> Result<(), UnpackError> {
    let Some(rel) = rel else { return Ok(()) };
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(entry_err(entry, "parent path is a symlink"))
            }
            Ok(_) => return Err(entry_err(entry, "parent path is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(|e| entry_err(entry, e))?;
            }
            Err(e) => return Err(entry_err(entry, e)),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` unless it is a directory and `keep_dir` is set.
fn clear(path: &Path, keep_dir: bool) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if keep_dir {
                return Ok(true);
            }
            fs::remove_dir_all(path)?;
            Ok(false)
        }
        Ok(_) => {
            fs::remove_file(path)?;
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn lchown(path: &Path, uid: u64, gid: u64) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid as u32), Some(gid as u32))
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let p = cpath(path)?;
    let ts = libc::timespec {
        tv_sec: mtime as _,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mknod(path: &Path, kind: libc::mode_t, perm: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cpath(path)?;
    let dev = libc::makedev(major, minor);
    let rc = unsafe { libc::mknod(p.as_ptr(), kind | (perm as libc::mode_t & 0o7777), dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

struct DirAttrs {
    path: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// Applies the layer read from `r` into `root` (an empty directory).
pub fn apply_layer<R: Read>(r: R, root: &Path) -> Result<(), UnpackError> {
    let mut ar = tar::Archive::new(r);
    let mut dirs: Vec<DirAttrs> = Vec::new();
    for entry in ar.entries()? {
        let mut e = entry?;
        let raw = e.path()?.into_owned();
        let rel = sanitize(&raw)?;
        let hdr = e.header().clone();
        let kind = hdr.entry_type();
        let mode = hdr.mode().map_err(|err| entry_err(&raw, err))? & 0o7777;
        let uid = hdr.uid().map_err(|err| entry_err(&raw, err))?;
        let gid = hdr.gid().map_err(|err| entry_err(&raw, err))?;
        let mtime = hdr.mtime().unwrap_or(0);
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(exts) = e.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Ok(key) = ext.key() {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        // Never let a layer forge overlay metadata.
                        if !name.starts_with("trusted.overlay.") {
                            xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }

        let Some(rel) = rel else {
            if kind.is_dir() {
                dirs.push(DirAttrs {
                    path: root.to_path_buf(),
                    mode,
                    uid,
                    gid,
                    mtime,
                });
            }
            continue;
        };
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        ensure_dirs(root, rel.parent(), &raw)?;
        let path = root.join(&rel);

        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let parent = path.parent().unwrap_or(root);
            if hidden == b".wh..opq" {
                lsetxattr(parent, "trusted.overlay.opaque", b"y")
                    .map_err(|err| entry_err(&raw, format!("opaque whiteout: {err}")))?;
            } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(entry_err(&raw, "invalid whiteout"));
            } else {
                let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
                clear(&target, false).map_err(|err| entry_err(&raw, err))?;
                mknod(&target, libc::S_IFCHR, 0, 0, 0)
                    .map_err(|err| entry_err(&raw, format!("whiteout: {err}")))?;
            }
            continue;
        }

        match kind {
            tar::EntryType::Directory => {
                if !clear(&path, true).map_err(|err| entry_err(&raw, err))? {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(|err| entry_err(&raw, err))?;
                }
                for (n, v) in &xattrs {
                    lsetxattr(&path, n, v)
                        .map_err(|err| entry_err(&raw, format!("xattr {n}: {err}")))?;
                }
                dirs.push(DirAttrs {
                    path,
                    mode,
                    uid,
                    gid,
                    mtime,
                });
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&path, false).map_err(|err| entry_err(&raw, err))?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|err| entry_err(&raw, err))?;
                io::copy(&mut e, &mut f)?;
                std::os::unix::fs::fchown(&f, Some(uid as u32), Some(gid as u32))
                    .map_err(|err| entry_err(&raw, err))?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|err| entry_err(&raw, err))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()?
                    .ok_or_else(|| entry_err(&raw, "symlink without target"))?;
                clear(&path, false).map_err(|err| entry_err(&raw, err))?;
                std::os::unix::fs::symlink(&target, &path).map_err(|err| entry_err(&raw, err))?;
                lchown(&path, uid, gid).map_err(|err| entry_err(&raw, err))?;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name()?
                    .ok_or_else(|| entry_err(&raw, "hardlink without target"))?;
                let target_rel = sanitize(&target)?
                    .ok_or_else(|| entry_err(&raw, "hardlink to the layer root"))?;
                ensure_dirs(root, target_rel.parent(), &raw)?;
                let src = root.join(&target_rel);
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(entry_err(
                            &raw,
                            format!(
                                "hardlink target {} is not an earlier file of this layer",
                                target.display()
                            ),
                        ))
                    }
                }
                clear(&path, false).map_err(|err| entry_err(&raw, err))?;
                // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
                fs::hard_link(&src, &path).map_err(|err| entry_err(&raw, err))?;
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                clear(&path, false).map_err(|err| entry_err(&raw, err))?;
                let (t, maj, min) = match kind {
                    tar::EntryType::Char => {
                        (libc::S_IFCHR, hdr.device_major()?, hdr.device_minor()?)
                    }
                    tar::EntryType::Block => {
                        (libc::S_IFBLK, hdr.device_major()?, hdr.device_minor()?)
                    }
                    _ => (libc::S_IFIFO, Some(0), Some(0)),
                };
                if let Err(err) = mknod(&path, t, mode, maj.unwrap_or(0), min.unwrap_or(0)) {
                    // Device nodes need CAP_MKNOD; an image may carry them for nothing.
                    tracing::warn!(entry = %raw.display(), error = %err, "skipping device node");
                    continue;
                }
                lchown(&path, uid, gid).map_err(|err| entry_err(&raw, err))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|err| entry_err(&raw, err))?;
            }
            tar::EntryType::XGlobalHeader => continue,
            other => return Err(entry_err(&raw, format!("unsupported entry type {other:?}"))),
        }
        for (n, v) in &xattrs {
            lsetxattr(&path, n, v).map_err(|err| entry_err(&raw, format!("xattr {n}: {err}")))?;
        }
        set_mtime(&path, mtime).map_err(|err| entry_err(&raw, err))?;
    }
    // Directory attributes last, deepest first, so that creating children does not disturb
    // their mtimes and a read-only directory does not block its own entries.
    for d in dirs.iter().rev() {
        lchown(&d.path, d.uid, d.gid).map_err(|err| entry_err(&d.path, err))?;
        fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode))
            .map_err(|err| entry_err(&d.path, err))?;
        set_mtime(&d.path, d.mtime).map_err(|err| entry_err(&d.path, err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-unpack-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_links_and_whiteouts() {
        let data = tar_of(|b| {
            let mut h = header(tar::EntryType::Directory, 0, 0o755);
            b.append_data(&mut h, "etc/", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Regular, 5, 0o4755);
            b.append_data(&mut h, "etc/hello", &b"hello"[..]).unwrap();
            let mut h = header(tar::EntryType::Symlink, 0, 0o777);
            b.append_link(&mut h, "etc/link", "/etc/hello").unwrap();
            let mut h = header(tar::EntryType::Link, 0, 0o644);
            b.append_link(&mut h, "etc/hard", "etc/hello").unwrap();
            let mut h = header(tar::EntryType::Regular, 0, 0o644);
            b.append_data(&mut h, "usr/.wh.gone", io::empty()).unwrap();
        });
        let root = tmpdir("ok");
        apply_layer(&data[..], &root).unwrap();
        assert_eq!(fs::read(root.join("etc/hello")).unwrap(), b"hello");
        let m = fs::metadata(root.join("etc/hello")).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o4755,
            "setuid survives chown"
        );
        assert_eq!(
            fs::read_link(root.join("etc/link")).unwrap(),
            Path::new("/etc/hello")
        );
        assert_eq!(fs::read(root.join("etc/hard")).unwrap(), b"hello");
        use std::os::unix::fs::FileTypeExt;
        let wh = fs::symlink_metadata(root.join("usr/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        fs::remove_dir_all(&root).unwrap();
    }

    /// Raw GNU headers so that hostile names the `tar` builder refuses can be written.
    fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, body: &[u8]) {
        let mut h = header(kind, body.len() as u64, 0o644);
        let bytes = h.as_old_mut();
        bytes.name[..name.len()].copy_from_slice(name.as_bytes());
        bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    #[test]
    fn refuses_escapes() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", {
                let mut v = Vec::new();
                raw_entry(&mut v, "../evil", tar::EntryType::Regular, "", b"x");
                v
            }),
            ("through-symlink", {
                let mut v = Vec::new();
                raw_entry(&mut v, "escape", tar::EntryType::Symlink, "/tmp", b"");
                raw_entry(&mut v, "escape/evil", tar::EntryType::Regular, "", b"x");
                v
            }),
            ("hardlink-out", {
                let mut v = Vec::new();
                raw_entry(&mut v, "pw", tar::EntryType::Link, "../../etc/passwd", b"");
                v
            }),
            ("hardlink-missing", {
                let mut v = Vec::new();
                raw_entry(&mut v, "pw", tar::EntryType::Link, "etc/passwd", b"");
                v
            }),
        ];
        for (tag, mut data) in cases {
            data.extend_from_slice(&[0u8; 1024]);
            let root = tmpdir(tag);
            let r = apply_layer(&data[..], &root);
            assert!(r.is_err(), "{tag} must be refused");
            assert!(!Path::new("/tmp/evil").exists());
            fs::remove_dir_all(&root).unwrap();
        }
    }
}
