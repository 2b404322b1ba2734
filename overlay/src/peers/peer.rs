//! One remote host: its tunnel, where it is (endpoint, updated by roaming), which inner addresses it
//! may use (allowed IPs), and counters.
//!
//! A `Peer` is shared between the data-path threads and the handshake/timer thread; its mutable
//! part sits behind one mutex that the data path takes once per run of consecutive packets of the
//! same peer in a batch — never per packet and never across a syscall.
//!
//! No I/O, no clock.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use wgmesh_config::{PresharedKey, PublicKey};

use crate::peers::noise::{LocalIdentity, Tunnel};

/// What the configuration says about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// Optional human name.
    pub name: Option<String>,
    /// The peer's static public key: its identity.
    pub public_key: PublicKey,
    /// Where to reach it; `None` until it contacts us.
    pub endpoint: Option<SocketAddr>,
    /// Inner addresses it may send from and that are routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// Optional preshared key (the key itself, already read from its file).
    pub preshared_key: Option<PresharedKeyBytes>,
}

/// A preshared key compared by value, so a changed key file is noticed on reload.
#[derive(Clone)]
pub struct PresharedKeyBytes(pub PresharedKey);

impl PartialEq for PresharedKeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}
impl Eq for PresharedKeyBytes {}
impl std::fmt::Debug for PresharedKeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// A remote host.
pub struct Peer {
    index: u32,
    public_key: PublicKey,
    state: Mutex<PeerState>,
}

/// The mutable part of a peer, reached through [`Peer::lock`].
pub struct PeerState {
    /// The WireGuard tunnel.
    pub tunnel: Tunnel,
    /// The current endpoint: configured, or learned from the last authenticated packet.
    pub endpoint: Option<SocketAddr>,
    /// Inner source addresses accepted from this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Optional human name.
    pub name: Option<String>,
    /// Configured keepalive, for status.
    pub persistent_keepalive: Option<u16>,
    /// Counters.
    pub stats: PeerStats,
}

/// Per-peer counters. Bytes count inner (plaintext) IP packet bytes, as `wg show` does for
/// transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerStats {
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
}

/// Why packets to or from a peer were dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerDrops {
    /// Decrypted, but the inner source address is outside the peer's allowed IPs.
    pub source_not_allowed: u64,
    /// Failed authentication or replay checks.
    pub decrypt_failed: u64,
    /// Outbound, but the peer's endpoint is not known yet.
    pub no_endpoint: u64,
    /// Outbound, but no session could be set up (the tunnel's queue is full or sealing failed).
    pub no_session: u64,
}

impl Peer {
    /// Creates a peer with a fresh tunnel.
    pub fn new(local: &LocalIdentity, index: u32, settings: &PeerSettings) -> Self {
        Self {
            index,
            public_key: settings.public_key,
            state: Mutex::new(PeerState {
                tunnel: new_tunnel(local, index, settings),
                endpoint: settings.endpoint,
                allowed_ips: settings.allowed_ips.clone(),
                name: settings.name.clone(),
                persistent_keepalive: settings.persistent_keepalive,
                stats: PeerStats::default(),
            }),
        }
    }

    /// The 24-bit local index carried in receiver indexes addressed to this peer.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The peer's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Locks the peer's mutable state. Hold it for a run of packets, never across a syscall.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock()
    }

    /// Applies changed settings in place, keeping the session when the tunnel parameters
    /// (preshared key, keepalive) are unchanged.
    pub fn update(&self, local: &LocalIdentity, old: &PeerSettings, new: &PeerSettings) {
        let mut state = self.lock();
        if old.preshared_key != new.preshared_key
            || old.persistent_keepalive != new.persistent_keepalive
        {
            state.tunnel = new_tunnel(local, self.index, new);
        }
        if new.endpoint.is_some() && old.endpoint != new.endpoint {
            state.endpoint = new.endpoint;
        }
        state.allowed_ips.clone_from(&new.allowed_ips);
        state.name.clone_from(&new.name);
        state.persistent_keepalive = new.persistent_keepalive;
    }
}

impl PeerState {
    /// Time since the last completed handshake.
    pub fn since_last_handshake(&self) -> Option<Duration> {
        self.tunnel.since_last_handshake()
    }
}

fn new_tunnel(local: &LocalIdentity, index: u32, settings: &PeerSettings) -> Tunnel {
    Tunnel::new(
        local,
        &settings.public_key,
        settings.preshared_key.as_ref().map(|k| &k.0),
        settings.persistent_keepalive,
        index,
    )
}
