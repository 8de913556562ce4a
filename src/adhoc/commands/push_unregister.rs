//! `push-unregister`: a `list-multi` field `registrations` with one option per registration
//! (value `jid<node`); the chosen ones are removed.

use std::sync::Arc;

use minidom::Element;
use xmpp_parsers::data_forms::FieldType;

use super::Ctx;
use crate::adhoc::xml::{self, Note, Submitted};
use crate::adhoc::{Command, CommandError, CommandFuture, Input, Reply, Requester};
use crate::push::UserPush;

pub const NODE: &str = "push-unregister";

pub struct PushUnregister(pub Arc<Ctx>);

pub fn form(u: &UserPush) -> Element {
    let options: Vec<(String, String)> = u
        .registrations
        .iter()
        .map(|r| (r.key(), r.describe()))
        .collect();
    xml::form(
        "Remove push registrations",
        "Choose the registrations to remove.",
        vec![xml::list(
            "registrations",
            FieldType::ListMulti,
            "Registrations",
            true,
            &[],
            &options,
        )],
    )
}

/// The chosen keys, each one of `u`'s (pure).
pub fn chosen(form: &Submitted, u: &UserPush) -> Result<Vec<String>, CommandError> {
    let keys = form.values("registrations");
    if keys.is_empty() {
        return Err(CommandError::BadPayload(
            "field 'registrations' is required: choose at least one".into(),
        ));
    }
    for k in keys {
        if !u.registrations.iter().any(|r| &r.key() == k) {
            return Err(CommandError::BadPayload(format!(
                "field 'registrations': {k:?} is not one of your registrations"
            )));
        }
    }
    Ok(keys.to_vec())
}

impl Command for PushUnregister {
    fn node(&self) -> &'static str {
        NODE
    }

    fn name(&self) -> &'static str {
        "Remove push registrations"
    }

    fn start(&self, r: Requester) -> CommandFuture {
        let answer = self
            .0
            .push
            .get(&r.bare)
            .map_err(CommandError::from)
            .map(|u| {
                if u.registrations.is_empty() {
                    Reply::Done {
                        note: Note::info("You have no push registrations."),
                        results: vec![],
                    }
                } else {
                    Reply::Form {
                        form: form(&u),
                        last: true,
                        data: Default::default(),
                    }
                }
            });
        Box::pin(async move { answer })
    }

    fn submit(&self, input: Input) -> CommandFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let user = input.requester.bare;
            let keys = chosen(&input.form, &ctx.push.get(&user)?)?;
            let gone = ctx.push.unregister(&user, &keys).await?;
            let names: Vec<String> = gone.iter().map(|r| r.describe()).collect();
            Ok(Reply::Done {
                note: Note::info(format!("Removed {}.", names.join(", "))),
                results: vec![],
            })
        })
    }
}
