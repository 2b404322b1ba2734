//! The compiler without a policy: a full mesh, deltas, determinism; `policy` tests it under
//! random policies.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::changelog::{touched, ChangeLog};
use crate::registry::tests::{join, registry};
use crate::registry::Mutation;

#[test]
fn full_mesh_of_three() {
    let mut r = registry();
    join(&mut r, "c", 3).unwrap();
    join(&mut r, "a", 1).unwrap();
    join(&mut r, "b", 2).unwrap();
    let maps = netmaps(&r, None);
    assert_eq!(maps.len(), 3);
    let a = &maps[&r.host_by_name("a").unwrap().id];
    assert_eq!(a.host.name, "a");
    assert_eq!(a.host.subnet.to_string(), "10.42.1.0/24");
    let names: Vec<&str> = a.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(a.peers[1].allowed_ips[0].to_string(), "10.42.0.0/24");
    assert_eq!(a.revision, r.netmap_revision());
    // A new token changes no netmap, and no netmap's revision.
    let m = r.plan_token(
        crate::registry::SecretHash::of(b"x"),
        0,
        10,
        false,
        Default::default(),
    );
    r.apply(&m).unwrap();
    assert_eq!(netmaps(&r, None), maps);
    assert_eq!(a.cluster_cidr, Some("10.42.0.0/16".parse().unwrap()));
    a.check().unwrap();
    assert!(netmap(&r, None, HostId(99)).is_none());
}

/// One step of a random registry history.
#[derive(Debug, Clone)]
enum Op {
    Join(u8, u8),
    Remove(u8),
    Endpoint(u8, Option<u16>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 0u8..12).prop_map(|(n, k)| Op::Join(n, k)),
        1 => (0u8..12).prop_map(Op::Remove),
        1 => (0u8..12, proptest::option::of(1u16..)).prop_map(|(n, p)| Op::Endpoint(n, p)),
    ]
}

/// The mutation `op` plans on `r`, without applying it; `None` when refused.
fn plan(r: &Registry, op: &Op) -> Option<Mutation> {
    match *op {
        Op::Join(n, k) => {
            let name = format!("h{n}");
            r.plan_join(
                crate::registry::tests::request(&name, k + 1),
                &crate::registry::SecretHash::of(b"t"),
                crate::registry::SecretHash::of(name.as_bytes()),
                10,
            )
            .ok()
        }
        Op::Remove(n) => r.plan_remove(&format!("h{n}")).ok(),
        Op::Endpoint(n, port) => r.host_by_name(&format!("h{n}")).and_then(|h| {
            let ep = port.map(|p| std::net::SocketAddr::from(([198, 18, 0, n], p)));
            r.plan_endpoint(h.id, ep).ok().flatten()
        }),
    }
}

/// Runs `ops` against a fresh registry (refused operations are skipped); returns the
/// registry and the mutations applied.
fn history(ops: &[Op]) -> (Registry, Vec<Mutation>) {
    let mut r = registry();
    let mut applied = Vec::new();
    for op in ops {
        let m = match *op {
            Op::Join(n, k) => join(&mut r, &format!("h{n}"), k + 1).ok(),
            Op::Remove(n) => r.plan_remove(&format!("h{n}")).ok(),
            Op::Endpoint(n, port) => r.host_by_name(&format!("h{n}")).and_then(|h| {
                let ep = port.map(|p| std::net::SocketAddr::from(([198, 18, 0, n], p)));
                r.plan_endpoint(h.id, ep).ok().flatten()
            }),
        };
        if let Some(m) = m {
            if !matches!(m, Mutation::HostJoined { .. }) {
                r.apply(&m).unwrap();
            }
            applied.push(m);
        }
    }
    (r, applied)
}

proptest! {
    #[test]
    fn compile_properties(ops in prop::collection::vec(op(), 0..40)) {
        let (r, _) = history(&ops);
        let maps = netmaps(&r, None);
        prop_assert_eq!(maps.len(), r.hosts().len());
        for (id, map) in &maps {
            let host = r.host(*id).unwrap();
            // Never its own peer.
            prop_assert!(map.peers.iter().all(|p| p.name != host.name.as_str()));
            prop_assert!(map.peer_by_key(&host.public_key).is_none());
            // Full mesh: every other host, exactly once.
            prop_assert_eq!(map.peers.len(), r.hosts().len() - 1);
            // Every allowed IP belongs to exactly one peer and not to the host.
            let mut seen = BTreeSet::new();
            for p in &map.peers {
                for net in &p.allowed_ips {
                    prop_assert!(seen.insert(*net));
                    prop_assert!(!net.contains(&host.subnet) && !host.subnet.contains(net));
                }
            }
            map.check().map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Symmetric: if b is in a's map, a is in b's.
            for p in &map.peers {
                let other = r.host_by_name(&p.name).unwrap();
                prop_assert!(maps[&other.id].peers.iter().any(|q| q.name == host.name.as_str()));
            }
        }
    }

    #[test]
    fn a_delta_applied_to_an_old_netmap_gives_the_new_netmap(
        before in prop::collection::vec(op(), 0..25),
        after in prop::collection::vec(op(), 0..25),
    ) {
        let (mut r, _) = history(&before);
        let old = netmaps(&r, None);
        let mut log = ChangeLog::new(r.netmap_revision(), 1024);
        for op in &after {
            let Some(m) = plan(&r, op) else { continue };
            let touched = touched(&r, &m);
            r.apply(&m).unwrap();
            log.record(r.netmap_revision(), touched);
        }
        let new = netmaps(&r, None);
        for (id, old_map) in &old {
            let Some(expected) = new.get(id) else { continue };
            let changed = log.since(old_map.revision, r.netmap_revision()).unwrap();
            let d = delta(&r, None, *id, old_map.revision, &changed).unwrap();
            let got = old_map.apply_delta(&d).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got, expected);
        }
    }

    #[test]
    fn compile_is_deterministic(ops in prop::collection::vec(op(), 0..40)) {
        let (r, applied) = history(&ops);
        // Replaying the same mutations gives an equal registry and byte-identical netmaps.
        let mut replayed = Registry::default();
        for m in registry_setup().iter().chain(applied.iter()) {
            replayed.apply(m).unwrap();
        }
        prop_assert_eq!(&replayed, &r);
        let a = serde_json::to_string(&netmaps(&r, None)).unwrap();
        let b = serde_json::to_string(&netmaps(&replayed, None)).unwrap();
        prop_assert_eq!(a, b);
    }
}

/// The mutations `registry()` applies.
fn registry_setup() -> Vec<Mutation> {
    let r = Registry::default();
    let init = r
        .plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
        .unwrap();
    let mut r2 = r.clone();
    r2.apply(&init).unwrap();
    let token = r2.plan_token(
        crate::registry::SecretHash::of(b"t"),
        0,
        1000,
        true,
        Default::default(),
    );
    vec![init, token]
}

mod gen;
mod policy;
mod scale;
mod seed;
mod unregistered;
