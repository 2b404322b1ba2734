//! Network namespaces and the processes the tests start in them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A uniquely named network namespace, `wgm-{pid}-{n}-{tag}`. Cloning shares it;
/// the last clone to drop deletes it (with every link created inside it).
#[derive(Clone)]
pub struct Netns(Arc<Inner>);

struct Inner {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        assert!(
            tag.len() <= 8 && tag.bytes().all(|b| b.is_ascii_alphanumeric()),
            "keep namespace tags short and alphanumeric: {tag:?}"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("wgm-{}-{}-{}", std::process::id(), n, tag);
        run_ok(&["ip", "netns", "add", &name]);
        let ns = Self(Arc::new(Inner { name }));
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// `/run/netns/NAME`, to `setns` into.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(self.name())
    }

    /// A `Command` running `args` inside the namespace (`ip netns exec`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name()]).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `args` in the namespace and returns its output, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name()))
    }

    /// Runs `args` in the namespace; panics (with stderr) unless it exits 0. Returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "`{}` in {} failed ({}): {}{}",
            args.join(" "),
            self.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` in the namespace in the background; stdout and stderr go to `log`.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log.display()));
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(file.try_clone().expect("dup log fd"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {}: {e}", self.name()));
        Proc {
            child: Some(child),
            what: format!("{} (in {})", args.join(" "), self.name()),
            log: log.to_path_buf(),
            status: None,
        }
    }

    /// `ip addr`, `ip route`, `ip link` of the namespace, for failure reports.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("===== netns {} =====\n", self.name());
        for args in [
            &["ip", "-d", "link"][..],
            &["ip", "addr"][..],
            &["ip", "route"][..],
            &["ip", "-6", "route"][..],
            &["ip", "neigh"][..],
        ] {
            let out = self.exec(args);
            s += &format!(
                "--- {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        s
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.run(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    /// `ip route` (v4 and v6) lines, sorted, without the IPv6 link-local and multicast entries
    /// the kernel adds by itself whenever an interface's link-local address finishes DAD
    /// (asynchronously, so comparing them makes a before/after check flaky).
    pub fn routes(&self) -> Vec<String> {
        let kernel_v6 = |l: &str| {
            l.starts_with("fe80::/64 ")
                || l.starts_with("local fe80::")
                || l.starts_with("multicast ff00::/8 ")
        };
        let mut v: Vec<String> = self
            .run(&["ip", "route", "show", "table", "all"])
            .lines()
            .chain(
                self.run(&["ip", "-6", "route", "show", "table", "all"])
                    .lines(),
            )
            .filter(|l| !kernel_v6(l))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// The IPv4 addresses (with prefix) on `ifname`.
    pub fn addrs4(&self, ifname: &str) -> Vec<String> {
        self.run(&["ip", "-o", "-4", "addr", "show", "dev", ifname])
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                it.position(|w| w == "inet")?;
                it.next().map(str::to_string)
            })
            .collect()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

/// Runs a command in the current namespace; panics unless it exits 0. Returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "`{}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process the test started. Dropping it stops it by its own PID:
/// SIGTERM, then SIGKILL after a grace period.
pub struct Proc {
    child: Option<Child>,
    what: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub const GRACE: Duration = Duration::from_secs(5);

    /// Owns `child`, a process this test started, called `what`, logging to `log`.
    pub fn adopt(child: Child, what: String, log: &Path) -> Self {
        Self {
            child: Some(child),
            what,
            log: log.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            s = String::from_utf8_lossy(&b).into_owned();
        }
        s
    }

    /// The exit status if the process has ended (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                }
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Sends `sig` to the process, only if it has not been reaped (so the PID is still ours).
    pub fn signal(&mut self, sig: Signal) {
        if self.is_running() {
            let pid = self.pid().expect("running process has a pid");
            if let Err(e) = kill(Pid::from_raw(pid), sig) {
                eprintln!("warning: kill({pid}, {sig}) for {}: {e}", self.what);
            }
        }
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGKILL);
        let st = self.wait_timeout(Duration::from_secs(10));
        assert!(st.is_some(), "{} did not die after SIGKILL", self.what);
        st
    }

    /// SIGTERM, then SIGKILL after the grace period. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_with(Signal::SIGTERM)
    }

    pub fn stop_with(&mut self, sig: Signal) -> Option<ExitStatus> {
        if !self.is_running() {
            return self.status;
        }
        self.signal(sig);
        if let Some(st) = self.wait_timeout(Self::GRACE) {
            return Some(st);
        }
        eprintln!(
            "warning: {} ignored {sig} for {:?}; sending SIGKILL",
            self.what,
            Self::GRACE
        );
        self.signal(Signal::SIGKILL);
        self.wait_timeout(Duration::from_secs(10))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
