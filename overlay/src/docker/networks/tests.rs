//! The decisions, and the task against a scripted dockerd ([`super::super::fake`]).

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::docker::error::Site;
use crate::docker::fake::FakeDockerd;

fn net(driver: &str) -> Network {
    Network {
        id: "n1".into(),
        name: "appnet".into(),
        driver: driver.into(),
        ipam_driver: "default".into(),
    }
}

fn site() -> Site {
    Site {
        socket: PathBuf::from("/d.sock"),
        call: "POST /networks/create".into(),
    }
}

#[test]
fn missing_is_created_ours_is_ready_another_drivers_is_left_alone() {
    assert_eq!(step(None), Step::Create);
    assert_eq!(
        step(Some(&net("wgmesh"))),
        Step::Settle(NetworkState::Ready { id: "n1".into() })
    );
    assert_eq!(
        step(Some(&net("bridge"))),
        Step::Settle(NetworkState::WrongDriver {
            driver: "bridge".into()
        })
    );
}

#[test]
fn a_refused_or_slow_creation_fails_with_dockers_words_but_a_gone_dockerd_waits() {
    assert_eq!(
        created(Ok("id".into())).unwrap(),
        NetworkState::Ready { id: "id".into() }
    );
    let refused = site().refused(404, r#"plugin "wgmesh" not found"#.into());
    let NetworkState::Failed { error } = created(Err(refused)).unwrap() else {
        panic!("a refusal is Failed");
    };
    assert!(
        error.ends_with(r#"(HTTP 404): plugin "wgmesh" not found"#),
        "{error}"
    );
    let slow = site().timeout(Duration::from_secs(60));
    assert!(matches!(
        created(Err(slow)),
        Ok(NetworkState::Failed { .. })
    ));
    let gone = site().connect(std::io::Error::from(std::io::ErrorKind::NotFound));
    assert!(created(Err(gone)).is_err());
}

#[test]
fn reports_serialize_with_their_state_tag() {
    let reports = vec![
        NetworkReport {
            name: "a".into(),
            state: NetworkState::Ready { id: "n1".into() },
        },
        NetworkReport {
            name: "b".into(),
            state: NetworkState::Waiting,
        },
        NetworkReport {
            name: "c".into(),
            state: NetworkState::WrongDriver {
                driver: "bridge".into(),
            },
        },
    ];
    assert_eq!(
        serde_json::to_value(&reports).unwrap(),
        serde_json::json!([
            {"name": "a", "state": "ready", "id": "n1"},
            {"name": "b", "state": "waiting"},
            {"name": "c", "state": "wrong_driver", "driver": "bridge"},
        ])
    );
}

/// Waits until the published list satisfies `done`.
async fn until(
    rx: &mut watch::Receiver<Vec<NetworkReport>>,
    done: impl FnMut(&Vec<NetworkReport>) -> bool,
) -> Vec<NetworkReport> {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(done))
        .await
        .expect("the reports within 10 s")
        .expect("the task is running")
        .clone()
}

#[tokio::test]
async fn creates_the_missing_leaves_the_foreign_and_reports_refusals() {
    let fake = FakeDockerd::start();
    fake.route(
        "GET /networks/other",
        200,
        r#"{"Id":"o1","Name":"other","Driver":"bridge","IPAM":{"Driver":"default"}}"#,
    );
    fake.route(
        "POST /networks/create",
        201,
        r#"{"Id":"new1","Warning":""}"#,
    );
    let (tx, mut rx) = watch::channel(Vec::new());
    let names = vec!["appnet".to_string(), "other".to_string()];
    let task = spawn_ensure_networks(fake.engine(), names, tx);

    let reports = until(&mut rx, |r| {
        r.len() == 2 && r[0].state != NetworkState::Waiting
    })
    .await;
    assert_eq!(reports[0].state, NetworkState::Ready { id: "new1".into() });
    assert_eq!(
        reports[1].state,
        NetworkState::WrongDriver {
            driver: "bridge".into()
        }
    );
    let bodies = fake.bodies("POST /networks/create");
    assert_eq!(bodies.len(), 1, "only the missing network is created");
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["Name"], "appnet");
    assert_eq!(body["Driver"], "wgmesh");
    assert_eq!(body["IPAM"]["Driver"], "wgmesh");

    drop(rx);
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the task ends when its receivers are dropped")
        .unwrap();
}

#[tokio::test]
async fn a_refused_creation_is_failed_and_a_gone_dockerd_is_waiting() {
    let mut fake = FakeDockerd::start();
    fake.route(
        "POST /networks/create",
        404,
        r#"{"message":"plugin \"wgmesh\" not found"}"#,
    );
    let (tx, mut rx) = watch::channel(Vec::new());
    let _task = spawn_ensure_networks(fake.engine(), vec!["appnet".into()], tx);
    let reports = until(&mut rx, |r| {
        matches!(
            r[..],
            [NetworkReport {
                state: NetworkState::Failed { .. },
                ..
            }]
        )
    })
    .await;
    let NetworkState::Failed { error } = &reports[0].state else {
        unreachable!("matched above")
    };
    assert!(error.contains(r#"plugin "wgmesh" not found"#), "{error}");

    fake.stop();
    // The next check is up to RECHECK away.
    let reports = tokio::time::timeout(
        RECHECK + Duration::from_secs(5),
        rx.wait_for(|r| r[0].state == NetworkState::Waiting),
    )
    .await
    .expect("waiting after dockerd went away")
    .unwrap()
    .clone();
    assert_eq!(reports[0].name, "appnet");
}

#[tokio::test]
async fn no_names_publish_an_empty_list_and_end() {
    let fake = FakeDockerd::start();
    let (tx, rx) = watch::channel(vec![NetworkReport {
        name: "stale".into(),
        state: NetworkState::Waiting,
    }]);
    spawn_ensure_networks(fake.engine(), vec![], tx)
        .await
        .unwrap();
    assert!(rx.borrow().is_empty());
    assert!(fake.calls().is_empty());
}
