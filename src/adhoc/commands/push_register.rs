//! `push-register`: register (or update) a push app server.
//!
//! Fields: `jid` (jid-single, required: the app server), `node` (text-single, required),
//! `secret` (text-private, optional: sent back in the publish-options), `label` (text-single,
//! optional: "phone"). The same `jid` + `node` again updates that registration; one more than
//! `[push] max_devices` evicts the least recently used, and the note says so.

use std::sync::Arc;

use minidom::Element;
use xmpp_parsers::data_forms::FieldType;

use super::Ctx;
use crate::adhoc::xml::{self, Note, Submitted};
use crate::adhoc::{Command, CommandError, CommandFuture, Input, Reply, Requester};
use crate::push::policy::{self, MAX_LABEL_BYTES, MAX_SECRET_BYTES};
use crate::push::{now_ms, Registration, Upsert};

pub const NODE: &str = "push-register";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

pub struct PushRegister(pub Arc<Ctx>);

pub fn form() -> Element {
    xml::form(
        "Register a push app server",
        "Enter the app server's JID and node (your app shows them), and its secret if it gave one.",
        vec![
            xml::field("jid", FieldType::JidSingle, "App server JID", true, &[]),
            xml::field("node", FieldType::TextSingle, "Node", true, &[]),
            xml::field("secret", FieldType::TextPrivate, "Secret", false, &[]),
            xml::field(
                "label",
                FieldType::TextSingle,
                "Label (e.g. phone)",
                false,
                &[],
            ),
        ],
    )
}

/// The publish-options form that carries `secret`, as a client would send it in `<enable/>`.
pub fn publish_options(secret: &str) -> String {
    let x = Element::builder("x", xml::NS_DATA)
        .attr(crate::n!("type"), "submit")
        .append(
            Element::builder("field", xml::NS_DATA)
                .attr(crate::n!("var"), "FORM_TYPE")
                .append(
                    Element::builder("value", xml::NS_DATA)
                        .append(PUBLISH_OPTIONS)
                        .build(),
                )
                .build(),
        )
        .append(
            Element::builder("field", xml::NS_DATA)
                .attr(crate::n!("var"), "secret")
                .append(
                    Element::builder("value", xml::NS_DATA)
                        .append(secret)
                        .build(),
                )
                .build(),
        )
        .build();
    String::from(&x)
}

/// Reads and checks the form (pure).
pub fn parse(form: &Submitted, user: &str, now: i64) -> Result<Registration, CommandError> {
    let jid = policy::app_server("jid", form.required("jid")?, user)?;
    let node = policy::node("node", form.required("node")?)?;
    let mut reg = Registration::new(&jid, &node, now);
    reg.label = policy::short_text("label", form.value("label"), MAX_LABEL_BYTES)?;
    if let Some(secret) = form.value("secret") {
        if secret.len() > MAX_SECRET_BYTES {
            return Err(CommandError::BadPayload(format!(
                "field 'secret' is longer than {MAX_SECRET_BYTES} bytes"
            )));
        }
        reg.options = Some(publish_options(secret));
    }
    Ok(reg)
}

/// The note for an outcome.
pub fn note(reg: &Registration, out: &Upsert, max_devices: usize) -> Note {
    match out {
        Upsert::Updated => Note::info(format!("Updated {}.", reg.describe())),
        Upsert::Added { evicted: None } => Note::info(format!("Registered {}.", reg.describe())),
        Upsert::Added { evicted: Some(old) } => Note::warn(format!(
            "Registered {}. You had {max_devices} registrations already (the most herald keeps), \
             so the least recently used one, {}, was removed.",
            reg.describe(),
            old.describe()
        )),
    }
}

impl Command for PushRegister {
    fn node(&self) -> &'static str {
        NODE
    }

    fn name(&self) -> &'static str {
        "Register a push app server"
    }

    fn start(&self, _: Requester) -> CommandFuture {
        Box::pin(async {
            Ok(Reply::Form {
                form: form(),
                last: true,
                data: Default::default(),
            })
        })
    }

    fn submit(&self, input: Input) -> CommandFuture {
        let ctx = self.0.clone();
        Box::pin(async move {
            let user = input.requester.bare;
            let reg = parse(&input.form, &user, now_ms())?;
            let out = ctx.push.register(&user, reg.clone()).await?;
            tracing::info!(user = %user, app = %reg.jid, outcome = ?out, "push registration via command");
            Ok(Reply::Done {
                note: note(&reg, &out, ctx.push.settings().max_devices),
                results: vec![],
            })
        })
    }
}
