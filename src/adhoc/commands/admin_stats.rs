//! `admin-stats` (admins only): online resources, registrations, users with registrations,
//! watched rooms, the group-chat push counters since herald started (sent, coalesced, failed by
//! kind, registrations removed, dropped as too old, pending), and each sink's backlog.
//! Completes at once.

use std::sync::Arc;

use xmpp_parsers::data_forms::{Field, FieldType};

use super::Ctx;
use crate::adhoc::xml::{self, Note};
use crate::adhoc::{Command, CommandFuture, Input, Reply, Requester};
use crate::metrics::{PushFailure, RemovedBy};
use crate::muc::RoomState;

pub const NODE: &str = "admin-stats";

pub struct AdminStats(pub Arc<Ctx>);

fn stats(ctx: Arc<Ctx>) -> CommandFuture {
    Box::pin(async move {
        let online = match ctx.presence.get() {
            Some(reader) => match reader.stats().await {
                Ok(s) => s.online.to_string(),
                Err(_) => "unknown".to_owned(),
            },
            None => "unknown".to_owned(),
        };
        let p = ctx.push.stats();
        let num = |var: &str, label: &str, v: String| {
            xml::field(var, FieldType::TextSingle, label, false, &[v.as_str()])
        };
        let mut fields: Vec<Field> = vec![
            num("online", "Online resources", online),
            num(
                "registrations",
                "Push registrations",
                p.registrations.to_string(),
            ),
            num("users", "Users with registrations", p.users.to_string()),
            num("rooms", "Watched rooms", p.rooms.to_string()),
        ];
        if let Some(view) = ctx.rooms.get() {
            let all = view.all();
            let joined = all
                .iter()
                .filter(|(_, s)| s.state == RoomState::Joined)
                .count();
            let failing = all
                .iter()
                .filter(|(_, s)| matches!(s.state, RoomState::Retrying | RoomState::Gone))
                .count();
            fields.push(num(
                "rooms-joined",
                "Rooms herald is in",
                joined.to_string(),
            ));
            fields.push(num(
                "rooms-failing",
                "Rooms herald cannot join (retrying or gone)",
                failing.to_string(),
            ));
        }
        let m = ctx.push.metrics();
        fields.push(num("pushes-sent", "Pushes sent", m.sent.get().to_string()));
        fields.push(num(
            "pushes-coalesced",
            "Messages coalesced into a later push",
            m.coalesced.get().to_string(),
        ));
        for kind in PushFailure::ALL {
            fields.push(num(
                &format!("pushes-failed-{}", kind.label()),
                &format!("Push attempts failed ({})", kind.label()),
                m.failed_count(kind).to_string(),
            ));
        }
        let removed =
            m.removed_count(RemovedBy::Errors) + m.removed_count(RemovedBy::RemoteDisable);
        fields.push(num(
            "registrations-removed",
            "Registrations removed (errors or remote disable)",
            removed.to_string(),
        ));
        fields.push(num(
            "pushes-expired",
            "Pushes dropped as too old",
            m.expired.get().to_string(),
        ));
        fields.push(num(
            "pushes-pending",
            "Pushes pending",
            m.pending.get().to_string(),
        ));
        let mut rows = Vec::new();
        for name in ctx.store.sink_names() {
            let backlog = ctx.store.sink_queue(&name).map(|q| q.count()).unwrap_or(0);
            rows.push(vec![name, backlog.to_string()]);
        }
        fields.push(num("sinks", "Sinks", rows.len().to_string()));
        let result = xml::result(
            "herald statistics",
            fields,
            &[("sink", "Sink"), ("backlog", "Backlog")],
            &rows,
        );
        Ok(Reply::Done {
            note: Note::info(format!(
                "{} registration(s) of {} user(s), {} watched room(s).",
                p.registrations, p.users, p.rooms
            )),
            results: vec![result],
        })
    })
}

impl Command for AdminStats {
    fn node(&self) -> &'static str {
        NODE
    }

    fn name(&self) -> &'static str {
        "herald statistics"
    }

    fn admin_only(&self) -> bool {
        true
    }

    fn start(&self, _: Requester) -> CommandFuture {
        stats(self.0.clone())
    }

    fn submit(&self, _: Input) -> CommandFuture {
        stats(self.0.clone())
    }
}
