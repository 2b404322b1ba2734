//! A reference WireGuard peer: `wireguard-go` configured with `wg`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::keys::KeyPair;
use super::netns::{Netns, Proc};
use super::wait_until;

static IFCOUNT: AtomicUsize = AtomicUsize::new(0);

/// `wireguard-go -f IFNAME` running in a namespace. Its UAPI socket lives in the shared
/// `/var/run/wireguard/`, so every interface gets a machine-unique name.
pub struct WgGo {
    pub ns: Netns,
    pub ifname: String,
    pub keys: KeyPair,
    pub listen_port: u16,
    proc: Mutex<Proc>,
    dir: tempfile::TempDir,
}

impl WgGo {
    pub fn start(ns: &Netns, listen_port: u16) -> Self {
        let n = IFCOUNT.fetch_add(1, Ordering::SeqCst);
        let ifname = format!("wg{:x}-{:x}", std::process::id(), n);
        assert!(ifname.len() <= 15, "interface name too long: {ifname}");
        let dir = tempfile::Builder::new()
            .prefix("wgm-wggo")
            .tempdir()
            .expect("tempdir");
        let keys = KeyPair::generate();
        let key_file = dir.path().join("private.key");
        keys.write_private(&key_file);
        let mut proc = ns.spawn(
            &["wireguard-go", "-f", &ifname],
            &[("WG_PROCESS_FOREGROUND", "1"), ("LOG_LEVEL", "debug")],
            &dir.path().join("wireguard-go.log"),
        );
        let sock = format!("/var/run/wireguard/{ifname}.sock");
        let up = wait_until(Duration::from_secs(10), || {
            std::path::Path::new(&sock).exists() || !proc.is_running()
        });
        assert!(
            up && proc.is_running(),
            "wireguard-go {ifname} did not start: {}",
            proc.log()
        );
        let wg = Self {
            ns: ns.clone(),
            ifname,
            keys,
            listen_port,
            proc: Mutex::new(proc),
            dir,
        };
        let port = listen_port.to_string();
        let kf = key_file.to_str().unwrap().to_string();
        wg.wg(&["set", &wg.ifname, "private-key", &kf, "listen-port", &port]);
        wg
    }

    pub fn public_key(&self) -> &str {
        &self.keys.public
    }

    /// Runs `wg ARGS` in the namespace; panics on failure.
    pub fn wg(&self, args: &[&str]) -> String {
        let mut a = vec!["wg"];
        a.extend_from_slice(args);
        self.ns.run(&a)
    }

    /// `wg set IF peer PUB allowed-ips ... [endpoint E] [persistent-keepalive K]`.
    pub fn set_peer(
        &self,
        public_key: &str,
        allowed_ips: &[&str],
        endpoint: Option<&str>,
        keepalive: Option<u16>,
    ) {
        let allowed = allowed_ips.join(",");
        let mut args = vec![
            "set",
            &self.ifname,
            "peer",
            public_key,
            "allowed-ips",
            &allowed,
        ];
        if let Some(e) = endpoint {
            args.extend_from_slice(&["endpoint", e]);
        }
        let ka = keepalive.map(|k| k.to_string());
        if let Some(k) = &ka {
            args.extend_from_slice(&["persistent-keepalive", k]);
        }
        self.wg(&args);
    }

    pub fn addr_add(&self, cidr: &str) {
        self.ns
            .run(&["ip", "addr", "add", cidr, "dev", &self.ifname]);
    }

    pub fn up(&self) {
        self.ns.run(&["ip", "link", "set", &self.ifname, "up"]);
    }

    pub fn route_add(&self, cidr: &str) {
        self.ns
            .run(&["ip", "route", "add", cidr, "dev", &self.ifname]);
    }

    /// `wg show IF dump` lines of peers: (public key, endpoint, latest handshake, rx, tx).
    pub fn peers(&self) -> Vec<(String, String, u64, u64, u64)> {
        self.wg(&["show", &self.ifname, "dump"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() >= 8).then(|| {
                    (
                        f[0].to_string(),
                        f[2].to_string(),
                        f[4].parse().unwrap_or(0),
                        f[5].parse().unwrap_or(0),
                        f[6].parse().unwrap_or(0),
                    )
                })
            })
            .collect()
    }

    /// Unix time of the latest handshake with `peer` (0 = none).
    pub fn latest_handshake(&self, peer: &str) -> u64 {
        self.peers()
            .into_iter()
            .find(|p| p.0 == peer)
            .map_or(0, |p| p.2)
    }

    pub fn diagnostics(&self) -> String {
        let show = self.ns.exec(&["wg", "show", &self.ifname]);
        let proc = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        let log = proc.log();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        format!(
            "===== wireguard-go {} in {} =====\n--- wg show\n{}{}\n--- log (last 80 lines)\n{}\n",
            self.ifname,
            self.ns.name(),
            String::from_utf8_lossy(&show.stdout),
            String::from_utf8_lossy(&show.stderr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for WgGo {
    fn drop(&mut self) {
        let proc = self.proc.get_mut().unwrap_or_else(|e| e.into_inner());
        proc.stop();
        // Our own UAPI socket, if wireguard-go left it behind.
        let sock = format!("/var/run/wireguard/{}.sock", self.ifname);
        let _ = std::fs::remove_file(sock);
        let _ = &self.dir;
    }
}
