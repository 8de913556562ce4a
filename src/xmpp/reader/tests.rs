//! The reader through the same path the connection reads: tokio-xmpp's `XmlStream` over it.

use std::borrow::Cow;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream};
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts};

use super::*;
use crate::xmpp::inbound::{RejectedStanza, Stanza};
use crate::xmpp::limits::{self, Limits, PARSER_TOKEN_LIMIT};
use crate::xmpp::stanza::{error_condition, NS_COMPONENT};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='herald.localhost'>";
const FOOTER: &str = "</stream:stream>";
/// The valid stanza every test sends after the hostile one.
const AFTER: &str = "<presence from='ok@localhost/r' id='after'><show>away</show></presence>";

#[derive(Debug, PartialEq, Eq)]
enum End {
    Footer,
    Hard(String),
    Eof,
}

struct Read {
    stanzas: Vec<Stanza>,
    end: End,
    /// Most bytes the reader's buffer ever had allocated.
    max_buffer: usize,
}

/// `body` as the server's side of a component stream (after its header, before its footer),
/// written in pieces of `chunk` bytes and read the way the connection reads it: tokio-xmpp's
/// `XmlStream<_, Stanza>` (set up as `login()` does) over the guarded reader.
async fn read_stream(body: &[u8], limits: Limits, poison: &PoisonMemory, chunk: usize) -> Read {
    let io = GuardedReader::with_capacity(4096, client(body, chunk, true), limits, poison.clone());
    read_with(io, |io| io.guard.buf.len()).await
}

/// `body` without the footer, then the connection closes.
async fn read_cut(body: &[u8], poison: &PoisonMemory) -> Read {
    let io = GuardedReader::new(client(body, 4096, false), Limits::default(), poison.clone());
    read_with(io, |io| io.guard.buf.len()).await
}

/// The same stream, read without the guard (tokio's BufReader, as before).
async fn read_unguarded(body: &[u8]) -> Read {
    let io = BufReader::with_capacity(4096, client(body, 4096, true));
    read_with(io, |_| 0).await
}

fn client(body: &[u8], chunk: usize, footer: bool) -> DuplexStream {
    let (client, server) = tokio::io::duplex(chunk.max(1));
    let (mut server_rd, mut server_wr) = tokio::io::split(server);
    let mut all = HEADER.as_bytes().to_vec();
    all.extend_from_slice(body);
    if footer {
        all.extend_from_slice(FOOTER.as_bytes());
    }
    // What herald writes (its stream header) is read and dropped, so it never blocks.
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut server_rd, &mut sink).await;
    });
    tokio::spawn(async move {
        for piece in all.chunks(chunk.max(1)) {
            if server_wr.write_all(piece).await.is_err() {
                return;
            }
        }
        if footer {
            // The server's side stays open: the stream ends with the footer.
            std::future::pending::<()>().await;
        }
        let _ = server_wr.shutdown().await;
    });
    client
}

async fn read_with<Io>(io: Io, buffer: impl Fn(&Io) -> usize) -> Read
where
    Io: AsyncBufRead + AsyncWrite + Unpin,
{
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(60),
        response_timeout: Duration::from_secs(60),
    };
    let header = StreamHeader {
        to: Some(Cow::Borrowed("herald.localhost")),
        from: None,
        id: None,
    };
    let mut pending = initiate_stream(io, NS_COMPONENT, header, timeouts)
        .await
        .unwrap();
    assert_eq!(pending.take_header().id.as_deref(), Some("s1"));
    let mut stream = pending.skip_features::<Stanza>();
    let mut stanzas = Vec::new();
    let mut max_buffer = buffer(stream.get_stream());
    let end = loop {
        let next = stream.next().await;
        max_buffer = max_buffer.max(buffer(stream.get_stream()));
        match next {
            Some(Ok(s)) => stanzas.push(s),
            Some(Err(ReadError::StreamFooterReceived)) => break End::Footer,
            Some(Err(ReadError::HardError(e))) => break End::Hard(e.to_string()),
            Some(Err(e)) => panic!("unexpected read error: {e}"),
            None => break End::Eof,
        }
    };
    Read {
        stanzas,
        end,
        max_buffer,
    }
}

