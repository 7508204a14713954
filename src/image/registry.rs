//! A small client of the OCI distribution API: manifests and blobs, with the registry
//! authentication of `auth.rs` (anonymous, Basic, Bearer token challenge) and the credentials
//! of `credentials.rs` (files, helpers, ECR). Plain HTTP for loopback registries and
//! configured exceptions only.
//!
//! reqwest is built without gzip/zstd decoding: digests cover the raw bytes, so the body must
//! arrive exactly as the registry stored it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::auth::{Attempt, Authenticator, Target};
pub use super::auth::PullAuth;
use super::credentials::{Credential, Credentials};
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
    /// The registry or its token server refused the credentials (or their absence).
    #[error("{what}: {msg}")]
    Denied { what: String, msg: String },
    /// Credentials could not be had: a bad credentials file, a failing helper, ECR.
    #[error("registry credentials: {msg}")]
    Credentials { msg: String },
    #[error("{what}: {msg}")]
    Protocol { what: String, msg: String },
}

impl RegistryError {
    /// An authentication failure (ECS: CannotPullContainerAuthError) rather than a missing
    /// image or an unreachable registry.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            RegistryError::Auth { .. }
                | RegistryError::Denied { .. }
                | RegistryError::Credentials { .. }
        )
    }
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

/// Cheap to clone: clones share the HTTP client, the credentials and every cache (tokens,
/// schemes, helper answers, ECR tokens); `with_pull_auth` makes one that pulls with other
/// credentials.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// Registries (host[:port]) spoken to in plain HTTP besides the loopback ones.
    insecure: Vec<String>,
    auth: Arc<Authenticator>,
    /// Whose credentials this client's requests use.
    pull_auth: PullAuth,
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
    /// A client with the credentials of `Credentials::from_environment()` (skiff's credentials
    /// file, Docker's config.json and helpers, AWS keys for ECR). When they cannot be loaded (a
    /// credentials file readable by others, bad JSON), anonymous requests still work and any
    /// registry that asks for credentials gets that error.
    pub fn new(insecure: Vec<String>) -> Result<RegistryClient, RegistryError> {
        let auth = match Credentials::from_environment() {
            Ok(c) => Authenticator::new(c),
            Err(e) => Authenticator::failed(e.0),
        };
        Self::build(insecure, auth)
    }

    /// A client with these credentials.
    pub fn with_credentials(
        insecure: Vec<String>,
        creds: Credentials,
    ) -> Result<RegistryClient, RegistryError> {
        Self::build(insecure, Authenticator::new(creds))
    }

    fn build(insecure: Vec<String>, auth: Authenticator) -> Result<RegistryClient, RegistryError> {
        // reqwest's default redirect policy (at most 10) drops Authorization, Cookie and
        // Proxy-Authorization when a redirect leaves the host (or port): blob downloads that
        // go to object storage never see registry credentials (tested below).
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
            auth: Arc::new(auth),
            pull_auth: PullAuth::Configured,
        })
    }

    /// The same client (shared caches) pulling with `auth`: e.g. `PullAuth::Named(p)` for a
    /// container whose `repositoryCredentials.credentialsParameter` is `p`.
    pub fn with_pull_auth(&self, auth: PullAuth) -> RegistryClient {
        RegistryClient {
            pull_auth: auth,
            ..self.clone()
        }
    }

    /// The credentials the client was made with.
    pub fn credentials(&self) -> &Credentials {
        self.auth.credentials()
    }

    /// Named credentials (for `repositoryCredentials`), as `PullAuth::Named` would find them.
    pub fn named_credential(&self, name: &str) -> Option<Credential> {
        self.auth.credentials().named(name)
    }

    /// Plain HTTP only for loopback registries, as Docker does, and configured exceptions.
    fn plain_http(&self, r: &Reference) -> bool {
        r.is_loopback() || self.insecure.contains(&r.registry)
    }

    fn base(&self, r: &Reference) -> String {
        let scheme = if self.plain_http(r) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", r.api_host(), r.repository)
    }

    async fn get(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(
                ACCEPT,
                a.parse().map_err(|_| RegistryError::Protocol {
                    what: what.to_string(),
                    msg: format!("bad Accept value {a:?}"),
                })?,
            );
        }
        self.get_with_headers(r, url, headers, what).await
    }

    /// GET with extra headers (Accept, Range, ...), authenticated as the registry asks: retries
    /// after a 401 as `auth.rs` decides, fails on any other non-success status (a 206 is a
    /// success).
    pub async fn get_with_headers(
        &self,
        r: &Reference,
        url: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let target = Target {
            registry: &r.registry,
            api_host: r.api_host(),
            repository: &r.repository,
            plain_http: self.plain_http(r),
            what,
        };
        let mut attempt = Attempt::default();
        loop {
            let authz = self
                .auth
                .authorization(&self.http, &target, &self.pull_auth, &mut attempt)
                .await?;
            let mut req = self.http.get(url).headers(headers.clone());
            if let Some(a) = authz {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| RegistryError::Unreachable {
                host: r.api_host().to_string(),
                msg: root_cause(&e),
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                let challenge = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.auth
                    .unauthorized(
                        &self.http,
                        &target,
                        &self.pull_auth,
                        &challenge,
                        &mut attempt,
                    )
                    .await?;
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

/// Parses `Bearer realm="...",service="...",scope="..."` (the Bearer one of several).
pub fn parse_bearer_challenge(h: &str) -> Option<HashMap<String, String>> {
    super::auth::parse_challenges(h)
        .into_iter()
        .find(|(scheme, _)| scheme == "bearer")
        .map(|(_, params)| params)
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
