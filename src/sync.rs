//! The sync: list the bundles after the bookmark, then for each one download,
//! read and shape it into a private spool file, and only once it has all
//! arrived intact, copy it to stdout and move the bookmark past it.
//!
//! That order is what makes a run safe to kill at any point: the STATE after
//! a bundle is written only after every one of its records, and no record of
//! a bundle is written before the bundle has been verified complete.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::bundle::{ReadError, read_events};
use crate::catalog::{KEY_FIELD, REPLICATION_KEY, Schema, Selection};
use crate::client::{BundleInfo, Client, Failure, LIST_PAGE_SIZE, chain, metric_records};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::record::{ShapeError, Shaper};
use crate::retry::Backoff;
use crate::singer::{CopyTarget, SingerWriter};
use crate::state::{Bookmark, STREAM, State};
use crate::time::{format_rfc3339, from_unix};

/// What a finished run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub bundles: u64,
    pub events: u64,
}

/// One sync run.
pub struct Sync<'w, W: Write + CopyTarget> {
    fetcher: Arc<Fetcher>,
    state: State,
    out: &'w mut SingerWriter<W>,
}

/// Everything needed to list and fetch bundles, shared with the task that
/// fetches the next bundle while the current one is written out.
struct Fetcher {
    config: Config,
    client: Client,
    schema: Arc<Schema>,
    selection: Arc<Selection>,
    backoff: Backoff,
    spool_dir: PathBuf,
}

/// A bundle read, shaped and verified, waiting in its spool file.
struct Spooled {
    file: File,
    events: u64,
    json_bytes: u64,
    wire_bytes: u64,
    took: Duration,
}

/// Bundles fetched ahead of the one being written: the next download (within
/// the rate limit) overlaps the processing and output of the current one.
const LOOKAHEAD: usize = 1;

/// A fetch running as its own task, stopped if the run gives up on it.
struct FetchTask(tokio::task::JoinHandle<Result<Spooled>>);

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<'w, W: Write + CopyTarget> Sync<'w, W> {
    /// Prepares a run.
    pub fn new(
        config: Config,
        state: State,
        schema: Schema,
        selection: Selection,
        out: &'w mut SingerWriter<W>,
    ) -> Result<Self> {
        let client = Client::new(&config)?;
        let backoff = Backoff {
            base: config.retry_base_delay,
            max: config.retry_max_delay,
        };
        let spool_dir = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let fetcher = Arc::new(Fetcher {
            config,
            client,
            schema: Arc::new(schema),
            selection: Arc::new(selection),
            backoff,
            spool_dir,
        });
        Ok(Sync {
            fetcher,
            state,
            out,
        })
    }

    /// Runs the sync to the end, or to the first unrecoverable error.
    pub async fn run(mut self) -> Result<Summary> {
        let mut summary = Summary::default();
        let fetcher = Arc::clone(&self.fetcher);
        if !fetcher.selection.stream {
            tracing::warn!("the catalog does not select the '{STREAM}' stream; nothing to sync");
            self.out.state(self.state.to_value())?;
            return Ok(summary);
        }
        let schema = fetcher.schema.restricted(&fetcher.selection);
        self.out
            .schema(STREAM, schema, &[KEY_FIELD], &[REPLICATION_KEY])?;
        self.out.state(self.state.to_value())?;

        let (from, from_what) = match self.state.bookmark() {
            Some(b) => (b.stop, "the state's bookmark"),
            None => (fetcher.config.start_date, "start_date"),
        };
        tracing::info!(
            "syncing bundles that end after {} ({from_what}){}",
            format_rfc3339(from),
            match fetcher.config.end_date {
                Some(end) => format!(" and at or before {} (end_date)", format_rfc3339(end)),
                None => String::new(),
            }
        );
        let bundles = fetcher.list_bundles(from, self.state.bookmark()).await?;
        let total = bundles.len();
        tracing::info!("{total} bundles to sync");

        let run_started = Instant::now();
        let mut queue = bundles.iter().enumerate();
        let mut ahead: VecDeque<FetchTask> = VecDeque::new();
        for (n, bundle) in bundles.iter().enumerate() {
            while ahead.len() <= LOOKAHEAD
                && let Some((i, next)) = queue.next()
            {
                let label = format!("bundle {}/{total} (id {})", i + 1, next.id);
                let task = tokio::spawn(Arc::clone(&fetcher).fetch(next.clone(), label));
                ahead.push_back(FetchTask(task));
            }
            let Some(mut task) = ahead.pop_front() else {
                break;
            };
            let mut spooled = (&mut task.0).await.map_err(|e| {
                Error::Bundle(format!("bundle {}: the fetch task failed: {e}", bundle.id))
            })??;
            let stop = from_unix(bundle.stop).ok_or_else(|| {
                Error::Api(format!(
                    "bundle {} has an impossible Stop {}",
                    bundle.id, bundle.stop
                ))
            })?;
            // Records, then the STATE that covers them, in one uninterrupted step.
            tokio::task::block_in_place(|| -> Result<()> {
                self.out.copy_spool(&mut spooled.file)?;
                self.state.advance(Bookmark {
                    stop,
                    bundle_id: Some(bundle.id.clone()),
                });
                self.out.state(self.state.to_value())
            })?;
            summary.bundles += 1;
            summary.events += spooled.events;
            metric_records(STREAM, spooled.events);
            log_progress(n + 1, total, bundle, &spooled, run_started);
        }
        self.out.state(self.state.to_value())?;
        tracing::info!(
            "sync complete: {} bundles, {} events in {:.1}s, peak RSS {}",
            summary.bundles,
            summary.events,
            run_started.elapsed().as_secs_f64(),
            human_bytes(peak_rss())
        );
        Ok(summary)
    }
}

