//! Where a source meets the pipeline: the [`Source`] trait every stream's
//! backend implements, and the [`Body`] of one unit as it arrives.
//!
//! A source cuts a stream into units of work (Data Export bundles, Segment
//! Export windows, a REST resource read page by page), lists the ones after
//! a bookmark, opens each as a stream of bytes, and says what the stream's
//! bookmark becomes once a unit is committed. The pipeline does the rest, the
//! same way for every stream: fetching ahead, spooling, verifying, writing
//! the records and then the STATE that covers them.

pub(crate) mod data_export;
pub(crate) mod rest;
pub(crate) mod segment_export;

use std::sync::Arc;

use bytes::Bytes;
use reqwest::Response;
use reqwest::header::{ACCEPT_RANGES, CONTENT_RANGE, ETAG, HeaderValue, LAST_MODIFIED};

use crate::error::Result;
use crate::http::pace::Pace;
use crate::http::retry::Retry;
use crate::http::{Client, Endpoint, Failure, chain};
use crate::read::Format;
use crate::state::{Bookmark, LastUpdated};

/// One unit's bytes as they arrive: an HTTP body, pages of a REST resource
/// joined into one JSON array, or (in tests) bytes from memory.
pub(crate) trait Body: Send + 'static {
    /// The size the server announced, if it did: a body that ends at another
    /// size is incomplete.
    fn declared_len(&self) -> Option<u64> {
        None
    }

    /// The next piece of the body, or `None` at its end. A
    /// [`Failure::Retry`] breaks the unit off, to be fetched again from the
    /// start; a [`Failure::Fatal`] ends the run.
    fn chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, Failure>> + Send;
}

/// A download, as reqwest delivers it; one that breaks off is picked up
/// where it stopped when the server can send the rest (see [`Resume`]).
pub(crate) struct HttpBody {
    resp: Response,
    resume: Option<Resume>,
    /// Bytes received so far, over every response.
    received: u64,
    /// The size the first response announced.
    total: Option<u64>,
}

/// How to ask for the rest of a download that broke off: `Range` from the
/// byte it stopped at, `If-Range` its `ETag` (or `Last-Modified`), so that a
/// file that changed in between comes whole or not at all. The rest counts
/// only as a 206 whose `Content-Range` starts at that byte and has the
/// first answer's length; anything else starts the download over, and the
/// checks of the whole body (gzip CRC and length, a closed array) decide,
/// as ever, whether the unit is complete.
pub(crate) struct Resume {
    download: Download,
    validator: Option<HeaderValue>,
    resumed: u32,
}

/// Where a download came from, so its rest can be asked for the same way.
pub(crate) struct Download {
    pub(crate) client: Arc<Client>,
    pub(crate) url: String,
    pub(crate) endpoint: Endpoint,
    /// Whether the key goes along (not to a signed storage link).
    pub(crate) auth: bool,
    /// The pace downloads keep, if they have one.
    pub(crate) pace: Option<Arc<Pace>>,
    pub(crate) retry: Retry,
    /// What the download is, for the log.
    pub(crate) what: String,
}

