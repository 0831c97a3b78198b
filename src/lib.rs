//! tap-fullstory: a Singer tap that syncs FullStory Data Export bundles.
//!
//! The pipeline, in the order a run goes through it:
//! [`cli`] → [`config`], [`state`], [`catalog`] → [`client`] (HTTP, with
//! [`retry`] for backoff and pacing) → [`bundle`] (gunzip and split the JSON
//! array) → [`record`] (selection, key, extra fields) → [`singer`] (stdout),
//! with [`sync`] driving it. [`demo`] is a FullStory-compatible export server
//! for demos, tests and benchmarks.

pub mod about;
pub mod bundle;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod record;
pub mod retry;
pub mod singer;
pub mod state;
pub mod sync;
pub mod time;
