//! Host subnets: [`Ipam`] carves the cluster CIDR into equal subnets of `host_prefix` bits and
//! gives each host the lowest free one.
//!
//! Pure, no I/O. The allocation table is rebuilt from the registry's host records when the
//! store is replayed, so a subnet is never given to two hosts as long as the registry's own
//! invariants hold ([`Ipam::reserve`] refuses a subnet that is taken).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use wgmesh_config::control::{MAX_HOST_PREFIX_V4, MAX_HOST_PREFIX_V6};

use crate::ids::HostId;

/// Why a subnet could not be allocated or reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every subnet of the cluster CIDR is taken.
    #[error("the cluster CIDR {cidr} has no free /{prefix} left")]
    Exhausted {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The host prefix length.
        prefix: u8,
    },
    /// `host_prefix` is shorter than the cluster CIDR's own prefix.
    #[error("host_prefix /{prefix} is shorter than the cluster CIDR {cidr}; use /{} or longer", cidr.prefix_len())]
    PrefixTooShort {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The host prefix length.
        prefix: u8,
    },
    /// `host_prefix` leaves no room for a gateway and a workload.
    #[error("host_prefix /{prefix} is too long for {cidr}; use /{max} or shorter")]
    PrefixTooLong {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The host prefix length.
        prefix: u8,
        /// The longest accepted host prefix for this address family.
        max: u8,
    },
    /// The cluster CIDR has host bits set (`10.42.1.0/16` instead of `10.42.0.0/16`).
    #[error("the cluster CIDR {cidr} has host bits set; did you mean {}?", cidr.trunc())]
    HostBitsSet {
        /// The cluster CIDR as given.
        cidr: IpNet,
    },
    /// A subnet to reserve is not one of the cluster's host subnets.
    #[error("{subnet} is not a /{prefix} of the cluster CIDR {cidr}")]
    NotInNetwork {
        /// The subnet.
        subnet: IpNet,
        /// The cluster CIDR.
        cidr: IpNet,
        /// The host prefix length.
        prefix: u8,
    },
    /// A subnet to reserve already belongs to a host.
    #[error("{subnet} is already allocated to host {owner}")]
    AlreadyAllocated {
        /// The subnet.
        subnet: IpNet,
        /// The host holding it.
        owner: HostId,
    },
}

/// The host-subnet allocator of one cluster CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    cidr: IpNet,
    prefix: u8,
    allocated: BTreeMap<IpNet, HostId>,
}

impl Ipam {
    /// An allocator with nothing allocated. Fails when `cidr` has host bits set or
    /// `host_prefix` does not fit it.
    pub fn new(cidr: IpNet, host_prefix: u8) -> Result<Self, IpamError> {
        if cidr.trunc() != cidr {
            return Err(IpamError::HostBitsSet { cidr });
        }
        let max = match cidr {
            IpNet::V4(_) => MAX_HOST_PREFIX_V4,
            IpNet::V6(_) => MAX_HOST_PREFIX_V6,
        };
        if host_prefix > max {
            return Err(IpamError::PrefixTooLong {
                cidr,
                prefix: host_prefix,
                max,
            });
        }
        if host_prefix < cidr.prefix_len() {
            return Err(IpamError::PrefixTooShort {
                cidr,
                prefix: host_prefix,
            });
        }
        Ok(Self {
            cidr,
            prefix: host_prefix,
            allocated: BTreeMap::new(),
        })
    }

    /// The cluster CIDR.
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The prefix length of every host subnet.
    pub fn host_prefix(&self) -> u8 {
        self.prefix
    }

