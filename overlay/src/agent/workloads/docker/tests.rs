use super::*;
use crate::agent::workloads::{Workload, WorkloadStore};
use crate::api::docker::protocol::{EndpointInterface, IpamData, GENERIC_OPTIONS};

const EP1: &str = "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const EP2: &str = "2222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const NET: &str = "9999999999cccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

fn host() -> Workloads {
    Workloads::new("10.42.1.0/24".parse().unwrap())
}

fn pool_req(pool: &str) -> RequestPool {
    RequestPool {
        pool: pool.into(),
        ..RequestPool::default()
    }
}

fn addr_req(pool_id: &str, address: &str) -> AddressRequest {
    AddressRequest {
        pool_id: pool_id.into(),
        address: address.into(),
        options: BTreeMap::new(),
    }
}

fn network(w: &mut Workloads) {
    let plan = w.plan_network(&CreateNetwork::default(), 1420).unwrap();
    w.insert_network(NET, plan);
}

fn endpoint(id: &str, address: &str) -> CreateEndpoint {
    CreateEndpoint {
        network_id: NET.into(),
        endpoint_id: id.into(),
        interface: EndpointInterface {
            address: address.into(),
            ..EndpointInterface::default()
        },
        options: BTreeMap::new(),
    }
}

/// A container on `w`'s network with an address from its IPAM.
fn container(w: &mut Workloads, id: &str, now: u64) -> Container {
    let ip = w.request_address(&addr_req(HOST_POOL, ""), now).unwrap();
    match w
        .plan_endpoint(&endpoint(id, &ip.to_string()), now)
        .unwrap()
    {
        EndpointPlan::Create(c, mtu) => {
            assert_eq!(mtu, 1420);
            w.insert_container(c.clone());
            c
        }
        other => panic!("a new endpoint is created: {other:?}"),
    }
}

#[test]
fn pools_without_subnet_are_any_with_the_bridge_as_gateway() {
    let w = host();
    let p = w.request_pool(&pool_req("")).unwrap();
    assert_eq!(
        p.pool, ANY_POOL,
        "never the host subnet: dockerd would loop"
    );
    assert_eq!(p.gateway, "10.42.1.1/24");
    assert_eq!(w.request_pool(&pool_req("")).unwrap(), p, "idempotent");
    let part = w.request_pool(&pool_req("10.42.1.128/25")).unwrap();
    assert_eq!(part.pool, "10.42.1.128/25");
    assert_eq!(
        w.request_pool(&pool_req("10.42.1.0/24")).unwrap().pool,
        "10.42.1.0/24"
    );
}

#[test]
fn pools_outside_the_host_subnet_are_refused_naming_it() {
    let w = host();
    for outside in ["10.42.0.0/16", "10.42.2.0/24", "172.30.0.0/16"] {
        let e = w.request_pool(&pool_req(outside)).unwrap_err();
        assert!(
            matches!(e, DockerError::PoolOutside { .. }),
            "{outside}: {e}"
        );
        assert!(
            e.to_string().contains("this host's subnet 10.42.1.0/24"),
            "{e}"
        );
    }
    for bad in ["banana", "10.42.1.5/24", "fd00::/64"] {
        assert!(
            matches!(
                w.request_pool(&pool_req(bad)),
                Err(DockerError::BadPool { .. })
            ),
            "{bad}"
        );
    }
    let v6 = RequestPool {
        v6: true,
        ..RequestPool::default()
    };
    assert_eq!(w.request_pool(&v6), Err(DockerError::Ipv6));
    let range = RequestPool {
        pool: "10.42.1.0/24".into(),
        sub_pool: "10.42.1.0/25".into(),
        ..RequestPool::default()
    };
    assert!(matches!(
        w.request_pool(&range),
        Err(DockerError::IpRange { .. })
    ));
    let opt = RequestPool {
        options: BTreeMap::from([("x".into(), "y".into())]),
        ..RequestPool::default()
    };
    assert!(matches!(
        w.request_pool(&opt),
        Err(DockerError::IpamOption { .. })
    ));
    let v6host = Workloads::new("fd42:0:0:1::/64".parse().unwrap());
    assert!(matches!(
        v6host.request_pool(&pool_req("")),
        Err(DockerError::HostSubnetIpv6 { .. })
    ));
}

