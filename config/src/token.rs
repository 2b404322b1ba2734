//! Bearer secrets of the control plane: [`JoinToken`]s, the [`AdminToken`] and each host's
//! [`HostCredential`], and the [`SecretHash`] the control plane keeps instead of any of them.
//!
//! # Formats
//!
//! Every secret is 32 random bytes ([`SECRET_LEN`]) written in base64url without padding
//! (RFC 4648 section 5: 43 characters from `A-Z a-z 0-9 - _`). The texts are:
//!
//! | secret               | text                                     | length |
//! |----------------------|------------------------------------------|--------|
//! | [`JoinToken`]        | `WGM1-<CA digest>-<secret>`              | 113    |
//! | [`AdminToken`]       | `WGMA1-<secret>`                         | 49     |
//! | [`HostCredential`]   | `WGMH1-<secret>`                         | 49     |
//!
//! where `<CA digest>` ([`CaDigest`]) is the SHA-256 of the DER encoding of the control plane's
//! CA certificate in lowercase hex (64 characters; uppercase is accepted when parsing). As in
//! Docker swarm's `SWMTKN-1-<digest>-<secret>`, a host holding only a join token can authenticate
//! the control plane: it trusts exactly the CA whose certificate hashes to the digest. The secret
//! may itself contain `-`; the digest cannot, so the text splits unambiguously at the first two
//! dashes. Surrounding whitespace (a token file's trailing newline) is ignored when parsing.
//!
//! # At rest
//!
//! The control plane stores only [`SecretHash`]es: the SHA-256 of the 32 raw secret bytes
//! ([`Secret::hash`]). Comparing two hashes with `==` or [`SecretHash::ct_eq`] takes the same
//! time wherever they differ ([`constant_time_eq`]). Looking a hash up in a map is fine too: an
//! attacker cannot choose the hash of a secret, so timing reveals nothing about a valid one.
//!
//! # Never shown
//!
//! Secrets have a redacting `Debug`, no `Display` and no `Serialize`; the only way to write one
//! out is the explicit `expose()`. [`TokenError`]s never quote the text they reject. The bytes
//! are zeroed on drop.
//!
//! This module performs no I/O; the `generate` functions read the operating system's random
//! number generator.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{compiler_fence, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Length in bytes of every secret (join token, admin token, host credential).
pub const SECRET_LEN: usize = 32;
/// Length in characters of a secret in base64url without padding.
pub const SECRET_TEXT_LEN: usize = 43;
/// Length in bytes of a SHA-256 digest ([`CaDigest`], [`SecretHash`]).
pub const DIGEST_LEN: usize = 32;
/// Length in characters of a digest in hex.
pub const DIGEST_HEX_LEN: usize = 64;
/// The prefix, and format version, of a [`JoinToken`].
pub const JOIN_TOKEN_PREFIX: &str = "WGM1";
/// The prefix, and format version, of an [`AdminToken`].
pub const ADMIN_TOKEN_PREFIX: &str = "WGMA1";
/// The prefix, and format version, of a [`HostCredential`].
pub const HOST_CREDENTIAL_PREFIX: &str = "WGMH1";

/// What a join token looks like, for error messages.
const JOIN_FORMAT: &str = "WGM1-<64 hex characters>-<43 base64url characters>";

/// Why a text is not a valid token, credential or digest.
///
/// Messages say exactly what is wrong and never quote the rejected text, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text is empty or only whitespace.
    #[error("the {what} is empty (expected {format})")]
    Empty {
        /// What was expected: "join token", "admin token", "host credential".
        what: &'static str,
        /// The expected format.
        format: &'static str,
    },
    /// The text does not start with the expected prefix.
    #[error("not a wgmesh {what} (expected {format})")]
    WrongPrefix {
        /// What was expected.
        what: &'static str,
        /// The expected format.
        format: &'static str,
    },
    /// The text is another kind of wgmesh secret, e.g. an admin token given as a join token.
    #[error("this is a wgmesh {found}, not {} {what}", article(what))]
    WrongKind {
        /// What was expected.
        what: &'static str,
        /// What the text is.
        found: &'static str,
    },
    /// The text has a wgmesh prefix with a format version this build does not read.
    #[error("{what} format {version} is not supported; this wgmesh reads {supported} tokens")]
    UnsupportedVersion {
        /// What was expected.
        what: &'static str,
        /// The prefix found, such as `WGM2` (not secret).
        version: String,
        /// The prefix this build reads.
        supported: &'static str,
    },
    /// The join token has no `-<secret>` after the digest.
    #[error("the join token has no secret after the CA digest (expected {JOIN_FORMAT})")]
    MissingSecret,
    /// The CA digest does not have 64 characters.
    #[error("CA digest is not 64 hex characters (found {len} characters)")]
    DigestLength {
        /// The number of characters found.
        len: usize,
    },
    /// The CA digest has a character that is not a hex digit.
    #[error("CA digest is not 64 hex characters (character {position} is not a hex digit)")]
    DigestNotHex {
        /// 1-based position of the first offending character within the digest.
        position: usize,
    },
    /// The secret does not have 43 characters.
    #[error(
        "the secret is not 43 base64url characters (found {len} characters; is the token \
         truncated or padded with '='?)"
    )]
    SecretLength {
        /// The number of characters found.
        len: usize,
    },
    /// The secret has 43 characters but is not canonical unpadded base64url.
    #[error(
        "the secret is not base64url (43 characters from A-Z a-z 0-9 - _, as wgmesh prints \
         it): {reason}"
    )]
    SecretEncoding {
        /// What the decoder rejected, e.g. an invalid character at a position.
        reason: String,
    },
}

