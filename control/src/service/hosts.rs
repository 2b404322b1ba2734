//! The calls a host makes about itself: its netmap (whole or a delta, for the long poll) and
//! its endpoint. Each is authorised for the host's own name only.

use std::net::IpAddr;

use wgmesh_client::api::{EndpointBody, RevisionReply};
use wgmesh_config::netmap::{Netmap, NetmapDelta, NetmapUpdate};

use super::caller::{authorize_host, host_target, Caller};
use super::endpoint::check_endpoint;
use super::refusal::{registry_error, ApiError};
use super::Control;
use crate::audit::{Action, Outcome};
use crate::ids::HostId;

impl Control {
    /// `GET /v1/hosts/{name}/netmap`, once the long poll decided to answer: the host's netmap.
    pub fn netmap(
        &mut self,
        caller: &Caller,
        name: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<Netmap, ApiError> {
        // What the host holds was recorded when its poll began (`check_netmap_access`); being
        // sent a netmap is not holding it: the agent may refuse it.
        let id = self.authorize_netmap_read(caller, name, now, from)?;
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
        // What the host holds (`from`, the revision it applied) was recorded when its poll
        // began (`check_netmap_access`), not what it is about to be sent.
        let id = self.authorize_netmap_read(caller, name, now, from_ip)?;
        self.cache_compiled();
        let delta = match self.changes.since(from, current) {
            // With preshared keys, a change of the host's own keys changes every peer's
            // entry (the pairs): the whole netmap goes.
            Some(changed) if self.preshared_keys() && changed.hosts.contains(name) => None,
            Some(changed) if from != 0 && epoch == self.epoch => {
                self.compiled().delta(id, from, &changed)
            }
            _ => None,
        };
        Ok(match delta {
            Some(mut d) => {
                if let Some(secret) = &self.psk {
                    let registry = &self.registry;
                    crate::psk::attach(secret, id, &d.host, &mut d.upsert, |name| {
                        registry.host_by_name(name).map(|h| h.id)
                    });
                }
                NetmapUpdate::Delta(NetmapDelta {
                    epoch: self.epoch,
                    ..d
                })
            }
            None => NetmapUpdate::Full(self.netmap_of(id)),
        })
    }

    /// Checks that `caller` may read `name`'s netmap (for the long poll, before it waits), and
    /// records that the host holds revision `held`: the one its poll says it applied, which is
    /// all `node list` trusts (a netmap sent is not a netmap held). The one place `held` is
    /// set.
    pub fn check_netmap_access(
        &mut self,
        caller: &Caller,
        name: &str,
        held: u64,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let id = self.authorize_netmap_read(caller, name, now, from)?;
        self.held.insert(id, held);
        Ok(())
    }

    /// `caller` may read `name`'s netmap (a refusal is audited); the host is seen at `now`.
    /// What it holds is left as its poll said.
    fn authorize_netmap_read(
        &mut self,
        caller: &Caller,
        name: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<HostId, ApiError> {
        let id = authorize_host(&self.registry, caller, name)
            .inspect_err(|e| self.refused(caller, Action::NetmapRead, name, e, now, from))?;
        self.registry.touch(id, now);
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
            Ok((_, true)) => {
                let target = host_target(name, &self.registry);
                let action = Action::EndpointChange;
                self.audit(caller, action, target, Outcome::Ok, now, from);
            }
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
        let id = authorize_host(&self.registry, caller, name)?;
        check_endpoint(body.endpoint, self.cluster_cidr())?;
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

    /// Audits a refused call of a host about host `name`.
    pub(super) fn refused(
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
}
