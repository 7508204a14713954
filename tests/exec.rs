//! `skiff exec`: a process started in a running container shares its namespaces, cgroup,
//! root, user and security settings; failures and timeouts are reported clearly.

mod common;

use std::io::BufRead;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::*;

/// Docker's 14 default capabilities as a mask.
const DEFAULT_CAPS: u64 = 0x0000_0000_a804_25fb;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_MKNOD: u64 = 1 << 27;

/// A container that runs until SIGTERM, saying `ready` once `/marker` is written.
fn long_running(name: &str, extra: &str) -> String {
    format!(
        r#"{{"name":"{name}","image":"$REGISTRY/busybox:latest","memory":32{extra},
            "command":["sh","-c","echo hi > /marker; trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"]}}"#
    )
}

const QUICK: &str = r#"{"name":"quick","image":"$REGISTRY/busybox:latest","memory":32,"essential":false,"command":["true"]}"#;

/// A task started with `skiff run` in the background.
struct Task {
    child: Child,
    id: String,
}

/// Starts the task and waits until its `main` container said ready and `quick` (when there
/// is one) has exited.
fn start(env: &Env, name: &str, containers: &[String]) -> Task {
    let td = env.taskdef(
        name,
        &format!(
            r#"{{"family":"{name}","networkMode":"none","containerDefinitions":[{}]}}"#,
            containers.join(",")
        ),
    );
    let mut child = env.spawn(&td, &[]);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let o = wait_output(child, Duration::from_secs(30));
            panic!("skiff run ended: {}", stderr(&o));
        }
        if line.trim_end().ends_with("ready") && line.starts_with("main") {
            break;
        }
    }
    let id = std::fs::read_dir(env.state.join("tasks"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .to_string();
    let task = Task { child, id };
    if containers.iter().any(|c| c.contains(r#""name":"quick""#)) {
        wait_for(Duration::from_secs(30), || {
            (state(env, &task)["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "quick")?["status"]
                == "STOPPED")
                .then_some(())
        })
        .expect("quick stopped");
    }
    task
}

fn state(env: &Env, task: &Task) -> serde_json::Value {
    let p = env.state.join("tasks").join(&task.id).join("state.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn container_pid(env: &Env, task: &Task, name: &str) -> i64 {
    state(env, task)["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["pid"]
        .as_i64()
        .unwrap()
}

fn exec(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    let child = env
        .command(&all)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(60))
}

/// Runs `sh -c script` in `container`; asserts it succeeded and returns its stdout.
fn sh(env: &Env, task: &Task, container: &str, script: &str) -> String {
    let out = exec(env, &[&task.id[..8], container, "--", "sh", "-c", script]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{script}: stdout {} stderr {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `/proc/self/<file>` of a process exec'd in `main`, and `/proc/1/<file>` (the container's
/// own process) as it sees it.
fn own_and_pid1(env: &Env, task: &Task, file: &str) -> (String, String) {
    let out = sh(
        env,
        task,
        "main",
        &format!("cat /proc/self/{file}; echo --; cat /proc/1/{file}"),
    );
    let (own, first) = out.split_once("--\n").unwrap();
    (own.to_string(), first.to_string())
}

/// Stops the task (SIGTERM to skiff run) and checks that it ended well.
fn stop(task: Task) {
    unsafe { libc::kill(task.child.id() as i32, libc::SIGTERM) };
    let out = wait_output(task.child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn exec_runs_inside_the_container() {
    let env = Env::new();
    let task = start(
        &env,
        "execin",
        &[
            long_running(
                "main",
                r#","hostname":"exechost","workingDirectory":"/tmp",
                   "environment":[{"name":"FOO","value":"bar"}],
                   "ulimits":[{"name":"nofile","softLimit":123,"hardLimit":234}],
                   "linuxParameters":{"capabilities":{"add":["NET_ADMIN"],"drop":["MKNOD"]}}"#,
            ),
            long_running("nobody", r#","essential":false,"user":"nobody:nogroup""#),
        ],
    );
    let short = task.id[..8].to_string();
    let short = short.as_str();

    // Output on both streams and the exit code come back.
    let out = exec(
        &env,
        &[
            short,
            "main",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");

    // Every namespace is the container's, as the host sees them.
    let pid = container_pid(&env, &task, "main");
    let inside = sh(
        &env,
        &task,
        "main",
        "for n in cgroup ipc mnt net pid uts; do readlink /proc/self/ns/$n; done",
    );
    let host: Vec<String> = ["cgroup", "ipc", "mnt", "net", "pid", "uts"]
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/{pid}/ns/{n}"))
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    assert_eq!(inside.lines().collect::<Vec<_>>(), host);

    // Hostname, root filesystem, working directory, environment, rlimits, network.
    let out = sh(
        &env,
        &task,
        "main",
        "hostname; cat /marker; pwd; echo $FOO $HOME; ulimit -n; grep -c : /proc/net/dev",
    );
    assert_eq!(out, "exechost\nhi\n/tmp\nbar /root\n123\n1\n");
    let out = exec(
        &env,
        &[short, "main", "-e", "FOO=baz", "sh", "-c", "echo $FOO"],
    );
    assert_eq!(stdout(&out), "baz\n", "{}", stderr(&out));

    // The container's processes only: its sh and sleep, and ps itself.
    let out = sh(&env, &task, "main", "ps -o pid,comm");
    let procs: Vec<&str> = out.lines().skip(1).map(str::trim).collect();
    assert!(procs.contains(&"1 sh"), "{out}");
    assert!(procs.len() <= 4, "{out}");
    for p in &procs {
        let comm = p.split_whitespace().nth(1).unwrap();
        assert!(["sh", "sleep", "ps"].contains(&comm), "{out}");
    }

    // The same cgroups as the container's process, seen from its cgroup namespace (a root).
    let (own, first) = own_and_pid1(&env, &task, "cgroup");
    assert_eq!(own, first);
    assert!(
        own.lines()
            .any(|l| l.ends_with(":/") && (l.contains(":memory:") || l.starts_with("0::"))),
        "{own}"
    );

    // Capabilities, no_new_privs and seccomp as the container's own process has them.
    let (own, first) = own_and_pid1(&env, &task, "status");
    let (own, first) = (own.as_str(), first.as_str());
    let want = (DEFAULT_CAPS | CAP_NET_ADMIN) & !CAP_MKNOD;
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(hex(&status_field(own, key)), want, "{key}: {own}");
        assert_eq!(status_field(own, key), status_field(first, key), "{key}");
    }
    assert_eq!(status_field(own, "NoNewPrivs"), "1");
    assert_eq!(status_field(own, "Seccomp"), "2");

    // Only stdio (and ls's own directory) are open.
    let out = sh(&env, &task, "main", "ls /proc/self/fd | tr '\\n' ' '");
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert!(fds.len() <= 4 && fds[..3] == ["0", "1", "2"], "{out}");

    // The container's user, resolved in its own /etc/passwd; or another one asked for.
    let out = sh(
        &env,
        &task,
        "nobody",
        "id; grep CapEff /proc/self/status; echo $HOME",
    );
    assert!(
        out.starts_with("uid=65534(nobody) gid=65534(nogroup)"),
        "{out}"
    );
    assert_eq!(hex(&status_field(&out, "CapEff")), 0, "{out}");
    let out = exec(&env, &[short, "nobody", "-u", "0", "id", "-u"]);
    assert_eq!(stdout(&out), "0\n", "{}", stderr(&out));

    // More output than the shim buffers for a client comes through whole.
    let out = exec(
        &env,
        &[
            short,
            "main",
            "sh",
            "-c",
            "head -c 300000 /dev/zero | tr '\\0' a",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 300_000);
    assert!(out.stdout.iter().all(|b| *b == b'a'));

    // Nothing exec'd stays behind in the container.
    let out = sh(
        &env,
        &task,
        "main",
        "ps -o comm > /tmp/ps; grep -vc -x -e sh -e sleep -e ps -e COMMAND /tmp/ps || true",
    );
    assert_eq!(out.trim(), "0", "{out}");
    stop(task);
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn exec_failures_are_clear_and_timeouts_are_enforced() {
    let env = Env::new();
    let task = start(
        &env,
        "execfail",
        &[long_running("main", ""), QUICK.to_string()],
    );
    let short = task.id[..8].to_string();
    let short = short.as_str();
    let check = |args: &[&str], code: i32, words: &[&str]| {
        let out = exec(&env, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: {w:?} missing in {err}");
        }
    };
    check(
        &[short, "main", "nosuchcmd"],
        127,
        &["container main", "nosuchcmd", "not found"],
    );
    check(
        &[short, "main", "/etc/passwd"],
        126,
        &["container main", "/etc/passwd", "permission denied"],
    );
    check(
        &[short, "quick", "true"],
        125,
        &["container quick", "not running"],
    );
    check(
        &[short, "ghost", "true"],
        125,
        &["container ghost", "no such container"],
    );
    check(&["0000ffff", "main", "true"], 125, &["no task"]);

    // A timeout kills the process and says so.
    let t0 = Instant::now();
    check(
        &[short, "main", "--timeout-ms", "300", "sleep", "30"],
        137,
        &["container main", "timeout"],
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // A client that goes away takes its process with it.
    let mut client = env
        .command(&["exec", short, "main", "sleep", "77"])
        .spawn()
        .unwrap();
    let sleeping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0077\x00"))
    };
    wait_for(Duration::from_secs(30), || sleeping().then_some(())).expect("sleep 77 started");
    client.kill().unwrap();
    let _ = client.wait();
    wait_for(Duration::from_secs(10), || (!sleeping()).then_some(()))
        .expect("the exec'd process was killed with its client gone");

    // An exec still running when the task stops ends with it.
    let inflight = env
        .command(&["exec", short, "main", "sleep", "88"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            (cmd == b"sleep\088\0").then_some(())
        })
    })
    .expect("the exec'd sleep runs");
    stop(task);
    let out = wait_output(inflight, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    // The task is gone: exec says so.
    check(&[short, "main", "true"], 125, &["no task"]);
}
