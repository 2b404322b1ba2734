//! A control plane advertised under a DNS name: admin.toml's URL, the admin CLI and the agents
//! use the name, the TLS certificate is checked against it, and a name the certificate was not
//! issued for is refused as a certificate problem (not taken for an outage).
//!
//! Names resolve through `/etc/netns/NS/hosts`, which `ip netns exec` puts in place of
//! `/etc/hosts` inside namespace NS; the test creates and removes those files.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::agent::ControlRef;
use common::control::{control_on_bridge, host_ip, CONTROL_IP};
use common::scenario::Host;
use common::*;

const NAME: &str = "cp.wgmesh.test";
const OTHER: &str = "other.wgmesh.test";

/// `/etc/netns/NS/hosts` for one namespace, removed (with its directory) on drop.
struct EtcHosts(PathBuf);

impl EtcHosts {
    fn new(ns: &Netns, entries: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{entries}"))
            .expect("write hosts");
        Self(dir)
    }
}

impl Drop for EtcHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn host(c: &Cluster, bridge: &Bridge, n: u8, tag: &str, url: &str, token: &str) -> Host {
    let ns = c.netns(tag);
    let ip = host_ip(n);
    bridge.plug(&ns, ip);
    let agent = c.agent_prepared(
        &ns,
        AgentSpec::joined(
            &format!("host-{tag}"),
            51820,
            &format!("{ip}:51820"),
            ControlRef::new(url, token),
        ),
    );
    Host {
        ns,
        ip,
        port: 51820,
        agent,
    }
}

#[test]
fn a_control_plane_advertised_by_name_is_reached_and_checked_by_name() {
    let Some(c) = Cluster::new("a_control_plane_advertised_by_name_is_reached_and_checked_by_name")
    else {
        return;
    };
    let spec = ControlSpec {
        advertise: vec![NAME.into(), CONTROL_IP.to_string()],
        ..ControlSpec::default()
    };
    let (bridge, cp) = control_on_bridge(&c, spec);
    let entries = format!("{CONTROL_IP} {NAME}\n{CONTROL_IP} {OTHER}\n");
    let _cp_hosts = EtcHosts::new(&cp.ns, &entries);
    let admin = std::fs::read_to_string(cp.admin_file()).unwrap();
    assert!(
        admin.contains(&format!("url = \"https://{NAME}:7443\"")),
        "admin.toml does not use the first advertised name:\n{admin}"
    );
    // The admin CLI, from the control plane's namespace, reaches it by name.
    let token = cp.token_create(&["--reusable"]);

    let by_name = host(&c, &bridge, 1, "a", &format!("https://{NAME}:7443"), &token);
    let _a_hosts = EtcHosts::new(&by_name.ns, &entries);
    by_name.agent.start();
    assert_eq!(by_name.agent.subnet(), "10.42.0.0/24");
    // The address is in the certificate too.
    let by_ip = host(
        &c,
        &bridge,
        2,
        "b",
        &format!("https://{CONTROL_IP}:7443"),
        &token,
    );
    by_ip.agent.start();
    assert_eq!(by_ip.agent.subnet(), "10.42.1.0/24");

    // A name that resolves to the control plane but is not in its certificate.
    let wrong = host(
        &c,
        &bridge,
        3,
        "c",
        &format!("https://{OTHER}:7443"),
        &token,
    );
    let _c_hosts = EtcHosts::new(&wrong.ns, &entries);
    let (st, out) = wrong.agent.run_expect_exit(Duration::from_secs(20));
    assert!(
        !st.success(),
        "an agent accepted a certificate not issued for {OTHER}:\n{out}"
    );
    assert!(
        out.contains("TLS certificate is not valid"),
        "the agent's error does not say the certificate is the problem:\n{out}"
    );
    assert_eq!(cp.node_names(), ["host-a", "host-b"]);
}
