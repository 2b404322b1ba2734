//! wgmesh-overlay: everything that runs on a host.
//!
//! Pure modules (no I/O, no clock): [`wire`], [`route`], [`noise`], [`peer`], [`table`],
//! [`batch`], [`gro`], [`status`], the IPAM of [`workloads`] and the conversion in [`netmap`].
//! I/O shells around them: [`tun`], [`udp`], [`datapath`], [`host`], [`api`], [`agent`], and the
//! state files of [`workloads`] and [`netmap`].
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod batch;
pub mod control_link;
pub mod datapath;
pub mod error;
pub mod gro;
pub mod host;
pub mod netmap;
pub mod noise;
pub mod peer;
mod poll;
pub mod route;
mod statefile;
pub mod status;
pub mod table;
pub mod tun;
pub mod udp;
pub mod wire;
pub mod workloads;
