//! XEP-0050's XML: reading a `<command/>` request and building the answers, plus the data-form
//! helpers commands use (xmpp-parsers' [`DataForm`] for reading submitted forms and building
//! forms; result tables get their `<reported/>` and `<item/>` here, which `DataForm` lacks).

use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType, Option_};

use super::{CommandError, NS_COMMANDS};

pub const NS_DATA: &str = "jabber:x:data";

/// XEP-0050 actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Execute,
    Next,
    Prev,
    Complete,
    Cancel,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "execute" => Action::Execute,
            "next" => Action::Next,
            "prev" => Action::Prev,
            "complete" => Action::Complete,
            "cancel" => Action::Cancel,
            _ => return None,
        })
    }
}

/// A `<command/>` request.
#[derive(Debug, Clone)]
pub struct Request {
    pub node: String,
    pub sessionid: Option<String>,
    pub action: Action,
    /// A submitted form (`<x type='submit'>`). A `<x type='cancel'>` reads as `action='cancel'`.
    pub form: Option<Element>,
}

/// Reads a `<command xmlns='http://jabber.org/protocol/commands'/>`.
pub fn parse_request(el: &Element) -> Result<Request, CommandError> {
    if el.name() != "command" {
        return Err(CommandError::BadRequest(format!(
            "expected <command/>, got <{}/>",
            el.name()
        )));
    }
    let node = match el.attr("node") {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => return Err(CommandError::BadRequest("<command/> needs a node".into())),
    };
    if let Some(lang) = el
        .attrs()
        .iter()
        .find(|((_, name), _)| name.as_str() == "lang")
        .map(|(_, v)| v.as_str())
    {
        let primary = lang.split('-').next().unwrap_or_default();
        if !primary.eq_ignore_ascii_case("en") {
            return Err(CommandError::BadLocale(lang.to_owned()));
        }
    }
    let mut action = match el.attr("action") {
        None => Action::Execute,
        Some(a) => Action::parse(a).ok_or_else(|| CommandError::MalformedAction(a.to_owned()))?,
    };
    let mut form = None;
    for x in el.children().filter(|c| c.is("x", NS_DATA)) {
        match x.attr("type") {
            Some("submit") => form = Some(x.clone()),
            Some("cancel") => action = Action::Cancel,
            _ => {
                return Err(CommandError::BadPayload(
                    "a form sent to herald must be of type 'submit'".into(),
                ))
            }
        }
    }
    Ok(Request {
        node,
        sessionid: el
            .attr("sessionid")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        action,
        form,
    })
}

/// A `<note/>`'s type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteType {
    Info,
    Warn,
    Error,
}

/// A note to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteType,
    pub text: String,
}

impl Note {
    pub fn info(text: impl Into<String>) -> Note {
        Note {
            kind: NoteType::Info,
            text: text.into(),
        }
    }

    pub fn warn(text: impl Into<String>) -> Note {
        Note {
            kind: NoteType::Warn,
            text: text.into(),
        }
    }
}

fn command(node: &str, sessionid: &str, status: &str) -> minidom::ElementBuilder {
    Element::builder("command", NS_COMMANDS)
        .attr(crate::n!("node"), node)
        .attr(crate::n!("sessionid"), sessionid)
        .attr(crate::n!("status"), status)
}

/// `status='executing'` with `<actions/>` and the form of `stage`.
pub fn executing(node: &str, sessionid: &str, form: Element, stage: usize, last: bool) -> Element {
    let default = if last { "complete" } else { "next" };
    let mut actions = Element::builder("actions", NS_COMMANDS).attr(crate::n!("execute"), default);
    if stage > 0 {
        actions = actions.append(Element::builder("prev", NS_COMMANDS).build());
    }
    actions = actions.append(Element::builder(default, NS_COMMANDS).build());
    command(node, sessionid, "executing")
        .append(actions.build())
        .append(form)
        .build()
}

/// `status='completed'` with the note and the result forms.
pub fn completed(node: &str, sessionid: &str, note: &Note, results: Vec<Element>) -> Element {
    let kind = match note.kind {
        NoteType::Info => "info",
        NoteType::Warn => "warn",
        NoteType::Error => "error",
    };
    let mut b = command(node, sessionid, "completed").append(
        Element::builder("note", NS_COMMANDS)
            .attr(crate::n!("type"), kind)
            .append(note.text.as_str())
            .build(),
    );
    for r in results {
        b = b.append(r);
    }
    b.build()
}

