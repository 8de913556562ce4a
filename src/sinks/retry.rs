//! Webhook retry classification: what one attempt to `POST` a batch came to, decided in one pure
//! function, [`classify`], so that the whole table is unit-tested without a network.
//!
//! | attempt | verdict |
//! |---|---|
//! | 2xx | delivered |
//! | 408, 429, 5xx except 501 | retry; 429 and 503 honour `Retry-After` (capped at one hour) |
//! | timeout, connection failure, any other error without an answer | retry |
//! | everything else: 1xx, 3xx, other 4xx, 501 | dead letter |
//!
//! Errors without an answer are retried because they say nothing about the batch: dead-lettering
//! on them would throw events away whenever the endpoint is down. Redirects are dead letters
//! because herald's client does not follow them (a `POST` must not silently change target): the
//! operator must fix the URL.
//!
//! `Retry-After` is either a number of seconds or an HTTP date. A value that gives no wait (`0`,
//! or a date that is not in the future, e.g. from an endpoint whose clock is behind) yields
//! `after: None`, as does an unparsable one: the worker's jittered backoff then applies, so a
//! misbehaving endpoint cannot make herald retry in a tight loop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDateTime};

use crate::outbox::Verdict;

/// The longest wait a `Retry-After` can impose; longer values are capped to it, so that a typo
/// on the endpoint cannot stall a sink for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// One attempt to deliver a batch, as the transport saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// The endpoint answered with `status`; `retry_after` is the raw `Retry-After` header, if any.
    Answered {
        status: u16,
        retry_after: Option<&'a str>,
    },
    /// No complete answer within the sink's `timeout`.
    TimedOut,
    /// The connection could not be established (DNS, refused, TLS handshake, …).
    ConnectFailed(String),
    /// Any other failure before an answer arrived (connection reset while sending, …).
    OtherError(String),
}

/// The verdict on `attempt`; `now` is the current time, to turn a `Retry-After` date into a wait.
///
/// Reasons are short, one line, and never contain the request (so never a secret): `HTTP 503
/// Service Unavailable`, `timed out`, `connection failed: …`.
pub fn classify(attempt: Attempt<'_>, now: SystemTime) -> Verdict {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(&status) => Verdict::Delivered,
        Attempt::Answered {
            status,
            retry_after,
        } if status == 408 || status == 429 || ((500..600).contains(&status) && status != 501) => {
            let after = match status {
                429 | 503 => retry_after.and_then(|value| parse_retry_after(value, now)),
                _ => None,
            };
            Verdict::Retry {
                after,
                reason: status_reason(status),
            }
        }
        Attempt::Answered { status, .. } => Verdict::DeadLetter {
            reason: status_reason(status),
        },
        Attempt::TimedOut => Verdict::Retry {
            after: None,
            reason: "timed out".to_owned(),
        },
        Attempt::ConnectFailed(error) => Verdict::Retry {
            after: None,
            reason: format!("connection failed: {error}"),
        },
        Attempt::OtherError(error) => Verdict::Retry {
            after: None,
            reason: format!("request failed: {error}"),
        },
    }
}

/// `HTTP 400 Bad Request`; just `HTTP 499` for a code without a standard reason phrase.
pub fn status_reason(status: u16) -> String {
    let text = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason());
    match text {
        Some(text) => format!("HTTP {status} {text}"),
        None => format!("HTTP {status}"),
    }
}

/// The wait a `Retry-After` value asks for, capped at [`MAX_RETRY_AFTER`]; `None` when it is
/// unparsable or asks for no wait (see the module documentation).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = parse_http_date(value)?;
        at.duration_since(now).ok()?
    };
    (!wait.is_zero()).then(|| wait.min(MAX_RETRY_AFTER))
}

