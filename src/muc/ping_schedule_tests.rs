//! The self-ping schedule with the clock in the test's hand.

use super::*;

const S: Duration = Duration::from_secs(1);

fn iv(concurrency: usize) -> Intervals {
    Intervals {
        idle: 900 * S,
        delay: 60 * S,
        concurrency,
        undecided: 3,
        jitter_div: 0,
    }
}

fn names(due: &[(String, u64)]) -> Vec<&str> {
    due.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn a_silent_room_is_pinged_after_idle_and_traffic_postpones_it() {
    let t0 = Instant::now();
    let mut s = Schedule::new(iv(50), 1);
    s.joined("a@m", t0, false);
    assert_eq!(s.next_wake(), Some(t0 + 900 * S));
    assert!(s.due(t0 + 899 * S).is_empty());
    // A message at 600 s: the deadline at 900 s moves to 1500 s when it comes up.
    s.heard("a@m", t0 + 600 * S);
    assert!(s.due(t0 + 900 * S).is_empty());
    assert_eq!(s.next_wake(), Some(t0 + 1500 * S));
    let due = s.due(t0 + 1500 * S);
    assert_eq!(names(&due), ["a@m"]);
    assert_eq!(s.outstanding(), 1);
    // While it waits for its answer, nothing else is queued for it.
    assert_eq!(s.next_wake(), None);
    let step = s.finished("a@m", due[0].1, Some(Verdict::Joined), t0 + 1501 * S);
    assert_eq!(step, Step::Joined);
    assert_eq!(s.next_wake(), Some(t0 + 2401 * S));
}

#[test]
fn the_first_ping_after_a_login_comes_after_the_delay_whatever_the_room_says() {
    let t0 = Instant::now();
    let mut s = Schedule::new(iv(50), 1);
    s.joined("a@m", t0, true);
    s.heard("a@m", t0 + 10 * S); // the subject, right after the join
    assert_eq!(names(&s.due(t0 + 60 * S)), ["a@m"]);
}

#[test]
fn no_ping_while_paused_and_answers_of_a_paused_room_are_stale() {
    let t0 = Instant::now();
    let mut s = Schedule::new(iv(50), 1);
    s.joined("a@m", t0, false);
    let due = s.due(t0 + 900 * S);
    // The nick changes (or the link drops) while the ping is out.
    s.pause("a@m");
    assert_eq!(s.next_wake(), None);
    assert_eq!(
        s.finished("a@m", due[0].1, Some(Verdict::NotJoined), t0 + 901 * S),
        Step::Stale
    );
    assert_eq!(s.outstanding(), 0, "the slot is free again");
    assert!(s.due(t0 + 10_000 * S).is_empty());
    s.joined("a@m", t0 + 10_000 * S, false);
    assert_eq!(s.next_wake(), Some(t0 + 10_900 * S));
    s.remove("a@m");
    assert_eq!(s.next_wake(), None);
}

#[test]
fn undecided_answers_back_off_and_three_in_a_row_mean_not_joined() {
    let t0 = Instant::now();
    let mut s = Schedule::new(iv(50), 1);
    s.joined("a@m", t0, false);
    let mut now = t0 + 900 * S;
    let mut steps = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let due = s.due(now);
        assert_eq!(names(&due), ["a@m"]);
        now += 30 * S; // the timeout
        steps.push(s.finished("a@m", due[0].1, Some(Verdict::Undecided), now));
        if let Some(next) = s.next_wake() {
            waits.push((next - now).as_secs());
            now = next;
        }
    }
    assert_eq!(steps, [Step::Retry(1), Step::Retry(2), Step::Rejoin]);
    assert_eq!(waits, [60, 120]);
    assert_eq!(s.next_wake(), None, "paused until joined again");
}

#[test]
fn traffic_between_undecided_answers_starts_the_count_again() {
    let t0 = Instant::now();
    let mut s = Schedule::new(iv(50), 1);
    s.joined("a@m", t0, false);
    let due = s.due(t0 + 900 * S);
    s.finished("a@m", due[0].1, Some(Verdict::Undecided), t0 + 930 * S);
    s.heard("a@m", t0 + 940 * S);
    // The retry at 990 s is dropped: the room spoke, so the next check is idle after that.
    assert!(s.due(t0 + 990 * S).is_empty());
    assert_eq!(s.next_wake(), Some(t0 + 1840 * S));
}

#[test]
fn not_joined_asks_for_a_rejoin_and_item_not_found_for_a_recheck() {
    let t0 = Instant::now();
    let mut s = Schedule::new(iv(50), 1);
    s.joined("a@m", t0, false);
    s.joined("b@m", t0, false);
    let due = s.due(t0 + 900 * S);
    assert_eq!(names(&due), ["a@m", "b@m"]);
    let now = t0 + 901 * S;
    assert_eq!(
        s.finished("a@m", due[0].1, Some(Verdict::NotJoined), now),
        Step::Rejoin
    );
    assert_eq!(
        s.finished("b@m", due[1].1, Some(Verdict::JoinedRecheck), now),
        Step::Joined
    );
    assert_eq!(s.next_wake(), Some(now + 60 * S));
    s.heard("b@m", now + 5 * S);
    assert_eq!(
        names(&s.due(now + 60 * S)),
        ["b@m"],
        "a recheck is due whatever"
    );
}

#[test]
fn never_more_than_the_cap_at_once() {
    let t0 = Instant::now();
    let mut s = Schedule::new(iv(50), 1);
    for i in 0..1000 {
        s.joined(&format!("r{i}@m"), t0, false);
    }
    let now = t0 + 900 * S;
    let mut started = 0;
    let mut out: Vec<(String, u64)> = s.due(now);
    assert_eq!(out.len(), 50);
    assert_eq!(s.next_wake(), None, "at the cap nothing wakes the owner");
    while let Some((name, id)) = out.pop() {
        started += 1;
        s.finished(&name, id, Some(Verdict::Joined), now);
        assert!(s.outstanding() <= 50);
        out.extend(s.due(now));
        assert!(s.outstanding() <= 50);
    }
    assert_eq!(started, 1000);
    assert_eq!(s.queued(), 1000);
}

#[test]
fn jitter_spreads_rooms_joined_together_within_a_tenth() {
    let t0 = Instant::now();
    let mut s = Schedule::new(
        Intervals {
            jitter_div: 10,
            ..iv(50)
        },
        7,
    );
    for i in 0..200 {
        s.joined(&format!("r{i}@m"), t0, true);
    }
    let mut at: Vec<Duration> = s.queue.keys().map(|(t, _)| *t - t0).collect();
    at.sort();
    assert!(
        at[0] >= 60 * S && at[199] <= 66 * S,
        "{:?}..{:?}",
        at[0],
        at[199]
    );
    assert!(at[199] - at[0] > 3 * S, "spread: {:?}", at[199] - at[0]);
}
