//! The body reader: a unit's body in, the raw bytes of each record out, the body proven complete.
//!
//! Two layers meet here. `gzip` sniffs the body (plain, gzip, several gzip
//! members, or gzip inside gzip) and inflates it on a thread of its own,
//! handing over large blocks; a splitter for the body's [`Format`] cuts those
//! blocks into records: `json_array` for a top-level JSON array of objects
//! (what FullStory sends), `ndjson` for one JSON object per line.
//!
//! Completeness is the point: a body only counts as read when every gzip
//! member's CRC and length trailer checked out and the format's own end was
//! seen (for a JSON array: closed, with nothing but whitespace after it).
//! Anything short of that is an error, so a truncated download can never pass
//! for a smaller unit.

mod gzip;
mod json_array;
mod ndjson;

use std::io::{self, BufRead, Read};

/// No single event may exceed this: FullStory's are kilobytes, so a bigger
/// one means a corrupt or hostile body. It also bounds memory: shaping one
/// record holds it about three times over.
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// How events are laid out in a (decompressed) body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A top-level JSON array of objects: `[{..}, {..}]`.
    #[default]
    JsonArray,
    /// Newline-delimited JSON: one object per line.
    Ndjson,
}

/// Figures from reading one body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Events in the body.
    pub events: u64,
    /// Bytes of JSON after decompression.
    pub json_bytes: u64,
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The body has nothing in it once decompressed.
    Empty,
    /// The body is not complete, well-formed input of its format.
    Format(String),
    /// Reading or decompressing failed (truncated gzip, bad CRC, transport error).
    Io(io::Error),
    /// The per-event callback failed on event number `event` (from 1),
    /// which starts at byte `at` of the (decompressed) body.
    Sink { event: u64, at: u64, error: E },
}

impl<E: std::fmt::Display> std::fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Empty => f.write_str("the body is empty"),
            ReadError::Format(why) => f.write_str(why),
            ReadError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "the body ended early ({e})")
            }
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Sink { event, at, error } => {
                write!(
                    f,
                    "{error} (record {event} starts at byte {at} of the JSON)"
                )
            }
        }
    }
}

