//! Where registry credentials come from.
//!
//! For a registry host, the sources are tried in this order; the first that has something
//! wins:
//!
//! 1. skiff's own credentials file (`SKIFF_CREDENTIALS`, default `/etc/skiff/credentials.json`):
//!    `registries.<host>` = `{username, password}`, `{identity_token}` or `{ecr: {...}}`;
//! 2. a Docker `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
//!    `credHelpers.<host>` (a `docker-credential-<name>` helper), then `auths.<host>`
//!    (`auth` = base64(user:pass), `username`/`password`, or `identitytoken`), then
//!    `credsStore` (the default helper);
//! 3. Amazon ECR for `<account>.dkr.ecr.<region>.amazonaws.com` hosts, with AWS keys from
//!    `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` or the file's `aws`;
//! 4. nothing: anonymous.
//!
//! The file's `named` section holds credentials that a task refers to by name
//! (`repositoryCredentials.credentialsParameter`), see `Credentials::named`.
//!
//! Skiff's file holds secrets: it must be owned by the user skiff runs as (or root) and have
//! no permission bits for group or others (0600 or 0400), or it is refused.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::ecr::{self, AwsKeys, EcrSpec, EcrToken};
use super::reference::DOCKER_HUB;

/// Skiff's credentials file when `SKIFF_CREDENTIALS` is not set.
pub const DEFAULT_FILE: &str = "/etc/skiff/credentials.json";
/// Names skiff's credentials file; empty = none.
pub const ENV_FILE: &str = "SKIFF_CREDENTIALS";
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The server name Docker uses for Docker Hub in config.json and with helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the token realm (`grant_type=refresh_token`).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// For messages: `user "alice"` or `an identity token`.
    pub fn describe(&self) -> String {
        match self {
            Credential::Basic { username, .. } => format!("user {username:?}"),
            Credential::IdentityToken(_) => "an identity token".into(),
        }
    }

    /// A short digest, to keep tokens obtained with different credentials apart.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        match self {
            Credential::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
            Credential::IdentityToken(t) => {
                h.update(b"identity\0");
                h.update(t.as_bytes());
            }
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// One way of getting a credential for a registry.
#[derive(Debug, Clone)]
pub enum Source {
    /// Known already; `origin` says where from (for messages).
    Static {
        credential: Credential,
        origin: String,
    },
    /// `docker-credential-<helper> get` with `server` on stdin.
    Helper {
        helper: String,
        server: String,
        origin: String,
    },
    /// An ECR token (Basic `AWS:<password>`).
    Ecr { spec: EcrSpec, origin: String },
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(pub String);

/// What to load; `Credentials::from_environment` fills it from the environment.
#[derive(Debug, Clone, Default)]
pub struct CredentialsConfig {
    /// Skiff's credentials file (must exist when given).
    pub skiff_file: Option<PathBuf>,
    /// A Docker config.json (ignored when missing).
    pub docker_config: Option<PathBuf>,
    /// AWS keys for ECR; these win over the file's `aws` section.
    pub aws: Option<AwsKeys>,
    /// Overrides the ECR API endpoint of every region (tests; `AWS_ENDPOINT_URL_ECR`).
    pub ecr_endpoint: Option<String>,
}

/// The credential sources of one skiff process.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    skiff: Option<SkiffFile>,
    docker: Option<DockerConfig>,
    aws: Option<AwsKeys>,
    ecr_endpoint: Option<String>,
}

#[derive(Debug, Clone)]
struct SkiffFile {
    path: PathBuf,
    registries: BTreeMap<String, SkiffEntry>,
    named: BTreeMap<String, Credential>,
}

#[derive(Debug, Clone)]
enum SkiffEntry {
    Credential(Credential),
    Ecr {
        region: Option<String>,
        endpoint: Option<String>,
        preset: Option<EcrToken>,
    },
}

#[derive(Debug, Clone)]
struct DockerConfig {
    path: PathBuf,
    /// Normalised host → credential (entries without one are dropped).
    auths: BTreeMap<String, Credential>,
    helpers: BTreeMap<String, String>,
    store: Option<String>,
}

