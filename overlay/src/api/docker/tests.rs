//! The plugin socket over a real unix socket, as dockerd calls it: raw HTTP/1.1 without a
//! `Content-Type`, and an agent that answers (or does not).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::*;

/// One raw HTTP request; returns (status, body).
fn post(socket: &Path, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: \r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().expect("a status");
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_the_agent_and_errors_reach_docker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins/wgmesh.sock");
    let listener = bind(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (tx, mut rx) = mpsc::channel::<PluginCall>(4);
    tokio::spawn(serve_waiting(listener, tx, Duration::from_millis(300)));
    // The agent: answers pools, refuses endpoints, never answers joins.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(c) = rx.recv().await {
            match c.call {
                Call::RequestPool(_) => {
                    let _ = c
                        .reply
                        .send(Ok(protocol::pool("p", "0.0.0.0/0", "10.42.1.1/24")));
                }
                Call::Join(_) => held.push(c.reply),
                _ => {
                    let _ = c.reply.send(Err("no such network".into()));
                }
            }
        }
    });
    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        let (status, body) = post(&p, "/Plugin.Activate", b"");
        assert_eq!(status, 200);
        assert!(body.contains("IpamDriver"), "{body}");
        let (status, body) = post(&p, "/IpamDriver.RequestPool", b"{\"Pool\":\"\"}\n");
        assert_eq!(
            (status, body.contains("\"PoolID\":\"p\"")),
            (200, true),
            "{body}"
        );
        let (status, body) = post(&p, "/NetworkDriver.CreateEndpoint", b"{}");
        assert_eq!(status, 500);
        assert_eq!(body, r#"{"Err":"wgmesh: no such network"}"#);
        let (status, body) = post(&p, "/NetworkDriver.CreateEndpoint", b"\x00junk{");
        assert_eq!(status, 400);
        assert!(
            body.contains("bad NetworkDriver.CreateEndpoint request"),
            "{body}"
        );
        let (status, _) = post(&p, "/NetworkDriver.Nope", b"{}");
        assert_eq!(status, 404);
        let (status, body) = post(&p, "/NetworkDriver.Join", b"{}");
        assert_eq!(status, 500);
        assert!(body.contains("did not answer within"), "{body}");
        // Junk that is not HTTP at all gets an error and leaves the socket serving.
        let mut s = UnixStream::connect(&p).unwrap();
        s.write_all(b"\x16\x03\x01 garbage\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"),
            "{out:?}"
        );
        assert_eq!(post(&p, "/Plugin.Activate", b"").0, 200);
    })
    .await
    .unwrap();
}
