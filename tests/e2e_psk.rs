//! Preshared keys. Static mode: a wgmesh agent and wireguard-go with the same preshared key talk;
//! with different ones they do not. Control mode (`preshared_keys = true`): every pair of hosts
//! has its own key, the same on both of its hosts; no netmap holds a key of a pair its host is
//! not part of (checked on every host's netmap); traffic flows, and a `key rotate --all` under
//! 1 ms pings gives the pairs new keys without a lost ping.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::control::{control_with_hosts, host_keys, wait_epoch};
use common::scenario::{assert_pings, workload, Host};
use common::*;
use serde_json::Value;

#[test]
fn a_static_preshared_key_works_against_wireguard_go_and_a_wrong_one_does_not() {
    let Some(c) = Cluster::new("a_static_preshared_key_works_against_wireguard_go") else {
        return;
    };
    let (ha, hw) = (c.netns("a"), c.netns("w"));
    let (ip_a, ip_w) = c.veth_underlay(&ha, &hw);
    let wg = c.wggo(&hw, 51821);
    let dir = tempfile::tempdir().unwrap();
    let psk_file = dir.path().join("ab.psk");
    agent::write_private(&psk_file, &format!("{}\n", keys::wg_genkey()));
    let mut peer = PeerSpec::new(wg.public_key(), &["10.42.2.0/24"])
        .name("wggo")
        .endpoint(&format!("{ip_w}:51821"));
    peer.preshared_key_file = Some(psk_file.clone());
    let a = c.agent(
        &ha,
        AgentSpec::new("host-a", "10.42.1.0/24", 51820).peer(peer),
    );
    let a_with_psk = |psk: &std::path::Path| {
        wg.wg(&[
            "set",
            &wg.ifname,
            "peer",
            a.public_key(),
            "allowed-ips",
            "10.42.1.0/24",
            "endpoint",
            &format!("{ip_a}:51820"),
            "preshared-key",
            psk.to_str().unwrap(),
        ]);
    };
    a_with_psk(&psk_file);
    wg.addr_add("10.42.2.1/24");
    wg.up();
    wg.route_add("10.42.1.0/24");
    let host = Host {
        ns: ha.clone(),
        ip: ip_a,
        port: 51820,
        agent: a.clone(),
    };
    let (wa, ipa) = workload(&c, &host, "wa");
    assert_pings(&wa, "10.42.2.1", Duration::from_secs(15));
    assert_pings(&hw, &ipa, Duration::from_secs(5));
    assert_eq!(a.peer_status(wg.public_key())["preshared_key"], true);

    // wireguard-go with another preshared key: no handshake completes.
    let other = dir.path().join("other.psk");
    agent::write_private(&other, &format!("{}\n", keys::wg_genkey()));
    wg.wg(&["set", &wg.ifname, "peer", a.public_key(), "remove"]);
    a_with_psk(&other);
    assert!(
        !wait_until(Duration::from_secs(4), || ping(&hw, &ipa)),
        "a wrong preshared key reached A"
    );
}

/// Every (local key, remote key, preshared key) in the netmap a host applied, with its own
/// registered key.
fn pair_keys(h: &Host) -> (String, Vec<(String, String, String)>) {
    let text = std::fs::read_to_string(h.agent.state_dir.join("netmap.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let netmap = v.get("netmap").unwrap_or(&v);
    let own = netmap["host"]["public_key"].as_str().unwrap().to_owned();
    let mut out = Vec::new();
    for p in netmap["peers"].as_array().unwrap() {
        for k in p["preshared_keys"].as_array().into_iter().flatten() {
            out.push((
                k["local_key"].as_str().unwrap().to_owned(),
                k["remote_key"].as_str().unwrap().to_owned(),
                k["key"].as_str().unwrap().to_owned(),
            ));
        }
    }
    (own, out)
}

/// Checks every host's netmap: keys only for pairs with one of its own keys, one per pair, the
/// same on both hosts of a pair, different between pairs.
fn check_pairs(hosts: &[Host]) {
    let mut by_pair: BTreeMap<(String, String), String> = BTreeMap::new();
    for h in hosts {
        let (own, pairs) = pair_keys(h);
        assert_eq!(pairs.len(), hosts.len() - 1, "one key per peer: {pairs:?}");
        for (local, remote, key) in pairs {
            assert_eq!(
                local,
                own,
                "{} got a key of a pair it is not part of",
                h.ns.name()
            );
            let pair = if local < remote {
                (local, remote)
            } else {
                (remote, local)
            };
            if let Some(seen) = by_pair.get(&pair) {
                assert_eq!(seen, &key, "the two hosts of a pair have different keys");
            }
            by_pair.insert(pair, key);
        }
    }
    let distinct: std::collections::BTreeSet<&String> = by_pair.values().collect();
    assert_eq!(distinct.len(), by_pair.len(), "two pairs share a key");
    assert_eq!(by_pair.len(), hosts.len() * (hosts.len() - 1) / 2);
}

#[test]
fn every_pair_of_hosts_has_its_own_preshared_key_rotated_with_the_host_keys() {
    let Some(c) = Cluster::new("every_pair_of_hosts_has_its_own_preshared_key") else {
        return;
    };
    let (_bridge, cp, hosts) = control_with_hosts(&c, &["preshared_keys = true"], &["a", "b", "c"]);
    let (wa, ipa) = workload(&c, &hosts[0], "wa");
    let (wb, _) = workload(&c, &hosts[1], "wb");
    assert_pings(&wb, &ipa, Duration::from_secs(15));
    assert_eventually(
        Duration::from_secs(10),
        "every host has its pairs' keys",
        || {
            hosts
                .iter()
                .all(|h| pair_keys(h).1.len() == hosts.len() - 1)
        },
    );
    check_pairs(&hosts);
    for h in &hosts {
        for p in h.agent.status()["peers"].as_array().unwrap() {
            assert_eq!(p["preshared_key"], true, "{p}");
        }
    }
    let before: Vec<String> = hosts
        .iter()
        .flat_map(|h| pair_keys(h).1)
        .map(|p| p.2)
        .collect();

    let stop = AtomicBool::new(false);
    let (pings, streams) = std::thread::scope(|s| {
        let traffic = s.spawn(|| pings_and_streams_until(&stop, &wb, &wa, &ipa));
        std::thread::sleep(Duration::from_secs(1));
        cp.cli_ok(&["key", "rotate", "--all"]);
        wait_epoch(&cp, 1, Duration::from_secs(90));
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap()
    });
    eprintln!(
        "rotate --all with preshared keys: pings {}/{}, {streams} intact streams",
        pings.1, pings.0
    );
    assert_eq!(pings.1, pings.0, "pings lost across the rotation");
    let current: Vec<String> = host_keys(&cp).values().map(|k| k.1.clone()).collect();
    assert_eventually(
        Duration::from_secs(10),
        "the netmaps have the new keys' pairs",
        || {
            hosts.iter().all(|h| {
                current.contains(&pair_keys(h).0) && pair_keys(h).1.len() == hosts.len() - 1
            })
        },
    );
    check_pairs(&hosts);
    let after: Vec<String> = hosts
        .iter()
        .flat_map(|h| pair_keys(h).1)
        .map(|p| p.2)
        .collect();
    assert!(
        after.iter().all(|k| !before.contains(k)),
        "a pair kept its preshared key across the rotation"
    );
    assert_pings(&wb, &ipa, Duration::from_secs(5));
}
