//! `skiff run` end to end: a real registry, real namespaces, real cgroups.

mod common;

use std::time::Duration;

use common::*;

fn one(name: &str, extra: &str, command: &str) -> String {
    format!(
        r#"{{"family":"{name}","networkMode":"none","containerDefinitions":[
            {{"name":"{name}","image":"$REGISTRY/busybox:latest","memory":32,"command":{command}{extra}}}]}}"#
    )
}

#[test]
fn hello_example_prints_its_greeting() {
    let env = Env::new();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.json"))
            .unwrap()
            .replace("127.0.0.1:51670", &registry());
    let td = env.taskdef("hello", &example);
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Hello from skiff: running as PID 1 on host hello, Linux {}\n",
            std::env::consts::ARCH
        )
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn exit_codes_are_the_essential_containers() {
    let env = Env::new();
    for (code, cmd) in [
        (0, r#"["true"]"#),
        (3, r#"["sh","-c","exit 3"]"#),
        (42, r#"["sh","-c","exit 42"]"#),
    ] {
        let td = env.taskdef("exit", &one("exit", "", cmd));
        let out = env.run(&td);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{cmd}: stderr: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("OutOfMemoryError"));
    }
}

#[test]
fn container_is_pid_1_with_its_own_hostname_env_and_cwd() {
    let env = Env::new();
    let td = env.taskdef(
        "ident",
        r#"{"family":"ident","networkMode":"none","containerDefinitions":[{
            "name":"web-1","image":"$REGISTRY/busybox:latest","memory":32,
            "workingDirectory":"/srv/app",
            "environment":[{"name":"COLOR","value":"blue"}],
            "command":["sh","-c","echo pid=$$ host=$(hostname) color=$COLOR cwd=$(pwd) path=$PATH; ps -o pid,comm | wc -l; ls /proc/1/root >/dev/null && echo procok; cat /proc/self/cgroup | head -1 >/dev/null; ip link 2>/dev/null | grep -c '^[0-9]'; cat /sys/class/net/lo/operstate"]}]}"#,
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let s = stdout(&out);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines[0],
        "pid=1 host=web-1 color=blue cwd=/srv/app path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    // ps header, sh, ps, wc: only the container's own processes are visible.
    assert_eq!(lines[1].trim(), "4", "processes seen: {s}");
    assert_eq!(lines[2], "procok");
    // Network mode none: only loopback, and it is up.
    assert_eq!(lines[3], "1");
    assert_eq!(
        lines[4], "unknown",
        "loopback operstate (up loopback reports unknown)"
    );
}

