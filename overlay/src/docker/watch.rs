//! [`spawn_watch`]: the task that keeps the agent's view of the running containers current —
//! the events stream, a listing after every change (debounced), a resync every 30 s, and one
//! [`EngineEvent::Unreachable`] per outage.
//!
//! The agent learns container labels here, outside the plugin's handlers: dockerd may be in the
//! middle of a plugin call while this task asks it something, and that is fine because nothing
//! here is held by a handler. This module performs I/O through [`Engine`].

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

use super::engine::Engine;
use super::error::EngineError;
use super::types::Container;
use crate::backoff::Backoff;
use crate::error::Chain;

/// What the watch tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// All running containers, sorted by id. Sent after the stream opens, after each burst of
    /// changes and at each resync, but only when it differs from the last one sent, except that
    /// the first of each connection to dockerd is always sent.
    Snapshot(Vec<Container>),
    /// dockerd stopped answering (the error, with its causes). Sent once per outage; the next
    /// `Snapshot` ends it.
    Unreachable(String),
}

/// How long after the first event of a burst the containers are listed again: `docker run`
/// gives create, connect and start within a few milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often the containers are listed even without events.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Starts the watch on the current tokio runtime. It runs until `tx` is closed (the receiver
/// dropped) and never gives up on dockerd: errors are retried after 0.5 s, 1 s, ... 5 s.
pub fn spawn_watch(engine: Engine, tx: mpsc::Sender<EngineEvent>) -> JoinHandle<()> {
    tokio::spawn(run(engine, tx))
}

/// Why a connection to dockerd ended.
enum End {
    /// The receiver is gone: stop.
    Closed,
    /// dockerd failed: report, back off, start again.
    Failed(EngineError),
}

async fn run(engine: Engine, tx: mpsc::Sender<EngineEvent>) {
    let mut backoff = super::backoff();
    let mut outage = Outage::default();
    loop {
        let error = match session(&engine, &tx, &mut backoff, &mut outage).await {
            End::Closed => return,
            End::Failed(e) => e,
        };
        let text = Chain(&error).to_string();
        if outage.fail() {
            tracing::warn!(error = %text, "Docker API unreachable; container labels are not followed");
            if tx.send(EngineEvent::Unreachable(text)).await.is_err() {
                return;
            }
        } else {
            tracing::debug!(error = %text, "Docker API still unreachable");
        }
        tokio::select! {
            _ = sleep(backoff.next_wait()) => {}
            _ = tx.closed() => return,
        }
    }
}

/// One connection's life: the stream opened first, so no change between the listing and the
/// stream is missed; then a listing per burst of events and per resync.
async fn session(
    engine: &Engine,
    tx: &mpsc::Sender<EngineEvent>,
    backoff: &mut Backoff,
    outage: &mut Outage,
) -> End {
    let mut events = match engine.events().await {
        Ok(events) => events,
        Err(e) => return End::Failed(e),
    };
    let mut last = None;
    if let Err(end) = publish(engine, tx, &mut last).await {
        return end;
    }
    if outage.recover() {
        tracing::info!("Docker API answers again; following container events");
    }
    backoff.reset();
    let mut debounce = Debounce::default();
    let mut resync = Instant::now() + RESYNC;
    loop {
        let listing_due = debounce.due();
        tokio::select! {
            event = events.next() => match event {
                Ok(event) => {
                    tracing::trace!(kind = %event.kind, action = %event.action, id = %event.id, "Docker event");
                    debounce.on_event(Instant::now(), event.touches_containers());
                }
                Err(e) => return End::Failed(e),
            },
            _ = sleep_until(listing_due.unwrap_or(resync)), if listing_due.is_some() => {
                if let Err(end) = publish(engine, tx, &mut last).await {
                    return end;
                }
                debounce.listed();
                resync = Instant::now() + RESYNC;
            }
            _ = sleep_until(resync) => {
                if let Err(end) = publish(engine, tx, &mut last).await {
                    return end;
                }
                debounce.listed();
                resync = Instant::now() + RESYNC;
            }
            _ = tx.closed() => return End::Closed,
        }
    }
}

/// Lists the containers and sends them if they differ from `last` (or nothing was sent yet).
async fn publish(
    engine: &Engine,
    tx: &mpsc::Sender<EngineEvent>,
    last: &mut Option<Vec<Container>>,
) -> Result<(), End> {
    let mut list = engine.containers().await.map_err(End::Failed)?;
    list.sort_by(|a, b| a.id.cmp(&b.id));
    let mut images: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for c in &mut list {
        if c.image_id.is_empty() {
            continue;
        }
        if !images.contains_key(&c.image_id) {
            let labels = engine
                .image_labels(&c.image_id)
                .await
                .map_err(End::Failed)?;
            images.insert(c.image_id.clone(), labels);
        }
        if let Some(image) = images.get(&c.image_id) {
            drop_image_labels(&mut c.labels, image);
        }
    }
    if last.as_ref() == Some(&list) {
        return Ok(());
    }
    *last = Some(list.clone());
    tx.send(EngineEvent::Snapshot(list))
        .await
        .map_err(|_| End::Closed)
}

/// Only the labels a container was given count for the policy: dockerd lists the image's
/// `LABEL`s among them too, and anyone who publishes an image could otherwise pick its
/// containers' identity. A `--label` equal (key and value) to the image's cannot be told apart,
/// and goes too: fail closed.
fn drop_image_labels(labels: &mut BTreeMap<String, String>, image: &BTreeMap<String, String>) {
    labels.retain(|k, v| image.get(k) != Some(v));
}

/// Whether an outage is under way, so it is reported once and not at every retry.
#[derive(Debug, Default)]
struct Outage {
    down: bool,
}

impl Outage {
    /// A failure: true when it starts an outage (report it), false during one.
    fn fail(&mut self) -> bool {
        !std::mem::replace(&mut self.down, true)
    }

    /// dockerd answered: true when that ends an outage.
    fn recover(&mut self) -> bool {
        std::mem::replace(&mut self.down, false)
    }
}

/// When the next listing is due: [`DEBOUNCE`] after the first relevant event since the last
/// listing. Later events of the burst do not postpone it, so a busy host is still followed.
#[derive(Debug, Default)]
struct Debounce {
    due: Option<Instant>,
}

impl Debounce {
    fn on_event(&mut self, now: Instant, relevant: bool) {
        if relevant && self.due.is_none() {
            self.due = Some(now + DEBOUNCE);
        }
    }

    fn due(&self) -> Option<Instant> {
        self.due
    }

    fn listed(&mut self) {
        self.due = None;
    }
}

#[cfg(test)]
mod tests;
