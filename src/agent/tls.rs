//! The agent's HTTPS client trusts only the control plane's own CA: one given as a PEM file,
//! or one pinned by the SHA-256 of its DER. With a pin, the server sends its chain
//! [leaf, CA]; a certificate of that chain must have the pinned fingerprint, and the leaf must
//! verify against it as the only root (name, validity, signature), as with a CA file.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::AgentError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(msg: impl std::fmt::Display) -> AgentError {
    AgentError::Tls(msg.to_string())
}

/// The roots in a PEM file (at least one certificate).
pub fn roots_from_pem(path: &Path) -> Result<RootCertStore, AgentError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(format!("ca file {}: {e}", path.display())))?;
    for c in certs {
        let c = c.map_err(|e| tls_err(format!("ca file {}: {e}", path.display())))?;
        roots
            .add(c)
            .map_err(|e| tls_err(format!("ca file {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(tls_err(format!(
            "ca file {}: no certificate in it",
            path.display()
        )));
    }
    Ok(roots)
}

/// Accepts a server whose chain holds the pinned CA and whose leaf that CA signed.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "no certificate of the server's chain has the pinned CA fingerprint".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS settings for the control plane: the CA file when given, else the pin.
pub fn client_config(
    ca_file: Option<&Path>,
    fingerprint: Option<[u8; 32]>,
) -> Result<rustls::ClientConfig, AgentError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let cfg = match (ca_file, fingerprint) {
        (Some(f), _) => builder
            .with_root_certificates(roots_from_pem(f)?)
            .with_no_client_auth(),
        (None, Some(fp)) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa {
                fingerprint: fp,
                provider: provider(),
            }))
            .with_no_client_auth(),
        (None, None) => return Err(tls_err("neither a CA file nor a CA fingerprint")),
    };
    Ok(cfg)
}
