//! Which cgroup mode the host runs, where the controllers are mounted, and where skiff's own
//! subtree goes (beneath the cgroup skiff runs in).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_err, v2, write_file, Cgroup, CgroupError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Legacy or hybrid host: the v1 controllers are used.
    V1,
    /// Unified hierarchy (on a pure v2 host, or a hybrid one whose v2 tree has the controllers).
    V2,
}

/// v1 controllers skiff places its cgroups in. Only memory is required; a hierarchy the host
/// lacks is left out. `devices` holds the per-container device allowlist.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "blkio", "devices"];

struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_opts: Vec<String>,
}

fn unescape_mount_path(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let _source = post.next()?;
            let super_opts = post
                .next()
                .unwrap_or("")
                .split(',')
                .map(String::from)
                .collect();
            Some(MountEntry {
                root: unescape_mount_path(pre.get(3)?),
                mount_point: PathBuf::from(unescape_mount_path(pre.get(4)?)),
                fstype,
                super_opts,
            })
        })
        .collect()
}

/// `/proc/self/cgroup`: (controllers, path) per hierarchy; v2 has empty controllers.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() {
                vec![]
            } else {
                ctrls.split(',').map(String::from).collect()
            };
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// Our cgroup directory inside a mount: the mount point plus our path relative to the
/// mount's root.
fn own_dir(m: &MountEntry, proc_path: &str) -> PathBuf {
    let rel = proc_path
        .strip_prefix(m.root.trim_end_matches('/'))
        .unwrap_or(proc_path)
        .trim_start_matches('/');
    if rel.is_empty() {
        m.mount_point.clone()
    } else {
        m.mount_point.join(rel)
    }
}

/// The host's cgroup layout as seen by this process, and skiff's parent cgroup within it.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub mode: Mode,
    /// The cgroup(s) skiff runs in.
    pub own: Cgroup,
    /// skiff's parent cgroup: `<own>/<parent name>`.
    pub parent: Cgroup,
    /// v1: the controllers found; v2: the controllers available below the parent.
    pub controllers: Vec<String>,
    /// `own` is a configured root rather than the cgroup skiff runs in.
    own_is_root_override: bool,
}

/// The leaf a long-running skiff lives in on a v2 host (see [`Hierarchy::for_supervisor`]).
pub const SUPERVISOR_LEAF: &str = "supervisor";

/// Where skiff's cgroups go: `<root or own cgroup>/<parent>/<task>/<container>`.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Name of skiff's parent cgroup.
    pub parent: String,
    /// A cgroup path (like `/skiff.slice`) to use instead of the cgroup skiff runs in, e.g.
    /// an empty delegated cgroup on a v2 host whose own cgroup holds other processes.
    pub root: Option<String>,
}

#[cfg(test)]
impl Placement {
    pub fn beneath_own(parent: &str) -> Placement {
        Placement {
            parent: parent.to_string(),
            root: None,
        }
    }
}

