//! Digests: [`CaDigest`] (the trust anchor a join token carries) and [`SecretHash`] (what the
//! control plane stores instead of a secret), their hex text, and [`constant_time_eq`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{TokenError, DIGEST_HEX_LEN, DIGEST_LEN};

/// Whether `a` and `b` are equal, taking the same time for every pair of slices of the same
/// length wherever they differ. Slices of different lengths are unequal (their lengths are not
/// secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

fn to_hex(bytes: &[u8; DIGEST_LEN]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(DIGEST_HEX_LEN);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

pub(super) fn from_hex(s: &str) -> Result<[u8; DIGEST_LEN], TokenError> {
    let len = s.chars().count();
    if len != DIGEST_HEX_LEN {
        return Err(TokenError::DigestLength { len });
    }
    let mut nibbles = [0u8; DIGEST_HEX_LEN];
    for (i, c) in s.chars().enumerate() {
        nibbles[i] = c
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or(TokenError::DigestNotHex { position: i + 1 })?;
    }
    let mut out = [0u8; DIGEST_LEN];
    for (i, pair) in nibbles.chunks_exact(2).enumerate() {
        out[i] = (pair[0] << 4) | pair[1];
    }
    Ok(out)
}

pub(super) fn sha256(data: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(data).into()
}

/// The SHA-256 digest of the control plane's CA certificate (its DER encoding): the only trust
/// anchor a joining host has.
///
/// `Display` and `FromStr` use 64 hex characters (lowercase when written). Serde reads and
/// writes that string. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaDigest([u8; DIGEST_LEN]);

impl CaDigest {
    /// The digest of a certificate given in DER.
    pub fn of(ca_der: &[u8]) -> Self {
        Self(sha256(ca_der))
    }

    /// Wraps 32 raw digest bytes.
    pub fn from_bytes(bytes: [u8; DIGEST_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// Whether `cert_der` (a certificate in DER, as a TLS peer presents it) is the certificate
    /// this digest was made from.
    pub fn matches(&self, cert_der: &[u8]) -> bool {
        constant_time_eq(&self.0, &sha256(cert_der))
    }
}

impl FromStr for CaDigest {
    type Err = TokenError;

    /// Parses 64 hex characters; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_hex(s.trim()).map(Self)
    }
}

impl TryFrom<String> for CaDigest {
    type Error = TokenError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CaDigest> for String {
    fn from(digest: CaDigest) -> Self {
        digest.to_string()
    }
}

impl fmt::Display for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaDigest({self})")
    }
}

/// The SHA-256 of a secret's 32 raw bytes: what the control plane stores instead of the secret.
///
/// `==` compares in constant time ([`constant_time_eq`]). `Display`, `FromStr` and serde use 64
/// lowercase hex characters. Not secret: [`SecretHash::short`] is meant for audit logs.
#[derive(Clone, Copy, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretHash([u8; DIGEST_LEN]);

impl SecretHash {
    /// The SHA-256 of `secret`'s bytes; [`Secret::hash`](super::Secret::hash) is
    /// `SecretHash::of(secret.as_bytes())`.
    pub fn of(secret: &[u8]) -> Self {
        Self(sha256(secret))
    }

    /// Wraps 32 raw hash bytes.
    pub fn from_bytes(bytes: [u8; DIGEST_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// Compares in constant time; the same as `==`.
    pub fn ct_eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }

    /// The first 12 hex characters, to name a token or credential in logs without revealing it.
    pub fn short(&self) -> String {
        let mut s = to_hex(&self.0);
        s.truncate(12);
        s
    }
}

impl PartialEq for SecretHash {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Hash for SecretHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl FromStr for SecretHash {
    type Err = TokenError;

    /// Parses 64 hex characters; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_hex(s.trim()).map(Self)
    }
}

impl TryFrom<String> for SecretHash {
    type Error = TokenError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SecretHash> for String {
    fn from(hash: SecretHash) -> Self {
        hash.to_string()
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", self.short())
    }
}
