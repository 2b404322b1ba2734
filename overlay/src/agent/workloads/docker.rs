//! Docker's part of a host's workloads: the networks this host's plugin created, the
//! addresses its IPAM driver handed out ([`Reservation`]s: Docker asks for an address before
//! it creates the endpoint that uses it), and the containers' endpoints ([`Container`]), with
//! the labels learnt from the Docker API.
//!
//! Every decision the plugin's calls need is made here, checked against the host's subnet and
//! the addresses `attach` gave out ([`Workloads`] shares one allocator). Errors are written for
//! the user, who reads them in Docker's output. Pure: no I/O, the time is an argument.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_client::api::WorkloadReport;
use wgmesh_config::labels::{self, Labels, MAX_LABELS};
use wgmesh_config::policy::HOST_LABEL;

use super::{WorkloadError, Workloads};
use crate::api::docker::protocol::{
    AddressRequest, CreateEndpoint, CreateNetwork, RequestPool, ADDRESS_SPACE, MTU_OPTION,
};
use crate::host;

/// The pool id of a network without `--subnet`: the whole host subnet.
const HOST_POOL: &str = "wgmesh:host";
/// The pool Docker is told for a network without `--subnet`. Not the host's subnet: dockerd
/// would find that on the bridge's routes, release it and ask again, forever. `0.0.0.0/0` is
/// one dockerd does not check (Calico's plugin answers the same).
pub const ANY_POOL: &str = "0.0.0.0/0";
/// What the names of containers begin with, as the control plane knows them.
pub const CONTAINER_PREFIX: &str = labels::CONTAINER_PREFIX;
/// The label that carries a container's name.
pub const CONTAINER_LABEL: &str = labels::CONTAINER_LABEL;
/// The smallest MTU a network may ask for (IPv4's minimum datagram).
const MIN_MTU: u16 = 576;
/// Reservations without a container, and containers Docker no longer lists, are forgotten
/// after this long (Docker asks for an address, then creates the endpoint, then starts the
/// container: a moment in between may show neither).
pub const GRACE_SECS: u64 = 60;

/// Docker's part of [`Workloads`], as the state file keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerState {
    /// Networks by Docker's network id.
    #[serde(default)]
    networks: BTreeMap<String, DockerNetwork>,
    /// Addresses the IPAM driver handed out and Docker has not released.
    #[serde(default)]
    reserved: BTreeMap<IpAddr, Reservation>,
    /// Containers' endpoints by Docker's endpoint id.
    #[serde(default)]
    containers: BTreeMap<String, Container>,
}

/// A Docker network this host's plugin created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetwork {
    /// The MTU of its containers' interfaces.
    pub mtu: u16,
    /// Its `--subnet`, a part of the host's subnet; `None`: the whole subnet.
    #[serde(default)]
    pub pool: Option<IpNet>,
}

/// An address the IPAM driver handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The pool it came from.
    pub pool: String,
    /// When (Unix seconds).
    pub since: u64,
}

/// A container's endpoint on a wgmesh network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Docker's endpoint id.
    pub endpoint: String,
    /// Docker's network id.
    pub network: String,
    /// Its address, with the pool's prefix length.
    pub ip: IpNet,
    /// The host end of its veth pair.
    pub host_ifname: String,
    /// Docker's container id, once the Docker API showed it.
    #[serde(default)]
    pub id: String,
    /// The container's name, once known.
    #[serde(default)]
    pub name: String,
    /// Its labels for the policy (Docker labels that follow the label rules, and
    /// `container=<name>`), once known; none before.
    #[serde(default)]
    pub labels: Labels,
    /// Whether the Docker API has shown its labels yet. Until then it has none: a default-deny
    /// policy lets nothing reach it or leave it.
    #[serde(default)]
    pub labels_known: bool,
    /// When the endpoint was created (Unix seconds).
    pub created: u64,
}

impl Container {
    /// The name the control plane knows it by: unique on its host, stable for its life.
    pub fn report_name(&self) -> String {
        format!("{CONTAINER_PREFIX}{}", short(&self.endpoint))
    }
}

