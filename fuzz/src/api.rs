//! Target `api`: the control plane's request bodies, parsed as the HTTP layer parses them (a
//! JSON object, then the call's body type) and handed to the call they are for
//! ([`Control::join`], [`Control::set_endpoint`], [`Control::create_token`],
//! [`Control::report_key`]), with the path parameters of the other calls and the key-rotation
//! scheduler's ticks ([`Control::rotation_tick`]), on a control plane over a [`MemStore`].
//!
//! Input: a sequence of calls, each a selector byte, a length and that many bytes of body (or
//! path parameter). The control plane starts with one reusable join token and one joined host,
//! whose secrets are fixed so that the seeds can use them. Invariants: no panic; the store file
//! the commits wrote replays (as at a restart) to the same revision, hosts and tokens; every
//! host's netmap the control plane would send passes the agent's
//! [`Netmap::check`](wgmesh_config::netmap::Netmap::check).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use tempfile::NamedTempFile;
use wgmesh_client::api::{EndpointBody, JoinBody, KeyReportBody, TokenBody};
use wgmesh_config::token::{AdminToken, CaDigest, HostCredential, JoinToken, Secret};
use wgmesh_config::PrivateKey;
use wgmesh_control::audit::AuditLog;
use wgmesh_control::compile;
use wgmesh_control::fuzzing::{mutation_record, replay_store};
use wgmesh_control::registry::Mutation;
use wgmesh_control::registry::Registry;
use wgmesh_control::service::{Caller, Control};
use wgmesh_control::store::{MemStore, Store, StoreError};

use crate::Input;

const CA: &[u8] = b"wgmesh fuzz CA";
const NOW: u64 = 1_000_000;
const FROM: &str = "198.18.0.9";
/// The host that has joined.
const JOINED: &str = "host-j";

/// The join token the control plane holds.
pub fn join_token() -> JoinToken {
    JoinToken {
        ca_digest: CaDigest::of(CA),
        secret: Secret::from_bytes([9; 32]),
    }
}

fn admin() -> AdminToken {
    AdminToken::from_secret(Secret::from_bytes([7; 32]))
}

fn credential() -> HostCredential {
    HostCredential::from_secret(Secret::from_bytes([8; 32]))
}

/// A control plane whose audit log is `audit` (removed when the caller drops it) and whose
/// store file's bytes are `file`.
fn control(audit: &NamedTempFile, file: &Arc<Mutex<Vec<u8>>>) -> Control {
    let audit = AuditLog::open(audit.path()).expect("audit log");
    let mut registry = Registry::default();
    let mut store = Recording {
        inner: MemStore::new(),
        file: file.clone(),
    };
    let init = registry
        .plan_initialize("10.42.0.0/16".parse().expect("prefix"), 24)
        .expect("initialize");
    let token = registry.plan_token(
        join_token().secret_hash(),
        NOW - 10,
        3600,
        true,
        BTreeMap::new(),
    );
    for m in [init, token] {
        store.commit(&m).expect("commit");
        registry.apply(&m).expect("apply");
    }
    let mut control = Control::new(
        registry,
        Box::new(store),
        audit,
        admin().hash(),
        CA.to_vec(),
    );
    let body = JoinBody {
        token: join_token().expose(),
        name: JOINED.into(),
        public_key: PrivateKey::from_bytes([2; 32]).public_key(),
        endpoint: Some("198.18.0.2:51820".parse().expect("endpoint")),
        labels: BTreeMap::new(),
        credential: Some(credential().expose()),
    };
    control
        .join(body, NOW - 5, None)
        .expect("the fixture's join");
    control
}

/// The control plane's store: a [`MemStore`] that also writes every commit as the store
/// file's record, so that the target can replay what was acknowledged as a restart would.
struct Recording {
    inner: MemStore,
    file: Arc<Mutex<Vec<u8>>>,
}

impl Store for Recording {
    fn load(&self) -> Result<Registry, StoreError> {
        self.inner.load()
    }

