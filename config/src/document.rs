//! The machinery shared by the config files' parsers: turning `toml`'s spans into file, line,
//! column and field, and its serde errors into messages that say what would be valid.
//!
//! Pure, except [`read`], which reads the one file it is given.

use std::error::Error;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use crate::error::ConfigError;
use crate::locate;

/// Reads a config file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, format!("cannot read the file: {e}")).with_source(e))
}

/// The document being validated, for turning spans into positions.
pub(crate) struct Document<'a> {
    pub(crate) text: &'a str,
    pub(crate) origin: &'a Path,
    /// The single top-level table of the file, if it has one (`control`).
    pub(crate) table: Option<&'static str>,
    /// What a valid value of the field at a path looks like, for serde's type errors.
    pub(crate) expected_for: fn(&str) -> Option<&'static str>,
    /// Whether `toml`'s error is kept as the source (its text quotes the offending line).
    pub(crate) keep_toml_source: bool,
}

impl Document<'_> {
    pub(crate) fn error(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = locate::line_col(self.text, span.start);
        ConfigError::new(self.origin, message)
            .with_position(line, column)
            .with_field(field)
    }

    /// Runs `check` on a spanned value, blaming `field` at the value's position on failure.
    /// The error keeps only `check`'s message, no source.
    pub(crate) fn check_value<T, U, E: Error + Send + Sync + 'static>(
        &self,
        value: &Spanned<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<U, E>,
    ) -> Result<U, ConfigError> {
        check(value.get_ref()).map_err(|e| self.error(&value.span(), field, e.to_string()))
    }

    pub(crate) fn line(&self, span: &Range<usize>) -> usize {
        locate::line_col(self.text, span.start).0
    }

    /// Converts a serde-level error from `toml` (syntax, unknown key, wrong type, missing key).
    pub(crate) fn toml_error(&self, error: toml::de::Error) -> ConfigError {
        let mut message = error.message().to_owned();
        let mut out = ConfigError::new(self.origin, String::new());
        if let Some(span) = error.span() {
            let (line, column) = locate::line_col(self.text, span.start);
            out = out.with_position(line, column);
            let mut field = locate::field_at(self.text, span.start);
            let array_of_table = self.table.filter(|t| {
                field
                    .as_deref()
                    .is_some_and(|f| f.starts_with(&format!("{t}[")))
            });
            if let Some(table) = array_of_table {
                field = Some(table.to_owned());
                message =
                    format!("found an array of tables; write one [{table}] table, not [[{table}]]");
            } else if message.starts_with("unknown field") {
                // The key itself is the problem; name the table it is in.
                field = field.as_deref().and_then(locate::parent).map(str::to_owned);
            } else if let Some(missing) = missing_field(&message) {
                if Some(missing) == self.table {
                    field = None;
                }
                if let Some(expected) = (self.expected_for)(missing) {
                    message = format!("{message}, expected {expected}");
                }
            } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
                let expected = field.as_deref().and_then(self.expected_for);
                if let (Some(expected), Some(at)) = (expected, message.rfind(", expected ")) {
                    message.truncate(at);
                    message = format!("{message}, expected {expected}");
                }
            }
            out.field = field;
        }
        out.message = message;
        if self.keep_toml_source {
            out = out.with_source(error);
        }
        out
    }
}

/// `missing field `x`` -> `x`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
}
