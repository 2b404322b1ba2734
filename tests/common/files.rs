//! Files and file descriptors: the permission bits of everything under a directory, the
//! "only its owner may read it" check of a state directory, and this process's open-file limit.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Raises this process's open-file limit to at least `n` (the test holds many sockets).
pub fn allow_open_files(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur >= n {
            return;
        }
        lim.rlim_cur = n.max(lim.rlim_cur);
        lim.rlim_max = lim.rlim_max.max(n);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "cannot raise the open-file limit to {n}"
        );
    }
}

/// Every file and directory under `dir` (itself included) with its permission bits.
pub fn modes_under(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let is_dir = meta.is_dir();
        out.push((p.clone(), meta.permissions().mode() & 0o7777, is_dir));
        if is_dir {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

/// Asserts every file under `dir` is 0600 and every directory (`dir` too) 0700, and that
/// `dir` holds at least `min_entries` files and directories besides itself (so an empty or
/// wrong directory does not pass).
#[track_caller]
pub fn assert_private_tree(dir: &Path, min_entries: usize) {
    let modes = modes_under(dir);
    let wrong: Vec<String> = modes
        .iter()
        .filter(|(_, m, d)| *m != if *d { 0o700 } else { 0o600 })
        .map(|(p, m, _)| format!("{} {m:o}", p.display()))
        .collect();
    assert!(
        wrong.is_empty(),
        "files not 0600 / directories not 0700 under {}: {wrong:?}",
        dir.display()
    );
    assert!(
        modes.len() > min_entries,
        "{} holds fewer than {min_entries} entries: {modes:?}",
        dir.display()
    );
}
