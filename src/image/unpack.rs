//! Applies one layer tar (already decompressed) into a fresh directory, in the overlay format:
//! a whiteout is a 0/0 character device, an opaque directory carries `trusted.overlay.opaque=y`.
//!
//! The tar reader is ours (ustar, GNU and PAX headers), so that every byte read is counted
//! against [`UnpackLimits`] and no extended header is held in memory beyond them. Every
//! filesystem effect is ours too, relative to directory descriptors:
//!
//! - Entry names are made relative; `..` anywhere is refused; the final component is never
//!   followed (`O_NOFOLLOW`, `fchownat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`, `linkat`
//!   without `AT_SYMLINK_FOLLOW`, xattrs through a real descriptor of the created file or
//!   `lsetxattr` on `/proc/self/fd/<parent>/<name>`, modes through `fchmod` or `chmod` of
//!   `/proc/self/fd/<O_PATH descriptor>` after checking that it is not a symlink).
//! - Parent directories are resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//!   from an `O_PATH` descriptor of the root: a symlink in the parent path is followed as if
//!   the layer directory were `/` (as Docker's chrooted unpack and containerd do), so it can
//!   never lead outside. Missing parents named by the entry are created 0755; a symlink in the
//!   parent path that leads nowhere is an error. Kernels without `openat2` (before 5.6, or a
//!   seccomp filter refusing it) get the same resolution walked in user space: one component
//!   at a time with `openat(O_PATH | O_NOFOLLOW)`, symlinks read with `readlinkat` and their
//!   targets spliced in, `..` popping a stack of directory descriptors that never goes above
//!   the root, and at most 40 symlinks.
//! - Hardlinks only to non-directories that already exist in this layer (it is unpacked into
//!   its own empty directory, so whatever exists came from it).
//! - `trusted.overlay.*` and `user.overlay.*` xattrs from the tar are dropped (never escaped):
//!   they would forge overlay metadata (opaque directories, redirects, metacopy), and the
//!   escaped form `trusted.overlay.overlay.*` only means something to nested overlays on
//!   kernels from 6.7. Dropping needs no kernel support and loses nothing a container needs.
//! - Owner before mode (setuid bits survive), xattrs after owner (file capabilities survive),
//!   directory owner, mode and times last, deepest first.
//! - Caps on total bytes, entries, path length and xattr size ([`UnpackLimits`]); sparse and
//!   multivolume entries are refused; a PAX `size` that disagrees with a non-zero header size,
//!   or data declared for an entry type that has none, is refused (no parser desynchronisation).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Caps on what one layer may make the unpacker do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of the uncompressed tar stream (headers, extended headers, data and padding).
    pub max_bytes: u64,
    /// Entries (files, directories, links, devices, whiteouts, global PAX headers).
    pub max_entries: u64,
    /// Length in bytes of an entry name or link target, as written in the archive.
    pub max_path_len: usize,
    /// Total bytes of xattr names and values on one entry.
    pub max_xattr_bytes: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 64 << 30,
            max_entries: 2_000_000,
            max_path_len: 4096,
            max_xattr_bytes: 64 << 10,
        }
    }
}

impl UnpackLimits {
    /// Largest PAX extended header accepted: two paths, the xattrs with room for record
    /// framing, and 16 KiB for the other records.
    fn max_pax_bytes(&self) -> u64 {
        (self.max_path_len as u64)
            .saturating_mul(2)
            .saturating_add((self.max_xattr_bytes as u64).saturating_mul(2))
            .saturating_add(16 << 10)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?}: {msg}")]
    Entry { path: String, msg: String },
    #[error("layer entry {path:?}: {what} exceeds {limit} ({max})")]
    Limit {
        path: String,
        limit: &'static str,
        max: u64,
        what: String,
    },
    #[error("layer archive, header at byte {offset}: {msg}")]
    Format { offset: u64, msg: String },
    #[error("reading layer: {0}")]
    Read(#[from] io::Error),
}

/// An archive path for messages: lossy UTF-8, cut at 256 characters.
fn show(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    match s.char_indices().nth(256) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.into_owned(),
    }
}

fn entry_err(path: &[u8], msg: impl std::fmt::Display) -> UnpackError {
    UnpackError::Entry {
        path: show(path),
        msg: msg.to_string(),
    }
}

fn limit_err(path: &[u8], limit: &'static str, max: u64, what: String) -> UnpackError {
    UnpackError::Limit {
        path: show(path),
        limit,
        max,
        what,
    }
}

// ---------------------------------------------------------------------------------------------
// The tar reader.

const BLOCK: u64 = 512;

fn padded(size: u64) -> Option<u64> {
    size.checked_add(BLOCK - 1).map(|s| s & !(BLOCK - 1))
}

/// Bytes up to the first NUL.
fn cstr_field(f: &[u8]) -> &[u8] {
    f.iter().position(|&b| b == 0).map_or(f, |n| &f[..n])
}

/// A numeric header field: octal (padded with spaces or NULs) or GNU base-256.
fn parse_num(f: &[u8]) -> Result<u64, String> {
    if let Some(&first) = f.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err("negative base-256 number".into());
            }
            let mut v = u64::from(first & 0x7f);
            for &b in &f[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or("base-256 number too large")?;
            }
            return Ok(v);
        }
    }
    let start = f
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .unwrap_or(f.len());
    let end = f
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(start, |n| n + 1);
    let mut v: u64 = 0;
    for &b in &f[start..end] {
        if !(b'0'..=b'7').contains(&b) {
            return Err(format!("invalid octal number {:?}", show(f)));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or("octal number too large")?;
    }
    Ok(v)
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(n) => (&v[..n], &v[n + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(parse_decimal(int)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: i64 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    Some(match (neg, nsec) {
        (false, _) => (secs, nsec),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

/// PAX records `"<len> <key>=<value>\n"`.
/// PAX records as (key, value).
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_pax(data: &[u8]) -> Result<PaxRecords, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len = parse_decimal(&rest[..sp])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or("PAX record with an invalid length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("malformed PAX record".into());
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

struct Member {
    kind: Kind,
    path: Vec<u8>,
    link: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    dev: (u32, u32),
    xattrs: Vec<(CString, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Link,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Regular => "regular file",
            Kind::Link => "hardlink",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Dir => "directory",
            Kind::Fifo => "FIFO",
        }
    }
}

struct TarReader<'l, R> {
    r: R,
    limits: &'l UnpackLimits,
    /// Bytes of the stream accounted for: read, or declared by a header already read.
    charged: u64,
    /// Data bytes of the current member not yet read, then its padding.
    data_left: u64,
    pad_left: u64,
    entries: u64,
}

impl<'l, R: Read> TarReader<'l, R> {
    fn new(r: R, limits: &'l UnpackLimits) -> Self {
        TarReader {
            r,
            limits,
            charged: 0,
            data_left: 0,
            pad_left: 0,
            entries: 0,
        }
    }

    fn charge(&mut self, n: u64, path: &[u8]) -> Result<(), UnpackError> {
        let total = self.charged.saturating_add(n);
        if total > self.limits.max_bytes {
            return Err(limit_err(
                path,
                "max_bytes",
                self.limits.max_bytes,
                format!("a layer of at least {total} bytes"),
            ));
        }
        self.charged = total;
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes; Ok(false) on EOF before the first byte.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) if n == 0 => return Ok(false),
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            if !self.read_exact_or_eof(&mut buf[..k])? {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads data of the current member.
    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data_left == 0 {
            return Ok(0);
        }
        let k = self.data_left.min(buf.len() as u64) as usize;
        let n = loop {
            match self.r.read(&mut buf[..k]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.data_left -= n as u64;
        Ok(n)
    }

    fn finish_member(&mut self) -> Result<(), UnpackError> {
        let n = self.data_left + self.pad_left;
        self.data_left = 0;
        self.pad_left = 0;
        self.skip(n).map_err(|e| truncated(self.charged, e))
    }

    /// Data of an extended header (size already checked against its cap).
    fn read_ext(&mut self, size: u64, path: &[u8]) -> Result<Vec<u8>, UnpackError> {
        let total = padded(size).ok_or_else(|| entry_err(path, "size overflow"))?;
        self.charge(total, path)?;
        let mut buf = vec![0u8; total as usize];
        match self.read_exact_or_eof(&mut buf) {
            Ok(true) => {}
            Ok(false) => return Err(truncated(self.charged, io::ErrorKind::UnexpectedEof.into())),
            Err(e) => return Err(truncated(self.charged, e)),
        }
        buf.truncate(size as usize);
        Ok(buf)
    }

    fn next_header(&mut self) -> Result<Option<([u8; 512], u64)>, UnpackError> {
        self.finish_member()?;
        let offset = self.charged;
        self.charge(BLOCK, format!("(header at byte {offset})").as_bytes())?;
        let mut h = [0u8; 512];
        match self.read_exact_or_eof(&mut h) {
            Ok(true) => {}
            // A stream that stops at a header boundary has ended.
            Ok(false) => return Ok(None),
            Err(e) => return Err(truncated(offset, e)),
        }
        if h.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let want = parse_num(&h[148..156]).map_err(|msg| UnpackError::Format {
            offset,
            msg: format!("checksum field: {msg}"),
        })?;
        let unsigned: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        let signed: i64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(b as i8)
                }
            })
            .sum();
        if want != unsigned && i64::try_from(want).ok() != Some(signed) {
            return Err(UnpackError::Format {
                offset,
                msg: "header checksum mismatch".into(),
            });
        }
        Ok(Some((h, offset)))
    }

    /// The next entry with its extended headers folded in, its data ready to read.
    fn next_member(&mut self) -> Result<Option<Member>, UnpackError> {
        let mut pax: Option<PaxRecords> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let Some((h, offset)) = self.next_header()? else {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(UnpackError::Format {
                        offset: self.charged,
                        msg: "the archive ends after an extended header, without its entry".into(),
                    });
                }
                return Ok(None);
            };
            let ustar = &h[257..263] == b"ustar\0";
            let mut name = cstr_field(&h[..100]).to_vec();
            if ustar {
                let prefix = cstr_field(&h[345..500]);
                if !prefix.is_empty() {
                    name = [prefix, b"/", &name].concat();
                }
            }
            let typeflag = h[156];
            let fmt = |msg: String| UnpackError::Format { offset, msg };
            let num = |range: std::ops::Range<usize>, what: &str| {
                parse_num(&h[range]).map_err(|m| entry_err(&name, format!("{what} field: {m}")))
            };
            let header_size = num(124..136, "size")?;

            if matches!(typeflag, b'x' | b'g' | b'L' | b'K') {
                // A GNU long name carries its terminating NUL.
                let (cap, shown, limit) = match typeflag {
                    b'L' | b'K' => {
                        let max = self.limits.max_path_len as u64;
                        (max + 1, max, "max_path_len")
                    }
                    _ => (
                        self.limits.max_pax_bytes(),
                        self.limits.max_pax_bytes(),
                        "the PAX header cap derived from max_path_len and max_xattr_bytes",
                    ),
                };
                if header_size > cap {
                    let what = match typeflag {
                        b'L' => format!("a GNU long name of {} bytes", header_size - 1),
                        b'K' => format!("a GNU long link name of {} bytes", header_size - 1),
                        _ => format!("a PAX header of {header_size} bytes"),
                    };
                    return Err(limit_err(&name, limit, shown, what));
                }
                let data = self.read_ext(header_size, &name)?;
                match typeflag {
                    b'g' => {
                        // Global headers are not applied (as containerd); they count as entries.
                        self.count_entry(&name)?;
                        parse_pax(&data).map_err(fmt)?;
                    }
                    b'x' if pax.is_some() => {
                        return Err(fmt("two PAX headers for one entry".into()))
                    }
                    b'x' => pax = Some(parse_pax(&data).map_err(fmt)?),
                    b'L' if long_name.is_some() => {
                        return Err(fmt("two GNU long names for one entry".into()))
                    }
                    b'L' => long_name = Some(cstr_field(&data).to_vec()),
                    _ if long_link.is_some() => {
                        return Err(fmt("two GNU long link names for one entry".into()))
                    }
                    _ => long_link = Some(cstr_field(&data).to_vec()),
                }
                continue;
            }

            let mut path = long_name.take().unwrap_or(name.clone());
            let mut link = long_link
                .take()
                .unwrap_or_else(|| cstr_field(&h[157..257]).to_vec());
            let mut size = header_size;
            let mut uid = num(108..116, "uid")?;
            let mut gid = num(116..124, "gid")?;
            let mut mtime = (
                i64::try_from(num(136..148, "mtime")?).unwrap_or(i64::MAX),
                0,
            );
            let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut pax_size = None;
            for (k, v) in pax.take().unwrap_or_default() {
                let bad =
                    |what: &str| entry_err(&path, format!("invalid PAX {what} {:?}", show(&v)));
                match &k[..] {
                    b"path" if !v.is_empty() => path = v,
                    b"linkpath" if !v.is_empty() => link = v,
                    b"size" if !v.is_empty() => {
                        pax_size = Some(parse_decimal(&v).ok_or_else(|| bad("size"))?)
                    }
                    b"uid" if !v.is_empty() => uid = parse_decimal(&v).ok_or_else(|| bad("uid"))?,
                    b"gid" if !v.is_empty() => gid = parse_decimal(&v).ok_or_else(|| bad("gid"))?,
                    b"mtime" if !v.is_empty() => {
                        mtime = parse_pax_time(&v).ok_or_else(|| bad("mtime"))?
                    }
                    _ if k.starts_with(b"GNU.sparse.") => {
                        return Err(entry_err(&path, "sparse files are not supported"))
                    }
                    _ => {
                        if let Some(n) = k.strip_prefix(b"SCHILY.xattr.") {
                            match xattrs.iter_mut().find(|(name, _)| name == n) {
                                Some(x) => x.1 = v,
                                None => xattrs.push((n.to_vec(), v)),
                            }
                        }
                    }
                }
            }
            let max_path = self.limits.max_path_len;
            for (what, p) in [("an entry name", &path), ("a link target", &link)] {
                if p.len() > max_path {
                    return Err(limit_err(
                        &path,
                        "max_path_len",
                        max_path as u64,
                        format!("{what} of {} bytes", p.len()),
                    ));
                }
            }
            self.count_entry(&path)?;
            if let Some(ps) = pax_size {
                if header_size != 0 && ps != header_size {
                    return Err(entry_err(
                        &path,
                        format!("PAX size {ps} disagrees with the header size {header_size}"),
                    ));
                }
                size = ps;
            }
            let kind = match typeflag {
                b'0' | b'7' => Kind::Regular,
                // Pre-POSIX archives mark directories with a trailing slash only.
                0 if path.ends_with(b"/") => Kind::Dir,
                0 => Kind::Regular,
                b'1' => Kind::Link,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'S' => return Err(entry_err(&path, "sparse files are not supported")),
                b'M' => {
                    return Err(entry_err(
                        &path,
                        "multivolume continuation entries are not supported",
                    ))
                }
                t => {
                    return Err(entry_err(
                        &path,
                        format!("unsupported entry type {:?}", char::from(t)),
                    ))
                }
            };
            if kind != Kind::Regular && size != 0 {
                return Err(entry_err(
                    &path,
                    format!("a {} entry declares {size} bytes of data", kind.name()),
                ));
            }
            let mut xattr_bytes = 0usize;
            let mut named = Vec::new();
            for (n, v) in xattrs {
                xattr_bytes = xattr_bytes.saturating_add(n.len() + v.len());
                if xattr_bytes > self.limits.max_xattr_bytes {
                    return Err(limit_err(
                        &path,
                        "max_xattr_bytes",
                        self.limits.max_xattr_bytes as u64,
                        format!("an xattr set of at least {xattr_bytes} bytes"),
                    ));
                }
                let n = CString::new(n)
                    .ok()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| entry_err(&path, "invalid xattr name"))?;
                named.push((n, v));
            }
            let uid = u32::try_from(uid)
                .map_err(|_| entry_err(&path, format!("uid {uid} out of range")))?;
            let gid = u32::try_from(gid)
                .map_err(|_| entry_err(&path, format!("gid {gid} out of range")))?;
            let mode = num(100..108, "mode")? as u32 & 0o7777;
            let dev = if matches!(kind, Kind::Char | Kind::Block) {
                let major = u32::try_from(num(329..337, "devmajor")?);
                let minor = u32::try_from(num(337..345, "devminor")?);
                match (major, minor) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => return Err(entry_err(&path, "device number out of range")),
                }
            } else {
                (0, 0)
            };
            let total = padded(size).ok_or_else(|| entry_err(&path, "size overflow"))?;
            self.charge(total, &path)?;
            self.data_left = size;
            self.pad_left = total - size;
            return Ok(Some(Member {
                kind,
                path,
                link,
                mode,
                uid,
                gid,
                mtime,
                dev,
                xattrs: named,
            }));
        }
    }

    fn count_entry(&mut self, path: &[u8]) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(limit_err(
                path,
                "max_entries",
                self.limits.max_entries,
                format!("entry number {}", self.entries),
            ));
        }
        Ok(())
    }
}

