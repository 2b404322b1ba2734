//! [`Mutation`]: a change to the registry as the store keeps it (its JSON is the store's
//! record format, `{"type":"host_joined",...}`).

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_config::token::SecretHash;
use wgmesh_config::{HostName, PublicKey};

use wgmesh_config::policy::Policy;

use super::records::{Labels, RotationReason, Workload};
use crate::ids::{HostId, TokenId};

/// A change to the registry, as committed to the store and replayed at start.
///
/// Each variant records an outcome with every choice already made, so replay does not depend
/// on the code that made the choice (an IPAM change cannot move an existing host's subnet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mutation {
    /// The cluster's network was set (the first mutation of every store).
    Initialized {
        /// The cluster CIDR.
        cluster_cidr: IpNet,
        /// The prefix length of every host subnet.
        host_prefix: u8,
    },
    /// An admin created a join token.
    TokenCreated {
        /// The new token's id.
        id: TokenId,
        /// The hash of its secret.
        secret_hash: SecretHash,
        /// When (unix seconds).
        created_at: u64,
        /// When it stops being valid (unix seconds).
        expires_at: u64,
        /// Whether more than one host may join with it.
        reusable: bool,
        /// Labels for the hosts that join with it.
        labels: Labels,
    },
    /// An admin revoked a join token.
    TokenRevoked {
        /// The token.
        id: TokenId,
    },
    /// A host joined, using a token.
    HostJoined {
        /// The host's id.
        id: HostId,
        /// Its name.
        name: HostName,
        /// Its public key.
        public_key: PublicKey,
        /// Its endpoint.
        endpoint: Option<SocketAddr>,
        /// The subnet it was given.
        subnet: IpNet,
        /// Its labels (token labels already merged in).
        labels: Labels,
        /// The hash of the credential it was given.
        credential_hash: SecretHash,
        /// The token it used (marked used by this mutation).
        token: Option<TokenId>,
        /// When (unix seconds).
        at: u64,
    },
    /// An admin removed a host: its credential is revoked, its subnet freed, its name and key
    /// free for another host.
    HostRemoved {
        /// The host.
        id: HostId,
    },
    /// A host reported a new endpoint.
    EndpointChanged {
        /// The host.
        id: HostId,
        /// The new endpoint.
        endpoint: Option<SocketAddr>,
    },
    /// A host reported its workloads: the whole list, which replaces the one it had.
    WorkloadsReported {
        /// The host.
        host: HostId,
        /// Its workloads, sorted by address.
        workloads: Vec<Workload>,
    },
    /// An admin applied a policy (it replaces the one in force).
    PolicyApplied {
        /// The policy file's text, for `policy show`.
        text: String,
        /// The name of the file.
        origin: String,
        /// The parsed policy: what replay and the compiler use.
        policy: Policy,
    },
    /// An admin removed the policy: everything is allowed again, as before the first.
    PolicyRemoved,
    /// Hosts were queued for a key rotation: an admin asked, or their keys reached the
    /// rotation interval.
    RotationsQueued {
        /// Who asked.
        reason: RotationReason,
        /// When (unix seconds).
        at: u64,
        /// The hosts, each with the epoch its new key gets.
        rotations: Vec<QueuedRotation>,
    },
    /// A queued rotation started (the only one running): its host is asked for a new key.
    RotationRequested {
        /// The host.
        host: HostId,
        /// The rotation's epoch.
        epoch: u64,
        /// When (unix seconds).
        at: u64,
        /// When the request is abandoned if the host has not reported a new key.
        deadline: u64,
    },
    /// The host reported its new key; it is announced to the host's peers.
    KeyAnnounced {
        /// The host.
        host: HostId,
        /// The rotation's epoch.
        epoch: u64,
        /// The new key.
        new_key: PublicKey,
        /// When (unix seconds).
        at: u64,
        /// When the key is registered even if the host does not report that its peers moved.
        deadline: u64,
    },
    /// The rotation completed: the announced key is the host's, its old key is retired.
    RotationCompleted {
        /// The host.
        host: HostId,
        /// The rotation's epoch, the key's from now on.
        epoch: u64,
        /// The key registered.
        new_key: PublicKey,
        /// When (unix seconds).
        at: u64,
        /// Whether the host reported that its peers moved (else the deadline passed).
        peers_moved: bool,
    },
    /// The host did not report a new key in time: the rotation is dropped and the host keeps
    /// its old key.
    RotationAbandoned {
        /// The host.
        host: HostId,
        /// The rotation's epoch.
        epoch: u64,
        /// When (unix seconds).
        at: u64,
    },
}

/// One host of [`Mutation::RotationsQueued`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedRotation {
    /// The host.
    pub host: HostId,
    /// The epoch its new key gets (its key's epoch + 1).
    pub epoch: u64,
}

impl Mutation {
    /// Whether applying it can change some host's netmap. Workloads change netmaps only while
    /// a policy is applied, which only the registry knows (it asks
    /// [`Registry::changes_netmaps`](super::Registry::changes_netmaps)).
    pub fn changes_netmaps(&self) -> bool {
        match self {
            Self::Initialized { .. }
            | Self::HostJoined { .. }
            | Self::HostRemoved { .. }
            | Self::EndpointChanged { .. }
            | Self::WorkloadsReported { .. }
            | Self::PolicyApplied { .. }
            | Self::PolicyRemoved
            | Self::RotationRequested { .. }
            | Self::KeyAnnounced { .. }
            | Self::RotationCompleted { .. }
            | Self::RotationAbandoned { .. } => true,
            // A queued rotation is not in any netmap until it starts.
            Self::TokenCreated { .. }
            | Self::TokenRevoked { .. }
            | Self::RotationsQueued { .. } => false,
        }
    }
}
