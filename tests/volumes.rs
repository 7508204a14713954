//! Task volumes in real containers: host binds (rw and read-only), task-scoped volumes shared
//! between containers, shared named volumes across tasks and `skiff volume`, `volumesFrom`,
//! symlinks in a volume that try to take a mount out of the root, cleanup, and the ECS
//! agent's volume task definitions.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;

fn container(name: &str, extra: &str, script: &str) -> String {
    format!(
        r#"{{"name":"{name}","image":"$REGISTRY/busybox:latest","memory":32,"command":["sh","-c",{cmd}]{extra}}}"#,
        cmd = serde_json::to_string(script).unwrap()
    )
}

fn task(family: &str, volumes: &str, containers: &[String]) -> String {
    format!(
        r#"{{"family":"{family}","networkMode":"none","volumes":{volumes},"containerDefinitions":[{}]}}"#,
        containers.join(",")
    )
}

fn skiff(env: &Env, args: &[&str]) -> Output {
    env.output(args)
}

fn run_detached(env: &Env, td: &Path) -> String {
    let out = skiff(env, &["run", "-d", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn inspect(env: &Env, task: &str) -> serde_json::Value {
    let out = skiff(env, &["inspect", "--json", task]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn wait_stopped(env: &Env, task: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(60), || {
        let j = inspect(env, task);
        (j["lastStatus"] == "STOPPED").then_some(j)
    })
    .unwrap_or_else(|| panic!("task {task} never stopped: {}", inspect(env, task)))
}

/// Removes the task and checks that nothing of the env is left.
fn rm_and_check(env: &Env, task: &str) {
    let out = skiff(env, &["rm", "-f", task]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn host_binds_read_write_and_read_only() {
    let env = Env::new();
    let host = env.dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), "from the host\n").unwrap();
    // A missing source directory is created, as Docker does for a bind.
    let missing = env.dir.join("missing/deep");
    let td = env.taskdef(
        "bind",
        &task(
            "bind",
            &format!(
                r#"[{{"name":"h","host":{{"sourcePath":"{}"}}}},{{"name":"m","host":{{"sourcePath":"{}"}}}}]"#,
                host.display(),
                missing.display()
            ),
            &[container(
                "main",
                r#","mountPoints":[{"sourceVolume":"h","containerPath":"/rw"},
                    {"sourceVolume":"h","containerPath":"/ro","readOnly":true},
                    {"sourceVolume":"m","containerPath":"/m"}]"#,
                "cat /rw/in; echo written > /rw/out; echo no > /ro/denied; echo rc=$?; \
                 grep ' /ro ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; touch /m/made",
            )],
        ),
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.contains("from the host\n"), "{o}");
    assert!(o.contains("rc=1\nro\n"), "{o}");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out")).unwrap(),
        "written\n"
    );
    assert!(!host.join("denied").exists());
    assert!(missing.join("made").exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_task_volume_is_shared_between_two_containers_and_removed_with_the_task() {
    let env = Env::new();
    let td = env.taskdef(
        "share",
        &task(
            "share",
            r#"[{"name":"scratch"},{"name":"dv","dockerVolumeConfiguration":{"scope":"task"}}]"#,
            &[
                container(
                    "writer",
                    r#","essential":false,"mountPoints":[{"sourceVolume":"scratch","containerPath":"/data"},
                        {"sourceVolume":"dv","containerPath":"/dv"}]"#,
                    "echo hello > /data/msg && echo docker > /dv/msg",
                ),
                container(
                    "reader",
                    r#","dependsOn":[{"containerName":"writer","condition":"SUCCESS"}],
                       "mountPoints":[{"sourceVolume":"scratch","containerPath":"/in","readOnly":true},
                        {"sourceVolume":"dv","containerPath":"/dv"}]"#,
                    "[ \"$(cat /in/msg)\" = hello ] && [ \"$(cat /dv/msg)\" = docker ] \
                     && ! touch /in/x 2>/dev/null && exit 7",
                ),
            ],
        ),
    );
    let id = run_detached(&env, &td);
    let j = wait_stopped(&env, &id);
    assert_eq!(j["containers"][1]["exitCode"], 7, "{j}");
    let vdir = env.state.join("tasks").join(&id).join("volumes");
    assert_eq!(
        std::fs::read_to_string(vdir.join("scratch/msg")).unwrap(),
        "hello\n"
    );
    let m = &j["containers"][1]["mounts"];
    assert_eq!(m[0]["destination"], "/in", "{m}");
    assert_eq!(m[0]["name"], "scratch", "{m}");
    assert_eq!(m[0]["readOnly"], true, "{m}");
    assert_eq!(
        m[0]["source"],
        vdir.join("scratch").to_str().unwrap(),
        "{m}"
    );
    assert_eq!(m[1]["readOnly"], false, "{m}");
    let text = stdout(&skiff(&env, &["inspect", &id]));
    assert!(
        text.contains(&format!(
            "Mounts        /in <- {} (task scratch, ro)",
            vdir.join("scratch").display()
        )),
        "{text}"
    );
    rm_and_check(&env, &id);
    assert!(!vdir.exists());
}

#[test]
fn a_shared_volume_outlives_its_task_and_autoprovision_false_needs_it() {
    let env = Env::new();
    let vol = |name: &str, auto: bool| {
        format!(
            r#"[{{"name":"{name}","dockerVolumeConfiguration":{{"scope":"shared","autoprovision":{auto},"labels":{{"team":"edge"}}}}}}]"#
        )
    };
    let mp = r#","mountPoints":[{"sourceVolume":"keep","containerPath":"/v"}]"#;
    let first = env.taskdef(
        "first",
        &task(
            "first",
            &vol("keep", true),
            &[container("main", mp, "echo kept > /v/f")],
        ),
    );
    let out = env.run(&first);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let ls = skiff(&env, &["volume", "ls"]);
    assert_eq!(stdout(&ls), "DRIVER     VOLUME NAME\nlocal      keep\n");
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&skiff(&env, &["volume", "ls", "--json"]))).unwrap();
    assert_eq!(j[0]["Labels"]["team"], "edge", "{j}");
    let data = env.state.join("volumes/keep/_data");
    assert_eq!(j[0]["Mountpoint"], data.to_str().unwrap(), "{j}");

    // A second task finds the data without provisioning; it runs detached, and the volume
    // cannot be removed while it runs.
    let second = env.taskdef(
        "second",
        &task(
            "second",
            &vol("keep", false),
            &[container(
                "main",
                mp,
                "[ \"$(cat /v/f)\" = kept ] && echo again >> /v/f && sleep 60",
            )],
        ),
    );
    let id = run_detached(&env, &second);
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(data.join("f"))
            .ok()
            .filter(|t| t == "kept\nagain\n")
    })
    .expect("the second task appends to the shared volume");
    let rm = skiff(&env, &["volume", "rm", "keep"]);
    assert_eq!(rm.status.code(), Some(125), "{}", stdout(&rm));
    assert_eq!(
        stderr(&rm),
        format!("skiff: volume rm: volume \"keep\": in use by running task {id}\n")
    );
    rm_and_check(&env, &id);
    let rm = skiff(&env, &["volume", "rm", "keep"]);
    assert_eq!(rm.status.code(), Some(0), "{}", stderr(&rm));
    assert!(!env.state.join("volumes/keep").exists());
    assert_eq!(
        stdout(&skiff(&env, &["volume", "ls"])),
        "DRIVER     VOLUME NAME\n"
    );

    // Gone now, and a task that may not provision it does not start.
    let out = env.run(&second);
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(
            "ResourceInitializationError: volume \"keep\": the shared volume does not exist and autoprovision is false"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!env.state.join("volumes/keep").exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    let rm = skiff(&env, &["volume", "rm", "keep"]);
    assert_eq!(
        stderr(&rm),
        "skiff: volume rm: volume \"keep\": no such shared volume\n"
    );
}