/// "a" or "an" before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Overwrites `bytes` with zeros in a way the optimiser may not remove.
fn zero(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned and exclusive reference to a `u8`.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

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

fn from_hex(s: &str) -> Result<[u8; DIGEST_LEN], TokenError> {
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

fn sha256(data: &[u8]) -> [u8; DIGEST_LEN] {
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
    /// The SHA-256 of `secret`'s bytes; [`Secret::hash`] is `SecretHash::of(secret.as_bytes())`.
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

/// 32 random bytes: the secret part of every token and credential.
///
/// `Debug` prints `Secret(<redacted>)`; there is no `Display` or `Serialize`, and the bytes are
/// zeroed on drop. `==` compares in constant time.
#[derive(Clone)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// 32 bytes from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// The SHA-256 of the 32 raw bytes, which is what the control plane stores.
    pub fn hash(&self) -> SecretHash {
        SecretHash(sha256(&self.0))
    }

    /// The secret in base64url without padding (43 characters). Handle with care.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl FromStr for Secret {
    type Err = TokenError;

    /// Parses 43 characters of base64url without padding. Whitespace is not trimmed: a secret
    /// is only ever parsed as part of a token, which trims.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let len = s.chars().count();
        if len != SECRET_TEXT_LEN {
            return Err(TokenError::SecretLength { len });
        }
        let mut decoded = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| TokenError::SecretEncoding {
                reason: e.to_string(),
            })?;
        // 43 characters always decode to 32 bytes.
        let result = <[u8; SECRET_LEN]>::try_from(decoded.as_slice())
            .map(Self)
            .map_err(|_| TokenError::SecretLength { len });
        zero(&mut decoded);
        result
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zero(&mut self.0);
    }
}

/// Which wgmesh secret a text looks like, from its prefix, for [`TokenError::WrongKind`].
fn kind_of(s: &str) -> Option<&'static str> {
    let prefix = s.split('-').next().unwrap_or(s);
    match prefix {
        JOIN_TOKEN_PREFIX => Some("join token"),
        ADMIN_TOKEN_PREFIX => Some("admin token"),
        HOST_CREDENTIAL_PREFIX => Some("host credential"),
        _ => None,
    }
}

/// `WGM<n>` or `WGMA<n>` / `WGMH<n>` with a number other than the supported one.
fn other_version(s: &str, family: &str) -> Option<String> {
    let prefix = s.split('-').next().unwrap_or(s);
    let digits = prefix.strip_prefix(family)?;
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())).then(|| prefix.to_owned())
}

/// A join token, `WGM1-<CA digest>-<secret>`: lets a host join the cluster once (or more, when
/// the control plane marks it reusable) and tells it which CA to trust.
///
/// `Display` writes the full token; `Debug` shows only the CA digest. See the
/// [module documentation](self) for the encodings.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The SHA-256 of the DER of the control plane's CA certificate.
    pub ca_digest: CaDigest,
    /// The secret the control plane checks against its stored [`SecretHash`].
    pub secret: Secret,
}

impl JoinToken {
    /// A new token with a fresh random secret, for the CA whose certificate is `ca_der`.
    pub fn generate(ca_der: &[u8]) -> Self {
        Self {
            ca_digest: CaDigest::of(ca_der),
            secret: Secret::generate(),
        }
    }

    /// The hash of the secret: what the control plane stores for this token.
    pub fn secret_hash(&self) -> SecretHash {
        self.secret.hash()
    }

