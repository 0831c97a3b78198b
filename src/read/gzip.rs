//! Gzip sniffing, and inflating on a thread of its own that hands big blocks to the splitter.
//!
//! The body decides, not its headers: a body starting with the gzip magic
//! bytes `1f 8b` is inflated (every member, each one's CRC and length
//! checked), anything else is read as it is. FullStory sends one gzip layer;
//! a proxy applying `Content-Encoding: gzip` on top would make two.

use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::sync::mpsc;
use std::thread::Scope;

use flate2::bufread::GzDecoder;

/// Read buffer size on both sides of the decompressor. serde and the splitter
/// are fast; small reads from the inflater are what would slow them down.
const BUF_SIZE: usize = 256 * 1024;

/// How many gzip layers to peel.
const MAX_GZIP_LAYERS: usize = 2;

/// Size of the blocks of decompressed JSON handed from the inflating thread.
const BLOCK_SIZE: usize = 256 * 1024;
/// Blocks queued between the threads; with the two in use this bounds memory.
const BLOCKS_IN_FLIGHT: usize = 4;

type Block = io::Result<(Vec<u8>, usize)>;

/// The inflating side: fills blocks and sends them on, then an error or the
/// end (by hanging up).
fn inflate<R: Read>(input: R, blocks: mpsc::SyncSender<Block>, recycled: mpsc::Receiver<Vec<u8>>) {
    let mut reader = match open(input) {
        Ok(reader) => reader,
        Err(e) => {
            let _ = blocks.send(Err(e));
            return;
        }
    };
    loop {
        let mut block = recycled.try_recv().unwrap_or_else(|_| vec![0; BLOCK_SIZE]);
        let mut len = 0;
        while len < block.len() {
            match reader.read(&mut block[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if len > 0 {
                        let _ = blocks.send(Ok((block, len)));
                    }
                    let _ = blocks.send(Err(e));
                    return;
                }
            }
        }
        if len == 0 || blocks.send(Ok((block, len))).is_err() {
            return;
        }
    }
}

/// The parsing side's view of the blocks, as a `BufRead`.
pub(super) struct BlockReader {
    rx: mpsc::Receiver<Block>,
    recycle: mpsc::Sender<Vec<u8>>,
    block: Vec<u8>,
    len: usize,
    pos: usize,
}

impl BlockReader {
    /// Starts inflating `input` on a thread in `scope` and returns the
    /// receiving end.
    pub(super) fn spawn<'scope, R>(scope: &'scope Scope<'scope, '_>, input: R) -> BlockReader
    where
        R: Read + Send + 'scope,
    {
        let (blocks, rx) = mpsc::sync_channel(BLOCKS_IN_FLIGHT);
        let (recycle, recycled) = mpsc::channel();
        scope.spawn(move || inflate(input, blocks, recycled));
        BlockReader {
            rx,
            recycle,
            block: Vec::new(),
            len: 0,
            pos: 0,
        }
    }
}

impl Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for BlockReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            match self.rx.recv() {
                Ok(Ok((block, len))) => {
                    let done = std::mem::replace(&mut self.block, block);
                    if !done.is_empty() {
                        let _ = self.recycle.send(done);
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(&[]),
            }
        }
        Ok(&self.block[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

/// Looks at the first bytes and stacks decompressors as needed.
fn open<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn BufRead + 'a>> {
    let mut reader: Box<dyn BufRead + 'a> = Box::new(BufReader::with_capacity(BUF_SIZE, input));
    for layer in 0..=MAX_GZIP_LAYERS {
        let (magic, rest) = peek2(reader)?;
        let gzip = magic.get_ref().starts_with(&[0x1f, 0x8b]);
        let input = magic.chain(rest);
        if !gzip {
            return Ok(Box::new(input));
        }
        if layer == MAX_GZIP_LAYERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the body is gzip nested more than {MAX_GZIP_LAYERS} layers deep (FullStory sends one; a proxy compressing it again makes two)"
                ),
            ));
        }
        let of = if layer == 0 {
            "of the body"
        } else {
            "of the body once gunzipped"
        };
        let members = Members::new(input, of);
        reader = Box::new(BufReader::with_capacity(BUF_SIZE, members));
    }
    Ok(reader)
}

/// A `BufRead` that knows how far into it reading has got.
struct Positioned<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Read for Positioned<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Positioned<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.pos += n as u64;
        self.inner.consume(n);
    }
}

