//! A small client of the OCI distribution API: manifests and blobs, with the registry
//! authentication of `auth.rs` (anonymous, Basic, Bearer token challenge) and the credentials
//! of `credentials.rs` (files, helpers, ECR). Plain HTTP for loopback registries and
//! configured exceptions only.
//!
//! reqwest is built without gzip/zstd decoding: digests cover the raw bytes, so the body must
//! arrive exactly as the registry stored it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

pub use super::auth::PullAuth;
use super::auth::{Attempt, Authenticator, Target};
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
    // For the task engine's error names; not called there yet.
    #[allow(dead_code)]
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
        match Credentials::from_environment() {
            Ok(c) => Self::with_credentials(insecure, c),
            Err(e) => Self::build(insecure, Authenticator::failed(e.0)),
        }
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

    /// Named credentials (for `repositoryCredentials`), as `PullAuth::Named` would find them:
    /// lets the task engine check a task's references before it pulls anything.
    #[allow(dead_code)]
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

    async fn blob_from(
        &self,
        r: &Reference,
        d: &Digest,
        offset: u64,
    ) -> Result<Response, RegistryError> {
        if offset == 0 {
            return self.blob(r, d).await;
        }
        let url = format!("{}/blobs/{d}", self.base(r));
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::RANGE,
            format!("bytes={offset}-")
                .parse()
                .expect("range header is ASCII"),
        );
        self.get_with_headers(r, &url, headers, &format!("blob {d}"))
            .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let parse_bearer_challenge = |h: &str| {
            super::super::auth::parse_challenges(h)
                .into_iter()
                .find(|(scheme, _)| scheme == "bearer")
                .map(|(_, params)| params)
        };
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

    /// A tiny HTTP/1.1 server on 127.0.0.1 for the auth tests: one thread per connection,
    /// `Connection: close`, every request logged.
    mod fake {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::net::TcpListener;
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Debug)]
        pub struct Req {
            pub method: String,
            pub path: String,
            pub headers: Vec<(String, String)>,
            pub body: Vec<u8>,
        }

        impl Req {
            pub fn header(&self, name: &str) -> Option<&str> {
                self.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            }
        }

        pub struct Resp {
            pub status: u16,
            pub headers: Vec<(String, String)>,
            pub body: Vec<u8>,
        }

        pub fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Resp {
            Resp {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.as_bytes().to_vec(),
            }
        }

        pub struct Server {
            pub port: u16,
            log: Arc<Mutex<Vec<Req>>>,
        }

        impl Server {
            pub fn requests(&self) -> Vec<Req> {
                self.log.lock().unwrap().clone()
            }
            pub fn count(&self, path_prefix: &str) -> usize {
                self.requests()
                    .iter()
                    .filter(|r| r.path.starts_with(path_prefix))
                    .count()
            }
        }

        pub fn serve(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let log = Arc::new(Mutex::new(Vec::new()));
            let handler = Arc::new(handler);
            let log2 = log.clone();
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let (handler, log) = (handler.clone(), log2.clone());
                    std::thread::spawn(move || {
                        let mut r = BufReader::new(conn.try_clone().unwrap());
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_string();
                        let path = parts.next().unwrap_or("").to_string();
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                break;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.push((k.trim().to_string(), v.trim().to_string()));
                            }
                        }
                        let len = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; len];
                        let _ = r.read_exact(&mut body);
                        let req = Req {
                            method,
                            path,
                            headers,
                            body,
                        };
                        let resp = handler(&req);
                        log.lock().unwrap().push(req);
                        let mut out = format!(
                            "HTTP/1.1 {} Fake\r\nContent-Length: {}\r\nConnection: close\r\n",
                            resp.status,
                            resp.body.len()
                        );
                        for (k, v) in &resp.headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        let _ = conn.write_all(out.as_bytes());
                        let _ = conn.write_all(&resp.body);
                    });
                }
            });
            Server { port, log }
        }
    }

    use fake::{resp, serve, Req};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

    fn ok_manifest() -> fake::Resp {
        resp(200, &[("Content-Type", MANIFEST_TYPE)], "{}")
    }

    fn tmp_file(name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let mut b = [0u8; 6];
        getrandom::getrandom(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!("skiff-auth-{}", hex::encode(b)));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// A client whose credentials come from a skiff credentials file with `body`.
    fn client_with(body: &str) -> RegistryClient {
        let p = tmp_file("credentials.json", body);
        let creds = Credentials::load(&super::super::credentials::CredentialsConfig {
            skiff_file: Some(p.clone()),
            ..Default::default()
        })
        .unwrap();
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
        RegistryClient::with_credentials(vec![], creds).unwrap()
    }

    fn reference(port: u16) -> Reference {
        Reference::parse(&format!("127.0.0.1:{port}/busybox:latest")).unwrap()
    }

    fn basic_of(u: &str, p: &str) -> String {
        super::super::auth::basic_header(u, p)
    }

    #[tokio::test]
    async fn basic_credentials_go_on_every_request() {
        let want = basic_of("alice", "pw");
        let reg = serve(move |r: &Req| {
            if r.header("authorization") != Some(want.as_str()) {
                return resp(401, &[("WWW-Authenticate", r#"Basic realm="test""#)], "");
            }
            ok_manifest()
        });
        let c = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"username": "alice", "password": "pw"}}}}}}"#,
            reg.port
        ));
        let r = reference(reg.port);
        c.manifest(&r, "latest").await.unwrap();
        c.manifest(&r, "latest").await.unwrap();
        c.blob(&r, &Digest::of(b"x")).await.unwrap();
        // Configured credentials go along from the first request: no 401 round trips.
        let reqs = reg.requests();
        assert_eq!(reqs.len(), 3);
        assert!(reqs.iter().all(|q| q.header("authorization").is_some()));

        // A wrong password: one clear error, no loop.
        let bad = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"username": "alice", "password": "wrong"}}}}}}"#,
            reg.port
        ));
        let e = bad.manifest(&r, "latest").await.unwrap_err();
        let msg = e.to_string();
        assert!(e.is_auth(), "{msg}");
        assert!(
            msg.contains(&format!(
                "registry 127.0.0.1:{} rejected the credentials of user \"alice\"",
                reg.port
            )) && msg.contains("skiff credentials"),
            "{msg}"
        );
        assert_eq!(reg.requests().len(), 4);

        // Nothing configured: the registry's Basic challenge is answered with a clear error.
        let anon = RegistryClient::with_credentials(vec![], Credentials::none()).unwrap();
        let e = anon.manifest(&r, "latest").await.unwrap_err();
        assert!(
            e.to_string()
                .contains("requires authentication and no credentials are configured"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn basic_challenge_switches_identity_token_users_off() {
        // An identity token is for token servers; a Basic registry cannot use it.
        let reg = serve(|_: &Req| resp(401, &[("WWW-Authenticate", r#"Basic realm="t""#)], ""));
        let c = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"identity_token": "rt"}}}}}}"#,
            reg.port
        ));
        let e = c
            .manifest(&reference(reg.port), "latest")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("identity token"), "{e}");
        assert_eq!(reg.requests().len(), 1);
    }

    /// A token server issuing t1, t2, ... valid `lifetime` seconds, wanting `creds` (Basic).
    fn token_server(
        lifetime: u64,
        creds: Option<(&str, &str)>,
    ) -> (fake::Server, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let want = creds.map(|(u, p)| basic_of(u, p));
        let srv = serve(move |r: &Req| {
            if let Some(w) = &want {
                if r.header("authorization") != Some(w.as_str()) {
                    return resp(401, &[], r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
                }
            }
            let i = n2.fetch_add(1, Ordering::SeqCst) + 1;
            resp(
                200,
                &[("Content-Type", "application/json")],
                &format!(r#"{{"token": "t{i}", "expires_in": {lifetime}}}"#),
            )
        });
        (srv, n)
    }

    /// A registry that wants a Bearer token accepted by `ok` and challenges otherwise.
    fn bearer_registry(
        realm_port: u16,
        ok: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> fake::Server {
        serve(move |r: &Req| {
            let challenge = |err: &str| {
                format!(
                    r#"Bearer realm="http://127.0.0.1:{realm_port}/token",service="fake",scope="repository:busybox:pull"{err}"#
                )
            };
            match r
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
            {
                Some(t) if ok(t) => ok_manifest(),
                Some(_) => resp(
                    401,
                    &[("WWW-Authenticate", &challenge(r#",error="invalid_token""#))],
                    "",
                ),
                None => resp(401, &[("WWW-Authenticate", &challenge(""))], ""),
            }
        })
    }

    #[tokio::test]
    async fn bearer_tokens_are_cached_and_renewed_when_they_expire() {
        let (ts, issued) = token_server(1, Some(("alice", "pw")));
        let reg = bearer_registry(ts.port, |t| t.starts_with('t'));
        let c = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"username": "alice", "password": "pw"}}}}}}"#,
            reg.port
        ));
        let r = reference(reg.port);
        c.manifest(&r, "latest").await.unwrap();
        c.blob(&r, &Digest::of(b"x")).await.unwrap();
        assert_eq!(
            issued.load(Ordering::SeqCst),
            1,
            "one token for both requests"
        );
        // The token server got the Basic credentials and the challenge's service and scope.
        let tr = &ts.requests()[0];
        assert_eq!(tr.method, "GET");
        assert!(
            tr.path.contains("service=fake")
                && tr.path.contains("scope=repository%3Abusybox%3Apull"),
            "{}",
            tr.path
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        c.manifest(&r, "latest").await.unwrap();
        assert_eq!(
            issued.load(Ordering::SeqCst),
            2,
            "a new token after expires_in"
        );
        // Renewed before the request: the registry saw no further anonymous or stale request.
        let reqs = reg.requests();
        let bearer: Vec<_> = reqs
            .iter()
            .filter_map(|q| q.header("authorization"))
            .collect();
        // 1: preemptive Basic (401 with the Bearer challenge), 2..4: t1, t1, t2.
        assert_eq!(reqs.len(), 4, "{bearer:?}");
        assert_eq!(&bearer[1..], ["Bearer t1", "Bearer t1", "Bearer t2"]);
    }

    #[tokio::test]
    async fn invalid_token_is_fetched_again_exactly_once() {
        // The first token is refused; later ones work.
        let (ts, issued) = token_server(300, None);
        let reg = bearer_registry(ts.port, |t| t != "t1");
        let c = RegistryClient::with_credentials(vec![], Credentials::none()).unwrap();
        let r = reference(reg.port);
        c.manifest(&r, "latest").await.unwrap();
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        // Anonymous token requests carry no Authorization.
        assert!(ts
            .requests()
            .iter()
            .all(|q| q.header("authorization").is_none()));

        // A registry that refuses every token: two fetches, then an error.
        let (ts, issued) = token_server(300, None);
        let reg = bearer_registry(ts.port, |_| false);
        let e = c
            .manifest(&reference(reg.port), "latest")
            .await
            .unwrap_err();
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        assert!(
            e.to_string().contains("rejected a freshly issued token"),
            "{e}"
        );
        assert!(e.is_auth());
    }

    #[tokio::test]
    async fn token_server_refusal_names_the_user() {
        let (ts, _) = token_server(300, Some(("alice", "pw")));
        let reg = bearer_registry(ts.port, |_| true);
        let c = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"username": "alice", "password": "nope"}}}}}}"#,
            reg.port
        ));
        let e = c
            .manifest(&reference(reg.port), "latest")
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("refused the credentials of user \"alice\""),
            "{e}"
        );
        let anon = RegistryClient::with_credentials(vec![], Credentials::none()).unwrap();
        let e = anon
            .manifest(&reference(reg.port), "latest")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("refused anonymous access"), "{e}");
    }

    #[tokio::test]
    async fn identity_tokens_are_exchanged_with_a_refresh_token_post() {
        let ts = serve(|r: &Req| {
            let form = String::from_utf8_lossy(&r.body).to_string();
            if r.method == "POST"
                && form.contains("grant_type=refresh_token")
                && form.contains("refresh_token=my-refresh")
                && form.contains("service=fake")
                && form.contains("scope=repository%3Abusybox%3Apull")
                && r.header("authorization").is_none()
            {
                resp(
                    200,
                    &[],
                    r#"{"access_token": "from-refresh", "expires_in": 300}"#,
                )
            } else {
                resp(400, &[], "")
            }
        });
        let reg = bearer_registry(ts.port, |t| t == "from-refresh");
        let c = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"identity_token": "my-refresh"}}}}}}"#,
            reg.port
        ));
        c.manifest(&reference(reg.port), "latest").await.unwrap();
        assert_eq!(ts.requests().len(), 1);
        // The identity token never goes to the registry itself.
        assert!(reg.requests().iter().all(|q| q
            .header("authorization")
            .is_none_or(|a| a == "Bearer from-refresh")));
    }

    #[tokio::test]
    async fn per_pull_credentials_override_the_configured_ones() {
        let (ts, _) = token_server(300, None);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let ts_port = ts.port;
        // Basic registry that accepts alice and bob.
        let reg = serve(move |r: &Req| {
            let a = r.header("authorization").unwrap_or("").to_string();
            seen2.lock().unwrap().push(a.clone());
            if a == basic_of("alice", "pw") || a == basic_of("bob", "pw2") {
                ok_manifest()
            } else {
                let _ = ts_port;
                resp(401, &[("WWW-Authenticate", r#"Basic realm="t""#)], "")
            }
        });
        let c = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"username": "alice", "password": "pw"}}}},
                "named": {{"arn:aws:secretsmanager:us-east-1:1:secret:bob": {{"username": "bob", "password": "pw2"}}}}}}"#,
            reg.port
        ));
        let r = reference(reg.port);
        c.manifest(&r, "latest").await.unwrap();
        c.with_pull_auth(PullAuth::Named(
            "arn:aws:secretsmanager:us-east-1:1:secret:bob".into(),
        ))
        .manifest(&r, "latest")
        .await
        .unwrap();
        c.with_pull_auth(PullAuth::With(Credential::Basic {
            username: "bob".into(),
            password: "pw2".into(),
        }))
        .blob(&r, &Digest::of(b"x"))
        .await
        .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                basic_of("alice", "pw"),
                basic_of("bob", "pw2"),
                basic_of("bob", "pw2")
            ]
        );
        let e = c
            .with_pull_auth(PullAuth::Named("missing".into()))
            .manifest(&r, "latest")
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("no named credentials \"missing\""),
            "{e}"
        );
        assert!(c
            .named_credential("arn:aws:secretsmanager:us-east-1:1:secret:bob")
            .is_some());
    }

    #[tokio::test]
    async fn authorization_stays_on_the_registry_host_across_redirects() {
        let storage = serve(|_: &Req| resp(200, &[], "blob"));
        let sport = storage.port;
        let reg = serve(move |r: &Req| {
            if r.header("authorization") != Some(basic_of("alice", "pw").as_str()) {
                return resp(401, &[("WWW-Authenticate", r#"Basic realm="t""#)], "");
            }
            if r.path.ends_with("/same-host") {
                return resp(200, &[], "blob");
            }
            if r.path.contains("sha256:2") {
                // Same host and port: credentials may follow.
                return resp(307, &[("Location", "/same-host")], "");
            }
            let to = format!("http://127.0.0.1:{sport}/storage?sig=x");
            resp(307, &[("Location", &to)], "")
        });
        let c = client_with(&format!(
            r#"{{"registries": {{"127.0.0.1:{}": {{"username": "alice", "password": "pw"}}}}}}"#,
            reg.port
        ));
        let r = reference(reg.port);
        let d1 = Digest::parse(&format!("sha256:1{}", "0".repeat(63))).unwrap();
        let body = c.blob(&r, &d1).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"blob");
        let sreqs = storage.requests();
        assert_eq!(sreqs.len(), 1);
        assert!(sreqs[0].header("authorization").is_none(), "{:?}", sreqs[0]);
        // The control: a redirect within the registry keeps the header.
        let d2 = Digest::parse(&format!("sha256:2{}", "0".repeat(63))).unwrap();
        c.blob(&r, &d2).await.unwrap();
        assert_eq!(reg.count("/same-host"), 1);
        assert!(reg
            .requests()
            .iter()
            .all(|q| q.header("authorization").is_some()));
    }

    #[tokio::test]
    async fn ecr_tokens_come_from_a_sigv4_signed_get_authorization_token() {
        use super::super::ecr::{self, AwsKeys};
        let keys = AwsKeys {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "secret/key+test".into(),
            session_token: Some("session-tok".into()),
        };
        let keys2 = keys.clone();
        let calls = Arc::new(AtomicUsize::new(0));
        let calls2 = calls.clone();
        let fake_ecr = serve(move |r: &Req| {
            calls2.fetch_add(1, Ordering::SeqCst);
            // Recompute the signature of the request as received, with our own signer.
            let authz = r.header("authorization").unwrap_or("");
            let signed_names: Vec<String> = authz
                .split("SignedHeaders=")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or("")
                .split(';')
                .map(str::to_string)
                .collect();
            let headers: Vec<(String, String)> = signed_names
                .iter()
                .map(|n| (n.clone(), r.header(n).unwrap_or("").to_string()))
                .collect();
            let amz_date = r.header("x-amz-date").unwrap_or("").to_string();
            let want = ecr::sigv4::sign(
                &ecr::sigv4::Request {
                    method: &r.method,
                    path: &r.path,
                    query: "",
                    headers: &headers,
                    payload: &r.body,
                },
                &keys2,
                "eu-west-1",
                "ecr",
                &amz_date,
            );
            let ok = authz == want.authorization
                && authz.starts_with(&format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDTEST/{}/eu-west-1/ecr/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=",
                    &amz_date[..8]
                ))
                && r.header("x-amz-target") == Some(ecr::TARGET)
                && r.header("content-type") == Some(ecr::JSON_1_1)
                && r.header("x-amz-security-token") == Some("session-tok")
                && r.body == b"{}";
            if !ok {
                return resp(
                    403,
                    &[],
                    r#"{"__type":"InvalidSignatureException","message":"no"}"#,
                );
            }
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 12 * 3600;
            resp(
                200,
                &[("Content-Type", ecr::JSON_1_1)],
                &format!(
                    r#"{{"authorizationData":[{{"authorizationToken":"QVdTOmVjci1wdw==","expiresAt":{exp}.5,"proxyEndpoint":"https://x"}}]}}"#
                ),
            )
        });
        let want = basic_of("AWS", "ecr-pw");
        let reg = serve(move |r: &Req| {
            if r.header("authorization") == Some(want.as_str()) {
                ok_manifest()
            } else {
                resp(401, &[("WWW-Authenticate", r#"Basic realm="ecr""#)], "")
            }
        });
        let file = tmp_file(
            "credentials.json",
            &format!(
                r#"{{"registries": {{"127.0.0.1:{}": {{"ecr": {{"region": "eu-west-1", "endpoint": "http://127.0.0.1:{}/"}}}}}}}}"#,
                reg.port, fake_ecr.port
            ),
        );
        let creds = Credentials::load(&super::super::credentials::CredentialsConfig {
            skiff_file: Some(file.clone()),
            aws: Some(keys),
            ..Default::default()
        });
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
        let creds = creds.unwrap();
        let c = RegistryClient::with_credentials(vec![], creds).unwrap();
        let r = reference(reg.port);
        c.manifest(&r, "latest").await.unwrap();
        c.blob(&r, &Digest::of(b"x")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the ECR token is cached");
        assert_eq!(
            reg.requests().len(),
            2,
            "Basic AWS:<password> from the first request"
        );
    }

    #[tokio::test]
    async fn a_bad_credentials_file_fails_only_where_credentials_are_needed() {
        let open = serve(|_: &Req| ok_manifest());
        let closed = serve(|_: &Req| resp(401, &[("WWW-Authenticate", r#"Basic realm="t""#)], ""));
        let c = RegistryClient {
            auth: Arc::new(Authenticator::failed(
                "/etc/skiff/credentials.json: mode 0644 lets group or others read it".into(),
            )),
            ..RegistryClient::with_credentials(vec![], Credentials::none()).unwrap()
        };
        c.manifest(&reference(open.port), "latest").await.unwrap();
        let e = c
            .manifest(&reference(closed.port), "latest")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("mode 0644"), "{e}");
    }
}
