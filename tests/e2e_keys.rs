//! Key commands agree with the reference tool: `wgmesh genkey | wgmesh pubkey` equals
//! `wg pubkey` of the same private key, and keys from `wg genkey` work with
//! `wgmesh pubkey`. These need no privileges (only `wg`).

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};

use common::agent::BIN;
use common::keys::{base64_decode, run_with_stdin, wg_genkey, wg_pubkey};

fn have_wg() -> bool {
    let ok = Command::new("wg")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("`wg` is not installed (needed as the reference under CI=true)");
        }
        eprintln!("SKIPPED: `wg` is not installed");
    }
    ok
}

fn wgmesh_genkey() -> String {
    let out = Command::new(BIN)
        .arg("genkey")
        .stdin(Stdio::null())
        .output()
        .expect("run wgmesh genkey");
    assert!(
        out.status.success(),
        "wgmesh genkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        s.ends_with('\n') && s.len() == 45,
        "genkey should print 44 base64 characters and a newline, printed {s:?}"
    );
    s
}

fn wgmesh_pubkey(input: &str) -> String {
    let out = run_with_stdin(BIN, &["pubkey"], input.as_bytes());
    assert!(
        out.status.success(),
        "wgmesh pubkey failed on {input:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        s.ends_with('\n') && s.len() == 45,
        "pubkey should print 44 base64 characters and a newline, printed {s:?}"
    );
    s.trim_end().to_string()
}

#[test]
fn wgmesh_keys_match_wg_pubkey() {
    if !have_wg() {
        return;
    }
    let mut seen = HashSet::new();
    for _ in 0..16 {
        let private = wgmesh_genkey();
        let bytes = base64_decode(private.trim_end()).expect("genkey prints base64");
        assert_eq!(bytes.len(), 32);
        assert!(
            bytes[0] & 7 == 0 && bytes[31] & 0x80 == 0 && bytes[31] & 0x40 != 0,
            "genkey output is not clamped like `wg genkey`: {private}"
        );
        assert!(seen.insert(private.clone()), "genkey repeated a key");
        // As a pipe would deliver it: with the trailing newline.
        let ours = wgmesh_pubkey(&private);
        let theirs = wg_pubkey(private.trim_end());
        assert_eq!(ours, theirs, "public key of {private:?}");
        assert_eq!(base64_decode(&ours).map(|b| b.len()), Some(32));
    }
}

#[test]
fn wg_genkey_keys_work_with_wgmesh_pubkey() {
    if !have_wg() {
        return;
    }
    for i in 0..16 {
        let private = wg_genkey();
        let input = if i % 2 == 0 {
            format!("{private}\n")
        } else {
            private.clone()
        };
        assert_eq!(
            wgmesh_pubkey(&input),
            wg_pubkey(&private),
            "public key of {private}"
        );
    }
}

#[test]
fn pubkey_rejects_what_is_not_a_private_key() {
    for bad in [
        "",
        "hello\n",
        "AAAA\n",
        "bm90LWEta2V5bm90LWEta2V5bm90LWEta2V5bm90LWEta2V5\n",
    ] {
        let out = run_with_stdin(BIN, &["pubkey"], bad.as_bytes());
        assert!(
            !out.status.success(),
            "wgmesh pubkey accepted {bad:?} and printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !out.stderr.is_empty(),
            "wgmesh pubkey rejected {bad:?} without a message"
        );
        assert!(out.stdout.is_empty(), "printed a key for {bad:?}");
    }
}
