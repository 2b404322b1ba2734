//! Host networking through rtnetlink: the container bridge, routes towards the TUN device, veth
//! pairs that put network namespaces on the bridge, and the forwarding sysctls.
//!
//! This module performs I/O: every [`HostNet`] method sends requests to the kernel over a netlink
//! socket, and [`enable_forwarding`] writes to `/proc/sys`. It never runs `ip`. It does not decide
//! what the host should look like (the reconciler does); it applies one change per call and makes
//! each change idempotent where the kernel allows it, so an agent restarted after `kill -9` can
//! apply its desired state again over what the previous run left behind.
//!
//! A netlink socket acts in the network namespace it was created in. [`HostNet::connect`] binds
//! to the calling thread's namespace. The steps that must happen inside another namespace
//! (configuring a workload's `eth0`) run on a short-lived thread that `setns(2)`s into it, so no
//! caller's thread ever changes namespace.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

mod netns;
#[cfg(test)]
mod tests;

/// Where `ip netns add` bind-mounts named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The name a workload's end of its veth pair gets inside its namespace.
pub const WORKLOAD_IFNAME: &str = "eth0";

/// Longest interface name the kernel accepts, in bytes (`IFNAMSIZ` minus the NUL).
const MAX_IFNAME_LEN: usize = 15;

