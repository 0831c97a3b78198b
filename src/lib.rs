//! tap-fullstory: a Singer tap that syncs FullStory events, from Data Export
//! bundles or the Segment Export API, and individuals from Segment Export.
//!
//! The pipeline, in the order a run goes through it:
//! [`cli`] → [`config`], [`state`], [`catalog`] (over the streams in
//! [`stream`]) → `run` (each selected stream from its source) → `pipeline`
//! (the exactly-once loop: fetch ahead, spool, verify, commit) driving a
//! `source` (Data Export bundles or Segment Export windows, over `http` with
//! retry and pacing) →
//! [`read`] (gunzip, split the JSON array or NDJSON into events) →
//! [`record`] (selection, key, extra fields) → [`singer`] (stdout). [`error`]
//! maps failures to exit codes; `redact` keeps credentials out of everything
//! printed. The FullStory-compatible export server used for demos, tests and
//! benchmarks is the `fullstory-demo` crate.

pub(crate) mod about;
pub(crate) mod batch;
pub mod catalog;
pub mod cli;
pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod http;
pub(crate) mod json_file;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub mod read;
pub mod record;
pub(crate) mod redact;
pub(crate) mod run;
pub(crate) mod singer;
pub(crate) mod source;
pub(crate) mod spool;
pub(crate) mod state;
pub mod stream;
pub mod time;
pub(crate) mod urls;
