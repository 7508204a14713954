//! Registry authentication: which `Authorization` a request carries, and what a 401 means.
//!
//! - Anonymous until the registry says otherwise, except that Basic credentials configured
//!   for a registry are sent from the first request on.
//! - `Basic realm=..`: Basic on every request to that registry from then on (per process).
//! - `Bearer realm=..,service=..,scope=..`: a token from the realm (GET with service and scope,
//!   with Basic credentials when there are any; or, for an identity token, a POST of
//!   `grant_type=refresh_token`), read from `token` or `access_token`, cached per (registry,
//!   scope, credentials) for `expires_in` seconds (60 without one) and fetched anew before it
//!   runs out. A 401 with `error="invalid_token"` fetches a new token once per request.
//! - Redirects (blobs go to object storage) never carry `Authorization` to another host:
//!   reqwest drops it, with Cookie and Proxy-Authorization, whenever host or port change.
//!
//! Credentials come from `credentials::Credentials` (files, helpers, ECR) or, for one pull,
//! from a `PullAuth` override.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use reqwest::StatusCode;

use super::credentials::{self, Credential, Credentials, Source};
use super::ecr::{self, EcrSpec, EcrToken};
use super::registry::{read_capped, root_cause, RegistryError};

/// Bearer tokens without `expires_in` last this long (the token specification's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Whose credentials a pull uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PullAuth {
    /// The configured sources for the image's registry (or none: anonymous).
    #[default]
    Configured,
    /// Credentials named in skiff's credentials file (a task's
    /// `repositoryCredentials.credentialsParameter`); an error when there are none by that name.
    Named(String),
    /// These credentials, whatever is configured (for credentials delivered with a task by the
    /// control plane).
    #[cfg_attr(not(test), allow(dead_code))]
    With(Credential),
}

impl PullAuth {
    /// Keeps tokens obtained with different credentials apart.
    fn identity(&self) -> String {
        match self {
            PullAuth::Configured => String::new(),
            PullAuth::Named(n) => format!("named:{n}"),
            PullAuth::With(c) => format!("with:{}", c.fingerprint()),
        }
    }
}

/// The registry and repository a request is for.
pub struct Target<'a> {
    /// host[:port] as in the image reference: credentials are looked up by it.
    pub registry: &'a str,
    /// host[:port] that serves the API (registry-1.docker.io for docker.io).
    pub api_host: &'a str,
    pub repository: &'a str,
    /// The registry is spoken to in plain HTTP (loopback or configured): so may its realm.
    pub plain_http: bool,
    /// For messages: "manifest latest", "blob sha256:…".
    pub what: &'a str,
}

/// A credential and where it came from.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub credential: Credential,
    pub origin: String,
    /// Set for ECR tokens, to drop a rejected one.
    ecr_key: Option<String>,
}

#[derive(Clone, Debug)]
enum Scheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Clone)]
struct Token {
    value: String,
    expires_at: Instant,
    lifetime: Duration,
    /// The scope to ask for when renewing it.
    scope: String,
}

