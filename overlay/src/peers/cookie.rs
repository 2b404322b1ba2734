//! The responder's half of WireGuard's cookie mechanism (WireGuard paper, section 5.4.7; kernel
//! WireGuard's `cookie.c`): checking the two MACs every handshake initiation and response ends
//! with, and writing the cookie reply that makes a sender prove it owns its source address.
//!
//! - mac1 = MAC(HASH("mac1----" ‖ our public key), message up to mac1). Anyone who knows our
//!   public key can make it; it only stops stray datagrams cheaply, before any Diffie-Hellman.
//! - cookie = MAC(secret, source IP ‖ port), the secret changing every two minutes; mac2 =
//!   MAC(cookie, message up to mac2). A sender can have a cookie only by receiving it at its
//!   source address, so a valid mac2 proves the address is the sender's: only such messages may
//!   be charged to that address's share ([`limiter`](super::limiter)), and under load only they
//!   are handled.
//! - The cookie reply carries the cookie sealed with XChaCha20-Poly1305 under HASH("cookie--" ‖
//!   our public key), with a fresh 24-byte nonce and the message's mac1 as associated data.
//!
//! Pure: no clock (`now` is passed in), no randomness (the caller's 32 random bytes seed both
//! the two-minute secrets and the nonces), no allocation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blake2::digest::consts::{U16, U32};
use blake2::digest::{Digest, FixedOutput, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::wire::COOKIE_REPLY_LEN;

/// How long one secret (and so every cookie made from it) is valid (the protocol's two
/// minutes).
pub const SECRET_LIFETIME: Duration = Duration::from_secs(120);

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";
/// Both MACs are 16 bytes, at the end of the message: mac1 then mac2.
const MAC_LEN: usize = 16;

/// What the MACs of a handshake message showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Macs {
    /// mac1 is wrong: not a message for us (or not a handshake message at all). Drop it before
    /// any other work.
    BadMac1,
    /// mac1 is right, mac2 is not (no cookie, a stale one, or one for another address).
    Mac1,
    /// Both are right: the sender holds a current cookie for its source address and port.
    Mac2,
}

/// Checks handshake messages' MACs for one identity (our public key) and writes cookie
/// replies. Owned by the receive thread.
pub struct CookieChecker {
    public: [u8; 32],
    /// Keyed with HASH("mac1----" ‖ public): cloned for each message (the key's block is done).
    mac1: Blake2sMac<U16>,
    cookie_key: [u8; 32],
    seed: [u8; 32],
    start: Instant,
    /// Keyed with the secret of period `period` (a period is [`SECRET_LIFETIME`] long, from
    /// `start`).
    secret: Blake2sMac<U16>,
    period: u64,
    /// Nonces are this random prefix and a counter: never the same twice for one checker.
    nonce_prefix: [u8; 16],
    nonces: u64,
}

impl CookieChecker {
    /// A checker for the identity with `public` key. `seed` must be 32 random bytes: the
    /// secrets and the reply nonces derive from it (a fresh seed per checker, so a restart never
    /// reuses a nonce). `now` starts the first secret's two minutes.
    pub fn new(public: &[u8; 32], seed: [u8; 32], now: Instant) -> Self {
        let mut nonce_prefix = [0u8; 16];
        nonce_prefix.copy_from_slice(&derive(&seed, b"nonce---", 0)[..16]);
        Self {
            public: *public,
            mac1: keyed(&hash(LABEL_MAC1, public)),
            cookie_key: hash(LABEL_COOKIE, public),
            seed,
            start: now,
            secret: keyed(&derive(&seed, b"secret--", 0)),
            period: 0,
            nonce_prefix,
            nonces: 0,
        }
    }

    /// The public key this checker checks for.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Checks the MACs of a handshake initiation or response that `from` sent at `now`.
    pub fn check(&mut self, now: Instant, from: SocketAddr, message: &[u8]) -> Macs {
        let Some(mac1_at) = message.len().checked_sub(2 * MAC_LEN) else {
            return Macs::BadMac1;
        };
        let mac2_at = mac1_at + MAC_LEN;
        let mut mac1 = self.mac1.clone();
        Mac::update(&mut mac1, &message[..mac1_at]);
        if mac1.verify_slice(&message[mac1_at..mac2_at]).is_err() {
            return Macs::BadMac1;
        }
        // A sender without a cookie sends zeros: no need to compute one to refuse it.
        if without_cookie(message) {
            return Macs::Mac1;
        }
        let mut mac2 = keyed(&self.cookie(now, from));
        Mac::update(&mut mac2, &message[..mac2_at]);
        if mac2.verify_slice(&message[mac2_at..]).is_ok() {
            Macs::Mac2
        } else {
            Macs::Mac1
        }
    }

