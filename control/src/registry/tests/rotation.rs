//! Key rotations: the queue, one at a time, both deadlines, the interval and abandonment, the
//! host's reports in every phase, uniqueness of announced keys, netmaps, replay and snapshots.

use wgmesh_config::netmap::{KeyRotationOrder, Netmap};

use super::*;
use crate::compile;
use crate::registry::{
    KeyRefusal, KeyReport, KeyRotation, QueuedRotation, RotationPhase, RotationReason,
    RotationSettings, RotationTarget,
};

const GRACE: u64 = 60;

fn settings(interval: Option<u64>) -> RotationSettings {
    RotationSettings {
        interval,
        grace: GRACE,
    }
}

/// A registry with hosts a (key 1), b (key 2) and c (key 3), joined at 10; every mutation
/// applied is kept in `log`, as a store would.
struct Cluster {
    r: Registry,
    log: Vec<Mutation>,
}

impl Cluster {
    fn new() -> Self {
        let mut r = registry();
        let mut log = Vec::new();
        for (n, k) in [("a", 1), ("b", 2), ("c", 3)] {
            log.push(join(&mut r, n, k).unwrap());
        }
        Self { r, log }
    }

    fn apply(&mut self, m: Mutation) -> Mutation {
        self.r.apply(&m).unwrap();
        self.log.push(m.clone());
        m
    }

    fn queue(&mut self, now: u64, which: RotationTarget<'_>) -> Option<Mutation> {
        let m = self
            .r
            .plan_rotations(now, which, RotationReason::Admin)
            .unwrap()?;
        Some(self.apply(m))
    }

    /// The scheduler's step at `now`, applied.
    fn step(&mut self, now: u64, interval: Option<u64>) -> Option<Mutation> {
        let m = self.r.next_rotation_step(now, &settings(interval))?;
        Some(self.apply(m))
    }

    fn plan_report(
        &self,
        host: &str,
        now: u64,
        (epoch, k, moved): (u64, u8, bool),
    ) -> Result<Option<Mutation>, RegistryError> {
        let report = KeyReport {
            epoch,
            public_key: key(k),
            moved,
        };
        let id = self.id(host);
        self.r.plan_key_report(id, now, report, &settings(None))
    }

    /// `host`'s report, planned and applied.
    fn report(&mut self, host: &str, now: u64, report: (u64, u8, bool)) -> Option<Mutation> {
        let m = self.plan_report(host, now, report).unwrap()?;
        Some(self.apply(m))
    }

    fn id(&self, host: &str) -> HostId {
        self.r.host_by_name(host).unwrap().id
    }

    fn host(&self, name: &str) -> &Host {
        self.r.host_by_name(name).unwrap()
    }

    fn phase(&self, name: &str) -> Option<RotationPhase> {
        self.host(name).rotation.as_ref().map(|r| r.phase)
    }

    fn netmap(&self, name: &str) -> Netmap {
        let map = compile::netmap(&self.r, None, self.id(name)).unwrap();
        map.check().unwrap();
        map
    }

    /// The keys `of`'s entry has in `viewer`'s netmap, and its epoch there.
    fn seen(&self, viewer: &str, of: &str) -> (Vec<PublicKey>, u64) {
        let map = self.netmap(viewer);
        let p = map.peers.iter().find(|p| p.name == of).unwrap();
        (p.public_keys.clone(), p.key_epoch)
    }

    /// Runs a whole rotation of the running host `name` to `new` at `now`.
    fn rotate_running(&mut self, name: &str, now: u64, new: u8) {
        let epoch = self.host(name).rotation.as_ref().unwrap().epoch;
        self.report(name, now, (epoch, new, false)).unwrap();
        self.report(name, now, (epoch, new, true)).unwrap();
    }
}

fn requested(at: u64) -> Option<RotationPhase> {
    Some(RotationPhase::Requested {
        at,
        deadline: at + GRACE,
    })
}

