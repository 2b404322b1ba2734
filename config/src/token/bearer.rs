//! The texts of the secrets: [`JoinToken`] (`WGM1-<digest>-<secret>`), and the bearer tokens
//! [`AdminToken`] (`WGMA1-<secret>`) and [`HostCredential`] (`WGMH1-<secret>`), with the
//! parsing that says what is wrong with a text without quoting it.

use std::fmt;
use std::str::FromStr;

use super::digest::from_hex;
use super::{
    CaDigest, Secret, SecretHash, TokenError, ADMIN_TOKEN_PREFIX, HOST_CREDENTIAL_PREFIX,
    JOIN_FORMAT, JOIN_TOKEN_PREFIX,
};

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
/// [module documentation](crate::token) for the encodings.
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
        let ca_digest = CaDigest::from_bytes(from_hex(digest)?);
        let secret = parts.next().ok_or(TokenError::MissingSecret)?.parse()?;
        Ok(Self { ca_digest, secret })
    }
}

macro_rules! bearer {
    ($(#[$doc:meta])* $name:ident, $prefix:ident, $what:literal, $format:literal) => {
        $(#[$doc])*
        ///
        /// `Debug` is redacted; there is no `Display` or `Serialize`: write it out with the
        /// explicit `expose()`. See the [module documentation](crate::token) for the encoding.
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
