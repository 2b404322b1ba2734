//! Where the registry's [`Mutation`]s are made durable: the [`Store`] trait, [`MemStore`] for
//! tests and [`FileStore`], the embedded default.
//!
//! [`FileStore`] keeps one file, `store.jsonl`, in the state directory. Each line is one JSON
//! record, `{"seq":N,"mutation":{...}}`, where `seq` is the registry revision after the
//! mutation; the first line may instead be `{"snapshot":{...},"seq":N}`, the whole registry at
//! revision `N`. [`Store::commit`] appends one line and fsyncs it before returning, so an
//! acknowledged change survives kill -9 and power loss. Every `compact_every` commits the file
//! is replaced by a single snapshot line: written to `store.jsonl.tmp`, fsynced, renamed over
//! `store.jsonl`, and the directory fsynced; a crash at any point leaves either the old or the
//! new file, both complete.
//!
//! At open, a last line without its newline is a commit that was cut off by a crash before it
//! was acknowledged: it is dropped (and cut from the file). Anything else that does not parse
//! or does not apply, anywhere in the file, is corruption: the store refuses to open with the
//! path and line, and never falls back to an empty state.
//!
//! Two control planes never share the file: `wgmesh control` locks its state directory first
//! (`wgmesh_client::dirlock`). Not yet: schema migrations (the records carry no version yet;
//! the first migration adds one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wgmesh_client::private_dir;

use crate::registry::{Mutation, Registry, RegistryError};

/// The state a store holds: the registry.
pub type State = Registry;

/// Where mutations are made durable. A replicated backend (etcd) implements the same trait.
pub trait Store {
    /// The current state: every committed mutation, applied in order.
    fn load(&self) -> Result<State, StoreError>;
    /// Makes `mutation` durable. When this returns `Ok`, the mutation survives a crash. A
    /// mutation that does not apply to the stored state is refused and nothing is written.
    fn commit(&mut self, mutation: &Mutation) -> Result<(), StoreError>;
    /// After a commit failed with an I/O error (its outcome unknown: the record may or may not
    /// be durable), makes the store usable again and returns the state that is durable now.
    fn recover(&mut self) -> Result<State, StoreError>;
}

/// Why a store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("open", "read", "append to", ...).
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A line of the store file is not a valid record or does not apply to the state before it.
    #[error("{}:{line}: corrupt store record: {message}; refusing to start (restore the file from a backup, or move it away to start with an empty control plane)", path.display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The mutation does not apply to the stored state; nothing was written.
    #[error("mutation refused: {0}")]
    Rejected(#[from] RegistryError),
    /// An earlier write failed, so the file's tail is unknown; reopen the store.
    #[error("{}: an earlier write failed; the store must be reopened", path.display())]
    Poisoned {
        /// The store file.
        path: PathBuf,
    },
}

/// A store in memory, for tests and tools. Replays its mutations on every [`Store::load`].
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    mutations: Vec<Mutation>,
    state: Registry,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The committed mutations, in order.
    pub fn mutations(&self) -> &[Mutation] {
        &self.mutations
    }
}

impl Store for MemStore {
    fn load(&self) -> Result<State, StoreError> {
        let mut state = Registry::default();
        for m in &self.mutations {
            state.apply(m)?;
        }
        Ok(state)
    }

    fn commit(&mut self, mutation: &Mutation) -> Result<(), StoreError> {
        self.state.apply(mutation)?;
        self.mutations.push(mutation.clone());
        Ok(())
    }

    fn recover(&mut self) -> Result<State, StoreError> {
        self.load()
    }
}

/// A record as written: borrowed, so committing does not clone the state.
#[derive(Serialize)]
pub(crate) struct RecordOut<'a> {
    // Field order matters: snapshot records start with `{"snapshot"`, mutation records with
    // `{"seq"` (see `SNAPSHOT_START`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<&'a Registry>,
    pub(crate) seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mutation: Option<&'a Mutation>,
}

