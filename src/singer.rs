//! The Singer writer: the one place that writes to stdout.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;

use serde_json::{Value, json};

use crate::error::{Error, Result};

const OUT_BUF: usize = 256 * 1024;

/// Writes Singer messages, one JSON object per line, through one buffer.
pub(crate) struct SingerWriter<W: Write> {
    out: BufWriter<W>,
}

impl SingerWriter<File> {
    /// A writer on this process's stdout. It works on a duplicate of the file
    /// descriptor so that copying a spool file can use the kernel's
    /// file-to-file copy, and so no line buffering gets in the way.
    pub(crate) fn stdout() -> Result<SingerWriter<File>> {
        let fd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(Error::from_output)?;
        Ok(SingerWriter::new(File::from(fd)))
    }
}

impl<W: Write> SingerWriter<W> {
    /// A writer over any sink (tests use a `Vec<u8>`).
    pub(crate) fn new(inner: W) -> SingerWriter<W> {
        SingerWriter {
            out: BufWriter::with_capacity(OUT_BUF, inner),
        }
    }

    /// Writes a SCHEMA message.
    pub(crate) fn schema(
        &mut self,
        stream: &str,
        schema: Value,
        keys: &[&str],
        bookmarks: &[&str],
    ) -> Result<()> {
        self.message(&json!({
            "type": "SCHEMA",
            "stream": stream,
            "schema": schema,
            "key_properties": keys,
            "bookmark_properties": bookmarks,
        }))
    }

    /// Writes a STATE message and flushes, so the target sees it now.
    pub(crate) fn state(&mut self, value: Value) -> Result<()> {
        self.message(&json!({"type": "STATE", "value": value}))?;
        self.flush()
    }

    fn message(&mut self, message: &Value) -> Result<()> {
        serde_json::to_writer(&mut self.out, message)
            .map_err(|e| Error::from_output(io::Error::from(e)))?;
        self.out.write_all(b"\n").map_err(Error::from_output)
    }

    /// Copies already-formed message lines (a spooled bundle) to the output.
    pub(crate) fn copy_spool(&mut self, spool: &mut File) -> Result<u64>
    where
        W: CopyTarget,
    {
        spool
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::spool("cannot rewind the spool file".into(), "", e))?;
        self.flush()?;
        self.out.get_mut().copy_from(spool)
    }

    /// Pushes everything buffered to the sink.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::from_output)
    }

    /// The sink, for tests.
    #[cfg(test)]
    pub(crate) fn into_inner(self) -> Result<W> {
        self.out
            .into_inner()
            .map_err(|e| Error::from_output(e.into_error()))
    }
}

/// A sink a spool file can be copied into, telling read errors (the spool)
/// from write errors (the target).
pub(crate) trait CopyTarget {
    /// Copies all of `spool` from its current position.
    fn copy_from(&mut self, spool: &mut File) -> Result<u64>;
}

impl CopyTarget for File {
    /// File to file (or pipe), so the kernel moves the bytes without a trip
    /// through user space where it can.
    fn copy_from(&mut self, spool: &mut File) -> Result<u64> {
        io::copy(spool, self).map_err(Error::from_output)
    }
}

impl CopyTarget for Vec<u8> {
    fn copy_from(&mut self, spool: &mut File) -> Result<u64> {
        copy_by_chunks(spool, self)
    }
}

fn copy_by_chunks(spool: &mut File, out: &mut impl Write) -> Result<u64> {
    let mut buf = vec![0u8; OUT_BUF];
    let mut total = 0u64;
    loop {
        let n = match spool.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::spool("cannot read the spool file".into(), "", e)),
        };
        out.write_all(&buf[..n]).map_err(Error::from_output)?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_message_per_line_and_copies_spools() {
        let mut w = SingerWriter::new(Vec::new());
        w.schema(
            "events",
            json!({"type": "object"}),
            &["EventKey"],
            &["EventStart"],
        )
        .unwrap();
        let mut spool = tempfile::tempfile().unwrap();
        spool.write_all(b"{\"type\":\"RECORD\"}\n").unwrap();
        assert_eq!(w.copy_spool(&mut spool).unwrap(), 18);
        w.state(json!({"a": 1})).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with(r#"{"type":"SCHEMA""#) || lines[0].contains(r#""type":"SCHEMA""#)
        );
        assert_eq!(lines[1], r#"{"type":"RECORD"}"#);
        assert!(lines[2].contains(r#""type":"STATE""#));
    }

    #[test]
    fn broken_pipe_is_output_closed() {
        let err = Error::from_output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(err, Error::OutputClosed));
    }
}
