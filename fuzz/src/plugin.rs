//! Target `plugin`: the Docker plugin's request bodies, parsed as the plugin socket parses them
//! ([`protocol::parse_call`]) and applied to one host's [`Workloads`] the way the agent applies
//! them (pools, address requests and releases, networks, endpoints and their removal), with one
//! namespace attached first.
//!
//! Input: a sequence of calls, each a selector byte, a length byte and that many bytes of JSON
//! body. Invariants: no panic; no address is held by two of the attached namespace, the
//! reservations and the containers; every address handed out lies in the host's subnet and is
//! neither its network address, its gateway nor its broadcast address; the state survives the
//! state file (saved and loaded, it is the same).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use wgmesh_config::labels::Labels;
use wgmesh_overlay::agent::workloads::docker::EndpointPlan;
use wgmesh_overlay::agent::workloads::{Workload, WorkloadStore, Workloads};
use wgmesh_overlay::api::docker::protocol::{self, Call, AGENT_CALLS};

use crate::Input;

const SUBNET: &str = "10.42.1.0/28";

/// Runs one input.
pub fn run(data: &[u8]) {
    let subnet: IpNet = SUBNET.parse().expect("subnet");
    let mut w = Workloads::new(subnet);
    let ns = w
        .allocate("ns", None)
        .expect("an address for the namespace");
    w.insert(Workload {
        netns: "ns".into(),
        ip: ns,
        host_ifname: "wgmvns".into(),
        labels: Labels::new(),
    });
    let mut input = Input::new(data);
    let mut now = 1_000;
    while !input.is_empty() {
        let method = AGENT_CALLS[input.below(AGENT_CALLS.len())];
        let len = usize::from(input.u8());
        let body = input.bytes(len);
        now += 1;
        let Ok(call) = protocol::parse_call(method, body) else {
            continue;
        };
        apply(&mut w, call, now);
        check(&w, subnet);
    }
    let dir = tempfile::tempdir().expect("a scratch directory");
    let store = WorkloadStore::new(dir.path());
    store.save(&w).expect("the state saves");
    assert_eq!(store.load(subnet).expect("the state loads"), w);
}

fn apply(w: &mut Workloads, call: Call, now: u64) {
    match call {
        Call::RequestPool(r) => {
            let _ = w.request_pool(&r);
        }
        Call::RequestAddress(r) => {
            let _ = w.request_address(&r, now);
        }
        Call::ReleaseAddress(r) => {
            w.release_address(&r.address);
        }
        Call::CreateNetwork(r) => {
            if let Ok(n) = w.plan_network(&r, 1420) {
                w.insert_network(&r.network_id, n);
            }
        }
        Call::DeleteNetwork(r) => {
            w.remove_network(&r.network_id);
        }
        Call::CreateEndpoint(r) => {
            if let Ok(EndpointPlan::Create(c, mtu)) = w.plan_endpoint(&r, now) {
                assert!((576..=1420).contains(&mtu), "mtu {mtu}");
                w.insert_container(c);
            }
        }
        Call::DeleteEndpoint(r) => {
            w.remove_container(&r.endpoint_id);
        }
        Call::Join(_) | Call::Leave(_) | Call::ReleasePool(_) => {}
    }
}

fn check(w: &Workloads, subnet: IpNet) {
    let gateway = w.gateway();
    let usable = |ip: IpAddr| {
        subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast() && ip != gateway
    };
    let mut held = BTreeSet::new();
    for a in w.iter() {
        assert!(held.insert(a.ip.addr()), "{} twice", a.ip);
    }
    let reserved: BTreeSet<IpAddr> = w.reservations().map(|(ip, _)| *ip).collect();
    for ip in &reserved {
        assert!(usable(*ip), "reserved {ip}");
        assert!(!held.contains(ip), "{ip} reserved and attached");
    }
    let mut containers = BTreeSet::new();
    for c in w.containers() {
        let ip = c.ip.addr();
        assert!(usable(ip), "container {ip}");
        assert!(containers.insert(ip), "{ip} for two containers");
        assert!(!held.contains(&ip), "{ip} attached and a container's");
    }
}

/// Seeds: a network without `--subnet`, an address, an endpoint, its removal and release.
pub fn seeds() -> Vec<Vec<u8>> {
    let ep = "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let call = |selector: u8, body: String| {
        let mut out = vec![selector, u8::try_from(body.len()).expect("short body")];
        out.extend(body.as_bytes());
        out
    };
    let network = call(
        0,
        r#"{"NetworkID":"n","IPv4Data":[{"AddressSpace":"wgmesh","Pool":"0.0.0.0/0"}]}"#.into(),
    );
    let pool = call(6, "{}".into());
    let address = call(8, r#"{"PoolID":"wgmesh:host"}"#.into());
    let endpoint = call(
        2,
        format!(
            r#"{{"NetworkID":"n","EndpointID":"{ep}","Interface":{{"Address":"10.42.1.3/28"}}}}"#
        ),
    );
    let delete = call(3, format!(r#"{{"NetworkID":"n","EndpointID":"{ep}"}}"#));
    let release = call(
        9,
        r#"{"PoolID":"wgmesh:host","Address":"10.42.1.3"}"#.into(),
    );
    vec![
        [
            network.clone(),
            pool.clone(),
            address.clone(),
            endpoint.clone(),
        ]
        .concat(),
        [
            network,
            pool,
            address.clone(),
            endpoint,
            delete,
            release,
            address,
        ]
        .concat(),
        call(6, r#"{"Pool":"10.42.1.0/29"}"#.into()),
    ]
}
