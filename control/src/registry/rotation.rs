//! Key rotations: queued by an admin ([`Registry::plan_rotations`]) or by the rotation interval,
//! stepped by the control plane's scheduler ([`Registry::next_rotation_step`]), and moved on by
//! the host's own key reports ([`Registry::plan_key_report`]).
//!
//! A rotation of host H, whose key K1 has epoch E, goes:
//!
//! ```text
//! queued ──(no rotation runs)──> requested ──(H reports K2)──> announced ──(H: peers moved)──> completed
//!                                 │ deadline                    │ deadline
//!                                 v                             v
//!                               abandoned (H keeps K1)        completed (K2 is H's)
//! ```
//!
//! - *Requested*: H's netmap carries the order `{epoch: E+1}`; H makes K2, keeps both keys on
//!   disk and reports K2.
//! - *Announced*: H's peers list `[K2, K1]` for it and H's netmap carries `{epoch: E+1,
//!   new_key: K2}`; H accepts both keys while its peers' tunnels move to K2, then reports that
//!   they moved.
//! - *Completed*: K2 is registered at epoch E+1 (its peers list `[K2]`), K1 is retired
//!   everywhere; *abandoned*: the order is gone and H's key is still K1, so H drops K2.
//!
//! One rotation runs at a time in the whole cluster: that staggers them, and it keeps every
//! rotation hitless (a host's peers never rotate while it moves to a new key of theirs). Queued
//! rotations start oldest first, then by host id. Deadlines and `key_since` are absolute times
//! in the store, so a restart of the control plane neither skips nor repeats a step.
//!
//! A key is unique in the registry as a registered key and as an announced one
//! ([`Host::holds_key`]): joins and key reports are checked against both.
//!
//! Pure: no I/O, no clock (`now` is passed in, unix seconds).

use std::collections::BTreeSet;

use wgmesh_config::control::DEFAULT_KEY_ROTATION_GRACE_SECS;
use wgmesh_config::PublicKey;

use super::error::{KeyRefusal, RegistryError};
use super::mutation::{Mutation, QueuedRotation};
use super::records::{Host, KeyRotation, RotationPhase, RotationReason};
use super::Registry;
use crate::ids::HostId;

/// How rotations are scheduled, from `control.toml`. Not stored: a changed setting applies to
/// the steps planned after the restart (deadlines already set stay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationSettings {
    /// Rotate a host's key once it is this old (seconds); `None`: only when an admin asks.
    pub interval: Option<u64>,
    /// How long each running phase may last (seconds): a request is abandoned, an announced
    /// key registered, this long after the phase began.
    pub grace: u64,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            interval: None,
            grace: DEFAULT_KEY_ROTATION_GRACE_SECS,
        }
    }
}

/// Which hosts [`Registry::plan_rotations`] queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationTarget<'a> {
    /// The host of this name.
    One(&'a str),
    /// Every host.
    All,
}

/// A host's report about its own key rotation (`POST /v1/hosts/{name}/key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReport {
    /// The rotation's epoch, as the host's netmap gave it.
    pub epoch: u64,
    /// The host's new public key.
    pub public_key: PublicKey,
    /// Whether the host's peers moved to the new key (read once the key is announced).
    pub moved: bool,
}

impl Registry {
    /// The host whose rotation runs (requested or announced), if any: at most one.
    pub fn running_rotation(&self) -> Option<&Host> {
        self.hosts.values().find(|h| h.is_rotating())
    }

    /// The queued rotation that starts next: the oldest, then by host id.
    pub fn next_queued(&self) -> Option<&Host> {
        self.hosts
            .values()
            .filter_map(|h| Some((h.rotation.as_ref()?, h)))
            .filter(|(r, _)| !r.is_running())
            .min_by_key(|(r, h)| (r.queued_at, h.id))
            .map(|(_, h)| h)
    }

