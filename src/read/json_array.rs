//! The splitter of a top-level JSON array of objects into the bytes of each event.

use super::{MAX_EVENT_BYTES, ReadError, ReadStats, Split, quote_start};

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
pub(super) struct Splitter {
    place: Place,
    depth: u32,
    in_string: bool,
    /// The previous chunk ended on a backslash inside a string.
    escape: bool,
    event: Vec<u8>,
    /// Where the current event starts in the JSON.
    event_at: u64,
    stats: ReadStats,
    /// The very first bytes may be a UTF-8 byte order mark.
    bom_checked: bool,
}

impl Split for Splitter {
    fn feed<E>(
        &mut self,
        mut buf: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), ReadError<E>> {
        // Where `buf` starts in the JSON, for errors.
        let mut base = self.stats.json_bytes;
        self.stats.json_bytes += buf.len() as u64;
        if !self.bom_checked {
            self.bom_checked = true;
            if let Some(rest) = buf.strip_prefix(b"\xEF\xBB\xBF") {
                buf = rest;
                base += 3;
            }
        }
        let mut i = 0;
        while i < buf.len() {
            if self.place == Place::InEvent {
                i = self.scan_event(buf, i)?;
                if self.place != Place::InEvent {
                    on_event(&self.event).map_err(|error| ReadError::Sink {
                        event: self.stats.events + 1,
                        at: self.event_at,
                        error,
                    })?;
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
            let at = base + i as u64;
            self.place = match (self.place, c) {
                (Place::BeforeArray, b'[') => Place::ArrayStart,
                (Place::BeforeArray, _) => {
                    return Err(ReadError::Format(format!(
                        "the body is not a JSON array: it starts with {}",
                        quote_start(&buf[i..])
                    )));
                }
                (Place::ArrayStart, b']') | (Place::AfterEvent, b']') => Place::Done,
                (Place::ArrayStart, b'{') | (Place::AfterComma, b'{') => {
                    self.depth = 0;
                    self.event_at = at;
                    Place::InEvent
                }
                (Place::ArrayStart | Place::AfterComma, _) => {
                    return Err(ReadError::Format(format!(
                        "record {} is not a JSON object (starts with {:?} at byte {at} of the JSON)",
                        self.stats.events + 1,
                        char::from(c)
                    )));
                }
                (Place::AfterEvent, b',') => Place::AfterComma,
                (Place::AfterEvent, _) => return Err(self.unexpected(c, at, "',' or ']'")),
                (Place::Done, _) => {
                    return Err(self.unexpected(c, at, "nothing after the closing ']'"));
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

    fn finish<E>(
        self,
        _on_event: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<ReadStats, ReadError<E>> {
        match self.place {
            Place::Done => Ok(self.stats),
            Place::BeforeArray if self.stats.json_bytes == 0 => Err(ReadError::Empty),
            _ => Err(ReadError::Format(format!(
                "the JSON array ends early, after {} complete events (truncated body)",
                self.stats.events
            ))),
        }
    }
}

impl Splitter {
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
                "record {} is larger than {} MiB, far beyond any FullStory record; the body is corrupt",
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

    fn unexpected<E>(&self, c: u8, at: u64, wanted: &str) -> ReadError<E> {
        ReadError::Format(format!(
            "expected {wanted} after {} events but found {:?} at byte {at} of the JSON",
            self.stats.events,
            char::from(c)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::read_events;
    use super::super::testkit::{SAMPLE, collect, gzip};

    #[test]
    fn a_body_that_is_not_json_is_quoted() {
        let page = b"\n<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>\n";
        let err = collect(page, 9).unwrap_err();
        assert_eq!(
            err,
            "the body is not a JSON array: it starts with \"<!DOCTYPE html> <html><head><title>502 Bad Gateway</title></head> <body>nginx</b...\""
        );
        let err = collect(&gzip(br#"{"code":"unavailable"}"#), 3).unwrap_err();
        assert!(
            err.ends_with(r#"starts with "{'code':'unavailable'}""#),
            "{err}"
        );
    }

    #[test]
    fn errors_say_which_event_and_byte() {
        let err = read_events(&b"[{},\n {\"a\":1}]"[..], |e: &[u8]| {
            if e.len() > 2 {
                Err("bad value")
            } else {
                Ok(())
            }
        })
        .unwrap_err()
        .to_string();
        assert_eq!(err, "bad value (record 2 starts at byte 6 of the JSON)");
        let err = collect(b"[{} {}]", 2).unwrap_err();
        assert!(err.contains("found '{' at byte 4 of the JSON"), "{err}");
        let err = collect(b"\xEF\xBB\xBF[{},1]", 2).unwrap_err();
        assert!(
            err.contains("record 2") && err.contains("at byte 7 of the JSON"),
            "{err}"
        );
    }

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