/// What the Docker API says about an endpoint: the container that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointOwner {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Its Docker labels, as given.
    pub labels: BTreeMap<String, String>,
}

/// The answer to `RequestPool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAnswer {
    /// The pool's id.
    pub id: String,
    /// The pool Docker is told.
    pub pool: String,
    /// The gateway, a CIDR.
    pub gateway: String,
}

/// What `CreateEndpoint` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointPlan {
    /// Create the container's veth pair, then record this.
    Create(Container, u16),
    /// The endpoint exists already with this address (Docker asked twice).
    Exists(Container),
}

/// Why a plugin call is refused: each message is shown to the user by Docker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    /// `--ipv6`, or an IPv6 pool.
    #[error("wgmesh's Docker networks are IPv4 only: drop --ipv6")]
    Ipv6,
    /// The host's subnet is IPv6.
    #[error("this host's overlay subnet {subnet} is IPv6, and Docker needs IPv4 addresses: use wgmesh's Docker networks in an IPv4 cluster")]
    HostSubnetIpv6 {
        /// The host's subnet.
        subnet: IpNet,
    },
    /// `--subnet` is not an IPv4 prefix.
    #[error("--subnet {text:?} is not an IPv4 prefix such as 10.42.1.0/24")]
    BadPool {
        /// What was given.
        text: String,
    },
    /// `--subnet` outside the host's subnet (or overlapping more than it, like the cluster CIDR).
    #[error("--subnet {pool} is not inside this host's subnet {subnet}: give no --subnet (containers then get addresses of {subnet}) or a part of {subnet}")]
    PoolOutside {
        /// What was given.
        pool: IpNet,
        /// The host's subnet.
        subnet: IpNet,
    },
    /// `--ip-range`.
    #[error("--ip-range is not supported by wgmesh: use --subnet with a part of this host's subnet {subnet}")]
    IpRange {
        /// The host's subnet.
        subnet: IpNet,
    },
    /// `--ipam-opt`.
    #[error("unknown --ipam-opt {key:?}: wgmesh's IPAM driver takes none")]
    IpamOption {
        /// The option.
        key: String,
    },
    /// A pool id this IPAM did not give.
    #[error("unknown address pool {id:?}: not one of wgmesh's IPAM driver")]
    UnknownPool {
        /// The id.
        id: String,
    },
    /// `--gateway` other than the bridge's address.
    #[error("the gateway of a wgmesh network is this host's bridge address {gateway}, not {asked}: drop --gateway")]
    Gateway {
        /// What was asked.
        asked: String,
        /// The bridge's address.
        gateway: IpAddr,
    },
    /// `--ip` is not an address.
    #[error("--ip {text:?} is not an IPv4 address")]
    BadAddress {
        /// What was given.
        text: String,
    },
    /// Allocation failed.
    #[error(transparent)]
    Address(#[from] WorkloadError),
    /// `-o` with a key we do not know.
    #[error("unknown driver option {key:?}: wgmesh understands only {MTU_OPTION}")]
    DriverOption {
        /// The option.
        key: String,
    },
    /// A bad MTU.
    #[error(
        "{MTU_OPTION}={value:?} is not valid: use {MIN_MTU} to {max} (this host's overlay MTU)"
    )]
    Mtu {
        /// What was given.
        value: String,
        /// The overlay's MTU.
        max: u16,
    },
    /// `--aux-address`.
    #[error("--aux-address {name:?} is not supported by wgmesh: every address of the host's subnet is for its containers and namespaces")]
    AuxAddress {
        /// The name given to it.
        name: String,
    },
    /// The network's pool is not ours.
    #[error("the network's pool {pool} is not from wgmesh's IPAM driver: create the network with --ipam-driver wgmesh")]
    NotOurIpam {
        /// The pool.
        pool: String,
    },
    /// A network this agent never created.
    #[error("network {} was not created by this host's wgmesh agent (was its state directory lost?): remove the network and create it again", short(.id))]
    UnknownNetwork {
        /// Its id.
        id: String,
    },
    /// An endpoint without an address of ours.
    #[error("the endpoint has no IPv4 address from wgmesh's IPAM driver (got {text:?}): create the network with --ipam-driver wgmesh")]
    EndpointAddress {
        /// What it had.
        text: String,
    },
    /// An endpoint with an IPv6 address.
    #[error("wgmesh's Docker networks are IPv4 only: the endpoint has the IPv6 address {text}")]
    EndpointIpv6 {
        /// The address.
        text: String,
    },
    /// An address wgmesh's IPAM did not hand out (or has released).
    #[error("{ip} was not handed out by wgmesh's IPAM driver (or was released already): create the network with --ipam-driver wgmesh")]
    NotReserved {
        /// The address.
        ip: IpAddr,
    },
    /// `--mac-address`.
    #[error("wgmesh sets each container's MAC address from its IP address ({ours} for this one): drop --mac-address {asked}")]
    Mac {
        /// What was asked.
        asked: String,
        /// What wgmesh sets.
        ours: String,
    },
    /// An endpoint id that is not Docker's hex.
    #[error("endpoint id {id:?} is not hexadecimal (at least 12 digits)")]
    BadEndpointId {
        /// The id.
        id: String,
    },
    /// An endpoint created twice with different addresses.
    #[error("endpoint {} exists already with {ip}", short(.id))]
    EndpointExists {
        /// Its id.
        id: String,
        /// Its address.
        ip: IpNet,
    },
    /// `Join` of an endpoint never created.
    #[error("endpoint {} is not known to this host's wgmesh agent", short(.id))]
    UnknownEndpoint {
        /// Its id.
        id: String,
    },
}

