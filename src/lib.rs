//! tap-fullstory: a Singer tap that syncs FullStory events (from Data
//! Export bundles or the Segment Export API), individuals (Segment Export),
//! and users, segments and recording settings (the REST APIs).
//!
//! The pipeline, in the order a run goes through it:
//! [`cli`] → `config`, `state`, [`catalog`] (over the streams in
//! [`stream`]) → `run` (decides each selected stream's source) → `pipeline`
//! (the one exactly-once loop: fetch ahead, spool, verify, commit) driving a
//! `source` (Data Export bundles, Segment Export windows or a REST resource,
//! over `http` with retry and pacing) → [`read`] (gunzip, split the JSON
//! array or NDJSON into records) → [`record`] (selection, key, extra fields)
//! → `spool` (the compressed file a unit waits in) → `singer` (stdout).
//! `error` maps failures to exit codes; `redact` keeps credentials out of
//! everything printed. The FullStory-compatible server used for demos, tests
//! and benchmarks is the `fullstory-demo` crate.

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
pub(crate) mod progress;
pub mod read;
pub mod record;
pub(crate) mod redact;
pub(crate) mod run;
pub(crate) mod shutdown;
pub(crate) mod singer;
pub(crate) mod source;
pub(crate) mod spool;
pub(crate) mod state;
pub mod stream;
pub mod time;
pub(crate) mod urls;