/// `status='canceled'`.
pub fn canceled(node: &str, sessionid: &str) -> Element {
    command(node, sessionid, "canceled").build()
}

// ---------------------------------------------------------------------------------------------
// Data forms
// ---------------------------------------------------------------------------------------------

/// A form for the user to fill (`type='form'`).
pub fn form(title: &str, instructions: &str, fields: Vec<Field>) -> Element {
    Element::from(DataForm {
        type_: DataFormType::Form,
        title: Some(title.to_owned()),
        instructions: Some(instructions.to_owned()),
        fields,
    })
}

/// A result form (`type='result'`) with `fields`, then a table: `columns` (var, label) and one
/// `<item/>` per row (values in column order; an empty value is left out).
pub fn result(
    title: &str,
    fields: Vec<Field>,
    columns: &[(&str, &str)],
    rows: &[Vec<String>],
) -> Element {
    let mut x = Element::from(DataForm {
        type_: DataFormType::Result_,
        title: Some(title.to_owned()),
        instructions: None,
        fields,
    });
    if columns.is_empty() {
        return x;
    }
    let mut reported = Element::builder("reported", NS_DATA);
    for (var, label) in columns {
        reported = reported.append(
            Element::builder("field", NS_DATA)
                .attr(crate::n!("var"), *var)
                .attr(crate::n!("label"), *label)
                .attr(crate::n!("type"), "text-single")
                .build(),
        );
    }
    x.append_child(reported.build());
    for row in rows {
        let mut item = Element::builder("item", NS_DATA);
        for ((var, _), value) in columns.iter().zip(row) {
            let mut f = Element::builder("field", NS_DATA).attr(crate::n!("var"), *var);
            if !value.is_empty() {
                f = f.append(
                    Element::builder("value", NS_DATA)
                        .append(value.as_str())
                        .build(),
                );
            }
            item = item.append(f.build());
        }
        x.append_child(item.build());
    }
    x
}

/// A field with a label, optionally required, with default values.
pub fn field(var: &str, type_: FieldType, label: &str, required: bool, values: &[&str]) -> Field {
    let mut f = Field::new(var, type_);
    f.label = Some(label.to_owned());
    f.required = required;
    f.values = values.iter().map(|v| (*v).to_owned()).collect();
    f
}

/// A `list-single`/`list-multi` field with its options `(value, label)`.
pub fn list(
    var: &str,
    type_: FieldType,
    label: &str,
    required: bool,
    default: &[&str],
    options: &[(String, String)],
) -> Field {
    let mut f = field(var, type_, label, required, default);
    f.options = options
        .iter()
        .map(|(value, label)| Option_ {
            label: Some(label.clone()),
            value: value.clone(),
        })
        .collect();
    f
}

/// A `fixed` field (text shown to the user).
pub fn fixed(text: &str) -> Field {
    let mut f = Field::new("", FieldType::Fixed);
    f.var = None;
    f.values = vec![text.to_owned()];
    f
}

/// A submitted form, read with xmpp-parsers' [`DataForm`].
#[derive(Debug, Clone)]
pub struct Submitted(DataForm);

impl Submitted {
    pub fn parse(x: &Element) -> Result<Submitted, CommandError> {
        DataForm::try_from(x.clone())
            .map(Submitted)
            .map_err(|e| CommandError::BadPayload(format!("the form cannot be read: {e}")))
    }

    /// Every value of `var`.
    pub fn values(&self, var: &str) -> &[String] {
        self.0
            .fields
            .iter()
            .find(|f| f.var.as_deref() == Some(var))
            .map(|f| f.values.as_slice())
            .unwrap_or_default()
    }

    /// The first value of `var`, if not empty.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.values(var)
            .first()
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The first value of `var`; `<bad-payload/>` naming it when it is missing or empty.
    pub fn required(&self, var: &str) -> Result<&str, CommandError> {
        self.value(var)
            .ok_or_else(|| CommandError::BadPayload(format!("field '{var}' is required")))
    }
}