impl Fetcher {
    /// Lists every bundle to sync in this run, oldest first. Taken once at the
    /// start, so bundles published while the run goes on wait for the next one.
    async fn list_bundles(
        &self,
        from: DateTime<Utc>,
        bookmark: Option<&Bookmark>,
    ) -> Result<Vec<BundleInfo>> {
        let from_secs = from.timestamp();
        let end_secs = self.config.end_date.map(|d| d.timestamp());
        let mut start = from_secs;
        let mut listed = Vec::new();
        loop {
            let page = self
                .retrying(&format!("listing bundles after {start}"), || {
                    self.client.list(start)
                })
                .await?;
            let count = page.len();
            let last_stop = page.iter().map(|b| b.stop).max();
            listed.extend(page);
            if count < LIST_PAGE_SIZE {
                break;
            }
            match last_stop {
                Some(stop) if stop > start => start = stop,
                _ => {
                    tracing::warn!(
                        "the bundle list did not advance past {start}; stopping the listing there"
                    );
                    break;
                }
            }
            if end_secs.is_some_and(|end| start >= end) {
                break;
            }
        }
        Ok(plan(listed, from_secs, end_secs, bookmark))
    }

    /// Runs `attempt` until it succeeds, fails for good, or retries run out.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut tries = 0u32;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry { why, retry_after }) => {
                    tries += 1;
                    if tries > self.config.max_retries {
                        return Err(Error::Api(format!(
                            "{what}: giving up after {tries} attempts: {why}; the STATE written so far is safe to resume from: re-run later, or raise max_retries"
                        )));
                    }
                    let wait = self.backoff.delay(tries, retry_after);
                    if let Some(pause) = retry_after {
                        self.client.hold_downloads(pause).await;
                    }
                    tracing::warn!(
                        "{what}: attempt {tries} failed: {why}; retrying in {:.1}s ({} retries left)",
                        wait.as_secs_f64(),
                        self.config.max_retries - tries + 1
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Downloads and spools one bundle, retrying from scratch on any fault.
    async fn fetch(self: Arc<Self>, bundle: BundleInfo, label: String) -> Result<Spooled> {
        let started = Instant::now();
        self.retrying(&label, || self.fetch_once(&bundle, &label))
            .await
            .map(|mut spooled| {
                spooled.took = started.elapsed();
                spooled
            })
            .map_err(|e| match e {
                Error::Api(why) => Error::Bundle(why),
                other => other,
            })
    }

    async fn fetch_once(
        &self,
        bundle: &BundleInfo,
        label: &str,
    ) -> std::result::Result<Spooled, Failure> {
        let mut resp = self.client.download(&bundle.id).await?;
        let declared = resp.content_length();
        let spool = create_spool(&self.spool_dir).map_err(|e| {
            Failure::Fatal(Error::Spool(format!(
                "cannot create a spool file in '{}': {e}; set spool_dir to a writable directory with room for one bundle",
                self.spool_dir.display()
            )))
        })?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let schema = Arc::clone(&self.schema);
        let selection = Arc::clone(&self.selection);
        let extracted = Utc::now();
        let worker = tokio::task::spawn_blocking(move || {
            spool_bundle(
                ChannelReader::new(rx),
                spool,
                &schema,
                &selection,
                extracted,
            )
        });

        let mut received = 0u64;
        let download_started = Instant::now();
        let every = self.config.progress_interval;
        let mut next_report = download_started + every;
        let download: std::result::Result<(), String> = loop {
            match resp.chunk().await {
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
                Err(e) => break Err(chain(&e.without_url())),
            }
        };
        if let Err(why) = &download {
            let _ = tx.send(Err(io::Error::other(why.clone()))).await;
        }
        drop(tx);
        let processed = worker.await.map_err(|e| {
            Failure::Fatal(Error::Bundle(format!(
                "bundle {}: the reader thread failed: {e}",
                bundle.id
            )))
        })?;

        match (download, processed) {
            (Err(why), _) => Err(Failure::Retry {
                why: format!("download broke off after {received} bytes: {why}"),
                retry_after: None,
            }),
            (Ok(()), Err(SpoolError::Read(why))) => Err(Failure::Retry {
                why: format!("the bundle is incomplete or corrupt: {why}"),
                retry_after: None,
            }),
            (Ok(()), Err(SpoolError::Write(e))) => Err(Failure::Fatal(Error::Spool(format!(
                "cannot write the spool file in '{}': {e}; free space there or set spool_dir",
                self.spool_dir.display()
            )))),
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

/// Orders, de-duplicates and filters a listing into the bundles to sync.
fn plan(
    mut listed: Vec<BundleInfo>,
    after: i64,
    end: Option<i64>,
    bookmark: Option<&Bookmark>,
) -> Vec<BundleInfo> {
    let in_order = listed.windows(2).all(|w| w[0].stop <= w[1].stop);
    if !in_order {
        tracing::warn!("the bundle list was out of order; sorting it by end time");
    }
    listed.sort_by(|a, b| (a.stop, a.start, &a.id).cmp(&(b.stop, b.start, &b.id)));
    let mut seen = std::collections::HashSet::new();
    listed.retain(|b| {
        let fresh = seen.insert(b.id.clone());
        if !fresh {
            tracing::warn!("bundle {} was listed more than once; syncing it once", b.id);
        }
        fresh
    });
    listed.retain(|b| {
        b.stop > after
            && end.is_none_or(|end| b.stop <= end)
            && bookmark.is_none_or(|bm| bm.bundle_id.as_deref() != Some(b.id.as_str()))
    });
    listed
}

/// A private, anonymous file in `dir`: mode 0600 and unlinked from the start,
/// so no other user can read it and no exit path can leave it behind.
fn create_spool(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = tempfile::tempfile_in(dir)?;
    // An O_TMPFILE file gets 0666 less the umask; make it owner-only.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Why spooling failed.
enum SpoolError {
    /// The body is bad: retry the download.
    Read(String),
    /// The spool cannot be written: retrying will not help.
    Write(io::Error),
}

enum SinkError {
    Shape(ShapeError),
    Write(io::Error),
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkError::Shape(e) => write!(f, "{e}"),
            SinkError::Write(e) => write!(f, "{e}"),
        }
    }
}

/// Reads a bundle body and writes its RECORD lines into `spool`.
fn spool_bundle(
    body: impl Read + Send,
    spool: File,
    schema: &Schema,
    selection: &Selection,
    extracted: DateTime<Utc>,
) -> std::result::Result<(File, crate::bundle::ReadStats), SpoolError> {
    let mut shaper = Shaper::new(schema, selection);
    shaper.start_bundle(extracted);
    let mut writer = BufWriter::with_capacity(1 << 20, spool);
    let mut line = Vec::with_capacity(8 * 1024);
    let stats = read_events(body, |event| {
        line.clear();
        shaper.shape(event, &mut line).map_err(SinkError::Shape)?;
        writer.write_all(&line).map_err(SinkError::Write)
    })
    .map_err(|e| match e {
        ReadError::Sink(SinkError::Write(e)) => SpoolError::Write(e),
        other => SpoolError::Read(other.to_string()),
    })?;
    let file = writer
        .into_inner()
        .map_err(|e| SpoolError::Write(e.into_error()))?;
    Ok((file, stats))
}

/// A blocking `Read` over the chunks the download task sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The periodic line of a long download, with its ETA when the size is known.
fn log_download(label: &str, received: u64, declared: Option<u64>, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rate = received as f64 / secs;
    let (of, eta) = match declared {
        Some(total) if total >= received && rate > 0.0 => (
            format!(" of {}", human_bytes(total)),
            format!(
                ", ETA {}",
                human_duration(Duration::from_secs_f64((total - received) as f64 / rate))
            ),
        ),
        _ => (String::new(), String::new()),
    };
    tracing::info!(
        "{label}: {}{of} downloaded in {}, {:.1} MB/s{eta}",
        human_bytes(received),
        human_duration(elapsed),
        rate / 1e6
    );
}

fn log_progress(
    done: usize,
    total: usize,
    bundle: &BundleInfo,
    spooled: &Spooled,
    run_started: Instant,
) {
    let secs = spooled.took.as_secs_f64().max(1e-6);
    let window = match (from_unix(bundle.start), from_unix(bundle.stop)) {
        (Some(a), Some(b)) => format!("{}..{}", format_rfc3339(a), format_rfc3339(b)),
        _ => format!("{}..{}", bundle.start, bundle.stop),
    };
    let left = total - done;
    let eta = if left > 0 {
        let per_bundle = run_started.elapsed().as_secs_f64() / done as f64;
        format!(
            ", ETA {}",
            human_duration(Duration::from_secs_f64(per_bundle * left as f64))
        )
    } else {
        String::new()
    };
    tracing::info!(
        "bundle {done}/{total} id {} ({window}): {} events, {} downloaded, {} JSON, {:.1} MB/s, {:.0} events/s; {left} left{eta}",
        bundle.id,
        spooled.events,
        human_bytes(spooled.wire_bytes),
        human_bytes(spooled.json_bytes),
        spooled.json_bytes as f64 / secs / 1e6,
        spooled.events as f64 / secs,
    );
}

/// The process's peak resident set size in bytes (0 if unknown), read from
/// `/proc/self/status` so no unsafe call is needed.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
            line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Bytes with a binary unit, for logs.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration as `1h02m`, `3m05s` or `12s`, for logs.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, start: i64, stop: i64) -> BundleInfo {
        BundleInfo {
            id: id.into(),
            start,
            stop,
        }
    }

    #[test]
    fn plan_sorts_dedupes_and_filters() {
        let listed = vec![
            b("c", 20, 30),
            b("a", 0, 10),
            b("b", 10, 20),
            b("b", 10, 20),
            b("d", 30, 40),
        ];
        let ids = |v: Vec<BundleInfo>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(
            ids(plan(listed.clone(), 0, None, None)),
            ["a", "b", "c", "d"]
        );
        assert_eq!(ids(plan(listed.clone(), 10, Some(30), None)), ["b", "c"]);
        let bm = Bookmark {
            stop: from_unix(5).unwrap(),
            bundle_id: Some("b".into()),
        };
        assert_eq!(ids(plan(listed, 5, None, Some(&bm))), ["a", "c", "d"]);
    }

    #[test]
    fn spool_files_are_private_and_invisible() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut spool = create_spool(dir.path()).unwrap();
        spool.write_all(b"records").unwrap();
        let mode = spool.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m05s");
    }

    #[test]
    fn peak_rss_is_known_on_linux() {
        assert!(peak_rss() > 0);
    }
}
