//! The control plane's PKI: its CA, its server certificate, and the TLS configuration of its
//! server. The clients' side (the agent trusts only the CA whose digest is in its join token,
//! the admin CLI only the CA certificate in `admin.toml`) is [`wgmesh_client::pin`].
//!
//! # Files in `state_dir`
//!
//! | file              | content                                                        | mode |
//! |-------------------|----------------------------------------------------------------|------|
//! | `ca.pem`          | the CA certificate (its SHA-256 is the join tokens' digest)     | 0600 |
//! | `ca.key`          | the CA's private key (PKCS#8)                                   | 0600 |
//! | `server.pem`      | the server certificate, signed by the CA                        | 0600 |
//! | `server.key`      | the server's private key (PKCS#8)                               | 0600 |
//! | `server.advertise`| the `advertise` entries `server.pem` was issued for, one a line | 0600 |
//!
//! [`Pki::load_or_create`] creates them all on first start (when neither `ca.pem` nor `ca.key`
//! exists). Afterwards it only loads them, and refuses, naming the file, when one is missing or
//! unreadable: a new CA would invalidate every join token, so it is never made silently. When
//! `advertise` changed (or the server certificate no longer verifies against the CA, for instance
//! because it expired) it issues a new server certificate and key from the same CA.
//!
//! Every file is written to a temporary file in `state_dir` (created with mode 0600, so never
//! readable by others even briefly: every file in a state directory is private), synced, and
//! renamed into place.
//!
//! Keys are ECDSA P-256; all cryptography is *ring*'s.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::{RootCertStore, ServerConfig};
use wgmesh_client::pin::{provider, server_name};
use wgmesh_config::control::Host;
use wgmesh_config::token::CaDigest;

/// File name of the CA certificate in `state_dir`.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA's private key in `state_dir`.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the server certificate in `state_dir`.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// File name of the server's private key in `state_dir`.
pub const SERVER_KEY_FILE: &str = "server.key";
/// File name of the list of names the server certificate was issued for.
pub const SERVER_ADVERTISE_FILE: &str = "server.advertise";

/// Common name of the CA certificate.
const CA_COMMON_NAME: &str = "wgmesh control plane CA";
/// Common name of the server certificate.
const SERVER_COMMON_NAME: &str = "wgmesh control plane";

/// Why the PKI could not be loaded, created or used. Every message names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read, written, synced or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// One of the PKI files is missing while others exist.
    #[error(
        "{} is missing, but {} exists: refusing to create a new CA, which would invalidate \
         every join token; restore the file from a backup, or empty the state directory to \
         start a new cluster",
        path.display(),
        present.display()
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
        /// A file that exists.
        present: PathBuf,
    },
    /// A file exists but does not hold what it should.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Generating a key or certificate failed.
    #[error("cannot generate {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The reason.
        reason: String,
    },
    /// The TLS configuration could not be built from the files.
    #[error("cannot use {} and {} for TLS: {reason}", cert.display(), key.display())]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// The control plane's CA and server certificate, loaded from or created in `state_dir`.
pub struct Pki {
    ca_der: CertificateDer<'static>,
    server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pki({:?})", self.ca_digest())
    }
}

/// The paths of the PKI files in one state directory.
struct Paths {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    advertise: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            server_cert: dir.join(SERVER_CERT_FILE),
            server_key: dir.join(SERVER_KEY_FILE),
            advertise: dir.join(SERVER_ADVERTISE_FILE),
        }
    }
}

impl Pki {
    /// Loads the PKI from `state_dir`, creating a CA and a server certificate for `advertise` on
    /// first start, and re-issuing the server certificate from the same CA when `advertise`
    /// changed. See the [module documentation](self).
    pub fn load_or_create(state_dir: &Path, advertise: &[Host]) -> Result<Self, PkiError> {
        let paths = Paths::new(state_dir);
        let ca_cert_exists = exists(&paths.ca_cert)?;
        let ca_key_exists = exists(&paths.ca_key)?;
        let created = !ca_cert_exists && !ca_key_exists;
        let (ca_der, ca_key) = match (ca_cert_exists, ca_key_exists) {
            (false, false) => {
                let (der, key) = create_ca()?;
                write_file(&paths.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
                // Written last: its presence marks a complete CA.
                write_file(&paths.ca_cert, &pem_of_cert(&der), 0o600)?;
                tracing::info!(path = %paths.ca_cert.display(), "created a new CA");
                (der, key)
            }
            (true, false) => return Err(missing(&paths.ca_key, &paths.ca_cert)),
            (false, true) => return Err(missing(&paths.ca_cert, &paths.ca_key)),
            (true, true) => load_ca(&paths)?,
        };
        let provider = provider();
        let sans = advertise_text(advertise);
        let server = if created {
            None
        } else {
            load_server(&paths, &sans, &ca_der, advertise, &provider)?
        };
        let (server_der, server_key) = match server {
            Some(server) => server,
            None => {
                let (der, key) = issue_server(&ca_key, advertise)?;
                write_file(&paths.server_key, key.serialize_pem().as_bytes(), 0o600)?;
                write_file(&paths.server_cert, &pem_of_cert(&der), 0o600)?;
                write_file(&paths.advertise, sans.as_bytes(), 0o600)?;
                tracing::info!(path = %paths.server_cert.display(), names = %sans.trim_end().replace('\n', ","), "issued a server certificate");
                (der, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            }
        };
        // The chain includes the CA certificate, which pinned clients check against their digest.
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![server_der, ca_der.clone()], server_key)
            })
            .map_err(|e| PkiError::Tls {
                cert: paths.server_cert.clone(),
                key: paths.server_key.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            ca_der,
            server_config: Arc::new(server_config),
        })
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The digest of the CA certificate, as put in join tokens.
    pub fn ca_digest(&self) -> CaDigest {
        CaDigest::of(&self.ca_der)
    }

