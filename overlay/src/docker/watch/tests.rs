//! The watch against a scripted dockerd ([`super::super::fake`]), and its pure parts.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::docker::fake::FakeDockerd;

const C1: &str =
    r#"{"Id":"c1","Names":["/web"],"Labels":{"role":"backend"},"NetworkSettings":{"Networks":{}}}"#;
const C2: &str = r#"{"Id":"c2","Names":["/db"],"Labels":null,"NetworkSettings":{"Networks":{}}}"#;
const START: &str = r#"{"Type":"container","Action":"start","Actor":{"ID":"c2"}}"#;
const EXEC: &str = r#"{"Type":"container","Action":"exec_start: sh","Actor":{"ID":"c2"}}"#;

async fn next(rx: &mut mpsc::Receiver<EngineEvent>) -> EngineEvent {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an engine event within 10 s")
        .expect("the watch is running")
}

fn names(event: &EngineEvent) -> Vec<String> {
    match event {
        EngineEvent::Snapshot(list) => list.iter().map(|c| c.name.clone()).collect(),
        EngineEvent::Unreachable(e) => panic!("expected a snapshot, got unreachable: {e}"),
    }
}

fn listings(fake: &FakeDockerd) -> usize {
    let calls = fake.calls();
    calls
        .iter()
        .filter(|c| *c == "GET /containers/json")
        .count()
}

#[tokio::test]
async fn opens_the_stream_first_then_lists_after_each_burst() {
    let fake = FakeDockerd::start();
    fake.route("GET /containers/json", 200, &format!("[{C1}]"));
    let (tx, mut rx) = mpsc::channel(8);
    let watch = spawn_watch(fake.engine(), tx);

    assert_eq!(names(&next(&mut rx).await), ["web"]);
    assert_eq!(fake.calls(), ["GET /events", "GET /containers/json"]);

    // A burst of three events: one listing, sorted by id.
    fake.route("GET /containers/json", 200, &format!("[{C2},{C1}]"));
    for _ in 0..3 {
        fake.event(START);
    }
    let snapshot = next(&mut rx).await;
    assert_eq!(names(&snapshot), ["web", "db"]);
    if let EngineEvent::Snapshot(list) = &snapshot {
        assert_eq!(
            list[0].labels.get("role").map(String::as_str),
            Some("backend")
        );
        assert!(list[1].labels.is_empty());
    }
    sleep(DEBOUNCE * 3).await;
    assert_eq!(listings(&fake), 2);

    // Exec events change nothing: no listing.
    fake.event(EXEC);
    sleep(DEBOUNCE * 3).await;
    assert_eq!(listings(&fake), 2);

    // A relevant event with nothing changed: listed, but no snapshot sent.
    fake.event(START);
    let deadline = Instant::now() + Duration::from_secs(5);
    while listings(&fake) < 3 && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listings(&fake), 3);
    sleep(DEBOUNCE).await;
    assert!(rx.try_recv().is_err(), "an unchanged snapshot was sent");

    drop(rx);
    timeout(Duration::from_secs(5), watch)
        .await
        .expect("the watch ends when its receiver is dropped")
        .unwrap();
}

#[tokio::test]
async fn an_outage_is_reported_once_and_ends_with_a_snapshot() {
    let mut fake = FakeDockerd::start();
    fake.route("GET /containers/json", 200, &format!("[{C1}]"));
    let (tx, mut rx) = mpsc::channel(8);
    let _watch = spawn_watch(fake.engine(), tx);
    assert_eq!(names(&next(&mut rx).await), ["web"]);

    fake.stop();
    match next(&mut rx).await {
        EngineEvent::Unreachable(e) => assert!(e.contains("GET /events"), "{e}"),
        other => panic!("expected unreachable, got {other:?}"),
    }
    // Retries at 0.5 s, 1 s and 2 s fail too, but are not reported again.
    sleep(Duration::from_millis(3700)).await;
    assert!(rx.try_recv().is_err(), "an outage was reported twice");

    fake.listen();
    assert_eq!(
        names(&next(&mut rx).await),
        ["web"],
        "the first snapshot is always sent"
    );

    // A second outage is reported again.
    fake.stop();
    assert!(matches!(next(&mut rx).await, EngineEvent::Unreachable(_)));
}

#[tokio::test]
async fn a_refused_listing_counts_as_an_outage_of_its_own() {
    let fake = FakeDockerd::start();
    fake.route("GET /containers/json", 500, r#"{"message":"boom"}"#);
    let (tx, mut rx) = mpsc::channel(8);
    let _watch = spawn_watch(fake.engine(), tx);
    match next(&mut rx).await {
        EngineEvent::Unreachable(e) => assert!(e.contains("boom"), "{e}"),
        other => panic!("expected unreachable, got {other:?}"),
    }
    fake.route("GET /containers/json", 200, "[]");
    assert_eq!(next(&mut rx).await, EngineEvent::Snapshot(vec![]));
}

#[test]
fn an_outage_is_reported_at_its_first_failure_only() {
    let mut outage = Outage::default();
    assert!(!outage.recover());
    assert!(outage.fail());
    assert!(!outage.fail());
    assert!(outage.recover());
    assert!(outage.fail());
}

#[test]
fn a_burst_is_listed_once_from_its_first_event() {
    let t0 = Instant::now();
    let mut d = Debounce::default();
    d.on_event(t0, false);
    assert_eq!(d.due(), None);
    d.on_event(t0, true);
    d.on_event(t0 + Duration::from_millis(100), true);
    assert_eq!(d.due(), Some(t0 + DEBOUNCE));
    d.listed();
    assert_eq!(d.due(), None);
}

#[tokio::test]
async fn an_image_s_labels_are_not_the_container_s() {
    let fake = FakeDockerd::start();
    let c = r#"{"Id":"c3","Names":["/app"],"ImageID":"img1","Labels":{"role":"frontend","app":"x","tier":"web"},"NetworkSettings":{"Networks":{}}}"#;
    fake.route("GET /containers/json", 200, &format!("[{c}]"));
    // The image says role=frontend and tier=db: the first is the image's, the second was
    // given (--label tier=web) over it.
    fake.route(
        "GET /images/img1/json",
        200,
        r#"{"Id":"img1","Config":{"Labels":{"role":"frontend","tier":"db"}}}"#,
    );
    let (tx, mut rx) = mpsc::channel(8);
    let watch = spawn_watch(fake.engine(), tx);
    let EngineEvent::Snapshot(list) = next(&mut rx).await else {
        panic!("expected a snapshot");
    };
    let labels: Vec<(&str, &str)> = list[0]
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, [("app", "x"), ("tier", "web")]);
    watch.abort();
}
