//! [`spawn_ensure_networks`]: the task that makes the networks agent.toml's `[docker] networks`
//! names exist on this host's dockerd, with our driver, and says how each one is.
//!
//! It creates a missing network (driver and IPAM driver [`DOCKER_PLUGIN_NAME`]), never deletes
//! or changes one, and checks again every [`RECHECK`]: a network the user removed is created
//! again, a failed creation retried. Creating calls back into our plugin from dockerd, on
//! another task: this task holds nothing the plugin needs. [`step`] and [`created`] are the
//! pure decisions; the rest performs I/O through [`Engine`].

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wgmesh_config::agent::DOCKER_PLUGIN_NAME;

use super::engine::Engine;
use super::error::EngineError;
use super::types::Network;
use crate::error::Chain;

/// How often every network is checked while dockerd answers.
pub const RECHECK: Duration = Duration::from_secs(10);

/// One configured network and how it is on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkReport {
    /// The network's name, as in agent.toml.
    pub name: String,
    /// How it is.
    #[serde(flatten)]
    pub state: NetworkState,
}

/// How a configured network is on this host's dockerd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NetworkState {
    /// dockerd is not answering (yet): nothing is known.
    Waiting,
    /// The network exists with our driver.
    Ready {
        /// Its id.
        id: String,
    },
    /// A network of that name exists with another driver; it is left alone.
    WrongDriver {
        /// Its driver.
        driver: String,
    },
    /// Creating it (or inspecting it) failed; retried at the next check.
    Failed {
        /// The error, with dockerd's message verbatim.
        error: String,
    },
}

/// Starts the task on the current tokio runtime. It publishes the whole list (in `names`'
/// order) to `tx` whenever a state changes, all `Waiting` first, and runs until every receiver
/// of `tx` is dropped. With no names it publishes the empty list and ends.
pub fn spawn_ensure_networks(
    engine: Engine,
    names: Vec<String>,
    tx: watch::Sender<Vec<NetworkReport>>,
) -> JoinHandle<()> {
    tokio::spawn(run(engine, names, tx))
}

/// What to do after inspecting a configured network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// It is missing: create it.
    Create,
    /// Nothing to do: it is in this state.
    Settle(NetworkState),
}

/// The decision for an inspected network: create a missing one, accept ours, leave another
/// driver's alone.
pub(crate) fn step(found: Option<&Network>) -> Step {
    match found {
        None => Step::Create,
        Some(n) if n.driver == DOCKER_PLUGIN_NAME => {
            Step::Settle(NetworkState::Ready { id: n.id.clone() })
        }
        Some(n) => Step::Settle(NetworkState::WrongDriver {
            driver: n.driver.clone(),
        }),
    }
}

/// What a creation's result means: `Err` when dockerd could not be reached at all (the round
/// is `Waiting`); a refusal, a timeout (our plugin did not answer dockerd in time) or any
/// other answer is `Failed` with the error.
pub(crate) fn created(result: Result<String, EngineError>) -> Result<NetworkState, EngineError> {
    match result {
        Ok(id) => Ok(NetworkState::Ready { id }),
        Err(e @ EngineError::Connect { .. }) => Err(e),
        Err(e) => Ok(NetworkState::Failed {
            error: Chain(&e).to_string(),
        }),
    }
}

async fn run(engine: Engine, names: Vec<String>, tx: watch::Sender<Vec<NetworkReport>>) {
    let waiting = |names: &[String]| -> Vec<NetworkReport> {
        let report = |name: &String| NetworkReport {
            name: name.clone(),
            state: NetworkState::Waiting,
        };
        names.iter().map(report).collect()
    };
    let mut current = waiting(&names);
    publish(&tx, &current);
    if names.is_empty() {
        return;
    }
    let mut backoff = super::backoff();
    let mut unreachable = false;
    loop {
        let (reports, wait) = match check_all(&engine, &names).await {
            Ok(reports) => {
                backoff.reset();
                unreachable = false;
                (reports, RECHECK)
            }
            Err(e) => {
                if !std::mem::replace(&mut unreachable, true) {
                    tracing::info!(error = %Chain(&e), "Docker API unreachable; networks wait for it");
                }
                (waiting(&names), backoff.next_wait())
            }
        };
        log_changes(&current, &reports);
        publish(&tx, &reports);
        current = reports;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}

/// One round over every name, in order; `Err` as soon as dockerd cannot be reached.
async fn check_all(engine: &Engine, names: &[String]) -> Result<Vec<NetworkReport>, EngineError> {
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        let state = check(engine, name).await?;
        reports.push(NetworkReport {
            name: name.clone(),
            state,
        });
    }
    Ok(reports)
}

/// Inspects one network and creates it when missing. A creation refused because the name
/// exists (someone created it meanwhile) is inspected again.
async fn check(engine: &Engine, name: &str) -> Result<NetworkState, EngineError> {
    let inspected = match inspect(engine, name).await? {
        Ok(found) => found,
        Err(failed) => return Ok(failed),
    };
    match step(inspected.as_ref()) {
        Step::Settle(state) => Ok(state),
        Step::Create => {
            tracing::info!(network = name, "creating the Docker network");
            let result = engine
                .create_network(name, DOCKER_PLUGIN_NAME, DOCKER_PLUGIN_NAME)
                .await;
            if result.as_ref().err().and_then(EngineError::status) == Some(409) {
                return match inspect(engine, name).await? {
                    Ok(found) => Ok(settle_after_conflict(found.as_ref(), result)),
                    Err(failed) => Ok(failed),
                };
            }
            created(result)
        }
    }
}

/// `Ok(Ok(found))`, `Ok(Err(Failed))` when dockerd answered wrongly, `Err` when unreachable.
async fn inspect(
    engine: &Engine,
    name: &str,
) -> Result<Result<Option<Network>, NetworkState>, EngineError> {
    match engine.network(name).await {
        Ok(found) => Ok(Ok(found)),
        Err(e) if e.is_unreachable() => Err(e),
        Err(e) => Ok(Err(NetworkState::Failed {
            error: Chain(&e).to_string(),
        })),
    }
}

/// After a 409: the network that now exists decides, or the refusal if it is gone again.
fn settle_after_conflict(
    found: Option<&Network>,
    refused: Result<String, EngineError>,
) -> NetworkState {
    match step(found) {
        Step::Settle(state) => state,
        Step::Create => match created(refused) {
            Ok(state) => state,
            Err(e) => NetworkState::Failed {
                error: Chain(&e).to_string(),
            },
        },
    }
}

fn publish(tx: &watch::Sender<Vec<NetworkReport>>, reports: &[NetworkReport]) {
    tx.send_if_modified(|shown| {
        let changed = shown.as_slice() != reports;
        if changed {
            *shown = reports.to_vec();
        }
        changed
    });
}

/// Logs each network whose state changed since the last round, once.
fn log_changes(before: &[NetworkReport], after: &[NetworkReport]) {
    for (old, new) in before.iter().zip(after) {
        if old.state == new.state {
            continue;
        }
        let network = new.name.as_str();
        match &new.state {
            NetworkState::Waiting => tracing::info!(network, "Docker network: waiting for dockerd"),
            NetworkState::Ready { id } => tracing::info!(network, id = %id, "Docker network ready"),
            NetworkState::WrongDriver { driver } => tracing::warn!(
                network,
                driver = %driver,
                "a Docker network of this name exists with another driver; left alone"
            ),
            NetworkState::Failed { error } => {
                tracing::warn!(network, error = %error, "Docker network not ready; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests;
