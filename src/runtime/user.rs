//! The `user` of a container definition (`uid`, `uid:gid`, `name`, `name:group`, either side
//! a name or a number), resolved against the container's own /etc/passwd and /etc/group the
//! way Docker (moby/sys `user.GetExecUser`) does, and the switch to those ids.
//!
//! `read_etc_file` and `switch` run in the single-threaded container child, after
//! `pivot_root` (absolute paths resolve inside the container) and before `execve`.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use nix::unistd::{Gid, Uid};

/// The largest /etc/passwd or /etc/group skiff reads.
pub const MAX_ETC_FILE: u64 = 4 << 20;

/// The largest uid or gid accepted (as Docker: 2^31 - 1; above it lies (uid_t)-1, which
/// `setresuid` takes as "leave unchanged").
pub const MAX_ID: u32 = i32::MAX as u32;

/// The ids a container process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (never the primary gid).
    pub additional_gids: Vec<u32>,
    /// The home directory, for `HOME` when the container sets none.
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("invalid user {0:?}: expected uid, uid:gid, name or name:group")]
    Syntax(String),
    #[error("{kind} {value} is out of range: uids and gids must be in range 0-2147483647")]
    Range { kind: &'static str, value: String },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

/// A number in the user string or a file: `None` when `s` is not one (optional sign, then
/// digits), `Some(Err(s))` when it is one outside 0..=MAX_ID.
fn numeric(s: &str) -> Option<Result<u32, &str>> {
    let negative = s.starts_with('-');
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.parse::<u64>() {
        Ok(0) => Some(Ok(0)),
        Ok(v) if !negative && v <= u64::from(MAX_ID) => Some(Ok(v as u32)),
        _ => Some(Err(s)),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: Result<u32, &'a str>,
    gid: Result<u32, &'a str>,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: Result<u32, &'a str>,
    members: Vec<&'a str>,
}

/// The meaningful lines of an /etc file, split at ':' (blank lines and comments skipped).
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

/// `name:password:uid:gid[:gecos:home:shell]`; lines without a name or with a uid or gid
/// that is not a number are skipped.
fn passwd_entries(text: &str) -> Vec<PasswdEntry<'_>> {
    records(text)
        .filter_map(|f| {
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0],
                uid: numeric(f[2])?,
                gid: numeric(f[3])?,
                home: f.get(5).copied().unwrap_or(""),
            })
        })
        .collect()
}

/// `name:password:gid[:member,member...]`; lines without a name or a numeric gid are
/// skipped.
fn group_entries(text: &str) -> Vec<GroupEntry<'_>> {
    records(text)
        .filter_map(|f| {
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            let members = f
                .get(3)
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            Some(GroupEntry {
                name: f[0],
                gid: numeric(f[2])?,
                members,
            })
        })
        .collect()
}

fn range(kind: &'static str) -> impl Fn(&str) -> UserError {
    move |value| UserError::Range {
        kind,
        value: value.to_string(),
    }
}