/// The first 12 characters of a Docker id, as `docker` shows ids.
pub fn short(id: &str) -> &str {
    let mut end = id.len().min(12);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The host end of an endpoint's veth pair: `wgmd` and the first 10 hex digits of its id.
pub fn host_ifname_for_endpoint(endpoint: &str) -> Result<String, DockerError> {
    let hex = endpoint
        .get(..10)
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    match hex {
        Some(hex) if endpoint.len() >= 12 => Ok(format!("wgmd{}", hex.to_ascii_lowercase())),
        _ => Err(DockerError::BadEndpointId {
            id: endpoint.chars().take(80).collect(),
        }),
    }
}

/// A container's labels for the policy: its Docker labels that follow the label rules (others
/// cannot be named by a selector either), never `host`, and `container=<name>` (when the name
/// is a valid label value), within [`MAX_LABELS`].
pub fn container_labels(name: &str, docker: &BTreeMap<String, String>) -> Labels {
    let mut out: Labels = docker
        .iter()
        .filter(|(k, v)| {
            k.as_str() != HOST_LABEL
                && k.as_str() != CONTAINER_LABEL
                && labels::check_label(k, v).is_ok()
        })
        .take(MAX_LABELS - 1)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if labels::check_value(name).is_ok() && !name.is_empty() {
        out.insert(CONTAINER_LABEL.to_owned(), name.to_owned());
    }
    out
}

impl DockerState {
    /// Nothing Docker-made.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.reserved.is_empty() && self.containers.is_empty()
    }

    /// Only what lies inside `subnet` (the host's subnet changed: the rest is gone).
    pub fn within(mut self, subnet: IpNet) -> Self {
        self.reserved.retain(|ip, _| subnet.contains(ip));
        self.containers.retain(|_, c| subnet.contains(&c.ip.addr()));
        self.networks
            .retain(|_, n| n.pool.is_none_or(|p| subnet.contains(&p)));
        self
    }

    /// Who holds `ip`, if Docker's part does.
    pub fn holder(&self, ip: IpAddr) -> Option<String> {
        if let Some(c) = self.containers.values().find(|c| c.ip.addr() == ip) {
            return Some(if c.name.is_empty() {
                format!("container endpoint {}", short(&c.endpoint))
            } else {
                format!("container {}", c.name)
            });
        }
        self.reserved
            .contains_key(&ip)
            .then(|| "an address Docker's IPAM asked for".to_owned())
    }

    /// The containers as the control plane is told them.
    pub fn report(&self) -> impl Iterator<Item = WorkloadReport> + '_ {
        self.containers.values().map(|c| WorkloadReport {
            name: c.report_name(),
            ip: c.ip.addr(),
            labels: c.labels.clone(),
        })
    }
}