#[test]
fn an_admin_queues_hosts_not_rotating_and_an_unknown_host_is_refused() {
    let mut c = Cluster::new();
    let netmaps = c.r.netmap_revision();
    let m = c.queue(100, RotationTarget::One("a")).unwrap();
    assert_eq!(
        m,
        Mutation::RotationsQueued {
            reason: RotationReason::Admin,
            at: 100,
            rotations: vec![QueuedRotation {
                host: HostId(0),
                epoch: 1
            }],
        }
    );
    assert_eq!(c.phase("a"), Some(RotationPhase::Queued));
    assert_eq!(
        c.r.netmap_revision(),
        netmaps,
        "a queued rotation is in no netmap"
    );
    assert_eq!(c.netmap("a").host.rotation, None);
    // Queued already: nothing to queue; --all queues the others.
    assert_eq!(c.queue(101, RotationTarget::One("a")), None);
    let Some(Mutation::RotationsQueued { rotations, .. }) = c.queue(101, RotationTarget::All)
    else {
        panic!("b and c are queued");
    };
    let hosts: Vec<HostId> = rotations.iter().map(|q| q.host).collect();
    assert_eq!(hosts, [HostId(1), HostId(2)]);
    assert_eq!(c.queue(102, RotationTarget::All), None);
    assert_eq!(
        c.r.plan_rotations(1, RotationTarget::One("nope"), RotationReason::Admin),
        Err(RegistryError::NoSuchHost("nope".into()))
    );
    // A queued host cannot be queued twice by a mutation either.
    assert!(matches!(
        c.r.check(&m),
        Err(RegistryError::RotationOutOfOrder { .. })
    ));
}

#[test]
fn one_rotation_runs_at_a_time_and_the_oldest_queued_starts_first() {
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::One("c"));
    c.queue(101, RotationTarget::All);
    let m = c.step(102, None).unwrap();
    assert!(
        matches!(
            m,
            Mutation::RotationRequested {
                host: HostId(2),
                epoch: 1,
                at: 102,
                deadline: 162
            }
        ),
        "{m:?}"
    );
    assert_eq!(c.phase("c"), requested(102));
    // While c's runs, nothing else starts, whatever the time within its deadline.
    assert_eq!(c.step(103, None), None);
    assert_eq!(c.step(161, None), None);
    assert_eq!(c.r.running_rotation().unwrap().name.as_str(), "c");
    // A second running rotation is refused as a mutation too.
    let a_too = Mutation::RotationRequested {
        host: HostId(0),
        epoch: 1,
        at: 103,
        deadline: 163,
    };
    assert_eq!(
        c.r.check(&a_too),
        Err(RegistryError::RotationBusy {
            host: name("a"),
            running: name("c")
        })
    );
    c.rotate_running("c", 120, 30);
    // a and b were queued together: by host id.
    let order: Vec<HostId> = (0..2)
        .map(|i| {
            let m = c.step(130 + i, None).unwrap();
            let Mutation::RotationRequested { host, .. } = m else {
                panic!("{m:?}");
            };
            let n = c.r.host(host).unwrap().name.to_string();
            c.rotate_running(&n, 130 + i, 40 + i as u8);
            host
        })
        .collect();
    assert_eq!(order, [HostId(0), HostId(1)]);
    assert_eq!(c.step(200, None), None, "nothing left");
    for (n, k) in [("a", 40), ("b", 41), ("c", 30)] {
        assert_eq!((c.host(n).public_key, c.host(n).key_epoch), (key(k), 1));
    }
}

