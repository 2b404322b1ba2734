//! What the data path counts, one type per thing counted: [`PeerCounters`] for each peer (kept
//! inside the peer's state, under its lock), [`HostDrops`] for packets dropped before any peer was
//! identified (atomics, bumped from every data thread). `status` (and later metrics) reads these
//! same types; nothing copies them field by field.
//!
//! No I/O, no clock.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Per-peer counters. Bytes count inner (plaintext) IP packet bytes, as `wg show` does for
/// transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounters {
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Packets dropped, by reason.
    pub dropped: PeerDrops,
    /// Authenticated packets whose source address the peer's endpoint did not move to: inside
    /// the overlay, one of this host's addresses, or not unicast (see
    /// [`RoamRefusal`](super::local::RoamRefusal)). The packets themselves are handled as usual.
    #[serde(default)]
    pub roams_refused: u64,
}

/// Why packets to or from a peer were dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDrops {
    /// Decrypted, but the inner source address is outside the peer's allowed IPs.
    pub source_not_allowed: u64,
    /// Failed authentication or replay checks.
    pub decrypt_failed: u64,
    /// Outbound, but the peer's endpoint is not known yet.
    pub no_endpoint: u64,
    /// Outbound, but no session could be set up (the tunnel's queue is full or sealing failed).
    pub no_session: u64,
    /// Decrypted and from an allowed source, but addressed outside this host's overlay subnet
    /// (the host's underlay address, a network it routes, another peer's subnet).
    #[serde(default)]
    pub destination_not_local: u64,
    /// A new flow the policy denies (by a rule or the default; counted per rule in the filter),
    /// or a tracked flow a new policy no longer allows.
    #[serde(default)]
    pub policy_denied: u64,
    /// A new flow the policy allows, but the peer's conntrack table had no room for it.
    #[serde(default)]
    pub conntrack_full: u64,
    /// An ICMP echo reply or error that belongs to no tracked flow.
    #[serde(default)]
    pub policy_untracked: u64,
    /// Under a policy, a packet whose headers do not parse, or a later fragment whose first
    /// fragment did not pass.
    #[serde(default)]
    pub policy_malformed: u64,
}

/// Why a packet to or from a peer was dropped: one [`PeerDrops`] field each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerDrop {
    /// See [`PeerDrops::source_not_allowed`].
    SourceNotAllowed,
    /// See [`PeerDrops::decrypt_failed`].
    DecryptFailed,
    /// See [`PeerDrops::no_endpoint`].
    NoEndpoint,
    /// See [`PeerDrops::no_session`].
    NoSession,
    /// See [`PeerDrops::destination_not_local`].
    DestinationNotLocal,
    /// See [`PeerDrops::policy_denied`].
    PolicyDenied,
    /// See [`PeerDrops::conntrack_full`].
    ConntrackFull,
    /// See [`PeerDrops::policy_untracked`].
    PolicyUntracked,
    /// See [`PeerDrops::policy_malformed`].
    PolicyMalformed,
}

impl PeerDrop {
    /// Whether the policy refused the packet (and its flow may be waiting for the audit log:
    /// [`PeerState::poll_denial`](super::peer::PeerState::poll_denial)).
    #[inline]
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Self::PolicyDenied
                | Self::ConntrackFull
                | Self::PolicyUntracked
                | Self::PolicyMalformed
        )
    }
}

impl PeerCounters {
    /// Counts an inner packet of `len` bytes received from the peer.
    #[inline]
    pub fn received(&mut self, len: usize) {
        self.rx_bytes += len as u64;
        self.rx_packets += 1;
    }

    /// Counts an inner packet of `len` bytes sent to the peer.
    #[inline]
    pub fn sent(&mut self, len: usize) {
        self.tx_bytes += len as u64;
        self.tx_packets += 1;
    }

    /// Counts a dropped packet.
    #[inline]
    pub fn count_drop(&mut self, why: PeerDrop) {
        let d = &mut self.dropped;
        match why {
            PeerDrop::SourceNotAllowed => d.source_not_allowed += 1,
            PeerDrop::DecryptFailed => d.decrypt_failed += 1,
            PeerDrop::NoEndpoint => d.no_endpoint += 1,
            PeerDrop::NoSession => d.no_session += 1,
            PeerDrop::DestinationNotLocal => d.destination_not_local += 1,
            PeerDrop::PolicyDenied => d.policy_denied += 1,
            PeerDrop::ConntrackFull => d.conntrack_full += 1,
            PeerDrop::PolicyUntracked => d.policy_untracked += 1,
            PeerDrop::PolicyMalformed => d.policy_malformed += 1,
        }
    }
}

/// Why a packet was dropped before any peer was identified: one [`HostDrops`] counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDrop {
    /// From TUN, to an address no peer's allowed IPs hold.
    NoRoute,
    /// From UDP, addressed to an index no peer has (or a handshake from an unknown key).
    UnknownPeer,
    /// Not a WireGuard message, or not an IP packet.
    Malformed,
    /// A handshake message over its source address's share
    /// ([`SourceLimiter`](super::limiter::SourceLimiter)).
    HandshakeRateLimited,
    /// A handshake message that found the handshake thread's queue full.
    HandshakeQueueFull,
    /// Under load, a handshake message without a valid cookie (mac2): not handled (no
    /// handshake state, no answer to it), but a cookie reply goes back in its place, with which
    /// a real sender retries. Shown as `dropped.handshake_under_load`.
    HandshakeAnsweredWithCookie,
    /// A handshake initiation or response whose mac1 is not for this host's key: dropped on
    /// receipt, charged to no one.
    HandshakeBadMac,
}

