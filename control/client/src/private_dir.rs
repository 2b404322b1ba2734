//! Creating a state directory that only its owner can read.

use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700; a directory that already exists is
/// left as it is.
pub fn create(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
