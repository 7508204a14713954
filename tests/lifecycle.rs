//! ECS's container lifecycle in a task: `dependsOn` with `startTimeout`, the reverse order
//! of a stop, `restartPolicy`, `secrets` from the local store and `environmentFiles`.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

fn skiff(env: &Env, args: &[&str]) -> Output {
    env.output(args)
}

fn container(name: &str, extra: &str, script: &str) -> String {
    format!(
        r#"{{"name":"{name}","image":"$REGISTRY/busybox:latest","memory":32,"command":["sh","-c",{cmd}]{extra}}}"#,
        cmd = serde_json::to_string(script).unwrap()
    )
}

fn task(family: &str, containers: &[String]) -> String {
    format!(
        r#"{{"family":"{family}","networkMode":"none","containerDefinitions":[{}]}}"#,
        containers.join(",")
    )
}

/// The lines of a foreground run's output, without the `name | ` prefixes.
fn lines(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .map(|l| l.split_once(" | ").map_or(l, |(_, r)| r).to_string())
        .collect()
}

#[test]
fn depends_on_orders_starts_by_condition() {
    let env = Env::new();
    let td = env.taskdef(
        "order",
        &task(
            "order",
            &[
                container("db", r#","essential":false"#, "echo db-ready; sleep 0.3; echo db-done"),
                container(
                    "migrate",
                    r#","essential":false,"dependsOn":[{"containerName":"db","condition":"SUCCESS"}]"#,
                    "echo migrate-ran",
                ),
                container(
                    "app",
                    r#","dependsOn":[{"containerName":"migrate","condition":"COMPLETE"},{"containerName":"db","condition":"START"}]"#,
                    "echo app-ran",
                ),
            ],
        ),
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let l = lines(&out);
    let pos = |s: &str| {
        l.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {l:?}"))
    };
    assert!(pos("db-done") < pos("migrate-ran"), "{l:?}");
    assert!(pos("migrate-ran") < pos("app-ran"), "{l:?}");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn unresolvable_dependencies_and_start_timeouts_give_up_with_a_reason() {
    let env = Env::new();
    // SUCCESS of a container that exits 3 can never hold.
    let td = env.taskdef(
        "nope",
        &task(
            "nope",
            &[
                container("first", r#","essential":false"#, "exit 3"),
                container(
                    "second",
                    r#","dependsOn":[{"containerName":"first","condition":"SUCCESS"}]"#,
                    "echo must-not-run",
                ),
            ],
        ),
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(!stdout(&out).contains("must-not-run"));
    assert!(
        stderr(&out).contains("container second: CannotStartContainerError: dependency first exited with 3 and cannot reach SUCCESS"),
        "{}",
        stderr(&out)
    );
    // A dependency that does not complete within its startTimeout.
    let td = env.taskdef(
        "slow",
        &task(
            "slow",
            &[
                container(
                    "slowpoke",
                    r#","essential":false,"startTimeout":1,"stopTimeout":1"#,
                    "sleep 30",
                ),
                container(
                    "waiter",
                    r#","dependsOn":[{"containerName":"slowpoke","condition":"COMPLETE"}]"#,
                    "echo must-not-run",
                ),
            ],
        ),
    );
    let t = std::time::Instant::now();
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not reach COMPLETE within its startTimeout (1 s)"),
        "{}",
        stderr(&out)
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_stop_signals_dependents_before_what_they_depend_on() {
    let env = Env::new();
    let td = env.taskdef(
        "rev",
        &task(
            "rev",
            &[
                container(
                    "base",
                    r#","stopTimeout":10"#,
                    "trap 'echo base-term; exit 0' TERM; echo base-up; while true; do sleep 0.1; done",
                ),
                container(
                    "top",
                    r#","stopTimeout":10,"dependsOn":[{"containerName":"base","condition":"START"}]"#,
                    "trap 'echo top-term; sleep 1; echo top-gone; exit 0' TERM; echo top-up; while true; do sleep 0.1; done",
                ),
            ],
        ),
    );
    let child = env.spawn(&td, &[]);
    // Both traps are set once top says it is up (base started first).
    wait_for(Duration::from_secs(60), || {
        let ps: serde_json::Value =
            serde_json::from_str(&stdout(&skiff(&env, &["ps", "--json"]))).ok()?;
        let id = ps[0]["taskId"].as_str()?.to_string();
        stdout(&skiff(&env, &["logs", &id, "top"]))
            .contains("top-up")
            .then_some(())
    })
    .expect("top starts");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_output(child, Duration::from_secs(60));
    let l = lines(&out);
    let pos = |s: &str| {
        l.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {l:?}"))
    };
    assert!(pos("top-term") < pos("top-gone"), "{l:?}");
    assert!(
        pos("top-gone") < pos("base-term"),
        "base is stopped only after top: {l:?}"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn restart_policy_restarts_a_container_that_ran_long_enough() {
    let env = Env::new();
    // restartAttemptPeriod is at least 60 s (ECS's bound): the container runs 61 s, fails,
    // and is started again.
    let td = env.taskdef(
        "again",
        &task(
            "again",
            &[container(
                "flaky",
                r#","stopTimeout":1,"restartPolicy":{"enabled":true,"ignoredExitCodes":[0],"restartAttemptPeriod":60}"#,
                "echo run; sleep 61; exit 1",
            )],
        ),
    );
    let out = skiff(&env, &["run", "-d", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let restarted = wait_for(Duration::from_secs(90), || {
        let out = skiff(&env, &["inspect", "--json", &id]);
        let j: serde_json::Value = serde_json::from_str(&stdout(&out)).ok()?;
        (j["containers"][0]["restartCount"] == 1 && j["containers"][0]["lastStatus"] == "RUNNING")
            .then_some(j)
    });
    let j = restarted.expect("restarted once and running again");
    assert_eq!(j["lastStatus"], "RUNNING", "{j}");
    let logs = stdout(&skiff(&env, &["logs", &id]));
    assert_eq!(logs, "run\nrun\n");
    assert_eq!(skiff(&env, &["rm", "-f", &id]).status.code(), Some(0));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn secrets_and_environment_files_reach_the_container_and_no_state_file() {
    let env = Env::new();
    let mut set = env
        .command(&["secret", "set", "db-pass"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(set.stdin.as_mut().unwrap(), b"s3cr3t-value\n").unwrap();
    drop(set.stdin.take());
    assert!(set.wait().unwrap().success());
    let env_file = env.dir.join("app.env");
    std::fs::write(&env_file, "# settings\nA=from-file\nB=from-file\n\n").unwrap();
    let td = env.taskdef(
        "sec",
        &task(
            "sec",
            &[container(
                "app",
                &format!(
                    r#","stopTimeout":1,"environment":[{{"name":"B","value":"from-env"}}],
                    "environmentFiles":[{{"value":"{}","type":"s3"}}],
                    "secrets":[{{"name":"DB_PASS","valueFrom":"arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-pass-AbCdEf"}}]"#,
                    env_file.display()
                ),
                "echo A=$A B=$B PASS=$DB_PASS; sleep 30",
            )],
        ),
    );
    let out = skiff(&env, &["run", "-d", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let logs = wait_for(Duration::from_secs(20), || {
        let l = stdout(&skiff(&env, &["logs", &id]));
        (!l.is_empty()).then_some(l)
    })
    .unwrap();
    assert_eq!(logs, "A=from-file B=from-env PASS=s3cr3t-value\n");
    // The value is in no file of the task's directory besides the container's own log, and
    // not in what inspect prints.
    let task_dir = env.state.join("tasks").join(&id);
    for f in ["task.json", "shim.json", "state.json"] {
        let text = std::fs::read_to_string(task_dir.join(f)).unwrap();
        assert!(!text.contains("s3cr3t-value"), "{f} holds the secret");
    }
    assert!(!stdout(&skiff(&env, &["inspect", "--json", &id])).contains("s3cr3t"));
    assert_eq!(skiff(&env, &["rm", "-f", &id]).status.code(), Some(0));

    // An unknown secret: the field named, nothing started.
    let td = env.taskdef(
        "nosec",
        &task(
            "nosec",
            &[container(
                "app",
                r#","secrets":[{"name":"X","valueFrom":"missing-one"}]"#,
                "true",
            )],
        ),
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out)
            .contains("containerDefinitions[0].secrets[0].valueFrom: no secret \"missing-one\""),
        "{}",
        stderr(&out)
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn depends_on_healthy_waits_for_the_first_passing_check_within_the_start_timeout() {
    let env = Env::new();
    // db passes its checks once it made /tmp/ready; app starts only then.
    let td = env.taskdef(
        "healthy",
        &task(
            "healthy",
            &[
                container(
                    "db",
                    r#","essential":false,"stopTimeout":1,"startTimeout":60,
                       "healthCheck":{"command":["CMD-SHELL","test -f /tmp/ready"],"interval":5}"#,
                    "echo db-up; sleep 1; touch /tmp/ready; exec sleep 300",
                ),
                container(
                    "app",
                    r#","dependsOn":[{"containerName":"db","condition":"HEALTHY"}]"#,
                    "echo app-ran",
                ),
            ],
        ),
    );
    // Detached, so that inspect sees the stopped task.
    let out = skiff(
        &env,
        &["run", "-d", "--name", "healthy", td.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = wait_for(Duration::from_secs(60), || {
        let out = skiff(&env, &["inspect", "--json", "healthy"]);
        let j: serde_json::Value = serde_json::from_str(&stdout(&out)).ok()?;
        (j["lastStatus"] == "STOPPED").then_some(j)
    })
    .expect("the task ends when app has run");
    let (db, app) = (&j["containers"][0], &j["containers"][1]);
    assert_eq!(app["exitCode"], 0, "{j}");
    assert_eq!(db["healthStatus"], "HEALTHY", "{j}");
    // Times in one RFC 3339 format: their order is that of the strings.
    let checked = db["health"]["checkedAt"].as_str().unwrap();
    assert!(checked <= app["startedAt"].as_str().unwrap(), "{j}");
    assert_eq!(
        stdout(&skiff(&env, &["logs", "healthy", "app"])),
        "app-ran\n"
    );
    assert_eq!(skiff(&env, &["rm", "healthy"]).status.code(), Some(0));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());

    // A dependency that never passes: the wait ends at its startTimeout.
    let td = env.taskdef(
        "sick",
        &task(
            "sick",
            &[
                container(
                    "db",
                    r#","essential":false,"stopTimeout":1,"startTimeout":7,
                       "healthCheck":{"command":["CMD-SHELL","echo not-ready; exit 1"],"interval":5,"retries":10}"#,
                    "exec sleep 300",
                ),
                container(
                    "app",
                    r#","dependsOn":[{"containerName":"db","condition":"HEALTHY"}]"#,
                    "echo must-not-run",
                ),
            ],
        ),
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(!stdout(&out).contains("must-not-run"));
    assert!(
        stderr(&out).contains("container app: CannotStartContainerError: dependency db did not reach HEALTHY within its startTimeout (7 s)"),
        "{}",
        stderr(&out)
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_container_of_another_user_dies_with_its_killed_shim() {
    let env = Env::new();
    // The switch to another user clears the parent-death signal; the runtime sets it again.
    let td = env.taskdef(
        "orphan",
        r#"{"family":"orphan","networkMode":"none","containerDefinitions":[{"name":"app",
            "image":"$REGISTRY/busybox:latest","memory":32,"user":"nobody",
            "command":["sleep","300"]}]}"#,
    );
    let out = skiff(&env, &["run", "-d", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let state_file = env.state.join("tasks").join(&id).join("state.json");
    let (shim, pid) = wait_for(Duration::from_secs(30), || {
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_file).ok()?).ok()?;
        let pid = s["containers"][0]["pid"].as_i64()? as i32;
        Some((s["shim_pid"].as_i64()? as i32, pid))
    })
    .expect("the container runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&status, "Uid").split_whitespace().next(),
        Some("65534"),
        "{status}"
    );
    unsafe { libc::kill(shim, libc::SIGKILL) };
    // Gone, or a zombie its new parent has not reaped yet.
    let gone = wait_for(Duration::from_secs(10), || {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => Some(()),
            Ok(s) => (s.rsplit(')').next()?.split_whitespace().next() == Some("Z")).then_some(()),
        }
    });
    assert!(gone.is_some(), "container process {pid} outlived its shim");
    let out = skiff(&env, &["inspect", "--json", &id]);
    let j: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(j["lastStatus"], "STOPPED", "{j}");
    assert_eq!(skiff(&env, &["rm", &id]).status.code(), Some(0));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}
