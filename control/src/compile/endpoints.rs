//! The cluster's known endpoints and the addresses a rule's selector stands for.
//!
//! An endpoint is a host's own traffic (its gateway address) or one of its workloads. Its label
//! set ([`endpoint_labels`]): the workload's labels over its host's, plus `host=<name>`.
//!
//! An address of a host's subnet that is neither its gateway nor a registered workload (an
//! *unregistered address* of that host: a workload not reported yet, or a tampered host sending
//! from an address it was never given) is the host's for deny rules and no one's for allow
//! rules, so both kinds fail closed: a deny rule selecting the host by its host labels or
//! `host=<name>` covers it ([`Endpoints::denied`]: the host's whole subnet but its registered
//! workloads the selector does not match, whose own labels may override the host's), and only
//! `{}` allows it ([`Endpoints::allowed`]). An address outside every host's subnet carries no
//! labels.
//!
//! [`Endpoints`] indexes every endpoint, and every host, by each label it carries, so a
//! selector's endpoints are the intersection of its labels' lists: the cost of a selector is the
//! length of those lists (and of the selected hosts' endpoint lists), never the number of
//! endpoints times rules.
//!
//! Pure, no I/O.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use wgmesh_config::labels::Labels;
use wgmesh_config::policy::{Selector, HOST_LABEL};

use super::prefixes::{merge, merge_spans, without, Span};
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

/// What one side of a rule stands for.
#[derive(Debug, Clone)]
pub(crate) struct Selected {
    /// Its addresses as prefixes: sorted, disjoint, merged.
    pub(crate) nets: Vec<IpNet>,
    /// The hosts one of whose addresses it holds.
    pub(crate) hosts: HostSet,
}

/// Every known endpoint, sorted by address, every host's subnet, and the indexes from label to
/// endpoints and to hosts.
#[derive(Debug)]
pub(crate) struct Endpoints<'r> {
    /// (address, position of its host in the registry's host order), sorted by address.
    list: Vec<(IpAddr, usize)>,
    /// For each label carried by some endpoint, the positions in `list` of those carrying it,
    /// ascending.
    index: HashMap<(&'r str, &'r str), Vec<u32>>,
    /// Each host, by position: its subnet and the positions in `list` of its endpoints,
    /// ascending.
    hosts: Vec<(IpNet, Vec<u32>)>,
    /// For each label some host carries as a host (its host labels and `host=<name>`: what its
    /// gateway and unregistered addresses carry for deny rules), the positions of the hosts
    /// carrying it, ascending.
    host_index: HashMap<(&'r str, &'r str), Vec<u32>>,
}

impl<'r> Endpoints<'r> {
    /// The endpoints of `registry`: each host's gateway and workloads.
    pub(crate) fn new(registry: &'r Registry) -> Self {
        let mut found: Vec<(IpAddr, usize, &'r Host, Option<&'r Workload>)> = Vec::new();
        let mut hosts = Vec::with_capacity(registry.hosts().len());
        let mut host_index: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        for (i, host) in registry.hosts().values().enumerate() {
            if let Some(gw) = gateway(host.subnet) {
                found.push((gw, i, host, None));
            }
            for w in registry.workloads_of(host.id) {
                found.push((w.ip, i, host, Some(w)));
            }
            hosts.push((host.subnet, Vec::new()));
            let at = u32::try_from(i).expect("fewer hosts than u32::MAX");
            for label in labels_of(host, None) {
                host_index.entry(label).or_default().push(at);
            }
        }
        // Host subnets are disjoint and a host's addresses unique: no address twice.
        found.sort_by_key(|e| e.0);
        let mut index: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        for (pos, &(_, host_at, host, workload)) in found.iter().enumerate() {
            let pos = u32::try_from(pos).expect("fewer endpoints than u32::MAX");
            for label in labels_of(host, workload) {
                index.entry(label).or_default().push(pos);
            }
            hosts[host_at].1.push(pos);
        }
        Self {
            list: found.iter().map(|&(addr, host, ..)| (addr, host)).collect(),
            index,
            hosts,
            host_index,
        }
    }

    /// What `selector` (not `{}`, which stands for every address) stands for on an allow
    /// rule's side: the endpoints it matches, and no unregistered address.
    pub(crate) fn allowed(&self, selector: &Selector) -> Selected {
        let chosen = positions(&self.index, selector);
        let mut hosts = HostSet::empty(self.hosts.len());
        for &pos in &chosen {
            hosts.insert(self.list[pos as usize].1);
        }
        Selected {
            nets: merge(chosen.iter().map(|&pos| self.list[pos as usize].0)),
            hosts,
        }
    }

    /// What `selector` (not `{}`) stands for on a deny rule's side: the endpoints it matches,
    /// and the unregistered addresses of every host whose host labels it matches. For such a
    /// host that is its whole subnet but its registered workloads the selector does not match
    /// (their own labels override the host's); for any other host, only its matched
    /// endpoints.
    pub(crate) fn denied(&self, selector: &Selector) -> Selected {
        let chosen = positions(&self.index, selector);
        let mut matched = HostSet::empty(self.hosts.len());
        let mut spans = Vec::new();
        for h in positions(&self.host_index, selector) {
            let h = h as usize;
            matched.insert(h);
            let (subnet, own) = &self.hosts[h];
            let holes = own
                .iter()
                .filter(|pos| chosen.binary_search(pos).is_err())
                .map(|&pos| self.list[pos as usize].0);
            spans.extend(without(*subnet, holes));
        }
        let mut hosts = matched.clone();
        for &pos in &chosen {
            let (addr, h) = self.list[pos as usize];
            if !matched.contains(h) {
                spans.push(Span::addr(addr));
                hosts.insert(h);
            }
        }
        Selected {
            nets: merge_spans(spans),
            hosts,
        }
    }
}

/// The positions `index` lists under every label of `selector` (none for `{}`), ascending.
fn positions(index: &HashMap<(&str, &str), Vec<u32>>, selector: &Selector) -> Vec<u32> {
    let mut lists = Vec::with_capacity(selector.0.len());
    for (k, v) in &selector.0 {
        match index.get(&(k.as_str(), v.as_str())) {
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
        .copied()
        .filter(|pos| rest.iter().all(|l| l.binary_search(pos).is_ok()))
        .collect()
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
