//! Pieces shared by the `bench_presence` and `bench_webhook` examples: their component JID and
//! secret, and process figures. The fake XEP-0114 server and the webhook receiver they run are
//! the test suite's (`tests/support/fake_server.rs`, `tests/support/webhook_receiver.rs`).

pub const JID: &str = "herald.localhost";
pub const SECRET: &str = "bench-secret";

// ---------------------------------------------------------------------------------------------
// Process figures
// ---------------------------------------------------------------------------------------------

/// User + system CPU time of the whole process (all threads), in seconds (USER_HZ = 100).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

pub fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

// ---------------------------------------------------------------------------------------------
// Group-chat push server (bench_push)
// ---------------------------------------------------------------------------------------------

/// A text-level XEP-0114 server for the group-chat push benchmark: it logs the component in
/// (handshake checked, Prosody's privilege advertisement with `presence = managed_entity`),
/// answers every `iq` get (pings, the rooms' `disco#info` with a MUC identity), answers a join
/// of any room on `muc.localhost` with a few occupants and then the self-presence (status 110),
/// answers every pubsub publish with a `result` from the JID it went to, and writes groupchat
/// messages on demand ([`PushConn::send_messages`]). It notes when each message was handed to
/// the socket and when each publish naming it (by its `message-count`) was read. Only
/// `bench_push` uses it.
#[allow(dead_code)]
pub mod push_server {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use sha1::{Digest, Sha1};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    /// The MUC service the server plays.
    pub const MUC: &str = "muc.localhost";
    const NS_PUBSUB: &[u8] = b"http://jabber.org/protocol/pubsub";
    const NS_DISCO_INFO: &[u8] = b"http://jabber.org/protocol/disco#info";
    const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

    /// What the server saw of herald's publishes.
    #[derive(Default)]
    pub struct Seen {
        /// Publishes answered.
        pub publishes: u64,
        /// Joins answered (one per room join).
        pub joins: u64,
        /// Publishes whose `message-count` named no message written so far.
        pub unmatched: u64,
        /// Per publish: microseconds from the write of its message to the read of the publish.
        pub latencies_us: Vec<u32>,
        /// Per message index: publishes read for it so far.
        pub per_message: Vec<u32>,
        /// Per message index: microseconds from its write to the read of its last publish so far.
        pub last_us: Vec<u32>,
        /// Per message index: microseconds from its write to the read of its first publish.
        pub first_us: Vec<u32>,
        /// When the last publish was read.
        pub last_read: Option<Instant>,
    }

    struct Shared {
        base: Instant,
        /// Per message index (0-based): nanoseconds after `base` at which it was handed to the
        /// socket.
        written: Mutex<Vec<u64>>,
        seen: Mutex<Seen>,
        publishes: AtomicU64,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// herald's connection, once logged in.
    pub struct PushConn {
        shared: Arc<Shared>,
        out: mpsc::UnboundedSender<Out>,
        component: String,
    }

    enum Out {
        Raw(Vec<u8>),
        /// Groupchat messages: each is stamped just before the write that carries it.
        Messages(Vec<(u64, Vec<u8>)>),
    }

    /// Listens on 127.0.0.1:0 and serves the first connection; `occupants` are the nicks the
    /// joined room lists besides herald.
    pub async fn start(
        secret: &str,
        occupants: &[&str],
    ) -> std::io::Result<(
        std::net::SocketAddr,
        tokio::sync::oneshot::Receiver<PushConn>,
    )> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let secret = secret.to_owned();
        let occupants: Vec<String> = occupants.iter().map(|s| (*s).to_owned()).collect();
        tokio::spawn(async move {
            if let Ok((socket, _)) = listener.accept().await {
                match login(socket, &secret).await {
                    Ok((rd, wr, component, rest)) => {
                        let shared = Arc::new(Shared {
                            base: Instant::now(),
                            written: Mutex::new(Vec::new()),
                            seen: Mutex::new(Seen::default()),
                            publishes: AtomicU64::new(0),
                        });
                        let (out, out_rx) = mpsc::unbounded_channel();
                        tokio::spawn(writer(wr, out_rx, shared.clone()));
                        tokio::spawn(reader(
                            rd,
                            rest,
                            out.clone(),
                            shared.clone(),
                            component.clone(),
                            occupants,
                        ));
                        let _ = tx.send(PushConn {
                            shared,
                            out,
                            component,
                        });
                    }
                    Err(e) => eprintln!("push server: login failed: {e}"),
                }
            }
        });
        Ok((addr, rx))
    }

