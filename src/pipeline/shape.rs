//! One unit's body read, shaped and spooled, on blocking threads: the reader
//! splits the body into records, the shaper turns each into its RECORD line
//! (or raw record, for a batch file), and a thread of its own compresses
//! the lines into the spool, so shaping and compression overlap. A stream
//! bookmarked by its records filters them here too (see [`Watermark`]).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::read::{Format, ReadError, ReadStats, read_events_as};
use crate::record::{ShapeError, Shaper};
use crate::spool::{CHUNK, Spool, SpoolMeter, SpoolTarget, SpoolWriter};
use crate::state::LastUpdated;
use crate::time::{CLOCK_SKEW_SECS, parse_datetime};
use chrono::{DateTime, Utc};

/// Why spooling failed.
#[derive(Debug)]
pub(crate) enum SpoolError {
    /// The body is bad: retry the download.
    Read(String),
    /// The spool cannot be written: retrying will not help.
    Write(io::Error),
}

enum SinkError {
    Shape(ShapeError),
    /// The compressor stopped; its own result says why.
    Closed,
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkError::Shape(e) => write!(f, "{e}"),
            SinkError::Closed => f.write_str("the spool writer stopped"),
        }
    }
}

/// What spooling one unit gave.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Records in the spool (those a [`Watermark`] let through).
    pub(crate) records: u64,
    /// Bytes of JSON read, once decompressed.
    pub(crate) json_bytes: u64,
    /// The newest watermark value among the records spooled.
    pub(crate) newest: Option<LastUpdated>,
    /// The custom property columns the records use.
    pub(crate) columns: Vec<String>,
}

/// Where a stream bookmarked by a field of its records stands: records
/// whose value is at or before the bookmark's are left out, and the newest
/// value of those written is noted for the next bookmark.
pub(crate) struct Watermark {
    field: &'static str,
    after: Option<LastUpdated>,
    newest: Option<LastUpdated>,
    warned: bool,
    /// Values later than this (now, give or take clock skew) are written
    /// but never become the bookmark: one absurd date would stop every
    /// later version from being written.
    limit: DateTime<Utc>,
    /// Records whose value was past `limit`.
    future: u64,
}

impl Watermark {
    /// A watermark on `field`, with the stream's bookmark `after`.
    pub(crate) fn new(field: &'static str, after: Option<LastUpdated>) -> Watermark {
        Watermark {
            field,
            after,
            newest: None,
            warned: false,
            limit: Utc::now() + chrono::Duration::seconds(CLOCK_SKEW_SECS),
            future: 0,
        }
    }

    /// The newest value to bookmark, saying once how many were too far in
    /// the future to count.
    fn finish(self) -> Option<LastUpdated> {
        if self.future > 0 {
            tracing::warn!(
                "{} records have a {} in the future (after {}); they are written, but the bookmark does not move past now, so they are written again each run until the date comes",
                self.future,
                self.field,
                crate::time::format_rfc3339(self.limit),
            );
        }
        self.newest
    }

    /// Whether a record whose field holds `value` (its JSON text) is written.
    /// One without a date-time there cannot be measured: it is written.
    fn admit(&mut self, value: Option<&[u8]>) -> bool {
        let text = value.and_then(|v| serde_json::from_slice::<String>(v).ok());
        match text.and_then(|t| parse_datetime(&t).map(|at| (t, at))) {
            Some((text, at)) => {
                if self.after.as_ref().is_some_and(|b| at <= b.at) {
                    return false;
                }
                if at > self.limit {
                    self.future += 1;
                    return true;
                }
                if self.newest.as_ref().is_none_or(|n| at > n.at) {
                    self.newest = Some(LastUpdated { at, text });
                }
                true
            }
            None => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        "a record has no usable {}; such records are written every run",
                        self.field
                    );
                }
                true
            }
        }
    }
}

/// What a unit's records are measured by, through the field the shaper
/// captures ([`Measure::field`]).
pub(crate) enum Measure {
    /// The stream is bookmarked on the field: see [`Watermark`].
    Watermark(Watermark),
    /// The unit covers a span of time: see [`Span`].
    Span(Span),
}