fn truncated(offset: u64, e: io::Error) -> UnpackError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        UnpackError::Format {
            offset,
            msg: "the archive is truncated".into(),
        }
    } else {
        UnpackError::Read(e)
    }
}

/// `io::copy` with the caller's buffer (std's is 8 KiB: a syscall per 8 KiB written).
fn copy_with<R: Read, W: io::Write>(r: &mut R, w: &mut W, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        // Fill the buffer as far as the reader gives, so that each write is large.
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n])?;
        total += n as u64;
        if n < buf.len() {
            return Ok(total);
        }
    }
}

struct MemberData<'a, 'l, R>(&'a mut TarReader<'l, R>);

impl<R: Read> Read for MemberData<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf)
    }
}

// ---------------------------------------------------------------------------------------------
// Filesystem primitives, all relative to directory descriptors.

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn cname(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn openat(
    dir: BorrowedFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    loop {
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if errno(&e) != libc::EINTR {
            return Err(e);
        }
    }
}

/// The directory itself, readable (from an `O_PATH` descriptor of it).
fn reopen_dir(dir: BorrowedFd) -> io::Result<OwnedFd> {
    openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

fn lstatat(dir: BorrowedFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match cvt(rc) {
        Ok(_) => Ok(Some(unsafe { st.assume_init() })),
        Err(e) if errno(&e) == libc::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

fn file_type(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

fn is_whiteout(st: &libc::stat) -> bool {
    file_type(st) == libc::S_IFCHR && st.st_rdev == 0
}

fn mkdirat(dir: BorrowedFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

fn unlinkat(dir: BorrowedFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Removes `name` in `dir`, recursively when it is a directory; never follows a symlink.
fn remove_all_at(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    match unlinkat(dir, name, 0) {
        Ok(()) => return Ok(()),
        Err(e) if matches!(errno(&e), libc::EISDIR | libc::EPERM) => {}
        Err(e) => return Err(e),
    }
    let d = openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    let mut names = Vec::new();
    let mut listing = nix::dir::Dir::from(d.try_clone()?).map_err(io::Error::from)?;
    for e in listing.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    drop(listing);
    for n in names {
        remove_all_at(d.as_fd(), &n)?;
    }
    unlinkat(dir, name, libc::AT_REMOVEDIR)
}

fn readlink_fd(fd: BorrowedFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn fsetxattr(fd: BorrowedFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// `lsetxattr` on `name` inside the directory `dir`, without following `name`.
fn lsetxattr_at(dir: BorrowedFd, name: &CStr, xname: &CStr, value: &[u8]) -> io::Result<()> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    let p = cname(&p)?;
    cvt(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            xname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

fn fchownat_nofollow(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// chmod of `name` in `dir`, refusing a symlink: through `/proc/self/fd` of an `O_PATH`
/// descriptor, so the inode checked is the inode changed.
fn chmod_nofollow(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    let fd = openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    if file_type(&fstat(fd.as_fd())?) == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let p = cname(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    cvt(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }).map(drop)
}

fn timespecs(mtime: (i64, i64)) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime.0 as _,
        tv_nsec: mtime.1 as _,
    };
    [ts, ts]
}

fn utimensat_nofollow(dir: BorrowedFd, name: &CStr, mtime: (i64, i64)) -> io::Result<()> {
    let t = timespecs(mtime);
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

fn futimens(fd: BorrowedFd, mtime: (i64, i64)) -> io::Result<()> {
    let t = timespecs(mtime);
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), t.as_ptr()) }).map(drop)
}

fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

// ---------------------------------------------------------------------------------------------
// Resolution inside the layer root.

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(dir, path, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
fn openat2_dir_in_root(dir: BorrowedFd, path: &CStr) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // EAGAIN: a concurrent rename raced with `..` resolution; the kernel asks for a retry.
    for _ in 0..64 {
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if rc >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        let e = io::Error::last_os_error();
        if !matches!(errno(&e), libc::EAGAIN | libc::EINTR) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Symlinks followed in one resolution before ELOOP, as the kernel's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;

struct Root {
    /// `O_PATH | O_DIRECTORY` descriptor of the layer directory.
    fd: OwnedFd,
    openat2: bool,
}

impl Root {
    fn open(path: &Path, allow_openat2: bool) -> io::Result<Root> {
        let p = cname(path.as_os_str().as_bytes())?;
        let fd = cvt(unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let openat2 = allow_openat2
            && match openat2_dir_in_root(fd.as_fd(), c".") {
                Ok(_) => true,
                // Kernel before 5.6 (ENOSYS), or a seccomp filter that refuses it.
                Err(e)
                    if matches!(
                        errno(&e),
                        libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG
                    ) =>
                {
                    false
                }
                Err(e) => return Err(e),
            };
        Ok(Root { fd, openat2 })
    }

    /// An `O_PATH` descriptor of the directory named by `comps` (free of `.` and `..`), with
    /// symlinks followed inside the root. When `create` is set, missing components named by
    /// `comps` are created 0755 (not those reached through a symlink target).
    fn dir(&self, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        if self.openat2 {
            self.dir_openat2(comps, create)
        } else {
            self.dir_walk(comps, create)
        }
    }

    fn dir_openat2(&self, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        let join = |n: usize| -> io::Result<CString> {
            if n == 0 {
                return Ok(c".".to_owned());
            }
            cname(&comps[..n].join(&b'/'))
        };
        match openat2_dir_in_root(self.fd.as_fd(), &join(comps.len())?) {
            Err(e) if create && errno(&e) == libc::ENOENT => {}
            r => return r,
        }
        let mut cur = openat2_dir_in_root(self.fd.as_fd(), c".")?;
        for (i, comp) in comps.iter().enumerate() {
            let prefix = join(i + 1)?;
            cur = match openat2_dir_in_root(self.fd.as_fd(), &prefix) {
                Err(e) if errno(&e) == libc::ENOENT => {
                    // Missing in the directory reached so far: create it there. EEXIST means
                    // a symlink that leads nowhere, which the retry reports as ENOENT.
                    match mkdirat(cur.as_fd(), &cname(comp)?, 0o755) {
                        Err(e) if errno(&e) != libc::EEXIST => return Err(e),
                        _ => {}
                    }
                    openat2_dir_in_root(self.fd.as_fd(), &prefix)?
                }
                r => r?,
            };
        }
        Ok(cur)
    }

    /// The same resolution as `RESOLVE_IN_ROOT`, one component at a time.
    fn dir_walk(&self, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
        // Directories from the root down to where we are; `..` pops, never above the root.
        let mut stack: Vec<OwnedFd> = Vec::new();
        // Components still to walk; the flag marks those that come from a symlink target.
        let mut todo: VecDeque<(Vec<u8>, bool)> =
            comps.iter().map(|c| (c.to_vec(), false)).collect();
        let mut links = 0;
        while let Some((c, from_link)) = todo.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                stack.pop();
                continue;
            }
            let cur = stack.last().map_or(self.fd.as_fd(), |f| f.as_fd());
            let name = cname(&c)?;
            let fd = match openat(cur, &name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                Err(e) if errno(&e) == libc::ENOENT && create && !from_link => {
                    match mkdirat(cur, &name, 0o755) {
                        Err(e) if errno(&e) != libc::EEXIST => return Err(e),
                        _ => {}
                    }
                    openat(cur, &name, libc::O_PATH | libc::O_NOFOLLOW, 0)?
                }
                r => r?,
            };
            match file_type(&fstat(fd.as_fd())?) {
                libc::S_IFDIR => stack.push(fd),
                libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = readlink_fd(fd.as_fd())?;
                    if target.is_empty() {
                        return Err(io::Error::from_raw_os_error(libc::ENOENT));
                    }
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        todo.push_front((part.to_vec(), true));
                    }
                }
                _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            }
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => openat(self.fd.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0),
        }
    }
}

fn parent_err(path: &[u8], e: io::Error) -> UnpackError {
    let msg = match errno(&e) {
        libc::ENOENT => "a symlink in the parent path leads nowhere inside the layer".to_string(),
        libc::ELOOP => "too many symlinks (or a loop) in the parent path".to_string(),
        libc::ENOTDIR => "a component of the parent path is not a directory".to_string(),
        _ => format!("parent directory: {e}"),
    };
    entry_err(path, msg)
}

/// Components of an archive path: made relative, `.` and empty ones dropped; `..` refused.
fn components(p: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path leaves the layer root"),
            _ if c.contains(&0) => return Err("path contains a NUL byte"),
            _ => out.push(c),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Applying entries.

const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// Where xattrs of an entry go.
enum XattrTarget<'a> {
    /// A real (not `O_PATH`) descriptor of the file or directory.
    Fd(BorrowedFd<'a>),
    /// A symlink, device or FIFO: `name` in `dir`, never followed.
    At(BorrowedFd<'a>, &'a CStr),
}

fn forged_overlay_xattr(name: &CStr) -> bool {
    let n = name.to_bytes();
    n.starts_with(b"trusted.overlay.") || n.starts_with(b"user.overlay.")
}

fn set_xattrs(target: XattrTarget, m: &Member) -> Result<(), UnpackError> {
    for (n, v) in &m.xattrs {
        if forged_overlay_xattr(n) {
            tracing::warn!(entry = %show(&m.path), xattr = ?n, "dropping overlay xattr from the layer");
            continue;
        }
        let r = match target {
            XattrTarget::Fd(fd) => fsetxattr(fd, n, v),
            XattrTarget::At(dir, name) => lsetxattr_at(dir, name, n, v),
        };
        if let Err(e) = r {
            let skippable = errno(&e) == libc::EOPNOTSUPP
                || (errno(&e) == libc::EPERM && matches!(target, XattrTarget::At(..)));
            if !skippable {
                return Err(entry_err(&m.path, format!("xattr {n:?}: {e}")));
            }
            tracing::warn!(entry = %show(&m.path), xattr = ?n, error = %e, "xattr not supported here; skipped");
        }
    }
    Ok(())
}

fn set_opaque(dir: BorrowedFd, path: &[u8]) -> Result<(), UnpackError> {
    let fd = reopen_dir(dir).map_err(|e| entry_err(path, format!("opaque directory: {e}")))?;
    fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y")
        .map_err(|e| entry_err(path, format!("opaque directory: {e}")))
}

/// Directory attributes applied once everything else is in place.
struct DirRecord {
    /// The directory's path in the layer, `/`-separated (empty: the root).
    path: Vec<u8>,
    depth: usize,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
}

/// What was in the way of a new entry.
enum Cleared {
    Nothing,
    KeptDir,
    Whiteout,
    Other,
}

/// Removes what is at `name` (unless it is a directory and `keep_dir`).
fn clear(dir: BorrowedFd, name: &CStr, keep_dir: bool) -> io::Result<Cleared> {
    let Some(st) = lstatat(dir, name)? else {
        return Ok(Cleared::Nothing);
    };
    if keep_dir && file_type(&st) == libc::S_IFDIR {
        return Ok(Cleared::KeptDir);
    }
    remove_all_at(dir, name)?;
    Ok(if is_whiteout(&st) {
        Cleared::Whiteout
    } else {
        Cleared::Other
    })
}

struct Applier<'a> {
    root: &'a Root,
    /// By (device, inode): the last entry for a directory wins.
    dirs: HashMap<(u64, u64), DirRecord>,
    /// Reused for file data: large writes, few syscalls.
    buf: Vec<u8>,
}

/// Bytes moved per read/write of file data.
const COPY_CHUNK: usize = 256 * 1024;

impl Applier<'_> {
    fn apply<R: Read>(&mut self, m: &Member, tar: &mut TarReader<R>) -> Result<(), UnpackError> {
        let path = &m.path[..];
        let comps = components(path).map_err(|msg| entry_err(path, msg))?;
        let Some((&name, parents)) = comps.split_last() else {
            if m.kind != Kind::Dir {
                return Err(entry_err(path, "entry would replace the layer root"));
            }
            let dir = self.root.dir(&[], false).map_err(|e| parent_err(path, e))?;
            return self.directory_attrs(m, &[], dir.as_fd());
        };
        // aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`, ...) has no meaning in overlay.
        if parents.iter().any(|c| c.starts_with(b".wh..wh."))
            || (name.starts_with(b".wh..wh.") && name != b".wh..wh..opq")
        {
            tracing::debug!(entry = %show(path), "skipping aufs metadata");
            return Ok(());
        }
        let parent = self
            .root
            .dir(parents, true)
            .map_err(|e| parent_err(path, e))?;
        let parent = parent.as_fd();
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            return whiteout(parent, hidden, path);
        }
        let cn = cname(name).map_err(|_| entry_err(path, "path contains a NUL byte"))?;
        let fail = |what: &str, e: io::Error| entry_err(path, format!("{what}: {e}"));
        match m.kind {
            Kind::Dir => {
                let was = clear(parent, &cn, true).map_err(|e| fail("replacing", e))?;
                if !matches!(was, Cleared::KeptDir) {
                    mkdirat(parent, &cn, 0o700).map_err(|e| fail("mkdir", e))?;
                }
                let fd = openat(
                    parent,
                    &cn,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| fail("open directory", e))?;
                if matches!(was, Cleared::Whiteout) {
                    // A whiteout then a directory in one layer: the directory replaces the
                    // lower one instead of merging with it.
                    set_opaque(fd.as_fd(), path)?;
                }
                self.directory_attrs(m, &comps, fd.as_fd())
            }
            Kind::Regular => {
                clear(parent, &cn, false).map_err(|e| fail("replacing", e))?;
                let fd = openat(
                    parent,
                    &cn,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(|e| fail("create", e))?;
                let mut f = File::from(fd);
                let mut buf = std::mem::take(&mut self.buf);
                buf.resize(COPY_CHUNK, 0);
                let copied = copy_with(&mut MemberData(tar), &mut f, &mut buf);
                self.buf = buf;
                copied.map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => UnpackError::Format {
                        offset: tar.charged,
                        msg: format!("the archive is truncated inside {:?}", show(path)),
                    },
                    _ => fail("write", e),
                })?;
                fchown(f.as_fd(), m.uid, m.gid).map_err(|e| fail("chown", e))?;
                fchmod(f.as_fd(), m.mode).map_err(|e| fail("chmod", e))?;
                set_xattrs(XattrTarget::Fd(f.as_fd()), m)?;
                futimens(f.as_fd(), m.mtime).map_err(|e| fail("mtime", e))
            }
            Kind::Symlink => {
                if m.link.is_empty() {
                    return Err(entry_err(path, "symlink without a target"));
                }
                let target = cname(&m.link)
                    .map_err(|_| entry_err(path, "symlink target contains a NUL byte"))?;
                clear(parent, &cn, false).map_err(|e| fail("replacing", e))?;
                cvt(unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), cn.as_ptr()) })
                    .map_err(|e| fail("symlink", e))?;
                fchownat_nofollow(parent, &cn, m.uid, m.gid).map_err(|e| fail("chown", e))?;
                set_xattrs(XattrTarget::At(parent, &cn), m)?;
                utimensat_nofollow(parent, &cn, m.mtime).map_err(|e| fail("mtime", e))
            }
            Kind::Link => self.hardlink(m, parent, &cn),
            Kind::Char | Kind::Block | Kind::Fifo => {
                clear(parent, &cn, false).map_err(|e| fail("replacing", e))?;
                let t = match m.kind {
                    Kind::Char => libc::S_IFCHR,
                    Kind::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let dev = libc::makedev(m.dev.0, m.dev.1);
                let rc =
                    cvt(unsafe { libc::mknodat(parent.as_raw_fd(), cn.as_ptr(), t | 0o600, dev) });
                if let Err(e) = rc {
                    if m.kind != Kind::Fifo && matches!(errno(&e), libc::EPERM | libc::EACCES) {
                        // Device nodes need CAP_MKNOD; an image may carry them for nothing.
                        tracing::warn!(entry = %show(path), error = %e, "skipping device node");
                        return Ok(());
                    }
                    return Err(fail("mknod", e));
                }
                fchownat_nofollow(parent, &cn, m.uid, m.gid).map_err(|e| fail("chown", e))?;
                chmod_nofollow(parent, &cn, m.mode).map_err(|e| fail("chmod", e))?;
                set_xattrs(XattrTarget::At(parent, &cn), m)?;
                utimensat_nofollow(parent, &cn, m.mtime).map_err(|e| fail("mtime", e))
            }
        }
    }

    fn hardlink(&mut self, m: &Member, parent: BorrowedFd, cn: &CStr) -> Result<(), UnpackError> {
        let path = &m.path[..];
        let not_earlier = || {
            entry_err(
                path,
                format!(
                    "hardlink target {:?} is not an earlier non-directory entry of this layer",
                    show(&m.link)
                ),
            )
        };
        let tcomps = components(&m.link)
            .map_err(|msg| entry_err(path, format!("hardlink target: {msg}")))?;
        let Some((&tname, tparents)) = tcomps.split_last() else {
            return Err(entry_err(path, "hardlink to the layer root"));
        };
        let tdir = match self.root.dir(tparents, false) {
            Ok(d) => d,
            Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => {
                return Err(not_earlier())
            }
            Err(e) => return Err(parent_err(path, e)),
        };
        let tcn = cname(tname).map_err(|_| not_earlier())?;
        let src = match lstatat(tdir.as_fd(), &tcn) {
            Ok(Some(st)) if file_type(&st) != libc::S_IFDIR => st,
            Ok(_) => return Err(not_earlier()),
            Err(e) => return Err(entry_err(path, format!("hardlink target: {e}"))),
        };
        if let Ok(Some(dst)) = lstatat(parent, cn) {
            if dst.st_dev == src.st_dev && dst.st_ino == src.st_ino {
                return Ok(());
            }
        }
        clear(parent, cn, false).map_err(|e| entry_err(path, format!("replacing: {e}")))?;
        // No AT_SYMLINK_FOLLOW: a symlink is linked itself, never its target.
        cvt(unsafe {
            libc::linkat(
                tdir.as_raw_fd(),
                tcn.as_ptr(),
                parent.as_raw_fd(),
                cn.as_ptr(),
                0,
            )
        })
        .map(drop)
        .map_err(|e| entry_err(path, format!("hardlink: {e}")))
    }

    fn directory_attrs(
        &mut self,
        m: &Member,
        comps: &[&[u8]],
        dir: BorrowedFd,
    ) -> Result<(), UnpackError> {
        let fd = reopen_dir(dir).map_err(|e| entry_err(&m.path, format!("open directory: {e}")))?;
        set_xattrs(XattrTarget::Fd(fd.as_fd()), m)?;
        let st = fstat(fd.as_fd()).map_err(|e| entry_err(&m.path, e))?;
        let record = DirRecord {
            path: comps.join(&b'/'),
            depth: comps.len(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
        };
        self.dirs.insert((st.st_dev, st.st_ino), record);
        Ok(())
    }

    /// Owner, mode and times of directories, deepest first, each on the very directory its
    /// entry made (a directory removed or replaced since is skipped).
    /// Applies directory attributes; returns the inodes of the directories the layer named.
    fn finish(self) -> Result<HashSet<(u64, u64)>, UnpackError> {
        let explicit: HashSet<(u64, u64)> = self.dirs.keys().copied().collect();
        let mut todo: Vec<((u64, u64), DirRecord)> = self.dirs.into_iter().collect();
        todo.sort_by_key(|(_, d)| Reverse(d.depth));
        for ((dev, ino), d) in todo {
            let path = if d.path.is_empty() {
                &b"."[..]
            } else {
                &d.path[..]
            };
            let gone =
                |e: &io::Error| matches!(errno(e), libc::ENOENT | libc::ENOTDIR | libc::ELOOP);
            let comps: Vec<&[u8]> = d
                .path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            let fd = match comps.split_last() {
                None => reopen_dir(self.root.fd.as_fd()),
                Some((name, parents)) => self.root.dir(parents, false).and_then(|p| {
                    openat(
                        p.as_fd(),
                        &cname(name)?,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )
                }),
            };
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(entry_err(path, format!("directory attributes: {e}"))),
            };
            let st = fstat(fd.as_fd()).map_err(|e| entry_err(path, e))?;
            if (st.st_dev, st.st_ino) != (dev, ino) {
                continue;
            }
            let fail = |what: &str, e: io::Error| entry_err(path, format!("{what}: {e}"));
            fchown(fd.as_fd(), d.uid, d.gid).map_err(|e| fail("chown", e))?;
            fchmod(fd.as_fd(), d.mode).map_err(|e| fail("chmod", e))?;
            futimens(fd.as_fd(), d.mtime).map_err(|e| fail("mtime", e))?;
        }
        Ok(explicit)
    }
}