    /// The full token text, `WGM1-<digest>-<secret>`; the same as `Display`.
    pub fn expose(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for JoinToken {
    /// Writes the full token, secret included, as `wgmesh token create` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{JOIN_TOKEN_PREFIX}-{}-{}",
            self.ca_digest,
            self.secret.expose()
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &self.secret)
            .finish()
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    /// Parses `WGM1-<64 hex>-<43 base64url>`; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "join token";
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenError::Empty {
                what: WHAT,
                format: JOIN_FORMAT,
            });
        }
        let mut parts = s.splitn(3, '-');
        let prefix = parts.next().unwrap_or_default();
        if prefix != JOIN_TOKEN_PREFIX {
            if let Some(found) = kind_of(s) {
                return Err(TokenError::WrongKind { what: WHAT, found });
            }
            if let Some(version) = other_version(s, "WGM") {
                return Err(TokenError::UnsupportedVersion {
                    what: WHAT,
                    version,
                    supported: JOIN_TOKEN_PREFIX,
                });
            }
            return Err(TokenError::WrongPrefix {
                what: WHAT,
                format: JOIN_FORMAT,
            });
        }
        let digest = parts.next().unwrap_or_default();
        let ca_digest = CaDigest(from_hex(digest)?);
        let secret = parts.next().ok_or(TokenError::MissingSecret)?.parse()?;
        Ok(Self { ca_digest, secret })
    }
}

