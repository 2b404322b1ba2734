//! The agent's routes in the main table, all marked with [`ROUTE_PROTOCOL`]: the TUN device's
//! routes to the peers' prefixes (created, never replacing anything) and the cluster's
//! `unreachable` route; deleting only routes of that protocol; and dumping the main table for
//! the decision in `conflict`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use super::conflict::{HostRoute, RouteKind, MAIN_TABLE, ROUTE_PROTOCOL};
use super::error::errno;
use super::{HostError, HostNet};

impl HostNet {
    /// Creates the route `dst dev <oif> [src <src>]` in the main table, protocol
    /// [`ROUTE_PROTOCOL`], scope `link` for IPv4. Never replaces: if a route to `dst` with the
    /// same metric exists (anyone's), the kernel refuses with `EEXIST` and so does this.
    /// Host bits in `dst` are cleared.
    ///
    /// The link must be up; `src` must be an address of this host, of `dst`'s family.
    pub async fn add_route(
        &self,
        dst: IpNet,
        oif: u32,
        src: Option<IpAddr>,
    ) -> Result<(), HostError> {
        let dst = dst.trunc();
        let message = device_route(dst, oif, src)?;
        let target = match src {
            Some(src) => format!("route {dst} dev {oif} src {src}"),
            None => format!("route {dst} dev {oif}"),
        };
        self.handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(|source| HostError::netlink("add", target, source))
    }

    /// Deletes the agent's route `dst dev <oif>` (protocol [`ROUTE_PROTOCOL`]) from the main
    /// table; a route to `dst` of any other protocol or device is left alone. Returns
    /// `Ok(false)` if there was no such route.
    pub async fn delete_route(&self, dst: IpNet, oif: u32) -> Result<bool, HostError> {
        let dst = dst.trunc();
        let mut message = device_route(dst, oif, None)?;
        // Any scope, but only our protocol (the kernel matches a non-zero protocol and oif).
        message.header.scope = RouteScope::NoWhere;
        self.delete(message, format!("route {dst} dev {oif}")).await
    }

