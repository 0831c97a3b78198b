//! The legacy Data Export API of the demo server: `/api/v1/export/list`
//! (a page of bundles ending after `start`) and `/api/v1/export/get` (one
//! bundle's body, under the download rate limit), over bundles held in
//! memory.

use std::borrow::Cow;
use std::time::Instant;

use crate::http::Request;
use crate::{Response, Shared, State, gzip, json_text};

/// How a bundle body is put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `Content-Type: application/gzip`, gzipped body (the usual case).
    GzipFile,
    /// `Content-Type: application/json` with `Content-Encoding: gzip`.
    ContentEncodingGzip,
    /// `Content-Type: application/json`, the JSON text as is.
    Plain,
}

/// One export bundle as the server holds it.
#[derive(Clone, Debug)]
pub struct BundleSpec {
    /// Rendered in the list as a JSON integer if it is a canonical u64
    /// (digits, no leading zero), else as a JSON string.
    pub id: String,
    pub start: i64,
    pub stop: i64,
    /// Exact bytes served by `/get`.
    pub body: Vec<u8>,
    pub content_type: String,
    pub content_encoding: Option<String>,
    /// Number of events in the body (informational).
    pub events: usize,
}

impl BundleSpec {
    /// A bundle whose body is `json` (a JSON array of events) encoded per `enc`.
    pub fn from_events_json(
        id: impl Into<String>,
        start: i64,
        stop: i64,
        json: Vec<u8>,
        events: usize,
        enc: Encoding,
    ) -> Self {
        let (body, content_type, content_encoding) = match enc {
            Encoding::GzipFile => (gzip(&json), "application/gzip", None),
            Encoding::ContentEncodingGzip => {
                (gzip(&json), "application/json", Some("gzip".to_string()))
            }
            Encoding::Plain => (json, "application/json", None),
        };
        BundleSpec {
            id: id.into(),
            start,
            stop,
            body,
            content_type: content_type.to_string(),
            content_encoding,
            events,
        }
    }
}

impl State {
    /// Admit one download under the sliding-window limit, or return the whole
    /// seconds (at least 1) until the oldest download leaves the window.
    pub(crate) fn admit_download(&mut self, now: Instant) -> Result<(), u64> {
        let Some(downloads) = &mut self.downloads else {
            return Ok(());
        };
        downloads
            .try_admit(now)
            .map_err(|wait| (wait.as_nanos().div_ceil(1_000_000_000) as u64).max(1))
    }
}

impl Shared {
    /// The answer to an authorized `GET /api/v1/export/list`.
    pub(crate) fn list(&self, req: &Request, st: &State) -> Response<'_> {
        let start = req.param("start").and_then(|s| s.parse::<i64>().ok());
        match start {
            Some(start) if start > 0 => {
                let body = match &st.list_override {
                    Some(b) => b.clone(),
                    None => self.list_body(start),
                };
                Response::json(200, body)
            }
            _ => Response::json(
                400,
                r#"{"code":"invalid_argument","message":"start must be a positive integer (unix seconds)"}"#,
            ),
        }
    }

    /// The answer to an authorized `GET /api/v1/export/get`. `limited`
    /// says whether it is subject to (and counts against) the rate limit.
    pub(crate) fn get(
        &self,
        id: Option<&String>,
        st: &mut State,
        now: Instant,
        limited: bool,
    ) -> Response<'_> {
        if limited && let Err(secs) = st.admit_download(now) {
            let mut r = Response::json(429, r#"{"code":"rate_limited"}"#);
            r.headers.push(("Retry-After".into(), secs.to_string()));
            return r;
        }
        let Some(id) = id else {
            return Response::json(400, r#"{"code":"invalid_argument","message":"missing id"}"#);
        };
        let Some(&i) = self.by_id.get(id) else {
            return Response::json(404, r#"{"code":"not_found"}"#);
        };
        let b = &self.bundles[i];
        let mut headers = vec![("Content-Type".to_string(), b.content_type.clone())];
        if let Some(ce) = &b.content_encoding {
            headers.push(("Content-Encoding".into(), ce.clone()));
        }
        if b.content_type == "application/gzip" {
            headers.push((
                "Content-Disposition".into(),
                format!("attachment; filename=\"{}-DataExport.json.gz\"", b.id),
            ));
        }
        let body = match st.replaced.get(id) {
            Some(changed) => Cow::Owned(changed.clone()),
            None => Cow::Borrowed(&b.body[..]),
        };
        Response {
            status: 200,
            headers,
            body,
        }
    }

    /// `{"exports":[...]}`: up to a page of bundles with Stop > start,
    /// by Stop ascending.
    pub(crate) fn list_body(&self, start: i64) -> Vec<u8> {
        let mut out = String::from(r#"{"exports":["#);
        let page = self
            .by_stop
            .iter()
            .map(|&i| &self.bundles[i])
            .filter(|b| b.stop > start)
            .take(self.page_size);
        for (n, b) in page.enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(r#"{"Id":"#);
            match b.id.parse::<u64>() {
                Ok(v) if v.to_string() == b.id => out.push_str(&b.id),
                _ => json_text::escape_into(&mut out, &b.id, false, false),
            }
            out.push_str(&format!(r#","Start":{},"Stop":{}}}"#, b.start, b.stop));
        }
        out.push_str("]}");
        out.into_bytes()
    }
}
