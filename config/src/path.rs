//! File system paths in the config files (agent.toml's `socket`, `state_dir`, key files;
//! control.toml's `state_dir` and `audit_log`): the one rule both check a path by.

use std::path::PathBuf;

/// Which part of the path rule a string breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathFault {
    /// The string is empty.
    #[error("the path is empty; expected a file system path")]
    Empty,
    /// The string has a NUL character, which no file system path can hold.
    #[error("the path contains a NUL character")]
    Nul,
}

/// Checks `s` against the path rule: not empty, no NUL.
pub(crate) fn check_path(s: &str) -> Result<PathBuf, PathFault> {
    if s.is_empty() {
        return Err(PathFault::Empty);
    }
    if s.contains('\0') {
        return Err(PathFault::Nul);
    }
    Ok(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_paths() {
        assert_eq!(check_path(""), Err(PathFault::Empty));
        assert_eq!(check_path("a\0b"), Err(PathFault::Nul));
        assert_eq!(check_path("/var/lib/x"), Ok(PathBuf::from("/var/lib/x")));
        assert_eq!(
            PathFault::Empty.to_string(),
            "the path is empty; expected a file system path"
        );
        assert_eq!(
            PathFault::Nul.to_string(),
            "the path contains a NUL character"
        );
    }
}