    /// Writes into `out` the cookie reply to a handshake message (whose mac1 was valid) that
    /// `from` sent at `now`; returns its length, or `None` if `out` is too short.
    pub fn reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        message: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let out = out.get_mut(..COOKIE_REPLY_LEN)?;
        let mac1_at = message.len().checked_sub(2 * MAC_LEN)?;
        let mac1 = &message[mac1_at..mac1_at + MAC_LEN];
        let sender = message.get(4..8)?;
        let cookie = self.cookie(now, from);
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&self.nonces.to_le_bytes());
        self.nonces += 1;

        let (head, rest) = out.split_at_mut(8);
        head.copy_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        head[4..].copy_from_slice(sender);
        let (nonce_out, sealed) = rest.split_at_mut(24);
        nonce_out.copy_from_slice(&nonce);
        let (text, tag) = sealed.split_at_mut(MAC_LEN);
        text.copy_from_slice(&cookie);
        let cipher = XChaCha20Poly1305::new((&self.cookie_key).into());
        let t = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, text)
            .ok()?;
        tag.copy_from_slice(&t);
        Some(COOKIE_REPLY_LEN)
    }

    /// The cookie for `from` at `now`: MAC(secret of the current period, IP ‖ port).
    fn cookie(&mut self, now: Instant, from: SocketAddr) -> [u8; 16] {
        let period =
            now.saturating_duration_since(self.start).as_secs() / SECRET_LIFETIME.as_secs();
        if period != self.period {
            self.secret = keyed(&derive(&self.seed, b"secret--", period));
            self.period = period;
        }
        let mut m = self.secret.clone();
        match from.ip().to_canonical() {
            std::net::IpAddr::V4(ip) => Mac::update(&mut m, &ip.octets()),
            std::net::IpAddr::V6(ip) => Mac::update(&mut m, &ip.octets()),
        }
        Mac::update(&mut m, &from.port().to_be_bytes());
        m.finalize_fixed().into()
    }
}

/// Whether a handshake message carries no cookie at all (mac2 all zeros, as senders without a
/// cookie send it): cheap, no MAC computed. A message too short for its MACs counts as without.
pub fn without_cookie(message: &[u8]) -> bool {
    let mac2 = message
        .len()
        .checked_sub(MAC_LEN)
        .map_or(&[][..], |at| &message[at..]);
    mac2.iter().all(|&b| b == 0)
}

/// HASH(label ‖ key): BLAKE2s-256.
fn hash(label: &[u8], key: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, label);
    Digest::update(&mut h, key);
    h.finalize().into()
}

/// Keyed BLAKE2s over `parts`, of `N` bytes.
fn mac<N>(key: &[u8], parts: &[&[u8]]) -> blake2::digest::Output<Blake2sMac<N>>
where
    N: blake2::digest::generic_array::ArrayLength<u8>
        + blake2::digest::typenum::IsLessOrEqual<U32>
        + 'static,
    blake2::digest::typenum::LeEq<N, U32>: blake2::digest::typenum::NonZero,
{
    let mut m = <Blake2sMac<N> as KeyInit>::new_from_slice(key).expect("a key of 1 to 32 bytes");
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize_fixed()
}

/// A 16-byte keyed BLAKE2s, its key taken in (`verify_slice` compares in constant time).
fn keyed(key: &[u8]) -> Blake2sMac<U16> {
    <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("a key of 1 to 32 bytes")
}

/// A 32-byte value derived from the seed: MAC(seed, label ‖ counter).
fn derive(seed: &[u8; 32], label: &[u8; 8], counter: u64) -> [u8; 32] {
    mac::<U32>(seed, &[label, &counter.to_le_bytes()]).into()
}

#[cfg(test)]
mod tests;