#[test]
fn addresses_are_shared_with_attach_and_never_given_twice() {
    let mut w = host();
    let a = w.allocate("ns1", None).unwrap();
    assert_eq!(a.to_string(), "10.42.1.2/24");
    w.insert(Workload {
        netns: "ns1".into(),
        ip: a,
        host_ifname: "v1".into(),
        labels: Labels::new(),
    });
    let d1 = w.request_address(&addr_req(HOST_POOL, ""), 0).unwrap();
    assert_eq!(
        d1.to_string(),
        "10.42.1.3/24",
        "skips the attached namespace"
    );
    assert_eq!(
        w.allocate("ns2", None).unwrap().to_string(),
        "10.42.1.4/24",
        "skips the reservation"
    );
    let taken = w
        .request_address(&addr_req(HOST_POOL, "10.42.1.2"), 0)
        .unwrap_err();
    assert!(
        taken.to_string().contains("network namespace \"ns1\""),
        "{taken}"
    );
    let again = w
        .request_address(&addr_req(HOST_POOL, "10.42.1.3"), 0)
        .unwrap_err();
    assert!(
        matches!(again, DockerError::Address(WorkloadError::InUse { .. })),
        "{again}"
    );
    let ns_on_reserved = w
        .allocate("ns3", Some("10.42.1.3".parse().unwrap()))
        .unwrap_err();
    assert!(matches!(ns_on_reserved, WorkloadError::InUse { .. }));
    // --ip inside the pool, gateway, and reserved addresses.
    assert_eq!(
        w.request_address(&addr_req(HOST_POOL, "10.42.1.77"), 0)
            .unwrap()
            .to_string(),
        "10.42.1.77/24"
    );
    for bad in ["10.42.1.1", "10.42.1.255", "10.42.2.7"] {
        assert!(
            w.request_address(&addr_req(HOST_POOL, bad), 0).is_err(),
            "{bad}"
        );
    }
    assert!(matches!(
        w.request_address(&addr_req(HOST_POOL, "x"), 0),
        Err(DockerError::BadAddress { .. })
    ));
    assert!(matches!(
        w.request_address(&addr_req("other", ""), 0),
        Err(DockerError::UnknownPool { .. })
    ));
    // Released addresses come back.
    assert!(w.release_address("10.42.1.3"));
    assert!(
        !w.release_address("10.42.1.3"),
        "a repeated release is no error and frees nothing"
    );
    assert!(!w.release_address("junk"));
    assert_eq!(
        w.request_address(&addr_req(HOST_POOL, ""), 0)
            .unwrap()
            .to_string(),
        "10.42.1.3/24"
    );
}

#[test]
fn gateway_requests_get_the_bridge_address_unreserved() {
    let mut w = host();
    let mut g = addr_req(HOST_POOL, "");
    g.options.insert(
        "RequestAddressType".into(),
        "com.docker.network.gateway".into(),
    );
    assert_eq!(
        w.request_address(&g, 0).unwrap().to_string(),
        "10.42.1.1/24"
    );
    assert_eq!(w.reservations().count(), 0);
    g.address = "10.42.1.9".into();
    let e = w.request_address(&g, 0).unwrap_err();
    assert!(e.to_string().contains("bridge address 10.42.1.1"), "{e}");
}

#[test]
fn a_subnet_part_allocates_inside_it_with_its_prefix() {
    let mut w = host();
    let p = w.request_pool(&pool_req("10.42.1.128/25")).unwrap();
    let ip = w.request_address(&addr_req(&p.id, ""), 0).unwrap();
    assert_eq!(ip.to_string(), "10.42.1.129/25");
    assert!(
        w.request_address(&addr_req(&p.id, "10.42.1.5"), 0).is_err(),
        "outside the part"
    );
}

