//! The spool: a private file one unit's RECORD lines are shaped into before
//! any of them may go to stdout, and the blocking reader that fills it.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::catalog::{Schema, Selection};
use crate::read::{self, ReadError, ReadStats, read_events_as};
use crate::record::{ShapeError, Shaper};
use crate::source::Format;

/// A private, anonymous file in `dir`: mode 0600 and unlinked from the start,
/// so no other user can read it and no exit path can leave it behind.
pub(crate) fn create_spool(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = tempfile::tempfile_in(dir)?;
    // An O_TMPFILE file gets 0666 less the umask; make it owner-only.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
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

/// Reads one unit's body and writes its RECORD lines into `spool`.
pub(crate) fn spool_unit(
    body: impl Read + Send,
    format: Format,
    spool: File,
    schema: &Schema,
    selection: &Selection,
    extracted: DateTime<Utc>,
) -> Result<(File, ReadStats), SpoolError> {
    let mut shaper = Shaper::new(schema, selection);
    shaper.start_bundle(extracted);
    let mut writer = BufWriter::with_capacity(1 << 20, spool);
    let mut line = Vec::with_capacity(8 * 1024);
    let sink = |event: &[u8]| {
        line.clear();
        shaper.shape(event, &mut line).map_err(SinkError::Shape)?;
        writer.write_all(&line).map_err(SinkError::Write)
    };
    let mut raw = Counted {
        inner: body,
        bytes: 0,
    };
    let read = match format {
        Format::GzipJsonArray => read_events_as(&mut raw, read::Format::JsonArray, sink),
        Format::GzipNdjson => read_events_as(&mut raw, read::Format::Ndjson, sink),
    };
    let stats = match read {
        // NDJSON of no lines is a window without events; that it arrived
        // whole is proven by the gzip trailer of the (non-empty) body.
        Err(ReadError::Format(why))
            if format == Format::GzipNdjson && raw.bytes > 0 && why == EMPTY =>
        {
            Ok(ReadStats::default())
        }
        other => other,
    }
    .map_err(|e| match e {
        ReadError::Sink {
            error: SinkError::Write(e),
            ..
        } => SpoolError::Write(e),
        other => SpoolError::Read(other.to_string()),
    })?;
    shaper.finish_bundle();
    let file = writer
        .into_inner()
        .map_err(|e| SpoolError::Write(e.into_error()))?;
    Ok((file, stats))
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

    #[test]
    fn an_ndjson_window_without_events_is_fine_but_an_empty_body_is_not() {
        let schema = Schema::events();
        let selection = Selection::all(&schema);
        let dir = tempfile::tempdir().unwrap();
        let spool = |body: &[u8], format| {
            let file = create_spool(dir.path()).unwrap();
            spool_unit(body, format, file, &schema, &selection, chrono::Utc::now())
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
}
