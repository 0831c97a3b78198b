//! The exactly-once loop, the one every stream goes through, whatever its
//! [`Source`]: list the units after the bookmark, then for each one fetch,
//! read and shape it into a private, compressed spool file, and only once it
//! has all arrived intact, copy it to stdout followed by the STATE that
//! covers it. With `batch_config` the spool is the unit's batch file,
//! published and named in a BATCH message instead. [`Pipeline::commit`] is
//! the one place records (or BATCH messages) and their STATE are written;
//! the SCHEMA, the STATEs a source asks for when it readies a unit, and the
//! closing STATE are written by [`Pipeline::run`] around it.
//!
//! That order is what makes a run safe to kill at any point: the STATE after
//! a unit is written only after every one of its records, and no record of a
//! unit is written before the unit has been verified complete. A stream
//! bookmarked by its records (see [`Source::watermark`]) has the records its
//! bookmark covers left out as they are shaped, in `shape`.
//!
//! Concurrency, on the CLI's two-worker multi-threaded runtime:
//!
//! ```text
//! main thread, block_on(select!)
//! ├─ signal (SIGINT/SIGTERM) ─┐
//! ├─ stdout closed ◀──────────┼─ oneshot ── "stdout-watch" thread: poll(stdout)
//! └─ Pipeline::run            │  (first to finish ends the run)
//!    │  units(bookmark) once, then per unit in order (and prepare_ahead()
//!    │  more units readied on the server meanwhile):
//!    │  prepare (may write a STATE naming work in flight), then
//!    │  spawn up to 1 + lookahead() fetch tasks ─▶ fetch task: pace, open,
//!    │                                            body.chunk() (a download,
//!    │                                            or a REST resource's next
//!    │                                            page) ──mpsc(4)──▶
//!    │                                            blocking thread: ChannelReader
//!    │                                            → a thread of its own (gunzip, in
//!    │                                            read) ─blocks─▶ split → shape
//!    │                                            ─chunks─▶
//!    │                                            "spool-compress" thread:
//!    │                                            zstd (or gzip) → spool file
//!    │  await the oldest task ◀── Spooled (verified) or error; faults retry
//!    │                            the whole unit inside its task; a unit
//!    │                            the source renews is prepared again
//!    └─ commit, in block_in_place: unzstd spool ("unspool" thread) → stdout
//!       (or publish the batch file → BATCH), then STATE
//! watchdog task (shutdown.rs): a signal raises the stop flag, read before
//! each commit; exits if the output then takes nothing for 10 s
//! ```
//!
//! Only `run` writes stdout, in unit order; a dropped [`FetchTask`] aborts
//! its fetch, and spool files vanish with their handles.

pub(crate) mod shape;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::batch::{BatchConfig, Partial};
use crate::catalog::{Schema, Selection};
use crate::config::{Config, PropertyMode};
use crate::error::{Error, Result};
use crate::http::Failure;
use crate::metrics;
use crate::progress::{UnitDone, human_bytes, log_download, log_progress, peak_rss};
use crate::record::{Properties, Shaper};
use crate::shutdown::Stop;
use crate::singer::SingerWriter;
use crate::source::{Body, Prepared, Source};
use crate::spool::{Spool, SpoolMeter, SpoolTarget, create_spool};
use crate::state::{LastUpdated, State};
use crate::stream::{PropertyType, ReplicationMethod};
use shape::{ChannelReader, Measure, Span, SpoolError, Watermark, spool_unit};

/// What a finished run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) units: u64,
    pub(crate) records: u64,
    pub(crate) json_bytes: u64,
}

/// What the loop itself needs of the settings.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Where spool files go.
    pub(crate) spool_dir: PathBuf,
    /// How often a long download logs its progress.
    pub(crate) progress_interval: Duration,
    /// BATCH output instead of RECORDs, and this run's id for file names.
    pub(crate) batch: Option<(BatchConfig, String)>,
    /// Custom properties as columns, at most this many a stream; `None`
    /// keeps them all in `ExtraFields`.
    pub(crate) property_columns: Option<usize>,
    /// This run's table version (milliseconds since the epoch), for the
    /// FULL_TABLE streams; `None` sends no versions.
    pub(crate) table_version: Option<u64>,
    /// Raised by a signal: the run ends before its next commit.
    pub(crate) stop: Stop,
}

