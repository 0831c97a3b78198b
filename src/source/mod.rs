//! Where a source meets the pipeline: the [`Source`] trait, and which source
//! feeds each stream.
//!
//! A source cuts a stream into units of work (Data Export bundles today),
//! lists the ones after a bookmark, opens each as a byte stream, and says
//! what the stream's bookmark becomes once a unit is committed. The pipeline
//! does the rest: fetching ahead, spooling, verifying, writing, STATE.

pub(crate) mod data_export;
pub(crate) mod rest;

use bytes::Bytes;
use reqwest::Response;

use crate::error::Result;
use crate::http::pace::Pace;
use crate::http::retry::Retry;
use crate::http::{Failure, chain};
use crate::state::Bookmark;

/// How a unit's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A JSON array of objects, gzipped or not (sniffed from the bytes).
    GzipJsonArray,
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

    /// The units to sync after `bookmark`, oldest first. Taken once at the
    /// start of a run.
    fn units(
        &self,
        bookmark: Option<&Bookmark>,
    ) -> impl Future<Output = Result<Vec<Self::Unit>>> + Send;

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