async fn read(body: &str) -> Read {
    read_stream(
        body.as_bytes(),
        Limits::default(),
        &PoisonMemory::new(),
        4096,
    )
    .await
}

/// The stream went on: it ended with the server's footer, and the last stanza is [`AFTER`].
fn assert_went_on(r: &Read) {
    assert_eq!(r.end, End::Footer);
    match r.stanzas.last() {
        Some(Stanza::Presence(p)) => {
            assert_eq!(p.from.as_deref(), Some("ok@localhost/r"));
            assert_eq!(p.show.as_deref(), Some("away"));
        }
        other => panic!("the stanza after was not read: {other:?}"),
    }
}

/// The stream was exactly `[rejection, AFTER]`; returns the rejection.
fn rejection(r: &Read) -> &RejectedStanza {
    assert_went_on(r);
    assert_eq!(r.stanzas.len(), 2, "{:?}", r.stanzas);
    match &r.stanzas[0] {
        Stanza::Rejected(rej) => rej,
        other => panic!("not rejected: {other:?}"),
    }
}

fn nested(name: &str, depth: usize) -> String {
    format!(
        "{}{}",
        format!("<{name}>").repeat(depth),
        format!("</{name}>").repeat(depth)
    )
}

#[tokio::test]
async fn deep_nesting_is_rejected_in_every_kind_of_stanza() {
    let deep = nested("x", 5_000);
    for (open, close, name, kind) in [
        (
            "<presence from='a@localhost/r' id='p1'>",
            "</presence>",
            "presence",
            None,
        ),
        (
            "<message from='a@localhost/r' id='m1' type='chat'>",
            "</message>",
            "message",
            Some("chat"),
        ),
        (
            "<iq from='a@localhost/r' id='i1' type='get'>",
            "</iq>",
            "iq",
            Some("get"),
        ),
        (
            "<unknown from='a@localhost/r' id='u1'>",
            "</unknown>",
            "unknown",
            None,
        ),
    ] {
        let r = read(&format!("{open}{deep}{close}{AFTER}")).await;
        let rej = rejection(&r);
        assert_eq!(rej.limit, limits::DEPTH, "{name}");
        assert_eq!(rej.name.as_deref(), Some(name));
        assert_eq!(rej.ns.as_deref(), Some(NS_COMPONENT));
        assert_eq!(rej.from.as_deref(), Some("a@localhost/r"));
        assert_eq!(rej.kind.as_deref(), kind);
        assert!(rej.id.is_some());
    }
}

#[tokio::test]
async fn a_rejected_iq_request_gets_a_policy_violation_answer() {
    let r = read(&format!(
        "<iq from='a@localhost/r' to='herald.localhost' id='i1' type='set'>{}</iq>{AFTER}",
        nested("q", 100)
    ))
    .await;
    let rej = rejection(&r);
    assert!(rej.is_iq_request());
    let answer = rej.error_reply("herald.localhost").unwrap();
    assert_eq!(answer.attr("type"), Some("error"));
    assert_eq!(answer.attr("id"), Some("i1"));
    assert_eq!(answer.attr("to"), Some("a@localhost/r"));
    assert_eq!(answer.attr("from"), Some("herald.localhost"));
    assert_eq!(error_condition(&answer), Some("policy-violation"));
    // Nothing else is answered.
    let msg = RejectedStanza {
        name: Some("message".into()),
        ns: Some(NS_COMPONENT.into()),
        ..RejectedStanza::default()
    };
    assert!(msg.error_reply("herald.localhost").is_none());
}

