//! The Docker Engine client, the watch and the network task against a real dockerd (Debian's
//! docker.io 20.10) running in a network namespace and a private mount namespace of its own,
//! with its own data root, exec root, pidfile, socket and containerd namespace.
//!
//! Skipped with a message when not root or when dockerd, the docker client or busybox is
//! missing; under `CI=true` that is a failure instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use wgmesh_overlay::docker::{
    spawn_ensure_networks, spawn_watch, Container, Engine, EngineEvent, NetworkReport, NetworkState,
};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Not the 28.x client first in PATH: the one that speaks to 20.10.
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "wgm-busybox:1";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (dockerd needs it)".into());
    }
    for tool in [
        DOCKERD,
        DOCKER,
        BUSYBOX,
        "/usr/bin/nsenter",
        "/usr/bin/unshare",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is not installed"));
        }
    }
    let ip = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ip").exists()));
    (!ip).then(|| "`ip` is not installed".into())
}

fn can_run(test: &str) -> bool {
    let Some(why) = missing() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A dockerd of the test's own. Its `Drop` stops it by the PID in its pidfile, unmounts
/// whatever it left under its folder, and deletes the folder and the network namespace.
struct Dockerd {
    /// Short (the unix socket path limit is 108 bytes): `/tmp/wgm-dk-PID-N`.
    dir: PathBuf,
    netns: String,
    child: Option<Child>,
}

impl Dockerd {
    fn start() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("wgm-dk-{}-{n}", std::process::id());
        let dir = Path::new("/tmp").join(&name);
        let mut d = Self {
            dir: dir.clone(),
            netns: name.clone(),
            child: None,
        };
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        let d_ = dir.display();
        let script = format!(
            "mkdir -p /run/docker/plugins && mount --bind {d_}/plugins /run/docker/plugins && \
             exec {DOCKERD} --data-root {d_}/data --exec-root {d_}/x --pidfile {d_}/d.pid \
             -H unix://{d_}/docker.sock --containerd-namespace {name} \
             --containerd-plugins-namespace {name}p"
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{name}"))
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        d.child = Some(child);
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn engine(&self) -> Engine {
        Engine::new(self.socket())
    }

    /// `docker ARGS` against this dockerd; panics unless it succeeds. Returns stdout.
    fn docker(&self, args: &[&str]) -> String {
        let host = format!("unix://{}", self.socket().display());
        run(Command::new(DOCKER).env("DOCKER_HOST", host).args(args))
    }

    /// A one-binary image from the static busybox (nothing can be pulled here).
    fn import_busybox(&self) {
        let root = self.dir.join("img");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.join("img.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        self.docker(&["import", &tar.to_string_lossy(), IMAGE]);
    }

    /// Stops dockerd (SIGTERM by its pidfile, SIGKILL after 30 s) and reaps it.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = std::fs::read_to_string(self.dir.join("d.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|&pid| self.is_ours(pid));
        let pid = nix::unistd::Pid::from_raw(pid.unwrap_or(child.id() as i32));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                eprintln!("dockerd {pid} ignored SIGTERM for 30 s: killing it");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True when `pid` is the dockerd of this folder (a stale pidfile names someone else).
    fn is_ours(&self, pid: i32) -> bool {
        let mut cmdline = Vec::new();
        let file = std::fs::File::open(format!("/proc/{pid}/cmdline"));
        file.and_then(|mut f| f.read_to_end(&mut cmdline)).is_ok()
            && String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy())
    }

    /// Mount points under the folder in this mount namespace, deepest first.
    fn mounts(&self) -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = format!("{}/", self.dir.display());
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .map(String::from)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        points
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== dockerd log ({}) =====\n{}",
                self.dir.display(),
                self.log_tail()
            );
        }
        self.stop();
        for point in self.mounts() {
            let out = Command::new("umount").args(["-l", &point]).output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!("cannot unmount {point}");
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .output();
        if self.mounts().is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("cannot remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!("{} still has mounts: left in place", self.dir.display());
        }
    }
}

/// Waits for a snapshot satisfying `want`, skipping others.
async fn snapshot(
    rx: &mut mpsc::Receiver<EngineEvent>,
    what: &str,
    mut want: impl FnMut(&[Container]) -> bool,
) -> Vec<Container> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no snapshot {what} within 20 s"))
            .expect("the watch runs");
        if let EngineEvent::Snapshot(list) = event {
            if want(&list) {
                return list;
            }
        }
    }
}

