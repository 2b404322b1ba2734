//! Harness for the refusal limiter over IPv6: a control plane listening on `[::]` (dual
//! stack), IPv6 addresses added to a namespace's underlay, and HTTPS requests from a chosen
//! source address (`curl --interface`) to the control plane's IPv6 address, its certificate
//! checked for its IPv4 name (`curl --connect-to`).

use std::fs;
use std::sync::Arc;

use super::control::{ControlPlane, CONTROL_IP};
use super::control_limits::{run_answers, Answer};
use super::netns::Netns;
use super::{Bridge, Cluster, ControlSpec, UNDERLAY_IF};

/// A control plane on `bridge` (at [`CONTROL_IP`]) listening on `[::]:7443`, so on IPv6 too;
/// started once `v6` (addresses with their prefix length) are on its underlay.
pub fn control_dual_stack(c: &Cluster, bridge: &Bridge, v6: &[&str]) -> Arc<ControlPlane> {
    let ns = c.netns("ctl6");
    bridge.plug(&ns, CONTROL_IP);
    add_v6(&ns, v6);
    let cp = c.control_prepared(&ns, CONTROL_IP, ControlSpec::default());
    let text = fs::read_to_string(&cp.config_path).expect("read control.toml");
    let text = text.replace("listen = \"0.0.0.0:7443\"", "listen = \"[::]:7443\"");
    assert!(text.contains("[::]:7443"), "{text}");
    cp.write_config(&text);
    cp.start();
    cp
}

/// Adds `addrs` (`ADDRESS/LEN`) to the underlay of `ns`, usable at once (no duplicate address
/// detection).
pub fn add_v6(ns: &Netns, addrs: &[&str]) {
    ns.run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"]);
    for a in addrs {
        ns.run(&["ip", "-6", "addr", "add", a, "dev", UNDERLAY_IF, "nodad"]);
    }
}

/// `method path` `count` times on one connection from `ns`, from source address `from` to the
/// control plane's IPv6 address `to` (`curl --next`), with `bearer` if any.
pub fn curl_from(
    cp: &ControlPlane,
    ns: &Netns,
    (from, to): (&str, &str),
    (method, path): (&str, &str),
    bearer: Option<&str>,
    count: usize,
) -> Vec<Answer> {
    let url = format!("{}{path}", cp.url());
    let ca = cp.ca_pem();
    let connect_to = format!("{CONTROL_IP}:{0}:[{to}]:{0}", cp.spec.port);
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}"));
    let mut args: Vec<&str> = vec!["curl", "-sS", "--max-time", "60"];
    for i in 0..count {
        if i > 0 {
            args.push("--next");
        }
        args.extend([
            "--cacert",
            ca.to_str().unwrap(),
            "--connect-to",
            &connect_to,
        ]);
        args.extend(["--interface", from, "-X", method, "-o", "/dev/null"]);
        args.extend(["-w", "%{http_code} %header{retry-after}\\n"]);
        if let Some(auth) = &auth {
            args.extend(["-H", auth]);
        }
        args.push(&url);
    }
    run_answers(ns, &args, count, &format!("curl from {from}"))
}
