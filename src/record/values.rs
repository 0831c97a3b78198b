//! Value checks: whether a field's JSON text is kept as it is, moved to ExtraFields or rewritten.

use crate::catalog::FieldKind;
use crate::time::is_rfc3339;

/// Whether a value's JSON text has the type the schema declares (null always does).
pub(super) fn fits(kind: FieldKind, value: &[u8]) -> bool {
    let Some(&first) = value.first() else {
        return false;
    };
    if first == b'n' {
        return true;
    }
    match kind {
        FieldKind::Integer => {
            (first == b'-' || first.is_ascii_digit())
                && !value.iter().any(|b| matches!(b, b'.' | b'e' | b'E'))
                && integer_fits(value)
        }
        FieldKind::Number => (first == b'-' || first.is_ascii_digit()) && number_fits(value),
        FieldKind::String => first == b'"',
        FieldKind::DateTime => {
            first == b'"'
                && if value.contains(&b'\\') {
                    let mut text = Vec::new();
                    canonical_into(value, &mut text);
                    is_rfc3339(&text)
                } else {
                    is_rfc3339(&value[1..value.len() - 1])
                }
        }
        FieldKind::Boolean => first == b't' || first == b'f',
        FieldKind::Object => first == b'{',
        FieldKind::Array => first == b'[',
    }
}

/// How deep a value may nest and still be written as JSON. serde_json refuses
/// lines nested past 128 levels by default (Python and Jackson stop near
/// 1000); the RECORD envelope adds three levels and loaders often wrap a row
/// in one or two more, so 64 leaves half of the tightest limit spare. Real
/// event values nest one or two levels.
pub const MAX_DEPTH: usize = 64;

/// Whether an integer's text fits in an `i64`. Out of that range is what a
/// target cannot hold: a Postgres `bigint` and a Java `long` are signed 64-bit,
/// so `u64` values above `i64::MAX` do not fit either.
pub(super) fn integer_fits(text: &[u8]) -> bool {
    // The text is a valid JSON integer (no leading zeros), so below nineteen
    // digits it fits, above it does not, and at nineteen comparing digits
    // compares values. This runs for every id of every event.
    let (digits, limit): (&[u8], &[u8]) = match text {
        [b'-', rest @ ..] => (rest, b"9223372036854775808"),
        _ => (text, b"9223372036854775807"),
    };
    digits.len() < limit.len() || (digits.len() == limit.len() && digits <= limit)
}

/// Whether a number's text is a finite `f64` (`1e400` is not: targets turn
/// it into Infinity, which is not JSON).
fn number_fits(text: &[u8]) -> bool {
    // Without an exponent, 300 characters cannot reach f64::MAX (about 1.8e308).
    (text.len() <= 300 && !text.iter().any(|b| (b | 0x20) == b'e'))
        || std::str::from_utf8(text).is_ok_and(|t| t.parse::<f64>().is_ok_and(f64::is_finite))
}

/// Whether a JSON number token is one every target can hold: an integer in
/// `i64` range, or any other number that is a finite `f64`.
pub(super) fn number_token_fits(text: &[u8]) -> bool {
    // Short integers, the usual case, fit without looking at their bytes.
    if text.len() <= 18 {
        return !text.iter().any(|b| (b | 0x20) == b'e') || number_fits(text);
    }
    if text.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        number_fits(text)
    } else {
        integer_fits(text)
    }
}

/// Whether a value's JSON text is an array (or null) whose every element
/// has the type `kind` declares: no nulls, nothing nested.
pub(super) fn elements_fit(kind: FieldKind, v: &[u8]) -> bool {
    match v.first() {
        Some(b'n') => return true,
        Some(b'[') => {}
        _ => return false,
    }
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut i = 1;
    loop {
        while i < v.len() && is_space(v[i]) {
            i += 1;
        }
        let Some(&b) = v.get(i) else { return false };
        let end = match b {
            b']' => return true,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => string_end(v, i + 1),
            b'-' | b'0'..=b'9' => number_end(v, i),
            b't' => i + 4,
            b'f' => i + 5,
            // null, or a nested array or object: not an element of a list
            // of one type.
            _ => return false,
        };
        if end > v.len() || !fits(kind, &v[i..end]) {
            return false;
        }
        i = end;
    }
}