    /// Plans queueing the rotation of `which` hosts for `reason` at `now`: each host not
    /// queued or rotating already, in id order; `None` when there is none. An unknown host is
    /// refused ([`RegistryError::NoSuchHost`]).
    pub fn plan_rotations(
        &self,
        now: u64,
        which: RotationTarget<'_>,
        reason: RotationReason,
    ) -> Result<Option<Mutation>, RegistryError> {
        let hosts: Vec<&Host> = match which {
            RotationTarget::One(name) => vec![self
                .host_by_name(name)
                .ok_or_else(|| RegistryError::NoSuchHost(name.to_owned()))?],
            RotationTarget::All => self.hosts.values().collect(),
        };
        let rotations: Vec<QueuedRotation> = hosts.into_iter().filter_map(queueable).collect();
        if rotations.is_empty() {
            return Ok(None);
        }
        let m = Mutation::RotationsQueued {
            reason,
            at: now,
            rotations,
        };
        self.check(&m)?;
        Ok(Some(m))
    }

    /// The scheduler's next step at `now` (it calls this every few hundred milliseconds, and
    /// again after committing a step, until `None`). In this order:
    ///
    /// 1. the running rotation past its deadline: a request is abandoned (the host keeps its
    ///    old key), an announced key registered (its peers have it, the host holds it);
    /// 2. with an `interval`, every host whose key is that old is queued (`Interval`), unless
    ///    its last rotation was abandoned less than an interval ago;
    /// 3. with no rotation running, the first queued one starts (requested until `now` +
    ///    `grace`).
    pub fn next_rotation_step(&self, now: u64, settings: &RotationSettings) -> Option<Mutation> {
        if let Some(step) = self.running_rotation().and_then(|h| deadline_step(h, now)) {
            return Some(step);
        }
        if let Some(interval) = settings.interval {
            let rotations = self.due_by_interval(now, interval);
            if !rotations.is_empty() {
                return Some(Mutation::RotationsQueued {
                    reason: RotationReason::Interval,
                    at: now,
                    rotations,
                });
            }
        }
        if self.running_rotation().is_some() {
            return None;
        }
        let h = self.next_queued()?;
        let epoch = h.rotation.as_ref()?.epoch;
        Some(Mutation::RotationRequested {
            host: h.id,
            epoch,
            at: now,
            deadline: now.saturating_add(settings.grace),
        })
    }

    /// The hosts the interval queues at `now`.
    fn due_by_interval(&self, now: u64, interval: u64) -> Vec<QueuedRotation> {
        let reached = |since: u64| since.saturating_add(interval) <= now;
        self.hosts
            .values()
            .filter(|h| reached(h.key_since) && h.rotation_abandoned_at.is_none_or(reached))
            .filter_map(queueable)
            .collect()
    }

    /// Plans host `id`'s key report at `now`; `None` when it changes nothing (a repeated
    /// report). The report's epoch must be its rotation's ([`RegistryError::RotationOutOfOrder`]
    /// otherwise, also when none runs: a host reports only when its netmap asks). Then:
    ///
    /// - *requested*: the key must be new in the whole registry (not low-order, not the host's
    ///   own, not a key any host holds or was announced): it is announced until `now` + the
    ///   grace (`moved` is not read: its peers do not have the key yet);
    /// - *announced*, the same key: `moved` completes the rotation, else nothing changes;
    ///   another key is refused ([`KeyRefusal::AnotherAnnounced`]).
    ///
    /// A retry of a report whose rotation completed already (the epoch and key registered)
    /// changes nothing either.
    pub fn plan_key_report(
        &self,
        id: HostId,
        now: u64,
        report: KeyReport,
        settings: &RotationSettings,
    ) -> Result<Option<Mutation>, RegistryError> {
        let h = self.host_or_missing(id)?;
        let Some(rotation) = h.rotation.as_ref().filter(|r| r.is_running()) else {
            if report.epoch == h.key_epoch && report.public_key == h.public_key {
                return Ok(None);
            }
            return Err(out_of_order(h, report.epoch));
        };
        if rotation.epoch != report.epoch {
            return Err(out_of_order(h, report.epoch));
        }
        let m = match rotation.phase {
            RotationPhase::Queued => return Err(out_of_order(h, report.epoch)),
            RotationPhase::Requested { .. } => Mutation::KeyAnnounced {
                host: id,
                epoch: rotation.epoch,
                new_key: report.public_key,
                at: now,
                deadline: now.saturating_add(settings.grace),
            },
            RotationPhase::Announced { new_key, .. } if new_key == report.public_key => {
                if !report.moved {
                    return Ok(None);
                }
                Mutation::RotationCompleted {
                    host: id,
                    epoch: rotation.epoch,
                    new_key,
                    at: now,
                    peers_moved: true,
                }
            }
            RotationPhase::Announced { new_key, .. } => {
                return Err(RegistryError::KeyReportRefused {
                    host: h.name.clone(),
                    key: report.public_key,
                    reason: KeyRefusal::AnotherAnnounced { announced: new_key },
                })
            }
        };
        self.check(&m)?;
        Ok(Some(m))
    }