/// Calls `on_event` with the bytes of each event of a JSON array body, in
/// order, and returns the counts once the whole body has been read and
/// verified. The same as [`read_events_as`] with [`Format::JsonArray`].
pub fn read_events<R, E>(
    input: R,
    on_event: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<ReadStats, ReadError<E>>
where
    R: Read + Send,
{
    read_events_as(input, Format::JsonArray, on_event)
}

/// Calls `on_event` with the bytes of each event of a body in `format`, in
/// order, and returns the counts once the whole body has been read and
/// verified.
///
/// Decompression runs on a thread of its own and hands over large blocks, so
/// inflating and parsing use both cores.
pub fn read_events_as<R, E>(
    input: R,
    format: Format,
    on_event: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<ReadStats, ReadError<E>>
where
    R: Read + Send,
{
    match format {
        Format::JsonArray => split(input, json_array::Splitter::default(), on_event),
        Format::Ndjson => split(input, ndjson::Splitter::default(), on_event),
    }
}

/// What a format's splitter does with the decompressed blocks.
trait Split {
    /// Takes the next piece of the body, calling `on_event` for each event
    /// that piece completes.
    fn feed<E>(
        &mut self,
        buf: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ReadError<E>>;

    /// Called at the end of the body: the counts, or why the body is not
    /// complete.
    fn finish<E>(
        self,
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<ReadStats, ReadError<E>>;
}

/// Runs the inflating thread and feeds its blocks to `splitter`.
fn split<R, S, E>(
    input: R,
    mut splitter: S,
    mut on_event: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<ReadStats, ReadError<E>>
where
    R: Read + Send,
    S: Split,
{
    std::thread::scope(|scope| {
        let mut reader = gzip::BlockReader::spawn(scope, input);
        loop {
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            };
            if buf.is_empty() {
                return splitter.finish(&mut on_event);
            }
            let len = buf.len();
            splitter.feed(buf, &mut on_event)?;
            reader.consume(len);
        }
    })
}

/// The start of some bytes as a short quoted line, for errors about a body
/// that is something else than expected (an HTML error page, say).
fn quote_start(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let mut line = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if !(c == ' ' && line.ends_with(' ')) {
            line.push(c);
        }
    }
    let more = if bytes.len() > MAX { "..." } else { "" };
    format!("\"{}{more}\"", line.trim_end().replace('"', "'"))
}

/// Helpers shared by the reader's unit tests.
#[cfg(test)]
mod testkit {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    /// Feeds `data` in pieces of `chunk` bytes.
    pub struct Chunked<'a> {
        pub data: &'a [u8],
        pub chunk: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    pub fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    pub fn collect(body: &[u8], chunk: usize) -> Result<Vec<String>, String> {
        collect_as(body, Format::JsonArray, chunk)
    }

    pub fn collect_as(body: &[u8], format: Format, chunk: usize) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        read_events_as(Chunked { data: body, chunk }, format, |e: &[u8]| {
            events.push(String::from_utf8(e.to_vec()).unwrap());
            Ok::<_, String>(())
        })
        .map_err(|e| e.to_string())?;
        Ok(events)
    }

    pub const SAMPLE: &str = r#" [ {"a":1,"s":"x}]\"{["}, {"b":{"c":[1,{"d":"\\"}]}} ,{}]
"#;
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
        gzip_members_ending(data, cuts).0
    }

    /// Gzip members, and where each one ends: (in the gzip, in `data`).
    fn gzip_members_ending(data: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut ends = Vec::new();
        let mut from = 0;
        for p in points.into_iter().chain([data.len()]) {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(&data[from..p]).unwrap();
            out.extend(enc.finish().unwrap());
            ends.push((out.len(), p));
            from = p;
        }
        (out, ends)
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

    /// An event object whose members are joined by `sep`.
    fn event_with(sep: &'static str) -> impl Strategy<Value = String> {
        prop::collection::vec((json_string(), json_value()), 0..6).prop_map(move |kv| {
            let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", body.join(sep))
        })
    }

    fn event() -> impl Strategy<Value = String> {
        event_with(",\n ")
    }

    /// An event on one line, as NDJSON needs it.
    fn line_event() -> impl Strategy<Value = String> {
        event_with(", ")
    }

    fn body_of(events: &[String], ws: &str) -> Vec<u8> {
        format!("{ws}[{ws}{}{ws}]{ws}", events.join(&format!("{ws},{ws}"))).into_bytes()
    }

    /// NDJSON with `eol` after each line (also the last when `last_eol`),
    /// and a blank line of `blank` after every event that has one.
    fn ndjson_of(events: &[String], eol: &str, blank: &[bool], last_eol: bool) -> Vec<u8> {
        let mut out = String::new();
        for (i, e) in events.iter().enumerate() {
            out.push_str(e);
            if i + 1 < events.len() || last_eol {
                out.push_str(eol);
            }
            if blank.get(i).copied().unwrap_or(false) && (i + 1 < events.len() || last_eol) {
                out.push_str(" \t");
                out.push_str(eol);
            }
        }
        out.into_bytes()
    }

    fn read_all(body: &[u8], sizes: Vec<usize>) -> Result<Vec<Vec<u8>>, String> {
        read_all_as(body, Format::JsonArray, sizes)
    }

    fn read_all_as(body: &[u8], format: Format, sizes: Vec<usize>) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        read_events_as(
            Chunks {
                data: body,
                sizes,
                at: 0,
            },
            format,
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
            // Gzip: any cut loses a trailer, unless it falls between two
            // members after the whole array (a cut point at the very end
            // leaves an empty last member, and the body before it is whole).
            let (gz, ends) = gzip_members_ending(&plain, &cuts);
            let at = cut.index(gz.len());
            let whole = ends.iter().any(|&(gz_end, p)| gz_end == at && p == plain.len());
            let got = read_all(&gz[..at], sizes);
            if whole {
                prop_assert_eq!(got.unwrap().len(), events.len(), "gzip cut at {}", at);
            } else {
                prop_assert!(got.is_err(), "gzip cut at {}", at);
            }
        }

        #[test]
        fn ndjson_events_come_out_exactly_as_they_went_in(
            events in prop::collection::vec(line_event(), 1..12),
            eol in prop_oneof![Just("\n"), Just("\r\n")],
            blank in prop::collection::vec(any::<bool>(), 0..12),
            last_eol in any::<bool>(),
            sizes in prop::collection::vec(1usize..300, 1..5),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
            gz in any::<bool>(),
        ) {
            let plain = ndjson_of(&events, eol, &blank, last_eol);
            let body = if gz { gzip_members(&plain, &cuts) } else { plain };
            let got = read_all_as(&body, Format::Ndjson, sizes).unwrap();
            let want: Vec<Vec<u8>> = events.iter().map(|e| e.clone().into_bytes()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn any_truncation_of_gzip_ndjson_is_an_error(
            events in prop::collection::vec(line_event(), 1..8),
            sizes in prop::collection::vec(1usize..300, 1..5),
            cuts in prop::collection::vec(any::<usize>(), 0..3),
            cut in any::<prop::sample::Index>(),
        ) {
            // Only the gzip trailers can prove NDJSON whole: any cut is an
            // error unless it falls between two members and next to a line
            // end, where the members before are a whole, shorter body.
            let plain = ndjson_of(&events, "\n", &[], true);
            let (gz, ends) = gzip_members_ending(&plain, &cuts);
            let at = cut.index(gz.len());
            let got = read_all_as(&gz[..at], Format::Ndjson, sizes);
            let whole = ends.iter().find(|(gz_end, _)| *gz_end == at).map(|(_, p)| *p);
            match whole {
                Some(p) if p > 0 && (plain[p - 1] == b'\n' || plain[p] == b'\n') => {
                    let lines = plain[..p].split(|b| *b == b'\n').filter(|l| !l.is_empty());
                    let want: Vec<Vec<u8>> = lines.map(<[u8]>::to_vec).collect();
                    prop_assert_eq!(got.unwrap(), want, "gzip cut at {}", at);
                }
                // Between two members inside a line: the reader cannot tell
                // a cut line from a whole one, but the cut line is never a
                // JSON object, so the shaper's parse refuses it.
                Some(p) => {
                    if let Ok(got) = got {
                        let last = got.last().expect("a cut line comes out as an event");
                        prop_assert!(serde_json::from_slice::<serde_json::Value>(last).is_err(), "gzip cut at {}", at);
                        prop_assert!(plain[..p].ends_with(last));
                    }
                }
                None => prop_assert!(got.is_err(), "gzip cut at {}", at),
            }
        }
    }
}
