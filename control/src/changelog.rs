//! What changed in netmaps at which netmap revision, so that a host holding an older netmap can
//! be sent only what changed ([`NetmapDelta`](wgmesh_config::netmap::NetmapDelta)).
//!
//! Three kinds of change are logged ([`Change`]): a host's entry or addresses (it joined, left,
//! moved, had a new key announced or registered, or reported its workloads under a policy), the filters (an endpoint came or went, or
//! changed its labels, while a policy is applied), and the policy itself (every host's peers
//! and filter). [`touched`] says which a mutation makes; [`ChangeLog::since`] sums them up for
//! [`compile::delta`](crate::compile::delta).
//!
//! Pure and in memory: after a restart the log starts empty and hosts get one whole netmap.
//! It keeps the last `capacity` changes; a host further behind than that gets a whole netmap.

use std::collections::{BTreeSet, VecDeque};

use crate::registry::{Mutation, Registry};

/// One logged change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Host `name`'s netmap entry changed (it joined, left or moved), or its addresses did (its
    /// workloads, under a policy): whom it may reach, and who may reach it.
    Host(String),
    /// Some host's filter may have changed (an endpoint came, went or was relabelled under a
    /// policy).
    Filters,
    /// The policy was applied or removed: every host's peers and filter may have changed.
    Policy,
}

/// What a mutation does to netmaps, as the log records it ([`touched`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// These changes (none for a mutation that changes no netmap).
    Changes(Vec<Change>),
    /// The state was replaced: the log starts over.
    Reset,
}

/// What changed after some revision ([`ChangeLog::since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes<'a> {
    /// The hosts whose entry or addresses changed, by name.
    pub hosts: BTreeSet<&'a str>,
    /// Some host's filter may have changed.
    pub filters: bool,
    /// The policy changed: every host's peers and filter may have.
    pub policy: bool,
}

/// The recent netmap changes.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    entries: VecDeque<(u64, Change)>,
    /// Every change after this revision is in `entries`.
    floor: u64,
    capacity: usize,
}

impl ChangeLog {
    /// An empty log, complete from `revision` on.
    pub fn new(revision: u64, capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            floor: revision,
            capacity: capacity.max(1),
        }
    }

    /// Forgets everything: complete from `revision` on (after the state was replaced).
    pub fn reset(&mut self, revision: u64) {
        self.entries.clear();
        self.floor = revision;
    }

    /// Records what a mutation applied at netmap revision `revision` touched ([`touched`],
    /// asked before it was applied).
    pub fn record(&mut self, revision: u64, touched: Touched) {
        match touched {
            Touched::Reset => self.reset(revision),
            Touched::Changes(changes) => {
                for change in changes {
                    self.push(revision, change);
                }
            }
        }
    }

    /// Logs one change at `revision`.
    pub fn push(&mut self, revision: u64, change: Change) {
        self.entries.push_back((revision, change));
        while self.entries.len() > self.capacity {
            if let Some((oldest, _)) = self.entries.pop_front() {
                self.floor = oldest;
            }
        }
    }

    /// What changed after `from` up to `to`, or `None` when the log does not reach back to
    /// `from` (or `from` is not a revision it could have given).
    pub fn since(&self, from: u64, to: u64) -> Option<Changes<'_>> {
        if from < self.floor || from > to {
            return None;
        }
        // Entries are in revision order: skip the older ones without looking at them.
        let first = self.entries.partition_point(|(rev, _)| *rev <= from);
        let mut changes = Changes::default();
        for (_, change) in self.entries.range(first..) {
            match change {
                Change::Host(name) => {
                    changes.hosts.insert(name);
                }
                Change::Filters => changes.filters = true,
                Change::Policy => changes.policy = true,
            }
        }
        Some(changes)
    }
}

/// What `m` changes in netmaps, looked up in the registry *before* `m` is applied (a removed
/// host's name is gone afterwards, and whether a policy was in force decides what workloads
/// change).
pub fn touched(registry: &Registry, m: &Mutation) -> Touched {
    let under_policy = registry.policy().is_some();
    let name_of = |id| registry.host(id).map(|h| h.name.to_string());
    let mut changes = Vec::new();
    match m {
        Mutation::Initialized { .. } => return Touched::Reset,
        Mutation::TokenCreated { .. } | Mutation::TokenRevoked { .. } => {}
        Mutation::HostJoined { name, .. } => {
            changes.push(Change::Host(name.to_string()));
            // Its gateway is a new endpoint that selectors may match.
            if under_policy {
                changes.push(Change::Filters);
            }
        }
        Mutation::HostRemoved { id } => {
            changes.extend(name_of(*id).map(Change::Host));
            if under_policy {
                changes.push(Change::Filters);
            }
        }
        Mutation::EndpointChanged { id, .. } => changes.extend(name_of(*id).map(Change::Host)),
        Mutation::WorkloadsReported { host, .. } => {
            if under_policy {
                changes.extend(name_of(*host).map(Change::Host));
                changes.push(Change::Filters);
            }
        }
        Mutation::PolicyApplied { .. } | Mutation::PolicyRemoved => changes.push(Change::Policy),
        // Queued: in no netmap yet. Requested and abandoned: only the host's own identity
        // changes (its rotation order), which every delta carries.
        Mutation::RotationsQueued { .. }
        | Mutation::RotationRequested { .. }
        | Mutation::RotationAbandoned { .. } => {}
        // The host's entry in its peers' netmaps: its keys.
        Mutation::KeyAnnounced { host, .. } | Mutation::RotationCompleted { host, .. } => {
            changes.extend(name_of(*host).map(Change::Host));
        }
    }
    Touched::Changes(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Touched {
        Touched::Changes(vec![Change::Host(name.to_owned())])
    }

    fn hosts<'a>(names: &[&'a str]) -> Option<Changes<'a>> {
        Some(Changes {
            hosts: names.iter().copied().collect(),
            ..Changes::default()
        })
    }

    #[test]
    fn names_changed_since_a_revision_while_the_log_reaches_back_to_it() {
        let mut log = ChangeLog::new(5, 3);
        log.record(6, host("a"));
        log.record(8, host("b"));
        log.record(9, host("a"));
        assert_eq!(log.since(5, 9), hosts(&["a", "b"]));
        assert_eq!(log.since(8, 9), hosts(&["a"]));
        assert_eq!(log.since(9, 9), hosts(&[]));
        assert_eq!(log.since(4, 9), None, "before the log started");
        assert_eq!(log.since(10, 9), None, "a revision from the future");
        // A fourth change pushes out the first: revision 5 is no longer covered, 6 is.
        log.record(11, host("c"));
        assert_eq!(log.since(5, 11), None);
        assert_eq!(log.since(6, 11), hosts(&["a", "b", "c"]));
        log.record(11, Touched::Reset);
        assert_eq!(log.since(6, 11), None);
        assert_eq!(log.since(11, 11), hosts(&[]));
    }

    #[test]
    fn filter_and_policy_changes_are_summed_up_after_a_revision() {
        let mut log = ChangeLog::new(0, 10);
        log.record(1, Touched::Changes(vec![Change::Policy]));
        log.record(2, Touched::Changes(Vec::new()));
        log.record(
            3,
            Touched::Changes(vec![Change::Host("a".into()), Change::Filters]),
        );
        let all = log.since(0, 3).unwrap();
        assert!(all.policy && all.filters);
        assert_eq!(all.hosts, BTreeSet::from(["a"]));
        let later = log.since(1, 3).unwrap();
        assert!(!later.policy && later.filters);
        let none = log.since(3, 3).unwrap();
        assert_eq!(none, Changes::default());
    }
}