impl Options {
    /// The options the settings give, with a new run id for batch files.
    pub(crate) fn from_config(config: &Config, stop: Stop) -> Options {
        Options {
            spool_dir: config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
            progress_interval: config.progress_interval,
            batch: config.batch.clone().map(|b| (b, crate::batch::run_id())),
            property_columns: match config.custom_properties {
                PropertyMode::Columns => Some(config.max_property_columns as usize),
                PropertyMode::Object => None,
            },
            // Targets load BATCH files without a version, and a version
            // activated over such rows would delete them all.
            table_version: (config.activate_version && config.batch.is_none())
                .then(|| Utc::now().timestamp_millis().max(0) as u64),
            stop,
        }
    }

    /// A new, empty spool for one unit of `stream`: an anonymous RECORD
    /// spool or, with `batch_config`, the unit's batch file (see
    /// [`Partial::create`] for `unit_id`).
    pub(crate) fn spool_target(&self, stream: &str, unit_id: Option<&str>) -> Result<SpoolTarget> {
        match &self.batch {
            None => create_spool(&self.spool_dir)
                .map(SpoolTarget::Records)
                .map_err(|e| {
                    Error::spool(
                        format!(
                            "cannot create a spool file in '{}'",
                            self.spool_dir.display()
                        ),
                        "; set spool_dir to a writable directory with free space",
                        e,
                    )
                }),
            Some((config, run_id)) => Partial::create(config, run_id, stream, unit_id)
                .map(SpoolTarget::Batch)
                .map_err(|e| {
                    Error::spool(
                        format!("cannot create a batch file in '{}'", config.root.display()),
                        "; check batch_config's storage.root",
                        e,
                    )
                }),
        }
    }

    /// The error for a spool that could not be written.
    pub(crate) fn write_failed(&self, e: io::Error) -> Error {
        match &self.batch {
            None => Error::spool(
                format!(
                    "cannot write the spool file in '{}'",
                    self.spool_dir.display()
                ),
                "; free space there or set spool_dir",
                e,
            ),
            Some((config, _)) => Error::spool(
                format!("cannot write a batch file in '{}'", config.root.display()),
                "; free space there or change batch_config's storage.root",
                e,
            ),
        }
    }
}

/// One stream's run, from one source.
pub(crate) struct Pipeline<'r, W: Write, S: Source> {
    fetcher: Arc<Fetcher<S>>,
    state: &'r mut State,
    out: &'r mut SingerWriter<W>,
}

/// Everything needed to fetch units, shared with the tasks that fetch ahead.
struct Fetcher<S> {
    source: S,
    schema: Arc<Schema>,
    selection: Arc<Selection>,
    options: Options,
    meter: Arc<SpoolMeter>,
    /// Which custom properties are columns, when the stream has them so.
    properties: Option<Arc<Properties>>,
    /// The table version of this run's records, for a FULL_TABLE stream.
    version: Option<u64>,
}

/// A unit read, shaped and verified, waiting in its spool file (none for a
/// unit the operator chose to skip).
struct Spooled {
    spool: Option<Spool>,
    records: u64,
    json_bytes: u64,
    wire_bytes: u64,
    took: Duration,
    /// The newest watermark value among its records.
    newest: Option<LastUpdated>,
    /// The custom property columns its records use.
    columns: Vec<String>,
}

