//! Load generator for `scripts/bench-control.sh`: plays N agents against a running control
//! plane and prints what they saw.
//!
//!   control_bench --admin admin.toml [--hosts 1000] [--concurrency 32]
//!
//! 1. joins N hosts (C at a time), each with its own TLS connection, as agents do;
//! 2. holds N netmap long polls open (asking for deltas, as agents do), then makes one change
//!    (another host joins) and measures, for every poll, the time from the change's
//!    acknowledgement to the update arriving;
//! 3. the same for an endpoint change of one host.
//!
//! Prints `key value` lines for the script to put in its table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wgmesh_client::api::{JoinBody, TokenBody};
use wgmesh_client::client::Client;
use wgmesh_config::control::AdminFile;
use wgmesh_config::netmap::NetmapUpdate;
use wgmesh_config::token::{HostCredential, JoinToken};
use wgmesh_config::PrivateKey;

struct Args {
    admin: std::path::PathBuf,
    hosts: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        admin: "admin.toml".into(),
        hosts: 1000,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--admin" => a.admin = value.into(),
            "--hosts" => a.hosts = value.parse().expect("--hosts N"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency N"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

fn join_body(token: &str, name: String, port: u16) -> JoinBody {
    JoinBody {
        token: token.to_owned(),
        name,
        public_key: PrivateKey::generate().public_key(),
        endpoint: Some(std::net::SocketAddr::from(([198, 18, 7, 1], port))),
        labels: Default::default(),
        credential: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Opens one long poll per host at `revision`, waits until they are all in, runs `change`,
/// and returns each poll's delay after the change was acknowledged, sorted.
async fn fan_out<F: std::future::Future<Output = ()>>(
    agent: &Client,
    hosts: &[(String, HostCredential)],
    (revision, epoch): (u64, u64),
    expect_peers: usize,
    change: F,
) -> (Vec<Duration>, usize) {
    let ready = Arc::new(tokio::sync::Barrier::new(hosts.len() + 1));
    let mut polls = Vec::with_capacity(hosts.len());
    for (name, credential) in hosts {
        let (agent, name, credential, ready) = (
            agent.clone(),
            name.clone(),
            credential.clone(),
            Arc::clone(&ready),
        );
        polls.push(tokio::spawn(async move {
            ready.wait().await;
            // As agents poll: asking for changes only.
            let update = agent
                .netmap_update(
                    &name,
                    &credential,
                    (revision, epoch),
                    Duration::from_secs(60),
                )
                .await
                .expect("long poll")
                .expect("a change within 60 s");
            let (peers, delta) = match update {
                NetmapUpdate::Full(n) => (n.peers.len(), false),
                NetmapUpdate::Delta(d) => (d.peer_count, true),
            };
            assert_eq!(peers, expect_peers, "peers in {name}'s netmap");
            (Instant::now(), delta)
        }));
    }
    ready.wait().await;
    // Every poll's request is on the wire once the server has held them a moment.
    tokio::time::sleep(Duration::from_millis(500 + 3 * hosts.len() as u64)).await;
    change.await;
    let acked = Instant::now();
    let mut delays = Vec::with_capacity(polls.len());
    let mut deltas = 0;
    for p in polls {
        let (arrived, delta) = p.await.expect("poll task");
        delays.push(arrived.saturating_duration_since(acked));
        deltas += usize::from(delta);
    }
    delays.sort();
    (delays, deltas)
}

fn report(what: &str, delays: &[Duration]) {
    println!(
        "{what}_p50_ms {}\n{what}_p99_ms {}\n{what}_max_ms {}",
        ms(percentile(delays, 0.5)),
        ms(percentile(delays, 0.99)),
        ms(*delays.last().expect("at least one host"))
    );
}

/// Creates a reusable join token with `admin.toml`'s token; returns an agent's client (pinned to
/// the token's CA digest, as agents are) and the token.
async fn agent_and_token(args: &Args) -> (Client, String) {
    let file = AdminFile::load(&args.admin).expect("admin.toml");
    let admin = Client::with_ca(&file.url, file.ca_cert.der()).expect("admin client");
    let token = admin
        .create_token(
            &file.token,
            &TokenBody {
                ttl_secs: Some(3600),
                reusable: true,
                labels: Default::default(),
            },
        )
        .await
        .expect("token create")
        .token;
    let digest = token.parse::<JoinToken>().expect("token").ca_digest;
    (Client::pinned(&file.url, digest), token)
}

/// What the joins gave: every host's name and credential, the newest netmap revision, and the
/// control plane's epoch.
struct Joined {
    hosts: Vec<(String, HostCredential)>,
    revision: u64,
    epoch: u64,
}

/// Step 1: joins `args.hosts` hosts, `args.concurrency` at a time, and prints the join rate and
/// latencies.
async fn join_all(agent: &Client, token: &str, args: &Args) -> Joined {
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut joins = Vec::with_capacity(args.hosts);
    for i in 0..args.hosts {
        let (agent, token, slots) = (agent.clone(), token.to_owned(), Arc::clone(&slots));
        joins.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore");
            let t = Instant::now();
            let name = format!("bench-{i}");
            let reply = agent
                .join(&join_body(&token, name.clone(), 51820))
                .await
                .expect("join");
            let credential: HostCredential = reply.credential.parse().expect("credential");
            (
                name,
                credential,
                reply.netmap.revision,
                reply.netmap.epoch,
                t.elapsed(),
            )
        }));
    }
    let mut joined = Joined {
        hosts: Vec::with_capacity(args.hosts),
        revision: 0,
        epoch: 0,
    };
    let mut latencies = Vec::with_capacity(args.hosts);
    for j in joins {
        let (name, credential, rev, run, latency) = j.await.expect("join task");
        joined.epoch = run;
        joined.revision = joined.revision.max(rev);
        joined.hosts.push((name, credential));
        latencies.push(latency);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!("hosts {}", args.hosts);
    println!("concurrency {}", args.concurrency);
    println!(
        "joins_per_s {:.0}",
        args.hosts as f64 / elapsed.as_secs_f64()
    );
    println!("join_p50_ms {}", ms(percentile(&latencies, 0.5)));
    println!("join_p99_ms {}", ms(percentile(&latencies, 0.99)));
    joined
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = args();
    let (agent, token) = agent_and_token(&args).await;

    // 1. Joins.
    let Joined {
        hosts,
        mut revision,
        epoch,
    } = join_all(&agent, &token, &args).await;

    // 2. A new host: every other host's poll returns with it.
    let n = hosts.len();
    let newcomer = {
        let (agent, token) = (agent.clone(), token.clone());
        async move {
            agent
                .join(&join_body(&token, "bench-newcomer".into(), 51820))
                .await
                .expect("newcomer join");
        }
    };
    let (delays, deltas) = fan_out(&agent, &hosts, (revision, epoch), n, newcomer).await;
    report("join_fanout", &delays);
    println!("join_fanout_deltas {deltas}");
    revision += 1;

    // 3. An endpoint change of host 0.
    let (name0, cred0) = hosts[0].clone();
    let moved = {
        let agent = agent.clone();
        async move {
            agent
                .set_endpoint(
                    &name0,
                    &cred0,
                    Some(std::net::SocketAddr::from(([198, 18, 7, 2], 51821))),
                )
                .await
                .expect("endpoint change");
        }
    };
    let (delays, deltas) = fan_out(&agent, &hosts, (revision, epoch), n, moved).await;
    report("endpoint_fanout", &delays);
    println!("endpoint_fanout_deltas {deltas}");
}
