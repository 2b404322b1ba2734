//! Following the control plane for the agent's life, from the first netmap on: long polls
//! (deltas applied here, so the agent gets whole netmaps), endpoint reports, and whether the
//! control plane answers (`connected`, shown by status).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wgmesh_client::api::ApiReason;
use wgmesh_config::netmap::{Netmap, NetmapUpdate};

use super::backoff::Backoff;
use super::Link;
use crate::error::Chain;

/// How long one long poll waits for a change.
const POLL_WAIT: Duration = Duration::from_secs(25);

/// Long-polls for changes to `current` (the netmap the agent runs) and sends every new netmap
/// to `netmaps`; reports the endpoint in `endpoint` whenever it differs from what the control
/// plane holds. Ends when `netmaps` is closed. `connected` says whether the last call
/// succeeded.
///
/// The control plane answers with what changed (a delta) when it can; the delta is applied to
/// `current` here, so the agent always gets whole, checked netmaps. A delta that does not fit
/// makes the next poll ask for the whole netmap.
pub async fn follow(
    link: Link,
    mut current: Netmap,
    netmaps: mpsc::Sender<Netmap>,
    mut endpoint: watch::Receiver<Option<SocketAddr>>,
    connected: Arc<AtomicBool>,
) {
    let mut reported = current.host.endpoint;
    let mut health = Health::new(connected);
    let mut backoff = Backoff::new();
    loop {
        let wanted = *endpoint.borrow_and_update();
        if wanted != reported {
            if !report_endpoint(&link, wanted, &mut health).await {
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
            reported = wanted;
        }
        // While down, ask without waiting, so that coming back is noticed (and shown in status)
        // at once rather than after a full long poll.
        let wait = if health.down {
            Duration::ZERO
        } else {
            POLL_WAIT
        };
        let poll = link.client.netmap_update(
            &link.name,
            &link.credential,
            (current.revision, current.epoch),
            wait,
        );
        tokio::select! {
            result = poll => match result {
                Ok(Some(update)) => {
                    health.reachable("control plane reachable again");
                    backoff = Backoff::new();
                    let Some(netmap) = updated(&mut current, update) else {
                        // The pause keeps a misbehaving control plane from making this a
                        // tight loop.
                        tokio::time::sleep(backoff.next()).await;
                        continue;
                    };
                    reported = netmap.host.endpoint;
                    current = netmap.clone();
                    if netmaps.send(netmap).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    health.reachable("control plane reachable again; no change");
                    backoff = Backoff::new();
                }
                Err(e) => {
                    if !health.down {
                        if e.reason() == Some(ApiReason::Unauthenticated) {
                            tracing::error!("the control plane refuses this host's credential (removed with `wgmesh node remove`?); keeping the last netmap: {}", Chain(&e));
                        } else {
                            tracing::warn!("control plane unreachable; keeping the last netmap and retrying: {}", Chain(&e));
                        }
                    }
                    health.unreachable();
                    tokio::time::sleep(backoff.next()).await;
                }
            },
            Ok(()) = endpoint.changed() => {}
            () = netmaps.closed() => return,
        }
    }
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
    connected: Arc<AtomicBool>,
}

impl Health {
    fn new(connected: Arc<AtomicBool>) -> Self {
        Self {
            down: !connected.load(Ordering::Relaxed),
            connected,
        }
    }

    /// A call succeeded; says `message` when the control plane was down until now.
    fn reachable(&mut self, message: &str) {
        if self.down {
            tracing::info!("{message}");
            self.down = false;
            self.connected.store(true, Ordering::Relaxed);
        }
    }

    /// A call failed.
    fn unreachable(&mut self) {
        self.down = true;
        self.connected.store(false, Ordering::Relaxed);
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
