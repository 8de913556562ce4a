use std::collections::HashMap;

use super::*;
use crate::xmpp::IqTracker;

fn jid(i: usize) -> String {
    format!("user{i}@localhost/res")
}

/// Runs `schedule` for `span` in steps of `step`, counting how often each JID came due.
fn run_for(
    schedule: &mut Schedule,
    start: Instant,
    span: Duration,
    step: Duration,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut t = start;
    while t < start + span {
        t += step;
        for j in schedule.due(t, usize::MAX) {
            *counts.entry(j.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn each_resource_is_checked_once_per_interval_spread_evenly() {
    let mut s = Schedule::new(Duration::from_secs(10));
    for i in 0..1000 {
        s.insert(&jid(i));
    }
    let start = Instant::now();
    s.due(start, usize::MAX);
    // Each second of the interval hands out a tenth of the resources.
    let mut t = start;
    for _ in 0..10 {
        t += Duration::from_secs(1);
        let n = s.due(t, usize::MAX).len();
        assert!(
            (99..=101).contains(&n),
            "{n} checks in one second, want 100"
        );
    }
    let counts = run_for(
        &mut s,
        t,
        Duration::from_secs(30),
        Duration::from_millis(100),
    );
    assert_eq!(counts.len(), 1000, "every resource checked");
    assert!(
        counts.values().all(|&c| c == 3),
        "each exactly once per interval: {:?}",
        counts.values().max()
    );
}

#[test]
fn a_reconnect_checks_every_resource_first_at_the_bounded_rate() {
    let mut s = Schedule::new(Duration::from_secs(300));
    for i in 0..3000 {
        s.insert(&jid(i));
    }
    let start = Instant::now();
    s.recheck_all();
    s.due(start, usize::MAX);
    let counts = run_for(
        &mut s,
        start,
        Duration::from_secs(3),
        Duration::from_millis(100),
    );
    assert_eq!(
        counts.len(),
        3000,
        "all rechecked within 3000 / MAX_RATE seconds"
    );
    assert!(counts.values().all(|&c| c == 1));
    // Then back to the normal pace: 3000 per 300 s.
    let t = start + Duration::from_secs(3);
    let later = run_for(
        &mut s,
        t,
        Duration::from_secs(10),
        Duration::from_millis(100),
    );
    let total: usize = later.values().sum();
    assert!(
        (95..=105).contains(&total),
        "{total} checks in 10 s, want 100"
    );
}

#[test]
fn the_rate_never_exceeds_the_bound() {
    let mut s = Schedule::new(Duration::from_secs(1));
    for i in 0..50_000 {
        s.insert(&jid(i));
    }
    let start = Instant::now();
    s.due(start, usize::MAX);
    let counts = run_for(
        &mut s,
        start,
        Duration::from_secs(2),
        Duration::from_millis(100),
    );
    let total: usize = counts.values().sum();
    assert!(total <= 2 * MAX_RATE as usize + 1, "{total} checks in 2 s");
    // A stall does not turn into a burst.
    let burst = s.due(start + Duration::from_secs(60), usize::MAX).len();
    assert!(burst <= MAX_RATE as usize, "{burst} after a stall");
}

#[test]
fn removed_resources_are_never_due_and_the_rest_still_are() {
    let mut s = Schedule::new(Duration::from_secs(10));
    for i in 0..100 {
        s.insert(&jid(i));
    }
    let start = Instant::now();
    s.due(start, usize::MAX);
    // Remove some from the checked and some from the due part, mid-round.
    let mut first = Vec::new();
    for step in 1..=30 {
        first.extend(s.due(start + Duration::from_millis(100 * step), usize::MAX));
    }
    assert_eq!(first.len(), 30);
    for j in first.iter().take(10) {
        s.remove(j);
    }
    for i in (0..100).step_by(7) {
        s.remove(&jid(i));
    }
    s.remove("nobody@localhost/x");
    let left: Vec<String> = (0..100).map(jid).filter(|j| s.contains(j)).collect();
    assert_eq!(s.len(), left.len());
    let counts = run_for(
        &mut s,
        start + Duration::from_secs(3),
        Duration::from_secs(20),
        Duration::from_millis(50),
    );
    for j in &left {
        assert!(
            counts.get(j).copied().unwrap_or(0) >= 1,
            "{j} never checked"
        );
    }
    assert!(
        counts.keys().all(|j| left.contains(j)),
        "a removed resource was checked"
    );
}

#[test]
fn a_resource_just_online_waits_for_the_next_round() {
    let mut s = Schedule::new(Duration::from_secs(10));
    for i in 0..10 {
        s.insert(&jid(i));
    }
    let start = Instant::now();
    s.due(start, usize::MAX);
    s.insert("fresh@localhost/r");
    s.insert("fresh@localhost/r");
    assert_eq!(s.len(), 11);
    let round: Vec<String> = s
        .due(start + Duration::from_millis(9_000), usize::MAX)
        .iter()
        .map(|j| j.to_string())
        .collect();
    assert!(!round.contains(&"fresh@localhost/r".to_owned()));
    assert_eq!(s.next_wakeup(start).map(|w| w > start), Some(true));
    assert_eq!(
        Schedule::new(Duration::from_secs(1)).next_wakeup(start),
        None
    );
}

/// Answers the check's IQs as `answer` says, from what the handle queued.
async fn answered_check(answers: [&'static str; 2]) -> (Verdict, usize) {
    let tracker = IqTracker::new();
    let (handle, mut queues) = XmppHandle::new(tracker.clone(), "herald.localhost");
    let server = tokio::spawn(async move {
        let mut asked = 0;
        for answer in answers {
            let Some(out) = queues.priority.recv().await else {
                break;
            };
            asked += 1;
            let iq: minidom::Element = std::str::from_utf8(&out.xml).unwrap().parse().unwrap();
            let id = iq.attr("id").unwrap().to_owned();
            if answer.is_empty() {
                continue;
            }
            let xml = answer.replace("ID", &id);
            tracker.resolve(xml.parse().unwrap());
        }
        asked
    });
    let verdict = tokio::time::timeout(
        Duration::from_secs(5),
        check(&handle, "bob@localhost/phone", CHECK_TIMEOUT),
    )
    .await
    .unwrap_or(Verdict::Unknown);
    drop(handle);
    (verdict, server.await.unwrap())
}

/// ejabberd 23.01's answer for a full JID without a session, as herald receives it.
const NO_SESSION: &str = "<iq xmlns='jabber:component:accept' to='herald.localhost' from='bob@localhost/phone' type='error' id='ID'><ping xmlns='urn:xmpp:ping'/><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xml:lang='en' xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>User session not found</text></error></iq>";

#[tokio::test]
async fn gone_only_when_ping_and_disco_both_find_no_session() {
    let pong = "<iq xmlns='jabber:component:accept' to='herald.localhost' from='bob@localhost/phone' type='result' id='ID'/>";
    assert_eq!(
        answered_check([NO_SESSION, NO_SESSION]).await,
        (Verdict::Gone, 2)
    );
    assert_eq!(answered_check([pong, ""]).await, (Verdict::Alive, 1));
    // A client without ping support answers service-unavailable itself, and disco#info.
    let disco = "<iq xmlns='jabber:component:accept' to='herald.localhost' from='bob@localhost/phone' type='result' id='ID'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
    assert_eq!(
        answered_check([NO_SESSION, disco]).await,
        (Verdict::Alive, 2)
    );
    let forbidden = "<iq xmlns='jabber:component:accept' from='bob@localhost/phone' type='error' id='ID'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>";
    assert_eq!(answered_check([forbidden, ""]).await, (Verdict::Alive, 1));
}
