use std::os::unix::fs::PermissionsExt;

use wgmesh_config::netmap::{FilterRule, HostFilter};
use wgmesh_config::policy::Action;

use super::*;
use crate::peers::filter::Filter;

fn filter() -> Arc<Filter> {
    let host = HostFilter {
        default: Action::Deny,
        rules: vec![FilterRule {
            name: "no-ssh".into(),
            action: Action::Deny,
            from: vec![],
            to: vec![],
            ports: vec![],
        }],
    };
    Arc::new(Filter::new(&host, 1, None))
}

fn denial(direction: Direction, reason: DenialReason) -> Denial {
    Denial {
        direction,
        src: "10.42.2.3".parse().unwrap(),
        dst: "10.42.1.2".parse().unwrap(),
        proto: TCP,
        port: 22,
        reason,
        filter: filter(),
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_line_names_the_rule_or_reason_and_the_local_workload() {
    let names = WorkloadNames::default();
    names.set([("10.42.1.2".parse().unwrap(), "web".to_owned())]);
    let d = denial(Direction::Ingress, DenialReason::Policy(RuleRef::Rule(0)));
    let line = serde_json::to_value(Line::of(&d, 1_700_000_000, &names)).unwrap();
    assert_eq!(
        line,
        serde_json::json!({
            "time": 1_700_000_000u64, "direction": "ingress", "src": "10.42.2.3",
            "dst": "10.42.1.2", "dst_netns": "web", "proto": "tcp", "port": 22,
            "rule": "no-ssh", "reason": "denied"
        })
    );
    // Egress: the source is the local end; the destination is remote, never named.
    let d = Denial {
        src: "10.42.1.2".parse().unwrap(),
        dst: "10.42.2.3".parse().unwrap(),
        proto: 47,
        ..denial(Direction::Egress, DenialReason::Policy(RuleRef::Default))
    };
    let line = serde_json::to_value(Line::of(&d, 5, &names)).unwrap();
    assert_eq!(line["src_netns"], "web");
    assert!(line.get("dst_netns").is_none());
    assert_eq!(
        (&line["proto"], &line["reason"]),
        (&"47".into(), &"default".into())
    );
    assert!(line.get("rule").is_none());
    // A same-host flow (reported as egress) names both workloads.
    names.set([
        ("10.42.1.2".parse().unwrap(), "web".to_owned()),
        ("10.42.1.3".parse().unwrap(), "db".to_owned()),
    ]);
    let d = Denial {
        src: "10.42.1.2".parse().unwrap(),
        dst: "10.42.1.3".parse().unwrap(),
        ..denial(Direction::Egress, DenialReason::Policy(RuleRef::Default))
    };
    let line = serde_json::to_value(Line::of(&d, 5, &names)).unwrap();
    assert_eq!(
        (&line["src_netns"], &line["dst_netns"]),
        (&"web".into(), &"db".into())
    );
    let d = denial(Direction::Ingress, DenialReason::ConntrackFull);
    assert_eq!(
        serde_json::to_value(Line::of(&d, 5, &names)).unwrap()["reason"],
        "conntrack_full"
    );
}

#[test]
fn the_writer_keeps_to_its_rate_and_says_what_it_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (tap, _rx) = AuditTap::bounded(1);
    tap.lost.store(3, Ordering::Relaxed);
    let start = Instant::now();
    let file = File::create(&path).unwrap();
    let mut w = Writer::new(file, path.clone(), Arc::default(), &tap, MAX_BYTES);
    w.window = start;
    for _ in 0..150 {
        w.event(&denial(Direction::Ingress, DenialReason::Untracked));
    }
    w.roll(start + Duration::from_secs(1));
    w.roll(start + Duration::from_secs(3));
    let all = lines(&path);
    // Unless this machine took a second for the loop, the first 100 were written.
    let written = all.iter().filter(|l| l.get("reason").is_some()).count();
    let summaries: Vec<_> = all
        .iter()
        .filter(|l| l.get("suppressed").is_some())
        .collect();
    let suppressed: u64 = summaries
        .iter()
        .map(|l| l["suppressed"].as_u64().unwrap())
        .sum();
    assert_eq!(written as u64 + suppressed, 150);
    assert!(written >= 100);
    let lost_reported: u64 = summaries.iter().map(|l| l["lost"].as_u64().unwrap()).sum();
    assert_eq!(lost_reported, 3, "the queue's losses are reported once");
}

#[test]
fn the_log_is_private_and_gets_what_the_tap_offers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("audit.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (log, tap) = AuditLog::start(&path, Arc::new(WorkloadNames::default())).unwrap();
    tap.offer(denial(
        Direction::Ingress,
        DenialReason::Policy(RuleRef::Rule(0)),
    ));
    log.stop();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let all = lines(&path);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["rule"], "no-ssh");
    assert_eq!(tap.lost(), 0);
    // With the writer gone, offers are lost and counted, never blocking.
    tap.offer(denial(Direction::Ingress, DenialReason::Untracked));
    assert_eq!(tap.lost(), 1);
    let err = AuditLog::start(Path::new("/proc/no/such/audit.jsonl"), Arc::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("audit log /proc/no/such/audit.jsonl"),
        "{err}"
    );
}

#[test]
fn lines_that_cannot_be_written_are_counted_as_lost() {
    let (tap, _rx) = AuditTap::bounded(4);
    // /dev/full refuses every write with ENOSPC: a full disk.
    let file = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut w = Writer::new(file, "/dev/full".into(), Arc::default(), &tap, MAX_BYTES);
    let d = denial(Direction::Egress, DenialReason::Untracked);
    w.event(&d);
    w.event(&d);
    assert!(w.failing);
    assert_eq!(tap.lost(), 2, "both lines are counted");
}

#[test]
fn the_log_is_rotated_at_its_size_keeping_a_few_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (tap, _rx) = AuditTap::bounded(4);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let mut w = Writer::new(file, path.clone(), Arc::default(), &tap, 1000);
    let d = denial(Direction::Egress, DenialReason::Untracked);
    for _ in 0..100 {
        // Past the rate limit nothing is written: write the lines themselves.
        w.write(&Line::of(&d, 5, &WorkloadNames::default()));
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(size(&path) <= 1000, "the log is {} bytes", size(&path));
    for n in 1..=KEEP {
        let old = dir.path().join(format!("audit.jsonl.{n}"));
        assert!(size(&old) > 0 && size(&old) <= 1000, "{}", old.display());
        let mode = std::fs::metadata(&old).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", old.display());
    }
    assert!(!dir
        .path()
        .join(format!("audit.jsonl.{}", KEEP + 1))
        .exists());
    assert_eq!(tap.lost(), 0);
}