#[test]
fn volumes_from_gives_the_source_containers_mounts_read_only_when_asked() {
    let env = Env::new();
    let td = env.taskdef(
        "from",
        &task(
            "from",
            r#"[{"name":"d"},{"name":"e"}]"#,
            &[
                container(
                    "src",
                    r#","essential":false,"mountPoints":[{"sourceVolume":"d","containerPath":"/data"}]"#,
                    "true",
                ),
                container(
                    "mid",
                    r#","essential":false,"volumesFrom":[{"sourceContainer":"src"}],
                       "mountPoints":[{"sourceVolume":"e","containerPath":"/extra"}]"#,
                    "echo via-src > /data/a && echo via-mid > /extra/b",
                ),
                container(
                    "ro",
                    r#","dependsOn":[{"containerName":"mid","condition":"SUCCESS"}],
                       "volumesFrom":[{"sourceContainer":"mid","readOnly":true}]"#,
                    "cat /data/a /extra/b; touch /data/c || echo data-is-ro; touch /extra/c || echo extra-is-ro",
                ),
            ],
        ),
    );
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    for want in [
        "ro | via-src",
        "ro | via-mid",
        "ro | data-is-ro",
        "ro | extra-is-ro",
    ] {
        assert!(o.contains(want), "{want} in {o}");
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn a_symlink_in_a_volume_cannot_take_a_mount_out_of_the_root() {
    let env = Env::new();
    let host = env.dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    // Followed on the host, this would put the second mount under the host's /tmp.
    std::os::unix::fs::symlink("/tmp", host.join("link")).unwrap();
    let escape = format!("skiff-escape-{}", random_hex());
    let vols = format!(
        r#"[{{"name":"h","host":{{"sourcePath":"{}"}}}},{{"name":"t"}}]"#,
        host.display()
    );
    let td = env.taskdef(
        "link",
        &task(
            "link",
            &vols,
            &[container(
                "main",
                &format!(
                    r#","mountPoints":[{{"sourceVolume":"h","containerPath":"/vol"}},
                        {{"sourceVolume":"t","containerPath":"/vol/link/{escape}"}}]"#
                ),
                &format!("grep -c ' /tmp/{escape} ' /proc/mounts && echo inside > /tmp/{escape}/f"),
            )],
        ),
    );
    let id = run_detached(&env, &td);
    let j = wait_stopped(&env, &id);
    assert_eq!(j["containers"][0]["exitCode"], 0, "{j}");
    assert!(!Path::new("/tmp").join(&escape).exists());
    let f = env.state.join("tasks").join(&id).join("volumes/t/f");
    assert_eq!(std::fs::read_to_string(f).unwrap(), "inside\n");
    rm_and_check(&env, &id);

    // A mount point that is itself the symlink is refused.
    let td = env.taskdef(
        "link2",
        &task(
            "link2",
            &vols,
            &[container(
                "main",
                r#","mountPoints":[{"sourceVolume":"h","containerPath":"/vol"},
                    {"sourceVolume":"t","containerPath":"/vol/link"}]"#,
                "true",
            )],
        ),
    );
    let out = env.run(&td);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("mount target /vol/link is a symlink"),
        "{}",
        stderr(&out)
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// One of the ECS agent's task definitions with this suite's registry and images standing in,
/// without a network (bridge is tested in tests/net.rs).
fn fixture(env: &Env, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/taskdefs/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("127.0.0.1:51670", &registry());
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["networkMode"] = "none".into();
    edit(&mut v);
    env.taskdef(name, &v.to_string())
}

#[test]
fn ecs_agent_volume_taskdefs_behave_as_named() {
    let env = Env::new();

    // datavolume: two containers reach a task volume through volumesFrom of a third, whose
    // command cannot even start (a non-essential start failure).
    let td = fixture(&env, "datavolume", |_| {});
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));

    // task-shared-vol-write: an autoprovisioned shared volume, written and read back.
    let td = fixture(&env, "task-shared-vol-write", |_| {});
    let out = env.run(&td);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(env.state.join("volumes/task-shared/_data/success")).unwrap(),
        "can you read me\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&skiff(&env, &["volume", "ls", "--json"]))).unwrap();
    assert_eq!(j[0]["Name"], "task-shared", "{j}");
    assert_eq!(j[0]["Labels"]["mylables"], "test", "{j}");
    assert_eq!(
        skiff(&env, &["volume", "rm", "task-shared"]).status.code(),
        Some(0)
    );

    // web-timer: the timer writes the date into a host directory that the web server mounts
    // read-only as its document root.
    let webdata = env.dir.join("webdata");
    let td = fixture(&env, "aws-cli-ex3-web-timer-volumes", |v| {
        v["volumes"][0]["host"]["sourcePath"] = webdata.to_str().unwrap().into();
        let cs = v["containerDefinitions"].as_array_mut().unwrap();
        cs[0]["image"] = format!("{}/nginx:latest", registry()).into();
        cs[0].as_object_mut().unwrap().remove("portMappings");
        cs[1]["image"] = busybox().into();
    });
    let id = run_detached(&env, &td);
    let page = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(webdata.join("index.html"))
            .ok()
            .filter(|t| t.contains("UTC"))
    })
    .expect("the timer writes the page");
    let out = skiff(
        &env,
        &[
            "exec",
            &id,
            "web",
            "cat",
            "/usr/share/nginx/html/index.html",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("UTC"), "{} vs {page}", stdout(&out));
    let out = skiff(
        &env,
        &[
            "exec",
            &id,
            "web",
            "sh",
            "-c",
            "echo x > /usr/share/nginx/html/index.html",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    rm_and_check(&env, &id);
}
