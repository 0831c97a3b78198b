//! Misbehaviours the demo server can put on the next matching request:
//! error statuses, bodies cut short or reset, stalls, trickles, lying
//! lengths, dropped connections and echoed headers; and how a response goes
//! on the wire once a fault has had its say.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use crate::Response;
use crate::http::{self, Request};

/// Pause between sending the last bytes and resetting under `Fault::Reset`,
/// so the client normally reads those bytes before the RST arrives.
const RESET_GRACE: Duration = Duration::from_millis(50);

/// Which requests a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    List,
    /// `None` matches a `/get` for any id.
    Get(Option<String>),
    /// A REST resource by its exact path, e.g. `/v2/users` or
    /// `/settings/recording/v1/privacy/history`.
    Path(String),
    /// Segment Export: `POST /segments/v1/exports`.
    SegmentCreate,
    /// Segment Export: `GET /operations/v1/{id}`.
    Operation,
    /// Segment Export: `GET /search/v1/exports/{id}/results`.
    Results,
    /// Segment Export: the file download from a `location` link.
    Download,
}

/// A misbehaviour to apply to the next matching request instead of (or on
/// top of) the normal response.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, headers and body (e.g. 429 + `Retry-After`,
    /// 500, 503, 404). `Content-Type` defaults to `application/json`;
    /// `Content-Length` is computed unless given in `headers`.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Declare the full `Content-Length`, send `after` body bytes, then close
    /// cleanly (FIN).
    Truncate { after: usize },
    /// Send `after` body bytes, then reset the connection (RST, via
    /// `SO_LINGER` 0).
    Reset { after: usize },
    /// Send `after` body bytes, sleep `pause`, then send the rest.
    Stall { after: usize, pause: Duration },
    /// Send the body in `chunk`-byte pieces with `delay` between pieces.
    Trickle { chunk: usize, delay: Duration },
    /// Answer 200 with this content type and body instead of the real one.
    Body { content_type: String, body: Vec<u8> },
    /// Send the true body but declare this `Content-Length`, then close.
    LyingContentLength { declared: usize },
    /// Read the request, then close without answering.
    Drop,
    /// An older version of the file (`body`, with its own `ETag`), cut
    /// off after `after` bytes: the file changes before the client asks
    /// for the rest.
    OldVersion { body: Vec<u8>, after: usize },
    /// The normal answer, but a `Range` asked for is ignored: the whole
    /// file, with 200.
    IgnoreRange,
    /// Nothing: the normal answer. Queued before another fault, it lets
    /// that one apply to a later matching request.
    Pass,
    /// Answer with this status and, as a `text/plain` body, the request line
    /// and headers as received, the way debug proxies and WAF pages echo
    /// them (the `Authorization` header included).
    Echo { code: u16 },
    /// Answer with this status and a storage-style error body that quotes
    /// the link's signature (each query value of the request) in the forms
    /// storage services use: an XML element, a header line, free text.
    QuoteSignature { code: u16 },
}

impl Fault {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::Truncate { .. } => "truncate",
            Fault::Reset { .. } => "reset",
            Fault::Stall { .. } => "stall",
            Fault::Trickle { .. } => "trickle",
            Fault::Body { .. } => "body",
            Fault::LyingContentLength { .. } => "lying-content-length",
            Fault::Drop => "drop",
            Fault::Echo { .. } => "echo",
            Fault::QuoteSignature { .. } => "quote-signature",
            Fault::Pass => "pass",
            Fault::IgnoreRange => "ignore-range",
            Fault::OldVersion { .. } => "old-version",
        }
    }
}

/// How the chosen response goes on the wire.
pub(crate) enum Delivery {
    Full,
    Truncate(usize),
    Reset(usize),
    Stall(usize, Duration),
    Trickle(usize, Duration),
    Lie(usize),
}

/// What a fault makes of a request: the response to send instead of the
/// normal one (`None` for the normal one, which the fault may distort on the
/// wire; `Some(None)` for no response at all), and how it goes out.
pub(crate) fn apply(fault: Fault, req: &Request) -> (Option<Option<Response<'static>>>, Delivery) {
    match fault {
        Fault::Status {
            code,
            mut headers,
            body,
        } => {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.insert(0, ("Content-Type".into(), "application/json".into()));
            }
            (
                Some(Some(Response {
                    status: code,
                    headers,
                    body: Cow::Owned(body),
                })),
                Delivery::Full,
            )
        }
        Fault::Body { content_type, body } => (
            Some(Some(Response {
                status: 200,
                headers: vec![("Content-Type".into(), content_type)],
                body: Cow::Owned(body),
            })),
            Delivery::Full,
        ),
        Fault::Drop => (Some(None), Delivery::Full),
        Fault::Echo { code } => (
            Some(Some(Response {
                status: code,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: Cow::Owned(echo(req)),
            })),
            Delivery::Full,
        ),
        Fault::QuoteSignature { code } => {
            let mut body = String::from("<Error><Code>SignatureDoesNotMatch</Code>");
            for part in req.query.split('&') {
                let value = part.split_once('=').map_or(part, |(_, v)| v);
                body.push_str(&format!(
                    "<SignatureProvided>{value}</SignatureProvided>\nX-Amz-Signature: {value}\nthe request was signed with Signature={value} for {}\n",
                    req.path
                ));
            }
            body.push_str("</Error>");
            (
                Some(Some(Response {
                    status: code,
                    headers: vec![("Content-Type".into(), "application/xml".into())],
                    body: Cow::Owned(body.into_bytes()),
                })),
                Delivery::Full,
            )
        }
        Fault::Pass | Fault::IgnoreRange => (None, Delivery::Full),
        Fault::OldVersion { body, after } => (
            Some(Some(Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/gzip".into())],
                body: Cow::Owned(body),
            })),
            Delivery::Truncate(after),
        ),
        // These distort the normal response, which then does not count
        // against the rate limit.
        Fault::Truncate { after } => (None, Delivery::Truncate(after)),
        Fault::Reset { after } => (None, Delivery::Reset(after)),
        Fault::Stall { after, pause } => (None, Delivery::Stall(after, pause)),
        Fault::Trickle { chunk, delay } => (None, Delivery::Trickle(chunk, delay)),
        Fault::LyingContentLength { declared } => (None, Delivery::Lie(declared)),
    }
}

