use std::collections::BTreeMap;
use std::path::PathBuf;

use wgmesh_client::api::{ApiReason, EndpointBody, JoinBody, JoinReply, TokenBody, TokenState};
use wgmesh_config::netmap::NetmapUpdate;
use wgmesh_config::token::JoinToken;
use wgmesh_config::PublicKey;

use super::*;
use crate::store::MemStore;

const CA: &[u8] = b"pretend CA certificate";

pub(super) struct Fixture {
    pub(super) control: Control,
    pub(super) admin: AdminToken,
    pub(super) audit: PathBuf,
    _dir: tempfile::TempDir,
}

fn fixture_with(store: Box<dyn Store + Send>) -> Fixture {
    fixture_in(store, "10.42.0.0/16", 24)
}

/// A control plane over `store` for the cluster `cidr`, giving hosts subnets of `subnet_len`.
pub(super) fn fixture_in(store: Box<dyn Store + Send>, cidr: &str, subnet_len: u8) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut registry = Registry::default();
    let m = registry
        .plan_initialize(cidr.parse().unwrap(), subnet_len)
        .unwrap();
    registry.apply(&m).unwrap();
    let mut store = store;
    store.commit(&m).unwrap();
    let admin = AdminToken::generate();
    let control = Control::new(
        registry,
        store,
        AuditLog::open(&audit).unwrap(),
        admin.hash(),
        CA.to_vec(),
    );
    Fixture {
        control,
        admin,
        audit,
        _dir: dir,
    }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(Box::new(MemStore::new()))
}

pub(super) fn token(f: &mut Fixture, ttl: u64, reusable: bool) -> String {
    let admin = f.control.authenticate(Some(&f.admin.expose()));
    let body = TokenBody {
        ttl_secs: Some(ttl),
        reusable,
        labels: BTreeMap::new(),
    };
    f.control
        .create_token(&admin, body, 1000, None)
        .unwrap()
        .token
}

pub(super) fn join(
    f: &mut Fixture,
    token: &str,
    name: &str,
    key: u8,
) -> Result<JoinReply, ApiError> {
    let body = JoinBody {
        token: token.to_owned(),
        name: name.to_owned(),
        public_key: PublicKey::from_bytes([key; 32]),
        endpoint: None,
        labels: BTreeMap::new(),
        credential: None,
    };
    f.control.join(body, 1001, None)
}

pub(super) fn reason<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ApiReason {
    r.unwrap_err().reason
}

#[test]
fn every_call_checks_who_is_calling() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let a = join(&mut f, &t, "host-a", 1).unwrap().credential;
    join(&mut f, &t, "host-b", 2).unwrap();
    let anon = f.control.authenticate(None);
    let junk = f.control.authenticate(Some("WGMH1-not-a-credential"));
    let admin = f.control.authenticate(Some(&f.admin.expose()));
    let host_a = f.control.authenticate(Some(&a));
    assert_eq!(anon, Caller::Anonymous);
    assert_eq!(junk, Caller::Anonymous);
    assert_eq!(admin, Caller::Admin);
    assert!(matches!(host_a, Caller::Host(_)));
    // A second admin token (from another cluster) is nobody here.
    let other_admin = AdminToken::generate().expose();
    assert_eq!(
        f.control.authenticate(Some(&other_admin)),
        Caller::Anonymous
    );

    let c = &mut f.control;
    for caller in [&anon, &junk] {
        assert_eq!(
            reason(c.netmap(caller, "host-a", 1, None)),
            ApiReason::Unauthenticated
        );
        assert_eq!(
            reason(c.list_nodes(caller, 1, None)),
            ApiReason::Unauthenticated
        );
        assert_eq!(
            reason(c.remove_node(caller, "host-a", 1, None)),
            ApiReason::Unauthenticated
        );
        let body = EndpointBody { endpoint: None };
        assert_eq!(
            reason(c.set_endpoint(caller, "host-a", body, 1, None)),
            ApiReason::Unauthenticated
        );
        assert_eq!(
            reason(c.create_token(caller, TokenBody::default(), 1, None)),
            ApiReason::Unauthenticated
        );
    }
    // A host: only its own records, no admin calls.
    assert!(c.netmap(&host_a, "host-a", 1, None).is_ok());
    assert_eq!(
        reason(c.netmap(&host_a, "host-b", 1, None)),
        ApiReason::Forbidden
    );
    let body = EndpointBody {
        endpoint: Some("198.18.0.9:51820".parse().unwrap()),
    };
    assert_eq!(
        reason(c.set_endpoint(&host_a, "host-b", body, 1, None)),
        ApiReason::Forbidden
    );
    assert_eq!(reason(c.list_nodes(&host_a, 1, None)), ApiReason::Forbidden);
    assert_eq!(
        reason(c.remove_node(&host_a, "host-b", 1, None)),
        ApiReason::Forbidden
    );
    assert_eq!(
        reason(c.create_token(&host_a, TokenBody::default(), 1, None)),
        ApiReason::Forbidden
    );
    // The admin: no host calls.
    assert_eq!(
        reason(c.netmap(&admin, "host-a", 1, None)),
        ApiReason::Forbidden
    );
    let body = EndpointBody { endpoint: None };
    assert_eq!(
        reason(c.set_endpoint(&admin, "host-a", body, 1, None)),
        ApiReason::Forbidden
    );
    assert_eq!(c.list_nodes(&admin, 1, None).unwrap().len(), 2);
}

