//! The workloads attached to this host: which network namespace holds which address of the host's
//! subnet. Addresses come from the subnet, lowest free first, never the network address, the
//! gateway (first host address) or the IPv4 broadcast address, and never to two workloads.
//!
//! [`Workloads`] is pure; [`WorkloadStore`] keeps it in the state directory (write to a temporary
//! file, fsync, rename), versioned, so attachments survive agent restarts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::statefile::{JsonFile, StateFileError};

/// One attached workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The network namespace's name (as under /run/netns).
    pub netns: String,
    /// Its address, with the subnet's prefix length.
    pub ip: IpNet,
    /// The host-side veth.
    pub host_ifname: String,
}

/// Errors from address allocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    /// The namespace is attached already.
    #[error("network namespace {netns:?} is already attached with {ip}")]
    AlreadyAttached {
        /// The namespace.
        netns: String,
        /// Its address.
        ip: IpNet,
    },
    /// The namespace is not attached.
    #[error("network namespace {netns:?} is not attached")]
    NotAttached {
        /// The namespace.
        netns: String,
    },
    /// The requested address is outside the subnet or reserved.
    #[error("{ip} is not a usable address of this host's subnet {subnet} (the network address, the gateway {gateway} and the broadcast address are reserved)")]
    NotAssignable {
        /// The address asked for.
        ip: IpAddr,
        /// The host's subnet.
        subnet: IpNet,
        /// The gateway.
        gateway: IpAddr,
    },
    /// The requested address belongs to another workload.
    #[error("{ip} is already used by network namespace {netns:?}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Who has it.
        netns: String,
    },
    /// No address is left.
    #[error("no free address left in {subnet}")]
    Exhausted {
        /// The host's subnet.
        subnet: IpNet,
    },
}

/// The attached workloads of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workloads {
    subnet: IpNet,
    by_netns: BTreeMap<String, Workload>,
}

impl Workloads {
    /// No workloads on `subnet`.
    pub fn new(subnet: IpNet) -> Self {
        Self {
            subnet,
            by_netns: BTreeMap::new(),
        }
    }

    /// The gateway: the subnet's first host address, held by the bridge.
    pub fn gateway(&self) -> IpAddr {
        gateway(self.subnet)
    }

    /// Allocates an address for `netns`: `wanted` if given and free, else the lowest free one.
    /// Does not record it; call [`Self::insert`] once the namespace is wired.
    pub fn allocate(&self, netns: &str, wanted: Option<IpAddr>) -> Result<IpNet, WorkloadError> {
        if let Some(w) = self.by_netns.get(netns) {
            return Err(WorkloadError::AlreadyAttached {
                netns: netns.into(),
                ip: w.ip,
            });
        }
        let addr = match wanted {
            Some(ip) => {
                if !self.assignable(ip) {
                    return Err(WorkloadError::NotAssignable {
                        ip,
                        subnet: self.subnet,
                        gateway: self.gateway(),
                    });
                }
                if let Some(w) = self.by_netns.values().find(|w| w.ip.addr() == ip) {
                    return Err(WorkloadError::InUse {
                        ip,
                        netns: w.netns.clone(),
                    });
                }
                ip
            }
            None => self
                .subnet
                .hosts()
                .find(|ip| {
                    self.assignable(*ip) && !self.by_netns.values().any(|w| w.ip.addr() == *ip)
                })
                .ok_or(WorkloadError::Exhausted {
                    subnet: self.subnet,
                })?,
        };
        Ok(IpNet::new(addr, self.subnet.prefix_len()).expect("prefix length of a valid subnet"))
    }

    /// Records a workload.
    pub fn insert(&mut self, workload: Workload) {
        self.by_netns.insert(workload.netns.clone(), workload);
    }

    /// Forgets a workload, freeing its address.
    pub fn remove(&mut self, netns: &str) -> Result<Workload, WorkloadError> {
        self.by_netns
            .remove(netns)
            .ok_or_else(|| WorkloadError::NotAttached {
                netns: netns.into(),
            })
    }

    /// The workload in `netns`.
    pub fn get(&self, netns: &str) -> Option<&Workload> {
        self.by_netns.get(netns)
    }

    /// All workloads, by namespace name.
    pub fn iter(&self) -> impl Iterator<Item = &Workload> {
        self.by_netns.values()
    }

    fn assignable(&self, ip: IpAddr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.gateway()
            && !(matches!(self.subnet, IpNet::V4(_)) && ip == self.subnet.broadcast())
    }
}

/// The first host address of `subnet`.
pub fn gateway(subnet: IpNet) -> IpAddr {
    // IPv4's `hosts()` leave out the network and broadcast addresses; IPv6's begin with the
    // network address, the subnet-router anycast address, which no host may use as its own.
    let skip = usize::from(subnet.addr().is_ipv6());
    subnet
        .hosts()
        .nth(skip)
        .expect("validated subnets have host addresses")
}

/// What the state file holds.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum StateFile {
    #[serde(rename = "1")]
    V1 { workloads: Vec<Workload> },
}

