//! Unit tests of [`super`].

use super::*;

const T0: i64 = 1_000;
const T1: i64 = 2_000;

fn avail(show: Option<&str>, status: Option<&str>, priority: i8) -> Update {
    Update::Available {
        show: show.map(str::to_owned),
        status: status.map(str::to_owned),
        priority,
    }
}

fn online() -> Update {
    avail(None, None, 0)
}

fn state(show: Option<&str>, status: Option<&str>, priority: i8, since_ms: i64) -> ResourceState {
    ResourceState {
        show: show.map(Box::from),
        status: status.map(Box::from),
        priority,
        since_ms,
    }
}

/// The event of an outcome, which must have one.
fn event(outcome: &Outcome) -> (Source, &EventArgs) {
    match &outcome.event {
        Some((source, args)) => (*source, args),
        None => panic!("expected an event in {outcome:?}"),
    }
}

#[test]
fn new_resource_is_stored_and_announced() {
    let mut t = Tracker::new(Changes::Availability);
    let out = t
        .apply(
            "alice@example.org/phone",
            avail(Some("away"), Some("brb"), 5),
            false,
            T0,
        )
        .expect("a change");
    assert_eq!(
        out,
        Outcome {
            store: StoreOp::Put(
                "alice@example.org/phone".into(),
                state(Some("away"), Some("brb"), 5, T0)
            ),
            event: Some((
                Source::Live,
                EventArgs {
                    user: "alice@example.org/phone".into(),
                    presence: Availability::Available,
                    show: Some("away".into()),
                    status: Some("brb".into()),
                    priority: 5,
                    resources: 1,
                }
            )),
        }
    );
    assert_eq!(t.len(), 1);
    assert_eq!(t.resources_of("alice@example.org"), 1);
    assert_eq!(
        t.get("alice@example.org/phone"),
        Some(state(Some("away"), Some("brb"), 5, T0))
    );
}

#[test]
fn duplicate_is_nothing() {
    let mut t = Tracker::new(Changes::All);
    assert!(t
        .apply("a@x/1", avail(Some("dnd"), None, 1), false, T0)
        .is_some());
    assert_eq!(
        t.apply("a@x/1", avail(Some("dnd"), None, 1), false, T1),
        None
    );
    // since_ms is not part of the comparison, and is kept.
    assert_eq!(t.get("a@x/1").map(|s| s.since_ms), Some(T0));
    assert_eq!(t.len(), 1);
}

#[test]
fn second_resource_counts_two() {
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/phone", online(), false, T0);
    let out = t
        .apply("a@x/laptop", online(), false, T0)
        .expect("a change");
    assert_eq!(event(&out).1.resources, 2);
    assert_eq!(t.resources_of("a@x"), 2);
    assert_eq!(t.resources_of("b@x"), 0);
    assert_eq!(t.len(), 2);
}

#[test]
fn unavailable_of_one_of_two_counts_one() {
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/phone", avail(Some("away"), None, 0), false, T0);
    t.apply("a@x/laptop", online(), false, T0);
    let out = t
        .apply("a@x/phone", Update::Unavailable, false, T1)
        .expect("a change");
    assert_eq!(out.store, StoreOp::Delete("a@x/phone".into()));
    assert_eq!(
        out.event,
        Some((
            Source::Live,
            EventArgs {
                user: "a@x/phone".into(),
                presence: Availability::Unavailable,
                show: None,
                status: None,
                priority: 0,
                resources: 1,
            }
        ))
    );
    assert_eq!(t.get("a@x/phone"), None);
    assert!(t.get("a@x/laptop").is_some());
    assert_eq!(t.len(), 1);
    let out = t
        .apply("a@x/laptop", Update::Unavailable, false, T1)
        .expect("a change");
    assert_eq!(event(&out).1.resources, 0);
    assert!(t.is_empty());
    assert_eq!(t.resources_of("a@x"), 0);
}

#[test]
fn unavailable_of_unknown_is_nothing() {
    let mut t = Tracker::new(Changes::All);
    assert_eq!(t.apply("a@x/1", Update::Unavailable, false, T0), None);
    t.apply("a@x/1", online(), false, T0);
    assert_eq!(t.apply("a@x/2", Update::Unavailable, false, T0), None);
    assert_eq!(t.len(), 1);
}

