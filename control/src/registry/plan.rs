//! The `plan_*` methods of [`Registry`]: a request checked against the current state, and the
//! [`Mutation`] that records its outcome with every choice made (ids, the subnet, the labels).

use std::net::SocketAddr;

use ipnet::IpNet;
use wgmesh_config::token::SecretHash;

use super::error::{RegistryError, TokenRefused};
use super::mutation::Mutation;
use super::records::{JoinRequest, Labels, Token};
use super::Registry;
use crate::ids::{HostId, TokenId};

impl Registry {
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
        token.check_usable(Some(now))?;
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
}
