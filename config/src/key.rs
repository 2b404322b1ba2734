//! WireGuard keys: [`PrivateKey`], [`PublicKey`] and [`PresharedKey`].
//!
//! All three are 32-byte values written in standard base64 with padding (44 characters), exactly
//! as `wg genkey`, `wg pubkey` and `wg genpsk` print them, so keys can be moved between wgmesh and
//! `wg` freely. Secret keys have a redacting `Debug`, are not `Serialize`, and are zeroed when
//! dropped.
//!
//! This module performs no I/O; [`PrivateKey::generate`] and [`PresharedKey::generate`] read the
//! operating system's random number generator.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Length in bytes of every WireGuard key (Curve25519 scalars and points, and preshared keys).
pub const KEY_LEN: usize = 32;

/// What a valid key looks like; appended to every [`KeyError`] message.
const VALID_KEY: &str = "a key is 32 bytes in base64 (44 characters, as `wg genkey` prints)";

/// Why a string is not a key.
///
/// The messages are complete sentences for a human, including the underlying base64 error, so
/// [`std::error::Error::source`] returns `None` (the cause would otherwise be printed twice by
/// error reporters that walk the chain); the cause is still kept in the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not canonical, padded, standard base64.
    #[error("not valid base64 ({0}); {VALID}", VALID = VALID_KEY)]
    Base64(base64::DecodeError),
    /// The text is valid base64 but does not decode to 32 bytes.
    #[error("decodes to {len} bytes; {VALID}", VALID = VALID_KEY)]
    Length {
        /// The number of bytes the text decoded to.
        len: usize,
    },
    /// The public key is a low-order Curve25519 point (such as all zeros): every handshake
    /// with it gives the same, publicly known shared secret, so it can never be a real peer's.
    #[error(
        "is a low-order point (such as all zeros), which no real private key has; use the \
         peer's key as `wg pubkey` prints it"
    )]
    LowOrder,
}

/// Decodes a base64 key after trimming surrounding whitespace (key files end with a newline).
fn decode_key(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let mut bytes = STANDARD.decode(s.trim()).map_err(KeyError::Base64)?;
    let result = if bytes.len() == KEY_LEN {
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&bytes);
        Ok(key)
    } else {
        Err(KeyError::Length { len: bytes.len() })
    };
    bytes.zeroize();
    result
}

fn encode_key(bytes: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(bytes)
}

/// A Curve25519 private key, as `wg genkey` prints it.
///
/// `Debug` prints `PrivateKey(<redacted>)`; there is deliberately no `Display` or `Serialize`, so
/// the only way to write the key out is the explicit [`PrivateKey::to_base64`]. The bytes are
/// zeroed on drop.
#[derive(Clone)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// Generates a new key from the operating system's random number generator, clamped as
    /// `wg genkey` clamps it (RFC 7748 section 5).
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self(bytes)
    }

    /// Wraps 32 raw bytes. The bytes are kept as given (not clamped); X25519 clamps them when
    /// the key is used, so an unclamped key has the same public key as its clamped form.
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The matching public key (X25519 scalar multiplication of the base point), as `wg pubkey`
    /// computes it.
    pub fn public_key(&self) -> PublicKey {
        // `StaticSecret` zeroes its own copy of the bytes on drop.
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// The key in base64, exactly as `wg genkey` prints it (without the trailing newline).
    pub fn to_base64(&self) -> String {
        encode_key(&self.0)
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;

    /// Parses base64 as `wg genkey` prints it; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(Self)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A Curve25519 public key, as `wg pubkey` prints it.
///
/// `Display` is the full base64 text; `Debug` shows only [`PublicKey::short`], which is enough to
/// tell peers apart in logs. Serde reads and writes the base64 string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps 32 raw bytes (a Curve25519 point in its usual little-endian encoding).
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The first 8 characters of the base64 form, for logs.
    pub fn short(&self) -> String {
        let mut s = encode_key(&self.0);
        s.truncate(8);
        s
    }

    /// The key in base64, exactly as `wg pubkey` prints it; the same as `Display`.
    pub fn to_base64(&self) -> String {
        encode_key(&self.0)
    }

    /// Whether the key is a low-order point: one whose X25519 product with any private key is
    /// all zeros (the all-zero key and the other small-order points, in every encoding).
    ///
    /// Tested by computing rather than by a list: a clamped scalar is a multiple of 8, so it
    /// sends every point of order 1, 2, 4 or 8 (on the curve or its twist) to the identity,
    /// which X25519 encodes as zeros; no other point gives zeros with [`LOW_ORDER_PROBE`],
    /// which is not a multiple of the large prime orders. This is the test WireGuard itself
    /// applies to a shared secret, and it covers non-canonical encodings (u >= p, the unused
    /// top bit set) that a fixed list of points would have to spell out one by one.
    pub fn is_low_order(&self) -> bool {
        x25519_dalek::x25519(LOW_ORDER_PROBE, self.0) == [0u8; KEY_LEN]
    }
}

/// The scalar [`PublicKey::is_low_order`] multiplies by: 2^254 once clamped (a multiple of 8,
/// and of neither prime group order, which are near 2^252).
const LOW_ORDER_PROBE: [u8; KEY_LEN] = {
    let mut k = [0u8; KEY_LEN];
    k[31] = 64;
    k
};

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parses base64 as `wg pubkey` prints it; surrounding whitespace is ignored. A low-order
    /// point is refused ([`KeyError::LowOrder`]), so no key read from a file, a request or a
    /// netmap can be one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = Self(decode_key(s)?);
        if key.is_low_order() {
            return Err(KeyError::LowOrder);
        }
        Ok(key)
    }
}