    /// How many host subnets the cluster CIDR holds (saturating at `u128::MAX`).
    pub fn capacity(&self) -> u128 {
        let bits = u32::from(self.prefix - self.cidr.prefix_len());
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The allocated subnets and their owners, in address order.
    pub fn allocations(&self) -> &BTreeMap<IpNet, HostId> {
        &self.allocated
    }

    /// The host holding `subnet`, if any.
    pub fn owner(&self, subnet: &IpNet) -> Option<HostId> {
        self.allocated.get(subnet).copied()
    }

    /// The lowest free subnet, without allocating it.
    pub fn lowest_free(&self) -> Result<IpNet, IpamError> {
        let mut next: u128 = 0;
        for subnet in self.allocated.keys() {
            let index = self.index(subnet);
            if index == next {
                next += 1;
            } else if index > next {
                break;
            }
        }
        if next >= self.capacity() {
            return Err(IpamError::Exhausted {
                cidr: self.cidr,
                prefix: self.prefix,
            });
        }
        Ok(self.subnet_at(next))
    }

    /// Allocates the lowest free subnet to `owner`.
    pub fn allocate(&mut self, owner: HostId) -> Result<IpNet, IpamError> {
        let subnet = self.lowest_free()?;
        self.allocated.insert(subnet, owner);
        Ok(subnet)
    }

    /// Checks that `subnet` could be reserved for `owner` (see [`Ipam::reserve`]).
    pub fn check_reserve(&self, subnet: &IpNet, owner: HostId) -> Result<(), IpamError> {
        if subnet.prefix_len() != self.prefix
            || subnet.trunc() != *subnet
            || !self.cidr.contains(subnet)
        {
            return Err(IpamError::NotInNetwork {
                subnet: *subnet,
                cidr: self.cidr,
                prefix: self.prefix,
            });
        }
        match self.allocated.get(subnet) {
            Some(&held) if held != owner => Err(IpamError::AlreadyAllocated {
                subnet: *subnet,
                owner: held,
            }),
            _ => Ok(()),
        }
    }

    /// Records that `owner` holds `subnet` (when replaying the store). Reserving a subnet the
    /// same owner already holds is a no-op.
    pub fn reserve(&mut self, subnet: IpNet, owner: HostId) -> Result<(), IpamError> {
        self.check_reserve(&subnet, owner)?;
        self.allocated.insert(subnet, owner);
        Ok(())
    }

    /// Frees `subnet`; returns who held it.
    pub fn release(&mut self, subnet: &IpNet) -> Option<HostId> {
        self.allocated.remove(subnet)
    }

    /// The position of a subnet (known to be inside the CIDR) among the host subnets.
    fn index(&self, subnet: &IpNet) -> u128 {
        let shift = self.host_bits();
        let offset = addr_bits(subnet.network()) - addr_bits(self.cidr.network());
        offset.checked_shr(shift).unwrap_or(0)
    }

    fn subnet_at(&self, index: u128) -> IpNet {
        let base = addr_bits(self.cidr.network());
        let offset = index.checked_shl(self.host_bits()).unwrap_or(0);
        let bits = base + offset;
        let addr = match self.cidr {
            // The sum stays inside the CIDR, so it fits the address family.
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
        };
        // The prefix was validated against the family in `new`.
        IpNet::new_assert(addr, self.prefix)
    }

    /// Address bits below the host prefix.
    fn host_bits(&self) -> u32 {
        u32::from(self.cidr.max_prefix_len() - self.prefix)
    }
}

fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_in_order_and_reused_after_release() {
        let mut ipam = Ipam::new(net("10.42.0.0/16"), 24).unwrap();
        assert_eq!(ipam.capacity(), 256);
        assert_eq!(ipam.allocate(HostId(1)), Ok(net("10.42.0.0/24")));
        assert_eq!(ipam.allocate(HostId(2)), Ok(net("10.42.1.0/24")));
        assert_eq!(ipam.allocate(HostId(3)), Ok(net("10.42.2.0/24")));
        assert_eq!(ipam.release(&net("10.42.1.0/24")), Some(HostId(2)));
        assert_eq!(ipam.allocate(HostId(4)), Ok(net("10.42.1.0/24")));
        assert_eq!(ipam.allocate(HostId(5)), Ok(net("10.42.3.0/24")));
    }

    #[test]
    fn ipv6_works() {
        let mut ipam = Ipam::new(net("fd42::/48"), 64).unwrap();
        assert_eq!(ipam.allocate(HostId(1)), Ok(net("fd42::/64")));
        assert_eq!(ipam.allocate(HostId(2)), Ok(net("fd42:0:0:1::/64")));
        // A huge space: capacity does not overflow.
        let big = Ipam::new(net("::/0"), 126).unwrap();
        assert_eq!(big.capacity(), 1u128 << 126);
    }

    #[test]
    fn bad_prefixes_are_refused() {
        let cidr = net("10.42.0.0/16");
        assert_eq!(
            Ipam::new(cidr, 8),
            Err(IpamError::PrefixTooShort { cidr, prefix: 8 })
        );
        let err = Ipam::new(cidr, 31).unwrap_err();
        assert_eq!(
            err,
            IpamError::PrefixTooLong {
                cidr,
                prefix: 31,
                max: 30
            }
        );
        assert_eq!(
            err.to_string(),
            "host_prefix /31 is too long for 10.42.0.0/16; use /30 or shorter"
        );
        assert_eq!(
            Ipam::new(net("10.42.1.0/16"), 24).unwrap_err().to_string(),
            "the cluster CIDR 10.42.1.0/16 has host bits set; did you mean 10.42.0.0/16?"
        );
        // host_prefix equal to the CIDR: exactly one host.
        let mut one = Ipam::new(net("10.42.0.0/24"), 24).unwrap();
        assert!(one.allocate(HostId(1)).is_ok());
        assert_eq!(
            one.allocate(HostId(2)).unwrap_err().to_string(),
            "the cluster CIDR 10.42.0.0/24 has no free /24 left"
        );
    }

    #[test]
    fn reserve_checks_membership_and_owner() {
        let mut ipam = Ipam::new(net("10.42.0.0/16"), 24).unwrap();
        ipam.reserve(net("10.42.5.0/24"), HostId(1)).unwrap();
        ipam.reserve(net("10.42.5.0/24"), HostId(1)).unwrap();
        assert_eq!(
            ipam.reserve(net("10.42.5.0/24"), HostId(2)),
            Err(IpamError::AlreadyAllocated {
                subnet: net("10.42.5.0/24"),
                owner: HostId(1)
            })
        );
        for bad in ["10.43.0.0/24", "10.42.0.0/25", "10.42.0.0/16"] {
            assert!(matches!(
                ipam.reserve(net(bad), HostId(3)),
                Err(IpamError::NotInNetwork { .. })
            ));
        }
        assert_eq!(ipam.allocate(HostId(4)), Ok(net("10.42.0.0/24")));
    }

