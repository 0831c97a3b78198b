//! The Singer writer: the one place that writes to stdout.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde_json::{Value, json};

use crate::batch;
use crate::error::{Error, Result};
use crate::spool::frames::Frames;

const OUT_BUF: usize = 256 * 1024;

/// The pipe buffer asked for when stdout is a pipe: the most an unprivileged
/// process may set by default.
const PIPE_SIZE: usize = 1024 * 1024;

/// Bytes handed to the sink by every writer in the process: how a
/// shutdown tells a target that reads slowly from one that stopped.
static BYTES_OUT: AtomicU64 = AtomicU64::new(0);

/// How many bytes of Singer messages the sink has taken so far.
pub(crate) fn bytes_out() -> u64 {
    BYTES_OUT.load(Ordering::Relaxed)
}

/// Writes Singer messages, one JSON object per line, through one buffer.
pub(crate) struct SingerWriter<W: Write> {
    out: BufWriter<Taken<W>>,
}

/// A sink that counts what it takes into [`BYTES_OUT`].
struct Taken<W>(W);

impl<W: Write> Write for Taken<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        BYTES_OUT.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl SingerWriter<File> {
    /// A writer on this process's stdout. It works on a duplicate of the file
    /// descriptor so no line buffering gets in the way of large writes.
    pub(crate) fn stdout() -> Result<SingerWriter<File>> {
        let fd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(Error::from_output)?;
        // A target reads a pipe in the kernel's 64 KiB steps by default;
        // a larger pipe halves the switches between the two processes. Not
        // a pipe, or not allowed: the default is fine.
        let _ = rustix::pipe::fcntl_setpipe_size(&fd, PIPE_SIZE);
        Ok(SingerWriter::new(File::from(fd)))
    }
}

impl<W: Write> SingerWriter<W> {
    /// A writer over any sink (tests use a `Vec<u8>`).
    pub(crate) fn new(inner: W) -> SingerWriter<W> {
        SingerWriter {
            out: BufWriter::with_capacity(OUT_BUF, Taken(inner)),
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

    /// Writes an ACTIVATE_VERSION message: the stream's table is now the
    /// records of `version`.
    pub(crate) fn activate_version(&mut self, stream: &str, version: u64) -> Result<()> {
        self.message(&json!({
            "type": "ACTIVATE_VERSION",
            "stream": stream,
            "version": version,
        }))
    }

    /// Writes a BATCH message naming the files that hold a unit's records.
    pub(crate) fn batch(&mut self, stream: &str, manifest: &[String]) -> Result<()> {
        self.message(&json!({
            "type": "BATCH",
            "stream": stream,
            "encoding": {"format": batch::FORMAT, "compression": batch::COMPRESSION},
            "manifest": manifest,
        }))
    }

    /// Copies already-formed message lines (a spooled unit,
    /// zstd-compressed) to the output. Decompression runs on a thread of its own, so it
    /// overlaps the writes to the target.
    pub(crate) fn copy_compressed_spool(&mut self, spool: &mut File) -> Result<u64> {
        spool.seek(SeekFrom::Start(0)).map_err(unreadable)?;
        self.flush()?;
        let out = self.out.get_mut();
        std::thread::scope(|scope| {
            let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(2);
            let (back_tx, back_rx) = sync_channel::<Vec<u8>>(3);
            std::thread::Builder::new()
                .name("unspool".into())
                .spawn_scoped(scope, move || unspool(spool, &tx, &back_rx))
                .map_err(unreadable)?;
            let mut total = 0u64;
            // An early return drops `rx`, which stops the thread.
            for block in rx {
                let block = block.map_err(unreadable)?;
                // A write error is the target's.
                out.write_all(&block).map_err(Error::from_output)?;
                total += block.len() as u64;
                let _ = back_tx.try_send(block);
            }
            Ok(total)
        })
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
            .map(|taken| taken.0)
            .map_err(|e| Error::from_output(e.into_error()))
    }
}

fn unreadable(e: io::Error) -> Error {
    Error::spool("cannot read the spool file back".into(), "", e)
}

/// The decompressing side of [`SingerWriter::copy_compressed_spool`]: one
/// block per spool frame (recycled through `back`), sent in order; stops at
/// the end, on an error (sent on), or when the receiver is gone.
fn unspool(spool: &mut File, tx: &SyncSender<io::Result<Vec<u8>>>, back: &Receiver<Vec<u8>>) {
    let mut frames = match Frames::new(spool) {
        Ok(frames) => frames,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    loop {
        let mut block = back.try_recv().unwrap_or_default();
        match frames.next_into(&mut block) {
            Ok(false) => return,
            Ok(true) => {
                if tx.send(Ok(block)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::frames::FrameWriter;

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
        let mut frames = FrameWriter::new(tempfile::tempfile().unwrap()).unwrap();
        frames.frame(b"{\"type\":\"RECORD\"}\n").unwrap();
        let mut spool = frames.into_inner();
        assert_eq!(w.copy_compressed_spool(&mut spool).unwrap(), 18);
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
    fn copies_a_spool_of_many_blocks_in_order() {
        let lines: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("{{\"type\":\"RECORD\",\"n\":{i}}}\n").into_bytes())
            .collect();
        assert!(lines.len() > 4 * OUT_BUF);
        let mut frames = FrameWriter::new(tempfile::tempfile().unwrap()).unwrap();
        for block in lines.chunks(300_000) {
            frames.frame(block).unwrap();
        }
        let mut spool = frames.into_inner();
        let mut w = SingerWriter::new(Vec::new());
        assert_eq!(
            w.copy_compressed_spool(&mut spool).unwrap(),
            lines.len() as u64
        );
        assert!(w.into_inner().unwrap() == lines);

        // A frame cut short, and one whose bytes are not zstd.
        let len = spool.metadata().unwrap().len();
        spool.set_len(len - 10).unwrap();
        let err = SingerWriter::new(Vec::new())
            .copy_compressed_spool(&mut spool)
            .unwrap_err();
        assert!(err.to_string().contains("spool"), "{err}");
        let mut corrupt = tempfile::tempfile().unwrap();
        corrupt.write_all(&[4, 0, 0, 0, 9, 0, 0, 0]).unwrap();
        corrupt.write_all(b"junk").unwrap();
        let err = SingerWriter::new(Vec::new())
            .copy_compressed_spool(&mut corrupt)
            .unwrap_err();
        assert!(err.to_string().contains("spool"), "{err}");
    }

    #[test]
    fn broken_pipe_is_output_closed() {
        let err = Error::from_output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(err, Error::OutputClosed));
    }
}