#[tokio::test]
async fn the_depth_limit_is_exact() {
    // The message and 63 levels below it: 64.
    let r = read(&format!(
        "<message id='m'>{}</message>{AFTER}",
        nested("x", 63)
    ))
    .await;
    assert_went_on(&r);
    let Stanza::Other(el) = &r.stanzas[0] else {
        panic!("{:?}", r.stanzas[0]);
    };
    let mut depth = 1;
    let mut at = el;
    while let Some(child) = at.children().next() {
        depth += 1;
        at = child;
    }
    assert_eq!(depth, 64);
    let r = read(&format!(
        "<message id='m'>{}</message>{AFTER}",
        nested("x", 64)
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::DEPTH);
    // An empty element at depth 65 counts too.
    let r = read(&format!(
        "<message id='m'>{}<y/>{}</message>{AFTER}",
        "<x>".repeat(63),
        "</x>".repeat(63)
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::DEPTH);
}

#[tokio::test]
async fn rxml_takes_values_up_to_the_cap_and_ends_the_stream_beyond() {
    // Why the reader caps names and values at PARSER_TOKEN_LIMIT: without it, one byte more
    // ends the stream.
    let at = format!("<message id='{}'/>{AFTER}", "v".repeat(PARSER_TOKEN_LIMIT));
    assert_went_on(&read_unguarded(at.as_bytes()).await);
    let over = format!(
        "<message id='{}'/>{AFTER}",
        "v".repeat(PARSER_TOKEN_LIMIT + 1)
    );
    let r = read_unguarded(over.as_bytes()).await;
    assert!(
        matches!(&r.end, End::Hard(e) if e.contains("long name")),
        "{:?}",
        r.end
    );
    // With it: the first is read, the second rejected, and the stream goes on.
    let r = read(&at).await;
    assert_went_on(&r);
    assert!(
        matches!(&r.stanzas[0], Stanza::Other(el) if el.attr("id").map(str::len) == Some(PARSER_TOKEN_LIMIT))
    );
    assert_eq!(rejection(&read(&over).await).limit, limits::VALUE_SIZE);
}

#[tokio::test]
async fn over_long_values_and_names_are_rejected() {
    let long = "a".repeat(20_000);
    // A value in the stanza's own start tag: nothing of that tag is trusted.
    let r = read(&format!("<presence from='{long}@localhost/r'/>{AFTER}")).await;
    let rej = rejection(&r);
    assert_eq!(rej.limit, limits::VALUE_SIZE);
    assert_eq!(rej.name, None);
    assert_eq!(rej.from, None);
    // Deeper: the start tag is known.
    let r = read(&format!(
        "<presence from='a@localhost/r' type='unavailable'><status v='{long}'/></presence>{AFTER}"
    ))
    .await;
    let rej = rejection(&r);
    assert_eq!(rej.limit, limits::VALUE_SIZE);
    assert_eq!(rej.name.as_deref(), Some("presence"));
    assert_eq!(rej.from.as_deref(), Some("a@localhost/r"));
    assert_eq!(rej.kind.as_deref(), Some("unavailable"));
    // Element names, top-level and nested, and attribute names.
    let r = read(&format!("<{long} from='a@localhost/r'/>{AFTER}")).await;
    assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
    let r = read(&format!(
        "<message from='a@localhost/r'><{long}/></message>{AFTER}"
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
    let r = read(&format!(
        "<message from='a@localhost/r'><x>t</x  ><b {long}='1'/></message>{AFTER}"
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
    // An end tag's name can only be over the limit if it does not match; still rejected.
    let r = read(&format!("<message><x></{long}></message>{AFTER}")).await;
    assert_eq!(rejection(&r).limit, limits::NAME_SIZE);
}

#[tokio::test]
async fn huge_text_too_many_children_attributes_and_elements_are_rejected() {
    let text = "t".repeat(300 * 1024);
    let r = read(&format!(
        "<message from='a@localhost/r'><body>{text}</body></message>{AFTER}"
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::TEXT_SIZE);
    let r = read(&format!(
        "<message from='a@localhost/r'><![CDATA[{text}]]></message>{AFTER}"
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::TEXT_SIZE);
    // 256 KiB of text is fine.
    let ok = "t".repeat(256 * 1024);
    let r = read(&format!(
        "<message from='a@localhost/r'><body>{ok}</body></message>{AFTER}"
    ))
    .await;
    assert_went_on(&r);
    assert!(
        matches!(&r.stanzas[0], Stanza::Other(el) if el.children().next().map(|b| b.text().len()) == Some(ok.len()))
    );

    let children = "<item/>".repeat(1025);
    let r = read(&format!(
        "<iq type='result' id='r1'><query xmlns='q'>{children}</query></iq>{AFTER}"
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::CHILDREN);
    let children = "<item/>".repeat(1024);
    let r = read(&format!(
        "<iq type='result' id='r1'><query xmlns='q'>{children}</query></iq>{AFTER}"
    ))
    .await;
    assert_went_on(&r);

    let attrs: String = (0..65).map(|i| format!(" a{i}='v'")).collect();
    let r = read(&format!(
        "<message from='a@localhost/r'><x{attrs}/></message>{AFTER}"
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::ATTRIBUTES);
    let r = read(&format!("<message{attrs}/>{AFTER}")).await;
    let rej = rejection(&r);
    assert_eq!((rej.limit, rej.name.as_deref()), (limits::ATTRIBUTES, None));

    let many = format!("<x>{}</x>", "<y/>".repeat(1000)).repeat(17);
    let r = read(&format!(
        "<message from='a@localhost/r'>{many}</message>{AFTER}"
    ))
    .await;
    assert_eq!(rejection(&r).limit, limits::ELEMENTS);
}

#[tokio::test]
async fn a_stanza_over_max_stanza_bytes_is_skipped_without_being_held() {
    let small = Limits::new(64 * 1024);
    // 2 MB in 200 children of 10 kB each, within every other limit: only the size is wrong.
    let big = format!(
        "<message from='a@localhost/r' id='big'><x>{}</x></message>{AFTER}",
        format!("<y>{}</y>", "z".repeat(10_000)).repeat(200)
    );
    let r = read_stream(big.as_bytes(), small, &PoisonMemory::new(), 4096).await;
    let rej = rejection(&r);
    assert_eq!(rej.limit, limits::STANZA_SIZE);
    assert_eq!(rej.id.as_deref(), Some("big"));
    assert!(
        r.max_buffer <= 64 * 1024 + 2 * 4096,
        "the reader held {} bytes",
        r.max_buffer
    );
    // One byte under the limit passes, one over does not.
    let fill = |n: usize| {
        let open = "<message id='s'>";
        let close = "</message>";
        format!(
            "{open}{}{close}{AFTER}",
            "z".repeat(n - open.len() - close.len())
        )
    };
    let tiny = Limits::new(4096);
    let r = read_stream(fill(4096).as_bytes(), tiny, &PoisonMemory::new(), 100).await;
    assert_went_on(&r);
    assert_eq!(r.stanzas.len(), 2);
    assert!(matches!(r.stanzas[0], Stanza::Other(_)));
    let r = read_stream(fill(4097).as_bytes(), tiny, &PoisonMemory::new(), 100).await;
    assert_eq!(rejection(&r).limit, limits::STANZA_SIZE);
}

#[tokio::test]
async fn comments_and_processing_instructions_reject_the_stanza_and_are_dropped_between() {
    let r = read(&format!("<message id='c'><!-- hi --></message>{AFTER}")).await;
    assert_eq!(rejection(&r).limit, limits::RESTRICTED_XML);
    let r = read(&format!("<message id='c'><?pi x?></message>{AFTER}")).await;
    assert_eq!(rejection(&r).limit, limits::RESTRICTED_XML);
    // Between stanzas: text, a comment, a CDATA section, a processing instruction. Each
    // would end a tokio-xmpp stream.
    let r = read(&format!(
        "\n text &amp; <!-- c --> <![CDATA[ d ]]> <?pi x?> {AFTER}"
    ))
    .await;
    assert_went_on(&r);
    assert_eq!(r.stanzas.len(), 1);
    assert!(matches!(read_unguarded(b"text").await.end, End::Hard(_)));
}

#[tokio::test]
async fn malformed_nesting_is_rejected_before_the_parser_ends_the_stream() {
    let r = read(&format!("<message id='m'><a><b></a></b></message>{AFTER}")).await;
    assert_eq!(rejection(&r).limit, limits::MALFORMED);
    let r = read(&format!("<message id='m'><a v='1<2'/></message>{AFTER}")).await;
    assert_eq!(rejection(&r).limit, limits::MALFORMED);
}

#[tokio::test]
async fn an_end_tag_between_stanzas_is_the_footer_and_goes_to_the_parser_as_it_is() {
    // Whatever it looks like (even over the name limit, arriving in pieces), it is the
    // stream's end: nothing of it is rejected, nothing after it is touched.
    for footer in [
        "</stream:stream >",
        &format!("</{}>", "s".repeat(2000)),
        "</x\0<message id='c'>",
    ] {
        let body = format!("{AFTER}{footer}");
        for chunk in [1, 3, 4096] {
            let io = GuardedReader::with_capacity(
                512,
                client(body.as_bytes(), chunk, false),
                Limits::default(),
                PoisonMemory::new(),
            );
            let r = read_with(io, |_| 0).await;
            assert_eq!(r.stanzas.len(), 1, "{footer:?} in pieces of {chunk}");
            assert!(
                !matches!(&r.end, End::Hard(e) if e.contains("non-whitespace") || e.contains("restricted")),
                "{footer:?} in pieces of {chunk}: {:?}",
                r.end
            );
            if footer.starts_with("</stream:stream") {
                assert_eq!(r.end, End::Footer);
            }
        }
    }
}

#[tokio::test]
async fn a_start_tag_that_uses_the_marker_prefix_is_not_kept() {
    let r = read(&format!(
        "<message xmlns:herald-rejected='urn:other' herald-rejected:limit='x'>{}</message>{AFTER}",
        nested("x", 70)
    ))
    .await;
    let rej = rejection(&r);
    assert_eq!((rej.limit, rej.name.as_deref()), (limits::DEPTH, None));
}

#[tokio::test]
async fn a_kept_start_tag_is_read_as_the_parser_would() {
    let r = read(&format!(
        "<iq xml:lang='en' from=\"o'hara&amp;co@localhost/r\" id = 'q&lt;1' type='get'>{}</iq>{AFTER}",
        nested("x", 70)
    ))
    .await;
    let rej = rejection(&r);
    assert_eq!(rej.from.as_deref(), Some("o'hara&co@localhost/r"));
    assert_eq!(rej.id.as_deref(), Some("q<1"));
    assert!(rej.is_iq_request());
}

/// What herald's own traffic and the server's look like, in every syntax the reader has to
/// follow: it must hand these over unchanged.
const ORDINARY: &str = "<handshake/>\
    <message from='localhost' to='herald.localhost'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='presence' type='managed_entity'/></privilege></message>\n\
    <presence id='6e1a' xml:lang='en' to='herald.localhost' from='carol@localhost/harness'><show>dnd</show><status>carol &amp; &#x1F3AE; &lt;was&gt; online</status><c hash='sha-1' ver='x=' node='n' xmlns='http://jabber.org/protocol/caps'/><x xmlns='vcard-temp:x:update'><photo/></x><delay from='localhost' xmlns='urn:xmpp:delay' stamp='2026-11-22T04:19:40Z'/></presence>\
    <presence from='bob@localhost/harness' to='herald.localhost' type='unavailable' />  \r\n\t\
    <iq type = \"result\" id=\"herald-serverinfo-1\" from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Prosody &gt; 13'/></query ></iq>\
    <message from='room@muc.localhost/bob' type='groupchat'><body><![CDATA[a <b> & ]] > c]]></body><x xmlns:p='urn:p' p:a='&quot;'/></message>\
    <stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>";

#[tokio::test]
async fn ordinary_traffic_passes_unchanged_whatever_the_pieces() {
    let body = format!("{ORDINARY}{AFTER}");
    let unguarded = read_unguarded(body.as_bytes()).await;
    assert_went_on(&unguarded);
    let want = format!("{:?}", unguarded.stanzas);
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let r = read_stream(
            body.as_bytes(),
            Limits::default(),
            &PoisonMemory::new(),
            chunk,
        )
        .await;
        assert_went_on(&r);
        assert_eq!(format!("{:?}", r.stanzas), want, "pieces of {chunk}");
    }
}

#[tokio::test]
async fn rejections_are_the_same_whatever_the_pieces() {
    let body = format!(
        "{ORDINARY}<message id='1'>{}</message>{ORDINARY}<presence from='{}'/><!-- c -->{ORDINARY}{AFTER}",
        nested("x", 80),
        "v".repeat(9000)
    );
    let whole = read_stream(
        body.as_bytes(),
        Limits::default(),
        &PoisonMemory::new(),
        1 << 16,
    )
    .await;
    assert_went_on(&whole);
    let rejected: Vec<_> = whole
        .stanzas
        .iter()
        .filter_map(|s| match s {
            Stanza::Rejected(r) => Some(r.limit),
            _ => None,
        })
        .collect();
    assert_eq!(rejected, [limits::DEPTH, limits::VALUE_SIZE]);
    let want = format!("{:?}", whole.stanzas);
    for chunk in [1, 5, 333] {
        let r = read_stream(
            body.as_bytes(),
            Limits::default(),
            &PoisonMemory::new(),
            chunk,
        )
        .await;
        assert_eq!(format!("{:?}", r.stanzas), want, "pieces of {chunk}");
    }
}

#[tokio::test]
async fn a_stanza_the_parser_fails_on_ends_one_stream_and_is_skipped_on_the_next() {
    // Within every limit, but not namespace-well-formed: the parser ends the stream.
    let bad = "<message from='a@localhost/r' id='bad'><u:x/></message>";
    let body = format!("{AFTER}{bad}{AFTER}");
    let poison = PoisonMemory::new();
    let first = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
    assert!(matches!(first.end, End::Hard(_)), "{:?}", first.end);
    assert_eq!(first.stanzas.len(), 1);

    assert_eq!(poison.len(), 1);
    assert!(poison.contains(bad.as_bytes()));
    // The server sends it again after the reconnect: skipped, and the stream goes on.
    let second = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
    assert_went_on(&second);
    assert_eq!(second.stanzas.len(), 3);
    match &second.stanzas[1] {
        Stanza::Rejected(r) => {
            assert_eq!((r.limit, r.name.as_deref()), (limits::UNPARSEABLE, None))
        }
        other => panic!("{other:?}"),
    }
    // A stream that merely ends (no failure) poisons nothing.
    let poison = PoisonMemory::new();
    let cut = format!("{AFTER}<message id='cut'>");
    let r = read_cut(cut.as_bytes(), &poison).await;
    assert!(matches!(r.end, End::Hard(_)), "{:?}", r.end);
    assert_eq!(r.stanzas.len(), 1);
    assert!(poison.is_empty());
    let r = read_stream(AFTER.as_bytes(), Limits::default(), &poison, 4096).await;
    assert_went_on(&r);
    assert!(poison.is_empty());
}

#[tokio::test]
async fn a_rejection_the_parser_fails_on_is_replaced_by_a_bare_one_next_time() {
    // The kept start tag is fine for the reader but not for the parser (undeclared prefix).
    let bad = format!("<message u:a='1' id='bad'>{}</message>", nested("x", 70));
    let body = format!("{bad}{AFTER}");
    let poison = PoisonMemory::new();
    let first = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
    assert!(matches!(first.end, End::Hard(_)), "{:?}", first.end);
    assert_eq!(poison.len(), 1);
    let second = read_stream(body.as_bytes(), Limits::default(), &poison, 4096).await;
    let rej = rejection(&second);
    assert_eq!(
        (rej.limit, rej.name.as_deref()),
        (limits::UNPARSEABLE, None)
    );
}

#[test]
fn the_poison_memory_forgets_the_oldest_beyond_its_capacity() {
    let p = PoisonMemory::new();
    for i in 0..PoisonMemory::CAPACITY + 10 {
        assert!(p.remember(format!("<s{i}/>").as_bytes()));
    }
    assert!(!p.remember(b"<s20/>"));
    assert_eq!(p.len(), PoisonMemory::CAPACITY);
    assert!(!p.contains(b"<s0/>"));
    assert!(p.contains(format!("<s{}/>", PoisonMemory::CAPACITY + 9).as_bytes()));
    // The process-wide memory is one memory.
    let before = PoisonMemory::global().len();
    PoisonMemory::global().remember(b"<global-test/>");
    assert_eq!(PoisonMemory::global().len(), before + 1);
}
