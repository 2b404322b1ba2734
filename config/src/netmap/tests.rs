use super::*;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn sample() -> Netmap {
    Netmap {
        revision: 7,
        host: HostIdentity {
            name: "host-a".into(),
            public_key: key(1),
            subnet: net("10.42.0.0/24"),
            endpoint: Some("198.18.0.1:51820".parse().unwrap()),
            key_epoch: 0,
            rotation: None,
        },
        peers: vec![
            NetmapPeer {
                name: "host-b".into(),
                public_keys: vec![key(2)],
                endpoint: Some("198.18.0.2:51820".parse().unwrap()),
                allowed_ips: vec![net("10.42.1.0/24")],
                labels: BTreeMap::from([("zone".into(), "a".into())]),
                key_epoch: 0,
                preshared_keys: Vec::new(),
            },
            NetmapPeer {
                name: "host-c".into(),
                public_keys: vec![key(3), key(4)],
                endpoint: None,
                allowed_ips: vec![net("10.42.2.0/24"), net("fd42::/64")],
                labels: BTreeMap::new(),
                key_epoch: 3,
                preshared_keys: Vec::new(),
            },
        ],
        cluster_cidr: None,
        epoch: 0,
        filter: None,
    }
}

fn delta(from: u64, upsert: Vec<NetmapPeer>, remove: &[&str], peer_count: usize) -> NetmapDelta {
    let base = sample();
    NetmapDelta {
        from,
        revision: from + 3,
        host: base.host,
        upsert,
        remove: remove.iter().map(|s| (*s).to_owned()).collect(),
        peer_count,
        cluster_cidr: None,
        epoch: 0,
        filter: None,
    }
}

fn peer(name: &str, k: u8, net_: &str) -> NetmapPeer {
    NetmapPeer {
        name: name.into(),
        public_keys: vec![key(k)],
        endpoint: None,
        allowed_ips: vec![net(net_)],
        labels: BTreeMap::new(),
        key_epoch: 0,
        preshared_keys: Vec::new(),
    }
}

#[test]
fn a_delta_removes_then_upserts_by_name_and_gives_a_checked_netmap() {
    let base = sample();
    // host-b leaves and its name is taken by a new host; host-d joins; host-c moves.
    let mut moved = base.peers[1].clone();
    moved.endpoint = Some("198.18.0.33:51820".parse().unwrap());
    let d = delta(
        7,
        vec![
            peer("host-d", 9, "10.42.3.0/24"),
            peer("host-b", 8, "10.42.1.0/24"),
            moved.clone(),
        ],
        &["host-b"],
        3,
    );
    let next = base.apply_delta(&d).unwrap();
    assert_eq!(next.revision, 10);
    let names: Vec<&str> = next.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["host-b", "host-c", "host-d"]);
    assert_eq!(next.peers[0].public_keys, [key(8)]);
    assert_eq!(next.peers[1], moved);
    // The same changes as a full netmap compare equal.
    let mut full = next.clone();
    full.normalize();
    assert_eq!(full, next);
}

#[test]
fn a_delta_for_another_revision_or_with_the_wrong_count_is_refused() {
    let base = sample();
    let err = base.apply_delta(&delta(6, vec![], &[], 2)).unwrap_err();
    assert_eq!(err, DeltaError::WrongBase { have: 7, from: 6 });
    let err = base
        .apply_delta(&delta(7, vec![], &["host-b"], 2))
        .unwrap_err();
    assert_eq!(
        err,
        DeltaError::PeerCount {
            got: 1,
            expected: 2
        }
    );
    // A delta giving a peer the host's own subnet is refused like a full netmap would be.
    let err = base
        .apply_delta(&delta(7, vec![peer("host-x", 9, "10.42.0.0/25")], &[], 3))
        .unwrap_err();
    assert!(
        matches!(err, DeltaError::Invalid(NetmapError::Overlap { .. })),
        "{err:?}"
    );
}

#[test]
fn updates_are_tagged_json() {
    let full = serde_json::to_value(NetmapUpdate::Full(sample())).unwrap();
    assert!(full["full"]["peers"].is_array());
    let d = serde_json::to_value(NetmapUpdate::Delta(delta(7, vec![], &[], 2))).unwrap();
    assert_eq!(d["delta"]["from"], 7);
}

