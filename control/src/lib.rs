//! wgmesh-control: the control plane (issue 4).
//!
//! The pure core and the store:
//! - [`registry`]: hosts, join tokens and workloads, changed only by [`registry::Mutation`]s;
//! - [`ipam`]: host subnets of the cluster CIDR;
//! - [`compile`]: the [`Netmap`](wgmesh_config::netmap::Netmap) of every host;
//! - [`store`]: where mutations are made durable ([`store::FileStore`], [`store::MemStore`]);
//! - [`audit`]: the audit log;
//! - [`pki`]: the cluster CA, the server certificate, and TLS clients that pin the CA digest of a
//!   join token.
//!
//! Everything except [`store::FileStore`], [`audit::AuditLog`] and [`pki::Pki`]'s files is pure: no I/O and no clock
//! (times are passed in as unix seconds).
#![warn(missing_docs)]

pub mod audit;
pub mod compile;
pub mod ipam;
pub mod pki;
pub mod registry;
pub mod store;
