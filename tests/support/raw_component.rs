//! A raw XEP-0114 component connection of the test's own ([`RawComponent`]: handshake, send, wait
//! for stanzas, IQ requests), e.g. a stand-in for herald or the base of [`super::app_server`].
//!
//! The connection reads plain `minidom` elements (no stanza parsing), so nothing it receives can end
//! the stream. Stanzas it builds use the `jabber:component:accept` namespace ([`NS_COMPONENT`]).

#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use sha1::{Digest, Sha1};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};

use super::client::{to_xml, Inbox};

pub const NS_COMPONENT: &str = "jabber:component:accept";
/// The handshake must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = XmlStream<BufStream<TcpStream>, Element>;

enum Cmd {
    Send(Element, oneshot::Sender<Result<(), String>>),
    Close(oneshot::Sender<()>),
}

/// One XEP-0114 component connection (`jabber:component:accept`, SHA-1 handshake).
pub struct RawComponent {
    jid: String,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    inbox: Inbox,
    task: JoinHandle<()>,
    next_id: u64,
}

impl RawComponent {
    /// Connects to the component listener `addr` as `jid` and completes the handshake; panics with
    /// the reason (e.g. a `<conflict/>` stream error while another connection holds `jid`).
    pub async fn connect(addr: &str, jid: &str, secret: &str) -> RawComponent {
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(addr, jid, secret)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("component {jid} at {addr}: {e}"),
            Err(_) => panic!("component {jid} at {addr}: no handshake within {CONNECT_TIMEOUT:?}"),
        }
    }

    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Sends a stanza (build it in [`NS_COMPONENT`]); panics if the stream is gone.
    pub async fn send(&mut self, stanza: Element) {
        let (tx, rx) = oneshot::channel();
        let sent = self.cmd_tx.send(Cmd::Send(stanza, tx)).is_ok();
        let result = if sent {
            rx.await.unwrap_or_else(|_| Err("stream task ended".into()))
        } else {
            Err("stream task ended".into())
        };
        if let Err(e) = result {
            panic!("component {}: send failed: {e}", self.jid);
        }
    }

    /// Sends a stanza given as XML text; the root gets `xmlns='jabber:component:accept'`.
    pub async fn send_xml(&mut self, xml: &str) {
        let el = parse_component_xml(xml).unwrap_or_else(|e| panic!("bad XML {xml:?}: {e}"));
        self.send(el).await;
    }

    /// The next stanza, waiting as long as it takes; `None` once the stream has ended. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Element> {
        self.inbox.next().await
    }

    /// The next stanza for which `pred` holds; others are kept for later calls.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        self.inbox.next_matching(timeout, pred).await
    }

    /// Sends `<iq type=KIND to=TO>PAYLOAD</iq>` with a fresh id and returns the answer; panics after
    /// `timeout`.
    pub async fn request(
        &mut self,
        kind: &str,
        to: &str,
        payload: &str,
        timeout: Duration,
    ) -> Element {
        self.next_id += 1;
        let id = format!("rc{}", self.next_id);
        let xml = format!(
            "<iq type='{kind}' from='{}' to='{to}' id='{id}'>{payload}</iq>",
            self.jid
        );
        self.send_xml(&xml).await;
        let want = id.clone();
        self.next_matching(timeout, move |el| {
            el.name() == "iq"
                && el.attr("id") == Some(want.as_str())
                && matches!(el.attr("type"), Some("result" | "error"))
        })
        .await
        .unwrap_or_else(|| panic!("{}: no answer to {xml} within {timeout:?}", self.jid))
    }

    /// Everything received and not consumed yet, without waiting.
    pub fn drain(&mut self) -> Vec<Element> {
        self.inbox.drain()
    }

    /// Ends the stream (`</stream:stream>`) and waits briefly for the server's.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd_tx.send(Cmd::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

async fn connect_inner(addr: &str, jid: &str, secret: &str) -> Result<RawComponent, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(3600),
        response_timeout: Duration::from_secs(3600),
    };
    let header = StreamHeader {
        from: None,
        to: Some(std::borrow::Cow::Owned(jid.to_owned())),
        id: None,
    };
    let mut pending = initiate_stream(BufStream::new(tcp), NS_COMPONENT, header, timeouts)
        .await
        .map_err(|e| format!("stream header: {e}"))?;
    let stream_id = pending
        .take_header()
        .id
        .map(|id| id.into_owned())
        .ok_or("the server's stream header has no id")?;
    let mut stream: Stream = pending.skip_features();
    let digest = hex::encode(Sha1::digest(format!("{stream_id}{secret}").as_bytes()));
    let handshake = Element::builder("handshake", NS_COMPONENT)
        .append(digest)
        .build();
    stream
        .send(&handshake)
        .await
        .map_err(|e| format!("send handshake: {e}"))?;
    loop {
        match stream.next().await {
            Some(Ok(el)) if el.name() == "handshake" => break,
            Some(Ok(el)) => return Err(format!("handshake refused: {}", to_xml(&el))),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(format!("handshake: {e}")),
            None => return Err("connection closed during the handshake".into()),
        }
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(stream, cmd_rx, in_tx));
    Ok(RawComponent {
        jid: jid.to_owned(),
        cmd_tx,
        inbox: Inbox::new(in_rx),
        task,
        next_id: 0,
    })
}

async fn run(
    mut stream: Stream,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    in_tx: mpsc::UnboundedSender<Element>,
) {
    loop {
        tokio::select! {
            cmd = cmd_rx.recv() => match cmd {
                None => break,
                Some(Cmd::Send(el, ack)) => {
                    let r = stream.send(&el).await.map_err(|e| format!("write: {e}"));
                    let failed = r.is_err();
                    let _ = ack.send(r);
                    if failed {
                        break;
                    }
                }
                Some(Cmd::Close(done)) => {
                    let _ = stream.shutdown().await;
                    let _ = tokio::time::timeout(Duration::from_secs(3), async {
                        while let Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) = stream.next().await {}
                    })
                    .await;
                    let _ = done.send(());
                    break;
                }
            },
            item = stream.next() => match item {
                Some(Ok(el)) => {
                    if el.name() == "error" && el.ns() == "http://etherx.jabber.org/streams" {
                        eprintln!("component: stream error from server: {}", to_xml(&el));
                        break;
                    }
                    let _ = in_tx.send(el);
                }
                Some(Err(ReadError::SoftTimeout)) => {}
                Some(Err(ReadError::ParseError(e))) => eprintln!("component: unparsable element: {e}"),
                Some(Err(_)) | None => break,
            },
        }
    }
}

/// Parses a stanza; its root gets `xmlns='jabber:component:accept'` when it has none.
pub fn parse_component_xml(xml: &str) -> Result<Element, String> {
    let xml = xml.trim();
    let head_end = xml.find('>').unwrap_or(xml.len());
    let xml = if xml[..head_end].contains("xmlns=") {
        xml.to_owned()
    } else {
        let name_end = xml[1..]
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .map(|i| i + 1)
            .unwrap_or(xml.len());
        format!(
            "{} xmlns='{NS_COMPONENT}'{}",
            &xml[..name_end],
            &xml[name_end..]
        )
    };
    xml.parse::<Element>().map_err(|e| e.to_string())
}
