//! Following the control plane for the agent's life, from the first netmap on: long polls
//! (deltas applied here, so the agent gets whole netmaps), endpoint reports, and whether the
//! control plane answers (`connected`, shown by status; [`Connection::reconnects`], which the
//! workload reports follow).
//!
//! A netmap is held only once the agent applied it: each one is offered to the agent
//! ([`Offer`]), and the revision the next poll reports (which is all the control plane's
//! `node list` trusts) is the one the agent runs. A refused netmap is asked for again after a
//! growing pause (0.5 s to 10 s), so a control plane that keeps sending it costs little.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use wgmesh_client::api::ApiReason;
use wgmesh_client::client::ClientError;
use wgmesh_config::netmap::{Netmap, NetmapUpdate};

use super::backoff::Backoff;
use super::Link;
use crate::error::Chain;

/// How long one long poll waits for a change.
const POLL_WAIT: Duration = Duration::from_secs(25);

/// Whether the control plane answers, shared by the link's tasks: `connected` for status, and
/// `reconnects`, moved each time a poll is answered again after failing (the workload reports
/// are sent again then).
#[derive(Debug, Clone)]
pub struct Connection {
    /// Whether the last call succeeded.
    pub connected: Arc<AtomicBool>,
    /// How many times the link came back.
    pub reconnects: Arc<watch::Sender<u64>>,
}

impl Connection {
    /// A link that is `up` (its first netmap came from the control plane) or not.
    pub fn new(up: bool) -> Self {
        Self {
            connected: Arc::new(AtomicBool::new(up)),
            reconnects: Arc::new(watch::channel(0).0),
        }
    }
}

/// A new netmap for the agent, which says through `verdict` whether it applied it.
#[derive(Debug)]
pub struct Offer {
    /// The whole netmap (a delta is already applied).
    pub netmap: Netmap,
    /// `true` once applied; `false` when refused (the agent keeps the netmap it runs).
    pub verdict: oneshot::Sender<bool>,
}

/// Long-polls for changes to `current` (the netmap the agent runs) and offers every new netmap
/// on `netmaps`; reports the endpoint in `endpoint` whenever it differs from what the control
/// plane holds. Ends when `netmaps` is closed. `connection` says whether the last call
/// succeeded, and counts the reconnections. `current` only moves to a netmap the agent applied. A netmap that does not parse
/// (a low-order key, a bad prefix) is refused here and counted in `refused`, like the ones the
/// agent refuses; the control plane answered, so it is not counted as down.
///
/// The control plane answers with what changed (a delta) when it can; the delta is applied to
/// `current` here, so the agent always gets whole, checked netmaps. A delta that does not fit
/// makes the next poll ask for the whole netmap.
pub async fn follow(
    link: Link,
    current: Netmap,
    netmaps: mpsc::Sender<Offer>,
    mut endpoint: watch::Receiver<Option<SocketAddr>>,
    connection: Connection,
    refused: Arc<AtomicU64>,
) {
    let mut state = Following {
        reported: current.host.endpoint,
        current,
        health: Health::new(connection),
        backoff: Backoff::new(),
        refusals: Backoff::new(),
        refused,
    };
    loop {
        let wanted = *endpoint.borrow_and_update();
        if wanted != state.reported {
            if !report_endpoint(&link, wanted, &mut state.health).await {
                tokio::time::sleep(state.backoff.next()).await;
                continue;
            }
            state.reported = wanted;
        }
        // While down, ask without waiting, so that coming back is noticed (and shown in status)
        // at once rather than after a full long poll.
        let wait = if state.health.down {
            Duration::ZERO
        } else {
            POLL_WAIT
        };
        let held = (state.current.revision, state.current.epoch);
        let poll = link
            .client
            .netmap_update(&link.name, &link.credential, held, wait);
        tokio::select! {
            result = poll => {
                if state.answered(result, &netmaps).await.is_none() {
                    return;
                }
            }
            Ok(()) = endpoint.changed() => {}
            () = netmaps.closed() => return,
        }
    }
}

/// What [`follow`] carries from one poll to the next.
struct Following {
    /// The netmap the agent runs.
    current: Netmap,
    /// The endpoint the control plane holds for this host.
    reported: Option<SocketAddr>,
    health: Health,
    /// The pause after a failed call.
    backoff: Backoff,
    /// The pause after a refused netmap.
    refusals: Backoff,
    refused: Arc<AtomicU64>,
}