#[test]
fn a_request_past_its_deadline_is_abandoned_and_the_host_keeps_its_key() {
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::One("a"));
    c.step(100, None).unwrap();
    assert_eq!(
        c.netmap("a").host.rotation,
        Some(KeyRotationOrder {
            epoch: 1,
            new_key: None
        })
    );
    assert_eq!(c.step(159, None), None, "before the deadline");
    let netmaps = c.r.netmap_revision();
    let m = c.step(160, None).unwrap();
    assert_eq!(
        m,
        Mutation::RotationAbandoned {
            host: HostId(0),
            epoch: 1,
            at: 160
        }
    );
    let a = c.host("a");
    assert_eq!((a.public_key, a.key_epoch, a.key_since), (key(1), 0, 10));
    assert_eq!(
        (a.rotation.clone(), a.rotation_abandoned_at),
        (None, Some(160))
    );
    // The order is gone and the key is the old one: the agent rolls back.
    let map = c.netmap("a");
    assert_eq!((map.host.rotation, map.host.public_key), (None, key(1)));
    assert!(c.r.netmap_revision() > netmaps, "a's netmap changed");
    assert_eq!(c.seen("b", "a"), (vec![key(1)], 0));
    // A report that comes too late is out of order.
    let err = c.plan_report("a", 161, (1, 11, false)).unwrap_err();
    assert_eq!(
        err,
        RegistryError::RotationOutOfOrder {
            host: name("a"),
            epoch: 1,
            running: None,
            key_epoch: 0
        }
    );
    assert!(
        err.to_string()
            .contains("no rotation of its key is running"),
        "{err}"
    );
}

#[test]
fn an_announced_key_past_its_deadline_is_registered_anyway() {
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::One("a"));
    c.step(100, None).unwrap();
    let m = c.report("a", 110, (1, 11, false)).unwrap();
    assert_eq!(
        m,
        Mutation::KeyAnnounced {
            host: HostId(0),
            epoch: 1,
            new_key: key(11),
            at: 110,
            deadline: 170
        }
    );
    assert_eq!(
        c.step(169, None),
        None,
        "the announced key's own deadline counts"
    );
    let m = c.step(170, None).unwrap();
    assert_eq!(
        m,
        Mutation::RotationCompleted {
            host: HostId(0),
            epoch: 1,
            new_key: key(11),
            at: 170,
            peers_moved: false
        }
    );
    let a = c.host("a");
    assert_eq!((a.public_key, a.key_epoch, a.key_since), (key(11), 1, 170));
    assert_eq!(a.rotation, None);
    assert_eq!(c.seen("b", "a"), (vec![key(11)], 1), "the old key is gone");
    let map = c.netmap("a");
    assert_eq!((map.host.public_key, map.host.key_epoch), (key(11), 1));
    assert_eq!(map.host.rotation, None);
}

#[test]
fn reports_in_every_phase() {
    let mut c = Cluster::new();
    // No rotation: out of order, unless it is the registered key at its epoch (a retry).
    assert!(matches!(
        c.plan_report("a", 50, (1, 11, false)),
        Err(RegistryError::RotationOutOfOrder { running: None, .. })
    ));
    assert_eq!(c.plan_report("a", 50, (0, 1, true)), Ok(None));
    // Queued: not running yet.
    c.queue(100, RotationTarget::One("a"));
    assert!(matches!(
        c.plan_report("a", 100, (1, 11, false)),
        Err(RegistryError::RotationOutOfOrder { running: None, .. })
    ));
    c.step(100, None).unwrap();
    // Requested: the epoch must be the rotation's, the key new in the whole registry.
    assert_eq!(
        c.plan_report("a", 101, (2, 11, false)),
        Err(RegistryError::RotationOutOfOrder {
            host: name("a"),
            epoch: 2,
            running: Some(1),
            key_epoch: 0
        })
    );
    assert!(matches!(
        c.plan_report("a", 101, (1, 0, false)),
        Err(RegistryError::LowOrderKey { .. })
    ));
    let err = c.plan_report("a", 101, (1, 1, false)).unwrap_err();
    assert_eq!(
        err,
        RegistryError::KeyReportRefused {
            host: name("a"),
            key: key(1),
            reason: KeyRefusal::Unchanged
        }
    );
    assert!(
        err.to_string().contains("a rotation needs a new one"),
        "{err}"
    );
    assert!(matches!(
        c.plan_report("a", 101, (1, 2, false)),
        Err(RegistryError::KeyTaken {
            held_by: HostId(1),
            ..
        })
    ));
    let before = c.r.clone();
    // `moved` means nothing before the peers have the key: it is announced.
    let m = c.report("a", 102, (1, 11, true)).unwrap();
    assert!(matches!(m, Mutation::KeyAnnounced { .. }), "{m:?}");
    assert_ne!(c.r, before);
    // Announced: the same key without `moved` changes nothing; another key is refused.
    assert_eq!(c.plan_report("a", 103, (1, 11, false)), Ok(None));
    let err = c.plan_report("a", 103, (1, 12, false)).unwrap_err();
    assert_eq!(
        err,
        RegistryError::KeyReportRefused {
            host: name("a"),
            key: key(12),
            reason: KeyRefusal::AnotherAnnounced { announced: key(11) }
        }
    );
    assert!(matches!(
        c.plan_report("a", 103, (0, 11, true)),
        Err(RegistryError::RotationOutOfOrder {
            running: Some(1),
            ..
        })
    ));
    // Another host reporting now is out of order (only a's rotation runs).
    assert!(matches!(
        c.plan_report("b", 103, (1, 21, false)),
        Err(RegistryError::RotationOutOfOrder { running: None, .. })
    ));
    // The same key with `moved`: completed.
    let m = c.report("a", 104, (1, 11, true)).unwrap();
    assert!(
        matches!(
            m,
            Mutation::RotationCompleted {
                peers_moved: true,
                at: 104,
                ..
            }
        ),
        "{m:?}"
    );
    assert_eq!(c.host("a").key_since, 104);
    // Its retry (the reply was lost) changes nothing; the old epoch is out of order.
    assert_eq!(c.plan_report("a", 105, (1, 11, true)), Ok(None));
    assert!(matches!(
        c.plan_report("a", 105, (0, 1, false)),
        Err(RegistryError::RotationOutOfOrder { .. })
    ));
}

