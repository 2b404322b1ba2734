//! The workloads attached to this host: which network namespace holds which address of the host's
//! subnet, and the labels it was attached with. Addresses come from the subnet, lowest free
//! first, never the network address, the gateway (first host address) or the IPv4 broadcast
//! address, and never to two workloads.
//!
//! An attach of a namespace that is attached already is a relabel ([`Workloads::plan_attach`]):
//! it keeps its address and veth and takes the labels given; one that asks for another address
//! is refused (detach first).
//!
//! [`Workloads`] is pure; [`WorkloadStore`] keeps it in the state directory (write to a temporary
//! file, fsync, rename), versioned, so attachments survive agent restarts. Files written before
//! labels existed load with no labels.
//!
//! Docker's containers share the same addresses ([`docker`]): the IPAM driver's reservations
//! and the containers' endpoints are never given to an `attach`, and the other way round. An
//! address a reported workload left is given to no one while it [`cooling`]s: the hosts'
//! policies still know it as the old workload's.

pub mod cooling;
pub mod docker;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_client::api::{WorkloadReport, WorkloadsBody};
use wgmesh_config::labels::Labels;

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
    /// Its labels, for the policy (checked by `wgmesh_config::labels::check_workload_labels`).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// What an attach does ([`Workloads::plan_attach`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachPlan {
    /// A namespace not attached yet: wire it with this address.
    Wire(IpNet),
    /// Attached already, with other labels: it keeps its address and veth, and takes the new
    /// labels.
    Relabel,
    /// Attached already, with these labels: nothing to do.
    Unchanged,
}

/// Errors from address allocation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    /// The namespace is attached already, with another address than the one asked for.
    #[error(
        "network namespace {netns:?} is already attached with {ip}; attach it again without \
         --ip (or with this address) to change its labels, or detach it first to give it \
         another address"
    )]
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
    #[error("{ip} is not a usable address of {subnet} (the network address, the gateway {gateway} and the broadcast address are reserved)")]
    NotAssignable {
        /// The address asked for.
        ip: IpAddr,
        /// The host's subnet.
        subnet: IpNet,
        /// The gateway.
        gateway: IpAddr,
    },
    /// The requested address belongs to another workload.
    #[error("{ip} is already used by {holder}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Who has it: `network namespace "w1"`, `container web1`, ...
        holder: String,
    },
    /// No address is left.
    #[error("no free address left in {subnet}")]
    Exhausted {
        /// The host's subnet.
        subnet: IpNet,
    },
}

/// The attached workloads of one host, and its Docker networks, address reservations and
/// containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workloads {
    subnet: IpNet,
    by_netns: BTreeMap<String, Workload>,
    docker: docker::DockerState,
    cooling: cooling::Cooling,
}

impl Workloads {
    /// No workloads on `subnet`.
    pub fn new(subnet: IpNet) -> Self {
        Self {
            subnet,
            by_netns: BTreeMap::new(),
            docker: docker::DockerState::default(),
            cooling: cooling::Cooling::default(),
        }
    }

    /// The gateway: the subnet's first host address, held by the bridge.
    pub fn gateway(&self) -> IpAddr {
        gateway(self.subnet)
    }

    /// What attaching `netns` with `wanted` and `labels` does: a namespace attached already
    /// keeps its address (asking for another one is refused) and its labels are replaced, so
    /// that an attach says the whole state wanted; a new one gets an address
    /// ([`Self::allocate`]). Changes nothing.
    pub fn plan_attach(
        &self,
        netns: &str,
        wanted: Option<IpAddr>,
        labels: &Labels,
    ) -> Result<AttachPlan, WorkloadError> {
        let Some(w) = self.by_netns.get(netns) else {
            return self.allocate(netns, wanted).map(AttachPlan::Wire);
        };
        if wanted.is_some_and(|ip| ip != w.ip.addr()) {
            return Err(WorkloadError::AlreadyAttached {
                netns: netns.into(),
                ip: w.ip,
            });
        }
        Ok(if w.labels == *labels {
            AttachPlan::Unchanged
        } else {
            AttachPlan::Relabel
        })
    }

    /// Gives the attached workload in `netns` these labels; returns the ones it had.
    pub fn relabel(&mut self, netns: &str, labels: Labels) -> Result<Labels, WorkloadError> {
        let w = self
            .by_netns
            .get_mut(netns)
            .ok_or_else(|| WorkloadError::NotAttached {
                netns: netns.into(),
            })?;
        Ok(std::mem::replace(&mut w.labels, labels))
    }

    /// The whole list, as the control plane is told it (name, address, labels; by namespace).
    pub fn report(&self) -> WorkloadsBody {
        let attached = self.iter().map(|w| WorkloadReport {
            name: w.netns.clone(),
            ip: w.ip.addr(),
            labels: w.labels.clone(),
        });
        WorkloadsBody {
            workloads: attached.chain(self.docker.report()).collect(),
        }
    }

    /// The list of report generation `generation` is `body`: the addresses that left the last
    /// one start to cool.
    pub fn published(&mut self, generation: u64, body: &WorkloadsBody) {
        let addresses = body.workloads.iter().map(|w| w.ip).collect();
        self.cooling.published(generation, addresses);
    }

