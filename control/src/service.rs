//! The control plane's request handling, without HTTP: authentication of bearer tokens,
//! authorisation of each call, the registry change it makes, the store commit that makes it
//! durable, and the audit line it leaves.
//!
//! [`Control`] owns the registry and the store; the HTTP layer holds it behind a lock and calls
//! one method per request. A write is committed to the store (fsynced) before the method
//! returns, and only then applied to the in-memory registry, so a reply never acknowledges what
//! a crash could lose, and a failed commit changes nothing.

use std::net::IpAddr;
use std::str::FromStr;

use wgmesh_config::labels;
use wgmesh_config::netmap::{Netmap, NetmapDelta, NetmapUpdate};
use wgmesh_config::token::{AdminToken, HostCredential, JoinToken, SecretHash};

use crate::audit::{Action, Actor, AuditEvent, AuditLog, Outcome, Target};
use crate::changelog::{touched_name, ChangeLog};
use crate::compile::{self, Policy};
use wgmesh_client::api::{
    ApiReason, EndpointBody, JoinBody, JoinReply, NodeInfo, RemovedReply, RevisionReply, TokenBody,
    TokenInfo, TokenReply, TokenRevokedReply, TokenState, DEFAULT_TOKEN_TTL_SECS,
    MAX_TOKEN_TTL_SECS, ONLINE_WITHIN_SECS,
};
use wgmesh_config::HostName;

use crate::registry::{HostId, JoinRequest, Mutation, Registry, RegistryError};
use crate::store::{Store, StoreError};

/// How many recent netmap changes are kept for deltas; a host further behind gets a whole
/// netmap.
const CHANGE_LOG_CAPACITY: usize = 4096;

/// A refused request: the reason word, its HTTP status, and a message for humans (never a
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The machine word.
    pub reason: ApiReason,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// A refusal with this reason and message.
    pub fn new(reason: ApiReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ApiReason::BadRequest, message)
    }
}

/// Who is calling, once their bearer token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The holder of the admin token.
    Admin,
    /// A joined host.
    Host(HostId),
    /// No bearer token, or one nobody holds.
    Anonymous,
}

/// The control plane's state and the rules for changing it.
pub struct Control {
    registry: Registry,
    store: Box<dyn Store + Send>,
    /// A commit failed with an I/O error: the store must be recovered before the next call.
    store_failed: bool,
    /// Recent netmap changes, for delta netmaps.
    changes: ChangeLog,
    /// This run's epoch (random, non-zero): deltas only go to netmaps of this run.
    epoch: u64,
    /// The netmap revision each host holds, as far as this run knows: what it polled with, or
    /// what it was last sent.
    held: std::collections::HashMap<HostId, u64>,
    audit: AuditLog,
    admin_hash: SecretHash,
    ca_der: Vec<u8>,
    policy: Policy,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("revision", &self.registry.revision())
            .field("hosts", &self.registry.hosts().len())
            .finish_non_exhaustive()
    }
}

impl Control {
    /// A control plane over `store` (already holding `registry`), trusting `admin_hash` for
    /// admin calls and issuing join tokens for the CA `ca_der`.
    pub fn new(
        registry: Registry,
        store: Box<dyn Store + Send>,
        audit: AuditLog,
        admin_hash: SecretHash,
        ca_der: Vec<u8>,
    ) -> Self {
        Self {
            changes: ChangeLog::new(registry.netmap_revision(), CHANGE_LOG_CAPACITY),
            epoch: new_epoch(),
            held: std::collections::HashMap::new(),
            registry,
            store,
            store_failed: false,
            audit,
            admin_hash,
            ca_der,
            policy: Policy::AllowAll,
        }
    }

    /// Before a call: if an earlier commit failed, recovers the store and takes the state that
    /// is durable now (the failed change may or may not be in it), keeping the hosts' last-seen
    /// times. While the store cannot be recovered, every call that changes something fails.
    pub fn recover_if_needed(&mut self) {
        if !self.store_failed {
            return;
        }
        match self.store.recover() {
            Ok(mut state) => {
                for host in self.registry.hosts().values() {
                    state.touch(host.id, host.last_seen);
                }
                self.registry = state;
                self.changes.reset(self.registry.netmap_revision());
                self.store_failed = false;
            }
            Err(e) => tracing::error!("the store is still unusable: {e}"),
        }
    }

