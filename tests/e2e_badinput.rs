//! Bad configs and a busy port: the agent exits non-zero with a message naming the
//! place (file:line and field, or the file, or the port), and leaves nothing configured
//! in its namespace: no wgm0, no wgmbr0, no routes besides the underlay's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::traffic::HeldUdpSocket;
use common::*;

struct Host {
    agent: Arc<Agent>,
    ns: Netns,
    routes_before: Vec<String>,
    links_before: Vec<String>,
    _c: Cluster,
}

/// A host namespace on a veth underlay (with a far end), and a prepared agent whose
/// config has one peer, host-b, allowed 10.42.2.0/24.
fn host(test: &str) -> Option<Host> {
    let c = Cluster::new(test)?;
    let ns = c.netns("a");
    let far = c.netns("b");
    c.veth_underlay(&ns, &far);
    let peer = keys::KeyPair::generate();
    let agent = c.agent_prepared(
        &ns,
        AgentSpec::new("host-a", "10.42.1.0/24", 51820).peer(
            PeerSpec::new(&peer.public, &["10.42.2.0/24"])
                .name("host-b")
                .endpoint("198.18.0.2:51820"),
        ),
    );
    Some(Host {
        agent,
        routes_before: ns.routes(),
        links_before: ns.links(),
        ns,
        _c: c,
    })
}

use common::keys;

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in config:\n{text}"))
        + 1
}

impl Host {
    fn config(&self) -> String {
        self.agent.render(&self.agent.spec())
    }

    /// Writes `text` as the config, runs the agent, and checks it fails cleanly with a
    /// message containing every string in `expect`.
    fn expect_rejected(&self, text: Option<&str>, expect: &[String]) -> String {
        if let Some(t) = text {
            self.agent.write_config(t);
        }
        let (status, out) = self.agent.run_expect_exit(Duration::from_secs(20));
        assert!(
            !status.success(),
            "the agent exited successfully on bad input:\n{out}"
        );
        assert!(
            status.code().is_some(),
            "the agent died by a signal ({status}), not a clean error exit:\n{out}"
        );
        assert!(
            !out.contains("panicked at"),
            "the agent panicked instead of reporting the error:\n{out}"
        );
        for e in expect {
            assert!(
                out.contains(e.as_str()),
                "the error output does not contain {e:?}:\n{out}"
            );
        }
        self.assert_nothing_left();
        eprintln!("rejected as expected: {}", out.trim());
        out
    }

    fn assert_nothing_left(&self) {
        let links = self.ns.links();
        for l in ["wgm0", "wgmbr0"] {
            assert!(
                !links.iter().any(|x| x == l),
                "{l} left behind in {}: {links:?}",
                self.ns.name()
            );
        }
        assert_eq!(links, self.links_before, "links changed");
        assert_eq!(
            self.ns.routes(),
            self.routes_before,
            "routes left behind by the failed agent"
        );
    }
}

#[test]
fn malformed_public_key_is_rejected() {
    let Some(h) = host("malformed_public_key_is_rejected") else {
        return;
    };
    let bad = h
        .config()
        .replace(&h.agent.spec().peers[0].public_key, "bm90LWEta2V5");
    let line = line_of(&bad, "bm90LWEta2V5");
    let path = h.agent.config_path.display();
    h.expect_rejected(
        Some(&bad),
        &[format!("{path}:{line}:"), "peer[0].public_key".into()],
    );
}

#[test]
fn malformed_private_key_file_is_rejected() {
    let Some(h) = host("malformed_private_key_file_is_rejected") else {
        return;
    };
    std::fs::write(&h.agent.key_file, "not a key\n").unwrap();
    h.expect_rejected(None, &[h.agent.key_file.display().to_string()]);
}

#[test]
fn bad_cidr_is_rejected() {
    let Some(h) = host("bad_cidr_is_rejected") else {
        return;
    };
    let bad = h.config().replace("\"10.42.2.0/24\"", "\"10.42.2.0/33\"");
    let line = line_of(&bad, "10.42.2.0/33");
    let path = h.agent.config_path.display();
    h.expect_rejected(
        Some(&bad),
        &[format!("{path}:{line}:"), "peer[0].allowed_ips".into()],
    );
}

