//! IQ requests addressed to herald: a registry of handlers keyed by the namespace of the
//! request's payload, and the dispatcher that answers every request exactly once.
//!
//! - An IQ without an `id`, or without exactly one payload child, gets `bad-request`.
//! - A namespace nobody registered gets `service-unavailable` (RFC 6120 §8.4).
//! - A handler runs as a task of its own, so a slow one (a store lookup, a request to another
//!   entity) never holds up the stream. If it panics, fails to answer within
//!   [`HANDLER_DEADLINE`], or drops the request, the requester gets `service-unavailable`.
//! - At most [`MAX_IN_FLIGHT`] requests are handled at once; beyond that a request is answered
//!   at once with `resource-constraint` (type `wait`), so a flood cannot grow herald's memory.
//!
//! disco#info and XEP-0199 ping are answered here from what the registry knows: the features
//! are those the registered handlers declare.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::handle::{Lane, XmppHandle};
use super::stanza::{self, ErrorType, StanzaError, NS_COMPONENT, NS_DISCO_INFO, NS_PING};

/// Longest time a handler may take before the requester is told `service-unavailable`.
pub const HANDLER_DEADLINE: Duration = Duration::from_secs(30);
/// Most IQ requests handled at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// `get` or `set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqKind {
    Get,
    Set,
}

/// One validated IQ request addressed to herald.
#[derive(Debug, Clone)]
pub struct IqRequest {
    /// The requester (as the server stamped it).
    pub from: String,
    /// The address it was sent to: herald's domain or a JID at it.
    pub to: String,
    pub id: String,
    pub kind: IqKind,
    /// The one payload child.
    pub payload: Element,
}

/// The payload of a `result` (or none), or the error to answer with.
pub type IqAnswer = Result<Option<Element>, StanzaError>;

/// What a handler returns: the future of its answer.
pub type IqFuture = Pin<Box<dyn Future<Output = IqAnswer> + Send>>;

/// Answers the requests of one namespace.
pub trait IqHandler: Send + Sync + 'static {
    fn handle(&self, request: IqRequest) -> IqFuture;
}

impl<F> IqHandler for F
where
    F: Fn(IqRequest) -> IqFuture + Send + Sync + 'static,
{
    fn handle(&self, request: IqRequest) -> IqFuture {
        self(request)
    }
}

/// The registry: namespace → handler, and the disco#info features they declare. Built once at
/// start-up, then shared read-only.
#[derive(Clone, Default)]
pub struct IqHandlers {
    handlers: HashMap<String, Arc<dyn IqHandler>>,
    features: Vec<String>,
    /// Answers disco#info requests that carry a `node` (the ad-hoc command nodes).
    node_info: Option<Arc<dyn IqHandler>>,
}

impl IqHandlers {
    /// A registry that answers disco#info and ping.
    pub fn new() -> Self {
        let mut h = IqHandlers::default();
        h.features.push(NS_DISCO_INFO.to_owned());
        h.features.push(NS_PING.to_owned());
        h
    }

    /// Registers `handler` for payloads in `ns`, and `features` for disco#info. A later
    /// registration of the same namespace replaces the earlier one.
    pub fn register(&mut self, ns: &str, features: &[&str], handler: impl IqHandler) {
        self.handlers.insert(ns.to_owned(), Arc::new(handler));
        for f in features {
            if !self.features.iter().any(|known| known == f) {
                self.features.push((*f).to_owned());
            }
        }
    }

    /// Lets `handler` answer disco#info requests that name a `node` (without one, every such
    /// request gets `item-not-found`).
    pub fn register_node_info(&mut self, handler: impl IqHandler) {
        self.node_info = Some(Arc::new(handler));
    }

    /// The disco#info features herald advertises.
    pub fn features(&self) -> &[String] {
        &self.features
    }
}

/// Answers the requests the connection reads, each exactly once.
#[derive(Clone)]
pub struct IqDispatcher {
    handlers: Arc<IqHandlers>,
    handle: XmppHandle,
    in_flight: Arc<Semaphore>,
}