/// Gzip members one after another, read as one stream. Unlike a plain
/// multi-member decoder it tells bytes after the last member (which are not
/// another member) apart from a body that ended early.
struct Members<R> {
    /// `None` once the input is used up.
    decoder: Option<GzDecoder<Positioned<R>>>,
    /// Where the offsets in errors count from, e.g. "of the body".
    of: &'static str,
    /// Where the current member starts.
    member_at: u64,
}

impl<R: BufRead> Members<R> {
    fn new(input: R, of: &'static str) -> Self {
        Members {
            decoder: Some(GzDecoder::new(Positioned {
                inner: input,
                pos: 0,
            })),
            of,
            member_at: 0,
        }
    }

    fn trailing(&self, at: u64, why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unexpected bytes after the end of the gzip data at byte {at} {}{why}",
                self.of
            ),
        )
    }
}

impl<R: BufRead> Read for Members<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while let Some(decoder) = self.decoder.as_mut() {
            match decoder.read(out) {
                Ok(0) if out.is_empty() => return Ok(0),
                Ok(0) => {}
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Not even a header: the bytes after the last member are
                // something else.
                Err(e) if decoder.header().is_none() && self.member_at > 0 => {
                    return Err(self.trailing(self.member_at, &format!(" ({e})")));
                }
                Err(e) => {
                    let at = decoder.get_ref().pos;
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{e} (near byte {at} {})", self.of),
                    ));
                }
            }
            // The member ended, trailer checked: what follows?
            let Some(decoder) = self.decoder.take() else {
                break;
            };
            let mut input = decoder.into_inner();
            let at = input.pos;
            match input.fill_buf()?.first() {
                None => return Ok(0),
                Some(0x1f) => {
                    self.member_at = at;
                    self.decoder = Some(GzDecoder::new(input));
                }
                Some(_) => return Err(self.trailing(at, "")),
            }
        }
        Ok(0)
    }
}

/// Reads up to two bytes, however the body was chunked, and hands them back
/// in front of the rest.
fn peek2<R: Read>(mut reader: R) -> io::Result<(Cursor<Vec<u8>>, R)> {
    let mut head = Vec::with_capacity(2);
    while head.len() < 2 {
        let mut byte = [0u8; 2];
        let want = 2 - head.len();
        match reader.read(&mut byte[..want]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&byte[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((Cursor::new(head), reader))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{SAMPLE, collect, gzip};

    #[test]
    fn reads_several_gzip_members_and_double_gzip() {
        let (a, b) = SAMPLE.as_bytes().split_at(20);
        let mut body = gzip(a);
        body.extend(gzip(b));
        assert_eq!(collect(&body, 5).unwrap().len(), 3);
        assert_eq!(
            collect(&gzip(&gzip(SAMPLE.as_bytes())), 5).unwrap().len(),
            3
        );
    }

    #[test]
    fn bad_crc_and_trailing_data_are_errors() {
        let mut gz = gzip(SAMPLE.as_bytes());
        let n = gz.len();
        gz[n - 8] ^= 0xff;
        assert!(collect(&gz, 100).is_err());
        assert!(
            collect(b"[{}] x", 100)
                .unwrap_err()
                .contains("after the closing")
        );
        let mut trailing = gzip(SAMPLE.as_bytes());
        trailing.extend_from_slice(b"garbage");
        assert!(collect(&trailing, 100).is_err());
    }

    #[test]
    fn bytes_after_the_gzip_data_are_named_with_their_offset() {
        let gz = gzip(SAMPLE.as_bytes());
        let mut body = gz.clone();
        body.extend_from_slice(b"garbage");
        let err = collect(&body, 100).unwrap_err();
        assert_eq!(
            err,
            format!(
                "unexpected bytes after the end of the gzip data at byte {} of the body",
                gz.len()
            )
        );
        // Even when they start like another gzip member.
        let mut body = gz.clone();
        body.extend_from_slice(b"\x1f\x8bnot a header at all");
        let err = collect(&body, 7).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "unexpected bytes after the end of the gzip data at byte {} of the body (",
                gz.len()
            )),
            "{err}"
        );
        // And inside a second layer.
        let mut inner = gz.clone();
        inner.extend_from_slice(b"!!");
        let err = collect(&gzip(&inner), 5).unwrap_err();
        assert!(
            err.contains(&format!("at byte {} of the body once gunzipped", gz.len())),
            "{err}"
        );
    }

    #[test]
    fn gzip_three_layers_deep_is_named_as_such() {
        let err = collect(&gzip(&gzip(&gzip(SAMPLE.as_bytes()))), 64).unwrap_err();
        assert!(
            err.starts_with("the body is gzip nested more than 2 layers deep"),
            "{err}"
        );
    }
}