#[test]
fn show_change_with_availability_is_stored_silently() {
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/1", avail(Some("chat"), Some("hello"), 0), false, T0);
    let out = t.apply("a@x/1", avail(Some("away"), Some("brb"), 0), false, T1);
    assert_eq!(
        out,
        Some(Outcome {
            store: StoreOp::Put("a@x/1".into(), state(Some("away"), Some("brb"), 0, T0)),
            event: None,
        })
    );
    assert_eq!(
        t.get("a@x/1"),
        Some(state(Some("away"), Some("brb"), 0, T0))
    );
}

#[test]
fn show_change_with_all_is_a_live_event() {
    let mut t = Tracker::new(Changes::All);
    t.apply("a@x/1", avail(Some("chat"), None, 0), false, T0);
    t.apply("a@x/2", online(), false, T0);
    let out = t
        .apply("a@x/1", avail(None, None, 0), false, T1)
        .expect("a change");
    assert_eq!(
        out.store,
        StoreOp::Put("a@x/1".into(), state(None, None, 0, T0))
    );
    let (source, args) = event(&out);
    assert_eq!(source, Source::Live);
    assert_eq!(args.presence, Availability::Available);
    assert_eq!(args.show, None);
    assert_eq!(args.resources, 2);
    // A priority change alone is a change too.
    let out = t
        .apply("a@x/1", avail(None, None, -1), false, T1)
        .expect("a change");
    assert_eq!(event(&out).1.priority, -1);
    assert_eq!(
        out.store,
        StoreOp::Put("a@x/1".into(), state(None, None, -1, T0))
    );
    assert_eq!(t.get("a@x/1").map(|s| s.priority), Some(-1));
}

#[test]
fn snapshot_unknown_resource_is_source_snapshot() {
    let mut t = Tracker::new(Changes::Availability);
    t.begin_snapshot();
    assert!(t.in_snapshot());
    let out = t
        .apply(
            "carol@x/harness",
            avail(Some("dnd"), Some("first"), 0),
            true,
            T0,
        )
        .expect("a change");
    assert_eq!(event(&out).0, Source::Snapshot);
    assert!(t.end_snapshot(T1).is_empty());
    assert!(!t.in_snapshot());
    assert!(t.get("carol@x/harness").is_some());
}

#[test]
fn snapshot_known_identical_is_nothing_but_confirms() {
    let mut t = Tracker::new(Changes::All);
    t.apply("a@x/1", avail(Some("dnd"), None, 0), false, T0);
    t.begin_snapshot();
    assert_eq!(
        t.apply("a@x/1", avail(Some("dnd"), None, 0), true, T1),
        None
    );
    assert!(t.end_snapshot(T1).is_empty());
    assert_eq!(t.len(), 1);
}

#[test]
fn snapshot_known_changed_is_resync() {
    let mut t = Tracker::new(Changes::All);
    t.apply("a@x/1", avail(Some("chat"), None, 0), false, T0);
    t.begin_snapshot();
    let out = t
        .apply("a@x/1", avail(Some("xa"), None, 0), true, T1)
        .expect("a change");
    let (source, args) = event(&out);
    assert_eq!(source, Source::Resync);
    assert_eq!(args.show.as_deref(), Some("xa"));
    assert_eq!(
        out.store,
        StoreOp::Put("a@x/1".into(), state(Some("xa"), None, 0, T0))
    );

    // With Availability the change is stored, not announced.
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/1", avail(Some("chat"), None, 0), false, T0);
    t.begin_snapshot();
    let out = t
        .apply("a@x/1", avail(Some("xa"), None, 0), true, T1)
        .expect("a change");
    assert_eq!(out.event, None);
    assert!(matches!(out.store, StoreOp::Put(..)));
}

#[test]
fn delayed_unavailable_is_resync() {
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/1", online(), false, T0);
    t.begin_snapshot();
    let out = t
        .apply("a@x/1", Update::Unavailable, true, T1)
        .expect("a change");
    assert_eq!(event(&out).0, Source::Resync);
    assert_eq!(out.store, StoreOp::Delete("a@x/1".into()));
    assert!(t.end_snapshot(T1).is_empty());
    assert!(t.is_empty());
}

