//! The writer task of one connection: the only writer of the socket once logged in.
//!
//! It writes what the [`XmppHandle`](crate::xmpp::XmppHandle)s queue, already rendered as text,
//! gathering everything already queued into one flush. The priority lane is always emptied
//! first, so an IQ answer or a ping never waits behind bulk sink traffic; each lane keeps its
//! order. Items queued for an older connection (`generation` below this one's) are dropped: what
//! they belong to failed with it.
//!
//! When `close` is cancelled (graceful shutdown, after the sinks have stopped) it writes what is
//! still queued and then the stream footer; when `stop` is cancelled (the drain deadline passed)
//! it writes the footer at once. Either way it then shuts its side of the socket.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use crate::xmpp::handle::{Outbound, OutboundQueues};

/// Most queued items written before one flush.
const WRITE_BATCH: usize = 512;
/// The writer's buffer: small stanzas are gathered into writes of up to this size.
const WRITE_BUFFER: usize = 64 * 1024;

#[tracing::instrument(name = "writer", skip_all, fields(generation = generation))]
pub(super) async fn write_loop(
    wr: OwnedWriteHalf,
    queues: Arc<tokio::sync::Mutex<OutboundQueues>>,
    generation: u64,
    close: CancellationToken,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut queues = queues.lock().await;
    let queues = &mut *queues;
    let mut wr = BufWriter::with_capacity(WRITE_BUFFER, wr);
    let current = |item: Outbound| (item.generation >= generation).then_some(item.xml);
    let (mut priority_open, mut bulk_open) = (true, true);
    // Every handle gone (herald is stopping) also ends the stream.
    while priority_open || bulk_open {
        let first: Option<Bytes> = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = close.cancelled() => break,
            p = queues.priority.recv(), if priority_open => match p {
                Some(item) => current(item),
                None => {
                    priority_open = false;
                    None
                }
            },
            b = queues.bulk.recv(), if bulk_open => match b {
                Some(item) => current(item),
                None => {
                    bulk_open = false;
                    None
                }
            },
        };
        let Some(first) = first else { continue };
        wr.write_all(&first).await?;
        write_ready(&mut wr, queues, &current, WRITE_BATCH).await?;
        wr.flush().await?;
    }
    if !stop.is_cancelled() {
        // Closing: what the sinks queued before they stopped still goes out.
        write_ready(&mut wr, queues, &current, usize::MAX).await?;
    }
    wr.write_all(b"</stream:stream>").await?;
    wr.flush().await?;
    wr.shutdown().await
}

/// Writes up to `max` items already queued, priority first.
async fn write_ready(
    wr: &mut BufWriter<OwnedWriteHalf>,
    queues: &mut OutboundQueues,
    current: &impl Fn(Outbound) -> Option<Bytes>,
    max: usize,
) -> io::Result<()> {
    for _ in 0..max {
        let item = match queues.priority.try_recv() {
            Ok(item) => item,
            Err(_) => match queues.bulk.try_recv() {
                Ok(item) => item,
                Err(_) => break,
            },
        };
        if let Some(xml) = current(item) {
            wr.write_all(&xml).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::iq_tracker::IqTracker;
    use crate::xmpp::XmppHandle;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn socket_pair() -> (OwnedWriteHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_rd, wr) = client.unwrap().into_split();
        (wr, server.unwrap().0)
    }

    fn item(generation: u64, xml: &'static str) -> Outbound {
        Outbound {
            generation,
            xml: Bytes::from_static(xml.as_bytes()),
        }
    }

    #[tokio::test]
    async fn the_writer_drops_what_was_queued_for_a_lost_connection_and_puts_priority_first() {
        let (wr, mut peer) = socket_pair().await;
        let (p_tx, p_rx) = tokio::sync::mpsc::channel(16);
        let (b_tx, b_rx) = tokio::sync::mpsc::channel(16);
        b_tx.send(item(1, "<old-a/>")).await.unwrap();
        b_tx.send(item(2, "<new-a/>")).await.unwrap();
        b_tx.send(item(1, "<old-b/>")).await.unwrap();
        b_tx.send(item(2, "<new-b/>")).await.unwrap();
        p_tx.send(item(2, "<own/>")).await.unwrap();
        p_tx.send(item(1, "<own-old/>")).await.unwrap();
        let queues = Arc::new(tokio::sync::Mutex::new(OutboundQueues {
            priority: p_rx,
            bulk: b_rx,
        }));
        let close = CancellationToken::new();
        close.cancel();
        write_loop(wr, queues, 2, close, CancellationToken::new())
            .await
            .unwrap();
        let mut text = String::new();
        peer.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "<own/><new-a/><new-b/></stream:stream>");
    }

    #[tokio::test]
    async fn a_command_reply_overtakes_50_000_queued_sink_events() {
        let (wr, mut peer) = socket_pair().await;
        let (p_tx, p_rx) = tokio::sync::mpsc::channel(16);
        let (b_tx, b_rx) = tokio::sync::mpsc::channel(50_000);
        for _ in 0..50_000 {
            b_tx.send(item(0, "<message/>")).await.unwrap();
        }
        p_tx.send(item(0, "<iq type='result'/>")).await.unwrap();
        let queues = Arc::new(tokio::sync::Mutex::new(OutboundQueues {
            priority: p_rx,
            bulk: b_rx,
        }));
        let close = CancellationToken::new();
        close.cancel();
        let writer = tokio::spawn(write_loop(wr, queues, 0, close, CancellationToken::new()));
        let mut text = String::new();
        peer.read_to_string(&mut text).await.unwrap();
        writer.await.unwrap().unwrap();
        assert!(
            text.starts_with("<iq type='result'/><message/>"),
            "{}",
            &text[..64]
        );
        assert_eq!(text.matches("<message/>").count(), 50_000);
    }

    #[tokio::test]
    async fn a_stopped_writer_closes_the_stream_with_items_still_queued() {
        let (wr, mut peer) = socket_pair().await;
        let (handle, queues) = XmppHandle::new(IqTracker::new(), "h");
        handle
            .send_text(Bytes::from_static(b"<queued/>"))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let queues = Arc::new(tokio::sync::Mutex::new(queues));
        write_loop(wr, queues, 0, CancellationToken::new(), stop)
            .await
            .unwrap();
        let mut text = String::new();
        peer.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "</stream:stream>");
    }
}
