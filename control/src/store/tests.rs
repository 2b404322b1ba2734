use std::fs::Permissions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
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
fn the_store_file_is_0600_whatever_the_umask_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // An older store with a wide mode is narrowed at open.
    let path = dir.path().join(FileStore::FILE_NAME);
    fs::write(&path, "").unwrap();
    fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
    let mut store = FileStore::open(dir.path()).unwrap().with_compact_every(2);
    assert_eq!(mode(store.path()), 0o600);
    // A leftover tmp file with a wide mode is not reused.
    let tmp = dir.path().join("store.jsonl.tmp");
    fs::write(&tmp, "junk").unwrap();
    fs::set_permissions(&tmp, Permissions::from_mode(0o666)).unwrap();
    for m in &history(3) {
        store.commit(m).unwrap();
    }
    assert!(!tmp.exists());
    assert_eq!(mode(store.path()), 0o600, "the compacted file");
    // A new store is 0600 from creation.
    let fresh = tempfile::tempdir().unwrap();
    let store = FileStore::open(fresh.path()).unwrap();
    assert_eq!(mode(store.path()), 0o600);
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
            let store = FileStore::open(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
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
