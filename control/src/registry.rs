//! The control plane's state: [`Registry`] of hosts, join tokens and (later) workloads, and the
//! [`Mutation`]s that change it.
//!
//! Pure, no I/O, no clock: every time is a `now` in unix seconds passed in by the caller.
//!
//! Changes follow one pattern so that every acknowledged change is durable and replayable:
//! a `plan_*` method checks a request against the current state and returns the [`Mutation`]
//! that records its outcome (with every choice made, such as the subnet and the host id);
//! the caller commits it to the [`Store`](crate::store::Store), then [`Registry::apply`]s it.
//! Replaying the committed mutations from an empty registry gives the same state.
//! [`Registry::apply`] checks everything before it changes anything, so a refused mutation
//! leaves the registry as it was.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
/// The hash of a secret (a join token's, a host credential's): the registry and the store hold
/// only these, never the secrets.
pub use wgmesh_config::token::SecretHash;
use wgmesh_config::{HostName, PublicKey};

pub use crate::ids::{HostId, TokenId};
use crate::ipam::{Ipam, IpamError};

/// Labels of a host or workload: `key = value`, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// A joined host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's id.
    pub id: HostId,
    /// The host's name, unique in the registry.
    pub name: HostName,
    /// The host's WireGuard public key, unique in the registry.
    pub public_key: PublicKey,
    /// Where other hosts should send to, if the host gave an address.
    pub endpoint: Option<SocketAddr>,
    /// The host's subnet of the cluster CIDR, unique in the registry.
    pub subnet: IpNet,
    /// The host's labels: its join token's labels over its own.
    pub labels: Labels,
    /// The hash of the credential the host authenticates with.
    pub credential_hash: SecretHash,
    /// The token the host joined with.
    pub token: Option<TokenId>,
    /// When the host joined (unix seconds).
    pub joined_at: u64,
    /// When the host was last heard from (unix seconds). Kept in memory by
    /// [`Registry::touch`]; only persisted with the state it is part of.
    pub last_seen: u64,
}

/// A join token, as the registry keeps it (only the hash of its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The token's id.
    pub id: TokenId,
    /// The hash of the token's secret.
    pub secret_hash: SecretHash,
    /// When the token was created (unix seconds).
    pub created_at: u64,
    /// The first second at which the token is no longer valid (unix seconds).
    pub expires_at: u64,
    /// Whether more than one host may join with it.
    pub reusable: bool,
    /// Labels given to every host that joins with it.
    pub labels: Labels,
    /// The hosts that joined with it, in join order.
    pub used_by: Vec<HostId>,
    /// Whether an admin revoked it.
    pub revoked: bool,
}

/// A workload (container) on a host. A placeholder: workloads are registered by a later issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The host it runs on.
    pub host: HostId,
    /// Its overlay address, inside the host's subnet.
    pub ip: IpAddr,
    /// Its labels, for policy.
    pub labels: Labels,
}

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
}

impl Mutation {
    /// Whether applying it can change some host's netmap.
    pub fn changes_netmaps(&self) -> bool {
        match self {
            Self::Initialized { .. }
            | Self::HostJoined { .. }
            | Self::HostRemoved { .. }
            | Self::EndpointChanged { .. } => true,
            Self::TokenCreated { .. } | Self::TokenRevoked { .. } => false,
        }
    }
}

/// Why a join token is refused; the message says which, as the issue asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// No token has this secret.
    #[error("the join token is unknown")]
    Unknown,
    /// The token expired.
    #[error("the join token {id} expired at {expired_at} (unix seconds)")]
    Expired {
        /// The token.
        id: TokenId,
        /// When it expired.
        expired_at: u64,
    },
    /// A single-use token was already used.
    #[error("the join token {id} was already used by host {by}")]
    Used {
        /// The token.
        id: TokenId,
        /// The host that used it.
        by: HostId,
    },
    /// An admin revoked the token.
    #[error("the join token {id} was revoked")]
    Revoked {
        /// The token.
        id: TokenId,
    },
}

