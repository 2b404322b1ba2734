//! [`Secret`]: the 32 random bytes inside every token and credential; redacted, compared in
//! constant time and zeroed on drop.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroize;

use super::digest::constant_time_eq;
use super::{SecretHash, TokenError, SECRET_LEN, SECRET_TEXT_LEN};

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
        SecretHash::of(&self.0)
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
        decoded.zeroize();
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
        self.0.zeroize();
    }
}
