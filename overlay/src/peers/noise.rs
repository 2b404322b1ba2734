//! The one file that names boringtun's types: a thin adapter over `boringtun::noise::Tunn` that
//! maps its catch-all `TunnResult` to a small result type per call, hides the "call again with an
//! empty datagram" convention behind [`Tunnel::flush_queued`], and leaves cryptokey routing to the
//! caller by handing back the inner source address.
//!
//! No I/O. boringtun reads its own clock inside `update_timers` (see docs/adr/001-boringtun-clock.md).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use wgmesh_config::{PresharedKey, PrivateKey, PublicKey};

/// boringtun's rate limiter demands cookies after this many handshake messages between resets:
/// never. The receive thread's own [`CookieChecker`](super::cookie::CookieChecker) decides when
/// to demand cookies (one secret, one decision: two limiters would each refuse the other's
/// cookies); boringtun's then only checks mac1 again.
const NEVER_UNDER_LOAD: u64 = u64::MAX;

/// The host's own identity, shared by all tunnels: its static key and boringtun's rate limiter
/// (which only checks mac1: see [`NEVER_UNDER_LOAD`]).
pub struct LocalIdentity {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
}

impl LocalIdentity {
    /// Builds the identity from the host's private key.
    pub fn new(key: &PrivateKey) -> Self {
        let secret = x25519::StaticSecret::from(*key.as_bytes());
        let public = x25519::PublicKey::from(&secret);
        let rate_limiter = Arc::new(RateLimiter::new(&public, NEVER_UNDER_LOAD));
        Self {
            secret,
            public,
            rate_limiter,
        }
    }

    /// The host's public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.public.to_bytes())
    }

    /// Checks a handshake initiation's mac1 and decrypts the initiator's static public key, which
    /// identifies the peer. (Cookies are the receive thread's; a cookie reply from boringtun,
    /// never produced with [`NEVER_UNDER_LOAD`], would be written to `out`.)
    pub fn identify_initiator(&self, from: IpAddr, datagram: &[u8], out: &mut [u8]) -> Identify {
        match self.rate_limiter.verify_packet(Some(from), datagram, out) {
            Ok(Packet::HandshakeInit(init)) => {
                match parse_handshake_anon(&self.secret, &self.public, &init) {
                    Ok(half) => Identify::Peer(PublicKey::from_bytes(half.peer_static_public)),
                    Err(e) => Identify::Invalid(ProtocolError(e)),
                }
            }
            Ok(_) => Identify::Invalid(ProtocolError(WireGuardError::WrongPacketType)),
            Err(TunnResult::WriteToNetwork(cookie)) => Identify::CookieReply(cookie.len()),
            Err(TunnResult::Err(e)) => Identify::Invalid(ProtocolError(e)),
            Err(_) => Identify::Invalid(ProtocolError(WireGuardError::InvalidPacket)),
        }
    }
}

/// Why boringtun refused a message (a replayed counter, a bad MAC, a wrong key, …), kept for
/// logs and tests without naming boringtun outside this file.
#[derive(Debug)]
pub struct ProtocolError(pub WireGuardError);

/// What [`LocalIdentity::identify_initiator`] found.
#[derive(Debug)]
pub enum Identify {
    /// The initiation is authentic and comes from this static key.
    Peer(PublicKey),
    /// Under load: send the cookie reply of this length (written to `out`) back to the sender.
    CookieReply(usize),
    /// Not a valid initiation for us.
    Invalid(ProtocolError),
}

/// One WireGuard tunnel to one peer.
pub struct Tunnel {
    tunn: Tunn,
}

/// The result of [`Tunnel::encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// A data message of this length was written to `out`.
    Data(usize),
    /// No session yet: the packet was queued inside the tunnel and a handshake initiation of this
    /// length was written to `out`.
    HandshakeInit(usize),
    /// No session yet and a handshake is already in flight: the packet was queued.
    Queued,
    /// The packet could not be sealed.
    Failed,
}

/// The result of [`Tunnel::decapsulate`].
#[derive(Debug)]
pub enum Decapsulated {
    /// An inner IP packet of this length was written to `out`; `source` is its source address, to
    /// be checked against the peer's allowed IPs by the caller.
    Packet {
        /// Length of the packet at the start of `out`.
        len: usize,
        /// The inner packet's source address.
        source: IpAddr,
    },
    /// A handshake message, cookie or keepalive of this length to send back to the peer was written
    /// to `out`; afterwards call [`Tunnel::flush_queued`] until it returns `None`.
    Reply(usize),
    /// Under load: a cookie reply of this length was written to `out`, to send back to the
    /// datagram's source. The datagram was not authenticated.
    Cookie(usize),
    /// Valid, nothing to deliver (a keepalive or a cookie reply).
    Nothing,
    /// Rejected by the protocol.
    Error(ProtocolError),
}

