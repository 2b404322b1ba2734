//! The cluster's known endpoints and the addresses a selector stands for.
//!
//! An endpoint is a host's own traffic (its gateway address) or one of its workloads. Its label
//! set ([`endpoint_labels`]): the workload's labels over its host's, plus `host=<name>`. An
//! address that is no endpoint carries no labels, so only `{}` selects it.
//!
//! [`Endpoints`] indexes every endpoint by each label it carries, so a selector's endpoints are
//! the intersection of its labels' lists: the cost of a selector is the length of those lists,
//! never the number of endpoints times rules.

use std::collections::HashMap;
use std::net::IpAddr;

use wgmesh_config::labels::Labels;
use wgmesh_config::policy::{Selector, HOST_LABEL};

use crate::registry::{gateway, Host, Registry, Workload};

/// The label set of an endpoint: host `host`'s own traffic, or its `workload`.
pub fn endpoint_labels(host: &Host, workload: Option<&Workload>) -> Labels {
    let mut labels = host.labels.clone();
    if let Some(w) = workload {
        labels.extend(w.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    labels.insert(HOST_LABEL.to_owned(), host.name.to_string());
    labels
}

/// A set of hosts, by their position in the registry's host order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostSet(Vec<u64>);

impl HostSet {
    pub(crate) fn empty(hosts: usize) -> Self {
        Self(vec![0; hosts.div_ceil(64)])
    }

    pub(crate) fn all(hosts: usize) -> Self {
        let mut set = Self::empty(hosts);
        for i in 0..hosts {
            set.insert(i);
        }
        set
    }

    pub(crate) fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub(crate) fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    pub(crate) fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn union_with(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The members, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

/// Every known endpoint, sorted by address, and the index from label to endpoints.
#[derive(Debug)]
pub(crate) struct Endpoints<'r> {
    /// (address, position of its host in the registry's host order), sorted by address.
    list: Vec<(IpAddr, usize)>,
    /// For each label carried by some endpoint, the positions in `list` of those carrying it,
    /// ascending.
    index: HashMap<(&'r str, &'r str), Vec<u32>>,
}

impl<'r> Endpoints<'r> {
    /// The endpoints of `registry`: each host's gateway and workloads.
    pub(crate) fn new(registry: &'r Registry) -> Self {
        let mut found: Vec<(IpAddr, usize, &'r Host, Option<&'r Workload>)> = Vec::new();
        for (i, host) in registry.hosts().values().enumerate() {
            if let Some(gw) = gateway(host.subnet) {
                found.push((gw, i, host, None));
            }
            for w in registry.workloads_of(host.id) {
                found.push((w.ip, i, host, Some(w)));
            }
        }
        // Host subnets are disjoint and a host's addresses unique: no address twice.
        found.sort_by_key(|e| e.0);
        let mut index: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        for (pos, &(_, _, host, workload)) in found.iter().enumerate() {
            let pos = u32::try_from(pos).expect("fewer endpoints than u32::MAX");
            for label in labels_of(host, workload) {
                index.entry(label).or_default().push(pos);
            }
        }
        Self {
            list: found.iter().map(|&(addr, host, ..)| (addr, host)).collect(),
            index,
        }
    }

    /// The endpoints `selector` matches (not `{}`, which stands for every address), as
    /// (address, host position), ascending by address.
    pub(crate) fn select(&self, selector: &Selector) -> Vec<(IpAddr, usize)> {
        let mut lists = Vec::with_capacity(selector.0.len());
        for (k, v) in &selector.0 {
            match self.index.get(&(k.as_str(), v.as_str())) {
                Some(list) => lists.push(list.as_slice()),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        first
            .iter()
            .filter(|pos| rest.iter().all(|l| l.binary_search(pos).is_ok()))
            .map(|&pos| self.list[pos as usize])
            .collect()
    }
}

/// The labels of an endpoint, borrowed from the registry, each key once: the workload's own
/// labels, its host's labels it does not override, and `host=<name>`.
fn labels_of<'r>(
    host: &'r Host,
    workload: Option<&'r Workload>,
) -> impl Iterator<Item = (&'r str, &'r str)> {
    let own = workload.map(|w| &w.labels);
    let from_host = host
        .labels
        .iter()
        .filter(move |(k, _)| own.is_none_or(|o| !o.contains_key(*k)));
    own.into_iter()
        .flatten()
        .chain(from_host)
        .filter(|(k, _)| k.as_str() != HOST_LABEL)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([(HOST_LABEL, host.name.as_str())])
}
