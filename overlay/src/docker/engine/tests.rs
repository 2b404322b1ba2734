//! The client against a scripted server on a unix socket: encoding, caps, timeouts, refusals.
//! The real dockerd is in `overlay/tests/docker_engine.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::*;

/// What the scripted server does with one connection.
enum Reply {
    /// Writes these byte strings in turn (a short pause between them), then closes.
    Send(Vec<Vec<u8>>),
    /// Reads the request and never answers.
    Silent,
}

/// A server on a fresh socket answering one connection per reply, in order; each request
/// (head and whatever body arrived with it) goes to the receiver.
fn serve(replies: Vec<Reply>) -> (tempfile::TempDir, Engine, mpsc::UnboundedReceiver<String>) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("d.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for reply in replies {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            // The body of a small POST follows its head at once.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
            {
                req.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
            match reply {
                Reply::Send(parts) => {
                    for part in parts {
                        if conn.write_all(&part).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Reply::Silent => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        }
    });
    (dir, Engine::new(socket), rx)
}

fn answer(status: &str, body: &str) -> Reply {
    Reply::Send(vec![format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()])
}

#[test]
fn path_segments_are_percent_encoded() {
    assert_eq!(percent_encode("app_net-1.x~"), "app_net-1.x~");
    assert_eq!(percent_encode("a/b c?d"), "a%2Fb%20c%3Fd");
    assert_eq!(percent_encode("é"), "%C3%A9");
}

#[tokio::test]
async fn a_missing_socket_is_unreachable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let e = Engine::new(socket.clone()).ping().await.unwrap_err();
    assert!(matches!(e, EngineError::Connect { .. }), "{e}");
    assert!(e.is_unreachable());
    let text = e.to_string();
    assert!(
        text.contains("GET /_ping") && text.contains(&*socket.to_string_lossy()),
        "{text}"
    );
}

#[tokio::test]
async fn create_sends_the_json_dockerd_wants_and_returns_the_id() {
    let (_dir, engine, mut requests) = serve(vec![answer(
        "201 Created",
        r#"{"Id":"abc123","Warning":""}"#,
    )]);
    let id = engine
        .create_network("appnet", "wgmesh", "wgmesh")
        .await
        .unwrap();
    assert_eq!(id, "abc123");
    let req = requests.recv().await.unwrap();
    assert!(
        req.starts_with("POST /networks/create HTTP/1.1\r\n"),
        "{req}"
    );
    let lower = req.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json\r\n"),
        "{req}"
    );
    assert!(lower.contains("host: docker\r\n"), "{req}");
    let body = req.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"Name": "appnet", "Driver": "wgmesh",
                           "IPAM": {"Driver": "wgmesh"}, "CheckDuplicate": true})
    );
}

#[tokio::test]
async fn a_refusal_keeps_the_message_even_when_it_is_not_json() {
    let (_dir, engine, _requests) = serve(vec![
        answer(
            "409 Conflict",
            r#"{"message":"network with name n2 already exists"}"#,
        ),
        answer("500 Internal Server Error", "something broke\n"),
    ]);
    let e = engine
        .create_network("n2", "bridge", "default")
        .await
        .unwrap_err();
    assert_eq!(
        e.docker_message(),
        Some("network with name n2 already exists")
    );
    assert_eq!(e.status(), Some(409));
    let e = engine.containers().await.unwrap_err();
    assert_eq!(e.docker_message(), Some("something broke"));
}

#[tokio::test]
async fn network_is_none_when_missing_or_only_an_id_prefix_matches() {
    let net = r#"{"Id":"beef00","Name":"other","Driver":"bridge","IPAM":{"Driver":"default"}}"#;
    let (_dir, engine, mut requests) = serve(vec![
        answer("404 Not Found", r#"{"message":"network x y not found"}"#),
        answer("200 OK", net),
        answer("200 OK", net),
    ]);
    assert_eq!(engine.network("x y").await.unwrap(), None);
    assert!(requests
        .recv()
        .await
        .unwrap()
        .starts_with("GET /networks/x%20y HTTP/1.1"));
    assert_eq!(engine.network("beef").await.unwrap(), None);
    let n = engine.network("other").await.unwrap().unwrap();
    assert_eq!((n.id.as_str(), n.driver.as_str()), ("beef00", "bridge"));
    assert_eq!(engine.network("").await.unwrap(), None);
}

#[tokio::test]
async fn a_silent_dockerd_times_out() {
    let (_dir, engine, _requests) = serve(vec![Reply::Silent, Reply::Silent]);
    let engine = engine.with_timeout(Duration::from_millis(200));
    let e = engine.containers().await.unwrap_err();
    assert!(matches!(e, EngineError::Timeout { .. }), "{e}");
    assert!(e.is_unreachable());
    let e = engine.events().await.unwrap_err();
    assert!(matches!(e, EngineError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn a_body_over_the_cap_is_an_error_not_a_truncated_list() {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n[",
        MAX_BODY + 2
    );
    let mut parts = vec![head.into_bytes()];
    parts.extend(std::iter::repeat_n(vec![b' '; 1 << 20], 17));
    let (_dir, engine, _requests) = serve(vec![Reply::Send(parts)]);
    let e = engine.containers().await.unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::TooLarge {
                limit: MAX_BODY,
                ..
            }
        ),
        "{e}"
    );
}

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

#[tokio::test]
async fn events_are_split_into_lines_across_chunks_and_the_end_is_an_error() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let a = r#"{"Type":"container","Action":"start","Actor":{"ID":"c1"}}"#;
    let b = r#"{"Type":"network","Action":"connect","Actor":{"ID":"n1"}}"#;
    let parts = vec![
        head,
        chunk(&a[..10]),
        chunk(&format!("{}\n\n{}", &a[10..], &b[..5])),
        chunk(&format!("{}\n", &b[5..])),
        b"0\r\n\r\n".to_vec(),
    ];
    let (_dir, engine, mut requests) = serve(vec![Reply::Send(parts)]);
    let mut events = engine.events().await.unwrap();
    let req = requests.recv().await.unwrap();
    assert!(
        req.starts_with(&format!("GET /events?filters={EVENT_FILTERS} HTTP/1.1")),
        "{req}"
    );
    let e = events.next().await.unwrap();
    assert_eq!(
        (e.kind.as_str(), e.action.as_str(), e.id.as_str()),
        ("container", "start", "c1")
    );
    let e = events.next().await.unwrap();
    assert_eq!(
        (e.kind.as_str(), e.action.as_str(), e.id.as_str()),
        ("network", "connect", "n1")
    );
    let e = events.next().await.unwrap_err();
    assert!(
        matches!(e, EngineError::Ended { .. }) && e.is_unreachable(),
        "{e}"
    );
}

#[tokio::test]
async fn an_endless_event_line_is_refused() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let filler = "x".repeat(64 << 10);
    let mut parts = vec![head];
    parts.extend(std::iter::repeat_n(chunk(&filler), 20));
    let (_dir, engine, _requests) = serve(vec![Reply::Send(parts)]);
    let mut events = engine.events().await.unwrap();
    let e = events.next().await.unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::TooLarge {
                limit: MAX_EVENT_LINE,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn the_event_filter_is_the_encoded_json() {
    let bytes = EVENT_FILTERS.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v, serde_json::json!({"type": ["container", "network"]}));
}
