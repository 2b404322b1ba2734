//! wgmesh-control: the control plane (issue 4). What both sides of its API share (the JSON
//! bodies, the HTTPS client, CA pinning, the state-directory file helpers) is `wgmesh-client`'s;
//! this crate is the server side, and the agent never depends on it.
//!
//! The pure core and the store:
//! - [`ids`]: [`ids::HostId`] and [`ids::TokenId`], the leaf every other module names hosts and
//!   tokens by;
//! - [`registry`]: hosts, join tokens (and the rules for using one) and workloads, changed only
//!   by [`registry::Mutation`]s (`records`, `mutation`, `error`, `plan`, `apply` inside);
//! - [`ipam`]: host subnets of the cluster CIDR;
//! - [`compile`]: the [`Netmap`](wgmesh_config::netmap::Netmap) of every host, and deltas
//!   between revisions from the [`changelog`];
//! - [`store`]: where mutations are made durable ([`store::FileStore`], [`store::MemStore`]);
//! - [`audit`]: the audit log's events and its file;
//! - [`pki`]: the cluster CA and the server certificate in `state_dir`, and the server's TLS
//!   configuration.
//!
//! The API (docs/CONTROL-API.md):
//! - [`service`]: authentication, authorisation, and the change each call makes, without HTTP
//!   (`join`, `hosts`, `tokens`, `nodes` inside, with `caller`, `refusal` and `endpoint`);
//! - [`http`]: the HTTPS server around [`service::Control`], with the netmap long poll, and
//!   [`limiter`]: its limits (refused requests and connections per address, endpoint reports
//!   per host, netmap pacing);
//! - [`server`]: `wgmesh control`: start-up from `control.toml`, `admin.toml`, shutdown;
//! - [`admin`]: the admin CLI's helpers (`--ttl`, the `token list` and `node list` tables).
//! - [`clock`]: the wall clock as unix seconds, for [`http`] and the CLI.
//!
//! Everything except [`store::FileStore`], [`audit::AuditLog`], [`pki::Pki`]'s files,
//! [`service::Control`] (which commits to its store and writes the audit log on every call),
//! [`http`], [`server`] and [`clock`] is pure: no I/O and no clock (times are passed in as unix
//! seconds).
#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod changelog;
pub mod clock;
pub mod compile;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ids;
pub mod ipam;
pub mod limiter;
pub mod pki;
pub mod psk;
pub mod registry;
pub mod server;
pub mod service;
pub mod store;
