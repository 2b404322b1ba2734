//! Tests of `cluster_cidr`: required in static mode, refused in control mode, holding the
//! subnet and every peer's allowed IPs and none of the endpoints; and `allowed_ip_error`.

use super::*;

/// A static config with `cluster` as its cluster CIDR and one peer with `allowed`.
fn with_cluster(cluster: &str, allowed: &str) -> String {
    format!(
        "[agent]\nname = \"host-a\"\nsubnet = \"10.42.1.0/24\"\ncluster_cidr = \"{cluster}\"\n\n\
         [[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.2.0/24\", \"{allowed}\"]\n"
    )
}

#[test]
fn cluster_cidr_is_read_and_round_trips() {
    let cfg = parse(&with_cluster("10.42.0.0/16", "10.42.3.0/24")).unwrap();
    assert_eq!(
        cfg.agent.cluster_cidr,
        Some("10.42.0.0/16".parse().unwrap())
    );
    assert_eq!(parse(&cfg.to_toml()).unwrap(), cfg);
}

#[test]
fn static_mode_requires_cluster_cidr() {
    let text = "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/24\"\n";
    expect_error(text, 1, Some("agent"), "missing field `cluster_cidr`");
}

#[test]
fn control_mode_refuses_cluster_cidr() {
    let text = "[agent]\nname = \"a\"\ncluster_cidr = \"10.42.0.0/16\"\n\n[control]\n\
                url = \"https://198.18.0.10:7443\"\n";
    expect_error(
        text,
        3,
        Some("agent.cluster_cidr"),
        "given by the control plane",
    );
}

#[test]
fn cluster_cidr_must_hold_the_subnet_and_the_peers() {
    let text =
        "[agent]\nname = \"a\"\nsubnet = \"10.43.1.0/24\"\ncluster_cidr = \"10.42.0.0/16\"\n";
    expect_error(
        text,
        3,
        Some("agent.subnet"),
        "not inside agent.cluster_cidr 10.42.0.0/16",
    );
    let shown = expect_error(
        &with_cluster("10.42.0.0/16", "198.18.0.0/24"),
        8,
        Some("peer[0].allowed_ips[1]"),
        "198.18.0.0/24 is not inside agent.cluster_cidr 10.42.0.0/16",
    );
    assert!(shown.starts_with(&format!("{ORIGIN}:8:32:")), "{shown}");
    expect_error(
        &with_cluster("10.42.0.0/16", "128.0.0.0/1"),
        8,
        Some("peer[0].allowed_ips[1]"),
        "must lie inside the cluster CIDR",
    );
}

#[test]
fn cluster_cidr_is_a_prefix_and_not_everything() {
    expect_error(
        &with_cluster("10.42.0.1/16", "10.42.3.0/24"),
        4,
        Some("agent.cluster_cidr"),
        "host bits set",
    );
    expect_error(
        &with_cluster("0.0.0.0/0", "10.42.3.0/24"),
        4,
        Some("agent.cluster_cidr"),
        "would close every address",
    );
}

#[test]
fn endpoints_lie_outside_the_cluster() {
    let text = "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/24\"\ncluster_cidr = \"10.0.0.0/8\"\n\
                endpoint = \"10.9.0.1:51820\"\n";
    expect_error(text, 5, Some("agent.endpoint"), "inside agent.cluster_cidr");
    let text = format!(
        "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/24\"\ncluster_cidr = \"10.0.0.0/8\"\n\n\
         [[peer]]\npublic_key = \"{KEY_B}\"\nendpoint = \"10.9.0.2:51820\"\n"
    );
    expect_error(&text, 8, Some("peer[0].endpoint"), "underlay address");
}

#[test]
fn allowed_ip_error_points_at_the_entry() {
    let text = with_cluster("10.42.0.0/16", "10.42.3.0/24");
    let origin = Path::new(ORIGIN);
    let e = AgentConfig::allowed_ip_error(&text, origin, 0, 1, "it overrides a route");
    assert_eq!(
        e.to_string(),
        format!("{ORIGIN}:8:32: peer[0].allowed_ips[1]: it overrides a route")
    );
    // An entry the text does not have: no position, still the field.
    let e = AgentConfig::allowed_ip_error(&text, origin, 3, 0, "gone");
    assert_eq!(
        e.to_string(),
        format!("{ORIGIN}: peer[3].allowed_ips[0]: gone")
    );
}