/// The result of [`Tunnel::tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Send the message of this length written to `out` to the peer's endpoint.
    Send(usize),
    /// The session expired (no handshake for too long); the tunnel starts over on demand.
    Expired,
    /// Nothing to do.
    Idle,
}

impl Tunnel {
    /// Creates a tunnel to `peer`. `index` is the 24-bit local index that receiver indexes of
    /// incoming messages will carry (shifted left by 8).
    pub fn new(
        local: &LocalIdentity,
        peer: &PublicKey,
        preshared: Option<&PresharedKey>,
        persistent_keepalive: Option<u16>,
        index: u32,
    ) -> Self {
        let tunn = Tunn::new(
            local.secret.clone(),
            x25519::PublicKey::from(*peer.as_bytes()),
            preshared.map(|k| *k.as_bytes()),
            persistent_keepalive,
            index,
            Some(local.rate_limiter.clone()),
        );
        Self { tunn }
    }

    /// Seals an inner IP packet. `out` must hold `packet.len() + 32` bytes and at least 148.
    #[inline]
    pub fn encapsulate(&mut self, packet: &[u8], out: &mut [u8]) -> Encapsulated {
        match self.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(b) if b.first() == Some(&4) => Encapsulated::Data(b.len()),
            TunnResult::WriteToNetwork(b) => Encapsulated::HandshakeInit(b.len()),
            TunnResult::Done => Encapsulated::Queued,
            _ => Encapsulated::Failed,
        }
    }

    /// Opens a datagram from `from`. `out` must be at least as long as the datagram.
    #[inline]
    pub fn decapsulate(&mut self, from: IpAddr, datagram: &[u8], out: &mut [u8]) -> Decapsulated {
        match self.tunn.decapsulate(Some(from), datagram, out) {
            TunnResult::WriteToTunnelV4(b, src) => Decapsulated::Packet {
                len: b.len(),
                source: IpAddr::V4(src),
            },
            TunnResult::WriteToTunnelV6(b, src) => Decapsulated::Packet {
                len: b.len(),
                source: IpAddr::V6(src),
            },
            // Under load boringtun answers with a cookie reply, which proves nothing about the
            // sender: it must not move the endpoint or release queued packets.
            TunnResult::WriteToNetwork(b) if b.first() == Some(&3) => Decapsulated::Cookie(b.len()),
            TunnResult::WriteToNetwork(b) => Decapsulated::Reply(b.len()),
            // A valid cookie reply (it matched our last message's mac1): the peer is under load
            // and dropped that message. Send it again now, with mac2, rather than in 5 s.
            TunnResult::Done if datagram.first() == Some(&3) => {
                match self.tunn.format_handshake_initiation(out, true) {
                    TunnResult::WriteToNetwork(b) => Decapsulated::Reply(b.len()),
                    _ => Decapsulated::Nothing,
                }
            }
            TunnResult::Done => Decapsulated::Nothing,
            TunnResult::Err(e) => Decapsulated::Error(ProtocolError(e)),
        }
    }

    /// After a handshake completes, the packets queued while there was no session come out one by
    /// one, sealed, into `out`. Returns the length of the next one, or `None` when none is left.
    pub fn flush_queued(&mut self, out: &mut [u8]) -> Option<usize> {
        match self.tunn.decapsulate(None, &[], out) {
            TunnResult::WriteToNetwork(b) => Some(b.len()),
            _ => None,
        }
    }

    /// Runs the protocol's timers (rekey, handshake retry, keepalives, expiry). Returns the length
    /// of a message to send written to `out`, if any. Call every 100–250 ms.
    pub fn tick(&mut self, out: &mut [u8]) -> Tick {
        match self.tunn.update_timers(out) {
            TunnResult::WriteToNetwork(b) => Tick::Send(b.len()),
            TunnResult::Err(WireGuardError::ConnectionExpired) => Tick::Expired,
            _ => Tick::Idle,
        }
    }

    /// Starts a handshake now (when the peer's endpoint becomes known), unless one is in flight.
    pub fn initiate(&mut self, out: &mut [u8]) -> Option<usize> {
        match self.tunn.format_handshake_initiation(out, false) {
            TunnResult::WriteToNetwork(b) => Some(b.len()),
            _ => None,
        }
    }

    /// Time since the last completed handshake, if there was one.
    pub fn since_last_handshake(&self) -> Option<Duration> {
        self.tunn.time_since_last_handshake()
    }
}

