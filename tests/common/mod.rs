//! Helpers for integration tests: they run the real skiff binary, as root, against the
//! registry that `scripts/test.sh` starts (SKIFF_TEST_REGISTRY) with the images of
//! `rootfs-tools/busybox-image.sh` pushed to it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn registry() -> String {
    std::env::var("SKIFF_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!("SKIFF_TEST_REGISTRY is not set: run the integration tests through scripts/test.sh, which starts a local registry and pushes the test images")
    })
}

pub fn busybox() -> String {
    format!("{}/busybox:latest", registry())
}

pub fn random_hex() -> String {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A private state directory and cgroup parent name, removed (state dir) on drop.
pub struct Env {
    pub state: PathBuf,
    pub cgroup_parent: String,
    pub dir: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let id = random_hex();
        let dir = std::env::temp_dir().join(format!("skiff-it-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Env {
            state: dir.join("state"),
            cgroup_parent: format!("skiff-it-{id}"),
            dir,
        }
    }

    /// Writes a task definition (JSON text, `$REGISTRY` replaced) and returns its path.
    pub fn taskdef(&self, name: &str, json: &str) -> PathBuf {
        let p = self.dir.join(format!("{name}.json"));
        std::fs::write(&p, json.replace("$REGISTRY", &registry())).unwrap();
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skiff"));
        c.arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env("SKIFF_CGROUP_PARENT", &self.cgroup_parent)
            .env_remove("SKIFF_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, taskdef: &Path) -> Output {
        let child = self
            .command(&["run", taskdef.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(120))
    }

    /// The cgroup directories skiff would use for this env's parent, per v1 controller (or the
    /// one v2 directory), computed independently of skiff from /proc/self/cgroup.
    pub fn cgroup_parent_dirs(&self) -> Vec<PathBuf> {
        if let Ok(root) = std::env::var("SKIFF_CGROUP_ROOT") {
            let d = Path::new("/sys/fs/cgroup").join(root.trim_start_matches('/'));
            return vec![d.join(&self.cgroup_parent)];
        }
        own_cgroup_dirs()
            .into_iter()
            .map(|d| d.join(&self.cgroup_parent))
            .collect()
    }

    /// True when nothing of this env remains: no task directory, no temporary file, no cgroup,
    /// no mount, no process.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for sub in ["tasks", "tmp"] {
            if let Ok(rd) = std::fs::read_dir(self.state.join(sub)) {
                for e in rd.flatten() {
                    left.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        for d in self.cgroup_parent_dirs() {
            if d.exists() {
                left.push(format!("cgroup {}", d.display()));
            }
        }
        let state = self.state.to_string_lossy().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for l in mountinfo.lines().filter(|l| l.contains(&state)) {
            left.push(format!("mount {l}"));
        }
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&state) {
                    left.push(format!(
                        "process {}: {cmd}",
                        p.file_name().to_string_lossy()
                    ));
                }
            }
        }
        left
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// This process's cgroup directory in each hierarchy skiff uses (memory, cpu, cpuacct, pids
/// on v1; the unified one on v2).
pub fn own_cgroup_dirs() -> Vec<PathBuf> {
    let pc = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let v1: Vec<(String, String)> = pc
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _ = it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect();
    let mut out = Vec::new();
    let has_v1_memory = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    if has_v1_memory {
        for ctrl in ["cpu", "cpuacct", "memory", "pids", "blkio", "devices"] {
            if let Some((_, path)) = v1.iter().find(|(c, _)| c.split(',').any(|x| x == ctrl)) {
                let mount = Path::new("/sys/fs/cgroup").join(ctrl);
                let d = mount.join(path.trim_start_matches('/'));
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    } else if let Some((_, path)) = v1.iter().find(|(c, _)| c.is_empty()) {
        out.push(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')));
    }
    out
}

pub fn own_memory_cgroup_dir() -> PathBuf {
    if let Ok(root) = std::env::var("SKIFF_CGROUP_ROOT") {
        return Path::new("/sys/fs/cgroup").join(root.trim_start_matches('/'));
    }
    let dirs = own_cgroup_dirs();
    dirs.iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
        .unwrap_or(&dirs[0])
        .clone()
}

/// Waits for the child, reading its output as it comes so that a full pipe cannot stall it.
pub fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    use std::io::Read;
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    // A pipe the caller took already reads as empty here.
    let out_t = read_all(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_t = read_all(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "skiff did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out_t.join().unwrap()),
                String::from_utf8_lossy(&err_t.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl Env {
    /// `skiff ARGS` to its end (at most two minutes), output captured.
    pub fn output(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(120))
    }

    /// Starts `skiff run` on a task definition without waiting for it.
    pub fn spawn(&self, taskdef: &Path, extra: &[&str]) -> std::process::Child {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.push(taskdef.to_str().unwrap());
        self.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `file` (e.g. "cpuacct.usage" or "cpu.stat") in the cgroup of the (first) running task,
    /// or of its container `sub`, once a container process runs there.
    pub fn task_cgroup_file(&self, sub: Option<&str>, file: &str) -> PathBuf {
        wait_for(Duration::from_secs(30), || {
            self.cgroup_parent_dirs().iter().find_map(|p| {
                let task = std::fs::read_dir(p)
                    .ok()?
                    .flatten()
                    .find(|e| e.path().is_dir())?;
                let dir = match sub {
                    Some(s) => task.path().join(s),
                    None => task.path(),
                };
                // A container process in it means skiff applied the limits already (they are
                // written before anything starts).
                let busy = |d: &Path| {
                    std::fs::read_to_string(d.join("cgroup.procs"))
                        .is_ok_and(|p| !p.trim().is_empty())
                };
                let started = match sub {
                    Some(_) => busy(&dir),
                    None => std::fs::read_dir(&dir)
                        .ok()?
                        .flatten()
                        .any(|c| busy(&c.path())),
                };
                let f = dir.join(file);
                (started && f.exists()).then_some(f)
            })
        })
        .unwrap_or_else(|| panic!("cgroup file {file} of a running task did not appear"))
    }
}

/// Reads a cgroup file as a number (first token).
pub fn read_num(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// True on a pure cgroup v2 host (skiff then uses the unified hierarchy).
pub fn is_v2() -> bool {
    !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

/// The file that counts a cgroup's CPU time: cpuacct.usage (v1) or cpu.stat (v2).
pub fn cpu_file() -> &'static str {
    if is_v2() {
        "cpu.stat"
    } else {
        "cpuacct.usage"
    }
}

/// Memory in use without page cache, from the kernel's files: usage − total_cache (v1),
/// memory.current − inactive_file (v2).
pub fn memory_without_cache(dir: &Path) -> u64 {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap();
    let key = |k: &str| -> u64 {
        stat.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    if is_v2() {
        read_num(&dir.join("memory.current")) - key("inactive_file ")
    } else {
        read_num(&dir.join("memory.usage_in_bytes")) - key("total_cache ")
    }
}

/// CPU nanoseconds a cgroup used: cpuacct.usage (v1) or cpu.stat usage_usec (v2).
pub fn cpu_usage_ns(dir: &Path) -> u64 {
    let v1 = dir.join("cpuacct.usage");
    if v1.exists() {
        return read_num(&v1);
    }
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    usec * 1000
}

pub fn nproc() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u64
}

/// Polls `f` until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A field of /proc/<pid>/status (`CapEff`, `Seccomp`, ...).
pub fn status_field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} missing in {text}"))
        .trim()
        .to_string()
}

/// A hex number such as a capability mask.
pub fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap()
}
