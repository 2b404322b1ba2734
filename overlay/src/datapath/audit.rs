//! The audit log of refused flows: each flow the policy refused, once (the peers' guards
//! de-duplicate), as one JSON line in `audit_log` (agent.toml; default
//! `{state_dir}/audit.jsonl`, mode 0600):
//!
//! ```json
//! {"time":1700000000,"direction":"ingress","src":"10.42.2.3","dst":"10.42.1.2","dst_netns":"web","proto":"tcp","port":22,"rule":"no-ssh","reason":"denied"}
//! ```
//!
//! `reason` is `denied` (by the `rule` named), `default` (no rule matched, and the policy's
//! default is deny), `conntrack_full` or `untracked` (an ICMP reply or error of no tracked flow);
//! `src_netns`/`dst_netns` name a local workload's network namespace when the address is one.
//!
//! The data threads never block or allocate for it: they hand [`Denial`]s to an [`AuditTap`]
//! (a bounded channel's `try_send`; a full channel drops the event and counts it), and the
//! writer thread turns them into lines, at most [`LINES_PER_SECOND`] a second. Past that, and
//! for the events the channel dropped, it writes one line a second saying how many were left
//! out: `{"time":...,"suppressed":12,"lost":0}`. Lines the file refuses are counted with the
//! events lost; the file is rotated at [`MAX_BYTES`], keeping [`KEEP`] old ones.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

use crate::peers::conntrack::Direction;
use crate::peers::enforce::{Denial, DenialReason};
use crate::peers::filter::RuleRef;
use crate::peers::packet::{ICMP, ICMPV6, TCP, UDP};

/// Events waiting for the writer at most.
pub const QUEUE: usize = 1024;
/// Lines written a second at most.
pub const LINES_PER_SECOND: u64 = 100;
/// The log is rotated when a line would take it past this size: `audit.jsonl` becomes
/// `audit.jsonl.1`, and so on up to [`KEEP`] old files (the oldest goes).
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Rotated files kept.
pub const KEEP: u32 = 3;

/// Where the data threads hand refused flows: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct AuditTap {
    queue: Option<Sender<Denial>>,
    lost: Arc<AtomicU64>,
    /// Lines the writer could not write (a full disk, an I/O error).
    unwritten: Arc<AtomicU64>,
}

impl AuditTap {
    /// A tap into a queue of `capacity` events, and the queue's receiving end.
    pub fn bounded(capacity: usize) -> (Self, Receiver<Denial>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let tap = Self {
            queue: Some(tx),
            lost: Arc::new(AtomicU64::new(0)),
            unwritten: Arc::new(AtomicU64::new(0)),
        };
        (tap, rx)
    }

    /// A tap that audits nothing (no log).
    pub fn disabled() -> Self {
        Self {
            queue: None,
            lost: Arc::new(AtomicU64::new(0)),
            unwritten: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands `denial` to the writer, or drops (and counts) it when the queue is full.
    #[inline]
    pub fn offer(&self, denial: Denial) {
        if let Some(q) = &self.queue {
            if q.try_send(denial).is_err() {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Refused flows missing from the log: dropped because the queue was full, or not written
    /// because the file could not be.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed) + self.unwritten.load(Ordering::Relaxed)
    }
}

/// The network namespace of each local workload address, for the log's `*_netns` fields; the
/// agent replaces it when workloads come and go.
#[derive(Default)]
pub struct WorkloadNames(ArcSwap<BTreeMap<IpAddr, String>>);

impl WorkloadNames {
    /// Replaces the names.
    pub fn set(&self, names: impl IntoIterator<Item = (IpAddr, String)>) {
        self.0.store(Arc::new(names.into_iter().collect()));
    }

    fn get(&self, addr: IpAddr) -> Option<String> {
        self.0.load().get(&addr).cloned()
    }
}

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}")]
pub struct AuditLogError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: io::Error,
}

/// The writer thread of the audit log.
#[derive(Debug)]
pub struct AuditLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (creates, mode 0600) the log at `path` for appending and starts its writer;
    /// returns it with the tap for the data threads.
    pub fn start(
        path: &Path,
        names: Arc<WorkloadNames>,
    ) -> Result<(Self, AuditTap), AuditLogError> {
        let error = |source| AuditLogError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(error)?;
        // An existing file keeps its mode on open: make it private too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(error)?;
        let (tap, rx) = AuditTap::bounded(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Writer::new(file, path.to_owned(), names, &tap, MAX_BYTES);
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("wgm-audit".into())
            .spawn(move || writer.run(&rx, &stopping))
            .map_err(error)?;
        Ok((
            Self {
                stop,
                thread: Some(thread),
            },
            tap,
        ))
    }

    /// Stops the writer after it wrote what is queued.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    file: File,
    /// Bytes in `file`, and where it is rotated.
    size: u64,
    max_bytes: u64,
    path: PathBuf,
    names: Arc<WorkloadNames>,
    lost: Arc<AtomicU64>,
    unwritten: Arc<AtomicU64>,
    /// The last write failed: said once, then counted until a write succeeds again.
    failing: bool,
    reported_lost: u64,
    /// The current second's start, and what it wrote and left out.
    window: Instant,
    written: u64,
    suppressed: u64,
}

impl Writer {
    /// A writer appending to `file` (at `path`), counting into `tap`'s counters, rotating at
    /// `max_bytes`.
    fn new(
        file: File,
        path: PathBuf,
        names: Arc<WorkloadNames>,
        tap: &AuditTap,
        max_bytes: u64,
    ) -> Self {
        Self {
            size: file.metadata().map(|m| m.len()).unwrap_or(0),
            file,
            max_bytes,
            path,
            names,
            lost: Arc::clone(&tap.lost),
            unwritten: Arc::clone(&tap.unwritten),
            failing: false,
            reported_lost: 0,
            window: Instant::now(),
            written: 0,
            suppressed: 0,
        }
    }

    fn run(mut self, rx: &Receiver<Denial>, stop: &AtomicBool) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(denial) => self.event(&denial),
                Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.roll(Instant::now());
        }
        while let Ok(denial) = rx.try_recv() {
            self.event(&denial);
        }
        self.roll(Instant::now() + Duration::from_secs(1));
    }

