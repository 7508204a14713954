//! The control plane as a system: a real `skiff server` and two real `skiff agent`s on
//! loopback, each agent with its own data directory and cgroup parent, running busybox tasks
//! from the test registry (network mode `none`, so no task touches the host's network).
//! run-task → RUNNING → exit codes in describe-tasks; a server down for 60 s while tasks exit
//! and restart; an agent SIGKILLed and restarted; one agent's credential against another's
//! tasks.

mod common;
mod control;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use common::*;
use control::Server;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// A real `skiff agent` joined to `server`, on `env`'s state directory.
struct EdgeAgent {
    env: Env,
    child: Option<Child>,
    log: PathBuf,
}

impl EdgeAgent {
    fn start(server: &Server) -> EdgeAgent {
        let env = Env::new();
        let log = env.dir.join("agent.log");
        let mut a = EdgeAgent {
            env,
            child: None,
            log,
        };
        a.spawn(server);
        a
    }

    fn spawn(&mut self, server: &Server) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("agent")
            .env("SKIFF_SERVER", server.url(""))
            .env("SKIFF_JOIN_TOKEN", server.file("join.token"))
            .env("SKIFF_CA_FILE", server.dir.join("ca.pem"))
            .env("SKIFF_DATA_DIR", &self.env.state)
            .env("SKIFF_CGROUP_PARENT", &self.env.cgroup_parent)
            .env("SKIFF_POLL_WAIT", "5s")
            .env("SKIFF_MAX_BACKOFF", "2s")
            .env("SKIFF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn identity(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.env.state.join("agent/identity.json")).unwrap())
            .unwrap()
    }

