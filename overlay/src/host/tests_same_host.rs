//! Same-host routing in a real namespace: the rule and table are created, an earlier run's
//! (for another subnet, or with the TUN device gone) are taken over or replaced, and all of
//! them go at stop. Uses `tests`' namespace guard; a veth stands in for the TUN device.

use super::tests::{in_netns, ip, net, privileged, Namespaces};
use super::*;

fn rules(ns: &str) -> Vec<String> {
    ip(&["-n", ns, "rule", "show"])
        .lines()
        .filter(|l| l.contains("proto 119"))
        .map(str::to_owned)
        .collect()
}

fn table(ns: &str) -> Vec<String> {
    ip(&["-n", ns, "route", "show", "table", "119"])
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect()
}

#[test]
fn same_host_rule_and_table_are_taken_over_and_removed() {
    if !privileged("same_host_rule_and_table_are_taken_over_and_removed") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let ns = namespaces.create();
    ip(&["-n", &ns, "link", "add", "wgmbr0", "type", "bridge"]);
    for dev in ["tun0", "tun1"] {
        let peer = format!("{dev}p");
        ip(&[
            "-n", &ns, "link", "add", dev, "type", "veth", "peer", "name", &peer,
        ]);
        for link in [dev, peer.as_str()] {
            ip(&["-n", &ns, "link", "set", link, "up"]);
        }
    }
    // Someone else's rule and a route of another protocol in table 119 are never touched.
    ip(&[
        "-n", &ns, "rule", "add", "pref", "119", "iif", "wgmbr0", "lookup", "119",
    ]);
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "10.99.0.0/24",
        "dev",
        "tun1",
        "table",
        "119",
    ]);
    let run = |subnet: &'static str, tun: &'static str| {
        let ns = ns.clone();
        in_netns(&ns, move || async move {
            let host = HostNet::connect().expect("connect");
            let tun = host.link_index(tun).await.expect("look up").expect("tun");
            host.route_same_host("wgmbr0", net(subnet), tun)
                .await
                .expect("route same host");
        });
    };
    run("10.42.1.0/24", "tun0");
    let want_rule = ["119:\tfrom all to 10.42.1.0/24 iif wgmbr0 lookup 119 proto 119"];
    assert_eq!(rules(&ns), want_rule);
    let foreign = "10.99.0.0/24 dev tun1 scope link";
    let mut now = table(&ns);
    now.sort();
    assert_eq!(
        now,
        [
            "10.42.1.0/24 dev tun0 proto 119 scope link metric 1024",
            foreign,
            "unreachable 10.42.1.0/24 proto 119 metric 4096",
        ]
    );
    // Again (a restart): nothing doubles. With the TUN device gone (a kill -9), only the
    // unreachable route is left and the next start adds the new device's route.
    run("10.42.1.0/24", "tun0");
    assert_eq!(rules(&ns), want_rule);
    assert_eq!(table(&ns).len(), 3);
    ip(&["-n", &ns, "link", "del", "tun0"]);
    assert!(table(&ns).iter().all(|r| !r.contains("tun0")));
    run("10.42.1.0/24", "tun1");
    assert!(table(&ns).contains(&"10.42.1.0/24 dev tun1 proto 119 scope link metric 1024".into()));
    // Another subnet: the old rule and routes go.
    run("10.42.7.0/24", "tun1");
    assert_eq!(
        rules(&ns),
        ["119:\tfrom all to 10.42.7.0/24 iif wgmbr0 lookup 119 proto 119"]
    );
    assert!(
        table(&ns).iter().all(|r| !r.contains("10.42.1.0")),
        "{:?}",
        table(&ns)
    );

    let ns2 = ns.clone();
    in_netns(&ns2, move || async move {
        let host = HostNet::connect().expect("connect");
        host.unroute_same_host().await.expect("unroute");
    });
    assert_eq!(rules(&ns), Vec::<String>::new());
    assert_eq!(table(&ns), [foreign]);
    let others = ip(&["-n", &ns, "rule", "show"]);
    assert!(
        others.contains("119:\tfrom all iif wgmbr0 lookup 119"),
        "{others}"
    );
}
