//! Harness for the control plane's limits: a control plane with extra `control.toml` keys,
//! many idle TCP connections held from one namespace, many HTTPS requests on one connection
//! (`curl --next`). File modes and the open-file limit are in [`super::files`].

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::control::{ControlPlane, CONTROL_IP};
use super::netns::Netns;
use super::traffic::spawn_in;
use super::{Bridge, Cluster, ControlSpec};

/// A control plane on `bridge` (at [`CONTROL_IP`]) whose `control.toml` has `extra` appended
/// (lines of the `[control]` table), started.
pub fn control_with(c: &Cluster, bridge: &Bridge, extra: &str) -> Arc<ControlPlane> {
    let ns = c.netns("ctl");
    bridge.plug(&ns, CONTROL_IP);
    let cp = c.control_prepared(&ns, CONTROL_IP, ControlSpec::default());
    let mut text = fs::read_to_string(&cp.config_path).expect("read control.toml");
    text.push_str(extra);
    text.push('\n');
    cp.write_config(&text);
    cp.start();
    cp
}

/// Opens `n` TCP connections from `ns` to `to` and holds them (nothing is sent). Connections
/// the kernel cannot complete in time are skipped; returns those that were established.
pub fn hold_connections(ns: &Netns, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    spawn_in(ns, move || {
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(3)).ok())
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// How many of `streams` the other side has not closed (a read would block).
pub fn still_open(streams: &[TcpStream]) -> usize {
    streams
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).expect("nonblocking");
            let mut b = [0u8; 1];
            matches!(s.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .count()
}

/// One answer of [`curl_many`]: the status and the `Retry-After` header (empty if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: String,
}

/// `method path` once per body in `bodies` (or `count` times without a body when `bodies` is
/// empty), all on one HTTPS connection from `ns` (`curl --next`), as fast as curl sends them.
pub fn curl_many(
    cp: &ControlPlane,
    ns: &Netns,
    method: &str,
    path: &str,
    bearer: &str,
    bodies: &[String],
    count: usize,
) -> Vec<Answer> {
    let url = format!("{}{path}", cp.url());
    let ca = cp.ca_pem();
    let auth = format!("Authorization: Bearer {bearer}");
    let n = if bodies.is_empty() {
        count
    } else {
        bodies.len()
    };
    let mut args: Vec<String> = vec![
        "curl".into(),
        "-sS".into(),
        "--max-time".into(),
        "120".into(),
    ];
    for i in 0..n {
        if i > 0 {
            args.push("--next".into());
        }
        for a in [
            "--cacert",
            ca.to_str().unwrap(),
            "-X",
            method,
            "-H",
            &auth,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{retry-after}\\n",
        ] {
            args.push(a.into());
        }
        if let Some(b) = bodies.get(i) {
            args.extend(["-H".into(), "Content-Type: application/json".into()]);
            args.extend(["--data-binary".into(), b.clone()]);
        }
        args.push(url.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_answers(ns, &refs, n, "curl")
}

/// Runs one curl `args` (written with `-w "%{http_code} %header{retry-after}\n"` per request)
/// in `ns` and returns each request's answer; asserts it answered all `expected`. `who` names
/// the caller in the failure message.
pub fn run_answers(ns: &Netns, args: &[&str], expected: usize, who: &str) -> Vec<Answer> {
    let out = ns
        .command(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Answer> = text
        .lines()
        .map(|l| {
            let (code, retry) = l.split_once(' ').unwrap_or((l, ""));
            Answer {
                status: code.trim().parse().unwrap_or(0),
                retry_after: retry.trim().to_string(),
            }
        })
        .collect();
    assert_eq!(
        answers.len(),
        expected,
        "{who} answered {} of {expected} requests: {text}\n{}",
        answers.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    answers
}

/// How many times the agent log `log` says it applied a netmap.
pub fn netmaps_applied(log: &str) -> usize {
    log.matches("applied netmap revision").count()
}
