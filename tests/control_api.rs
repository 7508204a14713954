//! The control plane's user API with a real `skiff server` on loopback: `skiff ctl` end to
//! end, bad requests, placement without room (no containers involved).

mod control;

use control::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drives_clusters_task_definitions_and_tasks() {
    let s = Server::start(&[]);
    let c = s.client();
    assert_eq!(s.fingerprint.len(), 64);
    assert_eq!(s.file("ca.sha256"), s.fingerprint);

    // Clusters.
    let v = s.ctl_json(&["create-cluster", "--cluster-name", "edge"]);
    assert_eq!(
        v["cluster"]["clusterArn"],
        "arn:aws:ecs:local:000000000000:cluster/edge"
    );
    let v = s.ctl_json(&["list-clusters"]);
    assert_eq!(v["clusterArns"].as_array().unwrap().len(), 2);
    let o = s.ctl(&["describe-clusters", "--clusters", "default", "nope"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("default")
            && out.contains("failure: arn:aws:ecs:local:000000000000:cluster/nope MISSING"),
        "{out}"
    );
    let o = s.ctl(&["create-cluster", "--cluster-name", "bad name!"]);
    assert_eq!(o.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&o.stderr).contains("(InvalidParameterException)"));

    // Task definitions: revisions, validation through src/taskdef with field paths.
    let f = taskdef_file(&s.dir, "web", web_taskdef("web", 256, 128, 8080));
    let v = s.ctl_json(&["register-task-definition", "--cli-input-json", &f]);
    assert_eq!(
        v["taskDefinition"]["taskDefinitionArn"],
        "arn:aws:ecs:local:000000000000:task-definition/web:1"
    );
    let v = s.ctl_json(&["register-task-definition", "--cli-input-json", &f]);
    assert_eq!(v["taskDefinition"]["revision"], 2);
    let bad = taskdef_file(
        &s.dir,
        "bad",
        json!({"family": "bad", "containerDefinitions": [
        {"name": "app", "image": "busybox", "memory": 2, "bogus": 1}]}),
    );
    let o = s.ctl(&["register-task-definition", "--cli-input-json", &bad]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(254), "{err}");
    assert!(
        err.contains("(ClientException)") && err.contains("containerDefinitions[0].bogus"),
        "{err}"
    );
    assert!(err.contains("containerDefinitions[0].memory"), "{err}");
    let v = s.ctl_json(&["describe-task-definition", "--task-definition", "web"]);
    assert_eq!(v["taskDefinition"]["revision"], 2);
    assert_eq!(
        v["taskDefinition"]["containerDefinitions"][0]["name"],
        "app"
    );
    let v = s.ctl_json(&["deregister-task-definition", "--task-definition", "web:2"]);
    assert_eq!(v["taskDefinition"]["status"], "INACTIVE");
    let v = s.ctl_json(&["list-task-definitions"]);
    assert_eq!(
        v["taskDefinitionArns"],
        json!(["arn:aws:ecs:local:000000000000:task-definition/web:1"])
    );
    let v = s.ctl_json(&["list-task-definitions", "--status", "INACTIVE"]);
    assert_eq!(v["taskDefinitionArns"].as_array().unwrap().len(), 1);
    // family alone: the latest ACTIVE revision.
    let v = s.ctl_json(&["describe-task-definition", "--task-definition", "web"]);
    assert_eq!(v["taskDefinition"]["revision"], 1);

    // No instance yet.
    let o = s.ctl(&["run-task", "--task-definition", "web"]);
    assert_eq!(o.status.code(), Some(254));

    // An agent joins; run-task places on it.
    let a = register(&s, &c, &s.file("join.token"), 1024, 1024, &[22]).await;
    let v = s.ctl_json(&[
        "run-task",
        "--task-definition",
        "web",
        "--started-by",
        "me",
        "--group",
        "g1",
    ]);
    let task = v["tasks"][0].clone();
    assert_eq!(task["containerInstanceArn"], json!(a.arn));
    assert_eq!(task["lastStatus"], "PROVISIONING");
    assert_eq!(task["desiredStatus"], "RUNNING");
    assert_eq!(
        (task["cpu"].as_str(), task["memory"].as_str()),
        (Some("256"), Some("128"))
    );
    assert_eq!(
        (task["startedBy"].as_str(), task["group"].as_str()),
        (Some("me"), Some("g1"))
    );
    let arn = task["taskArn"].as_str().unwrap().to_string();
    let id = arn.rsplit('/').next().unwrap().to_string();
    let d = poll(&s, &c, &a, 0, 0).await;
    assert_eq!(d["tasks"][0]["taskArn"], json!(arn));
    assert_eq!(d["tasks"][0]["taskDefinition"]["family"], "web");
    let (st, _) = post_events(&s, &c, &a, vec![event(1, &arn, "RUNNING", None)]).await;
    assert_eq!(st, 200);

    let v = s.ctl_json(&["describe-tasks", "--tasks", &id]);
    assert_eq!(v["tasks"][0]["lastStatus"], "RUNNING");
    assert_eq!(
        v["tasks"][0]["containers"][0]["networkBindings"][0]["hostPort"],
        8080
    );
    let out =
        String::from_utf8_lossy(&s.ctl(&["describe-tasks", "--tasks", &id]).stdout).to_string();
    assert!(
        out.contains(&id) && out.contains("RUNNING") && out.contains("web:1"),
        "{out}"
    );
    let v = s.ctl_json(&["list-tasks", "--started-by", "me"]);
    assert_eq!(v["taskArns"], json!([arn]));
    assert_eq!(
        s.ctl_json(&["list-tasks", "--family", "other"])["taskArns"],
        json!([])
    );
    let v = s.ctl_json(&["list-tasks", "--container-instance", &a.arn]);
    assert_eq!(v["taskArns"], json!([arn]));

    let v = s.ctl_json(&[
        "describe-container-instances",
        "--container-instances",
        &a.arn,
    ]);
    let i = &v["containerInstances"][0];
    assert_eq!(
        (i["status"].as_str(), i["agentConnected"].as_bool()),
        (Some("ACTIVE"), Some(true))
    );
    assert_eq!(remaining(i, "CPU"), 768);
    assert_eq!(remaining(i, "MEMORY"), 896);
    assert_eq!(remaining(i, "PORTS"), json!(["22", "8080"]));
    assert_eq!(i["runningTasksCount"], 1);
    assert_eq!(i["attributes"][0]["name"], "ecs.os-type");

    // Utilization, kept per instance and per task.
    let (st, v) = send(c.post(s.url("/v1/agent/utilization")).bearer_auth(&a.cred).json(&json!({
        "windowStart": 10.0, "windowEnd": 30.0,
        "instance": {"cpu": {"min": 1.0, "max": 3.0, "sum": 4.0, "count": 2}, "memory": {"min": 5.0, "max": 5.0, "sum": 5.0, "count": 1}},
        "tasks": [{"taskArn": arn, "cpu": {"min": 2.0, "max": 2.0, "sum": 2.0, "count": 1}, "memory": {"min": 9.0, "max": 9.0, "sum": 9.0, "count": 1}}]})))
    .await;
    assert_eq!(st, 200, "{v}");
    let v = s.ctl_json(&[
        "get-utilization",
        "--container-instance",
        &a.arn,
        "--tasks",
        &id,
    ]);
    assert_eq!(v["containerInstance"]["windows"][0]["cpu"]["sum"], 4.0);
    assert_eq!(v["tasks"][0]["windows"][0]["memory"]["max"], 9.0);

    // StopTask: desired STOPPED, the agent sees it, reports STOPPED, resources are freed.
    let v = s.ctl_json(&["stop-task", "--task", &arn, "--reason", "maintenance"]);
    assert_eq!(v["task"]["desiredStatus"], "STOPPED");
    let d = poll(&s, &c, &a, 0, 0).await;
    assert_eq!(d["tasks"][0]["desiredStatus"], "STOPPED");
    assert_eq!(d["tasks"][0]["stoppedReason"], "maintenance");
    let (st, _) = post_events(&s, &c, &a, vec![event(2, &arn, "STOPPED", Some(143))]).await;
    assert_eq!(st, 200);
    let v = s.ctl_json(&["describe-tasks", "--tasks", &arn]);
    let t = &v["tasks"][0];
    assert_eq!(
        (t["lastStatus"].as_str(), t["stopCode"].as_str()),
        (Some("STOPPED"), Some("UserInitiated"))
    );
    assert_eq!(t["stoppedReason"], "maintenance");
    assert_eq!(t["containers"][0]["exitCode"], 143);
    assert_eq!(poll(&s, &c, &a, 0, 0).await["tasks"], json!([]));
    let v = s.ctl_json(&[
        "describe-container-instances",
        "--container-instances",
        &a.arn,
    ]);
    assert_eq!(remaining(&v["containerInstances"][0], "CPU"), 1024);
    assert_eq!(
        s.ctl_json(&["list-tasks", "--desired-status", "STOPPED"])["taskArns"],
        json!([arn])
    );

    // DRAINING instances take no new tasks; StartTask names instances.
    let v = s.ctl_json(&[
        "update-container-instances-state",
        "--container-instances",
        &a.arn,
        "--status",
        "DRAINING",
    ]);
    assert_eq!(v["containerInstances"][0]["status"], "DRAINING");
    let v = s.ctl_json(&[
        "start-task",
        "--task-definition",
        "web",
        "--container-instances",
        &a.arn,
    ]);
    assert_eq!(v["failures"][0]["reason"], "DRAINING");
    s.ctl_json(&[
        "update-container-instances-state",
        "--container-instances",
        &a.arn,
        "--status",
        "ACTIVE",
    ]);
    let v = s.ctl_json(&[
        "start-task",
        "--task-definition",
        "web:1",
        "--container-instances",
        &a.arn,
        "nope",
    ]);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(v["failures"][0]["reason"], "MISSING");

    // A new join token for another cluster; the table output of instances.
    let tok = String::from_utf8_lossy(&s.ctl(&["create-join-token", "--cluster", "edge"]).stdout)
        .trim()
        .to_string();
    assert!(tok.starts_with("skj_"), "{tok}");
    let out = String::from_utf8_lossy(
        &s.ctl(&[
            "describe-container-instances",
            "--container-instances",
            &a.arn,
        ])
        .stdout,
    )
    .to_string();
    assert!(
        out.contains("CONNECTED") && out.contains("768/1024"),
        "{out}"
    );

    // Delete: refused while instances are registered; the default cluster always exists.
    let o = s.ctl(&["delete-cluster", "--cluster", "default"]);
    assert_eq!(o.status.code(), Some(254));
    let v = s.ctl_json(&["delete-cluster", "--cluster", "edge"]);
    assert_eq!(v["cluster"]["status"], "INACTIVE");
    let (st, _) = send(c.post(s.url("/v1/agent/register")).json(&json!({
        "cluster": "edge", "joinToken": tok, "hostname": "h", "resources": {"cpu": 1, "memory": 1},
        "agentVersion": "t"})))
    .await;
    assert_eq!(st, 401, "the deleted cluster's join tokens are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_an_ecs_type_and_never_crash_the_server() {
    let s = Server::start(&[]);
    let c = s.client();
    let admin = s.file("admin.token");
    let a = register(&s, &c, &s.file("join.token"), 1024, 1024, &[]).await;
    let raw = |action: &str, body: Vec<u8>| {
        c.post(s.url("/"))
            .header("x-amz-target", format!("{TARGET}{action}"))
            .bearer_auth(&admin)
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (raw("ListClusters", b"{not json".to_vec()), 400),
        (raw("RunTask", b"[1,2,3]".to_vec()), 400),
        (raw("RunTask", br#"{"taskDefinition": 5}"#.to_vec()), 400),
        (
            raw(
                "RunTask",
                br#"{"taskDefinition": "x", "count": 11}"#.to_vec(),
            ),
            400,
        ),
        (
            raw(
                "RunTask",
                br#"{"taskDefinition": "x", "count": -1}"#.to_vec(),
            ),
            400,
        ),
        (
            raw(
                "DescribeTasks",
                br#"{"cluster": "nope", "tasks": ["a"]}"#.to_vec(),
            ),
            400,
        ),
        (raw("Explode", b"{}".to_vec()), 400),
        (
            raw("RegisterTaskDefinition", vec![0xff, 0xfe, 0x00, 0x7b]),
            400,
        ),
        (raw("ListTasks", br#"{"nextToken": "zzz"}"#.to_vec()), 400),
        (raw("ListTasks", vec![b' '; proto_max() + 1]), 413),
        (
            c.post(s.url("/"))
                .header("x-amz-target", "Something.Else")
                .bearer_auth(&admin),
            400,
        ),
        (
            c.post(s.url("/v1/agent/events"))
                .bearer_auth(&a.cred)
                .body("{\"events\": 3}"),
            400,
        ),
        (
            c.post(s.url("/v1/agent/events"))
                .bearer_auth(&a.cred)
                .body(vec![b'x'; proto_max() + 10]),
            413,
        ),
        (c.post(s.url("/v1/agent/register")).body("garbage"), 400),
        (
            c.get(s.url("/v1/agent/desired?version=abc"))
                .bearer_auth(&a.cred),
            400,
        ),
        (
            c.get(s.url("/v1/agent/desired?version=0&wait=100000"))
                .bearer_auth(&a.cred),
            400,
        ),
        (c.get(s.url("/no/such/thing")), 404),
        (c.get(s.url("/")).bearer_auth(&admin), 405),
    ];
    for (k, (req, want)) in cases.into_iter().enumerate() {
        let (st, v) = send(req).await;
        assert_eq!(st, want, "case {k}: {v}");
        assert!(
            v["__type"].is_string() && v["message"].is_string(),
            "case {k}: {v}"
        );
    }
    // Garbage bytes straight on the socket (no TLS) do not take the server down.
    {
        use std::io::Write;
        let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
        let _ = sock.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5]);
    }
    let (st, _) = ecs(&s, &c, &admin, "ListClusters", json!({})).await;
    assert_eq!(st, 200);
}

fn proto_max() -> usize {
    1 << 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_task_without_room_gives_ecs_failures() {
    let s = Server::start(&[]);
    let c = s.client();
    let admin = s.file("admin.token");
    let a = register(&s, &c, &s.file("join.token"), 1024, 600, &[9000]).await;
    poll(&s, &c, &a, 0, 0).await;
    for (fam, cpu, mem, port) in [
        ("cpu", 512, 10, 0),
        ("mem", 0, 250, 0),
        ("port", 1, 6, 8080),
        ("reserved", 1, 6, 9000),
    ] {
        let (st, v) = ecs(
            &s,
            &c,
            &admin,
            "RegisterTaskDefinition",
            web_taskdef(fam, cpu, mem, port),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    let run = |fam: &'static str, count: u32| {
        let (s, c, admin) = (&s, &c, &admin);
        async move {
            ecs(
                s,
                c,
                admin,
                "RunTask",
                json!({"taskDefinition": fam, "count": count}),
            )
            .await
            .1
        }
    };
    let v = run("cpu", 3).await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["failures"],
        json!([{"arn": a.arn, "reason": "RESOURCE:CPU"}])
    );
    let v = run("mem", 3).await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["failures"][0]["reason"], "RESOURCE:MEMORY");
    // A definition for another architecture registers on any server, and is placed only on
    // instances whose ecs.cpu-architecture matches (this light agent reports none).
    let mut arm = web_taskdef("arm", 1, 6, 0);
    arm["runtimePlatform"] = json!({"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"});
    let (st, v) = ecs(&s, &c, &admin, "RegisterTaskDefinition", arm).await;
    assert_eq!(st, 200, "{v}");
    let v = run("arm", 1).await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["failures"][0]["reason"], "ATTRIBUTE", "{v}");
    let v = run("port", 2).await;
    assert_eq!(
        v["tasks"].as_array().unwrap().len(),
        0,
        "cpu is used up: {v}"
    );
    assert_eq!(v["failures"][0]["reason"], "RESOURCE:CPU");
    // Free the CPU: stop the two cpu tasks through their agent.
    let (_, l) = ecs(&s, &c, &admin, "ListTasks", json!({"family": "cpu"})).await;
    let mut seq = 0;
    for t in l["taskArns"].as_array().unwrap() {
        seq += 1;
        post_events(
            &s,
            &c,
            &a,
            vec![event(seq, t.as_str().unwrap(), "STOPPED", Some(0))],
        )
        .await;
    }
    let v = run("port", 2).await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["failures"][0]["reason"], "RESOURCE:PORTS");
    let v = run("reserved", 1).await;
    assert_eq!(
        v["failures"][0]["reason"], "RESOURCE:PORTS",
        "ECS_RESERVED_PORTS are never given"
    );
    let (st, v) = ecs(
        &s,
        &c,
        &admin,
        "RunTask",
        json!({"taskDefinition": "cpu", "count": 0}),
    )
    .await;
    assert_eq!(
        (st, v["__type"].as_str()),
        (400, Some("InvalidParameterException"))
    );
}
