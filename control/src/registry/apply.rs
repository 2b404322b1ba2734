//! [`Registry::check`] and [`Registry::apply`]: whether a [`Mutation`] fits the state, and the
//! change it makes. Every check comes before any change, so a refused mutation changes nothing.

use wgmesh_config::token::SecretHash;
use wgmesh_config::{HostName, PublicKey};

use super::error::RegistryError;
use super::mutation::Mutation;
use super::records::{Host, StoredPolicy, Token};
use super::Registry;
use crate::ids::HostId;
use crate::ipam::Ipam;

impl Registry {
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
                    // Replay has no clock: expiry was checked when the join was planned.
                    t.check_usable(None)?;
                }
                // Every join is a new host with a new id (a retried join is answered without a
                // mutation, see `joined_as`).
                if id.0 < self.next_host_id {
                    return Err(RegistryError::IdInUse {
                        what: "host",
                        id: id.0,
                    });
                }
                self.check_credential_free(credential_hash)?;
                self.check_unique(*id, name, public_key)?;
                ipam.check_reserve(subnet, *id)?;
            }
            Mutation::HostRemoved { id } | Mutation::EndpointChanged { id, .. } => {
                if !self.hosts.contains_key(id) {
                    return Err(RegistryError::NoSuchHost(id.to_string()));
                }
            }
            Mutation::WorkloadsReported { host, workloads } => {
                self.check_workloads(*host, workloads)?;
            }
            Mutation::PolicyApplied { .. } => {}
            Mutation::PolicyRemoved => {
                if self.policy.is_none() {
                    return Err(RegistryError::NoPolicy);
                }
            }
            Mutation::RotationsQueued { .. }
            | Mutation::RotationRequested { .. }
            | Mutation::KeyAnnounced { .. }
            | Mutation::RotationCompleted { .. }
            | Mutation::RotationAbandoned { .. } => self.check_rotation_step(m)?,
        }
        Ok(())
    }

    /// Applies a mutation: checks it ([`Registry::check`]), then changes the state and bumps
    /// the revision. A refused mutation changes nothing.
    pub fn apply(&mut self, m: &Mutation) -> Result<(), RegistryError> {
        self.check(m)?;
        let changes_netmaps = self.changes_netmaps(m);
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
            } => self.add_joined(Host {
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
                key_epoch: 0,
                key_since: at,
                rotation: None,
                rotation_abandoned_at: None,
            })?,
            Mutation::HostRemoved { id } => self.remove_host(id),
            Mutation::EndpointChanged { id, endpoint } => {
                if let Some(host) = self.hosts.get_mut(&id) {
                    host.endpoint = endpoint;
                }
            }
            Mutation::WorkloadsReported {
                host,
                mut workloads,
            } => {
                workloads.sort_by_key(|w| w.ip);
                if workloads.is_empty() {
                    self.workloads.remove(&host);
                } else {
                    self.workloads.insert(host, workloads);
                }
            }
            Mutation::PolicyApplied {
                text,
                origin,
                policy,
            } => {
                self.policy = Some(StoredPolicy {
                    text,
                    origin,
                    policy,
                    revision: self.revision + 1,
                });
            }
            Mutation::PolicyRemoved => self.policy = None,
            Mutation::RotationsQueued { .. }
            | Mutation::RotationRequested { .. }
            | Mutation::KeyAnnounced { .. }
            | Mutation::RotationCompleted { .. }
            | Mutation::RotationAbandoned { .. } => self.apply_rotation_step(m),
        }
        self.revision += 1;
        if changes_netmaps {
            self.netmap_revision = self.revision;
        }
        Ok(())
    }

    /// Whether applying `m` to the current state can change some host's netmap
    /// ([`Mutation::changes_netmaps`]): workloads matter to netmaps only while a policy is
    /// applied (without one, netmaps have no filter and every host is every other's peer).
    pub fn changes_netmaps(&self, m: &Mutation) -> bool {
        match m {
            Mutation::WorkloadsReported { .. } => self.policy.is_some(),
            _ => m.changes_netmaps(),
        }
    }

    /// The change of a checked [`Mutation::HostJoined`]: its token is used once more, its subnet
    /// taken, its id spent.
    fn add_joined(&mut self, host: Host) -> Result<(), RegistryError> {
        if let Some(t) = host.token.and_then(|t| self.tokens.get_mut(&t)) {
            t.used_by.push(host.id);
        }
        if let Some(ipam) = self.ipam.as_mut() {
            ipam.reserve(host.subnet, host.id)?;
        }
        self.next_host_id = host.id.0 + 1;
        self.insert_host(host);
        Ok(())
    }

    /// Adds `host` and its index entries (its subnet is reserved by the caller).
    pub(super) fn insert_host(&mut self, host: Host) {
        self.credentials
            .insert(*host.credential_hash.as_bytes(), host.id);
        self.names.insert(host.name.clone(), host.id);
        self.hosts.insert(host.id, host);
    }

    /// Removes host `id`: its credential, its name, its subnet and its workloads.
    fn remove_host(&mut self, id: HostId) {
        if let Some(host) = self.hosts.remove(&id) {
            self.credentials.remove(host.credential_hash.as_bytes());
            self.names.remove(&host.name);
            if let Some(ipam) = self.ipam.as_mut() {
                ipam.release(&host.subnet);
            }
            self.workloads.remove(&id);
        }
    }

    /// Refuses a credential that is already a host's.
    pub(super) fn check_credential_free(&self, hash: &SecretHash) -> Result<(), RegistryError> {
        match self.credentials.get(hash.as_bytes()) {
            Some(&holder) => Err(RegistryError::CredentialInUse(holder)),
            None => Ok(()),
        }
    }

    /// Refuses a name held by another host and a key another host holds, registered or
    /// announced in a rotation (ignoring `id`).
    pub(super) fn check_unique(
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
            if h.holds_key(key) {
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
