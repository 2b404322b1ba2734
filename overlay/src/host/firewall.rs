//! The overlay's forwarding in the host's packet filter: exactly bridge <-> TUN device, nothing
//! else in or out of either.
//!
//! dockerd sets the `FORWARD` chain's policy to `DROP` (as do many host firewalls): the kernel
//! would then drop what the overlay forwards between the bridge and the TUN device (workloads'
//! traffic to other hosts, and same-host flows, which go through the TUN device). dockerd also
//! sets `ip_forward=1`, which turns forwarding on for every interface, and its own rules accept
//! anything from `docker_gwbridge`: a container could hand the host a packet for the cluster on
//! `docker_gwbridge`, and the host would forward it into the tunnel (masqueraded as the host) or
//! onto the bridge (past the agent and its same-host policy). So the agent puts six rules at the
//! top of `FORWARD`, tagged with a comment: accept bridge -> TUN and TUN -> bridge, drop anything
//! else into or out of either. It runs the `iptables` binary (the one dockerd uses, so the same
//! backend), and removes them when it stops.
//!
//! dockerd inserts its own accept rules at the top of `FORWARD` whenever it sets up a bridge
//! (docker0 at its start, `docker_gwbridge`, every `docker network create`), above ours, and the
//! agent only notices later. So the same rules also go at the top of `DOCKER-USER` (created when
//! missing): dockerd keeps the jump to that chain first in `FORWARD` every time it changes the
//! chain, and never flushes it. Whatever dockerd inserted, our rules are decided first.
//!
//! Without an `iptables` binary there is no such filter (and no dockerd): nothing to do.

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

/// One rule, as `iptables` arguments after the operation and chain: `matches`, then the
/// comment and the verdict.
fn rule(matches: &[&str], verdict: &str) -> Vec<String> {
    let tail = ["-m", "comment", "--comment", RULE_COMMENT, "-j", verdict];
    matches
        .iter()
        .chain(&tail)
        .map(|s| (*s).to_owned())
        .collect()
}

/// The agent's rules, in the order they stand in the chain.
pub fn rules(bridge: &str, tun: &str) -> [Vec<String>; 6] {
    [
        rule(&["-i", bridge, "-o", tun], "ACCEPT"),
        rule(&["-i", tun, "-o", bridge], "ACCEPT"),
        rule(&["-o", tun], "DROP"),
        rule(&["-i", tun], "DROP"),
        rule(&["-o", bridge], "DROP"),
        rule(&["-i", bridge], "DROP"),
    ]
}

/// The chains the rules go into, in order.
pub const CHAINS: [&str; 2] = ["DOCKER-USER", "FORWARD"];