    /// This run's epoch, which netmaps carry.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The registry revision.
    pub fn revision(&self) -> u64 {
        self.registry.revision()
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Who holds `bearer` (the text after `Bearer `), in constant time per comparison.
    pub fn authenticate(&self, bearer: Option<&str>) -> Caller {
        let Some(bearer) = bearer else {
            return Caller::Anonymous;
        };
        if let Ok(admin) = AdminToken::from_str(bearer) {
            if admin.hash().ct_eq(&self.admin_hash) {
                return Caller::Admin;
            }
        } else if let Ok(credential) = HostCredential::from_str(bearer) {
            if let Some(host) = self.registry.host_by_credential(&credential.hash()) {
                return Caller::Host(host.id);
            }
        }
        Caller::Anonymous
    }

    /// `POST /v1/join`.
    pub fn join(
        &mut self,
        body: JoinBody,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<JoinReply, ApiError> {
        let name = HostName::from_str(&body.name).ok();
        let target = name.clone().map(|name| Target::Host { id: None, name });
        let mut event = AuditEvent {
            time: now,
            actor: Actor::Joiner { token: None },
            from,
            action: Action::Join,
            target,
            result: Outcome::Ok,
        };
        let result = self.try_join(body, now, &mut event);
        event.result = outcome_of(&result);
        self.record(&event);
        result
    }

    fn try_join(
        &mut self,
        body: JoinBody,
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<JoinReply, ApiError> {
        let token = JoinToken::from_str(&body.token)
            .map_err(|e| ApiError::bad_request(format!("token: {e}")))?;
        if !token.ca_digest.matches(&self.ca_der) {
            return Err(ApiError::new(
                ApiReason::TokenWrongCa,
                format!(
                    "the join token is for the CA with digest {}, not this control plane's",
                    token.ca_digest
                ),
            ));
        }
        let token_hash = token.secret_hash();
        if let Ok(t) = self.registry.check_token(&token_hash, now) {
            event.actor = Actor::Joiner { token: Some(t.id) };
        }
        let name = HostName::from_str(&body.name).map_err(|e| {
            ApiError::bad_request(format!("name: {:?} is not a host name: {e}", body.name))
        })?;
        labels::check_labels(&body.labels)
            .map_err(|e| ApiError::bad_request(format!("labels: {e}")))?;
        if body.endpoint.is_some_and(|e| e.port() == 0) {
            return Err(ApiError::bad_request(
                "endpoint: the port must not be 0".to_owned(),
            ));
        }
        let credential = match &body.credential {
            Some(text) => HostCredential::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("credential: {e}")))?,
            None => HostCredential::generate(),
        };
        let request = JoinRequest {
            name,
            public_key: body.public_key,
            endpoint: body.endpoint,
            labels: body.labels,
        };
        let id = match self.registry.joined_as(&request, &credential.hash()) {
            Some(id) => {
                tracing::info!(name = %request.name, "join retried by the host that made it");
                id
            }
            None => {
                let m = self
                    .registry
                    .plan_join(request, &token_hash, credential.hash(), now)
                    .map_err(registry_error)?;
                let Mutation::HostJoined { id, .. } = &m else {
                    unreachable!("plan_join plans a join");
                };
                let id = *id;
                self.commit(&m)?;
                let host = self.registry.host(id).expect("just joined");
                tracing::info!(name = %host.name, subnet = %host.subnet, key = %host.public_key.short(), "host joined");
                id
            }
        };
        self.registry.touch(id, now);
        let host = self.registry.host(id).expect("joined");
        event.target = Some(Target::Host {
            id: Some(id),
            name: host.name.clone(),
        });
        let netmap = self.netmap_of(id);
        Ok(JoinReply {
            credential: credential.expose(),
            netmap,
        })
    }

    /// `GET /v1/hosts/{name}/netmap`, once the long poll decided to answer: the host's netmap.
    pub fn netmap(
        &mut self,
        caller: &Caller,
        name: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<Netmap, ApiError> {
        let id = self.polled(caller, name, self.registry.netmap_revision(), now, from)?;
        Ok(self.netmap_of(id))
    }

    /// `GET /v1/hosts/{name}/netmap?delta=true`, once the long poll decided to answer: what
    /// changed since `from` when the host's netmap is of this run (`epoch`) and the change log
    /// reaches back to it, else the whole netmap.
    pub fn netmap_update(
        &mut self,
        caller: &Caller,
        name: &str,
        (from, epoch): (u64, u64),
        now: u64,
        from_ip: Option<IpAddr>,
    ) -> Result<NetmapUpdate, ApiError> {
        let current = self.registry.netmap_revision();
        let id = self.polled(caller, name, current, now, from_ip)?;
        let delta = match self.changes.since(from, current) {
            Some(changed) if from != 0 && epoch == self.epoch => {
                compile::delta(&self.registry, &self.policy, id, from, changed)
            }
            _ => None,
        };
        Ok(match delta {
            Some(d) => NetmapUpdate::Delta(NetmapDelta {
                epoch: self.epoch,
                ..d
            }),
            None => NetmapUpdate::Full(self.netmap_of(id)),
        })
    }

    /// Checks that `caller` may read `name`'s netmap (for the long poll, before it waits).
    /// `held` is the revision the host says it holds.
    pub fn check_netmap_access(
        &mut self,
        caller: &Caller,
        name: &str,
        held: u64,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        self.polled(caller, name, held, now, from).map(drop)
    }

    /// A netmap poll by `caller` for `name`: authorised (a refusal is audited), the host seen
    /// at `now` and known to hold netmap revision `holds`.
    fn polled(
        &mut self,
        caller: &Caller,
        name: &str,
        holds: u64,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<HostId, ApiError> {
        let id = self
            .authorize_host(caller, name)
            .inspect_err(|e| self.refused(caller, Action::NetmapRead, name, e, now, from))?;
        self.registry.touch(id, now);
        self.held.insert(id, holds);
        Ok(id)
    }

    /// `PUT /v1/hosts/{name}/endpoint`.
    pub fn set_endpoint(
        &mut self,
        caller: &Caller,
        name: &str,
        body: EndpointBody,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<RevisionReply, ApiError> {
        let result = self.try_set_endpoint(caller, name, body, now);
        match &result {
            // An unchanged endpoint is not a change worth a line.
            Ok((_, false)) => {}
            Ok((_, true)) => self.audit_ok(caller, Action::EndpointChange, name, now, from),
            Err(e) => self.refused(caller, Action::EndpointChange, name, e, now, from),
        }
        result.map(|(reply, _)| reply)
    }

    fn try_set_endpoint(
        &mut self,
        caller: &Caller,
        name: &str,
        body: EndpointBody,
        now: u64,
    ) -> Result<(RevisionReply, bool), ApiError> {
        let id = self.authorize_host(caller, name)?;
        if body.endpoint.is_some_and(|e| e.port() == 0) {
            return Err(ApiError::bad_request("endpoint: the port must not be 0"));
        }
        self.registry.touch(id, now);
        let changed = match self
            .registry
            .plan_endpoint(id, body.endpoint)
            .map_err(registry_error)?
        {
            Some(m) => {
                self.commit(&m)?;
                tracing::info!(%name, endpoint = ?body.endpoint, "host endpoint changed");
                true
            }
            None => false,
        };
        Ok((
            RevisionReply {
                revision: self.registry.netmap_revision(),
            },
            changed,
        ))
    }

    /// `POST /v1/tokens`.
    pub fn create_token(
        &mut self,
        caller: &Caller,
        body: TokenBody,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<TokenReply, ApiError> {
        let result = self.try_create_token(caller, body, now);
        let target = result.as_ref().ok().map(|reply| Target::Token {
            id: crate::registry::TokenId(reply.id),
        });
        let outcome = outcome_of(&result);
        self.audit(caller, Action::TokenCreate, target, outcome, now, from);
        result
    }

    fn try_create_token(
        &mut self,
        caller: &Caller,
        body: TokenBody,
        now: u64,
    ) -> Result<TokenReply, ApiError> {
        require_admin(caller)?;
        let ttl = body.ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
        if ttl == 0 || ttl > MAX_TOKEN_TTL_SECS {
            return Err(ApiError::bad_request(format!(
                "ttl_secs: {ttl} is out of range; use 1 to {MAX_TOKEN_TTL_SECS} (a year)"
            )));
        }
        labels::check_labels(&body.labels)
            .map_err(|e| ApiError::bad_request(format!("labels: {e}")))?;
        let token = JoinToken::generate(&self.ca_der);
        let m = self
            .registry
            .plan_token(token.secret_hash(), now, ttl, body.reusable, body.labels);
        let Mutation::TokenCreated { id, expires_at, .. } = &m else {
            unreachable!("plan_token plans a token");
        };
        let (id, expires_at) = (id.0, *expires_at);
        self.commit(&m)?;
        tracing::info!(
            id,
            expires_at,
            reusable = body.reusable,
            "join token created"
        );
        Ok(TokenReply {
            token: token.expose(),
            id,
            expires_at,
        })
    }

    /// `GET /v1/tokens`: every join token, oldest first.
    pub fn list_tokens(
        &mut self,
        caller: &Caller,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<Vec<TokenInfo>, ApiError> {
        if let Err(e) = require_admin(caller) {
            self.refused_request(caller, Action::TokenList, &e, now, from);
            return Err(e);
        }
        Ok(self
            .registry
            .tokens()
            .values()
            .map(|t| TokenInfo {
                id: t.id.0,
                created_at: t.created_at,
                expires_at: t.expires_at,
                reusable: t.reusable,
                labels: t.labels.clone(),
                joins: t.used_by.len(),
                state: if t.revoked {
                    TokenState::Revoked
                } else if !t.reusable && !t.used_by.is_empty() {
                    TokenState::Used
                } else if now >= t.expires_at {
                    TokenState::Expired
                } else {
                    TokenState::Valid
                },
            })
            .collect())
    }

    /// `DELETE /v1/tokens/{id}`: no host can join with the token afterwards (hosts that joined
    /// with it stay).
    pub fn revoke_token(
        &mut self,
        caller: &Caller,
        id: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<TokenRevokedReply, ApiError> {
        let parsed = id.parse::<u64>().ok().map(crate::registry::TokenId);
        let result = self.try_revoke_token(caller, id, parsed);
        let target = parsed.map(|id| Target::Token { id });
        let outcome = outcome_of(&result);
        self.audit(caller, Action::TokenRevoke, target, outcome, now, from);
        result
    }

    fn try_revoke_token(
        &mut self,
        caller: &Caller,
        text: &str,
        id: Option<crate::registry::TokenId>,
    ) -> Result<TokenRevokedReply, ApiError> {
        require_admin(caller)?;
        let id = id.ok_or_else(|| {
            ApiError::bad_request(format!(
                "{text:?} is not a token id (a number, as `token list` shows)"
            ))
        })?;
        let m = self
            .registry
            .plan_revoke_token(id)
            .map_err(registry_error)?;
        // Revoking twice changes nothing and writes nothing.
        if !self.registry.tokens()[&id].revoked {
            self.commit(&m)?;
        }
        tracing::info!(id = id.0, "join token revoked");
        Ok(TokenRevokedReply { revoked: id.0 })
    }

    /// `GET /v1/nodes`.
    pub fn list_nodes(
        &mut self,
        caller: &Caller,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<Vec<NodeInfo>, ApiError> {
        if let Err(e) = require_admin(caller) {
            self.refused_request(caller, Action::NodeList, &e, now, from);
            return Err(e);
        }
        let mut nodes: Vec<NodeInfo> = self
            .registry
            .hosts()
            .values()
            .map(|h| NodeInfo {
                name: h.name.to_string(),
                subnet: h.subnet,
                endpoint: h.endpoint,
                public_key: h.public_key,
                labels: h.labels.clone(),
                joined_at: h.joined_at,
                last_seen: h.last_seen,
                online: h.last_seen != 0 && now.saturating_sub(h.last_seen) <= ONLINE_WITHIN_SECS,
                netmap_revision: self.held.get(&h.id).copied(),
                in_sync: self.held.get(&h.id) == Some(&self.registry.netmap_revision()),
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    /// `DELETE /v1/nodes/{name}`.
    pub fn remove_node(
        &mut self,
        caller: &Caller,
        name: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<RemovedReply, ApiError> {
        // The target is named before the removal, while the host still has its id.
        let target = host_target(name, &self.registry);
        let result = self.try_remove_node(caller, name);
        let outcome = outcome_of(&result);
        self.audit(caller, Action::NodeRemove, target, outcome, now, from);
        result
    }

    fn try_remove_node(&mut self, caller: &Caller, name: &str) -> Result<RemovedReply, ApiError> {
        require_admin(caller)?;
        let m = self.registry.plan_remove(name).map_err(registry_error)?;
        self.commit(&m)?;
        tracing::info!(%name, "host removed");
        Ok(RemovedReply {
            removed: name.to_owned(),
            revision: self.registry.netmap_revision(),
        })
    }

    /// Audits a request the HTTP layer refused before it reached a method (bad JSON, too large).
    pub fn refused_request(
        &mut self,
        caller: &Caller,
        action: Action,
        error: &ApiError,
        now: u64,
        from: Option<IpAddr>,
    ) {
        let result = Outcome::Refused(error.reason);
        self.audit(caller, action, None, result, now, from);
    }

    fn authorize_host(&self, caller: &Caller, name: &str) -> Result<HostId, ApiError> {
        match caller {
            Caller::Anonymous => Err(unauthenticated()),
            Caller::Admin => Err(ApiError::new(
                ApiReason::Forbidden,
                "the admin token cannot act as a host; use the host's own credential",
            )),
            Caller::Host(id) => {
                let host = self.registry.host(*id).ok_or_else(unauthenticated)?;
                if host.name.as_str() == name {
                    Ok(*id)
                } else {
                    Err(ApiError::new(
                        ApiReason::Forbidden,
                        format!(
                            "host {} may only read and change its own records, not {name:?}'s",
                            host.name
                        ),
                    ))
                }
            }
        }
    }

    fn netmap_of(&self, id: HostId) -> Netmap {
        let netmap = compile::netmap(&self.registry, &self.policy, id).expect("an existing host");
        Netmap {
            epoch: self.epoch,
            ..netmap
        }
    }

    /// Makes `m` durable, then applies it.
    fn commit(&mut self, m: &Mutation) -> Result<(), ApiError> {
        if self.store_failed {
            return Err(store_unusable());
        }
        self.store.commit(m).map_err(|e| match e {
            StoreError::Rejected(e) => registry_error(e),
            e => {
                tracing::error!("cannot commit to the store: {e}");
                self.store_failed = true;
                store_unusable()
            }
        })?;
        let touched = touched_name(&self.registry, m);
        self.registry
            .apply(m)
            .expect("the store accepted it, so it applies");
        let revision = self.registry.netmap_revision();
        match touched {
            Some(name) => self.changes.record(revision, &name),
            None if m.changes_netmaps() => self.changes.reset(revision),
            None => {}
        }
        Ok(())
    }

    fn audit_ok(
        &mut self,
        caller: &Caller,
        action: Action,
        name: &str,
        now: u64,
        from: Option<IpAddr>,
    ) {
        let target = host_target(name, &self.registry);
        self.audit(caller, action, target, Outcome::Ok, now, from);
    }

    fn refused(
        &mut self,
        caller: &Caller,
        action: Action,
        name: &str,
        e: &ApiError,
        now: u64,
        from: Option<IpAddr>,
    ) {
        let target = host_target(name, &self.registry);
        let result = Outcome::Refused(e.reason);
        self.audit(caller, action, target, result, now, from);
    }

    /// Appends one line to the audit log (failures are logged: the change is already durable).
    fn audit(
        &mut self,
        caller: &Caller,
        action: Action,
        target: Option<Target>,
        result: Outcome,
        now: u64,
        from: Option<IpAddr>,
    ) {
        let event = AuditEvent {
            time: now,
            actor: actor_of(caller, &self.registry),
            from,
            action,
            target,
            result,
        };
        self.record(&event);
    }

    fn record(&mut self, event: &AuditEvent) {
        if let Err(e) = self.audit.record(event) {
            tracing::error!("{e}");
        }
    }
}

/// A random, non-zero run id.
fn new_epoch() -> u64 {
    let secret = wgmesh_config::token::Secret::generate();
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&secret.as_bytes()[..8]);
    u64::from_le_bytes(bytes) | 1
}

fn store_unusable() -> ApiError {
    ApiError::new(
        ApiReason::Internal,
        "the control plane could not write its store (see its log); the change was not \
         acknowledged and may or may not have been kept: retry",
    )
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        ApiReason::Unauthenticated,
        "missing or unknown credential: send `Authorization: Bearer <admin token or host credential>`",
    )
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Anonymous => Err(unauthenticated()),
        Caller::Host(_) => Err(ApiError::new(
            ApiReason::Forbidden,
            "this call needs the admin token; a host credential cannot make it",
        )),
    }
}

fn actor_of(caller: &Caller, registry: &Registry) -> Actor {
    match caller {
        Caller::Admin => Actor::Admin,
        Caller::Host(id) => match registry.host(*id) {
            Some(h) => Actor::Host {
                id: *id,
                name: h.name.clone(),
            },
            None => Actor::Anonymous,
        },
        Caller::Anonymous => Actor::Anonymous,
    }
}

fn host_target(name: &str, registry: &Registry) -> Option<Target> {
    let name = HostName::from_str(name).ok()?;
    let id = registry.host_by_name(name.as_str()).map(|h| h.id);
    Some(Target::Host { id, name })
}

fn registry_error(e: RegistryError) -> ApiError {
    ApiError::new((&e).into(), e.to_string())
}

fn outcome_of<T>(result: &Result<T, ApiError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Refused(e.reason),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use wgmesh_config::PublicKey;

    use super::*;
    use crate::store::MemStore;

    const CA: &[u8] = b"pretend CA certificate";

    struct Fixture {
        control: Control,
        admin: AdminToken,
        audit: PathBuf,
        _dir: tempfile::TempDir,
    }

    fn fixture_with(store: Box<dyn Store + Send>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let mut registry = Registry::default();
        let m = registry
            .plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
            .unwrap();
        registry.apply(&m).unwrap();
        let mut store = store;
        store.commit(&m).unwrap();
        let admin = AdminToken::generate();
        let control = Control::new(
            registry,
            store,
            AuditLog::open(&audit).unwrap(),
            admin.hash(),
            CA.to_vec(),
        );
        Fixture {
            control,
            admin,
            audit,
            _dir: dir,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(Box::new(MemStore::new()))
    }

    fn token(f: &mut Fixture, ttl: u64, reusable: bool) -> String {
        let admin = f.control.authenticate(Some(&f.admin.expose()));
        let body = TokenBody {
            ttl_secs: Some(ttl),
            reusable,
            labels: BTreeMap::new(),
        };
        f.control
            .create_token(&admin, body, 1000, None)
            .unwrap()
            .token
    }

    fn join(f: &mut Fixture, token: &str, name: &str, key: u8) -> Result<JoinReply, ApiError> {
        let body = JoinBody {
            token: token.to_owned(),
            name: name.to_owned(),
            public_key: PublicKey::from_bytes([key; 32]),
            endpoint: None,
            labels: BTreeMap::new(),
            credential: None,
        };
        f.control.join(body, 1001, None)
    }

    fn reason<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ApiReason {
        r.unwrap_err().reason
    }

    #[test]
    fn every_call_checks_who_is_calling() {
        let mut f = fixture();
        let t = token(&mut f, 3600, true);
        let a = join(&mut f, &t, "host-a", 1).unwrap().credential;
        join(&mut f, &t, "host-b", 2).unwrap();
        let anon = f.control.authenticate(None);
        let junk = f.control.authenticate(Some("WGMH1-not-a-credential"));
        let admin = f.control.authenticate(Some(&f.admin.expose()));
        let host_a = f.control.authenticate(Some(&a));
        assert_eq!(anon, Caller::Anonymous);
        assert_eq!(junk, Caller::Anonymous);
        assert_eq!(admin, Caller::Admin);
        assert!(matches!(host_a, Caller::Host(_)));
        // A second admin token (from another cluster) is nobody here.
        let other_admin = AdminToken::generate().expose();
        assert_eq!(
            f.control.authenticate(Some(&other_admin)),
            Caller::Anonymous
        );

        let c = &mut f.control;
        for caller in [&anon, &junk] {
            assert_eq!(
                reason(c.netmap(caller, "host-a", 1, None)),
                ApiReason::Unauthenticated
            );
            assert_eq!(
                reason(c.list_nodes(caller, 1, None)),
                ApiReason::Unauthenticated
            );
            assert_eq!(
                reason(c.remove_node(caller, "host-a", 1, None)),
                ApiReason::Unauthenticated
            );
            let body = EndpointBody { endpoint: None };
            assert_eq!(
                reason(c.set_endpoint(caller, "host-a", body, 1, None)),
                ApiReason::Unauthenticated
            );
            assert_eq!(
                reason(c.create_token(caller, TokenBody::default(), 1, None)),
                ApiReason::Unauthenticated
            );
        }
        // A host: only its own records, no admin calls.
        assert!(c.netmap(&host_a, "host-a", 1, None).is_ok());
        assert_eq!(
            reason(c.netmap(&host_a, "host-b", 1, None)),
            ApiReason::Forbidden
        );
        let body = EndpointBody {
            endpoint: Some("198.18.0.9:51820".parse().unwrap()),
        };
        assert_eq!(
            reason(c.set_endpoint(&host_a, "host-b", body, 1, None)),
            ApiReason::Forbidden
        );
        assert_eq!(reason(c.list_nodes(&host_a, 1, None)), ApiReason::Forbidden);
        assert_eq!(
            reason(c.remove_node(&host_a, "host-b", 1, None)),
            ApiReason::Forbidden
        );
        assert_eq!(
            reason(c.create_token(&host_a, TokenBody::default(), 1, None)),
            ApiReason::Forbidden
        );
        // The admin: no host calls.
        assert_eq!(
            reason(c.netmap(&admin, "host-a", 1, None)),
            ApiReason::Forbidden
        );
        let body = EndpointBody { endpoint: None };
        assert_eq!(
            reason(c.set_endpoint(&admin, "host-a", body, 1, None)),
            ApiReason::Forbidden
        );
        assert_eq!(c.list_nodes(&admin, 1, None).unwrap().len(), 2);
    }

    #[test]
    fn a_join_retried_with_its_credential_succeeds_even_with_a_used_single_use_token() {
        let mut f = fixture();
        let single = token(&mut f, 3600, false);
        let credential = HostCredential::generate().expose();
        let body = |credential: &str| JoinBody {
            token: single.clone(),
            name: "host-a".into(),
            public_key: PublicKey::from_bytes([1; 32]),
            endpoint: None,
            labels: BTreeMap::new(),
            credential: Some(credential.to_owned()),
        };
        let first = f.control.join(body(&credential), 1001, None).unwrap();
        assert_eq!(first.credential, credential);
        let revision = f.control.revision();
        // The reply was lost; the agent asks again with the credential it saved.
        let again = f.control.join(body(&credential), 1002, None).unwrap();
        assert_eq!(again.netmap.host.subnet, first.netmap.host.subnet);
        assert_eq!(f.control.revision(), revision, "a retry changes nothing");
        // Someone else with the same (public) name and key, but not the credential.
        let other = HostCredential::generate().expose();
        assert_eq!(
            reason(f.control.join(body(&other), 1003, None)),
            ApiReason::TokenUsed
        );
        let junk = f.control.join(body("WGMH1-short"), 1003, None);
        assert_eq!(reason(junk), ApiReason::BadRequest);
    }

    #[test]
    fn join_tokens_are_refused_with_the_reason() {
        let mut f = fixture();
        let single = token(&mut f, 3600, false);
        join(&mut f, &single, "host-a", 1).unwrap();
        assert_eq!(
            reason(join(&mut f, &single, "host-b", 2)),
            ApiReason::TokenUsed
        );
        let short = token(&mut f, 1, true);
        // Created at 1000 with a 1 s lifetime; join() joins at 1001.
        assert_eq!(
            reason(join(&mut f, &short, "host-b", 2)),
            ApiReason::TokenExpired
        );
        let unknown = JoinToken::generate(CA).expose();
        assert_eq!(
            reason(join(&mut f, &unknown, "host-b", 2)),
            ApiReason::TokenUnknown
        );
        let foreign = JoinToken::generate(b"another CA").expose();
        assert_eq!(
            reason(join(&mut f, &foreign, "host-b", 2)),
            ApiReason::TokenWrongCa
        );
        assert_eq!(
            reason(join(&mut f, "junk", "host-b", 2)),
            ApiReason::BadRequest
        );
        assert_eq!(f.control.registry().hosts().len(), 1);
    }

    #[test]
    fn names_and_keys_belong_to_one_host_until_an_admin_removes_it() {
        let mut f = fixture();
        let t = token(&mut f, 3600, true);
        let first = join(&mut f, &t, "host-a", 1).unwrap();
        assert_eq!(reason(join(&mut f, &t, "host-a", 2)), ApiReason::NameTaken);
        assert_eq!(reason(join(&mut f, &t, "host-z", 1)), ApiReason::KeyTaken);
        // The same name and key again, without the credential: refused (they are public).
        assert_eq!(reason(join(&mut f, &t, "host-a", 1)), ApiReason::NameTaken);
        assert!(matches!(
            f.control.authenticate(Some(&first.credential)),
            Caller::Host(_)
        ));
        let admin = Caller::Admin;
        f.control.remove_node(&admin, "host-a", 1002, None).unwrap();
        assert_eq!(
            f.control.authenticate(Some(&first.credential)),
            Caller::Anonymous
        );
        let new_key = join(&mut f, &t, "host-a", 2).unwrap();
        assert_eq!(
            new_key.netmap.host.public_key,
            PublicKey::from_bytes([2; 32])
        );
    }

    #[test]
    fn netmaps_follow_joins_removals_and_endpoints() {
        let mut f = fixture();
        let t = token(&mut f, 3600, true);
        let a = join(&mut f, &t, "host-a", 1).unwrap();
        assert!(a.netmap.peers.is_empty());
        let b = join(&mut f, &t, "host-b", 2).unwrap();
        assert_eq!(b.netmap.peers[0].name, "host-a");
        assert_ne!(a.netmap.host.subnet, b.netmap.host.subnet);
        let host_a = f.control.authenticate(Some(&a.credential));
        let host_b = f.control.authenticate(Some(&b.credential));
        let seen = f.control.netmap(&host_a, "host-a", 1, None).unwrap();
        assert_eq!(seen.peers.len(), 1);
        assert!(seen.revision > a.netmap.revision);
        let endpoint = "198.18.0.2:51820".parse().unwrap();
        let body = EndpointBody {
            endpoint: Some(endpoint),
        };
        f.control
            .set_endpoint(&host_b, "host-b", body, 1003, None)
            .unwrap();
        let seen = f.control.netmap(&host_a, "host-a", 1, None).unwrap();
        assert_eq!(seen.peers[0].endpoint, Some(endpoint));
        f.control
            .remove_node(&Caller::Admin, "host-b", 1004, None)
            .unwrap();
        assert!(f
            .control
            .netmap(&host_a, "host-a", 1, None)
            .unwrap()
            .peers
            .is_empty());
    }

    #[test]
    fn hosts_that_hold_a_recent_netmap_get_only_what_changed() {
        let mut f = fixture();
        let t = token(&mut f, 3600, true);
        let a = join(&mut f, &t, "host-a", 1).unwrap();
        join(&mut f, &t, "host-b", 2).unwrap();
        let host_a = f.control.authenticate(Some(&a.credential));
        let NetmapUpdate::Delta(d) = f
            .control
            .netmap_update(
                &host_a,
                "host-a",
                (a.netmap.revision, a.netmap.epoch),
                1,
                None,
            )
            .unwrap()
        else {
            panic!("a host one change behind gets a delta");
        };
        assert_eq!(d.upsert.len(), 1);
        assert_eq!(d.upsert[0].name, "host-b");
        assert_eq!(d.peer_count, 1);
        let applied = a.netmap.apply_delta(&d).unwrap();
        assert_eq!(
            applied,
            f.control.netmap(&host_a, "host-a", 1, None).unwrap()
        );
        // Revision 0 (a first poll) and revisions never given get the whole netmap.
        for from in [0, 999] {
            let update = f
                .control
                .netmap_update(&host_a, "host-a", (from, a.netmap.epoch), 1, None)
                .unwrap();
            assert!(
                matches!(update, NetmapUpdate::Full(_)),
                "from {from}: {update:?}"
            );
        }
        // A netmap of another run (the control plane restarted, or its store was restored)
        // gets the whole netmap even at a revision the log covers.
        for epoch in [0, a.netmap.epoch ^ 2] {
            let update = f
                .control
                .netmap_update(&host_a, "host-a", (a.netmap.revision, epoch), 1, None)
                .unwrap();
            assert!(
                matches!(update, NetmapUpdate::Full(_)),
                "epoch {epoch}: {update:?}"
            );
        }
        // Token changes leave nothing to send.
        let before = applied.revision;
        token(&mut f, 60, false);
        assert_eq!(f.control.registry().netmap_revision(), before);
        f.control
            .remove_node(&Caller::Admin, "host-b", 2, None)
            .unwrap();
        let NetmapUpdate::Delta(d) = f
            .control
            .netmap_update(&host_a, "host-a", (before, applied.epoch), 1, None)
            .unwrap()
        else {
            panic!("delta expected");
        };
        assert_eq!(
            (d.upsert.len(), d.remove.as_slice()),
            (0, &["host-b".to_owned()][..])
        );
        assert!(applied.apply_delta(&d).unwrap().peers.is_empty());
    }

    #[test]
    fn a_revoked_token_is_listed_as_such_and_refused() {
        let mut f = fixture();
        let t = token(&mut f, 3600, true);
        join(&mut f, &t, "host-a", 1).unwrap();
        let host_a = f.control.registry().host_by_name("host-a").unwrap().id;
        let host = Caller::Host(host_a);
        assert_eq!(
            reason(f.control.list_tokens(&host, 1, None)),
            ApiReason::Forbidden
        );
        assert_eq!(
            reason(f.control.revoke_token(&host, "0", 1, None)),
            ApiReason::Forbidden
        );
        assert_eq!(
            reason(f.control.revoke_token(&Caller::Admin, "zero", 1, None)),
            ApiReason::BadRequest
        );
        assert_eq!(
            reason(f.control.revoke_token(&Caller::Admin, "9", 1, None)),
            ApiReason::NotFound
        );
        let listed = f.control.list_tokens(&Caller::Admin, 1001, None).unwrap();
        assert_eq!((listed[0].state, listed[0].joins), (TokenState::Valid, 1));
        f.control
            .revoke_token(&Caller::Admin, "0", 1002, None)
            .unwrap();
        let revision = f.control.revision();
        f.control
            .revoke_token(&Caller::Admin, "0", 1002, None)
            .unwrap();
        assert_eq!(
            f.control.revision(),
            revision,
            "revoking twice writes nothing"
        );
        assert_eq!(
            reason(join(&mut f, &t, "host-b", 2)),
            ApiReason::TokenRevoked
        );
        let listed = f.control.list_tokens(&Caller::Admin, 1003, None).unwrap();
        assert_eq!(listed[0].state, TokenState::Revoked);
        // The host that joined with it stays.
        assert!(f.control.registry().host(host_a).is_some());
    }

    #[test]
    fn node_list_says_which_hosts_hold_the_current_netmap() {
        let mut f = fixture();
        let t = token(&mut f, 3600, true);
        let a = join(&mut f, &t, "host-a", 1).unwrap();
        let host_a = f.control.authenticate(Some(&a.credential));
        let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
        assert_eq!((nodes[0].netmap_revision, nodes[0].in_sync), (None, false));
        join(&mut f, &t, "host-b", 2).unwrap();
        // host-a polls with the revision it holds (before host-b): behind.
        f.control
            .check_netmap_access(&host_a, "host-a", a.netmap.revision, 1, None)
            .unwrap();
        let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
        assert_eq!(
            (nodes[0].netmap_revision, nodes[0].in_sync),
            (Some(a.netmap.revision), false)
        );
        // Its poll is answered: in sync.
        f.control
            .netmap_update(
                &host_a,
                "host-a",
                (a.netmap.revision, a.netmap.epoch),
                1,
                None,
            )
            .unwrap();
        let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
        assert!(nodes[0].in_sync, "{:?}", nodes[0]);
    }

    /// A store whose disk is full: every commit fails.
    struct FullDisk;

    impl Store for FullDisk {
        fn load(&self) -> Result<Registry, StoreError> {
            Ok(Registry::default())
        }
        fn commit(&mut self, _: &Mutation) -> Result<(), StoreError> {
            Err(StoreError::Io {
                path: "store.jsonl".into(),
                action: "append to",
                source: std::io::Error::other("no space left on device"),
            })
        }
        fn recover(&mut self) -> Result<Registry, StoreError> {
            Err(StoreError::Io {
                path: "store.jsonl".into(),
                action: "reopen",
                source: std::io::Error::other("no space left on device"),
            })
        }
    }

    #[test]
    fn a_failed_commit_is_refused_and_changes_nothing() {
        let mut f = fixture();
        let t = token(&mut f, 3600, true);
        let before = f.control.registry().clone();
        // Swap in a failing store, keeping the registry.
        f.control.store = Box::new(FullDisk);
        assert_eq!(reason(join(&mut f, &t, "host-a", 1)), ApiReason::Internal);
        assert_eq!(
            reason(
                f.control
                    .create_token(&Caller::Admin, TokenBody::default(), 1, None)
            ),
            ApiReason::Internal
        );
        assert_eq!(f.control.registry(), &before);
    }

    /// A store whose commits land on disk but, while `fail` is set, report an I/O error (a
    /// failed fsync whose data made it anyway).
    struct Flaky {
        inner: MemStore,
        fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Store for Flaky {
        fn load(&self) -> Result<Registry, StoreError> {
            self.inner.load()
        }
        fn commit(&mut self, m: &Mutation) -> Result<(), StoreError> {
            self.inner.commit(m)?;
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StoreError::Io {
                    path: "store.jsonl".into(),
                    action: "sync",
                    source: std::io::Error::other("I/O error"),
                });
            }
            Ok(())
        }
        fn recover(&mut self) -> Result<Registry, StoreError> {
            self.inner.load()
        }
    }

    #[test]
    fn after_a_failed_commit_the_durable_state_is_reloaded_and_a_retried_join_succeeds() {
        let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut f = fixture_with(Box::new(Flaky {
            inner: MemStore::new(),
            fail: fail.clone(),
        }));
        let t = token(&mut f, 3600, false);
        let credential = HostCredential::generate().expose();
        let body = || JoinBody {
            token: t.clone(),
            name: "host-a".into(),
            public_key: PublicKey::from_bytes([1; 32]),
            endpoint: None,
            labels: BTreeMap::new(),
            credential: Some(credential.clone()),
        };
        fail.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            reason(f.control.join(body(), 1001, None)),
            ApiReason::Internal
        );
        assert!(
            f.control.registry().hosts().is_empty(),
            "not applied in memory"
        );
        // Until the store is recovered, nothing else is written.
        assert_eq!(
            reason(
                f.control
                    .create_token(&Caller::Admin, TokenBody::default(), 1, None)
            ),
            ApiReason::Internal
        );
        fail.store(false, std::sync::atomic::Ordering::Relaxed);
        // The write did land: after recovery the host is there, and the agent's retry with its
        // credential is answered although its single-use token is used now.
        f.control.recover_if_needed();
        assert_eq!(f.control.registry().hosts().len(), 1);
        let again = f.control.join(body(), 1002, None).unwrap();
        assert_eq!(again.credential, credential);
    }

    #[test]
    fn the_audit_log_has_a_line_per_action_and_no_secret() {
        let mut f = fixture();
        let t = token(&mut f, 3600, false);
        let a = join(&mut f, &t, "host-a", 1).unwrap();
        join(&mut f, &t, "host-b", 2).unwrap_err();
        let bad = TokenBody {
            ttl_secs: Some(0),
            ..TokenBody::default()
        };
        f.control
            .create_token(&Caller::Admin, bad, 1, None)
            .unwrap_err();
        f.control
            .remove_node(&Caller::Admin, "host-a", 2, None)
            .unwrap();
        let log = std::fs::read_to_string(&f.audit).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let actions: Vec<(&str, String)> = lines
            .iter()
            .map(|l| (l["action"].as_str().unwrap(), l["result"].to_string()))
            .collect();
        assert_eq!(
            actions,
            [
                ("token_create", "\"ok\"".to_owned()),
                ("join", "\"ok\"".to_owned()),
                ("join", r#"{"refused":"token_used"}"#.to_owned()),
                ("token_create", r#"{"refused":"bad_request"}"#.to_owned()),
                ("node_remove", "\"ok\"".to_owned()),
            ]
        );
        let secret = t.rsplit('-').next().unwrap();
        assert!(
            !log.contains(secret),
            "the token's secret is in the audit log"
        );
        assert!(
            !log.contains(&a.credential[6..]),
            "a credential is in the audit log"
        );
        assert!(!log.contains(&f.admin.expose()[6..]));
    }
}
