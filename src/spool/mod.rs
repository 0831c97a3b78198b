//! The spool: the private, compressed file one unit's records wait in until
//! the unit has been verified whole, or, with `batch_config`, the unit's
//! batch file before it is published. [`frames`] is the codec of a RECORD
//! spool; what fills a spool is the pipeline's business.

pub(crate) mod frames;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::{GZIP_LEVEL, Partial};
use frames::FrameWriter;

/// Shaped bytes handed to the spool at a time.
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

    /// The bytes spooled now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
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
                target: SpoolTarget::Records(frames.into_inner()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