/// Errors from host network setup. Netlink failures say what was attempted on which link,
/// address or route; the kernel's reason is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// [`HostNet::connect`] was called outside a tokio runtime.
    #[error("no tokio runtime to drive the netlink connection")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Connect(#[source] io::Error),
    /// The kernel refused (or the connection failed) a netlink request.
    #[error("cannot {op} {target}")]
    Netlink {
        /// What was attempted ("create", "delete", "bring up", …).
        op: &'static str,
        /// What it was attempted on: the link, address or route, spelled as `ip` would.
        target: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link name the kernel would reject.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidIfname {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A namespace name that cannot name a file in [`NETNS_DIR`].
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidNetnsName {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No named network namespace of that name.
    #[error("network namespace {name:?} not found ({})", .path.display())]
    NetnsNotFound {
        /// The namespace name.
        name: String,
        /// The path that does not exist.
        path: PathBuf,
    },
    /// The namespace file exists but could not be opened or is not a network namespace.
    #[error("cannot open network namespace {name:?} ({})", .path.display())]
    NetnsOpen {
        /// The namespace name.
        name: String,
        /// The file that was opened.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// `setns(2)` into the namespace failed.
    #[error("cannot enter network namespace {name:?}")]
    NetnsEnter {
        /// The namespace name.
        name: String,
        /// Why it failed.
        #[source]
        source: nix::errno::Errno,
    },
    /// The worker thread (or its runtime) for a namespace could not be started.
    #[error("cannot start a worker thread for network namespace {name:?}")]
    NetnsWorker {
        /// The namespace name.
        name: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The worker thread for a namespace panicked or was cancelled (a bug).
    #[error("worker thread for network namespace {name:?} did not finish: {reason}")]
    NetnsWorkerLost {
        /// The namespace name.
        name: String,
        /// The panic message, or why the thread could not be joined.
        reason: String,
    },
    /// A step inside a namespace failed; the source says which.
    #[error("cannot configure network namespace {name:?}")]
    InNetns {
        /// The namespace name.
        name: String,
        /// The step that failed.
        #[source]
        source: Box<Self>,
    },
    /// A link that must be a bridge is something else.
    #[error("link {name:?} exists but is not a bridge (kind: {kind})")]
    NotABridge {
        /// The link name.
        name: String,
        /// Its kind as the kernel reports it ("none" for physical and loopback devices).
        kind: String,
    },
    /// A link disappeared between two steps (someone else deleted it).
    #[error("link {name:?} disappeared while being configured")]
    LinkVanished {
        /// The link name.
        name: String,
    },
    /// An address and a gateway or source address belong to different IP families.
    #[error("{prefix} and {addr} are of different address families")]
    FamilyMismatch {
        /// The prefix (route destination or workload address).
        prefix: IpNet,
        /// The address that does not match it (source or gateway).
        addr: IpAddr,
    },
    /// A sysctl could not be written.
    #[error("cannot write {}", .path.display())]
    Sysctl {
        /// The `/proc/sys` file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl HostError {
    fn netlink(op: &'static str, target: String, source: rtnetlink::Error) -> Self {
        Self::Netlink { op, target, source }
    }
}

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
    /// it up. Returns its ifindex.
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
    async fn ensure_address(&self, index: u32, name: &str, addr: IpNet) -> Result<(), HostError> {
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

    /// Attaches the named network namespace `netns` (`/run/netns/NAME`, as `ip netns add` makes
    /// it) to the bridge `bridge_index`:
    ///
    /// 1. creates a veth pair whose host end is `host_ifname` and whose other end is created
    ///    directly inside the namespace under a temporary name (see [`peer_ifname`]), both with
    ///    MTU `mtu`;
    /// 2. puts `host_ifname` on the bridge and sets it up;
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
        let peer = peer_ifname(host_ifname);

        let peer_message = LinkUnspec::new_with_name(&peer)
            .mtu(mtu.into())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let message = LinkVeth::new(host_ifname, &peer)
            .mtu(mtu.into())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|source| {
                HostError::netlink(
                    "create",
                    format!(
                        "veth {host_ifname:?} with peer {peer:?} in network namespace {netns:?}"
                    ),
                    source,
                )
            })?;

        // From here on the pair is ours: undo it if any later step fails.
        let result = async {
            let index =
                self.link_index(host_ifname)
                    .await?
                    .ok_or_else(|| HostError::LinkVanished {
                        name: host_ifname.to_owned(),
                    })?;
            self.enslave(index, bridge_index).await?;
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

    /// Removes a namespace's veth pair by its host end `host_ifname` (deleting one end deletes
    /// the other, wherever it is). Returns `Ok(false)` if there was no such link.
    pub async fn detach(&self, host_ifname: &str) -> Result<bool, HostError> {
        self.delete_link(host_ifname).await
    }
}

/// Writes `1` to `/proc/sys/net/ipv4/ip_forward` and, when `v6`, to
/// `/proc/sys/net/ipv6/conf/all/forwarding`. These are per network namespace: this acts on the
/// calling thread's namespace.
pub fn enable_forwarding(v6: bool) -> Result<(), HostError> {
    write_sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"))?;
    if v6 {
        write_sysctl(Path::new("/proc/sys/net/ipv6/conf/all/forwarding"))?;
    }
    Ok(())
}

fn write_sysctl(path: &Path) -> Result<(), HostError> {
    std::fs::write(path, b"1").map_err(|source| HostError::Sysctl {
        path: path.to_owned(),
        source,
    })
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

/// Applies the interface-name rule ([`wgmesh_config::ifname`]: the kernel's `dev_valid_name`,
/// plus no control characters).
fn check_ifname(name: &str) -> Result<(), HostError> {
    wgmesh_config::ifname::check_ifname(name).map_err(|fault| HostError::InvalidIfname {
        name: name.to_owned(),
        reason: fault.reason(),
    })
}

/// Opens `/run/netns/NAME` and checks that it is a network namespace (an nsfs bind mount, not
/// the empty file a crashed `ip netns add` can leave).
fn open_netns(name: &str) -> Result<File, HostError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name.contains(['/', '\0']) {
        Some("contains '/' or NUL")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(HostError::InvalidNetnsName {
            name: name.to_owned(),
            reason,
        });
    }
    let path = Path::new(NETNS_DIR).join(name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(HostError::NetnsNotFound {
                name: name.to_owned(),
                path,
            })
        }
        Err(source) => {
            return Err(HostError::NetnsOpen {
                name: name.to_owned(),
                path,
                source,
            })
        }
    };
    let is_nsfs = match nix::sys::statfs::fstatfs(&file) {
        Ok(stat) => stat.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(errno) => {
            return Err(HostError::NetnsOpen {
                name: name.to_owned(),
                path,
                source: errno.into(),
            })
        }
    };
    if !is_nsfs {
        let source = io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a namespace (no nsfs mount)",
        );
        return Err(HostError::NetnsOpen {
            name: name.to_owned(),
            path,
            source,
        });
    }
    Ok(file)
}

/// A route to `dst` straight out of `oif` (no gateway), as `ip route add DST dev OIF` builds it.
fn device_route(dst: IpNet, oif: u32, src: Option<IpAddr>) -> Result<RouteMessage, HostError> {
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

/// The errno of a netlink error reply (positive, as in `libc::ENODEV`).
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}
