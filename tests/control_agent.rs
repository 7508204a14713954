//! The agent protocol against a real `skiff server` on loopback, through a hand-written
//! agent client: long-poll wake-ups, events applied once, credential isolation, restart
//! durability, heartbeat timeout (no containers involved).

mod control;

use std::process::Command;
use std::time::{Duration, Instant};

use control::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_protocol_wakes_polls_applies_events_once_and_isolates_instances() {
    let s = Server::start(&[]);
    let c = s.client();
    let admin = s.file("admin.token");
    let join = s.file("join.token");
    let (st, _) = ecs(
        &s,
        &c,
        &admin,
        "RegisterTaskDefinition",
        web_taskdef("web", 100, 100, 0),
    )
    .await;
    assert_eq!(st, 200);
    let a = register(&s, &c, &join, 1024, 1024, &[]).await;
    let b = register(&s, &c, &join, 1024, 1024, &[]).await;

    // A poll holding the current version waits; StartTask wakes it with the task.
    let d0 = poll(&s, &c, &a, 0, 0).await;
    let v0 = d0["version"].as_u64().unwrap();
    let pending = {
        let (s_url, cred, c) = (
            s.url(&format!("/v1/agent/desired?version={v0}&wait=60")),
            a.cred.clone(),
            c.clone(),
        );
        tokio::spawn(async move { send(c.get(s_url).bearer_auth(cred)).await })
    };
    // Wait until the poll is in flight (the instance shows it as connected either way; the
    // poll's own answer below is what matters).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, v) = ecs(
        &s,
        &c,
        &admin,
        "StartTask",
        json!({"taskDefinition": "web", "containerInstances": [a.arn]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let arn = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    // Bounded far below the poll's 60 s: only a woken poll answers in time.
    let (st, d) = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("poll woken")
        .unwrap();
    assert_eq!(st, 200);
    assert!(d["version"].as_u64().unwrap() > v0);
    assert_eq!(d["tasks"][0]["taskArn"], json!(arn));
    assert_eq!(
        poll(&s, &c, &b, 0, 0).await["tasks"],
        json!([]),
        "b sees none of a's tasks"
    );
    // The definition the agent gets is one `skiff run` accepts as it is.
    let f = s.dir.join("desired.json");
    std::fs::write(&f, d["tasks"][0]["taskDefinition"].to_string()).unwrap();
    let o = Command::new(bin())
        .arg("validate")
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Events: applied once; a replayed seq is ignored; the answer says what is applied.
    let (st, v) = post_events(
        &s,
        &c,
        &a,
        vec![
            event(1, &arn, "PENDING", None),
            event(2, &arn, "RUNNING", None),
        ],
    )
    .await;
    assert_eq!((st, v["appliedSeq"].as_u64()), (200, Some(2)));
    let (st, v) = post_events(&s, &c, &a, vec![event(1, &arn, "STOPPED", Some(1))]).await;
    assert_eq!((st, v["appliedSeq"].as_u64()), (200, Some(2)));
    let (_, v) = ecs(&s, &c, &admin, "DescribeTasks", json!({"tasks": [arn]})).await;
    assert_eq!(
        v["tasks"][0]["lastStatus"], "RUNNING",
        "the replayed event was not applied"
    );
    assert_eq!(v["tasks"][0]["version"], 3);
    assert_eq!(poll(&s, &c, &a, 0, 0).await["appliedSeq"], 2);
    let (st, v) = post_events(
        &s,
        &c,
        &a,
        vec![
            event(4, &arn, "RUNNING", None),
            event(3, &arn, "RUNNING", None),
        ],
    )
    .await;
    assert_eq!(
        (st, v["__type"].as_str()),
        (400, Some("InvalidParameterException"))
    );

    // Credential isolation: b cannot report a's task (nothing of the post is applied).
    let (st, v) = post_events(&s, &c, &b, vec![event(1, &arn, "STOPPED", Some(0))]).await;
    assert_eq!(
        (st, v["__type"].as_str()),
        (403, Some("AccessDeniedException"))
    );
    let (st, _) = send(c.post(s.url("/v1/agent/utilization")).bearer_auth(&b.cred).json(&json!({
        "windowStart": 1.0, "windowEnd": 2.0, "instance": {"cpu": {"min":0.0,"max":0.0,"sum":0.0,"count":0}, "memory": {"min":0.0,"max":0.0,"sum":0.0,"count":0}},
        "tasks": [{"taskArn": arn, "cpu": {"min":0.0,"max":0.0,"sum":0.0,"count":0}, "memory": {"min":0.0,"max":0.0,"sum":0.0,"count":0}}]}))).await;
    assert_eq!(st, 403);
    let (_, v) = ecs(&s, &c, &admin, "DescribeTasks", json!({"tasks": [arn]})).await;
    assert_eq!(v["tasks"][0]["lastStatus"], "RUNNING");

    // Agent credentials are refused by the user API, the admin token by the agent API.
    let (st, v) = ecs(&s, &c, &a.cred, "ListClusters", json!({})).await;
    assert_eq!(
        (st, v["__type"].as_str()),
        (403, Some("AccessDeniedException"))
    );
    let (st, _) = send(
        c.get(s.url("/v1/agent/desired?version=0&wait=0"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = ecs(&s, &c, "nope", "ListClusters", json!({})).await;
    assert_eq!(st, 401);
    let (st, _) = send(
        c.post(s.url("/"))
            .header("x-amz-target", format!("{TARGET}ListClusters")),
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = send(c.get(s.url("/v1/agent/desired"))).await;
    assert_eq!(st, 401);

    // Join tokens: unknown → 401; another cluster's → 403.
    let (st, v) = send(c.post(s.url("/v1/agent/register")).json(&json!({
        "cluster": "default", "joinToken": "skj_wrong", "hostname": "h", "resources": {"cpu": 1, "memory": 1},
        "agentVersion": "t"}))).await;
    assert_eq!(
        (st, v["__type"].as_str()),
        (401, Some("AccessDeniedException"))
    );
    ecs(
        &s,
        &c,
        &admin,
        "CreateCluster",
        json!({"clusterName": "other"}),
    )
    .await;
    let (_, v) = ecs(
        &s,
        &c,
        &admin,
        "CreateJoinToken",
        json!({"cluster": "other"}),
    )
    .await;
    let other = v["joinToken"].as_str().unwrap();
    let (st, _) = send(c.post(s.url("/v1/agent/register")).json(&json!({
        "cluster": "default", "joinToken": other, "hostname": "h", "resources": {"cpu": 1, "memory": 1},
        "agentVersion": "t"}))).await;
    assert_eq!(st, 403);

    // The agent reports the task STOPPED on its own (it exited): resources free, set empty.
    let (st, _) = post_events(&s, &c, &a, vec![event(3, &arn, "STOPPED", Some(0))]).await;
    assert_eq!(st, 200);
    let (_, v) = ecs(&s, &c, &admin, "DescribeTasks", json!({"tasks": [arn]})).await;
    assert_eq!(
        (
            v["tasks"][0]["lastStatus"].as_str(),
            v["tasks"][0]["desiredStatus"].as_str()
        ),
        (Some("STOPPED"), Some("STOPPED"))
    );
    assert_eq!(poll(&s, &c, &a, 0, 0).await["tasks"], json!([]));
    let (_, v) = ecs(
        &s,
        &c,
        &admin,
        "DescribeContainerInstances",
        json!({"containerInstances": [a.arn]}),
    )
    .await;
    assert_eq!(remaining(&v["containerInstances"][0], "CPU"), 1024);
    assert_eq!(v["containerInstances"][0]["runningTasksCount"], 0);

    // Deregistered: the credential opens nothing any more.
    let (st, _) = ecs(
        &s,
        &c,
        &admin,
        "DeregisterContainerInstance",
        json!({"containerInstance": b.arn}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = send(
        c.get(s.url("/v1/agent/desired?version=0&wait=0"))
            .bearer_auth(&b.cred),
    )
    .await;
    assert_eq!(st, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_everything() {
    let mut s = Server::start(&[]);
    let c = s.client();
    let admin = s.file("admin.token");
    let join = s.file("join.token");
    let fp = s.fingerprint.clone();
    ecs(
        &s,
        &c,
        &admin,
        "RegisterTaskDefinition",
        web_taskdef("web", 100, 100, 8080),
    )
    .await;
    ecs(
        &s,
        &c,
        &admin,
        "CreateCluster",
        json!({"clusterName": "edge"}),
    )
    .await;
    let a = register(&s, &c, &join, 1024, 1024, &[]).await;
    let (_, v) = ecs(&s, &c, &admin, "RunTask", json!({"taskDefinition": "web"})).await;
    let arn = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    post_events(&s, &c, &a, vec![event(1, &arn, "RUNNING", None)]).await;
    let before = poll(&s, &c, &a, 0, 0).await;

    s.restart();
    let c = s.client();
    assert_eq!(s.fingerprint, fp, "the same CA");
    assert_eq!(
        (s.file("admin.token"), s.file("join.token")),
        (admin.clone(), join.clone())
    );
    let (st, v) = ecs(&s, &c, &admin, "DescribeTasks", json!({"tasks": [arn]})).await;
    assert_eq!(st, 200);
    assert_eq!(v["tasks"][0]["lastStatus"], "RUNNING");
    assert_eq!(
        v["tasks"][0]["containers"][0]["networkBindings"][0]["hostPort"],
        8080
    );
    let (_, v) = ecs(&s, &c, &admin, "ListClusters", json!({})).await;
    assert_eq!(v["clusterArns"].as_array().unwrap().len(), 2);
    let after = poll(&s, &c, &a, 0, 0).await;
    assert_eq!(after, before, "same desired set, version and applied seq");
    let (_, v) = post_events(&s, &c, &a, vec![event(1, &arn, "STOPPED", Some(1))]).await;
    assert_eq!(v["appliedSeq"], 1, "seq 1 stays applied across the restart");
    // Resources held by the task are still accounted for: the fixed port is taken.
    let (_, v) = ecs(&s, &c, &admin, "RunTask", json!({"taskDefinition": "web"})).await;
    assert_eq!(v["failures"][0]["reason"], "RESOURCE:PORTS");
    // A second agent can join with the kept join token.
    register(&s, &c, &join, 1024, 1024, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_instance_is_disconnected_and_its_tasks_left_alone() {
    let s = Server::start(&["--heartbeat-timeout", "1s"]);
    let c = s.client();
    let admin = s.file("admin.token");
    ecs(
        &s,
        &c,
        &admin,
        "RegisterTaskDefinition",
        web_taskdef("web", 100, 100, 0),
    )
    .await;
    let a = register(&s, &c, &s.file("join.token"), 1024, 1024, &[]).await;
    poll(&s, &c, &a, 0, 0).await;
    let (_, v) = ecs(&s, &c, &admin, "RunTask", json!({"taskDefinition": "web"})).await;
    let arn = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let connected = || async {
        let (_, v) = ecs(
            &s,
            &c,
            &admin,
            "DescribeContainerInstances",
            json!({"containerInstances": [a.arn]}),
        )
        .await;
        v["containerInstances"][0]["agentConnected"]
            .as_bool()
            .unwrap()
    };
    assert!(connected().await);
    let start = Instant::now();
    while connected().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never disconnected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, v) = ecs(&s, &c, &admin, "DescribeTasks", json!({"tasks": [arn]})).await;
    assert_eq!(
        (
            v["tasks"][0]["lastStatus"].as_str(),
            v["tasks"][0]["desiredStatus"].as_str()
        ),
        (Some("PROVISIONING"), Some("RUNNING")),
        "not stopped, not moved"
    );
    let (_, v) = ecs(&s, &c, &admin, "RunTask", json!({"taskDefinition": "web"})).await;
    assert_eq!(v["tasks"], json!([]));
    assert_eq!(v["failures"][0]["reason"], "AGENT");
    // Polling again reconnects it.
    poll(&s, &c, &a, 0, 0).await;
    assert!(connected().await);
}
