//! Workloads' network namespaces on the bridge: a veth pair per namespace, its host end on the
//! bridge (guarded against spoofing and isolated from the other workloads' ports), its other
//! end `eth0` inside with the workload's MAC ([`workload_mac`]), address and default route; and
//! the stable names and MACs of those veths.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use wgmesh_config::ifname::MAX_IFNAME_LEN;

use super::link::check_ifname;
use super::netns::{self, open_netns};
use super::{HostError, HostNet};

/// The name a workload's end of its veth pair gets inside its namespace.
pub const WORKLOAD_IFNAME: &str = "eth0";

impl HostNet {
    /// Attaches the named network namespace `netns` (`/run/netns/NAME`, as `ip netns add` makes
    /// it) to the bridge `bridge_index`:
    ///
    /// 1. creates a veth pair whose host end is `host_ifname` and whose other end is created
    ///    directly inside the namespace under a temporary name (see [`peer_ifname`]) with the
    ///    MAC [`workload_mac`] of `addr`, both with MTU `mtu`;
    /// 2. guards `host_ifname` ([`HostNet::guard_port`]), puts it on the bridge, sets it up and
    ///    isolates it ([`HostNet::isolate_port`]), all before the workload's end is up;
    /// 3. inside the namespace, renames the peer to [`WORKLOAD_IFNAME`] (`eth0`), adds `addr`
    ///    (for example `10.42.1.2/24`), sets `lo` and `eth0` up and adds (or replaces) the
    ///    default route via `gateway`.
    ///
    /// Nothing is created if the namespace does not exist ([`HostError::NetnsNotFound`]) or
    /// `host_ifname` already exists. If a later step fails, the veth pair is deleted again
    /// before the error is returned. Dropping the returned future part-way may leave the pair
    /// behind; [`HostNet::detach`] removes it.
    pub async fn attach_netns(
        &self,
        netns: &str,
        host_ifname: &str,
        bridge_index: u32,
        addr: IpNet,
        gateway: IpAddr,
        mtu: u16,
    ) -> Result<(), HostError> {
        check_ifname(host_ifname)?;
        if addr.addr().is_ipv4() != gateway.is_ipv4() {
            return Err(HostError::FamilyMismatch {
                prefix: addr,
                addr: gateway,
            });
        }
        let ns = open_netns(netns)?;
        let peer = self
            .add_workload_veth(host_ifname, addr.addr(), mtu, Some((netns, &ns)))
            .await?;

        // From here on the pair is ours: undo it if any later step fails.
        let result = async {
            self.secure_new_port(host_ifname, bridge_index, addr.addr())
                .await?;
            netns::run_in(netns, ns, move |inner| async move {
                inner.configure_workload(&peer, addr, gateway, mtu).await
            })
            .await
        }
        .await;
        if let Err(error) = &result {
            match self.delete_link(host_ifname).await {
                Ok(_) => tracing::debug!(link = host_ifname, netns, error = %error,
                    "attach failed; removed the veth pair"),
                Err(cleanup) => tracing::warn!(link = host_ifname, netns, error = %error,
                    cleanup_error = %cleanup, "attach failed and the veth pair could not be removed"),
            }
        }
        result
    }

    /// Makes a Docker container's veth pair: the host end `host_ifname` guarded, on the bridge
    /// `bridge_index`, up and isolated (as [`HostNet::attach_netns`] does), and the other end
    /// [`peer_ifname`] left down in the host's namespace with the MAC [`workload_mac`] of
    /// `addr`, for Docker to move into the container, name, address and bring up. Both ends
    /// get MTU `mtu`. On failure the pair is deleted again. Returns the container end's name.
    pub async fn create_container_veth(
        &self,
        host_ifname: &str,
        bridge_index: u32,
        addr: IpAddr,
        mtu: u16,
    ) -> Result<String, HostError> {
        check_ifname(host_ifname)?;
        let peer = self.add_workload_veth(host_ifname, addr, mtu, None).await?;
        let result = self.secure_new_port(host_ifname, bridge_index, addr).await;
        if let Err(error) = &result {
            if let Err(cleanup) = self.delete_link(host_ifname).await {
                tracing::warn!(link = host_ifname, error = %error, cleanup_error = %cleanup,
                    "container veth failed and could not be removed");
            }
        }
        result.map(|()| peer)
    }

