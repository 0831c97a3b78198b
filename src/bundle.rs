//! The bundle reader: turns a downloaded body (gzip, several gzip members, or
//! plain JSON) into the raw bytes of each event of its top-level array, in
//! constant memory, and proves the body complete.
//!
//! Completeness is the point: a bundle only counts as read when the array was
//! closed, nothing but whitespace followed it, and (for gzip) every member's
//! CRC and length trailer checked out. Anything short of that is an error, so
//! a truncated download can never pass for a smaller bundle.

use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::sync::mpsc;

use flate2::bufread::MultiGzDecoder;

/// Read buffer size on both sides of the decompressor. serde and the splitter
/// are fast; small reads from the inflater are what would slow them down.
const BUF_SIZE: usize = 256 * 1024;

/// No single event may exceed this; a bigger one means a corrupt body.
pub const MAX_EVENT_BYTES: usize = 512 * 1024 * 1024;

/// How many gzip layers to peel; FullStory sends one, and a proxy applying
/// `Content-Encoding: gzip` on top would make two.
const MAX_GZIP_LAYERS: usize = 2;

/// Figures from reading one bundle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Events in the array.
    pub events: u64,
    /// Bytes of JSON after decompression.
    pub json_bytes: u64,
}

/// Why a bundle could not be read.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The body is not a complete JSON array of objects.
    Format(String),
    /// Reading or decompressing failed (truncated gzip, bad CRC, transport error).
    Io(io::Error),
    /// The per-event callback failed.
    Sink(E),
}

impl<E: std::fmt::Display> std::fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Format(why) => f.write_str(why),
            ReadError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "the body ended early ({e})")
            }
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Sink(e) => write!(f, "{e}"),
        }
    }
}

/// Calls `on_event` with the bytes of each event, in order, and returns the
/// counts once the whole body has been read and verified.
///
/// Decompression runs on a thread of its own and hands over large blocks, so
/// inflating and parsing use both cores.
pub fn read_events<R, E>(
    input: R,
    mut on_event: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<ReadStats, ReadError<E>>
where
    R: Read + Send,
{
    std::thread::scope(|scope| {
        let (blocks, rx) = mpsc::sync_channel(BLOCKS_IN_FLIGHT);
        let (recycle, recycled) = mpsc::channel();
        scope.spawn(move || inflate(input, blocks, recycled));
        let mut reader = BlockReader {
            rx,
            recycle,
            block: Vec::new(),
            len: 0,
            pos: 0,
        };
        let mut splitter = Splitter::default();
        loop {
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            };
            if buf.is_empty() {
                return splitter.finish();
            }
            let len = buf.len();
            splitter.feed(buf, &mut on_event)?;
            reader.consume(len);
        }
    })
}

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
struct BlockReader {
    rx: mpsc::Receiver<Block>,
    recycle: mpsc::Sender<Vec<u8>>,
    block: Vec<u8>,
    len: usize,
    pos: usize,
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
    for _ in 0..MAX_GZIP_LAYERS {
        let (magic, rest) = peek2(reader)?;
        if magic.get_ref().starts_with(&[0x1f, 0x8b]) {
            let gz = MultiGzDecoder::new(magic.chain(rest));
            reader = Box::new(BufReader::with_capacity(BUF_SIZE, gz));
        } else {
            return Ok(Box::new(magic.chain(rest)));
        }
    }
    Ok(reader)
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

/// Where the splitter is in the top-level array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Place {
    #[default]
    BeforeArray,
    /// Just after `[`: an event or `]`.
    ArrayStart,
    /// Inside an event object.
    InEvent,
    /// After an event: `,` or `]`.
    AfterEvent,
    /// After a comma: an event must follow.
    AfterComma,
    /// After `]`: only whitespace may follow.
    Done,
}

/// An incremental splitter of a JSON array of objects. It tracks only nesting
/// and strings; the content of each object is checked by the JSON parser the
/// event bytes go to.
#[derive(Debug, Default)]
struct Splitter {
    place: Place,
    depth: u32,
    in_string: bool,
    /// The previous chunk ended on a backslash inside a string.
    escape: bool,
    event: Vec<u8>,
    stats: ReadStats,
    /// The very first bytes may be a UTF-8 byte order mark.
    bom_checked: bool,
}

