//! Registry authentication end to end: `skiff run` of a one-container task whose image lives in
//! a registry that wants credentials. Each test starts its own Debian `docker-registry` (htpasswd
//! or token auth) on a free loopback port with its own storage, pushes the busybox test image
//! into it with credentials (tests/auth/oci-push.sh), and stops it at the end. Helpers in
//! tests/auth/: token_server.py (a JWT issuer, RS256 with an x5c header, key and certificate made
//! with openssl here) and fake_ecr.py (GetAuthorizationToken with its own SigV4 check). Needs
//! root, docker-registry, python3, openssl and curl; never contacts anything but 127.0.0.1.
//!
//! Credentials reach skiff through DOCKER_CONFIG (a directory with config.json) and
//! SKIFF_CREDENTIALS (skiff's credentials file); AWS keys through AWS_ACCESS_KEY_ID,
//! AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{stderr, stdout, wait_output, Env};

/// htpasswd lines (bcrypt, cost 5) for alice / "alice-s3cret" and AWS / "AWS-ecr-password-123",
/// made with python3's crypt.crypt(pw, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)).
const ALICE_HTPASSWD: &str = "alice:$2b$05$A8N92/Sr5/Wi0Sjm/mCq/u/0XS1DF0CeGJVIzoUVWXbvrHrpH6jfG";
const ALICE_PASSWORD: &str = "alice-s3cret";
const AWS_HTPASSWD: &str = "AWS:$2b$05$sQRRUei25yL4ssWsewdLMuY86idm2XxQY9yzyFKlrj4HjkPdtkU0u";
const AWS_PASSWORD: &str = "AWS-ecr-password-123";

const ISSUER: &str = "skiff-test-issuer";
const SERVICE: &str = "skiff-test-registry";

fn tool(name: &str) -> String {
    format!("{}/tests/auth/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A background process, killed when dropped.
struct Bg {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bg {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Bg {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Bg {
            child,
            name: name.to_string(),
            log,
        }
    }

    /// Waits until something listens on 127.0.0.1:port.
    fn wait_port(mut self, port: u16) -> Bg {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}) before listening on {port}:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not listen on {port}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }
}

/// A test's own directory (removed at the end) and its registry.
struct Fixture {
    dir: PathBuf,
    port: u16,
    _registry: Option<Bg>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self._registry.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on now. Fixed ports collided with other registries on
/// the machine (a helper's own, a benchmark's), and a pull then succeeded against the wrong one.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Fixture {
    fn new() -> Fixture {
        let port = free_port();
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is not installed (scripts/deps.sh installs it)"
        );
        let dir = std::env::temp_dir().join(format!("skiff-auth-it-{}", common::random_hex()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        Fixture {
            dir,
            port,
            _registry: None,
        }
    }

    fn image(&self) -> String {
        format!("127.0.0.1:{}/busybox:latest", self.port)
    }

    /// Starts docker-registry with this `auth:` section (YAML, indented by two).
    fn start_registry(&mut self, auth: &str) {
        let cfg = self.dir.join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{}\nauth:\n{auth}",
                self.dir.join("data").display(),
                self.port
            ),
        )
        .unwrap();
        let bg = Bg::spawn(
            "docker-registry",
            Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&cfg),
            self.dir.join("registry.log"),
        );
        self._registry = Some(bg.wait_port(self.port));
    }

    fn htpasswd_registry(&mut self, lines: &[&str]) {
        let p = self.dir.join("htpasswd");
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        self.start_registry(&format!(
            "  htpasswd:\n    realm: skiff-test\n    path: {}\n",
            p.display()
        ));
    }

    /// Builds the busybox image and pushes it with these curl credentials (`-u U:P` or
    /// `-t TOKEN`).
    fn push(&self, auth: &[&str]) {
        let layout = self.dir.join("layout");
        let built = Command::new(format!(
            "{}/rootfs-tools/busybox-image.sh",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&layout)
        .output()
        .unwrap();
        assert!(
            built.status.success(),
            "busybox-image.sh: {}",
            stderr(&built)
        );
        let pushed = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rootfs-tools/oci-push.sh"
        ))
        .args(auth)
        .arg(&layout)
        .arg(self.image())
        .output()
        .unwrap();
        assert!(
            pushed.status.success(),
            "push: {}{}\nregistry log:\n{}",
            stdout(&pushed),
            stderr(&pushed),
            std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
        );
    }

    /// Writes `body` to `name` in the test directory with `mode`; returns its path.
    fn file(&self, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = self.dir.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// A DOCKER_CONFIG directory holding `config` as config.json.
    fn docker_config(&self, name: &str, config: &str) -> PathBuf {
        let p = self.file(&format!("{name}/config.json"), config, 0o600);
        p.parent().unwrap().to_path_buf()
    }

    /// `skiff run` (in a fresh state directory) of a task that echoes "ok" from the image,
    /// with `vars` in its environment and nothing else that could carry credentials.
    fn run(&self, vars: &[(&str, &str)]) -> Output {
        self.run_with("", vars)
    }

    /// Like `run`, with `extra` (e.g. `,"repositoryCredentials":{...}`) in the container.
    fn run_with(&self, extra: &str, vars: &[(&str, &str)]) -> Output {
        let env = Env::new();
        let td = env.dir.join("auth.json");
        std::fs::write(
            &td,
            format!(
                r#"{{"family":"auth","networkMode":"none","containerDefinitions":[{{"name":"a","image":"{}","memory":32,"command":["echo","ok"]{extra}}}]}}"#,
                self.image()
            ),
        )
        .unwrap();
        let empty = self.dir.join("no-docker-config");
        std::fs::create_dir_all(&empty).unwrap();
        let mut c = env.command(&["run", td.to_str().unwrap()]);
        c.env("DOCKER_CONFIG", &empty)
            .env("SKIFF_CREDENTIALS", "")
            .env("HOME", &self.dir);
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_ECR",
        ] {
            c.env_remove(k);
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        let child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(120));
        let left = env.leftovers();
        assert!(left.is_empty(), "left behind: {left:?}");
        out
    }

    fn registry_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