/// A fetch running as its own task, stopped if the run gives up on it.
struct FetchTask(tokio::task::JoinHandle<Result<Spooled>>);

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<'r, W: Write, S: Source> Pipeline<'r, W, S> {
    /// Prepares a run of `schema`'s stream, fed by `source`.
    pub(crate) fn new(
        source: S,
        schema: Schema,
        selection: Selection,
        options: Options,
        state: &'r mut State,
        out: &'r mut SingerWriter<W>,
    ) -> Self {
        let stream = schema.stream;
        let properties = options
            .property_columns
            .filter(|_| stream.custom_properties)
            .map(|cap| {
                let known = state.properties(stream).into_iter().flatten();
                Arc::new(Properties::new(
                    schema.fields.iter().map(|f| f.name.as_str()),
                    known.map(String::as_str),
                    cap,
                    selection.deselected_properties().clone(),
                ))
            });
        let version = options
            .table_version
            .filter(|_| stream.replication_method == ReplicationMethod::FullTable);
        let fetcher = Arc::new(Fetcher {
            source,
            schema: Arc::new(schema),
            selection: Arc::new(selection),
            options,
            meter: Arc::new(SpoolMeter::default()),
            properties,
            version,
        });
        Pipeline {
            fetcher,
            state,
            out,
        }
    }

    /// Runs the stream to the end, or to the first unrecoverable error.
    ///
    /// The commit step uses `block_in_place`, so this must run on the
    /// multi-threaded runtime (the CLI builds one).
    pub(crate) async fn run(mut self) -> Result<Summary> {
        let mut summary = Summary::default();
        let fetcher = Arc::clone(&self.fetcher);
        let stream = fetcher.schema.stream;
        let noun = S::UNIT;
        self.schema()?;
        self.out.state(self.state.to_value())?;

        let units = fetcher.source.units(self.state.bookmark(stream)).await?;
        let total = units.len();
        tracing::info!("{total} {noun}s to sync");

        let run_started = Instant::now();
        let lookahead = fetcher.source.lookahead();
        let prepare_ahead = fetcher.source.prepare_ahead();
        let mut queue = units.iter().enumerate();
        // Units `..prepared` are readied on the server.
        let mut prepared = 0;
        let mut ahead: VecDeque<FetchTask> = VecDeque::new();
        for (n, unit) in units.iter().enumerate() {
            let id = fetcher.source.id(unit);
            let mut renewals = 0u32;
            let spooled = loop {
                while ahead.len() <= lookahead
                    && let Some((i, next)) = queue.next()
                {
                    if i >= prepared {
                        if let Err(e) = self.prepare(next, false).await {
                            stop(ahead).await;
                            return Err(e);
                        }
                        prepared = i + 1;
                    }
                    ahead.push_back(fetcher.spawn(next, i, total, self.floor(next)));
                }
                // Later units are readied meanwhile, so the server works on
                // them while these are fetched; one it defers waits a turn.
                let horizon = (n + 1 + lookahead + prepare_ahead).min(total);
                while prepared < horizon {
                    match self.prepare(&units[prepared], true).await {
                        Ok(true) => prepared += 1,
                        Ok(false) => break,
                        Err(e) => {
                            stop(ahead).await;
                            return Err(e);
                        }
                    }
                }
                let Some(mut task) = ahead.pop_front() else {
                    break None;
                };
                let fetched = (&mut task.0)
                    .await
                    .map_err(|e| Error::Unit(format!("{noun} {id}: the fetch task failed: {e}")));
                match fetched {
                    Ok(Ok(spooled)) => break Some(spooled),
                    // The server lost the unit's work: start it over.
                    Ok(Err(e))
                        if renewals < fetcher.source.retry().max_retries
                            && fetcher.source.renew(unit) =>
                    {
                        renewals += 1;
                        tracing::warn!("{e}; starting {noun} {id} over");
                        let again = match self.prepare(unit, false).await {
                            Ok(_) => fetcher.spawn(unit, n, total, self.floor(unit)),
                            Err(e) => {
                                stop(ahead).await;
                                return Err(e);
                            }
                        };
                        ahead.push_front(again);
                    }
                    Ok(Err(e)) | Err(e) => {
                        stop(ahead).await;
                        return Err(e);
                    }
                }
            };
            let Some(mut spooled) = spooled else {
                break;
            };
            // A signal that came while the previous unit went out (or
            // while this one was fetched) ends the run here, between units.
            if let Some(signal) = fetcher.options.stop.requested() {
                stop(ahead).await;
                return Err(Error::Interrupted(signal));
            }
            let skipped = spooled.spool.is_none();
            if let Err(e) = self.commit(unit, &mut spooled, n + 1 == total) {
                stop(ahead).await;
                return Err(e);
            }
            if skipped {
                tracing::warn!(
                    "{noun} {id} ({}) SKIPPED as {} says: none of its {} were synced; the STATE now moves past it",
                    fetcher.source.window(unit),
                    fetcher.source.skip_setting().unwrap_or("the config"),
                    fetcher.source.records(),
                );
                continue;
            }
            summary.units += 1;
            summary.records += spooled.records;
            summary.json_bytes += spooled.json_bytes;
            metrics::record_count(stream.name, spooled.records);
            let done = UnitDone {
                noun,
                id,
                window: fetcher.source.window(unit),
                records: spooled.records,
                records_noun: fetcher.source.records(),
                wire_bytes: spooled.wire_bytes,
                json_bytes: spooled.json_bytes,
                took: spooled.took,
            };
            log_progress(n + 1, total, &done, run_started);
        }
        if S::CLOSING_STATE {
            self.out.state(self.state.to_value())?;
        }
        let spool_peak = fetcher.meter.peak();
        tracing::info!(
            "{}: sync complete: {} {noun}s, {} {}, {} of JSON ({} bytes) in {:.1}s; peak RSS {}, peak spool {} ({spool_peak} bytes)",
            stream.name,
            summary.units,
            summary.records,
            fetcher.source.records(),
            human_bytes(summary.json_bytes),
            summary.json_bytes,
            run_started.elapsed().as_secs_f64(),
            human_bytes(peak_rss()),
            human_bytes(spool_peak),
        );
        Ok(summary)
    }
}

