//! `push-list`: the requester's registrations (label, jid, node, registered, last push, error
//! count) and room rules (room, nick, mode, herald's state in the room), as two result tables,
//! and a note with a line per watched room ("dev@muc.example (always, as alice): joined", or
//! "…: retrying: members-only: herald is not a member"). Completes at once.

use std::sync::Arc;

use minidom::Element;

use super::{reg_rows, room_rows, with_states, Ctx, REG_COLUMNS, ROOM_COLUMNS};
use crate::adhoc::xml::{self, Note};
use crate::adhoc::{Command, CommandError, CommandFuture, Input, Reply, Requester};
use crate::muc::RoomsView;
use crate::push::UserPush;

pub const NODE: &str = "push-list";

pub struct PushList(pub Arc<Ctx>);

/// The tables and a note counting them, with one line per watched room saying where herald is
/// with it when `rooms` is known (pure).
pub fn tables(u: &UserPush, whose: &str, rooms: Option<&RoomsView>) -> (Note, Vec<Element>) {
    let mut text = format!(
        "{whose} {} registration(s) and {} room rule(s).",
        u.registrations.len(),
        u.rooms.len()
    );
    let mut room_rows = room_rows(u);
    if let Some(view) = rooms {
        with_states(&mut room_rows, view);
        for row in &room_rows {
            if !row[4].is_empty() {
                text.push_str(&format!(
                    "\n{} ({}, as {}): {}",
                    row[0], row[2], row[1], row[4]
                ));
            }
        }
    }
    let regs = xml::result("Push registrations", vec![], REG_COLUMNS, &reg_rows(u));
    let rooms = xml::result("Rooms", vec![], ROOM_COLUMNS, &room_rows);
    (Note::info(text), vec![regs, rooms])
}

fn list(ctx: &Ctx, user: &str) -> Result<Reply, CommandError> {
    let u = ctx.push.get(user)?;
    let (note, results) = tables(&u, "You have", ctx.rooms.get());
    Ok(Reply::Done { note, results })
}

impl Command for PushList {
    fn node(&self) -> &'static str {
        NODE
    }

    fn name(&self) -> &'static str {
        "List my push registrations and rooms"
    }

    fn start(&self, r: Requester) -> CommandFuture {
        let answer = list(&self.0, &r.bare);
        Box::pin(async move { answer })
    }

    fn submit(&self, input: Input) -> CommandFuture {
        let answer = list(&self.0, &input.requester.bare);
        Box::pin(async move { answer })
    }
}
