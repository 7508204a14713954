//! Resource limits and utilization on the host's real cgroups (v1 controllers on this hybrid
//! machine; the unified hierarchy elsewhere).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Tests that measure or burn CPU run one at a time: on a 2-core machine they would disturb
/// each other's figures.
static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_lock() -> std::sync::MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|e| e.into_inner())
}

const BUSY: &str = r#"["sh","-c","while :; do :; done"]"#;

fn busy_task(name: &str, task_cpu: Option<&str>, cpu: u64, stop_timeout: u64) -> String {
    let task_cpu = task_cpu
        .map(|c| format!(r#""cpu":"{c}","#))
        .unwrap_or_default();
    format!(
        r#"{{"family":"{name}","networkMode":"none",{task_cpu}"containerDefinitions":[
            {{"name":"{name}","image":"$REGISTRY/busybox:latest","memory":32,"cpu":{cpu},
              "stopTimeout":{stop_timeout},"command":{BUSY}}}]}}"#
    )
}

fn stop(child: std::process::Child) -> std::process::Output {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_output(child, Duration::from_secs(60))
}

/// The CPU (in cores) a cgroup used over `d`.
fn cores_used(dir: &Path, d: Duration) -> f64 {
    let t0 = Instant::now();
    let u0 = cpu_usage_ns(dir);
    std::thread::sleep(d);
    let u1 = cpu_usage_ns(dir);
    (u1 - u0) as f64 / t0.elapsed().as_nanos() as f64
}

