//! `skiff agent` against a fake control plane (tests/common/fake_cp.rs) on loopback, with
//! real tasks from the test registry: registration, desired tasks started under their ARN's
//! id, events in order across outages and restarts, stops, utilization, the local socket, and
//! CA pinning.

mod common;
#[path = "common/fake_cp.rs"]
mod fake_cp;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fake_cp::{FakeServer, JOIN_TOKEN};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn arn(id: &str) -> String {
    format!("arn:aws:ecs:local:000000000000:task/default/{id}")
}

/// A task id as the server would make it (32 hex digits, like skiff's own).
fn new_id() -> String {
    format!("{}{}{}", random_hex(), random_hex(), &random_hex()[..8])
}

fn desired(id: &str, command: &str) -> Value {
    json!({
        "taskArn": arn(id),
        "taskDefinitionArn": "arn:aws:ecs:local:000000000000:task-definition/agent-test:1",
        "taskDefinition": {
            "family": "agent-test",
            "taskDefinitionArn": "arn:aws:ecs:local:000000000000:task-definition/agent-test:1",
            "revision": 1,
            "networkMode": "none",
            "containerDefinitions": [{
                "name": "main", "image": busybox(), "memory": 64,
                "stopTimeout": 2,
                "command": ["sh", "-c", command]
            }]
        },
        "desiredStatus": "RUNNING"
    })
}

struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, sig) };
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill(libc::SIGKILL);
    }
}

/// Writes the agent's config file for `server` (trusting it through a CA file, or not).
fn write_config(env: &Env, server: &FakeServer, with_ca_file: bool) {
    let ca = server.write_ca(&env.dir);
    let ca_line = if with_ca_file {
        format!("ca_file = \"{}\"\n", ca.display())
    } else {
        String::new()
    };
    std::fs::write(
        env.dir.join("agent.toml"),
        format!(
            "server = \"{}\"\njoin_token = \"{JOIN_TOKEN}\"\n{ca_line}poll_wait = \"2s\"\nutilization_interval = \"2s\"\nmax_backoff = \"2s\"\n[instance_attributes]\nrack = \"r1\"\n",
            server.url(),
        ),
    )
    .unwrap();
}

/// Starts `skiff agent` on `env`'s state directory, trusting `server` through a CA file.
fn agent(env: &Env, server: &FakeServer, extra: &[(&str, &str)]) -> Agent {
    write_config(env, server, true);
    agent_with_config(env, extra)
}

fn wait_event(server: &FakeServer, arn: &str, status: &str, agent: &Agent) -> Value {
    server
        .wait(WAIT, |st| {
            st.events
                .iter()
                .find(|e| e["taskArn"] == arn && e["lastStatus"] == status)
                .cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "no {status} event for {arn}: {:?}\nagent log:\n{}",
                server.events_of(arn),
                agent.log()
            )
        })
}

/// Applied seqs are 1, 2, 3, ... with no gap and no repeat.
fn assert_contiguous(server: &FakeServer) {
    let seqs: Vec<u64> = server.with(|st| {
        st.events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    });
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "event seqs");
}

