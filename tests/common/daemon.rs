//! A `wgmesh` daemon (agent or control plane) the tests start, stop and restart: at most one
//! process at a time in one namespace, each run with its own log file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::agent::BIN;
use super::netns::{Netns, Proc};
use super::wait_until;

/// The process slot of a daemon and the logs of its runs. Dropping it stops a running process
/// (by its PID, through [`Proc`]).
pub struct Daemon {
    ns: Netns,
    /// What it is, in messages: "agent", "control plane".
    kind: &'static str,
    /// Who it is, in failure messages: e.g. "agent wgm-1-2-a".
    who: String,
    /// `wgmesh SUBCOMMAND --config CONFIG`.
    args: [String; 4],
    /// Run `i` logs to `log_dir/{subcommand}.{i}.log`.
    log_dir: PathBuf,
    subcommand: &'static str,
    proc: Mutex<Option<Proc>>,
    runs: Mutex<Vec<PathBuf>>,
}

impl Daemon {
    /// `wgmesh SUBCOMMAND --config CONFIG` in `ns`, logging to `log_dir`; not started.
    pub fn new(
        ns: &Netns,
        kind: &'static str,
        who: String,
        subcommand: &'static str,
        config: &Path,
        log_dir: &Path,
    ) -> Self {
        Self {
            ns: ns.clone(),
            kind,
            who,
            args: [
                BIN.to_string(),
                subcommand.to_string(),
                "--config".to_string(),
                config.to_str().expect("utf-8 config path").to_string(),
            ],
            log_dir: log_dir.to_path_buf(),
            subcommand,
            proc: Mutex::new(None),
            runs: Mutex::new(Vec::new()),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Proc>> {
        self.proc.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn runs(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot, checked to hold no running process.
    fn idle_slot(&self) -> MutexGuard<'_, Option<Proc>> {
        let mut guard = self.slot();
        assert!(
            guard.as_mut().is_none_or(|p| !p.is_running()),
            "{} already running",
            self.kind
        );
        guard
    }

    fn spawn(&self) -> Proc {
        let mut runs = self.runs();
        let log = self
            .log_dir
            .join(format!("{}.{}.log", self.subcommand, runs.len()));
        runs.push(log.clone());
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.ns.spawn(
            &args,
            &[("RUST_LOG", "info"), ("RUST_BACKTRACE", "1")],
            &log,
        )
    }

    /// Starts a run and waits up to `timeout` until `ready` (given the new process) returns
    /// Ok. Panics with the log if the process exits first or `ready` never holds: "WHO did not
    /// AWAITED within TIMEOUT: LAST ERROR".
    pub fn start_until(
        &self,
        timeout: Duration,
        awaited: &str,
        mut ready: impl FnMut(&Proc) -> Result<(), String>,
    ) {
        let mut guard = self.idle_slot();
        let mut proc = self.spawn();
        let mut last_err = String::new();
        let ready = wait_until(timeout, || {
            if !proc.is_running() {
                return true;
            }
            match ready(&proc) {
                Ok(()) => true,
                Err(e) => {
                    last_err = e;
                    false
                }
            }
        });
        let running = proc.is_running();
        let log = proc.log();
        let status = proc.try_wait();
        *guard = Some(proc);
        assert!(
            running,
            "{} exited during start-up ({status:?}):\n{log}",
            self.who
        );
        let sep = if last_err.is_empty() { "" } else { " " };
        assert!(
            ready,
            "{} did not {awaited} within {timeout:?}:{sep}{last_err}\n{log}",
            self.who
        );
    }

    /// Starts a run without waiting for anything.
    pub fn start_no_wait(&self) {
        let mut guard = self.idle_slot();
        *guard = Some(self.spawn());
    }

    /// Starts a run expecting it to exit on its own; returns its status and output. Panics if
    /// it still runs after `timeout` (it is then stopped).
    pub fn run_expect_exit(&self, timeout: Duration) -> (ExitStatus, String) {
        let mut proc = self.spawn();
        let st = proc.wait_timeout(timeout);
        let log = proc.log();
        let running = st.is_none();
        *self.slot() = Some(proc);
        assert!(
            !running,
            "{} was expected to exit but still runs after {timeout:?}:\n{log}",
            self.who
        );
        (st.unwrap(), log)
    }

    pub fn pid(&self) -> Option<i32> {
        self.slot().as_ref().and_then(Proc::pid)
    }

    pub fn is_running(&self) -> bool {
        self.slot().as_mut().is_some_and(Proc::is_running)
    }

    /// Sends `sig`; panics unless the process runs.
    pub fn signal(&self, sig: Signal) {
        let mut g = self.slot();
        let p = g
            .as_mut()
            .unwrap_or_else(|| panic!("{} not started", self.kind));
        assert!(p.is_running(), "{} not running", self.kind);
        p.signal(sig);
    }

    /// SIGKILL; waits until it is gone.
    pub fn kill9(&self) {
        self.slot()
            .as_mut()
            .unwrap_or_else(|| panic!("{} not started", self.kind))
            .kill9();
    }

    /// SIGTERM (SIGKILL after a grace period); returns the exit status.
    pub fn stop(&self) -> Option<ExitStatus> {
        self.slot().as_mut().and_then(Proc::stop)
    }

    /// The output of every run so far, oldest first.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.runs().iter().enumerate() {
            let text = std::fs::read(p).unwrap_or_default();
            let _ = writeln!(s, "--- run {i} ({})", p.display());
            s += &String::from_utf8_lossy(&text);
        }
        s
    }

    /// The output of the current (latest) run.
    pub fn current_log(&self) -> String {
        self.runs()
            .last()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