impl IqDispatcher {
    pub fn new(handlers: IqHandlers, handle: XmppHandle) -> Self {
        IqDispatcher {
            handlers: Arc::new(handlers),
            handle,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Takes one inbound `<iq type='get|set'/>`; never blocks. The answer goes out on the
    /// priority lane.
    pub fn dispatch(&self, iq: Element) {
        let me = self.handle.jid().to_owned();
        let request = match validate(&iq) {
            Ok(r) => r,
            Err(e) => {
                debug!(from = iq.attr("from").unwrap_or_default(), error = %e, "invalid IQ request");
                return self.answer_now(error_reply(&iq, &me, &e));
            }
        };
        let ns = request.payload.ns();
        let node_info = ns == NS_DISCO_INFO
            && request.payload.attr("node").is_some()
            && self.handlers.node_info.is_some();
        let local = match (ns.as_str(), request.payload.name(), request.kind) {
            _ if node_info => None,
            (NS_DISCO_INFO, "query", IqKind::Get) => Some(self.disco_info(&request)),
            (NS_PING, "ping", IqKind::Get) => Some(Ok(None)),
            (NS_DISCO_INFO, _, _) | (NS_PING, _, _) => {
                Some(Err(StanzaError::service_unavailable()))
            }
            _ => None,
        };
        if let Some(answer) = local {
            return self.answer_now(reply(&request, &me, answer));
        }
        let handler = if node_info {
            self.handlers.node_info.clone()
        } else {
            self.handlers.handlers.get(&ns).cloned()
        };
        let Some(handler) = handler else {
            debug!(from = %request.from, ns = %ns, "no handler for this IQ namespace");
            return self.answer_now(reply(
                &request,
                &me,
                Err(StanzaError::service_unavailable()),
            ));
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            warn!(from = %request.from, ns = %ns, limit = MAX_IN_FLIGHT, "too many IQ requests in progress; answering resource-constraint");
            let busy = StanzaError::new(ErrorType::Wait, "resource-constraint");
            return self.answer_now(reply(&request, &me, Err(busy)));
        };
        let handle = self.handle.clone();
        let span = tracing::info_span!("iq", ns = %ns, from = %request.from);
        let task = async move {
            let _permit = permit;
            let work = tokio::spawn(handler.handle(request.clone()));
            let answer = match tokio::time::timeout(HANDLER_DEADLINE, work).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    warn!(from = %request.from, ns = %request.payload.ns(), error = %e, "an IQ handler failed; answering service-unavailable");
                    Err(StanzaError::service_unavailable())
                }
                Err(_) => {
                    warn!(from = %request.from, ns = %request.payload.ns(), deadline = ?HANDLER_DEADLINE, "an IQ handler did not answer in time; answering service-unavailable");
                    Err(StanzaError::service_unavailable())
                }
            };
            let _ = handle
                .send(Lane::Priority, &reply(&request, handle.jid(), answer))
                .await;
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Queues an answer made without a handler. It never waits (the reader calls this), so a
    /// flood of requests cannot pile up tasks: with the priority lane full (1024 stanzas the
    /// writer has not taken) the answer is dropped with a WARN.
    fn answer_now(&self, stanza: Element) {
        if self.handle.try_send(Lane::Priority, &stanza).is_err() {
            warn!(
                to = stanza.attr("to").unwrap_or_default(),
                "outbound priority lane full; an IQ answer was dropped"
            );
        }
    }

    fn disco_info(&self, request: &IqRequest) -> Result<Option<Element>, StanzaError> {
        if request.payload.attr("node").is_some() {
            return Err(StanzaError::new(ErrorType::Cancel, "item-not-found"));
        }
        let mut q = Element::builder("query", NS_DISCO_INFO)
            .append(
                Element::builder("identity", NS_DISCO_INFO)
                    .attr(crate::n!("category"), "component")
                    .attr(crate::n!("type"), "generic")
                    .attr(crate::n!("name"), "herald")
                    .build(),
            )
            .build();
        for f in self.handlers.features() {
            q.append_child(
                Element::builder("feature", NS_DISCO_INFO)
                    .attr(crate::n!("var"), f.as_str())
                    .build(),
            );
        }
        Ok(Some(q))
    }
}

/// Checks the shape of a request: an `id`, a `from`, and exactly one payload child.
pub fn validate(iq: &Element) -> Result<IqRequest, StanzaError> {
    let kind = match iq.attr("type") {
        Some("get") => IqKind::Get,
        Some("set") => IqKind::Set,
        _ => {
            return Err(StanzaError::bad_request(
                "an IQ request is of type get or set",
            ))
        }
    };
    let id = match iq.attr("id") {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => return Err(StanzaError::bad_request("an IQ request needs an id")),
    };
    let from = match iq.attr("from") {
        Some(from) if !from.is_empty() => from.to_owned(),
        _ => return Err(StanzaError::bad_request("an IQ request needs a from")),
    };
    let mut children = iq.children();
    let (Some(payload), None) = (children.next(), children.next()) else {
        return Err(StanzaError::bad_request(
            "an IQ request carries exactly one payload element",
        ));
    };
    Ok(IqRequest {
        from,
        to: iq.attr("to").unwrap_or_default().to_owned(),
        id,
        kind,
        payload: payload.clone(),
    })
}

/// The answer to `request`: from the address it was sent to (herald's own when it had none).
pub fn reply(request: &IqRequest, me: &str, answer: IqAnswer) -> Element {
    let from = if request.to.is_empty() {
        me
    } else {
        request.to.as_str()
    };
    let b = Element::builder("iq", NS_COMPONENT)
        .attr(crate::n!("from"), from)
        .attr(crate::n!("to"), request.from.as_str())
        .attr(crate::n!("id"), request.id.as_str());
    match answer {
        Ok(payload) => {
            let mut b = b.attr(crate::n!("type"), "result");
            if let Some(p) = payload {
                b = b.append(p);
            }
            b.build()
        }
        Err(e) => b
            .attr(crate::n!("type"), "error")
            .append(e.to_element())
            .build(),
    }
}

/// An error answer to a request that did not validate.
fn error_reply(iq: &Element, me: &str, error: &StanzaError) -> Element {
    stanza::iq_error(iq, iq.attr("to").unwrap_or(me), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::iq_tracker::IqTracker;
    use crate::xmpp::stanza::error_condition;

    fn iq(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    async fn answer_to(handlers: IqHandlers, xml: &str) -> Element {
        let (handle, mut queues) = XmppHandle::new(IqTracker::new(), "herald.localhost");
        let dispatcher = IqDispatcher::new(handlers, handle);
        dispatcher.dispatch(iq(xml));
        let out = queues.priority.recv().await.unwrap();
        std::str::from_utf8(&out.xml).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn disco_info_lists_identity_and_registered_features() {
        let mut handlers = IqHandlers::new();
        handlers.register(
            "urn:test:x",
            &["urn:test:x", "urn:test:y"],
            |_r: IqRequest| -> IqFuture { Box::pin(async { Ok(None) }) },
        );
        let a = answer_to(handlers, "<iq xmlns='jabber:component:accept' type='get' id='d1' from='alice@localhost/x' to='herald.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
        assert_eq!(a.attr("type"), Some("result"));
        assert_eq!(a.attr("id"), Some("d1"));
        assert_eq!(a.attr("to"), Some("alice@localhost/x"));
        assert_eq!(a.attr("from"), Some("herald.localhost"));
        let q = a.get_child("query", NS_DISCO_INFO).unwrap();
        let vars: Vec<_> = q.children().filter_map(|c| c.attr("var")).collect();
        assert_eq!(vars, [NS_DISCO_INFO, NS_PING, "urn:test:x", "urn:test:y"]);
        assert!(q.get_child("identity", NS_DISCO_INFO).is_some());
    }

    #[tokio::test]
    async fn ping_gets_an_empty_result() {
        let a = answer_to(IqHandlers::new(), "<iq xmlns='jabber:component:accept' type='get' id='p1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
        assert_eq!(a.attr("type"), Some("result"));
        assert_eq!(a.children().count(), 0);
    }

    #[tokio::test]
    async fn unknown_namespaces_and_wrong_types_are_service_unavailable() {
        for xml in [
            "<iq xmlns='jabber:component:accept' type='get' id='u1' from='a@b/c'><query xmlns='jabber:iq:version'/></iq>",
            "<iq xmlns='jabber:component:accept' type='set' id='u2' from='a@b/c'><ping xmlns='urn:xmpp:ping'/></iq>",
        ] {
            let a = answer_to(IqHandlers::new(), xml).await;
            assert_eq!(a.attr("type"), Some("error"), "{xml}");
            assert_eq!(error_condition(&a), Some("service-unavailable"));
        }
    }

    #[tokio::test]
    async fn malformed_requests_are_bad_request() {
        for xml in [
            "<iq xmlns='jabber:component:accept' type='get' from='a@b/c'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq xmlns='jabber:component:accept' type='get' id='m2' from='a@b/c'/>",
            "<iq xmlns='jabber:component:accept' type='get' id='m3' from='a@b/c'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>",
        ] {
            let a = answer_to(IqHandlers::new(), xml).await;
            assert_eq!(a.attr("type"), Some("error"), "{xml}");
            assert_eq!(error_condition(&a), Some("bad-request"), "{xml}");
            assert_eq!(a.attr("to"), Some("a@b/c"));
        }
    }

    #[tokio::test]
    async fn a_handler_that_panics_or_drops_its_request_gets_service_unavailable() {
        let mut handlers = IqHandlers::new();
        handlers.register("urn:test:panic", &[], |_r: IqRequest| -> IqFuture {
            Box::pin(async { panic!("handler bug") })
        });
        handlers.register("urn:test:drop", &[], |_r: IqRequest| -> IqFuture {
            // An owner that drops the request: the reply channel closes unanswered.
            let (tx, rx) = tokio::sync::oneshot::channel::<IqAnswer>();
            drop(tx);
            Box::pin(async move { rx.await.unwrap_or(Err(StanzaError::service_unavailable())) })
        });
        for ns in ["urn:test:panic", "urn:test:drop"] {
            let xml = format!("<iq xmlns='jabber:component:accept' type='set' id='h1' from='a@b/c'><x xmlns='{ns}'/></iq>");
            let a = answer_to(handlers.clone(), &xml).await;
            assert_eq!(a.attr("type"), Some("error"), "{ns}");
            assert_eq!(error_condition(&a), Some("service-unavailable"), "{ns}");
        }
    }

    #[tokio::test]
    async fn a_handler_answers_with_its_payload_or_its_typed_error() {
        let mut handlers = IqHandlers::new();
        handlers.register("urn:test:echo", &[], |r: IqRequest| -> IqFuture {
            Box::pin(async move {
                if r.kind == IqKind::Set {
                    Err(StanzaError::new(ErrorType::Auth, "forbidden").with_text("no"))
                } else {
                    Ok(Some(r.payload))
                }
            })
        });
        let a = answer_to(handlers.clone(), "<iq xmlns='jabber:component:accept' type='get' id='e1' from='a@b/c' to='herald.localhost'><x xmlns='urn:test:echo'>hi</x></iq>").await;
        assert_eq!(a.attr("type"), Some("result"));
        assert_eq!(a.get_child("x", "urn:test:echo").unwrap().text(), "hi");
        let a = answer_to(handlers, "<iq xmlns='jabber:component:accept' type='set' id='e2' from='a@b/c'><x xmlns='urn:test:echo'/></iq>").await;
        let e = StanzaError::from_stanza(&a);
        assert_eq!(
            (e.kind, e.condition.as_str(), e.text.as_deref()),
            (ErrorType::Auth, "forbidden", Some("no"))
        );
    }
}
