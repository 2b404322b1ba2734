//! The text forms of [`PortSpec`] (`tcp/80`, `tcp/8000-8100`, `udp`, `icmp`) and [`Flow`]
//! (`tcp/80`, `icmp`), shared by the policy file, `policy explain`, netmaps and the API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Flow, PortSpec, Proto};

/// What a valid port entry looks like, for error messages.
pub const PORT_RULE: &str = "a port entry is \"tcp/PORT\", \"udp/PORT\", \"tcp/FIRST-LAST\", \
                             \"udp/FIRST-LAST\", \"tcp\", \"udp\" or \"icmp\", with ports 1 to 65535, \
                             such as \"tcp/5432\" or \"tcp/8000-8100\"";
/// What a valid flow looks like, for error messages.
pub const FLOW_RULE: &str =
    "a flow is \"tcp/PORT\", \"udp/PORT\" or \"icmp\", with a port 1 to 65535, such as \"tcp/80\"";

/// Why a port entry or a flow is not valid; the message says what would be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} {reason}; {rule}")]
pub struct PortError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
    /// What a valid one looks like.
    pub rule: &'static str,
}

fn proto(text: &str, name: &str, rule: &'static str) -> Result<Proto, PortError> {
    match name {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "icmp" => Ok(Proto::Icmp),
        other => Err(PortError {
            text: text.to_owned(),
            reason: format!("names the unknown protocol {other:?} (tcp, udp or icmp)"),
            rule,
        }),
    }
}

fn port(text: &str, digits: &str, rule: &'static str) -> Result<u16, PortError> {
    let bad = |reason: String| PortError {
        text: text.to_owned(),
        reason,
        rule,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("has {digits:?} where a port number belongs")));
    }
    match digits.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad(format!("has port {digits}, outside 1 to 65535"))),
        Ok(p) => Ok(p),
    }
}

impl FromStr for PortSpec {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, PortError> {
        let (name, range) = match text.split_once('/') {
            Some((name, range)) => (name, Some(range)),
            None => (text, None),
        };
        let proto = proto(text, name, PORT_RULE)?;
        let Some(range) = range else {
            return Ok(Self::any(proto));
        };
        if proto == Proto::Icmp {
            return Err(PortError {
                text: text.to_owned(),
                reason: "gives ICMP a port (ICMP has none: write \"icmp\")".to_owned(),
                rule: PORT_RULE,
            });
        }
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (port(text, a, PORT_RULE)?, port(text, b, PORT_RULE)?),
            None => {
                let p = port(text, range, PORT_RULE)?;
                (p, p)
            }
        };
        if first > last {
            return Err(PortError {
                text: text.to_owned(),
                reason: format!("has a range that ends ({last}) before it starts ({first})"),
                rule: PORT_RULE,
            });
        }
        Ok(Self { proto, first, last })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.proto, self.first, self.last) {
            (Proto::Icmp, _, _) => f.write_str("icmp"),
            (p, 0, u16::MAX) => write!(f, "{p}"),
            (p, a, b) if a == b => write!(f, "{p}/{a}"),
            (p, a, b) => write!(f, "{p}/{a}-{b}"),
        }
    }
}

impl FromStr for Flow {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, PortError> {
        match text.split_once('/') {
            None if text == "icmp" => Ok(Self {
                proto: Proto::Icmp,
                port: 0,
            }),
            None => {
                proto(text, text, FLOW_RULE)?;
                Err(PortError {
                    text: text.to_owned(),
                    reason: "names no port".to_owned(),
                    rule: FLOW_RULE,
                })
            }
            Some((name, digits)) => {
                let proto = proto(text, name, FLOW_RULE)?;
                if proto == Proto::Icmp {
                    return Err(PortError {
                        text: text.to_owned(),
                        reason: "gives ICMP a port (ICMP has none: write \"icmp\")".to_owned(),
                        rule: FLOW_RULE,
                    });
                }
                Ok(Self {
                    proto,
                    port: port(text, digits, FLOW_RULE)?,
                })
            }
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            Proto::Icmp => f.write_str("icmp"),
            p => write!(f, "{p}/{}", self.port),
        }
    }
}

macro_rules! serde_as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_text!(PortSpec);
serde_as_text!(Flow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_entries_round_trip() {
        for text in ["tcp/80", "udp/53", "tcp/8000-8100", "tcp", "udp", "icmp"] {
            let spec: PortSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        let range: PortSpec = "tcp/8000-8100".parse().unwrap();
        assert!(range.holds(Flow {
            proto: Proto::Tcp,
            port: 8050
        }));
        assert!(!range.holds(Flow {
            proto: Proto::Udp,
            port: 8050
        }));
    }

    #[test]
    fn bad_port_entries_say_what_is_valid() {
        for (text, reason) in [
            ("sctp/80", "unknown protocol \"sctp\""),
            ("tcp/0", "outside 1 to 65535"),
            ("tcp/70000", "outside 1 to 65535"),
            ("tcp/http", "where a port number belongs"),
            ("tcp/90-80", "ends (80) before it starts (90)"),
            ("icmp/8", "ICMP has none"),
            ("tcp/", "where a port number belongs"),
        ] {
            let e = text.parse::<PortSpec>().unwrap_err().to_string();
            assert!(e.contains(reason), "{text}: {e}");
            assert!(e.contains("such as \"tcp/5432\""), "{e}");
        }
    }

    #[test]
    fn flows_name_one_port() {
        assert_eq!("tcp/80".parse::<Flow>().unwrap().to_string(), "tcp/80");
        assert_eq!("icmp".parse::<Flow>().unwrap().port, 0);
        assert!("tcp"
            .parse::<Flow>()
            .unwrap_err()
            .to_string()
            .contains("names no port"));
        assert!("tcp/1-2".parse::<Flow>().is_err());
    }
}