    fn event(&mut self, denial: &Denial) {
        self.roll(Instant::now());
        if self.written >= LINES_PER_SECOND {
            self.suppressed += 1;
            return;
        }
        self.written += 1;
        let line = Line::of(denial, unix_now(), &self.names);
        self.write(&line);
    }

    /// Starts a new second once this one is over, first saying what the last one left out.
    fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window) < Duration::from_secs(1) {
            return;
        }
        let lost = self.lost.load(Ordering::Relaxed);
        let new_lost = lost - self.reported_lost.min(lost);
        if self.suppressed > 0 || new_lost > 0 {
            let line = Suppressed {
                time: unix_now(),
                suppressed: self.suppressed,
                lost: new_lost,
            };
            self.write(&line);
        }
        self.reported_lost = lost;
        self.window = now;
        self.written = 0;
        self.suppressed = 0;
    }

    fn write(&mut self, line: &impl Serialize) {
        let mut text = serde_json::to_string(line).expect("audit lines serialize");
        text.push('\n');
        if self.size > 0 && self.size + text.len() as u64 > self.max_bytes {
            self.rotate();
        }
        match self.file.write_all(text.as_bytes()) {
            Err(e) => {
                self.unwritten.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "cannot write the audit log; lines are counted in status policy.audit_lost \
                         until it can be written again"
                    );
                    self.failing = true;
                }
            }
            Ok(()) => {
                self.size += text.len() as u64;
                if self.failing {
                    tracing::info!(path = %self.path.display(), "the audit log is written again");
                    self.failing = false;
                }
            }
        }
    }

    /// Moves `audit.jsonl.N` to `.N+1` (the oldest, `.KEEP`, goes), the log to `.1`, and starts
    /// a new log. On failure the log grows on (the lines matter more than the bound), and the
    /// next line tries again.
    fn rotate(&mut self) {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..KEEP).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        let reopened = std::fs::rename(&self.path, numbered(1)).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
        });
        match reopened {
            Ok(file) => {
                self.file = file;
                self.size = 0;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot rotate the audit log")
            }
        }
    }
}

/// One refused flow, as written.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Line {
    time: u64,
    direction: &'static str,
    src: IpAddr,
    dst: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_netns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_netns: Option<String>,
    proto: String,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    reason: &'static str,
}

impl Line {
    pub(crate) fn of(d: &Denial, time: u64, names: &WorkloadNames) -> Self {
        let (rule, reason) = match d.reason {
            DenialReason::Policy(RuleRef::Default) => (None, "default"),
            DenialReason::Policy(r) => (d.filter.rule_name(r).map(str::to_owned), "denied"),
            DenialReason::ConntrackFull => (None, "conntrack_full"),
            DenialReason::Untracked => (None, "untracked"),
        };
        Self {
            time,
            direction: match d.direction {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            },
            src: d.src,
            dst: d.dst,
            // Only this host's workloads have names: a same-host flow names both ends.
            src_netns: names.get(d.src),
            dst_netns: names.get(d.dst),
            proto: match d.proto {
                TCP => "tcp".into(),
                UDP => "udp".into(),
                ICMP | ICMPV6 => "icmp".into(),
                other => other.to_string(),
            },
            port: d.port,
            rule,
            reason,
        }
    }
}

#[derive(Serialize)]
struct Suppressed {
    time: u64,
    suppressed: u64,
    lost: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