#[test]
fn a_join_retried_with_its_credential_succeeds_even_with_a_used_single_use_token() {
    let mut f = fixture();
    let single = token(&mut f, 3600, false);
    let credential = HostCredential::generate().expose();
    let body = |credential: &str| JoinBody {
        token: single.clone(),
        name: "host-a".into(),
        public_key: PublicKey::from_bytes([1; 32]),
        endpoint: None,
        labels: BTreeMap::new(),
        credential: Some(credential.to_owned()),
    };
    let first = f.control.join(body(&credential), 1001, None).unwrap();
    assert_eq!(first.credential, credential);
    let revision = f.control.revision();
    // The reply was lost; the agent asks again with the credential it saved.
    let again = f.control.join(body(&credential), 1002, None).unwrap();
    assert_eq!(again.netmap.host.subnet, first.netmap.host.subnet);
    assert_eq!(f.control.revision(), revision, "a retry changes nothing");
    // Someone else with the same (public) name and key, but not the credential.
    let other = HostCredential::generate().expose();
    assert_eq!(
        reason(f.control.join(body(&other), 1003, None)),
        ApiReason::TokenUsed
    );
    let junk = f.control.join(body("WGMH1-short"), 1003, None);
    assert_eq!(reason(junk), ApiReason::BadRequest);
}

#[test]
fn join_tokens_are_refused_with_the_reason() {
    let mut f = fixture();
    let single = token(&mut f, 3600, false);
    join(&mut f, &single, "host-a", 1).unwrap();
    assert_eq!(
        reason(join(&mut f, &single, "host-b", 2)),
        ApiReason::TokenUsed
    );
    let short = token(&mut f, 1, true);
    // Created at 1000 with a 1 s lifetime; join() joins at 1001.
    assert_eq!(
        reason(join(&mut f, &short, "host-b", 2)),
        ApiReason::TokenExpired
    );
    let unknown = JoinToken::generate(CA).expose();
    assert_eq!(
        reason(join(&mut f, &unknown, "host-b", 2)),
        ApiReason::TokenUnknown
    );
    let foreign = JoinToken::generate(b"another CA").expose();
    assert_eq!(
        reason(join(&mut f, &foreign, "host-b", 2)),
        ApiReason::TokenWrongCa
    );
    assert_eq!(
        reason(join(&mut f, "junk", "host-b", 2)),
        ApiReason::BadRequest
    );
    assert_eq!(f.control.registry().hosts().len(), 1);
}

#[test]
fn names_and_keys_belong_to_one_host_until_an_admin_removes_it() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let first = join(&mut f, &t, "host-a", 1).unwrap();
    assert_eq!(reason(join(&mut f, &t, "host-a", 2)), ApiReason::NameTaken);
    assert_eq!(reason(join(&mut f, &t, "host-z", 1)), ApiReason::KeyTaken);
    // The same name and key again, without the credential: refused (they are public).
    assert_eq!(reason(join(&mut f, &t, "host-a", 1)), ApiReason::NameTaken);
    assert!(matches!(
        f.control.authenticate(Some(&first.credential)),
        Caller::Host(_)
    ));
    let admin = Caller::Admin;
    f.control.remove_node(&admin, "host-a", 1002, None).unwrap();
    assert_eq!(
        f.control.authenticate(Some(&first.credential)),
        Caller::Anonymous
    );
    let new_key = join(&mut f, &t, "host-a", 2).unwrap();
    assert_eq!(
        new_key.netmap.host.public_key,
        PublicKey::from_bytes([2; 32])
    );
}

