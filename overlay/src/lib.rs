//! wgmesh-overlay: everything that runs on a host.
#![warn(missing_docs)]

pub mod host;