/// The workloads' file in the agent's state directory.
pub struct WorkloadStore {
    file: JsonFile,
}

impl WorkloadStore {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            file: JsonFile::new(state_dir.join("workloads.json"), "state file"),
        }
    }

    /// Loads the workloads; none when the file does not exist. Workloads outside `subnet` (the
    /// subnet changed) are dropped with a warning.
    pub fn load(&self, subnet: IpNet) -> Result<Workloads, StateFileError> {
        let file = self.file.load::<StateFile>()?;
        let workloads = file.map_or_else(Vec::new, |StateFile::V1 { workloads }| workloads);
        let mut out = Workloads::new(subnet);
        for w in workloads {
            if subnet.contains(&w.ip.addr()) {
                out.insert(w);
            } else {
                tracing::warn!(netns = %w.netns, ip = %w.ip, %subnet, "forgetting a workload outside the subnet");
            }
        }
        Ok(out)
    }

    /// Writes the workloads atomically.
    pub fn save(&self, workloads: &Workloads) -> Result<(), StateFileError> {
        let file = StateFile::V1 {
            workloads: workloads.iter().cloned().collect(),
        };
        self.file.save(&file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(netns: &str, ip: IpNet) -> Workload {
        Workload {
            netns: netns.into(),
            ip,
            host_ifname: format!("v-{netns}"),
        }
    }

    #[test]
    fn lowest_free_skips_network_gateway_and_taken() {
        let mut w = Workloads::new("10.42.1.0/24".parse().unwrap());
        assert_eq!(w.gateway(), "10.42.1.1".parse::<IpAddr>().unwrap());
        let a = w.allocate("a", None).unwrap();
        assert_eq!(a.to_string(), "10.42.1.2/24");
        w.insert(wl("a", a));
        let b = w.allocate("b", None).unwrap();
        assert_eq!(b.to_string(), "10.42.1.3/24");
        w.insert(wl("b", b));
        w.remove("a").unwrap();
        assert_eq!(w.allocate("c", None).unwrap().to_string(), "10.42.1.2/24");
    }

    #[test]
    fn ipv6_subnets_skip_the_subnet_router_anycast_address() {
        let mut w = Workloads::new("fd42:42:0:1::/64".parse().unwrap());
        assert_eq!(w.gateway(), "fd42:42:0:1::1".parse::<IpAddr>().unwrap());
        let a = w.allocate("a", None).unwrap();
        assert_eq!(a.to_string(), "fd42:42:0:1::2/64");
        w.insert(wl("a", a));
        let anycast = w.allocate("b", Some("fd42:42:0:1::".parse().unwrap()));
        assert!(anycast.is_err(), "{anycast:?}");
    }

    #[test]
    fn explicit_addresses_are_checked() {
        let mut w = Workloads::new("10.42.1.0/24".parse().unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            w.allocate("a", ip("10.42.1.77")).unwrap().to_string(),
            "10.42.1.77/24"
        );
        w.insert(wl("a", "10.42.1.77/24".parse().unwrap()));
        for bad in ["10.42.1.0", "10.42.1.1", "10.42.1.255", "10.42.2.5"] {
            assert!(matches!(
                w.allocate("b", ip(bad)),
                Err(WorkloadError::NotAssignable { .. })
            ));
        }
        assert!(matches!(
            w.allocate("b", ip("10.42.1.77")),
            Err(WorkloadError::InUse { .. })
        ));
        assert!(matches!(
            w.allocate("a", None),
            Err(WorkloadError::AlreadyAttached { .. })
        ));
        assert!(matches!(
            w.remove("zz"),
            Err(WorkloadError::NotAttached { .. })
        ));
    }

    #[test]
    fn exhaustion() {
        let mut w = Workloads::new("10.42.1.0/30".parse().unwrap());
        let a = w.allocate("a", None).unwrap();
        assert_eq!(a.to_string(), "10.42.1.2/30");
        w.insert(wl("a", a));
        assert!(matches!(
            w.allocate("b", None),
            Err(WorkloadError::Exhausted { .. })
        ));
    }

    #[test]
    fn store_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkloadStore::new(dir.path());
        let subnet: IpNet = "10.42.1.0/24".parse().unwrap();
        assert_eq!(store.load(subnet).unwrap(), Workloads::new(subnet));
        let mut w = Workloads::new(subnet);
        w.insert(wl("a", "10.42.1.2/24".parse().unwrap()));
        store.save(&w).unwrap();
        assert_eq!(store.load(subnet).unwrap(), w);
        // A changed subnet forgets addresses outside it.
        assert_eq!(
            store
                .load("10.42.9.0/24".parse().unwrap())
                .unwrap()
                .iter()
                .count(),
            0
        );
        std::fs::write(dir.path().join("workloads.json"), "{nope").unwrap();
        let err = store.load(subnet).unwrap_err().to_string();
        assert!(err.contains("workloads.json"), "{err}");
    }
}
