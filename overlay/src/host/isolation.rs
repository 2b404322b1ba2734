//! Workloads reach each other only through the host: each workload's bridge port is isolated
//! (`IFLA_BRPORT_ISOLATED`: isolated ports exchange no frames with each other, only with the
//! bridge itself; no learning and no flooding to it, a static forwarding entry for its MAC), the host answers their address resolution for one another (proxy ARP, the
//! sysctls of `proxy`; for IPv6 a proxy entry per workload), and the host's own neighbour entry
//! for each workload is permanent, so no ARP or neighbour advertisement can move it.
//!
//! Performs I/O.

use std::net::IpAddr;

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::LinkBridgePort;

use super::error::errno;
use super::{HostError, HostNet};

impl HostNet {
    /// Isolates the bridge port `index` (called `name`, for errors; it must be on a bridge) of
    /// the workload with `mac`: no frames to other ports, no learning, and no flooding to it
    /// (unknown unicast and multicast), with a static forwarding entry for `mac` instead. So the
    /// bridge sends the port only what is for its workload, even when the workload is quiet
    /// (a learnt entry would age out, and the host's frames to it be flooded to every port).
    pub async fn isolate_port(
        &self,
        index: u32,
        name: &str,
        mac: [u8; 6],
    ) -> Result<(), HostError> {
        let message = LinkBridgePort::new(index)
            .isolated(true)
            .learning(false)
            .flood(false)
            .mcast_flood(false)
            .build();
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink("isolate", format!("bridge port {name:?}"), source)
            })?;
        // `bridge fdb replace MAC dev PORT master static`.
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .flags(NeighbourFlags::Controller)
            .state(NeighbourState::Noarp)
            .replace()
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink(
                    "add",
                    format!("forwarding entry on bridge port {name:?}"),
                    source,
                )
            })
    }

    /// Makes the bridge `bridge_index`'s neighbour entry for the workload `addr` permanent with
    /// `mac` (replacing whatever the host had learnt), and for IPv6 adds the proxy entry that
    /// lets the host answer the other workloads' solicitations for it.
    pub async fn pin_neighbour(
        &self,
        bridge_index: u32,
        addr: IpAddr,
        mac: [u8; 6],
    ) -> Result<(), HostError> {
        let neighbours = self.handle.neighbours();
        neighbours
            .add(bridge_index, addr)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink("pin", format!("neighbour {addr} on the bridge"), source)
            })?;
        if addr.is_ipv6() {
            neighbours
                .add(bridge_index, addr)
                .flags(NeighbourFlags::Proxy)
                .replace()
                .execute()
                .await
                .map_err(|source| {
                    HostError::netlink(
                        "add",
                        format!("proxy neighbour {addr} on the bridge"),
                        source,
                    )
                })?;
        }
        Ok(())
    }

    /// Removes what [`HostNet::pin_neighbour`] added for `addr`; entries already gone are fine.
    pub async fn unpin_neighbour(&self, bridge_index: u32, addr: IpAddr) -> Result<(), HostError> {
        let mut entries = vec![neighbour(bridge_index, addr, NeighbourFlags::empty())];
        if addr.is_ipv6() {
            entries.push(neighbour(bridge_index, addr, NeighbourFlags::Proxy));
        }
        for entry in entries {
            match self.handle.neighbours().del(entry).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ENODEV)) => {}
                Err(source) => {
                    return Err(HostError::netlink(
                        "delete",
                        format!("neighbour {addr} on the bridge"),
                        source,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The entry for `addr` on link `index`, as a delete request names it.
fn neighbour(index: u32, addr: IpAddr, flags: NeighbourFlags) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.ifindex = index;
    message.header.flags = flags;
    message
        .attributes
        .push(NeighbourAttribute::Destination(match addr {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    message
}
