//! Docker networking end to end (issue 11), with a real dockerd (Debian's docker.io 20.10) in
//! every host namespace, a control plane in its own, and `docker network create -d wgmesh
//! --ipam-driver wgmesh`: containers on two hosts talk over WireGuard only, get addresses that
//! are never given twice, are governed by the policy through their Docker labels, survive agent
//! and dockerd restarts, and bad input gets clear errors in Docker's output.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::docker_scene::{assert_pings, DockerHost, DockerScene};
use common::dockerd::{self, can_run_docker};
use common::policy::{policy_file, SEED_POLICY};
use common::sniffer::{Sniffer, Watch};
use common::*;

const NET: &str = "appnet";

fn cluster(test: &str) -> Option<Cluster> {
    if !can_run_docker(test) {
        return None;
    }
    Cluster::new(test)
}

/// The md5 sum that `sh -c SCRIPT` prints in container `name` (its first word); the script
/// must succeed.
fn md5_of(h: &DockerHost, name: &str, script: &str) -> String {
    let out = h.dockerd.exec(name, &["sh", "-c", script]);
    assert!(
        out.status.success(),
        "{script} in {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sum = stdout.split_whitespace().next().unwrap_or("").to_owned();
    assert_eq!(sum.len(), 32, "no md5 sum from {script}: {stdout}");
    sum
}

/// `wget` of `file` from `ip`'s port 8000, in container `from`: the md5 of what arrived.
fn fetched_md5(client: &DockerHost, from: &str, ip: &str, file: &str) -> String {
    md5_of(
        client,
        from,
        &format!("wget -q -O - http://{ip}:8000{file} | md5sum"),
    )
}

/// Writes `MIB` MiB of random bytes to /tmp/blob in container `name`, serves /tmp on port
/// 8000, and returns the file's md5.
fn blob(h: &DockerHost, name: &str, mib: u32) -> String {
    md5_of(
        h,
        name,
        &format!(
            "dd if=/dev/urandom of=/tmp/blob bs=1048576 count={mib} 2>/dev/null && httpd -p 8000 -h /tmp && md5sum /tmp/blob"
        ),
    )
}

#[test]
fn containers_on_two_hosts_talk_over_wireguard_only() {
    let Some(c) = cluster("containers_on_two_hosts_talk_over_wireguard_only") else {
        return;
    };
    // The agents create appnet themselves (`networks`).
    let s = DockerScene::new(&c, &["a", "b"], &[NET], |_| {});
    let (a, b) = (&s.hosts[0], &s.hosts[1]);
    // And a network created by hand, without --subnet, works too.
    a.dockerd.docker_ok(&[
        "network",
        "create",
        "-d",
        "wgmesh",
        "--ipam-driver",
        "wgmesh",
        "handnet",
    ]);
    let ip_h = a.sleeper("h1", "handnet", &[], &[]);
    assert!(ip_h.starts_with("10.42."), "{ip_h}");

    let sniffer = Sniffer::plug(&c, &s.bridge, &[&a.host, &b.host]);
    let watch = Watch::start(&c, &sniffer, &[&a.host, &b.host]);
    let ip_a = a.sleeper("c1", NET, &["role=one"], &[]);
    let ip_b = b.sleeper("c2", NET, &["role=two"], &[]);
    assert_ne!(
        ip_a.rsplit_once('.').unwrap().0,
        ip_b.rsplit_once('.').unwrap().0,
        "each host gives addresses of its own subnet"
    );
    assert_pings(a, "c1", &ip_b);
    assert_pings(b, "c2", &ip_a);
    assert_pings(a, "c1", &ip_h);
    // A container that sends cluster traffic to the host through docker_gwbridge instead (it
    // may: NET_ADMIN) reaches nothing: the host forwards into the tunnel only from the bridge.
    b.sleeper("evil", NET, &[], &["--cap-add", "NET_ADMIN"]);
    assert_pings(b, "evil", &ip_a);
    let script = format!(
        "gw=$(ip route | awk '/^default/ {{print $3}}'); ip route replace {ip_a}/32 via $gw dev eth1"
    );
    let out = b.dockerd.exec("evil", &["sh", "-c", &script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !b.pings("evil", &ip_a),
        "cluster traffic got in through docker_gwbridge"
    );
    // A container of dockerd's default bridge reaches no mesh container of its host. dockerd puts
    // its accept rule for docker0 at the top of FORWARD (at its start, and for every bridge it
    // sets up), above the agent's, which only follow later: the agent's copy in DOCKER-USER is
    // decided first.
    a.sleeper("outsider", "bridge", &[], &[]);
    assert!(
        !a.pings("outsider", &ip_a),
        "a container of docker0 reached a mesh container"
    );
    a.host.ns.run(&[
        "iptables", "-I", "FORWARD", "1", "-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT",
    ]);
    assert!(
        !a.pings("outsider", &ip_a),
        "a container of docker0 reached a mesh container past dockerd's rule above the agent's"
    );
    a.dockerd.docker_ok(&["rm", "-f", "outsider"]);
    b.dockerd.docker_ok(&["rm", "-f", "evil"]);
    // A transfer each way, checked end to end.
    let sum_a = blob(a, "c1", 8);
    let sum_b = blob(b, "c2", 8);
    assert_eq!(fetched_md5(b, "c2", &ip_a, "/blob"), sum_a, "A -> B");
    assert_eq!(fetched_md5(a, "c1", &ip_b, "/blob"), sum_b, "B -> A");
    let data = watch.finish("containers across hosts");
    assert!(
        data > 100,
        "the transfers crossed the underlay as WireGuard data ({data})"
    );

    // Status lists the containers with their names and labels, once the Docker API said.
    assert_eventually(
        Duration::from_secs(10),
        "c1 in A's status with labels",
        || {
            a.containers().iter().any(|k| {
                k["name"] == "c1"
                    && k["labels_known"] == true
                    && k["labels"]["role"] == "one"
                    && k["labels"]["container"] == "c1"
                    && k["ip"]
                        .as_str()
                        .is_some_and(|ip| ip.starts_with(&format!("{ip_a}/")))
            })
        },
    );
    let out = c_status_text(a);
    assert!(out.contains("c1") && out.contains("role=one"), "{out}");

    // From `docker run` to the first answered ping from the other host: the median of 10.
    let mut times = Vec::new();
    for i in 0..10 {
        let name = format!("t{i}");
        let t0 = Instant::now();
        let ip = a.sleeper(&name, NET, &[], &[]);
        assert_pings(b, "c2", &ip);
        times.push(t0.elapsed());
        a.dockerd.docker_ok(&["rm", "-f", &name]);
    }
    times.sort();
    eprintln!(
        "docker run -> first cross-host ping: median {:?} (min {:?}, max {:?}) over 10",
        times[4] + (times[5] - times[4]) / 2,
        times[0],
        times[9]
    );
}

fn c_status_text(h: &DockerHost) -> String {
    let socket = h.host.agent.socket.to_str().unwrap().to_owned();
    let out = wgmesh(&["status", "--socket", &socket]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The addresses of the containers the agent lists, checked unique; they must be those of
/// `docker ps`.
fn agent_addresses(h: &DockerHost) -> Vec<String> {
    let list = h.containers();
    let mut seen = BTreeSet::new();
    for k in &list {
        let ip = k["ip"].as_str().unwrap().to_owned();
        assert!(seen.insert(ip.clone()), "{ip} twice in {list:?}");
    }
    seen.into_iter().collect()
}

#[test]
fn addresses_are_never_given_twice_and_are_freed() {
    let Some(c) = cluster("addresses_are_never_given_twice_and_are_freed") else {
        return;
    };
    let s = DockerScene::new(&c, &["a", "b"], &[NET], |_| {});
    for h in &s.hosts {
        let mut running: Vec<(String, String)> = Vec::new();
        for i in 0..10 {
            let name = format!("w{i}");
            let ip = h.sleeper(&name, NET, &[], &[]);
            running.push((name, ip));
            // Every other round, one goes (its address is free for the next).
            if i % 2 == 1 {
                let (gone, _) = running.remove(0);
                h.dockerd.docker_ok(&["rm", "-f", &gone]);
            }
            let ips: BTreeSet<&String> = running.iter().map(|(_, ip)| ip).collect();
            assert_eq!(ips.len(), running.len(), "an address twice: {running:?}");
            let listed = agent_addresses(h);
            assert_eq!(
                listed.len(),
                running.len(),
                "the agent's list matches docker ps"
            );
            for (_, ip) in &running {
                assert!(
                    listed.iter().any(|l| l.starts_with(&format!("{ip}/"))),
                    "{ip} not in {listed:?}"
                );
            }
        }
        let names: Vec<&str> = running.iter().map(|(n, _)| n.as_str()).collect();
        let mut args = vec!["rm", "-f"];
        args.extend(names);
        h.dockerd.docker_ok(&args);
        assert!(
            h.containers().is_empty(),
            "all gone from the agent: {:?}",
            h.containers()
        );
        assert!(h.dockerd.running().is_empty());
        // Every reservation went: the state file holds none.
        let state = std::fs::read_to_string(h.host.agent.state_dir.join("workloads.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(
            state["docker"]["reserved"],
            serde_json::json!({}),
            "{state}"
        );
        // The addresses the ten had cool (every host's policy still knows them as theirs): a new
        // container gets the first address none of them had.
        let subnet = h.host.agent.subnet();
        let fresh = subnet.trim_end_matches(".0/24").to_owned() + ".12";
        assert_eq!(h.sleeper("again", NET, &[], &[]), fresh);
    }
}

#[test]
fn the_policy_follows_docker_labels() {
    let Some(c) = cluster("the_policy_follows_docker_labels") else {
        return;
    };
    let s = DockerScene::new(&c, &["a", "b"], &[NET], |_| {});
    let (a, b) = (&s.hosts[0], &s.hosts[1]);
    let path = policy_file(s.cp.dir(), "seed.toml", SEED_POLICY);
    let out = s.cp.cli(&["policy", "apply", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = a.sleeper("app", NET, &["app=secure-app"], &[]);
    a.serve("app", &[80, 8080]);
    b.sleeper("front", NET, &["role=frontend"], &[]);
    let unl = b.sleeper("unl", NET, &[], &[]);
    b.serve("unl", &[80]);
    // Allowed once the labels reached the control plane and the filters the hosts.
    assert!(
        wait_until(Duration::from_secs(20), || b.fetches("front", &app, 80)),
        "role=frontend on B does not reach app=secure-app on A on tcp/80\nA: {:#}\nB: {:#}\nping: {}",
        a.host.agent.status(),
        b.host.agent.status(),
        b.pings("front", &app)
    );
    assert!(
        !b.fetches("front", &app, 8080),
        "frontend reaches the app on 8080"
    );
    assert!(
        !b.fetches("unl", &app, 80),
        "an unlabelled container reaches the app"
    );
    // An image that says `LABEL role=frontend` gives its containers no identity: only the
    // labels a container is given count.
    b.dockerd.import_labelled("wgbox:front", "role=frontend");
    b.dockerd.docker_ok(&[
        "run",
        "-d",
        "--name",
        "imgfront",
        "--network",
        NET,
        "wgbox:front",
        "sleep",
        "100000",
    ]);
    assert_eventually(Duration::from_secs(10), "imgfront's labels known", || {
        b.containers()
            .iter()
            .any(|k| k["name"] == "imgfront" && k["labels_known"] == true)
    });
    let known = b.containers();
    let imgfront = known.iter().find(|k| k["name"] == "imgfront").unwrap();
    assert!(
        imgfront["labels"].get("role").is_none(),
        "the image's label became the container's: {imgfront}"
    );
    assert!(
        !b.fetches("imgfront", &app, 80),
        "a container whose image says role=frontend reaches the app"
    );
    assert!(
        !b.pings("unl", &app),
        "an unlabelled container pings the app"
    );
    assert!(
        !a.fetches("app", &unl, 80),
        "the app reaches an unlabelled container"
    );
    // Still allowed after all that (the denials changed nothing).
    assert!(b.fetches("front", &app, 80));
}

#[test]
fn containers_keep_their_addresses_across_agent_and_dockerd_restarts() {
    let Some(c) = cluster("containers_keep_their_addresses_across_agent_and_dockerd_restarts")
    else {
        return;
    };
    let s = DockerScene::new(&c, &["a", "b"], &[NET], |_| {});
    let (a, b) = (&s.hosts[0], &s.hosts[1]);
    let restart = ["--restart", "unless-stopped"];
    let ip_a = a.sleeper("c1", NET, &[], &restart);
    let ip_b = b.sleeper("c2", NET, &[], &[]);
    assert_pings(b, "c2", &ip_a);

    // The agent: kill -9, then a clean stop; the container keeps its address.
    a.host.agent.kill9();
    a.host.agent.start();
    assert_eq!(a.dockerd.ip_of("c1", NET), ip_a);
    assert_pings(b, "c2", &ip_a);
    assert_pings(a, "c1", &ip_b);
    a.host.agent.stop();
    a.host.agent.start();
    assert_pings(b, "c2", &ip_a);
    assert!(
        a.containers().iter().any(|k| k["ip"]
            .as_str()
            .is_some_and(|i| i.starts_with(&format!("{ip_a}/")))),
        "{:?}",
        a.containers()
    );

    // dockerd without --live-restore: the container is stopped and started again.
    a.dockerd.restart(false);
    assert_eventually(Duration::from_secs(30), "c1 runs again", || {
        a.dockerd.running().len() == 1
    });
    let ip = a.dockerd.ip_of("c1", NET);
    assert_pings(b, "c2", &ip);
    // Now with --live-restore (this restart still stops it: the old daemon had none).
    a.dockerd.restart(true);
    assert_eventually(Duration::from_secs(30), "c1 runs again", || {
        a.dockerd.running().len() == 1
    });
    let ip = a.dockerd.ip_of("c1", NET);
    let started = a
        .dockerd
        .docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", "c1"]);
    assert_pings(b, "c2", &ip);
    // A live-restored container keeps running through the restart, with its address.
    a.dockerd.restart(true);
    assert_eq!(
        a.dockerd
            .docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", "c1"]),
        started
    );
    assert_eq!(a.dockerd.ip_of("c1", NET), ip);
    assert_pings(b, "c2", &ip);
    // The network survived it all, and new containers join it.
    let ip_new = a.sleeper("c3", NET, &[], &[]);
    assert_pings(b, "c2", &ip_new);
    let listed = agent_addresses(a);
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[test]
fn bad_input_gets_clear_errors_and_disturbs_nothing() {
    let Some(c) = cluster("bad_input_gets_clear_errors_and_disturbs_nothing") else {
        return;
    };
    let s = DockerScene::new(&c, &["a"], &[NET, "othernet"], |d| {
        // A network of a listed name with another driver: left alone, reported.
        d.docker_ok(&["network", "create", "-d", "bridge", "othernet"]);
    });
    let a = &s.hosts[0];
    let _ = &s.cp;
    let ip = a.sleeper("c1", NET, &[], &[]);
    let subnet = a.host.agent.subnet();
    let gateway = subnet.trim_end_matches(".0/24").to_owned() + ".1";
    assert_pings(a, "c1", &gateway);
    let create = |extra: &[&str]| {
        let mut args = vec![
            "network",
            "create",
            "-d",
            "wgmesh",
            "--ipam-driver",
            "wgmesh",
        ];
        args.extend(extra);
        args.push("badnet");
        a.dockerd.docker_err(&args)
    };
    let e = create(&["-o", "wgmesh.bogus=1"]);
    assert!(e.contains("unknown driver option \"wgmesh.bogus\""), "{e}");
    let e = create(&["--subnet", "10.42.0.0/16"]);
    assert!(
        e.contains(&format!("is not inside this host's subnet {subnet}")),
        "{e}"
    );
    let e = create(&["--subnet", "10.99.0.0/24"]);
    assert!(e.contains(&format!("this host's subnet {subnet}")), "{e}");
    let e = create(&["-o", "com.docker.network.driver.mtu=9000"]);
    assert!(e.contains("use 576 to 1420"), "{e}");
    let e = a
        .dockerd
        .docker_err(&["network", "create", "-d", "wgmesh", "badnet"]);
    assert!(e.contains("--ipam-driver wgmesh"), "{e}");
    // Junk on the plugin socket: an HTTP error, and the socket serves on.
    let sock = a.dockerd.plugin_dir().join("wgmesh.sock");
    let mut conn = UnixStream::connect(&sock).unwrap();
    conn.write_all(b"\x00\x01junk that is not HTTP\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    let mut conn = UnixStream::connect(&sock).unwrap();
    conn.write_all(b"POST /NetworkDriver.CreateEndpoint HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope").unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(
        answer.contains("bad NetworkDriver.CreateEndpoint request"),
        "{answer}"
    );
    // A refused endpoint (the MAC is the agent's) leaves no veth, reservation or record.
    let links_before = a.host.ns.links();
    let e = a.dockerd.docker_err(&[
        "run",
        "-d",
        "--name",
        "badmac",
        "--network",
        NET,
        "--mac-address",
        "02:42:ac:11:00:09",
        dockerd::IMAGE,
        "sleep",
        "100",
    ]);
    assert!(e.contains("drop --mac-address"), "{e}");
    let _ = a.dockerd.docker(&["rm", "-f", "badmac"]);
    assert_eq!(
        a.host.ns.links(),
        links_before,
        "a refused endpoint left a link"
    );
    assert_eq!(a.containers().len(), 1, "{:?}", a.containers());
    let state = std::fs::read_to_string(a.host.agent.state_dir.join("workloads.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        state["docker"]["reserved"].as_object().map(|r| r.len()),
        Some(1),
        "{state}"
    );
    // The MTU option is honoured.
    a.dockerd.docker_ok(&[
        "network",
        "create",
        "-d",
        "wgmesh",
        "--ipam-driver",
        "wgmesh",
        "-o",
        "com.docker.network.driver.mtu=1300",
        "mtunet",
    ]);
    a.sleeper("m1", "mtunet", &[], &[]);
    let mtu = a.dockerd.exec("m1", &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1300");
    a.dockerd.docker_ok(&["rm", "-f", "m1"]);
    a.dockerd.docker_ok(&["network", "rm", "mtunet"]);
    // Nothing else changed: the container keeps its address and its network works.
    assert_eq!(a.dockerd.ip_of("c1", NET), ip);
    assert_pings(a, "c1", &gateway);
    let ip2 = a.sleeper("c2", NET, &[], &[]);
    assert_ne!(ip2, ip);
    assert!(
        a.dockerd
            .docker(&["network", "inspect", "badnet"])
            .status
            .code()
            != Some(0)
    );

    // The doctor: the foreign network first, then dockerd gone.
    let socket = a.host.agent.socket.to_str().unwrap().to_owned();
    let doctor = || wgmesh(&["doctor", "docker", "--socket", &socket]);
    a.wait_network("othernet", "wrong_driver");
    let out = doctor();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("network othernet: its driver is bridge, not wgmesh"),
        "{text}"
    );
    a.dockerd.docker_ok(&["network", "rm", "othernet"]);
    a.wait_network("othernet", "ready");
    let out = doctor();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    a.dockerd.stop();
    assert_eventually(
        Duration::from_secs(15),
        "doctor says dockerd is unreachable",
        || {
            let out = doctor();
            out.status.code() == Some(1)
                && String::from_utf8_lossy(&out.stdout).contains("dockerd is unreachable")
        },
    );
}

#[test]
fn a_container_whose_labels_are_unknown_is_unlabelled_for_the_policy() {
    let Some(c) = cluster("a_container_whose_labels_are_unknown_is_unlabelled_for_the_policy")
    else {
        return;
    };
    let s = DockerScene::new(&c, &["a", "b"], &[NET], |_| {});
    let (a, b) = (&s.hosts[0], &s.hosts[1]);
    let path = policy_file(s.cp.dir(), "seed.toml", SEED_POLICY);
    let out = s.cp.cli(&["policy", "apply", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = a.sleeper("app", NET, &["app=secure-app"], &[]);
    a.serve("app", &[80]);
    // B's agent cannot read the Docker API: its containers' labels stay unknown.
    let mut spec = b.host.agent.spec();
    let good = spec.docker.clone().unwrap();
    let mut blind = good.clone();
    blind.socket = b.host.agent.dir().join("no-docker.sock");
    spec.docker = Some(blind);
    b.host.agent.set_spec(spec.clone());
    b.host.agent.stop();
    b.host.agent.start();
    b.sleeper("front", NET, &["role=frontend"], &[]);
    assert_eventually(
        Duration::from_secs(10),
        "front listed, labels unknown",
        || {
            b.containers()
                .iter()
                .any(|k| k["labels_known"] == false && k["labels"] == serde_json::json!({}))
        },
    );
    assert!(
        !wait_until(Duration::from_secs(6), || b.fetches("front", &app, 80)),
        "a container with unknown labels reached the app as role=frontend"
    );
    // Once the agent can read them, the same container is allowed.
    spec.docker = Some(good);
    b.host.agent.set_spec(spec);
    b.host.agent.stop();
    b.host.agent.start();
    assert!(
        wait_until(Duration::from_secs(20), || b.fetches("front", &app, 80)),
        "role=frontend does not reach the app once its labels are known"
    );
}
