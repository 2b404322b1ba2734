//! Reporting this host's state to the control plane in the background: its workloads (names,
//! addresses, labels), which the agent publishes whole after start-up and after every attach,
//! detach or relabel ([`WorkloadReports`]), and its key during a rotation. The agent never waits
//! for the control plane: [`Reporter::publish`] returns at once, and a task sends the latest
//! value, retries a failed report with backoff, and sends it again after the link reconnects
//! (the control plane may have restarted from an older store). Values that change while a report
//! is on its way or being retried are coalesced: only the latest is sent.
//!
//! [`Reports`] is the pure part (which value is due); [`report`] is the task; [`Report`] says how
//! one kind of value is sent.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wgmesh_client::api::{KeyReportBody, WorkloadsBody};
use wgmesh_client::client::ClientError;

use super::backoff::Backoff;
use super::Link;
use crate::error::Chain;

/// How long the task waits after a change for more changes, so that a burst of attaches (a
/// script, a container runtime starting many) costs one report.
const COALESCE: Duration = Duration::from_millis(100);

/// A value the agent reports to the control plane.
pub trait Report: PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// What it is, for the log: "the workloads", "the key".
    const WHAT: &'static str;
    /// Sends it over `link`.
    fn send(&self, link: &Link) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// A short summary for the log.
    fn summary(&self) -> String;
}

impl Report for WorkloadsBody {
    const WHAT: &'static str = "the workloads";

    async fn send(&self, link: &Link) -> Result<(), ClientError> {
        link.client
            .report_workloads(&link.name, &link.credential, self)
            .await
            .map(|_| ())
    }

    fn summary(&self) -> String {
        format!("{} workloads", self.workloads.len())
    }
}

/// The workload list's reporter.
pub type WorkloadReports = Reporter<WorkloadsBody>;

impl Report for KeyReportBody {
    const WHAT: &'static str = "the key";

    async fn send(&self, link: &Link) -> Result<(), ClientError> {
        link.client
            .report_key(&link.name, &link.credential, self)
            .await
            .map(|_| ())
    }

    fn summary(&self) -> String {
        format!(
            "epoch {} key {}{}",
            self.epoch,
            self.public_key.short(),
            if self.moved { ", peers moved" } else { "" }
        )
    }
}

/// The reporter of the host's key during a rotation.
pub type KeyReports = Reporter<KeyReportBody>;

/// The agent's end of the reporting: where it publishes the value, and whether the control
/// plane holds it. Dropping it stops the task.
#[derive(Debug)]
pub struct Reporter<T: Report> {
    list: watch::Sender<Option<Published<T>>>,
    /// The generation of the list published last (0: none yet).
    generation: u64,
    /// The generation of the list the control plane holds, as the task saw it last (0: none).
    /// Generations only grow, so a late store of an older one never reads as the latest held.
    held: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// A value the agent published, numbered.
#[derive(Debug)]
struct Published<T> {
    generation: u64,
    list: Arc<T>,
}

impl<T> Clone for Published<T> {
    fn clone(&self) -> Self {
        Self {
            generation: self.generation,
            list: Arc::clone(&self.list),
        }
    }
}

impl<T: Report> Reporter<T> {
    /// Starts reporting over `link`; `reconnects` moves each time the link's long poll gets an
    /// answer again after failing. Nothing is sent before the first [`Self::publish`].
    pub fn start(link: Link, reconnects: watch::Receiver<u64>) -> Self {
        let (list, wanted) = watch::channel(None);
        let held = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(report(link, wanted, reconnects, Arc::clone(&held)));
        Self {
            list,
            generation: 0,
            held,
            task,
        }
    }

