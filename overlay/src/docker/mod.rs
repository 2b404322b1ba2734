//! The agent's client of its host's dockerd: the Docker Engine API over its unix socket
//! ([`Engine`]), the watch that follows running containers and their labels ([`spawn_watch`]),
//! and the task that creates the networks agent.toml names ([`spawn_ensure_networks`]).
//!
//! These run as background tasks of the agent, never inside a plugin handler (dockerd waits
//! for the plugin while it handles a network or container call, so a handler asking dockerd
//! something could deadlock both). [`types`] is pure; the rest performs I/O.

mod engine;
mod error;
#[cfg(test)]
mod fake;
mod networks;
pub mod types;
mod watch;

pub use engine::{Engine, EventStream, CALL_TIMEOUT, CREATE_TIMEOUT, MAX_BODY, MAX_EVENT_LINE};
pub use error::EngineError;
pub use networks::{spawn_ensure_networks, NetworkReport, NetworkState, RECHECK};
pub use types::{Container, ContainerEndpoint, Event, Network};
pub use watch::{spawn_watch, EngineEvent, DEBOUNCE, RESYNC};

/// The Docker tasks' waits while dockerd does not answer: 0.5 s doubling to 5 s, no jitter.
fn backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(5),
    )
}
