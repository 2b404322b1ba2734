//! A real dockerd (Debian's docker.io, 20.10) per host namespace, as the tests need it:
//! its network namespace is the host's, and it has a mount namespace of its own (persistent, so
//! that a restarted dockerd finds its live-restored containers' mounts) in which the host's
//! plugin folder is bound over `/run/docker/plugins`. Its data root, exec root, pidfile and API
//! socket are in a short folder of its own under /tmp. Images cannot be pulled here:
//! [`Dockerd::start`] imports `wgbox:1`, a static busybox with its applets linked in /bin.
//!
//! Dropping it removes its containers, stops it by its PID, unmounts what it mounted and
//! removes its folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::netns::{Netns, Proc};
use super::wait_until;

/// The Docker client that matches dockerd 20.10 (a newer one may come first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// The image every test container runs.
pub const IMAGE: &str = "wgbox:1";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ping", "nc", "sleep", "ip", "cat", "md5sum", "head", "dd", "wc", "seq", "httpd",
    "timeout", "echo", "true", "ls", "hostname", "wget", "mkdir",
];

/// Why dockerd cannot run here, if it cannot (the caller skips, or fails under CI).
pub fn unavailable() -> Option<String> {
    for (path, package) in [
        ("/usr/sbin/dockerd", "docker.io"),
        (DOCKER, "docker.io"),
        (BUSYBOX, "busybox-static"),
        ("/usr/bin/nsenter", "util-linux"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (apt-get install {package})"));
        }
    }
    None
}

/// Skips (returns false) when dockerd cannot run, failing under CI=true instead.
pub fn can_run_docker(test: &str) -> bool {
    if !super::can_run(test) {
        return false;
    }
    match unavailable() {
        None => true,
        Some(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: cannot run dockerd under CI=true: {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// One host's dockerd.
pub struct Dockerd {
    ns: Netns,
    dir: PathBuf,
    proc: Mutex<Option<Proc>>,
}

impl Dockerd {
    /// Starts a dockerd in `ns` and waits until it answers, with `wgbox:1` imported.
    pub fn start(ns: &Netns) -> Self {
        // Short: the exec root holds unix sockets (108 bytes at most).
        let dir = PathBuf::from(format!("/tmp/wgd-{}", ns.name()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["plugins", "mnt", "data", "x"] {
            fs::create_dir_all(dir.join(sub)).expect("dockerd folder");
        }
        let d = Self {
            ns: ns.clone(),
            dir,
            proc: Mutex::new(None),
        };
        d.make_mount_namespace();
        d.launch(false);
        d.import_image();
        d
    }

    /// The folder Docker looks for plugin sockets in: the agent's `[docker] plugin_dir`.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// The Docker API socket: the agent's `[docker] socket`.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn mount_ns(&self) -> PathBuf {
        self.dir.join("mnt/ns")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// A persistent mount namespace (bound at `mnt/ns`, on a private mount of its own) whose
    /// `/run/docker/plugins` is this host's plugin folder.
    fn make_mount_namespace(&self) {
        let mnt = self.dir.join("mnt");
        let m = mnt.to_str().unwrap();
        run(&["mount", "--bind", m, m]);
        run(&["mount", "--make-private", m]);
        fs::write(self.mount_ns(), "").expect("mount namespace file");
        let script = format!(
            "mkdir -p /run/docker/plugins && mount --bind {} /run/docker/plugins",
            self.plugin_dir().display()
        );
        run(&[
            "unshare",
            &format!("--mount={}", self.mount_ns().display()),
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]);
    }

    fn launch(&self, live_restore: bool) {
        let log = self.log_path();
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("dockerd log");
        let name = self.ns.name();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path().display()))
            .arg(format!("--mount={}", self.mount_ns().display()))
            .arg("/usr/sbin/dockerd")
            .arg(format!("--data-root={}", self.dir.join("data").display()))
            .arg(format!("--exec-root={}", self.dir.join("x").display()))
            .arg(format!("--pidfile={}", self.dir.join("d.pid").display()))
            .arg(format!("--host=unix://{}", self.socket().display()))
            .arg(format!("--containerd-namespace={name}"))
            .arg(format!("--containerd-plugins-namespace={name}p"))
            .arg("--log-level=info");
        if live_restore {
            cmd.arg("--live-restore");
        }
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        let child = cmd.spawn().expect("start dockerd");
        *self.proc.lock().unwrap() = Some(Proc::adopt(child, format!("dockerd in {name}"), &log));
        let up = wait_until(Duration::from_secs(40), || {
            self.docker(&["version"]).status.success()
        });
        assert!(up, "dockerd in {name} did not answer:\n{}", self.log_tail());
    }

    fn import_image(&self) {
        let root = self.dir.join("image");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        let tar = self.dir.join("image.tar");
        run(&[
            "tar",
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ]);
        self.docker_ok(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// Imports the test image again as `tag`, with `label` (`k=v`) among the image's labels
    /// (what `LABEL` in a Dockerfile gives).
    pub fn import_labelled(&self, tag: &str, label: &str) {
        let tar = self.dir.join("image.tar");
        let change = format!("LABEL {label}");
        self.docker_ok(&["import", "--change", &change, tar.to_str().unwrap(), tag]);
    }

    /// The last lines of dockerd's log.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `docker ARGS` against this dockerd, whatever its exit status.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// `docker ARGS`, which must succeed; its stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed: {}{}\ndockerd log:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker ARGS`, which must fail; its stderr.
    pub fn docker_err(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {} succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `docker run -d --name NAME --network NET --label L... [EXTRA...] wgbox:1 CMD...`; the
    /// container's id.
    pub fn run(
        &self,
        name: &str,
        network: &str,
        labels: &[&str],
        extra: &[&str],
        cmd: &[&str],
    ) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend(extra);
        args.push(IMAGE);
        args.extend(cmd);
        self.docker_ok(&args)
    }

    /// `docker exec NAME CMD...`.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend(cmd);
        self.docker(&args)
    }

    /// The container's IPv4 address on `network`.
    pub fn ip_of(&self, name: &str, network: &str) -> String {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.docker_ok(&["inspect", "-f", &format, name])
    }

    /// The ids of the running containers.
    pub fn running(&self) -> Vec<String> {
        let out = self.docker_ok(&["ps", "-q", "--no-trunc"]);
        out.lines().map(str::to_owned).collect()
    }

    /// Stops dockerd (SIGTERM by its PID, SIGKILL after 30 s) and starts it again, with
    /// `--live-restore` or without.
    pub fn restart(&self, live_restore: bool) {
        self.stop();
        self.launch(live_restore);
    }

    /// Stops dockerd and waits for it.
    pub fn stop(&self) {
        if let Some(mut p) = self.proc.lock().unwrap().take() {
            p.signal(nix::sys::signal::Signal::SIGTERM);
            if p.wait_timeout(Duration::from_secs(30)).is_none() {
                p.kill9();
            }
        }
    }

    /// Whether dockerd is running.
    pub fn is_running(&self) -> bool {
        self.proc
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(Proc::is_running)
    }

    /// The network namespace it runs in.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.is_running() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args);
            }
        }
        self.stop();
        // Its containers' processes outlive a dockerd killed with -9 only as children of
        // their shims, which end with them; give them a moment before unmounting.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && fs::metadata(self.dir.join("d.pid")).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg(self.mount_ns()).status();
        let _ = Command::new("umount").arg(self.dir.join("mnt")).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