impl<W: Write, S: Source> Pipeline<'_, W, S> {
    /// Lets the source ready a unit (`ahead` of its fetch or not), and
    /// writes the STATE it asks for; false if the source defers it.
    async fn prepare(&mut self, unit: &S::Unit, ahead: bool) -> Result<bool> {
        let stream = self.fetcher.schema.stream;
        let bookmark = self.state.bookmark(stream);
        match self.fetcher.source.prepare(unit, bookmark, ahead).await? {
            Prepared::Ready(Some(bookmark)) => {
                self.state.advance(stream, bookmark);
                self.out.state(self.state.to_value())?;
                Ok(true)
            }
            Prepared::Ready(None) => Ok(true),
            Prepared::Later if ahead => Ok(false),
            Prepared::Later => Err(Error::Unit(format!(
                "{} {}: the source put off readying it, yet it is next to fetch",
                S::UNIT,
                self.fetcher.source.id(unit)
            ))),
        }
    }

    /// Writes the stream's SCHEMA: its selected fields, and every custom
    /// property column declared so far (this run or an earlier one) that
    /// the catalog does not leave out.
    fn schema(&mut self) -> Result<()> {
        let fetcher = &self.fetcher;
        let stream = fetcher.schema.stream;
        let mut schema = fetcher.schema.restricted(&fetcher.selection);
        if fetcher.properties.is_some()
            && let Some(names) = self.state.properties(stream)
            && let Some(Value::Object(props)) = schema.get_mut("properties")
        {
            let deselected = fetcher.selection.deselected_properties();
            for name in names.iter().filter(|n| !deselected.contains(*n)) {
                if let Some(kind) = PropertyType::of(name) {
                    props.insert(name.clone(), kind.schema());
                }
            }
        }
        let bookmarks: Vec<&str> = stream.replication_key.into_iter().collect();
        self.out
            .schema(stream.name, schema, stream.key_properties, &bookmarks)
    }

    /// The value a watermarked stream's records of `unit` are measured
    /// against.
    fn floor(&self, unit: &S::Unit) -> Option<LastUpdated> {
        self.fetcher.source.watermark()?;
        let bookmark = self.state.bookmark(self.fetcher.schema.stream);
        self.fetcher.source.floor(unit, bookmark)
    }

    /// The one place a unit goes out: its records (or the BATCH message
    /// naming their file), then, after the `last` unit of a versioned
    /// stream, the ACTIVATE_VERSION that makes them the whole table, then
    /// the STATE that covers them, in one uninterrupted step. A run that
    /// fails before its last unit never activates its version.
    /// `block_in_place` needs the multi-threaded runtime.
    fn commit(&mut self, unit: &S::Unit, spooled: &mut Spooled, last: bool) -> Result<()> {
        let stream = self.fetcher.schema.stream;
        let bookmark = self.fetcher.source.bookmark_after(
            unit,
            self.state.bookmark(stream),
            spooled.newest.take(),
        )?;
        tokio::task::block_in_place(|| {
            // Columns new to the stream are declared before the records
            // that use them.
            if self
                .state
                .add_properties(stream, spooled.columns.iter().map(String::as_str))
            {
                self.schema()?;
            }
            if let Some(spool) = spooled.spool.take() {
                emit(self.out, stream.name, spool, spooled.records)?;
            }
            if let (Some(version), true) = (self.fetcher.version, last) {
                self.out.activate_version(stream.name, version)?;
            }
            if let Some(bookmark) = bookmark {
                self.state.advance(stream, bookmark);
            }
            self.out.state(self.state.to_value())
        })
    }
}