/// A record as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    seq: u64,
    #[serde(default)]
    snapshot: Option<Registry>,
    #[serde(default)]
    mutation: Option<Mutation>,
}

/// The embedded store: one append-only, fsynced JSON-lines file with periodic compaction.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    state: Registry,
    /// Mutation lines since the snapshot (or the start of the file).
    since_snapshot: u64,
    compact_every: u64,
    torn_bytes: u64,
    poisoned: bool,
}

impl FileStore {
    /// Name of the store file inside the state directory.
    pub const FILE_NAME: &'static str = "store.jsonl";
    /// Default number of commits between compactions.
    pub const DEFAULT_COMPACT_EVERY: u64 = 1024;

    /// Opens (or creates) the store in `state_dir`, which must exist, and replays it. A torn
    /// last line is dropped and cut from the file; any other bad line is
    /// [`StoreError::Corrupt`].
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let dir = state_dir.to_path_buf();
        let path = dir.join(Self::FILE_NAME);
        let io_err = |action, source| StoreError::Io {
            path: path.clone(),
            action,
            source,
        };
        let existed = path.exists();
        // Mode 0600 from creation (no umask dependence); an older, wider file is narrowed.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("open", e))?;
        private_dir::narrow(&file, &path, 0o600).map_err(|e| io_err("set the mode of", e))?;
        if !existed {
            file.sync_all().map_err(|e| io_err("sync", e))?;
            sync_dir(&dir)?;
        }
        let bytes = fs::read(&path).map_err(|e| io_err("read", e))?;
        let (state, since_snapshot, complete) = replay(&path, &bytes)?;
        let torn_bytes = (bytes.len() - complete) as u64;
        if torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                torn_bytes,
                "dropping a torn last record (a commit cut off by a crash before it was acknowledged)"
            );
            file.set_len(complete as u64)
                .map_err(|e| io_err("truncate", e))?;
            file.sync_all().map_err(|e| io_err("sync", e))?;
        }
        file.flush().map_err(|e| io_err("flush", e))?;
        Ok(Self {
            dir,
            path,
            file,
            state,
            since_snapshot,
            compact_every: Self::DEFAULT_COMPACT_EVERY,
            torn_bytes,
            poisoned: false,
        })
    }

    /// Sets how many commits trigger a compaction (at least 1).
    pub fn with_compact_every(mut self, commits: u64) -> Self {
        self.compact_every = commits.max(1);
        self
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many bytes of a torn last record were dropped at open (0 when none).
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    /// Replaces the file by a single snapshot of the current state (tmp file, fsync, rename,
    /// directory fsync).
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.check_poisoned()?;
        let tmp = self.dir.join(format!("{}.tmp", Self::FILE_NAME));
        let io_err = |path: &Path, action, source| StoreError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let line = encode(&RecordOut {
            seq: self.state.revision(),
            snapshot: Some(&self.state),
            mutation: None,
        })?;
        let written = (|| {
            // A leftover tmp file may have another mode: start from a fresh one.
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // New (create_new) with mode 0600: the umask can only narrow it further.
            f.write_all(&line)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp, "write the snapshot", e));
        }
        fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, "replace", e))?;
        // From here the old file handle points at the replaced file: any failure poisons.
        self.poisoned = true;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io_err(&self.path, "reopen", e))?;
        self.poisoned = false;
        self.since_snapshot = 0;
        Ok(())
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned {
                path: self.path.clone(),
            });
        }
        Ok(())
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<State, StoreError> {
        Ok(self.state.clone())
    }

    fn commit(&mut self, mutation: &Mutation) -> Result<(), StoreError> {
        self.check_poisoned()?;
        self.state.check(mutation)?;
        let line = encode(&RecordOut {
            seq: self.state.revision() + 1,
            snapshot: None,
            mutation: Some(mutation),
        })?;
        // One write of the whole line, then fsync: acknowledged only once on disk. After a
        // failure the file's tail is unknown (even a failed fsync may have lost pages), so the
        // store refuses further writes until it is reopened, which cuts a torn tail.
        self.poisoned = true;
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| StoreError::Io {
                path: self.path.clone(),
                action: "append to",
                source: e,
            })?;
        self.poisoned = false;
        self.state.apply(mutation)?;
        self.since_snapshot += 1;
        if self.since_snapshot >= self.compact_every {
            if let Err(e) = self.compact() {
                // The commit itself is durable; the log just stays longer.
                tracing::warn!(error = %e, "store compaction failed");
            }
        }
        Ok(())
    }

    /// Reopens the file as at start-up: a torn last record is cut, a complete one is kept.
    fn recover(&mut self) -> Result<State, StoreError> {
        let reopened = Self::open(&self.dir)?.with_compact_every(self.compact_every);
        *self = reopened;
        // What was read back may sit only in the page cache (the failed fsync may have lost it
        // on disk): write it to a fresh file, fsynced and renamed into place, before building
        // on it.
        self.compact()?;
        tracing::info!(path = %self.path.display(), revision = self.state.revision(), "store reopened after a failed write");
        Ok(self.state.clone())
    }
}

