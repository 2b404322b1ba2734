//! Key rotations through the API: the admin queues them (`POST /v1/nodes/{name}/rotate`,
//! `POST /v1/rotations`), the rotating host reports its new key and then that its peers moved
//! (`POST /v1/hosts/{name}/key`, its own credential only), and the server's scheduler steps
//! them ([`Control::rotation_tick`]: deadlines, the interval, the next queued rotation). The
//! rules are the registry's (`registry::rotation`); here are who may call, the commit, and one
//! audit line per rotation step (queued, requested, announced, retired, abandoned), naming the
//! host and the epoch, and the new public key once known.

use std::net::IpAddr;

use wgmesh_client::api::{self, KeyReportBody, KeyReportReply, RotationInfo, RotationsQueuedReply};

use super::caller::{actor_of, authorize_host, host_target, require_admin, Caller};
use super::refusal::{registry_error, unauthenticated, ApiError};
use super::Control;
use crate::audit::{Action, Actor, AuditEvent, Outcome, Target};
use crate::ids::HostId;
use crate::registry::{
    Host, KeyReport, KeyRotation, Mutation, Registry, RotationPhase, RotationReason, RotationTarget,
};

/// Most rotation steps one tick commits. A tick takes at most three (a deadline, the
/// interval's queueing, the next start); the bound only guards against a loop.
const MAX_STEPS_PER_TICK: usize = 8;

/// One audit line of a rotation step: what happened, to which host's rotation.
type Step = (Action, Target);

