//! What an app server's answer to a push means, as a table (pure), and its effect on the
//! registration's persisted error counter.
//!
//! | answer | counter | the push |
//! |---|---|---|
//! | `result` | reset to 0 (written only if it was above 0) | done |
//! | error of type `wait` | kept | retried with backoff |
//! | any other error | +1 | dropped |
//! | no answer within `push.timeout` | +1 | retried with backoff |
//! | connection lost before the answer | kept | retried after the next login |
//! | herald stopping | kept | stays persisted for the next start |
//!
//! At `push.max_errors` errors in a row the registration is removed.

use crate::metrics::PushFailure;
use crate::xmpp::iq_tracker::IqError;
use crate::xmpp::stanza::{ErrorType, StanzaError};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Accepted,
    Rejected(StanzaError),
    TimedOut,
    Disconnected,
    Stopping,
}

impl Attempt {
    /// The attempt's end, from the answer future's output (`None`: the deadline passed).
    pub fn from_answer(answer: Option<Result<minidom::Element, IqError>>) -> Attempt {
        match answer {
            None => Attempt::TimedOut,
            Some(Ok(_)) => Attempt::Accepted,
            Some(Err(IqError::Stanza(e))) => Attempt::Rejected(e),
            Some(Err(IqError::Disconnected)) => Attempt::Disconnected,
            Some(Err(IqError::Closed)) => Attempt::Stopping,
        }
    }

    /// The `kind` it counts as in the failure metric (`None`: no failure).
    pub fn failure(&self) -> Option<PushFailure> {
        match self {
            Attempt::Accepted | Attempt::Stopping => None,
            Attempt::Rejected(e) if e.kind == ErrorType::Wait => Some(PushFailure::Wait),
            Attempt::Rejected(_) => Some(PushFailure::Error),
            Attempt::TimedOut => Some(PushFailure::Timeout),
            Attempt::Disconnected => Some(PushFailure::Disconnected),
        }
    }

    /// A short description for logs (never the secret: errors carry only the peer's text).
    pub fn describe(&self) -> String {
        match self {
            Attempt::Accepted => "accepted".into(),
            Attempt::Rejected(e) => e.to_string(),
            Attempt::TimedOut => "no answer within push.timeout".into(),
            Attempt::Disconnected => "the connection was lost before the answer".into(),
            Attempt::Stopping => "herald is stopping".into(),
        }
    }
}

/// What becomes of the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Answered for good: removed from the store.
    Done,
    /// Tried again after a backoff delay.
    Backoff,
    /// Tried again after the next login.
    AfterUp,
    /// Left persisted (herald stops).
    Keep,
}

/// What becomes of the registration's error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Unchanged,
    /// Set to this value.
    Set(u32),
    /// The limit is reached: remove the registration.
    Remove,
}

/// The table above, for a registration that had `errors` errors in a row.
pub fn policy(attempt: &Attempt, errors: u32, max_errors: u32) -> (Counter, Next) {
    let counted = |next| {
        let n = errors.saturating_add(1);
        if n >= max_errors {
            (Counter::Remove, Next::Done)
        } else {
            (Counter::Set(n), next)
        }
    };
    match attempt {
        Attempt::Accepted if errors > 0 => (Counter::Set(0), Next::Done),
        Attempt::Accepted => (Counter::Unchanged, Next::Done),
        Attempt::Rejected(e) if e.kind == ErrorType::Wait => (Counter::Unchanged, Next::Backoff),
        Attempt::Rejected(_) => counted(Next::Done),
        Attempt::TimedOut => counted(Next::Backoff),
        Attempt::Disconnected => (Counter::Unchanged, Next::AfterUp),
        Attempt::Stopping => (Counter::Unchanged, Next::Keep),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(xml: &str) -> Attempt {
        let el: minidom::Element = xml.parse().unwrap();
        Attempt::from_answer(Some(Err(IqError::Stanza(StanzaError::from_stanza(&el)))))
    }

    const CONSTRAINT: &str = "<iq xmlns='jabber:component:accept' type='error' from='pubsub.localhost' id='1'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Unknown field 'secret' of type 'http://jabber.org/protocol/pubsub#publish-options'</text></error></iq>";
    const NOT_FOUND: &str = "<iq xmlns='jabber:component:accept' type='error' from='pubsub.localhost' id='1'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>";
    const RESULT: &str = "<iq xmlns='jabber:component:accept' from='pubsub.localhost' to='push.localhost' id='probe1-5' type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='push-042000-a'><item id='c901e5b1'/></publish></pubsub></iq>";

    #[test]
    fn the_error_table() {
        let ok = Attempt::from_answer(Some(Ok(RESULT.parse().unwrap())));
        let wait = err(CONSTRAINT);
        let cancel = err(NOT_FOUND);
        let rows = [
            (&ok, 0, Counter::Unchanged, Next::Done),
            (&ok, 3, Counter::Set(0), Next::Done),
            (&wait, 3, Counter::Unchanged, Next::Backoff),
            (&cancel, 3, Counter::Set(4), Next::Done),
            (&cancel, 15, Counter::Remove, Next::Done),
            (&Attempt::TimedOut, 0, Counter::Set(1), Next::Backoff),
            (&Attempt::TimedOut, 15, Counter::Remove, Next::Done),
            (
                &Attempt::Disconnected,
                15,
                Counter::Unchanged,
                Next::AfterUp,
            ),
            (&Attempt::Stopping, 15, Counter::Unchanged, Next::Keep),
        ];
        for (attempt, errors, counter, next) in rows {
            assert_eq!(
                policy(attempt, errors, 16),
                (counter, next),
                "{attempt:?} after {errors}"
            );
        }
        assert_eq!(wait.failure(), Some(PushFailure::Wait));
        assert_eq!(cancel.failure(), Some(PushFailure::Error));
        assert_eq!(ok.failure(), None);
        assert!(wait.describe().contains("resource-constraint"));
        assert_eq!(
            Attempt::from_answer(None).failure(),
            Some(PushFailure::Timeout)
        );
    }

    #[test]
    fn max_errors_of_one_removes_at_the_first_error() {
        assert_eq!(
            policy(&Attempt::TimedOut, 0, 1),
            (Counter::Remove, Next::Done)
        );
    }
}
