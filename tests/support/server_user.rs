//! The server user `world@localhost/sink`: a real c2s client on the test Prosody that collects
//! every event message herald's XMPP sink sends it, each read into a `T` by the test's parser.

use std::time::Duration;

use minidom::Element;
use tokio::time::Instant;

use super::client::C2s;
use super::herald::NS_FLUX;
use super::prosody::Prosody;

pub struct ServerUser<T> {
    pub c2s: C2s,
    pub got: Vec<T>,
    /// Reads one event message (and may assert on its shape).
    parse: fn(&Element) -> T,
    /// Lists what arrived, for failure messages.
    list: fn(&[T]) -> String,
}

impl<T> ServerUser<T> {
    /// Logs in as `world` (password `pw`) and sends an available presence (a chat message to a
    /// bare JID is only delivered to an available resource).
    pub async fn login(p: &Prosody, parse: fn(&Element) -> T, list: fn(&[T]) -> String) -> Self {
        let mut c2s = C2s::login(&p.c2s_addr(), "world@localhost/sink", "pw").await;
        c2s.send_presence(None, None, 0).await;
        ServerUser {
            c2s,
            got: Vec::new(),
            parse,
            list,
        }
    }

    /// Receives one more event message within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> bool {
        match self.c2s.next_message_with(NS_FLUX, "event", timeout).await {
            Some(msg) => {
                self.got.push((self.parse)(&msg));
                true
            }
            None => false,
        }
    }

    /// Receives until `cond` holds on everything received so far; panics after `timeout`.
    pub async fn wait_until(&mut self, what: &str, timeout: Duration, cond: impl Fn(&[T]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.recv(left).await {
                if cond(&self.got) {
                    return;
                }
                panic!(
                    "the server user did not get {what} within {timeout:?}; got:{}",
                    (self.list)(&self.got)
                );
            }
        }
    }

    /// Receives whatever arrives during `d` (a fixed window).
    pub async fn collect_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.recv(left).await {
                return;
            }
        }
    }
}
