//! The pure protocol core: who a packet belongs to and what to do with it.
//!
//! Nothing in this room performs I/O or reads the clock (boringtun reads its own inside
//! [`noise`]; see docs/adr/001-boringtun-clock.md). The data path's threads call it and do the
//! I/O it asks for.

pub mod conntrack;
pub mod cookie;
pub mod counters;
pub mod enforce;
pub mod filter;
#[cfg(test)]
pub(crate) mod fixture;
pub mod identity;
pub mod lanes;
pub mod limiter;
pub mod local;
pub mod noise;
pub mod packet;
pub mod peer;
pub mod route;
pub mod set;
pub mod settings;
pub mod table;
pub mod wire;