async fn reports(
    rx: &mut watch::Receiver<Vec<NetworkReport>>,
    done: impl FnMut(&Vec<NetworkReport>) -> bool,
) -> Vec<NetworkReport> {
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(done))
        .await
        .expect("network reports within 60 s")
        .expect("the network task runs")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_watch_and_networks_against_a_real_dockerd() {
    if !can_run("engine_watch_and_networks_against_a_real_dockerd") {
        return;
    }
    let mut dockerd = Dockerd::start();
    let engine = dockerd.engine();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = engine.ping().await {
        assert!(Instant::now() < deadline, "dockerd never answered: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // dockerd looks for an unknown plugin for ~15 s: these run meanwhile.
    let bad = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .create_network("wgm-bad", "nosuchdriver", "default")
                .await
        }
    });
    let (net_tx, mut net_rx) = watch::channel(Vec::new());
    let bridge_id = engine
        .create_network("wgm-br", "bridge", "default")
        .await
        .expect("a bridge network");
    let names = vec!["wgm-br".to_string(), "wgm-new".to_string()];
    let _networks = spawn_ensure_networks(engine.clone(), names, net_tx);

    assert_eq!(engine.network("wgm-none").await.unwrap(), None);
    let br = engine
        .network("wgm-br")
        .await
        .unwrap()
        .expect("wgm-br exists");
    assert_eq!(
        (br.id.as_str(), br.driver.as_str(), br.ipam_driver.as_str()),
        (bridge_id.as_str(), "bridge", "default")
    );

    // The watch: a snapshot at once, then one with the container, then one without it.
    let (tx, mut rx) = mpsc::channel(16);
    let _watch = spawn_watch(engine.clone(), tx);
    snapshot(&mut rx, "at start", |_| true).await;
    dockerd.import_busybox();
    let id = dockerd.docker(&[
        "run",
        "-d",
        "--name",
        "wgm-c1",
        "--network",
        "wgm-br",
        "--label",
        "role=backend",
        "--label",
        "app=x",
        "--stop-timeout",
        "1",
        IMAGE,
        "sleep",
        "300",
    ]);
    let list = engine.containers().await.unwrap();
    let c = list
        .iter()
        .find(|c| c.id == id)
        .expect("containers() lists it");
    assert_eq!(c.name, "wgm-c1");
    assert_eq!(c.labels.get("role").map(String::as_str), Some("backend"));
    assert_eq!(c.labels.get("app").map(String::as_str), Some("x"));
    assert_eq!(c.endpoints.len(), 1);
    assert_eq!(c.endpoints[0].network_id, bridge_id);
    assert_eq!(c.endpoints[0].network_name, "wgm-br");
    assert_eq!(c.endpoints[0].endpoint_id.len(), 64);

    let started = Instant::now();
    snapshot(&mut rx, "with wgm-c1", |l| {
        l.iter().any(|c| c.id == id && c.name == "wgm-c1")
    })
    .await;
    dockerd.docker(&["rename", "wgm-c1", "wgm-c2"]);
    snapshot(&mut rx, "after rename", |l| {
        l.iter().any(|c| c.name == "wgm-c2")
    })
    .await;
    dockerd.docker(&["rm", "-f", "wgm-c2"]);
    snapshot(&mut rx, "without it", |l| l.iter().all(|c| c.id != id)).await;
    eprintln!(
        "watch followed run, rename and rm in {:?}",
        started.elapsed()
    );

    // Docker's refusal, verbatim.
    let e = bad
        .await
        .unwrap()
        .expect_err("an unknown driver is refused");
    assert_eq!(
        e.docker_message(),
        Some(r#"plugin "nosuchdriver" not found"#),
        "{e}"
    );
    assert_eq!(e.status(), Some(404));

    // The network task: the foreign network left alone, ours refused (no plugin here).
    let got = reports(&mut net_rx, |r| {
        r.len() == 2 && r.iter().all(|n| n.state != NetworkState::Waiting)
    })
    .await;
    assert_eq!(got[0].name, "wgm-br");
    assert_eq!(
        got[0].state,
        NetworkState::WrongDriver {
            driver: "bridge".into()
        }
    );
    let NetworkState::Failed { error } = &got[1].state else {
        panic!("wgm-new cannot be created without the plugin: {:?}", got[1]);
    };
    assert!(error.contains(r#"plugin "wgmesh" not found"#), "{error}");
    let br = engine
        .network("wgm-br")
        .await
        .unwrap()
        .expect("wgm-br is still there");
    assert_eq!((br.id, br.driver), (bridge_id, "bridge".to_string()));

    // dockerd stops: one Unreachable, and the networks wait.
    dockerd.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("unreachable within 20 s")
            .unwrap();
        if let EngineEvent::Unreachable(text) = event {
            assert!(
                text.contains(&*dockerd.socket().to_string_lossy()),
                "{text}"
            );
            break;
        }
    }
    let got = reports(&mut net_rx, |r| {
        r.iter().all(|n| n.state == NetworkState::Waiting)
    })
    .await;
    assert_eq!(got.len(), 2);
}