/// Stops the agent, removes every task it left (daemonless), and checks nothing remains.
fn finish(env: &Env, mut agent: Agent) {
    agent.kill(libc::SIGTERM);
    let ids: Vec<String> = std::fs::read_dir(env.state.join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        let out = env.output(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let left = wait_for(Duration::from_secs(20), || {
        let l = env.leftovers();
        l.is_empty().then_some(())
    });
    assert!(left.is_some(), "leftovers: {:?}", env.leftovers());
    assert!(!env.state.join("agent.sock").exists());
}

fn has_task_dir(env: &Env, id: &str) -> bool {
    env.state.join("tasks").join(id).exists()
}

#[test]
fn registers_once_runs_desired_tasks_and_stops_them() {
    let env = Env::new();
    let server = FakeServer::start();
    let mut a = agent(&env, &server, &[]);
    server
        .wait(WAIT, |st| (!st.registrations.is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("no registration:\n{}", a.log()));
    let reg = server.with(|st| st.registrations[0].clone());
    assert_eq!(reg["cluster"], "default");
    let attrs = reg["attributes"].as_array().unwrap();
    let attr = |n: &str| {
        attrs
            .iter()
            .find(|x| x["name"] == n)
            .map(|x| x["value"].clone())
    };
    assert_eq!(attr("ecs.os-type"), Some(json!("linux")));
    assert!(attr("ecs.cpu-architecture").is_some());
    assert_eq!(attr("rack"), Some(json!("r1")));
    assert_eq!(reg["resources"]["cpu"].as_u64().unwrap(), nproc() * 1024);

    // A task that exits 3 after a while: RUNNING, then STOPPED with its exit code.
    let quick = new_id();
    server.desire(desired(&quick, "sleep 2; exit 3"));
    let running = wait_event(&server, &arn(&quick), "RUNNING", &a);
    assert_eq!(running["containers"][0]["lastStatus"], "RUNNING");
    assert!(
        has_task_dir(&env, &quick),
        "the local task has the ARN's id"
    );
    let stopped = wait_event(&server, &arn(&quick), "STOPPED", &a);
    assert_eq!(stopped["containers"][0]["exitCode"], 3);
    assert_eq!(stopped["stopCode"], "EssentialContainerExited");
    assert_eq!(
        stopped["stoppedReason"],
        "Essential container in task exited"
    );
    assert!(stopped["stoppedAt"].as_f64().unwrap() >= stopped["startedAt"].as_f64().unwrap());

    // A long task with overrides, stopped by the server with a reason.
    let long = new_id();
    let mut d = desired(&long, "echo $GREETING; sleep 600");
    d["overrides"] = json!({"containerOverrides": [{"name": "main",
        "command": ["sh", "-c", "echo $GREETING; trap 'exit 0' TERM; sleep 600 & wait"],
        "environment": [{"name": "GREETING", "value": "hello-override"}]}]});
    server.desire(d);
    wait_event(&server, &arn(&long), "RUNNING", &a);
    let log = env
        .state
        .join("tasks")
        .join(&long)
        .join("containers/main/container.log");
    wait_for(WAIT, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("hello-override"))
    })
    .unwrap_or_else(|| panic!("the override's environment did not reach the container"));
    server.stop_task(&arn(&long), "Scaling down");
    let stopped = wait_event(&server, &arn(&long), "STOPPED", &a);
    assert_eq!(stopped["stopCode"], "UserInitiated");
    assert_eq!(stopped["stoppedReason"], "Scaling down");
    assert_eq!(stopped["containers"][0]["exitCode"], 0);

    // A restart of the agent registers nothing again and emits nothing new.
    let n = server.with(|st| st.events.len());
    a.kill(libc::SIGTERM);
    let a = agent(&env, &server, &[]);
    let polls = server.with(|st| st.polls);
    server
        .wait(WAIT, |st| (st.polls >= polls + 2).then_some(()))
        .unwrap_or_else(|| panic!("the restarted agent does not poll:\n{}", a.log()));
    assert_eq!(server.with(|st| st.registrations.len()), 1);
    assert_eq!(server.with(|st| st.events.len()), n);
    assert_contiguous(&server);
    let id = std::fs::read_to_string(env.state.join("agent/identity.json")).unwrap();
    assert!(id.contains(fake_cp::INSTANCE_ARN));
    let mode = std::fs::metadata(env.state.join("agent/identity.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    finish(&env, a);
}

#[test]
fn events_wait_out_a_server_outage_and_arrive_in_order_once() {
    let env = Env::new();
    let server = FakeServer::start();
    let a = agent(&env, &server, &[]);
    let id = new_id();
    server.desire(desired(&id, "sleep 4; exit 7"));
    wait_event(&server, &arn(&id), "RUNNING", &a);
    server.set_down(true);
    // The task exits while the server is down; the events wait on disk.
    std::thread::sleep(Duration::from_secs(12));
    let journal = std::fs::read_to_string(env.state.join("agent/journal.jsonl")).unwrap();
    assert!(journal.contains("STOPPED"), "journal: {journal}");
    server.set_down(false);
    let stopped = wait_event(&server, &arn(&id), "STOPPED", &a);
    assert_eq!(stopped["containers"][0]["exitCode"], 7);
    assert_contiguous(&server);
    let statuses: Vec<String> = server
        .events_of(&arn(&id))
        .iter()
        .map(|e| e["lastStatus"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "STOPPED").count(),
        1,
        "{statuses:?}"
    );
    // Delivered events leave the journal.
    wait_for(WAIT, || {
        let j = std::fs::read_to_string(env.state.join("agent/journal.jsonl")).ok()?;
        j.is_empty().then_some(())
    })
    .expect("the journal empties once the server applied everything");
    finish(&env, a);
}

#[test]
fn a_killed_agent_reattaches_without_duplicates() {
    let env = Env::new();
    let server = FakeServer::start();
    let mut a = agent(&env, &server, &[]);
    let id = new_id();
    server.desire(desired(&id, "trap 'exit 0' TERM; sleep 600 & wait"));
    wait_event(&server, &arn(&id), "RUNNING", &a);
    a.kill(libc::SIGKILL);
    let a = agent(&env, &server, &[]);
    let polls = server.with(|st| st.polls);
    server
        .wait(WAIT, |st| (st.polls >= polls + 3).then_some(()))
        .unwrap_or_else(|| panic!("the restarted agent does not poll:\n{}", a.log()));
    // Still one task, one RUNNING event, one registration.
    let tasks = std::fs::read_dir(env.state.join("tasks")).unwrap().count();
    assert_eq!(tasks, 1);
    let running = server
        .events_of(&arn(&id))
        .iter()
        .filter(|e| e["lastStatus"] == "RUNNING")
        .count();
    assert_eq!(running, 1);
    assert_eq!(server.with(|st| st.registrations.len()), 1);
    // The re-attached agent still manages it.
    server.stop_task(&arn(&id), "Done");
    let stopped = wait_event(&server, &arn(&id), "STOPPED", &a);
    assert_eq!(stopped["stopCode"], "UserInitiated");
    assert_contiguous(&server);
    finish(&env, a);
}

#[test]
fn utilization_windows_are_posted() {
    let env = Env::new();
    let server = FakeServer::start();
    let a = agent(&env, &server, &[]);
    let id = new_id();
    server.desire(desired(&id, "trap 'exit 0' TERM; while :; do :; done"));
    wait_event(&server, &arn(&id), "RUNNING", &a);
    let u = server
        .wait(WAIT, |st| {
            st.utilization
                .iter()
                .find(|u| {
                    u["tasks"].as_array().is_some_and(|t| {
                        t.iter().any(|t| {
                            t["taskArn"] == arn(&id) && t["cpu"]["count"].as_u64() >= Some(1)
                        })
                    })
                })
                .cloned()
        })
        .unwrap_or_else(|| panic!("no utilization of the task:\n{}", a.log()));
    let t = u["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["taskArn"] == arn(&id))
        .unwrap();
    let cpu = &t["cpu"];
    assert!(
        cpu["max"].as_f64().unwrap() > 100.0,
        "a busy loop uses CPU: {t}"
    );
    assert!(cpu["min"].as_f64().unwrap() <= cpu["max"].as_f64().unwrap());
    assert!(t["memory"]["max"].as_f64().unwrap() > 0.0, "{t}");
    assert!(u["instance"]["memory"]["count"].as_u64().unwrap() >= 1);
    assert!(u["windowEnd"].as_f64().unwrap() > u["windowStart"].as_f64().unwrap());
    server.stop_task(&arn(&id), "Done");
    wait_event(&server, &arn(&id), "STOPPED", &a);
    finish(&env, a);
}

#[test]
fn local_commands_go_through_the_agent_socket() {
    let env = Env::new();
    let server = FakeServer::start();
    let a = agent(&env, &server, &[]);
    let id = new_id();
    server.desire(desired(
        &id,
        "echo hello-from-task; trap 'exit 0' TERM; sleep 600 & wait",
    ));
    wait_event(&server, &arn(&id), "RUNNING", &a);
    let sock = env.state.join("agent.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let ps = env.output(&["ps"]);
    assert_eq!(ps.status.code(), Some(0), "{}", stderr(&ps));
    assert!(stdout(&ps).contains(&id[..12]), "{}", stdout(&ps));
    let logs = wait_for(WAIT, || {
        let o = env.output(&["logs", &id]);
        stdout(&o).contains("hello-from-task").then_some(o)
    });
    assert!(logs.is_some(), "logs through the agent");
    let stop = env.output(&["stop", &id[..12]]);
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    let stopped = wait_event(&server, &arn(&id), "STOPPED", &a);
    assert_eq!(stopped["stopCode"], "UserInitiated");
    assert_eq!(stopped["stoppedReason"], "Task stopped by user");
    let bad = env.output(&["inspect", "no-such-task"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("no-such-task"), "{}", stderr(&bad));
    let log = a.log();
    assert!(log.matches("local command").count() >= 4, "{log}");
    assert!(log.contains("\"stop\""), "{log}");
    finish(&env, a);
}

#[test]
fn ca_pinning_refuses_a_server_with_another_ca() {
    let env = Env::new();
    let server = FakeServer::start();
    let other = fake_cp::Pki::new("other");
    write_config(&env, &server, false);
    let a = agent_with_config(&env, &[("SKIFF_CA_FINGERPRINT", &other.fingerprint())]);
    let refused = wait_for(WAIT, || a.log().contains("fingerprint").then_some(()));
    assert!(refused.is_some(), "agent log:\n{}", a.log());
    assert_eq!(server.with(|st| st.registrations.len()), 0);
    drop(a);
    let a = agent_with_config(&env, &[("SKIFF_CA_FINGERPRINT", &server.pki.fingerprint())]);
    server
        .wait(WAIT, |st| (!st.registrations.is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("no registration with the right pin:\n{}", a.log()));
    finish(&env, a);
}

/// An agent on the config file in `env.dir`.
fn agent_with_config(env: &Env, extra: &[(&str, &str)]) -> Agent {
    agent_in(env, extra, None)
}

/// An agent on the config file in `env.dir`, started in the cgroup (v2 directory) `cgroup`.
fn agent_in(env: &Env, extra: &[(&str, &str)], cgroup: Option<&std::path::Path>) -> Agent {
    let log = env.dir.join(format!("agent-{}.log", random_hex()));
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
    c.args([
        "agent",
        "--config",
        env.dir.join("agent.toml").to_str().unwrap(),
    ])
    .env("SKIFF_DATA_DIR", &env.state)
    .env("SKIFF_CGROUP_PARENT", &env.cgroup_parent)
    .env("SKIFF_LOG", "info")
    .env_remove("SKIFF_SERVER")
    .env_remove("SKIFF_CA_FILE")
    .env_remove("SKIFF_CA_FINGERPRINT")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in extra {
        c.env(k, v);
    }
    if let Some(cg) = cgroup {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        // Opened before the fork: the child only write(2)s its pid into it.
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(cg.join("cgroup.procs"))
            .unwrap();
        unsafe {
            c.pre_exec(move || {
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Agent {
        child: Some(c.spawn().unwrap()),
        log,
    }
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let env = Env::new();
    let config = env.dir.join("agent.toml");
    std::fs::write(
        &config,
        "server = \"https://127.0.0.1:1\"\nca_file = \"/x\"\nclustr = \"a\"\n",
    )
    .unwrap();
    let out = env.output(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("clustr"), "{}", stderr(&out));
    std::fs::write(
        &config,
        "server = \"https://127.0.0.1:1\"\nca_file = \"/x\"\n",
    )
    .unwrap();
    let out = env
        .command(&["agent", "--config", config.to_str().unwrap()])
        .env("ECS_INSTANCE_ATTRIBUTES", "[1]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ECS_INSTANCE_ATTRIBUTES"));
}

#[test]
fn failed_starts_and_early_stops_are_reported_once_and_never_retried() {
    let env = Env::new();
    let server = FakeServer::start();
    let a = agent(&env, &server, &[]);
    // An image the registry does not have.
    let bad = new_id();
    let mut d = desired(&bad, "true");
    d["taskDefinition"]["containerDefinitions"][0]["image"] =
        json!(format!("{}/no-such-image:1", registry()));
    server.desire(d);
    let stopped = wait_event(&server, &arn(&bad), "STOPPED", &a);
    assert_eq!(stopped["stopCode"], "TaskFailedToStart");
    let reason = stopped["stoppedReason"].as_str().unwrap();
    assert!(reason.starts_with("CannotPullContainerError"), "{reason}");
    // Stopped before it could start: reported, never run.
    let early = new_id();
    let mut d = desired(&early, "sleep 600");
    d["desiredStatus"] = json!("STOPPED");
    d["stoppedReason"] = json!("Changed my mind");
    server.desire(d);
    let stopped = wait_event(&server, &arn(&early), "STOPPED", &a);
    assert_eq!(stopped["stopCode"], "UserInitiated");
    assert_eq!(stopped["stoppedReason"], "Changed my mind");
    // Several more polls and ticks: nothing is retried or reported again.
    server.with(|st| st.version += 1);
    let polls = server.with(|st| st.polls);
    server
        .wait(WAIT, |st| (st.polls >= polls + 3).then_some(()))
        .unwrap();
    assert_eq!(
        server.events_of(&arn(&bad)).len(),
        1,
        "{:?}",
        server.events_of(&arn(&bad))
    );
    assert_eq!(server.events_of(&arn(&early)).len(), 1);
    assert!(!has_task_dir(&env, &bad) && !has_task_dir(&env, &early));
    assert_contiguous(&server);
    finish(&env, a);
}

#[test]
fn an_agent_killed_mid_start_does_not_start_the_task_twice() {
    let env = Env::new();
    let server = FakeServer::start();
    let mut a = agent(&env, &server, &[]);
    server
        .wait(WAIT, |st| (st.polls >= 1).then_some(()))
        .unwrap_or_else(|| panic!("no poll:\n{}", a.log()));
    let id = new_id();
    server.desire(desired(&id, "trap 'exit 0' TERM; sleep 600 & wait"));
    // Killed as soon as the start has taken the id: `skiff run -d` goes on without it.
    wait_for(WAIT, || has_task_dir(&env, &id).then_some(()))
        .unwrap_or_else(|| panic!("the start did not begin:\n{}", a.log()));
    a.kill(libc::SIGKILL);
    let a = agent(&env, &server, &[]);
    wait_event(&server, &arn(&id), "RUNNING", &a);
    let polls = server.with(|st| st.polls);
    server
        .wait(WAIT, |st| (st.polls >= polls + 3).then_some(()))
        .unwrap();
    assert_eq!(
        std::fs::read_dir(env.state.join("tasks")).unwrap().count(),
        1
    );
    let shims = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains(" shim ") && c.contains(&id)
                })
                .unwrap_or(false)
        })
        .count();
    assert_eq!(shims, 1, "one shim for the task");
    let running = server
        .events_of(&arn(&id))
        .iter()
        .filter(|e| e["lastStatus"] == "RUNNING")
        .count();
    assert_eq!(running, 1);
    assert_contiguous(&server);
    finish(&env, a);
}

#[test]
fn image_cleanup_spares_images_that_tasks_use() {
    let env = Env::new();
    let unused = format!("{}/busybox-layered:latest", registry());
    let out = env.output(&["pull", &unused]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Older than the minimum age once the agent runs; the task's image, pulled by its start,
    // is younger until the task's record protects it.
    std::thread::sleep(Duration::from_secs(3));
    let server = FakeServer::start();
    let a = agent(
        &env,
        &server,
        &[
            ("ECS_IMAGE_CLEANUP_INTERVAL", "1s"),
            ("ECS_IMAGE_MINIMUM_CLEANUP_AGE", "2s"),
        ],
    );
    let id = new_id();
    server.desire(desired(&id, "trap 'exit 0' TERM; sleep 600 & wait"));
    wait_event(&server, &arn(&id), "RUNNING", &a);
    let images = || stdout(&env.output(&["images"]));
    wait_for(WAIT, || {
        (!images().contains("busybox-layered")).then_some(())
    })
    .unwrap_or_else(|| panic!("the unused image stayed: {}\n{}", images(), a.log()));
    // Several more cycles past its minimum age: the image the running task uses stays.
    std::thread::sleep(Duration::from_secs(4));
    assert!(images().contains("busybox:latest"), "{}", images());
    server.stop_task(&arn(&id), "Done");
    wait_event(&server, &arn(&id), "STOPPED", &a);
    finish(&env, a);
}

#[test]
fn a_refused_join_token_ends_the_agent_with_the_servers_reason() {
    let env = Env::new();
    let server = FakeServer::start();
    write_config(&env, &server, true);
    let mut a = agent_with_config(&env, &[("SKIFF_JOIN_TOKEN", "wrong")]);
    let st = a.child.as_mut().unwrap().wait().unwrap();
    assert_eq!(st.code(), Some(125));
    let log = a.log();
    assert!(
        log.contains("403") && log.contains("AccessDeniedException"),
        "{log}"
    );
    assert!(!env.state.join("agent/identity.json").exists());
    assert!(!env.state.join("agent.sock").exists());
}

/// On cgroup v2 a cgroup with processes cannot give controllers to children, and an agent's
/// children (`skiff run -d`) share its cgroup: the agent moves into a `supervisor` leaf and
/// its tasks go beneath the leaf's parent. Started again in that leaf (as systemd's
/// `DelegateSubgroup=supervisor` does after a restart), it places tasks the same way. v1 has
/// no such rule: on a v1 or hybrid host this test has nothing to check; the cgroup v2 VM runs
/// it.
#[test]
fn on_cgroup_v2_an_agent_in_its_own_cgroup_runs_tasks_beside_its_leaf() {
    if !is_v2() {
        eprintln!("not a cgroup v2 host: checked in the v2 VM");
        return;
    }
    let env = Env::new();
    let server = FakeServer::start();
    write_config(&env, &server, true);
    let base = own_cgroup_dirs()[0].clone();
    // Controllers for the agent's cgroup (allowed when the test runs in the root, as in the VM).
    let _ = std::fs::write(base.join("cgroup.subtree_control"), "+memory +cpu +pids");
    // Sharing its cgroup with another process, the agent cannot place tasks: it says so and
    // ends before it registers.
    let shared = base.join(format!("skiff-it-shared-{}", random_hex()));
    std::fs::create_dir(&shared).unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(shared.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let mut refused = agent_in(&env, &[], Some(&shared));
    let status = refused.child.take().unwrap().wait().unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let log = refused.log();
    wait_for(Duration::from_secs(10), || {
        std::fs::remove_dir(&shared).ok()
    });
    assert_eq!(status.code(), Some(125), "{log}");
    assert!(
        log.contains("shares its cgroup") && log.contains(&sleeper.id().to_string()),
        "{log}"
    );
    assert!(server.with(|st| st.registrations.is_empty()));

    let own = base.join(format!("skiff-it-agent-{}", random_hex()));
    std::fs::create_dir(&own).unwrap();
    let supervisor = own.join("supervisor");
    let in_leaf = |pid: u32| {
        std::fs::read_to_string(supervisor.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == pid.to_string())
    };

    let mut a = agent_in(&env, &[], Some(&own));
    let first = new_id();
    server.desire(desired(&first, "trap 'exit 0' TERM; sleep 600 & wait"));
    wait_event(&server, &arn(&first), "RUNNING", &a);
    assert!(
        in_leaf(a.child.as_ref().unwrap().id()),
        "the agent is not in {supervisor:?}"
    );
    let task_cg = |id: &str| own.join(&env.cgroup_parent).join(id);
    assert!(task_cg(&first).is_dir(), "no {:?}", task_cg(&first));

    a.kill(libc::SIGKILL);
    let a = agent_in(&env, &[], Some(&supervisor));
    let second = new_id();
    server.desire(desired(&second, "trap 'exit 0' TERM; sleep 600 & wait"));
    wait_event(&server, &arn(&second), "RUNNING", &a);
    assert!(in_leaf(a.child.as_ref().unwrap().id()));
    assert!(task_cg(&second).is_dir(), "no {:?}", task_cg(&second));
    for id in [&first, &second] {
        server.stop_task(&arn(id), "Done");
        wait_event(&server, &arn(id), "STOPPED", &a);
    }
    finish(&env, a);
    // Only the leaf is left of what skiff made; the test removes it and its parent.
    let left: Vec<_> = std::fs::read_dir(&own)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir() && e.file_name() != "supervisor")
        .map(|e| e.file_name())
        .collect();
    let gone = wait_for(Duration::from_secs(20), || {
        std::fs::remove_dir(&supervisor).ok()
    });
    let holders: Vec<String> = std::fs::read_to_string(supervisor.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("{p}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect();
    wait_for(Duration::from_secs(10), || std::fs::remove_dir(&own).ok());
    assert!(left.is_empty(), "left in {own:?}: {left:?}");
    assert!(gone.is_some(), "{supervisor:?} still holds {holders:?}");
    assert!(!own.exists());
}