/// Why a request or mutation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The network was not initialised yet.
    #[error("the registry has no cluster network yet")]
    NotInitialized,
    /// The network was already initialised.
    #[error(
        "the registry's cluster network is already {cluster_cidr} with /{host_prefix} per host"
    )]
    AlreadyInitialized {
        /// The existing cluster CIDR.
        cluster_cidr: IpNet,
        /// The existing host prefix.
        host_prefix: u8,
    },
    /// The name is held by a joined host (with another key, or the same key and another
    /// credential).
    #[error(
        "the name {name} is held by host {held_by}; a host joins once and then uses its \
         credential, so an admin must remove it first (`wgmesh node remove {name}`)"
    )]
    NameTaken {
        /// The name.
        name: HostName,
        /// The host holding it.
        held_by: HostId,
    },
    /// The public key is held by a host with another name.
    #[error("the public key {} is already registered by host {held_by_name}", key.short())]
    KeyTaken {
        /// The key.
        key: PublicKey,
        /// The host holding it.
        held_by: HostId,
        /// That host's name.
        held_by_name: HostName,
    },
    /// No host has this id or name.
    #[error("no host {0}")]
    NoSuchHost(String),
    /// No token has this id.
    #[error("no join token {0}")]
    NoSuchToken(TokenId),
    /// The join token cannot be used.
    #[error(transparent)]
    Token(#[from] TokenRefused),
    /// A subnet problem (exhausted, taken, outside the CIDR).
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// An id is already in use (a mutation that does not fit the state).
    #[error("{what} id {id} is already in use")]
    IdInUse {
        /// "host" or "token".
        what: &'static str,
        /// The id.
        id: u64,
    },
    /// The credential is already another host's (credentials are chosen by agents; a clash means
    /// a copied state directory or a bug, never a coincidence).
    #[error("this credential is already host {0}'s; the agent must make a new one")]
    CredentialInUse(HostId),
}

/// What a host sends to join, once its token is checked (see [`Registry::plan_join`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The host's name.
    pub name: HostName,
    /// The host's public key.
    pub public_key: PublicKey,
    /// The host's endpoint.
    pub endpoint: Option<SocketAddr>,
    /// The host's own labels (its token's labels override them).
    pub labels: Labels,
}

/// The registry: every host, token and workload, and a revision that grows with every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Snapshot", into = "Snapshot")]
pub struct Registry {
    ipam: Option<Ipam>,
    hosts: BTreeMap<HostId, Host>,
    tokens: BTreeMap<TokenId, Token>,
    workloads: BTreeMap<IpAddr, Workload>,
    next_host_id: u64,
    next_token_id: u64,
    revision: u64,
    netmap_revision: u64,
    /// Index of `hosts` by credential hash (derived; not serialised).
    credentials: BTreeMap<[u8; 32], HostId>,
    /// Index of `hosts` by name (derived; not serialised).
    names: BTreeMap<HostName, HostId>,
}

/// The serialised form of a [`Registry`]: the IPAM table is rebuilt from the hosts.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    network: Option<Network>,
    hosts: Vec<Host>,
    tokens: Vec<Token>,
    #[serde(default)]
    workloads: Vec<Workload>,
    next_host_id: u64,
    next_token_id: u64,
    revision: u64,
    /// Absent in snapshots written before it existed: then the revision.
    #[serde(default)]
    netmap_revision: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Network {
    cluster_cidr: IpNet,
    host_prefix: u8,
}

impl From<Registry> for Snapshot {
    fn from(r: Registry) -> Self {
        Self {
            network: r.ipam.as_ref().map(|i| Network {
                cluster_cidr: i.cidr(),
                host_prefix: i.host_prefix(),
            }),
            hosts: r.hosts.into_values().collect(),
            tokens: r.tokens.into_values().collect(),
            workloads: r.workloads.into_values().collect(),
            next_host_id: r.next_host_id,
            next_token_id: r.next_token_id,
            revision: r.revision,
            netmap_revision: Some(r.netmap_revision),
        }
    }
}

