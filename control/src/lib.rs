//! wgmesh-control: the control plane (issue 4).
//!
//! The pure core and the store:
//! - [`registry`]: hosts, join tokens and workloads, changed only by [`registry::Mutation`]s;
//! - [`ipam`]: host subnets of the cluster CIDR;
//! - [`compile`]: the [`Netmap`](wgmesh_config::netmap::Netmap) of every host, and deltas
//!   between revisions from the [`changelog`];
//! - [`store`]: where mutations are made durable ([`store::FileStore`], [`store::MemStore`]);
//! - [`audit`]: the audit log;
//! - [`pki`]: the cluster CA, the server certificate, and TLS clients that pin the CA digest of a
//!   join token.
//!
//! The API (docs/CONTROL-API.md):
//! - [`api`]: the JSON bodies, shared by server and client;
//! - [`service`]: authentication, authorisation, and the change each call makes, without HTTP;
//! - [`http`]: the HTTPS server around [`service::Control`], with the netmap long poll, and
//!   [`limiter`]: the per-address limit on refused requests;
//! - [`server`]: `wgmesh control`: start-up from `control.toml`, `admin.toml`, shutdown;
//! - [`client`]: the HTTPS client the agent and the admin CLI use; [`admin`]: the CLI's helpers.
//!
//! Everything except [`store::FileStore`], [`audit::AuditLog`], [`pki::Pki`]'s files, [`http`],
//! [`server`] and [`client`] is pure: no I/O and no clock (times are passed in as unix seconds).
#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod changelog;
pub mod compile;
pub mod http;
pub mod ids;
pub mod ipam;
pub mod limiter;
pub mod pki;
pub mod registry;
pub mod server;
pub mod service;
pub mod store;
