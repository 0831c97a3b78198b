//! The splitter of NDJSON (one event object per line) into the bytes of each event.
//!
//! Lines end in `\n` or `\r\n`; the last may have no line end. Blank lines
//! are skipped and a UTF-8 byte order mark may open the body. Each line is
//! handed on exactly as it is, without its line end; like the array splitter
//! this only checks the shape (a line starts with `{` and ends with `}`), the
//! JSON parser the bytes go to checks the rest.
//!
//! Unlike a JSON array, NDJSON has no end of its own: a body cut off right
//! after a line end reads as a complete body with fewer events. Only the gzip
//! trailers (each member's CRC and length) prove an NDJSON body whole, so a
//! plain NDJSON body is only as trustworthy as the transport that carried it.

use super::{MAX_EVENT_BYTES, ReadError, ReadStats, Split};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An incremental NDJSON splitter. Lines that lie whole inside one block go
/// to the callback straight from it; only a line spanning blocks is copied.
#[derive(Debug, Default)]
pub(super) struct Splitter {
    /// The start of a line the previous blocks ended inside.
    partial: Vec<u8>,
    /// Lines seen so far, for error messages.
    lines: u64,
    /// Where the current line starts in the body.
    line_at: u64,
    stats: ReadStats,
}

impl Split for Splitter {
    fn feed<E>(
        &mut self,
        buf: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ReadError<E>> {
        let base = self.stats.json_bytes;
        self.stats.json_bytes += buf.len() as u64;
        let mut rest = buf;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (piece, after) = (&rest[..end], &rest[end + 1..]);
            if self.partial.is_empty() {
                self.line(piece, on_event)?;
            } else {
                self.grow(piece)?;
                let line = std::mem::take(&mut self.partial);
                let done = self.line(&line, on_event);
                self.partial = line;
                self.partial.clear();
                done?;
            }
            self.line_at = base + (buf.len() - after.len()) as u64;
            rest = after;
        }
        self.grow(rest)
    }

    fn finish<E>(
        mut self,
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<ReadStats, ReadError<E>> {
        if self.stats.json_bytes == 0 {
            return Err(ReadError::Empty);
        }
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, on_event)?;
        }
        Ok(self.stats)
    }
}

impl Splitter {
    /// Keeps the start of a line that goes on in the next block.
    fn grow<E>(&mut self, piece: &[u8]) -> Result<(), ReadError<E>> {
        if self.partial.len() + piece.len() > MAX_EVENT_BYTES {
            return Err(too_large(self.lines + 1));
        }
        self.partial.extend_from_slice(piece);
        Ok(())
    }