    /// One step of a random allocator workload.
    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        /// Release the n-th allocated subnet (modulo the count).
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![3 => Just(Op::Allocate), 1 => any::<usize>().prop_map(Op::Release)]
    }

    /// A small cluster CIDR (v4 or v6) and a host prefix 0..=4 bits longer.
    fn small_ipam() -> impl Strategy<Value = Ipam> {
        let v4 = (any::<u32>(), 8u8..=26, 0u8..=4).prop_map(|(a, len, extra)| {
            let cidr = IpNet::new_assert(IpAddr::V4(Ipv4Addr::from(a)), len).trunc();
            Ipam::new(cidr, len + extra).unwrap()
        });
        let v6 = (any::<u128>(), 16u8..=120, 0u8..=4).prop_map(|(a, len, extra)| {
            let cidr = IpNet::new_assert(IpAddr::V6(Ipv6Addr::from(a)), len).trunc();
            Ipam::new(cidr, len + extra).unwrap()
        });
        prop_oneof![v4, v6]
    }

    proptest! {
        #[test]
        fn allocations_are_unique_and_inside(mut ipam in small_ipam(), ops in prop::collection::vec(op(), 0..64)) {
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Allocate => {
                        next += 1;
                        match ipam.allocate(HostId(next)) {
                            Ok(subnet) => {
                                prop_assert!(ipam.cidr().contains(&subnet));
                                prop_assert_eq!(subnet.prefix_len(), ipam.host_prefix());
                                prop_assert_eq!(subnet.trunc(), subnet);
                            }
                            Err(IpamError::Exhausted { .. }) => {
                                prop_assert_eq!(ipam.allocations().len() as u128, ipam.capacity());
                            }
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::Release(n) => {
                        let held: Vec<IpNet> = ipam.allocations().keys().copied().collect();
                        if !held.is_empty() {
                            let subnet = held[n % held.len()];
                            prop_assert!(ipam.release(&subnet).is_some());
                            // Release then allocate reuses: the freed subnet is free again and
                            // nothing lower is.
                            let lowest = ipam.lowest_free().unwrap();
                            prop_assert!(lowest <= subnet);
                        }
                    }
                }
                // No subnet twice, and no two overlapping.
                let subnets: BTreeSet<IpNet> = ipam.allocations().keys().copied().collect();
                prop_assert_eq!(subnets.len(), ipam.allocations().len());
                let owners: BTreeSet<HostId> = ipam.allocations().values().copied().collect();
                prop_assert_eq!(owners.len(), ipam.allocations().len());
            }
        }

        #[test]
        fn full_cidr_gives_exhausted(mut ipam in small_ipam()) {
            let capacity = ipam.capacity();
            let mut seen = BTreeSet::new();
            for n in 0..capacity {
                let subnet = ipam.allocate(HostId(n as u64)).unwrap();
                prop_assert!(seen.insert(subnet));
            }
            prop_assert_eq!(
                ipam.allocate(HostId(u64::MAX)),
                Err(IpamError::Exhausted { cidr: ipam.cidr(), prefix: ipam.host_prefix() })
            );
            // Every subnet of the CIDR was handed out, in address order.
            let all: Vec<IpNet> = ipam.cidr().subnets(ipam.host_prefix()).unwrap().collect();
            prop_assert_eq!(seen.into_iter().collect::<Vec<_>>(), all);
        }

        #[test]
        fn release_then_allocate_reuses(mut ipam in small_ipam(), pick in any::<prop::sample::Index>()) {
            let capacity = ipam.capacity();
            for n in 0..capacity {
                ipam.allocate(HostId(n as u64)).unwrap();
            }
            let held: Vec<IpNet> = ipam.allocations().keys().copied().collect();
            let freed = held[pick.index(held.len())];
            ipam.release(&freed);
            prop_assert_eq!(ipam.allocate(HostId(u64::MAX)), Ok(freed));
        }

        #[test]
        fn result_does_not_depend_on_reserve_order(ipam in small_ipam(), picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
            let all: Vec<IpNet> = ipam.cidr().subnets(ipam.host_prefix()).unwrap().collect();
            let chosen: Vec<IpNet> = picks.iter().map(|i| all[i.index(all.len())]).collect::<BTreeSet<_>>().into_iter().collect();
            let mut forward = ipam.clone();
            for (n, s) in chosen.iter().enumerate() {
                forward.reserve(*s, HostId(n as u64)).unwrap();
            }
            let mut backward = ipam.clone();
            for (n, s) in chosen.iter().enumerate().rev() {
                backward.reserve(*s, HostId(n as u64)).unwrap();
            }
            prop_assert_eq!(&forward, &backward);
            prop_assert_eq!(forward.lowest_free(), backward.lowest_free());
        }
    }
}
