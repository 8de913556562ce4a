use super::*;

fn push(app: &str, first_ms: i64) -> PendingPush {
    PendingPush {
        user: "alice@localhost".into(),
        reg_key: format!("{app}<n"),
        app: app.into(),
        count: 1,
        sender: None,
        body: None,
        at_ms: first_ms,
        first_ms,
    }
}

fn sent(r: Option<Ready>) -> u64 {
    match r {
        Some(Ready::Send(id, _)) => id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dead_app_server_fills_only_its_own_slots() {
    let mut f = Flights::new(4, 2, Duration::from_secs(300));
    for id in 0..5 {
        f.insert(id, push("dead.localhost", 0), false);
    }
    f.insert(10, push("live.localhost", 0), false);
    f.insert(11, push("live.localhost", 0), false);
    let first: Vec<u64> = (0..4).map(|_| sent(f.next(1, 1))).collect();
    // Two to the dead server (its cap), then the live server's, although queued later.
    assert_eq!(first, [0, 1, 10, 11]);
    assert_eq!(f.next(1, 1), None, "the global cap is reached");
    assert_eq!(
        f.finished(10, Next::Done, 2, Some(1)).map(|p| p.app),
        Some("live.localhost".into())
    );
    // A slot is free, but the dead server is at its cap: nothing for it.
    assert_eq!(f.next(2, 1), None);
    f.insert(12, push("live.localhost", 0), false);
    assert_eq!(sent(f.next(2, 1)), 12);
    assert_eq!(f.in_flight(), 4);
    assert_eq!(f.len(), 7);
}

#[test]
fn retries_wait_for_their_time_and_lost_ones_for_the_next_login() {
    let mut f = Flights::new(10, 5, Duration::from_secs(300));
    f.insert(1, push("a", 0), false);
    f.insert(2, push("a", 0), false);
    f.insert(3, push("a", 0), false);
    for _ in 0..3 {
        sent(f.next(0, 1));
    }
    assert_eq!(f.finished(1, Next::Backoff, 1000, Some(1)), None);
    let at = f.next_retry().unwrap();
    assert!((1500..=2000).contains(&at), "{at}");
    f.retry_due(at - 1);
    assert_eq!(f.next(at - 1, 1), None);
    f.retry_due(at);
    assert_eq!(sent(f.next(at, 1)), 1);
    // Lost while the same login is still shown: waits for the next one.
    f.finished(2, Next::AfterUp, at, Some(1));
    assert_eq!(f.next(at, 1), None);
    f.link_up();
    assert_eq!(sent(f.next(at, 2)), 2);
    // Lost, and a newer login is already up: sent again at once.
    f.finished(3, Next::AfterUp, at, Some(2));
    assert_eq!(sent(f.next(at, 2)), 3);
}

#[test]
fn too_old_pushes_expire_instead_of_being_sent() {
    let mut f = Flights::new(10, 5, Duration::from_secs(300));
    f.insert(1, push("a", 0), false);
    f.insert(2, push("a", 200_000), false);
    assert!(matches!(f.next(300_001, 1), Some(Ready::Expired(1, _))));
    assert_eq!(sent(f.next(300_001, 1)), 2);
    assert_eq!(f.len(), 1);
}

#[test]
fn held_pushes_wait_for_their_release_and_can_be_forgotten() {
    let mut f = Flights::new(10, 5, Duration::from_secs(300));
    f.insert(1, push("a", 0), true);
    f.insert(2, push("a", 0), true);
    assert_eq!(f.next(0, 1), None);
    let mut newer = push("a", 0);
    newer.count = 3;
    f.replace(1, newer);
    f.release(1);
    match f.next(0, 1) {
        Some(Ready::Send(1, p)) => assert_eq!(p.count, 3),
        other => panic!("{other:?}"),
    }
    assert!(f.remove_idle(1).is_none(), "in flight");
    assert!(f.remove_idle(2).is_some());
    assert_eq!(f.len(), 1);
}