#[test]
fn end_snapshot_removes_the_unconfirmed() {
    let mut t = Tracker::new(Changes::Availability);
    for jid in ["a@x/1", "a@x/2", "a@x/3", "b@x/1", "c@x/1"] {
        t.apply(jid, online(), false, T0);
    }
    t.begin_snapshot();
    t.apply("a@x/2", online(), true, T1); // confirmed, identical
    t.apply("c@x/1", avail(Some("away"), None, 0), true, T1); // confirmed, changed
    let outs = t.end_snapshot(T1);
    let summary: Vec<(StoreOp, Source, Availability, u32)> = outs
        .iter()
        .map(|o| {
            let (source, args) = event(o);
            assert_eq!(store_key(o), args.user);
            (o.store.clone(), source, args.presence, args.resources)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                StoreOp::Delete("a@x/1".into()),
                Source::Resync,
                Availability::Unavailable,
                2
            ),
            (
                StoreOp::Delete("a@x/3".into()),
                Source::Resync,
                Availability::Unavailable,
                1
            ),
            (
                StoreOp::Delete("b@x/1".into()),
                Source::Resync,
                Availability::Unavailable,
                0
            ),
        ]
    );
    assert_eq!(t.len(), 2);
    assert_eq!(t.resources_of("a@x"), 1);
    assert_eq!(t.resources_of("b@x"), 0);
    assert!(t.get("c@x/1").is_some());
    // Over: a second end finds nothing to do.
    assert!(t.end_snapshot(T1).is_empty());
}

#[test]
fn live_presence_during_snapshot_confirms() {
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/1", online(), false, T0);
    t.apply("b@x/1", online(), false, T0);
    t.apply("c@x/1", online(), false, T0);
    t.begin_snapshot();
    // Live and identical: nothing to report, but confirmed.
    assert_eq!(t.apply("a@x/1", online(), false, T1), None);
    // Live unavailable during the snapshot: removed right away, as Live.
    let out = t
        .apply("b@x/1", Update::Unavailable, false, T1)
        .expect("a change");
    assert_eq!(event(&out).0, Source::Live);
    let outs = t.end_snapshot(T1);
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].store, StoreOp::Delete("c@x/1".into()));
    assert!(t.get("a@x/1").is_some());
    assert_eq!(t.len(), 1);
}

#[test]
fn resource_new_during_snapshot_survives_its_end() {
    let mut t = Tracker::new(Changes::Availability);
    t.begin_snapshot();
    t.apply("a@x/1", online(), false, T0);
    assert!(t.end_snapshot(T1).is_empty());
    assert_eq!(t.len(), 1);
}

#[test]
fn end_snapshot_without_begin_is_empty() {
    let mut t = Tracker::restore(
        Changes::Availability,
        [("b@x/1".to_owned(), state(None, None, 0, T0))],
    );
    t.apply("a@x/1", online(), false, T0);
    assert!(!t.in_snapshot());
    assert!(t.end_snapshot(T1).is_empty());
    assert_eq!(t.len(), 2);
    // Nor after a finished one.
    t.begin_snapshot();
    t.apply("a@x/1", online(), true, T1);
    assert_eq!(t.end_snapshot(T1).len(), 1);
    assert!(t.end_snapshot(T1).is_empty());
    assert_eq!(t.len(), 1);
}

#[test]
fn abandoned_snapshot_removes_nothing() {
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/1", online(), false, T0);
    t.apply("b@x/1", online(), false, T0);
    t.begin_snapshot();
    t.apply("a@x/1", online(), false, T1);
    t.abandon_snapshot();
    assert!(!t.in_snapshot());
    assert!(t.end_snapshot(T1).is_empty());
    assert_eq!(t.len(), 2);
    // No unconfirmed mark survives it.
    assert!(t.users.values().flatten().all(|e| !e.unconfirmed));
}

