//! The policy file: its serde shape (every value keeps its span) and the checks that turn it
//! into a [`Policy`], or into a [`ConfigError`] naming the file, line, column, field (such as
//! `rule[1].ports[0]`) and what would be valid.
//!
//! Problems are found in file order, table by table, and the first one is reported. Pure,
//! except [`Policy::load`] and [`Policy::load_with_text`], which read the one file they are
//! given.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use super::selector::check_value;
use super::{Action, Flow, Policy, PolicyTest, PortSpec, Rule, Selector};
use crate::document::{read, Document};
use crate::error::ConfigError;
use crate::labels::{self, Labels};

/// Most `[[rule]]`s a policy may have.
pub const MAX_RULES: usize = 10_000;
/// Most `[[test]]`s a policy may have.
pub const MAX_TESTS: usize = 10_000;
/// Longest rule name, in characters.
pub const MAX_RULE_NAME_LEN: usize = 63;

/// What a valid rule name looks like, for error messages.
pub const RULE_NAME_RULE: &str = "a rule name is 1 to 63 characters from A-Z a-z 0-9 - _ . such \
                                  as \"frontend-to-app\"";

const ACTION_EXPECTED: &str = "\"allow\" or \"deny\"";
const DEFAULT_EXPECTED: &str = "\"allow\" or \"deny\": what a flow that no rule matches gets";
const SELECTOR_EXPECTED: &str = "a label selector such as { role = \"frontend\" } (every label \
                                 given must match), or {} for every endpoint";
const LABELS_EXPECTED: &str = "a table of the endpoint's labels such as { role = \"frontend\" }, \
                               or {} for an endpoint without labels";
const LABEL_VALUE_EXPECTED: &str = "a label value string such as \"frontend\"";
const PORTS_EXPECTED: &str = "an array of port entries such as [\"tcp/80\", \"udp/53\"]; omit \
                              `ports` for every protocol and port";
const PORT_EXPECTED: &str = "a port entry string such as \"tcp/5432\", \"tcp/8000-8100\", \
                             \"udp\" or \"icmp\"";
const FLOW_EXPECTED: &str = "a flow string such as \"tcp/80\", \"udp/53\" or \"icmp\"";

/// Why an action (`action`, `default`, `expect`) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an action; write \"allow\" or \"deny\"")]
pub struct ActionError {
    /// The text as given.
    pub text: String,
}

impl FromStr for Action {
    type Err = ActionError;

    fn from_str(text: &str) -> Result<Self, ActionError> {
        match text {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            _ => Err(ActionError {
                text: text.to_owned(),
            }),
        }
    }
}

/// Why a rule name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} {reason}; {RULE_NAME_RULE}")]
pub struct RuleNameError {
    /// The name as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a rule name against [`RULE_NAME_RULE`].
pub fn check_rule_name(name: &str) -> Result<(), RuleNameError> {
    let bad = |reason: String| {
        Err(RuleNameError {
            text: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("is empty".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return bad(format!("contains {c:?}"));
    }
    if name.len() > MAX_RULE_NAME_LEN {
        return bad(format!("is {} characters long", name.len()));
    }
    Ok(())
}

impl Policy {
    /// Parses and validates the TOML `text` of a policy file.
    ///
    /// Pure: `origin` is only used in errors, which name it together with the line, column and
    /// field of the first problem found. Each test keeps its line ([`PolicyTest::line`]). The
    /// tests are not run: [`Policy::check_tests`] does that.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cx = Document {
            text,
            origin,
            table: None,
            expected_for: policy_expected_for,
            keep_toml_source: true,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| missing_default(cx.toml_error(e)))?;
        cx.validate_policy(raw)
    }

    /// Reads the file at `path` and parses it with [`Policy::from_toml`].
    ///
    /// An unreadable file gives an error naming `path` and the operating system's reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&read(path)?, path)
    }

    /// [`Policy::load`], also returning the file's text (read once), for `policy apply`,
    /// which checks the file and then sends the very text it checked.
    pub fn load_with_text(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = read(path)?;
        Ok((Self::from_toml(&text, path)?, text))
    }
}

/// `toml` blames a missing `default` on the whole document (and so on its first table); it is
/// the file's fault as a whole.
fn missing_default(mut error: ConfigError) -> ConfigError {
    if error.message.starts_with("missing field `default`") {
        (error.line, error.column, error.field) = (None, None, None);
        error.message = "missing field `default`; add default = \"deny\" or default = \"allow\" \
                         at the top: a policy must say what a flow that no rule matches gets"
            .to_owned();
    }
    error
}

/// A selector or an endpoint's labels, as written: `{ role = "frontend" }`.
type RawLabels = BTreeMap<Spanned<String>, Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Spanned<String>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    test: Vec<Spanned<RawTest>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    action: Option<Spanned<String>>,
    from: Spanned<RawLabels>,
    to: Spanned<RawLabels>,
    ports: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    from: Spanned<RawLabels>,
    to: Spanned<RawLabels>,
    port: Spanned<String>,
    expect: Spanned<String>,
}

