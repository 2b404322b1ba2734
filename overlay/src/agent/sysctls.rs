//! The sysctls the agent changed (forwarding, and the proxy and reverse-path settings of
//! same-host routing), saved in the state directory (`sysctls.json`, mode 0600) before each
//! change, so that a clean stop restores them and the next start restores what a killed agent
//! (`kill -9`, a crash) left changed.
//!
//! Which settings change and in which order is `host::forwarding`'s and `host::proxy`'s (pure,
//! unit-tested); this file only keeps the record and applies it. Performs I/O.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::statefile::JsonFile;
use super::AgentError;
use crate::error::Chain;
use crate::host::forwarding::{self, ForwardingTargets, SysctlChange};
use crate::host::proxy;

/// The file name in the state directory.
const FILE: &str = "sysctls.json";

/// The sysctls the agent changed and has not restored yet, oldest first.
pub(super) struct SavedSysctls {
    file: JsonFile,
    changes: Vec<SysctlChange>,
}

/// `sysctls.json`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum SysctlsFile {
    #[serde(rename = "1")]
    V1 { changes: Vec<SysctlChange> },
}

impl SavedSysctls {
    /// The record in `state_dir`, with what a previous agent left there (none after a clean
    /// stop). A corrupt file stops the start: it is left alone, with a message naming it.
    pub(super) fn load(state_dir: &Path) -> Result<Self, AgentError> {
        let file = JsonFile::new(state_dir.join(FILE), "sysctl record");
        let changes = match file.load::<SysctlsFile>()? {
            Some(SysctlsFile::V1 { changes }) => changes,
            None => Vec::new(),
        };
        Ok(Self { file, changes })
    }

    /// Makes `targets` forward: each change is saved before it is made.
    pub(super) fn enable_forwarding(
        &mut self,
        targets: &ForwardingTargets<'_>,
    ) -> Result<(), AgentError> {
        self.enable(forwarding::plan_forwarding(targets)?)
    }

    /// Lets the targets' workloads reach each other through the host (proxy ARP or NDP on the
    /// bridge, loose reverse-path filtering on the TUN device): each change is saved before it
    /// is made.
    pub(super) fn enable_proxy(
        &mut self,
        targets: &ForwardingTargets<'_>,
    ) -> Result<(), AgentError> {
        self.enable(proxy::plan_proxy(targets)?)
    }

    fn enable(&mut self, changes: Vec<SysctlChange>) -> Result<(), AgentError> {
        for change in changes {
            // A setting already recorded keeps its first old value: the one before any agent.
            if !self.changes.iter().any(|c| c.sysctl == change.sysctl) {
                self.changes.push(change.clone());
                self.save()?;
            }
            forwarding::apply(&change)?;
            tracing::debug!(sysctl = ?change.sysctl, old = change.old, new = change.new, "sysctl set");
        }
        Ok(())
    }

    /// Puts every recorded setting back (newest first), skipping interfaces that are gone, and
    /// forgets them. A setting that cannot be restored is logged and kept for the next try.
    pub(super) fn restore(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let mut kept = Vec::new();
        for change in forwarding::restore_order(&self.changes) {
            match forwarding::restore(change) {
                Ok(restored) => {
                    tracing::debug!(sysctl = ?change.sysctl, old = change.old, restored, "sysctl restored");
                }
                Err(e) => {
                    tracing::error!("cannot restore a sysctl: {}", Chain(&e));
                    kept.push(change.clone());
                }
            }
        }
        kept.reverse();
        self.changes = kept;
        if let Err(e) = self.save() {
            tracing::error!("{}", Chain(&e));
        }
    }

    fn save(&self) -> Result<(), AgentError> {
        if self.changes.is_empty() {
            return match std::fs::remove_file(self.file.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(super::StateFileError::Io {
                        what: "sysctl record",
                        path: self.file.path().to_owned(),
                        source: e,
                    }
                    .into())
                }
                _ => Ok(()),
            };
        }
        let file = SysctlsFile::V1 {
            changes: self.changes.clone(),
        };
        Ok(self.file.save(&file)?)
    }
}
