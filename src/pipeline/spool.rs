//! The spool: a private, compressed file one unit's records are shaped into
//! before any of them may go out, and the blocking reader that fills it.
//!
//! Shaping runs on the unit's reader thread and compression on a second
//! thread, so the two overlap. RECORD lines are spooled as zstd level-1
//! frames of 1 MiB of lines each (about a tenth of the JSON on disk), which
//! [`Frames`] reads back one frame per call. BATCH output is written straight
//! into the gzip JSONL file that will be handed over.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::batch::{GZIP_LEVEL, Partial};
use crate::catalog::{Schema, Selection};
use crate::read::{self, ReadError, ReadStats, read_events_as};
use crate::record::{ShapeError, Shaper};
use crate::source::Format;

/// zstd level of the RECORD spool: level 1 already keeps it far below a
/// fifth of the JSON, and higher levels cost more time than they save disk.
const ZSTD_LEVEL: i32 = 1;

/// Shaped bytes handed to the compressor at a time.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// A private, anonymous file in `dir`: mode 0600 and unlinked from the start,
/// so no other user can read it and no exit path can leave it behind.
pub(crate) fn create_spool(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = tempfile::tempfile_in(dir)?;
    // An O_TMPFILE file gets 0666 less the umask; make it owner-only.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Where a unit is spooled.
pub(crate) enum SpoolTarget {
    /// RECORD lines, zstd-compressed, into an anonymous file.
    Records(File),
    /// Raw records, one per line, gzip-compressed, into a batch file that is
    /// not yet visible under its final name.
    Batch(Partial),
}

/// A unit's spool once complete: still on disk, counted until dropped.
pub(crate) struct Spool {
    pub(crate) target: SpoolTarget,
    _charge: Charge,
}

/// Bytes on disk in spool files and unpublished batch files, and the most
/// there ever were at once.
#[derive(Debug, Default)]
pub(crate) struct SpoolMeter {
    in_use: AtomicU64,
    peak: AtomicU64,
}

impl SpoolMeter {
    /// The most bytes spooled at any one time so far.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// One spool's share of the meter, given back when it is dropped.
struct Charge {
    meter: Arc<SpoolMeter>,
    bytes: u64,
}

impl Charge {
    fn add(&mut self, n: u64) {
        self.bytes += n;
        let now = self.meter.in_use.fetch_add(n, Ordering::Relaxed) + n;
        self.meter.peak.fetch_max(now, Ordering::Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.meter.in_use.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A writer that charges every byte written through it to the meter.
struct Metered<W> {
    inner: W,
    charge: Charge,
}

impl<W: Write> Write for Metered<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.charge.add(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why spooling failed.
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

/// Reads one unit's body, shapes every event and spools the result into
/// `target`: RECORD lines, or raw records for a batch file.
pub(crate) fn spool_unit(
    body: impl Read + Send,
    format: Format,
    target: SpoolTarget,
    meter: Arc<SpoolMeter>,
    schema: &Schema,
    selection: &Selection,
    extracted: DateTime<Utc>,
) -> Result<(Spool, ReadStats), SpoolError> {
    let mut shaper = Shaper::new(schema, selection);
    shaper.start_bundle(extracted);
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
        let sink = |event: &[u8]| {
            shape_onto(&mut shaper, event, raw_records, &mut line, &mut chunk)
                .map_err(SinkError::Shape)?;
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
        let read = match format {
            Format::GzipJsonArray => read_events_as(&mut raw, read::Format::JsonArray, sink),
            Format::GzipNdjson => read_events_as(&mut raw, read::Format::Ndjson, sink),
        };
        let read = match read {
            // NDJSON of no lines is a window without events; that it arrived
            // whole is proven by the gzip trailer of the (non-empty) body.
            Err(ReadError::Format(why))
                if format == Format::GzipNdjson && raw.bytes > 0 && why == EMPTY =>
            {
                Ok(ReadStats::default())
            }
            other => other,
        };
        let read = read.and_then(|stats| {
            shaper.finish_bundle();
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
            (Ok(stats), Ok(spool)) => Ok((spool, stats)),
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
        chunk.extend_from_slice(shaper.record_of(line));
        chunk.push(b'\n');
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

/// Writes blocks of shaped lines into a spool target, charging the bytes
/// that land on disk to the meter.
pub(crate) struct SpoolWriter(Writing);

enum Writing {
    /// Each block one zstd frame.
    Records {
        frames: FrameWriter<File>,
        charge: Charge,
    },
    /// One gzip stream over all blocks (boxed: the encoder's state is large).
    Batch(Box<flate2::write::GzEncoder<Metered<BufWriter<Partial>>>>),
}

impl SpoolWriter {
    pub(crate) fn new(target: SpoolTarget, meter: Arc<SpoolMeter>) -> io::Result<SpoolWriter> {
        let charge = Charge { meter, bytes: 0 };
        Ok(SpoolWriter(match target {
            SpoolTarget::Records(file) => Writing::Records {
                frames: FrameWriter::new(file)?,
                charge,
            },
            SpoolTarget::Batch(partial) => {
                let out = Metered {
                    inner: BufWriter::with_capacity(256 * 1024, partial),
                    charge,
                };
                Writing::Batch(Box::new(flate2::write::GzEncoder::new(
                    out,
                    flate2::Compression::new(GZIP_LEVEL),
                )))
            }
        }))
    }

    /// Adds a block of whole lines.
    pub(crate) fn write(&mut self, block: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            Writing::Records { frames, charge } => {
                charge.add(frames.frame(block)?);
                Ok(())
            }
            Writing::Batch(enc) => enc.write_all(block),
        }
    }

    /// The spool, complete; a batch file's gzip stream is ended and the
    /// file synced to disk, before any BATCH message can name it.
    pub(crate) fn finish(self) -> io::Result<Spool> {
        match self.0 {
            Writing::Records { frames, charge } => Ok(Spool {
                target: SpoolTarget::Records(frames.out),
                _charge: charge,
            }),
            Writing::Batch(enc) => {
                let Metered { inner, charge } = enc.finish()?;
                let mut partial = inner.into_inner().map_err(|e| e.into_error())?;
                partial.file_mut().sync_all()?;
                Ok(Spool {
                    target: SpoolTarget::Batch(partial),
                    _charge: charge,
                })
            }
        }
    }
}

/// Bytes before each frame of a RECORD spool: its stored length, then the
/// length of the lines it holds, both u32 little-endian.
const FRAME_HEADER: usize = 8;

fn frame_len(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::other("a spool frame over 4 GiB"))
}

/// Writes RECORD lines into a spool, each block as a zstd frame of its own,
/// compressed from one contiguous buffer: the fastest path through zstd, and
/// one [`Frames`] can decompress in one call.
pub(crate) struct FrameWriter<W> {
    out: W,
    zstd: zstd::bulk::Compressor<'static>,
    frame: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub(crate) fn new(out: W) -> io::Result<FrameWriter<W>> {
        Ok(FrameWriter {
            out,
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            frame: Vec::new(),
        })
    }

    /// Writes `lines` as one frame and returns the bytes it took.
    pub(crate) fn frame(&mut self, lines: &[u8]) -> io::Result<u64> {
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(lines.len()));
        // Compressing into a Vec fills it from the start.
        self.zstd.compress_to_buffer(lines, &mut self.frame)?;
        let mut header = [0u8; FRAME_HEADER];
        header[..4].copy_from_slice(&frame_len(self.frame.len())?.to_le_bytes());
        header[4..].copy_from_slice(&frame_len(lines.len())?.to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(&self.frame)?;
        Ok((FRAME_HEADER + self.frame.len()) as u64)
    }

    #[cfg(test)]
    pub(crate) fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a RECORD spool back, one frame of lines at a time.
pub(crate) struct Frames<R> {
    reader: io::BufReader<R>,
    zstd: zstd::bulk::Decompressor<'static>,
    stored: Vec<u8>,
}

impl<R: Read> Frames<R> {
    pub(crate) fn new(spool: R) -> io::Result<Frames<R>> {
        Ok(Frames {
            reader: io::BufReader::with_capacity(256 * 1024, spool),
            zstd: zstd::bulk::Decompressor::new()?,
            stored: Vec::new(),
        })
    }

    /// Puts the next frame's lines in `block` (replacing what it held);
    /// false at the spool's clean end.
    pub(crate) fn next_into(&mut self, block: &mut Vec<u8>) -> io::Result<bool> {
        let mut header = [0u8; FRAME_HEADER];
        let mut got = 0;
        while got < FRAME_HEADER {
            match self.reader.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let [a, b, c, d, e, f, g, h] = header;
        let stored = u32::from_le_bytes([a, b, c, d]) as usize;
        let lines = u32::from_le_bytes([e, f, g, h]) as usize;
        self.stored.resize(stored, 0);
        self.reader.read_exact(&mut self.stored)?;
        block.clear();
        block.reserve(lines);
        // Decompressing into a Vec fills it from the start.
        self.zstd.decompress_to_buffer(&self.stored[..], block)?;
        if block.len() != lines {
            return Err(io::Error::other(format!(
                "a spool frame held {} bytes where {lines} were written",
                block.len()
            )));
        }
        Ok(true)
    }
}

/// What the reader says of a body with nothing in it once decompressed.
const EMPTY: &str = "the body is empty";

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
    use fullstory_demo::{gzip, synthetic_events};
    use std::io::{Seek, SeekFrom};

    #[test]
    fn an_ndjson_window_without_events_is_fine_but_an_empty_body_is_not() {
        let schema = Schema::events();
        let selection = Selection::all(&schema);
        let dir = tempfile::tempdir().unwrap();
        let spool = |body: &[u8], format| {
            let target = SpoolTarget::Records(create_spool(dir.path()).unwrap());
            let meter = Arc::new(SpoolMeter::default());
            spool_unit(body, format, target, meter, &schema, &selection, Utc::now())
                .map(|(_, stats)| stats.events)
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"").unwrap();
        let empty_gzip = gz.finish().unwrap();
        assert_eq!(spool(&empty_gzip, Format::GzipNdjson).ok(), Some(0));
        assert!(spool(b"", Format::GzipNdjson).is_err());
        assert!(spool(&empty_gzip[..10], Format::GzipNdjson).is_err());
        assert!(spool(&empty_gzip, Format::GzipJsonArray).is_err());
        assert_eq!(
            spool(b"{\"EventType\":\"click\"}\n", Format::GzipNdjson).ok(),
            Some(1)
        );
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
    fn record_spool_is_small_and_reads_back_whole() {
        let json = synthetic_events(3, 1_704_067_200, 1_704_153_600, 3_000);
        let schema = Schema::events();
        let selection = Selection::all(&schema);
        let dir = tempfile::tempdir().unwrap();
        let meter = Arc::new(SpoolMeter::default());
        let target = SpoolTarget::Records(create_spool(dir.path()).unwrap());
        let extracted = Utc::now();
        let Ok((spool, stats)) = spool_unit(
            gzip(&json).as_slice(),
            Format::GzipJsonArray,
            target,
            Arc::clone(&meter),
            &schema,
            &selection,
            extracted,
        ) else {
            panic!("spooling failed");
        };
        assert_eq!(stats.events, 3_000);
        let SpoolTarget::Records(mut file) = spool.target else {
            panic!("a RECORD spool");
        };
        let on_disk = file.metadata().unwrap().len();
        assert_eq!(meter.peak(), on_disk);
        assert!(
            on_disk * 5 <= stats.json_bytes,
            "{on_disk} of {}",
            stats.json_bytes
        );

        file.seek(SeekFrom::Start(0)).unwrap();
        let mut lines = Vec::new();
        let mut frames = Frames::new(file).unwrap();
        let mut block = Vec::new();
        let mut count = 0;
        while frames.next_into(&mut block).unwrap() {
            lines.extend_from_slice(&block);
            count += 1;
        }
        assert!(count > 1, "{count} frames");
        let mut want = Vec::new();
        let mut shaper = Shaper::new(&schema, &selection);
        shaper.start_bundle(extracted);
        read_events_as(json.as_slice(), read::Format::JsonArray, |e| {
            shaper.shape(e, &mut want)
        })
        .unwrap();
        assert!(lines == want, "the spool reads back as the shaped lines");
        drop(spool._charge);
        assert_eq!(meter.in_use.load(Ordering::Relaxed), 0);
    }
}
