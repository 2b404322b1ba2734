//! Which hosts' netmap entries changed at which netmap revision, so that a host holding an
//! older netmap can be sent only what changed ([`NetmapDelta`](wgmesh_config::netmap::NetmapDelta)).
//!
//! Pure and in memory: after a restart the log starts empty and hosts get one whole netmap.
//! It keeps the last `capacity` changes; a host further behind than that gets a whole netmap.

use std::collections::{BTreeSet, VecDeque};

use crate::registry::{Mutation, Registry};

/// The recent netmap changes, by host name.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    entries: VecDeque<(u64, String)>,
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

    /// The entry of host `name` changed at `revision` (joined, left, moved).
    pub fn record(&mut self, revision: u64, name: &str) {
        self.entries.push_back((revision, name.to_owned()));
        while self.entries.len() > self.capacity {
            if let Some((oldest, _)) = self.entries.pop_front() {
                self.floor = oldest;
            }
        }
    }

    /// The names whose entries changed after `from` up to `to`, or `None` when the log does not
    /// reach back to `from` (or `from` is not a revision it could have given).
    pub fn since(&self, from: u64, to: u64) -> Option<BTreeSet<&str>> {
        if from < self.floor || from > to {
            return None;
        }
        // Entries are in revision order: skip the older ones without looking at them.
        let first = self.entries.partition_point(|(rev, _)| *rev <= from);
        Some(
            self.entries
                .range(first..)
                .map(|(_, name)| name.as_str())
                .collect(),
        )
    }
}

/// The host whose netmap entry `m` changes, by name, looked up in the registry *before* `m`
/// is applied (a removed host's name is gone afterwards). `None` for a mutation that changes
/// no entry, and for [`Mutation::Initialized`], after which the log starts over.
pub fn touched_name(registry: &Registry, m: &Mutation) -> Option<String> {
    match m {
        Mutation::HostJoined { name, .. } => Some(name.to_string()),
        Mutation::HostRemoved { id } | Mutation::EndpointChanged { id, .. } => {
            registry.host(*id).map(|h| h.name.to_string())
        }
        Mutation::Initialized { .. }
        | Mutation::TokenCreated { .. }
        | Mutation::TokenRevoked { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_changed_since_a_revision_while_the_log_reaches_back_to_it() {
        let mut log = ChangeLog::new(5, 3);
        log.record(6, "a");
        log.record(8, "b");
        log.record(9, "a");
        assert_eq!(log.since(5, 9), Some(BTreeSet::from(["a", "b"])));
        assert_eq!(log.since(8, 9), Some(BTreeSet::from(["a"])));
        assert_eq!(log.since(9, 9), Some(BTreeSet::new()));
        assert_eq!(log.since(4, 9), None, "before the log started");
        assert_eq!(log.since(10, 9), None, "a revision from the future");
        // A fourth change pushes out the first: revision 5 is no longer covered, 6 is.
        log.record(11, "c");
        assert_eq!(log.since(5, 11), None);
        assert_eq!(log.since(6, 11), Some(BTreeSet::from(["a", "b", "c"])));
        log.reset(11);
        assert_eq!(log.since(6, 11), None);
        assert_eq!(log.since(11, 11), Some(BTreeSet::new()));
    }
}