    /// Checks one whole line (without its `\n`) and hands it on.
    fn line<E>(
        &mut self,
        mut line: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ReadError<E>> {
        self.lines += 1;
        if let Some(text) = line.strip_suffix(b"\r") {
            line = text;
        }
        if self.lines == 1
            && let Some(text) = line.strip_prefix(BOM)
        {
            line = text;
        }
        if line.len() > MAX_EVENT_BYTES {
            return Err(too_large(self.lines));
        }
        let is_space = |c: &u8| matches!(c, b' ' | b'\t' | b'\r');
        let Some(first) = line.iter().position(|c| !is_space(c)) else {
            return Ok(());
        };
        let last = line.iter().rposition(|c| !is_space(c)).unwrap_or(first);
        if line[first] != b'{' {
            return Err(ReadError::Format(format!(
                "line {} is not a JSON object (starts with {:?})",
                self.lines,
                char::from(line[first])
            )));
        }
        if line[last] != b'}' || last == first {
            return Err(ReadError::Format(format!(
                "line {} is not a whole JSON object (ends with {:?})",
                self.lines,
                char::from(line[last])
            )));
        }
        on_event(line).map_err(|error| ReadError::Sink {
            event: self.stats.events + 1,
            at: self.line_at,
            error,
        })?;
        self.stats.events += 1;
        Ok(())
    }
}

fn too_large<E>(line: u64) -> ReadError<E> {
    ReadError::Format(format!(
        "line {line} is larger than {} MiB, far beyond any FullStory record; the body is corrupt",
        MAX_EVENT_BYTES >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Chunked, collect_as, gzip};
    use super::super::{Format, read_events_as};
    use super::*;

    /// A BOM, a CRLF line, a blank line, a line with spaces around its
    /// object, and a last line without a line end.
    const BODY: &[u8] =
        b"\xEF\xBB\xBF{\"a\":1,\"s\":\"x}\\n{\"}\r\n\n \t \r\n {\"b\":[1,{\"c\":\"\\\\\"}]} \n{}";

    fn want() -> Vec<Vec<u8>> {
        vec![
            br#"{"a":1,"s":"x}\n{"}"#.to_vec(),
            br#" {"b":[1,{"c":"\\"}]} "#.to_vec(),
            b"{}".to_vec(),
        ]
    }

    /// Feeds the splitter itself piece by piece, so the pieces are exactly
    /// the blocks it sees.
    fn split_in(pieces: &[&[u8]]) -> Result<(Vec<Vec<u8>>, ReadStats), String> {
        let mut splitter = Splitter::default();
        let mut events = Vec::new();
        let mut on_event = |e: &[u8]| {
            events.push(e.to_vec());
            Ok::<_, String>(())
        };
        for piece in pieces {
            splitter
                .feed(piece, &mut on_event)
                .map_err(|e| e.to_string())?;
        }
        let stats = splitter.finish(&mut on_event).map_err(|e| e.to_string())?;
        Ok((events, stats))
    }

    fn ndjson(body: &[u8], chunk: usize) -> Result<Vec<String>, String> {
        collect_as(body, Format::Ndjson, chunk)
    }

    #[test]
    fn splits_at_every_split_point() {
        for i in 0..=BODY.len() {
            for j in i..=BODY.len() {
                let (events, stats) = split_in(&[&BODY[..i], &BODY[i..j], &BODY[j..]])
                    .unwrap_or_else(|e| panic!("split at {i} and {j}: {e}"));
                assert_eq!(events, want(), "split at {i} and {j}");
                assert_eq!(stats.events, 3);
                assert_eq!(stats.json_bytes, BODY.len() as u64);
            }
        }
    }

    #[test]
    fn reads_plain_and_gzip_through_the_same_sniffing() {
        let want: Vec<String> = want()
            .into_iter()
            .map(|e| String::from_utf8(e).unwrap())
            .collect();
        let gz = gzip(BODY);
        let (a, b) = BODY.split_at(25);
        let mut members = gzip(a);
        members.extend(gzip(b));
        for chunk in [1, 2, 3, 7, 64, 1 << 20] {
            assert_eq!(ndjson(BODY, chunk).unwrap(), want, "plain {chunk}");
            assert_eq!(ndjson(&gz, chunk).unwrap(), want, "gzip {chunk}");
            assert_eq!(ndjson(&members, chunk).unwrap(), want, "members {chunk}");
            assert_eq!(ndjson(&gzip(&gz), chunk).unwrap(), want, "double {chunk}");
        }
    }

    #[test]
    fn line_ends_blank_lines_and_the_last_line() {
        assert_eq!(ndjson(b"{}\n{\"a\":2}\n", 1).unwrap(), ["{}", "{\"a\":2}"]);
        assert_eq!(ndjson(b"{}\r\n{\"a\":2}", 1).unwrap(), ["{}", "{\"a\":2}"]);
        assert_eq!(ndjson(b"\n\r\n \n{}\n\t\n", 1).unwrap(), ["{}"]);
        assert_eq!(ndjson(b"\xEF\xBB\xBF{}", 1).unwrap(), ["{}"]);
        // Only blank lines: a body without events.
        assert_eq!(ndjson(b"\n \r\n", 1).unwrap().len(), 0);
        assert!(ndjson(b"", 1).unwrap_err().contains("empty"));
        assert!(ndjson(&gzip(b""), 1).unwrap_err().contains("empty"));
    }

    #[test]
    fn a_line_that_is_not_an_object_is_named() {
        let err = ndjson(b"{}\n\n[1]\n{}\n", 1).unwrap_err();
        assert_eq!(err, "line 3 is not a JSON object (starts with '[')");
        let err = ndjson(b"{}\n{\"a\":\n", 1).unwrap_err();
        assert_eq!(err, "line 2 is not a whole JSON object (ends with ':')");
        assert!(ndjson(b"{\n}\n", 1).unwrap_err().contains("line 1"));
        assert!(
            ndjson(b"{}\n\xEF\xBB\xBF{}\n", 1)
                .unwrap_err()
                .contains("line 2")
        );
        assert!(ndjson(b"<html>", 1).is_err());
        // A JSON array is not NDJSON.
        assert!(ndjson(b"[{}]", 1).is_err());
    }

    #[test]
    fn every_truncation_of_gzip_is_an_error() {
        let gz = gzip(BODY);
        assert!(ndjson(&gz[..0], 3).unwrap_err().contains("empty"));
        // One byte is not yet the gzip magic, so it is read as text.
        assert!(ndjson(&gz[..1], 3).unwrap_err().contains("line 1"));
        for cut in 2..gz.len() {
            let err = ndjson(&gz[..cut], 3).unwrap_err();
            assert!(err.contains("ended early"), "gzip cut at {cut}: {err}");
        }
        // A cut inside a line of plain NDJSON shows too.
        assert!(ndjson(&BODY[..20], 3).unwrap_err().contains("line 1"));
    }

    #[test]
    fn the_callback_error_stops_the_read() {
        let mut seen = 0;
        let result = read_events_as(
            Chunked {
                data: BODY,
                chunk: 4,
            },
            Format::Ndjson,
            |_| {
                seen += 1;
                if seen == 2 { Err("full") } else { Ok(()) }
            },
        );
        assert!(matches!(
            result,
            Err(ReadError::Sink {
                event: 2,
                error: "full",
                ..
            })
        ));
        assert_eq!(seen, 2);
    }

    #[test]
    fn a_callback_error_names_where_its_line_starts() {
        for chunk in [1, 3, 100] {
            let result = read_events_as(
                Chunked {
                    data: b"{\"a\":1}\r\n\n{\"b\":2}\n",
                    chunk,
                },
                Format::Ndjson,
                |e: &[u8]| {
                    if e.starts_with(b"{\"b\"") {
                        Err("no")
                    } else {
                        Ok(())
                    }
                },
            );
            let text = result.unwrap_err().to_string();
            assert_eq!(
                text, "no (record 2 starts at byte 10 of the JSON)",
                "chunk {chunk}"
            );
        }
    }
}
