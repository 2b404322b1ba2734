//! The control plane's request handling, without HTTP: authentication of bearer tokens,
//! authorisation of each call, the registry change it makes, the store commit that makes it
//! durable, and the audit line it leaves.
//!
//! [`Control`] owns the registry and the store; the HTTP layer holds it behind a lock and calls
//! one method per request. A write is committed to the store (fsynced) before the method
//! returns, and only then applied to the in-memory registry, so a reply never acknowledges what
//! a crash could lose, and a failed commit changes nothing.
//!
//! - this module: [`Control`], authentication, the commit, and the audit line of each call;
//! - `caller`: [`Caller`] and what each caller may do; `refusal`: [`ApiError`] and the
//!   refusals calls share;
//! - the calls: `join` (`POST /v1/join`), `hosts` (a host's netmap and endpoint), `tokens`,
//!   `nodes` and `policy` (the admin's), `rotation` (key rotations: the admin's queueing, the
//!   host's key reports, and the scheduler's steps, [`Control::rotation_tick`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use wgmesh_config::netmap::Netmap;
use wgmesh_config::token::{AdminToken, HostCredential, SecretHash};

mod caller;
mod endpoint;
mod hosts;
mod join;
mod nodes;
mod policy;
mod refusal;
mod rotation;
mod tokens;
mod workloads;

pub use caller::Caller;
pub use policy::PreparedPolicy;
pub use refusal::{unauthenticated, ApiError};

use crate::audit::{Action, AuditEvent, AuditLog, Outcome, Target};
use crate::changelog::{touched, ChangeLog};
use crate::compile::{self, Compiled, CompiledPolicy, FilterRefused};
use crate::ids::HostId;
use crate::psk::PskSecret;
use crate::registry::{Mutation, Registry, RotationSettings};
use crate::store::{Store, StoreError};
use caller::{actor_of, require_admin};
use refusal::{outcome_of, registry_error, store_unusable};