/// `https://index.docker.io/v1/`, `registry-1.docker.io` → `docker.io`; `https://HOST:5000/x`
/// → `host:5000`.
pub fn normalize_registry(key: &str) -> String {
    let s = key.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match s.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            DOCKER_HUB.to_string()
        }
        _ => s,
    }
}

fn valid_helper_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !n.starts_with('.')
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

impl Credentials {
    /// No credentials at all: every registry is spoken to anonymously.
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// The environment's sources: `SKIFF_CREDENTIALS` (a path; empty = no file; unset =
    /// `/etc/skiff/credentials.json` when it exists), `DOCKER_CONFIG` (a directory holding
    /// config.json; unset = `~/.docker`), AWS keys from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and an ECR endpoint override from
    /// `AWS_ENDPOINT_URL_ECR` (else `AWS_ENDPOINT_URL`).
    pub fn from_environment() -> Result<Credentials, CredentialsError> {
        let skiff_file = match std::env::var_os(ENV_FILE) {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()),
        };
        let docker_config = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) if !d.is_empty() => Some(PathBuf::from(d).join("config.json")),
            _ => std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".docker").join("config.json")),
        };
        Credentials::load(&CredentialsConfig {
            skiff_file,
            docker_config,
            aws: AwsKeys::from_env(),
            ecr_endpoint: env_nonempty("AWS_ENDPOINT_URL_ECR")
                .or_else(|| env_nonempty("AWS_ENDPOINT_URL")),
        })
    }

    pub fn load(cfg: &CredentialsConfig) -> Result<Credentials, CredentialsError> {
        let mut aws_from_file = None;
        let skiff = match &cfg.skiff_file {
            Some(p) => {
                let (f, aws) = load_skiff_file(p)?;
                aws_from_file = aws;
                Some(f)
            }
            None => None,
        };
        let docker = match &cfg.docker_config {
            Some(p) if p.exists() => Some(load_docker_config(p)?),
            _ => None,
        };
        Ok(Credentials {
            skiff,
            docker,
            aws: cfg.aws.clone().or(aws_from_file),
            ecr_endpoint: cfg.ecr_endpoint.clone(),
        })
    }

    /// Where credentials were looked for, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.skiff {
            parts.push(format!("skiff credentials {}", s.path.display()));
        }
        if let Some(d) = &self.docker {
            parts.push(format!("docker config {}", d.path.display()));
        }
        if parts.is_empty() {
            "no credentials file: see SKIFF_CREDENTIALS, DOCKER_CONFIG".into()
        } else {
            format!("looked in {}", parts.join(", "))
        }
    }

    /// Credentials a task names (`repositoryCredentials.credentialsParameter`), from the
    /// `named` section of skiff's credentials file.
    pub fn named(&self, name: &str) -> Option<Credential> {
        self.skiff.as_ref()?.named.get(name).cloned()
    }

    /// The path of skiff's credentials file, when one was loaded.
    pub fn skiff_file(&self) -> Option<&Path> {
        self.skiff.as_ref().map(|s| s.path.as_path())
    }

    /// The sources for `registry` (host[:port] as in the image reference), in order.
    pub fn sources(&self, registry: &str) -> Vec<Source> {
        let host = normalize_registry(registry);
        let mut out = Vec::new();
        let ecr_host = ecr::parse_host(&host);
        if let Some(f) = &self.skiff {
            let origin = format!("skiff credentials {}", f.path.display());
            match f.registries.get(&host) {
                Some(SkiffEntry::Credential(c)) => out.push(Source::Static {
                    credential: c.clone(),
                    origin,
                }),
                Some(SkiffEntry::Ecr {
                    region,
                    endpoint,
                    preset,
                }) => {
                    // Validated at load: a region is known (given or from the host).
                    let region = region
                        .clone()
                        .or_else(|| ecr_host.as_ref().map(|e| e.region.clone()))
                        .unwrap_or_default();
                    out.push(Source::Ecr {
                        spec: self.ecr_spec(
                            &region,
                            endpoint.clone(),
                            ecr_host.as_ref(),
                            preset.clone(),
                        ),
                        origin,
                    });
                }
                None => {}
            }
        }
        if let Some(d) = &self.docker {
            let server = if host == DOCKER_HUB {
                DOCKER_HUB_SERVER.to_string()
            } else {
                host.clone()
            };
            if let Some(h) = d.helpers.get(&host) {
                out.push(Source::Helper {
                    helper: h.clone(),
                    server: server.clone(),
                    origin: format!(
                        "credential helper docker-credential-{h} (credHelpers in {})",
                        d.path.display()
                    ),
                });
            }
            if let Some(c) = d.auths.get(&host) {
                out.push(Source::Static {
                    credential: c.clone(),
                    origin: format!("docker config {}", d.path.display()),
                });
            }
            if let Some(h) = &d.store {
                out.push(Source::Helper {
                    helper: h.clone(),
                    server,
                    origin: format!(
                        "credential helper docker-credential-{h} (credsStore in {})",
                        d.path.display()
                    ),
                });
            }
        }
        if let Some(e) = &ecr_host {
            out.push(Source::Ecr {
                spec: self.ecr_spec(&e.region, None, Some(e), None),
                origin: "Amazon ECR GetAuthorizationToken".into(),
            });
        }
        out
    }

    fn ecr_spec(
        &self,
        region: &str,
        endpoint: Option<String>,
        host: Option<&ecr::EcrHost>,
        preset: Option<EcrToken>,
    ) -> EcrSpec {
        let (fips, china) = host.map(|h| (h.fips, h.china)).unwrap_or((false, false));
        EcrSpec {
            region: region.to_string(),
            endpoint: endpoint
                .or_else(|| self.ecr_endpoint.clone())
                .unwrap_or_else(|| ecr::default_endpoint(region, fips, china)),
            keys: self.aws.clone(),
            preset,
        }
    }
}

