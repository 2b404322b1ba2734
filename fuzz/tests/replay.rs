//! Replays every target's seeds and regression inputs without instrumentation, so that a
//! crash once found stays fixed: `fuzz/corpus/<target>/` (the checked-in seeds, as many as the
//! target's `seeds()` builds) and `fuzz/regressions/<target>/` (inputs that crashed).
//! `WGMESH_FUZZ_WRITE_SEEDS=1 cargo test -p wgmesh-fuzz` rewrites the seed files.

use std::fs;
use std::path::{Path, PathBuf};

use wgmesh_fuzz::TARGETS;

fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("directory entry").path())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn checked_in_seeds_are_the_targets_seeds_and_pass() {
    for t in TARGETS {
        let seeds = (t.seeds)();
        assert!(!seeds.is_empty(), "{}: no seeds", t.name);
        let d = dir("corpus", t.name);
        if std::env::var_os("WGMESH_FUZZ_WRITE_SEEDS").is_some() {
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).expect("corpus directory");
            for (i, s) in seeds.iter().enumerate() {
                fs::write(d.join(format!("seed-{i:02}")), s).expect("seed file");
            }
        }
        // Counted, not compared: a seed may hold fresh randomness (a handshake initiation).
        let on_disk = files(&d);
        assert_eq!(
            on_disk.len(),
            seeds.len(),
            "{}: fuzz/corpus differs from seeds(); rerun with WGMESH_FUZZ_WRITE_SEEDS=1",
            t.name
        );
        for f in on_disk {
            (t.run)(&fs::read(&f).expect("seed file"));
        }
    }
}

#[test]
fn every_seed_passes() {
    for t in TARGETS {
        for s in (t.seeds)() {
            assert!(
                s.len() <= t.max_len,
                "{}: a seed longer than max_len",
                t.name
            );
            (t.run)(&s);
        }
    }
}

#[test]
fn every_regression_input_passes() {
    for t in TARGETS {
        for f in files(&dir("regressions", t.name)) {
            eprintln!("{}: {}", t.name, f.display());
            (t.run)(&fs::read(&f).expect("regression input"));
        }
    }
}