#[test]
fn network_options_are_checked() {
    let w = host();
    let with_opts = |pairs: &[(&str, &str)]| CreateNetwork {
        options: BTreeMap::from([(
            GENERIC_OPTIONS.to_owned(),
            serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                    .collect(),
            ),
        )]),
        ..CreateNetwork::default()
    };
    assert_eq!(
        w.plan_network(&CreateNetwork::default(), 1420).unwrap().mtu,
        1420
    );
    assert_eq!(
        w.plan_network(&with_opts(&[(MTU_OPTION, "1400")]), 1420)
            .unwrap()
            .mtu,
        1400
    );
    for bad in ["1421", "9000", "100", "x", ""] {
        let e = w
            .plan_network(&with_opts(&[(MTU_OPTION, bad)]), 1420)
            .unwrap_err();
        assert!(e.to_string().contains("use 576 to 1420"), "{bad}: {e}");
    }
    let e = w
        .plan_network(&with_opts(&[("wgmesh.bogus", "1")]), 1420)
        .unwrap_err();
    assert_eq!(
        e,
        DockerError::DriverOption {
            key: "wgmesh.bogus".into()
        }
    );
    assert!(e.to_string().contains("\"wgmesh.bogus\""), "{e}");
    let v6 = CreateNetwork {
        options: BTreeMap::from([(
            "com.docker.network.enable_ipv6".to_owned(),
            serde_json::Value::Bool(true),
        )]),
        ..CreateNetwork::default()
    };
    assert_eq!(w.plan_network(&v6, 1420), Err(DockerError::Ipv6));
    let default_ipam = CreateNetwork {
        ipv4_data: vec![IpamData {
            pool: "172.18.0.0/16".into(),
            ..IpamData::default()
        }],
        ..CreateNetwork::default()
    };
    let e = w.plan_network(&default_ipam, 1420).unwrap_err();
    assert!(e.to_string().contains("--ipam-driver wgmesh"), "{e}");
    let part = CreateNetwork {
        ipv4_data: vec![IpamData {
            address_space: "wgmesh".into(),
            pool: "10.42.1.128/25".into(),
            ..IpamData::default()
        }],
        ..CreateNetwork::default()
    };
    assert_eq!(
        w.plan_network(&part, 1420).unwrap().pool,
        Some("10.42.1.128/25".parse().unwrap())
    );
    // Docker's default IPAM with a --subnet inside ours: still not ours.
    let mut other_space = part.clone();
    other_space.ipv4_data[0].address_space = "LocalDefault".into();
    assert!(matches!(
        w.plan_network(&other_space, 1420),
        Err(DockerError::NotOurIpam { .. })
    ));
    let mut aux = part.clone();
    aux.ipv4_data[0]
        .aux_addresses
        .insert("router".into(), "10.42.1.130/25".into());
    assert!(matches!(
        w.plan_network(&aux, 1420),
        Err(DockerError::AuxAddress { .. })
    ));
}

#[test]
fn endpoints_need_our_network_and_our_reserved_address() {
    let mut w = host();
    let e = w
        .plan_endpoint(&endpoint(EP1, "10.42.1.2/24"), 0)
        .unwrap_err();
    assert!(matches!(e, DockerError::UnknownNetwork { .. }), "{e}");
    network(&mut w);
    let e = w
        .plan_endpoint(&endpoint(EP1, "10.42.1.2/24"), 0)
        .unwrap_err();
    assert_eq!(
        e,
        DockerError::NotReserved {
            ip: "10.42.1.2".parse().unwrap()
        }
    );
    assert!(matches!(
        w.plan_endpoint(&endpoint(EP1, ""), 0),
        Err(DockerError::EndpointAddress { .. })
    ));
    assert!(matches!(
        w.plan_endpoint(&endpoint("zz", "10.42.1.2/24"), 0),
        Err(DockerError::BadEndpointId { .. })
    ));
    let c = container(&mut w, EP1, 5);
    assert_eq!(c.ip.to_string(), "10.42.1.2/24");
    assert_eq!(c.host_ifname, "wgmd1111111111");
    assert!(
        !c.labels_known && c.labels.is_empty(),
        "unlabelled until the Docker API says"
    );
    // Docker asking twice is no error; another address for it is.
    assert_eq!(
        w.plan_endpoint(&endpoint(EP1, "10.42.1.2/24"), 9),
        Ok(EndpointPlan::Exists(c.clone()))
    );
    assert!(matches!(
        w.plan_endpoint(&endpoint(EP1, "10.42.1.3/24"), 9),
        Err(DockerError::EndpointExists { .. })
    ));
    // Another endpoint on the same address is refused.
    let e = w
        .plan_endpoint(&endpoint(EP2, "10.42.1.2/24"), 0)
        .unwrap_err();
    assert!(
        matches!(e, DockerError::Address(WorkloadError::InUse { .. })),
        "{e}"
    );
    // A MAC of its own is refused, ours (any case) accepted.
    let ip = w.request_address(&addr_req(HOST_POOL, ""), 0).unwrap();
    let mut req = endpoint(EP2, &ip.to_string());
    req.interface.mac_address = "02:42:ac:11:00:02".into();
    assert!(matches!(
        w.plan_endpoint(&req, 0),
        Err(DockerError::Mac { .. })
    ));
    req.interface.mac_address = format_mac(host::workload_mac(ip.addr())).to_uppercase();
    assert!(matches!(
        w.plan_endpoint(&req, 0),
        Ok(EndpointPlan::Create(..))
    ));
    // While a container has it, its address is not released; after it goes, it is.
    assert!(!w.release_address("10.42.1.2"));
    assert_eq!(w.remove_container(EP1), Some(c));
    assert!(w.release_address("10.42.1.2"));
}

