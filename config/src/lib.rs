//! wgmesh-config: the vocabulary every wgmesh crate shares, and the validated configuration
//! schemas.
//!
//! - [`endpoint`]: which underlay addresses no peer can be reached at ([`endpoint::Unusable`]).
//! - [`key`]: WireGuard keys ([`PrivateKey`], [`PublicKey`], [`PresharedKey`]) in `wg`'s base64.
//! - [`agent`]: the agent's TOML file, parsed into [`AgentConfig`].
//! - [`control`]: the control plane's `control.toml` and the admin CLI's `admin.toml`.
//! - [`token`]: join tokens, the admin token, host credentials and the hashes kept of them.
//! - [`netmap`]: what the control plane sends each agent ([`netmap::Netmap`], and deltas).
//! - [`policy`]: the network policy file ([`policy::Policy`]): who may talk to whom by labels,
//!   protocols and ports, the one statement of its meaning ([`policy::Policy::decide`]), and its
//!   tests.
//! - [`labels`]: host labels (`zone = "a"`) and their rules, shared by agent.toml, the admin
//!   CLI and the control plane.
//! - [`name`]: the host-name rule and [`HostName`]; [`ifname`]: the Linux interface-name rule.
//!   `path` (private): the rule for file system paths in agent.toml and control.toml.
//! - [`duration`]: `90s`, `15m`, `1h`, `7d` ([`duration::parse_duration`]), for the CLI and
//!   control.toml.
//! - [`error`]: [`ConfigError`], which names the file, line, column and field of a problem.
//!
//! Code outside this crate only sees validated types. The crate performs no I/O except reading
//! the file given to [`AgentConfig::load`], and generating keys from OS randomness.

#![warn(missing_docs)]

pub mod agent;
pub mod control;
mod document;
pub mod duration;
pub mod endpoint;
pub mod error;
pub mod ifname;
pub mod key;
pub mod labels;
mod locate;
pub mod name;
pub mod netmap;
mod path;
pub mod policy;
pub mod token;

pub use agent::*;
pub use error::*;
pub use key::*;
pub use labels::{LabelError, Labels};
pub use name::{HostName, HostNameError};
