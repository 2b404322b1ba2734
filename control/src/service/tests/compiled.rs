//! The compile kept between netmap requests: every host polling after one change is answered
//! from one compile, every commit drops it, and what it answers equals a fresh compile.

use wgmesh_client::api::PolicyBody;

use super::*;
use crate::compile;

const SEED: &str = include_str!("../../../../docs/policy/seed.toml");

/// Each host's netmap as a poll gets it, and as a fresh compile of the registry says it is.
fn polled_and_fresh(f: &mut Fixture, callers: &[(Caller, &str)]) -> Vec<(Netmap, Netmap)> {
    callers
        .iter()
        .map(|(caller, name)| {
            let polled = f.control.netmap(caller, name, 10, None).unwrap();
            let registry = f.control.registry();
            let id = registry.host_by_name(name).unwrap().id;
            let policy = registry.policy().map(|p| &p.policy);
            let fresh = compile::netmap(registry, policy, id).unwrap();
            (
                polled,
                Netmap {
                    epoch: f.control.epoch(),
                    ..fresh
                },
            )
        })
        .collect()
}

#[test]
fn hosts_polling_after_a_change_share_one_compile_and_a_commit_drops_it() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let mut callers = Vec::new();
    for (i, name) in ["host-a", "host-b", "host-c"].into_iter().enumerate() {
        let credential = join(&mut f, &t, name, i as u8 + 1).unwrap().credential;
        callers.push((f.control.authenticate(Some(&credential)), name));
    }
    // Each join answers with a netmap of its own revision: one compile each.
    assert_eq!(f.control.compiles(), 3);
    for (polled, fresh) in polled_and_fresh(&mut f, &callers) {
        assert_eq!(polled, fresh);
    }
    // Whole netmaps and deltas of the same revision: no compile.
    let held = (
        f.control.registry().netmap_revision() - 1,
        f.control.epoch(),
    );
    for (caller, name) in &callers {
        f.control
            .netmap_update(caller, name, held, 10, None)
            .unwrap();
    }
    assert_eq!(f.control.compiles(), 3);

    // A policy: one compile for every host's poll, and the kept compile answers as a fresh one.
    let body = PolicyBody {
        text: SEED.to_owned(),
        origin: "seed.toml".to_owned(),
    };
    f.control
        .apply_policy(&Caller::Admin, PreparedPolicy::prepare(body), 11, None)
        .unwrap();
    for (polled, fresh) in polled_and_fresh(&mut f, &callers) {
        assert_eq!(polled, fresh);
        assert!(polled.filter.is_some());
    }
    assert_eq!(f.control.compiles(), 4);
    // A commit that changes no netmap still drops the kept compile.
    token(&mut f, 60, false);
    polled_and_fresh(&mut f, &callers);
    assert_eq!(f.control.compiles(), 5);
    // Back to allow-all, then an endpoint change: polls after each see it, from one compile.
    f.control.remove_policy(&Caller::Admin, 12, None).unwrap();
    for (polled, _) in polled_and_fresh(&mut f, &callers) {
        assert_eq!((polled.filter, polled.peers.len()), (None, 2));
    }
    assert_eq!(f.control.compiles(), 6);
    let body = EndpointBody {
        endpoint: Some("198.18.0.9:51820".parse().unwrap()),
    };
    let (host_b, _) = &callers[1];
    f.control
        .set_endpoint(host_b, "host-b", body, 12, None)
        .unwrap();
    let maps = polled_and_fresh(&mut f, &callers);
    assert_eq!(f.control.compiles(), 7);
    let (a_map, _) = &maps[0];
    let b_in_a = a_map.peers.iter().find(|p| p.name == "host-b");
    let endpoint = b_in_a.map(|p| p.endpoint);
    assert_eq!(
        endpoint,
        Some(Some("198.18.0.9:51820".parse().unwrap())),
        "{a_map:?}"
    );
    for (polled, fresh) in maps {
        assert_eq!(polled, fresh);
    }
}
