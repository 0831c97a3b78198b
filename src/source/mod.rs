//! Where a source meets the pipeline: the [`Source`] trait, and which source
//! feeds each stream.
//!
//! A source cuts a stream into units of work (Data Export bundles, Segment
//! Export windows), lists the ones after a bookmark, opens each as a byte
//! stream, and says what the stream's bookmark becomes once a unit is
//! committed. The pipeline does the rest: fetching ahead, spooling,
//! verifying, writing, STATE.

pub(crate) mod data_export;
pub(crate) mod rest;
pub(crate) mod segment_export;

use bytes::Bytes;
use reqwest::Response;

use crate::error::Result;
use crate::http::pace::Pace;
use crate::http::retry::Retry;
use crate::http::{Failure, chain};
use crate::state::Bookmark;

/// What a value keeps unescaped in a URL: RFC 3986 unreserved characters.
const URL_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-escapes an id or token for a URL path segment or query value.
pub(crate) fn url_escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, URL_KEEP).to_string()
}

/// How a unit's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A JSON array of objects, gzipped or not (sniffed from the bytes).
    GzipJsonArray,
    /// One JSON object a line, gzipped or not (sniffed from the bytes).
    GzipNdjson,
}

/// A unit's body as it arrives.
pub(crate) struct Body(Response);

impl Body {
    pub(crate) fn new(resp: Response) -> Body {
        Body(resp)
    }

    /// The size the server announced, if it did.
    pub(crate) fn declared_len(&self) -> Option<u64> {
        self.0.content_length()
    }

    /// The next piece of the body, or `None` at its end.
    pub(crate) async fn chunk(&mut self) -> std::result::Result<Option<Bytes>, String> {
        self.0.chunk().await.map_err(|e| chain(&e.without_url()))
    }
}

/// One source of records. Methods return `Send` futures so units can be
/// fetched in spawned tasks.
pub(crate) trait Source: Send + Sync + 'static {
    /// One unit of work: fetched, verified and committed as a whole.
    type Unit: Clone + Send + Sync + 'static;

    /// What a unit is called in logs ("bundle").
    const UNIT: &'static str;

    /// Units fetched ahead of the one being written. A source whose
    /// [`Source::prepare`] returns bookmarks must fetch none ahead, so the
    /// STATE it asks for is about the unit being written.
    const LOOKAHEAD: usize = 1;

    /// The units to sync after `bookmark`, oldest first. Taken once at the
    /// start of a run.
    fn units(
        &self,
        bookmark: Option<&Bookmark>,
    ) -> impl Future<Output = Result<Vec<Self::Unit>>> + Send;

    /// Readies a unit on the server before its fetch starts (a Segment Export
    /// is created here). A bookmark returned is written as STATE at once,
    /// before any of the unit's records: it names work in flight so a run
    /// started again picks it up. `bookmark` is the stream's current one.
    fn prepare(
        &self,
        _unit: &Self::Unit,
        _bookmark: Option<&Bookmark>,
    ) -> impl Future<Output = Result<Option<Bookmark>>> + Send {
        async { Ok(None) }
    }

    /// After a unit's fetch failed: whether the source wants it prepared and
    /// fetched again from scratch (an export that failed on the server).
    fn renew(&self, _unit: &Self::Unit) -> bool {
        false
    }

    /// Opens one unit as a byte stream; one attempt, see [`Failure`].
    fn open(&self, unit: &Self::Unit) -> impl Future<Output = Result<Body, Failure>> + Send;

    /// How the unit's bytes are encoded.
    fn format(&self, unit: &Self::Unit) -> Format;

    /// The unit's id, for logs and errors.
    fn id<'u>(&self, unit: &'u Self::Unit) -> &'u str;

    /// The span of time the unit covers, for logs.
    fn window(&self, unit: &Self::Unit) -> String;

    /// The stream's bookmark once `unit` and everything before it is written.
    fn bookmark_after(&self, unit: &Self::Unit) -> Result<Bookmark>;

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
    fn pace(&self) -> Option<&Pace>;
}
