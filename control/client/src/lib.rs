//! wgmesh-client: what both sides of the control plane's API share, without its server.
//!
//! - [`api`]: the JSON bodies of every route and the refusal reasons ([`api::ApiReason`]).
//! - [`client`]: the HTTPS client the agent and the admin CLI call the control plane with.
//! - [`pin`]: how those clients trust the control plane (a pinned CA digest, or `admin.toml`'s CA).
//! - [`atomic_file`], [`dirlock`], [`private_dir`]: the state-directory helpers of both daemons
//!   (crash-safe writes of private files, one process per `state_dir`).
//!
//! The agent depends on this crate and never on `wgmesh-control`, so it cannot reach the
//! registry, the store or the netmap compiler.

#![warn(missing_docs)]

pub mod api;
pub mod atomic_file;
pub mod client;
pub mod dirlock;
pub mod pin;
pub mod private_dir;
