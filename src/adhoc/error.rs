//! XEP-0050 §4.6 errors, and how refusals and store failures map onto them.

use super::NS_COMMANDS;
use crate::xmpp::stanza::{ErrorType, StanzaError};

/// Why a command request is refused (XEP-0050 §4.6 and a few general conditions).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command")]
    ItemNotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown action {0:?}")]
    MalformedAction(String),
    #[error("{0}")]
    BadAction(String),
    #[error("language {0:?} is not supported; herald speaks English (en)")]
    BadLocale(String),
    #[error("{0}")]
    BadPayload(String),
    #[error("{0}")]
    BadSessionId(String),
    #[error("this session has ended (completed, canceled or expired)")]
    SessionExpired,
    /// A limit was reached (`not-allowed`, with the text naming the limit).
    #[error("{0}")]
    NotAllowed(String),
    #[error("too many command sessions are open; try again later")]
    Busy,
    #[error("herald could not store the change; nothing was changed")]
    Store,
}

impl CommandError {
    pub fn to_stanza_error(&self) -> StanzaError {
        let text = self.to_string();
        let app = |name: &str| {
            StanzaError::new(ErrorType::Modify, "bad-request")
                .with_text(text.as_str())
                .with_app(NS_COMMANDS, name)
        };
        match self {
            CommandError::ItemNotFound => {
                StanzaError::new(ErrorType::Cancel, "item-not-found").with_text(text)
            }
            CommandError::Forbidden(_) => {
                StanzaError::new(ErrorType::Cancel, "forbidden").with_text(text)
            }
            CommandError::BadRequest(_) => StanzaError::bad_request(&text),
            CommandError::MalformedAction(_) => app("malformed-action"),
            CommandError::BadAction(_) => app("bad-action"),
            CommandError::BadLocale(_) => app("bad-locale"),
            CommandError::BadPayload(_) => app("bad-payload"),
            CommandError::BadSessionId(_) => app("bad-sessionid"),
            CommandError::SessionExpired => StanzaError::new(ErrorType::Cancel, "not-allowed")
                .with_text(text)
                .with_app(NS_COMMANDS, "session-expired"),
            CommandError::NotAllowed(_) => {
                StanzaError::new(ErrorType::Cancel, "not-allowed").with_text(text)
            }
            CommandError::Busy => {
                StanzaError::new(ErrorType::Wait, "resource-constraint").with_text(text)
            }
            CommandError::Store => {
                StanzaError::new(ErrorType::Wait, "internal-server-error").with_text(text)
            }
        }
    }
}

impl From<crate::push::PushError> for CommandError {
    fn from(e: crate::push::PushError) -> Self {
        use crate::push::{PushError, Refusal};
        match e {
            PushError::Refused(Refusal::Forbidden(t)) => CommandError::Forbidden(t),
            PushError::Refused(r @ Refusal::BadField { .. }) => CommandError::BadPayload(r.text()),
            PushError::Refused(Refusal::Limit(t)) => CommandError::NotAllowed(t),
            PushError::Store(err) => {
                tracing::warn!(error = %err, "a command could not store its change");
                CommandError::Store
            }
        }
    }
}

impl From<crate::push::Refusal> for CommandError {
    fn from(r: crate::push::Refusal) -> Self {
        CommandError::from(crate::push::PushError::Refused(r))
    }
}

impl From<crate::store::StoreError> for CommandError {
    fn from(e: crate::store::StoreError) -> Self {
        CommandError::from(crate::push::PushError::Store(e))
    }
}