#[test]
fn netmaps_follow_joins_removals_and_endpoints() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let a = join(&mut f, &t, "host-a", 1).unwrap();
    assert!(a.netmap.peers.is_empty());
    let b = join(&mut f, &t, "host-b", 2).unwrap();
    assert_eq!(b.netmap.peers[0].name, "host-a");
    assert_ne!(a.netmap.host.subnet, b.netmap.host.subnet);
    let host_a = f.control.authenticate(Some(&a.credential));
    let host_b = f.control.authenticate(Some(&b.credential));
    let seen = f.control.netmap(&host_a, "host-a", 1, None).unwrap();
    assert_eq!(seen.peers.len(), 1);
    assert!(seen.revision > a.netmap.revision);
    let endpoint = "198.18.0.2:51820".parse().unwrap();
    let body = EndpointBody {
        endpoint: Some(endpoint),
    };
    f.control
        .set_endpoint(&host_b, "host-b", body, 1003, None)
        .unwrap();
    let seen = f.control.netmap(&host_a, "host-a", 1, None).unwrap();
    assert_eq!(seen.peers[0].endpoint, Some(endpoint));
    f.control
        .remove_node(&Caller::Admin, "host-b", 1004, None)
        .unwrap();
    assert!(f
        .control
        .netmap(&host_a, "host-a", 1, None)
        .unwrap()
        .peers
        .is_empty());
}

#[test]
fn hosts_that_hold_a_recent_netmap_get_only_what_changed() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let a = join(&mut f, &t, "host-a", 1).unwrap();
    join(&mut f, &t, "host-b", 2).unwrap();
    let host_a = f.control.authenticate(Some(&a.credential));
    let NetmapUpdate::Delta(d) = f
        .control
        .netmap_update(
            &host_a,
            "host-a",
            (a.netmap.revision, a.netmap.epoch),
            1,
            None,
        )
        .unwrap()
    else {
        panic!("a host one change behind gets a delta");
    };
    assert_eq!(d.upsert.len(), 1);
    assert_eq!(d.upsert[0].name, "host-b");
    assert_eq!(d.peer_count, 1);
    let applied = a.netmap.apply_delta(&d).unwrap();
    assert_eq!(
        applied,
        f.control.netmap(&host_a, "host-a", 1, None).unwrap()
    );
    // Revision 0 (a first poll) and revisions never given get the whole netmap.
    for from in [0, 999] {
        let update = f
            .control
            .netmap_update(&host_a, "host-a", (from, a.netmap.epoch), 1, None)
            .unwrap();
        assert!(
            matches!(update, NetmapUpdate::Full(_)),
            "from {from}: {update:?}"
        );
    }
    // A netmap of another run (the control plane restarted, or its store was restored)
    // gets the whole netmap even at a revision the log covers.
    for epoch in [0, a.netmap.epoch ^ 2] {
        let update = f
            .control
            .netmap_update(&host_a, "host-a", (a.netmap.revision, epoch), 1, None)
            .unwrap();
        assert!(
            matches!(update, NetmapUpdate::Full(_)),
            "epoch {epoch}: {update:?}"
        );
    }
    // Token changes leave nothing to send.
    let before = applied.revision;
    token(&mut f, 60, false);
    assert_eq!(f.control.registry().netmap_revision(), before);
    f.control
        .remove_node(&Caller::Admin, "host-b", 2, None)
        .unwrap();
    let NetmapUpdate::Delta(d) = f
        .control
        .netmap_update(&host_a, "host-a", (before, applied.epoch), 1, None)
        .unwrap()
    else {
        panic!("delta expected");
    };
    assert_eq!(
        (d.upsert.len(), d.remove.as_slice()),
        (0, &["host-b".to_owned()][..])
    );
    assert!(applied.apply_delta(&d).unwrap().peers.is_empty());
}

