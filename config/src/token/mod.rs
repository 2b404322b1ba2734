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
//!
//! This file holds the formats' constants and [`TokenError`]; beside it:
//! - `digest`: [`CaDigest`], [`SecretHash`] and [`constant_time_eq`];
//! - `secret`: [`Secret`], the 32 random bytes inside every token;
//! - `bearer`: the texts: [`JoinToken`], [`AdminToken`], [`HostCredential`].

pub use bearer::{AdminToken, HostCredential, JoinToken};
pub use digest::{constant_time_eq, CaDigest, SecretHash};
pub use secret::Secret;

mod bearer;
mod digest;
mod secret;
#[cfg(test)]
mod tests;

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
