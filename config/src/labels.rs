//! Host labels: `key = value` pairs a host carries (`zone = "a"`), validated the same way in
//! agent.toml (`[agent] labels`), the admin CLI (`--label k=v`) and the control plane.
//!
//! The rules follow Kubernetes labels:
//!
//! - A **key** is a name, optionally after a prefix and `/`: `zone`, `example.com/zone`. The
//!   name has 1 to 63 characters from `A-Z a-z 0-9 - _ .` and starts and ends with a letter or
//!   digit. The prefix is a DNS name of at most 253 characters: dot-separated parts of lowercase
//!   letters, digits and `-`, each starting and ending with a letter or digit.
//! - A **value** is empty or follows the rules of a key's name: up to 63 characters from
//!   `A-Z a-z 0-9 - _ .`, starting and ending with a letter or digit.
//! - A host has at most [`MAX_LABELS`] labels.
//!
//! Pure: no I/O. Labels are not secret, so errors quote the text they reject.

use std::collections::BTreeMap;

/// A host's labels, ordered by key.
pub type Labels = BTreeMap<String, String>;

/// Most labels one host may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label name (a key without its prefix) and longest value, in characters.
pub const MAX_LABEL_NAME_LEN: usize = 63;
/// Longest key prefix (the part before `/`), in characters.
pub const MAX_LABEL_PREFIX_LEN: usize = 253;

/// What a valid key looks like, for error messages.
pub const KEY_RULE: &str = "a label key is 1 to 63 characters from A-Z a-z 0-9 - _ . starting and \
                            ending with a letter or digit, optionally after a DNS prefix and '/' \
                            such as \"example.com/zone\"";
/// What a valid value looks like, for error messages.
pub const VALUE_RULE: &str =
    "a label value is empty or up to 63 characters from A-Z a-z 0-9 - _ . \
                              starting and ending with a letter or digit";
const PREFIX_RULE: &str = "a key prefix is a DNS name of up to 253 characters: lowercase letters, \
                           digits, '-' and '.', each dot-separated part starting and ending with \
                           a letter or digit, such as \"example.com\"";

/// Why a label key, value, set of labels or `key=value` assignment is invalid.
///
/// Messages say what is wrong and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The key is not valid.
    #[error("label key {key:?} {reason}; {rule}")]
    Key {
        /// The key as given.
        key: String,
        /// What is wrong with it, e.g. "contains ' '".
        reason: String,
        /// What a valid key (or its prefix) looks like.
        rule: &'static str,
    },
    /// The value is not valid.
    #[error("{}label value {value:?} {reason}; {VALUE_RULE}", for_key(key))]
    Value {
        /// The key the value belongs to, when known.
        key: Option<String>,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// There are more than [`MAX_LABELS`] labels.
    #[error("{count} labels is too many; a host has at most {MAX_LABELS}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// The text of a `--label` is not `key=value`.
    #[error("{text:?} has no '='; expected key=value such as zone=a")]
    Assignment {
        /// The text as given.
        text: String,
    },
    /// A workload sets a key only the control plane sets ([`crate::policy::HOST_LABEL`]).
    #[error(
        "the label key {key:?} is reserved: every workload carries {key}=<its host's name>, set \
         by the control plane; use another key"
    )]
    Reserved {
        /// The key.
        key: String,
    },
    /// `container` on a workload that is no Docker container.
    #[error(
        "the label key {CONTAINER_LABEL:?} is reserved: every Docker container carries          {CONTAINER_LABEL}=<its name>, set by its host's agent; use another key"
    )]
    ContainerReserved,
}

/// The label every Docker container carries with its name.
pub const CONTAINER_LABEL: &str = "container";

/// How a Docker container's workload name begins (`docker:<endpoint>`): the only workloads that
/// may carry [`CONTAINER_LABEL`].
pub const CONTAINER_PREFIX: &str = "docker:";

impl LabelError {
    /// The key the error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Key { key, .. } | Self::Reserved { key } => Some(key),
            Self::Value { key, .. } => key.as_deref(),
            Self::ContainerReserved => Some(CONTAINER_LABEL),
            Self::TooMany { .. } | Self::Assignment { .. } => None,
        }
    }
}

fn for_key(key: &Option<String>) -> String {
    match key {
        Some(key) => format!("label {key:?}: "),
        None => String::new(),
    }
}

/// Checks a name (a key without prefix, or a non-empty value); returns what is wrong.
fn name_problem(s: &str) -> Option<String> {
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!("contains {c:?}"));
    }
    if s.len() > MAX_LABEL_NAME_LEN {
        return Some(format!("is {} characters long", s.len()));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(s.chars().next()) || !edge(s.chars().last()) {
        return Some("does not start and end with a letter or digit".to_owned());
    }
    None
}

fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some("has an empty prefix before '/'".to_owned());
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')))
    {
        return Some(format!("has {c:?} in its prefix"));
    }
    if prefix.len() > MAX_LABEL_PREFIX_LEN {
        return Some(format!("has a prefix of {} characters", prefix.len()));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if prefix
        .split('.')
        .any(|part| !edge(part.chars().next()) || !edge(part.chars().last()))
    {
        return Some(format!(
            "has the prefix {prefix:?} with a part that is empty or starts or ends with '-'"
        ));
    }
    None
}

/// Checks a label key: `name` or `prefix/name` (see the [module documentation](self)).
pub fn check_key(key: &str) -> Result<(), LabelError> {
    let invalid = |reason: String, rule| {
        Err(LabelError::Key {
            key: key.to_owned(),
            reason,
            rule,
        })
    };
    if key.is_empty() {
        return invalid("is empty".to_owned(), KEY_RULE);
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if name.contains('/') {
                return invalid("has more than one '/'".to_owned(), KEY_RULE);
            }
            if let Some(reason) = prefix_problem(prefix) {
                return invalid(reason, PREFIX_RULE);
            }
            if name.is_empty() {
                return invalid("has an empty name after '/'".to_owned(), KEY_RULE);
            }
            name
        }
        None => key,
    };
    match name_problem(name) {
        Some(reason) if name.len() == key.len() => invalid(reason, KEY_RULE),
        Some(reason) => invalid(format!("has a name that {reason}"), KEY_RULE),
        None => Ok(()),
    }
}

/// Checks a label value; the empty value is valid.
pub fn check_value(value: &str) -> Result<(), LabelError> {
    if value.is_empty() {
        return Ok(());
    }
    match name_problem(value) {
        Some(reason) => Err(LabelError::Value {
            key: None,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a key and its value; a value error names the key.
pub fn check_label(key: &str, value: &str) -> Result<(), LabelError> {
    check_key(key)?;
    check_value(value).map_err(|e| match e {
        LabelError::Value { value, reason, .. } => LabelError::Value {
            key: Some(key.to_owned()),
            value,
            reason,
        },
        other => other,
    })
}

/// Checks every key and value (in key order) and the number of labels; the error names the
/// offending key ([`LabelError::key`]).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), LabelError> {
    for (key, value) in labels {
        check_label(key, value)?;
    }
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: labels.len(),
        });
    }
    Ok(())
}

/// Checks a workload's own labels: the label rules ([`check_labels`]), and no
/// [`HOST_LABEL`](crate::policy::HOST_LABEL), which its host's name fills. The one statement of
/// what `attach --label` may give, asked by the CLI, the agent's local API and the control
/// plane.
pub fn check_workload_labels(labels: &BTreeMap<String, String>) -> Result<(), LabelError> {
    let reserved = crate::policy::HOST_LABEL;
    if labels.contains_key(reserved) {
        return Err(LabelError::Reserved {
            key: reserved.to_owned(),
        });
    }
    check_labels(labels)
}

/// Checks the labels of the workload `name` as a host reports it: [`check_workload_labels`], and
/// [`CONTAINER_LABEL`] only on a Docker container (named [`CONTAINER_PREFIX`]...), so that no
/// attached namespace passes for a container of that name.
pub fn check_reported_labels(
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), LabelError> {
    if labels.contains_key(CONTAINER_LABEL) && !name.starts_with(CONTAINER_PREFIX) {
        return Err(LabelError::ContainerReserved);
    }
    check_workload_labels(labels)
}