impl Workloads {
    /// The containers, by endpoint id.
    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        self.docker.containers.values()
    }

    /// The container with endpoint `endpoint`.
    pub fn container(&self, endpoint: &str) -> Option<&Container> {
        self.docker.containers.get(endpoint)
    }

    /// The network with Docker's id `id`.
    pub fn docker_network(&self, id: &str) -> Option<&DockerNetwork> {
        self.docker.networks.get(id)
    }

    fn ipv4_subnet(&self) -> Result<IpNet, DockerError> {
        match self.subnet {
            IpNet::V4(_) => Ok(self.subnet),
            IpNet::V6(_) => Err(DockerError::HostSubnetIpv6 {
                subnet: self.subnet,
            }),
        }
    }

    /// `RequestPool`: the whole host subnet without `--subnet`, else the part given.
    pub fn request_pool(&self, req: &RequestPool) -> Result<PoolAnswer, DockerError> {
        if req.v6 {
            return Err(DockerError::Ipv6);
        }
        let subnet = self.ipv4_subnet()?;
        if !req.sub_pool.is_empty() {
            return Err(DockerError::IpRange { subnet });
        }
        if let Some(key) = req.options.keys().next() {
            return Err(DockerError::IpamOption { key: key.clone() });
        }
        let gateway = self.gateway();
        if req.pool.is_empty() {
            return Ok(PoolAnswer {
                id: HOST_POOL.to_owned(),
                pool: ANY_POOL.to_owned(),
                gateway: format!("{gateway}/{}", subnet.prefix_len()),
            });
        }
        let pool = parse_pool(&req.pool)?;
        if !subnet.contains(&pool) {
            return Err(DockerError::PoolOutside { pool, subnet });
        }
        Ok(PoolAnswer {
            id: format!("wgmesh:{pool}"),
            pool: pool.to_string(),
            gateway: format!("{gateway}/{}", pool.prefix_len()),
        })
    }

    /// The addresses of the pool `id`, inside the host's subnet.
    fn pool_range(&self, id: &str) -> Result<IpNet, DockerError> {
        let subnet = self.ipv4_subnet()?;
        if id == HOST_POOL {
            return Ok(subnet);
        }
        let unknown = || DockerError::UnknownPool { id: id.to_owned() };
        let pool = id
            .strip_prefix("wgmesh:")
            .and_then(|p| p.parse::<IpNet>().ok())
            .ok_or_else(unknown)?;
        if subnet.contains(&pool) {
            Ok(pool)
        } else {
            Err(DockerError::PoolOutside { pool, subnet })
        }
    }

    /// `RequestAddress`: the gateway (the bridge's address, not reserved), or `--ip`, or the
    /// lowest free address of the pool, reserved from `now` until Docker releases it.
    pub fn request_address(
        &mut self,
        req: &AddressRequest,
        now: u64,
    ) -> Result<IpNet, DockerError> {
        let range = self.pool_range(&req.pool_id)?;
        let gateway = self.gateway();
        let with_prefix = |ip: IpAddr| IpNet::new(ip, range.prefix_len()).expect("valid prefix");
        if req.for_gateway() {
            if req.address.is_empty() || req.address.parse::<IpAddr>() == Ok(gateway) {
                return Ok(with_prefix(gateway));
            }
            return Err(DockerError::Gateway {
                asked: req.address.clone(),
                gateway,
            });
        }
        let wanted = if req.address.is_empty() {
            None
        } else {
            match req.address.parse::<Ipv4Addr>() {
                Ok(ip) => Some(IpAddr::V4(ip)),
                Err(_) => {
                    return Err(DockerError::BadAddress {
                        text: req.address.chars().take(80).collect(),
                    })
                }
            }
        };
        let ip = self.free_in(range, wanted)?;
        self.docker.reserved.insert(
            ip,
            Reservation {
                pool: req.pool_id.clone(),
                since: now,
            },
        );
        Ok(with_prefix(ip))
    }

    /// `ReleaseAddress`: frees the reservation of `address`, unless a container still has it.
    /// Whether anything was freed (unknown addresses are not an error: Docker repeats
    /// releases).
    pub fn release_address(&mut self, address: &str) -> bool {
        let Ok(ip) = address.parse::<IpAddr>() else {
            return false;
        };
        if self.docker.containers.values().any(|c| c.ip.addr() == ip) {
            return false;
        }
        self.docker.reserved.remove(&ip).is_some()
    }

    /// `CreateNetwork`: checks the options and the pool and says what to record.
    pub fn plan_network(
        &self,
        req: &CreateNetwork,
        overlay_mtu: u16,
    ) -> Result<DockerNetwork, DockerError> {
        if req.ipv6() {
            return Err(DockerError::Ipv6);
        }
        let subnet = self.ipv4_subnet()?;
        let mut mtu = overlay_mtu;
        for (key, value) in req.generic_options() {
            if key != MTU_OPTION {
                return Err(DockerError::DriverOption { key });
            }
            mtu = match value.trim().parse::<u16>() {
                Ok(v) if (MIN_MTU..=overlay_mtu).contains(&v) => v,
                _ => {
                    return Err(DockerError::Mtu {
                        value,
                        max: overlay_mtu,
                    })
                }
            };
        }
        let mut pool = None;
        for data in &req.ipv4_data {
            if data.address_space != ADDRESS_SPACE {
                return Err(DockerError::NotOurIpam {
                    pool: data.pool.clone(),
                });
            }
            if let Some(name) = data.aux_addresses.keys().next() {
                // Docker reserves them with plain address requests, which nothing would hold.
                return Err(DockerError::AuxAddress { name: name.clone() });
            }
            if data.pool == ANY_POOL {
                continue;
            }
            let p = data
                .pool
                .parse::<IpNet>()
                .ok()
                .filter(|p| subnet.contains(p))
                .ok_or_else(|| DockerError::NotOurIpam {
                    pool: data.pool.clone(),
                })?;
            pool = Some(p);
        }
        Ok(DockerNetwork { mtu, pool })
    }

    /// Records the network `id`.
    pub fn insert_network(&mut self, id: &str, network: DockerNetwork) {
        self.docker.networks.insert(id.to_owned(), network);
    }

    /// Forgets the network `id`.
    pub fn remove_network(&mut self, id: &str) -> Option<DockerNetwork> {
        self.docker.networks.remove(id)
    }

    /// `CreateEndpoint`: the endpoint's address must be one this IPAM reserved on a network
    /// this plugin created; the container's MAC is the agent's.
    pub fn plan_endpoint(
        &self,
        req: &CreateEndpoint,
        now: u64,
    ) -> Result<EndpointPlan, DockerError> {
        let network = self.docker.networks.get(&req.network_id).ok_or_else(|| {
            DockerError::UnknownNetwork {
                id: req.network_id.clone(),
            }
        })?;
        let host_ifname = host_ifname_for_endpoint(&req.endpoint_id)?;
        let i = &req.interface;
        if !i.address_ipv6.is_empty() {
            return Err(DockerError::EndpointIpv6 {
                text: i.address_ipv6.clone(),
            });
        }
        let Ok(ip @ IpNet::V4(_)) = i.address.parse::<IpNet>() else {
            return Err(DockerError::EndpointAddress {
                text: i.address.chars().take(80).collect(),
            });
        };
        if let Some(c) = self.docker.containers.get(&req.endpoint_id) {
            return if c.ip == ip {
                Ok(EndpointPlan::Exists(c.clone()))
            } else {
                Err(DockerError::EndpointExists {
                    id: req.endpoint_id.clone(),
                    ip: c.ip,
                })
            };
        }
        if !self.docker.reserved.contains_key(&ip.addr()) {
            return Err(DockerError::NotReserved { ip: ip.addr() });
        }
        if let Some(holder) = self
            .docker
            .containers
            .values()
            .find(|c| c.ip.addr() == ip.addr())
        {
            return Err(WorkloadError::InUse {
                ip: ip.addr(),
                holder: format!("container endpoint {}", short(&holder.endpoint)),
            }
            .into());
        }
        let ours = format_mac(host::workload_mac(ip.addr()));
        if !i.mac_address.is_empty() && !i.mac_address.eq_ignore_ascii_case(&ours) {
            return Err(DockerError::Mac {
                asked: i.mac_address.clone(),
                ours,
            });
        }
        let container = Container {
            endpoint: req.endpoint_id.clone(),
            network: req.network_id.clone(),
            ip,
            host_ifname,
            id: String::new(),
            name: String::new(),
            labels: Labels::new(),
            labels_known: false,
            created: now,
        };
        Ok(EndpointPlan::Create(container, network.mtu))
    }

    /// Records a container's endpoint.
    pub fn insert_container(&mut self, container: Container) {
        self.docker
            .containers
            .insert(container.endpoint.clone(), container);
    }

    /// Forgets a container's endpoint (its address stays reserved until Docker releases it).
    pub fn remove_container(&mut self, endpoint: &str) -> Option<Container> {
        self.docker.containers.remove(endpoint)
    }

    /// Gives each container the id, name and labels the Docker API shows for its endpoint.
    /// Whether any changed.
    pub fn learn_owners(&mut self, owners: &BTreeMap<String, EndpointOwner>) -> bool {
        let mut changed = false;
        for c in self.docker.containers.values_mut() {
            let Some(o) = owners.get(&c.endpoint) else {
                continue;
            };
            let labels = container_labels(&o.name, &o.labels);
            if !c.labels_known || c.labels != labels || c.name != o.name || c.id != o.id {
                c.id.clone_from(&o.id);
                c.name.clone_from(&o.name);
                c.labels = labels;
                c.labels_known = true;
                changed = true;
            }
        }
        changed
    }

    /// The containers Docker no longer lists (`owners` is everything it lists) that are older
    /// than [`GRACE_SECS`]: their endpoints went while the agent could not hear of it.
    pub fn stale_containers(
        &self,
        owners: &BTreeMap<String, EndpointOwner>,
        now: u64,
    ) -> Vec<Container> {
        self.docker
            .containers
            .values()
            .filter(|c| {
                !owners.contains_key(&c.endpoint) && now.saturating_sub(c.created) >= GRACE_SECS
            })
            .cloned()
            .collect()
    }

    /// Frees reservations no container has that are older than [`GRACE_SECS`] and not among
    /// `listed` (the addresses Docker shows for its containers); returns them.
    pub fn expire_reservations(&mut self, listed: &[IpAddr], now: u64) -> Vec<IpAddr> {
        let held: Vec<IpAddr> = self
            .docker
            .containers
            .values()
            .map(|c| c.ip.addr())
            .collect();
        let expired: Vec<IpAddr> = self
            .docker
            .reserved
            .iter()
            .filter(|(ip, r)| {
                !held.contains(ip)
                    && !listed.contains(ip)
                    && now.saturating_sub(r.since) >= GRACE_SECS
            })
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &expired {
            self.docker.reserved.remove(ip);
        }
        expired
    }

    /// The reservations, by address.
    pub fn reservations(&self) -> impl Iterator<Item = (&IpAddr, &Reservation)> {
        self.docker.reserved.iter()
    }
}

fn parse_pool(text: &str) -> Result<IpNet, DockerError> {
    match text.parse::<IpNet>() {
        Ok(pool @ IpNet::V4(_)) if pool.trunc() == pool => Ok(pool),
        _ => Err(DockerError::BadPool {
            text: text.chars().take(80).collect(),
        }),
    }
}

#[cfg(test)]
mod tests;
