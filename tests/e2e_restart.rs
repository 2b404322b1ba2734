//! `kill -9` of an agent, then a start with the same config: the links and routes the
//! first run left behind do not stop it, attached workloads keep their addresses, and
//! traffic between workloads resumes.

mod common;

use std::time::Duration;

use common::scenario::{assert_pings, two_hosts, workload};
use common::*;

#[test]
fn agent_restarted_after_kill9_resumes_traffic() {
    let Some(c) = Cluster::new("agent_restarted_after_kill9_resumes_traffic") else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (wa, ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    assert_pings(&wb, &ipa, Duration::from_secs(5));

    let wa_addrs = wa.run(&["ip", "-o", "-4", "addr", "show"]);
    let old_pid = a.agent.pid();
    a.agent.kill9();
    assert!(!a.agent.is_running());
    // What kill -9 left behind stays there (no cleanup ran): the restart must cope.
    eprintln!("links left in a after kill -9: {:?}", a.ns.links());

    a.agent.restart();
    assert_ne!(a.agent.pid(), old_pid);
    let log = a.agent.current_log();
    for bad in ["File exists", "os error 17", "EEXIST"] {
        assert!(
            !log.contains(bad),
            "the restarted agent tripped over leftovers ({bad}):\n{log}"
        );
    }

    // The workload was not re-addressed, and the agent still knows it.
    assert_eq!(
        wa.run(&["ip", "-o", "-4", "addr", "show"]),
        wa_addrs,
        "the workload's addresses changed across the restart"
    );
    let st = a.agent.status();
    assert!(
        st["workloads"].as_array().is_some_and(|ws| ws
            .iter()
            .any(|w| w["netns"] == wa.name() && w["ip"].as_str().map(ip_of) == Some(&ipa))),
        "the restarted agent does not list workload {} with {ipa}: {st}",
        wa.name()
    );

    // Both directions resume. B still holds the old session, so allow it time to
    // notice and handshake again.
    assert_pings(&wa, &ipb, Duration::from_secs(30));
    assert_pings(&wb, &ipa, Duration::from_secs(30));
    TcpTransfer::new(&wa, &wb, &ipb, 5001, 4 << 20)
        .run()
        .expect("TCP after restart")
        .assert_intact("wa -> wb after restart");

    // A workload attached after the restart gets a fresh address, not the survivor's.
    let (wa2, ipa2) = workload(&c, &a, "wa2");
    assert_ne!(
        ipa2, ipa,
        "a new workload got the address of a surviving one"
    );
    assert_pings(&wa2, &ipb, Duration::from_secs(5));
}