impl Token {
    /// Usable: more than a tenth of its lifetime (at most 10 s) is left.
    fn fresh(&self, now: Instant) -> bool {
        let margin = (self.lifetime / 10).min(Duration::from_secs(10));
        now + margin < self.expires_at
    }
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Sent {
    #[default]
    Nothing,
    Basic,
    Bearer,
}

/// What one request did so far, so that it gives up rather than loops.
#[derive(Default)]
pub struct Attempt {
    sent: Sent,
    sent_token: Option<String>,
    fetched: bool,
    refetched: bool,
    basic_retried: bool,
    ecr_retried: bool,
}

#[derive(Default)]
struct State {
    /// What each API host asked for.
    schemes: HashMap<String, Scheme>,
    /// Bearer tokens by (api host, scope, credential identity).
    tokens: HashMap<(String, String, String), Token>,
    /// Credential helper answers by (helper, server), for the life of the process.
    helpers: HashMap<(String, String), Option<Credential>>,
    /// ECR tokens by endpoint, region and access key.
    ecr: HashMap<String, EcrToken>,
}

pub struct Authenticator {
    creds: Credentials,
    /// Loading the credentials failed: every request that needs them reports this.
    load_error: Option<String>,
    state: Mutex<State>,
    /// One token fetch at a time, so that parallel layer downloads share a token.
    token_lock: tokio::sync::Mutex<()>,
    /// One helper run or ECR call at a time.
    resolve_lock: tokio::sync::Mutex<()>,
}

fn default_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

pub fn basic_header(username: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {enc}")
}

impl Authenticator {
    pub fn new(creds: Credentials) -> Authenticator {
        Authenticator {
            creds,
            load_error: None,
            state: Mutex::new(State::default()),
            token_lock: tokio::sync::Mutex::new(()),
            resolve_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Credentials could not be loaded: anonymous requests still go out (a public registry
    /// works), but anything that needs credentials fails with `msg`.
    pub fn failed(msg: String) -> Authenticator {
        Authenticator {
            load_error: Some(msg),
            ..Authenticator::new(Credentials::none())
        }
    }

    #[allow(dead_code)]
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    fn token_key(t: &Target<'_>, pull: &PullAuth) -> (String, String, String) {
        (
            t.api_host.to_string(),
            default_scope(t.repository),
            pull.identity(),
        )
    }

    /// The credential for the target's registry, if any.
    pub async fn resolve(
        &self,
        http: &reqwest::Client,
        t: &Target<'_>,
        pull: &PullAuth,
    ) -> Result<Option<Resolved>, RegistryError> {
        let cred_err = |msg: String| RegistryError::Credentials { msg };
        match pull {
            PullAuth::With(c) => {
                return Ok(Some(Resolved {
                    credential: c.clone(),
                    origin: "the credentials given for this pull".into(),
                    ecr_key: None,
                }))
            }
            PullAuth::Named(n) => {
                if let Some(e) = &self.load_error {
                    return Err(cred_err(e.clone()));
                }
                return match self.creds.named(n) {
                    Some(c) => Ok(Some(Resolved {
                        credential: c,
                        origin: format!(
                            "named credentials {n:?} in {}",
                            self.creds
                                .skiff_file()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default()
                        ),
                        ecr_key: None,
                    })),
                    None => Err(cred_err(format!(
                        "no named credentials {n:?} for repositoryCredentials ({}; they go in its \"named\" section)",
                        match self.creds.skiff_file() {
                            Some(p) => format!("looked in {}", p.display()),
                            None => format!(
                                "no skiff credentials file: set {} or create {}",
                                credentials::ENV_FILE,
                                credentials::DEFAULT_FILE
                            ),
                        }
                    ))),
                };
            }
            PullAuth::Configured => {}
        }
        if let Some(e) = &self.load_error {
            return Err(cred_err(e.clone()));
        }
        for src in self.creds.sources(t.registry) {
            match src {
                Source::Static { credential, origin } => {
                    return Ok(Some(Resolved {
                        credential,
                        origin,
                        ecr_key: None,
                    }))
                }
                Source::Helper {
                    helper,
                    server,
                    origin,
                } => {
                    let found = self
                        .helper(&helper, &server)
                        .await
                        .map_err(|m| cred_err(format!("registry {}: {m}", t.registry)))?;
                    if let Some(credential) = found {
                        return Ok(Some(Resolved {
                            credential,
                            origin,
                            ecr_key: None,
                        }));
                    }
                }
                Source::Ecr { spec, origin } => {
                    let (key, tok) = self.ecr_token(http, t, &spec).await?;
                    return Ok(Some(Resolved {
                        credential: Credential::Basic {
                            username: tok.username,
                            password: tok.password,
                        },
                        origin,
                        ecr_key: Some(key),
                    }));
                }
            }
        }
        Ok(None)
    }

    async fn helper(&self, helper: &str, server: &str) -> Result<Option<Credential>, String> {
        let key = (helper.to_string(), server.to_string());
        if let Some(c) = self.state.lock().unwrap().helpers.get(&key) {
            return Ok(c.clone());
        }
        let _g = self.resolve_lock.lock().await;
        if let Some(c) = self.state.lock().unwrap().helpers.get(&key) {
            return Ok(c.clone());
        }
        let found = credentials::run_helper(helper, server).await?;
        self.state
            .lock()
            .unwrap()
            .helpers
            .insert(key, found.clone());
        Ok(found)
    }

    /// A usable ECR token: cached, pre-supplied, or from GetAuthorizationToken.
    async fn ecr_token(
        &self,
        http: &reqwest::Client,
        t: &Target<'_>,
        spec: &EcrSpec,
    ) -> Result<(String, EcrToken), RegistryError> {
        let key = format!(
            "{}|{}|{}",
            spec.endpoint,
            spec.region,
            match &spec.keys {
                Some(k) => k.access_key_id.clone(),
                None => format!("preset:{}", t.registry),
            }
        );
        let cached = |now| {
            self.state
                .lock()
                .unwrap()
                .ecr
                .get(&key)
                .filter(|tok| tok.fresh_at(now))
                .cloned()
        };
        if let Some(tok) = cached(SystemTime::now()) {
            return Ok((key, tok));
        }
        let _g = self.resolve_lock.lock().await;
        let now = SystemTime::now();
        if let Some(tok) = cached(now) {
            return Ok((key, tok));
        }
        if let Some(p) = spec.preset.as_ref().filter(|p| p.fresh_at(now)) {
            self.state
                .lock()
                .unwrap()
                .ecr
                .insert(key.clone(), p.clone());
            return Ok((key, p.clone()));
        }
        let result = match &spec.keys {
            Some(keys) => {
                ecr::get_authorization_token(http, &spec.endpoint, &spec.region, keys, now)
                    .await
                    .map_err(|m| format!("GetAuthorizationToken at {}: {m}", spec.endpoint))
            }
            None => Err(
                "no AWS credentials to get a token with (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \"aws\" in the skiff credentials file)"
                    .to_string(),
            ),
        };
        match result {
            Ok(tok) => {
                tracing::debug!(registry = t.registry, expires = %ecr::format_rfc3339(tok.expires_at), "ECR token");
                self.state
                    .lock()
                    .unwrap()
                    .ecr
                    .insert(key.clone(), tok.clone());
                Ok((key, tok))
            }
            Err(msg) => {
                // A token that has not run out yet still works.
                let old = self.state.lock().unwrap().ecr.get(&key).cloned();
                if let Some(tok) = old
                    .into_iter()
                    .chain(spec.preset.clone())
                    .find(|tok| !tok.expired_at(now))
                {
                    tracing::warn!(registry = t.registry, error = %msg, expires = %ecr::format_rfc3339(tok.expires_at),
                        "cannot renew the ECR token; using the current one until it expires");
                    return Ok((key, tok));
                }
                let note = spec
                    .preset
                    .as_ref()
                    .map(|p| {
                        format!(
                            "; the token in the credentials file expired at {}",
                            ecr::format_rfc3339(p.expires_at)
                        )
                    })
                    .unwrap_or_default();
                Err(RegistryError::Credentials {
                    msg: format!(
                        "ECR registry {} (region {}): {msg}{note}",
                        t.registry, spec.region
                    ),
                })
            }
        }
    }

    /// The `Authorization` value for the next try of a request.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        t: &Target<'_>,
        pull: &PullAuth,
        attempt: &mut Attempt,
    ) -> Result<Option<String>, RegistryError> {
        attempt.sent = Sent::Nothing;
        attempt.sent_token = None;
        let scheme = self.state.lock().unwrap().schemes.get(t.api_host).cloned();
        match scheme {
            Some(Scheme::Bearer { realm, service }) => {
                let key = Self::token_key(t, pull);
                let cached = self.state.lock().unwrap().tokens.get(&key).cloned();
                let token = match cached {
                    Some(tok) if tok.fresh(Instant::now()) => tok.value,
                    other => {
                        let scope = other
                            .map(|o| o.scope)
                            .unwrap_or_else(|| default_scope(t.repository));
                        attempt.fetched = true;
                        self.new_token(http, t, pull, &realm, service.as_deref(), &scope, None)
                            .await?
                    }
                };
                attempt.sent = Sent::Bearer;
                attempt.sent_token = Some(token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
            Some(Scheme::Basic) => match self.resolve(http, t, pull).await? {
                Some(Resolved {
                    credential: Credential::Basic { username, password },
                    ..
                }) => {
                    attempt.sent = Sent::Basic;
                    Ok(Some(basic_header(&username, &password)))
                }
                _ => Ok(None),
            },
            None => {
                // Not challenged yet: Basic credentials go along at once. A source that fails
                // here (a missing helper, say) is reported only if the registry wants
                // credentials.
                match self.resolve(http, t, pull).await {
                    Ok(Some(Resolved {
                        credential: Credential::Basic { username, password },
                        ..
                    })) => {
                        attempt.sent = Sent::Basic;
                        Ok(Some(basic_header(&username, &password)))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => {
                        tracing::debug!(registry = t.registry, error = %e, "no credentials before the first challenge");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Deals with a 401 carrying `challenge` (all WWW-Authenticate values). Ok: try again.
    pub async fn unauthorized(
        &self,
        http: &reqwest::Client,
        t: &Target<'_>,
        pull: &PullAuth,
        challenge: &str,
        attempt: &mut Attempt,
    ) -> Result<(), RegistryError> {
        let denied = |msg: String| RegistryError::Denied {
            what: t.what.to_string(),
            msg,
        };
        let challenges = parse_challenges(challenge);
        if let Some((_, p)) = challenges.iter().find(|(s, _)| s == "bearer") {
            let realm = p
                .get("realm")
                .filter(|r| !r.is_empty())
                .cloned()
                .ok_or_else(|| RegistryError::Auth {
                    what: t.what.to_string(),
                    challenge: format!("Bearer challenge without realm: {challenge}"),
                })?;
            let service = p.get("service").cloned();
            let scope = p
                .get("scope")
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| default_scope(t.repository));
            let error = p.get("error").map(String::as_str).unwrap_or("");
            self.state.lock().unwrap().schemes.insert(
                t.api_host.to_string(),
                Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                },
            );
            if attempt.sent == Sent::Bearer {
                if error == "insufficient_scope" {
                    return Err(denied(format!(
                        "registry {} denied access to repository {} (insufficient_scope for {scope}){}",
                        t.registry,
                        t.repository,
                        self.whose(http, t, pull).await
                    )));
                }
                if attempt.refetched {
                    return Err(denied(format!(
                        "registry {} rejected a freshly issued token from {realm}{}",
                        t.registry,
                        if error.is_empty() {
                            String::new()
                        } else {
                            format!(" ({error})")
                        }
                    )));
                }
                attempt.refetched = true;
            } else if attempt.fetched {
                return Err(denied(format!(
                    "registry {} rejected the token just issued by {realm}",
                    t.registry
                )));
            } else {
                attempt.fetched = true;
            }
            let stale = attempt.sent_token.clone();
            self.new_token(
                http,
                t,
                pull,
                &realm,
                service.as_deref(),
                &scope,
                stale.as_deref(),
            )
            .await?;
            return Ok(());
        }
        if challenges.iter().any(|(s, _)| s == "basic") {
            self.state
                .lock()
                .unwrap()
                .schemes
                .insert(t.api_host.to_string(), Scheme::Basic);
            return match self.resolve(http, t, pull).await? {
                Some(Resolved {
                    credential: c @ Credential::Basic { .. },
                    origin,
                    ecr_key,
                }) => {
                    if attempt.sent != Sent::Basic && !attempt.basic_retried {
                        attempt.basic_retried = true;
                        return Ok(());
                    }
                    if let (Some(k), false) = (&ecr_key, attempt.ecr_retried) {
                        // Perhaps revoked early: one more try with a new token.
                        attempt.ecr_retried = true;
                        self.state.lock().unwrap().ecr.remove(k);
                        return Ok(());
                    }
                    Err(denied(format!(
                        "registry {} rejected the credentials of {} (from {origin})",
                        t.registry,
                        c.describe()
                    )))
                }
                Some(Resolved { origin, .. }) => Err(denied(format!(
                    "registry {} asks for a username and password (Basic), but the credentials configured for it are an identity token (from {origin})",
                    t.registry
                ))),
                None => Err(denied(format!(
                    "registry {} requires authentication and no credentials are configured for it ({})",
                    t.registry,
                    self.creds.describe()
                ))),
            };
        }
        Err(RegistryError::Auth {
            what: t.what.to_string(),
            challenge: if challenge.trim().is_empty() {
                "401 without a WWW-Authenticate challenge".into()
            } else {
                challenge.to_string()
            },
        })
    }

    /// " with user \"x\" (from …)" or " anonymously", for messages.
    async fn whose(&self, http: &reqwest::Client, t: &Target<'_>, pull: &PullAuth) -> String {
        match self.resolve(http, t, pull).await {
            Ok(Some(r)) => format!(" to {} (from {})", r.credential.describe(), r.origin),
            Ok(None) => format!(
                " to anonymous requests; no credentials are configured for it ({})",
                self.creds.describe()
            ),
            Err(_) => String::new(),
        }
    }

    /// A token for the target, fetched unless another request just did (`stale`: the token
    /// that was rejected, never handed out again).
    #[allow(clippy::too_many_arguments)]
    async fn new_token(
        &self,
        http: &reqwest::Client,
        t: &Target<'_>,
        pull: &PullAuth,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        stale: Option<&str>,
    ) -> Result<String, RegistryError> {
        let key = Self::token_key(t, pull);
        let _g = self.token_lock.lock().await;
        if let Some(tok) = self.state.lock().unwrap().tokens.get(&key) {
            if tok.fresh(Instant::now()) && Some(tok.value.as_str()) != stale {
                return Ok(tok.value.clone());
            }
        }
        let resolved = self.resolve(http, t, pull).await?;
        let tok = self
            .fetch_token(http, t, realm, service, scope, resolved.as_ref())
            .await?;
        let value = tok.value.clone();
        self.state.lock().unwrap().tokens.insert(key, tok);
        Ok(value)
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        t: &Target<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        cred: Option<&Resolved>,
    ) -> Result<Token, RegistryError> {
        let what = t.what;
        let url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Protocol {
            what: what.to_string(),
            msg: format!("bad token realm {realm:?}: {e}"),
        })?;
        if url.scheme() != "https" && !(url.scheme() == "http" && t.plain_http) {
            return Err(RegistryError::Protocol {
                what: what.to_string(),
                msg: format!("refusing token realm over plain HTTP: {realm}"),
            });
        }
        let realm_host = url.host_str().unwrap_or(realm).to_string();
        let started = Instant::now();
        let req = match cred.map(|r| &r.credential) {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "skiff"),
                    ("scope", scope),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                http.post(url).form(&form)
            }
            other => {
                let mut q = vec![("scope", scope)];
                if let Some(s) = service {
                    q.push(("service", s));
                }
                let req = http.get(url).query(&q);
                match other {
                    Some(Credential::Basic { username, password }) => {
                        req.basic_auth(username, Some(password))
                    }
                    _ => req,
                }
            }
        };
        let resp = req.send().await.map_err(|e| RegistryError::Unreachable {
            host: realm_host,
            msg: root_cause(&e),
        })?;
        let status = resp.status();
        let body = read_capped(resp, 1 << 20, what).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Denied {
                what: what.to_string(),
                msg: match cred {
                    Some(r) => format!(
                        "token server {realm} refused the credentials of {} (from {}) for registry {} (HTTP {})",
                        r.credential.describe(),
                        r.origin,
                        t.registry,
                        status.as_u16()
                    ),
                    None => format!(
                        "registry {} requires authentication: its token server {realm} refused anonymous access to repository {} (HTTP {}); no credentials are configured for it ({})",
                        t.registry,
                        t.repository,
                        status.as_u16(),
                        self.creds.describe()
                    ),
                },
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                what: format!("{what}: token from {realm}"),
                status: status.as_u16(),
                msg: "token request failed".into(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<serde_json::Value>,
        }
        let tok: Tok = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            what: what.to_string(),
            msg: format!("bad token response from {realm}: {e}"),
        })?;
        let value = tok
            .token
            .filter(|t| !t.is_empty())
            .or(tok.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| RegistryError::Protocol {
                what: what.to_string(),
                msg: format!("token response from {realm} without a token"),
            })?;
        let lifetime = tok
            .expires_in
            .and_then(|v| v.as_f64())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(365.0 * 86400.0)))
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(Token {
            value,
            expires_at: started + lifetime,
            lifetime,
            scope: scope.to_string(),
        })
    }
}

/// Parses WWW-Authenticate (possibly several challenges, as several headers joined with ", "):
/// `Basic realm="x", Bearer realm="y",service="z"` → [("basic", {realm}), ("bearer", {...})].
/// Scheme and parameter names are lower-cased; quoted values may hold commas and `\"`.
pub fn parse_challenges(h: &str) -> Vec<(String, HashMap<String, String>)> {
    let b = h.as_bytes();
    let mut out: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut i = 0;
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',' || b[i] == b'\t') {
            i += 1;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if start == i {
            // Not a token: skip a character (garbage or a token68 remainder).
            i += 1;
            continue;
        }
        let tok = &h[start..i];
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            // A parameter of the current challenge.
            j += 1;
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            let mut val = String::new();
            if j < b.len() && b[j] == b'"' {
                j += 1;
                let mut buf = Vec::new();
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        j += 1;
                    }
                    buf.push(b[j]);
                    j += 1;
                }
                val = String::from_utf8_lossy(&buf).into_owned();
                j += 1;
            } else {
                let vs = j;
                while j < b.len() && b[j] != b',' {
                    j += 1;
                }
                val.push_str(h[vs..j].trim());
            }
            out.last_mut()
                .unwrap()
                .1
                .insert(tok.to_ascii_lowercase(), val);
            i = j;
        } else {
            out.push((tok.to_ascii_lowercase(), HashMap::new()));
            i = j;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull",error="invalid_token""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "bearer");
        assert_eq!(c[0].1["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].1["scope"], "repository:library/busybox:pull");
        assert_eq!(c[0].1["error"], "invalid_token");

        let c = parse_challenges(
            r#"Basic realm="a, \"quoted\" realm", Bearer realm="https://x/token",scope="repository:a:pull,push""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, "basic");
        assert_eq!(c[0].1["realm"], r#"a, "quoted" realm"#);
        assert_eq!(c[1].1["scope"], "repository:a:pull,push");

        let c = parse_challenges("BASIC Realm=unquoted , charset=UTF-8");
        assert_eq!(c[0].0, "basic");
        assert_eq!(c[0].1["realm"], "unquoted");
        assert_eq!(c[0].1["charset"], "UTF-8");
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Negotiate abc==")[0].0, "negotiate");
    }

    #[test]
    fn token_freshness() {
        let now = Instant::now();
        let t = Token {
            value: "t".into(),
            expires_at: now + Duration::from_secs(60),
            lifetime: Duration::from_secs(60),
            scope: String::new(),
        };
        assert!(t.fresh(now));
        assert!(t.fresh(now + Duration::from_secs(53)));
        assert!(!t.fresh(now + Duration::from_secs(54)));
        let short = Token {
            expires_at: now + Duration::from_secs(2),
            lifetime: Duration::from_secs(2),
            ..t
        };
        assert!(short.fresh(now + Duration::from_millis(1700)));
        assert!(!short.fresh(now + Duration::from_millis(1900)));
    }

    #[test]
    fn basic_headers() {
        assert_eq!(
            basic_header("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
