//! The compiler at the benchmark size: 1,000 rules over 1,000 workloads on 50 hosts
//! compile in well under a second (release); debug builds check a tenth of it. A tenth of the
//! rules are denies by a host label that every other workload overrides: each gives every
//! host's subnet without those workloads, and the filters stay within what an agent accepts.

use std::time::{Duration, Instant};

use wgmesh_config::netmap::MAX_FILTER_NETS;
use wgmesh_config::policy::{Action, Policy};

use super::*;
use crate::registry::tests::policy::rule;
use crate::registry::tests::workloads::workload;
use crate::registry::tests::{join, registry};

#[test]
fn a_thousand_rules_over_a_thousand_workloads_compile_quickly() {
    let (hosts, workloads, rules, budget) = if cfg!(debug_assertions) {
        (10, 100, 100, Duration::from_secs(20))
    } else {
        (50, 1000, 1000, Duration::from_secs(1))
    };
    let mut r = registry();
    for h in 0..hosts {
        join(&mut r, &format!("h{h}"), h as u8 + 1).unwrap();
    }
    let per_host = workloads / hosts;
    for h in 0..hosts {
        let list = (0..per_host)
            .map(|i| {
                let n = h * per_host + i;
                let ip = format!("10.42.{h}.{}", 10 + i);
                let app = format!("a{}", n % 100);
                let tier = format!("t{}", n % 10);
                let mut labels = vec![("app", app.as_str()), ("tier", tier.as_str())];
                // Every other workload overrides its host's zone label.
                if i % 2 == 1 {
                    labels.push(("zone", "own"));
                }
                workload(&format!("w{i}"), &ip, &labels)
            })
            .collect();
        let m = r.plan_workloads(HostId(h as u64), list).unwrap().unwrap();
        r.apply(&m).unwrap();
    }
    let policy = Policy {
        default: Action::Deny,
        rules: (0..rules)
            .map(|j| {
                let (from, to) = (format!("a{}", j % 100), format!("a{}", (j * 7 + 1) % 100));
                let port = format!("tcp/{}", 1000 + j);
                match j % 10 {
                    0 => rule(
                        &format!("r{j}"),
                        Action::Deny,
                        &[],
                        &[("app", &to)],
                        &[&port],
                    ),
                    // Every host's unregistered addresses and the workloads keeping zone=host.
                    5 => rule(
                        &format!("r{j}"),
                        Action::Deny,
                        &[("zone", "host")],
                        &[("app", &to)],
                        &[&port],
                    ),
                    _ => rule(
                        &format!("r{j}"),
                        Action::Allow,
                        &[("app", &from)],
                        &[("app", &to)],
                        &[&port],
                    ),
                }
            })
            .collect(),
        tests: Vec::new(),
    };
    let start = Instant::now();
    let maps = netmaps(&r, Some(&policy));
    let took = start.elapsed();
    assert_eq!(maps.len(), hosts);
    let mut filter_rules = 0;
    let mut most_nets = 0;
    for map in maps.values() {
        map.check().unwrap();
        let filter = map.filter.as_ref().unwrap();
        filter_rules += filter.rules.len();
        let nets: usize = filter.rules.iter().map(|r| r.from.len() + r.to.len()).sum();
        most_nets = most_nets.max(nets);
        // A zone=host deny's `from`: per host its /24 without the workloads saying zone=own,
        // of which a registered one (zone=host kept) sits between each two.
        let zone_deny = filter.rules.iter().find(|r| r.name == "r5").unwrap();
        let probe = |h: usize, last: u8| -> std::net::IpAddr {
            format!("10.42.{h}.{last}").parse().unwrap()
        };
        let holds = |a| wgmesh_config::netmap::FilterRule::side_holds(&zone_deny.from, a);
        assert!(holds(probe(0, 200)) && holds(probe(hosts - 1, 1)) && holds(probe(0, 10)));
        assert!(!holds(probe(0, 11)) && !holds(probe(hosts - 1, 11)));
    }
    assert!(most_nets <= MAX_FILTER_NETS, "{most_nets}");
    // Every rule concerns some hosts, and none concerns them all (but the `{}` denies).
    assert!(
        filter_rules > rules && filter_rules < rules * hosts,
        "{filter_rules}"
    );
    assert!(took < budget, "compiling {hosts} netmaps took {took:?}");
}