impl HttpBody {
    /// The first response of `download`, which asks for the rest after a
    /// break, up to the retry policy's number of times.
    pub(crate) fn resumable(resp: Response, download: Download) -> HttpBody {
        let headers = resp.headers();
        let refuses = headers
            .get(ACCEPT_RANGES)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"none"));
        // A weak ETag does not promise the same bytes: Last-Modified then.
        let validator = headers
            .get(ETAG)
            .filter(|v| !v.as_bytes().starts_with(b"W/"))
            .or_else(|| headers.get(LAST_MODIFIED))
            .cloned();
        let total = resp.content_length();
        HttpBody {
            resp,
            resume: (!refuses).then_some(Resume {
                download,
                validator,
                resumed: 0,
            }),
            received: 0,
            total,
        }
    }

    /// After a break: the response with the rest, or why there is none.
    async fn rest(&mut self, why: &str) -> Result<Response, String> {
        let (Some(total), Some(resume)) = (self.total, self.resume.as_mut()) else {
            return Err("the server did not say how long the file is".into());
        };
        if self.received == 0 || self.received >= total {
            return Err("nothing to resume".into());
        }
        let download = &resume.download;
        if resume.resumed >= download.retry.max_retries {
            return Err(format!("resumed {} times already", resume.resumed));
        }
        resume.resumed += 1;
        let from = self.received;
        tokio::time::sleep(download.retry.backoff.delay(resume.resumed, None)).await;
        if let Some(pace) = &download.pace {
            pace.wait().await;
        }
        tracing::warn!(
            "{}: the download broke off after {from} of {total} bytes ({why}); asking for the rest",
            download.what
        );
        let resp = download
            .client
            .get_rest(
                &download.url,
                download.endpoint,
                download.auth,
                from,
                resume.validator.as_ref(),
            )
            .await
            .map_err(|f| match f {
                Failure::Retry { why, .. } | Failure::Gone(why) => why,
                Failure::Fatal(e) => e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let range = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        match range {
            Some((start, Some(length))) if status == 206 && start == from && length == total => {
                tracing::info!(
                    "{}: resumed at byte {from} of {total}: {from} bytes not fetched again",
                    download.what
                );
                Ok(resp)
            }
            _ if status == 206 => Err(format!(
                "the server sent another part of the file ({}) than the rest from byte {from} of {total}",
                resp.headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("no Content-Range")
            )),
            _ => Err(format!(
                "asked for the rest from byte {from}, the server sent the whole file again (HTTP {status}), which may have changed"
            )),
        }
    }
}

/// `bytes <start>-<end>/<length>` as (start, length); `*` for an unknown
/// length is `None`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, length) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if end < start {
        return None;
    }
    let length = match length.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    if length.is_some_and(|n| end >= n) {
        return None;
    }
    Some((start, length))
}

impl Body for HttpBody {
    fn declared_len(&self) -> Option<u64> {
        self.total
    }

    async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        loop {
            match self.resp.chunk().await {
                Ok(Some(bytes)) => {
                    self.received += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    let why = chain(&e.without_url());
                    if self.resume.is_none() {
                        return Err(Failure::retry(why));
                    }
                    match self.rest(&why).await {
                        Ok(resp) => self.resp = resp,
                        Err(not) => {
                            return Err(Failure::retry(format!("{why}; {not}: starting over")));
                        }
                    }
                }
            }
        }
    }
}

/// What readying a unit gave.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Ready, and the bookmark to write as STATE at once, if any.
    Ready(Option<Bookmark>),
    /// Not now (the server asked to slow down): ask again later. Only for a
    /// unit readied ahead of its fetch.
    Later,
}