impl TryFrom<Snapshot> for Registry {
    type Error = RegistryError;

    /// Rebuilds a registry, checking the invariants `apply` keeps (unique ids, names, keys and
    /// subnets; ids below the next ids).
    fn try_from(s: Snapshot) -> Result<Self, Self::Error> {
        let mut r = Self {
            next_host_id: s.next_host_id,
            next_token_id: s.next_token_id,
            revision: s.revision,
            netmap_revision: s.netmap_revision.unwrap_or(s.revision),
            ..Self::default()
        };
        if let Some(n) = s.network {
            r.ipam = Some(Ipam::new(n.cluster_cidr, n.host_prefix)?);
        }
        for token in s.tokens {
            if token.id.0 >= r.next_token_id || r.tokens.contains_key(&token.id) {
                return Err(RegistryError::IdInUse {
                    what: "token",
                    id: token.id.0,
                });
            }
            r.tokens.insert(token.id, token);
        }
        for host in s.hosts {
            if host.id.0 >= r.next_host_id || r.hosts.contains_key(&host.id) {
                return Err(RegistryError::IdInUse {
                    what: "host",
                    id: host.id.0,
                });
            }
            r.check_unique(host.id, &host.name, &host.public_key)?;
            if let Some(&holder) = r.credentials.get(host.credential_hash.as_bytes()) {
                return Err(RegistryError::CredentialInUse(holder));
            }
            r.ipam
                .as_mut()
                .ok_or(RegistryError::NotInitialized)?
                .reserve(host.subnet, host.id)?;
            r.credentials
                .insert(*host.credential_hash.as_bytes(), host.id);
            r.names.insert(host.name.clone(), host.id);
            r.hosts.insert(host.id, host);
        }
        for w in s.workloads {
            r.workloads.insert(w.ip, w);
        }
        Ok(r)
    }
}

impl Registry {
    /// The revision: the number of mutations applied since the registry was empty.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision of the last mutation that can change a netmap (a host joined, left or
    /// moved; not a token). Netmaps carry it, and long polls wait for it to move, so admin
    /// actions that change no netmap do not send every host a new one.
    pub fn netmap_revision(&self) -> u64 {
        self.netmap_revision
    }

    /// The cluster's host-subnet allocator, once initialised.
    pub fn ipam(&self) -> Option<&Ipam> {
        self.ipam.as_ref()
    }

    /// Every host, by id.
    pub fn hosts(&self) -> &BTreeMap<HostId, Host> {
        &self.hosts
    }

    /// Every join token, by id.
    pub fn tokens(&self) -> &BTreeMap<TokenId, Token> {
        &self.tokens
    }

    /// Every workload, by address (empty until workloads are registered).
    pub fn workloads(&self) -> &BTreeMap<IpAddr, Workload> {
        &self.workloads
    }

    /// A host by id.
    pub fn host(&self, id: HostId) -> Option<&Host> {
        self.hosts.get(&id)
    }

    /// A host by name.
    pub fn host_by_name(&self, name: &str) -> Option<&Host> {
        let id = self.names.get(name)?;
        self.hosts.get(id)
    }

    /// The host a credential belongs to, given the credential's hash.
    pub fn host_by_credential(&self, hash: &SecretHash) -> Option<&Host> {
        // An ordered lookup by hash, as a database index would do: its timing can only tell
        // about hashes of 256-bit random secrets, which do not lead back to the secrets.
        let id = self.credentials.get(hash.as_bytes())?;
        self.hosts.get(id)
    }

    /// Records that a host was heard from at `now`. In memory only: not a mutation.
    pub fn touch(&mut self, id: HostId, now: u64) {
        if let Some(host) = self.hosts.get_mut(&id) {
            host.last_seen = host.last_seen.max(now);
        }
    }

