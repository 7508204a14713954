//! A small fake control plane for the agent's tests: the four agent endpoints of the wire
//! contract (src/proto) over HTTPS with a CA made in the test, recording what it receives.
//! It can be taken "down" (connections are dropped at once) and brought back.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::Digest;

pub const JOIN_TOKEN: &str = "join-token-for-tests";
pub const INSTANCE_ARN: &str =
    "arn:aws:ecs:local:000000000000:container-instance/default/0123456789abcdef";

/// A certificate authority and a server certificate for 127.0.0.1 signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    pub leaf_key_der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca = p.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut lp = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        lp.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test server"));
        let leaf = lp.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            leaf_key_der: leaf_key.serialize_der(),
        }
    }

    /// `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn fingerprint(&self) -> String {
        sha2::Sha256::digest(&self.ca_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

#[derive(Default)]
pub struct State {
    pub registrations: Vec<Value>,
    pub version: u64,
    /// The desired set, as DesiredTask JSON.
    pub tasks: Vec<Value>,
    pub applied_seq: u64,
    /// Applied events, in order.
    pub events: Vec<Value>,
    /// Every seq received, retries included.
    pub received: Vec<u64>,
    pub utilization: Vec<Value>,
    pub polls: u64,
}

pub struct FakeServer {
    pub port: u16,
    pub pki: Pki,
    pub state: Arc<(Mutex<State>, Condvar)>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

const CREDENTIAL: &str = "instance-credential-0123";

impl FakeServer {
    pub fn start() -> FakeServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = Pki::new("fake");
        let cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![pki.leaf_der.clone().into(), pki.ca_der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pki.leaf_key_der.clone().into()),
            )
            .unwrap();
        let cfg = Arc::new(cfg);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, down, stop) = (state.clone(), down.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if down.load(Ordering::SeqCst) {
                        drop(conn);
                        continue;
                    }
                    let (cfg, state, down) = (cfg.clone(), state.clone(), down.clone());
                    std::thread::spawn(move || serve(conn, cfg, state, down));
                }
            });
        }
        FakeServer {
            port,
            pki,
            state,
            down,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn write_ca(&self, dir: &Path) -> std::path::PathBuf {
        let p = dir.join("ca.pem");
        std::fs::write(&p, &self.pki.ca_pem).unwrap();
        p
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        self.state.1.notify_all();
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.state.0.lock().unwrap();
        let r = f(&mut st);
        self.state.1.notify_all();
        r
    }

    /// Puts a task in the desired set (or replaces the one with its ARN) and bumps the
    /// version.
    pub fn desire(&self, task: Value) {
        self.with(|st| {
            st.tasks.retain(|t| t["taskArn"] != task["taskArn"]);
            st.tasks.push(task);
            st.version += 1;
        })
    }

    /// Marks a desired task STOPPED with a reason.
    pub fn stop_task(&self, arn: &str, reason: &str) {
        self.with(|st| {
            for t in st.tasks.iter_mut().filter(|t| t["taskArn"] == arn) {
                t["desiredStatus"] = json!("STOPPED");
                t["stoppedReason"] = json!(reason);
            }
            st.version += 1;
        })
    }

    /// Waits until `f` holds for the state (at most `limit`).
    pub fn wait<T>(&self, limit: Duration, mut f: impl FnMut(&State) -> Option<T>) -> Option<T> {
        let start = Instant::now();
        let mut st = self.state.0.lock().unwrap();
        loop {
            if let Some(v) = f(&st) {
                return Some(v);
            }
            let left = limit.checked_sub(start.elapsed())?;
            st = self
                .state
                .1
                .wait_timeout(st, left.min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
    }

    /// The applied events of one task.
    pub fn events_of(&self, arn: &str) -> Vec<Value> {
        self.with(|st| {
            st.events
                .iter()
                .filter(|e| e["taskArn"] == arn)
                .cloned()
                .collect()
        })
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.set_down(true);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn respond(s: &mut impl Write, code: u16, body: &Value) {
    let text = body.to_string();
    let reason = if code == 200 { "OK" } else { "Error" };
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = s.flush();
}

fn serve(
    conn: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    state: Arc<(Mutex<State>, Condvar)>,
    down: Arc<AtomicBool>,
) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let Ok(tls) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(tls, conn);
    let mut rd = BufReader::new(&mut s);
    let mut request_line = String::new();
    if rd.read_line(&mut request_line).is_err() {
        return;
    }
    let mut len = 0usize;
    let mut auth = String::new();
    loop {
        let mut l = String::new();
        if rd.read_line(&mut l).is_err() || l == "\r\n" || l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            auth = l["authorization:".len()..].trim().to_string();
        }
    }
    let mut body = vec![0u8; len];
    if rd.read_exact(&mut body).is_err() {
        return;
    }
    drop(rd);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authed = auth == format!("Bearer {CREDENTIAL}");
    let denied = json!({"__type": "AccessDeniedException", "message": "bad credential"});
    match (method, path) {
        ("POST", "/v1/agent/register") => {
            if body["joinToken"] != JOIN_TOKEN {
                return respond(&mut s, 403, &denied);
            }
            state.0.lock().unwrap().registrations.push(body);
            state.1.notify_all();
            respond(
                &mut s,
                200,
                &json!({"containerInstanceArn": INSTANCE_ARN, "credential": CREDENTIAL}),
            )
        }
        ("GET", "/v1/agent/desired") if authed => {
            let q = |k: &str| -> u64 {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let (held, wait) = (q("version"), q("wait").min(60));
            let deadline = Instant::now() + Duration::from_secs(wait);
            let mut st = state.0.lock().unwrap();
            st.polls += 1;
            while st.version <= held && Instant::now() < deadline {
                if down.load(Ordering::SeqCst) {
                    return;
                }
                st = state
                    .1
                    .wait_timeout(st, Duration::from_millis(200))
                    .unwrap()
                    .0;
            }
            if down.load(Ordering::SeqCst) {
                return;
            }
            let body =
                json!({"version": st.version, "tasks": st.tasks, "appliedSeq": st.applied_seq});
            drop(st);
            respond(&mut s, 200, &body)
        }
        ("POST", "/v1/agent/events") if authed => {
            let mut st = state.0.lock().unwrap();
            for e in body["events"].as_array().cloned().unwrap_or_default() {
                let seq = e["seq"].as_u64().unwrap_or(0);
                st.received.push(seq);
                if seq > st.applied_seq {
                    st.applied_seq = seq;
                    st.events.push(e);
                }
            }
            let applied = st.applied_seq;
            drop(st);
            state.1.notify_all();
            respond(&mut s, 200, &json!({"appliedSeq": applied}))
        }
        ("POST", "/v1/agent/utilization") if authed => {
            state.0.lock().unwrap().utilization.push(body);
            state.1.notify_all();
            respond(&mut s, 200, &json!({}))
        }
        _ if !authed => respond(&mut s, 401, &denied),
        _ => respond(
            &mut s,
            404,
            &json!({"__type": "ClientException", "message": "no such endpoint"}),
        ),
    }
}
