//! Writing a file so that a crash leaves the old or the new content, never half of either, and
//! so that a private file is never readable by others, not even briefly: write a temporary file
//! created with the final mode, fsync it, rename it over the target, fsync the directory.
//!
//! Used for the PKI files and `admin.toml` here, and for the agent's state files.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A failed atomic write: the file that could not be written, created, renamed or synced.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    /// The file or directory the failing operation was on.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// Replaces `path` with `contents`, with permissions `mode` (such as 0o600).
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover temporary file may have a wider mode; start from a fresh one.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&tmp)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err(&tmp))?;
    // The umask may have narrowed the mode given to open; set exactly `mode`.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(err(&tmp))?;
    file.write_all(contents).map_err(err(&tmp))?;
    file.sync_all().map_err(err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(err(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn replaces_the_file_with_exactly_the_mode_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "old").unwrap();
        // A stale temporary file from a crash, readable by all.
        fs::write(dir.path().join("f.tmp"), "stale").unwrap();
        write(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(!dir.path().join("f.tmp").exists());
    }

    #[test]
    fn names_the_path_that_failed() {
        let err = write(Path::new("/nonexistent-dir/f"), b"x", 0o600).unwrap_err();
        assert_eq!(err.to_string(), "cannot write /nonexistent-dir/f.tmp");
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
    }
}
