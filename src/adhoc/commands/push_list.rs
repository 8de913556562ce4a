//! `push-list`: the requester's registrations (label, jid, node, registered, last push, error
//! count) and room rules (room, nick, mode), as two result tables. Completes at once.

use std::sync::Arc;

use minidom::Element;

use super::{reg_rows, room_rows, Ctx, REG_COLUMNS, ROOM_COLUMNS};
use crate::adhoc::xml::{self, Note};
use crate::adhoc::{Command, CommandError, CommandFuture, Input, Reply, Requester};
use crate::push::UserPush;

pub const NODE: &str = "push-list";

pub struct PushList(pub Arc<Ctx>);

/// The tables and a note counting them (pure).
pub fn tables(u: &UserPush, whose: &str) -> (Note, Vec<Element>) {
    let note = Note::info(format!(
        "{whose} {} registration(s) and {} room rule(s).",
        u.registrations.len(),
        u.rooms.len()
    ));
    let regs = xml::result("Push registrations", vec![], REG_COLUMNS, &reg_rows(u));
    let rooms = xml::result("Rooms", vec![], ROOM_COLUMNS, &room_rows(u));
    (note, vec![regs, rooms])
}

fn list(ctx: &Ctx, user: &str) -> Result<Reply, CommandError> {
    let u = ctx.push.get(user)?;
    let (note, results) = tables(&u, "You have");
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