    /// Makes `list` the one to report (the whole list, which replaces the last one). Returns at
    /// once, with the list's generation; a list equal to the last one published changes nothing
    /// (and keeps its generation).
    pub fn publish(&mut self, list: T) -> u64 {
        let generation = self.generation + 1;
        let changed = self.list.send_if_modified(|current| {
            if current.as_ref().is_some_and(|p| *p.list == list) {
                return false;
            }
            *current = Some(Published {
                generation,
                list: Arc::new(list),
            });
            true
        });
        if changed {
            self.generation = generation;
        }
        self.generation
    }

    /// Nothing to report any more (what was published is withdrawn).
    pub fn clear(&mut self) {
        self.list.send_replace(None);
    }

    /// The generation of the list the control plane acknowledged last (0: none).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether the control plane acknowledged the list published last.
    pub fn reported(&self) -> bool {
        self.generation != 0 && self.held.load(Ordering::Relaxed) == self.generation
    }
}

impl<T: Report> Drop for Reporter<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which value is due, from what the control plane acknowledged and refused.
#[derive(Debug)]
struct Reports<T> {
    /// The value the control plane acknowledged last, since the link last (re)connected.
    held: Option<Arc<T>>,
    /// A value the control plane refused for good (a `4xx` other than `429`): not sent again
    /// until it changes or the link reconnects, so a disagreement cannot become a loop.
    refused: Option<Arc<T>>,
}

impl<T> Default for Reports<T> {
    fn default() -> Self {
        Self {
            held: None,
            refused: None,
        }
    }
}

impl<T: PartialEq> Reports<T> {
    /// The value to send now, if `wanted` is neither held nor refused.
    fn due(&self, wanted: Option<&Arc<T>>) -> Option<Arc<T>> {
        let wanted = wanted?;
        let same = |known: &Option<Arc<T>>| known.as_deref() == Some(&**wanted);
        (!same(&self.held) && !same(&self.refused)).then(|| Arc::clone(wanted))
    }

    /// Whether the control plane holds `wanted`.
    fn holds(&self, wanted: Option<&Arc<T>>) -> bool {
        wanted.is_some_and(|w| self.held.as_deref() == Some(&**w))
    }

    /// The control plane answered the report of `sent`.
    fn answered(&mut self, sent: Arc<T>, result: &Result<(), ClientError>) {
        match result {
            Ok(()) => {
                self.held = Some(sent);
                self.refused = None;
            }
            Err(e) if e.is_permanent() => self.refused = Some(sent),
            Err(_) => {}
        }
    }

