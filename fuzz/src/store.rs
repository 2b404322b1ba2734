//! Target `store`: the control plane's replay of `store.jsonl` at start-up (every record
//! parsed, sequence numbers checked, every mutation applied to the registry).
//!
//! Input: the file's bytes. Invariants: the complete part ends at a newline and the torn tail
//! has none; a replayed state written as a compaction's snapshot replays to the same state;
//! one more valid mutation appended replays too.

use std::collections::BTreeMap;
use std::str::FromStr;

use wgmesh_config::token::Secret;
use wgmesh_config::{HostName, PrivateKey};
use wgmesh_control::fuzzing::{mutation_record, replay_store, snapshot_record};
use wgmesh_control::registry::{JoinRequest, Mutation, Registry};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok((state, _, complete)) = replay_store(data) else {
        return;
    };
    assert!(complete <= data.len());
    assert!(complete == 0 || data[complete - 1] == b'\n');
    assert!(
        !data[complete..].contains(&b'\n'),
        "a newline in the torn tail"
    );
    let snapshot = snapshot_record(&state);
    let (again, since, len) =
        replay_store(&snapshot).expect("a snapshot of a replayed state replays");
    assert_eq!((since, len), (0, snapshot.len()));
    assert_eq!(again, state, "the snapshot replays to another state");
    if let Some(m) = next_mutation(&state) {
        let mut appended = data[..complete].to_vec();
        appended.extend_from_slice(&mutation_record(state.revision() + 1, &m));
        let (after, _, _) = replay_store(&appended).expect("a valid mutation appended replays");
        assert_eq!(after.revision(), state.revision() + 1);
    }
}

/// A mutation that is valid on `state`: a new token.
fn next_mutation(state: &Registry) -> Option<Mutation> {
    let m = state.plan_token(
        Secret::from_bytes([3; 32]).hash(),
        5,
        60,
        false,
        BTreeMap::new(),
    );
    state.check(&m).ok().map(|()| m)
}

/// Mutations of a small cluster: initialised, a token, two joins, an endpoint change, a
/// removal, a revocation.
fn history() -> Vec<Mutation> {
    let mut registry = Registry::default();
    let mut out = Vec::new();
    let mut push = |registry: &mut Registry, m: Mutation| {
        registry.apply(&m).expect("the seed history applies");
        out.push(m);
    };
    let m = registry
        .plan_initialize("10.42.0.0/16".parse().expect("prefix"), 24)
        .expect("initialize");
    push(&mut registry, m);
    let token = Secret::from_bytes([9; 32]).hash();
    let m = registry.plan_token(
        token,
        100,
        3600,
        true,
        BTreeMap::from([("zone".into(), "a".into())]),
    );
    push(&mut registry, m);
    for (n, name) in [(2u8, "host-a"), (3, "host-b")] {
        let request = JoinRequest {
            name: HostName::from_str(name).expect("name"),
            public_key: PrivateKey::from_bytes([n; 32]).public_key(),
            endpoint: Some(format!("198.18.0.{n}:51820").parse().expect("endpoint")),
            labels: BTreeMap::new(),
        };
        let m = registry
            .plan_join(request, &token, Secret::from_bytes([n; 32]).hash(), 200)
            .expect("join");
        push(&mut registry, m);
    }
    let id = registry.host_by_name("host-a").expect("host-a").id;
    if let Ok(Some(m)) =
        registry.plan_endpoint(id, Some("198.18.0.7:51820".parse().expect("endpoint")))
    {
        push(&mut registry, m);
    }
    let m = registry.plan_remove("host-b").expect("remove");
    push(&mut registry, m);
    out
}

/// Seeds: the history as mutation records, a snapshot followed by records, and a torn tail.
pub fn seeds() -> Vec<Vec<u8>> {
    let history = history();
    let records: Vec<u8> = history
        .iter()
        .enumerate()
        .flat_map(|(i, m)| mutation_record(i as u64 + 1, m))
        .collect();
    let mut registry = Registry::default();
    for m in &history[..3] {
        registry.apply(m).expect("applies");
    }
    let mut compacted = snapshot_record(&registry);
    for (i, m) in history.iter().enumerate().skip(3) {
        compacted.extend_from_slice(&mutation_record(i as u64 + 1, m));
    }
    let mut torn = records.clone();
    torn.extend_from_slice(br#"{"seq":99,"mutation":{"#);
    vec![records, compacted, torn, Vec::new()]
}
