//! The server's TLS identity and its secret files: a CA and a server certificate made on
//! first start (when no certificate is configured), the admin token and the default cluster's
//! join token. Every later start reuses them, so agents keep trusting the pinned CA.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Pem { path: String, msg: String },
    #[error("cannot make certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("tls config: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `data` to `path` (mode `mode`) through a temporary file and a rename, so a crash
/// never leaves half a key behind.
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A fresh secret: 32 random bytes, hex, behind a prefix that says what it is.
pub fn new_secret(prefix: &str) -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the kernel's random source is available");
    format!("{prefix}{}", hex::encode(b))
}

/// SHA-256 of a secret, hex: what the store keeps instead of the secret itself.
pub fn hash_secret(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Reads the token in `path`, or makes one (mode 0600) on first start.
pub fn token_file(path: &Path, prefix: &str) -> Result<(String, bool), TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok((s.trim().to_string(), false)),
        Ok(_) => Err(TlsError::Pem {
            path: path.display().to_string(),
            msg: "empty token file".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = new_secret(prefix);
            write_private(path, format!("{t}\n").as_bytes(), 0o600)?;
            Ok((t, true))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// What the TLS listener serves with.
pub struct Identity {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the CA certificate's DER, hex (None with a user-given certificate whose
    /// chain has no second certificate).
    pub ca_fingerprint: Option<String>,
}

pub struct TlsOptions {
    pub data_dir: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Names and addresses for the generated server certificate beyond the defaults.
    pub sans: Vec<String>,
}

/// Loads the configured certificate, or the generated one, making it on first start.
pub fn identity(opts: &TlsOptions) -> Result<Identity, TlsError> {
    let (cert_path, key_path) = match (&opts.cert, &opts.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let c = opts.data_dir.join("server.pem");
            let k = opts.data_dir.join("server.key");
            if !c.exists() || !k.exists() {
                generate(&opts.data_dir, &opts.sans)?;
            }
            (c, k)
        }
    };
    let chain = load_certs(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.display().to_string(),
        msg: e.to_string(),
    })?;
    let ca_fingerprint = chain.last().filter(|_| chain.len() > 1).map(fingerprint);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        config: Arc::new(config),
        ca_fingerprint,
    })
}

pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(der.as_ref()))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            msg: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// Makes the CA (ca.pem, ca.key) and a server certificate signed by it (server.pem holding
/// [leaf, CA], server.key). The SANs: localhost, 127.0.0.1, ::1, the hostname, and `extra`
/// (the listen address and --tls-san).
fn generate(dir: &Path, extra: &[String]) -> Result<(), TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "skiff control plane CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = nix::unistd::gethostname() {
        sans.push(h.to_string_lossy().into_owned());
    }
    for s in extra {
        if !s.is_empty() && !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(sans)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "skiff server");
    leaf.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;

    write_private(
        &dir.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_private(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), 0o644)?;
    write_private(
        &dir.join("server.key"),
        leaf_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let chain = format!("{}{}", leaf_cert.pem(), ca_cert.pem());
    write_private(&dir.join("server.pem"), chain.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_is_reused_and_fingerprints_the_ca() {
        let dir = std::env::temp_dir().join(format!("skiff-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = TlsOptions {
            data_dir: dir.clone(),
            cert: None,
            key: None,
            sans: vec!["edge.example".into(), "10.0.0.1".into()],
        };
        let a = identity(&opts).unwrap().ca_fingerprint.unwrap();
        let b = identity(&opts).unwrap().ca_fingerprint.unwrap();
        assert_eq!(a, b);
        let ca = load_certs(&dir.join("ca.pem")).unwrap();
        assert_eq!(fingerprint(&ca[0]), a);
        assert_eq!(load_certs(&dir.join("server.pem")).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_are_hashed_and_token_files_kept() {
        let dir = std::env::temp_dir().join(format!("skiff-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (t, made) = token_file(&dir.join("admin.token"), "ska_").unwrap();
        assert!(made && t.starts_with("ska_") && t.len() == 68);
        let (t2, made2) = token_file(&dir.join("admin.token"), "ska_").unwrap();
        assert_eq!((t2.as_str(), made2), (t.as_str(), false));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(hash_secret(&t), t);
        assert_eq!(hash_secret(&t).len(), 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
