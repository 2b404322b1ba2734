//! Links: looking them up by name, the bridge (its fixed MAC and its address), bringing links
//! up, putting them on the bridge and deleting them, the host's addresses; and the
//! interface-name rule every name passes.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec};

use super::error::errno;
use super::{HostError, HostNet};

impl HostNet {
    /// The index of the link called `name`, or `None` if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, HostError> {
        check_ifname(name)?;
        Ok(self.link_by_name(name).await?.map(|link| link.header.index))
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, HostError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(HostError::netlink(
                "look up",
                format!("link {name:?}"),
                source,
            )),
        }
    }

    /// Creates the bridge `name` if missing (an existing bridge is reused: an agent restarted
    /// after `kill -9` finds the one it made), sets its MTU, adds `gateway` (for example
    /// `10.42.1.1/24`) unless that address with that prefix length is already there, and sets
    /// it up. Returns its ifindex. Pin its MAC with [`HostNet::pin_mac`] before adding ports.
    ///
    /// Fails with [`HostError::NotABridge`] if a link of that name exists and is not a bridge.
    /// Other addresses on the bridge are left alone.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: IpNet,
        mtu: u16,
    ) -> Result<u32, HostError> {
        check_ifname(name)?;
        if self.link_by_name(name).await?.is_none() {
            let message = LinkBridge::new(name).mtu(mtu.into()).build();
            match self.handle.link().add(message).execute().await {
                Ok(()) => tracing::debug!(bridge = name, "created bridge"),
                // Someone created it concurrently; checked below like a pre-existing one.
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(HostError::netlink(
                        "create",
                        format!("bridge {name:?}"),
                        source,
                    ))
                }
            }
        }
        let link = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| HostError::LinkVanished {
                name: name.to_owned(),
            })?;
        let kind = link_kind(&link);
        if kind != Some(&InfoKind::Bridge) {
            return Err(HostError::NotABridge {
                name: name.to_owned(),
                kind: kind.map_or_else(|| "none".to_owned(), ToString::to_string),
            });
        }
        let index = link.header.index;
        self.set_up(index, Some(mtu)).await?;
        self.ensure_address(index, name, gateway).await?;
        Ok(index)
    }

    /// Adds `addr` to link `index` unless it is already there with the same prefix length.
    pub(super) async fn ensure_address(
        &self,
        index: u32,
        name: &str,
        addr: IpNet,
    ) -> Result<(), HostError> {
        let target = || format!("address {addr} on link {name:?}");
        let present: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|source| HostError::netlink("list addresses for", target(), source))?;
        let found = present.iter().any(|message| {
            message.header.prefix_len == addr.prefix_len()
                && message.attributes.iter().any(|attribute| {
                    matches!(attribute, AddressAttribute::Address(ip) | AddressAttribute::Local(ip)
                        if *ip == addr.addr())
                })
        });
        if found {
            return Ok(());
        }
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            // Our own address on a link we made: there is no duplicate to detect, and while
            // duplicate address detection runs the address is tentative and cannot be a
            // route's source (EINVAL) or answer packets.
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            // Added concurrently, which is what we wanted.
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(HostError::netlink("add", target(), source)),
        }
    }

    /// Sets the MAC of link `index` (called `name`, for errors) explicitly, even when it already
    /// has that MAC: a bridge whose MAC was set keeps it for its life, while one that was never
    /// set takes the lowest MAC of its ports and changes it when that port leaves (and with it
    /// the gateway's MAC every workload has cached). See [`bridge_mac`].
    pub async fn pin_mac(&self, index: u32, name: &str, mac: [u8; 6]) -> Result<(), HostError> {
        let message = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink("set the MAC of", format!("link {name:?}"), source)
            })
    }

    /// Every address on every link of the namespace (the host's own addresses).
    pub async fn addresses(&self) -> Result<Vec<IpAddr>, HostError> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| HostError::netlink("list", "addresses".to_owned(), source))?;
        let mut out: Vec<IpAddr> = messages
            .iter()
            .flat_map(|m| &m.attributes)
            .filter_map(|a| match a {
                AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Sets link `index` up and, if given, sets its MTU first (in the same request).
    pub async fn set_up(&self, index: u32, mtu: Option<u16>) -> Result<(), HostError> {
        let mut message = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            message = message.mtu(mtu.into());
        }
        let target = match mtu {
            Some(mtu) => format!("link {index} (mtu {mtu})"),
            None => format!("link {index}"),
        };
        self.handle
            .link()
            .change(message.build())
            .execute()
            .await
            .map_err(|source| HostError::netlink("bring up", target, source))
    }

    /// Deletes the link called `name` (for a veth, both ends). Returns `Ok(false)` if there was
    /// no such link.
    pub async fn delete_link(&self, name: &str) -> Result<bool, HostError> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(source) => Err(HostError::netlink(
                "delete",
                format!("link {name:?}"),
                source,
            )),
        }
    }

    /// Puts the existing link `link_index` on the bridge `bridge_index` (sets its master) and
    /// sets it up. Moving a link that is already on the bridge is a no-op.
    pub async fn enslave(&self, link_index: u32, bridge_index: u32) -> Result<(), HostError> {
        let message = LinkUnspec::new_with_index(link_index)
            .controller(bridge_index)
            .up()
            .build();
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink(
                    "enslave",
                    format!("link {link_index} to bridge {bridge_index}"),
                    source,
                )
            })
    }
}

/// Applies the interface-name rule ([`wgmesh_config::ifname`]: the kernel's `dev_valid_name`,
/// plus no control characters).
pub(super) fn check_ifname(name: &str) -> Result<(), HostError> {
    wgmesh_config::ifname::check_ifname(name).map_err(|fault| HostError::InvalidIfname {
        name: name.to_owned(),
        fault,
    })
}

/// The bridge's MAC for the host called `host_name`: derived from the name alone (FNV-1a), so it
/// is the same at every start and never follows the bridge's ports; locally administered and
/// unicast (the first byte's low bits are `10`), so it cannot collide with a vendor's.
pub fn bridge_mac(host_name: &str) -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in host_name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// The `IFLA_INFO_KIND` of a link, if it has one (physical and loopback devices do not).
fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
                LinkInfo::Kind(kind) => Some(kind),
                _ => None,
            }),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::bridge_mac;

    #[test]
    fn the_bridge_mac_is_stable_local_and_unicast() {
        let a = bridge_mac("host-a");
        assert_eq!(a, bridge_mac("host-a"), "the same at every start");
        assert_ne!(a, bridge_mac("host-b"));
        for name in ["host-a", "host-b", "", "x"] {
            let mac = bridge_mac(name);
            assert_eq!(
                mac[0] & 0x03,
                0x02,
                "{name:?}: locally administered unicast"
            );
        }
        // Pinned: a change would change every host's gateway MAC at upgrade.
        assert_eq!(bridge_mac(""), [0xca, 0xf2, 0x9c, 0xe4, 0x84, 0x22]);
    }
}