/// Formats an endpoint's IP for the rate limiter and `decapsulate`.
pub fn source_ip(from: SocketAddr) -> IpAddr {
    from.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (LocalIdentity, LocalIdentity, Tunnel, Tunnel) {
        let a = LocalIdentity::new(&PrivateKey::generate());
        let b = LocalIdentity::new(&PrivateKey::generate());
        let ta = Tunnel::new(&a, &b.public_key(), None, None, 1);
        let tb = Tunnel::new(&b, &a.public_key(), None, None, 2);
        (a, b, ta, tb)
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let len = 20 + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..].copy_from_slice(payload);
        p
    }

    #[test]
    fn handshake_then_data_both_ways() {
        let (_a, b, mut ta, mut tb) = pair();
        let from = "198.18.0.1".parse().unwrap();
        let mut buf = vec![0u8; 2048];
        let mut out = vec![0u8; 2048];
        let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 2], b"hello");

        // No session: the packet is queued and an initiation comes out.
        let Encapsulated::HandshakeInit(n) = ta.encapsulate(&packet, &mut buf) else {
            panic!("expected a handshake initiation");
        };
        assert_eq!(n, 148);
        // The responder identifies the initiator from the initiation alone.
        let mut cookie = vec![0u8; 64];
        match b.identify_initiator(from, &buf[..n], &mut cookie) {
            Identify::Peer(k) => assert_eq!(k, _a.public_key()),
            other => panic!("unexpected {other:?}"),
        }
        let Decapsulated::Reply(r) = tb.decapsulate(from, &buf[..n], &mut out) else {
            panic!("expected a response");
        };
        assert_eq!(r, 92);
        // The initiator completes and answers with a keepalive; then its queued packet flushes.
        let Decapsulated::Reply(k) = ta.decapsulate(from, &out[..r], &mut buf) else {
            panic!("expected a keepalive");
        };
        assert_eq!(k, 32);
        let mut queued = vec![0u8; 2048];
        let q = ta.flush_queued(&mut queued).expect("queued packet");
        assert!(ta.flush_queued(&mut out).is_none());
        assert!(matches!(
            tb.decapsulate(from, &buf[..k], &mut out),
            Decapsulated::Nothing
        ));
        match tb.decapsulate(from, &queued[..q], &mut out) {
            Decapsulated::Packet { len, source } => {
                assert_eq!(&out[..len], &packet[..]);
                assert_eq!(source, "10.42.1.2".parse::<IpAddr>().unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
        // And back.
        let back = ipv4([10, 42, 2, 2], [10, 42, 1, 2], b"world");
        let Encapsulated::Data(n) = tb.encapsulate(&back, &mut buf) else {
            panic!("expected data");
        };
        assert_eq!(n, back.len() + 32);
        assert!(matches!(
            ta.decapsulate(from, &buf[..n], &mut out),
            Decapsulated::Packet { len, .. } if out[..len] == back[..]
        ));
        // A replayed message is rejected.
        assert!(matches!(
            ta.decapsulate(from, &buf[..n], &mut out),
            Decapsulated::Error(_)
        ));
    }

    #[test]
    fn boringtun_never_demands_cookies_itself() {
        let (_a, b, mut ta, mut tb) = pair();
        let from = "198.18.0.1".parse().unwrap();
        let mut init = vec![0u8; 256];
        let Encapsulated::HandshakeInit(n) = ta.encapsulate(&[0x45; 20], &mut init) else {
            panic!("expected initiation");
        };
        let mut out = vec![0u8; 256];
        // Far more than the 200 a second the old limit allowed, with no reset.
        for _ in 0..2_000 {
            assert!(matches!(
                b.identify_initiator(from, &init[..n], &mut out),
                Identify::Peer(_)
            ));
        }
        match tb.decapsulate(from, &init[..n], &mut out) {
            Decapsulated::Reply(len) => assert_eq!((len, out[0]), (92, 2)),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn initiation_for_someone_else_is_invalid() {
        let (_a, _b, mut ta, _tb) = pair();
        let stranger = LocalIdentity::new(&PrivateKey::generate());
        let mut buf = vec![0u8; 256];
        let Encapsulated::HandshakeInit(n) = ta.encapsulate(&[0x45; 20], &mut buf) else {
            panic!("expected initiation");
        };
        let mut cookie = vec![0u8; 64];
        assert!(matches!(
            stranger.identify_initiator("198.18.0.1".parse().unwrap(), &buf[..n], &mut cookie),
            Identify::Invalid(_)
        ));
    }
}
