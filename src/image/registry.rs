//! A small client of the OCI distribution API: manifests and blobs, anonymous access with
//! the Bearer token challenge. Plain HTTP for loopback registries only.
//!
//! reqwest is built without gzip/zstd decoding: digests cover the raw bytes, so the body must
//! arrive exactly as the registry stored it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::digest::Digest;
use super::reference::Reference;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {host}: {msg}")]
    Unreachable { host: String, msg: String },
    #[error("{what}: {msg} (HTTP {status})")]
    Status {
        what: String,
        status: u16,
        msg: String,
    },
    #[error("{what}: authentication required by the registry ({challenge})")]
    Auth { what: String, challenge: String },
    #[error("{what}: {msg}")]
    Protocol { what: String, msg: String },
}

/// The registry operations the image store needs; a trait so that tests and other transports
/// can stand in.
pub trait Registry: Send + Sync {
    /// Fetches a manifest by tag or digest: (body, media type from the header, body digest).
    fn manifest(
        &self,
        r: &Reference,
        reference: &str,
    ) -> impl std::future::Future<Output = Result<(Vec<u8>, String, Digest), RegistryError>> + Send;
    /// Opens a blob for streaming.
    fn blob(
        &self,
        r: &Reference,
        d: &Digest,
    ) -> impl std::future::Future<Output = Result<Response, RegistryError>> + Send;
    /// Opens a blob from byte `offset` on, to resume a broken download. A registry may answer
    /// with the whole blob (200 rather than 206): the caller skips what it has. This default
    /// asks for the whole blob.
    fn blob_from(
        &self,
        r: &Reference,
        d: &Digest,
        _offset: u64,
    ) -> impl std::future::Future<Output = Result<Response, RegistryError>> + Send {
        self.blob(r, d)
    }
}

pub struct RegistryClient {
    http: reqwest::Client,
    /// Registries (host[:port]) spoken to in plain HTTP besides the loopback ones.
    insecure: Vec<String>,
    /// Bearer tokens by (api host, repository).
    tokens: Mutex<HashMap<(String, String), String>>,
}