pub(crate) fn encode(record: &RecordOut<'_>) -> Result<Vec<u8>, StoreError> {
    let mut line = serde_json::to_vec(record).map_err(|e| {
        // Serialising our own types cannot fail short of a bug; report it as a rejection.
        StoreError::Io {
            path: PathBuf::new(),
            action: "encode a record",
            source: io::Error::other(e),
        }
    })?;
    line.push(b'\n');
    Ok(line)
}

/// Replays a store file: returns the state, the number of mutation lines after the snapshot,
/// and the length of the complete lines (the rest is a torn tail).
pub(crate) fn replay(path: &Path, bytes: &[u8]) -> Result<(Registry, u64, usize), StoreError> {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let corrupt = |line: usize, message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        message,
    };
    // A snapshot is only ever written whole (tmp + rename): a torn one is corruption, not a
    // cut-off commit, and dropping it would silently empty the registry.
    if bytes[complete..].starts_with(SNAPSHOT_START) {
        let line = bytes[..complete].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(corrupt(
            line,
            "the snapshot record is incomplete (no newline at its end)".into(),
        ));
    }
    let mut state = Registry::default();
    let mut since_snapshot = 0;
    let body = bytes[..complete].strip_suffix(b"\n").unwrap_or_default();
    let lines = body.split(|&b| b == b'\n').filter(|_| complete > 0);
    for (i, raw) in lines.enumerate() {
        let line = i + 1;
        let record: RecordIn = serde_json::from_slice(raw)
            .map_err(|e| corrupt(line, format!("not a valid record: {e}")))?;
        match (record.snapshot, record.mutation) {
            (Some(snapshot), None) if line == 1 => {
                if snapshot.revision() != record.seq {
                    return Err(corrupt(
                        line,
                        format!(
                            "snapshot seq {} does not match its revision {}",
                            record.seq,
                            snapshot.revision()
                        ),
                    ));
                }
                state = snapshot;
            }
            (Some(_), None) => {
                return Err(corrupt(
                    line,
                    "a snapshot record after the first line".into(),
                ))
            }
            (None, Some(mutation)) => {
                let expected = state.revision() + 1;
                if record.seq != expected {
                    return Err(corrupt(
                        line,
                        format!("seq {} where {expected} was expected", record.seq),
                    ));
                }
                state
                    .apply(&mutation)
                    .map_err(|e| corrupt(line, format!("the mutation does not apply: {e}")))?;
                since_snapshot += 1;
            }
            _ => {
                return Err(corrupt(
                    line,
                    "a record needs exactly one of \"snapshot\" and \"mutation\"".into(),
                ))
            }
        }
    }
    Ok((state, since_snapshot, complete))
}

/// How every snapshot record starts (its first field is `snapshot`; mutation records start
/// with `{"seq"`), so a torn snapshot can be told from a torn commit.
const SNAPSHOT_START: &[u8] = b"{\"sn";

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            action: "sync the directory",
            source: e,
        })
}

#[cfg(test)]
mod tests;
