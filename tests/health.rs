//! Container health checks with real containers: `CMD` and `CMD-SHELL` checks run inside the
//! container at ECS's minimum interval (5 s), HEALTHY / UNHEALTHY / UNKNOWN with the last
//! output and exit code in the task's state as `inspect` (a later skiff process) reads it,
//! `retries`, `timeout`, `startPeriod`, the task's health and `ps`. dependsOn HEALTHY is in
//! tests/lifecycle.rs.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn skiff(env: &Env, args: &[&str]) -> Output {
    env.output(args)
}

fn container(name: &str, extra: &str, script: &str) -> String {
    format!(
        r#"{{"name":"{name}","image":"$REGISTRY/busybox:latest","memory":32,"stopTimeout":1,"command":["sh","-c",{cmd}]{extra}}}"#,
        cmd = serde_json::to_string(script).unwrap()
    )
}

fn task(family: &str, containers: &[String]) -> String {
    format!(
        r#"{{"family":"{family}","networkMode":"none","containerDefinitions":[{}]}}"#,
        containers.join(",")
    )
}

fn run_detached(env: &Env, td: &std::path::Path) -> String {
    let out = skiff(env, &["run", "-d", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn inspect(env: &Env, task: &str) -> Value {
    let out = skiff(env, &["inspect", "--json", task]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// A container's health as seen once: status, failing streak, last exit code.
type Seen = (String, u64, Option<i64>);

fn named<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name} in {j}"))
}

/// The health of each container in `names` as it changes (status, failing streak, exit
/// code), watched through `inspect` until `done` holds of the task or `limit` passes.
fn watch_health(
    env: &Env,
    id: &str,
    names: &[&str],
    limit: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> (Vec<Vec<Seen>>, Value) {
    let mut seen: Vec<Vec<Seen>> = vec![Vec::new(); names.len()];
    let j = wait_for(limit, || {
        let j = inspect(env, id);
        for (k, n) in names.iter().enumerate() {
            let h = &named(&j, n)["health"];
            let now = (
                h["status"].as_str().unwrap_or("none").to_string(),
                h["failingStreak"].as_u64().unwrap_or(0),
                h["exitCode"].as_i64(),
            );
            if seen[k].last() != Some(&now) {
                seen[k].push(now);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        done(&j).then_some(j)
    });
    let j = j.unwrap_or_else(|| panic!("never done; seen {seen:?}: {}", inspect(env, id)));
    (seen, j)
}

fn ps_line(env: &Env, id: &str) -> String {
    stdout(&skiff(env, &["ps"]))
        .lines()
        .find(|l| l.starts_with(&id[..12]))
        .unwrap_or_else(|| panic!("{id} in ps"))
        .to_string()
}

fn st(s: &str, streak: u64, code: Option<i64>) -> Seen {
    (s.to_string(), streak, code)
}

#[test]
fn a_check_that_starts_failing_turns_unhealthy_after_its_retries_and_the_task_runs_on() {
    let env = Env::new();
    // Passes at the first check (5 s), fails from the second (10 s); retries 2: UNHEALTHY at
    // the third (15 s).
    let td = env.taskdef(
        "flip",
        &task(
            "flip",
            &[container(
                "web",
                r#","healthCheck":{"command":["CMD-SHELL","echo checking $HOSTNAME_SEEN; test -f /tmp/ok"],"interval":5,"retries":2},
                   "environment":[{"name":"HOSTNAME_SEEN","value":"in-env"}]"#,
                "touch /tmp/ok; sleep 7; rm /tmp/ok; sleep 300",
            )],
        ),
    );
    let id = run_detached(&env, &td);
    let mut ps_healthy = None;
    let (seen, j) = watch_health(&env, &id, &["web"], Duration::from_secs(60), |j| {
        if j["containers"][0]["healthStatus"] == "HEALTHY" && ps_healthy.is_none() {
            ps_healthy = Some(ps_line(&env, &id));
        }
        j["containers"][0]["healthStatus"] == "UNHEALTHY"
    });
    assert_eq!(
        seen[0],
        [
            st("UNKNOWN", 0, None),
            st("HEALTHY", 0, Some(0)),
            st("HEALTHY", 1, Some(1)),
            st("UNHEALTHY", 2, Some(1)),
        ]
    );
    let c = &j["containers"][0];
    // The check ran in the container, with its environment.
    assert_eq!(c["health"]["output"], "checking in-env\n", "{j}");
    assert!(c["health"]["checkedAt"].is_string(), "{j}");
    // An unhealthy essential container does not stop a standalone task.
    assert_eq!(j["healthStatus"], "UNHEALTHY", "{j}");
    assert_eq!(j["lastStatus"], "RUNNING", "{j}");
    assert!(
        ps_healthy.as_deref().unwrap().contains("RUNNING (healthy)"),
        "{ps_healthy:?}"
    );
    assert!(
        ps_line(&env, &id).contains("RUNNING (unhealthy)"),
        "{}",
        ps_line(&env, &id)
    );
    let text = stdout(&skiff(&env, &["inspect", &id]));
    assert!(text.contains("Health          UNHEALTHY"), "{text}");
    assert!(
        text.contains("exit 1 at ") && text.contains("2 failing: checking in-env"),
        "{text}"
    );
    assert_eq!(skiff(&env, &["rm", "-f", &id]).status.code(), Some(0));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn exec_form_timeout_and_start_period() {
    let env = Env::new();
    let td = env.taskdef(
        "kinds",
        &task(
            "kinds",
            &[
                // CMD: the program and its arguments, no shell.
                container(
                    "exec",
                    r#","healthCheck":{"command":["CMD","echo","exec","$NOT_EXPANDED"],"interval":5}"#,
                    "sleep 300",
                ),
                // A check that outlives its timeout is killed and fails.
                container(
                    "slow",
                    r#","essential":false,"healthCheck":{"command":["CMD-SHELL","echo started; sleep 30"],"interval":5,"timeout":2,"retries":1}"#,
                    "sleep 300",
                ),
                // Failures in the start period do not count.
                container(
                    "patient",
                    r#","essential":false,"healthCheck":{"command":["CMD-SHELL","echo not-yet; exit 3"],"interval":5,"retries":1,"startPeriod":300}"#,
                    "sleep 300",
                ),
                // ...until a pass ends it: fails at 5 s, passes at 10 s, fails at 15 s.
                container(
                    "warming",
                    r#","essential":false,"healthCheck":{"command":["CMD","test","-f","/tmp/ok"],"interval":5,"retries":1,"startPeriod":300}"#,
                    "sleep 7; touch /tmp/ok; sleep 5; rm /tmp/ok; sleep 300",
                ),
            ],
        ),
    );
    let id = run_detached(&env, &td);
    let names = ["exec", "slow", "patient", "warming"];
    let (seen, j) = watch_health(&env, &id, &names, Duration::from_secs(60), |j| {
        named(j, "warming")["healthStatus"] == "UNHEALTHY"
    });
    assert_eq!(seen[0], [st("UNKNOWN", 0, None), st("HEALTHY", 0, Some(0))]);
    assert_eq!(
        named(&j, "exec")["health"]["output"],
        "exec $NOT_EXPANDED\n"
    );
    // Every check of it times out (the streak goes on growing).
    assert_eq!(
        seen[1][..2],
        [st("UNKNOWN", 0, None), st("UNHEALTHY", 1, Some(-1))]
    );
    assert!(
        seen[1][1..]
            .iter()
            .all(|(s, _, c)| s == "UNHEALTHY" && *c == Some(-1)),
        "{seen:?}"
    );
    assert_eq!(
        named(&j, "slow")["health"]["output"],
        "health check exceeded its timeout (2 s)"
    );
    assert_eq!(seen[2], [st("UNKNOWN", 0, None), st("UNKNOWN", 0, Some(3))]);
    assert_eq!(named(&j, "patient")["health"]["output"], "not-yet\n");
    assert_eq!(
        seen[3],
        [
            st("UNKNOWN", 0, None),
            st("UNKNOWN", 0, Some(1)),
            st("HEALTHY", 0, Some(0)),
            st("UNHEALTHY", 1, Some(1)),
        ]
    );
    // Only the essential container counts for the task.
    assert_eq!(j["healthStatus"], "HEALTHY", "{j}");
    assert_eq!(skiff(&env, &["rm", "-f", &id]).status.code(), Some(0));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// The ECS agent's fixture: `healthy` waits for HEALTHY of `healthy-dependency`, whose check
/// writes the file that `healthy` then prints from their shared volume.
#[test]
fn ecs_fixture_container_ordering_healthy_starts_the_dependent_once_healthy() {
    let env = Env::new();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/taskdefs/container-ordering-healthy.json"
    ))
    .unwrap()
    .replace("127.0.0.1:51670", &registry());
    let td = env.taskdef("container-ordering-healthy", &text);
    let id = run_detached(&env, &td);
    let j = wait_for(Duration::from_secs(40), || {
        let j = inspect(&env, &id);
        (named(&j, "healthy")["lastStatus"] == "STOPPED").then_some(j)
    })
    .unwrap_or_else(|| panic!("healthy never ran: {}", inspect(&env, &id)));
    // It ran only after a check had passed: the file it prints is what the checks write.
    assert_eq!(named(&j, "healthy")["exitCode"], 0, "{j}");
    assert_eq!(named(&j, "healthy-dependency")["healthStatus"], "HEALTHY");
    let logs = stdout(&skiff(&env, &["logs", &id, "healthy"]));
    assert!(
        !logs.is_empty() && logs.lines().all(|l| l == "hi"),
        "{logs:?}"
    );
    assert_eq!(
        j["lastStatus"], "RUNNING",
        "the essential dependency runs on"
    );
    assert_eq!(skiff(&env, &["rm", "-f", &id]).status.code(), Some(0));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}
