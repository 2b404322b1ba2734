//! The control plane's CA certificate as `admin.toml` holds it: [`CertificatePem`].

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::ValueError;
use crate::token::CaDigest;

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// One X.509 certificate in PEM (`-----BEGIN CERTIFICATE-----` …): the control plane's CA as
/// written in `admin.toml`.
///
/// Parsing checks the PEM armour and base64 and that the content is a DER `SEQUENCE`; it does
/// not parse the X.509 structure (rustls does that when the certificate is used). A private key
/// in the text is refused. Equality compares the DER.
#[derive(Clone)]
pub struct CertificatePem {
    pem: String,
    der: Vec<u8>,
}

impl CertificatePem {
    /// Wraps a DER certificate, writing its PEM with 64-character lines.
    pub fn from_der(der: Vec<u8>) -> Self {
        let body = STANDARD.encode(&der);
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        for line in body.as_bytes().chunks(64) {
            // Base64 output is ASCII.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        Self { pem, der }
    }

    /// The PEM text, as given (surrounding whitespace removed, one trailing newline).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The DER encoding of the certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The SHA-256 of the DER: the digest that join tokens carry.
    pub fn digest(&self) -> CaDigest {
        CaDigest::of(&self.der)
    }
}

impl FromStr for CertificatePem {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains("PRIVATE KEY-----") {
            return Err(ValueError::new(
                "contains a private key; only the CA certificate belongs here, keep the key \
                 in the control plane's state_dir",
            ));
        }
        let count = s.matches(PEM_BEGIN).count();
        if count == 0 {
            return Err(ValueError::new(format!(
                "is not a PEM certificate; expected {PEM_BEGIN} ... {PEM_END}"
            )));
        }
        if count > 1 {
            return Err(ValueError::new(format!(
                "contains {count} certificates; expected exactly one, the CA certificate"
            )));
        }
        let start = s.find(PEM_BEGIN).unwrap_or_default() + PEM_BEGIN.len();
        let Some(len) = s[start..].find(PEM_END) else {
            return Err(ValueError::new(format!(
                "the certificate has no {PEM_END} line"
            )));
        };
        let body: String = s[start..start + len]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = STANDARD
            .decode(&body)
            .map_err(|e| ValueError::new(format!("the certificate's base64 is invalid: {e}")))?;
        if der.first() != Some(&0x30) {
            return Err(ValueError::new(
                "the certificate is not DER (it does not start with an ASN.1 SEQUENCE)",
            ));
        }
        let mut pem = s.trim().to_owned();
        pem.push('\n');
        Ok(Self { pem, der })
    }
}

impl PartialEq for CertificatePem {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for CertificatePem {}

impl fmt::Debug for CertificatePem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificatePem({:?})", self.digest())
    }
}
