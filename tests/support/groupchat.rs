//! XEP-0045 group chat for c2s test clients on a real Prosody (`muc.localhost`): create a room
//! (Prosody locks a new room until its owner submits the configuration; [`create_room`] submits it
//! at once, persistent by default so the room outlives its last occupant), join without history,
//! leave, send groupchat messages (body, XEP-0372 mention, OMEMO-style encrypted payload, subject
//! only), kick a nick, and watch occupants come and go through their presences.
//!
//! Prosody 0.12 sends a joiner the other occupants' presences, then the self-presence (status 110,
//! plus 201 for a new room), then history, then the subject. A session that joins with a directed
//! presence only (no broadcast presence) is an occupant while the server, and mod_privilege, count
//! the user offline: the way to make a room "ghost" on one Prosody, since Prosody sends every room a
//! session joined an unavailable presence when the session sends a broadcast unavailable, closes or
//! loses its TCP connection.

#![allow(dead_code)]

use std::time::Duration;

use minidom::Element;

use super::adhoc::{escape, iq};
use super::client::{to_xml, C2s};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_REFERENCE: &str = "urn:xmpp:reference:0";
pub const NS_OMEMO: &str = "eu.siacs.conversations.axolotl";
/// Longest wait for one room answer.
pub const ROOM_T: Duration = Duration::from_secs(10);

/// One occupant as a presence from the room shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupant {
    pub nick: String,
    /// The real JID, when the room shows it (to moderators or in non-anonymous rooms).
    pub jid: Option<String>,
    pub role: String,
    pub affiliation: String,
}

/// What a join returned.
#[derive(Clone, Debug)]
pub struct Joined {
    pub self_presence: Element,
    /// The other occupants present at the join.
    pub occupants: Vec<Occupant>,
    /// Status 201: the join created the room.
    pub created: bool,
}

impl Joined {
    pub fn nicks(&self) -> Vec<String> {
        self.occupants.iter().map(|o| o.nick.clone()).collect()
    }
}

/// Room configuration [`create_room`] submits.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    /// `muc#roomconfig_persistentroom` (default true).
    pub persistent: bool,
    /// `muc#roomconfig_whois = anyone` (real JIDs visible to all), else `moderators` (default).
    pub public_jids: bool,
    /// `muc#roomconfig_membersonly` (default false).
    pub members_only: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            persistent: true,
            public_jids: false,
            members_only: false,
        }
    }
}