/// The request head as received, for `Fault::Echo`.
fn echo(req: &Request) -> Vec<u8> {
    let mut out = format!("{} {}", req.method, req.path);
    if !req.query.is_empty() {
        out.push('?');
        out.push_str(&req.query);
    }
    out.push_str(" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.into_bytes()
}

impl Delivery {
    /// How much of a body of `len` bytes goes out.
    pub(crate) fn body_bytes(&self, len: usize) -> usize {
        match *self {
            Delivery::Truncate(after) | Delivery::Reset(after) => after.min(len),
            _ => len,
        }
    }
}

/// A download as a server that takes ranges sends it: with an `ETag` (if
/// `etags`) and `Accept-Ranges`, and, when the request asks for a range
/// (`bytes=N-`) and `honour` lets it, only the rest from byte N with 206 and
/// `Content-Range`; the whole file again if `If-Range` names another one.
pub(crate) fn ranged<'a>(
    req: &Request,
    mut resp: Response<'a>,
    etags: bool,
    honour: bool,
) -> Response<'a> {
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        resp.body.hash(&mut h);
        format!("\"{:016x}\"", h.finish())
    };
    if etags {
        resp.headers.push(("ETag".into(), etag.clone()));
    }
    resp.headers.push(("Accept-Ranges".into(), "bytes".into()));
    let Some(from) = req
        .header("range")
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return resp;
    };
    if !honour || req.header("if-range").is_some_and(|v| v != etag) {
        return resp;
    }
    let len = resp.body.len();
    if from >= len {
        resp.status = 416;
        resp.headers
            .push(("Content-Range".into(), format!("bytes */{len}")));
        resp.body = Cow::Owned(Vec::new());
        return resp;
    }
    resp.status = 206;
    resp.headers.push((
        "Content-Range".into(),
        format!("bytes {from}-{}/{len}", len - 1),
    ));
    resp.body = match resp.body {
        Cow::Borrowed(b) => Cow::Borrowed(&b[from..]),
        Cow::Owned(b) => Cow::Owned(b[from..].to_vec()),
    };
    resp
}

/// Write `resp` as `delivery` says, then close the connection.
pub(crate) fn deliver(
    stream: &mut TcpStream,
    resp: Option<Response<'_>>,
    delivery: Delivery,
    sent: &mut usize,
) -> io::Result<()> {
    let Some(resp) = resp else {
        // Fault::Drop: the request was read; close without a byte.
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(());
    };
    let body = &resp.body[..];
    let len = body.len();
    let head = |declared| http::head(resp.status, &resp.headers, declared);
    // Body bytes the client took, however far it read.
    let mut body_out = |stream: &mut TcpStream, mut part: &[u8]| -> io::Result<()> {
        while !part.is_empty() {
            let n = stream.write(part)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            *sent += n;
            part = &part[n..];
        }
        Ok(())
    };
    match delivery {
        Delivery::Full => {
            stream.write_all(&head(len))?;
            body_out(stream, body)?;
        }
        Delivery::Lie(declared) => {
            stream.write_all(&head(declared))?;
            body_out(stream, body)?;
        }
        Delivery::Truncate(after) => {
            stream.write_all(&head(len))?;
            body_out(stream, &body[..after.min(len)])?;
        }
        Delivery::Reset(after) => {
            stream.write_all(&head(len))?;
            body_out(stream, &body[..after.min(len)])?;
            stream.flush()?;
            thread::sleep(RESET_GRACE);
            reset(stream);
            return Ok(());
        }
        Delivery::Stall(after, pause) => {
            let after = after.min(len);
            stream.write_all(&head(len))?;
            body_out(stream, &body[..after])?;
            stream.flush()?;
            thread::sleep(pause);
            body_out(stream, &body[after..])?;
        }
        Delivery::Trickle(chunk, delay) => {
            stream.write_all(&head(len))?;
            for (i, piece) in body.chunks(chunk.max(1)).enumerate() {
                if i > 0 {
                    thread::sleep(delay);
                }
                body_out(stream, piece)?;
                stream.flush()?;
            }
        }
    }
    stream.flush()?;
    // FIN after the last byte; the stream itself is closed by its owner.
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// Abort the connection with an RST: with `SO_LINGER` set to 0, closing the
/// socket sends RST instead of FIN.
fn reset(stream: &mut TcpStream) {
    if socket2::SockRef::from(&*stream)
        .set_linger(Some(Duration::ZERO))
        .is_err()
    {
        let _ = stream.shutdown(Shutdown::Both);
    }
    // The RST goes out when the caller drops the stream.
}