#[track_caller]
fn assert_ok(f: &Fixture, o: &Output) {
    assert!(
        o.status.code() == Some(0) && stdout(o).lines().any(|l| l.trim() == "ok"),
        "skiff run failed ({:?})\nstdout: {}\nstderr: {}\nregistry log (tail):\n{}",
        o.status,
        stdout(o),
        stderr(o),
        f.registry_log()
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Exit 125 and one stderr line that carries the pull error with every `needles`.
#[track_caller]
fn assert_pull_error(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(125),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    let line = err
        .lines()
        .find(|l| l.contains("CannotPullContainer"))
        .unwrap_or_else(|| panic!("no CannotPullContainer line in: {err}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} not in the error line: {line}");
    }
    println!("pull error as expected: {line}");
    line.to_string()
}

#[test]
fn basic_auth_from_docker_config() {
    let mut f = Fixture::new();
    f.htpasswd_registry(&[ALICE_HTPASSWD]);
    f.push(&["-u", &format!("alice:{ALICE_PASSWORD}")]);
    let reg = format!("127.0.0.1:{}", f.port);

    // `auth` = base64(user:pass).
    let dc = f.docker_config(
        "dc-auth",
        &format!(
            r#"{{"auths": {{"{reg}": {{"auth": "{}"}}}}}}"#,
            b64(&format!("alice:{ALICE_PASSWORD}"))
        ),
    );
    assert_ok(&f, &f.run(&[("DOCKER_CONFIG", dc.to_str().unwrap())]));

    // username/password, under a URL-shaped key.
    let dc = f.docker_config(
        "dc-userpass",
        &format!(
            r#"{{"auths": {{"http://{reg}/v2/": {{"username": "alice", "password": "{ALICE_PASSWORD}"}}}}}}"#
        ),
    );
    assert_ok(&f, &f.run(&[("DOCKER_CONFIG", dc.to_str().unwrap())]));

    // A wrong password: exit 125 and an error that names the registry and the user.
    let dc = f.docker_config(
        "dc-wrong",
        &format!(
            r#"{{"auths": {{"{reg}": {{"auth": "{}"}}}}}}"#,
            b64("alice:not-the-password")
        ),
    );
    assert_pull_error(
        &f.run(&[("DOCKER_CONFIG", dc.to_str().unwrap())]),
        &[
            &format!("registry {reg} rejected the credentials of user \"alice\""),
            "config.json",
        ],
    );

    // No credentials at all.
    assert_pull_error(
        &f.run(&[]),
        &[&format!(
            "registry {reg} requires authentication and no credentials are configured"
        )],
    );
}

#[test]
fn basic_auth_from_a_credential_helper() {
    let mut f = Fixture::new();
    f.htpasswd_registry(&[ALICE_HTPASSWD]);
    f.push(&["-u", &format!("alice:{ALICE_PASSWORD}")]);
    let reg = format!("127.0.0.1:{}", f.port);
    let calls = f.dir.join("helper-calls");
    f.file(
        "bin/docker-credential-skifftest",
        &format!(
            r#"#!/bin/sh
# docker-credential-skifftest get: the host on stdin, JSON on stdout.
[ "$1" = get ] || exit 2
read -r host
echo "get $host" >> {calls}
if [ "$host" = "{reg}" ]; then
    printf '{{"ServerURL":"%s","Username":"alice","Secret":"{ALICE_PASSWORD}"}}\n' "$host"
else
    echo "credentials not found in native keychain"
    exit 1
fi
"#,
            calls = calls.display()
        ),
        0o755,
    );
    let path = format!(
        "{}:{}",
        f.dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let dc = f.docker_config(
        "dc-helpers",
        &format!(r#"{{"credHelpers": {{"{reg}": "skifftest"}}}}"#),
    );
    assert_ok(
        &f,
        &f.run(&[("DOCKER_CONFIG", dc.to_str().unwrap()), ("PATH", &path)]),
    );
    // Asked once, for this registry.
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        format!("get {reg}\n")
    );

    // The same helper as the default store.
    let dc = f.docker_config("dc-store", r#"{"credsStore": "skifftest"}"#);
    assert_ok(
        &f,
        &f.run(&[("DOCKER_CONFIG", dc.to_str().unwrap()), ("PATH", &path)]),
    );

    // A helper that is not installed: the error says which.
    let dc = f.docker_config(
        "dc-missing",
        &format!(r#"{{"credHelpers": {{"{reg}": "skiff-absent"}}}}"#),
    );
    assert_pull_error(
        &f.run(&[("DOCKER_CONFIG", dc.to_str().unwrap())]),
        &["docker-credential-skiff-absent not found on PATH", &reg],
    );
}

#[test]
fn basic_auth_from_the_skiff_credentials_file() {
    let mut f = Fixture::new();
    f.htpasswd_registry(&[ALICE_HTPASSWD]);
    f.push(&["-u", &format!("alice:{ALICE_PASSWORD}")]);
    let reg = format!("127.0.0.1:{}", f.port);
    let body = format!(
        r#"{{"registries": {{"{reg}": {{"username": "alice", "password": "{ALICE_PASSWORD}"}}}}}}"#
    );
    let p = f.file("skiff/credentials.json", &body, 0o600);
    assert_ok(&f, &f.run(&[("SKIFF_CREDENTIALS", p.to_str().unwrap())]));

    // Readable by others: refused, with the fix in the message.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_pull_error(
        &f.run(&[("SKIFF_CREDENTIALS", p.to_str().unwrap())]),
        &["credentials.json", "mode 0644", "chmod 600"],
    );
}

#[test]
fn repository_credentials_name_a_credential_of_the_skiff_file() {
    let mut f = Fixture::new();
    f.htpasswd_registry(&[ALICE_HTPASSWD]);
    f.push(&["-u", &format!("alice:{ALICE_PASSWORD}")]);
    let param = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:registry-alice";
    let body = format!(
        r#"{{"named": {{"{param}": {{"username": "alice", "password": "{ALICE_PASSWORD}"}}}}}}"#
    );
    let p = f.file("skiff/named.json", &body, 0o600);
    let vars = [("SKIFF_CREDENTIALS", p.to_str().unwrap())];
    // Without repositoryCredentials nothing is configured for this registry: refused.
    assert_pull_error(&f.run(&vars), &["CannotPullContainerAuthError"]);
    let extra = format!(r#","repositoryCredentials":{{"credentialsParameter":"{param}"}}"#);
    assert_ok(&f, &f.run_with(&extra, &vars));
    // A name the file does not have: a clear error naming it.
    let missing = r#","repositoryCredentials":{"credentialsParameter":"no-such-credential"}"#;
    assert_pull_error(&f.run_with(missing, &vars), &["no-such-credential"]);
}

/// A key and self-signed certificate for the token issuer; the certificate is the registry's
/// rootcertbundle and travels in each token's x5c header.
fn issuer_key(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("issuer.key"), dir.join("issuer.pem"));
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={ISSUER}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl: {}", stderr(&o));
    (key, cert)
}

fn token_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bearer_token_auth() {
    let mut f = Fixture::new();
    let token_port = free_port();
    let (key, cert) = issuer_key(&f.dir);
    let log = f.dir.join("tokens.log");
    let _issuer = Bg::spawn(
        "token_server.py",
        Command::new("python3")
            .arg(tool("token_server.py"))
            .arg("serve")
            .args(["--port", &token_port.to_string()])
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .args(["--issuer", ISSUER, "--service", SERVICE])
            .args(["--user", &format!("alice:{ALICE_PASSWORD}")])
            .args(["--refresh-token", "alice-refresh-token"])
            .args(["--expires-in", "2", "--first-invalid", "--log"])
            .arg(&log),
        f.dir.join("token-server.out"),
    )
    .wait_port(token_port);
    f.start_registry(&format!(
        "  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        cert.display()
    ));
    let push_token = Command::new("python3")
        .arg(tool("token_server.py"))
        .arg("mint")
        .arg("--key")
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .args(["--issuer", ISSUER, "--service", SERVICE])
        .args(["--scope", "repository:busybox:pull,push"])
        .output()
        .unwrap();
    assert!(push_token.status.success(), "{}", stderr(&push_token));
    f.push(&["-t", stdout(&push_token).trim()]);
    let reg = format!("127.0.0.1:{}", f.port);
    let dc = f.docker_config(
        "dc-alice",
        &format!(
            r#"{{"auths": {{"{reg}": {{"auth": "{}"}}}}}}"#,
            b64(&format!("alice:{ALICE_PASSWORD}"))
        ),
    );
    let dc = dc.to_str().unwrap();

    // The first token issued is already expired (while announced as valid for 2 s): the
    // registry answers error="invalid_token" and skiff fetches a new one, once.
    assert_ok(&f, &f.run(&[("DOCKER_CONFIG", dc)]));
    let first = token_log(&log);
    let issued: Vec<_> = first.iter().filter(|e| e["result"] == "token").collect();
    assert!(issued.len() >= 2, "{first:?}");
    assert_eq!(issued[0]["expired"], true);
    assert!(issued
        .iter()
        .all(|e| e["user"] == "alice" && e["method"] == "GET"));
    assert_eq!(issued[0]["scope"][0], "repository:busybox:pull");
    assert!(
        f.registry_log()
            .contains("error authorizing context: invalid token"),
        "the registry never refused the expired token:\n{}",
        f.registry_log()
    );

    // After expires_in, a second pull gets a new token and works.
    std::thread::sleep(Duration::from_secs(3));
    assert_ok(&f, &f.run(&[("DOCKER_CONFIG", dc)]));
    let second = token_log(&log);
    assert!(
        second[first.len()..].iter().any(|e| e["result"] == "token"),
        "{second:?}"
    );

    // An identity token (OAuth2 refresh token) is POSTed to the realm.
    let dc_id = f.docker_config(
        "dc-identity",
        &format!(r#"{{"auths": {{"{reg}": {{"identitytoken": "alice-refresh-token"}}}}}}"#),
    );
    let before = token_log(&log).len();
    assert_ok(&f, &f.run(&[("DOCKER_CONFIG", dc_id.to_str().unwrap())]));
    let posts: Vec<_> = token_log(&log)[before..]
        .iter()
        .filter(|e| e["method"] == "POST")
        .cloned()
        .collect();
    assert!(!posts.is_empty(), "no POST to the realm");
    assert!(posts.iter().all(|e| e["grant_type"] == "refresh_token"
        && e["result"] == "token"
        && e["client_id"] == "skiff"));

    // A wrong password: the token server refuses it; the error names it and the user.
    let dc_bad = f.docker_config(
        "dc-bad",
        &format!(r#"{{"auths": {{"{reg}": {{"username": "alice", "password": "wrong"}}}}}}"#),
    );
    assert_pull_error(
        &f.run(&[("DOCKER_CONFIG", dc_bad.to_str().unwrap())]),
        &[
            &format!("token server http://127.0.0.1:{token_port}/token refused the credentials of user \"alice\""),
            &format!("for registry {reg}"),
        ],
    );

    // Anonymous: refused too, and said so.
    assert_pull_error(&f.run(&[]), &["refused anonymous access", &reg]);
}

fn rfc3339(t: SystemTime) -> String {
    // Via date(1): the test needs no date crate.
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let o = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    stdout(&o).trim().to_string()
}

#[test]
fn ecr_get_authorization_token_against_a_fake_endpoint() {
    let mut f = Fixture::new();
    let ecr_port = free_port();
    let st = Command::new("python3")
        .arg(tool("fake_ecr.py"))
        .arg("selftest")
        .output()
        .unwrap();
    assert!(st.status.success(), "fake_ecr.py selftest: {}", stderr(&st));
    let log = f.dir.join("ecr.log");
    let (ak, sk, session) = (
        "AKIDSKIFFTEST",
        "skiff/Secret+Key/EXAMPLE",
        "skiff-session-token",
    );
    let _ecr = Bg::spawn(
        "fake_ecr.py",
        Command::new("python3")
            .arg(tool("fake_ecr.py"))
            .arg("serve")
            .args(["--port", &ecr_port.to_string()])
            .args([
                "--access-key",
                ak,
                "--secret-key",
                sk,
                "--session-token",
                session,
            ])
            .args(["--region", "us-west-2", "--password", AWS_PASSWORD, "--log"])
            .arg(&log),
        f.dir.join("fake-ecr.out"),
    )
    .wait_port(ecr_port);
    f.htpasswd_registry(&[AWS_HTPASSWD]);
    f.push(&["-u", &format!("AWS:{AWS_PASSWORD}")]);
    let reg = format!("127.0.0.1:{}", f.port);
    let ecr_entry = format!(
        r#""{reg}": {{"ecr": {{"region": "us-west-2", "endpoint": "http://127.0.0.1:{ecr_port}/"}}}}"#
    );
    let creds = f.file(
        "skiff/ecr.json",
        &format!(r#"{{"registries": {{{ecr_entry}}}}}"#),
        0o600,
    );
    let creds = creds.to_str().unwrap();
    let entries = || -> Vec<serde_json::Value> { token_log(&log) };

    // AWS keys from the environment: one signed GetAuthorizationToken, its token used as
    // Basic AWS:<password>.
    let keys = [
        ("SKIFF_CREDENTIALS", creds),
        ("AWS_ACCESS_KEY_ID", ak),
        ("AWS_SECRET_ACCESS_KEY", sk),
        ("AWS_SESSION_TOKEN", session),
    ];
    assert_ok(&f, &f.run(&keys));
    let e = entries();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["status"], 200, "{e:?}");
    assert_eq!(e[0]["signature_ok"], true);
    let authz = e[0]["authorization"].as_str().unwrap();
    assert!(
        authz.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ak}/"))
            && authz.contains("/us-west-2/ecr/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="),
        "{authz}"
    );

    // A wrong secret key: the endpoint says so, and so does skiff.
    let bad = [
        ("SKIFF_CREDENTIALS", creds),
        ("AWS_ACCESS_KEY_ID", ak),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ("AWS_SESSION_TOKEN", session),
    ];
    assert_pull_error(
        &f.run(&bad),
        &["ECR registry", &reg, "InvalidSignatureException"],
    );

    // Keys in the credentials file instead of the environment.
    let with_keys = f.file(
        "skiff/ecr-keys.json",
        &format!(
            r#"{{"registries": {{{ecr_entry}}}, "aws": {{"access_key_id": "{ak}", "secret_access_key": "{sk}", "session_token": "{session}"}}}}"#
        ),
        0o600,
    );
    let n = entries().len();
    assert_ok(
        &f,
        &f.run(&[("SKIFF_CREDENTIALS", with_keys.to_str().unwrap())]),
    );
    assert_eq!(entries()[n]["signature_ok"], true);

    // A token supplied in the file (no keys): GetAuthorizationToken is not called.
    let expires = rfc3339(SystemTime::now() + Duration::from_secs(12 * 3600));
    let preset = f.file(
        "skiff/ecr-preset.json",
        &format!(
            r#"{{"registries": {{"{reg}": {{"ecr": {{"region": "us-west-2", "endpoint": "http://127.0.0.1:{ecr_port}/", "authorization_token": "{}", "expires_at": "{expires}"}}}}}}}}"#,
            b64(&format!("AWS:{AWS_PASSWORD}"))
        ),
        0o600,
    );
    let n = entries().len();
    assert_ok(
        &f,
        &f.run(&[("SKIFF_CREDENTIALS", preset.to_str().unwrap())]),
    );
    assert_eq!(entries().len(), n, "the pre-supplied token was not used");

    // An expired pre-supplied token and no keys: a clear error.
    let expired = rfc3339(SystemTime::now() - Duration::from_secs(60));
    let old = f.file(
        "skiff/ecr-expired.json",
        &format!(
            r#"{{"registries": {{"{reg}": {{"ecr": {{"region": "us-west-2", "authorization_token": "{}", "expires_at": "{expired}"}}}}}}}}"#,
            b64(&format!("AWS:{AWS_PASSWORD}"))
        ),
        0o600,
    );
    assert_pull_error(
        &f.run(&[("SKIFF_CREDENTIALS", old.to_str().unwrap())]),
        &["no AWS credentials", &format!("expired at {expired}")],
    );
}