/// The status codes of a MUC presence.
pub fn status_codes(presence: &Element) -> Vec<u16> {
    presence
        .get_child("x", NS_MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|s| s.attr("code").and_then(|c| c.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The occupant a presence from `room@service/nick` describes.
pub fn occupant_of(presence: &Element) -> Occupant {
    let nick = presence
        .attr("from")
        .and_then(|f| f.split_once('/'))
        .map(|(_, n)| n.to_owned())
        .unwrap_or_default();
    let item = presence
        .get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("item", NS_MUC_USER));
    let attr = |name: &str| {
        item.and_then(|i| i.attr(name))
            .unwrap_or_default()
            .to_owned()
    };
    Occupant {
        nick,
        jid: item.and_then(|i| i.attr("jid")).map(str::to_owned),
        role: attr("role"),
        affiliation: attr("affiliation"),
    }
}

fn from_room(el: &Element, room: &str) -> bool {
    el.attr("from")
        .is_some_and(|f| f == room || f.split('/').next() == Some(room))
}

/// Joins `room/nick` (`<x xmlns='…muc'><history maxstanzas='0'/></x>`) and returns at the
/// self-presence, or the error presence. Presences from the room received before and not consumed
/// yet are dropped first, so the occupants are those of this join.
pub async fn try_join(c: &mut C2s, room: &str, nick: &str) -> Result<Joined, Element> {
    let to = format!("{room}/{nick}");
    c.discard(|el| el.name() == "presence" && from_room(el, room));
    c.send_xml(&format!(
        "<presence to='{to}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    ))
    .await;
    let mut occupants: Vec<Occupant> = Vec::new();
    loop {
        let room_owned = room.to_owned();
        let p = c
            .next_matching(ROOM_T, move |el| {
                el.name() == "presence" && from_room(el, &room_owned)
            })
            .await
            .unwrap_or_else(|| panic!("{}: no self-presence from {to} within {ROOM_T:?}", c.jid()));
        if p.attr("type") == Some("error") {
            return Err(p);
        }
        let codes = status_codes(&p);
        if codes.contains(&110) {
            return Ok(Joined {
                created: codes.contains(&201),
                self_presence: p,
                occupants,
            });
        }
        let o = occupant_of(&p);
        occupants.retain(|x| x.nick != o.nick);
        if p.attr("type") != Some("unavailable") {
            occupants.push(o);
        }
    }
}

/// [`try_join`]; panics on an error presence.
pub async fn join(c: &mut C2s, room: &str, nick: &str) -> Joined {
    match try_join(c, room, nick).await {
        Ok(j) => j,
        Err(e) => panic!("{} cannot join {room}/{nick}: {}", c.jid(), to_xml(&e)),
    }
}

/// Creates `room` by joining it as `nick` (its owner) and submitting `config`; panics if the room
/// already existed or the configuration is refused.
pub async fn create_room(c: &mut C2s, room: &str, nick: &str, config: RoomConfig) -> Joined {
    let joined = join(c, room, nick).await;
    assert!(
        joined.created,
        "{room} existed already: {}",
        to_xml(&joined.self_presence)
    );
    let b = |v: bool| if v { "1" } else { "0" };
    let form = format!(
        "<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
         <field var='muc#roomconfig_persistentroom'><value>{}</value></field>\
         <field var='muc#roomconfig_membersonly'><value>{}</value></field>\
         <field var='muc#roomconfig_whois'><value>{}</value></field>\
         </x></query>",
        b(config.persistent),
        b(config.members_only),
        if config.public_jids {
            "anyone"
        } else {
            "moderators"
        }
    );
    let a = iq(c, "set", room, &form).await;
    assert_eq!(
        a.attr("type"),
        Some("result"),
        "configure {room}: {}",
        to_xml(&a)
    );
    joined
}

/// Leaves `room/nick` and waits for the room's unavailable self-presence.
pub async fn leave(c: &mut C2s, room: &str, nick: &str) {
    let to = format!("{room}/{nick}");
    c.send_xml(&format!("<presence to='{to}' type='unavailable'/>"))
        .await;
    let gone = c
        .next_matching(ROOM_T, move |el| {
            el.name() == "presence"
                && el.attr("from") == Some(to.as_str())
                && el.attr("type") == Some("unavailable")
                && status_codes(el).contains(&110)
        })
        .await;
    assert!(
        gone.is_some(),
        "{}: no unavailable self-presence from {room}/{nick}",
        c.jid()
    );
}

/// Sends `<message type='groupchat' to=ROOM>INNER</message>` (INNER is raw XML).
pub async fn send_groupchat_xml(c: &mut C2s, room: &str, inner: &str) {
    c.send_xml(&format!(
        "<message type='groupchat' to='{room}'>{inner}</message>"
    ))
    .await;
}

/// A groupchat message with a body.
pub async fn say(c: &mut C2s, room: &str, body: &str) {
    send_groupchat_xml(c, room, &format!("<body>{}</body>", escape(body))).await;
}

/// A groupchat message whose body carries a XEP-0372 mention of `uri` (`xmpp:user@domain` or
/// `xmpp:room@service/nick`), covering the whole body.
pub async fn say_mentioning(c: &mut C2s, room: &str, body: &str, uri: &str) {
    let inner = format!(
        "<body>{}</body><reference xmlns='{NS_REFERENCE}' type='mention' begin='0' end='{}' uri='{}'/>",
        escape(body),
        body.chars().count(),
        escape(uri)
    );
    send_groupchat_xml(c, room, &inner).await;
}

/// A groupchat message with an OMEMO-style `<encrypted/>` payload and no body.
pub async fn send_encrypted(c: &mut C2s, room: &str) {
    let inner = format!(
        "<encrypted xmlns='{NS_OMEMO}'><header sid='1'><key rid='2'>a2V5</key><iv>aXY=</iv></header>\
         <payload>Y2lwaGVy</payload></encrypted><store xmlns='urn:xmpp:hints'/>"
    );
    send_groupchat_xml(c, room, &inner).await;
}

/// A subject change (no body).
pub async fn set_subject(c: &mut C2s, room: &str, subject: &str) {
    send_groupchat_xml(c, room, &format!("<subject>{}</subject>", escape(subject))).await;
}

/// Kicks `nick` (`muc#admin` role `none`); returns the IQ answer, panicking unless it is a result.
pub async fn kick(c: &mut C2s, room: &str, nick: &str, reason: &str) -> Element {
    let q = format!(
        "<query xmlns='{NS_MUC_ADMIN}'><item nick='{}' role='none'><reason>{}</reason></item></query>",
        escape(nick),
        escape(reason)
    );
    let a = iq(c, "set", room, &q).await;
    assert_eq!(
        a.attr("type"),
        Some("result"),
        "kick {nick} from {room}: {}",
        to_xml(&a)
    );
    a
}

/// The next groupchat message from `room` (any nick) for which `pred` holds.
pub async fn next_groupchat(
    c: &mut C2s,
    room: &str,
    timeout: Duration,
    pred: impl Fn(&Element) -> bool,
) -> Option<Element> {
    let room = room.to_owned();
    c.next_matching(timeout, move |el| {
        el.name() == "message"
            && el.attr("type") == Some("groupchat")
            && from_room(el, &room)
            && pred(el)
    })
    .await
}

/// The body of a message, if any.
pub fn body(el: &Element) -> Option<String> {
    el.children().find(|c| c.name() == "body").map(|b| b.text())
}

/// Waits for an available presence of `room/nick` (the occupant arrived or changed).
pub async fn wait_occupant(
    c: &mut C2s,
    room: &str,
    nick: &str,
    timeout: Duration,
) -> Option<Occupant> {
    let from = format!("{room}/{nick}");
    c.next_matching(timeout, move |el| {
        el.name() == "presence"
            && el.attr("from") == Some(from.as_str())
            && el.attr("type").is_none()
    })
    .await
    .map(|p| occupant_of(&p))
}

/// Waits for the unavailable presence of `room/nick` (left, kicked, banned, or gone); returns it.
pub async fn wait_departure(
    c: &mut C2s,
    room: &str,
    nick: &str,
    timeout: Duration,
) -> Option<Element> {
    let from = format!("{room}/{nick}");
    c.next_matching(timeout, move |el| {
        el.name() == "presence"
            && el.attr("from") == Some(from.as_str())
            && el.attr("type") == Some("unavailable")
    })
    .await
}

/// Whether a presence is `type='unavailable'`.
pub fn is_unavailable(p: &Element) -> bool {
    p.attr("type") == Some("unavailable")
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

/// A groupchat message with a body and the given `id`.
pub async fn say_with_id(c: &mut C2s, room: &str, id: &str, body: &str) {
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