    /// The TLS configuration of the control plane's server: the server certificate followed by
    /// the CA certificate, no client authentication (callers authenticate with bearer tokens).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }
}

fn missing(path: &Path, present: &Path) -> PkiError {
    PkiError::Missing {
        path: path.to_owned(),
        present: present.to_owned(),
    }
}

fn corrupt(path: &Path, reason: impl ToString) -> PkiError {
    PkiError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(io_error(path))
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(io_error(path))
}

/// Certificate parameters with this common name as the whole distinguished name.
fn named(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params
}

/// The parameters of the CA certificate. The issuer of server certificates is rebuilt from
/// these, so they must stay the same for a CA's lifetime.
fn ca_params() -> CertificateParams {
    let mut params = named(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn generate_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| PkiError::Generate {
        what,
        reason: e.to_string(),
    })
}

fn create_ca() -> Result<(CertificateDer<'static>, KeyPair), PkiError> {
    let key = generate_key("the CA key")?;
    let cert = ca_params()
        .self_signed(&key)
        .map_err(|e| PkiError::Generate {
            what: "the CA certificate",
            reason: e.to_string(),
        })?;
    Ok((cert.der().clone(), key))
}

fn load_ca(paths: &Paths) -> Result<(CertificateDer<'static>, KeyPair), PkiError> {
    let der = parse_cert(&paths.ca_cert)?;
    let key_pem = String::from_utf8(read(&paths.ca_key)?)
        .map_err(|e| corrupt(&paths.ca_key, format!("not a PEM private key ({e})")))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| corrupt(&paths.ca_key, e))?;
    // The raw public key (an uncompressed P-256 point) appears in the certificate's
    // SubjectPublicKeyInfo; if not, the key belongs to another certificate.
    let public = key.public_key_raw();
    if public.is_empty() || !der.windows(public.len()).any(|w| w == public) {
        return Err(corrupt(
            &paths.ca_key,
            format!("it is not the key of {}", paths.ca_cert.display()),
        ));
    }
    Ok((der, key))
}

fn parse_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let der = CertificateDer::from_pem_slice(&read(path)?)
        .map_err(|e| corrupt(path, format!("no PEM certificate ({e})")))?;
    // Check that it parses as an X.509 certificate.
    webpki_check(&der).map_err(|e| corrupt(path, e))?;
    Ok(der)
}

/// Whether `der` parses as a certificate.
fn webpki_check(der: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    RootCertStore::empty().add(der.clone().into_owned())
}

/// The server certificate and key on disk, if they are still right for `advertise` and `ca`;
/// `None` when a new one must be issued. Missing or unreadable files are errors.
fn load_server(
    paths: &Paths,
    sans: &str,
    ca_der: &CertificateDer<'static>,
    advertise: &[Host],
    provider: &Arc<CryptoProvider>,
) -> Result<Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>, PkiError> {
    for path in [&paths.server_cert, &paths.server_key] {
        if !exists(path)? {
            return Err(missing(path, &paths.ca_cert));
        }
    }
    let cert = parse_cert(&paths.server_cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&paths.server_key)?)
        .map_err(|e| corrupt(&paths.server_key, format!("no PEM private key ({e})")))?;
    let issued_for = match fs::read_to_string(&paths.advertise) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&paths.advertise)(e)),
    };
    if issued_for.as_deref() != Some(sans) {
        return Ok(None);
    }
    // Still signed by this CA, valid now, and for every advertised name?
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .map_err(|e| corrupt(&paths.ca_cert, e))?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            .build()
            .map_err(|e| corrupt(&paths.ca_cert, e))?;
    let now = UnixTime::now();
    for host in advertise {
        if let Err(e) = verifier.verify_server_cert(&cert, &[], &server_name(host), &[], now) {
            tracing::warn!(path = %paths.server_cert.display(), %host, error = %e, "server certificate no longer valid; issuing a new one");
            return Ok(None);
        }
    }
    Ok(Some((cert, key)))
}

/// Issues a server certificate for `advertise` signed by the CA, with a new key.
fn issue_server(
    ca_key: &KeyPair,
    advertise: &[Host],
) -> Result<(CertificateDer<'static>, KeyPair), PkiError> {
    let generate = |reason: String| PkiError::Generate {
        what: "the server certificate",
        reason,
    };
    let mut params = named(SERVER_COMMON_NAME);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = advertise
        .iter()
        .map(|host| match host {
            Host::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            Host::Dns(name) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e: rcgen::Error| generate(format!("{name}: {e}"))),
        })
        .collect::<Result<_, _>>()?;
    let key = generate_key("the server key")?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| generate(e.to_string()))?;
    Ok((cert.der().clone(), key))
}

/// `advertise` one entry a line, as kept in `server.advertise`.
fn advertise_text(advertise: &[Host]) -> String {
    advertise.iter().map(|h| format!("{h}\n")).collect()
}

fn pem_of_cert(der: &CertificateDer<'_>) -> Vec<u8> {
    wgmesh_config::control::CertificatePem::from_der(der.to_vec())
        .pem()
        .as_bytes()
        .to_vec()
}

/// Writes `contents` to `path` atomically: a temporary file created with `mode` in the same
/// directory, synced, then renamed over `path`, and the directory synced.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    wgmesh_client::atomic_file::write(path, contents, mode).map_err(|e| PkiError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests;
