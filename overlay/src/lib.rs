//! wgmesh-overlay: everything that runs on a host.
//!
//! The rooms, from the packet up:
//! - [`peers`]: the pure protocol core — the noise adapter over boringtun, each peer's state and
//!   its per-packet decisions (which session, cryptokey check, roaming, what to count), the peer
//!   table and its router, the counters, and netmap → peer settings. No I/O, no clock.
//! - [`datapath`]: the threads that move packets between TUN and UDP, and their I/O (TUN, UDP,
//!   batching, GSO/GRO). They do what [`peers`] decides; they decide nothing about the protocol.
//! - [`host`]: the host's networking through rtnetlink (bridge, routes to the TUN device, veths,
//!   namespaces, forwarding); the TUN device itself is opened by [`datapath`].
//! - [`error`]: [`error::Chain`], how every room prints an error with its causes.
//! - [`api`]: the agent's local unix socket (`status`, `attach`, `detach`) and what `status`
//!   shows.
//! - [`agent`]: the daemon: start-up, reload, the control-plane link, workloads, keys and state
//!   files; it owns the peer set and hands the data path new snapshots.
#![warn(missing_docs)]

pub mod agent;
pub mod api;
mod backoff;
pub mod datapath;
pub mod docker;
pub mod error;
pub mod host;
pub mod peers;