macro_rules! bearer {
    ($(#[$doc:meta])* $name:ident, $prefix:ident, $what:literal, $format:literal) => {
        $(#[$doc])*
        ///
        /// `Debug` is redacted; there is no `Display` or `Serialize`: write it out with the
        /// explicit `expose()`. See the [module documentation](self) for the encoding.
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Secret);

        impl $name {
            /// A new one with a fresh random secret.
            pub fn generate() -> Self {
                Self(Secret::generate())
            }

            /// Wraps an existing secret.
            pub fn from_secret(secret: Secret) -> Self {
                Self(secret)
            }

            /// The secret.
            pub fn secret(&self) -> &Secret {
                &self.0
            }

            /// The hash of the secret: what the control plane stores.
            pub fn hash(&self) -> SecretHash {
                self.0.hash()
            }

            /// The full text, prefix included, as it is sent and kept in files.
            pub fn expose(&self) -> String {
                format!("{}-{}", $prefix, self.0.expose())
            }
        }

        impl FromStr for $name {
            type Err = TokenError;

            /// Parses the text written by `expose()`; surrounding whitespace is ignored.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.trim();
                if s.is_empty() {
                    return Err(TokenError::Empty {
                        what: $what,
                        format: $format,
                    });
                }
                let Some(secret) = s.strip_prefix($prefix).and_then(|rest| rest.strip_prefix('-'))
                else {
                    if s == $prefix {
                        return Err(TokenError::SecretLength { len: 0 });
                    }
                    if let Some(found) = kind_of(s).filter(|&found| found != $what) {
                        return Err(TokenError::WrongKind { what: $what, found });
                    }
                    let family = $prefix.trim_end_matches(|c: char| c.is_ascii_digit());
                    if let Some(version) = other_version(s, family) {
                        return Err(TokenError::UnsupportedVersion {
                            what: $what,
                            version,
                            supported: $prefix,
                        });
                    }
                    return Err(TokenError::WrongPrefix {
                        what: $what,
                        format: $format,
                    });
                };
                secret.parse().map(Self)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

bearer!(
    /// The admin token, `WGMA1-<secret>`: authorises admin calls (creating join tokens, listing
    /// and removing nodes). The control plane writes it to `admin.toml` on first start.
    AdminToken,
    ADMIN_TOKEN_PREFIX,
    "admin token",
    "WGMA1-<43 base64url characters>"
);

bearer!(
    /// A host's own credential, `WGMH1-<secret>`: issued when the host joins, kept by the
    /// agent (mode 0600) in its state directory, and sent with every call the host makes; it
    /// lets the host read its own netmap and change its own record only.
    HostCredential,
    HOST_CREDENTIAL_PREFIX,
    "host credential",
    "WGMH1-<43 base64url characters>"
);

#[cfg(test)]
mod tests {
    use super::*;

    const CA_DER: &[u8] = b"\x30\x82\x01\x0anot really a certificate";
    /// SHA-256 of `CA_DER`, from `printf '\x30\x82\x01\x0anot really a certificate' | sha256sum`.
    const CA_HEX: &str = "9d312c26526358fdc6e256e66ce8657f3a9a2e15f196ec3f882b768c52385ff7";
    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    fn token_text() -> String {
        format!("WGM1-{}-{SECRET}", CaDigest::of(CA_DER))
    }

    #[test]
    fn join_token_round_trips() {
        let token = JoinToken::generate(CA_DER);
        let text = token.to_string();
        assert_eq!(text.len(), 113);
        assert!(text.starts_with("WGM1-"), "{text}");
        let parsed: JoinToken = text.parse().unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.secret_hash(), token.secret_hash());
        assert!(parsed.ca_digest.matches(CA_DER));
        assert!(!parsed.ca_digest.matches(b"another certificate"));
        // Trailing newline of a token file, uppercase hex.
        let upper = format!(
            "WGM1-{}-{SECRET}\n",
            CaDigest::of(CA_DER).to_string().to_uppercase()
        );
        let parsed: JoinToken = upper.parse().unwrap();
        assert_eq!(parsed.to_string(), token_text());
        assert_eq!(parsed.secret.as_bytes()[..4], [0, 1, 2, 3]);
        // Two generated tokens differ.
        assert_ne!(JoinToken::generate(CA_DER), token);
    }

    #[test]
    fn secrets_with_dashes_parse() {
        // 0xfb 0xef 0xbe ... encodes to "----" in base64url.
        let secret = Secret::from_bytes([0xfb; SECRET_LEN]);
        let token = JoinToken {
            ca_digest: CaDigest::of(CA_DER),
            secret,
        };
        let text = token.to_string();
        assert!(text[70..].contains('-'), "{text}");
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
    }

    #[track_caller]
    fn join_error(text: &str, needle: &str) -> TokenError {
        let err = text.parse::<JoinToken>().expect_err(text);
        let shown = err.to_string();
        assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
        // Never echo the secret (or any of the input) back.
        if text.len() > 8 {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains(&SECRET[..10]), "{shown}");
        }
        err
    }

    #[test]
    fn every_malformed_join_token_says_what_is_wrong() {
        let digest = CaDigest::of(CA_DER).to_string();
        assert!(matches!(
            join_error("  \n", "the join token is empty"),
            TokenError::Empty { .. }
        ));
        join_error(
            &format!("SWMTKN-1-{digest}-{SECRET}"),
            "not a wgmesh join token (expected WGM1-<64 hex characters>-<43 base64url characters>)",
        );
        join_error("hello", "not a wgmesh join token (expected WGM1-");
        join_error(
            &format!("wgm1-{digest}-{SECRET}"),
            "not a wgmesh join token",
        );
        join_error(
            &format!("WGM2-{digest}-{SECRET}"),
            "join token format WGM2 is not supported; this wgmesh reads WGM1 tokens",
        );
        join_error(
            &format!("WGMA1-{SECRET}"),
            "this is a wgmesh admin token, not a join token",
        );
        join_error(
            &format!("WGMH1-{SECRET}"),
            "this is a wgmesh host credential, not a join token",
        );
        join_error(
            "WGM1",
            "CA digest is not 64 hex characters (found 0 characters)",
        );
        join_error(
            &format!("WGM1-{}-{SECRET}", &digest[..63]),
            "CA digest is not 64 hex characters (found 63 characters)",
        );
        join_error(
            &format!("WGM1-{digest}0-{SECRET}"),
            "CA digest is not 64 hex characters (found 65 characters)",
        );
        join_error(
            &format!("WGM1-{}g-{SECRET}", &digest[..63]),
            "CA digest is not 64 hex characters (character 64 is not a hex digit)",
        );
        join_error(
            &format!("WGM1-{}é-{SECRET}", &digest[..63]),
            "character 64 is not a hex digit",
        );
        join_error(&format!("WGM1-{digest}"), "the join token has no secret");
        join_error(
            &format!("WGM1-{digest}-"),
            "the secret is not 43 base64url characters (found 0 characters",
        );
        join_error(
            &format!("WGM1-{digest}-{}", &SECRET[..42]),
            "found 42 characters; is the token truncated",
        );
        join_error(&format!("WGM1-{digest}-{SECRET}="), "found 44 characters");
        // Standard base64's '+' and '/' are not base64url.
        let plus = format!("+{}", &SECRET[1..]);
        join_error(
            &format!("WGM1-{digest}-{plus}"),
            "the secret is not base64url",
        );
        let space = format!("{} {}", &SECRET[..20], &SECRET[21..]);
        join_error(
            &format!("WGM1-{digest}-{space}"),
            "the secret is not base64url",
        );
        // Non-canonical: the last character carries bits beyond the 32 bytes.
        let last = format!("{}9", &SECRET[..42]);
        join_error(
            &format!("WGM1-{digest}-{last}"),
            "the secret is not base64url",
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let token: JoinToken = token_text().parse().unwrap();
        let shown = format!("{token:?}");
        assert_eq!(
            shown,
            format!(
                "JoinToken {{ ca_digest: CaDigest({}), secret: Secret(<redacted>) }}",
                token.ca_digest
            )
        );
        assert!(!shown.contains(SECRET));
        let admin = AdminToken::generate();
        assert_eq!(format!("{admin:?}"), "AdminToken(<redacted>)");
        let host = HostCredential::generate();
        assert_eq!(format!("{host:?}"), "HostCredential(<redacted>)");
        assert_eq!(format!("{:?}", Secret::generate()), "Secret(<redacted>)");
        let hash = token.secret_hash();
        assert_eq!(
            format!("{hash:?}"),
            format!("SecretHash({}…)", hash.short())
        );
        assert_eq!(hash.short().len(), 12);
    }

    #[test]
    fn hashes_are_stable_sha256_of_the_raw_secret() {
        let token: JoinToken = token_text().parse().unwrap();
        // sha256 of bytes 0..=31: `python3 -c 'import hashlib;print(hashlib.sha256(bytes(range(32))).hexdigest())'`.
        let expected = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd";
        assert_eq!(token.secret_hash().to_string(), expected);
        assert_eq!(token.secret_hash(), expected.parse().unwrap());
        assert_eq!(CaDigest::of(CA_DER).to_string(), CA_HEX);
        let admin: AdminToken = format!("WGMA1-{SECRET}").parse().unwrap();
        assert_eq!(admin.hash(), token.secret_hash());
        assert!(admin.hash().ct_eq(&token.secret_hash()));
        assert_eq!(SecretHash::of(token.secret.as_bytes()), token.secret_hash());
        assert_ne!(admin.hash(), HostCredential::generate().hash());
        let json = serde_json_like(&token.secret_hash());
        assert_eq!(json, expected);
    }

    /// Serde goes through the hex string (checked without a JSON dependency).
    fn serde_json_like(hash: &SecretHash) -> String {
        String::from(*hash)
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"bbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn admin_and_host_credentials_round_trip_and_reject_each_other() {
        let admin = AdminToken::generate();
        let text = admin.expose();
        assert_eq!(text.len(), 49);
        assert!(text.starts_with("WGMA1-"), "{text}");
        assert_eq!(format!("{text}\n").parse::<AdminToken>().unwrap(), admin);

        let host = HostCredential::generate();
        let text = host.expose();
        assert!(text.starts_with("WGMH1-"), "{text}");
        assert_eq!(text.parse::<HostCredential>().unwrap(), host);

        let err = host.expose().parse::<AdminToken>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "this is a wgmesh host credential, not an admin token"
        );
        let err = token_text().parse::<HostCredential>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "this is a wgmesh join token, not a host credential"
        );
        let err = "".parse::<AdminToken>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the admin token is empty (expected WGMA1-<43 base64url characters>)"
        );
        let err = format!("Bearer {SECRET}")
            .parse::<AdminToken>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a wgmesh admin token (expected WGMA1-<43 base64url characters>)"
        );
        let err = format!("WGMA2-{SECRET}").parse::<AdminToken>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "admin token format WGMA2 is not supported; this wgmesh reads WGMA1 tokens"
        );
        let err = format!("WGMA1-{}", &SECRET[1..])
            .parse::<AdminToken>()
            .unwrap_err();
        assert_eq!(err, TokenError::SecretLength { len: 42 });
        assert_eq!(
            "WGMA1".parse::<AdminToken>().unwrap_err(),
            TokenError::SecretLength { len: 0 }
        );
        assert!(matches!(
            "WGMA1_x".parse::<AdminToken>(),
            Err(TokenError::WrongPrefix { .. })
        ));
    }

    #[test]
    fn ca_digest_parses_and_rejects() {
        let d = CaDigest::of(CA_DER);
        assert_eq!(d.to_string().parse::<CaDigest>().unwrap(), d);
        assert_eq!(format!("{d:?}"), format!("CaDigest({CA_HEX})"));
        assert_eq!(
            "abc".parse::<CaDigest>().unwrap_err().to_string(),
            "CA digest is not 64 hex characters (found 3 characters)"
        );
        assert_eq!(
            CaDigest::try_from(String::from(d)).unwrap().as_bytes(),
            d.as_bytes()
        );
    }
}