#[test]
fn announced_keys_are_taken_for_joins_and_reports() {
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::One("a"));
    c.step(100, None).unwrap();
    c.report("a", 101, (1, 11, false)).unwrap();
    // Nobody may join with a's announced key while it is announced.
    let err = join(&mut c.r, "d", 11).unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::KeyTaken {
                held_by: HostId(0),
                ..
            }
        ),
        "{err:?}"
    );
    // A mutation announcing another host's key, or one announced, is refused.
    let mut other = c.r.clone();
    let b_announces = |k: u8| Mutation::KeyAnnounced {
        host: HostId(1),
        epoch: 1,
        new_key: key(k),
        at: 102,
        deadline: 162,
    };
    other.rotate_b_for_test();
    assert!(matches!(
        other.check(&b_announces(11)),
        Err(RegistryError::KeyTaken {
            held_by: HostId(0),
            ..
        })
    ));
    assert!(matches!(
        other.check(&b_announces(3)),
        Err(RegistryError::KeyTaken {
            held_by: HostId(2),
            ..
        })
    ));
    // Completing with a key other than the announced one is refused.
    let wrong = Mutation::RotationCompleted {
        host: HostId(0),
        epoch: 1,
        new_key: key(12),
        at: 103,
        peers_moved: true,
    };
    assert!(matches!(
        c.r.check(&wrong),
        Err(RegistryError::KeyReportRefused { .. })
    ));
}

impl Registry {
    /// Test only: makes b's rotation requested beside a's (which the registry never does), to
    /// check what a second announcement would be refused for.
    fn rotate_b_for_test(&mut self) {
        let b = self.hosts.get_mut(&HostId(1)).unwrap();
        b.rotation = Some(KeyRotation {
            epoch: 1,
            reason: RotationReason::Admin,
            queued_at: 100,
            phase: RotationPhase::Requested {
                at: 100,
                deadline: 160,
            },
        });
    }
}

