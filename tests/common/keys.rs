//! Keys made with the reference tool `wg`, and the wgmesh binary's key commands.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `program args` with `stdin` as standard input.
pub fn run_with_stdin(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    {
        let mut si = child.stdin.take().expect("stdin");
        // The program may exit before reading everything (bad input): ignore EPIPE.
        let _ = si.write_all(stdin);
    }
    child.wait_with_output().expect("wait")
}

fn stdout_ok(program: &str, args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// `wg genkey` (a private key, base64, without the newline).
pub fn wg_genkey() -> String {
    let out = Command::new("wg")
        .arg("genkey")
        .stdin(Stdio::null())
        .output()
        .expect("run wg genkey");
    stdout_ok("wg", &["genkey"], &out).trim().to_string()
}

/// `wg pubkey` of a private key.
pub fn wg_pubkey(private: &str) -> String {
    let out = run_with_stdin("wg", &["pubkey"], format!("{private}\n").as_bytes());
    stdout_ok("wg", &["pubkey"], &out).trim().to_string()
}

/// A key pair from `wg` (independent of the code under test).
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub private: String,
    pub public: String,
}

impl KeyPair {
    pub fn generate() -> Self {
        let private = wg_genkey();
        let public = wg_pubkey(&private);
        Self { private, public }
    }

    /// Writes the private key (base64 + newline) to `path`, mode 0600.
    pub fn write_private(&self, path: &Path) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        writeln!(f, "{}", self.private).expect("write key");
    }
}

/// Decodes standard padded base64 (as `wg` prints keys). None if invalid.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for (i, q) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}