/// `.wh.<hidden>` in `parent`: a 0/0 character device named `hidden`, or for `.wh..wh..opq`
/// the opaque xattr on `parent`. Whiteouts never hide entries of their own layer.
fn whiteout(parent: BorrowedFd, hidden: &[u8], path: &[u8]) -> Result<(), UnpackError> {
    if hidden == b".wh..opq" {
        return set_opaque(parent, path);
    }
    if hidden.is_empty() || hidden == b"." || hidden == b".." {
        return Err(entry_err(path, "invalid whiteout"));
    }
    let cn = cname(hidden).map_err(|_| entry_err(path, "path contains a NUL byte"))?;
    let fail = |e: io::Error| entry_err(path, format!("whiteout: {e}"));
    match lstatat(parent, &cn).map_err(fail)? {
        None => cvt(unsafe { libc::mknodat(parent.as_raw_fd(), cn.as_ptr(), libc::S_IFCHR, 0) })
            .map(drop)
            .map_err(fail),
        Some(st) if is_whiteout(&st) => Ok(()),
        // This layer's directory stays and replaces the lower one.
        Some(st) if file_type(&st) == libc::S_IFDIR => {
            let fd = openat(
                parent,
                &cn,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(fail)?;
            set_opaque(fd.as_fd(), path)
        }
        // This layer's file already hides the lower one.
        Some(_) => Ok(()),
    }
}

/// Applies the layer read from `r` into `root` (an empty directory) with the default limits.
#[cfg_attr(not(test), allow(dead_code))]
pub fn apply_layer<R: Read>(r: R, root: &Path) -> Result<(), UnpackError> {
    apply_layer_with(r, root, &UnpackLimits::default())
}

/// Applies the layer read from `r` into `root` (an empty directory). Reading stops at the end
/// of the archive (the first zero block): trailing bytes are left to the caller.
#[cfg_attr(not(test), allow(dead_code))]
pub fn apply_layer_with<R: Read>(
    r: R,
    root: &Path,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    apply_impl(r, root, limits, true).map(drop)
}

/// Like [`apply_layer_with`], and returns the directories of the layer that no entry named
/// (created as parents of entries, and the root itself unless a `./` entry set it), as paths
/// relative to `root` (`""` for the root). Their attributes should come from the same path in
/// the layers below, as overlayfs shows the topmost directory's attributes.
pub fn apply_layer_tracked<R: Read>(
    r: R,
    root: &Path,
    limits: &UnpackLimits,
) -> Result<Vec<PathBuf>, UnpackError> {
    use std::os::unix::fs::MetadataExt;
    let explicit = apply_impl(r, root, limits, true)?;
    let mut implicit = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let m = std::fs::symlink_metadata(&dir)
            .map_err(|e| entry_err(b".", format!("listing the layer: {e}")))?;
        if !explicit.contains(&(m.dev(), m.ino())) {
            implicit.push(rel.clone());
        }
        for e in std::fs::read_dir(&dir)
            .map_err(|e| entry_err(b".", format!("listing the layer: {e}")))?
        {
            let e = e.map_err(|e| entry_err(b".", format!("listing the layer: {e}")))?;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(rel.join(e.file_name()));
            }
        }
    }
    Ok(implicit)
}