impl Measure {
    /// The record field measured.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            Measure::Watermark(w) => w.field,
            Measure::Span(s) => s.field,
        }
    }

    /// Whether a record whose field holds `value` (its JSON text) is written.
    fn admit(&mut self, value: Option<&[u8]>) -> bool {
        match self {
            Measure::Watermark(w) => w.admit(value),
            Measure::Span(s) => {
                s.note(value);
                true
            }
        }
    }

    /// The newest watermark value, if any, once the unit is read; warns
    /// about what did not measure up.
    fn finish(self, noun: &str) -> Option<LastUpdated> {
        match self {
            Measure::Watermark(w) => w.finish(),
            Measure::Span(s) => {
                s.finish(noun);
                None
            }
        }
    }
}

/// The span of time a unit was asked for (a Segment Export window), and the
/// records whose time falls outside it. They are kept: a row is never
/// dropped for what may be the server's mistake, and an upserting target
/// keeps one row per key even if another window holds it too.
pub(crate) struct Span {
    field: &'static str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    outside: u64,
    first: Option<String>,
}

impl Span {
    /// Records of the unit should have `field` in `start..end`.
    pub(crate) fn new(field: &'static str, start: DateTime<Utc>, end: DateTime<Utc>) -> Span {
        Span {
            field,
            start,
            end,
            outside: 0,
            first: None,
        }
    }

    fn note(&mut self, value: Option<&[u8]>) {
        let text = value.and_then(|v| serde_json::from_slice::<String>(v).ok());
        let Some((text, at)) = text.and_then(|t| parse_datetime(&t).map(|at| (t, at))) else {
            return;
        };
        if at < self.start || at >= self.end {
            self.outside += 1;
            self.first.get_or_insert(text);
        }
    }

    fn finish(self, noun: &str) {
        if self.outside > 0 {
            tracing::warn!(
                "{} records of this {noun} have a {} outside it ({}..{}), the first {}; they are kept, as the server sent them: a target that upserts keeps one row each, one that only appends may get such a record twice if the {noun} it belongs to holds it too",
                self.outside,
                self.field,
                crate::time::format_rfc3339(self.start),
                crate::time::format_rfc3339(self.end),
                self.first.unwrap_or_default()
            );
        }
    }
}

/// Reads one unit's body, shapes every record with `shaper` and spools the
/// result into `target`: RECORD lines, or raw records for a batch file.
/// `noun` names the unit in the shaper's warnings.
pub(crate) fn spool_unit(
    body: impl Read + Send,
    format: Format,
    target: SpoolTarget,
    meter: Arc<SpoolMeter>,
    mut shaper: Shaper,
    mut measure: Option<Measure>,
    noun: &str,
) -> Result<(Spool, Tally), SpoolError> {
    let raw_records = matches!(target, SpoolTarget::Batch(_));
    let (tx, rx) = sync_channel::<Vec<u8>>(2);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(3);

    std::thread::scope(|scope| {
        let compressor = std::thread::Builder::new()
            .name("spool-compress".into())
            .spawn_scoped(scope, move || compress(target, meter, rx, back_tx))
            .map_err(SpoolError::Write)?;

        let mut chunk = Vec::with_capacity(CHUNK + 64 * 1024);
        let mut line = Vec::new();
        let mut records = 0u64;
        let sink = |event: &[u8]| {
            let before = chunk.len();
            shape_onto(&mut shaper, event, raw_records, &mut line, &mut chunk)
                .map_err(SinkError::Shape)?;
            if chunk.len() == before {
                return Ok(());
            }
            if let Some(mark) = &mut measure
                && !mark.admit(shaper.captured())
            {
                chunk.truncate(before);
                return Ok(());
            }
            records += 1;
            if chunk.len() >= CHUNK {
                let next = back_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK + 64 * 1024));
                tx.send(std::mem::replace(&mut chunk, next))
                    .map_err(|_| SinkError::Closed)?;
            }
            Ok(())
        };
        let mut raw = Counted {
            inner: body,
            bytes: 0,
        };
        let read = match read_events_as(&mut raw, format, sink) {
            // NDJSON of no lines is a window without events; that it arrived
            // whole is proven by the gzip trailer of the (non-empty) body.
            Err(ReadError::Empty) if format == Format::Ndjson && raw.bytes > 0 => {
                Ok(ReadStats::default())
            }
            other => other,
        };
        let mut columns = Vec::new();
        let read = read.and_then(|stats| {
            shaper.finish_unit(noun);
            columns = shaper.columns_used();
            if chunk.is_empty() || tx.send(std::mem::take(&mut chunk)).is_ok() {
                Ok(stats)
            } else {
                Err(ReadError::Sink {
                    event: stats.events,
                    at: stats.json_bytes,
                    error: SinkError::Closed,
                })
            }
        });
        drop(tx);
        let written = compressor
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spool compressor thread panicked")));
        match (read, written) {
            (Ok(stats), Ok(spool)) => Ok((
                spool,
                Tally {
                    records,
                    json_bytes: stats.json_bytes,
                    newest: measure.and_then(|m| m.finish(noun)),
                    columns,
                },
            )),
            (
                Err(ReadError::Sink {
                    error: SinkError::Closed,
                    ..
                }),
                Err(e),
            )
            | (Ok(_), Err(e)) => Err(SpoolError::Write(e)),
            (Err(e), _) => Err(SpoolError::Read(e.to_string())),
        }
    })
}

