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
//! Not yet: a lock against two control planes sharing one state directory, and schema
//! migrations (the records carry no version yet; the first migration adds one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
struct RecordOut<'a> {
    // Field order matters: snapshot records start with `{"snapshot"`, mutation records with
    // `{"seq"` (see `SNAPSHOT_START`).
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<&'a Registry>,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mutation: Option<&'a Mutation>,
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
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_err("open", e))?;
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
            let mut f = File::create(&tmp)?;
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

fn encode(record: &RecordOut<'_>) -> Result<Vec<u8>, StoreError> {
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
fn replay(path: &Path, bytes: &[u8]) -> Result<(Registry, u64, usize), StoreError> {
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
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::registry::tests::{key, name};
    use crate::registry::{HostId, JoinRequest, Labels, SecretHash};

    /// A history of `n` joins (after initialisation and a token), with an endpoint change and
    /// a removal mixed in, planned against a registry in step.
    fn history(n: u8) -> Vec<Mutation> {
        let mut r = Registry::default();
        let mut out = Vec::new();
        let mut push = |r: &mut Registry, m: Mutation| {
            r.apply(&m).unwrap();
            out.push(m);
        };
        let m = r
            .plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
            .unwrap();
        push(&mut r, m);
        let m = r.plan_token(SecretHash::of(b"t"), 0, 1000, true, Labels::new());
        push(&mut r, m);
        for i in 0..n {
            let request = JoinRequest {
                name: name(&format!("host-{i}")),
                public_key: key(i + 1),
                endpoint: Some(([198, 18, 0, i], 51820).into()),
                labels: Labels::new(),
            };
            let m = r
                .plan_join(request, &SecretHash::of(b"t"), SecretHash::of(&[i]), 5)
                .unwrap();
            push(&mut r, m);
            if i % 3 == 1 {
                let m = r.plan_remove(&format!("host-{}", i - 1)).unwrap();
                push(&mut r, m);
            }
            if i % 4 == 2 {
                let m = r
                    .plan_endpoint(HostId(u64::from(i)), Some(([203, 0, 113, i], 1).into()))
                    .unwrap()
                    .unwrap();
                push(&mut r, m);
            }
        }
        out
    }

    fn replayed(ms: &[Mutation]) -> Registry {
        let mut r = Registry::default();
        for m in ms {
            r.apply(m).unwrap();
        }
        r
    }

    #[test]
    fn mem_store_replays_and_refuses_bad_mutations() {
        let ms = history(5);
        let mut store = MemStore::new();
        for m in &ms {
            store.commit(m).unwrap();
        }
        assert_eq!(store.load().unwrap(), replayed(&ms));
        let err = store.commit(&ms[0]).unwrap_err();
        assert!(matches!(err, StoreError::Rejected(_)), "{err}");
        assert_eq!(store.mutations().len(), ms.len());
    }

    #[test]
    fn reopen_after_commits_gives_equal_state() {
        let dir = tempfile::tempdir().unwrap();
        let ms = history(10);
        {
            let mut store = FileStore::open(dir.path()).unwrap();
            assert_eq!(store.load().unwrap(), Registry::default());
            for m in &ms {
                store.commit(m).unwrap();
            }
            assert_eq!(store.load().unwrap(), replayed(&ms));
        }
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), replayed(&ms));
        assert_eq!(store.torn_bytes(), 0);
    }

    #[test]
    fn refused_mutation_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ms = history(2);
        let mut store = FileStore::open(dir.path()).unwrap();
        for m in &ms {
            store.commit(m).unwrap();
        }
        let before = fs::read(store.path()).unwrap();
        let err = store.commit(&ms[2]).unwrap_err();
        assert!(matches!(err, StoreError::Rejected(_)), "{err}");
        assert_eq!(fs::read(store.path()).unwrap(), before);
        store.commit(&ms[0]).unwrap_err();
        assert_eq!(fs::read(store.path()).unwrap(), before);
    }

    #[test]
    fn compaction_keeps_state_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ms = history(20);
        let mut store = FileStore::open(dir.path()).unwrap().with_compact_every(7);
        for m in &ms {
            store.commit(m).unwrap();
        }
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(text.starts_with("{\"snapshot\":"), "{text}");
        assert!(text.lines().count() <= 7);
        assert!(!dir.path().join("store.jsonl.tmp").exists());
        store.compact().unwrap();
        store.commit(&ms[0]).unwrap_err();
        drop(store);
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), replayed(&ms));
        assert_eq!(fs::read_to_string(store.path()).unwrap().lines().count(), 1);
    }

    #[test]
    fn torn_tail_is_dropped_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let ms = history(3);
        let mut store = FileStore::open(dir.path()).unwrap();
        for m in &ms {
            store.commit(m).unwrap();
        }
        drop(store);
        let path = dir.path().join(FileStore::FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":99,\"mutation\":{\"type\":\"host_re")
            .unwrap();
        drop(f);
        let mut store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.torn_bytes(), 37);
        assert_eq!(store.load().unwrap(), replayed(&ms));
        // The next commit starts on a clean line.
        let extra = Mutation::HostRemoved { id: HostId(1) };
        store.commit(&extra).unwrap();
        drop(store);
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.torn_bytes(), 0);
        let mut all = ms.clone();
        all.push(extra);
        assert_eq!(store.load().unwrap(), replayed(&all));
    }

    #[test]
    fn corruption_in_the_middle_is_refused_with_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let ms = history(4);
        let mut store = FileStore::open(dir.path()).unwrap();
        for m in &ms {
            store.commit(m).unwrap();
        }
        drop(store);
        let path = dir.path().join(FileStore::FILE_NAME);
        let good = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let expect = |text: String, line: usize, needle: &str| {
            fs::write(&path, text).unwrap();
            let err = FileStore::open(dir.path()).unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("{}:{line}: corrupt store record", path.display())),
                "{shown}"
            );
            assert!(shown.contains(needle), "{shown}");
            assert!(matches!(err, StoreError::Corrupt { line: l, .. } if l == line));
        };
        // Garbage on line 3.
        let mut broken = lines.clone();
        broken[2] = "{not json";
        expect(broken.join("\n") + "\n", 3, "not a valid record");
        // A line dropped: the seq no longer follows.
        let mut gap = lines.clone();
        gap.remove(2);
        expect(gap.join("\n") + "\n", 3, "seq 4 where 3 was expected");
        // A mutation that does not apply (a token created twice).
        let mut twice = lines.clone();
        twice.insert(2, lines[1]);
        let renumbered: Vec<String> = twice
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let rest = l.split_once(',').unwrap().1;
                format!("{{\"seq\":{},{rest}", i + 1)
            })
            .collect();
        expect(renumbered.join("\n") + "\n", 3, "does not apply");
        // An empty line in the middle.
        let mut blank = lines.clone();
        blank.insert(1, "");
        expect(blank.join("\n") + "\n", 2, "not a valid record");
        // The last complete line is corrupt: also refused (only an unterminated line is torn).
        let mut last = lines.clone();
        let n = last.len();
        last[n - 1] = "{\"seq\":";
        expect(last.join("\n") + "\n", n, "not a valid record");
    }

    #[test]
    fn torn_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        for m in &history(2) {
            store.commit(m).unwrap();
        }
        store.compact().unwrap();
        drop(store);
        let path = dir.path().join(FileStore::FILE_NAME);
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains(":1: corrupt store record: the snapshot record is incomplete"),
            "{err}"
        );
    }

    /// Truncating the file at every byte offset (what a crash mid-append leaves) reopens to a
    /// prefix of the commits: every complete line, never an error, never anything else.
    #[test]
    fn truncation_at_every_offset_gives_a_prefix() {
        let ms = history(6);
        for compact_every in [1000, 4] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = FileStore::open(dir.path())
                .unwrap()
                .with_compact_every(compact_every);
            for m in &ms {
                store.commit(m).unwrap();
            }
            drop(store);
            let path = dir.path().join(FileStore::FILE_NAME);
            let full = fs::read(&path).unwrap();
            // The state after each prefix of the commits.
            let base = FileStore::open(dir.path()).unwrap().load().unwrap();
            let prefixes: Vec<Registry> = (0..=ms.len()).map(|k| replayed(&ms[..k])).collect();
            assert_eq!(base, prefixes[ms.len()]);
            let snapshot_len = if full.starts_with(SNAPSHOT_START) {
                full.iter().position(|&b| b == b'\n').unwrap() + 1
            } else {
                0
            };
            for cut in snapshot_len..=full.len() {
                fs::write(&path, &full[..cut]).unwrap();
                let store =
                    FileStore::open(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
                let state = store.load().unwrap();
                let k = usize::try_from(state.revision()).unwrap();
                assert_eq!(state, prefixes[k], "cut at {cut}");
                // Exactly the complete lines are kept.
                assert_eq!(
                    fs::read(&path).unwrap().len(),
                    full[..cut]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1),
                    "cut at {cut}"
                );
            }
        }
    }

    /// Environment variable that turns `child_commit_burst` into the writer of
    /// `kill_9_mid_burst_loses_no_acknowledged_commit`.
    const CHILD_DIR: &str = "WGMESH_STORE_TEST_CHILD_DIR";

    /// Not a test on its own: run by `kill_9_mid_burst_loses_no_acknowledged_commit` in a child
    /// process, it commits as fast as it can and prints the revision after each commit.
    #[test]
    fn child_commit_burst() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        let mut store = FileStore::open(Path::new(&dir))
            .unwrap()
            .with_compact_every(50);
        let mut out = io::stdout().lock();
        for m in &history(200) {
            store.commit(m).unwrap();
            writeln!(out, "acked {}", store.load().unwrap().revision()).unwrap();
            out.flush().unwrap();
        }
        // Wait to be killed.
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn kill_9_mid_burst_loses_no_acknowledged_commit() {
        let ms = history(200);
        for stop_after in [3u64, 60, 180] {
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "store::tests::child_commit_burst", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(CHILD_DIR, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut acked = 0;
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if let Some(n) = line.strip_prefix("acked ") {
                    acked = n.parse().unwrap();
                    if acked >= stop_after {
                        break;
                    }
                }
            }
            // `Child::kill` is SIGKILL on Unix.
            child.kill().unwrap();
            child.wait().unwrap();
            let state = FileStore::open(dir.path()).unwrap().load().unwrap();
            let k = usize::try_from(state.revision()).unwrap();
            assert!(k as u64 >= acked, "acked {acked}, recovered {k}");
            assert_eq!(state, replayed(&ms[..k]));
        }
    }
}