#[test]
fn oom_kill_gives_137_and_the_oom_reason() {
    let env = Env::new();
    let td = env.taskdef(
        "oom",
        &one(
            "hog",
            "",
            r#"["sh","-c","echo start; exec dd if=/dev/zero of=/dev/null bs=64M count=1"]"#,
        )
        .replace("\"memory\":32", "\"memory\":20"),
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(137), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("container hog: OutOfMemoryError: Container killed due to memory usage"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn memory_limit_is_enforced_in_the_cgroup() {
    let env = Env::new();
    // 10 MiB fits into a 32 MiB limit; the limit file says 32 MiB while the container runs.
    let td = env.taskdef(
        "fits",
        &one("fits", "", r#"["sh","-c","dd if=/dev/zero of=/dev/null bs=10M count=1 2>/dev/null && echo fits; sleep 2"]"#),
    );
    let child = env.spawn(&td, &[]);
    let limit_file = if is_v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let limit = read_num(&env.task_cgroup_file(Some("fits"), limit_file));
    assert_eq!(limit, 32u64 << 20);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "fits\n");
    assert!(!stderr(&out).contains("OutOfMemoryError"));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn cpu_units_become_shares() {
    let env = Env::new();
    let td = env.taskdef("cpu", &one("cpu", r#","cpu":512"#, r#"["sleep","2"]"#));
    let child = env.spawn(&td, &[]);
    let (file, expected) = if is_v2() {
        ("cpu.weight", 20)
    } else {
        ("cpu.shares", 512)
    };
    let shares = read_num(&env.task_cgroup_file(Some("cpu"), file));
    assert_eq!(shares, expected);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[test]
fn killed_by_a_signal_is_128_plus_signal_without_oom_reason() {
    let env = Env::new();
    let td = env.taskdef("victim", &one("victim", "", r#"["sleep","60"]"#));
    let child = env.spawn(&td, &[]);
    // Kill the container's PID 1 from the host, found through its cgroup.
    let procs = env.task_cgroup_file(Some("victim"), "cgroup.procs");
    let pid: i32 = std::fs::read_to_string(procs)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(137), "stderr: {}", stderr(&out));
    assert!(
        !stderr(&out).contains("OutOfMemoryError"),
        "stderr: {}",
        stderr(&out)
    );

    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// Sends `sig` to a running `skiff run` once its containers have started.
fn signal_when_started(
    env: &Env,
    td: &std::path::Path,
    container: &str,
    program: &str,
    sig: i32,
) -> std::process::Output {
    let child = env.spawn(td, &[]);
    let procs = env.task_cgroup_file(Some(container), "cgroup.procs");
    // The container's first process runs `program`, and a shell has installed its SIGTERM
    // trap (bit 15 of SigCgt).
    wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&procs).ok()?;
        let pid = text.lines().next()?.trim().to_string();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let caught = hex(&status_field(&status, "SigCgt"));
        let trapped = caught & (1 << (libc::SIGTERM - 1)) != 0;
        (comm.trim() == program && (program != "sh" || trapped)).then_some(())
    })
    .expect("the container's program runs");
    unsafe { libc::kill(child.id() as i32, sig) };
    wait_output(child, Duration::from_secs(60))
}

#[test]
fn sigint_and_sigterm_stop_the_task_gracefully_then_by_force() {
    let env = Env::new();
    // The essential container handles SIGTERM and exits 7; skiff exits with its code.
    let graceful = env.taskdef(
        "graceful",
        &one(
            "graceful",
            r#","stopTimeout":20"#,
            r#"["sh","-c","trap 'echo got TERM; exit 7' TERM; while true; do sleep 0.1; done"]"#,
        ),
    );
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let out = signal_when_started(&env, &graceful, "graceful", "sh", sig);
        assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
        assert_eq!(stdout(&out), "got TERM\n");
    }
    // A PID 1 without a SIGTERM handler ignores it: SIGKILL after stopTimeout, 137, no OOM.
    let stubborn = env.taskdef(
        "stubborn",
        &one("stubborn", r#","stopTimeout":1"#, r#"["sleep","60"]"#),
    );
    let out = signal_when_started(&env, &stubborn, "stubborn", "sleep", libc::SIGTERM);
    assert_eq!(out.status.code(), Some(137), "stderr: {}", stderr(&out));
    assert!(!stderr(&out).contains("OutOfMemoryError"));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn several_containers_prefix_output_and_the_essential_one_decides() {
    let env = Env::new();
    let td = env.taskdef(
        "pair",
        r#"{"family":"pair","networkMode":"none","containerDefinitions":[
            {"name":"main","image":"$REGISTRY/busybox:latest","memory":32,
             "command":["sh","-c","echo one; sleep 1; echo two >&2; exit 5"]},
            {"name":"side","image":"$REGISTRY/busybox:latest","memory":32,"essential":false,
             "command":["sh","-c","echo ready; trap 'echo side stopping; exit 0' TERM; while true; do sleep 0.1; done"]}]}"#,
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(5), "stderr: {}", stderr(&out));
    let so = stdout(&out);
    assert!(so.contains("main | one\n"), "{so}");
    assert!(so.contains("side | ready\n"), "{so}");
    // The essential container's exit stopped the other one with SIGTERM.
    assert!(so.contains("side | side stopping\n"), "{so}");
    assert!(stderr(&out).contains("main | two\n"), "{}", stderr(&out));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn layers_stack_with_whiteouts_and_opaque_directories() {
    let env = Env::new();
    let td = env.taskdef(
        "layers",
        r#"{"family":"layers","networkMode":"none","containerDefinitions":[
            {"name":"l","image":"$REGISTRY/busybox-layered:latest","memory":32,
             "command":["sh","-c","cat /etc/layer2; ls /opt/data; test -e /etc/motd && echo motd-present || echo motd-gone; echo written > /etc/new; cat /etc/new"]}]}"#,
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "layer two was here\nnew-file\nmotd-gone\nwritten\n"
    );
    // The write went to the container's upper directory, never into the shared layers.
    let layers = env.state.join("layers");
    for l in std::fs::read_dir(&layers).unwrap().flatten() {
        assert!(!l.path().join("etc/new").exists());
    }
}

#[test]
fn bad_input_is_one_clear_line_and_exit_125_leaving_nothing() {
    let env = Env::new();
    let cases: Vec<(&str, String, &str)> = vec![
        ("notjson", "{ this is not json".into(), "not valid JSON"),
        ("empty", r#"{"family":"e","networkMode":"none","containerDefinitions":[]}"#.into(), "containerDefinitions: must hold at least one container"),
        (
            "noimage",
            one("noimage", "", r#"["true"]"#).replace("busybox:latest", "does-not-exist:1.0"),
            "CannotPullContainerError: pull $REGISTRY/does-not-exist:1.0: manifest 1.0: manifest unknown",
        ),
        (
            "unreachable",
            one("unreachable", "", r#"["true"]"#).replace("$REGISTRY", "127.0.0.1:9"),
            "CannotPullContainerError: pull 127.0.0.1:9/busybox:latest: cannot reach registry 127.0.0.1:9",
        ),
        (
            // (A bridge-mode task would change this host's network: tests/net.rs runs
            // those inside a throwaway network namespace.)
            "ports",
            one("ports", r#","portMappings":[{"containerPort":80}]"#, r#"["true"]"#),
            "containerDefinitions[0].portMappings: cannot be used in none network mode (no connectivity)",
        ),
        (
            "nocommand",
            one("nocommand", "", r#"[]"#).replace(r#""command":[]"#, r#""entryPoint":[]"#),
            "",
        ),
    ];
    for (name, json, want) in cases {
        let td = env.taskdef(name, &json);
        let out = env.run(&td);
        let err = stderr(&out);
        if name == "nocommand" {
            // busybox's image Cmd is ["sh"]: an empty entryPoint keeps it, so this runs.
            assert_eq!(out.status.code(), Some(0), "{name}: {err}");
            continue;
        }
        assert_eq!(out.status.code(), Some(125), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        let want = want.replace("$REGISTRY", &registry());
        assert!(err.contains(&want), "{name}: want {want:?} in {err:?}");
        assert!(
            err.contains(td.to_str().unwrap()),
            "{name}: names the file: {err}"
        );
        assert!(env.leftovers().is_empty(), "{name}: {:?}", env.leftovers());
    }
    // Several problems at once: each on its own line with its field path.
    let td = env.taskdef(
        "many",
        r#"{"family":"many","containerDefinitions":[{"name":"a","memory":2,"essential":false}]}"#,
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    for want in [
        "containerDefinitions[0].image: is required",
        "containerDefinitions[0].memory: 2 MiB is below the minimum of 6 MiB",
        "containerDefinitions: at least one container must be essential",
    ] {
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    // A command that cannot start: docker's codes and ECS's reason.
    let td = env.taskdef("missing", &one("missing", "", r#"["/no/such/binary"]"#));
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out)
            .contains("CannotStartContainerError: exec /no/such/binary: no such file or directory"),
        "{}",
        stderr(&out)
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn twenty_runs_in_a_row_leave_nothing_behind() {
    let env = Env::new();
    let td = env.taskdef(
        "repeat",
        r#"{"family":"repeat","networkMode":"none","containerDefinitions":[
            {"name":"a","image":"$REGISTRY/busybox:latest","memory":32,"command":["sh","-c","sleep 0.3; echo a; touch /tmp/x"]},
            {"name":"b","image":"$REGISTRY/busybox-layered:latest","memory":32,"essential":false,
             "stopTimeout":2,"command":["sh","-c","trap 'exit 0' TERM; while true; do sleep 0.1; done"]}]}"#,
    );
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    for i in 0..20 {
        let out = env.run(&td);
        assert_eq!(out.status.code(), Some(0), "run {i}: {}", stderr(&out));
        let left = env.leftovers();
        assert!(left.is_empty(), "run {i} left {left:?}");
    }
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(mounts_before, mounts_after);
    // Only the shared image store remains, and the empty directory the binary's read-only
    // view is layered over.
    let mut top: Vec<String> = std::fs::read_dir(&env.state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["empty", "images", "layers", "locks", "refs", "tasks", "tmp"]
    );
    assert_eq!(
        std::fs::read_dir(env.state.join("empty")).unwrap().count(),
        0
    );
}

#[test]
fn concurrent_tasks_share_the_store_and_parent_cgroup() {
    let env = Env::new();
    let td = env.taskdef("conc", &one("conc", "", r#"["sh","-c","echo $HOSTNAME"]"#));
    for _round in 0..3 {
        let children: Vec<_> = (0..4)
            .map(|_| {
                env.command(&["run", td.to_str().unwrap()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = wait_output(c, Duration::from_secs(120));
            assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
            assert_eq!(stdout(&out), "conc\n");
        }
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}
