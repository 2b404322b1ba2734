//! The agent's [`Status`], as `wgmesh status` shows it: read from the running peer table, the
//! data path's counters and the agent's own state.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::Agent;
use crate::api::status::{
    ConntrackStatus, ControlStatus, KeyRotationStatus, LaneStatus, PeerStatus, PolicyStatus,
    Status, WorkloadStatus,
};
use crate::peers::counters::PeerDrops;
use crate::peers::peer::{PeerId, PeerState};
use crate::peers::set::PeerSet;

impl Agent {
    pub(super) fn status(&self) -> Status {
        let a = &self.config.agent;
        let now = SystemTime::now();
        let table = self.shared.table.load();
        let (instant, mut drops, mut conntrack) = (
            Instant::now(),
            PeerDrops::default(),
            ConntrackStatus::default(),
        );
        let key_epochs = key_epochs(&self.peers);
        let mut peers: Vec<PeerStatus> = table
            .peers()
            .map(|peer| {
                let st = peer.lock();
                add_drops(&mut drops, &st.counters().dropped);
                if let Some(ct) = st.guard().map(|g| g.conntrack()) {
                    conntrack.entries += ct.live(instant) as u64;
                    conntrack.capacity += ct.capacity() as u64;
                    conntrack.refused += ct.refused();
                }
                let preshared_key = st.lanes().next().is_some_and(|l| l.has_psk());
                let latest_handshake = st.since_last_handshake().and_then(|ago| {
                    now.checked_sub(ago)
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                });
                PeerStatus {
                    name: st.name().map(str::to_owned),
                    public_key: st.keys().current().to_string(),
                    endpoint: st.endpoint().map(|e| e.to_string()),
                    allowed_ips: st.allowed_ips().iter().map(|n| n.to_string()).collect(),
                    persistent_keepalive: st.persistent_keepalive(),
                    latest_handshake,
                    preshared_key,
                    key_epoch: key_epochs.get(&peer.id()).copied().flatten(),
                    lanes: lanes(&st),
                    counters: *st.counters(),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        self.shared.local_drops.add_to(&mut drops);
        Status {
            name: a.name.clone(),
            interface: a.interface.clone(),
            public_key: self.shared.identity().public_key().to_string(),
            listen_port: self.port,
            subnet: self.subnet.to_string(),
            offload: self.offload,
            peers,
            dropped: self.shared.drops.counts(),
            workloads: self
                .workloads
                .iter()
                .map(|w| WorkloadStatus {
                    netns: w.netns.clone(),
                    ip: w.ip.to_string(),
                    host_ifname: w.host_ifname.clone(),
                    labels: w.labels.clone(),
                })
                .collect(),
            control: self.config.control.as_ref().map(|c| ControlStatus {
                url: c.url.to_string(),
                revision: self.revision.unwrap_or(0),
                connected: self.connected.load(std::sync::atomic::Ordering::Relaxed),
                cluster_cidr: Some(self.route_guard.cluster.to_string()),
                netmaps_refused: self
                    .netmaps_refused
                    .load(std::sync::atomic::Ordering::Relaxed),
                workloads_reported: self.reports.as_ref().is_some_and(|r| r.reported()),
            }),
            routes: self.route_guard.status(),
            dumpable: dumpable(),
            policy: self.peers.policy().map(|_| {
                PolicyStatus::of(table.filter(), &drops, conntrack, self.shared.audit.lost())
            }),
            containers: self.container_status(),
            docker: self.plugin.as_ref().map(|p| p.status()),
            key_rotation: self.retiring.as_ref().map(|r| KeyRotationStatus {
                retiring_public_key: r.public_key.to_string(),
                epoch: r.epoch,
                retire_at: r
                    .retire_at
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
            }),
        }
    }
}

/// Each peer's key epoch, as its settings say (control mode).
fn key_epochs(peers: &PeerSet) -> HashMap<PeerId, Option<u64>> {
    peers.settings().map(|(id, s)| (id, s.key_epoch)).collect()
}

/// The peer's lanes, the current one first.
fn lanes(st: &PeerState) -> Vec<LaneStatus> {
    st.lanes()
        .enumerate()
        .map(|(i, l)| LaneStatus {
            local_key: l.local().to_string(),
            remote_key: l.remote().to_string(),
            established: l.established(),
            role: match (i, l.draining()) {
                (0, _) => "current",
                (_, true) => "draining",
                (_, false) => "previous",
            }
            .to_owned(),
        })
        .collect()
}

/// Adds the policy's drops of one peer to `sum`.
fn add_drops(sum: &mut PeerDrops, d: &PeerDrops) {
    sum.policy_denied += d.policy_denied;
    sum.conntrack_full += d.conntrack_full;
    sum.policy_untracked += d.policy_untracked;
    sum.policy_malformed += d.policy_malformed;
}

/// Whether this process is dumpable (`PR_GET_DUMPABLE`): whether it may dump core or have its
/// memory read through /proc or ptrace by other processes of its user.
fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointer and only reads the process's flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE) == 1 }
}
