//! State files and directories that only their owner can read: creating the directory, and
//! narrowing a file or directory an older version (or an admin) left open to others.

use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700; a directory that already exists is
/// left as it is.
pub fn create(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Sets `file` (open file or directory found at `path`) to `mode` if the group or others may
/// access it, and says so in the log. The one narrowing rule of every state file.
pub fn narrow(file: &File, path: &Path, mode: u32) -> io::Result<()> {
    let was = file.metadata()?.permissions().mode() & 0o7777;
    if was & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(mode))?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{was:o}"),
            now = format!("{mode:o}"),
            "narrowed the mode of a state file: only its owner may read it"
        );
    }
    Ok(())
}

/// Narrows every regular file directly in `dir` to 0600. Failures are logged: they leave a
/// file as readable as it was, not a broken start.
pub fn narrow_files(dir: &Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot list the state directory: {e}");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Err(e) = File::open(&path).and_then(|f| narrow(&f, &path, 0o600)) {
            tracing::warn!(path = %path.display(), "cannot narrow the mode of a state file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn open_files_are_narrowed_private_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let open = d.join("open");
        let private = d.join("private");
        let owner_only = d.join("owner-only");
        for (p, m) in [(&open, 0o644), (&private, 0o600), (&owner_only, 0o400)] {
            std::fs::write(p, b"x").unwrap();
            std::fs::set_permissions(p, Permissions::from_mode(m)).unwrap();
        }
        std::fs::set_permissions(d, Permissions::from_mode(0o755)).unwrap();
        narrow(&File::open(d).unwrap(), d, 0o700).unwrap();
        narrow_files(d);
        assert_eq!(mode(d), 0o700);
        assert_eq!(mode(&open), 0o600);
        assert_eq!(mode(&private), 0o600);
        assert_eq!(mode(&owner_only), 0o400, "already private: left as it is");
    }
}