#[test]
fn restore_then_snapshot_round_trip() {
    let mut live = Tracker::new(Changes::All);
    live.apply("a@x/1", avail(Some("away"), Some("brb"), 3), false, T0);
    live.apply("a@x/2", online(), false, T0);
    live.apply("b@x", online(), false, T0); // no resource
    let persisted: Vec<(String, ResourceState)> =
        live.iter().map(|(jid, s)| (jid, s.clone())).collect();
    let mut jids: Vec<&str> = persisted.iter().map(|(j, _)| j.as_str()).collect();
    jids.sort_unstable();
    assert_eq!(jids, ["a@x/1", "a@x/2", "b@x"]);

    let mut t = Tracker::restore(Changes::All, persisted);
    assert_eq!(t.len(), 3);
    assert_eq!(t.resources_of("a@x"), 2);
    assert_eq!(
        t.get("a@x/1"),
        Some(state(Some("away"), Some("brb"), 3, T0))
    );
    assert_eq!(t.get("b@x"), Some(state(None, None, 0, T0)));

    // The server's snapshot after the restart: a@x/1 as it was, a@x/2 changed, b@x gone.
    t.begin_snapshot();
    assert_eq!(
        t.apply("a@x/1", avail(Some("away"), Some("brb"), 3), true, T1),
        None
    );
    let out = t
        .apply("a@x/2", avail(Some("dnd"), None, 0), true, T1)
        .expect("a change");
    assert_eq!(event(&out).0, Source::Resync);
    let outs = t.end_snapshot(T1);
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].store, StoreOp::Delete("b@x".into()));
    let (source, args) = event(&outs[0]);
    assert_eq!(
        (source, args.presence, args.resources),
        (Source::Resync, Availability::Unavailable, 0)
    );
    assert_eq!(t.len(), 2);
}

#[test]
fn restore_keeps_the_last_of_a_duplicate() {
    let t = Tracker::restore(
        Changes::Availability,
        [
            ("a@x/1".to_owned(), state(None, None, 0, T0)),
            ("a@x/1".to_owned(), state(Some("xa"), None, 0, T1)),
        ],
    );
    assert_eq!(t.len(), 1);
    assert_eq!(t.get("a@x/1"), Some(state(Some("xa"), None, 0, T1)));
}

#[test]
fn remove_reports_the_given_source() {
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/1", online(), false, T0);
    assert_eq!(t.remove("a@x/2", Source::Liveness), None);
    let out = t.remove("a@x/1", Source::Liveness).expect("a change");
    assert_eq!(event(&out).0, Source::Liveness);
    assert_eq!(out.store, StoreOp::Delete("a@x/1".into()));
    assert!(t.is_empty());
}

#[test]
fn jid_split_at_first_slash() {
    assert_eq!(split_jid("a@x/r/with/slashes"), ("a@x", "r/with/slashes"));
    assert_eq!(split_jid("a@x"), ("a@x", ""));
    let mut t = Tracker::new(Changes::Availability);
    t.apply("a@x/r/s", online(), false, T0);
    assert_eq!(t.resources_of("a@x"), 1);
    assert!(t.get("a@x/r/s").is_some());
    assert_eq!(t.iter().map(|(j, _)| j).collect::<Vec<_>>(), ["a@x/r/s"]);
}

#[test]
fn per_resource_footprint_stays_small() {
    // One resource per bare JID (the usual case) lives inline in the map's value.
    assert!(
        std::mem::size_of::<Entry>() <= 32,
        "{}",
        std::mem::size_of::<Entry>()
    );
    assert!(std::mem::size_of::<Resources>() <= 40);
    let mut t = Tracker::new(Changes::Availability);
    for i in 0..10 {
        t.apply(&format!("u{i}@x/phone"), online(), false, T0);
    }
    assert!(t.users.values().all(|v| !v.spilled()));
    t.apply("u0@x/laptop", online(), false, T0);
    assert_eq!(t.users.get("u0@x").map(|v| v.len()), Some(2));
}

#[test]
fn texts_round_trip_through_the_compact_entry() {
    let cases = [
        (None, None),
        (Some("away"), None),
        (Some("xa"), Some("")),
        (None, Some("brb \u{1F3AE}")),
        (Some("busy-ish"), Some("custom show")),
        (Some("busy-ish"), None),
        (Some(""), Some("s")),
    ];
    for (show, status) in cases {
        let e = Entry::new("res/with/slashes", show, status, -7, 42);
        assert_eq!(e.resource(), "res/with/slashes");
        assert_eq!(e.show(), show, "{show:?} {status:?}");
        assert_eq!(e.status(), status, "{show:?} {status:?}");
        assert!(e.same_presence(show, status, -7));
        assert!(!e.same_presence(show, status, 0));
        assert_eq!(e.state(), state(show, status, -7, 42));
    }
}