/// One source of records. Methods return `Send` futures so units can be
/// fetched in spawned tasks.
pub(crate) trait Source: Send + Sync + 'static {
    /// One unit of work: fetched, verified and committed as a whole.
    type Unit: Clone + Send + Sync + 'static;

    /// What [`Source::open`] gives.
    type Body: Body;

    /// What a unit is called in logs ("bundle").
    const UNIT: &'static str;

    /// Units fetched ahead of the one being written. A source with a
    /// [`Source::watermark`] must fetch none ahead, so the bookmark its
    /// records are measured against is that of the unit being written.
    fn lookahead(&self) -> usize {
        1
    }

    /// Units readied ([`Source::prepare`]) ahead of those being fetched, so
    /// the server works on them meanwhile (Segment Export's exports in
    /// flight).
    fn prepare_ahead(&self) -> usize {
        0
    }

    /// Whether one more STATE closes the stream after its last unit's. The
    /// export streams have always ended so; a REST stream ends with its
    /// unit's STATE.
    const CLOSING_STATE: bool = true;

    /// What the stream's records are called in logs ("events").
    fn records(&self) -> &'static str {
        "events"
    }

    /// The units to sync after `bookmark`, oldest first. Taken once at the
    /// start of a run.
    fn units(
        &self,
        bookmark: Option<&Bookmark>,
    ) -> impl Future<Output = Result<Vec<Self::Unit>>> + Send;

    /// Readies a unit on the server before its fetch starts (a Segment Export
    /// is created here). A bookmark in [`Prepared::Ready`] is written as
    /// STATE at once, before any of the unit's records: it names work in
    /// flight so a run started again picks it up. `bookmark` is the stream's
    /// current one; `ahead` says the unit is readied ahead of its fetch, and
    /// may answer [`Prepared::Later`].
    fn prepare(
        &self,
        _unit: &Self::Unit,
        _bookmark: Option<&Bookmark>,
        _ahead: bool,
    ) -> impl Future<Output = Result<Prepared>> + Send {
        async { Ok(Prepared::Ready(None)) }
    }

    /// After a unit's fetch failed: whether the source wants it prepared and
    /// fetched again from scratch (an export that failed on the server).
    fn renew(&self, _unit: &Self::Unit) -> bool {
        false
    }

    /// Opens one unit as a byte stream; one attempt, see [`Failure`].
    fn open(&self, unit: &Self::Unit) -> impl Future<Output = Result<Self::Body, Failure>> + Send;

    /// How the unit's bytes are laid out (gzip is recognised by its bytes).
    fn format(&self, unit: &Self::Unit) -> Format;

    /// The unit's id, for logs and errors.
    fn id<'u>(&self, unit: &'u Self::Unit) -> &'u str;

    /// What the unit's batch file is named after, besides its stream; `None`
    /// when the stream is the unit.
    fn file_id<'u>(&self, unit: &'u Self::Unit) -> Option<&'u str> {
        Some(self.id(unit))
    }

    /// The span of time the unit covers, for logs.
    fn window(&self, unit: &Self::Unit) -> String;

    /// Fields that stand in for an identity field of the derived key where a
    /// record lacks it, as (stand-in, field): a source whose rows name a
    /// field otherwise than the bundles do.
    fn key_stand_ins(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// The record field whose newest value becomes the bookmark, if the
    /// stream is bookmarked by its records rather than by its units: records
    /// whose value is at or before the bookmark's are not written again.
    fn watermark(&self) -> Option<&'static str> {
        None
    }

    /// The span of time `unit` was asked for, as (field, start, end): its
    /// records' `field` should fall in `start..end`, and those outside are
    /// counted and warned about (they are still written).
    fn span(
        &self,
        _unit: &Self::Unit,
    ) -> Option<(
        &'static str,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> {
        None
    }

    /// The [`Source::watermark`] value at or before which `unit`'s records
    /// were written by an earlier run, by the stream's `bookmark`.
    fn floor(&self, _unit: &Self::Unit, _bookmark: Option<&Bookmark>) -> Option<LastUpdated> {
        None
    }

    /// The stream's bookmark once `unit` and everything before it is
    /// written, from the `current` one; `newest` is the newest
    /// [`Source::watermark`] value among its records. `None` leaves the
    /// bookmark as it is.
    fn bookmark_after(
        &self,
        unit: &Self::Unit,
        current: Option<&Bookmark>,
        newest: Option<LastUpdated>,
    ) -> Result<Option<Bookmark>>;

    /// How to retry opening and reading a unit.
    fn retry(&self) -> &Retry;

    /// Whether the operator chose to pass over this unit: it is not fetched,
    /// and the bookmark moves past it.
    fn skipped(&self, _unit: &Self::Unit) -> bool {
        false
    }

    /// The setting that lists units to pass over, if the source has one.
    fn skip_setting(&self) -> Option<&'static str> {
        None
    }

    /// The pace that a server's `Retry-After` holds, if any.
    fn pace(&self) -> Option<&Pace> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read_strictly() {
        assert_eq!(
            parse_content_range("bytes 600-999/1000"),
            Some((600, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 600-1000/1000"), None);
        assert_eq!(parse_content_range("bytes 9-3/10"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes */1000"), None);
    }
}