#[test]
fn netmaps_carry_the_order_and_peers_list_the_new_key_first() {
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::One("a"));
    let rev = c.r.netmap_revision();
    c.step(100, None).unwrap();
    assert!(c.r.netmap_revision() > rev, "requested: a's netmap changes");
    assert_eq!(c.seen("b", "a"), (vec![key(1)], 0), "peers see nothing yet");
    let rev = c.r.netmap_revision();
    c.report("a", 101, (1, 11, false)).unwrap();
    assert!(
        c.r.netmap_revision() > rev,
        "announced: every peer's changes"
    );
    let a = c.netmap("a").host;
    assert_eq!((a.public_key, a.key_epoch), (key(1), 0));
    assert_eq!(
        a.rotation,
        Some(KeyRotationOrder {
            epoch: 1,
            new_key: Some(key(11))
        })
    );
    for viewer in ["b", "c"] {
        assert_eq!(c.seen(viewer, "a"), (vec![key(11), key(1)], 1), "{viewer}");
    }
    // Other hosts' entries are as they were.
    assert_eq!(c.seen("a", "b"), (vec![key(2)], 0));
    // The change log names a for its peers' deltas.
    let m = c.plan_report("a", 102, (1, 11, true)).unwrap().unwrap();
    assert_eq!(
        crate::changelog::touched(&c.r, &m),
        crate::changelog::Touched::Changes(vec![crate::changelog::Change::Host("a".into())])
    );
    c.apply(m);
    assert_eq!(c.seen("b", "a"), (vec![key(11)], 1));
}

#[test]
fn the_interval_queues_old_keys_and_waits_an_interval_after_an_abandonment() {
    const INTERVAL: u64 = 1000;
    let mut c = Cluster::new();
    let every = Some(INTERVAL);
    // Joined at 10: due at 1010.
    assert_eq!(c.step(1009, every), None);
    let m = c.step(1010, every).unwrap();
    let Mutation::RotationsQueued {
        reason: RotationReason::Interval,
        rotations,
        ..
    } = m
    else {
        panic!("{m:?}");
    };
    assert_eq!(rotations.len(), 3);
    assert!(matches!(
        c.step(1010, every),
        Some(Mutation::RotationRequested {
            host: HostId(0),
            ..
        })
    ));
    // a never reports: abandoned at 1070; b starts at once and completes.
    assert!(matches!(
        c.step(1070, every),
        Some(Mutation::RotationAbandoned { .. })
    ));
    assert!(matches!(
        c.step(1070, every),
        Some(Mutation::RotationRequested {
            host: HostId(1),
            ..
        })
    ));
    c.rotate_running("b", 1080, 21);
    c.step(1080, every).unwrap();
    c.rotate_running("c", 1090, 31);
    assert_eq!(c.step(1090, every), None);
    // a's key is old, but it was abandoned at 1070: not before 2070 (it does not loop).
    assert_eq!(c.step(2069, every), None);
    let Some(Mutation::RotationsQueued { rotations, .. }) = c.step(2070, every) else {
        panic!("a is due again");
    };
    assert_eq!(
        rotations,
        [QueuedRotation {
            host: HostId(0),
            epoch: 1
        }]
    );
    c.step(2070, every).unwrap();
    c.rotate_running("a", 2075, 12);
    assert_eq!(
        c.host("a").rotation_abandoned_at,
        None,
        "forgotten once rotated"
    );
    // b's new key dates from 1080: due at 2080, c's at 2090.
    assert_eq!(c.step(2079, every), None);
    assert!(matches!(
        c.step(2080, every),
        Some(Mutation::RotationsQueued { .. })
    ));
    assert!(matches!(
        c.step(2080, every),
        Some(Mutation::RotationRequested {
            host: HostId(1),
            epoch: 2,
            ..
        })
    ));
    // An admin rotation of a host is not held back by the interval.
    assert!(c.queue(2081, RotationTarget::One("c")).is_some());
}

