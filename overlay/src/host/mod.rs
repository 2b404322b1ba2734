//! Host networking through rtnetlink: the container bridge, routes towards the TUN device, veth
//! pairs that put network namespaces on the bridge (isolated and guarded against spoofing),
//! same-host routing through the TUN device, and the forwarding and proxy sysctls.
//!
//! This module performs I/O: every [`HostNet`] method sends requests to the kernel over a netlink
//! socket, and `forwarding` reads and writes `/proc/sys`. It never runs `ip`. It does not decide
//! what the host should look like (the agent does); it applies one change per call and makes
//! each change idempotent where the kernel allows it, so an agent restarted after `kill -9` can
//! apply its desired state again over what the previous run left behind.
//!
//! A netlink socket acts in the network namespace it was created in. [`HostNet::connect`] binds
//! to the calling thread's namespace. The steps that must happen inside another namespace
//! (configuring a workload's `eth0`) run on a short-lived thread that `setns(2)`s into it, so no
//! caller's thread ever changes namespace.
//!
//! Here: [`HostNet`] and its connection. `error`: [`HostError`]; `link`: links, the bridge and
//! the interface-name rule; `route`: the agent's routes (the TUN device's and the cluster's
//! `unreachable` route) and the main table's dump; `conflict`: which routes are ours and whether
//! a prefix would override one that is not (pure); `workload`: namespaces on the
//! bridge ([`HostNet::attach_netns`]) and their veth names; `netns`: opening a namespace and
//! working inside it; `forwarding`: the sysctls (which to change, applying and restoring them);
//! `proxy`: the proxy ARP/NDP and reverse-path sysctls of same-host routing (pure plan);
//! `same_host`: the policy routing rule and table that send same-host traffic through the TUN
//! device; `isolation`: isolated bridge ports and the bridge's permanent neighbour entries for
//! workloads; `antispoof`: the tc filters on each workload's port; `firewall`: the `FORWARD`
//! rules that let the overlay's forwarding past a `DROP` policy such as dockerd's (it runs
//! `iptables`, the one exception to "never runs a binary").

use rtnetlink::Handle;

mod antispoof;
mod conflict;
mod error;
pub mod firewall;
pub mod forwarding;
mod isolation;
mod link;
mod netns;
pub mod proxy;
mod route;
mod same_host;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_same_host;
mod workload;

pub use conflict::{
    cluster_conflict, cluster_hazard, conflict, Conflict, Guarded, HostRoute, RouteKind,
    MAIN_TABLE, MIN_CLUSTER_PREFIX, ROUTE_PROTOCOL,
};
pub use error::HostError;
pub use link::bridge_mac;
pub use netns::NETNS_DIR;
pub use same_host::{CLOSED_METRIC, OPEN_METRIC, SAME_HOST_PRIORITY, SAME_HOST_TABLE};
pub use workload::{host_ifname_for, peer_ifname, workload_mac, WORKLOAD_IFNAME};

/// A netlink connection to one network namespace: the namespace of the thread that called
/// [`HostNet::connect`]. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct HostNet {
    handle: Handle,
}

impl HostNet {
    /// Opens a netlink connection in the calling thread's current network namespace and spawns
    /// its driver on the current tokio runtime. The driver task ends when the last clone of this
    /// `HostNet` is dropped.
    pub fn connect() -> Result<Self, HostError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(HostError::NoRuntime)?;
        // Inside the runtime's context: the socket registers with its reactor.
        let _context = runtime.enter();
        let (connection, handle, _multicast) =
            rtnetlink::new_connection().map_err(HostError::Connect)?;
        runtime.spawn(connection);
        Ok(Self { handle })
    }
}
