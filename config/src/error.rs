//! [`ConfigError`]: why a configuration file was rejected, and where.
//!
//! Every error names the file; errors about the file's content add the 1-based line and column,
//! the field path (`agent.subnet`, `peer[1].allowed_ips[0]`) and a message that says what would
//! be valid. This module performs no I/O.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;

/// A configuration file was unreadable or invalid.
///
/// `Display` is one line: `{path}:{line}:{column}: {field}: {message}`, leaving out the parts
/// that are `None`, for example
/// `/etc/wgmesh/agent.toml:9:15: peer[0].allowed_ips[1]: 10.42.1.0/25 overlaps agent.subnet
/// 10.42.1.0/24` or `/tmp/missing.toml: cannot read the file: No such file or directory (os
/// error 2)`.
#[derive(Debug)]
pub struct ConfigError {
    /// The file the configuration came from (the `origin` given to `from_toml`).
    pub path: PathBuf,
    /// 1-based line of the offending text, when the error is about the file's content.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending text, when `line` is set.
    pub column: Option<usize>,
    /// The path of the offending field, such as `agent.subnet` or `peer[1].allowed_ips[0]`, or
    /// the table (`agent`, `peer[2]`) for unknown and missing keys.
    pub field: Option<String>,
    /// What is wrong and what would be valid; lowercase, no trailing period. It already includes
    /// the text of `source`.
    pub message: String,
    /// The underlying error, where there is one (an `io::Error`, a `toml::de::Error`, a
    /// [`KeyError`](crate::KeyError), an `ipnet::AddrParseError`), for callers that need to
    /// inspect it, e.g. for `io::ErrorKind::NotFound`.
    ///
    /// `message` already contains its text, so [`Error::source`] does not return it: error
    /// reporters that walk the chain (`anyhow`'s `{:#}`) would otherwise print it twice.
    pub source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl ConfigError {
    /// An error about `path` as a whole, without a position (for example, the file is
    /// unreadable).
    pub fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            column: None,
            field: None,
            message: message.into(),
            source: None,
        }
    }

    /// Sets the 1-based line and column.
    pub fn with_position(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Sets the field path.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Keeps the underlying error; its text must already be part of the message.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Error for ConfigError {}

#[cfg(test)]
impl ConfigError {
    /// For the parsers' tests: asserts that the error is at `origin:line`, for `field`, and
    /// mentions `needle`; returns it as displayed.
    #[track_caller]
    pub(crate) fn assert_at(
        &self,
        origin: &str,
        line: usize,
        field: Option<&str>,
        needle: &str,
    ) -> String {
        let shown = self.to_string();
        assert_eq!(self.path, std::path::Path::new(origin), "{shown}");
        assert_eq!(self.line, Some(line), "{shown}");
        assert_eq!(self.field.as_deref(), field, "{shown}");
        assert!(shown.starts_with(&format!("{origin}:{line}:")), "{shown}");
        if let Some(field) = field {
            assert!(shown.contains(&format!(": {field}: ")), "{shown}");
        }
        assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_missing_parts() {
        let e = ConfigError::new(
            "/etc/wgmesh/agent.toml",
            "10.42.1.0/25 overlaps agent.subnet",
        )
        .with_position(9, 15)
        .with_field("peer[0].allowed_ips[1]");
        assert_eq!(
            e.to_string(),
            "/etc/wgmesh/agent.toml:9:15: peer[0].allowed_ips[1]: 10.42.1.0/25 overlaps agent.subnet"
        );
        let e = ConfigError::new("/tmp/a.toml", "unknown field `x`").with_position(3, 1);
        assert_eq!(e.to_string(), "/tmp/a.toml:3:1: unknown field `x`");
        let e = ConfigError::new("/tmp/missing.toml", "cannot read the file: gone");
        assert_eq!(
            e.to_string(),
            "/tmp/missing.toml: cannot read the file: gone"
        );
    }
}