    /// Checks a rotation mutation against the state (for [`Registry::check`]); other
    /// mutations pass.
    pub(super) fn check_rotation_step(&self, m: &Mutation) -> Result<(), RegistryError> {
        match m {
            Mutation::RotationsQueued { rotations, .. } => {
                let mut seen = BTreeSet::new();
                for q in rotations {
                    let h = self.host_or_missing(q.host)?;
                    if queueable(h) != Some(*q) || !seen.insert(q.host) {
                        return Err(out_of_order(h, q.epoch));
                    }
                }
            }
            Mutation::RotationRequested { host, epoch, .. } => {
                let h = self.in_phase(*host, *epoch, |p| matches!(p, RotationPhase::Queued))?;
                if let Some(running) = self.running_rotation() {
                    return Err(RegistryError::RotationBusy {
                        host: h.name.clone(),
                        running: running.name.clone(),
                    });
                }
            }
            Mutation::KeyAnnounced {
                host,
                epoch,
                new_key,
                ..
            } => {
                let requested = |p: &RotationPhase| matches!(p, RotationPhase::Requested { .. });
                let h = self.in_phase(*host, *epoch, requested)?;
                self.check_new_key(h, new_key)?;
            }
            Mutation::RotationCompleted {
                host,
                epoch,
                new_key,
                ..
            } => {
                let announced = |p: &RotationPhase| matches!(p, RotationPhase::Announced { .. });
                let h = self.in_phase(*host, *epoch, announced)?;
                if let Some(announced) = h.announced_key().filter(|k| k != new_key) {
                    return Err(RegistryError::KeyReportRefused {
                        host: h.name.clone(),
                        key: *new_key,
                        reason: KeyRefusal::AnotherAnnounced { announced },
                    });
                }
            }
            Mutation::RotationAbandoned { host, epoch, .. } => {
                let requested = |p: &RotationPhase| matches!(p, RotationPhase::Requested { .. });
                self.in_phase(*host, *epoch, requested)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a checked rotation mutation (for [`Registry::apply`]); other mutations are left
    /// alone.
    pub(super) fn apply_rotation_step(&mut self, m: &Mutation) {
        let phase = |registry: &mut Self, host: &HostId, phase: RotationPhase| {
            if let Some(r) = registry
                .hosts
                .get_mut(host)
                .and_then(|h| h.rotation.as_mut())
            {
                r.phase = phase;
            }
        };
        match m {
            Mutation::RotationsQueued {
                reason,
                at,
                rotations,
            } => {
                for q in rotations {
                    if let Some(h) = self.hosts.get_mut(&q.host) {
                        h.rotation = Some(KeyRotation {
                            epoch: q.epoch,
                            reason: *reason,
                            queued_at: *at,
                            phase: RotationPhase::Queued,
                        });
                    }
                }
            }
            Mutation::RotationRequested {
                host, at, deadline, ..
            } => {
                let requested = RotationPhase::Requested {
                    at: *at,
                    deadline: *deadline,
                };
                phase(self, host, requested);
            }
            Mutation::KeyAnnounced {
                host,
                new_key,
                at,
                deadline,
                ..
            } => {
                let announced = RotationPhase::Announced {
                    new_key: *new_key,
                    at: *at,
                    deadline: *deadline,
                };
                phase(self, host, announced);
            }
            Mutation::RotationCompleted {
                host,
                epoch,
                new_key,
                at,
                ..
            } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.public_key = *new_key;
                    h.key_epoch = *epoch;
                    h.key_since = *at;
                    h.rotation = None;
                    h.rotation_abandoned_at = None;
                }
            }
            Mutation::RotationAbandoned { host, at, .. } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.rotation = None;
                    h.rotation_abandoned_at = Some(*at);
                }
            }
            _ => {}
        }
    }

    /// Checks the rotation a snapshot's host carries, before the host is inserted: for the
    /// next epoch, the only one running, its announced key new (not low-order, not the host's,
    /// no host's inserted before).
    pub(super) fn check_rotation_record(&self, host: &Host) -> Result<(), RegistryError> {
        let Some(rotation) = &host.rotation else {
            return Ok(());
        };
        if Some(rotation.epoch) != host.key_epoch.checked_add(1) {
            return Err(out_of_order(host, rotation.epoch));
        }
        if let Some(running) = self.running_rotation().filter(|_| rotation.is_running()) {
            return Err(RegistryError::RotationBusy {
                host: host.name.clone(),
                running: running.name.clone(),
            });
        }
        match host.announced_key() {
            Some(key) => self.check_new_key(host, &key),
            None => Ok(()),
        }
    }

    /// `key` may become host `h`'s: not low-order, not `h`'s registered key, and no other
    /// host's registered or announced key.
    fn check_new_key(&self, h: &Host, key: &PublicKey) -> Result<(), RegistryError> {
        if key.is_low_order() {
            return Err(RegistryError::LowOrderKey {
                host: h.name.clone(),
                key: *key,
            });
        }
        if h.public_key == *key {
            return Err(RegistryError::KeyReportRefused {
                host: h.name.clone(),
                key: *key,
                reason: KeyRefusal::Unchanged,
            });
        }
        if let Some(holder) = self
            .hosts
            .values()
            .find(|o| o.id != h.id && o.holds_key(key))
        {
            return Err(RegistryError::KeyTaken {
                key: *key,
                held_by: holder.id,
                held_by_name: holder.name.clone(),
            });
        }
        Ok(())
    }

    /// Host `id`, whose rotation is of `epoch` and in a phase `fits`; else why not.
    fn in_phase(
        &self,
        id: HostId,
        epoch: u64,
        fits: impl Fn(&RotationPhase) -> bool,
    ) -> Result<&Host, RegistryError> {
        let h = self.host_or_missing(id)?;
        match &h.rotation {
            Some(r) if r.epoch == epoch && fits(&r.phase) => Ok(h),
            _ => Err(out_of_order(h, epoch)),
        }
    }

    fn host_or_missing(&self, id: HostId) -> Result<&Host, RegistryError> {
        self.hosts
            .get(&id)
            .ok_or_else(|| RegistryError::NoSuchHost(id.to_string()))
    }
}

