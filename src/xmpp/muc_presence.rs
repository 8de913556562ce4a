//! What the rooms read of a MUC presence (XEP-0045) or of a presence error, collected while the
//! presence is parsed ([`super::inbound`]): the `<x xmlns='…muc#user'/>` item, status codes and
//! `<destroy/>`, and the `<error/>` of a `type='error'` presence. Only these presences pay for it:
//! a user's presence never has these children and leaves [`super::PresenceStanza::muc`] `None`.

use super::stanza::{NS_COMPONENT, NS_MUC_USER, NS_STANZA_ERRORS};

/// The MUC part of a presence.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MucDetails {
    /// The first `<item/>` of the muc#user `<x/>`.
    pub item: Option<MucItem>,
    /// Every `<status code/>` of the muc#user `<x/>`, in order (unparsable ones skipped).
    pub codes: Vec<u16>,
    /// `<destroy/>`: the room was destroyed.
    pub destroy: Option<Destroy>,
    /// The `<error/>` of a `type='error'` presence.
    pub error: Option<PresenceError>,
}

impl MucDetails {
    pub fn has_code(&self, code: u16) -> bool {
        self.codes.contains(&code)
    }
}

/// `<item jid role affiliation nick><reason/></item>`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MucItem {
    pub jid: Option<String>,
    pub role: Option<String>,
    pub affiliation: Option<String>,
    /// The new nick of a nick change (status 303).
    pub nick: Option<String>,
    pub reason: Option<String>,
}

/// `<destroy jid><reason/></destroy>`: the alternative venue and why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Destroy {
    pub jid: Option<String>,
    pub reason: Option<String>,
}

/// `<error type><condition/><text/></error>`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PresenceError {
    /// `cancel`, `auth`, `wait`, …
    pub kind: Option<String>,
    /// The defined condition, e.g. `conflict`; empty when there is none.
    pub condition: String,
    pub text: Option<String>,
}

/// Which child of `<presence/>` is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    MucUser,
    Error,
}

#[derive(Debug, Clone, Copy)]
enum TextOf {
    ItemReason,
    DestroyReason,
    Error,
}

/// Collects [`MucDetails`] from the events below `<presence/>`.
#[derive(Debug, Default)]
pub(super) struct MucCollector {
    details: Option<Box<MucDetails>>,
    section: Option<Section>,
    /// The depth-2 element being read (`item`, `destroy`).
    parent: Option<&'static str>,
    text_for: Option<TextOf>,
    text: String,
}

type Attrs = rxml::AttrMap;

fn attr(attrs: &mut Attrs, name: &str) -> Option<String> {
    attrs.remove(&rxml::Namespace::NONE, name)
}

impl MucCollector {
    fn details(&mut self) -> &mut MucDetails {
        self.details.get_or_insert_with(Default::default)
    }

    /// A start tag at `depth` (1 = a child of `<presence/>`); `error` when the presence has
    /// `type='error'`. Returns whether the tag is a muc#user `<x/>`.
    pub(super) fn start(
        &mut self,
        depth: usize,
        ns: &rxml::Namespace,
        name: &str,
        mut attrs: Attrs,
        error: bool,
    ) -> bool {
        if depth == 1 {
            self.section = None;
            if *ns == NS_MUC_USER && name == "x" {
                self.section = Some(Section::MucUser);
                self.details();
                return true;
            }
            if error && *ns == NS_COMPONENT && name == "error" && self.details().error.is_none() {
                self.section = Some(Section::Error);
                self.details().error = Some(PresenceError {
                    kind: attr(&mut attrs, "type"),
                    ..PresenceError::default()
                });
            }
            return false;
        }
        match (self.section, depth) {
            (Some(Section::MucUser), 2) if *ns == NS_MUC_USER => {
                self.parent = None;
                match name {
                    "item" if self.details().item.is_none() => {
                        self.parent = Some("item");
                        let item = MucItem {
                            jid: attr(&mut attrs, "jid"),
                            role: attr(&mut attrs, "role"),
                            affiliation: attr(&mut attrs, "affiliation"),
                            nick: attr(&mut attrs, "nick"),
                            reason: None,
                        };
                        self.details().item = Some(item);
                    }
                    "status" => {
                        if let Some(code) = attr(&mut attrs, "code").and_then(|c| c.parse().ok()) {
                            self.details().codes.push(code);
                        }
                    }
                    "destroy" if self.details().destroy.is_none() => {
                        self.parent = Some("destroy");
                        let jid = attr(&mut attrs, "jid");
                        self.details().destroy = Some(Destroy { jid, reason: None });
                    }
                    _ => {}
                }
            }
            (Some(Section::MucUser), 3) if *ns == NS_MUC_USER && name == "reason" => {
                self.text_for = match self.parent {
                    Some("item") => Some(TextOf::ItemReason),
                    Some("destroy") => Some(TextOf::DestroyReason),
                    _ => None,
                };
            }
            (Some(Section::Error), 2) if *ns == NS_STANZA_ERRORS => {
                if name == "text" {
                    self.text_for = Some(TextOf::Error);
                } else if let Some(e) = self.details().error.as_mut() {
                    if e.condition.is_empty() {
                        e.condition = name.to_owned();
                    }
                }
            }
            _ => {}
        }
        false
    }

    pub(super) fn text(&mut self, text: &str) {
        if self.text_for.is_some() {
            self.text.push_str(text);
        }
    }

    /// An end tag of an element at `depth`.
    pub(super) fn end(&mut self, depth: usize) {
        if let Some(field) = self.text_for.take() {
            let text = Some(std::mem::take(&mut self.text));
            let d = self.details();
            match field {
                TextOf::ItemReason => {
                    if let Some(i) = d.item.as_mut() {
                        i.reason = text;
                    }
                }
                TextOf::DestroyReason => {
                    if let Some(x) = d.destroy.as_mut() {
                        x.reason = text;
                    }
                }
                TextOf::Error => {
                    if let Some(e) = d.error.as_mut() {
                        e.text = text;
                    }
                }
            }
        }
        match depth {
            1 => self.section = None,
            2 => self.parent = None,
            _ => {}
        }
    }

    /// Whether any MUC child was read yet (so the collector must see every event).
    pub(super) fn active(&self) -> bool {
        self.section.is_some()
    }

    pub(super) fn finish(&mut self) -> Option<Box<MucDetails>> {
        self.details.take()
    }
}

#[cfg(test)]
#[path = "muc_presence_tests.rs"]
mod tests;