#[test]
fn a_restart_replays_the_schedule_and_neither_skips_nor_repeats_a_step() {
    let every = Some(1000);
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::One("c"));
    c.step(100, every).unwrap();
    c.report("c", 110, (1, 31, false)).unwrap();
    // "Restart": replay the log into an empty registry, and load a snapshot.
    let mut replayed = Registry::default();
    replayed
        .apply(&Mutation::Initialized {
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
            host_prefix: 24,
        })
        .unwrap();
    replayed
        .apply(&replayed.plan_token(SecretHash::of(b"t"), 0, 1000, true, Labels::new()))
        .unwrap();
    for m in &c.log {
        replayed.apply(m).unwrap();
    }
    assert_eq!(replayed, c.r);
    let snapshot: Registry = serde_json::from_str(&serde_json::to_string(&c.r).unwrap()).unwrap();
    assert_eq!(snapshot, c.r);
    for r in [&replayed, &snapshot] {
        // The announced key's deadline (170) is kept: nothing before it, completion at it.
        assert_eq!(r.next_rotation_step(169, &settings(every)), None);
        assert!(matches!(
            r.next_rotation_step(170, &settings(every)),
            Some(Mutation::RotationCompleted {
                host: HostId(2),
                ..
            })
        ));
    }
    c.step(170, every).unwrap();
    // After the completion a restart does not rotate c again before its interval.
    let snapshot: Registry = serde_json::from_str(&serde_json::to_string(&c.r).unwrap()).unwrap();
    assert_eq!(snapshot.host_by_name("c").unwrap().key_since, 170);
    let due = snapshot.next_rotation_step(1169, &settings(every));
    let Some(Mutation::RotationsQueued { rotations, .. }) = due else {
        panic!("{due:?}");
    };
    assert_eq!(
        rotations.len(),
        2,
        "a and b, joined at 10, not c: {rotations:?}"
    );
}

#[test]
fn snapshots_keep_rotations_and_refuse_broken_ones() {
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::All);
    c.step(100, None).unwrap();
    c.report("a", 101, (1, 11, false)).unwrap();
    let json = serde_json::to_string(&c.r).unwrap();
    assert!(json.contains(r#""phase":{"state":"announced""#), "{json}");
    assert!(json.contains(r#""phase":{"state":"queued"}"#), "{json}");
    // a's announced key given to c as its registered key: refused.
    assert_snapshot_round_trips(
        &c.r,
        (&key(3).to_base64(), &key(11).to_base64()),
        "already registered",
    );
    // A second running rotation: refused.
    let two = json.replacen(
        r#"{"state":"queued"}"#,
        r#"{"state":"requested","at":100,"deadline":160}"#,
        1,
    );
    let err = serde_json::from_str::<Registry>(&two).unwrap_err();
    assert!(err.to_string().contains("cannot start while"), "{err}");
    // A rotation not for the key's next epoch: refused.
    let skipped = json.replacen(r#""epoch":1"#, r#""epoch":5"#, 1);
    let err = serde_json::from_str::<Registry>(&skipped).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
}

#[test]
fn a_store_written_before_rotations_loads_with_the_join_as_the_keys_date() {
    let mut r = registry();
    join(&mut r, "a", 1).unwrap();
    let mut snap = serde_json::to_value(&r).unwrap();
    let host = snap["hosts"][0].as_object_mut().unwrap();
    for field in ["key_epoch", "key_since"] {
        assert!(host.remove(field).is_some(), "{field}");
    }
    let old: Registry = serde_json::from_value(snap).unwrap();
    let a = old.host_by_name("a").unwrap();
    assert_eq!(
        (a.key_epoch, a.key_since, a.rotation.clone()),
        (0, 10, None)
    );
    assert_eq!(old, r);
}

#[test]
fn removing_the_rotating_host_lets_the_next_one_start() {
    let mut c = Cluster::new();
    c.queue(100, RotationTarget::All);
    c.step(100, None).unwrap();
    let m = c.r.plan_remove("a").unwrap();
    c.apply(m);
    assert!(matches!(
        c.step(101, None),
        Some(Mutation::RotationRequested {
            host: HostId(1),
            ..
        })
    ));
}

#[test]
fn rotation_mutations_are_tagged_json() {
    let m = Mutation::RotationAbandoned {
        host: HostId(2),
        epoch: 4,
        at: 9,
    };
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"type":"rotation_abandoned","host":2,"epoch":4,"at":9}"#
    );
    let queued = r#"{"type":"rotations_queued","reason":"interval","at":5,"rotations":[{"host":1,"epoch":2}]}"#;
    let m: Mutation = serde_json::from_str(queued).unwrap();
    assert_eq!(serde_json::to_string(&m).unwrap(), queued);
}
