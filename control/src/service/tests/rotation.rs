//! Key rotations through the service: who may queue and report, the scheduler's tick, the
//! replies, the audit lines of every step, refusals that change nothing, and a restart on a
//! file store in the middle of a rotation.

use wgmesh_client::api::{KeyReportBody, RotationInfo};
use wgmesh_config::netmap::{KeyRotationOrder, Netmap};

use super::*;
use crate::registry::RotationSettings;
use crate::store::{FileStore, MemStore};

const GRACE: u64 = 60;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn body(epoch: u64, k: u8, moved: bool) -> KeyReportBody {
    KeyReportBody {
        epoch,
        public_key: key(k),
        moved,
    }
}

/// host-a (key 1) and host-b (key 2) joined at 1001, rotations with a 60 s grace; their
/// callers.
fn two_hosts(store: Box<dyn Store + Send>) -> (Fixture, Caller, Caller) {
    let mut f = fixture_in(store, "10.42.0.0/16", 24);
    f.control = f.control.with_rotation(RotationSettings {
        interval: None,
        grace: GRACE,
    });
    let t = token(&mut f, 3600, true);
    let a = join(&mut f, &t, "host-a", 1).unwrap().credential;
    let b = join(&mut f, &t, "host-b", 2).unwrap().credential;
    let host_a = f.control.authenticate(Some(&a));
    let host_b = f.control.authenticate(Some(&b));
    (f, host_a, host_b)
}

/// The audit log's rotation lines as `(action, actor kind, host, epoch, result)`.
fn rotation_lines(f: &Fixture) -> Vec<(String, String, String, u64, String)> {
    std::fs::read_to_string(&f.audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["action"].as_str().unwrap().starts_with("key_"))
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["actor"]["kind"].as_str().unwrap().to_owned(),
                l["target"]["name"].as_str().unwrap_or("").to_owned(),
                l["target"]["epoch"].as_u64().unwrap_or(0),
                l["result"].to_string(),
            )
        })
        .collect()
}

fn line(
    action: &str,
    actor: &str,
    host: &str,
    epoch: u64,
) -> (String, String, String, u64, String) {
    (
        action.into(),
        actor.into(),
        host.into(),
        epoch,
        "\"ok\"".into(),
    )
}

#[test]
fn only_the_admin_queues_and_only_the_host_itself_reports_its_key() {
    let (mut f, host_a, host_b) = two_hosts(Box::new(MemStore::new()));
    let anon = f.control.authenticate(None);
    let admin = Caller::Admin;
    let revision = f.control.revision();
    let c = &mut f.control;
    assert_eq!(
        reason(c.rotate_node(&anon, "host-a", 2000, None)),
        ApiReason::Unauthenticated
    );
    assert_eq!(
        reason(c.rotate_all(&anon, 2000, None)),
        ApiReason::Unauthenticated
    );
    assert_eq!(
        reason(c.rotate_node(&host_a, "host-a", 2000, None)),
        ApiReason::Forbidden
    );
    assert_eq!(
        reason(c.rotate_all(&host_b, 2000, None)),
        ApiReason::Forbidden
    );
    assert_eq!(
        reason(c.rotate_node(&admin, "host-z", 2000, None)),
        ApiReason::NotFound
    );
    assert_eq!(c.revision(), revision, "nothing queued");
    c.rotate_node(&admin, "host-a", 2000, None).unwrap();
    assert_eq!(c.rotation_tick(2000), 1);
    // host-a's rotation is requested: only host-a may report for it.
    assert_eq!(
        reason(c.report_key(&anon, "host-a", body(1, 11, false), 2001, None)),
        ApiReason::Unauthenticated
    );
    let e = c
        .report_key(&admin, "host-a", body(1, 11, false), 2001, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::Forbidden);
    assert!(
        e.message.contains("the admin token cannot act as a host"),
        "{}",
        e.message
    );
    let e = c
        .report_key(&host_b, "host-a", body(1, 11, false), 2001, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::Forbidden);
    assert!(e.message.contains("not \"host-a\"'s"), "{}", e.message);
    let a = c.registry().host_by_name("host-a").unwrap();
    assert!(matches!(
        a.rotation.as_ref().map(|r| r.phase),
        Some(crate::registry::RotationPhase::Requested { .. })
    ));
    // The refusals are audited, naming the host and the epoch asked about.
    let refused: Vec<_> = rotation_lines(&f)
        .into_iter()
        .filter(|l| l.4 != "\"ok\"")
        .map(|l| (l.0, l.2, l.3, l.4))
        .collect();
    assert_eq!(refused.len(), 8, "{refused:?}");
    assert!(refused.contains(&(
        "key_announce".into(),
        "host-a".into(),
        1,
        "{\"refused\":\"forbidden\"}".into()
    )));
}

