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

use bytes::Bytes;
use reqwest::Response;

use crate::error::Result;
use crate::http::pace::Pace;
use crate::http::retry::Retry;
use crate::http::{Failure, chain};
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

/// A download, as reqwest delivers it.
pub(crate) struct HttpBody(Response);

impl HttpBody {
    pub(crate) fn new(resp: Response) -> HttpBody {
        HttpBody(resp)
    }
}

impl Body for HttpBody {
    fn declared_len(&self) -> Option<u64> {
        self.0.content_length()
    }

    async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        self.0
            .chunk()
            .await
            .map_err(|e| Failure::retry(chain(&e.without_url())))
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

    /// The record field whose newest value becomes the bookmark, if the
    /// stream is bookmarked by its records rather than by its units: records
    /// whose value is at or before the bookmark's are not written again.
    fn watermark(&self) -> Option<&'static str> {
        None
    }

    /// The stream's bookmark once `unit` and everything before it is
    /// written; `newest` is the newest [`Source::watermark`] value among its
    /// records. `None` leaves the bookmark as it is.
    fn bookmark_after(
        &self,
        unit: &Self::Unit,
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
