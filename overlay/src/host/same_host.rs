//! Same-host traffic through the agent: a policy routing rule sends what the bridge receives
//! for the host's own subnet to the agent's table, which routes it into the TUN device, so that
//! a packet from one workload to another on this host passes the agent's filter like one to
//! another host. The agent writes it back to TUN, and the kernel (the rule matches only what
//! arrives on the bridge) forwards it out of the bridge.
//!
//! - The rule: `iif <bridge> to <subnet> lookup` [`SAME_HOST_TABLE`], priority
//!   [`SAME_HOST_PRIORITY`], protocol [`ROUTE_PROTOCOL`]. It comes after the `local` table's
//!   rule (priority 0), so the gateway (the bridge's own address) and the subnet's broadcast
//!   address are still delivered to the host; and before `main` (32766), whose route to the
//!   subnet goes back out of the bridge.
//! - The table: `<subnet> dev <tun>` (metric [`OPEN_METRIC`]), and `unreachable <subnet>`
//!   behind it (metric [`CLOSED_METRIC`]): when the TUN device goes (a killed agent) its route goes with it and
//!   same-host traffic is refused instead of forwarded past the agent, as the cluster's
//!   `unreachable` route closes the rest of the cluster.
//!
//! Rules and routes of an earlier run are taken over or removed at start
//! ([`HostNet::route_same_host`]) and all of them go at stop ([`HostNet::unroute_same_host`]).
//! Only rules and routes of protocol [`ROUTE_PROTOCOL`] are ever touched. Performs I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{IpVersion, RouteMessageBuilder};

use super::conflict::ROUTE_PROTOCOL;
use super::error::errno;
use super::link::check_ifname;
use super::{HostError, HostNet};

/// The routing table of same-host traffic (`ip route show table 119`).
pub const SAME_HOST_TABLE: u32 = 119;
/// The priority of the rule that selects it (`ip rule`): after `local` (0), before `main`.
pub const SAME_HOST_PRIORITY: u32 = 119;
/// The metric of the table's route into the TUN device (IPv6's default for a route).
pub const OPEN_METRIC: u32 = 1024;
/// The metric of the table's `unreachable` route, behind the TUN device's.
pub const CLOSED_METRIC: u32 = 4096;

/// One route of ours in [`SAME_HOST_TABLE`], as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableRoute {
    dst: IpNet,
    kind: RouteType,
    metric: u32,
    oif: Option<u32>,
}

impl HostNet {
    /// Routes what the bridge `bridge` receives for `subnet` into the TUN device `tun_index`
    /// (see the [module documentation](self)): the table first (its `unreachable` route taken
    /// over from an earlier run or created, the TUN device's route added, other routes of ours
    /// in it removed), then the rule (an earlier run's identical rule kept, other rules of ours
    /// removed).
    pub async fn route_same_host(
        &self,
        bridge: &str,
        subnet: IpNet,
        tun_index: u32,
    ) -> Result<(), HostError> {
        check_ifname(bridge)?;
        let subnet = subnet.trunc();
        let closed = TableRoute {
            dst: subnet,
            kind: RouteType::Unreachable,
            metric: CLOSED_METRIC,
            oif: None,
        };
        let open = TableRoute {
            dst: subnet,
            kind: RouteType::Unicast,
            metric: OPEN_METRIC,
            oif: Some(tun_index),
        };
        let present = self.table_routes().await?;
        for stale in present.iter().filter(|r| **r != closed && **r != open) {
            self.delete_table_route(stale).await?;
        }
        for wanted in [&closed, &open] {
            if !present.contains(wanted) {
                self.add_table_route(wanted).await?;
            }
        }
        let rules = self.our_rules().await?;
        let mut found = false;
        for rule in rules {
            if !found && is_rule(&rule, bridge, subnet) {
                found = true;
            } else {
                self.delete_rule(rule).await?;
            }
        }
        if !found {
            self.add_rule(bridge, subnet).await?;
        }
        Ok(())
    }

    /// Removes every rule of ours and every route of ours in [`SAME_HOST_TABLE`].
    pub async fn unroute_same_host(&self) -> Result<(), HostError> {
        for rule in self.our_rules().await? {
            self.delete_rule(rule).await?;
        }
        for route in self.table_routes().await? {
            self.delete_table_route(&route).await?;
        }
        Ok(())
    }

    async fn add_rule(&self, bridge: &str, subnet: IpNet) -> Result<(), HostError> {
        let target = format!(
            "rule iif {bridge} to {subnet} lookup {SAME_HOST_TABLE} pref {SAME_HOST_PRIORITY}"
        );
        let rule = self
            .handle
            .rule()
            .add()
            .input_interface(bridge)
            .table_id(SAME_HOST_TABLE)
            .priority(SAME_HOST_PRIORITY)
            .action(RuleAction::ToTable);
        let result = match subnet {
            IpNet::V4(net) => {
                let mut rule = rule
                    .v4()
                    .destination_prefix(net.network(), net.prefix_len());
                mark_rule(rule.message_mut());
                rule.execute().await
            }
            IpNet::V6(net) => {
                let mut rule = rule
                    .v6()
                    .destination_prefix(net.network(), net.prefix_len());
                mark_rule(rule.message_mut());
                rule.execute().await
            }
        };
        result.map_err(|source| HostError::netlink("add", target, source))
    }