#[test]
fn a_rotation_runs_step_by_step_and_every_step_is_audited() {
    let (mut f, host_a, host_b) = two_hosts(Box::new(MemStore::new()));
    let admin = Caller::Admin;
    let queued = f.control.rotate_all(&admin, 2000, None).unwrap();
    assert_eq!(queued.queued, ["host-a", "host-b"]);
    assert!(queued.rotating.is_empty());
    let again = f.control.rotate_node(&admin, "host-a", 2000, None).unwrap();
    assert!(again.queued.is_empty());
    assert_eq!(again.rotating, ["host-a"]);
    // One rotation at a time: host-a's starts.
    assert_eq!(f.control.rotation_tick(2000), 1);
    assert_eq!(f.control.rotation_tick(2001), 0);
    let order = f
        .control
        .netmap(&host_a, "host-a", 2001, None)
        .unwrap()
        .host;
    assert_eq!(
        order.rotation,
        Some(KeyRotationOrder {
            epoch: 1,
            new_key: None
        })
    );
    let reply = f
        .control
        .report_key(&host_a, "host-a", body(1, 11, false), 2002, None)
        .unwrap();
    assert_eq!((reply.key_epoch, reply.public_key), (0, key(1)));
    assert_eq!(
        reply.rotation,
        Some(RotationInfo::Announced {
            epoch: 1,
            new_key: key(11),
            at: 2002,
            deadline: 2002 + GRACE
        })
    );
    assert_eq!(reply.revision, f.control.registry().netmap_revision());
    let seen = f.control.netmap(&host_b, "host-b", 2002, None).unwrap();
    assert_eq!(
        seen.peers[0].public_keys,
        [key(11), key(1)],
        "new key first"
    );
    // A repeat of the announcement changes nothing.
    let revision = f.control.revision();
    let repeat = f
        .control
        .report_key(&host_a, "host-a", body(1, 11, false), 2003, None)
        .unwrap();
    assert_eq!(repeat, reply);
    assert_eq!(f.control.revision(), revision);
    // The peers moved: completed, the old key gone from host-b's netmap.
    let done = f
        .control
        .report_key(&host_a, "host-a", body(1, 11, true), 2004, None)
        .unwrap();
    assert_eq!(
        (done.key_epoch, done.public_key, done.rotation),
        (1, key(11), None)
    );
    let seen = f.control.netmap(&host_b, "host-b", 2004, None).unwrap();
    assert_eq!(seen.peers[0].public_keys, [key(11)]);
    assert_eq!(seen.peers[0].key_epoch, 1);
    // host-b's starts next, and is abandoned at its deadline.
    assert_eq!(f.control.rotation_tick(2005), 1);
    assert_eq!(f.control.rotation_tick(2005 + GRACE - 1), 0);
    assert_eq!(f.control.rotation_tick(2005 + GRACE), 1);
    let nodes = f.control.list_nodes(&admin, 2100, None).unwrap();
    let b = nodes.iter().find(|n| n.name == "host-b").unwrap();
    assert_eq!(
        (b.key_epoch, b.rotation.clone(), b.rotation_abandoned_at),
        (0, None, Some(2005 + GRACE))
    );
    let a = nodes.iter().find(|n| n.name == "host-a").unwrap();
    assert_eq!((a.key_epoch, a.key_since, a.public_key), (1, 2004, key(11)));
    assert_eq!(
        rotation_lines(&f),
        [
            line("key_rotation_queue", "admin", "host-a", 1),
            line("key_rotation_queue", "admin", "host-b", 1),
            (
                "key_rotation_queue".into(),
                "admin".into(),
                "host-a".into(),
                0,
                "\"ok\"".into()
            ),
            line("key_rotation_request", "control_plane", "host-a", 1),
            line("key_announce", "host", "host-a", 1),
            line("key_retire", "host", "host-a", 1),
            line("key_rotation_request", "control_plane", "host-b", 1),
            line("key_rotation_abandon", "control_plane", "host-b", 1),
        ]
    );
    // The lines name the new key (public), never a credential.
    let text = std::fs::read_to_string(&f.audit).unwrap();
    assert!(text.contains(&key(11).to_base64()));
    assert!(!text.contains("WGMH1-"), "{text}");
}