impl Hierarchy {
    pub fn detect(placement: &Placement) -> Result<Hierarchy, CgroupError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| CgroupError::Detect(format!("read /proc/self/mountinfo: {e}")))?;
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| CgroupError::Detect(format!("read /proc/self/cgroup: {e}")))?;
        // statfs says first whether /sys/fs/cgroup is the unified hierarchy itself.
        let unified_root = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        Self::from_tables(&mountinfo, &proc_cgroup, placement, unified_root)
    }

    fn from_tables(
        mountinfo: &str,
        proc_cgroup: &str,
        placement: &Placement,
        unified_root: bool,
    ) -> Result<Hierarchy, CgroupError> {
        let parent_name = placement.parent.as_str();
        if parent_name.is_empty() || parent_name.contains('/') || parent_name.starts_with('.') {
            return Err(CgroupError::Detect(format!(
                "invalid parent cgroup name {parent_name:?}"
            )));
        }
        if let Some(root) = &placement.root {
            let ok = root.starts_with('/') && !root.split('/').any(|c| c == ".." || c == ".");
            if !ok {
                return Err(CgroupError::Detect(format!(
                    "invalid cgroup root {root:?}: give an absolute cgroup path like /skiff.slice"
                )));
            }
        }
        // The cgroup path beneath which skiff's parent goes: the configured root, or ours.
        let base =
            |ours: &str| -> String { placement.root.clone().unwrap_or_else(|| ours.to_string()) };
        let mounts = parse_mountinfo(mountinfo);
        let procs = parse_proc_cgroup(proc_cgroup);

        let unified = mounts.iter().find(|m| m.fstype == "cgroup2");
        let v2_path = procs
            .iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| p.clone());
        let pure_v2 = unified_root
            || (unified.is_some_and(|m| m.mount_point == Path::new("/sys/fs/cgroup"))
                && !mounts.iter().any(|m| m.fstype == "cgroup"));

        // v1 hierarchies that carry a controller we use, each once.
        let mut v1_dirs: Vec<PathBuf> = Vec::new();
        let mut memory_dir = None;
        let mut devices_dir = None;
        let mut controllers = Vec::new();
        if !pure_v2 {
            for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
                let ctrls: Vec<&String> = m
                    .super_opts
                    .iter()
                    .filter(|o| V1_CONTROLLERS.contains(&o.as_str()))
                    .collect();
                if ctrls.is_empty() {
                    continue;
                }
                let Some((_, path)) = procs
                    .iter()
                    .find(|(pc, _)| ctrls.iter().all(|c| pc.contains(c)))
                else {
                    continue;
                };
                let dir = own_dir(m, &base(path));
                if v1_dirs.contains(&dir) {
                    continue;
                }
                if ctrls.iter().any(|c| *c == "memory") {
                    memory_dir = Some(dir.clone());
                }
                if ctrls.iter().any(|c| *c == "devices") {
                    devices_dir = Some(dir.clone());
                }
                controllers.extend(ctrls.iter().map(|c| c.to_string()));
                v1_dirs.push(dir);
            }
        }

        if memory_dir.is_some() {
            if placement.root.is_some() {
                // Each v1 hierarchy places skiff differently; one path cannot name them all.
                return Err(CgroupError::Detect(
                    "a cgroup root (--cgroup-root) applies to the unified (v2) hierarchy only; this host uses v1 controllers".into(),
                ));
            }
            let own = Cgroup {
                mode: Mode::V1,
                dirs: v1_dirs,
                memory_dir,
                devices_dir,
            };
            let parent = own.child(parent_name);
            controllers.sort();
            controllers.dedup();
            return Ok(Hierarchy {
                mode: Mode::V1,
                own,
                parent,
                controllers,
                own_is_root_override: placement.root.is_some(),
            });
        }

        let (Some(m), Some(path)) = (unified, v2_path) else {
            return Err(CgroupError::Detect(
                "no memory cgroup controller found (neither a v1 memory hierarchy nor cgroup2)"
                    .into(),
            ));
        };
        let own_dir = own_dir(m, &base(&path));
        let root_ctrls =
            std::fs::read_to_string(m.mount_point.join("cgroup.controllers")).unwrap_or_default();
        if !root_ctrls.split_whitespace().any(|c| c == "memory") {
            return Err(CgroupError::Detect(format!(
                "cgroup2 at {} has no memory controller",
                m.mount_point.display()
            )));
        }
        let own = Cgroup {
            mode: Mode::V2,
            dirs: vec![own_dir.clone()],
            memory_dir: Some(own_dir.clone()),
            // Device programs attach to the cgroup itself; no controller is involved.
            devices_dir: Some(own_dir),
        };
        let parent = own.child(parent_name);
        Ok(Hierarchy {
            mode: Mode::V2,
            own,
            parent,
            controllers: root_ctrls.split_whitespace().map(String::from).collect(),
            own_is_root_override: placement.root.is_some(),
        })
    }

    /// Where the tasks a long-running skiff (the agent) starts go, decided once when it
    /// starts. Its children (`skiff run -d`) share its cgroup, and on v2 a cgroup with
    /// processes cannot give controllers to children; so on v2 the agent lives in a leaf
    /// named [`SUPERVISOR_LEAF`] and its tasks go beneath that leaf's parent, passed on as the
    /// cgroup root. systemd's `DelegateSubgroup=supervisor` starts the agent in that leaf
    /// (and starts it there again after a restart, which the parent, with controllers
    /// enabled, would refuse); an agent alone in another cgroup moves itself into one. A v1
    /// hierarchy has no such rule, and a root the user gave or the root cgroup stay as they
    /// are.
    pub fn for_supervisor(placement: &Placement) -> Result<Placement, CgroupError> {
        if placement.root.is_some() || Self::detect(placement)?.mode == Mode::V1 {
            return Ok(placement.clone());
        }
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| CgroupError::Detect(format!("read /proc/self/cgroup: {e}")))?;
        let path = parse_proc_cgroup(&proc_cgroup)
            .into_iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| p)
            .ok_or_else(|| CgroupError::Detect("no cgroup2 line in /proc/self/cgroup".into()))?;
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Ok(placement.clone());
        }
        let root = match path.rsplit_once('/') {
            Some((parent, leaf)) if leaf == SUPERVISOR_LEAF => {
                if parent.is_empty() { "/" } else { parent }.to_string()
            }
            _ => {
                let own = Self::detect(placement)?.own.dirs[0].clone();
                let procs = std::fs::read_to_string(own.join("cgroup.procs"))
                    .map_err(io_err(&own, "read cgroup.procs"))?;
                let me = std::process::id().to_string();
                let others: Vec<&str> = procs.lines().filter(|p| p.trim() != me).collect();
                if !others.is_empty() {
                    return Err(CgroupError::Detect(format!(
                        "cgroup v2: this process shares its cgroup {path} with {} other process(es) ({}); tasks need a cgroup of their own: run skiff agent in its own cgroup (systemd: Delegate=yes with DelegateSubgroup={SUPERVISOR_LEAF}, as packaging/systemd/skiff-agent.service does) or give --cgroup-root",
                        others.len(),
                        others.iter().take(5).copied().collect::<Vec<_>>().join(" ")
                    )));
                }
                let leaf = own.join(SUPERVISOR_LEAF);
                if let Err(e) = std::fs::create_dir(&leaf) {
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(io_err(&leaf, "create")(e));
                    }
                }
                write_file(&leaf, "cgroup.procs", "0")?;
                path.to_string()
            }
        };
        Ok(Placement {
            parent: placement.parent.clone(),
            root: Some(root),
        })
    }

    /// Makes sure skiff's parent cgroup exists and, on v2, that its controllers are enabled.
    /// On v2 a cgroup with processes cannot enable controllers for its children; when skiff is
    /// alone in its cgroup it moves itself into a leaf (`<parent>-supervisor`) first.
    pub fn prepare(&self) -> Result<(), CgroupError> {
        if self.mode == Mode::V2 {
            let own = &self.own.dirs[0];
            if let Err(first) = v2::enable_subtree(own) {
                let procs = std::fs::read_to_string(own.join("cgroup.procs"))
                    .map_err(io_err(own, "read cgroup.procs"))?;
                let me = std::process::id().to_string();
                if self.own_is_root_override || procs.lines().any(|p| p.trim() != me) {
                    return Err(first);
                }
                let leaf = own.join(format!(
                    "{}-supervisor",
                    self.parent.dirs[0].file_name().unwrap().to_string_lossy()
                ));
                if let Err(e) = std::fs::create_dir(&leaf) {
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(io_err(&leaf, "create")(e));
                    }
                }
                write_file(&leaf, "cgroup.procs", "0")?;
                v2::enable_subtree(own)?;
            }
        }
        self.parent.create(&Default::default())?;
        self.parent.enable_subtree()
    }

    /// Creates a task's cgroup with its limits, creating skiff's parent first. Another skiff
    /// may remove an empty parent at any moment (see [`Hierarchy::release`]): a missing
    /// parent means prepare again.
    pub fn create_task(
        &self,
        task_id: &str,
        limits: &super::Limits,
    ) -> Result<Cgroup, CgroupError> {
        let cg = self.parent.child(task_id);
        let mut attempts = 0;
        loop {
            self.prepare()?;
            match cg.create(limits) {
                Err(CgroupError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempts < 5 =>
                {
                    attempts += 1;
                }
                other => return other.map(|()| cg),
            }
        }
    }

    /// Removes the parent cgroup if no task is left in it (another skiff may still use it).
    pub fn release(&self) {
        for d in &self.parent.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The cgroup2 directory this process runs in, wherever cgroup2 is mounted (also on a hybrid
/// host, whose unified tree has no controllers). For tests of device programs.
#[cfg(test)]
pub(super) fn own_unified_dir() -> Option<PathBuf> {
    let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?);
    let procs = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ok()?);
    let m = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    let (_, path) = procs.iter().find(|(c, _)| c.is_empty())?;
    Some(own_dir(m, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MI: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_PC: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/ad16
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_uses_v1_below_own_cgroup() {
        let h = Hierarchy::from_tables(
            HYBRID_MI,
            HYBRID_PC,
            &Placement::beneath_own("skiff"),
            false,
        )
        .unwrap();
        assert_eq!(h.mode, Mode::V1);
        assert_eq!(
            h.parent.dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu/skiff"),
                PathBuf::from("/sys/fs/cgroup/cpuacct/skiff"),
                PathBuf::from("/sys/fs/cgroup/memory/process_api/ad16/skiff"),
                PathBuf::from("/sys/fs/cgroup/pids/skiff"),
            ]
        );
        assert_eq!(
            h.parent.memory_dir,
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/process_api/ad16/skiff"
            ))
        );
        let t = h.parent.child("abc").child("web");
        assert_eq!(
            t.procs_files()[2],
            PathBuf::from("/sys/fs/cgroup/memory/process_api/ad16/skiff/abc/web/cgroup.procs")
        );
    }

    #[test]
    fn devices_hierarchy_when_present() {
        let h = Hierarchy::from_tables(
            HYBRID_MI,
            HYBRID_PC,
            &Placement::beneath_own("skiff"),
            false,
        )
        .unwrap();
        assert_eq!(h.parent.devices_dir, None, "no devices hierarchy: skipped");
        let mi = format!(
            "{HYBRID_MI}36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
        );
        let pc = format!("5:devices:/user.slice\n{HYBRID_PC}");
        let h = Hierarchy::from_tables(&mi, &pc, &Placement::beneath_own("skiff"), false).unwrap();
        let dev = PathBuf::from("/sys/fs/cgroup/devices/user.slice/skiff");
        assert_eq!(h.parent.devices_dir.as_ref(), Some(&dev));
        assert!(
            h.parent.dirs.contains(&dev),
            "joined and removed like the others"
        );
        assert!(h.controllers.iter().any(|c| c == "devices"));
        let c = h.parent.child("t").child("web");
        assert_eq!(c.devices_dir, Some(dev.join("t/web")));
        assert!(c.procs_files().contains(&dev.join("t/web/cgroup.procs")));

        // v2: the cgroup directory itself.
        let h = Hierarchy::from_tables(
            "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/init.scope\n",
            &Placement::beneath_own("skiff"),
            true,
        );
        // (reads /sys/fs/cgroup/cgroup.controllers; on a host without memory there it fails)
        if let Ok(h) = h {
            assert_eq!(h.parent.devices_dir, Some(h.parent.dirs[0].clone()));
        }
    }

    #[test]
    fn old_records_without_devices_dir_parse() {
        let json = r#"{"mode":"V1","dirs":["/sys/fs/cgroup/memory/skiff/t"],"memory_dir":"/sys/fs/cgroup/memory/skiff/t"}"#;
        let cg: Cgroup = serde_json::from_str(json).unwrap();
        assert_eq!(cg.devices_dir, None);
        assert_eq!(cg.dirs.len(), 1);
    }

    #[test]
    fn comounted_and_nested_mount_root() {
        let mi = "\
32 31 0:29 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let pc = "5:cpu,cpuacct:/docker/x/svc\n4:memory:/docker/x\n";
        let h = Hierarchy::from_tables(mi, pc, &Placement::beneath_own("sk"), false).unwrap();
        assert_eq!(
            h.parent.dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/svc/sk"),
                PathBuf::from("/sys/fs/cgroup/memory/sk"),
            ]
        );
    }

    #[test]
    fn rejects_bad_parent_name_and_missing_memory() {
        assert!(Hierarchy::from_tables(
            HYBRID_MI,
            HYBRID_PC,
            &Placement::beneath_own("../x"),
            false
        )
        .is_err());
        let bad_root = Placement {
            parent: "skiff".into(),
            root: Some("rel/path".into()),
        };
        assert!(Hierarchy::from_tables(HYBRID_MI, HYBRID_PC, &bad_root, false).is_err());
        let root = Placement {
            parent: "skiff".into(),
            root: Some("/delegated.scope".into()),
        };
        assert!(
            Hierarchy::from_tables(HYBRID_MI, HYBRID_PC, &root, false).is_err(),
            "v1: no root"
        );
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert!(
            Hierarchy::from_tables(mi, "1:cpu:/\n", &Placement::beneath_own("skiff"), false)
                .is_err()
        );
    }
}