    /// Every rule of protocol [`ROUTE_PROTOCOL`], both families.
    async fn our_rules(&self) -> Result<Vec<RuleMessage>, HostError> {
        let mut out = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let rules: Vec<RuleMessage> = self
                .handle
                .rule()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(|source| HostError::netlink("list", "rules".into(), source))?;
            out.extend(rules.into_iter().filter(|rule| {
                rule.attributes.iter().any(
                    |a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == ROUTE_PROTOCOL),
                )
            }));
        }
        Ok(out)
    }

    async fn delete_rule(&self, rule: RuleMessage) -> Result<(), HostError> {
        let target = format!("rule {rule:?}");
        match self.handle.rule().del(rule).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
            Err(source) => Err(HostError::netlink("delete", target, source)),
        }
    }

    /// Our routes in [`SAME_HOST_TABLE`], both families.
    async fn table_routes(&self) -> Result<Vec<TableRoute>, HostError> {
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
                out.extend(table_route(&route));
            }
        }
        Ok(out)
    }

    async fn add_table_route(&self, route: &TableRoute) -> Result<(), HostError> {
        let target = route.describe();
        match self.handle.route().add(route.message()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(HostError::netlink("add", target, source)),
        }
    }

    async fn delete_table_route(&self, route: &TableRoute) -> Result<(), HostError> {
        let target = route.describe();
        match self.handle.route().del(route.message()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(source) => Err(HostError::netlink("delete", target, source)),
        }
    }
}

impl TableRoute {
    fn message(&self) -> RouteMessage {
        let ours = RouteProtocol::from(ROUTE_PROTOCOL);
        let mut message = match self.dst {
            IpNet::V4(dst) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .build(),
            IpNet::V6(dst) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .build(),
        };
        message.header.table = SAME_HOST_TABLE as u8;
        message.header.protocol = ours;
        message.header.kind = self.kind;
        if self.kind == RouteType::Unicast && self.dst.addr().is_ipv4() {
            message.header.scope = rtnetlink::packet_route::route::RouteScope::Link;
        }
        message
            .attributes
            .push(RouteAttribute::Table(SAME_HOST_TABLE));
        message
            .attributes
            .push(RouteAttribute::Priority(self.metric));
        if let Some(oif) = self.oif {
            message.attributes.push(RouteAttribute::Oif(oif));
        }
        message
    }

    fn describe(&self) -> String {
        let kind = if self.kind == RouteType::Unreachable {
            "unreachable "
        } else {
            ""
        };
        let dev = self.oif.map(|i| format!(" dev {i}")).unwrap_or_default();
        format!(
            "route {kind}{}{dev} table {SAME_HOST_TABLE} metric {}",
            self.dst, self.metric
        )
    }
}

/// Marks a rule as ours: protocol [`ROUTE_PROTOCOL`].
fn mark_rule(message: &mut RuleMessage) {
    message
        .attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(ROUTE_PROTOCOL)));
}

/// Whether `rule` is exactly the one [`HostNet::route_same_host`] wants.
fn is_rule(rule: &RuleMessage, bridge: &str, subnet: IpNet) -> bool {
    let mut iif = None;
    let mut dst = None;
    let mut table = u32::from(rule.header.table);
    let mut priority = None;
    for attribute in &rule.attributes {
        match attribute {
            RuleAttribute::Iifname(name) => iif = Some(name.as_str()),
            RuleAttribute::Destination(addr) => dst = Some(*addr),
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = Some(*p),
            _ => {}
        }
    }
    let dst = dst.and_then(|addr: IpAddr| IpNet::new(addr, rule.header.dst_len).ok());
    rule.header.action == RuleAction::ToTable
        && rule.header.src_len == 0
        && iif == Some(bridge)
        && dst == Some(subnet)
        && table == SAME_HOST_TABLE
        && priority == Some(SAME_HOST_PRIORITY)
}

/// A dumped route, if it is ours and in [`SAME_HOST_TABLE`].
fn table_route(message: &RouteMessage) -> Option<TableRoute> {
    if u8::from(message.header.protocol) != ROUTE_PROTOCOL {
        return None;
    }
    let mut table = u32::from(message.header.table);
    let mut dst = None;
    let mut metric = 0;
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != SAME_HOST_TABLE {
        return None;
    }
    let dst = IpNet::new(dst?, message.header.destination_prefix_length).ok()?;
    let kind = message.header.kind;
    // An unreachable IPv6 route reports `lo` as its device; it has none.
    let oif = oif.filter(|_| kind == RouteType::Unicast);
    Some(TableRoute {
        dst,
        kind,
        metric,
        oif,
    })
}
