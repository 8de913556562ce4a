//! Pieces shared by the `bench_presence` and `bench_webhook` examples: the login side of the
//! in-process fake XEP-0114 server, text-level XML helpers and process figures.

use std::io;
use std::sync::{Mutex, PoisonError};

use bytes::{Buf, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const JID: &str = "herald.localhost";
pub const SECRET: &str = "bench-secret";
pub const NS_COMPONENT: &str = "jabber:component:accept";

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Fake XEP-0114 server: login
// ---------------------------------------------------------------------------------------------

pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Accepts herald's connection and logs it in: reads its stream header, answers with ours,
/// checks its handshake (hex(sha1(id + secret))) and answers `<handshake/>` then `advert`.
/// Returns the socket and what was read past the handshake.
pub async fn accept_and_login(
    listener: &TcpListener,
    advert: &str,
) -> io::Result<(TcpStream, BytesMut)> {
    let (mut sock, _) = listener.accept().await?;
    sock.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let header_end = loop {
        if let Some(end) = stream_header_end(&buf) {
            break end;
        }
        if sock.read_buf(&mut buf).await? == 0 {
            return Err(invalid("herald closed before its stream header"));
        }
    };
    buf.advance(header_end);
    let stream_id = uuid::Uuid::new_v4().simple().to_string();
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' \
         xmlns:stream='http://etherx.jabber.org/streams' from='{JID}' id='{stream_id}'>"
    );
    sock.write_all(header.as_bytes()).await?;
    let (digest, handshake_end) = loop {
        if let Some(found) = handshake(&buf) {
            break found;
        }
        if sock.read_buf(&mut buf).await? == 0 {
            return Err(invalid("herald closed before its handshake"));
        }
    };
    buf.advance(handshake_end);
    let expected = hex::encode(Sha1::digest(format!("{stream_id}{SECRET}")));
    if !digest.eq_ignore_ascii_case(&expected) {
        return Err(invalid(format!(
            "bad handshake digest {digest:?}, expected {expected}"
        )));
    }
    sock.write_all(format!("<handshake/>{advert}").as_bytes())
        .await?;
    Ok((sock, buf))
}

// ---------------------------------------------------------------------------------------------
// Text-level XML helpers
// ---------------------------------------------------------------------------------------------

/// One top-level piece of herald's output.
pub enum TopLevel<'a> {
    /// herald's `</stream:stream>` (the only end tag at top level).
    StreamEnd,
    /// A complete element: its start tag, the start tag's local name and the whole element.
    Element {
        tag: &'a [u8],
        local: &'a [u8],
        element: &'a [u8],
    },
}

/// Splits herald's output into top-level elements, at text level, handing each complete one
/// to `on` and consuming it from `buf`. Whitespace, stray text between stanzas (none
/// expected), `<?…?>` declarations and herald's stream header (stays open) are skipped.
pub fn split_top_level(buf: &mut BytesMut, mut on: impl FnMut(TopLevel<'_>)) {
    let data = &buf[..];
    let mut pos = 0;
    loop {
        while pos < data.len() && data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= data.len() {
            break;
        }
        if data[pos] != b'<' {
            match find_byte(&data[pos..], b'<') {
                Some(i) => pos += i,
                None => pos = data.len(),
            }
            continue;
        }
        let Some(gt) = find_byte(&data[pos..], b'>') else {
            break;
        };
        let tag_end = pos + gt + 1;
        let tag = &data[pos..tag_end];
        if tag.starts_with(b"<?") {
            pos = tag_end;
            continue;
        }
        if tag.starts_with(b"</") {
            on(TopLevel::StreamEnd);
            pos = tag_end;
            continue;
        }
        let name = tag_name(tag);
        let local = match name.iter().position(|&b| b == b':') {
            Some(i) => &name[i + 1..],
            None => name,
        };
        if local == b"stream" {
            pos = tag_end;
            continue;
        }
        let end = if tag.ends_with(b"/>") {
            tag_end
        } else {
            let mut closing = Vec::with_capacity(name.len() + 3);
            closing.extend_from_slice(b"</");
            closing.extend_from_slice(name);
            closing.push(b'>');
            match find(&data[tag_end..], &closing) {
                Some(i) => tag_end + i + closing.len(),
                None => break,
            }
        };
        on(TopLevel::Element {
            tag,
            local,
            element: &data[pos..end],
        });
        pos = end;
    }
    buf.advance(pos);
}

/// The raw (still escaped) value of attribute `name` in a start tag.
pub fn attr<'a>(tag: &'a [u8], name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = find(&tag[from..], name.as_bytes()) {
        let at = from + i;
        let after = at + name.len();
        let preceded = at > 0 && tag[at - 1].is_ascii_whitespace();
        if preceded && tag.get(after) == Some(&b'=') {
            let quote = *tag.get(after + 1)?;
            let start = after + 2;
            let len = find_byte(&tag[start..], quote)?;
            return std::str::from_utf8(&tag[start..start + len]).ok();
        }
        from = after;
    }
    None
}

pub fn tag_name(tag: &[u8]) -> &[u8] {
    let rest = &tag[1..];
    let end = rest
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// End of the peer's stream header (`<?xml …?>` declarations skipped), if complete.
pub fn stream_header_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let lt = i + find_byte(&buf[i..], b'<')?;
        if buf.get(lt + 1) == Some(&b'?') {
            i = lt + find(&buf[lt..], b"?>")? + 2;
            continue;
        }
        return Some(lt + find_byte(&buf[lt..], b'>')? + 1);
    }
}

/// (digest, end) of a complete `<handshake>digest</handshake>`.
pub fn handshake(buf: &[u8]) -> Option<(String, usize)> {
    let start = find(buf, b"<handshake")?;
    let open_end = start + find_byte(&buf[start..], b'>')? + 1;
    let close = open_end + find(&buf[open_end..], b"</handshake>")?;
    let digest = String::from_utf8_lossy(&buf[open_end..close])
        .trim()
        .to_owned();
    Some((digest, close + b"</handshake>".len()))
}

pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    hay.iter().position(|&x| x == b)
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        i += find_byte(&hay[i..=hay.len() - needle.len()], first)?;
        if &hay[i + 1..i + needle.len()] == rest {
            return Some(i);
        }
        i += 1;
    }
    None
}

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
