//! Routes in the main table straight out of a device (the TUN device's routes to the peers'
//! prefixes): replaced idempotently, deleted whatever their protocol.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::RouteMessageBuilder;

use super::error::errno;
use super::{HostError, HostNet};

impl HostNet {
    /// Adds or replaces (`NLM_F_REPLACE`) the route `dst dev <oif> [src <src>]` in the main
    /// table, protocol `static`, scope `link` for IPv4. An existing route to the same `dst`
    /// in the main table, through any device, is replaced. Host bits in `dst` are cleared.
    ///
    /// The link must be up; `src` must be an address of this host, of `dst`'s family.
    pub async fn replace_route(
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
            .replace()
            .execute()
            .await
            .map_err(|source| HostError::netlink("replace", target, source))
    }

    /// Deletes the route `dst dev <oif>` from the main table, whatever its protocol or source.
    /// Returns `Ok(false)` if there was no such route.
    pub async fn delete_route(&self, dst: IpNet, oif: u32) -> Result<bool, HostError> {
        let dst = dst.trunc();
        let mut message = device_route(dst, oif, None)?;
        // Wildcards, as `ip route del` sends them: match any protocol and scope.
        message.header.protocol = RouteProtocol::Unspec;
        message.header.scope = RouteScope::NoWhere;
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(false),
            Err(source) => Err(HostError::netlink(
                "delete",
                format!("route {dst} dev {oif}"),
                source,
            )),
        }
    }
}

/// A route to `dst` straight out of `oif` (no gateway), as `ip route add DST dev OIF` builds it.
pub(super) fn device_route(
    dst: IpNet,
    oif: u32,
    src: Option<IpAddr>,
) -> Result<RouteMessage, HostError> {
    let mismatch = |addr| HostError::FamilyMismatch { prefix: dst, addr };
    match dst {
        IpNet::V4(dst) => {
            let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(oif)
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
                .output_interface(oif);
            match src {
                None => {}
                Some(IpAddr::V6(src)) => builder = builder.pref_source(src),
                Some(src @ IpAddr::V4(_)) => return Err(mismatch(src)),
            }
            Ok(builder.build())
        }
    }
}
