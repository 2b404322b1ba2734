use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;
use wgmesh_config::netmap::{FilterRule, HostFilter};
use wgmesh_config::policy::{Action, Flow, PortSpec, Proto};

use super::*;

fn rule(name: &str, action: Action, from: &[&str], to: &[&str], ports: &[&str]) -> FilterRule {
    FilterRule {
        name: name.into(),
        action,
        from: from.iter().map(|s| s.parse().unwrap()).collect(),
        to: to.iter().map(|s| s.parse().unwrap()).collect(),
        ports: ports.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The seed policy as compiled for host A (10.42.1.0/24, app=secure-app at 10.42.1.2): the
/// frontend 10.42.2.2 on B, the backend 10.42.3.2 on C.
fn seed() -> HostFilter {
    HostFilter {
        default: Action::Deny,
        rules: vec![
            rule(
                "frontend-to-app",
                Action::Allow,
                &["10.42.2.2/32"],
                &["10.42.1.2/32"],
                &["tcp/80"],
            ),
            rule(
                "app-to-db",
                Action::Allow,
                &["10.42.1.2/32"],
                &["10.42.3.2/32"],
                &["tcp/5432"],
            ),
            rule(
                "no-ssh",
                Action::Deny,
                &["10.42.0.0/16"],
                &["10.42.3.2/32"],
                &["tcp/22"],
            ),
        ],
    }
}

#[test]
fn the_seed_policy_decides_as_written() {
    let f = Filter::new(&seed(), 1, None);
    let d = |src, dst, proto, port| f.decide(ip(src), ip(dst), proto, port);
    let allowed = |rule| Verdict {
        allow: true,
        rule: RuleRef::Rule(rule),
    };
    let default = Verdict {
        allow: false,
        rule: RuleRef::Default,
    };
    assert_eq!(d("10.42.2.2", "10.42.1.2", TCP, 80), allowed(0));
    assert_eq!(d("10.42.1.2", "10.42.3.2", TCP, 5432), allowed(1));
    // Another port, another protocol, the reverse direction, another source, ICMP.
    assert_eq!(d("10.42.2.2", "10.42.1.2", TCP, 8080), default);
    assert_eq!(d("10.42.2.2", "10.42.1.2", UDP, 80), default);
    assert_eq!(d("10.42.1.2", "10.42.2.2", TCP, 80), default);
    assert_eq!(d("10.42.2.3", "10.42.1.2", TCP, 80), default);
    assert_eq!(d("10.42.2.2", "10.42.1.2", ICMP, 0), default);
    assert_eq!(
        d("10.42.1.2", "10.42.3.2", TCP, 22),
        Verdict {
            allow: false,
            rule: RuleRef::Rule(2)
        }
    );
    assert_eq!(f.rule_name(RuleRef::Rule(2)), Some("no-ssh"));
    assert_eq!(f.rule_name(RuleRef::Default), None);
    assert!(f.enforces());
    assert_eq!((f.generation(), f.rule_count()), (1, 3));
}

#[test]
fn a_deny_wins_over_an_earlier_allow_and_the_first_deny_decides() {
    let f = Filter::new(
        &HostFilter {
            default: Action::Allow,
            rules: vec![
                rule(
                    "allow-all",
                    Action::Allow,
                    &["10.0.0.0/8"],
                    &["10.0.0.0/8"],
                    &[],
                ),
                rule(
                    "deny-web",
                    Action::Deny,
                    &["10.0.0.0/8"],
                    &["10.1.0.0/16"],
                    &["tcp/80-90"],
                ),
                rule(
                    "deny-any",
                    Action::Deny,
                    &["10.0.0.0/8"],
                    &["10.1.2.0/24"],
                    &[],
                ),
            ],
        },
        1,
        None,
    );
    let v = f.decide(ip("10.9.9.9"), ip("10.1.2.3"), TCP, 85);
    assert_eq!((v.allow, v.rule), (false, RuleRef::Rule(1)));
    let v = f.decide(ip("10.9.9.9"), ip("10.1.2.3"), 47, 0);
    assert_eq!(
        (v.allow, v.rule),
        (false, RuleRef::Rule(2)),
        "GRE: only a rule without ports"
    );
    let v = f.decide(ip("10.9.9.9"), ip("10.1.3.3"), UDP, 85);
    assert_eq!((v.allow, v.rule), (true, RuleRef::Rule(0)));
    let v = f.decide(ip("192.0.2.1"), ip("10.1.3.3"), UDP, 85);
    assert_eq!((v.allow, v.rule), (true, RuleRef::Default));
}

#[test]
fn icmp_is_icmp_of_the_packets_own_family() {
    let f = Filter::new(
        &HostFilter {
            default: Action::Deny,
            rules: vec![rule(
                "ping",
                Action::Allow,
                &["::/0", "0.0.0.0/0"],
                &["::/0", "0.0.0.0/0"],
                &["icmp"],
            )],
        },
        1,
        None,
    );
    assert!(f.decide(ip("10.0.0.1"), ip("10.0.0.2"), ICMP, 0).allow);
    assert!(f.decide(ip("fd00::1"), ip("fd00::2"), ICMPV6, 0).allow);
    assert!(!f.decide(ip("10.0.0.1"), ip("10.0.0.2"), ICMPV6, 0).allow);
    assert!(!f.decide(ip("fd00::1"), ip("fd00::2"), ICMP, 0).allow);
    assert!(!f.decide(ip("fd00::1"), ip("fd00::2"), TCP, 0).allow);
}

#[test]
fn no_policy_allows_everything_and_enforces_nothing() {
    let f = Filter::allow_all();
    assert!(!f.enforces());
    assert!(f.decide(ip("10.0.0.1"), ip("10.0.0.2"), TCP, 22).allow);
    let empty_deny = HostFilter {
        default: Action::Deny,
        rules: vec![],
    };
    let f = Filter::new(&empty_deny, 3, None);
    assert!(f.enforces());
    assert!(!f.decide(ip("10.0.0.1"), ip("10.0.0.2"), TCP, 22).allow);
}

#[test]
fn deny_counts_are_per_rule_and_carried_over_by_name() {
    let old = Filter::new(&seed(), 1, None);
    old.count_denied(RuleRef::Rule(2));
    old.count_denied(RuleRef::Rule(2));
    old.count_denied(RuleRef::Default);
    let counts: Vec<_> = old.denied().collect();
    assert_eq!(
        counts,
        [
            (Some("frontend-to-app"), 0),
            (Some("app-to-db"), 0),
            (Some("no-ssh"), 2),
            (None, 1)
        ]
    );
    let mut next = seed();
    next.rules.remove(0);
    let new = Filter::new(&next, 2, Some(&old));
    let counts: Vec<_> = new.denied().collect();
    assert_eq!(
        counts,
        [(Some("app-to-db"), 0), (Some("no-ssh"), 2), (None, 1)]
    );
}

#[test]
fn a_thousand_rules_span_many_chunks_and_keep_policy_order() {
    // Rule i allows 10.42.(i/250).(i%250) to reach port 1000 + i; rule 700 is a deny of all of
    // 10.42.2.0/24 on every port, so it beats the allows of that /24 whatever their place.
    let mut rules: Vec<FilterRule> = (0..1000u32)
        .map(|i| {
            let src = format!("10.42.{}.{}/32", i / 250, i % 250);
            let port = format!("tcp/{}", 1000 + i);
            rule(
                &format!("r{i}"),
                Action::Allow,
                &[&src],
                &["10.43.0.0/16"],
                &[&port],
            )
        })
        .collect();
    rules[700] = rule(
        "deny-2",
        Action::Deny,
        &["10.42.2.0/24"],
        &["10.43.0.0/16"],
        &[],
    );
    let f = Filter::new(
        &HostFilter {
            default: Action::Deny,
            rules,
        },
        1,
        None,
    );
    let v = f.decide(ip("10.42.3.10"), ip("10.43.1.1"), TCP, 1760);
    assert_eq!((v.allow, v.rule), (true, RuleRef::Rule(760)));
    let v = f.decide(ip("10.42.2.10"), ip("10.43.1.1"), TCP, 1510);
    assert_eq!((v.allow, v.rule), (false, RuleRef::Rule(700)));
    let v = f.decide(ip("10.42.3.10"), ip("10.43.1.1"), TCP, 1761);
    assert_eq!((v.allow, v.rule), (false, RuleRef::Default));
}

/// The policy's meaning, evaluated rule by rule on the wire form: what [`Filter::decide`] must
/// agree with.
fn naive(host: &HostFilter, src: IpAddr, dst: IpAddr, proto: u8, dport: u16) -> Verdict {
    let flow = match (proto, src) {
        (TCP, _) => Some(Flow {
            proto: Proto::Tcp,
            port: dport,
        }),
        (UDP, _) => Some(Flow {
            proto: Proto::Udp,
            port: dport,
        }),
        (ICMP, IpAddr::V4(_)) | (ICMPV6, IpAddr::V6(_)) => Some(Flow {
            proto: Proto::Icmp,
            port: 0,
        }),
        _ => None,
    };
    let matches = |r: &FilterRule| {
        FilterRule::side_holds(&r.from, src)
            && FilterRule::side_holds(&r.to, dst)
            && (r.ports.is_empty() || flow.is_some_and(|f| r.ports.iter().any(|p| p.holds(f))))
    };
    let indexed = || (0u32..).zip(&host.rules).filter(|(_, r)| matches(r));
    if let Some((i, _)) = indexed().find(|(_, r)| r.action == Action::Deny) {
        return Verdict {
            allow: false,
            rule: RuleRef::Rule(i),
        };
    }
    match indexed().next() {
        Some((i, _)) => Verdict {
            allow: true,
            rule: RuleRef::Rule(i),
        },
        None => Verdict {
            allow: host.default == Action::Allow,
            rule: RuleRef::Default,
        },
    }
}

/// Addresses from a small space (10.42.0.0/22 and fd42::/118), so that random prefixes and
/// random flows meet often.
fn small_addr(v6: bool) -> impl Strategy<Value = IpAddr> {
    (0u32..1024).prop_map(move |n| {
        if v6 {
            IpAddr::V6((0xfd42u128 << 112 | u128::from(n)).into())
        } else {
            IpAddr::V4((0x0a2a_0000 | n).into())
        }
    })
}

fn side(v6: bool) -> impl Strategy<Value = Vec<IpNet>> {
    let net = (small_addr(v6), 0u8..=10).prop_map(|(a, host_bits)| {
        let len = if a.is_ipv6() { 128 } else { 32 } - host_bits;
        IpNet::new(a, len).unwrap().trunc()
    });
    prop::collection::vec(net, 0..4).prop_map(|mut nets| {
        // Sorted and disjoint, as the wire form promises: drop what an earlier prefix holds.
        nets.sort();
        let mut out: Vec<IpNet> = Vec::new();
        for n in nets {
            if !out.iter().any(|o| o.contains(&n) || n.contains(o)) {
                out.push(n);
            }
        }
        out.sort();
        out
    })
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    prop_oneof![
        (0u16..40, 0u16..10).prop_map(|(a, w)| PortSpec {
            proto: Proto::Tcp,
            first: a,
            last: a + w
        }),
        (0u16..40, 0u16..10).prop_map(|(a, w)| PortSpec {
            proto: Proto::Udp,
            first: a,
            last: a + w
        }),
        Just(PortSpec::any(Proto::Tcp)),
        Just(PortSpec::any(Proto::Icmp)),
    ]
}

fn host_filter(v6: bool) -> impl Strategy<Value = HostFilter> {
    let rule = (
        any::<bool>(),
        side(v6),
        side(v6),
        prop::collection::vec(port_spec(), 0..3),
    )
        .prop_map(|(deny, from, to, ports)| FilterRule {
            name: String::new(),
            action: if deny { Action::Deny } else { Action::Allow },
            from,
            to,
            ports,
        });
    (any::<bool>(), prop::collection::vec(rule, 0..150)).prop_map(|(allow, mut rules)| {
        for (i, r) in rules.iter_mut().enumerate() {
            r.name = format!("r{i}");
        }
        HostFilter {
            default: if allow { Action::Allow } else { Action::Deny },
            rules,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decide_agrees_with_the_naive_evaluation(
        (host, flows) in any::<bool>().prop_flat_map(|v6| (
            host_filter(v6),
            prop::collection::vec(
                (small_addr(v6), small_addr(v6), prop::sample::select(vec![TCP, UDP, ICMP, ICMPV6, 47]), 0u16..60),
                64,
            ),
        )),
    ) {
        host.check().unwrap();
        let f = Filter::new(&host, 1, None);
        for (src, dst, proto, port) in flows {
            let dport = if matches!(proto, TCP | UDP) { port } else { 0 };
            prop_assert_eq!(
                f.decide(src, dst, proto, dport),
                naive(&host, src, dst, proto, dport),
                "{} -> {} proto {} port {}", src, dst, proto, dport
            );
        }
    }
}
