//! [`Mutation`]: a change to the registry as the store keeps it (its JSON is the store's
//! record format, `{"type":"host_joined",...}`).

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_config::token::SecretHash;
use wgmesh_config::{HostName, PublicKey};

use wgmesh_config::policy::Policy;

use super::records::{Labels, Workload};
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
            | Self::PolicyRemoved => true,
            Self::TokenCreated { .. } | Self::TokenRevoked { .. } => false,
        }
    }
}