/// Packets dropped before any peer was identified, counted from every data thread.
#[derive(Debug, Default)]
pub struct HostDrops {
    no_route: AtomicU64,
    unknown_peer: AtomicU64,
    malformed: AtomicU64,
    handshake_rate_limited: AtomicU64,
    handshake_queue_full: AtomicU64,
    handshake_under_load: AtomicU64,
    handshake_bad_mac: AtomicU64,
}

/// The values of [`HostDrops`] at one moment, as `status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDropCounts {
    /// See [`HostDrop::NoRoute`].
    pub no_route: u64,
    /// See [`HostDrop::UnknownPeer`].
    pub unknown_peer: u64,
    /// See [`HostDrop::Malformed`].
    pub malformed: u64,
    /// See [`HostDrop::HandshakeRateLimited`].
    #[serde(default)]
    pub handshake_rate_limited: u64,
    /// See [`HostDrop::HandshakeQueueFull`].
    #[serde(default)]
    pub handshake_queue_full: u64,
    /// See [`HostDrop::HandshakeAnsweredWithCookie`].
    #[serde(default)]
    pub handshake_under_load: u64,
    /// See [`HostDrop::HandshakeBadMac`].
    #[serde(default)]
    pub handshake_bad_mac: u64,
}

impl HostDrops {
    /// Counts one dropped packet.
    #[inline]
    pub fn bump(&self, why: HostDrop) {
        let counter = match why {
            HostDrop::NoRoute => &self.no_route,
            HostDrop::UnknownPeer => &self.unknown_peer,
            HostDrop::Malformed => &self.malformed,
            HostDrop::HandshakeRateLimited => &self.handshake_rate_limited,
            HostDrop::HandshakeQueueFull => &self.handshake_queue_full,
            HostDrop::HandshakeAnsweredWithCookie => &self.handshake_under_load,
            HostDrop::HandshakeBadMac => &self.handshake_bad_mac,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the counters.
    pub fn counts(&self) -> HostDropCounts {
        HostDropCounts {
            no_route: self.no_route.load(Ordering::Relaxed),
            unknown_peer: self.unknown_peer.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            handshake_rate_limited: self.handshake_rate_limited.load(Ordering::Relaxed),
            handshake_queue_full: self.handshake_queue_full.load(Ordering::Relaxed),
            handshake_under_load: self.handshake_under_load.load(Ordering::Relaxed),
            handshake_bad_mac: self.handshake_bad_mac.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_moves_its_own_counter() {
        let mut c = PeerCounters::default();
        c.received(100);
        c.sent(40);
        c.sent(2);
        for why in [
            PeerDrop::SourceNotAllowed,
            PeerDrop::DecryptFailed,
            PeerDrop::DecryptFailed,
            PeerDrop::NoEndpoint,
            PeerDrop::NoSession,
            PeerDrop::DestinationNotLocal,
            PeerDrop::PolicyDenied,
            PeerDrop::PolicyDenied,
            PeerDrop::ConntrackFull,
            PeerDrop::PolicyUntracked,
            PeerDrop::PolicyMalformed,
        ] {
            c.count_drop(why);
        }
        let drops = PeerDrops {
            source_not_allowed: 1,
            decrypt_failed: 2,
            no_endpoint: 1,
            no_session: 1,
            destination_not_local: 1,
            policy_denied: 2,
            conntrack_full: 1,
            policy_untracked: 1,
            policy_malformed: 1,
        };
        assert_eq!(
            c,
            PeerCounters {
                rx_bytes: 100,
                tx_bytes: 42,
                rx_packets: 1,
                tx_packets: 2,
                dropped: drops,
                roams_refused: 0,
            }
        );

        let h = HostDrops::default();
        h.bump(HostDrop::Malformed);
        h.bump(HostDrop::NoRoute);
        h.bump(HostDrop::NoRoute);
        h.bump(HostDrop::HandshakeRateLimited);
        h.bump(HostDrop::HandshakeQueueFull);
        h.bump(HostDrop::HandshakeQueueFull);
        h.bump(HostDrop::HandshakeAnsweredWithCookie);
        h.bump(HostDrop::HandshakeBadMac);
        let expected = HostDropCounts {
            no_route: 2,
            unknown_peer: 0,
            malformed: 1,
            handshake_rate_limited: 1,
            handshake_queue_full: 2,
            handshake_under_load: 1,
            handshake_bad_mac: 1,
        };
        assert_eq!(h.counts(), expected);
    }

    #[test]
    fn status_json_shape_is_stable() {
        let json = serde_json::to_value(PeerCounters::default()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "dropped",
                "roams_refused",
                "rx_bytes",
                "rx_packets",
                "tx_bytes",
                "tx_packets"
            ]
        );
        let json = serde_json::to_value(HostDropCounts::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "no_route": 0,
                "unknown_peer": 0,
                "malformed": 0,
                "handshake_rate_limited": 0,
                "handshake_queue_full": 0,
                "handshake_under_load": 0,
                "handshake_bad_mac": 0
            })
        );
    }
}