impl Splitter {
    fn feed<E>(
        &mut self,
        mut buf: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ReadError<E>> {
        self.stats.json_bytes += buf.len() as u64;
        if !self.bom_checked {
            self.bom_checked = true;
            if let Some(rest) = buf.strip_prefix(b"\xEF\xBB\xBF") {
                buf = rest;
            }
        }
        let mut i = 0;
        while i < buf.len() {
            if self.place == Place::InEvent {
                i = self.scan_event(buf, i)?;
                if self.place != Place::InEvent {
                    on_event(&self.event).map_err(ReadError::Sink)?;
                    self.stats.events += 1;
                    self.event.clear();
                }
                continue;
            }
            let c = buf[i];
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                i += 1;
                continue;
            }
            self.place = match (self.place, c) {
                (Place::BeforeArray, b'[') => Place::ArrayStart,
                (Place::BeforeArray, _) => {
                    return Err(self.unexpected(c, "a JSON array ('[')"));
                }
                (Place::ArrayStart, b']') | (Place::AfterEvent, b']') => Place::Done,
                (Place::ArrayStart, b'{') | (Place::AfterComma, b'{') => {
                    self.depth = 0;
                    Place::InEvent
                }
                (Place::ArrayStart | Place::AfterComma, _) => {
                    return Err(ReadError::Format(format!(
                        "event {} is not a JSON object (starts with {:?})",
                        self.stats.events + 1,
                        char::from(c)
                    )));
                }
                (Place::AfterEvent, b',') => Place::AfterComma,
                (Place::AfterEvent, _) => return Err(self.unexpected(c, "',' or ']'")),
                (Place::Done, _) => {
                    return Err(self.unexpected(c, "nothing after the closing ']'"));
                }
                (Place::InEvent, _) => unreachable!("handled above"),
            };
            // The opening brace belongs to the event.
            if self.place != Place::InEvent {
                i += 1;
            }
        }
        Ok(())
    }

