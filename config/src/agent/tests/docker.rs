//! The `[docker]` table.

use super::*;

fn with_docker(table: &str) -> String {
    // `[docker]` is line 6, its first key line 7.
    format!("{}\n[docker]\n{table}", minimal("", ""))
}

#[test]
fn defaults_and_values() {
    let cfg = parse(&minimal("", "")).unwrap();
    assert_eq!(cfg.docker, None, "no table, no plugin");

    let cfg = parse(&with_docker("")).unwrap();
    let d = cfg.docker.expect("an empty table turns the plugin on");
    assert_eq!(d.plugin_dir, PathBuf::from("/run/docker/plugins"));
    assert_eq!(d.socket, PathBuf::from("/var/run/docker.sock"));
    assert!(d.networks.is_empty());
    assert_eq!(
        d.plugin_socket(),
        PathBuf::from("/run/docker/plugins/wgmesh.sock")
    );

    let cfg = parse(&with_docker(
        "plugin_dir = \"/srv/plugins\"\nsocket = \"/srv/docker.sock\"\nnetworks = [\"appnet\", \"db.net_2\"]",
    ))
    .unwrap();
    let d = cfg.docker.clone().unwrap();
    assert_eq!(d.plugin_socket(), PathBuf::from("/srv/plugins/wgmesh.sock"));
    assert_eq!(d.socket, PathBuf::from("/srv/docker.sock"));
    assert_eq!(d.networks, ["appnet", "db.net_2"]);
    // Written out and read back, it is the same table.
    let again = AgentConfig::from_toml(&cfg.to_toml(), Path::new(ORIGIN)).unwrap();
    assert_eq!(again.docker, cfg.docker);
}

#[test]
fn bad_values_name_the_field_and_line() {
    expect_error(
        &with_docker("networks = [\"appnet\", \"-bad\"]"),
        7,
        Some("docker.networks[1]"),
        "not a valid network name",
    );
    expect_error(
        &with_docker("networks = [\"appnet\", \"appnet\"]"),
        7,
        Some("docker.networks[1]"),
        "listed twice",
    );
    expect_error(
        &with_docker("networks = [\"\"]"),
        7,
        Some("docker.networks[0]"),
        "not a valid network name",
    );
    expect_error(
        &with_docker("plugin_dir = \"\""),
        7,
        Some("docker.plugin_dir"),
        "",
    );
    expect_error(
        &with_docker("networks = \"appnet\""),
        7,
        Some("docker.networks"),
        "an array of Docker network names",
    );
    expect_error(
        &with_docker("sockett = \"/x\""),
        7,
        Some("docker"),
        "unknown field `sockett`, expected one of `plugin_dir`, `socket`, `networks`",
    );
}
