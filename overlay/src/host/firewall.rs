//! The forwarding the overlay needs, let through the host's packet filter. dockerd sets the
//! `FORWARD` chain's policy to `DROP` (and so do many host firewalls): the kernel would then drop
//! what the overlay forwards between the bridge and the TUN device — containers' and
//! namespaces' traffic to other hosts, and same-host flows, which go through the TUN device. The
//! agent inserts two `ACCEPT` rules for exactly those two directions, tagged with a comment, with
//! the `iptables` binary (the one dockerd uses, so the same backend), and removes them when it
//! stops. Everything else keeps the host's verdict; rules in `DOCKER-USER` still come first.
//!
//! Without an `iptables` binary there is no such filter to open (and no dockerd): nothing to do.

use std::io;
use std::process::Command;

/// The comment on the agent's rules.
pub const RULE_COMMENT: &str = "wgmesh: overlay forwarding";

/// Why the packet filter could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// `iptables` could not be run.
    #[error("cannot run iptables")]
    Run(#[source] io::Error),
    /// `iptables` refused.
    #[error("iptables {args}: {stderr}")]
    Refused {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
}

/// The rule of one direction, as `iptables` arguments after the operation and chain.
pub fn rule(from: &str, to: &str) -> Vec<String> {
    [
        "-i",
        from,
        "-o",
        to,
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "ACCEPT",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The agent's two rules: bridge → TUN and TUN → bridge.
pub fn rules(bridge: &str, tun: &str) -> [Vec<String>; 2] {
    [rule(bridge, tun), rule(tun, bridge)]
}

fn iptables(op: &str, rule: &[String]) -> Result<Option<bool>, FirewallError> {
    let mut cmd = Command::new("iptables");
    cmd.args(["-w", "5", op, "FORWARD"]);
    if op == "-I" {
        cmd.arg("1");
    }
    cmd.args(rule);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FirewallError::Run(e)),
    };
    if out.status.success() {
        return Ok(Some(true));
    }
    // `-C` and `-D` answer 1 for a rule that is not there.
    if matches!(op, "-C" | "-D") && out.status.code() == Some(1) {
        return Ok(Some(false));
    }
    Err(FirewallError::Refused {
        args: format!("{op} FORWARD {}", rule.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// Inserts the rules that are missing (idempotent: a killed agent's rules are kept, not
/// doubled). Returns how many it inserted; `Ok(0)` also when there is no `iptables`.
pub fn open_forwarding(bridge: &str, tun: &str) -> Result<usize, FirewallError> {
    let mut inserted = 0;
    for rule in rules(bridge, tun) {
        match iptables("-C", &rule)? {
            None => return Ok(0),
            Some(true) => {}
            Some(false) => {
                iptables("-I", &rule)?;
                inserted += 1;
            }
        }
    }
    Ok(inserted)
}

/// Removes the rules, every copy of them.
pub fn close_forwarding(bridge: &str, tun: &str) -> Result<(), FirewallError> {
    for rule in rules(bridge, tun) {
        while let Some(true) = iptables("-D", &rule)? {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_both_directions_and_only_them() {
        let [out, back] = rules("wgmbr0", "wgm0");
        assert_eq!(
            out.join(" "),
            "-i wgmbr0 -o wgm0 -m comment --comment wgmesh: overlay forwarding -j ACCEPT"
        );
        assert_eq!(&back[..4], ["-i", "wgm0", "-o", "wgmbr0"]);
    }
}