    /// The link reconnected: the control plane may hold anything now; report again.
    fn reconnected(&mut self) {
        *self = Self::default();
    }
}

/// Sends the latest value in `wanted` whenever it is due (see [`Reports`]), until `wanted`'s
/// sender is dropped; `held` is the generation of the latest one the control plane holds.
async fn report<T: Report>(
    link: Link,
    mut wanted: watch::Receiver<Option<Published<T>>>,
    mut reconnects: watch::Receiver<u64>,
    held: Arc<AtomicU64>,
) {
    let mut reports = Reports::<T>::default();
    let mut backoff = Backoff::new();
    let mut failing = false;
    loop {
        let published = wanted.borrow_and_update().clone();
        let latest = published.as_ref().map(|p| &p.list);
        let mut retry = None;
        if let Some(body) = reports.due(latest) {
            let result = body.send(&link).await;
            log::<T>(&result, &body.summary(), &mut failing);
            if matches!(&result, Err(e) if !e.is_permanent()) {
                retry = Some(backoff.next());
            } else {
                backoff = Backoff::new();
            }
            reports.answered(body, &result);
        }
        if let Some(p) = published.as_ref().filter(|p| reports.holds(Some(&p.list))) {
            held.store(p.generation, Ordering::Relaxed);
        }
        let retry = async {
            match retry {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(COALESCE).await;
            }
            Ok(()) = reconnects.changed() => reports.reconnected(),
            () = retry => {}
        }
    }
}

/// Logs a report's result: a failure once until the next success, a refusal each time.
fn log<T: Report>(result: &Result<(), ClientError>, summary: &str, failing: &mut bool) {
    let what = T::WHAT;
    match result {
        Ok(()) => {
            *failing = false;
            tracing::info!(report = summary, "reported {what} to the control plane");
        }
        Err(e) if e.is_permanent() => tracing::error!(
            report = summary,
            "the control plane refuses this host's report of {what}; it is sent again once \
             it changes or after a reconnection: {}",
            Chain(e)
        ),
        Err(e) => {
            if !*failing {
                tracing::warn!(
                    "cannot report {what} yet; retrying in the background: {}",
                    Chain(e)
                );
            }
            *failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use wgmesh_client::api::{ApiReason, WorkloadReport};

    use super::*;

    fn list(names: &[&str]) -> Arc<WorkloadsBody> {
        Arc::new(WorkloadsBody {
            workloads: names
                .iter()
                .enumerate()
                .map(|(i, n)| WorkloadReport {
                    name: (*n).to_owned(),
                    ip: IpAddr::from([10, 42, 1, 2 + i as u8]),
                    labels: Default::default(),
                })
                .collect(),
        })
    }

    fn refused(status: u16, reason: ApiReason) -> Result<(), ClientError> {
        Err(ClientError::Refused {
            status,
            reason,
            message: "no".into(),
        })
    }

    fn unreachable() -> Result<(), ClientError> {
        Err(ClientError::Timeout {
            url: "https://198.18.0.10:7443".into(),
            secs: 15,
        })
    }

    #[test]
    fn nothing_is_due_before_the_agent_publishes_a_list() {
        let r = Reports::default();
        assert_eq!(r.due(None), None);
        assert!(!r.holds(None));
        // An empty list is a list: a host whose last workload went reports that.
        let empty = list(&[]);
        assert_eq!(r.due(Some(&empty)), Some(empty));
    }

    #[test]
    fn an_acknowledged_list_is_not_sent_again_until_it_changes() {
        let mut r = Reports::default();
        let one = list(&["a"]);
        let sent = r.due(Some(&one)).unwrap();
        r.answered(sent, &Ok(()));
        assert!(r.holds(Some(&one)));
        assert_eq!(r.due(Some(&one)), None);
        // An equal list built anew (a relabel back) is no change either.
        assert_eq!(r.due(Some(&list(&["a"]))), None);
        let two = list(&["a", "b"]);
        assert!(!r.holds(Some(&two)));
        assert_eq!(r.due(Some(&two)), Some(Arc::clone(&two)));
    }

    #[test]
    fn a_failed_report_stays_due_and_a_refused_one_waits_for_a_change() {
        let mut r = Reports::default();
        let one = list(&["a"]);
        r.answered(Arc::clone(&one), &unreachable());
        assert_eq!(r.due(Some(&one)), Some(Arc::clone(&one)), "retried");
        r.answered(Arc::clone(&one), &refused(429, ApiReason::TooManyRequests));
        assert_eq!(r.due(Some(&one)), Some(Arc::clone(&one)), "429: retried");
        r.answered(Arc::clone(&one), &refused(400, ApiReason::BadRequest));
        assert_eq!(r.due(Some(&one)), None, "refused for good: not in a loop");
        assert!(!r.holds(Some(&one)));
        let two = list(&["a", "b"]);
        assert_eq!(r.due(Some(&two)), Some(two), "a new list is sent");
        // After a reconnection the refused list is tried once more.
        r.reconnected();
        assert_eq!(r.due(Some(&one)), Some(one));
    }

    #[test]
    fn a_reconnection_makes_the_held_list_due_again() {
        let mut r = Reports::default();
        let one = list(&["a"]);
        r.answered(Arc::clone(&one), &Ok(()));
        assert_eq!(r.due(Some(&one)), None);
        r.reconnected();
        assert!(!r.holds(Some(&one)));
        assert_eq!(r.due(Some(&one)), Some(one));
    }
}