/// The rotation `h` would be queued with: none when it is queued or rotating already (or its
/// epoch cannot grow).
fn queueable(h: &Host) -> Option<QueuedRotation> {
    if h.rotation.is_some() {
        return None;
    }
    Some(QueuedRotation {
        host: h.id,
        epoch: h.key_epoch.checked_add(1)?,
    })
}

/// What the deadline of `h`'s running rotation does at `now`, if it passed.
fn deadline_step(h: &Host, now: u64) -> Option<Mutation> {
    let rotation = h.rotation.as_ref()?;
    match rotation.phase {
        RotationPhase::Requested { deadline, .. } if now >= deadline => {
            Some(Mutation::RotationAbandoned {
                host: h.id,
                epoch: rotation.epoch,
                at: now,
            })
        }
        RotationPhase::Announced {
            new_key, deadline, ..
        } if now >= deadline => Some(Mutation::RotationCompleted {
            host: h.id,
            epoch: rotation.epoch,
            new_key,
            at: now,
            peers_moved: false,
        }),
        _ => None,
    }
}

/// The refusal of a report or step of `epoch` that does not fit `h`'s rotation.
fn out_of_order(h: &Host, epoch: u64) -> RegistryError {
    RegistryError::RotationOutOfOrder {
        host: h.name.clone(),
        epoch,
        running: h
            .rotation
            .as_ref()
            .filter(|r| r.is_running())
            .map(|r| r.epoch),
        key_epoch: h.key_epoch,
    }
}