fn iptables(
    op: &str,
    chain: &str,
    position: Option<usize>,
    rule: &[String],
) -> Result<Option<bool>, FirewallError> {
    let mut cmd = Command::new("iptables");
    cmd.args(["-w", "5", op, chain]);
    if let Some(p) = position {
        cmd.arg(p.to_string());
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
    // `-C` and `-D` answer 1 for a rule that is not there, `-N` for a chain that is.
    if matches!(op, "-C" | "-D" | "-N") && out.status.code() == Some(1) {
        return Ok(Some(false));
    }
    Err(FirewallError::Refused {
        args: format!("{op} {chain} {}", rule.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// Puts the rules at the top of `DOCKER-USER` (created when missing) and of `FORWARD` unless
/// they are there already, in order (a killed agent's rules are taken over, not doubled). This
/// runs again whenever dockerd's containers change: the new copies go on top first, then the old
/// ones below are deleted, so a chain is never without them. Returns whether it changed a chain;
/// `Ok(false)` also when there is no `iptables`.
pub fn open_forwarding(bridge: &str, tun: &str) -> Result<bool, FirewallError> {
    if iptables("-N", CHAINS[0], None, &[])?.is_none() {
        return Ok(false);
    }
    let mut changed = false;
    for chain in CHAINS {
        changed |= open_chain(chain, bridge, tun)?;
    }
    Ok(changed)
}

fn open_chain(chain: &str, bridge: &str, tun: &str) -> Result<bool, FirewallError> {
    let rules = rules(bridge, tun);
    let Some(listed) = list(chain)? else {
        return Ok(false);
    };
    if on_top(&listed, rules.len()) {
        return Ok(false);
    }
    for (i, rule) in rules.iter().enumerate() {
        iptables("-I", chain, Some(i + 1), rule)?;
    }
    let listed = list(chain)?.unwrap_or_default();
    let below: Vec<usize> = ours(&listed)
        .into_iter()
        .filter(|&n| n > rules.len())
        .collect();
    for n in below.into_iter().rev() {
        iptables("-D", chain, Some(n), &[])?;
    }
    Ok(true)
}

/// The chain's rules as `iptables -S` prints them (`-A FORWARD ...`), without the policy or
/// chain line; `None` without `iptables`.
fn list(chain: &str) -> Result<Option<Vec<String>>, FirewallError> {
    let out = match Command::new("iptables")
        .args(["-w", "5", "-S", chain])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FirewallError::Run(e)),
    };
    if !out.status.success() {
        return Err(FirewallError::Refused {
            args: format!("-S {chain}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .map(str::to_owned)
            .collect(),
    ))
}

/// The rule numbers (1-based) of the agent's rules in `listed`.
fn ours(listed: &[String]) -> Vec<usize> {
    listed
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(RULE_COMMENT))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Whether the agent's `count` rules, and no other copies, are the first of the chain.
fn on_top(listed: &[String], count: usize) -> bool {
    ours(listed) == (1..=count).collect::<Vec<_>>()
}

/// Removes the rules, every copy of them, from both chains (`DOCKER-USER` itself stays: it is
/// dockerd's as much as ours).
pub fn close_forwarding(bridge: &str, tun: &str) -> Result<(), FirewallError> {
    for chain in CHAINS {
        if list(chain).is_err() {
            continue; // no such chain
        }
        for rule in rules(bridge, tun) {
            while let Some(true) = iptables("-D", chain, None, &rule)? {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_must_be_the_first_rules_and_only_once() {
        let ours_line =
            |m: &str| format!("-A FORWARD {m} -m comment --comment \"{RULE_COMMENT}\" -j ACCEPT");
        let docker = "-A FORWARD -i docker_gwbridge ! -o docker_gwbridge -j ACCEPT".to_owned();
        let top: Vec<String> = (0..6).map(|i| ours_line(&format!("-i x{i}"))).collect();
        assert!(on_top(&top, 6));
        let mut below = vec![docker.clone()];
        below.extend(top.clone());
        assert!(!on_top(&below, 6), "dockerd's rule above ours");
        assert_eq!(ours(&below), [2, 3, 4, 5, 6, 7]);
        let mut twice = top.clone();
        twice.push(docker);
        twice.push(ours_line("-i x0"));
        assert!(!on_top(&twice, 6), "a second copy lower down");
        assert!(!on_top(&top[..5], 6));
    }

    #[test]
    fn bridge_and_tunnel_forward_to_each_other_and_nowhere_else() {
        let r = rules("wgmbr0", "wgm0");
        assert_eq!(
            r[0].join(" "),
            "-i wgmbr0 -o wgm0 -m comment --comment wgmesh: overlay forwarding -j ACCEPT"
        );
        assert_eq!(&r[1][..4], ["-i", "wgm0", "-o", "wgmbr0"]);
        // The accepts come before every drop; each drop closes one side of one interface.
        let verdicts: Vec<&str> = r.iter().map(|r| r.last().unwrap().as_str()).collect();
        assert_eq!(
            verdicts,
            ["ACCEPT", "ACCEPT", "DROP", "DROP", "DROP", "DROP"]
        );
        let drops: Vec<String> = r[2..].iter().map(|r| r[..2].join(" ")).collect();
        assert_eq!(drops, ["-o wgm0", "-i wgm0", "-o wgmbr0", "-i wgmbr0"]);
    }
}