    /// Plans setting the cluster network on an empty registry.
    pub fn plan_initialize(
        &self,
        cluster_cidr: IpNet,
        host_prefix: u8,
    ) -> Result<Mutation, RegistryError> {
        let m = Mutation::Initialized {
            cluster_cidr,
            host_prefix,
        };
        self.check(&m)?;
        Ok(m)
    }

    /// Plans a new join token; the caller generated the secret and passes only its hash.
    pub fn plan_token(
        &self,
        secret_hash: SecretHash,
        now: u64,
        ttl_secs: u64,
        reusable: bool,
        labels: Labels,
    ) -> Mutation {
        Mutation::TokenCreated {
            id: TokenId(self.next_token_id),
            secret_hash,
            created_at: now,
            expires_at: now.saturating_add(ttl_secs),
            reusable,
            labels,
        }
    }

    /// Plans revoking a token.
    pub fn plan_revoke_token(&self, id: TokenId) -> Result<Mutation, RegistryError> {
        let m = Mutation::TokenRevoked { id };
        self.check(&m)?;
        Ok(m)
    }

    /// The token with this secret hash, if it may be used at `now`; otherwise why not.
    pub fn check_token(&self, secret_hash: &SecretHash, now: u64) -> Result<&Token, TokenRefused> {
        let token = self
            .tokens
            .values()
            .find(|t| t.secret_hash == *secret_hash)
            .ok_or(TokenRefused::Unknown)?;
        token_usable(token)?;
        if now >= token.expires_at {
            return Err(TokenRefused::Expired {
                id: token.id,
                expired_at: token.expires_at,
            });
        }
        Ok(token)
    }

    /// Plans a join with the token whose secret hashes to `token_hash`: checks the token, the
    /// name and the key, picks the id and the lowest free subnet, and merges the token's
    /// labels over the host's.
    ///
    /// A name that is already registered is refused, whatever the key: only an admin can free
    /// it (a host that lost its credential is removed and joins anew). A retry of a join that
    /// succeeded is recognised by [`Registry::joined_as`] before this is called.
    pub fn plan_join(
        &self,
        request: JoinRequest,
        token_hash: &SecretHash,
        credential_hash: SecretHash,
        now: u64,
    ) -> Result<Mutation, RegistryError> {
        let token = self.check_token(token_hash, now)?;
        let ipam = self.ipam.as_ref().ok_or(RegistryError::NotInitialized)?;
        let id = HostId(self.next_host_id);
        self.check_unique(id, &request.name, &request.public_key)?;
        let subnet = ipam.lowest_free()?;
        let mut labels = request.labels;
        labels.extend(token.labels.clone());
        let m = Mutation::HostJoined {
            id,
            name: request.name,
            public_key: request.public_key,
            endpoint: request.endpoint,
            subnet,
            labels,
            credential_hash,
            token: Some(token.id),
            at: now,
        };
        self.check(&m)?;
        Ok(m)
    }

    /// The host that already joined with this name, key and credential: the join being
    /// retried succeeded (its reply was lost, or the agent stopped before saving it). The
    /// credential proves the caller is that host, so neither the token nor a new mutation is
    /// needed.
    pub fn joined_as(&self, request: &JoinRequest, credential_hash: &SecretHash) -> Option<HostId> {
        self.host_by_name(request.name.as_str())
            .filter(|h| {
                h.public_key == request.public_key && h.credential_hash.ct_eq(credential_hash)
            })
            .map(|h| h.id)
    }

    /// Plans removing the host called `name`.
    pub fn plan_remove(&self, name: &str) -> Result<Mutation, RegistryError> {
        let host = self
            .host_by_name(name)
            .ok_or_else(|| RegistryError::NoSuchHost(name.to_owned()))?;
        Ok(Mutation::HostRemoved { id: host.id })
    }

