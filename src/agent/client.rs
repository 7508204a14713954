//! The control plane as the agent sees it: four endpoints of `proto`, over HTTPS that trusts
//! only the server's CA, and the instance identity the first registration gave.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::config::Config;
use super::AgentError;
use crate::proto::{
    DesiredResponse, ErrorBody, EventsRequest, EventsResponse, RegisterRequest, RegisterResponse,
    TaskEvent, UtilizationRequest, DESIRED_PATH, EVENTS_PATH, REGISTER_PATH, UTILIZATION_PATH,
};

/// The instance's identity, kept root-only in DATA/agent/identity.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub container_instance_arn: String,
    pub credential: String,
    pub server: String,
    pub cluster: String,
}

pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("identity.json")
}

pub fn load_identity(data_dir: &Path) -> Result<Option<Identity>, AgentError> {
    let p = identity_path(data_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| AgentError::Corrupt {
                file: p,
                msg: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::Io {
            what: format!("read {}", p.display()),
            source: e,
        }),
    }
}

pub fn save_identity(data_dir: &Path, id: &Identity) -> Result<(), AgentError> {
    let p = identity_path(data_dir);
    super::outbox::write_durably(
        &p,
        &serde_json::to_vec_pretty(id).expect("identity serializes"),
        0o600,
    )
    .map_err(|e| AgentError::Io {
        what: format!("write {}", p.display()),
        source: e,
    })
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    credential: Option<String>,
}

impl Client {
    pub fn new(cfg: &Config) -> Result<Client, AgentError> {
        let tls = super::tls::client_config(cfg.ca_file.as_deref(), cfg.ca_fingerprint)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("skiff-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        Ok(Client {
            http,
            base: cfg.server.clone(),
            credential: None,
        })
    }

    pub fn set_credential(&mut self, c: String) {
        self.credential = Some(c);
    }

    async fn call<R: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
        timeout: Duration,
    ) -> Result<R, AgentError> {
        let req = match &self.credential {
            Some(c) => req.bearer_auth(c),
            None => req,
        };
        let unreachable = |e: reqwest::Error| AgentError::Unreachable {
            path: path.to_string(),
            // The TLS refusal is in the source chain: show it all.
            msg: error_chain(&e),
        };
        let resp = req.timeout(timeout).send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(AgentError::Refused {
                path: path.to_string(),
                status: status.as_u16(),
                kind: body.as_ref().map(|b| b.kind.clone()).unwrap_or_default(),
                message: body
                    .map(|b| b.message)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| AgentError::Unreachable {
            path: path.to_string(),
            msg: format!("bad answer: {e}"),
        })
    }

    fn post<T: Serialize>(&self, path: &str, body: &T) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).expect("request serializes"))
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, AgentError> {
        self.call(
            self.post(REGISTER_PATH, req),
            REGISTER_PATH,
            Duration::from_secs(30),
        )
        .await
    }

    pub async fn desired(
        &self,
        version: u64,
        wait: Duration,
    ) -> Result<DesiredResponse, AgentError> {
        let req = self.http.get(format!(
            "{}{DESIRED_PATH}?version={version}&wait={}",
            self.base,
            wait.as_secs()
        ));
        self.call(req, DESIRED_PATH, wait + Duration::from_secs(15))
            .await
    }

    pub async fn events(&self, events: Vec<TaskEvent>) -> Result<EventsResponse, AgentError> {
        self.call(
            self.post(EVENTS_PATH, &EventsRequest { events }),
            EVENTS_PATH,
            Duration::from_secs(30),
        )
        .await
    }

    pub async fn utilization(&self, req: &UtilizationRequest) -> Result<(), AgentError> {
        self.call::<serde_json::Value>(
            self.post(UTILIZATION_PATH, req),
            UTILIZATION_PATH,
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Exponential backoff with full jitter, capped.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

const BACKOFF_START: Duration = Duration::from_millis(500);

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: BACKOFF_START.min(max),
            max,
        }
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START.min(self.max);
    }

    /// The next wait: uniformly between half and all of the current step, which doubles.
    pub fn step(&mut self) -> Duration {
        let cur = self.next;
        self.next = (self.next * 2).min(self.max);
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).expect("getrandom");
        let r = u64::from_le_bytes(b) as f64 / u64::MAX as f64;
        cur.mul_f64(0.5 + 0.5 * r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(4));
        let steps: Vec<Duration> = (0..8).map(|_| b.step()).collect();
        assert!(steps[0] >= Duration::from_millis(250) && steps[0] <= BACKOFF_START);
        assert!(steps.iter().all(|s| *s <= Duration::from_secs(4)));
        assert!(steps[7] >= Duration::from_secs(2));
        b.reset();
        assert!(b.step() <= BACKOFF_START);
    }
}