/// Parses and checks `key=value` (as given to `--label`); the value may be empty (`key=`).
pub fn parse_assignment(s: &str) -> Result<(String, String), LabelError> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(LabelError::Assignment { text: s.to_owned() });
    };
    check_label(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn key_error(key: &str, needle: &str) {
        let err = check_key(key).expect_err(key);
        let shown = err.to_string();
        assert_eq!(err.key(), Some(key), "{shown}");
        assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
    }

    #[test]
    fn valid_keys() {
        let long = "a".repeat(63);
        let prefix = format!("{}.com", "b".repeat(249));
        let prefixed = format!("{prefix}/{long}");
        for key in [
            "zone",
            "z",
            "Zone_1.a-b",
            "9",
            "example.com/zone",
            "a-b.c/Z",
            "x/y",
            &long,
            &prefixed,
        ] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn invalid_keys() {
        key_error("", "is empty; a label key is 1 to 63 characters");
        key_error("zone a", "contains ' '");
        key_error("zöne", "contains 'ö'");
        key_error("-zone", "does not start and end with a letter or digit");
        key_error("zone.", "does not start and end");
        key_error(&"a".repeat(64), "is 64 characters long");
        key_error("a/b/c", "more than one '/'");
        key_error("/zone", "empty prefix");
        key_error("example.com/", "empty name after '/'");
        key_error("Example.com/zone", "has 'E' in its prefix");
        key_error("example_com/zone", "has '_' in its prefix");
        key_error("example..com/zone", "part that is empty");
        key_error("-example.com/zone", "starts or ends with '-'");
        key_error("example.com/-zone", "has a name that does not start");
        let prefix = format!("{}.com", "b".repeat(250));
        key_error(&format!("{prefix}/z"), "prefix of 254 characters");
        let shown = check_key("Example.com/zone").unwrap_err().to_string();
        assert!(shown.contains("a key prefix is a DNS name"), "{shown}");
    }

    #[test]
    fn values() {
        for value in ["", "a", "A-b_c.9", &"v".repeat(63)] {
            assert_eq!(check_value(value), Ok(()), "{value}");
        }
        for (value, needle) in [
            ("a b", "contains ' '"),
            ("a/b", "contains '/'"),
            ("_a", "does not start and end"),
            (&"v".repeat(64), "is 64 characters long"),
        ] {
            let err = check_value(value).unwrap_err();
            let shown = err.to_string();
            assert_eq!(err.key(), None);
            assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
            assert!(
                shown.contains("a label value is empty or up to 63"),
                "{shown}"
            );
        }
    }

    #[test]
    fn label_sets_name_the_offending_key() {
        let mut labels: Labels = (0..MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(check_labels(&labels), Ok(()));
        assert_eq!(check_labels(&Labels::new()), Ok(()));

        labels.insert("k65".into(), "v".into());
        let err = check_labels(&labels).unwrap_err();
        assert_eq!(err, LabelError::TooMany { count: 65 });
        assert!(err.to_string().contains("at most 64"), "{err}");

        let labels = Labels::from([("zone".into(), "a b".into())]);
        let err = check_labels(&labels).unwrap_err();
        assert_eq!(err.key(), Some("zone"));
        assert!(
            err.to_string()
                .starts_with("label \"zone\": label value \"a b\" contains ' '"),
            "{err}"
        );
        let labels = Labels::from([("zone a".into(), "a".into())]);
        assert_eq!(check_labels(&labels).unwrap_err().key(), Some("zone a"));
    }

    #[test]
    fn assignments() {
        assert_eq!(
            parse_assignment("zone=a"),
            Ok(("zone".to_owned(), "a".to_owned()))
        );
        assert_eq!(
            parse_assignment("example.com/tier="),
            Ok(("example.com/tier".to_owned(), String::new()))
        );
        let err = parse_assignment("zone").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"zone\" has no '='; expected key=value such as zone=a"
        );
        let err = parse_assignment("=a").unwrap_err();
        assert!(err.to_string().contains("label key \"\" is empty"), "{err}");
        let err = parse_assignment("zone=a=b").unwrap_err();
        assert_eq!(err.key(), Some("zone"));
        assert!(err.to_string().contains("contains '='"), "{err}");
    }

    #[test]
    fn workload_labels_follow_the_rules_and_leave_host_to_the_control_plane() {
        let ok = Labels::from([
            ("role".into(), "frontend".into()),
            ("tier".into(), String::new()),
        ]);
        assert_eq!(check_workload_labels(&ok), Ok(()));
        assert_eq!(check_workload_labels(&Labels::new()), Ok(()));
        let host = Labels::from([("host".into(), "host-b".into())]);
        let err = check_workload_labels(&host).unwrap_err();
        assert_eq!(err.key(), Some("host"));
        assert!(
            err.to_string()
                .starts_with("the label key \"host\" is reserved: every workload carries host="),
            "{err}"
        );
        // A prefixed key is another key: only the bare one is reserved.
        let prefixed = Labels::from([("example.com/host".into(), "x".into())]);
        assert_eq!(check_workload_labels(&prefixed), Ok(()));
        let bad = Labels::from([("role".into(), "a b".into())]);
        assert_eq!(check_workload_labels(&bad).unwrap_err().key(), Some("role"));
    }

    #[test]
    fn only_a_docker_container_carries_the_container_label() {
        let db: Labels = [("container".to_owned(), "db".to_owned())].into();
        assert_eq!(check_reported_labels("docker:0123abcd", &db), Ok(()));
        for name in ["web", "", "dockerx"] {
            let err = check_reported_labels(name, &db).unwrap_err();
            assert_eq!(err, LabelError::ContainerReserved);
            assert!(err.to_string().contains("reserved"), "{err}");
        }
        let host: Labels = [("host".to_owned(), "a".to_owned())].into();
        assert!(check_reported_labels("docker:0123abcd", &host).is_err());
    }
}