#[test]
fn a_revoked_token_is_listed_as_such_and_refused() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    join(&mut f, &t, "host-a", 1).unwrap();
    let host_a = f.control.registry().host_by_name("host-a").unwrap().id;
    let host = Caller::Host(host_a);
    assert_eq!(
        reason(f.control.list_tokens(&host, 1, None)),
        ApiReason::Forbidden
    );
    assert_eq!(
        reason(f.control.revoke_token(&host, "0", 1, None)),
        ApiReason::Forbidden
    );
    assert_eq!(
        reason(f.control.revoke_token(&Caller::Admin, "zero", 1, None)),
        ApiReason::BadRequest
    );
    assert_eq!(
        reason(f.control.revoke_token(&Caller::Admin, "9", 1, None)),
        ApiReason::NotFound
    );
    let listed = f.control.list_tokens(&Caller::Admin, 1001, None).unwrap();
    assert_eq!((listed[0].state, listed[0].joins), (TokenState::Valid, 1));
    f.control
        .revoke_token(&Caller::Admin, "0", 1002, None)
        .unwrap();
    let revision = f.control.revision();
    f.control
        .revoke_token(&Caller::Admin, "0", 1002, None)
        .unwrap();
    assert_eq!(
        f.control.revision(),
        revision,
        "revoking twice writes nothing"
    );
    assert_eq!(
        reason(join(&mut f, &t, "host-b", 2)),
        ApiReason::TokenRevoked
    );
    let listed = f.control.list_tokens(&Caller::Admin, 1003, None).unwrap();
    assert_eq!(listed[0].state, TokenState::Revoked);
    // The host that joined with it stays.
    assert!(f.control.registry().host(host_a).is_some());
}

#[test]
fn node_list_says_which_hosts_hold_the_current_netmap() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let a = join(&mut f, &t, "host-a", 1).unwrap();
    let host_a = f.control.authenticate(Some(&a.credential));
    let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
    assert_eq!((nodes[0].netmap_revision, nodes[0].in_sync), (None, false));
    join(&mut f, &t, "host-b", 2).unwrap();
    // host-a polls with the revision it holds (before host-b): behind.
    f.control
        .check_netmap_access(&host_a, "host-a", a.netmap.revision, 1, None)
        .unwrap();
    let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
    assert_eq!(
        (nodes[0].netmap_revision, nodes[0].in_sync),
        (Some(a.netmap.revision), false)
    );
    // Its poll is answered: sent is not held (its agent may refuse the netmap), still behind.
    let update = f
        .control
        .netmap_update(
            &host_a,
            "host-a",
            (a.netmap.revision, a.netmap.epoch),
            1,
            None,
        )
        .unwrap();
    f.control.netmap(&host_a, "host-a", 1, None).unwrap();
    let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
    assert!(!nodes[0].in_sync, "{:?}", nodes[0]);
    // Its next poll says it applied the new revision: in sync.
    let NetmapUpdate::Delta(delta) = update else {
        panic!("a host one change behind gets a delta");
    };
    f.control
        .check_netmap_access(&host_a, "host-a", delta.revision, 1, None)
        .unwrap();
    let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
    assert!(nodes[0].in_sync, "{:?}", nodes[0]);
    // An agent that refused it polls again with the revision it kept: behind again.
    f.control
        .check_netmap_access(&host_a, "host-a", a.netmap.revision, 1, None)
        .unwrap();
    let nodes = f.control.list_nodes(&Caller::Admin, 1, None).unwrap();
    assert_eq!(
        (nodes[0].netmap_revision, nodes[0].in_sync),
        (Some(a.netmap.revision), false)
    );
}

/// A store whose disk is full: every commit fails.
struct FullDisk;

impl Store for FullDisk {
    fn load(&self) -> Result<Registry, StoreError> {
        Ok(Registry::default())
    }
    fn commit(&mut self, _: &Mutation) -> Result<(), StoreError> {
        Err(StoreError::Io {
            path: "store.jsonl".into(),
            action: "append to",
            source: std::io::Error::other("no space left on device"),
        })
    }
    fn recover(&mut self) -> Result<Registry, StoreError> {
        Err(StoreError::Io {
            path: "store.jsonl".into(),
            action: "reopen",
            source: std::io::Error::other("no space left on device"),
        })
    }
}

#[test]
fn a_failed_commit_is_refused_and_changes_nothing() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let before = f.control.registry().clone();
    // Swap in a failing store, keeping the registry.
    f.control.store = Box::new(FullDisk);
    assert_eq!(reason(join(&mut f, &t, "host-a", 1)), ApiReason::Internal);
    assert_eq!(
        reason(
            f.control
                .create_token(&Caller::Admin, TokenBody::default(), 1, None)
        ),
        ApiReason::Internal
    );
    assert_eq!(f.control.registry(), &before);
}