    /// Plans a host's endpoint change; `None` when the endpoint is already that.
    pub fn plan_endpoint(
        &self,
        id: HostId,
        endpoint: Option<SocketAddr>,
    ) -> Result<Option<Mutation>, RegistryError> {
        let host = self
            .hosts
            .get(&id)
            .ok_or_else(|| RegistryError::NoSuchHost(id.to_string()))?;
        if host.endpoint == endpoint {
            return Ok(None);
        }
        Ok(Some(Mutation::EndpointChanged { id, endpoint }))
    }

    /// Checks that `m` fits the current state, without changing anything.
    pub fn check(&self, m: &Mutation) -> Result<(), RegistryError> {
        match m {
            Mutation::Initialized {
                cluster_cidr,
                host_prefix,
            } => {
                if let Some(ipam) = &self.ipam {
                    return Err(RegistryError::AlreadyInitialized {
                        cluster_cidr: ipam.cidr(),
                        host_prefix: ipam.host_prefix(),
                    });
                }
                Ipam::new(*cluster_cidr, *host_prefix)?;
            }
            Mutation::TokenCreated { id, .. } => {
                if id.0 < self.next_token_id || self.tokens.contains_key(id) {
                    return Err(RegistryError::IdInUse {
                        what: "token",
                        id: id.0,
                    });
                }
            }
            Mutation::TokenRevoked { id } => {
                if !self.tokens.contains_key(id) {
                    return Err(RegistryError::NoSuchToken(*id));
                }
            }
            Mutation::HostJoined {
                id,
                name,
                public_key,
                subnet,
                token,
                credential_hash,
                ..
            } => {
                let ipam = self.ipam.as_ref().ok_or(RegistryError::NotInitialized)?;
                if let Some(tid) = token {
                    let t = self
                        .tokens
                        .get(tid)
                        .ok_or(RegistryError::NoSuchToken(*tid))?;
                    token_usable(t)?;
                }
                // Every join is a new host with a new id (a retried join is answered without a
                // mutation, see `joined_as`).
                if id.0 < self.next_host_id {
                    return Err(RegistryError::IdInUse {
                        what: "host",
                        id: id.0,
                    });
                }
                if let Some(&holder) = self.credentials.get(credential_hash.as_bytes()) {
                    return Err(RegistryError::CredentialInUse(holder));
                }
                self.check_unique(*id, name, public_key)?;
                ipam.check_reserve(subnet, *id)?;
            }
            Mutation::HostRemoved { id } | Mutation::EndpointChanged { id, .. } => {
                if !self.hosts.contains_key(id) {
                    return Err(RegistryError::NoSuchHost(id.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Applies a mutation: checks it ([`Registry::check`]), then changes the state and bumps
    /// the revision. A refused mutation changes nothing.
    pub fn apply(&mut self, m: &Mutation) -> Result<(), RegistryError> {
        self.check(m)?;
        match m.clone() {
            Mutation::Initialized {
                cluster_cidr,
                host_prefix,
            } => {
                self.ipam = Some(Ipam::new(cluster_cidr, host_prefix)?);
            }
            Mutation::TokenCreated {
                id,
                secret_hash,
                created_at,
                expires_at,
                reusable,
                labels,
            } => {
                self.next_token_id = id.0 + 1;
                self.tokens.insert(
                    id,
                    Token {
                        id,
                        secret_hash,
                        created_at,
                        expires_at,
                        reusable,
                        labels,
                        used_by: Vec::new(),
                        revoked: false,
                    },
                );
            }
            Mutation::TokenRevoked { id } => {
                if let Some(t) = self.tokens.get_mut(&id) {
                    t.revoked = true;
                }
            }
            Mutation::HostJoined {
                id,
                name,
                public_key,
                endpoint,
                subnet,
                labels,
                credential_hash,
                token,
                at,
            } => {
                if let Some(t) = token.and_then(|t| self.tokens.get_mut(&t)) {
                    t.used_by.push(id);
                }
                if let Some(ipam) = self.ipam.as_mut() {
                    ipam.reserve(subnet, id)?;
                }
                self.next_host_id = id.0 + 1;
                self.credentials.insert(*credential_hash.as_bytes(), id);
                self.names.insert(name.clone(), id);
                self.hosts.insert(
                    id,
                    Host {
                        id,
                        name,
                        public_key,
                        endpoint,
                        subnet,
                        labels,
                        credential_hash,
                        token,
                        joined_at: at,
                        last_seen: at,
                    },
                );
            }
            Mutation::HostRemoved { id } => {
                if let Some(host) = self.hosts.remove(&id) {
                    self.credentials.remove(host.credential_hash.as_bytes());
                    self.names.remove(&host.name);
                    if let Some(ipam) = self.ipam.as_mut() {
                        ipam.release(&host.subnet);
                    }
                    self.workloads.retain(|_, w| w.host != id);
                }
            }
            Mutation::EndpointChanged { id, endpoint } => {
                if let Some(host) = self.hosts.get_mut(&id) {
                    host.endpoint = endpoint;
                }
            }
        }
        self.revision += 1;
        if m.changes_netmaps() {
            self.netmap_revision = self.revision;
        }
        Ok(())
    }

    /// Refuses a name held by another key and a key held by another name (ignoring `id`).
    fn check_unique(
        &self,
        id: HostId,
        name: &HostName,
        key: &PublicKey,
    ) -> Result<(), RegistryError> {
        for h in self.hosts.values().filter(|h| h.id != id) {
            if h.name == *name {
                return Err(RegistryError::NameTaken {
                    name: name.clone(),
                    held_by: h.id,
                });
            }
            if h.public_key == *key {
                return Err(RegistryError::KeyTaken {
                    key: *key,
                    held_by: h.id,
                    held_by_name: h.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether a token may still be used, ignoring expiry (which needs `now`).
fn token_usable(token: &Token) -> Result<(), TokenRefused> {
    if token.revoked {
        return Err(TokenRefused::Revoked { id: token.id });
    }
    if let (false, Some(&by)) = (token.reusable, token.used_by.first()) {
        return Err(TokenRefused::Used { id: token.id, by });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    pub(crate) fn name(s: &str) -> HostName {
        s.parse().unwrap()
    }

    pub(crate) fn request(n: &str, k: u8) -> JoinRequest {
        JoinRequest {
            name: name(n),
            public_key: key(k),
            endpoint: Some(SocketAddr::from(([198, 18, 0, k], 51820))),
            labels: Labels::from([("zone".into(), "host".into())]),
        }
    }

    /// An initialised registry with one reusable token (secret "t") valid until 1000.
    pub(crate) fn registry() -> Registry {
        let mut r = Registry::default();
        let m = r
            .plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
            .unwrap();
        r.apply(&m).unwrap();
        let m = r.plan_token(SecretHash::of(b"t"), 0, 1000, true, Labels::new());
        r.apply(&m).unwrap();
        r
    }

    pub(crate) fn join(r: &mut Registry, n: &str, k: u8) -> Result<Mutation, RegistryError> {
        let m = r.plan_join(
            request(n, k),
            &SecretHash::of(b"t"),
            SecretHash::of(n.as_bytes()),
            10,
        )?;
        r.apply(&m)?;
        Ok(m)
    }

    #[test]
    fn join_assigns_ids_and_lowest_subnets() {
        let mut r = registry();
        join(&mut r, "a", 1).unwrap();
        join(&mut r, "b", 2).unwrap();
        let b = r.host_by_name("b").unwrap();
        assert_eq!(b.id, HostId(1));
        assert_eq!(b.subnet, "10.42.1.0/24".parse::<IpNet>().unwrap());
        assert_eq!(
            r.host_by_credential(&SecretHash::of(b"b")).map(|h| h.id),
            Some(HostId(1))
        );
        assert_eq!(r.revision(), 4);
        assert_eq!(r.tokens()[&TokenId(0)].used_by, vec![HostId(0), HostId(1)]);
    }

    #[test]
    fn name_held_by_another_key_is_refused_until_removed() {
        let mut r = registry();
        join(&mut r, "a", 1).unwrap();
        let before = r.clone();
        let err = join(&mut r, "a", 2).unwrap_err();
        assert_eq!(
            err,
            RegistryError::NameTaken {
                name: name("a"),
                held_by: HostId(0)
            }
        );
        assert!(err.to_string().contains("an admin must remove it first"));
        assert_eq!(r, before);
        assert!(matches!(
            join(&mut r, "other", 1),
            Err(RegistryError::KeyTaken { .. })
        ));
        let m = r.plan_remove("a").unwrap();
        r.apply(&m).unwrap();
        join(&mut r, "a", 2).unwrap();
        // The freed subnet is reused and the id is not.
        let a = r.host_by_name("a").unwrap();
        assert_eq!(a.id, HostId(1));
        assert_eq!(a.subnet, "10.42.0.0/24".parse::<IpNet>().unwrap());
    }

    #[test]
    fn a_second_join_of_a_name_is_refused_and_a_retry_is_recognised_by_its_credential() {
        let mut r = registry();
        join(&mut r, "a", 1).unwrap();
        join(&mut r, "b", 2).unwrap();
        // Name and key are public (every netmap lists them): they prove nothing.
        let hijack = r.plan_join(
            request("a", 1),
            &SecretHash::of(b"t"),
            SecretHash::of(b"attacker"),
            20,
        );
        assert!(
            matches!(hijack, Err(RegistryError::NameTaken { .. })),
            "{hijack:?}"
        );
        assert_eq!(
            r.joined_as(&request("a", 1), &SecretHash::of(b"attacker")),
            None
        );
        // The host itself, retrying with the credential it joined with.
        assert_eq!(
            r.joined_as(&request("a", 1), &SecretHash::of(b"a")),
            Some(HostId(0))
        );
        assert_eq!(r.joined_as(&request("a", 2), &SecretHash::of(b"a")), None);
    }

    #[test]
    fn a_credential_belongs_to_one_host() {
        let mut r = registry();
        join(&mut r, "a", 1).unwrap();
        // Another host choosing host a's credential (a copied state directory).
        let err = r
            .plan_join(
                request("b", 2),
                &SecretHash::of(b"t"),
                SecretHash::of(b"a"),
                10,
            )
            .unwrap_err();
        assert_eq!(err, RegistryError::CredentialInUse(HostId(0)));
        // A snapshot with two hosts sharing one is refused as a whole.
        join(&mut r, "b", 2).unwrap();
        let mut snap = serde_json::to_value(&r).unwrap();
        snap["hosts"][1]["credential_hash"] = snap["hosts"][0]["credential_hash"].clone();
        let err = serde_json::from_value::<Registry>(snap).unwrap_err();
        assert!(err.to_string().contains("already host 0's"), "{err}");
    }

    #[test]
    fn tokens_are_refused_with_the_reason() {
        let mut r = registry();
        let once = r.plan_token(
            SecretHash::of(b"once"),
            0,
            100,
            false,
            Labels::from([("zone".into(), "token".into())]),
        );
        r.apply(&once).unwrap();
        let plan = |r: &Registry, secret: &[u8], now| {
            r.plan_join(
                request("x", 9),
                &SecretHash::of(secret),
                SecretHash::of(b"c"),
                now,
            )
        };
        assert_eq!(
            plan(&r, b"nope", 10).unwrap_err().to_string(),
            "the join token is unknown"
        );
        assert_eq!(
            plan(&r, b"once", 100).unwrap_err().to_string(),
            "the join token 1 expired at 100 (unix seconds)"
        );
        let m = plan(&r, b"once", 99).unwrap();
        r.apply(&m).unwrap();
        // Token labels win over the host's own.
        assert_eq!(r.host_by_name("x").unwrap().labels["zone"], "token");
        assert_eq!(
            plan(&r, b"once", 50).unwrap_err().to_string(),
            "the join token 1 was already used by host 0"
        );
        // Replaying the same join again is refused too (single use holds under replay).
        assert!(matches!(
            r.check(&m),
            Err(RegistryError::Token(TokenRefused::Used { .. }))
        ));
        let revoke = r.plan_revoke_token(TokenId(0)).unwrap();
        r.apply(&revoke).unwrap();
        assert_eq!(
            plan(&r, b"t", 10).unwrap_err(),
            RegistryError::Token(TokenRefused::Revoked { id: TokenId(0) })
        );
    }

    #[test]
    fn mutations_before_initialization_or_out_of_order_are_refused() {
        let mut r = Registry::default();
        let join = Mutation::HostJoined {
            id: HostId(0),
            name: name("a"),
            public_key: key(1),
            endpoint: None,
            subnet: "10.42.0.0/24".parse().unwrap(),
            labels: Labels::new(),
            credential_hash: SecretHash::of(b"a"),
            token: None,
            at: 0,
        };
        assert_eq!(r.apply(&join), Err(RegistryError::NotInitialized));
        r.apply(
            &r.plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            r.plan_initialize("10.0.0.0/8".parse().unwrap(), 24),
            Err(RegistryError::AlreadyInitialized { .. })
        ));
        r.apply(&join).unwrap();
        // The same subnet for another host is refused: IPAM never double-allocates.
        let mut twin = join.clone();
        if let Mutation::HostJoined {
            id,
            name: n,
            public_key,
            credential_hash,
            ..
        } = &mut twin
        {
            *id = HostId(5);
            *n = name("b");
            *public_key = key(2);
            *credential_hash = SecretHash::of(b"b");
        }
        assert!(matches!(
            r.apply(&twin),
            Err(RegistryError::Ipam(IpamError::AlreadyAllocated { .. }))
        ));
        assert!(matches!(
            r.apply(&Mutation::HostRemoved { id: HostId(9) }),
            Err(RegistryError::NoSuchHost(_))
        ));
    }

    #[test]
    fn cluster_full_is_refused() {
        let mut r = Registry::default();
        r.apply(
            &r.plan_initialize("10.42.0.0/23".parse().unwrap(), 24)
                .unwrap(),
        )
        .unwrap();
        r.apply(&r.plan_token(SecretHash::of(b"t"), 0, 1000, true, Labels::new()))
            .unwrap();
        join(&mut r, "a", 1).unwrap();
        join(&mut r, "b", 2).unwrap();
        assert!(matches!(
            join(&mut r, "c", 3),
            Err(RegistryError::Ipam(IpamError::Exhausted { .. }))
        ));
    }

    #[test]
    fn snapshot_round_trips_and_is_checked() {
        let mut r = registry();
        join(&mut r, "a", 1).unwrap();
        join(&mut r, "b", 2).unwrap();
        let m = r
            .plan_endpoint(HostId(1), Some("198.18.0.9:1".parse().unwrap()))
            .unwrap()
            .unwrap();
        r.apply(&m).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        let back: Registry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // A snapshot with two hosts on one subnet is refused.
        let broken = json.replace("10.42.1.0/24", "10.42.0.0/24");
        let err = serde_json::from_str::<Registry>(&broken).unwrap_err();
        assert!(err.to_string().contains("already allocated"), "{err}");
    }

    #[test]
    fn mutation_json_is_tagged_and_strict() {
        let m = Mutation::HostRemoved { id: HostId(3) };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"type":"host_removed","id":3}"#);
        assert!(
            serde_json::from_str::<Mutation>(r#"{"type":"host_removed","id":3,"x":1}"#).is_err()
        );
        assert!(serde_json::from_str::<Mutation>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn host_names_parse() {
        assert!("".parse::<HostName>().is_err());
        assert!("a/b".parse::<HostName>().is_err());
        assert!("x".repeat(64).parse::<HostName>().is_err());
        assert!("host-a.b_c".parse::<HostName>().is_ok());
    }
}