/// What a valid value of the field at `path` looks like (`path` is a whole path such as
/// `rule[1].ports[0]`, or the bare name of a missing field).
fn policy_expected_for(path: &str) -> Option<&'static str> {
    let (table, rest) = match path.split_once('.') {
        Some((table, rest)) => (table, Some(rest)),
        None => (path, None),
    };
    let Some(rest) = rest else {
        return Some(match split_index(table) {
            ("default", _) => DEFAULT_EXPECTED,
            ("rule", false) => "[[rule]] tables",
            ("rule", true) => "a [[rule]] table",
            ("test", false) => "[[test]] tables",
            ("test", true) => "a [[test]] table",
            // The bare names serde gives for missing fields.
            ("name", _) => "a rule name string such as \"frontend-to-app\"",
            ("action" | "expect", _) => ACTION_EXPECTED,
            ("from" | "to", _) => SELECTOR_EXPECTED,
            ("port", _) => FLOW_EXPECTED,
            _ => return None,
        });
    };
    let in_test = table.starts_with("test[");
    // Label keys may hold dots: everything after the field's name is the key.
    let (field, key) = match rest.split_once('.') {
        Some((field, key)) => (field, Some(key)),
        None => (rest, None),
    };
    Some(match (split_index(field), key.is_some(), in_test) {
        (("from" | "to", false), true, _) => LABEL_VALUE_EXPECTED,
        (("from" | "to", false), false, true) => LABELS_EXPECTED,
        (("from" | "to", false), false, false) => SELECTOR_EXPECTED,
        (("name", false), false, _) => "a rule name string such as \"frontend-to-app\"",
        (("action" | "expect", false), false, _) => ACTION_EXPECTED,
        (("ports", false), false, _) => PORTS_EXPECTED,
        (("ports", true), false, _) => PORT_EXPECTED,
        (("port", false), false, _) => FLOW_EXPECTED,
        _ => return None,
    })
}

/// `ports[2]` -> (`ports`, true); `ports` -> (`ports`, false).
fn split_index(part: &str) -> (&str, bool) {
    match part.split_once('[') {
        Some((name, _)) => (name, true),
        None => (part, false),
    }
}