/// What a nested value (object or array) needs before it can be written.
#[derive(Debug, PartialEq)]
pub(super) enum Nested {
    /// Nothing: copy it as it is.
    Fine,
    /// Deeper than [`MAX_DEPTH`]: write its text as a string.
    TooDeep,
    /// Holds numbers no target can hold, or line breaks between its tokens
    /// (a pretty-printed value, which would split the RECORD line): write
    /// it again with [`rewrite_nested`].
    Rewrite,
}

/// Index just past the string whose opening quote is before `i`.
fn string_end(v: &[u8], mut i: usize) -> usize {
    while let Some(k) = memchr::memchr2(b'"', b'\\', &v[i..]) {
        if v[i + k] == b'"' {
            return i + k + 1;
        }
        i += k + 2;
        if i >= v.len() {
            break;
        }
    }
    v.len()
}

/// Index just past the number token starting at `i`.
fn number_end(v: &[u8], i: usize) -> usize {
    i + v[i..]
        .iter()
        .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .count()
}

/// One pass over a nested value's (valid) JSON text: its depth and numbers.
pub(super) fn scan_nested(v: &[u8]) -> Nested {
    let mut depth = 0usize;
    let mut bad = false;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'"' => {
                i = string_end(v, i + 1);
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Nested::TooDeep;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let end = number_end(v, i);
                bad |= !number_token_fits(&v[i..end]);
                i = end;
                continue;
            }
            // Outside strings, as here, a line break can only be whitespace.
            b'\n' | b'\r' => bad = true,
            _ => {}
        }
        i += 1;
    }
    if bad { Nested::Rewrite } else { Nested::Fine }
}

