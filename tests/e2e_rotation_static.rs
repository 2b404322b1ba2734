//! Static mode key rotation: `wgmesh key rotate --socket` on host A while B's workload pings A's
//! every millisecond and streams to it; B's config then gets A's new key and is reloaded with
//! SIGHUP. No ping is lost and the stream arrives intact. A wireguard-go peer that keeps A's old
//! key handshakes with it during the grace window and is refused after it; with the new key it
//! works again.

mod common;

use std::time::Duration;

use common::scenario::{assert_pings, workload, Host};
use common::*;

const PORT: u16 = 51820;
const GRACE_SECS: u64 = 12;

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A fresh handshake from wireguard-go to A with `key` as A's key: the peer is removed and added
/// again, so no old session helps.
fn wggo_knows_a(wg: &WgGo, key: &str, old: Option<&str>, endpoint: &str) {
    if let Some(old) = old {
        wg.wg(&["set", &wg.ifname, "peer", old, "remove"]);
    }
    wg.wg(&["set", &wg.ifname, "peer", key, "remove"]);
    wg.set_peer(key, &["10.42.1.0/24"], Some(endpoint), None);
}

#[test]
fn key_rotate_socket_loses_no_packet_and_the_old_key_ends_with_the_grace_window() {
    let Some(c) = Cluster::new("key_rotate_socket_loses_no_packet") else {
        return;
    };
    let (ha, hb, hw) = (c.netns("a"), c.netns("b"), c.netns("w"));
    let ips = c.bridge_underlay(&[&ha, &hb, &hw]);
    let ep = |i: usize| format!("{}:{PORT}", ips[i]);
    let wg = c.wggo(&hw, PORT);
    let wg_peer = PeerSpec::new(wg.public_key(), &["10.42.9.0/24"])
        .name("wggo")
        .endpoint(&ep(2));
    let a_spec = AgentSpec::new("host-a", "10.42.1.0/24", PORT).peer(wg_peer);
    let a = c.agent_prepared(&ha, a_spec);
    let b = c.agent_prepared(&hb, AgentSpec::new("host-b", "10.42.2.0/24", PORT));
    a.set_spec(a.spec().peer(b.as_peer(Some(&ep(1)))));
    b.set_spec(b.spec().peer(a.as_peer(Some(&ep(0)))));
    a.start();
    b.start();
    let old_key = a.public_key().to_owned();
    wg.set_peer(&old_key, &["10.42.1.0/24"], Some(&ep(0)), None);
    wg.addr_add("10.42.9.1/24");
    wg.up();
    wg.route_add("10.42.1.0/24");
    let host = |ns: &Netns, i: usize, agent: &std::sync::Arc<Agent>| Host {
        ns: ns.clone(),
        ip: ips[i],
        port: PORT,
        agent: agent.clone(),
    };
    let (wa, ipa) = workload(&c, &host(&ha, 0, &a), "wa");
    let (wb, _ipb) = workload(&c, &host(&hb, 1, &b), "wb");
    assert_pings(&wb, &ipa, Duration::from_secs(15));
    assert_pings(&hw, &ipa, Duration::from_secs(15));

    // 6,000 pings at 1 ms and a paced stream span the rotation and B's reload.
    let (pings, stream, new_key) = std::thread::scope(|s| {
        let pinger = s.spawn(|| ping_count(&wb, &ipa, 6000, "0.001"));
        let stream = s.spawn(|| {
            TcpTransfer::new(&wb, &wa, &ipa, 5001, 24 << 20)
                .pace(Duration::from_millis(20))
                .run()
        });
        std::thread::sleep(Duration::from_secs(1));
        let socket = a.socket.to_string_lossy().into_owned();
        let grace = format!("{GRACE_SECS}s");
        let out = wgmesh(&["key", "rotate", "--socket", &socket, "--grace", &grace]);
        assert!(
            out.status.success(),
            "key rotate --socket failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let new_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::thread::sleep(Duration::from_secs(1));
        // B's config: the same peer, its key edited in place.
        let mut spec = b.spec();
        spec.peers[0].public_key = new_key.clone();
        b.set_spec(spec);
        b.reload();
        (pinger.join().unwrap(), stream.join().unwrap(), new_key)
    });
    assert_ne!(new_key, old_key, "the key changed");
    assert_eq!(
        pings.1, pings.0,
        "pings B -> A lost across the rotation: {}/{}",
        pings.1, pings.0
    );
    stream
        .expect("stream B -> A across the rotation")
        .assert_intact("wb -> wa across the rotation");
    let st = a.status();
    assert_eq!(st["public_key"].as_str(), Some(new_key.as_str()));
    assert_eq!(
        st["key_rotation"]["retiring_public_key"].as_str(),
        Some(old_key.as_str()),
        "A's status shows the rotation: {st}"
    );
    let b_peer = b.peer_status(&new_key);
    assert_eq!(
        b_peer["lanes"][0]["established"].as_bool(),
        Some(true),
        "B's tunnel to A's new key is up: {b_peer}"
    );
    // Both keys are on disk, 0600, until the old one is retired.
    assert_eq!(mode(&a.key_file), 0o600);
    assert_eq!(mode(&a.state_dir.join("key-rotation.json")), 0o600);
    let on_disk = std::fs::read_to_string(&a.key_file).unwrap();
    let on_disk_public = keys::wg_pubkey(on_disk.trim());
    assert_eq!(on_disk_public, new_key);

    // wireguard-go still has A's old key: a fresh handshake with it works in the grace window.
    wggo_knows_a(&wg, &old_key, None, &ep(0));
    assert_pings(&hw, &ipa, Duration::from_secs(10));

    // A second rotation is refused while one runs.
    let socket = a.socket.to_string_lossy().into_owned();
    let again = wgmesh(&["key", "rotate", "--socket", &socket]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("in progress"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // After the grace window the old key is gone: refused, and the record is gone.
    assert!(
        wait_until(Duration::from_secs(GRACE_SECS + 5), || a
            .status()
            .get("key_rotation")
            .is_none()),
        "the old key was not retired: {}",
        a.status()
    );
    assert!(!a.state_dir.join("key-rotation.json").exists());
    wggo_knows_a(&wg, &old_key, None, &ep(0));
    assert!(
        !ping_within(&hw, &ipa, Duration::from_secs(4)),
        "wireguard-go still reached A with the retired key"
    );
    // With the new key it works; B never stopped.
    wggo_knows_a(&wg, &new_key, Some(&old_key), &ep(0));
    assert_pings(&hw, &ipa, Duration::from_secs(10));
    assert_pings(&wb, &ipa, Duration::from_secs(5));
}

/// Whether any ping from `from` to `to` answers within `within`.
fn ping_within(from: &Netns, to: &str, within: Duration) -> bool {
    wait_until(within, || ping(from, to))
}
