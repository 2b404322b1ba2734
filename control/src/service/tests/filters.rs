//! The control plane never commits what an agent would refuse: a policy, or a workload report
//! under one, that makes some host's filter larger than [`HostFilter::check`] accepts is
//! refused, naming the host and the limit, and changes nothing.
//!
//! [`HostFilter::check`]: wgmesh_config::netmap::HostFilter::check

use std::net::{IpAddr, Ipv4Addr};

use wgmesh_client::api::{PolicyBody, WorkloadReport, WorkloadsBody};
use wgmesh_config::netmap::MAX_FILTER_NETS;

use super::*;
use crate::registry::MAX_WORKLOADS_PER_HOST;
use crate::store::MemStore;

/// A policy of `rules` allow rules from `app=x` to `{}`: each names every `app=x` address (none
/// adjacent, so none merge) and the cluster CIDR, and every host's filter holds all of them.
fn policy(rules: usize) -> PreparedPolicy {
    let mut text = String::from("default = \"deny\"\n");
    for i in 0..rules {
        text.push_str(&format!(
            "\n[[rule]]\nname = \"r{i}\"\nfrom = {{ app = \"x\" }}\nto = {{}}\nports = [\"tcp/80\"]\n"
        ));
    }
    PreparedPolicy::prepare(PolicyBody {
        text,
        origin: "wide.toml".into(),
    })
}

/// `count` workloads labelled `app=x` at every other address of `subnet`'s first (a /16's).
fn workloads(subnet: ipnet::IpNet, count: usize) -> WorkloadsBody {
    let IpAddr::V4(base) = subnet.network() else {
        unreachable!("the fixture's cluster is IPv4")
    };
    let base = u32::from(base);
    WorkloadsBody {
        workloads: (0..count as u32)
            .map(|i| WorkloadReport {
                name: format!("w{i}"),
                ip: IpAddr::V4(Ipv4Addr::from(base + 2 + 2 * i)),
                labels: [("app".to_owned(), "x".to_owned())].into(),
            })
            .collect(),
    }
}

/// host-a and host-b joined with /16 subnets; host-a reports `MAX_WORKLOADS_PER_HOST` `app=x`
/// workloads. Their callers.
fn cluster() -> (Fixture, Caller, Caller) {
    let mut f = fixture_in(Box::new(MemStore::new()), "10.0.0.0/8", 16);
    let t = token(&mut f, 3600, true);
    let a = join(&mut f, &t, "host-a", 1).unwrap();
    let b = join(&mut f, &t, "host-b", 2).unwrap();
    let host_a = f.control.authenticate(Some(&a.credential));
    let host_b = f.control.authenticate(Some(&b.credential));
    let full = workloads(a.netmap.host.subnet, MAX_WORKLOADS_PER_HOST);
    f.control
        .report_workloads(&host_a, "host-a", full, 1002, None)
        .unwrap();
    (f, host_a, host_b)
}

/// The most rules of [`policy`] whose filters stay within the limit with `addresses` `app=x`
/// addresses: each rule names them and the cluster CIDR.
fn most_rules(addresses: usize) -> usize {
    MAX_FILTER_NETS / (addresses + 1)
}

#[test]
fn a_policy_whose_filter_an_agent_would_refuse_is_refused_naming_host_and_limit() {
    let (mut f, _, _) = cluster();
    let before = f.control.revision();
    let fits = most_rules(MAX_WORKLOADS_PER_HOST);
    let e = f
        .control
        .apply_policy(&Caller::Admin, policy(fits + 1), 3, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::BadPolicy, "{}", e.message);
    let nets = (fits + 1) * (MAX_WORKLOADS_PER_HOST + 1);
    for needle in [
        "host host-a's filter would be refused by its agent".to_owned(),
        format!("name {nets} prefixes in all"),
        format!("at most {MAX_FILTER_NETS} (MAX_FILTER_NETS)"),
        "the policy is not applied".to_owned(),
    ] {
        assert!(
            e.message.contains(&needle),
            "{:?} lacks {needle:?}",
            e.message
        );
    }
    assert_eq!(
        f.control.revision(),
        before,
        "a refused apply changes nothing"
    );
    assert!(f.control.registry().policy().is_none());
    // One rule fewer fits, and every host's netmap is one its agent accepts.
    f.control
        .apply_policy(&Caller::Admin, policy(fits), 4, None)
        .unwrap();
    for name in ["host-a", "host-b"] {
        let id = f.control.registry().host_by_name(name).unwrap().id;
        let netmap = f.control.netmap_of(id);
        netmap.check().unwrap();
        assert_eq!(netmap.filter.unwrap().rules.len(), fits, "{name}");
    }
}

#[test]
fn a_workload_report_that_would_overfill_a_filter_is_refused_naming_the_limit() {
    let (mut f, _, host_b) = cluster();
    let fits = most_rules(MAX_WORKLOADS_PER_HOST);
    f.control
        .apply_policy(&Caller::Admin, policy(fits), 3, None)
        .unwrap();
    let before = f.control.revision();
    // host-b's 100 more `app=x` addresses would be in every rule of every host's filter.
    let subnet = f.control.registry().host_by_name("host-b").unwrap().subnet;
    let e = f
        .control
        .report_workloads(&host_b, "host-b", workloads(subnet, 100), 4, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::BadRequest, "{}", e.message);
    for needle in [
        "filter would be refused by its agent".to_owned(),
        format!("at most {MAX_FILTER_NETS} (MAX_FILTER_NETS)"),
        "the report is refused".to_owned(),
    ] {
        assert!(
            e.message.contains(&needle),
            "{:?} lacks {needle:?}",
            e.message
        );
    }
    assert_eq!(
        f.control.revision(),
        before,
        "a refused report changes nothing"
    );
    let b = f.control.registry().host_by_name("host-b").unwrap().id;
    assert!(f.control.registry().workloads_of(b).is_empty());
    // Workloads no rule selects grow no filter: that report is taken.
    let mut other = workloads(subnet, 100);
    for w in &mut other.workloads {
        w.labels = [("app".to_owned(), "y".to_owned())].into();
    }
    f.control
        .report_workloads(&host_b, "host-b", other, 5, None)
        .unwrap();
    assert_eq!(f.control.registry().workloads_of(b).len(), 100);
}
