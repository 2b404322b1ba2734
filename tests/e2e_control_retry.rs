//! An agent whose join was committed but never acknowledged to it (the reply was lost, or it was
//! stopped mid-join) finishes the join with the credential it saved first, even though its
//! single-use token is now used; nobody else can use that token or the host's name.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::control::{control_on_bridge, joined_host_prepared};
use common::*;
use serde_json::Value;
use wgmesh_config::token::{HostCredential, JoinToken};

#[test]
fn a_join_whose_reply_was_lost_is_finished_with_the_saved_credential() {
    let Some(c) = Cluster::new("a_join_whose_reply_was_lost_is_finished_with_the_saved_credential")
    else {
        return;
    };
    let (bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&[]);
    let h = joined_host_prepared(&c, &bridge, &cp, "a", 1, &token);

    // What the agent writes before it sends its join: its credential, not yet acknowledged.
    let credential = HostCredential::generate().expose();
    let digest = token.parse::<JoinToken>().expect("join token").ca_digest;
    let saved = serde_json::json!({
        "version": "1", "url": cp.url(), "ca_digest": digest.to_string(),
        "name": "host-a", "credential": credential, "joined": false,
    });
    let path = h.agent.state_dir.join("control.json");
    std::fs::write(&path, saved.to_string()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The join reaches the control plane and is committed; the agent never sees the reply.
    let body = serde_json::json!({
        "token": token, "name": "host-a", "public_key": h.agent.public_key(),
        "credential": credential,
    });
    let (st, reply) = cp.curl("POST", "/v1/join", None, Some(&body.to_string()));
    assert_eq!(st, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    let subnet = reply["netmap"]["host"]["subnet"].clone();

    // The agent starts, joins again with the used token and its credential, and is let in.
    h.agent.start();
    assert_eq!(h.agent.status()["subnet"], subnet, "{}", h.agent.log());
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["joined"], true, "{saved}");
    assert_eq!(saved["credential"], credential.as_str());
    assert_eq!(cp.node_names(), ["host-a"]);

    // Someone else with the used token is refused, and so is a second join of the name.
    let b = joined_host_prepared(&c, &bridge, &cp, "b", 2, &token);
    let (st, out) = b.agent.run_expect_exit(Duration::from_secs(20));
    assert!(
        !st.success(),
        "host-b joined with a used single-use token:\n{out}"
    );
    assert!(
        out.contains("already used"),
        "host-b's error does not say why:\n{out}"
    );
    let other = cp.token_create(&[]);
    let body =
        serde_json::json!({"token": other, "name": "host-a", "public_key": h.agent.public_key()});
    let (st, reply) = cp.curl("POST", "/v1/join", None, Some(&body.to_string()));
    assert_eq!(st, 409, "a second join of host-a: {reply}");
    assert_eq!(cp.node_names(), ["host-a"]);
}