/// A store whose commits land on disk but, while `fail` is set, report an I/O error (a
/// failed fsync whose data made it anyway).
struct Flaky {
    inner: MemStore,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store for Flaky {
    fn load(&self) -> Result<Registry, StoreError> {
        self.inner.load()
    }
    fn commit(&mut self, m: &Mutation) -> Result<(), StoreError> {
        self.inner.commit(m)?;
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Io {
                path: "store.jsonl".into(),
                action: "sync",
                source: std::io::Error::other("I/O error"),
            });
        }
        Ok(())
    }
    fn recover(&mut self) -> Result<Registry, StoreError> {
        self.inner.load()
    }
}

#[test]
fn after_a_failed_commit_the_durable_state_is_reloaded_and_a_retried_join_succeeds() {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut f = fixture_with(Box::new(Flaky {
        inner: MemStore::new(),
        fail: fail.clone(),
    }));
    let t = token(&mut f, 3600, false);
    let credential = HostCredential::generate().expose();
    let body = || JoinBody {
        token: t.clone(),
        name: "host-a".into(),
        public_key: PublicKey::from_bytes([1; 32]),
        endpoint: None,
        labels: BTreeMap::new(),
        credential: Some(credential.clone()),
    };
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        reason(f.control.join(body(), 1001, None)),
        ApiReason::Internal
    );
    assert!(
        f.control.registry().hosts().is_empty(),
        "not applied in memory"
    );
    // Until the store is recovered, nothing else is written.
    assert_eq!(
        reason(
            f.control
                .create_token(&Caller::Admin, TokenBody::default(), 1, None)
        ),
        ApiReason::Internal
    );
    fail.store(false, std::sync::atomic::Ordering::Relaxed);
    // The write did land: after recovery the host is there, and the agent's retry with its
    // credential is answered although its single-use token is used now.
    f.control.recover_if_needed();
    assert_eq!(f.control.registry().hosts().len(), 1);
    let again = f.control.join(body(), 1002, None).unwrap();
    assert_eq!(again.credential, credential);
}

#[test]
fn the_audit_log_has_a_line_per_action_and_no_secret() {
    let mut f = fixture();
    let t = token(&mut f, 3600, false);
    let a = join(&mut f, &t, "host-a", 1).unwrap();
    join(&mut f, &t, "host-b", 2).unwrap_err();
    let bad = TokenBody {
        ttl_secs: Some(0),
        ..TokenBody::default()
    };
    f.control
        .create_token(&Caller::Admin, bad, 1, None)
        .unwrap_err();
    f.control
        .remove_node(&Caller::Admin, "host-a", 2, None)
        .unwrap();
    let log = std::fs::read_to_string(&f.audit).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<(&str, String)> = lines
        .iter()
        .map(|l| (l["action"].as_str().unwrap(), l["result"].to_string()))
        .collect();
    assert_eq!(
        actions,
        [
            ("token_create", "\"ok\"".to_owned()),
            ("join", "\"ok\"".to_owned()),
            ("join", r#"{"refused":"token_used"}"#.to_owned()),
            ("token_create", r#"{"refused":"bad_request"}"#.to_owned()),
            ("node_remove", "\"ok\"".to_owned()),
        ]
    );
    let secret = t.rsplit('-').next().unwrap();
    assert!(
        !log.contains(secret),
        "the token's secret is in the audit log"
    );
    assert!(
        !log.contains(&a.credential[6..]),
        "a credential is in the audit log"
    );
    assert!(!log.contains(&f.admin.expose()[6..]));
}

#[test]
fn a_low_order_public_key_cannot_join() {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let err = join(&mut f, &t, "host-a", 0).unwrap_err();
    assert_eq!(err.reason, ApiReason::BadRequest);
    assert!(err.message.contains("low-order"), "{}", err.message);
    assert!(f.control.registry().hosts().is_empty());
    // Nor in a request body, which is where a real join's key comes from.
    let json = serde_json::json!({
        "token": t, "name": "host-a", "public_key": PublicKey::from_bytes([0; 32]).to_base64(),
    });
    let err = serde_json::from_value::<JoinBody>(json).unwrap_err();
    assert!(err.to_string().contains("low-order"), "{err}");
}

mod compiled;
mod filters;
mod policy;
mod rotation;