    /// The control plane holds the list of generation `held` at `now` (Unix seconds): cooled
    /// addresses become free.
    pub fn settle(&mut self, held: u64, now: u64) {
        self.cooling.settle(held, now);
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
        let addr = self.free_in(self.subnet, wanted)?;
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

    /// `wanted` if it lies in `range`, is assignable and free, else the lowest free address of
    /// `range`; `range` lies inside the subnet.
    fn free_in(&self, range: IpNet, wanted: Option<IpAddr>) -> Result<IpAddr, WorkloadError> {
        match wanted {
            Some(ip) => {
                if !self.assignable(ip) || !range.contains(&ip) {
                    return Err(WorkloadError::NotAssignable {
                        ip,
                        subnet: range,
                        gateway: self.gateway(),
                    });
                }
                if let Some(holder) = self.holder(ip) {
                    return Err(WorkloadError::InUse { ip, holder });
                }
                Ok(ip)
            }
            None => range
                .hosts()
                .find(|ip| self.assignable(*ip) && self.holder(*ip).is_none())
                .ok_or(WorkloadError::Exhausted { subnet: range }),
        }
    }

    /// Who holds `ip`: an attached namespace, a container or a reservation of Docker's IPAM.
    fn holder(&self, ip: IpAddr) -> Option<String> {
        if let Some(w) = self.by_netns.values().find(|w| w.ip.addr() == ip) {
            return Some(format!("network namespace {:?}", w.netns));
        }
        self.docker.holder(ip).or_else(|| self.cooling.holder(ip))
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

/// What the state file holds. Files written before Docker's part existed load without it.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum StateFile {
    #[serde(rename = "1")]
    V1 {
        workloads: Vec<Workload>,
        #[serde(default, skip_serializing_if = "docker::DockerState::is_empty")]
        docker: docker::DockerState,
        #[serde(default, skip_serializing_if = "cooling::Cooling::is_empty")]
        cooling: cooling::Cooling,
    },
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
        let (workloads, docker, cooling) = file.map_or_else(
            Default::default,
            |StateFile::V1 {
                 workloads,
                 docker,
                 cooling,
             }| (workloads, docker, cooling),
        );
        let mut out = Workloads::new(subnet);
        out.docker = docker.within(subnet);
        out.cooling = cooling.restarted();
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
            docker: workloads.docker.clone(),
            cooling: workloads.cooling.clone(),
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
            labels: Labels::new(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
    fn an_address_a_reported_workload_left_is_given_to_no_one_until_it_cooled() {
        let mut w = Workloads::new("10.42.1.0/24".parse().unwrap());
        let a = w.allocate("a", None).unwrap();
        w.insert(wl("a", a));
        w.published(1, &w.report());
        w.settle(1, 100);
        w.remove("a").unwrap();
        w.published(2, &w.report());
        // The hosts' policies still know 10.42.1.2 as "a": the next workload gets another one.
        assert_eq!(w.allocate("b", None).unwrap().to_string(), "10.42.1.3/24");
        assert!(matches!(
            w.allocate("b", Some(a.addr())),
            Err(WorkloadError::InUse { .. })
        ));
        w.settle(2, 200);
        assert_eq!(w.allocate("b", None).unwrap().to_string(), "10.42.1.3/24");
        w.settle(2, 200 + cooling::COOL_SECS);
        assert_eq!(w.allocate("b", None).unwrap(), a);
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

    #[test]
    fn attaching_again_relabels_in_place_and_refuses_another_address() {
        let mut w = Workloads::new("10.42.1.0/24".parse().unwrap());
        let front = labels(&[("role", "frontend")]);
        let a = match w.plan_attach("a", None, &front).unwrap() {
            AttachPlan::Wire(a) => a,
            other => panic!("a new namespace is wired: {other:?}"),
        };
        w.insert(Workload {
            labels: front.clone(),
            ..wl("a", a)
        });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(w.plan_attach("a", None, &front), Ok(AttachPlan::Unchanged));
        assert_eq!(
            w.plan_attach("a", ip("10.42.1.2"), &front),
            Ok(AttachPlan::Unchanged),
            "its own address is no change"
        );
        let back = labels(&[("role", "backend")]);
        assert_eq!(w.plan_attach("a", None, &back), Ok(AttachPlan::Relabel));
        assert_eq!(
            w.plan_attach("a", None, &Labels::new()),
            Ok(AttachPlan::Relabel),
            "an attach without labels leaves it without labels"
        );
        let err = w.plan_attach("a", ip("10.42.1.9"), &back).unwrap_err();
        assert_eq!(
            err,
            WorkloadError::AlreadyAttached {
                netns: "a".into(),
                ip: a
            }
        );
        assert!(err.to_string().contains("detach it first"), "{err}");
        assert_eq!(w.relabel("a", back.clone()), Ok(front));
        assert_eq!(w.get("a").unwrap().labels, back);
        assert_eq!(w.get("a").unwrap().ip, a, "the address stays");
        assert!(w.relabel("zz", Labels::new()).is_err());
        assert_eq!(
            w.report(),
            WorkloadsBody {
                workloads: vec![WorkloadReport {
                    name: "a".into(),
                    ip: a.addr(),
                    labels: back,
                }]
            }
        );
    }

    #[test]
    fn labels_persist_and_files_without_labels_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkloadStore::new(dir.path());
        let subnet: IpNet = "10.42.1.0/24".parse().unwrap();
        // A file an agent wrote before workloads had labels.
        std::fs::write(
            dir.path().join("workloads.json"),
            r#"{"version":"1","workloads":[{"netns":"old","ip":"10.42.1.2/24","host_ifname":"v-old"}]}"#,
        )
        .unwrap();
        let mut w = store.load(subnet).unwrap();
        assert_eq!(w.get("old").unwrap().labels, Labels::new());
        w.relabel("old", labels(&[("app", "secure-app")])).unwrap();
        store.save(&w).unwrap();
        let again = store.load(subnet).unwrap();
        assert_eq!(again, w);
        assert_eq!(again.get("old").unwrap().labels["app"], "secure-app");
    }
}
