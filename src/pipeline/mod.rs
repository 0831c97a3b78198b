//! The exactly-once loop, for any [`Source`]: list the units after the
//! bookmark, then for each one fetch, read and shape it into a private spool
//! file, and only once it has all arrived intact, copy it to stdout followed
//! by the STATE that covers it.
//!
//! That order is what makes a run safe to kill at any point: the STATE after
//! a unit is written only after every one of its records, and no record of a
//! unit is written before the unit has been verified complete.
//!
//! Concurrency, on the CLI's two-worker multi-threaded runtime:
//!
//! ```text
//! main thread, block_on(select!)
//! ├─ signal (SIGINT/SIGTERM) ─┐
//! ├─ stdout closed ◀──────────┼─ oneshot ── "stdout-watch" thread: poll(stdout)
//! └─ Pipeline::run            │  (first to finish ends the run)
//!    │  units(bookmark) once, then per unit in order:
//!    │  spawn up to 1 + LOOKAHEAD fetch tasks ──▶ fetch task: pace, open,
//!    │                                            body.chunk() ──mpsc(4)──▶
//!    │                                            blocking thread: ChannelReader
//!    │                                            → read → shape → spool file
//!    │  await the oldest task ◀── Spooled (verified) or error; faults retry
//!    │                            the whole unit inside its task
//!    └─ block_in_place: copy spool → stdout, then STATE
//! watchdog task: after a signal, exits if output does not drain in time
//! ```
//!
//! Only `run` writes stdout, in unit order; a dropped [`FetchTask`] aborts
//! its fetch, and spool files vanish with their handles.

pub(crate) mod progress;
pub(crate) mod spool;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::catalog::{Schema, Selection};
use crate::error::{Error, Result};
use crate::http::{Failure, metric_records};
use crate::singer::{CopyTarget, SingerWriter};
use crate::source::Source;
use crate::state::State;
use crate::stream::StreamDef;
use progress::{UnitDone, human_bytes, log_download, log_progress, peak_rss};
use spool::{ChannelReader, SpoolError, create_spool, spool_unit};

/// What a finished run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) units: u64,
    pub(crate) events: u64,
}

/// Settings the loop itself needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where spool files go.
    pub(crate) spool_dir: PathBuf,
    /// How often a long download logs its progress.
    pub(crate) progress_interval: Duration,
}

/// One stream's run, from one source.
pub(crate) struct Pipeline<'r, W: Write + CopyTarget, S: Source> {
    fetcher: Arc<Fetcher<S>>,
    stream: &'static StreamDef,
    state: &'r mut State,
    out: &'r mut SingerWriter<W>,
}

/// Everything needed to fetch units, shared with the tasks that fetch ahead.
struct Fetcher<S> {
    source: S,
    schema: Arc<Schema>,
    selection: Arc<Selection>,
    settings: Settings,
}

/// A unit read, shaped and verified, waiting in its spool file.
struct Spooled {
    file: File,
    events: u64,
    json_bytes: u64,
    wire_bytes: u64,
    took: Duration,
}

/// Units fetched ahead of the one being written: the next download (within
/// the rate limit) overlaps the processing and output of the current one.
const LOOKAHEAD: usize = 1;

/// A fetch running as its own task, stopped if the run gives up on it.
struct FetchTask(tokio::task::JoinHandle<Result<Spooled>>);

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<'r, W: Write + CopyTarget, S: Source> Pipeline<'r, W, S> {
    /// Prepares a run of `stream`, fed by `source`.
    pub(crate) fn new(
        source: S,
        stream: &'static StreamDef,
        schema: Schema,
        selection: Selection,
        settings: Settings,
        state: &'r mut State,
        out: &'r mut SingerWriter<W>,
    ) -> Self {
        let fetcher = Arc::new(Fetcher {
            source,
            schema: Arc::new(schema),
            selection: Arc::new(selection),
            settings,
        });
        Pipeline {
            fetcher,
            stream,
            state,
            out,
        }
    }

    /// Runs the stream to the end, or to the first unrecoverable error.
    ///
    /// The commit step uses `block_in_place`, so this must run on the
    /// multi-threaded runtime (the CLI builds one).
    pub(crate) async fn run(self) -> Result<Summary> {
        let mut summary = Summary::default();
        let fetcher = Arc::clone(&self.fetcher);
        let stream = self.stream;
        let noun = S::UNIT;
        let schema = fetcher.schema.restricted(&fetcher.selection);
        let bookmarks: Vec<&str> = stream.replication_key.into_iter().collect();
        self.out
            .schema(stream.name, schema, stream.key_properties, &bookmarks)?;
        self.out.state(self.state.to_value())?;

        let units = fetcher.source.units(self.state.bookmark(stream)).await?;
        let total = units.len();
        tracing::info!("{total} {noun}s to sync");

        let run_started = Instant::now();
        let mut queue = units.iter().enumerate();
        let mut ahead: VecDeque<FetchTask> = VecDeque::new();
        for (n, unit) in units.iter().enumerate() {
            while ahead.len() <= LOOKAHEAD
                && let Some((i, next)) = queue.next()
            {
                let label = format!("{noun} {}/{total} (id {})", i + 1, fetcher.source.id(next));
                let task = tokio::spawn(Arc::clone(&fetcher).fetch(next.clone(), label));
                ahead.push_back(FetchTask(task));
            }
            let Some(mut task) = ahead.pop_front() else {
                break;
            };
            let id = fetcher.source.id(unit);
            let committed = async {
                let mut spooled = (&mut task.0).await.map_err(|e| {
                    Error::Unit(format!("{noun} {id}: the fetch task failed: {e}"))
                })??;
                let bookmark = fetcher.source.bookmark_after(unit)?;
                // Records, then the STATE that covers them, in one uninterrupted
                // step. block_in_place needs the multi-threaded runtime.
                tokio::task::block_in_place(|| -> Result<()> {
                    self.out.copy_spool(&mut spooled.file)?;
                    self.state.advance(stream, bookmark);
                    self.out.state(self.state.to_value())
                })?;
                Ok::<_, Error>(spooled)
            }
            .await;
            let spooled = match committed {
                Ok(spooled) => spooled,
                Err(e) => {
                    stop(ahead).await;
                    return Err(e);
                }
            };
            summary.units += 1;
            summary.events += spooled.events;
            metric_records(stream.name, spooled.events);
            let done = UnitDone {
                noun,
                id,
                window: fetcher.source.window(unit),
                events: spooled.events,
                wire_bytes: spooled.wire_bytes,
                json_bytes: spooled.json_bytes,
                took: spooled.took,
            };
            log_progress(n + 1, total, &done, run_started);
        }
        self.out.state(self.state.to_value())?;
        tracing::info!(
            "sync complete: {} {noun}s, {} events in {:.1}s, peak RSS {}",
            summary.units,
            summary.events,
            run_started.elapsed().as_secs_f64(),
            human_bytes(peak_rss())
        );
        Ok(summary)
    }
}

