//! The daemonless task commands: `run -d`, `ps`, `logs -f`, `stop`, `inspect`, `rm`, and how
//! they cope with crashed skiff processes and shims.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

fn sh_task(family: &str, extra: &str, command: &str) -> String {
    format!(
        r#"{{"family":"{family}","networkMode":"none","containerDefinitions":[
            {{"name":"main","image":"$REGISTRY/busybox:latest","memory":64,"command":["sh","-c",{cmd}]{extra}}}]}}"#,
        cmd = serde_json::to_string(command).unwrap()
    )
}

fn skiff(env: &Env, args: &[&str]) -> Output {
    env.output(args)
}

/// `skiff run -d`: the task id it prints.
fn run_detached(env: &Env, td: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(extra);
    args.push(td.to_str().unwrap());
    let out = skiff(env, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 32, "a task id: {id:?}");
    id
}

fn inspect(env: &Env, task: &str) -> serde_json::Value {
    let out = skiff(env, &["inspect", "--json", task]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn wait_status(env: &Env, task: &str, want: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(30), || {
        let j = inspect(env, task);
        (j["lastStatus"] == want).then_some(j)
    })
    .unwrap_or_else(|| panic!("task {task} never became {want}: {}", inspect(env, task)))
}

#[test]
fn detached_task_listed_followed_stopped_inspected_and_removed() {
    let env = Env::new();
    let td = env.taskdef(
        "web",
        &sh_task(
            "web",
            r#","stopTimeout":20"#,
            "trap 'echo bye; exit 3' TERM; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
        ),
    );
    let id = run_detached(&env, &td, &["--name", "web"]);

    // Listed while it runs, by id prefix and by name.
    let ps = skiff(&env, &["ps"]);
    let line = stdout(&ps)
        .lines()
        .find(|l| l.starts_with(&id[..12]))
        .unwrap_or_else(|| panic!("{}", stdout(&ps)))
        .to_string();
    assert!(line.contains("web") && line.contains("RUNNING"), "{line}");
    let j = inspect(&env, "web");
    assert_eq!(j["taskId"], id.as_str());
    assert_eq!(j["containers"][0]["lastStatus"], "RUNNING");
    assert!(j["containers"][0]["imageDigest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // A second task cannot take the name.
    let dup = skiff(&env, &["run", "-d", "--name", "web", td.to_str().unwrap()]);
    assert_eq!(dup.status.code(), Some(125));
    assert!(stderr(&dup).contains("already in use"), "{}", stderr(&dup));

    // rm refuses a running task.
    let rm = skiff(&env, &["rm", "web"]);
    assert_eq!(rm.status.code(), Some(125));
    assert!(stderr(&rm).contains("stop it first"), "{}", stderr(&rm));

    // logs -f follows until the task stops, and sees the last line the trap writes.
    let follow = env
        .command(&["logs", "-f", &id[..8]])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let stop = skiff(&env, &["stop", "web"]);
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    assert_eq!(stdout(&stop).trim(), id);
    let followed = wait_output(follow, Duration::from_secs(10));
    assert_eq!(followed.status.code(), Some(0), "{}", stderr(&followed));
    let text = stdout(&followed);
    assert!(text.starts_with("line 0\n"), "{text}");
    assert!(text.ends_with("bye\n"), "{text}");

    let j = inspect(&env, &id);
    assert_eq!(j["lastStatus"], "STOPPED");
    assert_eq!(j["stoppedReason"], "Task stopped by user");
    assert_eq!(j["stopCode"], "UserInitiated");
    assert_eq!(j["containers"][0]["exitCode"], 3);
    assert!(j["containers"][0]["stoppedAt"].is_string());
    // Stopped tasks only with -a.
    assert!(!stdout(&skiff(&env, &["ps"])).contains(&id[..12]));
    let all: serde_json::Value =
        serde_json::from_str(&stdout(&skiff(&env, &["ps", "-a", "--json"]))).unwrap();
    assert_eq!(all[0]["taskId"], id.as_str());

    let rm = skiff(&env, &["rm", "web"]);
    assert_eq!(rm.status.code(), Some(0), "{}", stderr(&rm));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_detached_task_records_its_exit_with_no_skiff_process_running() {
    let env = Env::new();
    let td = env.taskdef("quick", &sh_task("quick", "", "sleep 1; exit 7"));
    let id = run_detached(&env, &td, &[]);
    // Nothing of skiff but the shim runs until the container has exited.
    std::thread::sleep(Duration::from_secs(2));
    let j = wait_status(&env, &id, "STOPPED");
    assert_eq!(j["exitCode"], 7);
    assert_eq!(j["containers"][0]["exitCode"], 7);
    assert_eq!(j["stopCode"], "EssentialContainerExited");
    let rm = skiff(&env, &["rm", &id]);
    assert_eq!(rm.status.code(), Some(0), "{}", stderr(&rm));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_killed_shim_leaves_its_containers_vanished_and_nothing_running() {
    let env = Env::new();
    let td = env.taskdef("victim", &sh_task("victim", "", "sleep 300"));
    let id = run_detached(&env, &td, &[]);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.state.join("tasks").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let shim = state["shim_pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(shim, libc::SIGKILL) };
    let j = wait_status(&env, &id, "STOPPED");
    let reason = j["containers"][0]["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("ContainerVanishedError"), "{reason}");
    let rm = skiff(&env, &["rm", &id]);
    assert_eq!(rm.status.code(), Some(0), "{}", stderr(&rm));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_killed_foreground_run_keeps_its_task_which_stop_and_rm_end() {
    let env = Env::new();
    let td = env.taskdef("fg", &sh_task("fg", r#","stopTimeout":1"#, "sleep 300"));
    let mut child = env.spawn(&td, &["--name", "fg"]);
    let j = wait_for(Duration::from_secs(30), || {
        let out = skiff(&env, &["inspect", "--json", "fg"]);
        let j: serde_json::Value = serde_json::from_str(&stdout(&out)).ok()?;
        (j["lastStatus"] == "RUNNING").then_some(j)
    })
    .expect("the task runs");
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(inspect(&env, "fg")["lastStatus"], "RUNNING", "{j}");
    // rm -f stops it first.
    let rm = skiff(&env, &["rm", "-f", "fg"]);
    assert_eq!(rm.status.code(), Some(0), "{}", stderr(&rm));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn starts_cut_off_at_any_point_are_cleaned_up_by_the_next_command() {
    let env = Env::new();
    let td = env.taskdef("cut", &sh_task("cut", r#","stopTimeout":1"#, "sleep 300"));
    // Warm the image store so that the kills land in the start itself.
    let first = run_detached(&env, &td, &[]);
    assert_eq!(skiff(&env, &["rm", "-f", &first]).status.code(), Some(0));
    for delay_ms in [0u64, 2, 4, 6, 8, 10, 15, 20, 30, 50] {
        let mut child = env.spawn(&td, &["-d"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    // What was cut off before its shim ran is removed by the next command; what got a shim
    // is a task, which rm -f ends.
    let all: serde_json::Value =
        serde_json::from_str(&stdout(&skiff(&env, &["ps", "-a", "--json"]))).unwrap();
    for t in all.as_array().unwrap() {
        let id = t["taskId"].as_str().unwrap();
        // A shim that never got its client starts the containers after 30 s at the latest:
        // rm -f stops it whatever it is doing.
        let rm = skiff(&env, &["rm", "-f", id]);
        assert_eq!(rm.status.code(), Some(0), "{id}: {}", stderr(&rm));
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn stopped_tasks_are_removed_after_the_cleanup_wait() {
    let env = Env::new();
    let td = env.taskdef("brief", &sh_task("brief", "", "true"));
    let id = run_detached(&env, &td, &[]);
    wait_status(&env, &id, "STOPPED");
    assert!(env.state.join("tasks").join(&id).exists());
    std::thread::sleep(Duration::from_millis(1200));
    let ps = skiff(&env, &["--task-cleanup-wait", "1s", "ps", "-a"]);
    assert!(!stdout(&ps).contains(&id[..12]), "{}", stdout(&ps));
    assert!(!env.state.join("tasks").join(&id).exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn task_commands_name_what_is_wrong() {
    let env = Env::new();
    for args in [
        vec!["inspect", "nosuch"],
        vec!["stop", "nosuch"],
        vec!["rm", "nosuch"],
        vec!["logs", "nosuch"],
    ] {
        let out = skiff(&env, &args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            stderr(&out).contains("no task \"nosuch\""),
            "{}",
            stderr(&out)
        );
    }
    let td = env.taskdef("n", &sh_task("n", "", "true"));
    let bad = skiff(&env, &["run", "-d", "--name", "a b", td.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("--name \"a b\""), "{}", stderr(&bad));
    let bad = skiff(&env, &["--task-cleanup-wait", "soon", "ps"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_detached_task_that_cannot_start_says_why() {
    let env = Env::new();
    let td = env.taskdef(
        "nostart",
        r#"{"family":"nostart","networkMode":"none","containerDefinitions":[
            {"name":"main","image":"$REGISTRY/busybox:latest","memory":64,"command":["/no/such/program"]}]}"#,
    );
    let out = skiff(&env, &["run", "-d", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("container main: CannotStartContainerError")
            && err.contains("/no/such/program"),
        "{err}"
    );
    let ps = stdout(&skiff(&env, &["ps", "-a", "--json"]));
    let tasks: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let id = tasks[0]["taskId"]
        .as_str()
        .expect("the task stays listed")
        .to_string();
    let j = inspect(&env, &id);
    assert_eq!(j["lastStatus"], "STOPPED", "{j}");
    assert_eq!(skiff(&env, &["rm", &id]).status.code(), Some(0));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_definition_for_another_architecture_is_refused_by_run_and_accepted_by_validate() {
    let env = Env::new();
    let other = if std::env::consts::ARCH == "aarch64" {
        "X86_64"
    } else {
        "ARM64"
    };
    let td = env.taskdef(
        "otherarch",
        &format!(
            r#"{{"family":"otherarch","networkMode":"none","runtimePlatform":{{"cpuArchitecture":"{other}"}},
            "containerDefinitions":[{{"name":"main","image":"$REGISTRY/busybox:latest","memory":64}}]}}"#
        ),
    );
    let out = skiff(&env, &["run", td.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("runtimePlatform.cpuArchitecture: ") && stderr(&out).contains(other),
        "{}",
        stderr(&out)
    );
    // The definition itself is valid: a server keeps it for hosts of that architecture.
    let out = skiff(&env, &["validate", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}
