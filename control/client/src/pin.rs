//! How clients of the control plane trust it: an agent trusts only the CA whose digest is in its
//! join token (pinned), the admin CLI only the CA certificate in `admin.toml`. Neither trusts any
//! system root.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use rustls::{OtherError, SignatureScheme};
use wgmesh_config::control::Host;
use wgmesh_config::token::CaDigest;

/// A TLS client configuration that trusts only a server whose certificate chain contains the CA
/// certificate with this `digest` (from a join token), and whose certificate that CA signed for
/// the name connected to. No other root is trusted.
pub fn client_config_pinned(digest: CaDigest) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = PinnedCaVerifier {
        digest,
        algorithms: provider.signature_verification_algorithms,
        provider: Arc::clone(&provider),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring's default provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS client configuration that trusts only the CA certificate `ca_der` (the one in
/// `admin.toml`), with the usual verification of the server's certificate and name.
pub fn client_config_with_ca(ca_der: &[u8]) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server name a client connecting to `host` verifies.
pub fn server_name(host: &Host) -> ServerName<'static> {
    match host {
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Host::Dns(name) => ServerName::try_from(name.as_str().to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())),
    }
}

/// The error a pinned client reports when the server's CA is not the one in the join token.
///
/// Its `Debug` is its message, since rustls shows this error with `Debug`.
#[derive(thiserror::Error)]
#[error(
    "the control plane's certificate chain has no CA certificate matching the join token's \
     CA digest {0}: wrong control plane, or a token from another cluster"
)]
pub struct CaDigestMismatch(pub CaDigest);

impl std::fmt::Debug for CaDigestMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Verifies a server's certificate against the CA it presents, if that CA has the pinned digest.
#[derive(Debug)]
struct PinnedCaVerifier {
    digest: CaDigest,
    algorithms: WebPkiSupportedAlgorithms,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| self.digest.matches(c)) else {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(CaDigestMismatch(self.digest))),
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// ring's crypto provider, the one every TLS configuration of wgmesh uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}
