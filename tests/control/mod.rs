//! Helpers of the control plane tests: a `skiff server` process on loopback with its own
//! data directory, `skiff ctl`, and a small hand-written agent client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub const TARGET: &str = "AmazonEC2ContainerServiceV20141113.";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_skiff")
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("skiff-ctl-{tag}-{}", hex::encode(b)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `skiff server` on 127.0.0.1 with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    pub addr: String,
    pub fingerprint: String,
    extra: Vec<String>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = temp_dir("srv");
        let mut s = Server {
            child: None,
            dir,
            addr: String::new(),
            fingerprint: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn("127.0.0.1:0");
        s
    }

    fn spawn(&mut self, listen: &str) {
        let mut child = Command::new(bin())
            .args(["server", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", listen])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let l = lines.next().expect("server printed its address").unwrap();
            if let Some(fp) = l.strip_prefix("ca fingerprint (sha256): ") {
                self.fingerprint = fp.to_string();
            }
            if let Some(rest) = l.strip_prefix("skiff server listening on https://") {
                self.addr = rest.split_whitespace().next().unwrap().to_string();
                break;
            }
        }
        self.child = Some(child);
    }

    /// Stops the server (SIGTERM) and starts it again on the same address and directory.
    pub fn restart(&mut self) {
        self.stop();
        let addr = self.addr.clone();
        self.spawn(&addr);
    }

    /// SIGKILL: the server dies as in a crash (start it again with `start_again`).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            c.wait().unwrap();
        }
    }

    /// Starts a stopped or killed server again on its address and data directory.
    pub fn start_again(&mut self) {
        let addr = self.addr.clone();
        self.spawn(&addr);
    }

    /// A raw request with `curl` (trusting the server's CA), as `token`'s holder: (status,
    /// body). `action` sets the ECS API's X-Amz-Target.
    pub fn curl(
        &self,
        token: &str,
        method: &str,
        path: &str,
        action: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(self.dir.join("ca.pem"))
        .args(["-H", &format!("Authorization: Bearer {token}")]);
        if let Some(a) = action {
            c.args([
                "-H",
                &format!("X-Amz-Target: AmazonEC2ContainerServiceV20141113.{a}"),
            ]);
        }
        if !body.is_empty() {
            c.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = c.arg(self.url(path)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn file(&self, f: &str) -> String {
        std::fs::read_to_string(self.dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("ctl")
            .args(["--endpoint", &self.url("")])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// `skiff ctl ... --output json`, which must succeed.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let o = self.ctl(&a);
        assert!(
            o.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.dir.join("ca.pem")).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// (status, body) of a request.
pub async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn ecs(
    s: &Server,
    c: &reqwest::Client,
    token: &str,
    action: &str,
    body: Value,
) -> (u16, Value) {
    send(
        c.post(s.url("/"))
            .header("x-amz-target", format!("{TARGET}{action}"))
            .bearer_auth(token)
            .body(body.to_string()),
    )
    .await
}

/// The light agent: a registered instance and its credential.
pub struct Agent {
    pub arn: String,
    pub cred: String,
}

pub async fn register(
    s: &Server,
    c: &reqwest::Client,
    join: &str,
    cpu: u64,
    mem: u64,
    reserved: &[u16],
) -> Agent {
    let (st, v) = send(c.post(s.url("/v1/agent/register")).json(&json!({
        "cluster": "default", "joinToken": join, "hostname": "edge-1",
        "resources": {"cpu": cpu, "memory": mem, "reservedPorts": reserved},
        "attributes": [{"name": "ecs.os-type", "value": "linux"}], "agentVersion": "test"})))
    .await;
    assert_eq!(st, 200, "{v}");
    Agent {
        arn: v["containerInstanceArn"].as_str().unwrap().to_string(),
        cred: v["credential"].as_str().unwrap().to_string(),
    }
}

pub async fn poll(s: &Server, c: &reqwest::Client, a: &Agent, version: u64, wait: u64) -> Value {
    let (st, v) = send(
        c.get(s.url(&format!("/v1/agent/desired?version={version}&wait={wait}")))
            .bearer_auth(&a.cred),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v
}

pub fn event(seq: u64, task: &str, status: &str, exit: Option<i32>) -> Value {
    let mut c = json!({"name": "app", "lastStatus": status,
        "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 8080, "protocol": "tcp"}]});
    if let Some(x) = exit {
        c["exitCode"] = json!(x);
        c["reason"] = json!("exited");
    }
    json!({"seq": seq, "taskArn": task, "lastStatus": status, "containers": [c], "at": 1.0,
           "startedAt": 1.0})
}

pub async fn post_events(
    s: &Server,
    c: &reqwest::Client,
    a: &Agent,
    events: Vec<Value>,
) -> (u16, Value) {
    send(
        c.post(s.url("/v1/agent/events"))
            .bearer_auth(&a.cred)
            .json(&json!({"events": events})),
    )
    .await
}

pub fn taskdef_file(dir: &Path, name: &str, v: Value) -> String {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, v.to_string()).unwrap();
    format!("file://{}", p.display())
}

pub fn web_taskdef(family: &str, cpu: u64, mem: u64, host_port: u16) -> Value {
    json!({"family": family, "networkMode": "bridge", "containerDefinitions": [
        {"name": "app", "image": "busybox", "cpu": cpu, "memory": mem, "essential": true,
         "portMappings": [{"containerPort": 80, "hostPort": host_port}]}]})
}

pub fn remaining(instance: &Value, name: &str) -> Value {
    instance["remainingResources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| {
            if name.starts_with("PORTS") {
                r["stringSetValue"].clone()
            } else {
                r["integerValue"].clone()
            }
        })
        .unwrap()
}