    fn commit(&mut self, mutation: &Mutation) -> Result<(), StoreError> {
        self.inner.commit(mutation)?;
        let seq = self.inner.mutations().len() as u64;
        self.file
            .lock()
            .expect("store file")
            .extend_from_slice(&mutation_record(seq, mutation));
        Ok(())
    }

    fn recover(&mut self) -> Result<Registry, StoreError> {
        self.inner.recover()
    }
}

/// A body as the HTTP layer reads it: a JSON object, then the call's type.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !value.is_object() {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Runs one input.
pub fn run(data: &[u8]) {
    calls(data);
}

/// Runs one input; returns the control plane after its calls.
fn calls(data: &[u8]) -> Control {
    let audit = crate::scratch_file();
    let file = Arc::new(Mutex::new(Vec::new()));
    let mut control = control(&audit, &file);
    let mut input = Input::new(data);
    let from: Option<IpAddr> = Some(FROM.parse().expect("address"));
    let admin = control.authenticate(Some(&admin().expose()));
    let host = control.authenticate(Some(&credential().expose()));
    let mut calls = 0;
    while !input.is_empty() && calls < 8 {
        calls += 1;
        let call = input.u8();
        let len = usize::from(input.u16()) % 1024;
        let bytes = input.bytes(len);
        let text = String::from_utf8_lossy(bytes);
        let now = NOW + u64::from(call >> 4);
        match call % 10 {
            0 => {
                if let Some(b) = body::<JoinBody>(bytes) {
                    let _ = control.join(b, now, from);
                }
            }
            1 => {
                if let Some(b) = body::<EndpointBody>(bytes) {
                    let _ = control.set_endpoint(&host, JOINED, b, now, from);
                }
            }
            2 => {
                if let Some(b) = body::<EndpointBody>(bytes) {
                    let _ = control.set_endpoint(&admin, &text, b, now, from);
                }
            }
            3 => {
                if let Some(b) = body::<TokenBody>(bytes) {
                    let _ = control.create_token(&admin, b, now, from);
                }
            }
            4 => {
                let caller = control.authenticate(Some(&text));
                if let Some(b) = body::<TokenBody>(bytes) {
                    let _ = control.create_token(&caller, b, now, from);
                }
                let _ = control.list_nodes(&caller, now, from);
            }
            5 => {
                let _ = control.remove_node(&admin, &text, now, from);
            }
            6 => {
                let _ = control.revoke_token(&admin, &text, now, from);
            }
            7 => {
                let mut i = Input::new(bytes);
                let held = (
                    u64::from(i.u8()),
                    if i.u8().is_multiple_of(2) {
                        control.epoch()
                    } else {
                        0
                    },
                );
                let _ = control.check_netmap_access(&host, JOINED, held.0, now, from);
                let _ = control.netmap_update(&host, JOINED, held, now, from);
            }
            8 => {
                let _ = control.netmap(&host, &text, now, from);
            }
            _ => {
                let mut i = Input::new(bytes);
                let which = i.u8();
                rotation_call(&mut control, which, i.rest(), now);
            }
        }
    }
    let registry = control.registry();
    let (replayed, _, _) =
        replay_store(&file.lock().expect("store file")).expect("the store file replays");
    assert_eq!(
        replayed.revision(),
        registry.revision(),
        "a restart would lose a change"
    );
    assert!(
        replayed.hosts().keys().eq(registry.hosts().keys())
            && replayed.tokens() == registry.tokens(),
        "a restart would find other hosts or tokens"
    );
    for (id, host) in registry.hosts() {
        let netmap = compile::netmap(registry, registry.policy().map(|p| &p.policy), *id)
            .expect("a host's netmap");
        if let Err(e) = netmap.check() {
            panic!("the netmap of {} fails the agent's check: {e}", host.name);
        }
    }
    control
}

