//! `admin-user` (admins only), two stages: field `user` (jid-single, a bare user JID), then
//! that user's registrations and rooms with a `list-multi` field `remove` (values `jid<node`
//! for registrations, `room:ROOM` for room rules); the chosen ones are removed. A first form
//! that already has `remove` does both at once.

use std::sync::Arc;

use minidom::Element;
use xmpp_parsers::data_forms::FieldType;
use xmpp_parsers::jid::BareJid;

use super::{push_list, Ctx};
use crate::adhoc::session::Data;
use crate::adhoc::xml::{self, Note, Submitted};
use crate::adhoc::{Command, CommandError, CommandFuture, Input, Reply, Requester};
use crate::push::{RoomMode, RoomRule, UserPush};

pub const NODE: &str = "admin-user";
const ROOM_PREFIX: &str = "room:";

pub struct AdminUser(pub Arc<Ctx>);

pub fn first_form() -> Element {
    xml::form(
        "Inspect a user",
        "Enter the user's bare JID.",
        vec![xml::field("user", FieldType::JidSingle, "User", true, &[])],
    )
}

/// The second form: the user's data as fixed lines and the `remove` choices.
pub fn second_form(user: &str, u: &UserPush) -> Element {
    let mut options: Vec<(String, String)> = u
        .registrations
        .iter()
        .map(|r| (r.key(), format!("registration: {}", r.describe())))
        .collect();
    options.extend(u.rooms.iter().map(|r| {
        (
            format!("{ROOM_PREFIX}{}", r.room),
            format!("room: {} as {} ({})", r.room, r.nick, r.mode.as_str()),
        )
    }));
    let mut fields = vec![xml::fixed(&format!(
        "{user}: {} registration(s), {} room rule(s).",
        u.registrations.len(),
        u.rooms.len()
    ))];
    fields.push(xml::list(
        "remove",
        FieldType::ListMulti,
        "Remove",
        false,
        &[],
        &options,
    ));
    xml::form(
        "User's push data",
        "Choose what to remove (nothing: just close).",
        fields,
    )
}

/// The user named in the form (pure).
pub fn user_field(form: &Submitted) -> Result<String, CommandError> {
    let raw = form.required("user")?;
    match BareJid::new(raw.trim()) {
        Ok(j) if j.node().is_some() && !raw.contains('/') => Ok(j.to_string()),
        _ => Err(CommandError::BadPayload(format!(
            "field 'user': {raw:?} is not a bare user JID (user@domain)"
        ))),
    }
}

async fn remove(ctx: &Ctx, user: &str, chosen: &[String]) -> Result<Reply, CommandError> {
    let u = ctx.push.get(user)?;
    let mut keys = Vec::new();
    let mut rooms = Vec::new();
    for c in chosen {
        if let Some(room) = c.strip_prefix(ROOM_PREFIX) {
            if !u.rooms.iter().any(|r| r.room == room) {
                return Err(CommandError::BadPayload(format!(
                    "field 'remove': {user} has no rule for room {room}"
                )));
            }
            rooms.push(room.to_owned());
        } else if u.registrations.iter().any(|r| &r.key() == c) {
            keys.push(c.clone());
        } else {
            return Err(CommandError::BadPayload(format!(
                "field 'remove': {c:?} is not one of {user}'s registrations or rooms"
            )));
        }
    }
    let gone = if keys.is_empty() {
        0
    } else {
        ctx.push.unregister(user, &keys).await?.len()
    };
    for room in &rooms {
        ctx.push
            .set_room(
                user,
                RoomRule {
                    room: room.clone(),
                    nick: String::new(),
                    mode: RoomMode::Never,
                },
            )
            .await?;
    }
    let (_, results) = push_list::tables(&ctx.push.get(user)?, user, ctx.rooms.get());
    Ok(Reply::Done {
        note: Note::info(format!(
            "Removed {gone} registration(s) and {} room rule(s) of {user}.",
            rooms.len()
        )),
        results,
    })
}

impl Command for AdminUser {
    fn node(&self) -> &'static str {
        NODE
    }

    fn name(&self) -> &'static str {
        "Inspect or clean up a user's push data"
    }

    fn admin_only(&self) -> bool {
        true
    }

    fn start(&self, _: Requester) -> CommandFuture {
        Box::pin(async {
            Ok(Reply::Form {
                form: first_form(),
                last: false,
                data: Data::new(),
            })
        })
    }

    fn submit(&self, input: Input) -> CommandFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let user = match input.stage {
                0 => user_field(&input.form)?,
                _ => input.data.get("user").cloned().ok_or_else(|| {
                    CommandError::BadSessionId("the session lost its user".into())
                })?,
            };
            let chosen = input.form.values("remove");
            if input.stage == 0 && chosen.is_empty() {
                let u = ctx.push.get(&user)?;
                let mut data = Data::new();
                data.insert("user".into(), user.clone());
                return Ok(Reply::Form {
                    form: second_form(&user, &u),
                    last: true,
                    data,
                });
            }
            remove(&ctx, &user, chosen).await
        })
    }
}