fn apply_impl<R: Read>(
    r: R,
    root: &Path,
    limits: &UnpackLimits,
    allow_openat2: bool,
) -> Result<HashSet<(u64, u64)>, UnpackError> {
    let root_dir = Root::open(root, allow_openat2).map_err(|e| {
        entry_err(
            b".",
            format!("opening the layer directory {}: {e}", root.display()),
        )
    })?;
    let mut tar = TarReader::new(r, limits);
    let mut applier = Applier {
        root: &root_dir,
        dirs: HashMap::new(),
        buf: Vec::new(),
    };
    while let Some(m) = tar.next_member()? {
        applier.apply(&m, &mut tar)?;
    }
    applier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    // ---- Archives written by hand, so that anything hostile can be written ----

    /// One raw ustar header.
    #[derive(Clone)]
    struct H {
        name: Vec<u8>,
        kind: u8,
        link: Vec<u8>,
        size: u64,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        dev: (u32, u32),
    }

    fn h(name: &str, kind: u8) -> H {
        H {
            name: name.as_bytes().to_vec(),
            kind,
            link: Vec::new(),
            size: 0,
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_000_000,
            dev: (0, 0),
        }
    }

    /// Octal when it fits, else GNU base-256.
    fn num_field(f: &mut [u8], v: u64) {
        let digits = f.len() - 1;
        if v < 1u64 << (3 * digits) {
            f.copy_from_slice(format!("{v:0digits$o}\0").as_bytes());
        } else {
            f.fill(0);
            f[0] = 0x80;
            let be = v.to_be_bytes();
            let n = f.len();
            f[n - 8..].copy_from_slice(&be);
        }
    }

    impl H {
        fn link(mut self, l: &str) -> H {
            self.link = l.as_bytes().to_vec();
            self
        }
        fn size(mut self, s: u64) -> H {
            self.size = s;
            self
        }
        fn mode(mut self, m: u32) -> H {
            self.mode = m;
            self
        }
        fn owner(mut self, uid: u64, gid: u64) -> H {
            self.uid = uid;
            self.gid = gid;
            self
        }
        fn mtime(mut self, t: u64) -> H {
            self.mtime = t;
            self
        }
        fn dev(mut self, major: u32, minor: u32) -> H {
            self.dev = (major, minor);
            self
        }
        fn bytes(&self) -> [u8; 512] {
            let mut b = [0u8; 512];
            b[..self.name.len()].copy_from_slice(&self.name);
            num_field(&mut b[100..108], u64::from(self.mode));
            num_field(&mut b[108..116], self.uid);
            num_field(&mut b[116..124], self.gid);
            num_field(&mut b[124..136], self.size);
            num_field(&mut b[136..148], self.mtime);
            b[156] = self.kind;
            b[157..157 + self.link.len()].copy_from_slice(&self.link);
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
            num_field(&mut b[329..337], u64::from(self.dev.0));
            num_field(&mut b[337..345], u64::from(self.dev.1));
            b[148..156].fill(b' ');
            let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
            b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            b
        }
    }

    fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        let mut r = format!("{len} {k}=").into_bytes();
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    }

    #[derive(Default)]
    struct Tar(Vec<u8>);

    impl Tar {
        /// The header as given (its size may disagree with `body`), then `body`, padded.
        fn put(&mut self, h: H, body: &[u8]) -> &mut Tar {
            self.0.extend_from_slice(&h.bytes());
            self.0.extend_from_slice(body);
            self.0.resize(self.0.len().div_ceil(512) * 512, 0);
            self
        }
        fn file(&mut self, name: &str, body: &[u8]) -> &mut Tar {
            self.put(h(name, b'0').size(body.len() as u64), body)
        }
        fn dir(&mut self, name: &str) -> &mut Tar {
            self.put(h(name, b'5'), b"")
        }
        fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
            self.put(h(name, b'2').link(target).mode(0o777), b"")
        }
        fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
            self.put(h(name, b'1').link(target), b"")
        }
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
            let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            self.put(h("PaxHeaders/entry", b'x').size(data.len() as u64), &data)
        }
        fn gnu_long(&mut self, kind: u8, value: &[u8]) -> &mut Tar {
            let mut v = value.to_vec();
            v.push(0);
            self.put(h("././@LongLink", kind).size(v.len() as u64), &v)
        }
        fn raw(&mut self, bytes: &[u8]) -> &mut Tar {
            self.0.extend_from_slice(bytes);
            self
        }
        fn end(&mut self) -> Vec<u8> {
            let mut v = std::mem::take(&mut self.0);
            v.extend_from_slice(&[0u8; 1024]);
            v
        }
    }

    // ---- Sandboxes ----

    fn evil() -> String {
        format!("skiff-evil-{}", std::process::id())
    }

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// `dir/` holds the layer root `dir/root/` and things outside it in `dir/outside/`.
    struct Sandbox {
        dir: PathBuf,
        root: PathBuf,
        outside: PathBuf,
        victim: PathBuf,
        before: Vec<String>,
    }

    impl Sandbox {
        fn new(tag: &str) -> Sandbox {
            let dir = std::env::temp_dir().join(format!(
                "skiff-hostile-{}-{}-{tag}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            let root = dir.join("root");
            let outside = dir.join("outside");
            fs::create_dir_all(&root).unwrap();
            fs::create_dir_all(outside.join("sub")).unwrap();
            fs::write(outside.join("sub/inner"), b"inner").unwrap();
            fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o751)).unwrap();
            let victim = outside.join("victim");
            fs::write(&victim, b"victim").unwrap();
            fs::set_permissions(&victim, fs::Permissions::from_mode(0o604)).unwrap();
            let f = fs::File::options().write(true).open(&victim).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(12345))
                .unwrap();
            drop(f);
            let before = listing(&dir, &root);
            Sandbox {
                dir,
                root,
                outside,
                victim,
                before,
            }
        }

        fn outside_str(&self) -> String {
            self.outside.display().to_string()
        }

        fn victim_str(&self) -> String {
            self.victim.display().to_string()
        }

        /// Nothing outside the root changed, and no escape marker exists on the host.
        fn assert_untouched(&self, what: &str) {
            assert_eq!(
                listing(&self.dir, &self.root),
                self.before,
                "{what}: the sandbox outside the root changed"
            );
            let e = evil();
            for d in [
                Path::new("/"),
                Path::new("/tmp"),
                Path::new("/etc"),
                &std::env::temp_dir(),
                self.dir.parent().unwrap(),
                &self.dir,
                &self.outside,
            ] {
                assert!(
                    fs::symlink_metadata(d.join(&e)).is_err(),
                    "{what}: {} escaped",
                    d.join(&e).display()
                );
            }
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn xattrs_of(p: &Path) -> Vec<(String, Vec<u8>)> {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        let mut names = vec![0u8; 65536];
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        assert!(n >= 0, "llistxattr {}", p.display());
        names.truncate(n as usize);
        let mut out = Vec::new();
        for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let cn = CString::new(name).unwrap();
            let mut v = vec![0u8; 65536];
            let k =
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            assert!(k >= 0);
            v.truncate(k as usize);
            out.push((String::from_utf8_lossy(name).into_owned(), v));
        }
        out.sort();
        out
    }

    /// Whether the filesystem of directory `dir` takes `user.*` xattrs (tmpfs before Linux
    /// 6.6 does not: the applier then skips them with a warning, as containerd does).
    fn user_xattrs_on(dir: &Path) -> bool {
        let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let n = c"user.skiff-probe";
        let set = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        if set == 0 {
            unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
        }
        set == 0
    }

    /// A `user.*` xattr the layer sets: `want` where the filesystem takes them, else none.
    fn assert_user_xattr(p: &Path, name: &str, want: &[u8]) {
        let root = p.ancestors().find(|a| a.is_dir()).unwrap();
        let expected = user_xattrs_on(root).then(|| want.to_vec());
        assert_eq!(xattr(p, name), expected, "{} {name}", p.display());
    }

    fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        xattrs_of(p)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Everything below `dir` except `skip`: type, mode, owner, links, size, times, device,
    /// symlink target, content and xattrs.
    fn listing(dir: &Path, skip: &Path) -> Vec<String> {
        fn walk(base: &Path, p: &Path, skip: &Path, out: &mut Vec<String>) {
            let m = fs::symlink_metadata(p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let mut line = format!(
                "{rel} {:o} {}:{} n{} s{} m{}.{} r{}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.rdev()
            );
            if m.file_type().is_symlink() {
                line += &format!(" -> {}", fs::read_link(p).unwrap().display());
            } else if m.is_file() {
                line += &format!(" {:?}", fs::read(p).unwrap());
            }
            line += &format!(" {:?}", xattrs_of(p));
            out.push(line);
            if m.is_dir() {
                let mut kids: Vec<PathBuf> = fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                kids.sort();
                for k in kids {
                    if k != skip {
                        walk(base, &k, skip, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, skip, &mut out);
        out
    }

    /// A reader that counts what was read through it.
    struct Counted<'a, R> {
        inner: R,
        read: &'a std::cell::Cell<u64>,
    }

    impl<R: Read> Read for Counted<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    /// Applies `data` (gzipped or plain); `read` counts the uncompressed bytes the applier
    /// took from the stream.
    fn apply_mode(
        data: &[u8],
        gzipped: bool,
        root: &Path,
        limits: &UnpackLimits,
        walk: bool,
        read: &std::cell::Cell<u64>,
    ) -> Result<(), UnpackError> {
        if gzipped {
            let inner = flate2::read::GzDecoder::new(data);
            apply_impl(Counted { inner, read }, root, limits, !walk).map(drop)
        } else {
            apply_impl(Counted { inner: data, read }, root, limits, !walk).map(drop)
        }
    }

    enum Expect {
        Ok,
        /// The error message contains this.
        Err(&'static str),
    }

    /// Applies the archive `build` makes in a fresh sandbox, with openat2 and with the
    /// user-space walk; checks the outcome, then `check`, then that nothing outside changed.
    fn hostile(
        tag: &str,
        limits: &UnpackLimits,
        build: impl Fn(&Sandbox) -> Vec<u8>,
        expect: Expect,
        check: impl Fn(&Sandbox),
    ) {
        hostile_with(tag, limits, false, build, expect, check);
    }

    /// As `hostile`, `gzipped` archives through flate2's decoder; returns the longest apply.
    fn hostile_with(
        tag: &str,
        limits: &UnpackLimits,
        gzipped: bool,
        build: impl Fn(&Sandbox) -> Vec<u8>,
        expect: Expect,
        check: impl Fn(&Sandbox),
    ) -> u64 {
        let mut most = 0;
        for walk in [false, true] {
            let what = format!("{tag} ({})", if walk { "walk" } else { "openat2" });
            let sb = Sandbox::new(tag);
            let data = build(&sb);
            let read = std::cell::Cell::new(0);
            let r = apply_mode(&data, gzipped, &sb.root, limits, walk, &read);
            most = most.max(read.get());
            match (&expect, r) {
                (Expect::Ok, Ok(())) => {}
                (Expect::Ok, Err(e)) => panic!("{what}: expected a safe unpack, got: {e}"),
                (Expect::Err(want), Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(want), "{what}: error {msg:?} lacks {want:?}");
                }
                (Expect::Err(want), Ok(())) => panic!("{what}: expected an error ({want}), got Ok"),
            }
            check(&sb);
            sb.assert_untouched(&what);
        }
        most
    }

    fn def() -> UnpackLimits {
        UnpackLimits::default()
    }

    fn none(_: &Sandbox) {}

    fn is_whiteout_at(p: &Path) -> bool {
        let m = fs::symlink_metadata(p).unwrap();
        m.file_type().is_char_device() && m.rdev() == 0
    }

    // ---- Hostile layers ----

    #[test]
    fn openat2_is_used_on_this_kernel() {
        let sb = Sandbox::new("probe");
        assert!(
            Root::open(&sb.root, true).unwrap().openat2,
            "kernel >= 5.6 expected"
        );
        assert!(!Root::open(&sb.root, false).unwrap().openat2);
    }

    #[test]
    fn dotdot_names_are_refused() {
        let e = evil();
        for (tag, name) in [
            ("dotdot", format!("../{e}")),
            ("dotdot-deep", format!("a/b/../../../../../../../tmp/{e}")),
            ("dotdot-middle", format!("a/../../{e}")),
            ("dotdot-alone", "..".to_string()),
            ("dotdot-trailing", "a/..".to_string()),
        ] {
            hostile(
                tag,
                &def(),
                |_| Tar::default().file(&name, b"x").end(),
                Expect::Err("leaves the layer root"),
                none,
            );
        }
    }

    #[test]
    fn absolute_names_land_inside() {
        let e = evil();
        hostile(
            "absolute",
            &def(),
            |sb| {
                Tar::default()
                    .file(&format!("/etc/{e}"), b"x")
                    .file(&format!("//tmp/{e}"), b"y")
                    .put(h("victim", b'0').size(5), b"pwned")
                    .pax(&[("path", sb.victim_str().as_bytes())])
                    .file("placeholder", b"pwned")
                    .end()
            },
            Expect::Ok,
            |sb| {
                assert_eq!(fs::read(sb.root.join("etc").join(&e)).unwrap(), b"x");
                assert_eq!(fs::read(sb.root.join("tmp").join(&e)).unwrap(), b"y");
                let inside = sb.root.join(sb.victim.strip_prefix("/").unwrap());
                assert_eq!(fs::read(inside).unwrap(), b"pwned");
            },
        );
    }

    #[test]
    fn symlink_to_host_root_then_write_through() {
        let e = evil();
        hostile(
            "symlink-slash",
            &def(),
            |_| {
                Tar::default()
                    .symlink("s", "/")
                    .file(&format!("s/tmp/{e}"), b"x")
                    .file(&format!("s/{e}"), b"y")
                    .end()
            },
            Expect::Ok,
            |sb| {
                assert_eq!(fs::read(sb.root.join("tmp").join(&e)).unwrap(), b"x");
                assert_eq!(fs::read(sb.root.join(&e)).unwrap(), b"y");
            },
        );
    }

    #[test]
    fn symlink_to_etc_then_write_through() {
        let e = evil();
        hostile(
            "symlink-etc-missing",
            &def(),
            |_| {
                Tar::default()
                    .symlink("s", "/etc")
                    .file(&format!("s/{e}"), b"x")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
        hostile(
            "symlink-etc-present",
            &def(),
            |_| {
                Tar::default()
                    .dir("etc/")
                    .symlink("s", "/etc")
                    .file(&format!("s/{e}"), b"x")
                    .end()
            },
            Expect::Ok,
            |sb| assert_eq!(fs::read(sb.root.join("etc").join(&e)).unwrap(), b"x"),
        );
    }

    #[test]
    fn symlink_to_outside_absolute_then_write_through() {
        hostile(
            "symlink-outside",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("s", &sb.outside_str())
                    .file("s/victim", b"pwned")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
    }

    #[test]
    fn relative_symlink_up_then_write_through() {
        let e = evil();
        hostile(
            "symlink-up",
            &def(),
            |_| {
                Tar::default()
                    .symlink("a", "../../..")
                    .file(&format!("a/{e}"), b"x")
                    .end()
            },
            Expect::Ok,
            |sb| assert_eq!(fs::read(sb.root.join(&e)).unwrap(), b"x"),
        );
        hostile(
            "symlink-up-outside",
            &def(),
            |_| {
                Tar::default()
                    .dir("d/")
                    .symlink("d/a", "../../outside")
                    .file("d/a/victim", b"pwned")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
    }

    #[test]
    fn chained_symlinks() {
        let e = evil();
        hostile(
            "chain-up",
            &def(),
            |_| {
                Tar::default()
                    .symlink("a", "b")
                    .symlink("b", "c/../d")
                    .dir("c/")
                    .symlink("d", "../../../")
                    .file(&format!("a/{e}"), b"x")
                    .end()
            },
            Expect::Ok,
            |sb| assert_eq!(fs::read(sb.root.join(&e)).unwrap(), b"x"),
        );
        hostile(
            "chain-outside",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("a", "b")
                    .symlink("b", &sb.outside_str())
                    .file("a/victim", b"pwned")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
    }

    #[test]
    fn symlink_loops() {
        hostile(
            "loop-pair",
            &def(),
            |_| {
                Tar::default()
                    .symlink("a", "b")
                    .symlink("b", "a")
                    .file("a/x", b"x")
                    .end()
            },
            Expect::Err("too many symlinks"),
            none,
        );
        hostile(
            "loop-self",
            &def(),
            |_| Tar::default().symlink("a", "a/x").file("a/y", b"x").end(),
            Expect::Err("too many symlinks"),
            none,
        );
        hostile(
            "chain-41",
            &def(),
            |_| {
                let mut t = Tar::default();
                t.dir("z/");
                for i in 0..41 {
                    t.symlink(&format!("l{i}"), &format!("l{}", i + 1));
                }
                t.symlink("l41", "z");
                t.file("l0/x", b"x").end()
            },
            Expect::Err("too many symlinks"),
            none,
        );
    }

    #[test]
    fn root_entry_that_is_not_a_directory() {
        for (tag, name, kind) in [
            ("root-dot-symlink", ".", b'2'),
            ("root-dotslash-symlink", "./", b'2'),
            ("root-slash-symlink", "/", b'2'),
            ("root-dot-hardlink", ".", b'1'),
            ("root-dot-file", "./", b'0'),
        ] {
            hostile(
                tag,
                &def(),
                |sb| {
                    Tar::default()
                        .put(h(name, kind).link(&sb.outside_str()), b"")
                        .file("victim", b"pwned")
                        .end()
                },
                Expect::Err("replace the layer root"),
                none,
            );
        }
    }

    #[test]
    fn directory_replaced_by_symlink_then_write_through() {
        hostile(
            "dir-to-symlink-outside",
            &def(),
            |sb| {
                Tar::default()
                    .dir("d/")
                    .file("d/f", b"f")
                    .symlink("d", &sb.outside_str())
                    .file("d/victim", b"pwned")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
        let e = evil();
        hostile(
            "dir-to-symlink-slash",
            &def(),
            |_| {
                Tar::default()
                    .dir("d/")
                    .file("d/f", b"f")
                    .symlink("d", "/")
                    .file(&format!("d/{e}"), b"x")
                    .end()
            },
            Expect::Ok,
            |sb| {
                assert_eq!(fs::read(sb.root.join(&e)).unwrap(), b"x");
                assert!(fs::symlink_metadata(sb.root.join("d"))
                    .unwrap()
                    .file_type()
                    .is_symlink());
            },
        );
        // The directory's attributes, applied last, must not land on the symlink's target.
        hostile(
            "dir-attrs-after-replacement",
            &def(),
            |sb| {
                Tar::default()
                    .put(h("d/", b'5').mode(0o700).mtime(9).owner(77, 77), b"")
                    .symlink("d", &format!("{}/sub", sb.outside_str()))
                    .end()
            },
            Expect::Ok,
            none,
        );
    }

    #[test]
    fn files_replace_symlinks_instead_of_writing_through() {
        hostile(
            "file-over-symlink",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("v", &sb.victim_str())
                    .file("v", b"pwned")
                    .symlink("w", &sb.victim_str())
                    .put(h("w", b'6'), b"")
                    .symlink("x", &format!("{}/sub", sb.outside_str()))
                    .put(h("x/", b'5').mode(0o777).mtime(3), b"")
                    .end()
            },
            Expect::Ok,
            |sb| {
                assert_eq!(fs::read(sb.root.join("v")).unwrap(), b"pwned");
                assert!(fs::symlink_metadata(sb.root.join("w"))
                    .unwrap()
                    .file_type()
                    .is_fifo());
                let x = fs::symlink_metadata(sb.root.join("x")).unwrap();
                assert!(x.is_dir());
                assert_eq!(x.mode() & 0o7777, 0o777);
            },
        );
    }

    #[test]
    fn hardlinks_outside_are_refused() {
        hostile(
            "hardlink-absolute",
            &def(),
            |sb| Tar::default().hardlink("h", &sb.victim_str()).end(),
            Expect::Err("not an earlier non-directory entry"),
            none,
        );
        hostile(
            "hardlink-dotdot",
            &def(),
            |_| Tar::default().hardlink("h", "../outside/victim").end(),
            Expect::Err("leaves the layer root"),
            none,
        );
        hostile(
            "hardlink-through-symlink",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("s", &sb.outside_str())
                    .hardlink("h", "s/victim")
                    .end()
            },
            Expect::Err("not an earlier non-directory entry"),
            none,
        );
        let nlink = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
        hostile(
            "hardlink-etc-passwd",
            &def(),
            |_| Tar::default().hardlink("h", "/etc/passwd").end(),
            Expect::Err("not an earlier non-directory entry"),
            none,
        );
        assert_eq!(fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(), nlink);
    }

    #[test]
    fn hardlink_to_symlink_links_the_symlink() {
        hostile(
            "hardlink-to-symlink",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("s", &sb.victim_str())
                    .hardlink("h", "s")
                    .end()
            },
            Expect::Ok,
            |sb| {
                let s = fs::symlink_metadata(sb.root.join("s")).unwrap();
                let h = fs::symlink_metadata(sb.root.join("h")).unwrap();
                assert!(h.file_type().is_symlink());
                assert_eq!((s.ino(), s.nlink()), (h.ino(), 2));
                assert_eq!(fs::read_link(sb.root.join("h")).unwrap(), sb.victim);
            },
        );
    }

    #[test]
    fn hardlink_to_missing_or_directory() {
        hostile(
            "hardlink-missing",
            &def(),
            |_| {
                Tar::default()
                    .hardlink("h", "later")
                    .file("later", b"x")
                    .end()
            },
            Expect::Err("not an earlier non-directory entry"),
            none,
        );
        hostile(
            "hardlink-dir",
            &def(),
            |_| Tar::default().dir("d/").hardlink("h", "d").end(),
            Expect::Err("not an earlier non-directory entry"),
            none,
        );
        hostile(
            "hardlink-root",
            &def(),
            |_| Tar::default().hardlink("h", "./").end(),
            Expect::Err("hardlink to the layer root"),
            none,
        );
    }

    #[test]
    fn invalid_whiteouts() {
        for (tag, name) in [
            ("wh-dotdot", ".wh..."),
            ("wh-dot", ".wh.."),
            ("wh-bare", ".wh."),
            ("wh-sub-dotdot", "a/.wh..."),
        ] {
            hostile(
                tag,
                &def(),
                |_| Tar::default().file(name, b"").end(),
                Expect::Err("invalid whiteout"),
                none,
            );
        }
    }

    #[test]
    fn whiteout_through_symlinked_parent() {
        hostile(
            "wh-through-symlink",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("s", &sb.outside_str())
                    .file("s/.wh.victim", b"")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
        let e = evil();
        hostile(
            "wh-through-symlink-slash",
            &def(),
            |_| {
                Tar::default()
                    .symlink("s", "/")
                    .file(&format!("s/.wh.{e}"), b"")
                    .end()
            },
            Expect::Ok,
            |sb| assert!(is_whiteout_at(&sb.root.join(&e))),
        );
    }

    #[test]
    fn opaque_marker_under_symlinked_parent() {
        hostile(
            "opq-through-symlink",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("s", &sb.outside_str())
                    .file("s/.wh..wh..opq", b"")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
        hostile(
            "opq-through-symlink-slash",
            &def(),
            |_| {
                Tar::default()
                    .dir("d/")
                    .symlink("s", "/d")
                    .file("s/.wh..wh..opq", b"")
                    .end()
            },
            Expect::Ok,
            |sb| {
                assert_eq!(
                    xattr(&sb.root.join("d"), "trusted.overlay.opaque").unwrap(),
                    b"y"
                )
            },
        );
    }

    #[test]
    fn attributes_of_a_final_symlink_never_reach_its_target() {
        hostile(
            "symlink-attrs",
            &def(),
            |sb| {
                let sub = format!("{}/sub", sb.outside_str());
                Tar::default()
                    .pax(&[
                        ("SCHILY.xattr.trusted.skiff", b"1"),
                        ("SCHILY.xattr.user.skiff", b"1"),
                    ])
                    .put(
                        h("s", b'2')
                            .link(&sb.victim_str())
                            .mode(0o777)
                            .owner(4242, 4343)
                            .mtime(7),
                        b"",
                    )
                    .pax(&[("SCHILY.xattr.trusted.skiff", b"2"), ("mtime", b"8.5")])
                    .put(h("t", b'2').link(&sub).mode(0o700).owner(4242, 4343), b"")
                    // A hardlink entry carries attributes too; they are not applied.
                    .put(h("u", b'1').link("s").mode(0o777).owner(1, 1).mtime(1), b"")
                    .end()
            },
            Expect::Ok,
            |sb| {
                let s = fs::symlink_metadata(sb.root.join("s")).unwrap();
                assert!(s.file_type().is_symlink());
                assert_eq!((s.uid(), s.gid(), s.mtime()), (4242, 4343, 7));
                assert_eq!(xattr(&sb.root.join("s"), "trusted.skiff").unwrap(), b"1");
                let t = fs::symlink_metadata(sb.root.join("t")).unwrap();
                assert_eq!((t.mtime(), t.mtime_nsec()), (8, 500_000_000));
                assert_eq!(xattr(&sb.root.join("t"), "trusted.skiff").unwrap(), b"2");
            },
        );
    }

    #[test]
    fn device_nodes_and_fifos_stay_inside() {
        hostile(
            "devices",
            &def(),
            |_| {
                Tar::default()
                    .put(h("dev/null", b'3').dev(1, 3).mode(0o666), b"")
                    .put(h("dev/loop9", b'4').dev(7, 9).mode(0o660).owner(0, 6), b"")
                    .put(h("run/fifo", b'6').mode(0o4640).owner(5, 5).mtime(42), b"")
                    .end()
            },
            Expect::Ok,
            |sb| {
                let n = fs::symlink_metadata(sb.root.join("dev/null")).unwrap();
                assert!(n.file_type().is_char_device());
                assert_eq!((n.rdev(), n.mode() & 0o7777), (libc::makedev(1, 3), 0o666));
                let b = fs::symlink_metadata(sb.root.join("dev/loop9")).unwrap();
                assert!(b.file_type().is_block_device());
                assert_eq!(
                    (b.rdev(), b.mode() & 0o7777, b.gid()),
                    (libc::makedev(7, 9), 0o660, 6)
                );
                let f = fs::symlink_metadata(sb.root.join("run/fifo")).unwrap();
                assert!(f.file_type().is_fifo());
                assert_eq!((f.mode() & 0o7777, f.uid(), f.mtime()), (0o4640, 5, 42));
            },
        );
        hostile(
            "device-through-symlink",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("d", &sb.outside_str())
                    .put(h("d/victim", b'3').dev(1, 3), b"")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
        hostile(
            "device-over-symlink",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("d", &sb.victim_str())
                    .put(h("d", b'6').mode(0o777), b"")
                    .end()
            },
            Expect::Ok,
            |sb| {
                let d = fs::symlink_metadata(sb.root.join("d")).unwrap();
                assert!(d.file_type().is_fifo());
            },
        );
    }

    #[test]
    fn magic_link_targets_are_plain_paths_inside() {
        hostile(
            "magic-link",
            &def(),
            |sb| {
                Tar::default()
                    .symlink("p", &format!("/proc/self/root{}", sb.outside_str()))
                    .file("p/victim", b"pwned")
                    .symlink("q", "/proc/self/cwd")
                    .file("q/x", b"pwned")
                    .end()
            },
            Expect::Err("leads nowhere"),
            none,
        );
    }

    #[test]
    fn pax_path_and_linkpath_overrides() {
        let e = evil();
        hostile(
            "pax-path-dotdot",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("path", format!("../{e}").as_bytes())])
                    .file("innocent", b"x")
                    .end()
            },
            Expect::Err("leaves the layer root"),
            none,
        );
        hostile(
            "gnu-longname-dotdot",
            &def(),
            |_| {
                Tar::default()
                    .gnu_long(b'L', format!("../../{e}").as_bytes())
                    .file("innocent", b"x")
                    .end()
            },
            Expect::Err("leaves the layer root"),
            none,
        );
        hostile(
            "pax-linkpath-outside",
            &def(),
            |sb| {
                Tar::default()
                    .pax(&[("linkpath", sb.victim_str().as_bytes())])
                    .hardlink("h", "innocent")
                    .file("innocent", b"x")
                    .end()
            },
            Expect::Err("not an earlier non-directory entry"),
            none,
        );
        hostile(
            "pax-nul-in-path",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("path", b"a\0/../../x")])
                    .file("innocent", b"x")
                    .end()
            },
            Expect::Err("NUL"),
            none,
        );
        hostile(
            "pax-nul-in-name",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("path", b"a\0b")])
                    .file("innocent", b"x")
                    .end()
            },
            Expect::Err("NUL"),
            none,
        );
    }

    #[test]
    fn pax_size_desynchronisation() {
        let e = evil();
        // Header "data" that would be parsed as an escaping entry if the sizes were mixed up.
        let smuggled = {
            let mut t = Tar::default();
            t.file(&format!("../{e}"), b"pwned");
            let mut v = t.0;
            v.resize(1024, 0);
            v
        };
        hostile(
            "pax-size-larger",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("size", b"1024")])
                    .put(h("f", b'0').size(5), &smuggled)
                    .end()
            },
            Expect::Err("disagrees with the header size"),
            none,
        );
        hostile(
            "pax-size-smaller",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("size", b"0")])
                    .put(h("f", b'0').size(1024), &smuggled)
                    .end()
            },
            Expect::Err("disagrees with the header size"),
            none,
        );
        // Header size 0 with a PAX size (as writers do for huge files): the PAX size rules,
        // the smuggled header is file content.
        hostile(
            "pax-size-rules",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("size", b"1024")])
                    .put(h("f", b'0').size(0), &smuggled)
                    .file("after", b"ok")
                    .end()
            },
            Expect::Ok,
            |sb| {
                assert_eq!(fs::read(sb.root.join("f")).unwrap(), smuggled);
                assert_eq!(fs::read(sb.root.join("after")).unwrap(), b"ok");
            },
        );
        hostile(
            "size-on-symlink",
            &def(),
            |_| {
                Tar::default()
                    .put(h("s", b'2').link("x").size(1024), &smuggled)
                    .end()
            },
            Expect::Err("declares 1024 bytes"),
            none,
        );
        hostile(
            "pax-size-on-dir",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("size", b"1024")])
                    .put(h("d/", b'5'), &smuggled)
                    .end()
            },
            Expect::Err("declares 1024 bytes"),
            none,
        );
        hostile(
            "pax-size-truncated",
            &def(),
            |_| {
                let mut t = Tar::default();
                t.pax(&[("size", b"4096")]).put(h("f", b'0'), b"short");
                t.0
            },
            Expect::Err("truncated"),
            none,
        );
    }

    #[test]
    fn overlay_xattrs_from_the_tar_are_dropped() {
        hostile(
            "xattr-trusted-overlay",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[
                        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
                        ("SCHILY.xattr.user.overlay.opaque", b"y"),
                        ("SCHILY.xattr.user.kept", b"1"),
                    ])
                    .dir("d/")
                    .pax(&[("SCHILY.xattr.trusted.overlay.metacopy", b"")])
                    .file("f", b"x")
                    .end()
            },
            Expect::Ok,
            |sb| {
                let d = sb.root.join("d");
                let kept =
                    user_xattrs_on(&sb.root).then(|| ("user.kept".to_string(), b"1".to_vec()));
                assert_eq!(xattrs_of(&d), kept.into_iter().collect::<Vec<_>>());
                assert_eq!(xattrs_of(&sb.root.join("f")), vec![]);
            },
        );
    }

    #[test]
    fn declared_size_beyond_max_bytes() {
        hostile(
            "huge-pax-size",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("size", b"1099511627776000")])
                    .put(h("huge", b'0'), b"")
                    .end()
            },
            Expect::Err("exceeds max_bytes"),
            none,
        );
        hostile(
            "huge-base256-size",
            &def(),
            |_| Tar::default().put(h("huge", b'0').size(1 << 40), b"").end(),
            Expect::Err("exceeds max_bytes"),
            none,
        );
        let small = UnpackLimits {
            max_bytes: 1 << 20,
            ..def()
        };
        hostile(
            "over-small-max-bytes",
            &small,
            |_| {
                Tar::default()
                    .file("a", &vec![7u8; 600 << 10])
                    .file("b", &vec![7u8; 600 << 10])
                    .end()
            },
            Expect::Err("exceeds max_bytes (1048576)"),
            |sb| assert!(!sb.root.join("b").exists()),
        );
    }

    fn gzip(build: impl FnOnce(&mut dyn Write)) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        build(&mut gz);
        gz.finish().unwrap()
    }

    /// A gzip stream made of deflate segments compressed once and repeated: each segment
    /// ends with a full flush, so every copy decodes on its own (200 MiB of zeros cost
    /// 1 MiB of compression, not 200).
    #[derive(Default)]
    struct GzBomb {
        deflate: Vec<u8>,
        crc: flate2::Crc,
        len: u64,
    }

    /// Deflate of one piece, ending with a full flush, with its CRC.
    struct Segment(Vec<u8>, flate2::Crc, u64);

    fn segment(data: &[u8]) -> Segment {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut seg = Vec::with_capacity(data.len() + 4096);
        c.compress_vec(data, &mut seg, flate2::FlushCompress::Full)
            .unwrap();
        assert_eq!(c.total_in(), data.len() as u64);
        let mut crc = flate2::Crc::new();
        crc.update(data);
        Segment(seg, crc, data.len() as u64)
    }

    impl GzBomb {
        fn push(&mut self, data: &[u8], times: usize) -> &mut GzBomb {
            self.push_segment(&segment(data), times)
        }

        fn push_segment(&mut self, seg: &Segment, times: usize) -> &mut GzBomb {
            for _ in 0..times {
                self.deflate.extend_from_slice(&seg.0);
                self.crc.combine(&seg.1);
                self.len += seg.2;
            }
            self
        }

        fn finish(&mut self) -> Vec<u8> {
            let mut c = flate2::Compress::new(flate2::Compression::default(), false);
            let mut last = Vec::with_capacity(64);
            c.compress_vec(&[], &mut last, flate2::FlushCompress::Finish)
                .unwrap();
            let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
            out.extend_from_slice(&self.deflate);
            out.extend_from_slice(&last);
            out.extend_from_slice(&self.crc.sum().to_le_bytes());
            out.extend_from_slice(&(self.len as u32).to_le_bytes());
            out
        }
    }

    #[test]
    fn gzip_bomb_builder_makes_valid_gzip() {
        let zeros = vec![0u8; 1 << 20];
        let gz = GzBomb::default()
            .push(b"head", 1)
            .push(&zeros, 3)
            .push(b"tail", 2)
            .finish();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        let mut want = b"head".to_vec();
        want.extend(std::iter::repeat_n(0u8, 3 << 20));
        want.extend_from_slice(b"tailtail");
        assert!(out == want);
    }

    #[test]
    fn gzip_bombs_stop_at_max_bytes() {
        let zeros = segment(&[0u8; 1 << 20]);
        // One entry declaring 200 MiB of zeros.
        let one = GzBomb::default()
            .push(&h("bomb", b'0').size(200 << 20).bytes(), 1)
            .push_segment(&zeros, 200)
            .push(&[0u8; 1024], 1)
            .finish();
        // 200 entries of 1 MiB each.
        let mut many = GzBomb::default();
        for i in 0..200 {
            many.push(&h(&format!("bomb{i}"), b'0').size(1 << 20).bytes(), 1)
                .push_segment(&zeros, 1);
        }
        let many = many.push(&[0u8; 1024], 1).finish();
        assert!(one.len() < 1 << 20, "{}", one.len());
        assert!(many.len() < 1 << 20, "{}", many.len());
        let limits = UnpackLimits {
            max_bytes: 16 << 20,
            ..def()
        };
        // The declared size is refused before its data is read: the applier takes no more
        // than the header and what one buffer holds.
        let read = hostile_with(
            "gzip-bomb",
            &limits,
            true,
            |_| one.clone(),
            Expect::Err("exceeds max_bytes (16777216)"),
            |sb| assert!(!sb.root.join("bomb").exists()),
        );
        assert!(read <= 64 << 10, "read {read} bytes of a 200 MiB entry");
        // Entries are unpacked until the limit; nothing of the stream's rest is inflated.
        let read = hostile_with(
            "gzip-bomb-many",
            &limits,
            true,
            |_| many.clone(),
            Expect::Err("exceeds max_bytes (16777216)"),
            |sb| {
                assert!(sb.root.join("bomb14").exists());
                assert!(!sb.root.join("bomb16").exists());
            },
        );
        assert!(
            read <= 17 << 20,
            "read {read} bytes of 200 MiB for a 16 MiB limit"
        );
    }

    #[test]
    fn too_many_entries() {
        let limits = UnpackLimits {
            max_entries: 10,
            ..def()
        };
        hostile(
            "max-entries",
            &limits,
            |_| {
                let mut t = Tar::default();
                for i in 0..11 {
                    t.file(&format!("f{i}"), b"");
                }
                t.end()
            },
            Expect::Err("exceeds max_entries (10)"),
            |sb| assert!(!sb.root.join("f10").exists()),
        );
        hostile(
            "max-entries-exact",
            &limits,
            |_| {
                let mut t = Tar::default();
                for i in 0..10 {
                    t.file(&format!("f{i}"), b"");
                }
                t.end()
            },
            Expect::Ok,
            |sb| assert!(sb.root.join("f9").exists()),
        );
        hostile(
            "max-entries-global-headers",
            &limits,
            |_| {
                let mut t = Tar::default();
                for _ in 0..11 {
                    t.put(h("g", b'g').size(0), b"");
                }
                t.end()
            },
            Expect::Err("exceeds max_entries (10)"),
            none,
        );
    }

    #[test]
    fn overlong_paths() {
        let long = "a/".repeat(2100) + "f";
        hostile(
            "long-pax-path",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("path", long.as_bytes())])
                    .file("x", b"")
                    .end()
            },
            Expect::Err("exceeds max_path_len (4096)"),
            none,
        );
        hostile(
            "long-gnu-name",
            &def(),
            |_| {
                Tar::default()
                    .gnu_long(b'L', long.as_bytes())
                    .file("x", b"")
                    .end()
            },
            Expect::Err("exceeds max_path_len (4096)"),
            none,
        );
        hostile(
            "long-gnu-link",
            &def(),
            |_| {
                Tar::default()
                    .gnu_long(b'K', long.as_bytes())
                    .symlink("x", "y")
                    .end()
            },
            Expect::Err("exceeds max_path_len (4096)"),
            none,
        );
        hostile(
            "long-pax-linkpath",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("linkpath", long.as_bytes())])
                    .symlink("x", "y")
                    .end()
            },
            Expect::Err("exceeds max_path_len (4096)"),
            none,
        );
        let short = UnpackLimits {
            max_path_len: 8,
            ..def()
        };
        hostile(
            "long-header-name",
            &short,
            |_| Tar::default().file("abcdefghij", b"").end(),
            Expect::Err("exceeds max_path_len (8)"),
            none,
        );
    }

    #[test]
    fn oversized_xattrs() {
        let big = vec![b'v'; 70 << 10];
        hostile(
            "xattr-too-big",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("SCHILY.xattr.user.big", &big)])
                    .file("f", b"")
                    .end()
            },
            Expect::Err("exceeds max_xattr_bytes (65536)"),
            none,
        );
        let half = vec![b'v'; 40 << 10];
        hostile(
            "xattrs-too-big-together",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[
                        ("SCHILY.xattr.user.a", &half),
                        ("SCHILY.xattr.user.b", &half),
                    ])
                    .file("f", b"")
                    .end()
            },
            Expect::Err("exceeds max_xattr_bytes (65536)"),
            none,
        );
        let huge = vec![b'v'; 1 << 20];
        hostile(
            "pax-header-too-big",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("comment", &huge)])
                    .file("f", b"")
                    .end()
            },
            Expect::Err("exceeds the PAX header cap"),
            none,
        );
    }

    #[test]
    fn sparse_and_multivolume_entries() {
        hostile(
            "gnu-sparse",
            &def(),
            |_| {
                Tar::default()
                    .put(h("s", b'S').size(512), &[0u8; 512])
                    .end()
            },
            Expect::Err("sparse files are not supported"),
            none,
        );
        hostile(
            "pax-sparse",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")])
                    .file("s", b"x")
                    .end()
            },
            Expect::Err("sparse files are not supported"),
            none,
        );
        hostile(
            "multivolume",
            &def(),
            |_| Tar::default().put(h("m", b'M').size(5), b"hello").end(),
            Expect::Err("multivolume"),
            none,
        );
        hostile(
            "unknown-type",
            &def(),
            |_| Tar::default().put(h("v", b'V'), b"").end(),
            Expect::Err("unsupported entry type 'V'"),
            none,
        );
    }

    #[test]
    fn malformed_archives() {
        hostile(
            "bad-checksum",
            &def(),
            |_| {
                let mut b = h("f", b'0').bytes();
                b[0] = b'g';
                Tar::default().raw(&b).end()
            },
            Expect::Err("checksum mismatch"),
            none,
        );
        hostile(
            "two-pax-headers",
            &def(),
            |_| {
                Tar::default()
                    .pax(&[("path", b"a")])
                    .pax(&[("path", b"../b")])
                    .file("f", b"")
                    .end()
            },
            Expect::Err("two PAX headers"),
            none,
        );
        hostile(
            "dangling-extended-header",
            &def(),
            |_| Tar::default().pax(&[("path", b"a")]).end(),
            Expect::Err("without its entry"),
            none,
        );
        hostile(
            "bad-pax-record",
            &def(),
            |_| {
                Tar::default()
                    .put(h("x", b'x').size(12), b"99 path=../a")
                    .file("f", b"")
                    .end()
            },
            Expect::Err("malformed PAX record"),
            none,
        );
        hostile(
            "truncated-header",
            &def(),
            |_| h("f", b'0').bytes()[..300].to_vec(),
            Expect::Err("truncated"),
            none,
        );
        hostile(
            "bad-octal",
            &def(),
            |_| {
                let mut b = h("f", b'0').bytes();
                b[108..116].copy_from_slice(b"0000x00\0");
                b[148..156].fill(b' ');
                let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
                b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                Tar::default().raw(&b).end()
            },
            Expect::Err("uid field"),
            none,
        );
    }

    // ---- Normal layers unpack exactly ----

    /// security.capability v2: cap_net_bind_service+ep.
    const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn normal_layer() -> Vec<u8> {
        let long = format!("usr/lib/{}/lib.so", "x".repeat(150));
        Tar::default()
            .put(h("./", b'5').mode(0o751).mtime(100), b"")
            .put(h("etc/", b'5').mode(0o755).mtime(200), b"")
            .put(h("etc/passwd", b'0').size(10).mtime(300), b"root:x:0:0")
            .pax(&[("SCHILY.xattr.trusted.sym", b"1")])
            .put(
                h("etc/link", b'2')
                    .link("/etc/passwd")
                    .owner(1000, 1001)
                    .mtime(600),
                b"",
            )
            .hardlink("etc/hard", "etc/passwd")
            .hardlink("etc/hardsym", "etc/link")
            .put(
                h("usr/bin/su", b'0').size(2).mode(0o4755).owner(1000, 1000),
                b"su",
            )
            .put(
                h("usr/bin/sg", b'0').size(2).mode(0o2755).owner(0, 50),
                b"sg",
            )
            .put(h("tmp/", b'5').mode(0o1777).mtime(400), b"")
            .put(h("srv/ro/", b'5').mode(0o555).mtime(500), b"")
            .put(h("srv/ro/file", b'0').size(3).mode(0o444), b"abc")
            .pax(&[("SCHILY.xattr.user.dir", b"d")])
            .put(
                h("home/u/", b'5').mode(0o700).owner(1000, 1000).mtime(700),
                b"",
            )
            .pax(&[
                ("SCHILY.xattr.user.note", b"hello"),
                ("SCHILY.xattr.security.capability", &CAP_NET_BIND),
                ("mtime", b"1234.25"),
                ("uid", b"1000"),
                ("gid", b"1000"),
            ])
            .put(h("home/u/ping", b'0').size(4).mode(0o755), b"ping")
            .file("usr/.wh.gone", b"")
            .dir("var/cache/")
            .file("var/cache/.wh..wh..opq", b"")
            .file("var/cache/kept", b"k")
            .put(h("run/fifo", b'6').mode(0o600), b"")
            .put(h("dev/null", b'3').dev(1, 3).mode(0o666), b"")
            .pax(&[("path", long.as_bytes())])
            .file("ignored-name", b"long")
            .end()
    }

    fn check_normal_layer(root: &Path) {
        let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
        let mode = |p: &str| meta(p).mode() & 0o7777;
        let r = fs::symlink_metadata(root).unwrap();
        assert_eq!((r.mode() & 0o7777, r.mtime()), (0o751, 100));
        assert_eq!((mode("etc"), meta("etc").mtime()), (0o755, 200));
        assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), b"root:x:0:0");
        assert_eq!(
            (mode("etc/passwd"), meta("etc/passwd").mtime()),
            (0o644, 300)
        );
        let l = meta("etc/link");
        assert!(l.file_type().is_symlink());
        assert_eq!((l.uid(), l.gid(), l.mtime()), (1000, 1001, 600));
        assert_eq!(
            fs::read_link(root.join("etc/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(xattr(&root.join("etc/link"), "trusted.sym").unwrap(), b"1");
        assert_eq!(meta("etc/hard").ino(), meta("etc/passwd").ino());
        assert_eq!(meta("etc/hardsym").ino(), l.ino());
        let su = meta("usr/bin/su");
        assert_eq!(
            (su.mode() & 0o7777, su.uid(), su.gid()),
            (0o4755, 1000, 1000)
        );
        assert_eq!((mode("usr/bin/sg"), meta("usr/bin/sg").gid()), (0o2755, 50));
        assert_eq!(
            (mode("usr"), mode("usr/bin"), mode("usr/lib")),
            (0o755, 0o755, 0o755)
        );
        assert_eq!((mode("tmp"), meta("tmp").mtime()), (0o1777, 400));
        assert_eq!((mode("srv/ro"), meta("srv/ro").mtime()), (0o555, 500));
        assert_eq!(fs::read(root.join("srv/ro/file")).unwrap(), b"abc");
        let hu = meta("home/u");
        assert_eq!(
            (hu.mode() & 0o7777, hu.uid(), hu.mtime()),
            (0o700, 1000, 700)
        );
        assert_user_xattr(&root.join("home/u"), "user.dir", b"d");
        let p = meta("home/u/ping");
        assert_eq!((p.uid(), p.gid(), p.mode() & 0o7777), (1000, 1000, 0o755));
        assert_eq!((p.mtime(), p.mtime_nsec()), (1234, 250_000_000));
        assert_user_xattr(&root.join("home/u/ping"), "user.note", b"hello");
        assert_eq!(
            xattr(&root.join("home/u/ping"), "security.capability").unwrap(),
            CAP_NET_BIND
        );
        assert!(is_whiteout_at(&root.join("usr/gone")));
        assert_eq!(
            xattr(&root.join("var/cache"), "trusted.overlay.opaque").unwrap(),
            b"y"
        );
        assert_eq!(fs::read(root.join("var/cache/kept")).unwrap(), b"k");
        assert!(meta("run/fifo").file_type().is_fifo());
        let n = meta("dev/null");
        assert!(n.file_type().is_char_device());
        assert_eq!((n.rdev(), n.mode() & 0o7777), (libc::makedev(1, 3), 0o666));
        let long = format!("usr/lib/{}/lib.so", "x".repeat(150));
        assert_eq!(fs::read(root.join(long)).unwrap(), b"long");
        assert!(!root.join("ignored-name").exists());
    }

    #[test]
    fn normal_layer_unpacks_exactly() {
        let data = normal_layer();
        for walk in [false, true] {
            let sb = Sandbox::new("normal");
            apply_mode(&data, false, &sb.root, &def(), walk, &Default::default()).unwrap();
            check_normal_layer(&sb.root);
            sb.assert_untouched("normal");
        }
        // The public entry points, from a gzip stream as the store feeds them.
        let sb = Sandbox::new("normal-public");
        let gz = gzip(|w| w.write_all(&data).unwrap());
        apply_layer(flate2::read::GzDecoder::new(&gz[..]), &sb.root).unwrap();
        check_normal_layer(&sb.root);
        let sb = Sandbox::new("normal-public-with");
        apply_layer_with(&data[..], &sb.root, &def()).unwrap();
        check_normal_layer(&sb.root);
    }

    #[test]
    fn layer_written_by_the_tar_crate() {
        let long = format!("opt/{}/file", "y".repeat(120));
        let long_target = format!("/opt/{}/file", "y".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Directory);
        hd.set_mode(0o750);
        hd.set_mtime(10);
        hd.set_size(0);
        b.append_data(&mut hd, "opt/", io::empty()).unwrap();
        let mut hd = tar::Header::new_gnu();
        hd.set_mode(0o640);
        hd.set_uid(7);
        hd.set_gid(8);
        hd.set_mtime(20);
        hd.set_size(5);
        b.append_pax_extensions([("SCHILY.xattr.user.a", &b"b"[..])])
            .unwrap();
        b.append_data(&mut hd, &long, &b"hello"[..]).unwrap();
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Symlink);
        hd.set_size(0);
        b.append_link(&mut hd, "opt/l", &long_target).unwrap();
        let mut hd = tar::Header::new_ustar();
        hd.set_entry_type(tar::EntryType::Link);
        hd.set_size(0);
        b.append_link(&mut hd, "opt/h", &long).unwrap();
        let data = b.into_inner().unwrap();
        let sb = Sandbox::new("tar-crate");
        apply_layer(&data[..], &sb.root).unwrap();
        let f = fs::symlink_metadata(sb.root.join(&long)).unwrap();
        assert_eq!(
            (f.mode() & 0o7777, f.uid(), f.gid(), f.mtime()),
            (0o640, 7, 8, 20)
        );
        assert_eq!(fs::read(sb.root.join(&long)).unwrap(), b"hello");
        assert_user_xattr(&sb.root.join(&long), "user.a", b"b");
        assert_eq!(
            fs::read_link(sb.root.join("opt/l")).unwrap(),
            Path::new(&long_target)
        );
        assert_eq!(
            fs::symlink_metadata(sb.root.join("opt/h")).unwrap().ino(),
            f.ino()
        );
        let o = fs::symlink_metadata(sb.root.join("opt")).unwrap();
        assert_eq!((o.mode() & 0o7777, o.mtime()), (0o750, 10));
    }

    #[test]
    fn whiteouts_within_one_layer() {
        let data = Tar::default()
            .file(".wh.a", b"")
            .file("a", b"file after its whiteout")
            .file("b", b"file before its whiteout")
            .file(".wh.b", b"")
            .dir("c/")
            .file("c/x", b"x")
            .file(".wh.c", b"")
            .file(".wh.d", b"")
            .dir("d/")
            .file(".wh.e", b"")
            .file(".wh.e", b"")
            .file(".wh..wh..opq", b"")
            .dir(".wh..wh.plnk/")
            .file(".wh..wh.plnk/123.456", b"aufs")
            .end();
        for walk in [false, true] {
            let sb = Sandbox::new("whiteouts");
            apply_mode(&data, false, &sb.root, &def(), walk, &Default::default()).unwrap();
            let r = &sb.root;
            assert_eq!(fs::read(r.join("a")).unwrap(), b"file after its whiteout");
            assert_eq!(fs::read(r.join("b")).unwrap(), b"file before its whiteout");
            assert_eq!(fs::read(r.join("c/x")).unwrap(), b"x");
            assert_eq!(xattr(&r.join("c"), "trusted.overlay.opaque").unwrap(), b"y");
            assert!(fs::symlink_metadata(r.join("d")).unwrap().is_dir());
            assert_eq!(xattr(&r.join("d"), "trusted.overlay.opaque").unwrap(), b"y");
            assert!(is_whiteout_at(&r.join("e")));
            assert_eq!(xattr(r, "trusted.overlay.opaque").unwrap(), b"y");
            assert!(!r.join(".wh..wh.plnk").exists());
            sb.assert_untouched("whiteouts");
        }
    }

    #[test]
    fn replacements_within_one_layer() {
        let data = Tar::default()
            .dir("a/")
            .file("a/x", b"x")
            .dir("a/sub/")
            .file("a/sub/y", b"y")
            .file("a", b"file over directory")
            .file("b", b"b")
            .put(h("b/", b'5').mode(0o700), b"")
            .put(h("c/", b'5').mode(0o700).mtime(5), b"")
            .file("c/kept", b"kept")
            .put(h("c/", b'5').mode(0o711).mtime(6), b"")
            .file("d", b"one")
            .file("d", b"two")
            .put(h("old/", 0).mode(0o710), b"")
            .end();
        for walk in [false, true] {
            let sb = Sandbox::new("replace");
            apply_mode(&data, false, &sb.root, &def(), walk, &Default::default()).unwrap();
            let r = &sb.root;
            assert_eq!(fs::read(r.join("a")).unwrap(), b"file over directory");
            let b = fs::symlink_metadata(r.join("b")).unwrap();
            assert_eq!((b.is_dir(), b.mode() & 0o7777), (true, 0o700));
            let c = fs::symlink_metadata(r.join("c")).unwrap();
            assert_eq!((c.mode() & 0o7777, c.mtime()), (0o711, 6));
            assert_eq!(fs::read(r.join("c/kept")).unwrap(), b"kept");
            assert_eq!(fs::read(r.join("d")).unwrap(), b"two");
            let old = fs::symlink_metadata(r.join("old")).unwrap();
            assert_eq!((old.is_dir(), old.mode() & 0o7777), (true, 0o710));
            sb.assert_untouched("replace");
        }
    }

    #[test]
    fn symlinked_parents_inside_the_layer_are_followed() {
        // As Docker and containerd: `lib -> usr/lib` then `lib/x` lands in usr/lib.
        let data = Tar::default()
            .dir("usr/lib/")
            .symlink("lib", "usr/lib")
            .file("lib/x", b"x")
            .symlink("abs", "/usr")
            .file("abs/lib/y", b"y")
            .file("abs/new/z", b"z")
            .end();
        for walk in [false, true] {
            let sb = Sandbox::new("follow");
            apply_mode(&data, false, &sb.root, &def(), walk, &Default::default()).unwrap();
            assert_eq!(fs::read(sb.root.join("usr/lib/x")).unwrap(), b"x");
            assert_eq!(fs::read(sb.root.join("usr/lib/y")).unwrap(), b"y");
            assert_eq!(fs::read(sb.root.join("usr/new/z")).unwrap(), b"z");
            sb.assert_untouched("follow");
        }
    }

    #[test]
    fn reading_stops_at_the_end_of_the_archive() {
        let mut data = Tar::default().file("f", b"x").end();
        let tar_len = data.len() as u64;
        data.extend_from_slice(b"trailing bytes");
        let sb = Sandbox::new("trailing");
        let mut cur = io::Cursor::new(&data[..]);
        apply_layer(&mut cur, &sb.root).unwrap();
        // The first zero block ends the archive; the rest is the caller's.
        assert_eq!(cur.position(), tar_len - 512);
    }

    #[test]
    fn numbers_and_pax_parsing() {
        assert_eq!(parse_num(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_num(b"   644 \0"), Ok(0o644));
        assert_eq!(parse_num(b"\0\0\0\0"), Ok(0));
        assert_eq!(
            parse_num(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Ok(1 << 32)
        );
        assert!(parse_num(&[0xff; 8]).is_err());
        assert!(parse_num(b"0009\0").is_err());
        assert!(parse_num(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"-12.25"), Some((-13, 750_000_000)));
        assert_eq!(parse_pax_time(b"7"), Some((7, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(
            parse_pax(&pax_record("path", b"a b=c")).unwrap(),
            vec![(b"path".to_vec(), b"a b=c".to_vec())]
        );
        assert!(parse_pax(b"5 a=b\n").is_err());
        assert_eq!(
            UnpackLimits::default(),
            UnpackLimits {
                max_bytes: 64 << 30,
                max_entries: 2_000_000,
                max_path_len: 4096,
                max_xattr_bytes: 64 << 10,
            }
        );
    }
}