#[test]
fn task_cpu_quota_half_a_vcpu_caps_a_busy_loop() {
    let _cpu = cpu_lock();
    let env = Env::new();
    let td = env.taskdef("quota", &busy_task("quota", Some("0.5 vCPU"), 0, 1));
    let child = env.spawn(&td, &[]);
    let stat = env.task_cgroup_file(None, cpu_file());
    let dir = stat.parent().unwrap().to_path_buf();
    std::thread::sleep(Duration::from_millis(500));
    let used = cores_used(&dir, Duration::from_secs(3));
    let out = stop(child);
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        common::stderr(&out)
    );
    assert!(
        (0.45..=0.55).contains(&used),
        "0.5 vCPU task used {used:.3} cores"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn cpu_units_share_one_core_in_proportion() {
    let _cpu = cpu_lock();
    let env = Env::new();
    let heavy = env.taskdef("heavy", &busy_task("heavy", None, 1024, 1));
    let light = env.taskdef("light", &busy_task("light", None, 512, 1));
    // Both pinned to core 0 (the affinity is inherited by the containers).
    let spawn_pinned = |td: &Path| {
        env.command(&["run", td.to_str().unwrap()])
            .env("SKIFF_CGROUP_PARENT", &env.cgroup_parent)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn_pinned()
    };
    let a = spawn_pinned(&heavy);
    let b = spawn_pinned(&light);
    // Find each task's cgroup through its container's name, once its process runs there
    // (the cgroup exists a while before that, longer on a slow machine).
    let find = |name: &str| {
        wait_for(Duration::from_secs(60), || {
            env.cgroup_parent_dirs().iter().find_map(|p| {
                std::fs::read_dir(p).ok()?.flatten().find_map(|t| {
                    let c = t.path().join(name);
                    let procs = std::fs::read_to_string(c.join("cgroup.procs")).ok()?;
                    (c.join(cpu_file()).exists() && !procs.trim().is_empty()).then_some(c)
                })
            })
        })
        .expect("container cgroup")
    };
    let (ha, lb) = (find("heavy"), find("light"));
    std::thread::sleep(Duration::from_millis(500));
    let u0 = (cpu_usage_ns(&ha), cpu_usage_ns(&lb));
    std::thread::sleep(Duration::from_secs(3));
    let u1 = (cpu_usage_ns(&ha), cpu_usage_ns(&lb));
    let ratio = (u1.0 - u0.0) as f64 / (u1.1 - u0.1) as f64;
    stop(a);
    stop(b);
    assert!(
        (1.6..=2.4).contains(&ratio),
        "1024 vs 512 units shared one core {ratio:.2}:1"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

trait SpawnPinned {
    fn spawn_pinned(&mut self) -> std::process::Child;
}

impl SpawnPinned for std::process::Command {
    /// Spawns with the CPU affinity set to core 0 between fork and exec.
    fn spawn_pinned(&mut self) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        unsafe {
            self.pre_exec(|| {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.spawn().unwrap()
    }
}

#[test]
fn pids_limit_stops_a_fork_bomb_without_harming_the_host() {
    let _cpu = cpu_lock();
    let env = Env::new();
    let td = env.taskdef(
        "bomb",
        r#"{"family":"bomb","networkMode":"none","containerDefinitions":[
            {"name":"bomb","image":"$REGISTRY/busybox:latest","memory":64,"stopTimeout":1,
             "command":["sh","-c","b(){ b|b & }; b 2>/dev/null; while :; do :; done"]}]}"#,
    );
    let child = env.spawn(&td, &["--task-pids-limit", "64"]);
    let current = env.task_cgroup_file(None, "pids.current");
    let max = std::fs::read_to_string(current.with_file_name("pids.max")).unwrap();
    assert_eq!(max.trim(), "64");
    // The bomb reaches the limit and is refused more ("max" events: v1 counts them in the
    // forking process's cgroup, v2 in the limited one), never passes it.
    let max_events = |dir: &Path| -> u64 {
        std::fs::read_to_string(dir.join("pids.events"))
            .ok()
            .and_then(|e| {
                e.lines()
                    .find_map(|l| l.strip_prefix("max "))?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    let task_dir = current.parent().unwrap().to_path_buf();
    let hit = wait_for(Duration::from_secs(20), || {
        let n = max_events(&task_dir) + max_events(&task_dir.join("bomb"));
        (n > 0).then_some(n)
    });
    let peak = read_num(&current);
    // The host still forks.
    let host = std::process::Command::new("true").status().unwrap();
    let out = stop(child);
    assert!(hit.is_some(), "the pids limit was never hit");
    assert!(peak <= 64, "pids.current {peak} above the limit");
    assert!(host.success());
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        common::stderr(&out)
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn live_oom_event_while_the_container_survives() {
    let env = Env::new();
    let td = env.taskdef(
        "liveoom",
        r#"{"family":"liveoom","networkMode":"none","containerDefinitions":[
            {"name":"hog","image":"$REGISTRY/busybox:latest","memory":20,
             "command":["sh","-c","dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 3; echo still here"]}]}"#,
    );
    // The event must arrive while the container still runs, not only when it exits.
    let mut child = env.spawn(&td, &[]);
    let mut err_pipe = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut err = String::new();
    let mut live_while_running = false;
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut err_pipe, &mut line).unwrap() == 0 {
            break;
        }
        if line.contains("the OOM killer killed a process") {
            let procs = env.task_cgroup_file(Some("hog"), "cgroup.procs");
            live_while_running = !std::fs::read_to_string(procs).unwrap().trim().is_empty();
        }
        err.push_str(&line);
    }
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        live_while_running,
        "no OOM event while the container ran: {err}"
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert_eq!(common::stdout(&out), "still here\n");
    assert!(
        err.contains("container hog: the OOM killer killed a process"),
        "live event missing: {err}"
    );
    assert!(
        err.contains("container hog: OutOfMemoryError: Container killed due to memory usage"),
        "{err}"
    );
}

#[test]
fn swap_follows_max_swap_and_is_off_otherwise() {
    let env = Env::new();
    let probe = |name: &str, lp: &str| {
        let td = env.taskdef(
            name,
            &format!(
                r#"{{"family":"{name}","networkMode":"none","containerDefinitions":[
                {{"name":"c","image":"$REGISTRY/busybox:latest","memory":32{lp},"command":["sleep","1"]}}]}}"#
            ),
        );
        let child = env.spawn(&td, &[]);
        let (v, sw) = if is_v2() {
            // memory.swap.max is the swap alone; v2 has no per-cgroup swappiness.
            let f = env.task_cgroup_file(Some("c"), "memory.swap.max");
            (read_num(&f) + (32 << 20), None)
        } else {
            let f = env.task_cgroup_file(Some("c"), "memory.memsw.limit_in_bytes");
            let sw = std::fs::read_to_string(f.with_file_name("memory.swappiness")).unwrap();
            (read_num(&f), Some(sw.trim().to_string()))
        };
        let out = wait_output(child, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0));
        (v, sw)
    };
    let accounted = if is_v2() {
        own_cgroup_dirs()[0].join("memory.swap.max").exists()
            || Path::new("/sys/fs/cgroup/memory.stat").exists()
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    };
    if !accounted {
        eprintln!("no swap accounting on this host: swap check not applicable");
        return;
    }
    assert_eq!(probe("noswap", "").0, 32 << 20);
    let (v, sw) = probe(
        "swap",
        r#","linuxParameters":{"maxSwap":16,"swappiness":7}"#,
    );
    assert_eq!(v, 48 << 20);
    if !is_v2() {
        assert_eq!(sw.as_deref(), Some("7"));
    }
}