#[test]
fn subnet_with_host_bits_is_rejected() {
    let Some(h) = host("subnet_with_host_bits_is_rejected") else {
        return;
    };
    let bad = h
        .config()
        .replace("subnet = \"10.42.1.0/24\"", "subnet = \"10.42.1.7/24\"");
    let line = line_of(&bad, "10.42.1.7/24");
    let path = h.agent.config_path.display();
    h.expect_rejected(
        Some(&bad),
        &[format!("{path}:{line}:"), "agent.subnet".into()],
    );
}

#[test]
fn allowed_ips_overlapping_the_subnet_are_rejected() {
    let Some(h) = host("allowed_ips_overlapping_the_subnet_are_rejected") else {
        return;
    };
    let bad = h.config().replace(
        "allowed_ips = [\"10.42.2.0/24\"]",
        "allowed_ips = [\"10.42.2.0/24\", \"10.42.1.0/25\"]",
    );
    let line = line_of(&bad, "10.42.1.0/25");
    let path = h.agent.config_path.display();
    let out = h.expect_rejected(
        Some(&bad),
        &[format!("{path}:{line}:"), "peer[0].allowed_ips[1]".into()],
    );
    assert!(out.contains("overlap"), "does not say what is wrong: {out}");
}

#[test]
fn allowed_ips_overlapping_between_peers_are_rejected() {
    let Some(h) = host("allowed_ips_overlapping_between_peers_are_rejected") else {
        return;
    };
    let other = keys::KeyPair::generate();
    let bad = format!(
        "{}\n[[peer]]\nname = \"host-c\"\npublic_key = \"{}\"\nallowed_ips = [\"10.42.2.128/25\"]\n",
        h.config(),
        other.public
    );
    let line = line_of(&bad, "10.42.2.128/25");
    let path = h.agent.config_path.display();
    let out = h.expect_rejected(Some(&bad), &[format!("{path}:")]);
    assert!(
        out.contains(&format!("{path}:{line}:"))
            || out.contains(&format!("{path}:{}:", line_of(&bad, "10.42.2.0/24"))),
        "the error names neither overlapping line: {out}"
    );
    assert!(
        out.contains("peer[1].allowed_ips") || out.contains("peer[0].allowed_ips"),
        "the error names no allowed_ips field: {out}"
    );
    assert!(out.contains("overlap"), "does not say what is wrong: {out}");
}

#[test]
fn unknown_field_is_rejected() {
    let Some(h) = host("unknown_field_is_rejected") else {
        return;
    };
    let bad = h
        .config()
        .replacen("[agent]\n", "[agent]\nnmae = \"x\"\n", 1);
    let line = line_of(&bad, "nmae");
    let path = h.agent.config_path.display();
    h.expect_rejected(
        Some(&bad),
        &[format!("{path}:{line}:"), "agent".into(), "nmae".into()],
    );
}

#[test]
fn missing_config_file_is_rejected() {
    let Some(h) = host("missing_config_file_is_rejected") else {
        return;
    };
    std::fs::remove_file(&h.agent.config_path).unwrap();
    h.expect_rejected(
        None,
        &[
            h.agent.config_path.display().to_string(),
            "No such file".into(),
        ],
    );
}

#[test]
fn listen_port_in_use_is_rejected() {
    let Some(h) = host("listen_port_in_use_is_rejected") else {
        return;
    };
    let _held = HeldUdpSocket::bind(&h.ns, "0.0.0.0:51820");
    let out = h.expect_rejected(None, &["listen_port".into(), "51820".into()]);
    assert!(
        out.to_lowercase().contains("in use"),
        "the error does not say the port is in use: {out}"
    );
}

#[test]
fn a_second_agent_on_the_same_state_dir_refuses_to_start() {
    let Some(c) = Cluster::new("a_second_agent_on_the_same_state_dir_refuses_to_start") else {
        return;
    };
    let (a, _b) = scenario::two_hosts(&c, 51820, 51820);
    // The very same config again: the state directory's lock is what stops it, before it
    // touches the socket, the port or the devices of the running one.
    let out = a.ns.exec(&[
        agent::BIN,
        "agent",
        "--config",
        a.agent.config_path.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second agent started:\n{stderr}");
    assert!(
        stderr.contains("another `wgmesh agent` uses"),
        "it does not say why:\n{stderr}"
    );
    assert!(a.agent.is_running());
    assert!(
        a.agent.try_status().is_ok(),
        "the first agent stopped answering"
    );
}