#[test]
fn labels_come_from_docker_filtered_and_with_the_name() {
    let docker = BTreeMap::from([
        ("role".to_owned(), "backend".to_owned()),
        ("host".to_owned(), "evil".to_owned()),
        ("container".to_owned(), "spoofed".to_owned()),
        ("com.example.note".to_owned(), "has spaces".to_owned()),
        ("com.docker.compose.project".to_owned(), "shop".to_owned()),
    ]);
    let l = container_labels("web1", &docker);
    assert_eq!(
        l,
        Labels::from([
            ("role".to_owned(), "backend".to_owned()),
            ("container".to_owned(), "web1".to_owned()),
            ("com.docker.compose.project".to_owned(), "shop".to_owned()),
        ])
    );
    let many: BTreeMap<String, String> = (0..100)
        .map(|i| (format!("k{i:03}"), "v".to_owned()))
        .collect();
    let l = container_labels("n", &many);
    assert_eq!(l.len(), MAX_LABELS);
    assert!(labels::check_workload_labels(&l).is_ok());
}

#[test]
fn owners_give_labels_and_missing_endpoints_go_after_the_grace() {
    let mut w = host();
    network(&mut w);
    let c1 = container(&mut w, EP1, 100);
    let c2 = container(&mut w, EP2, 100);
    let owners = BTreeMap::from([(
        EP1.to_owned(),
        EndpointOwner {
            id: "c0ffee".into(),
            name: "web1".into(),
            labels: BTreeMap::from([("role".to_owned(), "frontend".to_owned())]),
        },
    )]);
    assert!(w.learn_owners(&owners));
    assert!(!w.learn_owners(&owners), "the same again changes nothing");
    let learnt = w.container(EP1).unwrap();
    assert!(learnt.labels_known);
    assert_eq!(learnt.labels["role"], "frontend");
    assert_eq!(learnt.labels["container"], "web1");
    assert!(
        w.stale_containers(&owners, 100 + GRACE_SECS - 1).is_empty(),
        "young endpoints stay"
    );
    let stale = w.stale_containers(&owners, 100 + GRACE_SECS);
    assert_eq!(stale, vec![c2.clone()]);
    // The report names containers by endpoint, with their labels (none before they are known).
    let report = w.report().workloads;
    assert_eq!(report.len(), 2);
    assert!(report
        .iter()
        .any(|r| r.name == "docker:1111111111aa" && r.labels["role"] == "frontend"));
    assert!(report
        .iter()
        .any(|r| r.name == "docker:2222222222bb" && r.labels.is_empty()));
    // Reservations: only old ones without a container that Docker does not list are freed.
    let lone = w
        .request_address(&addr_req(HOST_POOL, ""), 100)
        .unwrap()
        .addr();
    let listed = w
        .request_address(&addr_req(HOST_POOL, ""), 100)
        .unwrap()
        .addr();
    assert!(w
        .expire_reservations(&[listed], 100 + GRACE_SECS - 1)
        .is_empty());
    assert_eq!(
        w.expire_reservations(&[listed], 100 + GRACE_SECS),
        vec![lone]
    );
    assert!(w.holder(c1.ip.addr()).is_some() && w.holder(listed).is_some());
}

#[test]
fn the_docker_part_persists_and_old_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = WorkloadStore::new(dir.path());
    let subnet: IpNet = "10.42.1.0/24".parse().unwrap();
    let mut w = Workloads::new(subnet);
    network(&mut w);
    container(&mut w, EP1, 7);
    w.request_address(&addr_req(HOST_POOL, ""), 8).unwrap();
    store.save(&w).unwrap();
    let again = store.load(subnet).unwrap();
    assert_eq!(again, w);
    assert_eq!(again.reservations().count(), 2);
    // Another subnet drops it all (the addresses are not ours any more).
    let moved = store.load("10.42.9.0/24".parse().unwrap()).unwrap();
    assert_eq!(moved.containers().count(), 0);
    assert_eq!(moved.reservations().count(), 0);
    // A file from before Docker's part.
    std::fs::write(
        dir.path().join("workloads.json"),
        r#"{"version":"1","workloads":[]}"#,
    )
    .unwrap();
    assert_eq!(store.load(subnet).unwrap(), Workloads::new(subnet));
}