/// Stops the fetches still running, so nothing they would log comes after
/// the error that ends the run.
async fn stop(ahead: VecDeque<FetchTask>) {
    for mut task in ahead {
        task.0.abort();
        let _ = (&mut task.0).await;
    }
}

impl<S: Source> Fetcher<S> {
    /// Fetches and spools one unit, retrying from scratch on any fault.
    async fn fetch(self: Arc<Self>, unit: S::Unit, label: String) -> Result<Spooled> {
        let started = Instant::now();
        self.source
            .retry()
            .run(&label, self.source.pace(), || {
                self.fetch_once(&unit, &label)
            })
            .await
            .map(|mut spooled| {
                spooled.took = started.elapsed();
                spooled
            })
            .map_err(|e| match e {
                Error::Api(why) => Error::Unit(why),
                other => other,
            })
    }

    async fn fetch_once(
        &self,
        unit: &S::Unit,
        label: &str,
    ) -> std::result::Result<Spooled, Failure> {
        let mut body = self.source.open(unit).await?;
        let declared = body.declared_len();
        let spool_dir = &self.settings.spool_dir;
        let spool = create_spool(spool_dir).map_err(|e| {
            Failure::Fatal(Error::spool(
                format!("cannot create a spool file in '{}'", spool_dir.display()),
                "; set spool_dir to a writable directory with room for one bundle",
                e,
            ))
        })?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let format = self.source.format(unit);
        let extracted = Utc::now();
        let schema = Arc::clone(&self.schema);
        let selection = Arc::clone(&self.selection);
        let worker = tokio::task::spawn_blocking(move || {
            spool_unit(
                ChannelReader::new(rx),
                format,
                spool,
                &schema,
                &selection,
                extracted,
            )
        });

        let mut received = 0u64;
        let download_started = Instant::now();
        let every = self.settings.progress_interval;
        let mut next_report = download_started + every;
        let download: std::result::Result<(), String> = loop {
            match body.chunk().await {
                Ok(Some(bytes)) => {
                    received += bytes.len() as u64;
                    if Instant::now() >= next_report {
                        next_report += every;
                        log_download(label, received, declared, download_started.elapsed());
                    }
                    if tx.send(Ok(bytes)).await.is_err() {
                        // The reader stopped early; its error says why.
                        break Ok(());
                    }
                }
                Ok(None) => match declared {
                    Some(n) if n != received => {
                        break Err(format!(
                            "the body had {received} bytes but Content-Length said {n}"
                        ));
                    }
                    _ => break Ok(()),
                },
                Err(why) => break Err(why),
            }
        };
        if let Err(why) = &download {
            let _ = tx.send(Err(io::Error::other(why.clone()))).await;
        }
        drop(tx);
        let processed = worker.await.map_err(|e| {
            Failure::Fatal(Error::Unit(format!(
                "{} {}: the reader thread failed: {e}",
                S::UNIT,
                self.source.id(unit)
            )))
        })?;

        match (download, processed) {
            (Err(why), _) => Err(Failure::Retry {
                why: format!("download broke off after {received} bytes: {why}"),
                retry_after: None,
            }),
            (Ok(()), Err(SpoolError::Read(why))) => Err(Failure::Retry {
                why: format!("the {} is incomplete or corrupt: {why}", S::UNIT),
                retry_after: None,
            }),
            (Ok(()), Err(SpoolError::Write(e))) => Err(Failure::Fatal(Error::spool(
                format!("cannot write the spool file in '{}'", spool_dir.display()),
                "; free space there or set spool_dir",
                e,
            ))),
            (Ok(()), Ok((file, stats))) => Ok(Spooled {
                file,
                events: stats.events,
                json_bytes: stats.json_bytes,
                wire_bytes: received,
                took: Duration::ZERO,
            }),
        }
    }
}