/// Shapes one event onto `chunk`: its RECORD line or, for a batch file
/// (`raw`), its record object and a newline. `line` is scratch space.
pub(crate) fn shape_onto(
    shaper: &mut Shaper,
    event: &[u8],
    raw: bool,
    line: &mut Vec<u8>,
    chunk: &mut Vec<u8>,
) -> Result<(), ShapeError> {
    if raw {
        line.clear();
        shaper.shape(event, line)?;
        // Nothing written: the shaper left the record out.
        if !line.is_empty() {
            chunk.extend_from_slice(shaper.record_of(line));
            chunk.push(b'\n');
        }
        Ok(())
    } else {
        shaper.shape(event, chunk)
    }
}

/// The compressor thread: every chunk into the target, then the target
/// finished.
fn compress(
    target: SpoolTarget,
    meter: Arc<SpoolMeter>,
    rx: Receiver<Vec<u8>>,
    back: SyncSender<Vec<u8>>,
) -> io::Result<Spool> {
    let mut writer = SpoolWriter::new(target, meter)?;
    for mut chunk in rx.iter() {
        writer.write(&chunk)?;
        chunk.clear();
        let _ = back.try_send(chunk);
    }
    writer.finish()
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A blocking `Read` over the chunks the download task sends.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Schema, Selection};
    use crate::spool::create_spool;
    use crate::spool::frames::Frames;
    use crate::stream::rest::BLOCK_RULES_HISTORY;
    use chrono::{DateTime, Utc};
    use fullstory_demo::{gzip, synthetic_events};
    use std::io::{Seek, SeekFrom, Write};

    fn shaper(schema: &Schema, extracted: DateTime<Utc>) -> Shaper {
        let mut shaper = Shaper::new(schema, &Selection::all(schema));
        shaper.start_unit(extracted);
        shaper
    }

    /// Spools `body` as RECORD lines; the tally and the lines.
    fn spool(
        schema: &Schema,
        body: &[u8],
        format: Format,
        watermark: Option<Watermark>,
    ) -> Result<(Tally, Vec<u8>), SpoolError> {
        let dir = tempfile::tempdir().unwrap();
        let target = SpoolTarget::Records(create_spool(dir.path()).unwrap());
        let meter = Arc::new(SpoolMeter::default());
        let mut shaper = shaper(schema, Utc::now());
        let measure = watermark.map(Measure::Watermark);
        if let Some(mark) = &measure {
            shaper.capture(mark.field());
        }
        let (spool, tally) = spool_unit(body, format, target, meter, shaper, measure, "unit")?;
        let SpoolTarget::Records(mut file) = spool.target else {
            panic!("a RECORD spool");
        };
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut lines = Vec::new();
        let mut frames = Frames::new(file).unwrap();
        let mut block = Vec::new();
        while frames.next_into(&mut block).unwrap() {
            lines.extend_from_slice(&block);
        }
        Ok((tally, lines))
    }

    #[test]
    fn an_ndjson_window_without_events_is_fine_but_an_empty_body_is_not() {
        let schema = Schema::events();
        let count =
            |body: &[u8], format| spool(&schema, body, format, None).map(|(t, _)| t.records);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"").unwrap();
        let empty_gzip = gz.finish().unwrap();
        assert_eq!(count(&empty_gzip, Format::Ndjson).ok(), Some(0));
        assert!(count(b"", Format::Ndjson).is_err());
        assert!(count(&empty_gzip[..10], Format::Ndjson).is_err());
        assert!(count(&empty_gzip, Format::JsonArray).is_err());
        assert_eq!(
            count(b"{\"EventType\":\"click\"}\n", Format::Ndjson).ok(),
            Some(1)
        );
    }

    #[test]
    fn a_watermark_leaves_out_what_the_bookmark_covers_and_notes_the_newest() {
        let schema = Schema::of(&BLOCK_RULES_HISTORY);
        let body = br#"[{"lastUpdated":"2024-01-02T00:00:00Z","n":1},
            {"lastUpdated":"2024-01-01T00:00:00.000Z","n":2},
            {"lastUpdated":"2024-01-03T00:00:00.5Z","n":3},
            {"lastUpdated":null,"n":4},
            {"n":5}]"#;
        let after = LastUpdated {
            at: parse_datetime("2024-01-01T00:00:00Z").unwrap(),
            text: "2024-01-01T00:00:00Z".into(),
        };
        let mark = Watermark::new("lastUpdated", Some(after));
        let (tally, lines) = spool(&schema, body, Format::JsonArray, Some(mark)).unwrap();
        let ns: Vec<u64> = String::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["record"]["ExtraFields"]["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        // The one at the bookmark is out; those without a date-time are in.
        assert_eq!(ns, [1, 3, 4, 5]);
        assert_eq!(tally.records, 4);
        assert_eq!(tally.newest.unwrap().text, "2024-01-03T00:00:00.5Z");

        // A version from year 9999 is written, but does not become the
        // bookmark, or no later version would ever be written.
        let future = br#"[{"lastUpdated":"9999-01-01T00:00:00Z","n":1},
            {"lastUpdated":"2024-01-02T00:00:00Z","n":2}]"#;
        let mark = Watermark::new("lastUpdated", None);
        let (tally, _) = spool(&schema, future, Format::JsonArray, Some(mark)).unwrap();
        assert_eq!(tally.records, 2);
        assert_eq!(tally.newest.unwrap().text, "2024-01-02T00:00:00Z");

        let (tally, _) = spool(&schema, body, Format::JsonArray, None).unwrap();
        assert_eq!(tally.records, 5);
        assert!(tally.newest.is_none());
    }

    #[test]
    fn record_spool_is_small_and_reads_back_whole() {
        let json = synthetic_events(3, 1_704_067_200, 1_704_153_600, 3_000);
        let schema = Schema::events();
        let dir = tempfile::tempdir().unwrap();
        let meter = Arc::new(SpoolMeter::default());
        let target = SpoolTarget::Records(create_spool(dir.path()).unwrap());
        let extracted = Utc::now();
        let Ok((spool, tally)) = spool_unit(
            gzip(&json).as_slice(),
            Format::JsonArray,
            target,
            Arc::clone(&meter),
            shaper(&schema, extracted),
            None,
            "bundle",
        ) else {
            panic!("spooling failed");
        };
        assert_eq!(tally.records, 3_000);
        let mut spool = spool;
        let SpoolTarget::Records(file) = &mut spool.target else {
            panic!("a RECORD spool");
        };
        let on_disk = file.metadata().unwrap().len();
        assert_eq!(meter.peak(), on_disk);
        assert!(
            on_disk * 5 <= tally.json_bytes,
            "{on_disk} of {}",
            tally.json_bytes
        );

        file.seek(SeekFrom::Start(0)).unwrap();
        let mut lines = Vec::new();
        let mut frames = Frames::new(&mut *file).unwrap();
        let mut block = Vec::new();
        let mut count = 0;
        while frames.next_into(&mut block).unwrap() {
            lines.extend_from_slice(&block);
            count += 1;
        }
        assert!(count > 1, "{count} frames");
        let mut want = Vec::new();
        let mut shaper = shaper(&schema, extracted);
        read_events_as(json.as_slice(), Format::JsonArray, |e| {
            shaper.shape(e, &mut want)
        })
        .unwrap();
        assert!(lines == want, "the spool reads back as the shaped lines");
        drop(spool);
        assert_eq!(meter.in_use(), 0);
    }
}
