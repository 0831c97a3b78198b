//! Just enough HTTP/1.1 for the demo server: read a request head, write a
//! response head. Every response closes the connection, so there is no
//! keep-alive, chunking or pipelining to handle.

use std::io::{self, Read};
use std::net::TcpStream;

/// Requests heads larger than this are refused (a client bug or garbage).
const MAX_HEAD: usize = 64 * 1024;
/// A request body (GET has none) is drained up to this size before we answer,
/// so closing the socket does not reset the connection under unread data.
const MAX_DRAIN: usize = 1024 * 1024;

pub(super) struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// The body, up to a bound (GET has none).
    pub body: Vec<u8>,
}

impl Request {
    /// First header with this name (case-insensitive), value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// First query parameter with this name, percent-decoded (`+` is a space,
    /// as form encoding writes it).
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

/// What reading a request head produced.
pub(super) enum ReadOutcome {
    Request(Request),
    /// The peer closed before sending anything (e.g. the server's own wake-up
    /// connection, or a health check).
    Empty,
    /// Bytes arrived but are not a request head we understand.
    Malformed,
}

pub(super) fn read_request(stream: &mut TcpStream) -> io::Result<ReadOutcome> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Ok(ReadOutcome::Malformed);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(if buf.is_empty() {
                ReadOutcome::Empty
            } else {
                ReadOutcome::Malformed
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Ok(ReadOutcome::Malformed);
    };
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(ReadOutcome::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(ReadOutcome::Malformed);
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Ok(ReadOutcome::Malformed);
        };
        headers.push((
            name.trim().to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };

    // Read a declared body (bounded), so closing the socket does not reset
    // the connection under unread data; POST handlers look at it.
    let declared = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_DRAIN);
    let mut body = buf[head_end..].to_vec();
    if declared > body.len() {
        let mut rest = (&mut *stream).take((declared - body.len()) as u64);
        rest.read_to_end(&mut body)?;
    }
    body.truncate(declared);
    req.body = body;
    Ok(ReadOutcome::Request(req))
}

/// Index just past the blank line ending the head (`\r\n\r\n`, or a bare
/// `\n\n` from sloppy clients).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `+` is a space (form encoding); `%XX` is a byte; a stray `%` stays as is;
/// bytes that are not UTF-8 become U+FFFD.
pub(super) fn percent_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Response head bytes. `content_length` is what we declare (it may lie
/// under a fault). A `Content-Length` or `Connection` among `headers`
/// replaces ours, so a `Fault::Status` can set them explicitly.
pub(super) fn head(status: u16, headers: &[(String, String)], content_length: usize) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    for (k, v) in headers {
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    if !has("content-length") {
        h.push_str(&format!("Content-Length: {content_length}\r\n"));
    }
    if !has("connection") {
        h.push_str("Connection: close\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}