    /// Makes sure the cluster's `unreachable <cluster>` route (protocol [`ROUTE_PROTOCOL`],
    /// main table) exists: one left by an earlier run is taken over, otherwise it is created
    /// (never replacing a route). Traffic into the cluster CIDR that no more specific route
    /// (a peer's, through the TUN device; the bridge's own subnet) takes is then refused on
    /// this host instead of following the default route unencrypted, whether the agent runs
    /// or not. Returns whether it was created (false: taken over).
    pub async fn ensure_cluster_route(&self, cluster: IpNet) -> Result<bool, HostError> {
        let cluster = cluster.trunc();
        let present = self.main_routes().await?;
        if present
            .iter()
            .any(|r| r.is_ours() && r.kind == RouteKind::Unreachable && r.dst == cluster)
        {
            return Ok(false);
        }
        self.handle
            .route()
            .add(unreachable_route(cluster))
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink("add", format!("route unreachable {cluster}"), source)
            })?;
        Ok(true)
    }

    /// Deletes every `unreachable` route of the agent's protocol in the main table except one
    /// to `keep`: the cluster routes of earlier runs or of an old `cluster_cidr`, or (with
    /// `keep` `None`, at a clean stop) all of them. Returns the prefixes deleted.
    pub async fn remove_cluster_routes(
        &self,
        keep: Option<IpNet>,
    ) -> Result<Vec<IpNet>, HostError> {
        let stale: Vec<IpNet> = self
            .main_routes()
            .await?
            .into_iter()
            .filter(|r| r.is_ours() && r.kind == RouteKind::Unreachable)
            .map(|r| r.dst)
            .filter(|dst| Some(*dst) != keep)
            .collect();
        for dst in &stale {
            self.delete(unreachable_route(*dst), format!("route unreachable {dst}"))
                .await?;
        }
        Ok(stale)
    }

    /// Every route of the main table, both families, with device names resolved.
    pub async fn main_routes(&self) -> Result<Vec<HostRoute>, HostError> {
        let names = self.link_names().await?;
        let mut out = Vec::new();
        for message in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut dump = self.handle.route().get(message).execute();
            while let Some(route) = dump
                .try_next()
                .await
                .map_err(|source| HostError::netlink("list", "routes".into(), source))?
            {
                if let Some(route) = host_route(&route, &names) {
                    if route.table == MAIN_TABLE {
                        out.push(route);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn link_names(&self) -> Result<HashMap<u32, String>, HostError> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| HostError::netlink("list", "links".into(), source))?;
        Ok(links
            .into_iter()
            .filter_map(|link| {
                let index = link.header.index;
                link.attributes.into_iter().find_map(|a| match a {
                    rtnetlink::packet_route::link::LinkAttribute::IfName(name) => {
                        Some((index, name))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    async fn delete(&self, message: RouteMessage, target: String) -> Result<bool, HostError> {
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(false),
            Err(source) => Err(HostError::netlink("delete", target, source)),
        }
    }
}

/// The agent's route to `dst` straight out of `oif` (no gateway), as `ip route add DST dev OIF
/// proto 119` builds it.
pub(super) fn device_route(
    dst: IpNet,
    oif: u32,
    src: Option<IpAddr>,
) -> Result<RouteMessage, HostError> {
    let mismatch = |addr| HostError::FamilyMismatch { prefix: dst, addr };
    let ours = RouteProtocol::from(ROUTE_PROTOCOL);
    match dst {
        IpNet::V4(dst) => {
            let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(oif)
                .protocol(ours)
                .scope(RouteScope::Link);
            match src {
                None => {}
                Some(IpAddr::V4(src)) => builder = builder.pref_source(src),
                Some(src @ IpAddr::V6(_)) => return Err(mismatch(src)),
            }
            Ok(builder.build())
        }
        IpNet::V6(dst) => {
            let mut builder = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(oif)
                .protocol(ours);
            match src {
                None => {}
                Some(IpAddr::V6(src)) => builder = builder.pref_source(src),
                Some(src @ IpAddr::V4(_)) => return Err(mismatch(src)),
            }
            Ok(builder.build())
        }
    }
}

/// `unreachable <dst> proto 119` in the main table. `unreachable` rather than `blackhole`: a
/// workload (or a local program) sending into a closed part of the cluster gets an immediate
/// ICMP "host unreachable" from its gateway instead of silent timeouts; either way nothing
/// leaves on the underlay.
fn unreachable_route(dst: IpNet) -> RouteMessage {
    let ours = RouteProtocol::from(ROUTE_PROTOCOL);
    match dst {
        IpNet::V4(dst) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .kind(RouteType::Unreachable)
            .protocol(ours)
            .build(),
        IpNet::V6(dst) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .kind(RouteType::Unreachable)
            .protocol(ours)
            .build(),
    }
}

/// A dumped route as the decision sees it; `None` for routes with a destination of neither IP
/// family (MPLS).
fn host_route(message: &RouteMessage, names: &HashMap<u32, String>) -> Option<HostRoute> {
    let header = &message.header;
    let mut dst = None;
    let mut table = u32::from(header.table);
    let mut device = None;
    let mut gateway = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(index) => {
                device = Some(
                    names
                        .get(index)
                        .cloned()
                        .unwrap_or_else(|| format!("#{index}")),
                );
            }
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    let dst = match (dst, header.address_family) {
        (Some(addr), _) => addr,
        // A default route has no destination attribute.
        (None, rtnetlink::packet_route::AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, rtnetlink::packet_route::AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    let dst = IpNet::new(dst, header.destination_prefix_length)
        .ok()?
        .trunc();
    let kind = match header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Prohibit => RouteKind::Prohibit,
        _ => RouteKind::Other,
    };
    if table == u32::from(RouteHeader::RT_TABLE_UNSPEC) {
        return None;
    }
    Some(HostRoute {
        dst,
        protocol: header.protocol.into(),
        table,
        kind,
        // An unreachable IPv6 route reports `lo` as its device; it has none.
        device: device.filter(|_| kind == RouteKind::Unicast || kind == RouteKind::Other),
        gateway,
    })
}
