//! Linux interface names: the one rule agent.toml's `interface` and `bridge` and the host
//! networking code (every link it creates or looks up) check a name by.

use std::fmt;

/// Longest Linux interface name in bytes (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Which part of the interface-name rule a name breaks (the first one, in the order empty,
/// reserved, characters, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfnameFault {
    /// The name is empty.
    Empty,
    /// The name is `.` or `..`.
    Reserved,
    /// The name has a `/`, `:`, whitespace or a control character (NUL included).
    Contains(char),
    /// The name is longer than [`MAX_IFNAME_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl IfnameFault {
    /// The rule broken, in a few words ("empty", "reserved", ...); `Display` writes it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Reserved => "reserved",
            Self::Contains(_) => "contains '/', ':', whitespace or a control character",
            Self::TooLong { .. } => "longer than 15 bytes",
        }
    }
}

impl fmt::Display for IfnameFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for IfnameFault {}

/// Checks `name` against the kernel's rules for interface names (`dev_valid_name`: 1 to 15
/// bytes, not `.` or `..`, no `/`, `:` or whitespace), plus no control characters.
pub fn check_ifname(name: &str) -> Result<(), IfnameFault> {
    if name.is_empty() {
        return Err(IfnameFault::Empty);
    }
    if name == "." || name == ".." {
        return Err(IfnameFault::Reserved);
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':') || c.is_whitespace() || c.is_control())
    {
        return Err(IfnameFault::Contains(c));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(IfnameFault::TooLong { len: name.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_rules_and_no_control_characters() {
        for (bad, fault) in [
            ("", IfnameFault::Empty),
            (".", IfnameFault::Reserved),
            ("..", IfnameFault::Reserved),
            ("a/b", IfnameFault::Contains('/')),
            ("a:b", IfnameFault::Contains(':')),
            ("a b", IfnameFault::Contains(' ')),
            ("a\0b", IfnameFault::Contains('\0')),
            ("a\u{1}b", IfnameFault::Contains('\u{1}')),
            ("sixteen-bytes-xx", IfnameFault::TooLong { len: 16 }),
        ] {
            assert_eq!(check_ifname(bad), Err(fault), "{bad:?}");
            assert_eq!(fault.to_string(), fault.reason());
        }
        for good in ["wgm0", "wgmbr0", "fifteen-bytes-x", "...", "a.b-c_d"] {
            assert_eq!(check_ifname(good), Ok(()), "{good:?}");
        }
    }
}