impl Document<'_> {
    fn validate_policy(&self, raw: RawPolicy) -> Result<Policy, ConfigError> {
        let default = self.validate_action(&raw.default, "default", DEFAULT_EXPECTED)?;
        self.check_count(&raw.rule, "rule", MAX_RULES)?;
        let mut rules = Vec::with_capacity(raw.rule.len());
        let mut names: HashMap<&str, usize> = HashMap::with_capacity(raw.rule.len());
        for (i, r) in raw.rule.iter().enumerate() {
            let rule = self.validate_rule(r.get_ref(), i)?;
            let name = r.get_ref().name.get_ref().as_str();
            if let Some(&first) = names.get(name) {
                return Err(self.error(
                    &r.get_ref().name.span(),
                    format!("rule[{i}].name"),
                    format!(
                        "{name:?} is also the name of rule[{first}] (line {}); rule names are \
                         unique, they say which rule decided",
                        self.line(&raw.rule[first].span())
                    ),
                ));
            }
            names.insert(name, i);
            rules.push(rule);
        }
        self.check_count(&raw.test, "test", MAX_TESTS)?;
        let tests = raw
            .test
            .iter()
            .enumerate()
            .map(|(i, t)| self.validate_test(t, i))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            default,
            rules,
            tests,
        })
    }

    /// At most `max` `[[table]]`s: the first one too many is blamed.
    fn check_count<T>(
        &self,
        tables: &[Spanned<T>],
        table: &str,
        max: usize,
    ) -> Result<(), ConfigError> {
        match tables.get(max) {
            Some(extra) => Err(self.error(
                &extra.span(),
                format!("{table}[{max}]"),
                format!(
                    "the file has {} [[{table}]] tables; a policy has at most {max}",
                    tables.len()
                ),
            )),
            None => Ok(()),
        }
    }

    fn validate_action(
        &self,
        raw: &Spanned<String>,
        field: &str,
        expected: &str,
    ) -> Result<Action, ConfigError> {
        raw.get_ref().parse().map_err(|e: ActionError| {
            self.error(
                &raw.span(),
                field,
                format!("{:?} is not an action; expected {expected}", e.text),
            )
        })
    }

    fn validate_rule(&self, r: &RawRule, i: usize) -> Result<Rule, ConfigError> {
        let field = |name: &str| format!("rule[{i}].{name}");
        self.check_value(&r.name, &field("name"), |s| check_rule_name(s))?;
        let action = match &r.action {
            Some(a) => self.validate_action(a, &field("action"), ACTION_EXPECTED)?,
            None => Action::Allow,
        };
        let from = Selector(self.validate_labels(&r.from, &field("from"))?);
        let to = Selector(self.validate_labels(&r.to, &field("to"))?);
        let ports = match &r.ports {
            Some(p) => self.validate_ports(p, &field("ports"))?,
            None => Vec::new(),
        };
        Ok(Rule {
            name: r.name.get_ref().clone(),
            action,
            from,
            to,
            ports,
        })
    }

    fn validate_ports(
        &self,
        raw: &Spanned<Vec<Spanned<String>>>,
        field: &str,
    ) -> Result<Vec<PortSpec>, ConfigError> {
        if raw.get_ref().is_empty() {
            return Err(self.error(
                &raw.span(),
                field,
                "is empty, which would match no flow; omit `ports` for every protocol and port, \
                 or list entries such as [\"tcp/80\"]",
            ));
        }
        raw.get_ref()
            .iter()
            .enumerate()
            .map(|(j, p)| self.check_value(p, &format!("{field}[{j}]"), |s| s.parse()))
            .collect()
    }

    /// A selector's or an endpoint's labels, each key and value by the label rules (the value
    /// of `host` by the host-name rule), blamed on `{field}.{key}`, in file order.
    fn validate_labels(
        &self,
        raw: &Spanned<RawLabels>,
        field: &str,
    ) -> Result<Labels, ConfigError> {
        let mut entries: Vec<_> = raw.get_ref().iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut out = Labels::new();
        for (k, v) in entries {
            let key = k.get_ref();
            let key_field = format!("{field}.{key}");
            self.check_value(k, &key_field, |key| labels::check_key(key))?;
            // The field names the key; the message need not.
            self.check_value(v, &key_field, |value| check_value(key, value))?;
            out.insert(key.clone(), v.get_ref().clone());
        }
        Ok(out)
    }

    fn validate_test(&self, t: &Spanned<RawTest>, i: usize) -> Result<PolicyTest, ConfigError> {
        let field = |name: &str| format!("test[{i}].{name}");
        let raw = t.get_ref();
        let from = self.validate_labels(&raw.from, &field("from"))?;
        let to = self.validate_labels(&raw.to, &field("to"))?;
        let port = self.check_value(&raw.port, &field("port"), |s| s.parse::<Flow>())?;
        let expect = self.validate_action(&raw.expect, &field("expect"), ACTION_EXPECTED)?;
        Ok(PolicyTest {
            from,
            to,
            port,
            expect,
            line: self.line(&t.span()),
        })
    }
}