#[test]
fn refused_reports_say_why_with_409_and_change_nothing() {
    let (mut f, host_a, _) = two_hosts(Box::new(MemStore::new()));
    let early = f
        .control
        .report_key(&host_a, "host-a", body(1, 11, false), 2000, None)
        .unwrap_err();
    assert_eq!(early.reason, ApiReason::RotationOutOfOrder);
    assert_eq!(early.reason.status(), 409);
    assert!(
        early.message.contains("no rotation of its key is running"),
        "{}",
        early.message
    );
    f.control
        .rotate_node(&Caller::Admin, "host-a", 2000, None)
        .unwrap();
    f.control.rotation_tick(2000);
    let revision = f.control.revision();
    for (report, why, needle) in [
        (
            body(2, 11, false),
            ApiReason::RotationOutOfOrder,
            "its rotation running is of epoch 1",
        ),
        (
            body(1, 1, false),
            ApiReason::KeyReportRefused,
            "it is the host's current key",
        ),
        (
            body(1, 2, false),
            ApiReason::KeyTaken,
            "already registered by host host-b",
        ),
    ] {
        let e = f
            .control
            .report_key(&host_a, "host-a", report, 2001, None)
            .unwrap_err();
        assert_eq!((e.reason, e.reason.status()), (why, 409), "{}", e.message);
        assert!(e.message.contains(needle), "{}", e.message);
    }
    f.control
        .report_key(&host_a, "host-a", body(1, 11, false), 2002, None)
        .unwrap();
    let e = f
        .control
        .report_key(&host_a, "host-a", body(1, 12, true), 2003, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::KeyReportRefused);
    assert!(
        e.message
            .contains("was announced for this rotation already"),
        "{}",
        e.message
    );
    assert_eq!(f.control.revision(), revision + 1, "only the announcement");
}