/// An HTTP date (RFC 9110 §5.6.7): the preferred IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`,
/// and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms that recipients must still accept.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let seconds = if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        date.timestamp()
    } else {
        ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())?
            .and_utc()
            .timestamp()
    };
    // Dates before 1970 are in the past anyway.
    let seconds = u64::try_from(seconds).unwrap_or(0);
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sun, 06 Nov 1994 08:49:37 GMT, the date of RFC 9110's examples.
    const EXAMPLE_DATE: u64 = 784_111_777;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(EXAMPLE_DATE)
    }

    fn answered(status: u16) -> Verdict {
        classify(
            Attempt::Answered {
                status,
                retry_after: None,
            },
            now(),
        )
    }

    fn with_retry_after(status: u16, retry_after: &str) -> Verdict {
        classify(
            Attempt::Answered {
                status,
                retry_after: Some(retry_after),
            },
            now(),
        )
    }

    fn retry(after: Option<Duration>, reason: &str) -> Verdict {
        Verdict::Retry {
            after,
            reason: reason.to_owned(),
        }
    }

    fn dead(reason: &str) -> Verdict {
        Verdict::DeadLetter {
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn success_is_delivered() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(answered(status), Verdict::Delivered, "{status}");
        }
    }

    #[test]
    fn timeouts_throttling_and_server_errors_are_retried() {
        assert_eq!(answered(408), retry(None, "HTTP 408 Request Timeout"));
        assert_eq!(answered(429), retry(None, "HTTP 429 Too Many Requests"));
        assert_eq!(answered(500), retry(None, "HTTP 500 Internal Server Error"));
        assert_eq!(answered(502), retry(None, "HTTP 502 Bad Gateway"));
        assert_eq!(answered(503), retry(None, "HTTP 503 Service Unavailable"));
        assert_eq!(answered(504), retry(None, "HTTP 504 Gateway Timeout"));
        assert_eq!(answered(599), retry(None, "HTTP 599"));
    }

    #[test]
    fn not_implemented_is_a_dead_letter() {
        assert_eq!(answered(501), dead("HTTP 501 Not Implemented"));
    }

    #[test]
    fn other_answers_are_dead_letters() {
        assert_eq!(answered(100), dead("HTTP 100 Continue"));
        assert_eq!(answered(301), dead("HTTP 301 Moved Permanently"));
        assert_eq!(answered(307), dead("HTTP 307 Temporary Redirect"));
        assert_eq!(answered(400), dead("HTTP 400 Bad Request"));
        assert_eq!(answered(401), dead("HTTP 401 Unauthorized"));
        assert_eq!(answered(403), dead("HTTP 403 Forbidden"));
        assert_eq!(answered(404), dead("HTTP 404 Not Found"));
        assert_eq!(answered(413), dead("HTTP 413 Payload Too Large"));
        assert_eq!(answered(422), dead("HTTP 422 Unprocessable Entity"));
        assert_eq!(answered(499), dead("HTTP 499"));
        assert_eq!(answered(600), dead("HTTP 600"));
    }

    #[test]
    fn failures_without_an_answer_are_retried() {
        assert_eq!(classify(Attempt::TimedOut, now()), retry(None, "timed out"));
        assert_eq!(
            classify(Attempt::ConnectFailed("Connection refused".into()), now()),
            retry(None, "connection failed: Connection refused")
        );
        assert_eq!(
            classify(Attempt::OtherError("connection reset".into()), now()),
            retry(None, "request failed: connection reset")
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        let two = Some(Duration::from_secs(2));
        assert_eq!(
            with_retry_after(429, "2"),
            retry(two, "HTTP 429 Too Many Requests")
        );
        assert_eq!(
            with_retry_after(503, " 2 "),
            retry(two, "HTTP 503 Service Unavailable")
        );
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let in_two_minutes = Some(Duration::from_secs(120));
        for date in [
            "Sun, 06 Nov 1994 08:51:37 GMT",
            "Sunday, 06-Nov-94 08:51:37 GMT",
            "Sun Nov  6 08:51:37 1994",
        ] {
            assert_eq!(
                with_retry_after(503, date),
                retry(in_two_minutes, "HTTP 503 Service Unavailable"),
                "{date}"
            );
        }
    }

    #[test]
    fn retry_after_is_capped_at_one_hour() {
        let hour = Some(MAX_RETRY_AFTER);
        assert_eq!(parse_retry_after("86400", now()), hour);
        assert_eq!(parse_retry_after("99999999999999999999999", now()), hour);
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now()),
            hour
        );
    }

    /// No wait (zero, now or a past date) falls back to the worker's backoff.
    #[test]
    fn retry_after_without_a_wait_gives_none() {
        assert_eq!(parse_retry_after("0", now()), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now()),
            None
        );
        assert_eq!(
            with_retry_after(503, "Sun, 06 Nov 1994 08:00:00 GMT"),
            retry(None, "HTTP 503 Service Unavailable")
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now()),
            None
        );
    }

    #[test]
    fn unparsable_retry_after_gives_none() {
        for value in [
            "",
            "soon",
            "-5",
            "1.5",
            "2s",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(value, now()), None, "{value:?}");
        }
        assert_eq!(
            with_retry_after(429, "later"),
            retry(None, "HTTP 429 Too Many Requests")
        );
    }

    /// Only 429 and 503 carry a meaningful `Retry-After` (RFC 9110 §10.2.3).
    #[test]
    fn retry_after_is_ignored_on_other_statuses() {
        assert_eq!(
            with_retry_after(500, "2"),
            retry(None, "HTTP 500 Internal Server Error")
        );
        assert_eq!(with_retry_after(200, "2"), Verdict::Delivered);
        assert_eq!(with_retry_after(400, "2"), dead("HTTP 400 Bad Request"));
    }
}
