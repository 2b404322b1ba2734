//! wgmesh-fuzz: coverage-guided fuzz targets for the parsers and the packet code that take
//! untrusted input, and the replay of their seed and regression inputs.
//!
//! Each target is a plain function of the input bytes that panics when something that must
//! hold does not: no panic anywhere below it, and where it is cheap an invariant (a coalesced GRO
//! run re-splits to its input packets, a TSO split gives segments of at most the MSS whose
//! payloads concatenate to the original, a delta applied to a netmap gives a netmap that passes
//! `check`, a replayed store replays again from its own snapshot).
//!
//! - `scripts/fuzz.sh [SECONDS]` builds the `wgmesh-fuzz` binary (feature `libfuzzer`) with
//!   coverage instrumentation on the stable toolchain and runs every target;
//! - `cargo test -p wgmesh-fuzz` (part of the workspace's tests) runs every target on its seeds
//!   (`fuzz/corpus/<target>/`) and on every input that once crashed it
//!   (`fuzz/regressions/<target>/`), without instrumentation.
#![warn(missing_docs)]

pub mod api;
mod checksum;
pub mod datagram;
pub mod gro;
mod input;
pub mod netmap;
mod packet;
pub mod plugin;
pub mod store;
pub mod token;
pub mod tso;

pub use input::Input;

/// One fuzz target.
pub struct Target {
    /// Its name: the directory under `fuzz/corpus/` and `fuzz/regressions/`, and what
    /// `WGMESH_FUZZ_TARGET` selects.
    pub name: &'static str,
    /// Runs one input; panics on a failure.
    pub run: fn(&[u8]),
    /// Small valid inputs to start from (checked in under `fuzz/corpus/<name>/`).
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// The longest input worth trying (libFuzzer's `-max_len`).
    pub max_len: usize,
}

/// Every target, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "datagram",
        run: datagram::run,
        seeds: datagram::seeds,
        max_len: 2048,
    },
    Target {
        name: "gro",
        run: gro::run,
        seeds: gro::seeds,
        max_len: 4096,
    },
    Target {
        name: "tso",
        run: tso::run,
        seeds: tso::seeds,
        max_len: 8192,
    },
    Target {
        name: "netmap",
        run: netmap::run,
        seeds: netmap::seeds,
        max_len: 4096,
    },
    Target {
        name: "token",
        run: token::run,
        seeds: token::seeds,
        max_len: 512,
    },
    Target {
        name: "api",
        run: api::run,
        seeds: api::seeds,
        max_len: 2048,
    },
    Target {
        name: "store",
        run: store::run,
        seeds: store::seeds,
        max_len: 8192,
    },
    Target {
        name: "plugin",
        run: plugin::run,
        seeds: plugin::seeds,
        max_len: 4096,
    },
];

/// A file for one input, in memory (`/dev/shm`) where there is one; removed when dropped.
fn scratch_file() -> tempfile::NamedTempFile {
    let shm = std::path::Path::new("/dev/shm");
    let file = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("wgmesh-fuzz-")
            .tempfile_in(shm)
    } else {
        tempfile::NamedTempFile::new()
    };
    file.expect("a scratch file")
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