/// How many recent netmap changes are kept for deltas; a host further behind gets a whole
/// netmap.
const CHANGE_LOG_CAPACITY: usize = 4096;

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
    /// The netmap revision each host holds, as far as this run knows: what its last poll said
    /// (the revision its agent applied). Sending a netmap does not change it: the agent may
    /// refuse what it is sent, and `node list` must then show it behind.
    held: HashMap<HostId, u64>,
    audit: AuditLog,
    admin_hash: SecretHash,
    ca_der: Vec<u8>,
    /// The registry and policy compiled for netmaps, kept while the netmap revision stays:
    /// after one change every host polls, and all of them are answered from one compile.
    /// Dropped by every commit and recovery.
    compiled: Option<CompiledPolicy>,
    /// How many times this run compiled for netmaps ([`Control::compiles`]).
    compiles: u64,
    /// How key rotations are scheduled (control.toml).
    rotation: RotationSettings,
    /// With `preshared_keys = true`: the secret every pair's preshared key is derived from.
    psk: Option<PskSecret>,
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
            held: HashMap::new(),
            registry,
            store,
            store_failed: false,
            audit,
            admin_hash,
            ca_der,
            compiled: None,
            compiles: 0,
            rotation: RotationSettings::default(),
            psk: None,
        }
    }

    /// This control plane, giving every pair of hosts a preshared key derived from `secret`
    /// ([`crate::psk`]).
    pub fn with_preshared_keys(mut self, secret: PskSecret) -> Self {
        self.psk = Some(secret);
        self
    }

    /// Whether pairs of hosts get preshared keys.
    pub fn preshared_keys(&self) -> bool {
        self.psk.is_some()
    }

    /// This control plane, scheduling key rotations with `settings` (default: no interval,
    /// the default grace).
    pub fn with_rotation(mut self, settings: RotationSettings) -> Self {
        self.rotation = settings;
        self
    }

    /// How key rotations are scheduled.
    pub fn rotation_settings(&self) -> &RotationSettings {
        &self.rotation
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
                self.compiled = None;
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

    /// The admin token's hash (the HTTP layer lets a limited address's admin through with it).
    pub fn admin_hash(&self) -> &SecretHash {
        &self.admin_hash
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

    /// How many times this run compiled the registry and policy for netmaps: once per netmap
    /// revision that some host asked for, however many hosts ask.
    pub fn compiles(&self) -> u64 {
        self.compiles
    }

    fn netmap_of(&mut self, id: HostId) -> Netmap {
        self.cache_compiled();
        let mut netmap = self.compiled().netmap(id).expect("an existing host");
        if let Some(secret) = &self.psk {
            let registry = &self.registry;
            crate::psk::attach(secret, id, &netmap.host, &mut netmap.peers, |name| {
                registry.host_by_name(name).map(|h| h.id)
            });
        }
        Netmap {
            epoch: self.epoch,
            ..netmap
        }
    }

    /// Compiles the registry and policy, unless what is kept is of the current netmap
    /// revision.
    fn cache_compiled(&mut self) {
        let revision = self.registry.netmap_revision();
        if self
            .compiled
            .as_ref()
            .is_some_and(|c| c.netmap_revision() == revision)
        {
            return;
        }
        self.compiled = Some(CompiledPolicy::new(&self.registry, self.policy()));
        self.compiles += 1;
    }

    /// The registry and policy compiled: from what [`Control::cache_compiled`] kept (a kept
    /// compile of another revision is never used).
    fn compiled(&self) -> Compiled<'_> {
        match &self.compiled {
            Some(kept) => Compiled::with(&self.registry, self.policy(), kept),
            None => Compiled::new(&self.registry, self.policy()),
        }
    }

    /// The policy in force, if any.
    fn policy(&self) -> Option<&compile::Policy> {
        self.registry.policy().map(|p| &p.policy)
    }

    /// The cluster CIDR, once the registry is initialised.
    fn cluster_cidr(&self) -> Option<ipnet::IpNet> {
        self.registry.ipam().map(|i| i.cidr())
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
        let touched = touched(&self.registry, m);
        self.compiled = None;
        self.registry
            .apply(m)
            .expect("the store accepted it, so it applies");
        self.changes
            .record(self.registry.netmap_revision(), touched);
        Ok(())
    }

    /// [`Control::commit`]s `m` unless, under the policy in force after it, some host's
    /// filter is one its agent would refuse ([`Compiled::check_filters`]: too many rules or
    /// prefixes); then `refused` says how the call refuses, and nothing changes. Used by the
    /// calls that can grow a filter: applying a policy and reporting workloads.
    ///
    /// The check compiles the registry as it will be after `m`, and that compile is kept for
    /// the netmaps that follow (the hosts' polls), so it costs no compile more than the change
    /// does anyway. Without a policy before or after, there are no filters and no check.
    fn commit_within_filters(
        &mut self,
        m: &Mutation,
        refused: impl FnOnce(FilterRefused) -> ApiError,
    ) -> Result<(), ApiError> {
        if self.registry.policy().is_none() && !matches!(m, Mutation::PolicyApplied { .. }) {
            return self.commit(m);
        }
        let mut after = self.registry.clone();
        after.apply(m).map_err(registry_error)?;
        let kept = match after.policy().map(|p| &p.policy) {
            None => None,
            Some(policy) => {
                let compiled = CompiledPolicy::new(&after, Some(policy));
                Compiled::with(&after, Some(policy), &compiled)
                    .check_filters()
                    .map_err(refused)?;
                Some(compiled)
            }
        };
        self.commit(m)?;
        if kept.is_some() {
            // Of the registry as it is now: `commit` applied `m` as `after` did.
            self.compiled = kept;
            self.compiles += 1;
        }
        Ok(())
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

    /// Refuses (and audits the refusal of) every caller but the admin.
    fn admin_only(
        &mut self,
        caller: &Caller,
        action: Action,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        require_admin(caller).inspect_err(|e| self.refused_request(caller, action, e, now, from))
    }

    /// Audits the `result` of `action` by `caller` on `target`, and returns it.
    fn audited<T>(
        &mut self,
        caller: &Caller,
        action: Action,
        target: Option<Target>,
        result: Result<T, ApiError>,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<T, ApiError> {
        let outcome = outcome_of(&result);
        self.audit(caller, action, target, outcome, now, from);
        result
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

#[cfg(test)]
mod tests;