    type Login = (OwnedReadHalf, OwnedWriteHalf, String, BytesMut);

    async fn login(socket: TcpStream, secret: &str) -> Result<Login, String> {
        let _ = socket.set_nodelay(true);
        let (mut rd, mut wr) = socket.into_split();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        // The stream header.
        let header_end = loop {
            if let Some(i) = memchr::memmem::find(&buf, b"<stream:stream") {
                if let Some(j) = memchr::memchr(b'>', &buf[i..]) {
                    break i + j + 1;
                }
            }
            read_more(&mut rd, &mut buf).await?;
        };
        let header = String::from_utf8_lossy(&buf[..header_end]).into_owned();
        let component = attr(header.as_bytes(), "to").unwrap_or_default().to_owned();
        let _ = buf.split_to(header_end);
        let id = format!("{:016x}", rand::random::<u64>());
        let answer = format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
             xml:lang='en' from='{component}' id='{id}' xmlns='jabber:component:accept'>"
        );
        wr.write_all(answer.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let digest = loop {
            if let (Some(a), Some(b)) = (
                memchr::memmem::find(&buf, b"<handshake>"),
                memchr::memmem::find(&buf, b"</handshake>"),
            ) {
                let d = String::from_utf8_lossy(&buf[a + 11..b]).trim().to_owned();
                let _ = buf.split_to(b + 12);
                break d;
            }
            read_more(&mut rd, &mut buf).await?;
        };
        let expected = hex::encode(Sha1::digest(format!("{id}{secret}").as_bytes()));
        if digest != expected {
            let _ = wr
                .write_all(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
                .await;
            return Err("wrong handshake digest".into());
        }
        let welcome = format!(
            "<handshake/><message from='localhost' to='{component}'><privilege xmlns='urn:xmpp:privilege:2'>\
             <perm access='roster' type='both'/><perm access='message' type='outgoing'/>\
             <perm access='presence' type='managed_entity'/></privilege></message>"
        );
        wr.write_all(welcome.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        Ok((rd, wr, component, buf))
    }

    async fn read_more(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<(), String> {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(256 * 1024);
        }
        match rd.read_buf(buf).await {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn writer(
        mut wr: OwnedWriteHalf,
        mut out: mpsc::UnboundedReceiver<Out>,
        shared: Arc<Shared>,
    ) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = out.recv().await {
            buf.clear();
            let mut stamps = Vec::new();
            let mut next = Some(first);
            while let Some(o) = next.take() {
                match o {
                    Out::Raw(b) => buf.extend_from_slice(&b),
                    Out::Messages(ms) => {
                        for (i, m) in ms {
                            buf.extend_from_slice(&m);
                            stamps.push(i);
                        }
                    }
                }
                if buf.len() < 64 * 1024 {
                    next = out.try_recv().ok();
                }
            }
            if !stamps.is_empty() {
                let at = shared.base.elapsed().as_nanos() as u64;
                let mut written = lock(&shared.written);
                for i in stamps {
                    let i = i as usize;
                    if written.len() <= i {
                        written.resize(i + 1, u64::MAX);
                    }
                    written[i] = at;
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    }

    async fn reader(
        mut rd: OwnedReadHalf,
        mut buf: BytesMut,
        out: mpsc::UnboundedSender<Out>,
        shared: Arc<Shared>,
        component: String,
        occupants: Vec<String>,
    ) {
        let mut answers = Vec::with_capacity(64 * 1024);
        // (message index, read time) of the publishes of one read.
        let mut counts: Vec<u64> = Vec::new();
        let mut joins = 0u64;
        loop {
            let received = Instant::now();
            let mut pos = 0;
            while let Some((start, end)) = next_element(&buf, &mut pos) {
                let el = &buf[start..end];
                let Some(tag_end) = tag_end(el) else { continue };
                let tag = &el[..tag_end];
                match tag_name(tag) {
                    b"iq" => match attr(tag, "type") {
                        Some("set") if memchr::memmem::find(el, NS_PUBSUB).is_some() => {
                            result(&mut answers, tag);
                            counts.push(message_count(el).unwrap_or(0));
                        }
                        Some("get") if memchr::memmem::find(el, NS_DISCO_INFO).is_some() => {
                            result_head(&mut answers, tag);
                            answers.extend_from_slice(
                                b"><query xmlns='http://jabber.org/protocol/disco#info'>\
                                  <identity category='conference' type='text' name='bench'/>\
                                  <feature var='http://jabber.org/protocol/muc'/></query></iq>",
                            );
                        }
                        Some("get") | Some("set") => result(&mut answers, tag),
                        _ => {}
                    },
                    b"presence" => {
                        if let Some(to) = attr(tag, "to") {
                            if let Some((room, nick)) = to.split_once('/') {
                                if room.ends_with(MUC) {
                                    let leave = attr(tag, "type") == Some("unavailable");
                                    if !leave {
                                        joins += 1;
                                    }
                                    occupant_presences(
                                        &mut answers,
                                        room,
                                        nick,
                                        &component,
                                        &occupants,
                                        leave,
                                    );
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            let _ = buf.split_to(pos);
            if !answers.is_empty() {
                let _ = out.send(Out::Raw(std::mem::take(&mut answers)));
            }
            if !counts.is_empty() || joins > 0 {
                record(&shared, &mut counts, received, std::mem::take(&mut joins));
            }
            if read_more(&mut rd, &mut buf).await.is_err() {
                return;
            }
        }
    }

    fn record(shared: &Shared, counts: &mut Vec<u64>, received: Instant, joins: u64) {
        let at = received.duration_since(shared.base).as_nanos() as u64;
        let written = lock(&shared.written);
        let mut seen = lock(&shared.seen);
        seen.joins += joins;
        if !counts.is_empty() {
            seen.last_read = Some(received);
        }
        for c in counts.drain(..) {
            seen.publishes += 1;
            // `message-count` N is the N-th message every (absent) watcher was pushed.
            let i = c.wrapping_sub(1) as usize;
            match written.get(i) {
                Some(&w) if w != u64::MAX && c > 0 => {
                    let us = (at.saturating_sub(w) / 1000).min(u32::MAX as u64) as u32;
                    seen.latencies_us.push(us);
                    if seen.per_message.len() <= i {
                        seen.per_message.resize(i + 1, 0);
                        seen.last_us.resize(i + 1, 0);
                        seen.first_us.resize(i + 1, u32::MAX);
                    }
                    seen.first_us[i] = seen.first_us[i].min(us);
                    seen.per_message[i] += 1;
                    seen.last_us[i] = seen.last_us[i].max(us);
                }
                _ => seen.unmatched += 1,
            }
        }
        shared.publishes.store(seen.publishes, Ordering::Relaxed);
    }

    fn occupant_presences(
        out: &mut Vec<u8>,
        room: &str,
        nick: &str,
        component: &str,
        occupants: &[String],
        leave: bool,
    ) {
        use std::fmt::Write as _;
        let mut s = String::new();
        if leave {
            let _ = write!(
                s,
                "<presence type='unavailable' from='{room}/{nick}' to='{component}'><x xmlns='{NS_MUC_USER}'>\
                 <item affiliation='none' role='none'/><status code='110'/></x></presence>"
            );
        } else {
            for o in occupants {
                let _ = write!(
                    s,
                    "<presence from='{room}/{o}' to='{component}'><x xmlns='{NS_MUC_USER}'>\
                     <item affiliation='member' role='participant'/></x></presence>"
                );
            }
            let _ = write!(
                s,
                "<presence from='{room}/{nick}' to='{component}'><x xmlns='{NS_MUC_USER}'>\
                 <item affiliation='none' role='participant'/><status code='110'/></x></presence>"
            );
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// `<iq type='result' id=… from=(its to) to=(its from)` without the closing `>`.
    fn result_head(out: &mut Vec<u8>, tag: &[u8]) {
        let q = |v: &str| {
            if v.contains('\'') {
                format!("\"{v}\"")
            } else {
                format!("'{v}'")
            }
        };
        let id = attr(tag, "id").unwrap_or_default();
        let from = attr(tag, "to").unwrap_or("localhost");
        let to = attr(tag, "from").unwrap_or_default();
        out.extend_from_slice(
            format!(
                "<iq type='result' id={} from={} to={}",
                q(id),
                q(from),
                q(to)
            )
            .as_bytes(),
        );
    }

    fn result(out: &mut Vec<u8>, tag: &[u8]) {
        result_head(out, tag);
        out.extend_from_slice(b"/>");
    }

    /// The `message-count` value of a publish's summary form.
    fn message_count(el: &[u8]) -> Option<u64> {
        let at = memchr::memmem::find(el, b"message-count")?;
        let rest = &el[at..];
        let v = memchr::memmem::find(rest, b"<value>")? + 7;
        let end = memchr::memchr(b'<', &rest[v..])?;
        std::str::from_utf8(&rest[v..v + end])
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    impl PushConn {
        /// Writes groupchat messages `m-{i}` for these message indexes, from `room/sender`, in
        /// one write.
        pub fn send_messages(&self, room: &str, sender: &str, indexes: std::ops::Range<u64>) {
            let ms = indexes
                .map(|i| {
                    let xml = format!(
                        "<message from='{room}/{sender}' to='{}' type='groupchat' id='m-{i}'>\
                         <body>message number {i} in the benchmark room, a line of ordinary chat</body>\
                         <occupant-id xmlns='urn:xmpp:occupant-id:0' id='c2VuZGVy'/></message>",
                        self.component
                    );
                    (i, xml.into_bytes())
                })
                .collect();
            let _ = self.out.send(Out::Messages(ms));
        }

        /// Publishes answered so far.
        pub fn publishes(&self) -> u64 {
            self.shared.publishes.load(Ordering::Relaxed)
        }

        /// Joins answered so far.
        pub fn joins(&self) -> u64 {
            lock(&self.shared.seen).joins
        }

        /// Takes the figures gathered so far (and starts afresh).
        pub fn take(&self) -> Seen {
            let mut seen = lock(&self.shared.seen);
            let fresh = Seen {
                publishes: seen.publishes,
                joins: seen.joins,
                ..Seen::default()
            };
            std::mem::replace(&mut *seen, fresh)
        }

        /// Waits until `n` publishes were answered in all; false after `timeout`.
        pub async fn wait_publishes(&self, n: u64, timeout: Duration) -> bool {
            let deadline = Instant::now() + timeout;
            while self.publishes() < n {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            true
        }
    }

    // -- text-level XML ------------------------------------------------------------------------

    /// The next complete top-level element of `data` from `*pos` as `(start, end)`, moving `pos`
    /// past it; `None` when the rest is incomplete (`pos` stays at its start). A stream header,
    /// `<?…?>` and herald's `</stream:stream>` are skipped.
    fn next_element(data: &[u8], pos: &mut usize) -> Option<(usize, usize)> {
        let mut i = *pos;
        let mut depth = 0usize;
        let mut start = None;
        loop {
            let lt = i + memchr::memchr(b'<', &data[i..])?;
            let end = lt + tag_end(&data[lt..])?;
            let tag = &data[lt..end];
            i = end;
            if tag.starts_with(b"<?") || tag.starts_with(b"<!") {
                if depth == 0 {
                    *pos = i;
                }
                continue;
            }
            if tag.starts_with(b"</") {
                if depth == 0 {
                    // `</stream:stream>`.
                    *pos = i;
                    continue;
                }
                depth -= 1;
                if depth == 0 {
                    *pos = i;
                    return start.map(|s| (s, i));
                }
                continue;
            }
            if depth == 0 {
                if tag_name(tag).ends_with(b"stream") {
                    *pos = i;
                    continue;
                }
                start = Some(lt);
            }
            if tag.ends_with(b"/>") {
                if depth == 0 {
                    *pos = i;
                    return Some((lt, i));
                }
            } else {
                depth += 1;
            }
        }
    }

    /// The length of the tag at the start of `data` (up to and including its `>`, quotes
    /// respected), if complete.
    fn tag_end(data: &[u8]) -> Option<usize> {
        let mut quote = None;
        for (i, &b) in data.iter().enumerate().skip(1) {
            match (quote, b) {
                (None, b'\'' | b'"') => quote = Some(b),
                (Some(q), _) if b == q => quote = None,
                (None, b'>') => return Some(i + 1),
                _ => {}
            }
        }
        None
    }

    fn tag_name(tag: &[u8]) -> &[u8] {
        let rest = &tag[1..];
        let end = rest
            .iter()
            .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// The raw (still escaped) value of attribute `name` in a start tag.
    fn attr<'a>(tag: &'a [u8], name: &str) -> Option<&'a str> {
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&tag[from..], name.as_bytes()) {
            let at = from + i;
            let after = at + name.len();
            if at > 0 && tag[at - 1].is_ascii_whitespace() && tag.get(after) == Some(&b'=') {
                let quote = *tag.get(after + 1)?;
                let start = after + 2;
                let len = memchr::memchr(quote, &tag[start..])?;
                return std::str::from_utf8(&tag[start..start + len]).ok();
            }
            from = after;
        }
        None
    }
}
