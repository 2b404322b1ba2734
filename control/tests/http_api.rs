//! The HTTPS API end to end over loopback: a real server (TLS, HTTP, file store) and the real
//! client, without namespaces. Covers what the pure service tests cannot: status codes and JSON
//! of refusals made by the HTTP layer, the long poll waking on a change, TLS pinning.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wgmesh_client::api::{ApiReason, JoinBody, JoinReply, TokenBody};
use wgmesh_client::client::{Client, ClientError};
use wgmesh_config::control::{ControlUrl, Host};
use wgmesh_config::netmap::NetmapUpdate;
use wgmesh_config::token::{AdminToken, CaDigest, HostCredential};
use wgmesh_config::PublicKey;
use wgmesh_control::audit::AuditLog;
use wgmesh_control::http::{self, Shared};
use wgmesh_control::pki::Pki;
use wgmesh_control::registry::{Registry, RotationSettings};
use wgmesh_control::service::Control;
use wgmesh_control::store::{FileStore, Store};

struct Server {
    url: ControlUrl,
    pki: Pki,
    admin: AdminToken,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    start_with(http::ServeLimits::default()).await
}

async fn start_with(limits: http::ServeLimits) -> Server {
    start_scheduling(limits, None).await
}

/// A server within `limits`; with `rotations`, scheduling key rotations with those settings,
/// its scheduler ticking at the given period.
async fn start_scheduling(
    limits: http::ServeLimits,
    rotations: Option<(RotationSettings, Duration)>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let localhost = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let pki = Pki::load_or_create(dir.path(), std::slice::from_ref(&localhost)).unwrap();
    let mut store = FileStore::open(dir.path()).unwrap();
    let mut registry: Registry = store.load().unwrap();
    let m = registry
        .plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
        .unwrap();
    store.commit(&m).unwrap();
    registry.apply(&m).unwrap();
    let admin = AdminToken::generate();
    let audit = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
    let mut control = Control::new(
        registry,
        Box::new(store),
        audit,
        admin.hash(),
        pki.ca_der().to_vec(),
    );
    if let Some((settings, _)) = rotations {
        control = control.with_rotation(settings);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let shared = Shared::with_limits(control, limits);
    if let Some((_, tick)) = rotations {
        tokio::spawn(http::schedule_rotations(Arc::clone(&shared), tick));
    }
    tokio::spawn(http::serve(listener, pki.server_config(), shared, async {
        let _ = stopped.await;
    }));
    Server {
        url: ControlUrl::new(localhost, port).unwrap(),
        pki,
        admin,
        stop: Some(stop),
        _dir: dir,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn join_body(token: &str, name: &str, key: u8) -> JoinBody {
    JoinBody {
        token: token.to_owned(),
        name: name.to_owned(),
        public_key: PublicKey::from_bytes([key; 32]),
        endpoint: None,
        labels: Default::default(),
        credential: None,
    }
}

/// The admin client, an agent client, a reusable token, and host-a joined with it (its reply
/// and credential).
async fn host_a_joined(server: &Server) -> (Client, Client, String, JoinReply, HostCredential) {
    let admin = Client::with_ca(&server.url, server.pki.ca_der()).unwrap();
    let body = TokenBody {
        reusable: true,
        ..TokenBody::default()
    };
    let token = admin
        .create_token(&server.admin, &body)
        .await
        .unwrap()
        .token;
    let agent = Client::pinned(&server.url, server.pki.ca_digest());
    let a = agent.join(&join_body(&token, "host-a", 1)).await.unwrap();
    let credential: HostCredential = a.credential.parse().unwrap();
    (admin, agent, token, a, credential)
}

/// A raw request, for bodies the typed client cannot send.
async fn raw(server: &Server, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let bearer = server.admin.expose().to_string();
    let (status, json, _) = raw_as(server, method, path, Some(&bearer), body).await;
    (status, json)
}

/// A raw request with `bearer` (or none): the status, the JSON body and the `Retry-After`.
async fn raw_as(
    server: &Server,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> (u16, serde_json::Value, Option<String>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let mut sender = connect(server).await;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_another_host_joins() {
    let server = start().await;
    let (admin, agent, token, a, credential) = host_a_joined(&server).await;
    // A new token changes no netmap: the poll waits out its 1 s and says so with 204 (None).
    admin
        .create_token(&server.admin, &TokenBody::default())
        .await
        .unwrap();
    let started = Instant::now();
    let none = agent
        .netmap(
            "host-a",
            &credential,
            a.netmap.revision,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    assert!(started.elapsed() >= Duration::from_millis(900));

    let poll = {
        let agent = agent.clone();
        let credential = credential.clone();
        let revision = a.netmap.revision;
        tokio::spawn(async move {
            let polled = Instant::now();
            let netmap = agent
                .netmap("host-a", &credential, revision, Duration::from_secs(20))
                .await
                .unwrap();
            (netmap, polled)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let joined = Instant::now();
    agent.join(&join_body(&token, "host-b", 2)).await.unwrap();
    let (netmap, _) = poll.await.unwrap();
    let latency = joined.elapsed();
    let netmap = netmap.expect("a newer netmap");
    assert_eq!(netmap.peers.len(), 1);
    assert_eq!(netmap.peers[0].name, "host-b");
    assert!(latency < Duration::from_secs(2), "took {latency:?}");
    // Asked for changes only, host-a gets a delta that turns its netmap into the new one.
    let update = agent
        .netmap_update(
            "host-a",
            &credential,
            (a.netmap.revision, a.netmap.epoch),
            Duration::ZERO,
        )
        .await
        .unwrap()
        .expect("a change");
    let NetmapUpdate::Delta(delta) = update else {
        panic!("a host one change behind gets a delta: {update:?}");
    };
    assert_eq!(a.netmap.apply_delta(&delta).unwrap(), netmap);
    // A netmap of another run of the control plane is answered at once, with the whole netmap,
    // even at the current revision.
    let started = Instant::now();
    let update = agent
        .netmap_update(
            "host-a",
            &credential,
            (netmap.revision, netmap.epoch ^ 2),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert!(matches!(update, Some(NetmapUpdate::Full(_))), "{update:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    eprintln!("long poll woke {latency:?} after the join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_with_the_documented_status() {
    let server = start().await;
    let (status, body) = raw(&server, "POST", "/v1/join", b"{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["reason"], "bad_request");
    assert!(body["error"].as_str().unwrap().contains("not valid JSON"));
    let (status, body) = raw(&server, "POST", "/v1/tokens", br#"{"ttl_secs":"soon"}"#).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("bad_request"))
    );
    for junk in [&b"[]"[..], b"null", b"7", br#""ttl""#] {
        let (status, body) = raw(&server, "POST", "/v1/tokens", junk).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (400, Some("bad_request"))
        );
    }
    let (status, body) = raw(&server, "POST", "/v1/tokens", &vec![b' '; 70 * 1024]).await;
    assert_eq!((status, body["reason"].as_str()), (413, Some("too_large")));
    let (status, body) = raw(&server, "GET", "/v1/nope", b"").await;
    assert_eq!((status, body["reason"].as_str()), (404, Some("not_found")));
    let (status, body) = raw(&server, "GET", "/v1/join", b"").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = raw(&server, "DELETE", "/v1/nodes/ghost", b"").await;
    assert_eq!((status, body["reason"].as_str()), (404, Some("not_found")));
    // Nothing was stored by any of that.
    let (status, body) = raw(&server, "GET", "/v1/nodes", b"").await;
    assert_eq!((status, body), (200, serde_json::json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinned_to_another_ca_refuses_to_talk() {
    let server = start().await;
    let wrong = Client::pinned(&server.url, CaDigest::of(b"some other CA"));
    let err = wrong
        .join(&join_body("WGM1-x-y", "host-a", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::WrongCa { .. }), "{err:?}");
    assert!(err.is_permanent());
    assert!(err.to_string().contains("CA digest"), "{err}");
    // An admin CLI with another CA certificate fails the TLS handshake, too.
    let other = tempfile::tempdir().unwrap();
    let other_pki = Pki::load_or_create(other.path(), &[server.url.host().clone()]).unwrap();
    let admin = Client::with_ca(&server.url, other_pki.ca_der()).unwrap();
    let err = admin.list_nodes(&server.admin).await.unwrap_err();
    assert!(matches!(err, ClientError::Certificate { .. }), "{err:?}");
    assert!(err.is_permanent(), "a certificate problem is not an outage");
    // The right one works.
    let admin = Client::with_ca(&server.url, server.pki.ca_der()).unwrap();
    assert!(admin.list_nodes(&server.admin).await.unwrap().is_empty());
    let err = admin.list_nodes(&AdminToken::generate()).await.unwrap_err();
    assert_eq!(err.reason(), Some(ApiReason::Unauthenticated));
    // A name that is not a host name never reaches the server as a path.
    let err = admin
        .remove_node(&server.admin, "host-a?x=1")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Invalid(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_refused_too_often_gets_429_while_hosts_go_on() {
    let server = start().await;
    let (admin, agent, _, _, credential) = host_a_joined(&server).await;
    // Someone guessing admin tokens from this (loopback) address.
    let mut statuses = Vec::new();
    for _ in 0..wgmesh_control::limiter::REFUSALS_PER_WINDOW + 5 {
        let err = admin.list_nodes(&AdminToken::generate()).await.unwrap_err();
        statuses.push(err.reason());
    }
    let limited = statuses
        .iter()
        .filter(|r| **r == Some(ApiReason::TooManyRequests))
        .count();
    assert_eq!(limited, 5, "{statuses:?}");
    // A host that authenticates still gets its netmap from the same address.
    let netmap = agent
        .netmap("host-a", &credential, 0, Duration::ZERO)
        .await
        .unwrap();
    assert!(netmap.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_reports_over_budget_get_a_retryable_429_and_bad_endpoints_a_400() {
    let server = start().await;
    let (_, agent, _, _, credential) = host_a_joined(&server).await;
    let loopback = "127.0.0.1:51820".parse().unwrap();
    let err = agent
        .set_endpoint("host-a", &credential, Some(loopback))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(ApiReason::BadEndpoint), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    // The refused report above took one of the 10 at once.
    for port in 1..wgmesh_control::limiter::ENDPOINT_BURST {
        let endpoint = std::net::SocketAddr::from(([198, 18, 0, 1], 50000 + port as u16));
        agent
            .set_endpoint("host-a", &credential, Some(endpoint))
            .await
            .unwrap();
    }
    let endpoint = "198.18.0.1:51820".parse().unwrap();
    let err = agent
        .set_endpoint("host-a", &credential, Some(endpoint))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(ApiReason::TooManyRequests), "{err}");
    assert!(!err.is_permanent(), "a 429 is worth retrying later");
    assert!(err.to_string().contains("retry after 6 s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_reports_are_kept_listed_budgeted_and_may_exceed_64_kib() {
    use wgmesh_client::api::{WorkloadReport, WorkloadsBody, MAX_BODY};
    use wgmesh_control::limiter::{WORKLOADS_BURST, WORKLOADS_REFILL};
    let server = start().await;
    let (admin, agent, _, a, credential) = host_a_joined(&server).await;
    assert_eq!(a.netmap.host.subnet.to_string(), "10.42.0.0/24");
    // Every usable address of the /24, with long names and labels: over the 64 KiB of other
    // calls, within a workload report's limit.
    let body = WorkloadsBody {
        workloads: (2..=254u8)
            .map(|i| WorkloadReport {
                name: format!("{i:03}-{}", "n".repeat(200)),
                ip: IpAddr::V4(Ipv4Addr::new(10, 42, 0, i)),
                labels: [
                    ("role".to_owned(), format!("r{i}")),
                    ("example.com/team".to_owned(), "t".repeat(60)),
                ]
                .into(),
            })
            .collect(),
    };
    assert!(serde_json::to_vec(&body).unwrap().len() > MAX_BODY);
    agent
        .report_workloads("host-a", &credential, &body)
        .await
        .unwrap();
    let nodes = admin.list_nodes(&server.admin).await.unwrap();
    assert_eq!(nodes[0].workloads, body.workloads, "node list shows them");

    // A refused report is a 400 that names what is wrong.
    let stolen = WorkloadsBody {
        workloads: vec![WorkloadReport {
            name: "x".into(),
            ip: "10.42.7.2".parse().unwrap(),
            labels: Default::default(),
        }],
    };
    let err = agent
        .report_workloads("host-a", &credential, &stolen)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(ApiReason::BadRequest), "{err}");
    assert!(err.to_string().contains("10.42.7.2"), "{err}");
    assert!(err.is_permanent());
    // Two of the burst are spent; the rest go through, then 429 until the bucket refills.
    for _ in 2..WORKLOADS_BURST {
        agent
            .report_workloads("host-a", &credential, &WorkloadsBody::default())
            .await
            .unwrap();
    }
    let err = agent
        .report_workloads("host-a", &credential, &WorkloadsBody::default())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(ApiReason::TooManyRequests), "{err}");
    assert!(!err.is_permanent(), "a 429 is worth retrying later");
    let secs = WORKLOADS_REFILL.as_secs();
    assert!(
        err.to_string().contains(&format!("retry after {secs} s")),
        "{err}"
    );
    let nodes = admin.list_nodes(&server.admin).await.unwrap();
    assert!(
        nodes[0].workloads.is_empty(),
        "the last accepted list was empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_looping_forbidden_calls_gets_429_while_other_hosts_go_on() {
    use wgmesh_control::limiter::{HOST_REFUSAL_BURST, HOST_REFUSAL_REFILL};
    let server = Arc::new(start().await);
    let (_, agent, token, _, credential_a) = host_a_joined(&server).await;
    let b = agent.join(&join_body(&token, "host-b", 2)).await.unwrap();
    let credential_b: HostCredential = b.credential.parse().unwrap();
    let bearer_a = credential_a.expose();
    // host-a reads host-b's netmap, lists the hosts, removes host-b: each refused 403.
    let looping = {
        let server = Arc::clone(&server);
        let bearer = bearer_a.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let calls = [
                ("GET", "/v1/hosts/host-b/netmap?revision=0&wait=0"),
                ("GET", "/v1/nodes"),
                ("DELETE", "/v1/nodes/host-b"),
            ];
            let mut answers = Vec::new();
            for i in 0..150 {
                let (method, path) = calls[i % calls.len()];
                let (status, body, retry) = raw_as(&server, method, path, Some(&bearer), b"").await;
                answers.push((status, body["reason"].as_str().map(str::to_owned), retry));
            }
            (answers, started.elapsed())
        })
    };
    // Meanwhile another host joins and host-b polls, fast.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    agent.join(&join_body(&token, "host-c", 3)).await.unwrap();
    let netmap = agent
        .netmap("host-b", &credential_b, 0, Duration::ZERO)
        .await
        .unwrap()
        .expect("a netmap");
    let served = t.elapsed();
    assert!(
        netmap.peers.iter().any(|p| p.name == "host-c"),
        "{netmap:?}"
    );
    assert!(
        served < Duration::from_secs(2),
        "a join and a poll took {served:?}"
    );

    let (answers, took) = looping.await.unwrap();
    let forbidden = answers.iter().filter(|a| a.0 == 403).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    eprintln!(
        "150 forbidden calls in {took:?}: {forbidden} refused 403, {} answered 429; \
         a join and a poll meanwhile took {served:?}",
        limited.len()
    );
    assert_eq!(forbidden + limited.len(), answers.len(), "{answers:?}");
    let refills = (took.as_millis() / HOST_REFUSAL_REFILL.as_millis()) as usize;
    let budget = HOST_REFUSAL_BURST as usize;
    assert!(
        (budget..=budget + refills + 1).contains(&forbidden),
        "{forbidden} calls refused 403 (and audited) in {took:?}: the budget is {budget} at once, \
         then one per {HOST_REFUSAL_REFILL:?}"
    );
    assert!(
        answers[..budget].iter().all(|a| a.0 == 403),
        "the first {budget} are refused 403: {answers:?}"
    );
    assert!(
        limited
            .iter()
            .all(|a| a.1.as_deref() == Some("too_many_requests") && a.2.as_deref() == Some("1")),
        "429s say too_many_requests and Retry-After: 1: {limited:?}"
    );
    // Only the refusals within the budget were audited.
    let audit = std::fs::read_to_string(server._dir.path().join("audit.jsonl")).unwrap();
    let audited = audit
        .lines()
        .filter(|l| l.contains("\"refused\":\"forbidden\"") && l.contains("host-a"))
        .count();
    assert_eq!(audited, forbidden, "{audit}");
    // While over its budget, host-a's own poll waits too (a forbidden call first takes any
    // token refilled since; a refill can still land just between, so a few tries).
    let mut own = Vec::new();
    for _ in 0..3 {
        raw_as(&server, "GET", "/v1/nodes", Some(&bearer_a), b"").await;
        let path = "/v1/hosts/host-a/netmap?revision=0&wait=0";
        own.push(raw_as(&server, "GET", path, Some(&bearer_a), b"").await.0);
        if own.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(own.last(), Some(&429), "host-a's own polls: {own:?}");
    tokio::time::sleep(HOST_REFUSAL_REFILL).await;
    let netmap = agent
        .netmap("host-a", &credential_a, 0, Duration::ZERO)
        .await
        .unwrap();
    assert!(netmap.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_bearer_is_refused_401_without_an_audit_line() {
    let server = start().await;
    for (method, path) in [
        ("GET", "/v1/nodes"),
        ("GET", "/v1/tokens"),
        ("POST", "/v1/tokens"),
        ("DELETE", "/v1/nodes/host-a"),
        ("GET", "/v1/hosts/host-a/netmap?revision=0&wait=0"),
        ("PUT", "/v1/hosts/host-a/endpoint"),
    ] {
        let (status, body, _) = raw_as(&server, method, path, None, b"{}").await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (401, Some("unauthenticated")),
            "{method} {path}: {body}"
        );
    }
    let audit = std::fs::read_to_string(server._dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(
        audit, "",
        "no audit line for requests without any credential"
    );
}

/// A policy of `n` allow rules, `rule-I` from `tier=tI` to `app=aI` on `tcp/(1000 + I)`, and
/// one test.
fn policy_of(n: usize) -> String {
    let mut text = String::from("default = \"deny\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "\n[[rule]]\nname = \"rule-{i}\"\nfrom = {{ tier = \"t{i}\" }}\nto = {{ app = \"a{i}\" \
             }}\nports = [\"tcp/{}\"]\n",
            1000 + i
        ));
    }
    text.push_str(
        "\n[[test]]\nfrom = { tier = \"t7\" }\nto = { app = \"a7\" }\nport = \"tcp/1007\"\n\
         expect = \"allow\"\n",
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_of_a_thousand_rules_fits_its_route_and_explain_takes_encoded_selectors() {
    use wgmesh_client::api::{ExplainQuery, PolicyBody, MAX_BODY, MAX_POLICY_BODY};
    use wgmesh_config::policy::Action;

    let server = start().await;
    let admin = Client::with_ca(&server.url, server.pki.ca_der()).unwrap();
    let text = policy_of(1000);
    assert!(text.len() > MAX_BODY, "{} bytes", text.len());
    let body = PolicyBody {
        text: text.clone(),
        origin: "big policy.toml".into(),
    };
    let applied = admin.apply_policy(&server.admin, &body).await.unwrap();
    assert_eq!((applied.rules, applied.tests), (1000, 1));
    let shown = admin.policy(&server.admin).await.unwrap().policy.unwrap();
    assert_eq!((shown.text, shown.revision), (text, applied.revision));
    let query = |from: &str, to: &str, port: &str| ExplainQuery {
        from: from.into(),
        to: to.into(),
        port: port.into(),
    };
    let e = admin
        .explain_policy(
            &server.admin,
            &query("tier=t999,x=y", "app=a999", "tcp/1999"),
        )
        .await
        .unwrap();
    assert_eq!(
        (e.verdict, e.rule.as_deref()),
        (Action::Allow, Some("rule-999"))
    );
    assert_eq!(e.from.labels.len(), 2);
    let e = admin
        .explain_policy(&server.admin, &query("tier=t999", "app=a999", "icmp"))
        .await
        .unwrap();
    assert_eq!((e.verdict, e.rule), (Action::Deny, None));
    let err = admin
        .explain_policy(&server.admin, &query("host-x/web", "app=a1", "tcp/1"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(ApiReason::NotFound), "{err}");
    // A query without a port names the forms.
    let (status, body) = raw(&server, "GET", "/v1/policy/explain?from=a%3Db&to=", b"").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("?from=SEL&to=SEL&port=PROTO/PORT"),
        "{body}"
    );
    // Bodies past the route's limit are refused, and the policy in force stays.
    let huge = serde_json::json!({"text": " ".repeat(MAX_POLICY_BODY), "origin": "x"});
    let (status, body) = raw(&server, "PUT", "/v1/policy", huge.to_string().as_bytes()).await;
    assert_eq!((status, body["reason"].as_str()), (413, Some("too_large")));
    let bad = serde_json::json!({"text": "default = \"deny\"\nrules = 1\n", "origin": "x.toml"});
    let (status, body) = raw(&server, "PUT", "/v1/policy", bad.to_string().as_bytes()).await;
    assert_eq!((status, body["reason"].as_str()), (400, Some("bad_policy")));
    assert!(
        body["error"].as_str().unwrap().starts_with("x.toml:2:1: "),
        "{body}"
    );
    let still = admin.policy(&server.admin).await.unwrap().policy.unwrap();
    assert_eq!(still.revision, applied.revision);
    // Other routes keep their 64 KiB.
    let tokens = serde_json::json!({"labels": {"k": "v".repeat(MAX_BODY)}});
    let (status, body) = raw(&server, "POST", "/v1/tokens", tokens.to_string().as_bytes()).await;
    assert_eq!((status, body["reason"].as_str()), (413, Some("too_large")));
    let removed = admin.remove_policy(&server.admin).await.unwrap();
    assert!(removed.removed);
    assert_eq!(admin.policy(&server.admin).await.unwrap().policy, None);
}

/// A request body that sends `first`, then nothing more while the request stays open: a
/// server that reads past `first` waits for the rest (until its timeout), one that stops at
/// its limit answers at once.
struct Stalled(Option<hyper::body::Bytes>);

impl hyper::body::Body for Stalled {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.0.take() {
            Some(bytes) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes)))),
            // Never woken: the rest never comes.
            None => std::task::Poll::Pending,
        }
    }
}

/// `PUT path` with `bearer`, declaring a body of `declared` bytes and sending only `sent` of
/// them: the status and JSON body the server answers while the rest is still missing.
async fn stalled_put(
    server: &Server,
    path: &str,
    bearer: &str,
    declared: usize,
    sent: usize,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let mut sender = connect(server).await;
    let mut first = b"{\"text\": \"".to_vec();
    first.resize(sent, b' ');
    let request = hyper::Request::builder()
        .method("PUT")
        .uri(path)
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .header("content-length", declared.to_string())
        .body(Stalled(Some(first.into())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_and_hosts_get_their_larger_body_limits() {
    use wgmesh_client::api::{MAX_BODY, MAX_WORKLOADS_BODY};

    // A body must arrive within the handshake timeout: 3 s here, so a server waiting for the
    // rest of one is told apart from one answering at once.
    let timeout = Duration::from_secs(3);
    let server = start_with(http::ServeLimits {
        handshake_timeout: timeout,
        ..http::ServeLimits::default()
    })
    .await;
    let (_, _, _, _, credential) = host_a_joined(&server).await;
    let admin = server.admin.expose().to_string();
    let host = credential.expose().to_string();
    let unknown_admin = AdminToken::generate().expose().to_string();
    let unknown_host = HostCredential::generate().expose().to_string();
    // Each caller declares 1 MiB and sends a little more than 64 KiB: only a caller given the
    // larger limit would wait for the rest; everyone else is answered 413 at once, after the
    // server read at most MAX_BODY bytes (one that waited would answer 400 after `timeout`).
    let cases = [
        ("/v1/policy", &host, "a host's credential"),
        ("/v1/policy", &unknown_admin, "an admin token not held"),
        ("/v1/policy", &unknown_host, "a host credential not held"),
        (
            "/v1/policy",
            &"nonsense".to_owned(),
            "a bearer of no known form",
        ),
        ("/v1/hosts/host-a/workloads", &admin, "the admin token"),
        (
            "/v1/hosts/host-a/workloads",
            &unknown_host,
            "a host credential not held",
        ),
        (
            "/v1/hosts/host-a/workloads",
            &unknown_admin,
            "an admin token not held",
        ),
    ];
    for (path, bearer, who) in cases {
        let started = Instant::now();
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(30),
            stalled_put(&server, path, bearer, MAX_WORKLOADS_BODY, MAX_BODY + 1),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} with {who}: no answer"));
        assert_eq!(
            (status, body["reason"].as_str()),
            (413, Some("too_large")),
            "{path} with {who}: {body}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&MAX_BODY.to_string()),
            "{path} with {who}: {body}"
        );
        assert!(
            started.elapsed() < timeout,
            "{path} with {who}: answered after {:?}",
            started.elapsed()
        );
    }
    // The callers who hold the limit are read further: they wait for the rest of the body,
    // until the handshake timeout gives up on it (400), rather than a 413 at once.
    for (path, bearer) in [
        ("/v1/policy", &admin),
        ("/v1/hosts/host-a/workloads", &host),
    ] {
        let (status, body) =
            stalled_put(&server, path, bearer, MAX_WORKLOADS_BODY, MAX_BODY + 1).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (400, Some("bad_request")),
            "{path}: {body}"
        );
        assert!(
            body["error"].as_str().unwrap().contains("did not arrive"),
            "{path}: {body}"
        );
    }
}

/// An HTTP/1 connection over TLS to `server` (trusting its CA), its driver spawned.
async fn connect<B>(server: &Server) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.url.port()))
        .await
        .unwrap();
    let config = wgmesh_client::pin::client_config_with_ca(server.pki.ca_der()).unwrap();
    let name = wgmesh_client::pin::server_name(server.url.host());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// host-a's netmap once `ready` holds for it (polling the long poll from `revision`).
async fn netmap_when(
    agent: &Client,
    name: &str,
    credential: &HostCredential,
    ready: impl Fn(&wgmesh_config::netmap::Netmap) -> bool,
) -> wgmesh_config::netmap::Netmap {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut revision = 0;
    loop {
        let polled = agent
            .netmap(name, credential, revision, Duration::from_secs(2))
            .await
            .unwrap();
        if let Some(netmap) = polled {
            if ready(&netmap) {
                return netmap;
            }
            revision = netmap.revision;
        }
        assert!(Instant::now() < deadline, "{name}'s netmap never got there");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_runs_over_https_stepped_by_the_scheduler() {
    use wgmesh_client::api::{KeyReportBody, RotationInfo};
    use wgmesh_config::netmap::KeyRotationOrder;
    let settings = RotationSettings {
        interval: None,
        grace: 600,
    };
    let server = start_scheduling(
        http::ServeLimits::default(),
        Some((settings, Duration::from_millis(50))),
    )
    .await;
    let (admin, agent, token, _, credential_a) = host_a_joined(&server).await;
    let b = agent.join(&join_body(&token, "host-b", 2)).await.unwrap();
    let credential_b: HostCredential = b.credential.parse().unwrap();
    let queued = admin.rotate_node(&server.admin, "host-a").await.unwrap();
    assert_eq!(queued.queued, ["host-a"]);
    // The scheduler starts it: host-a's netmap asks for a new key.
    let started = Instant::now();
    let asked = netmap_when(&agent, "host-a", &credential_a, |m| {
        m.host.rotation.is_some()
    })
    .await;
    eprintln!(
        "the scheduler asked for a new key {:?} after the admin",
        started.elapsed()
    );
    assert_eq!(
        asked.host.rotation,
        Some(KeyRotationOrder {
            epoch: 1,
            new_key: None
        })
    );
    let new_key = PublicKey::from_bytes([11; 32]);
    let report = |moved| KeyReportBody {
        epoch: 1,
        public_key: new_key,
        moved,
    };
    let reply = agent
        .report_key("host-a", &credential_a, &report(false))
        .await
        .unwrap();
    assert!(
        matches!(reply.rotation, Some(RotationInfo::Announced { epoch: 1, new_key: k, .. }) if k == new_key),
        "{reply:?}"
    );
    let seen = netmap_when(&agent, "host-b", &credential_b, |m| {
        m.peers[0].public_keys.len() == 2
    })
    .await;
    assert_eq!(
        seen.peers[0].public_keys,
        [new_key, PublicKey::from_bytes([1; 32])]
    );
    assert_eq!(seen.peers[0].key_epoch, 1);
    let done = agent
        .report_key("host-a", &credential_a, &report(true))
        .await
        .unwrap();
    assert_eq!(
        (done.key_epoch, done.public_key, done.rotation),
        (1, new_key, None)
    );
    let seen = netmap_when(&agent, "host-b", &credential_b, |m| {
        m.peers[0].public_keys.len() == 1
    })
    .await;
    assert_eq!(seen.peers[0].public_keys, [new_key], "the old key is gone");
    let nodes = admin.list_nodes(&server.admin).await.unwrap();
    assert_eq!((nodes[0].name.as_str(), nodes[0].key_epoch), ("host-a", 1));
    assert_eq!(nodes[0].rotation, None);
    // --all: both queued; host-a's second rotation is for epoch 2.
    let all = admin.rotate_all(&server.admin).await.unwrap();
    assert_eq!(all.queued, ["host-a", "host-b"]);
    let asked = netmap_when(&agent, "host-a", &credential_a, |m| {
        m.host.rotation.is_some()
    })
    .await;
    assert_eq!(asked.host.rotation.unwrap().epoch, 2);
    let nodes = admin.list_nodes(&server.admin).await.unwrap();
    assert!(matches!(
        nodes[1].rotation,
        Some(RotationInfo::Queued { epoch: 1, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reports_and_rotations_are_authorised_and_bad_bodies_change_nothing() {
    let server = start().await;
    let (admin, agent, token, _, credential_a) = host_a_joined(&server).await;
    let b = agent.join(&join_body(&token, "host-b", 2)).await.unwrap();
    let key = PublicKey::from_bytes([11; 32]).to_base64();
    let good = format!(r#"{{"epoch":1,"public_key":"{key}","moved":false}}"#);
    let a = credential_a.expose().to_string();
    let path = "/v1/hosts/host-a/key";
    // No credential, another host's, the admin's.
    let (status, body, _) = raw_as(&server, "POST", path, None, good.as_bytes()).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body, _) =
        raw_as(&server, "POST", path, Some(&b.credential), good.as_bytes()).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("forbidden")));
    let (status, body) = raw(&server, "POST", path, good.as_bytes()).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("forbidden")));
    // Bad bodies: 400, whatever the phase.
    let zeros = PublicKey::from_bytes([0; 32]).to_base64();
    for junk in [
        "[]".to_owned(),
        "{not json".to_owned(),
        r#"{"epoch":"one","public_key":"x"}"#.to_owned(),
        format!(r#"{{"public_key":"{key}"}}"#),
        format!(r#"{{"epoch":1,"public_key":"{key}","moved":false,"old_key":"x"}}"#),
        format!(r#"{{"epoch":1,"public_key":"{zeros}"}}"#),
        r#"{"epoch":1,"public_key":"not base64"}"#.to_owned(),
    ] {
        let (status, body, _) = raw_as(&server, "POST", path, Some(&a), junk.as_bytes()).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (400, Some("bad_request")),
            "{junk}"
        );
    }
    // A good body with no rotation running: 409, with why.
    let (status, body, _) = raw_as(&server, "POST", path, Some(&a), good.as_bytes()).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (409, Some("rotation_out_of_order"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no rotation of its key is running"),
        "{body}"
    );
    // The admin routes: the admin token only.
    for route in ["/v1/rotations", "/v1/nodes/host-a/rotate"] {
        let (status, _, _) = raw_as(&server, "POST", route, None, b"").await;
        assert_eq!(status, 401, "{route}");
        let (status, body, _) = raw_as(&server, "POST", route, Some(&a), b"").await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (403, Some("forbidden")),
            "{route}"
        );
        let (status, _, _) = raw_as(&server, "GET", route, Some(&a), b"").await;
        assert_eq!(status, 405, "{route}");
    }
    let (status, body) = raw(&server, "POST", "/v1/nodes/ghost/rotate", b"").await;
    assert_eq!((status, body["reason"].as_str()), (404, Some("not_found")));
    // Nothing of that changed anything.
    let nodes = admin.list_nodes(&server.admin).await.unwrap();
    assert!(
        nodes
            .iter()
            .all(|n| n.rotation.is_none() && n.key_epoch == 0),
        "{nodes:?}"
    );
    // The admin's call answers with the hosts queued.
    let (status, body) = raw(&server, "POST", "/v1/nodes/host-b/rotate", b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"queued": ["host-b"], "rotating": []})
    );
}
