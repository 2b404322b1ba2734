//! What the peers need to know of this host's networks ([`HostNets`]): its subnet, the cluster
//! CIDR and every address of the host, read from the kernel at start and again at each reload
//! and netmap (addresses come and go).

use ipnet::IpNet;

use super::{Agent, AgentError};
use crate::error::Chain;
use crate::host::HostNet;
use crate::peers::local::HostNets;

/// The host's networks: `subnet`, `cluster` and the addresses `host` reports.
pub(super) async fn read(
    host: &HostNet,
    subnet: IpNet,
    cluster: IpNet,
) -> Result<HostNets, AgentError> {
    Ok(HostNets::new(subnet, cluster, host.addresses().await?))
}

impl Agent {
    /// Reads the host's addresses again and hands them to the peers, with the cluster CIDR the
    /// route guard enforces. On failure the peers keep the addresses they had.
    pub(super) async fn refresh_host_nets(&mut self) {
        let subnet = self.peers.host_nets().subnet();
        match read(&self.host, subnet, self.route_guard.cluster).await {
            Ok(nets) => self.peers.set_host_nets(nets),
            Err(e) => tracing::error!("cannot read the host's addresses: {}", Chain(&e)),
        }
    }
}