    /// Creates a workload's veth pair: host end `host_ifname`, other end [`peer_ifname`] with
    /// the MAC [`workload_mac`] of `addr`, both with MTU `mtu`, the other end created inside
    /// `netns` (its name and open file) when given, else here. Returns the other end's name.
    async fn add_workload_veth(
        &self,
        host_ifname: &str,
        addr: IpAddr,
        mtu: u16,
        netns: Option<(&str, &std::fs::File)>,
    ) -> Result<String, HostError> {
        let peer = peer_ifname(host_ifname);
        let mut peer_message = LinkUnspec::new_with_name(&peer)
            .mtu(mtu.into())
            .address(workload_mac(addr).to_vec());
        if let Some((_, ns)) = netns {
            peer_message = peer_message.setns_by_fd(ns.as_raw_fd());
        }
        let message = LinkVeth::new(host_ifname, &peer)
            .mtu(mtu.into())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message.build())))
            .build();
        let inside = netns.map_or_else(String::new, |(name, _)| {
            format!(" in network namespace {name:?}")
        });
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink(
                    "create",
                    format!("veth {host_ifname:?} with peer {peer:?}{inside}"),
                    source,
                )
            })?;
        Ok(peer)
    }

    /// Guards the host end `host_ifname` of a new pair and puts it on the bridge
    /// ([`HostNet::secure_port`]).
    async fn secure_new_port(
        &self,
        host_ifname: &str,
        bridge_index: u32,
        addr: IpAddr,
    ) -> Result<(), HostError> {
        let index = self
            .link_index(host_ifname)
            .await?
            .ok_or_else(|| HostError::LinkVanished {
                name: host_ifname.to_owned(),
            })?;
        self.secure_port(index, host_ifname, bridge_index, addr)
            .await
    }

    /// The in-namespace half of [`HostNet::attach_netns`]; `self` is connected inside it.
    async fn configure_workload(
        &self,
        peer: &str,
        addr: IpNet,
        gateway: IpAddr,
        mtu: u16,
    ) -> Result<(), HostError> {
        let index = self
            .link_index(peer)
            .await?
            .ok_or_else(|| HostError::LinkVanished {
                name: peer.to_owned(),
            })?;
        // A new link is down, so it may be renamed.
        let rename = LinkUnspec::new_with_index(index)
            .name(WORKLOAD_IFNAME)
            .mtu(mtu.into())
            .build();
        self.handle
            .link()
            .change(rename)
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink(
                    "rename",
                    format!("link {peer:?} to {WORKLOAD_IFNAME:?}"),
                    source,
                )
            })?;
        self.ensure_address(index, WORKLOAD_IFNAME, addr).await?;
        if let Some(lo) = self.link_index("lo").await? {
            self.set_up(lo, None).await?;
        }
        self.set_up(index, None).await?;

        let default_route = match gateway {
            IpAddr::V4(gateway) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build(),
            IpAddr::V6(gateway) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build(),
        };
        self.handle
            .route()
            .add(default_route)
            .replace()
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink(
                    "replace",
                    format!("default route via {gateway} dev {WORKLOAD_IFNAME}"),
                    source,
                )
            })
    }

    /// Guards the workload port `index` (called `host_ifname`) of the workload with `addr`,
    /// puts it on the bridge `bridge_index`, sets it up and isolates it. Idempotent.
    pub async fn secure_port(
        &self,
        index: u32,
        host_ifname: &str,
        bridge_index: u32,
        addr: IpAddr,
    ) -> Result<(), HostError> {
        self.guard_port(index, host_ifname, workload_mac(addr), addr)
            .await?;
        self.enslave(index, bridge_index).await?;
        self.isolate_port(index, host_ifname, workload_mac(addr))
            .await
    }

    /// Gives the workload end (`eth0`) of the veth pair in `netns` the MAC [`workload_mac`] of
    /// `addr` again: a port is guarded for that MAC, whatever the workload set (or an agent
    /// before this one chose).
    pub async fn reset_workload_mac(&self, netns: &str, addr: IpAddr) -> Result<(), HostError> {
        let ns = open_netns(netns)?;
        let mac = workload_mac(addr);
        netns::run_in(netns, ns, move |inner| async move {
            let index = inner.link_index(WORKLOAD_IFNAME).await?.ok_or_else(|| {
                HostError::LinkVanished {
                    name: WORKLOAD_IFNAME.to_owned(),
                }
            })?;
            inner.pin_mac(index, WORKLOAD_IFNAME, mac).await
        })
        .await
    }

    /// Removes a namespace's veth pair by its host end `host_ifname` (deleting one end deletes
    /// the other, wherever it is). Returns `Ok(false)` if there was no such link.
    pub async fn detach(&self, host_ifname: &str) -> Result<bool, HostError> {
        self.delete_link(host_ifname).await
    }
}

/// The host-side veth name for the namespace called `netns`: `"wgmv"` followed by 8 hex digits
/// of its 32-bit FNV-1a hash (12 bytes). The same name always gives the same result, on every
/// host and in every version, so a restarted agent finds the veths it made.
pub fn host_ifname_for(netns: &str) -> String {
    const FNV_OFFSET: u32 = 0x811c_9dc5;
    const FNV_PRIME: u32 = 0x0100_0193;
    let hash = netns.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    });
    format!("wgmv{hash:08x}")
}

/// The MAC of the workload with `addr`: locally administered and unicast (first byte `0a`),
/// then `58` and the IPv4 address itself, or for IPv6 `59` and 32 bits of the address's FNV-1a
/// hash. The same address always gives the same MAC, so a restarted agent guards a port for
/// the MAC its workload has.
pub fn workload_mac(addr: IpAddr) -> [u8; 6] {
    match addr {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            [0x0a, 0x58, a, b, c, d]
        }
        IpAddr::V6(ip) => {
            let hash = ip.octets().iter().fold(0x811c_9dc5u32, |hash, byte| {
                (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
            });
            let [a, b, c, d] = hash.to_be_bytes();
            [0x0a, 0x59, a, b, c, d]
        }
    }
}

/// The temporary name of the namespace end of `host_ifname`'s veth pair: `host_ifname` cut to
/// 14 bytes, plus `p` (or `q` if that would give `host_ifname` back). Unique per host end, so
/// attaching two namespaces at once does not collide.
pub fn peer_ifname(host_ifname: &str) -> String {
    let mut end = host_ifname.len().min(MAX_IFNAME_LEN - 1);
    while !host_ifname.is_char_boundary(end) {
        end -= 1;
    }
    let mut peer = host_ifname[..end].to_owned();
    peer.push('p');
    if peer == host_ifname {
        peer.pop();
        peer.push('q');
    }
    peer
}