    /// The tasks in this agent's state directory, as `skiff ps -a --json` lists them.
    fn local_tasks(&self) -> Vec<Value> {
        let out = self.env.output(&["ps", "-a", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Stops and removes every local task, stops the agent, and checks nothing is left.
    fn finish(mut self) {
        self.kill();
        for t in self.local_tasks() {
            let id = t["taskId"].as_str().unwrap().to_string();
            let _ = self.env.output(&["rm", "-f", &id]);
        }
        let left = self.env.leftovers();
        assert!(left.is_empty(), "{left:?}\nagent log:\n{}", self.log());
    }
}

impl Drop for EdgeAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn register_family(server: &Server, family: &str, command: &str, extra: Value) {
    let mut container = json!({
        "name": "main", "image": busybox(), "memory": 32, "stopTimeout": 2,
        "command": ["sh", "-c", command]
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let td = json!({"family": family, "networkMode": "none", "containerDefinitions": [container]});
    let p = server.dir.join(format!("{family}.json"));
    std::fs::write(&p, td.to_string()).unwrap();
    server.ctl_json(&[
        "register-task-definition",
        "--cli-input-json",
        &format!("file://{}", p.display()),
    ]);
}

fn run_task(server: &Server, family: &str, count: u32) -> Vec<String> {
    let v = server.ctl_json(&[
        "run-task",
        "--task-definition",
        family,
        "--count",
        &count.to_string(),
    ]);
    assert_eq!(v["failures"].as_array().map_or(0, |f| f.len()), 0, "{v}");
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect()
}

fn describe(server: &Server, arns: &[String]) -> Vec<Value> {
    let mut args = vec!["describe-tasks", "--tasks"];
    args.extend(arns.iter().map(|s| s.as_str()));
    server.ctl_json(&args)["tasks"].as_array().unwrap().clone()
}

/// Waits until every task satisfies `ok`; the last describe-tasks answer.
fn wait_tasks(
    server: &Server,
    arns: &[String],
    agents: &[&EdgeAgent],
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    wait_for(WAIT, || {
        let ts = describe(server, arns);
        (ts.len() == arns.len() && ts.iter().all(&ok)).then_some(ts)
    })
    .unwrap_or_else(|| {
        let logs: Vec<String> = agents.iter().map(|a| a.log()).collect();
        panic!(
            "tasks never {what}: {:#}\nagent logs:\n{}",
            Value::Array(describe(server, arns)),
            logs.join("\n----\n")
        )
    })
}

fn wait_instances(server: &Server, n: usize) -> Vec<Value> {
    wait_for(WAIT, || {
        let arns = server.ctl_json(&["list-container-instances"])["containerInstanceArns"]
            .as_array()
            .unwrap()
            .clone();
        if arns.len() != n {
            return None;
        }
        let mut args = vec!["describe-container-instances", "--container-instances"];
        let names: Vec<String> = arns
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        args.extend(names.iter().map(|s| s.as_str()));
        let d = server.ctl_json(&args)["containerInstances"]
            .as_array()
            .unwrap()
            .clone();
        d.iter().all(|i| i["agentConnected"] == true).then_some(d)
    })
    .unwrap_or_else(|| panic!("{n} connected instances never appeared"))
}

#[test]
fn two_agents_run_tasks_and_their_exit_codes_reach_describe_tasks() {
    let server = Server::start(&[]);
    let a = EdgeAgent::start(&server);
    let b = EdgeAgent::start(&server);
    let instances = wait_instances(&server, 2);
    for i in &instances {
        assert!(i["registeredResources"].as_array().is_some(), "{i}");
    }

    register_family(&server, "exit3", "sleep 2; exit 3", json!({}));
    let arns = run_task(&server, "exit3", 4);
    assert_eq!(arns.len(), 4);
    wait_tasks(&server, &arns, &[&a, &b], "RUNNING", |t| {
        t["lastStatus"] == "RUNNING" || t["lastStatus"] == "STOPPED"
    });
    let done = wait_tasks(&server, &arns, &[&a, &b], "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    });
    for t in &done {
        assert_eq!(t["containers"][0]["exitCode"], 3, "{t}");
        assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
        assert!(
            t["startedAt"].is_number() && t["stoppedAt"].is_number(),
            "{t}"
        );
    }
    // Each task ran on exactly one host, under the id of its ARN.
    let local: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|ag| ag.local_tasks())
        .map(|t| t["taskId"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = arns
        .iter()
        .map(|a| a.rsplit('/').next().unwrap().to_string())
        .collect();
    let mut got = local.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // stop-task reaches the agent and comes back with the user's reason.
    register_family(&server, "forever", "sleep 600", json!({}));
    let long = run_task(&server, "forever", 1);
    wait_tasks(&server, &long, &[&a, &b], "RUNNING", |t| {
        t["lastStatus"] == "RUNNING"
    });
    server.ctl_json(&[
        "stop-task",
        "--task",
        &long[0],
        "--reason",
        "maintenance window",
    ]);
    let stopped = wait_tasks(&server, &long, &[&a, &b], "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    });
    assert_eq!(
        stopped[0]["stoppedReason"], "maintenance window",
        "{}",
        stopped[0]
    );
    assert_eq!(stopped[0]["stopCode"], "UserInitiated", "{}", stopped[0]);
    a.finish();
    b.finish();
}

#[test]
fn a_server_down_for_a_minute_loses_and_repeats_no_event() {
    let mut server = Server::start(&[]);
    let a = EdgeAgent::start(&server);
    wait_instances(&server, 1);
    register_family(&server, "exit4", "sleep 10; exit 4", json!({}));
    register_family(
        &server,
        "flaky",
        "sleep 61; exit 1",
        json!({"restartPolicy": {"enabled": true, "restartAttemptPeriod": 60}}),
    );
    let quick = run_task(&server, "exit4", 2);
    let flaky = run_task(&server, "flaky", 1);
    let all: Vec<String> = quick.iter().chain(&flaky).cloned().collect();
    wait_tasks(&server, &all, &[&a], "RUNNING", |t| {
        t["lastStatus"] == "RUNNING"
    });

    server.kill();
    // While the server is away the quick tasks exit and the flaky one restarts (locally:
    // its restart policy does not need the server).
    std::thread::sleep(Duration::from_secs(60));
    let journal =
        std::fs::read_to_string(a.env.state.join("agent/journal.jsonl")).unwrap_or_default();
    assert!(
        journal.contains("\"STOPPED\""),
        "the exits wait in the journal: {journal}"
    );
    server.start_again();

    let done = wait_tasks(&server, &quick, &[&a], "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    });
    for t in &done {
        assert_eq!(t["containers"][0]["exitCode"], 4, "{t}");
    }
    // The flaky task restarted on its own (its first run ended around the server's return).
    let flaky_id = flaky[0].rsplit('/').next().unwrap().to_string();
    let restarted = wait_for(WAIT, || {
        let out = a.env.output(&["inspect", "--json", &flaky_id]);
        let j: Value = serde_json::from_str(&stdout(&out)).ok()?;
        (j["containers"][0]["restartCount"].as_u64() >= Some(1)).then_some(j)
    });
    assert!(
        restarted.is_some(),
        "the flaky task never restarted:\n{}",
        a.log()
    );
    let fl = describe(&server, &flaky);
    assert_eq!(fl[0]["lastStatus"], "RUNNING", "{}", fl[0]);
    // Every event arrived exactly once and in order: the server applied the agent's numbers
    // 1..=n with no gap and no repeat (it keeps them per instance), and the journal is empty.
    let applied = wait_for(WAIT, || {
        let j =
            std::fs::read_to_string(a.env.state.join("agent/journal.jsonl")).unwrap_or_default();
        j.trim().is_empty().then_some(())
    });
    assert!(applied.is_some(), "the journal never emptied:\n{}", a.log());
    // What the server applied is what the agent numbered: nothing lost (the server's last
    // applied seq is the agent's last seq) and nothing applied twice (it applies a seq only
    // once, in order; the final states above are the last events').
    let cred = a.identity()["credential"].as_str().unwrap().to_string();
    let (code, body) = server.curl(&cred, "GET", "/v1/agent/desired?version=0&wait=0", None, "");
    assert_eq!(code, 200, "{body}");
    let applied = serde_json::from_str::<Value>(&body).unwrap()["appliedSeq"]
        .as_u64()
        .unwrap();
    let agent_state: Value =
        serde_json::from_slice(&std::fs::read(a.env.state.join("agent/state.json")).unwrap())
            .unwrap();
    assert_eq!(Some(applied), agent_state["seq"].as_u64(), "{agent_state}");
    assert!(
        applied >= 6,
        "at least PENDING/RUNNING/STOPPED of two tasks: {applied}"
    );
    server.ctl_json(&["stop-task", "--task", &flaky[0]]);
    wait_tasks(&server, &flaky, &[&a], "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    });
    a.finish();
}

#[test]
fn a_killed_agent_comes_back_to_its_tasks_without_duplicating_any() {
    let server = Server::start(&[]);
    let mut a = EdgeAgent::start(&server);
    wait_instances(&server, 1);
    register_family(&server, "long", "sleep 600", json!({}));
    let arns = run_task(&server, "long", 3);
    wait_tasks(&server, &arns, &[&a], "RUNNING", |t| {
        t["lastStatus"] == "RUNNING"
    });
    let arn_before = a.identity()["containerInstanceArn"].clone();

    a.kill();
    // The tasks live on under their shims while no agent runs.
    let alive = a.local_tasks();
    assert_eq!(alive.len(), 3);
    assert!(
        alive.iter().all(|t| t["lastStatus"] == "RUNNING"),
        "{alive:?}"
    );
    a.spawn(&server);
    wait_instances(&server, 1);
    // Same instance, same three tasks, none started again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.identity()["containerInstanceArn"], arn_before);
    let after = a.local_tasks();
    assert_eq!(after.len(), 3, "{after:?}");
    let ts = describe(&server, &arns);
    assert!(ts.iter().all(|t| t["lastStatus"] == "RUNNING"), "{ts:?}");
    let inst = server.ctl_json(&[
        "describe-container-instances",
        "--container-instances",
        arn_before.as_str().unwrap(),
    ]);
    assert_eq!(
        inst["containerInstances"][0]["runningTasksCount"], 3,
        "{inst}"
    );

    for arn in &arns {
        server.ctl_json(&["stop-task", "--task", arn]);
    }
    wait_tasks(&server, &arns, &[&a], "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    });
    a.finish();
}

#[test]
fn an_agents_credential_reaches_only_its_own_instance() {
    let server = Server::start(&[]);
    let a = EdgeAgent::start(&server);
    let b = EdgeAgent::start(&server);
    wait_instances(&server, 2);
    register_family(&server, "long", "sleep 600", json!({}));
    let b_arn = b.identity()["containerInstanceArn"]
        .as_str()
        .unwrap()
        .to_string();
    let started = server.ctl_json(&[
        "start-task",
        "--task-definition",
        "long",
        "--container-instances",
        &b_arn,
    ]);
    let task = started["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    wait_tasks(
        &server,
        std::slice::from_ref(&task),
        &[&b],
        "RUNNING",
        |t| t["lastStatus"] == "RUNNING",
    );

    let cred = a.identity()["credential"].as_str().unwrap().to_string();
    // A's credential reporting B's task: refused, and B's task is unchanged.
    let forged = json!({"events": [{"seq": 1_000_000, "taskArn": task, "lastStatus": "STOPPED",
        "containers": [], "at": 1.0}]});
    let (code, body) = server.curl(&cred, "POST", "/v1/agent/events", None, &forged.to_string());
    assert_eq!(code, 403, "{body}");
    // Nor may it use the user API.
    let (code, body) = server.curl(&cred, "POST", "/", Some("ListTasks"), "{}");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("AccessDeniedException"), "{body}");
    let t = describe(&server, std::slice::from_ref(&task));
    assert_eq!(t[0]["lastStatus"], "RUNNING", "{}", t[0]);
    // A's own poll never shows B's task.
    let (code, body) = server.curl(&cred, "GET", "/v1/agent/desired?version=0&wait=0", None, "");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(&task), "{body}");

    server.ctl_json(&["stop-task", "--task", &task]);
    wait_tasks(&server, &[task], &[&b], "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    });
    a.finish();
    b.finish();
}
