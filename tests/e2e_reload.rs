//! SIGHUP reloads the config: a peer added to A's file becomes reachable while traffic
//! between A and B goes on untouched; an invalid file is refused (the agent keeps
//! running on the old config, traffic flows, and the log says why).

mod common;

use std::time::Duration;

use common::scenario::{assert_pings, hosts, workload, HostDef};
use common::*;

#[test]
fn sighup_adds_a_peer_and_survives_a_bad_file() {
    let Some(c) = Cluster::new("sighup_adds_a_peer_and_survives_a_bad_file") else {
        return;
    };
    let defs = [
        HostDef {
            tag: "a",
            subnet: "10.42.1.0/24",
            port: 51820,
        },
        HostDef {
            tag: "b",
            subnet: "10.42.2.0/24",
            port: 51820,
        },
        HostDef {
            tag: "c",
            subnet: "10.42.3.0/24",
            port: 51820,
        },
    ];
    // A knows only B; B knows A; C already knows A (A does not know C yet).
    let hs = hosts(&c, &defs, &[(0, 1), (1, 0), (2, 0)]);
    let (a, b, cc) = (&hs[0], &hs[1], &hs[2]);
    let (wa, _ipa) = workload(&c, a, "wa");
    let (wb, ipb) = workload(&c, b, "wb");
    let (_wc, ipc) = workload(&c, cc, "wc");

    assert_pings(&wa, &ipb, Duration::from_secs(15));
    assert!(
        !ping(&wa, &ipc),
        "A reached C's workload before C was in A's config"
    );

    // Traffic A <-> B that spans the reload: 100 pings at 0.1 s and a paced stream.
    let (ping_res, xfer_res) = std::thread::scope(|s| {
        let pinger = s.spawn(|| ping_count(&wa, &ipb, 100, "0.1"));
        let stream = s.spawn(|| {
            TcpTransfer::new(&wa, &wb, &ipb, 5001, 16 << 20)
                .pace(Duration::from_millis(25))
                .run()
        });
        std::thread::sleep(Duration::from_secs(2));
        let spec = a.agent.spec().peer(cc.agent.as_peer(Some(&cc.endpoint())));
        a.agent.set_spec(spec);
        a.agent.reload();
        assert_pings(&wa, &ipc, Duration::from_secs(15));
        (pinger.join().unwrap(), stream.join().unwrap())
    });
    let (sent, received) = ping_res;
    assert_eq!(
        received, sent,
        "pings A -> B lost across the reload: {received}/{sent}"
    );
    xfer_res
        .expect("TCP stream A -> B across the reload")
        .assert_intact("wa -> wb across reload");
    let peers = a.agent.status()["peers"].clone();
    assert_eq!(
        peers.as_array().map(Vec::len),
        Some(2),
        "A should list B and C: {peers}"
    );

    // An invalid file: unknown field on line 2.
    let good = a.agent.render(&a.agent.spec());
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(1, "nmae = \"oops\"");
    a.agent.write_config(&(lines.join("\n") + "\n"));
    let path = a.agent.config_path.display().to_string();
    let before = a.agent.current_log();
    a.agent.reload();
    let mut log = String::new();
    let logged = wait_until(Duration::from_secs(10), || {
        log = a.agent.current_log();
        log.len() > before.len() && log[before.len()..].contains("nmae")
    });
    assert!(
        logged,
        "the agent did not log why the reload failed:\n{}",
        &log[before.len().min(log.len())..]
    );
    let new = &log[before.len()..];
    assert!(
        new.contains(&format!("{path}:2:")),
        "the reload error does not name the place {path}:2:\n{new}"
    );
    assert!(a.agent.is_running(), "the agent exited on a bad reload");
    let st = a.agent.status();
    assert_eq!(
        st["peers"].as_array().map(Vec::len),
        Some(2),
        "the bad file changed the running config: {st}"
    );
    assert_pings(&wa, &ipb, Duration::from_secs(3));
    assert_pings(&wa, &ipc, Duration::from_secs(3));
    let (sent, received) = ping_count(&wa, &ipb, 10, "0.1");
    assert_eq!(received, sent, "pings lost after the bad reload");
}
