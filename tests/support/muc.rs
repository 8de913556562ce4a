//! A c2s client's side of XEP-0045 rooms on the test Prosody (`muc.localhost`): create a room
//! (instant, optionally persistent), configure it (members-only), join it, kick an occupant,
//! send groupchat, and read occupant presences and their status codes.

#![allow(dead_code)]

use std::time::Duration;

use minidom::Element;

use super::adhoc::{escape, iq};
use super::client::{to_xml, C2s};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const T: Duration = Duration::from_secs(10);

/// The status codes of an occupant presence.
pub fn codes(p: &Element) -> Vec<String> {
    p.get_child("x", NS_MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_unavailable(p: &Element) -> bool {
    p.attr("type") == Some("unavailable")
}

/// Joins `room` as `nick` (no history); returns the presences of the room up to and including
/// the client's own (status 110). Panics on a join error.
pub async fn join(c: &mut C2s, room: &str, nick: &str) -> Vec<Element> {
    c.send_xml(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    ))
    .await;
    let mut seen = Vec::new();
    loop {
        let p = next_from_room(c, room, T)
            .await
            .unwrap_or_else(|| panic!("{} got no self-presence from {room}", c.jid()));
        assert_ne!(
            p.attr("type"),
            Some("error"),
            "join refused: {}",
            to_xml(&p)
        );
        let own = codes(&p).iter().any(|s| s == "110");
        seen.push(p);
        if own {
            return seen;
        }
    }
}

/// The next presence from an occupant of `room`.
pub async fn next_from_room(c: &mut C2s, room: &str, timeout: Duration) -> Option<Element> {
    let prefix = format!("{room}/");
    c.next_matching(timeout, move |el| {
        el.name() == "presence" && el.attr("from").is_some_and(|f| f.starts_with(&prefix))
    })
    .await
}

/// The next presence from `room/nick` for which `pred` holds (others from it are skipped).
pub async fn next_occupant(
    c: &mut C2s,
    room: &str,
    nick: &str,
    timeout: Duration,
    pred: impl Fn(&Element) -> bool,
) -> Option<Element> {
    let from = format!("{room}/{nick}");
    c.next_matching(timeout, move |el| {
        el.name() == "presence" && el.attr("from") == Some(from.as_str()) && pred(el)
    })
    .await
}

/// Submits the owner configuration form with `fields` (`var`, value).
pub async fn configure(c: &mut C2s, room: &str, fields: &[(&str, &str)]) {
    let mut form = String::from("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>");
    for (var, value) in fields {
        form.push_str(&format!(
            "<field var='{var}'><value>{}</value></field>",
            escape(value)
        ));
    }
    form.push_str("</x>");
    let a = iq(
        c,
        "set",
        room,
        &format!("<query xmlns='{NS_MUC_OWNER}'>{form}</query>"),
    )
    .await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
}

/// Creates `room` with `c` as owner `nick` and unlocks it (an instant room), persistent or not.
pub async fn create_room(c: &mut C2s, room: &str, nick: &str, persistent: bool) {
    let presences = join(c, room, nick).await;
    let own = presences.last().unwrap();
    assert!(
        codes(own).iter().any(|s| s == "201"),
        "{room} existed already: {}",
        to_xml(own)
    );
    let persistent = if persistent { "1" } else { "0" };
    configure(c, room, &[("muc#roomconfig_persistentroom", persistent)]).await;
}

pub async fn make_members_only(c: &mut C2s, room: &str) {
    configure(c, room, &[("muc#roomconfig_membersonly", "1")]).await;
}

/// Kicks `nick` (role none) as a moderator.
pub async fn kick(c: &mut C2s, room: &str, nick: &str, reason: &str) {
    let a = iq(
        c,
        "set",
        room,
        &format!(
            "<query xmlns='{NS_MUC_ADMIN}'><item nick='{nick}' role='none'><reason>{}</reason></item></query>",
            escape(reason)
        ),
    )
    .await;
    assert_eq!(a.attr("type"), Some("result"), "{}", to_xml(&a));
}

/// `<message type='groupchat' id to=room><body/></message>`.
pub async fn say(c: &mut C2s, room: &str, id: &str, body: &str) {
    c.send_xml(&format!(
        "<message type='groupchat' id='{id}' to='{room}'><body>{}</body></message>",
        escape(body)
    ))
    .await;
}

/// Asks `room`'s disco#info: the answer (a result, or `item-not-found` for no such room).
pub async fn disco_info(c: &mut C2s, room: &str) -> Element {
    iq(
        c,
        "get",
        room,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await
}