#[test]
fn nothing_outside_the_cluster_cidr_is_routed_into_the_tunnel() {
    let mut map = sample();
    map.peers[1].allowed_ips = vec![net("10.42.2.0/24")];
    map.cluster_cidr = Some(net("10.42.0.0/16"));
    map.check().unwrap();
    // A peer claiming the underlay (or a default route) would cut the host off.
    map.peers[0].allowed_ips.push(net("198.18.0.0/15"));
    let err = map.check().unwrap_err();
    assert_eq!(
        err.to_string(),
        "198.18.0.0/15 of \"host-b\" is outside the cluster CIDR 10.42.0.0/16"
    );
    map.peers[0].allowed_ips.pop();
    map.host.subnet = net("10.43.0.0/24");
    assert!(matches!(
        map.check(),
        Err(NetmapError::OutsideCluster { .. })
    ));
}

#[test]
fn a_netmap_must_name_the_pinned_cluster_cidr_exactly() {
    let mut map = sample();
    map.peers[1].allowed_ips = vec![net("10.42.2.0/24")];
    let pinned = net("10.42.0.0/16");
    assert_eq!(
        map.check_pinned(pinned),
        Err(NetmapError::NoClusterCidr { pinned })
    );
    map.cluster_cidr = Some(net("10.0.0.0/8"));
    let err = map.check_pinned(pinned).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the netmap's cluster CIDR 10.0.0.0/8 is not 10.42.0.0/16, the one this host joined"
    );
    map.cluster_cidr = Some(net("10.42.0.0/17"));
    assert!(matches!(
        map.check_pinned(pinned),
        Err(NetmapError::ClusterChanged { .. })
    ));
    map.cluster_cidr = Some(pinned);
    map.check_pinned(pinned).unwrap();
    // A peer claiming the underlay or half the Internet is outside the pinned cluster.
    for bad in ["198.18.0.0/24", "0.0.0.0/1", "10.43.0.0/24"] {
        let mut hostile = map.clone();
        hostile.peers[0].allowed_ips.push(net(bad));
        assert!(
            matches!(
                hostile.check_pinned(pinned),
                Err(NetmapError::OutsideCluster { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn low_order_peer_keys_and_too_small_subnets_are_refused() {
    let mut map = sample();
    map.peers[1]
        .public_keys
        .push(PublicKey::from_bytes([0; 32]));
    let err = map.check().unwrap_err();
    assert!(
        matches!(&err, NetmapError::LowOrderKey { owner, .. } if owner == "host-c"),
        "{err:?}"
    );
    // Parsing refuses it too.
    let json = serde_json::to_string(&map).unwrap();
    let err = serde_json::from_str::<Netmap>(&json).unwrap_err();
    assert!(err.to_string().contains("low-order"), "{err}");
    // The host's own key too.
    let mut map = sample();
    map.host.public_key = PublicKey::from_bytes([0; 32]);
    let err = map.check().unwrap_err();
    assert!(
        matches!(&err, NetmapError::LowOrderKey { owner, .. } if owner == "host-a"),
        "{err:?}"
    );

    for (subnet, max) in [
        ("fd42::1/128", 126),
        ("fd42::/127", 126),
        ("10.42.0.1/32", 30),
    ] {
        let mut map = sample();
        map.host.subnet = net(subnet);
        assert_eq!(
            map.check(),
            Err(NetmapError::SubnetTooSmall {
                subnet: net(subnet),
                max
            })
        );
    }
    let mut map = sample();
    map.host.subnet = net("10.42.0.0/30");
    map.check().unwrap();

    let mut map = sample();
    map.peers[0].allowed_ips = vec![net("10.42.1.7/24")];
    assert_eq!(
        map.check().unwrap_err().to_string(),
        "10.42.1.7/24 of \"host-b\" has host bits set (write 10.42.1.0/24)"
    );
}

#[test]
fn json_round_trip() {
    let map = sample();
    let json = serde_json::to_string(&map).unwrap();
    let back: Netmap = serde_json::from_str(&json).unwrap();
    assert_eq!(back, map);
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    map.check().unwrap();
}

#[test]
fn json_shape_is_stable() {
    let json = serde_json::to_value(sample()).unwrap();
    assert_eq!(json["revision"], 7);
    assert_eq!(json["host"]["subnet"], "10.42.0.0/24");
    assert_eq!(json["host"]["public_key"], key(1).to_base64());
    assert_eq!(json["peers"][0]["endpoint"], "198.18.0.2:51820");
    assert_eq!(json["peers"][0]["labels"]["zone"], "a");
    // Absent optionals are left out rather than written as null.
    assert!(json["peers"][1].get("endpoint").is_none());
    assert!(json["peers"][1].get("labels").is_none());
}

#[test]
fn unknown_fields_are_ignored_and_missing_optionals_default() {
    let json = format!(
        r#"{{"revision":1,"future":true,
            "host":{{"name":"h","public_key":"{}","subnet":"10.0.0.0/24"}},
            "peers":[{{"name":"p","public_keys":["{}"],"preshared_key":"x"}}]}}"#,
        key(1),
        key(2)
    );
    let map: Netmap = serde_json::from_str(&json).unwrap();
    assert_eq!(map.host.endpoint, None);
    assert_eq!(map.peers[0].allowed_ips, vec![]);
    assert!(map.peers[0].labels.is_empty());
}

#[test]
fn bad_key_or_prefix_is_refused() {
    let bad_key =
        r#"{"revision":1,"host":{"name":"h","public_key":"nope","subnet":"10.0.0.0/24"}}"#;
    let err = serde_json::from_str::<Netmap>(bad_key).unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
    let bad_net = format!(
        r#"{{"revision":1,"host":{{"name":"h","public_key":"{}","subnet":"10.0.0.0/33"}}}}"#,
        key(1)
    );
    assert!(serde_json::from_str::<Netmap>(&bad_net).is_err());
}

#[test]
fn normalize_sorts_and_dedups() {
    let mut map = sample();
    map.peers.reverse();
    map.peers[0].public_keys = vec![key(3), key(4), key(3)];
    map.peers[0].allowed_ips = vec![net("fd42::/64"), net("10.42.2.0/24")];
    map.normalize();
    assert_eq!(map, sample());
}

#[test]
fn a_peers_keys_keep_their_order_the_new_key_first() {
    // While host-c's new key 4 is announced, its entry lists it before the old key 3.
    let mut map = sample();
    map.peers[1].public_keys = vec![key(4), key(3), key(4)];
    map.normalize();
    assert_eq!(
        map.peers[1].public_keys,
        [key(4), key(3)],
        "deduped, not sorted"
    );
    map.check().unwrap();
    // JSON keeps the order too, and a delta's result is normalized the same way.
    let back: Netmap = serde_json::from_str(&serde_json::to_string(&map).unwrap()).unwrap();
    assert_eq!(back.peers[1].public_keys, [key(4), key(3)]);
    let mut announced = map.peers[1].clone();
    announced.public_keys = vec![key(5), key(4)];
    let next = sample()
        .apply_delta(&delta(7, vec![announced], &[], 2))
        .unwrap();
    assert_eq!(next.peers[1].public_keys, [key(5), key(4)]);
}

#[test]
fn rotation_orders_round_trip_and_old_netmaps_parse_without_them() {
    let mut map = sample();
    map.host.key_epoch = 4;
    map.host.rotation = Some(KeyRotationOrder {
        epoch: 5,
        new_key: None,
    });
    let json = serde_json::to_value(&map).unwrap();
    assert_eq!(json["host"]["key_epoch"], 4);
    assert_eq!(json["host"]["rotation"], serde_json::json!({"epoch": 5}));
    assert_eq!(json["peers"][1]["key_epoch"], 3);
    map.host.rotation = Some(KeyRotationOrder {
        epoch: 5,
        new_key: Some(key(9)),
    });
    let json = serde_json::to_string(&map).unwrap();
    assert_eq!(serde_json::from_str::<Netmap>(&json).unwrap(), map);
    map.check().unwrap();
    // A netmap of a control plane without rotations: epoch 0, no order.
    let old = format!(
        r#"{{"revision":1,"host":{{"name":"h","public_key":"{}","subnet":"10.0.0.0/24"}},
            "peers":[{{"name":"p","public_keys":["{}"]}}]}}"#,
        key(1),
        key(2)
    );
    let old: Netmap = serde_json::from_str(&old).unwrap();
    assert_eq!((old.host.key_epoch, old.host.rotation), (0, None));
    assert_eq!(old.peers[0].key_epoch, 0);
}

#[test]
fn a_rotation_order_announces_a_new_key_of_the_next_epoch() {
    let order = |epoch, k: Option<PublicKey>| {
        let mut map = sample();
        map.host.key_epoch = 2;
        map.host.rotation = Some(KeyRotationOrder { epoch, new_key: k });
        map.check()
    };
    order(3, None).unwrap();
    order(3, Some(key(9))).unwrap();
    assert_eq!(
        order(2, None),
        Err(NetmapError::RotationEpoch {
            host: "host-a".into(),
            epoch: 2,
            key_epoch: 2
        })
    );
    assert!(matches!(
        order(4, None),
        Err(NetmapError::RotationEpoch { .. })
    ));
    assert_eq!(
        order(3, Some(key(1))),
        Err(NetmapError::RotationKeyUnchanged {
            host: "host-a".into(),
            key: key(1)
        })
    );
    let err = order(3, Some(key(4))).unwrap_err();
    assert_eq!(
        err,
        NetmapError::RotationKeyTaken {
            host: "host-a".into(),
            key: key(4),
            peer: "host-c".into()
        }
    );
    assert!(
        err.to_string().contains("a key of peer \"host-c\""),
        "{err}"
    );
    let err = order(3, Some(PublicKey::from_bytes([0; 32]))).unwrap_err();
    assert!(
        matches!(&err, NetmapError::LowOrderKey { owner, .. } if owner == "host-a"),
        "{err:?}"
    );
    // An epoch that cannot follow.
    let mut map = sample();
    map.host.key_epoch = u64::MAX;
    map.host.rotation = Some(KeyRotationOrder {
        epoch: 0,
        new_key: None,
    });
    assert!(matches!(
        map.check(),
        Err(NetmapError::RotationEpoch { .. })
    ));
}

#[test]
fn check_finds_broken_invariants() {
    let mut map = sample();
    map.peers[1].public_keys.push(key(1));
    assert!(matches!(map.check(), Err(NetmapError::SelfPeer { .. })));

    let mut map = sample();
    map.peers[1].public_keys.clear();
    assert!(matches!(map.check(), Err(NetmapError::NoKey { .. })));

    let mut map = sample();
    map.peers[1].public_keys = vec![key(2)];
    assert!(matches!(map.check(), Err(NetmapError::DuplicateKey { .. })));

    let mut map = sample();
    map.peers[1].name = "host-b".into();
    assert!(matches!(
        map.check(),
        Err(NetmapError::DuplicateName { .. })
    ));

    let mut map = sample();
    map.peers[1].allowed_ips = vec![net("10.42.1.128/25")];
    let err = map.check().unwrap_err();
    assert_eq!(
        err.to_string(),
        "allowed IP 10.42.1.128/25 of \"host-c\" overlaps 10.42.1.0/24 of \"host-b\""
    );

    let mut map = sample();
    map.peers[0].allowed_ips = vec![net("10.42.0.0/16")];
    assert!(matches!(map.check(), Err(NetmapError::Overlap { .. })));
}

#[test]
fn peer_by_key_finds_any_of_the_keys() {
    let map = sample();
    assert_eq!(
        map.peer_by_key(&key(4)).map(|p| p.name.as_str()),
        Some("host-c")
    );
    assert!(map.peer_by_key(&key(9)).is_none());
}

#[test]
fn preshared_keys_are_only_for_pairs_of_the_hosts_keys_and_the_peers() {
    use crate::netmap::PairKey;
    use crate::PresharedKey;

    let pair = |local: u8, remote: u8| PairKey {
        local_key: key(local),
        remote_key: key(remote),
        key: PresharedKey::from_bytes([9; 32]),
    };
    let mut map = sample();
    // host-b (key 2): a pair of the host's key 1 with it is fine.
    map.peers[0].preshared_keys = vec![pair(1, 2)];
    assert_eq!(map.check(), Ok(()));
    // Another host's pair (host-c's key 3 with host-b's key 2) is refused, and so is a pair with
    // a key the peer does not have.
    for bad in [pair(3, 2), pair(1, 4)] {
        let mut m = sample();
        m.peers[0].preshared_keys = vec![bad];
        assert!(
            matches!(m.check(), Err(NetmapError::PresharedKeyPair { .. })),
            "{:?}",
            m.check()
        );
    }
    // The JSON carries the key as base64, and Debug never shows it.
    let json = serde_json::to_string(&map).unwrap();
    assert!(
        json.contains(&PresharedKey::from_bytes([9; 32]).to_base64()),
        "{json}"
    );
    let back: Netmap = serde_json::from_str(&json).unwrap();
    assert_eq!(back, map);
    assert!(!format!("{map:?}").contains(&PresharedKey::from_bytes([9; 32]).to_base64()));
}
