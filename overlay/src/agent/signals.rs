//! The signals the agent acts on: SIGHUP reloads, SIGTERM and SIGINT stop it. Installed once,
//! before anything else, and kept for the agent's life.

use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// The signals the agent acts on.
pub(super) struct Signals {
    pub(super) hup: tokio::signal::unix::Signal,
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn install() -> io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes at SIGTERM or SIGINT; a SIGHUP before the agent runs has nothing to reload.
    pub(super) async fn stop_while_starting(&mut self) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => tracing::info!("SIGHUP while starting: nothing to reload yet"),
                _ = self.term.recv() => return tracing::info!("SIGTERM: stopping"),
                _ = self.int.recv() => return tracing::info!("SIGINT: stopping"),
            }
        }
    }
}