/// Copies a nested value to `out` with each number no target can hold
/// written as a string of its exact text, and each line break between its
/// tokens written as a space; returns how many numbers were quoted.
pub(super) fn rewrite_nested(v: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut quoted = 0;
    let mut copied = 0;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'"' => i = string_end(v, i + 1),
            b'-' | b'0'..=b'9' => {
                let end = number_end(v, i);
                if !number_token_fits(&v[i..end]) {
                    out.extend_from_slice(&v[copied..i]);
                    out.push(b'"');
                    out.extend_from_slice(&v[i..end]);
                    out.push(b'"');
                    copied = end;
                    quoted += 1;
                }
                i = end;
            }
            b'\n' | b'\r' => {
                out.extend_from_slice(&v[copied..i]);
                out.push(b' ');
                i += 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.extend_from_slice(&v[copied..]);
    quoted
}

/// The UTF-16 code unit of the four hex digits at the start of `b`.
fn hex_unit(b: &[u8]) -> Option<u16> {
    let digits = b.get(..4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

/// Copies `event` to `out` with each `\u` escape of a lone surrogate (a
/// high one not followed by a low one, or a low one on its own) replaced by
/// `\ufffd`; returns how many. Writes nothing when there are none.
pub(super) fn replace_lone_surrogates(event: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut replaced = 0;
    let mut copied = 0;
    let mut i = 0;
    while let Some(rest) = event.get(i..) {
        let Some(k) = memchr::memchr(b'\\', rest) else {
            break;
        };
        let at = i + k;
        // Skip whatever is escaped, so `\\ud800` is left alone.
        i = at + 2;
        // Only `\uD800` to `\uDFFF` are surrogates: most `\u` escapes are
        // told apart by their first two hex digits without decoding.
        if event.get(at + 1) != Some(&b'u')
            || event.get(at + 2).map(|b| b | 0x20) != Some(b'd')
            || !matches!(
                event.get(at + 3),
                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            )
        {
            continue;
        }
        let Some(unit) = event.get(at + 2..).and_then(hex_unit) else {
            continue;
        };
        i = at + 6;
        let lone = match unit {
            0xD800..=0xDBFF => {
                let low = event.get(at + 6..at + 8) == Some(b"\\u")
                    && event
                        .get(at + 8..)
                        .and_then(hex_unit)
                        .is_some_and(|u| (0xDC00..=0xDFFF).contains(&u));
                if low {
                    i = at + 12;
                }
                !low
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            out.extend_from_slice(&event[copied..at]);
            out.extend_from_slice(b"\\ufffd");
            copied = at + 6;
            replaced += 1;
        }
    }
    if replaced > 0 {
        out.extend_from_slice(&event[copied..]);
    }
    replaced
}

/// The value as compared for identity: a string's decoded text, or the raw
/// JSON text of anything else, so the key does not depend on how a string
/// happened to be escaped.
pub(super) fn canonical_into(value: &[u8], out: &mut Vec<u8>) {
    if value.first() == Some(&b'"') {
        if !value.contains(&b'\\') {
            out.extend_from_slice(&value[1..value.len() - 1]);
            return;
        }
        if let Ok(text) = serde_json::from_slice::<String>(value) {
            out.extend_from_slice(text.as_bytes());
            return;
        }
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{shape, shaper};
    use serde_json::Value;

    #[test]
    fn mistyped_values_move_to_extra_fields() {
        let mut s = shaper();
        let (_, v) = shape(
            &mut s,
            r#"{"UserId":"abc","EventStart":"2020-08-27 06:20","PageDuration":1.5,"ReqStatus":null}"#,
        );
        let rec = &v["record"];
        assert!(rec.get("UserId").is_none() && rec.get("EventStart").is_none());
        assert_eq!(rec["ReqStatus"], Value::Null);
        assert_eq!(rec["ExtraFields"]["UserId"], "abc");
        assert_eq!(rec["ExtraFields"]["EventStart"], "2020-08-27 06:20");
        assert_eq!(rec["ExtraFields"]["PageDuration"], 1.5);
    }

    #[test]
    fn impossible_dates_move_to_extra_fields() {
        let (_, v) = shape(
            &mut shaper(),
            r#"{"EventStart":"2023-13-45T99:99:99Z","PageStart":"2023-02-29T00:00:00Z","SessionStart":"2024-02-29T00:00:00\u005a"}"#,
        );
        let rec = &v["record"];
        assert!(rec.get("EventStart").is_none() && rec.get("PageStart").is_none());
        assert_eq!(rec["ExtraFields"]["EventStart"], "2023-13-45T99:99:99Z");
        assert_eq!(rec["ExtraFields"]["PageStart"], "2023-02-29T00:00:00Z");
        assert_eq!(rec["SessionStart"], "2024-02-29T00:00:00Z");
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let mut s = shaper();
        let (line, v) = shape(
            &mut s,
            r#"{"PageName":"x\ud800y","EventTargetText":"a\uDBFF\u0041 \ud83d\ude00 \\ud800 \udc00","k\udfff":{"n":["\ud800\ud800\udc00"]},"evt_end":"\ud83d"}"#,
        );
        assert!(line.contains(r#""PageName":"x\ufffdy""#), "{line}");
        assert!(line.contains(r#""EventTargetText":"a\ufffd\u0041 \ud83d\ude00 \\ud800 \ufffd""#));
        let extra = &v["record"]["ExtraFields"];
        assert_eq!(
            extra["k\u{fffd}"],
            serde_json::json!({"n": ["\u{fffd}\u{10000}"]})
        );
        assert_eq!(extra["evt_end"], "\u{fffd}");
        assert_eq!(s.finish_unit("bundle").surrogates, 6);
        // Nothing to replace: nothing written.
        let mut out = Vec::new();
        let ok = br#"{"a":"\ud83d\ude00 \u00e9 \\u","b":"\\"}"#;
        assert_eq!(replace_lone_surrogates(ok, &mut out), 0);
        assert!(out.is_empty());
        // Cut short escapes are left for the parser to reject.
        for (cut, lone) in [
            (&br"\u"[..], 0),
            (br"\ud8", 0),
            (br"\", 0),
            (br"\ud800\u", 1),
            (br"\ud800\udc0", 1),
        ] {
            assert_eq!(replace_lone_surrogates(cut, &mut out), lone);
        }
    }

    #[test]
    fn line_breaks_inside_a_nested_value_become_spaces_so_the_record_stays_one_line() {
        let mut s = shaper();
        // Pretty-printed values, in ExtraFields and in a field of the schema
        // (the events schema has no object field, so a wrong-typed one goes
        // to ExtraFields too); a "\n" escape inside a string stays.
        let event = "{\"UserId\":1,\"evt_obj\":{\"a\":\r\n 1,\n \"s\":\"x\\ny\",\n\"b\":[1,\n2]},\"PageName\":[\"p\",\n\"q\"]}";
        let (line, v) = shape(&mut s, event);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with('\n'));
        let extra = &v["record"]["ExtraFields"];
        assert_eq!(
            extra["evt_obj"],
            serde_json::json!({"a": 1, "s": "x\ny", "b": [1, 2]})
        );
        assert_eq!(extra["PageName"], serde_json::json!(["p", "q"]));
        // Only the line breaks change: the rest keeps its bytes.
        assert!(
            line.contains(r#""evt_obj":{"a":   1,  "s":"x\ny", "b":[1, 2]}"#),
            "{line}"
        );
        assert_eq!(s.finish_unit("bundle").numbers_as_text, 0);
    }

    #[test]
    fn too_deep_values_become_strings_of_their_text() {
        let mut s = shaper();
        // At the limit the value is copied as it is.
        let ok = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let (line, _) = shape(&mut s, &format!(r#"{{"evt_ok":{ok},"UserId":1}}"#));
        assert!(line.contains(&format!(r#"{{"evt_ok":{ok}}}"#)));
        assert_eq!(s.finish_unit("bundle").too_deep, 0);
        // Past it (even far past it) the whole value becomes a string of its
        // text, which a parser with serde_json's default limit of 128 reads.
        for levels in [MAX_DEPTH + 1, 10_000] {
            let deep = format!(
                r#"{}{{"a":"]\"[","n":1e999}}{}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            );
            let event = format!(r#"{{"evt_deep":{deep},"UserId":[{deep}]}}"#);
            let (_, v) = shape(&mut s, &event);
            let extra = &v["record"]["ExtraFields"];
            assert_eq!(extra["evt_deep"].as_str(), Some(deep.as_str()));
            assert_eq!(extra["UserId"].as_str(), Some(format!("[{deep}]").as_str()));
        }
        assert_eq!(s.finish_unit("bundle").too_deep, 4);
        // Brackets inside strings do not count.
        let text = format!(r#"["{}"]"#, "[".repeat(1000));
        assert_eq!(scan_nested(text.as_bytes()), Nested::Fine);
    }

    #[test]
    fn numbers_targets_cannot_hold_are_kept_as_text() {
        let mut s = shaper();
        let (line, v) = shape(
            &mut s,
            r#"{"UserId":9223372036854775808,"SessionId":-9223372036854775808,"PageId":123456789012345678901234567890,"EventCumulativeLayoutShift":1e400,"PageDuration":9223372036854775807,"evt_big_int":123456789012345678901234567890,"evt_huge_real":-1.5E+309,"evt_ok_real":1e300,"evt_ok_int":-9223372036854775808,"evt_obj":{"a":[1,18446744073709551616,"99999999999999999999",2.5e-400,{"b":1e400}],"c":0.1}}"#,
        );
        let rec = &v["record"];
        let extra = &rec["ExtraFields"];
        assert!(rec.get("UserId").is_none() && rec.get("PageId").is_none());
        assert!(rec.get("EventCumulativeLayoutShift").is_none());
        assert!(line.contains(r#""SessionId":-9223372036854775808,"#));
        assert!(line.contains(r#""PageDuration":9223372036854775807,"#));
        assert_eq!(extra["UserId"], "9223372036854775808");
        assert_eq!(extra["PageId"], "123456789012345678901234567890");
        assert_eq!(extra["EventCumulativeLayoutShift"], "1e400");
        assert_eq!(extra["evt_big_int"], "123456789012345678901234567890");
        assert_eq!(extra["evt_huge_real"], "-1.5E+309");
        assert!(line.contains(r#""evt_ok_real":1e300,"evt_ok_int":-9223372036854775808,"#));
        // Inside nested values only the offending numbers change.
        assert!(line.contains(
            r#""evt_obj":{"a":[1,"18446744073709551616","99999999999999999999",2.5e-400,{"b":"1e400"}],"c":0.1}"#
        ));
        assert_eq!(s.finish_unit("bundle").numbers_as_text, 7);
        for (text, fits) in [
            ("0", true),
            ("-0", true),
            ("999999999999999999", true),
            ("9223372036854775807", true),
            ("-9223372036854775809", false),
            ("18446744073709551615", false),
            ("1.7976931348623157e308", true),
            ("1.8e308", false),
            ("1e-999", true),
        ] {
            assert_eq!(number_token_fits(text.as_bytes()), fits, "{text}");
        }
        let long = format!("1{}.5", "0".repeat(400));
        assert!(!number_token_fits(long.as_bytes()));
    }
}
