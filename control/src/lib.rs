//! wgmesh-control: the control plane (being written; see issue 4).
#![warn(missing_docs)]
