//! `push-room`: which rooms to push for. Fields `room` (jid-single, required: a bare room JID),
//! `nick` (text-single, required: the user's nick there), `mode` (list-single `always` |
//! `mentioned` | `never`, default `[push] default_room_mode`). `never` removes the room.

use std::sync::Arc;

use minidom::Element;
use xmpp_parsers::data_forms::FieldType;

use super::Ctx;
use crate::adhoc::xml::{self, Note, Submitted};
use crate::adhoc::{Command, CommandError, CommandFuture, Input, Reply, Requester};
use crate::config::PushSettings;
use crate::push::{policy, RoomMode, RoomRule};

pub const NODE: &str = "push-room";

pub struct PushRoom(pub Arc<Ctx>);

pub fn form(default: RoomMode) -> Element {
    let modes = [
        ("always", "Every message"),
        ("mentioned", "Only when I am mentioned"),
        ("never", "Never (remove the room)"),
    ]
    .map(|(v, l)| (v.to_owned(), l.to_owned()));
    xml::form(
        "Push for a room",
        "Choose a room, your nick there, and when its messages should wake your devices.",
        vec![
            xml::field(
                "room",
                FieldType::JidSingle,
                "Room (room@service)",
                true,
                &[],
            ),
            xml::field(
                "nick",
                FieldType::TextSingle,
                "Your nick in the room",
                true,
                &[],
            ),
            xml::list(
                "mode",
                FieldType::ListSingle,
                "When",
                false,
                &[default.as_str()],
                &modes,
            ),
        ],
    )
}

/// Reads and checks the form (pure).
pub fn parse(form: &Submitted, s: &PushSettings) -> Result<RoomRule, CommandError> {
    let room = policy::room("room", form.required("room")?, s)?;
    let mode = match form.value("mode") {
        None => s.default_room_mode,
        Some(m) => RoomMode::parse(m).ok_or_else(|| {
            CommandError::BadPayload(format!(
                "field 'mode': {m:?} is not always, mentioned or never"
            ))
        })?,
    };
    let nick = match (form.value("nick"), mode) {
        (None, RoomMode::Never) => String::new(),
        (n, _) => policy::nick("nick", n.unwrap_or_default(), &room)?,
    };
    Ok(RoomRule { room, nick, mode })
}

impl Command for PushRoom {
    fn node(&self) -> &'static str {
        NODE
    }

    fn name(&self) -> &'static str {
        "Choose rooms to push for"
    }

    fn start(&self, _: Requester) -> CommandFuture {
        let default = self.0.push.settings().default_room_mode;
        Box::pin(async move {
            Ok(Reply::Form {
                form: form(default),
                last: true,
                data: Default::default(),
            })
        })
    }

    fn submit(&self, input: Input) -> CommandFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let user = input.requester.bare;
            let rule = parse(&input.form, ctx.push.settings())?;
            let (room, nick, mode) = (rule.room.clone(), rule.nick.clone(), rule.mode);
            let old = ctx.push.set_room(&user, rule).await?;
            let text = match (mode, old) {
                (RoomMode::Never, Some(_)) => format!("Removed {room} from your rooms."),
                (RoomMode::Never, None) => format!("{room} was not among your rooms."),
                (RoomMode::Always, _) => {
                    format!("Every message of {room} will be pushed (you are {nick} there).")
                }
                (RoomMode::Mentioned, _) => {
                    format!("Messages of {room} that mention {nick} will be pushed.")
                }
            };
            Ok(Reply::Done {
                note: Note::info(text),
                results: vec![],
            })
        })
    }
}