impl Following {
    /// Handles the result of one long poll; `None` once the agent is gone.
    async fn answered(
        &mut self,
        result: Result<Option<NetmapUpdate>, ClientError>,
        netmaps: &mpsc::Sender<Offer>,
    ) -> Option<()> {
        match result {
            Ok(Some(update)) => {
                self.health.reachable("control plane reachable again");
                self.backoff = Backoff::new();
                let Some(netmap) = updated(&mut self.current, update) else {
                    // The pause keeps a misbehaving control plane from making this a tight loop.
                    tokio::time::sleep(self.backoff.next()).await;
                    return Some(());
                };
                if offer(netmaps, &netmap).await? {
                    self.reported = netmap.host.endpoint;
                    self.current = netmap;
                    self.refusals = Backoff::new();
                } else {
                    // Refused: the agent runs `current` still, and the next poll says so.
                    tokio::time::sleep(self.refusals.next()).await;
                }
            }
            Ok(None) => {
                self.health
                    .reachable("control plane reachable again; no change");
                self.backoff = Backoff::new();
            }
            // The reply arrived whole and does not parse: a refused netmap. A body that broke
            // off while downloading is not; it falls through to "unreachable".
            Err(e @ ClientError::Decode { .. }) => {
                self.health.reachable("control plane reachable again");
                refuse_unreadable(&self.refused, &e);
                tokio::time::sleep(self.refusals.next()).await;
            }
            Err(e) => {
                if !self.health.down {
                    if e.reason() == Some(ApiReason::Unauthenticated) {
                        tracing::error!("the control plane refuses this host's credential (removed with `wgmesh node remove`?); keeping the last netmap: {}", Chain(&e));
                    } else {
                        tracing::warn!(
                            "control plane unreachable; keeping the last netmap and retrying: {}",
                            Chain(&e)
                        );
                    }
                }
                self.health.unreachable();
                tokio::time::sleep(self.backoff.next()).await;
            }
        }
        Some(())
    }
}

/// Counts and logs a netmap that does not parse (`reason`), which is refused like any other.
fn refuse_unreadable(refused: &AtomicU64, reason: &ClientError) {
    let count = refused.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::error!(
        refused = count,
        "refusing the control plane's netmap, which does not parse; keeping the running peers: \
         {}",
        Chain(reason)
    );
}

/// Offers `netmap` to the agent: whether it applied it; `None` once the agent is gone.
async fn offer(netmaps: &mpsc::Sender<Offer>, netmap: &Netmap) -> Option<bool> {
    let (verdict, applied) = oneshot::channel();
    let offer = Offer {
        netmap: netmap.clone(),
        verdict,
    };
    netmaps.send(offer).await.ok()?;
    applied.await.ok()
}

/// Tells the control plane that the host's endpoint is now `wanted`; false if that failed.
async fn report_endpoint(link: &Link, wanted: Option<SocketAddr>, health: &mut Health) -> bool {
    match link
        .client
        .set_endpoint(&link.name, &link.credential, wanted)
        .await
    {
        Ok(_) => {
            tracing::info!(endpoint = ?wanted, "reported the endpoint to the control plane");
            true
        }
        Err(e) => {
            if !health.down {
                tracing::warn!("cannot report the endpoint; will retry: {}", Chain(&e));
            }
            health.unreachable();
            false
        }
    }
}

/// Whether the control plane answers, as [`follow`] saw it last; shared with the agent's
/// status through `connected`.
struct Health {
    down: bool,
    connection: Connection,
}

impl Health {
    fn new(connection: Connection) -> Self {
        Self {
            down: !connection.connected.load(Ordering::Relaxed),
            connection,
        }
    }

    /// A call succeeded; says `message` when the control plane was down until now.
    fn reachable(&mut self, message: &str) {
        if self.down {
            tracing::info!("{message}");
            self.down = false;
            self.connection.connected.store(true, Ordering::Relaxed);
            self.connection.reconnects.send_modify(|n| *n += 1);
        }
    }

    /// A call failed.
    fn unreachable(&mut self) {
        self.down = true;
        self.connection.connected.store(false, Ordering::Relaxed);
    }
}

/// The whole netmap `update` gives for `current`; `None` when it is a delta that does not fit
/// `current`, whose revision is then set to 0 so that the next poll asks for the whole netmap
/// (revision 0 always gets it).
fn updated(current: &mut Netmap, update: NetmapUpdate) -> Option<Netmap> {
    match update {
        NetmapUpdate::Full(netmap) => Some(netmap),
        NetmapUpdate::Delta(delta) => match current.apply_delta(&delta) {
            Ok(netmap) => Some(netmap),
            Err(e) => {
                tracing::warn!("cannot apply a netmap delta; asking for the whole netmap: {e}");
                current.revision = 0;
                None
            }
        },
    }
}