impl Control {
    /// `POST /v1/hosts/{name}/key`: the host's report of its new key, or that its peers moved
    /// to it. A repeated report changes nothing and leaves no audit line.
    pub fn report_key(
        &mut self,
        caller: &Caller,
        name: &str,
        body: KeyReportBody,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<KeyReportReply, ApiError> {
        match self.try_report_key(caller, name, body, now) {
            Ok((reply, steps)) => {
                let actor = actor_of(caller, &self.registry);
                self.record_steps(&actor, steps, now, from);
                Ok(reply)
            }
            Err(e) => {
                let action = if body.moved {
                    Action::KeyRetire
                } else {
                    Action::KeyAnnounce
                };
                let target = host_target(name, &self.registry).map(|t| match t {
                    Target::Host { id, name } => Target::HostKey {
                        id,
                        name,
                        epoch: body.epoch,
                        key: Some(body.public_key),
                    },
                    other => other,
                });
                let outcome = Outcome::Refused(e.reason);
                self.audit(caller, action, target, outcome, now, from);
                Err(e)
            }
        }
    }

    fn try_report_key(
        &mut self,
        caller: &Caller,
        name: &str,
        body: KeyReportBody,
        now: u64,
    ) -> Result<(KeyReportReply, Vec<Step>), ApiError> {
        let id = authorize_host(&self.registry, caller, name)?;
        self.registry.touch(id, now);
        let report = KeyReport {
            epoch: body.epoch,
            public_key: body.public_key,
            moved: body.moved,
        };
        let planned = self
            .registry
            .plan_key_report(id, now, report, &self.rotation)
            .map_err(registry_error)?;
        let steps = match planned {
            Some(m) => self.commit_step(&m)?,
            None => Vec::new(),
        };
        let host = self.registry.host(id).ok_or_else(unauthenticated)?;
        let reply = KeyReportReply {
            key_epoch: host.key_epoch,
            public_key: host.public_key,
            rotation: host.rotation.as_ref().map(info_of),
            revision: self.registry.netmap_revision(),
        };
        Ok((reply, steps))
    }

    /// `POST /v1/nodes/{name}/rotate`: queues the host's key rotation.
    pub fn rotate_node(
        &mut self,
        caller: &Caller,
        name: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<RotationsQueuedReply, ApiError> {
        self.queue_rotations(caller, RotationTarget::One(name), now, from)
    }

    /// `POST /v1/rotations`: queues the key rotation of every host (they run one at a time).
    pub fn rotate_all(
        &mut self,
        caller: &Caller,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<RotationsQueuedReply, ApiError> {
        self.queue_rotations(caller, RotationTarget::All, now, from)
    }

    /// Queues `which` hosts' rotations for the admin: one audit line per host queued, or one
    /// for the call when none was (all were rotating already, or the call was refused).
    fn queue_rotations(
        &mut self,
        caller: &Caller,
        which: RotationTarget<'_>,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<RotationsQueuedReply, ApiError> {
        let target = match which {
            RotationTarget::One(name) => host_target(name, &self.registry),
            RotationTarget::All => None,
        };
        let result = self.try_queue_rotations(caller, which, now);
        match result {
            Ok((reply, steps)) if !steps.is_empty() => {
                self.record_steps(&Actor::Admin, steps, now, from);
                Ok(reply)
            }
            Ok((reply, _)) => {
                let action = Action::KeyRotationQueue;
                self.audit(caller, action, target, Outcome::Ok, now, from);
                Ok(reply)
            }
            Err(e) => {
                let outcome = Outcome::Refused(e.reason);
                self.audit(caller, Action::KeyRotationQueue, target, outcome, now, from);
                Err(e)
            }
        }
    }

    fn try_queue_rotations(
        &mut self,
        caller: &Caller,
        which: RotationTarget<'_>,
        now: u64,
    ) -> Result<(RotationsQueuedReply, Vec<Step>), ApiError> {
        require_admin(caller)?;
        let planned = self
            .registry
            .plan_rotations(now, which, RotationReason::Admin)
            .map_err(registry_error)?;
        let name_of = |id: &HostId| self.registry.host(*id).map(|h| h.name.to_string());
        let queued: Vec<String> = match &planned {
            Some(Mutation::RotationsQueued { rotations, .. }) => {
                rotations.iter().filter_map(|q| name_of(&q.host)).collect()
            }
            _ => Vec::new(),
        };
        let asked: Vec<&Host> = match which {
            RotationTarget::One(name) => self.registry.host_by_name(name).into_iter().collect(),
            RotationTarget::All => self.registry.hosts().values().collect(),
        };
        let rotating = asked
            .into_iter()
            .filter(|h| h.rotation.is_some())
            .map(|h| h.name.to_string())
            .collect();
        let steps = match planned {
            Some(m) => self.commit_step(&m)?,
            None => Vec::new(),
        };
        let reply = RotationsQueuedReply { queued, rotating };
        Ok((reply, steps))
    }

    /// The scheduler's tick at `now` (the server calls it every 250 ms): commits the
    /// registry's next rotation steps (a deadline passed, keys due by the interval, the next
    /// queued rotation started) until there is none, each audited as the control plane's own.
    /// Returns how many it committed; a failed commit ends the tick (the store is recovered
    /// before the next call).
    pub fn rotation_tick(&mut self, now: u64) -> usize {
        let mut steps = 0;
        while steps < MAX_STEPS_PER_TICK && !self.store_failed {
            let Some(m) = self.registry.next_rotation_step(now, &self.rotation) else {
                break;
            };
            match self.commit_step(&m) {
                Ok(lines) => self.record_steps(&Actor::ControlPlane, lines, now, None),
                Err(e) => {
                    tracing::error!("cannot commit a key rotation step: {e}");
                    break;
                }
            }
            steps += 1;
        }
        steps
    }

    /// Commits rotation mutation `m` and logs it; its audit lines, named before it applies.
    fn commit_step(&mut self, m: &Mutation) -> Result<Vec<Step>, ApiError> {
        let steps = steps_of(&self.registry, m);
        self.commit(m)?;
        for (action, target) in &steps {
            if let Target::HostKey { name, epoch, .. } = target {
                tracing::info!(host = %name, epoch, step = ?action, "key rotation");
            }
        }
        Ok(steps)
    }

    /// Appends the audit lines of committed rotation steps, by `actor`.
    fn record_steps(&mut self, actor: &Actor, steps: Vec<Step>, now: u64, from: Option<IpAddr>) {
        for (action, target) in steps {
            let event = AuditEvent {
                time: now,
                actor: actor.clone(),
                from,
                action,
                target: Some(target),
                result: Outcome::Ok,
            };
            self.record(&event);
        }
    }
}

/// The audit lines of rotation mutation `m`, named from `registry` before `m` applies.
fn steps_of(registry: &Registry, m: &Mutation) -> Vec<Step> {
    let target = |host: &HostId, epoch: &u64, key| {
        registry.host(*host).map(|h| Target::HostKey {
            id: Some(h.id),
            name: h.name.clone(),
            epoch: *epoch,
            key,
        })
    };
    let one = |action, t: Option<Target>| t.map(|t| (action, t)).into_iter().collect();
    match m {
        Mutation::RotationsQueued { rotations, .. } => rotations
            .iter()
            .filter_map(|q| Some((Action::KeyRotationQueue, target(&q.host, &q.epoch, None)?)))
            .collect(),
        Mutation::RotationRequested { host, epoch, .. } => {
            one(Action::KeyRotationRequest, target(host, epoch, None))
        }
        Mutation::KeyAnnounced {
            host,
            epoch,
            new_key,
            ..
        } => one(Action::KeyAnnounce, target(host, epoch, Some(*new_key))),
        Mutation::RotationCompleted {
            host,
            epoch,
            new_key,
            ..
        } => one(Action::KeyRetire, target(host, epoch, Some(*new_key))),
        Mutation::RotationAbandoned { host, epoch, .. } => {
            one(Action::KeyRotationAbandon, target(host, epoch, None))
        }
        _ => Vec::new(),
    }
}

/// A host's rotation as the API shows it.
pub(super) fn info_of(r: &KeyRotation) -> RotationInfo {
    let epoch = r.epoch;
    match r.phase {
        RotationPhase::Queued => RotationInfo::Queued {
            epoch,
            reason: match r.reason {
                RotationReason::Admin => api::RotationReason::Admin,
                RotationReason::Interval => api::RotationReason::Interval,
            },
            queued_at: r.queued_at,
        },
        RotationPhase::Requested { at, deadline } => RotationInfo::Requested {
            epoch,
            at,
            deadline,
        },
        RotationPhase::Announced {
            new_key,
            at,
            deadline,
        } => RotationInfo::Announced {
            epoch,
            new_key,
            at,
            deadline,
        },
    }
}
