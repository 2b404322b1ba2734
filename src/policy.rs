//! `wgmesh policy ...`: the network policy commands. Thin: parsing the file, running its tests
//! and the report are `wgmesh_config::policy`'s.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use wgmesh_config::policy::{render_test_report, Policy};

/// The policy commands.
#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    /// Check a policy file offline: validate it, run its [[test]]s and print each result.
    /// Exits non-zero if the file is invalid or a test fails.
    Test {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

pub(crate) fn run(command: PolicyCmd) -> anyhow::Result<()> {
    match command {
        PolicyCmd::Test { file } => test(&file),
    }
}

fn test(file: &Path) -> anyhow::Result<()> {
    let policy = Policy::load(file)?;
    print!("{}", render_test_report(&policy.run_tests()));
    policy.check_tests(file)?;
    Ok(())
}
