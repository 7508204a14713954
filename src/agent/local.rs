//! The agent's local socket, DATA/agent.sock (root-only): while the agent runs, the local
//! task commands (`skiff ps`, `logs`, `stop`, `inspect`, `stats`) go through it, so that what
//! a person does to a managed task on the host (a `skiff stop`) reaches the agent at once and
//! is reported with its reason. The agent runs the command as a child of its own binary
//! against its data directory and streams the output back; without a listening agent the
//! CLI works daemonless as before.
//!
//! Wire: the client sends one JSON line `{"args": [...], "cwd": "..."}`; the agent answers
//! with lines `{"fd": 1|2, "data": "<base64>"}` and a last `{"exit": <code>}`.

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::AgentError;
use crate::cgroup::Placement;

pub const SOCKET_FILE: &str = "agent.sock";
/// Set in the commands the agent runs for the socket, so that they do not ask it again.
pub const PROXIED_ENV: &str = "SKIFF_AGENT_PROXIED";
/// The commands the socket serves.
pub const COMMANDS: [&str; 5] = ["ps", "logs", "stop", "inspect", "stats"];

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    args: Vec<String>,
    cwd: PathBuf,
    /// The client's SKIFF_LOG: the command logs as the person asked, not as the agent does.
    #[serde(default)]
    log: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Frame {
    Output { fd: u8, data: String },
    Exit { exit: i32 },
}

pub struct Server {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub placement: Placement,
    /// Told after each command, so that a local stop is reported at once.
    pub changed: Arc<tokio::sync::Notify>,
}

/// Binds DATA/agent.sock, mode 0600 (a stale socket of a dead agent is replaced).
pub fn bind(data_dir: &Path) -> Result<UnixListener, AgentError> {
    let p = data_dir.join(SOCKET_FILE);
    let io = |what: String| move |e| AgentError::Io { what, source: e };
    if std::os::unix::net::UnixStream::connect(&p).is_ok() {
        return Err(AgentError::Config(format!(
            "{}: another agent is running on this data directory",
            p.display()
        )));
    }
    let _ = std::fs::remove_file(&p);
    // Created under a umask that leaves no window in which others could connect.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(&p);
    unsafe { libc::umask(old) };
    let l = l.map_err(io(format!("bind {}", p.display())))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", p.display())))?;
    Ok(l)
}

impl Server {
    pub async fn serve(self: Arc<Self>, l: UnixListener) {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.handle(s).await {
                    tracing::debug!(error = %e, "local socket client");
                }
                me.changed.notify_one();
            });
        }
    }

    async fn handle(&self, s: UnixStream) -> std::io::Result<()> {
        let peer = s.peer_cred()?;
        if peer.uid() != 0 && peer.uid() != unsafe { libc::geteuid() } {
            return Ok(());
        }
        let (rd, mut wr) = s.into_split();
        let mut lines = BufReader::new(rd).lines();
        let Some(line) = lines.next_line().await? else {
            return Ok(());
        };
        let send = |f: &Frame| {
            let mut v = serde_json::to_vec(f).expect("frame serializes");
            v.push(b'\n');
            v
        };
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("skiff agent: bad request: {e}\n");
                wr.write_all(&send(&Frame::Output {
                    fd: 2,
                    data: base64::engine::general_purpose::STANDARD.encode(msg),
                }))
                .await?;
                return wr.write_all(&send(&Frame::Exit { exit: 125 })).await;
            }
        };
        if !req.args.iter().any(|a| COMMANDS.contains(&a.as_str())) {
            let msg = format!("skiff agent: the local socket serves only {COMMANDS:?}\n");
            wr.write_all(&send(&Frame::Output {
                fd: 2,
                data: base64::engine::general_purpose::STANDARD.encode(msg),
            }))
            .await?;
            return wr.write_all(&send(&Frame::Exit { exit: 125 })).await;
        }
        tracing::info!(args = ?req.args, "local command");
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(&req.args)
            .current_dir(&req.cwd)
            .env(PROXIED_ENV, "1")
            .env("SKIFF_STATE_DIR", &self.data_dir)
            .env("SKIFF_CGROUP_PARENT", &self.placement.parent)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(r) = &self.placement.root {
            cmd.env("SKIFF_CGROUP_ROOT", r);
        }
        match &req.log {
            Some(l) => cmd.env("SKIFF_LOG", l),
            None => cmd.env_remove("SKIFF_LOG"),
        };
        let mut child = cmd.spawn()?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (mut b1, mut b2) = (vec![0u8; 16384], vec![0u8; 16384]);
        let (mut out_open, mut err_open) = (true, true);
        // Also watch the client: `logs -f` ends when it goes away.
        let mut gone = lines;
        while out_open || err_open {
            let (fd, n) = tokio::select! {
                r = out.read(&mut b1), if out_open => (1u8, r?),
                r = err.read(&mut b2), if err_open => (2u8, r?),
                _ = gone.next_line() => {
                    let _ = child.kill().await;
                    return Ok(());
                }
            };
            if n == 0 {
                if fd == 1 {
                    out_open = false;
                } else {
                    err_open = false;
                }
                continue;
            }
            let data = if fd == 1 { &b1[..n] } else { &b2[..n] };
            wr.write_all(&send(&Frame::Output {
                fd,
                data: base64::engine::general_purpose::STANDARD.encode(data),
            }))
            .await?;
        }
        let st = child.wait().await?;
        let code = st.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0)
        });
        wr.write_all(&send(&Frame::Exit { exit: code })).await
    }
}

/// For the CLI: runs this command through the agent of `state_dir` when one listens there.
/// None: no agent (the caller goes on daemonless).
pub fn forward(state_dir: &Path) -> Option<i32> {
    if std::env::var_os(PROXIED_ENV).is_some() {
        return None;
    }
    let p = state_dir.join(SOCKET_FILE);
    let s = std::os::unix::net::UnixStream::connect(&p).ok()?;
    let req = Request {
        args: std::env::args().skip(1).collect(),
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        log: std::env::var("SKIFF_LOG").ok(),
    };
    let mut w = &s;
    let mut line = serde_json::to_vec(&req).expect("request serializes");
    line.push(b'\n');
    if w.write_all(&line).is_err() {
        return None;
    }
    let rd = std::io::BufReader::new(&s);
    for l in rd.lines() {
        let Ok(l) = l else { break };
        match serde_json::from_str::<Frame>(&l) {
            Ok(Frame::Output { fd, data }) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap_or_default();
                let _ = if fd == 1 {
                    std::io::stdout().write_all(&bytes)
                } else {
                    std::io::stderr().write_all(&bytes)
                };
                let _ = std::io::stdout().flush();
            }
            Ok(Frame::Exit { exit }) => return Some(exit),
            Err(_) => break,
        }
    }
    eprintln!(
        "skiff: the agent's socket {} closed before the command ended",
        p.display()
    );
    // 125: an error of skiff itself, as the CLI exits with.
    Some(125)
}
