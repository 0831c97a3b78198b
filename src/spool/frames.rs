//! The frame codec of a RECORD spool: each block of RECORD lines one zstd
//! frame of its own, after an 8-byte header, so a reader can decompress a
//! frame in one call and tell a spool cut short or damaged from a whole one.

use std::io::{self, Read, Write};

/// zstd level of the RECORD spool: level 1 already keeps it far below a
/// fifth of the JSON, and higher levels cost more time than they save disk.
const ZSTD_LEVEL: i32 = 1;

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

    /// The sink the frames went to.
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