/// Call 9: by its body's first byte, a key rotation call (the admin queueing every host or one
/// named by the rest, the joined host's key report, the scheduler's tick up to 65535 s later),
/// else the admin's lists.
fn rotation_call(control: &mut Control, which: u8, rest: &[u8], now: u64) {
    let from: Option<IpAddr> = Some(FROM.parse().expect("address"));
    let admin = Caller::Admin;
    match which % 5 {
        1 => {
            let _ = control.rotate_all(&admin, now, from);
        }
        2 => {
            let _ = control.rotate_node(&admin, &String::from_utf8_lossy(rest), now, from);
        }
        3 => {
            let host = control.authenticate(Some(&credential().expose()));
            if let Some(b) = body::<KeyReportBody>(rest) {
                let _ = control.report_key(&host, JOINED, b, now, from);
            }
        }
        4 => {
            let mut i = Input::new(rest);
            control.rotation_tick(now + u64::from(i.u16()));
        }
        _ => {
            let _ = control.list_tokens(&admin, now, from);
            let _ = control.list_nodes(&admin, now, from);
        }
    }
}

/// Seeds: a second host joining, an endpoint change, a token, a removal, a poll, and a key
/// rotation of the joined host.
pub fn seeds() -> Vec<Vec<u8>> {
    let call = |selector: u8, body: &str| {
        let mut v = vec![selector];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body.as_bytes());
        v
    };
    let key = PrivateKey::from_bytes([3; 32]).public_key();
    let join = serde_json::json!({
        "token": join_token().expose(),
        "name": "host-k",
        "public_key": key.to_string(),
        "endpoint": "198.18.0.3:51820",
        "labels": {"zone": "b"},
    })
    .to_string();
    vec![
        call(0, &join),
        [
            call(0, &join),
            call(1, r#"{"endpoint":"198.18.0.7:51820"}"#),
        ]
        .concat(),
        call(1, r#"{"endpoint":null}"#),
        call(2, r#"{"endpoint":"[2001:db8::1]:51820"}"#),
        call(3, r#"{"ttl_secs":60,"reusable":true,"labels":{"a":"b"}}"#),
        call(4, r#"{}"#),
        [call(0, &join), call(5, "host-k"), call(7, "\u{1}\u{0}")].concat(),
        call(6, "1"),
        call(8, JOINED),
        call(9, ""),
        [
            call(9, "\u{1}"),
            call(9, "\u{4}\u{0}\u{0}"),
            call(9, &format!("\u{3}{}", report(false))),
            call(9, &format!("\u{3}{}", report(true))),
        ]
        .concat(),
        [
            call(9, &format!("\u{2}{JOINED}")),
            call(9, "\u{4}\u{0}\u{0}"),
            call(9, "\u{4}\u{ff}\u{ff}"),
        ]
        .concat(),
    ]
}

/// The joined host's report of a new key for its first rotation.
fn report(moved: bool) -> String {
    serde_json::json!({
        "epoch": 1,
        "public_key": PrivateKey::from_bytes([4; 32]).public_key().to_string(),
        "moved": moved,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seeds_reach_the_calls() {
        let seeds = super::seeds();
        let hosts = |i: usize| super::calls(&seeds[i]).registry().hosts().len();
        assert_eq!(hosts(0), 2, "the seed's join succeeds");
        assert_eq!(hosts(6), 1, "the seed's removal succeeds");
        assert_eq!(
            super::calls(&seeds[4]).registry().tokens().len(),
            2,
            "a token is created"
        );
        let rotated = super::calls(&seeds[10]);
        let host = rotated.registry().host_by_name(super::JOINED).unwrap();
        assert_eq!(host.key_epoch, 1, "the seed's rotation completes");
        let abandoned = super::calls(&seeds[11]);
        let host = abandoned.registry().host_by_name(super::JOINED).unwrap();
        assert!(
            host.rotation_abandoned_at.is_some(),
            "the seed's rotation is abandoned at its deadline"
        );
    }
}