#[test]
fn stats_agree_with_the_kernel_counters() {
    let _cpu = cpu_lock();
    let env = Env::new();
    let td = env.taskdef(
        "stats",
        r#"{"family":"stats","networkMode":"none","cpu":"0.5 vCPU","containerDefinitions":[
            {"name":"work","image":"$REGISTRY/busybox:latest","memory":64,"stopTimeout":1,
             "command":["sh","-c","x=$(head -c 12000000 /dev/zero | tr '\\0' a); echo built; while :; do :; done"]}]}"#,
    );
    let child = env.spawn(&td, &[]);
    let usage_file = env.task_cgroup_file(Some("work"), cpu_file());
    let dir = usage_file.parent().unwrap().to_path_buf();
    // Wait for the 12 MB string to be built (slow under emulation).
    let mem_dir = own_memory_cgroup_dir().join(&env.cgroup_parent);
    wait_for(Duration::from_secs(60), || {
        let task = std::fs::read_dir(&mem_dir)
            .ok()?
            .flatten()
            .find(|e| e.path().is_dir())?;
        let work = task.path().join("work");
        work.join("memory.stat").exists().then_some(())?;
        // Built (the shell copies its read buffer into the variable, briefly holding twice
        // the size, before it says so), and settled.
        let log = env
            .state
            .join("tasks")
            .join(task.file_name())
            .join("containers/work/container.log");
        std::fs::read_to_string(log)
            .ok()?
            .contains("built")
            .then_some(())?;
        let a = memory_without_cache(&work);
        std::thread::sleep(Duration::from_millis(500));
        let b = memory_without_cache(&work);
        (a > 12_000_000 && a.abs_diff(b) <= a / 50).then_some(())
    })
    .expect("the container built its 12 MB string");
    let kernel_mem_before = {
        let task = std::fs::read_dir(&mem_dir)
            .unwrap()
            .flatten()
            .find(|e| e.path().is_dir())
            .unwrap();
        memory_without_cache(&task.path().join("work")) as f64
    };
    let t0 = Instant::now();
    let u0 = cpu_usage_ns(&dir);
    let out = env
        .command(&["stats", "--no-stream", "--json", "--interval", "2", "stats"])
        .output()
        .unwrap();
    let u1 = cpu_usage_ns(&dir);
    let kernel_pct = 100.0 * (u1 - u0) as f64 / t0.elapsed().as_nanos() as f64 / nproc() as f64;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["containers"][0]["usage"];
    let pct = c["cpu_percent"].as_f64().unwrap();
    assert!(
        (pct - kernel_pct).abs() <= 0.1 * kernel_pct,
        "stats {pct:.2}% vs kernel {kernel_pct:.2}%"
    );

    let task = std::fs::read_dir(&mem_dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap();
    let kernel_mem = memory_without_cache(&task.path().join("work")) as f64;
    let mem = c["memory_bytes"].as_f64().unwrap();
    // Read at other moments than skiff's: within 10 % of either end of the window.
    let (lo, hi) = (
        kernel_mem_before.min(kernel_mem),
        kernel_mem_before.max(kernel_mem),
    );
    assert!(
        mem >= 0.9 * lo && mem <= 1.1 * hi,
        "stats {mem} vs kernel {kernel_mem_before}..{kernel_mem}"
    );
    assert!(mem > 12e6, "the 12 MB the shell holds are counted: {mem}");
    assert_eq!(c["memory_limit_bytes"].as_u64(), Some(64 << 20));
    let pids_current = env.task_cgroup_file(Some("work"), "pids.current");
    assert_eq!(c["pids"].as_u64(), Some(read_num(&pids_current)));
    assert_eq!(v["family"], "stats");

    // The telemetry view: ECS windows with min/max/sum/count.
    let out = env
        .command(&[
            "stats",
            "--telemetry",
            "--sample",
            "1",
            "--window",
            "2",
            "--no-stream",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let work = lines
        .iter()
        .find(|l| l["container"] == "work")
        .expect("container window");
    assert_eq!(work["cpu_percent"]["sample_count"], 2);
    let max = work["cpu_percent"]["max"].as_f64().unwrap();
    assert!(
        max > 0.5 * kernel_pct && max < 1.5 * kernel_pct,
        "window max {max} vs {kernel_pct}"
    );
    assert!(
        lines.iter().any(|l| l["container"].is_null()),
        "task window"
    );

    stop(child);
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn info_reports_capacity_and_cgroup_mode() {
    let env = Env::new();
    let out = env
        .command(&["info", "--json", "--reserved-memory", "256"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["capacity"]["cpu_units"].as_u64(), Some(nproc() * 1024));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        v["capacity"]["memory_mib"].as_u64(),
        Some(total_kib / 1024 - 256)
    );
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    assert_eq!(v["cgroup"]["mode"], if v1 { "v1" } else { "v2" });
    assert!(v["cgroup"]["controllers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "memory"));
    let out = env
        .command(&["info", "--reserved-memory", "99999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved memory"));
}

/// Spawns skiff with its process moved into the cgroup directory `cg` between fork and exec.
fn spawn_in_cgroup(cmd: &mut std::process::Command, cg: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let procs = std::ffi::CString::new(cg.join("cgroup.procs").to_str().unwrap()).unwrap();
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// On a v2 host skiff needs a cgroup without other processes to enable controllers below:
/// alone in its cgroup it moves itself into a leaf; sharing it, it says what to do; given a
/// delegated root (--cgroup-root / SKIFF_CGROUP_ROOT) it works there. Runs in the v2 VM
/// (scripts/test-v2-vm.sh); this hybrid host has no unified controllers to test it with.
#[test]
fn v2_placement_alone_shared_and_delegated() {
    if !is_v2() {
        eprintln!("v1 host: this test runs in the cgroup v2 VM (scripts/test-v2-vm.sh)");
        return;
    }
    let env = Env::new();
    let td = env.taskdef(
        "place",
        r#"{"family":"place","networkMode":"none","containerDefinitions":[
        {"name":"p","image":"$REGISTRY/busybox:latest","memory":16,"command":["sh","-c","cat /proc/self/cgroup; sleep 2"]}]}"#,
    );
    // The container sees only its own cgroup namespace ("0::/"); where it really is, is
    // seen from here while it runs: a process in <parent>/<task>/p beneath `dir`.
    let placed_beneath = |dir: &std::path::Path| {
        let parent = dir.join(&env.cgroup_parent);
        wait_for(Duration::from_secs(60), || {
            std::fs::read_dir(&parent).ok()?.flatten().find_map(|t| {
                let procs = std::fs::read_to_string(t.path().join("p/cgroup.procs")).ok()?;
                (!procs.trim().is_empty()).then_some(())
            })
        })
        .is_some()
    };
    let own = own_cgroup_dirs()[0].clone();
    let base = own.join(format!("skiff-it-deleg-{}", random_hex()));
    let runner = base.join("runner");
    let alone = base.join("alone");
    for d in [&base, &runner, &alone] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(base.join("cgroup.subtree_control"), "+cpu +memory +pids").unwrap();
    let rel = format!(
        "/{}",
        base.strip_prefix("/sys/fs/cgroup").unwrap().display()
    );

    // Delegated root: skiff runs in base/runner, its cgroups go to base/<parent>.
    let mut cmd = env.command(&["run", td.to_str().unwrap()]);
    cmd.env("SKIFF_CGROUP_ROOT", &rel);
    let child = spawn_in_cgroup(&mut cmd, &runner);
    assert!(placed_beneath(&base), "no container cgroup beneath {rel}");
    let out = wait_output(child, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(
        common::stdout(&out),
        "0::/\n",
        "a cgroup namespace of its own"
    );
    assert!(!base.join(&env.cgroup_parent).exists());

    // Shared with another process and no root: a clear error, nothing created.
    let mut sleeper = spawn_in_cgroup(std::process::Command::new("sleep").arg("30"), &runner);
    let out = wait_output(
        spawn_in_cgroup(&mut env.command(&["run", td.to_str().unwrap()]), &runner),
        Duration::from_secs(120),
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        common::stderr(&out).contains("run skiff in a delegated cgroup"),
        "{}",
        common::stderr(&out)
    );
    assert!(!runner.join(&env.cgroup_parent).exists());

    // Alone: skiff moves itself into a leaf and places the task beside it.
    let child = spawn_in_cgroup(&mut env.command(&["run", td.to_str().unwrap()]), &alone);
    assert!(
        placed_beneath(&alone),
        "no container cgroup beneath {}",
        alone.display()
    );
    let out = wait_output(child, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "0::/\n");
    let leaf = alone.join(format!("{}-supervisor", env.cgroup_parent));
    assert!(leaf.exists());

    // A reaped process can keep its cgroup busy for a moment (it is still leaving it).
    for d in [&leaf, &alone, &runner, &base] {
        wait_for(Duration::from_secs(10), || {
            (std::fs::remove_dir(d).is_ok() || !d.exists()).then_some(())
        });
    }
    assert!(!base.exists());
}
