//! Entry points for the fuzz targets (`fuzz/`, scripts/fuzz.sh) into what is private here.
//! Not an API: nothing else may call them.

use std::path::Path;

use crate::registry::Registry;
use crate::store::{encode, replay, RecordOut, StoreError};

/// What opening a store file with these bytes replays: the state, the number of mutation lines
/// after the snapshot, and the length of the complete lines.
pub fn replay_store(bytes: &[u8]) -> Result<(Registry, u64, usize), StoreError> {
    replay(Path::new("store.jsonl"), bytes)
}

/// The snapshot record a compaction writes for `state`.
pub fn snapshot_record(state: &Registry) -> Vec<u8> {
    encode(&RecordOut {
        snapshot: Some(state),
        seq: state.revision(),
        mutation: None,
    })
    .expect("a registry encodes")
}

/// The record a commit of `mutation` writes after `seq - 1` earlier ones.
pub fn mutation_record(seq: u64, mutation: &crate::registry::Mutation) -> Vec<u8> {
    encode(&RecordOut {
        snapshot: None,
        seq,
        mutation: Some(mutation),
    })
    .expect("a mutation encodes")
}
