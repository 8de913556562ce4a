//! One publish of a pending push: the registration read from the store, the IQ sent, the
//! answer awaited for `push.timeout` and applied to the registration's error counter.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::answer::{Attempt, Next};
use super::publish::{self, PendingPush};
use super::Push;
use crate::metrics::{PushMetrics, RemovedBy};
use crate::xmpp::{Lane, XmppHandle};

/// The shared part of the publish tasks.
pub(super) struct TaskCtx {
    pub handle: XmppHandle,
    pub push: Push,
    pub jid: String,
    pub timeout: Duration,
    pub metrics: PushMetrics,
}

/// Publishes `p` once and applies the answer to its registration.
pub(super) async fn attempt(ctx: &TaskCtx, p: &PendingPush) -> Next {
    let reg = match ctx.push.registration(&p.user, &p.reg_key) {
        Ok(Some(r)) => r,
        Ok(None) => {
            debug!(user = %p.user, app = %p.app, "push: the registration is gone; push dropped");
            return Next::Done;
        }
        Err(e) => {
            warn!(error = %e, user = %p.user, "push: cannot read the registration; retrying");
            return Next::Backoff;
        }
    };
    let (iq, options_ok) =
        publish::publish_iq(&ctx.jid, &reg.jid, &reg.node, p, reg.options.as_deref());
    if !options_ok {
        warn!(user = %p.user, app = %reg.jid, "push: the stored publish-options do not parse; publishing without them");
    }
    // `push.timeout` is the app server's time to answer: it starts once the publish is queued
    // (time spent behind herald's own bulk traffic is not the app server's fault).
    let answer = match ctx.handle.request(Lane::Bulk, iq).await {
        Ok(wait) => tokio::time::timeout(ctx.timeout, wait).await,
        Err(e) => Ok(Err(e)),
    };
    let attempt = Attempt::from_answer(answer.ok());
    match attempt.failure() {
        Some(kind) => ctx.metrics.failed(kind),
        None if attempt == Attempt::Accepted => {
            ctx.metrics.sent.inc();
        }
        None => {}
    }
    match ctx
        .push
        .record_attempt(&p.user, &p.reg_key, reg.errors, &attempt)
        .await
    {
        Ok(r) => {
            if let Some(gone) = r.removed {
                info!(user = %p.user, registration = %gone.describe(), errors = gone.errors + 1, last_error = %attempt.describe(), "push: registration removed after push.max_errors errors in a row");
                ctx.metrics.removed(RemovedBy::Errors);
            } else if let Some(kind) = attempt.failure() {
                debug!(user = %p.user, app = %reg.jid, kind = kind.label(), error = %attempt.describe(), "push: attempt failed");
            }
            r.next
        }
        Err(e) => {
            warn!(error = %e, user = %p.user, "push: cannot record the answer to a push; retrying");
            Next::Backoff
        }
    }
}