impl TryFrom<String> for PublicKey {
    type Error = KeyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PublicKey> for String {
    fn from(key: PublicKey) -> Self {
        key.to_base64()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_key(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

/// A WireGuard preshared key (symmetric, 32 random bytes), as `wg genpsk` prints it.
///
/// Like [`PrivateKey`]: redacting `Debug`, no `Display` or `Serialize`, zeroed on drop.
#[derive(Clone)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// Generates a new key from the operating system's random number generator, as
    /// `wg genpsk` does.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key in base64, exactly as `wg genpsk` prints it (without the trailing newline).
    pub fn to_base64(&self) -> String {
        encode_key(&self.0)
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;

    /// Parses base64 as `wg genpsk` prints it; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(Self)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl Drop for PresharedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with wireguard-tools: `wg genkey | tee /dev/stderr | wg pubkey`, `wg genpsk`.
    const WG_PRIVATE: &str = "qBBfwRP86dx4dCYnEDFrcrmVFkbanKRbQisfF6fHXlU=";
    const WG_PUBLIC: &str = "3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD10=";
    const WG_PRIVATE_2: &str = "6Phg/EdWIGqAvDvXUO9GRoSz26Sw/uS7i9QZblAVyXQ=";
    const WG_PUBLIC_2: &str = "B/hoHUtqkuO5H66EX9s8YUVnI6xYsgCvIfHoaymYyws=";
    const WG_PSK: &str = "g1aoB2uulhuWrNAedrBtQ/FF3NN9QahxV//V0QBRALs=";

    #[test]
    fn public_key_matches_wg_pubkey() {
        for (private, public) in [(WG_PRIVATE, WG_PUBLIC), (WG_PRIVATE_2, WG_PUBLIC_2)] {
            let key: PrivateKey = private.parse().unwrap();
            assert_eq!(key.public_key().to_string(), public);
            assert_eq!(key.public_key(), public.parse().unwrap());
        }
    }

    #[test]
    fn private_key_round_trips_and_trims_whitespace() {
        let key: PrivateKey = format!("  {WG_PRIVATE}\n").parse().unwrap();
        assert_eq!(key.to_base64(), WG_PRIVATE);
        let again = PrivateKey::from_bytes(*key.as_bytes());
        assert_eq!(again.to_base64(), WG_PRIVATE);
    }

    #[test]
    fn public_and_preshared_keys_round_trip() {
        let public: PublicKey = WG_PUBLIC.parse().unwrap();
        assert_eq!(public.to_string(), WG_PUBLIC);
        assert_eq!(public.to_base64(), WG_PUBLIC);
        assert_eq!(PublicKey::from_bytes(*public.as_bytes()), public);
        assert_eq!(String::from(public), WG_PUBLIC);
        assert_eq!(PublicKey::try_from(WG_PUBLIC.to_string()).unwrap(), public);

        let psk: PresharedKey = WG_PSK.parse().unwrap();
        assert_eq!(psk.to_base64(), WG_PSK);
        assert_eq!(
            PresharedKey::from_bytes(*psk.as_bytes()).to_base64(),
            WG_PSK
        );
    }

    #[test]
    fn generated_private_key_is_clamped_and_usable() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_ne!(a.as_bytes(), b.as_bytes());
        for k in [&a, &b] {
            let bytes = k.as_bytes();
            assert_eq!(bytes[0] & 7, 0);
            assert_eq!(bytes[31] & 128, 0);
            assert_eq!(bytes[31] & 64, 64);
            let text = k.to_base64();
            assert_eq!(text.len(), 44);
            let parsed: PrivateKey = text.parse().unwrap();
            assert_eq!(parsed.public_key(), k.public_key());
        }
        assert_ne!(a.public_key(), b.public_key());
        assert_ne!(
            PresharedKey::generate().as_bytes(),
            PresharedKey::generate().as_bytes()
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let key: PrivateKey = WG_PRIVATE.parse().unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
        let psk: PresharedKey = WG_PSK.parse().unwrap();
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
        let public: PublicKey = WG_PUBLIC.parse().unwrap();
        assert_eq!(public.short(), "3/p3fb4Z");
        assert_eq!(format!("{public:?}"), "PublicKey(3/p3fb4Z)");
    }

    #[test]
    fn malformed_keys_are_rejected_with_what_is_valid() {
        // Missing padding, bad characters, wrong lengths, non-canonical trailing bits.
        let bad_base64 = [
            "3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD10",
            "3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD1!=",
            "3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD11=",
        ];
        for text in bad_base64 {
            let err = text.parse::<PublicKey>().unwrap_err();
            assert!(matches!(err, KeyError::Base64(_)), "{text}: {err:?}");
            assert!(err.to_string().contains("44 characters"), "{err}");
        }
        let err = "AAAA".parse::<PublicKey>().unwrap_err();
        assert_eq!(err, KeyError::Length { len: 3 });
        assert_eq!(
            err.to_string(),
            "decodes to 3 bytes; a key is 32 bytes in base64 (44 characters, as `wg genkey` prints)"
        );
        assert_eq!(
            "".parse::<PrivateKey>().unwrap_err(),
            KeyError::Length { len: 0 }
        );
        let long = STANDARD.encode([1u8; 33]);
        assert_eq!(
            long.parse::<PresharedKey>().unwrap_err(),
            KeyError::Length { len: 33 }
        );
    }

    /// The small-order points of Curve25519 (RFC 7748 section 6.1 asks to check for them), as
    /// listed for X25519 implementations, plus non-canonical encodings of them.
    const LOW_ORDER: [&str; 9] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        // The same points with the top bit set, which X25519 ignores.
        "0000000000000000000000000000000000000000000000000000000000000080",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    ];

    fn hex32(s: &str) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        for hex in LOW_ORDER {
            let key = PublicKey::from_bytes(hex32(hex));
            assert!(key.is_low_order(), "{hex}");
            let err = key.to_base64().parse::<PublicKey>().unwrap_err();
            assert_eq!(err, KeyError::LowOrder, "{hex}");
        }
        let err = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            .parse::<PublicKey>()
            .unwrap_err();
        assert!(err.to_string().contains("low-order point"), "{err}");
        // Real keys, and the simple patterns tests use, are fine.
        for public in [WG_PUBLIC, WG_PUBLIC_2] {
            assert!(!public.parse::<PublicKey>().unwrap().is_low_order());
        }
        for n in 2..=255u8 {
            assert!(!PublicKey::from_bytes([n; KEY_LEN]).is_low_order(), "{n}");
        }
        for _ in 0..32 {
            assert!(!PrivateKey::generate().public_key().is_low_order());
        }
    }

    #[test]
    fn public_key_serde_uses_base64_strings() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Doc {
            key: PublicKey,
        }
        let doc: Doc = toml::from_str(&format!("key = \"{WG_PUBLIC}\"")).unwrap();
        assert_eq!(doc.key.to_string(), WG_PUBLIC);
        assert_eq!(
            toml::to_string(&doc).unwrap().trim(),
            format!("key = \"{WG_PUBLIC}\"")
        );
        let err = toml::from_str::<Doc>("key = \"nope\"").unwrap_err();
        assert!(err.message().contains("44 characters"), "{err}");
    }
}
