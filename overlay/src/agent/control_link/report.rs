//! Reporting this host's workloads (names, addresses, labels) to the control plane, in the
//! background: the agent publishes its whole list after start-up and after every attach,
//! detach or relabel ([`WorkloadReports::publish`]), and never waits for the control plane;
//! a task sends the latest list, retries a failed report with backoff, and sends it again after
//! the link reconnects (the control plane may have restarted from an older store). Lists that
//! change while a report is on its way or being retried are coalesced: only the latest is
//! sent.
//!
//! [`Reports`] is the pure part (which list is due); [`report`] is the task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wgmesh_client::api::WorkloadsBody;
use wgmesh_client::client::ClientError;

use super::backoff::Backoff;
use super::Link;
use crate::error::Chain;

/// How long the task waits after a change for more changes, so that a burst of attaches (a
/// script, a container runtime starting many) costs one report.
const COALESCE: Duration = Duration::from_millis(100);

/// The agent's end of the reporting: where it publishes its list, and whether the control plane
/// holds it. Dropping it stops the task.
#[derive(Debug)]
pub struct WorkloadReports {
    list: watch::Sender<Option<Published>>,
    /// The generation of the list published last (0: none yet).
    generation: u64,
    /// The generation of the list the control plane holds, as the task saw it last (0: none).
    /// Generations only grow, so a late store of an older one never reads as the latest held.
    held: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// A list the agent published, numbered.
#[derive(Debug, Clone)]
struct Published {
    generation: u64,
    list: Arc<WorkloadsBody>,
}

impl WorkloadReports {
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
    pub fn publish(&mut self, list: WorkloadsBody) -> u64 {
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

    /// The generation of the list the control plane acknowledged last (0: none).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether the control plane acknowledged the list published last.
    pub fn reported(&self) -> bool {
        self.generation != 0 && self.held.load(Ordering::Relaxed) == self.generation
    }
}

impl Drop for WorkloadReports {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which list is due, from what the control plane acknowledged and refused.
#[derive(Debug, Default)]
struct Reports {
    /// The list the control plane acknowledged last, since the link last (re)connected.
    held: Option<Arc<WorkloadsBody>>,
    /// A list the control plane refused for good (a `4xx` other than `429`): not sent again
    /// until the list changes or the link reconnects, so a disagreement cannot become a loop.
    refused: Option<Arc<WorkloadsBody>>,
}

impl Reports {
    /// The list to send now, if `wanted` is neither held nor refused.
    fn due(&self, wanted: Option<&Arc<WorkloadsBody>>) -> Option<Arc<WorkloadsBody>> {
        let wanted = wanted?;
        let same = |known: &Option<Arc<WorkloadsBody>>| known.as_deref() == Some(&**wanted);
        (!same(&self.held) && !same(&self.refused)).then(|| Arc::clone(wanted))
    }

    /// Whether the control plane holds `wanted`.
    fn holds(&self, wanted: Option<&Arc<WorkloadsBody>>) -> bool {
        wanted.is_some_and(|w| self.held.as_deref() == Some(&**w))
    }

    /// The control plane answered the report of `sent`.
    fn answered(&mut self, sent: Arc<WorkloadsBody>, result: &Result<(), ClientError>) {
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

/// Sends the latest list in `wanted` whenever it is due (see [`Reports`]), until `wanted`'s
/// sender is dropped; `held` is the generation of the latest list the control plane holds.
async fn report(
    link: Link,
    mut wanted: watch::Receiver<Option<Published>>,
    mut reconnects: watch::Receiver<u64>,
    held: Arc<AtomicU64>,
) {
    let mut reports = Reports::default();
    let mut backoff = Backoff::new();
    let mut failing = false;
    loop {
        let published = wanted.borrow_and_update().clone();
        let latest = published.as_ref().map(|p| &p.list);
        let mut retry = None;
        if let Some(body) = reports.due(latest) {
            let result = link
                .client
                .report_workloads(&link.name, &link.credential, &body)
                .await
                .map(|_| ());
            log(&result, body.workloads.len(), &mut failing);
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
fn log(result: &Result<(), ClientError>, count: usize, failing: &mut bool) {
    match result {
        Ok(()) => {
            *failing = false;
            tracing::info!(
                workloads = count,
                "reported the workloads to the control plane"
            );
        }
        Err(e) if e.is_permanent() => tracing::error!(
            "the control plane refuses this host's workload report; it is sent again after the \
             next attach, detach or reconnection: {}",
            Chain(e)
        ),
        Err(e) => {
            if !*failing {
                tracing::warn!(
                    "cannot report the workloads yet; retrying in the background: {}",
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