/// Resolves `user` (None or "" = root) against the contents of the container's /etc/passwd
/// and /etc/group (None = the file is absent), as Docker does:
///
/// - the user is looked up by uid when numeric, else by name; the first matching entry
///   gives uid, gid and home. A numeric user without an entry runs with gid 0 and home "/";
///   a name without one is an error. No user means uid 0, with the first uid-0 entry if any;
/// - an explicit group is looked up by gid when numeric (which needs no entry), else by
///   name (which does), and replaces the primary gid;
/// - supplementary groups, only when no group is given and the user was found in passwd:
///   every group whose member list names the user, in file order, deduplicated, without the
///   primary gid;
/// - malformed lines and comments in the files are ignored; ids must be within 0..=2^31-1.
pub fn resolve(
    user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Ids, UserError> {
    let spec = user.unwrap_or("");
    let (user_arg, group_arg) = if spec.is_empty() {
        ("", None)
    } else {
        let mut parts = spec.split(':');
        let u = parts.next().unwrap_or("");
        let g = parts.next();
        if parts.next().is_some() || u.is_empty() || g == Some("") {
            return Err(UserError::Syntax(spec.to_string()));
        }
        (u, g)
    };

    let users = passwd.map(passwd_entries).unwrap_or_default();
    let uid_arg = if user_arg.is_empty() {
        Some(Ok(0))
    } else {
        numeric(user_arg)
    };
    let entry = match uid_arg {
        Some(Ok(uid)) => users.iter().find(|e| e.uid == Ok(uid)),
        Some(Err(v)) => return Err(range("uid")(v)),
        None => users.iter().find(|e| e.name == user_arg),
    };

    let mut ids = Ids {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };
    let mut matched_name = None;
    match (entry, uid_arg) {
        (Some(e), _) => {
            ids.uid = e.uid.map_err(range("uid"))?;
            ids.gid = e.gid.map_err(range("gid"))?;
            if !e.home.is_empty() {
                ids.home = e.home.to_string();
            }
            matched_name = Some(e.name);
        }
        (None, Some(Ok(uid))) => ids.uid = uid,
        (None, _) => return Err(UserError::NoUser(user_arg.to_string())),
    }

    let groups = group.map(group_entries).unwrap_or_default();
    if let Some(group_arg) = group_arg {
        ids.gid = match numeric(group_arg) {
            Some(gid) => gid.map_err(range("gid"))?,
            None => groups
                .iter()
                .find(|g| g.name == group_arg)
                .ok_or_else(|| UserError::NoGroup(group_arg.to_string()))?
                .gid
                .map_err(range("gid"))?,
        };
    } else if let Some(name) = matched_name {
        for g in &groups {
            let Ok(gid) = g.gid else { continue };
            if g.members.contains(&name) && gid != ids.gid && !ids.additional_gids.contains(&gid) {
                ids.additional_gids.push(gid);
            }
        }
    }
    Ok(ids)
}

/// Reads a file of the container (/etc/passwd, /etc/group) for `resolve`: `None` when it
/// does not exist. Anything but a regular file is refused (a FIFO could block the start, a
/// device flood it), and so is a file above `MAX_ETC_FILE`. Bytes that are not UTF-8 are
/// replaced (they cannot match a name given in the task definition anyway).
pub fn read_etc_file(path: &str) -> Result<Option<String>, UserError> {
    let err = |msg: String| UserError::File {
        path: path.to_string(),
        msg,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(None)
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| err(format!("fstat: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(err("not a regular file".to_string()));
    }
    let too_large = || err(format!("larger than {} MiB", MAX_ETC_FILE >> 20));
    if meta.len() > MAX_ETC_FILE {
        return Err(too_large());
    }
    // The size may lie (files of /proc say 0): read at most one byte past the cap.
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ETC_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    if buf.len() as u64 > MAX_ETC_FILE {
        return Err(too_large());
    }
    Ok(Some(match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

/// Switches the calling process to `ids`: supplementary groups (exactly
/// `additional_gids`), then gid, then uid (real, effective and saved). Capabilities are
/// set afterwards by `caps::apply` (no keepcaps: a non-root uid loses them here).
pub fn switch(ids: &Ids) -> Result<(), String> {
    if ids.uid > MAX_ID || ids.gid > MAX_ID {
        return Err(format!("uid {} or gid {} out of range", ids.uid, ids.gid));
    }
    let groups: Vec<Gid> = ids
        .additional_gids
        .iter()
        .map(|&g| Gid::from_raw(g))
        .collect();
    nix::unistd::setgroups(&groups)
        .map_err(|e| format!("set supplementary groups {:?}: {e}", ids.additional_gids))?;
    let gid = Gid::from_raw(ids.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("set gid {}: {e}", ids.gid))?;
    let uid = Uid::from_raw(ids.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("set uid {}: {e}", ids.uid))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/ash
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin

# a comment:x:5:5::/:
this line is malformed
bad:x:notanumber:1::/bad:/bin/sh
:x:7:7::/nameless:/bin/sh
nobody:x:65534:65534:nobody:/:/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
app2:x:1000:1001::/home/app2:/bin/sh
huge:x:4294967296:1::/:/bin/sh
  short:x:1001:1001
";

    const GROUP: &str = "\
root:x:0:root
bin:x:1:root,bin,daemon
daemon:x:2:root,bin,daemon
wheel:x:10:root, app
# comment:x:11:app
garbage
users:x:100:app,app
staff:x:50:app
staff2:x:50:app
appgrp:x:1000:
big:x:99999999999:app
odd:x:xyz:app
";

    fn ids(uid: u32, gid: u32, additional: &[u32], home: &str) -> Ids {
        Ids {
            uid,
            gid,
            additional_gids: additional.to_vec(),
            home: home.to_string(),
        }
    }

    fn res(user: &str) -> Result<Ids, UserError> {
        resolve(Some(user), Some(PASSWD), Some(GROUP))
    }

    fn err(user: &str) -> String {
        res(user).unwrap_err().to_string()
    }

    #[test]
    fn default_user_is_root() {
        let root = ids(0, 0, &[1, 2, 10], "/root");
        assert_eq!(resolve(None, Some(PASSWD), Some(GROUP)).unwrap(), root);
        assert_eq!(res("").unwrap(), root);
        assert_eq!(res("root").unwrap(), root);
        assert_eq!(res("0").unwrap(), root);
        // No passwd file: root with gid 0 and home "/"; no group file: no extra groups.
        assert_eq!(
            resolve(None, None, Some(GROUP)).unwrap(),
            ids(0, 0, &[], "/")
        );
        assert_eq!(
            resolve(None, Some(PASSWD), None).unwrap(),
            ids(0, 0, &[], "/root")
        );
        assert_eq!(resolve(Some(""), None, None).unwrap(), ids(0, 0, &[], "/"));
    }

    #[test]
    fn user_by_name_and_number() {
        // Member of wheel (" app" trimmed), users (listed twice), staff and staff2 (same gid).
        let app = ids(1000, 1000, &[10, 100, 50], "/home/app");
        assert_eq!(res("app").unwrap(), app);
        // By number, the first entry with that uid wins.
        assert_eq!(res("1000").unwrap(), app);
        assert_eq!(res("+1000").unwrap(), app);
        assert_eq!(res("app2").unwrap(), ids(1000, 1001, &[], "/home/app2"));
        assert_eq!(res("nobody").unwrap(), ids(65534, 65534, &[], "/"));
        // An entry without home.
        assert_eq!(res("short").unwrap(), ids(1001, 1001, &[], "/"));
    }

    #[test]
    fn numeric_user_without_entry() {
        assert_eq!(res("4242").unwrap(), ids(4242, 0, &[], "/"));
        assert_eq!(
            resolve(Some("1000"), None, None).unwrap(),
            ids(1000, 0, &[], "/")
        );
        assert_eq!(res("2147483647").unwrap(), ids(2147483647, 0, &[], "/"));
        assert_eq!(res("4242:4343").unwrap(), ids(4242, 4343, &[], "/"));
        assert_eq!(res("4242:wheel").unwrap(), ids(4242, 10, &[], "/"));
    }

    #[test]
    fn explicit_group() {
        // An explicit group replaces the primary gid and brings no supplementary groups.
        assert_eq!(res("app:staff").unwrap(), ids(1000, 50, &[], "/home/app"));
        assert_eq!(res("app:4343").unwrap(), ids(1000, 4343, &[], "/home/app"));
        assert_eq!(res("app:0").unwrap(), ids(1000, 0, &[], "/home/app"));
        assert_eq!(
            res("1000:appgrp").unwrap(),
            ids(1000, 1000, &[], "/home/app")
        );
        assert_eq!(res("root:root").unwrap(), ids(0, 0, &[], "/root"));
        // A numeric group needs no group file.
        assert_eq!(
            resolve(Some("app:7"), Some(PASSWD), None).unwrap(),
            ids(1000, 7, &[], "/home/app")
        );
    }

    #[test]
    fn unknown_names() {
        assert_eq!(
            err("nosuch"),
            "unable to find user nosuch: no matching entries in passwd file"
        );
        assert_eq!(
            resolve(Some("app"), None, Some(GROUP))
                .unwrap_err()
                .to_string(),
            "unable to find user app: no matching entries in passwd file"
        );
        assert_eq!(
            err("app:nosuch"),
            "unable to find group nosuch: no matching entries in group file"
        );
        assert_eq!(
            resolve(Some("4242:staff"), Some(PASSWD), None)
                .unwrap_err()
                .to_string(),
            "unable to find group staff: no matching entries in group file"
        );
        assert_eq!(
            res("nosuch:staff").unwrap_err(),
            UserError::NoUser("nosuch".into())
        );
    }

    #[test]
    fn malformed_lines_are_ignored() {
        assert_eq!(res("bad").unwrap_err(), UserError::NoUser("bad".into()));
        assert_eq!(
            res("this line is malformed").unwrap_err(),
            UserError::NoUser("this line is malformed".into())
        );
        assert_eq!(
            res("# a comment").unwrap_err(),
            UserError::NoUser("# a comment".into())
        );
        // The nameless line does not give uid 7 a home.
        assert_eq!(res("7").unwrap(), ids(7, 0, &[], "/"));
        assert_eq!(
            res("app:odd").unwrap_err(),
            UserError::NoGroup("odd".into())
        );
        assert_eq!(
            res("app:garbage").unwrap_err(),
            UserError::NoGroup("garbage".into())
        );
        // Files of nothing but junk.
        assert_eq!(
            resolve(Some("5"), Some("::\n#\n\0\n"), Some("x\n:::\n")).unwrap(),
            ids(5, 0, &[], "/")
        );
    }

    #[test]
    fn ids_out_of_range() {
        let range = |kind: &str, v: &str| {
            format!("{kind} {v} is out of range: uids and gids must be in range 0-2147483647")
        };
        assert_eq!(err("-1"), range("uid", "-1"));
        assert_eq!(err("2147483648"), range("uid", "2147483648"));
        assert_eq!(err("4294967295"), range("uid", "4294967295"));
        assert_eq!(
            err("99999999999999999999999"),
            range("uid", "99999999999999999999999")
        );
        assert_eq!(err("1:-5"), range("gid", "-5"));
        assert_eq!(err("app:4294967296"), range("gid", "4294967296"));
        // An entry found by name whose uid is out of range.
        assert_eq!(err("huge"), range("uid", "4294967296"));
        assert_eq!(err("app:big"), range("gid", "99999999999"));
        assert_eq!(res("-0").unwrap().uid, 0);
    }

    #[test]
    fn bad_syntax() {
        for spec in ["a:b:c", ":1", "1:", ":", "app::", "::"] {
            assert_eq!(
                err(spec),
                format!("invalid user {spec:?}: expected uid, uid:gid, name or name:group")
            );
        }
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "skiff-user-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> String {
            self.0.join(name).to_str().unwrap().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn read_etc_files() {
        let dir = TempDir::new("read");
        let passwd = dir.path("passwd");
        std::fs::write(&passwd, PASSWD).unwrap();
        assert_eq!(read_etc_file(&passwd).unwrap().as_deref(), Some(PASSWD));

        assert_eq!(read_etc_file(&dir.path("missing")).unwrap(), None);
        assert_eq!(
            read_etc_file(&dir.path("passwd/below-a-file")).unwrap(),
            None
        );

        // Not valid UTF-8: replaced, the rest still usable.
        let latin = dir.path("latin1");
        std::fs::write(&latin, b"jos\xe9:x:5:5:Jos\xe9:/home/j:/bin/sh\n").unwrap();
        let text = read_etc_file(&latin).unwrap().unwrap();
        assert_eq!(
            resolve(Some("5"), Some(&text), None).unwrap(),
            ids(5, 5, &[], "/home/j")
        );

        // A FIFO with no writer: refused at once, never waited on.
        let fifo = dir.path("fifo");
        let c = std::ffi::CString::new(fifo.clone()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(
            read_etc_file(&fifo).unwrap_err().to_string(),
            format!("{fifo}: not a regular file")
        );
        // A directory, a device.
        assert!(read_etc_file(dir.0.to_str().unwrap()).is_err());
        assert_eq!(
            read_etc_file("/dev/zero").unwrap_err().to_string(),
            "/dev/zero: not a regular file"
        );

        // Too large (sparse).
        let big = dir.path("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_ETC_FILE + 1).unwrap();
        assert_eq!(
            read_etc_file(&big).unwrap_err().to_string(),
            format!("{big}: larger than 4 MiB")
        );
        // Exactly at the cap is fine.
        f.set_len(MAX_ETC_FILE).unwrap();
        assert_eq!(
            read_etc_file(&big).unwrap().unwrap().len() as u64,
            MAX_ETC_FILE
        );
    }

    #[test]
    fn switch_and_caps_in_a_child() {
        use crate::runtime::caps::{self, test_support, CapSet};
        if !test_support::can_set_caps() {
            eprintln!("skipped: needs root with CAP_SETPCAP");
            return;
        }
        let default = CapSet::defaults();
        let target = ids(1000, 1001, &[5, 20], "/");
        let code = test_support::in_child(|| {
            if caps::drop_bounding(default).is_err() {
                return 1;
            }
            if switch(&target).is_err() {
                return 2;
            }
            if caps::apply(default, target.uid).is_err() {
                return 3;
            }
            let (mut r, mut e, mut s) = (0, 0, 0);
            unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
            if (r, e, s) != (1000, 1000, 1000) {
                return 4;
            }
            unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
            if (r, e, s) != (1001, 1001, 1001) {
                return 5;
            }
            let mut groups = [0 as libc::gid_t; 8];
            let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
            if n != 2 || groups[..2] != [5, 20] {
                return 6;
            }
            // A non-root user ends with nothing but the bounding set.
            test_support::check_status(0, 0, 0, default.0)
        });
        assert_eq!(
            code, 0,
            "child exit code (1 bounding, 2 switch, 3 apply, 4 uid, 5 gid, 6 groups, 10+ caps)"
        );

        // Root keeps its capabilities and gets exactly the groups asked for (none here).
        let code = test_support::in_child(|| {
            if switch(&ids(0, 0, &[], "/root")).is_err() || caps::apply(default, 0).is_err() {
                return 1;
            }
            let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
            if n != 0 {
                return 2;
            }
            match caps::current() {
                Ok(c) if c.effective == default && c.permitted == default => 0,
                _ => 3,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn switch_refuses_ids_out_of_range() {
        // Checked before any syscall: (uid_t)-1 would mean "leave unchanged".
        let e = switch(&ids(u32::MAX, 0, &[], "/")).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }
}