// ---- skiff's credentials file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkiffFileJson {
    #[serde(default)]
    registries: BTreeMap<String, RegistryJson>,
    #[serde(default)]
    named: BTreeMap<String, NamedJson>,
    #[serde(default)]
    aws: Option<AwsJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryJson {
    username: Option<String>,
    password: Option<String>,
    identity_token: Option<String>,
    ecr: Option<EcrJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EcrJson {
    region: Option<String>,
    endpoint: Option<String>,
    authorization_token: Option<String>,
    expires_at: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedJson {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsJson {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Refuses a secrets file that others could read or write, or that someone else owns.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), CredentialsError> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialsError(format!(
            "{}: mode {mode:04o} lets group or others read it; it holds secrets and must be 0600 or 0400 (chmod 600 {})",
            path.display(),
            path.display()
        )));
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(CredentialsError(format!(
            "{}: owned by uid {}, not by root or the user skiff runs as (uid {euid})",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

fn expiry_of(v: &serde_json::Value) -> Option<SystemTime> {
    match v {
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s)),
        serde_json::Value::String(s) => ecr::parse_rfc3339(s),
        _ => None,
    }
}

fn load_skiff_file(path: &Path) -> Result<(SkiffFile, Option<AwsKeys>), CredentialsError> {
    let err = |msg: String| CredentialsError(format!("{}: {msg}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    check_private(path, &meta)?;
    let body = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let j: SkiffFileJson = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
    let now = SystemTime::now();
    let mut registries = BTreeMap::new();
    for (key, e) in j.registries {
        let host = normalize_registry(&key);
        let at = |msg: &str| err(format!("registries.{key:?}: {msg}"));
        if host.is_empty() {
            return Err(at("empty registry name"));
        }
        let entry = match (e.username, e.password, e.identity_token, e.ecr) {
            (Some(u), Some(p), None, None) => {
                if u.is_empty() || p.is_empty() {
                    return Err(at("empty username or password"));
                }
                SkiffEntry::Credential(Credential::Basic {
                    username: u,
                    password: p,
                })
            }
            (None, None, Some(t), None) if !t.is_empty() => {
                SkiffEntry::Credential(Credential::IdentityToken(t))
            }
            (None, None, None, Some(x)) => {
                let region = x.region.filter(|r| !r.is_empty());
                if region.is_none() && ecr::parse_host(&host).is_none() {
                    return Err(at(
                        "ecr needs a region: the host is not <account>.dkr.ecr.<region>.amazonaws.com",
                    ));
                }
                if let Some(ep) = &x.endpoint {
                    reqwest::Url::parse(ep).map_err(|e| at(&format!("ecr.endpoint: {e}")))?;
                }
                let preset = match (x.authorization_token, x.expires_at) {
                    (Some(t), Some(exp)) => {
                        let exp = expiry_of(&exp).ok_or_else(|| {
                            at("ecr.expires_at must be Unix seconds or an RFC 3339 time")
                        })?;
                        Some(
                            EcrToken::decode(&t, exp, now)
                                .map_err(|m| at(&format!("ecr.authorization_token: {m}")))?,
                        )
                    }
                    (None, None) => None,
                    _ => return Err(at("ecr.authorization_token and ecr.expires_at go together")),
                };
                SkiffEntry::Ecr {
                    region,
                    endpoint: x.endpoint,
                    preset,
                }
            }
            _ => {
                return Err(at(
                    "give exactly one of {username, password}, {identity_token} or {ecr}",
                ))
            }
        };
        registries.insert(host, entry);
    }
    let mut named = BTreeMap::new();
    for (name, n) in j.named {
        if n.username.is_empty() || n.password.is_empty() {
            return Err(err(format!("named.{name:?}: empty username or password")));
        }
        named.insert(
            name,
            Credential::Basic {
                username: n.username,
                password: n.password,
            },
        );
    }
    let aws = match j.aws {
        Some(a) if a.access_key_id.is_empty() || a.secret_access_key.is_empty() => {
            return Err(err("aws: empty access_key_id or secret_access_key".into()))
        }
        Some(a) => Some(AwsKeys {
            access_key_id: a.access_key_id,
            secret_access_key: a.secret_access_key,
            session_token: a.session_token.filter(|t| !t.is_empty()),
        }),
        None => None,
    };
    Ok((
        SkiffFile {
            path: path.to_path_buf(),
            registries,
            named,
        },
        aws,
    ))
}

// ---- Docker's config.json ----

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuthJson>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct DockerAuthJson {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(alias = "identityToken")]
    identitytoken: Option<String>,
}

fn decode_auth(a: &str) -> Result<(String, String), String> {
    let a = a.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(a)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(a))
        .map_err(|e| format!("auth is not base64: {e}"))?;
    let s = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_string())?;
    let (u, p) = s
        .split_once(':')
        .ok_or_else(|| "auth is not base64(user:password)".to_string())?;
    Ok((u.to_string(), p.to_string()))
}

fn load_docker_config(path: &Path) -> Result<DockerConfig, CredentialsError> {
    let err = |msg: String| CredentialsError(format!("docker config {}: {msg}", path.display()));
    let body = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let j: DockerConfigJson = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
    let mut auths = BTreeMap::new();
    for (key, a) in j.auths {
        let host = normalize_registry(&key);
        let cred = if let Some(t) = a.identitytoken.filter(|t| !t.is_empty()) {
            Some(Credential::IdentityToken(t))
        } else if let Some(enc) = a.auth.filter(|s| !s.is_empty()) {
            let (u, p) = decode_auth(&enc).map_err(|m| err(format!("auths.{key:?}: {m}")))?;
            (!u.is_empty() && !p.is_empty()).then_some(Credential::Basic {
                username: u,
                password: p,
            })
        } else {
            match (a.username, a.password) {
                (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some(Credential::Basic {
                    username: u,
                    password: p,
                }),
                _ => None,
            }
        };
        // Several keys may name one host (https://index.docker.io/v1/ and docker.io): the
        // first with a credential, in key order, wins.
        if let Some(c) = cred {
            auths.entry(host).or_insert(c);
        }
    }
    let mut helpers = BTreeMap::new();
    for (key, h) in j.cred_helpers {
        if !valid_helper_name(&h) {
            return Err(err(format!("credHelpers.{key:?}: bad helper name {h:?}")));
        }
        helpers.insert(normalize_registry(&key), h);
    }
    let store = match j.creds_store.filter(|s| !s.is_empty()) {
        Some(s) if !valid_helper_name(&s) => {
            return Err(err(format!("credsStore: bad helper name {s:?}")))
        }
        s => s,
    };
    Ok(DockerConfig {
        path: path.to_path_buf(),
        auths,
        helpers,
        store,
    })
}

/// Runs `docker-credential-<helper> get` with `server` on stdin. None when the helper has no
/// credentials for it.
pub async fn run_helper(helper: &str, server: &str) -> Result<Option<Credential>, String> {
    run_helper_program(Path::new(&format!("docker-credential-{helper}")), server).await
}

async fn run_helper_program(program: &Path, server: &str) -> Result<Option<Credential>, String> {
    use tokio::io::AsyncWriteExt;
    let program_path = program;
    let program = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = tokio::process::Command::new(program_path)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program} not found on PATH"),
            _ => format!("{program}: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} did not answer within {HELPER_TIMEOUT:?}"))?
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let text = format!("{stdout} {stderr}");
        if text.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let first = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(format!("{program} get failed ({}): {first}", out.status));
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let h: HelperOut = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("{program} get printed no credentials JSON: {e}"))?;
    if h.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if h.username == "<token>" {
        Credential::IdentityToken(h.secret)
    } else if h.username.is_empty() {
        return Err(format!("{program} get gave a secret without a username"));
    } else {
        Credential::Basic {
            username: h.username,
            password: h.secret,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir() -> PathBuf {
        let mut b = [0u8; 6];
        getrandom::getrandom(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!("skiff-creds-{}", hex::encode(b)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(path: &Path, body: &str, mode: u32) {
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn statics(srcs: &[Source]) -> Vec<Credential> {
        srcs.iter()
            .filter_map(|s| match s {
                Source::Static { credential, .. } => Some(credential.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn normalises_registry_keys() {
        for (k, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            (
                "https://Registry.Example.com:5000/v2/",
                "registry.example.com:5000",
            ),
            ("http://127.0.0.1:51690", "127.0.0.1:51690"),
            ("ghcr.io", "ghcr.io"),
        ] {
            assert_eq!(normalize_registry(k), want, "{k}");
        }
    }

    #[test]
    fn docker_config_entries() {
        let d = tmpdir();
        let p = d.join("config.json");
        // auth = base64("alice:pw:with:colons")
        write(
            &p,
            r#"{
              "auths": {
                "https://index.docker.io/v1/": {"auth": "YWxpY2U6cHc6d2l0aDpjb2xvbnM="},
                "https://reg.example.com:5000": {"username": "bob", "password": "pw2"},
                "tok.example.com": {"identitytoken": "refresh-me"},
                "empty.example.com": {}
              },
              "credHelpers": {"helped.example.com": "skifftest"},
              "credsStore": "desktop",
              "psFormat": "ignored"
            }"#,
            0o644,
        );
        let c = Credentials::load(&CredentialsConfig {
            docker_config: Some(p.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            statics(&c.sources("docker.io")),
            vec![basic("alice", "pw:with:colons")]
        );
        assert_eq!(
            statics(&c.sources("reg.example.com:5000")),
            vec![basic("bob", "pw2")]
        );
        assert_eq!(
            statics(&c.sources("tok.example.com")),
            vec![Credential::IdentityToken("refresh-me".into())]
        );
        // Helpers: the registry's own first, then the default store.
        let s = c.sources("helped.example.com");
        assert!(
            matches!(&s[0], Source::Helper { helper, server, .. } if helper == "skifftest" && server == "helped.example.com")
        );
        assert!(matches!(&s[1], Source::Helper { helper, .. } if helper == "desktop"));
        // Docker Hub is asked for under Docker's own server name.
        let s = c.sources("docker.io");
        assert!(
            matches!(&s[1], Source::Helper { server, .. } if server == "https://index.docker.io/v1/")
        );
        let s = c.sources("empty.example.com");
        assert_eq!(s.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn docker_config_errors_name_the_file() {
        let d = tmpdir();
        let p = d.join("config.json");
        write(&p, r#"{"auths": {"x.io": {"auth": "%%%"}}}"#, 0o600);
        let e = Credentials::load(&CredentialsConfig {
            docker_config: Some(p.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("config.json") && e.0.contains("x.io"), "{e}");
        write(&p, r#"{"credHelpers": {"x.io": "../../bin/sh"}}"#, 0o600);
        assert!(Credentials::load(&CredentialsConfig {
            docker_config: Some(p.clone()),
            ..Default::default()
        })
        .is_err());
        // A missing config.json is no error: nothing configured.
        let c = Credentials::load(&CredentialsConfig {
            docker_config: Some(d.join("nope.json")),
            ..Default::default()
        })
        .unwrap();
        assert!(c.sources("x.io").is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn skiff_file() {
        let d = tmpdir();
        let p = d.join("credentials.json");
        let body = r#"{
          "registries": {
            "https://registry.example.com": {"username": "u", "password": "p"},
            "tok.example.com": {"identity_token": "t"},
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com": {"ecr": {}},
            "mirror.example.com": {"ecr": {"region": "us-east-2", "endpoint": "http://127.0.0.1:9/"}},
            "preset.example.com": {"ecr": {"region": "us-east-1",
                "authorization_token": "QVdTOnByZXNldA==", "expires_at": "2099-01-01T00:00:00Z"}}
          },
          "named": {"arn:aws:secretsmanager:us-east-1:1:secret:hub": {"username": "n", "password": "np"}},
          "aws": {"access_key_id": "AKID", "secret_access_key": "SECRET"}
        }"#;
        write(&p, body, 0o644);
        let cfg = CredentialsConfig {
            skiff_file: Some(p.clone()),
            ..Default::default()
        };
        let e = Credentials::load(&cfg).unwrap_err();
        assert!(e.0.contains("0644") && e.0.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::load(&cfg).unwrap();
        assert_eq!(
            statics(&c.sources("registry.example.com")),
            vec![basic("u", "p")]
        );
        assert_eq!(
            statics(&c.sources("tok.example.com")),
            vec![Credential::IdentityToken("t".into())]
        );
        assert_eq!(
            c.named("arn:aws:secretsmanager:us-east-1:1:secret:hub"),
            Some(basic("n", "np"))
        );
        assert_eq!(c.named("other"), None);
        match &c.sources("123456789012.dkr.ecr.eu-west-1.amazonaws.com")[0] {
            Source::Ecr { spec, .. } => {
                assert_eq!(spec.region, "eu-west-1");
                assert_eq!(spec.endpoint, "https://api.ecr.eu-west-1.amazonaws.com/");
                assert_eq!(spec.keys.as_ref().unwrap().access_key_id, "AKID");
            }
            other => panic!("{other:?}"),
        }
        match &c.sources("mirror.example.com")[0] {
            Source::Ecr { spec, .. } => {
                assert_eq!(spec.region, "us-east-2");
                assert_eq!(spec.endpoint, "http://127.0.0.1:9/");
            }
            other => panic!("{other:?}"),
        }
        match &c.sources("preset.example.com")[0] {
            Source::Ecr { spec, .. } => {
                assert_eq!(spec.preset.as_ref().unwrap().password, "preset");
            }
            other => panic!("{other:?}"),
        }
        // 0400 is fine too.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        Credentials::load(&cfg).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn skiff_file_mistakes_are_refused() {
        let d = tmpdir();
        let p = d.join("credentials.json");
        let cfg = CredentialsConfig {
            skiff_file: Some(p.clone()),
            ..Default::default()
        };
        for (body, needle) in [
            (
                r#"{"registries": {"a.io": {"username": "u"}}}"#,
                "exactly one",
            ),
            (
                r#"{"registries": {"a.io": {"username": "u", "password": "p", "identity_token": "t"}}}"#,
                "exactly one",
            ),
            (r#"{"registries": {"a.io": {"ecr": {}}}}"#, "region"),
            (
                r#"{"registries": {"a.io": {"user": "u"}}}"#,
                "unknown field",
            ),
            (r#"{"named": {"n": {"username": "u"}}}"#, "password"),
            (
                r#"{"aws": {"access_key_id": "", "secret_access_key": "s"}}"#,
                "aws",
            ),
            (
                r#"{"registries": {"a.io": {"ecr": {"region": "r", "authorization_token": "QVdTOng="}}}}"#,
                "go together",
            ),
        ] {
            write(&p, body, 0o600);
            let e = Credentials::load(&cfg).unwrap_err();
            assert!(
                e.0.contains(needle) && e.0.contains("credentials.json"),
                "{body}: {e}"
            );
        }
        // A named file must exist.
        let e = Credentials::load(&CredentialsConfig {
            skiff_file: Some(d.join("missing.json")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.0.contains("missing.json"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn order_of_sources() {
        let d = tmpdir();
        let sp = d.join("credentials.json");
        write(
            &sp,
            r#"{"registries": {"both.io": {"username": "skiff", "password": "1"}}}"#,
            0o600,
        );
        let dp = d.join("config.json");
        write(
            &dp,
            r#"{"auths": {"both.io": {"username": "docker", "password": "2"},
                          "123456789012.dkr.ecr.us-east-1.amazonaws.com": {"username": "AWS", "password": "x"}}}"#,
            0o600,
        );
        let c = Credentials::load(&CredentialsConfig {
            skiff_file: Some(sp),
            docker_config: Some(dp),
            aws: None,
            ecr_endpoint: Some("http://127.0.0.1:1/".into()),
        })
        .unwrap();
        assert_eq!(
            statics(&c.sources("both.io")),
            vec![basic("skiff", "1"), basic("docker", "2")]
        );
        let s = c.sources("123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert!(matches!(&s[0], Source::Static { .. }));
        assert!(
            matches!(&s[1], Source::Ecr { spec, .. } if spec.endpoint == "http://127.0.0.1:1/" && spec.keys.is_none())
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn credential_helpers() {
        let d = tmpdir();
        let script = |name: &str, body: &str| {
            let p = d.join(format!("docker-credential-{name}"));
            write(&p, &format!("#!/bin/sh\n{body}\n"), 0o755);
        };
        script(
            "okhelper",
            r#"read host; [ "$1" = get ] || exit 9; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s3"}' "$host" "$host""#,
        );
        script(
            "tokhelper",
            r#"read host; echo '{"ServerURL":"x","Username":"<token>","Secret":"refresh"}'"#,
        );
        script(
            "nonehelper",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        script("badhelper", "echo 'keychain locked' >&2; exit 3");
        // (run_helper finds them on PATH; here they are named by path, PATH stays untouched.)
        let run = |name: &str| {
            let p = d.join(format!("docker-credential-{name}"));
            async move { run_helper_program(&p, "reg.io").await }
        };
        assert_eq!(
            run("okhelper").await.unwrap(),
            Some(basic("u-reg.io", "s3"))
        );
        assert_eq!(
            run("tokhelper").await.unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(run("nonehelper").await.unwrap(), None);
        let e = run("badhelper").await.unwrap_err();
        assert!(
            e.contains("keychain locked") && e.contains("docker-credential-badhelper"),
            "{e}"
        );
        let e = run_helper("absent-skiff-helper", "reg.io")
            .await
            .unwrap_err();
        assert!(e.contains("not found on PATH"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = basic("alice", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok".into())).contains("tok"));
        assert_ne!(c.fingerprint(), basic("alice", "hunter3").fingerprint());
    }
}