    /// Scans event bytes from `start`, copying them; returns where it stopped.
    fn scan_event<E>(&mut self, buf: &[u8], start: usize) -> Result<usize, ReadError<E>> {
        let mut i = start;
        if self.escape {
            self.escape = false;
            i += 1;
        }
        let mut end = None;
        while i < buf.len() {
            if self.in_string {
                match memchr::memchr2(b'"', b'\\', &buf[i..]) {
                    None => i = buf.len(),
                    Some(off) => {
                        let j = i + off;
                        if buf[j] == b'\\' {
                            if j + 1 == buf.len() {
                                self.escape = true;
                            }
                            i = j + 2;
                        } else {
                            self.in_string = false;
                            i = j + 1;
                        }
                    }
                }
                continue;
            }
            match buf[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let stop = end.unwrap_or(buf.len()).min(buf.len());
        if self.event.len() + (stop - start) > MAX_EVENT_BYTES {
            return Err(ReadError::Format(format!(
                "event {} is larger than {} MiB; the body is corrupt",
                self.stats.events + 1,
                MAX_EVENT_BYTES >> 20
            )));
        }
        self.event.extend_from_slice(&buf[start..stop]);
        if end.is_some() {
            self.place = Place::AfterEvent;
        }
        Ok(i.min(buf.len()).max(stop))
    }

    fn unexpected<E>(&self, c: u8, wanted: &str) -> ReadError<E> {
        ReadError::Format(format!(
            "expected {wanted} after {} events but found {:?}",
            self.stats.events,
            char::from(c)
        ))
    }

    fn finish<E>(self) -> Result<ReadStats, ReadError<E>> {
        match self.place {
            Place::Done => Ok(self.stats),
            Place::BeforeArray if self.stats.json_bytes == 0 => {
                Err(ReadError::Format("the body is empty".to_string()))
            }
            _ => Err(ReadError::Format(format!(
                "the JSON array ends early, after {} complete events (truncated body)",
                self.stats.events
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    /// Feeds `data` in pieces of `chunk` bytes.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn collect(body: &[u8], chunk: usize) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        read_events(Chunked { data: body, chunk }, |e: &[u8]| {
            events.push(String::from_utf8(e.to_vec()).unwrap());
            Ok::<_, String>(())
        })
        .map_err(|e| e.to_string())?;
        Ok(events)
    }

    const SAMPLE: &str = r#" [ {"a":1,"s":"x}]\"{["}, {"b":{"c":[1,{"d":"\\"}]}} ,{}]
"#;

    #[test]
    fn splits_plain_and_gzip_at_any_chunk_size() {
        let want = vec![
            r#"{"a":1,"s":"x}]\"{["}"#.to_string(),
            r#"{"b":{"c":[1,{"d":"\\"}]}}"#.to_string(),
            "{}".to_string(),
        ];
        let gz = gzip(SAMPLE.as_bytes());
        for chunk in [1, 2, 3, 7, 64, 1 << 20] {
            assert_eq!(
                collect(SAMPLE.as_bytes(), chunk).unwrap(),
                want,
                "plain {chunk}"
            );
            assert_eq!(collect(&gz, chunk).unwrap(), want, "gzip {chunk}");
        }
    }

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
    fn empty_array_is_fine_but_empty_body_is_not() {
        assert_eq!(collect(b"[]", 1).unwrap().len(), 0);
        assert_eq!(collect(&gzip(b" [ ] \n"), 1).unwrap().len(), 0);
        assert!(collect(b"", 1).unwrap_err().contains("empty"));
        assert!(collect(&gzip(b""), 1).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let plain = SAMPLE.trim_end().as_bytes();
        for cut in 0..plain.len() {
            assert!(collect(&plain[..cut], 3).is_err(), "plain cut at {cut}");
        }
        let gz = gzip(SAMPLE.as_bytes());
        for cut in 0..gz.len() {
            assert!(collect(&gz[..cut], 3).is_err(), "gzip cut at {cut}");
        }
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
    fn rejects_wrong_shapes() {
        assert!(collect(b"{}", 1).is_err());
        assert!(
            collect(b"[1]", 1)
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(collect(b"[{},]", 1).is_err());
        assert!(collect(b"[{} {}]", 1).is_err());
        assert!(collect(b"<html>", 1).is_err());
    }

    #[test]
    fn counts_events_and_bytes() {
        let stats = read_events(SAMPLE.as_bytes(), |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(stats.events, 3);
        assert_eq!(stats.json_bytes, SAMPLE.len() as u64);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use proptest::prelude::*;
    use std::io::Write;

    /// Reads `data` in the given chunk sizes, cycling through them.
    struct Chunks<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        at: usize,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.at % self.sizes.len()];
            self.at += 1;
            let n = size.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn gzip_members(data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for p in points.into_iter().chain([data.len()]) {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(&data[from..p]).unwrap();
            out.extend(enc.finish().unwrap());
            from = p;
        }
        out
    }

    fn json_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 _]{0,12}",
            "\\PC{0,8}",
            Just(String::from(
                "quote \" backslash \\ brace } bracket ] \n\u{1}"
            )),
        ]
        .prop_map(|s| serde_json::to_string(&s).unwrap())
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            json_string(),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("0.1234567890123456789".to_string()),
            Just("-1e400".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec((json_string(), inner), 0..4).prop_map(|kv| {
                    let body: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k} : {v}")).collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
    }

    fn event() -> impl Strategy<Value = String> {
        prop::collection::vec((json_string(), json_value()), 0..6).prop_map(|kv| {
            let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", body.join(",\n "))
        })
    }

    fn body_of(events: &[String], ws: &str) -> Vec<u8> {
        format!("{ws}[{ws}{}{ws}]{ws}", events.join(&format!("{ws},{ws}"))).into_bytes()
    }

    fn read_all(body: &[u8], sizes: Vec<usize>) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        read_events(
            Chunks {
                data: body,
                sizes,
                at: 0,
            },
            |e: &[u8]| {
                out.push(e.to_vec());
                Ok::<_, String>(())
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn events_come_out_exactly_as_they_went_in(
            events in prop::collection::vec(event(), 0..12),
            ws in prop_oneof![Just(""), Just(" "), Just("\n\t ")],
            sizes in prop::collection::vec(1usize..300, 1..5),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
            gz in any::<bool>(),
        ) {
            let plain = body_of(&events, ws);
            let body = if gz { gzip_members(&plain, &cuts) } else { plain };
            let got = read_all(&body, sizes).unwrap();
            let want: Vec<Vec<u8>> = events.iter().map(|e| e.clone().into_bytes()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn any_truncation_is_an_error(
            events in prop::collection::vec(event(), 1..8),
            sizes in prop::collection::vec(1usize..300, 1..5),
            cuts in prop::collection::vec(any::<usize>(), 0..3),
            cut in any::<prop::sample::Index>(),
        ) {
            let plain = body_of(&events, " ");
            // Plain JSON: any cut before the closing bracket.
            let close = plain.iter().rposition(|b| *b == b']').unwrap();
            let at = cut.index(close + 1);
            prop_assert!(read_all(&plain[..at], sizes.clone()).is_err(), "plain cut at {}", at);
            // Gzip: any cut at all loses a trailer.
            let gz = gzip_members(&plain, &cuts);
            let at = cut.index(gz.len());
            prop_assert!(read_all(&gz[..at], sizes).is_err(), "gzip cut at {}", at);
        }
    }
}