#[test]
fn a_restart_in_the_middle_of_a_rotation_finishes_it_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, host_a, _) = two_hosts(Box::new(FileStore::open(dir.path()).unwrap()));
    f.control.rotate_all(&Caller::Admin, 2000, None).unwrap();
    f.control.rotation_tick(2000);
    f.control
        .report_key(&host_a, "host-a", body(1, 11, false), 2010, None)
        .unwrap();
    let before = f.control.registry().clone();
    drop(f);
    // The control plane comes back from its store, with the same settings.
    let store = FileStore::open(dir.path()).unwrap();
    let mut registry = store.load().unwrap();
    // The store has everything but the last-seen times, which are kept in memory.
    registry.touch(HostId(0), 2010);
    assert_eq!(registry, before);
    let mut f = fixture_in(Box::new(MemStore::new()), "10.42.0.0/16", 24);
    let mut control = Control::new(
        registry,
        Box::new(store),
        AuditLog::open(&f.audit).unwrap(),
        f.admin.hash(),
        CA.to_vec(),
    )
    .with_rotation(RotationSettings {
        interval: None,
        grace: GRACE,
    });
    // Neither repeated (nothing before the deadline) nor skipped (completed at it), then
    // host-b's starts.
    assert_eq!(control.rotation_tick(2010 + GRACE - 1), 0);
    assert_eq!(control.rotation_tick(2010 + GRACE), 2);
    let a = control.registry().host_by_name("host-a").unwrap();
    assert_eq!((a.public_key, a.key_epoch), (key(11), 1));
    assert!(control
        .registry()
        .host_by_name("host-b")
        .unwrap()
        .is_rotating());
    f.control = control;
    let lines = rotation_lines(&f);
    assert_eq!(
        lines[lines.len() - 2..],
        [
            line("key_retire", "control_plane", "host-a", 1),
            line("key_rotation_request", "control_plane", "host-b", 1),
        ]
    );
    // The steps taken after the restart are in the store too.
    let after = f.control.registry().clone();
    drop(f);
    let mut reloaded = FileStore::open(dir.path()).unwrap().load().unwrap();
    reloaded.touch(HostId(0), 2010);
    assert_eq!(reloaded, after);
}

#[test]
fn deltas_carry_the_order_to_the_host_and_the_new_key_to_its_peers() {
    let (mut f, host_a, host_b) = two_hosts(Box::new(MemStore::new()));
    let held_a = f.control.netmap(&host_a, "host-a", 1999, None).unwrap();
    let held_b = f.control.netmap(&host_b, "host-b", 1999, None).unwrap();
    let delta = |f: &mut Fixture, caller: &Caller, name: &str, held: &Netmap| {
        let update = f
            .control
            .netmap_update(caller, name, (held.revision, held.epoch), 2100, None)
            .unwrap();
        let NetmapUpdate::Delta(d) = update else {
            panic!("a host a few changes behind gets a delta: {update:?}");
        };
        let next = held.apply_delta(&d).unwrap();
        assert_eq!(next, f.control.netmap(caller, name, 2100, None).unwrap());
        (d, next)
    };
    f.control
        .rotate_node(&Caller::Admin, "host-a", 2000, None)
        .unwrap();
    f.control.rotation_tick(2000);
    // host-a's delta holds its order; host-b's changes nothing of its peers.
    let (_, a) = delta(&mut f, &host_a, "host-a", &held_a);
    assert_eq!(a.host.rotation.map(|o| o.epoch), Some(1));
    let (d, _) = delta(&mut f, &host_b, "host-b", &held_b);
    assert!(d.upsert.is_empty() && d.remove.is_empty(), "{d:?}");
    f.control
        .report_key(&host_a, "host-a", body(1, 11, false), 2001, None)
        .unwrap();
    let (d, b) = delta(&mut f, &host_b, "host-b", &held_b);
    assert_eq!(d.upsert.len(), 1);
    assert_eq!(b.peers[0].public_keys, [key(11), key(1)]);
    let (_, a) = delta(&mut f, &host_a, "host-a", &held_a);
    assert_eq!(a.host.rotation.and_then(|o| o.new_key), Some(key(11)));
    f.control
        .report_key(&host_a, "host-a", body(1, 11, true), 2002, None)
        .unwrap();
    let (_, b) = delta(&mut f, &host_b, "host-b", &held_b);
    assert_eq!(
        (b.peers[0].public_keys.clone(), b.peers[0].key_epoch),
        (vec![key(11)], 1)
    );
    let (_, a) = delta(&mut f, &host_a, "host-a", &held_a);
    assert_eq!(
        (a.host.public_key, a.host.key_epoch, a.host.rotation),
        (key(11), 1, None)
    );
}