/// The innermost cause of an error: "connection refused" rather than reqwest's wrapping.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl RegistryClient {
    pub fn new(insecure: Vec<String>) -> Result<RegistryClient, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| RegistryError::Protocol {
                what: "http client".into(),
                msg: root_cause(&e),
            })?;
        Ok(RegistryClient {
            http,
            insecure,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Plain HTTP only for loopback registries, as Docker does, and configured exceptions.
    fn plain_http(&self, r: &Reference) -> bool {
        r.is_loopback() || self.insecure.contains(&r.registry)
    }

    fn base(&self, r: &Reference) -> String {
        let scheme = if self.plain_http(r) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", r.api_host(), r.repository)
    }

    fn token_key(r: &Reference) -> (String, String) {
        (r.api_host().to_string(), r.repository.clone())
    }

    async fn get(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut fetched_token = false;
        loop {
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let token = self
                .tokens
                .lock()
                .unwrap()
                .get(&Self::token_key(r))
                .cloned();
            if let Some(t) = &token {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let resp = req.send().await.map_err(|e| RegistryError::Unreachable {
                host: r.api_host().to_string(),
                msg: root_cause(&e),
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED && !fetched_token {
                let challenge = header_str(resp.headers(), WWW_AUTHENTICATE);
                let Some(params) = parse_bearer_challenge(&challenge) else {
                    return Err(RegistryError::Auth {
                        what: what.to_string(),
                        challenge,
                    });
                };
                let t = self.fetch_token(r, &params, what).await?;
                self.tokens.lock().unwrap().insert(Self::token_key(r), t);
                fetched_token = true;
                continue;
            }
            if !resp.status().is_success() {
                let status = resp.status().as_u16();
                let body = resp.bytes().await.unwrap_or_default();
                return Err(RegistryError::Status {
                    what: what.to_string(),
                    status,
                    msg: registry_error_message(&body, status),
                });
            }
            return Ok(resp);
        }
    }

    async fn fetch_token(
        &self,
        r: &Reference,
        params: &HashMap<String, String>,
        what: &str,
    ) -> Result<String, RegistryError> {
        let realm = params.get("realm").ok_or_else(|| RegistryError::Auth {
            what: what.to_string(),
            challenge: "Bearer challenge without realm".into(),
        })?;
        let realm_url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Protocol {
            what: what.to_string(),
            msg: format!("bad token realm {realm:?}: {e}"),
        })?;
        if realm_url.scheme() != "https" && !self.plain_http(r) {
            return Err(RegistryError::Protocol {
                what: what.to_string(),
                msg: format!("refusing token realm over plain HTTP: {realm}"),
            });
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", r.repository));
        let mut q: Vec<(&str, &str)> = vec![("scope", &scope)];
        if let Some(s) = params.get("service") {
            q.push(("service", s));
        }
        let resp = self
            .http
            .get(realm_url)
            .query(&q)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                host: realm.to_string(),
                msg: root_cause(&e),
            })?;
        let status = resp.status();
        let body = read_capped(resp, 1 << 20, what).await?;
        if !status.is_success() {
            return Err(RegistryError::Auth {
                what: what.to_string(),
                challenge: format!("token endpoint answered HTTP {}", status.as_u16()),
            });
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Tok = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            what: what.to_string(),
            msg: format!("bad token response: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                what: what.to_string(),
                msg: "token response without a token".into(),
            })
    }
}

impl Registry for RegistryClient {
    async fn manifest(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!("manifest {reference}");
        let url = format!("{}/manifests/{reference}", self.base(r));
        let resp = self
            .get(r, &url, Some(super::manifest::ACCEPT), &what)
            .await?;
        let ct = header_str(resp.headers(), CONTENT_TYPE);
        let ct = ct.split(';').next().unwrap_or("").trim().to_string();
        let body = read_capped(resp, super::manifest::MAX_MANIFEST_BYTES, &what).await?;
        let digest = Digest::of(&body);
        Ok((body, ct, digest))
    }

    async fn blob(&self, r: &Reference, d: &Digest) -> Result<Response, RegistryError> {
        let url = format!("{}/blobs/{d}", self.base(r));
        self.get(r, &url, None, &format!("blob {d}")).await
    }
}

/// Reads a whole body, failing once it passes `cap` bytes.
pub async fn read_capped(resp: Response, cap: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Protocol {
            what: what.to_string(),
            msg: format!("reading body: {}", root_cause(&e)),
        })?;
        if out.len() as u64 + chunk.len() as u64 > cap {
            return Err(RegistryError::Protocol {
                what: what.to_string(),
                msg: format!("body larger than {cap} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn header_str(h: &HeaderMap, name: reqwest::header::HeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}` → "manifest unknown".
fn registry_error_message(body: &[u8], status: u16) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        errors: Vec<E>,
    }
    if let Ok(es) = serde_json::from_slice::<Es>(body) {
        let msgs: Vec<String> = es
            .errors
            .into_iter()
            .filter_map(|e| e.message.filter(|m| !m.is_empty()).or(e.code))
            .collect();
        if !msgs.is_empty() {
            return msgs.join("; ");
        }
    }
    match status {
        404 => "not found".into(),
        401 | 403 => "access denied".into(),
        _ => "request failed".into(),
    }
}

/// Parses `Bearer realm="...",service="...",scope="..."`.
pub fn parse_bearer_challenge(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.trim();
    let (scheme, params) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = HashMap::new();
    let mut s = params.trim();
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, rest) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].trim().to_string(), &v[end..])
        };
        out.insert(k, val);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let p = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn plain_http_only_for_loopback_and_configured_registries() {
        let c = RegistryClient::new(vec!["10.0.2.2:51670".into()]).unwrap();
        let r = |s: &str| Reference::parse(s).unwrap();
        assert_eq!(
            c.base(&r("127.0.0.1:51670/busybox")),
            "http://127.0.0.1:51670/v2/busybox"
        );
        assert_eq!(
            c.base(&r("10.0.2.2:51670/busybox")),
            "http://10.0.2.2:51670/v2/busybox"
        );
        assert_eq!(
            c.base(&r("10.0.2.2:5000/busybox")),
            "https://10.0.2.2:5000/v2/busybox"
        );
        assert_eq!(
            c.base(&r("busybox")),
            "https://registry-1.docker.io/v2/library/busybox"
        );
    }

    #[test]
    fn error_bodies() {
        let b =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(registry_error_message(b, 404), "manifest unknown");
        assert_eq!(registry_error_message(b"<html>", 404), "not found");
    }
}
