//! Maps byte offsets in a TOML document to 1-based line/column and to field paths such as
//! `peer[1].allowed_ips[0]`.
//!
//! `toml` reports errors as byte spans; this module turns them into positions a human can find.
//! This module performs no I/O.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The 1-based line and column (counted in characters) of byte `offset` in `text`.
///
/// Offsets past the end are clamped to the end; offsets inside a multi-byte character count as
/// that character.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The path of the deepest key or value at byte `offset` (`agent.mtu`, `peer[1]`,
/// `peer[0].allowed_ips[2]`), or else of the last table whose header starts before `offset`.
///
/// Works on documents with syntax errors too, as far as `toml` can recover them. Returns `None`
/// for offsets in the root table outside any key.
pub(crate) fn field_at(text: &str, offset: usize) -> Option<String> {
    let (root, _errors) = DeTable::parse_recoverable(text);
    let root = root.get_ref();
    in_table(root, offset, None).or_else(|| enclosing_table(root, offset))
}

/// The path of the table (or root, `None`) that contains `path`: `peer[1].foo` -> `peer[1]`.
pub(crate) fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('.').map(|(parent, _)| parent)
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn join(prefix: Option<&str>, key: &str) -> String {
    match prefix {
        Some(prefix) => format!("{prefix}.{key}"),
        None => key.to_owned(),
    }
}

fn in_table(table: &DeTable<'_>, offset: usize, prefix: Option<&str>) -> Option<String> {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        if let Some(found) = in_value(value, offset, &path) {
            return Some(found);
        }
        if contains(&key.span(), offset) {
            return Some(path);
        }
    }
    None
}

fn in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(table) => {
            if let Some(found) = in_table(table, offset, Some(path)) {
                return Some(found);
            }
        }
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                if let Some(found) = in_value(item, offset, &format!("{path}[{i}]")) {
                    return Some(found);
                }
            }
        }
        _ => {}
    }
    contains(&value.span(), offset).then(|| path.to_owned())
}

/// The last top-level table (or element of an array of tables) starting at or before `offset`.
fn enclosing_table(root: &DeTable<'_>, offset: usize) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    let mut consider = |start: usize, path: String| {
        if start <= offset && best.as_ref().is_none_or(|(s, _)| start >= *s) {
            best = Some((start, path));
        }
    };
    for (key, value) in root.iter() {
        match value.get_ref() {
            DeValue::Table(_) => consider(value.span().start, key.get_ref().to_string()),
            DeValue::Array(array) => {
                for (i, item) in array.iter().enumerate() {
                    if item.get_ref().is_table() {
                        consider(item.span().start, format!("{}[{i}]", key.get_ref()));
                    }
                }
            }
            _ => {}
        }
    }
    best.map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
[agent]
name = \"a\"
mtu = 1420

[[peer]]
public_key = \"k\"
allowed_ips = [\"10.0.0.0/8\", \"é\", 3]

[[peer]]
public_key = \"k2\"
";

    fn offset_of(needle: &str) -> usize {
        DOC.find(needle).unwrap()
    }

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        assert_eq!(line_col(DOC, 0), (1, 1));
        assert_eq!(line_col(DOC, offset_of("mtu")), (3, 1));
        assert_eq!(line_col(DOC, offset_of("1420")), (3, 7));
        // The `3` after a two-byte character: column counts characters, not bytes.
        let three = offset_of(", 3]") + 2;
        assert_eq!(line_col(DOC, three), (7, 35));
        assert_eq!(line_col(DOC, DOC.len() + 10), (11, 1));
    }

    #[test]
    fn field_at_finds_the_deepest_key_or_value() {
        assert_eq!(
            field_at(DOC, offset_of("mtu")).as_deref(),
            Some("agent.mtu")
        );
        assert_eq!(
            field_at(DOC, offset_of("1420")).as_deref(),
            Some("agent.mtu")
        );
        assert_eq!(
            field_at(DOC, offset_of("[agent]")).as_deref(),
            Some("agent")
        );
        assert_eq!(
            field_at(DOC, offset_of("[[peer]]")).as_deref(),
            Some("peer[0]")
        );
        let second = DOC.rfind("[[peer]]").unwrap();
        assert_eq!(field_at(DOC, second).as_deref(), Some("peer[1]"));
        assert_eq!(
            field_at(DOC, offset_of("\"k2\"")).as_deref(),
            Some("peer[1].public_key")
        );
        assert_eq!(
            field_at(DOC, offset_of(", 3]") + 2).as_deref(),
            Some("peer[0].allowed_ips[2]")
        );
        // Blank line inside peer[0]: falls back to the enclosing table.
        assert_eq!(field_at(DOC, second - 1).as_deref(), Some("peer[0]"));
        assert_eq!(parent("peer[0].allowed_ips[2]"), Some("peer[0]"));
        assert_eq!(parent("peers"), None);
    }
}