impl<S: Source> Fetcher<S> {
    /// Starts fetching unit `i` of `total` in a task of its own; a
    /// watermarked stream leaves out records at or before `floor`.
    fn spawn(
        self: &Arc<Self>,
        unit: &S::Unit,
        i: usize,
        total: usize,
        floor: Option<LastUpdated>,
    ) -> FetchTask {
        let label = format!(
            "{} {}/{total} (id {})",
            S::UNIT,
            i + 1,
            self.source.id(unit)
        );
        FetchTask(tokio::spawn(Arc::clone(self).fetch(
            unit.clone(),
            label,
            floor,
        )))
    }
}

/// Sends one verified unit on: its RECORD lines, or its batch file published
/// and named in a BATCH message. A batch of no records is not sent.
fn emit<W: Write>(
    out: &mut SingerWriter<W>,
    stream: &str,
    spool: Spool,
    records: u64,
) -> Result<()> {
    match spool.target {
        SpoolTarget::Records(mut file) => out.copy_compressed_spool(&mut file).map(drop),
        SpoolTarget::Batch(_) if records == 0 => Ok(()),
        SpoolTarget::Batch(partial) => {
            let url = partial.publish()?;
            out.batch(stream, &[url])
        }
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

/// How one attempt at a unit failed.
enum Attempt {
    /// Any failure but a bad body.
    Failed(Failure),
    /// The whole body arrived, but it is not a valid unit.
    Malformed { why: String, body: BodyPrint },
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Attempt {
        Attempt::Failed(failure)
    }
}

/// What a body was, to tell a server that sends the same bad bytes every
/// time from one whose downloads get damaged on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BodyPrint {
    len: u64,
    hash: u128,
}

/// How a body's download ended, when it did not end well.
enum Broke {
    /// Cut off: worth fetching the unit again.
    Off(String),
    /// Fetching it again cannot help.
    Fatal(Failure),
}

impl<S: Source> Fetcher<S> {
    /// Fetches and spools one unit, retrying from scratch on any fault, but
    /// not once the same bytes have failed the same way twice.
    async fn fetch(
        self: Arc<Self>,
        unit: S::Unit,
        label: String,
        floor: Option<LastUpdated>,
    ) -> Result<Spooled> {
        if self.source.skipped(&unit) {
            return Ok(Spooled {
                spool: None,
                records: 0,
                json_bytes: 0,
                wire_bytes: 0,
                took: Duration::ZERO,
                newest: None,
                columns: Vec::new(),
            });
        }
        let started = Instant::now();
        let last_bad: std::sync::Mutex<Option<(BodyPrint, String)>> = Default::default();
        self.source
            .retry()
            .run(&label, self.source.pace(), || async {
                match self.fetch_once(&unit, &label, floor.clone()).await {
                    Ok(spooled) => Ok(spooled),
                    Err(Attempt::Failed(failure)) => Err(failure),
                    Err(Attempt::Malformed { why, body }) => {
                        let mut last = last_bad.lock().unwrap_or_else(|e| e.into_inner());
                        if last.as_ref().is_some_and(|(b, w)| *b == body && *w == why) {
                            return Err(Failure::Fatal(Error::Unit(
                                self.malformed(&unit, &label, &why, body),
                            )));
                        }
                        *last = Some((body, why.clone()));
                        Err(Failure::retry(why))
                    }
                }
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

    /// The error for a unit the server sends broken the same way each time.
    fn malformed(&self, unit: &S::Unit, label: &str, why: &str, body: BodyPrint) -> String {
        let id = self.source.id(unit);
        let way_out = match self.source.skip_setting() {
            Some(setting) => format!(
                "; to move on without its {}, add \"{id}\" to {setting} ({}{} takes a comma-separated list) and re-run",
                self.source.records(),
                crate::config::ENV_PREFIX,
                setting.to_uppercase()
            ),
            None => String::new(),
        };
        format!(
            "{label}: two downloads brought the same {} bytes and failed the same way, so retrying cannot help: {why}{way_out}; the STATE written so far is safe to resume from",
            body.len
        )
    }

    async fn fetch_once(
        &self,
        unit: &S::Unit,
        label: &str,
        floor: Option<LastUpdated>,
    ) -> std::result::Result<Spooled, Attempt> {
        let mut body = self.source.open(unit).await?;
        let declared = body.declared_len();
        let target = self
            .options
            .spool_target(self.schema.stream.name, self.source.file_id(unit))
            .map_err(Failure::Fatal)?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let format = self.source.format(unit);
        let mut shaper = Shaper::new(&self.schema, &self.selection);
        shaper.table_version(self.version);
        shaper.start_unit(Utc::now());
        shaper.key_stand_ins(self.source.key_stand_ins());
        let measure = match (self.source.watermark(), self.source.span(unit)) {
            (Some(field), _) => Some(Measure::Watermark(Watermark::new(field, floor))),
            (None, Some((field, start, end))) => Some(Measure::Span(Span::new(field, start, end))),
            (None, None) => None,
        };
        if let Some(mark) = &measure {
            shaper.capture(mark.field());
        }
        if let Some(properties) = &self.properties {
            shaper.property_columns(Arc::clone(properties));
        }
        let meter = Arc::clone(&self.meter);
        let mut worker = tokio::task::spawn_blocking(move || {
            spool_unit(
                ChannelReader::new(rx),
                format,
                target,
                meter,
                shaper,
                measure,
                S::UNIT,
            )
        });
        let reader_failed = |e: tokio::task::JoinError| {
            Failure::Fatal(Error::Unit(format!(
                "{} {}: the reader thread failed: {e}",
                S::UNIT,
                self.source.id(unit)
            )))
        };

        let mut received = 0u64;
        let mut print = xxhash_rust::xxh3::Xxh3::new();
        let mut processed = None;
        let download_started = Instant::now();
        let every = self.options.progress_interval;
        let mut next_report = download_started + every;
        let download: std::result::Result<(), Broke> = loop {
            match body.chunk().await {
                Ok(Some(bytes)) => {
                    received += bytes.len() as u64;
                    print.update(&bytes);
                    if Instant::now() >= next_report {
                        next_report += every;
                        log_download(label, received, declared, download_started.elapsed());
                    }
                    if processed.is_none() && tx.send(Ok(bytes)).await.is_err() {
                        // The reader stopped early; its error says why. If
                        // the body is bad, read on (without parsing) so that
                        // the same bad bytes sent twice can be recognised.
                        let result = (&mut worker).await.map_err(reader_failed)?;
                        let bad_body = matches!(result, Err(SpoolError::Read(_)));
                        processed = Some(result);
                        if !bad_body {
                            break Ok(());
                        }
                    }
                }
                Ok(None) => match declared {
                    Some(n) if n != received => {
                        break Err(Broke::Off(format!(
                            "the body had {received} bytes but Content-Length said {n}"
                        )));
                    }
                    _ => break Ok(()),
                },
                Err(Failure::Retry { why, .. }) => break Err(Broke::Off(why)),
                Err(other) => break Err(Broke::Fatal(other)),
            }
        };
        if download.is_err() && processed.is_none() {
            let _ = tx
                .send(Err(io::Error::other("the download broke off")))
                .await;
        }
        drop(tx);
        let processed = match processed {
            Some(result) => result,
            None => worker.await.map_err(reader_failed)?,
        };

        match (download, processed) {
            (Err(Broke::Fatal(failure)), _) => Err(Attempt::Failed(failure)),
            (Err(Broke::Off(why)), _) => Err(Attempt::Failed(Failure::retry(format!(
                "download broke off after {received} bytes: {why}"
            )))),
            (Ok(()), Err(SpoolError::Read(why))) => Err(Attempt::Malformed {
                why: format!("the {} is incomplete or corrupt: {why}", S::UNIT),
                body: BodyPrint {
                    len: received,
                    hash: print.digest128(),
                },
            }),
            (Ok(()), Err(SpoolError::Write(e))) => Err(Attempt::Failed(Failure::Fatal(
                self.options.write_failed(e),
            ))),
            (Ok(()), Ok((spool, tally))) => Ok(Spooled {
                spool: Some(spool),
                records: tally.records,
                json_bytes: tally.json_bytes,
                wire_bytes: received,
                took: Duration::ZERO,
                newest: tally.newest,
                columns: tally.columns,
            }),
        }
    }
}
