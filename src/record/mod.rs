//! Record shaping: one record's JSON in, one Singer RECORD line out.
//!
//! Values are never re-encoded: each field's JSON text is copied exactly as
//! FullStory sent it, so 64-bit IDs, long decimals and escaped strings come
//! through byte for byte. The [`Shaper`] here walks a record's keys; each
//! concept it uses has a file of its own:
//!
//! - `index`: a key's schema field, found by name;
//! - `values`: whether a value keeps its field, and what is rewritten so
//!   targets can load it;
//! - `extra`: `ExtraFields`, where keys the schema does not name, and
//!   values not of their field's type, go instead of being dropped;
//! - `key`: the `EventKey` of streams that derive one (events), from the
//!   identity fields (see [`crate::stream::IDENTITY_FIELDS`]);
//! - `parse`: reading the JSON object, and saying where one that is not
//!   valid JSON goes wrong.

mod extra;
mod index;
mod key;
mod parse;
mod property;
mod values;

pub use key::REPEAT_WINDOW;
pub use values::MAX_DEPTH;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserializer as _;
use serde_json::value::RawValue;

use crate::catalog::{FieldKind, Schema, Selection};
use crate::stream::{EXTRA_FIELD, StreamDef};
use crate::time::format_micros;
use extra::Extras;
use index::FieldIndex;
use key::{KEY_HEX_LEN, KeyMaker, write_hex};
use parse::{EventVisitor, json_error, last_of_each_key};
pub use property::Properties;
use property::{Columns, Seen, fits_property};
use values::{Nested, fits, replace_lone_surrogates, rewrite_nested, scan_nested};

/// Why one record could not be shaped.
#[derive(Debug)]
pub struct ShapeError(pub String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug)]
struct FieldSlot {
    name: String,
    kind: FieldKind,
    selected: bool,
    identity: Option<usize>,
    /// The identity field this one stands in for, where a record lacks it.
    stand_in_for: Option<usize>,
    warned: bool,
}

/// Shapes events of one stream into RECORD lines.
pub struct Shaper {
    stream: &'static StreamDef,
    slots: Vec<FieldSlot>,
    by_name: FieldIndex,
    extra_selected: bool,
    /// The event key, for streams that derive one.
    key: KeyMaker,
    extras: Extras,
    /// The table version each RECORD carries, if the stream has one.
    version: Option<u64>,
    suffix: Vec<u8>,
    /// Where the record's first field goes in the line being written.
    fields_at: usize,
    events: u64,
    warned_unselected_extra: HashSet<String>,
    counts: Counts,
    /// Finds `\u` escapes, the only way a lone surrogate can be written.
    escape_u: memchr::memmem::Finder<'static>,
    /// The event with its lone surrogates replaced, when it had any.
    fixed: Vec<u8>,
    /// Schema slots seen in this event, to notice a key given twice.
    seen_slots: Vec<u64>,
    /// Whether this event gave some key more than once.
    duplicate: bool,
    /// The slot whose value [`Shaper::captured`] gives, if any.
    capture: Option<usize>,
    /// That value's JSON text in the record shaped last, if it had one.
    captured: Option<Vec<u8>>,
    /// Custom properties as columns, when the stream has them so.
    columns: Option<Columns>,
    /// Custom properties the catalog leaves out.
    deselected: BTreeSet<String>,
    /// The slot of the stream's one natural key property (`IndvId`, `id`),
    /// which every record must have.
    natural_key: Option<usize>,
    /// Whether the event being shaped gave a usable natural key.
    key_given: bool,
    /// The first event of this unit left out for want of it, as text.
    keyless_example: Option<String>,
}

/// What this unit needed changed so targets can load it; reported once
/// per unit by [`Shaper::finish_unit`].
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counts {
    /// Numbers written as strings of their text (beyond `i64` or `f64`).
    pub numbers_as_text: u64,
    /// Values nested past [`MAX_DEPTH`], written as strings of their text.
    pub too_deep: u64,
    /// Lone UTF-16 surrogate escapes replaced by `\ufffd`.
    pub surrogates: u64,
    /// Values dropped because a later one had the same key in the event.
    pub duplicates: u64,
    /// Custom property values not of their property's type, kept in
    /// `ExtraFields`.
    pub misfits: u64,
    /// Records left out for want of a usable key property.
    pub keyless: u64,
}

const PREFIX: &[u8] = br#"{"type":"RECORD","stream":""#;

impl Shaper {
    /// A shaper writing the selected fields of `schema`.
    pub fn new(schema: &Schema, selection: &Selection) -> Shaper {
        let stream = schema.stream;
        let (key_field, identity) = match &stream.derived_key {
            Some(key) => (Some(key.field), key.identity),
            None => (None, &[][..]),
        };
        let mut slots = Vec::new();
        let mut names = Vec::new();
        for field in &schema.fields {
            // Our own two fields are never taken from the event itself.
            if Some(field.name.as_str()) == key_field || field.name == stream.extra_field {
                continue;
            }
            names.push(field.name.as_str());
            slots.push(FieldSlot {
                name: field.name.clone(),
                kind: field.kind,
                selected: selection.has_field(&field.name),
                identity: identity.iter().position(|n| *n == field.name),
                stand_in_for: None,
                warned: false,
            });
        }
        let mut shaper = Shaper {
            stream,
            seen_slots: vec![0; slots.len().div_ceil(64)],
            duplicate: false,
            slots,
            by_name: FieldIndex::new(&names),
            extra_selected: selection.has_field(stream.extra_field),
            key: KeyMaker::new(identity.len()),
            extras: Extras::default(),
            version: None,
            suffix: Vec::new(),
            fields_at: 0,
            events: 0,
            warned_unselected_extra: HashSet::new(),
            counts: Counts::default(),
            escape_u: memchr::memmem::Finder::new(b"\\u"),
            fixed: Vec::new(),
            capture: None,
            captured: None,
            columns: None,
            deselected: selection.deselected_properties().clone(),
            natural_key: None,
            key_given: false,
            keyless_example: None,
        };
        if let (None, [key]) = (&stream.derived_key, stream.key_properties) {
            shaper.natural_key = shaper.by_name.find(key).ok();
        }
        shaper.start_unit(Utc::now());
        shaper
    }

    /// Lets each field `alias` stand in for identity field `field` in the
    /// key of a record that lacks `field` (pairs of field names; unknown
    /// names are ignored).
    pub fn key_stand_ins(&mut self, pairs: &[(&str, &str)]) {
        let Some(key) = &self.stream.derived_key else {
            return;
        };
        for (alias, field) in pairs {
            let id = key.identity.iter().position(|n| n == field);
            if let (Some(id), Ok(slot)) = (id, self.by_name.find(alias)) {
                self.slots[slot].stand_in_for = Some(id);
            }
        }
    }

    /// Gives every RECORD from the next unit on the table version
    /// `version` (the Singer table-version protocol), or none.
    pub fn table_version(&mut self, version: Option<u64>) {
        self.version = version;
    }

    /// Makes custom properties typed fields of the record, as `properties`
    /// (the stream's, shared by every unit's shaper) decides.
    pub fn property_columns(&mut self, properties: Arc<Properties>) {
        self.columns = Some(Columns::new(properties));
    }

    /// The custom property columns written since the unit started.
    pub fn columns_used(&self) -> Vec<String> {
        self.columns.as_ref().map(Columns::used).unwrap_or_default()
    }

    /// Keeps the JSON text of `field` (a field of the schema) of each record
    /// shaped, whatever its type or selection, for [`Shaper::captured`].
    pub fn capture(&mut self, field: &str) {
        self.capture = self.by_name.find(field).ok();
    }

    /// The captured field's JSON text in the record shaped last, if it had
    /// the field.
    pub fn captured(&self) -> Option<&[u8]> {
        self.captured.as_deref()
    }

    /// Resets per-unit state; `extracted` becomes the records' `time_extracted`.
    pub fn start_unit(&mut self, extracted: DateTime<Utc>) {
        self.key.start_unit();
        if let Some(columns) = &mut self.columns {
            columns.start_unit();
        }
        self.events = 0;
        self.counts = Counts::default();
        self.keyless_example = None;
        self.suffix.clear();
        self.suffix.push(b'}');
        if let Some(version) = self.version {
            self.suffix.extend_from_slice(br#","version":"#);
            self.suffix
                .extend_from_slice(version.to_string().as_bytes());
        }
        self.suffix.extend_from_slice(br#","time_extracted":""#);
        self.suffix
            .extend_from_slice(format_micros(extracted).as_bytes());
        self.suffix.extend_from_slice(b"\"}\n");
    }

    /// Warns about what this unit's values needed changed, if anything, and
    /// returns the counts (then zero). Call once the whole unit has been
    /// shaped; `noun` names it ("bundle").
    pub fn finish_unit(&mut self, noun: &str) -> Counts {
        let c = std::mem::take(&mut self.counts);
        if c.numbers_as_text > 0 {
            tracing::warn!(
                "{} numbers in this {noun} are beyond what targets hold (64-bit integers, finite doubles); each is kept as a string of its exact text",
                c.numbers_as_text
            );
        }
        if c.surrogates > 0 {
            tracing::warn!(
                "{} lone UTF-16 surrogate escapes in this {noun} cannot be stored as UTF-8; each is replaced by \\ufffd",
                c.surrogates
            );
        }
        if c.duplicates > 0 {
            tracing::warn!(
                "{} keys in this {noun}'s records were repeated within the same event; each event keeps the last value",
                c.duplicates
            );
        }
        if c.misfits > 0 {
            tracing::warn!(
                "{} custom property values in this {noun} were not of their property's type; each is kept in {EXTRA_FIELD}",
                c.misfits
            );
        }
        if c.too_deep > 0 {
            tracing::warn!(
                "{} values in this {noun} nest deeper than {MAX_DEPTH} levels; each is kept as a string of its JSON text",
                c.too_deep
            );
        }
        if c.keyless > 0 {
            let key = self.natural_key.map_or("", |k| self.slots[k].name.as_str());
            tracing::warn!(
                "{} records in this {noun} have no usable {key} (their key property) and are left out, as a target could not tell them apart; the first: {}",
                c.keyless,
                self.keyless_example.take().unwrap_or_default()
            );
        }
        c
    }

    /// Appends the RECORD line for one event (a JSON object) to `out`, or
    /// nothing for a record left out for want of its key property (counted,
    /// and warned about by [`Shaper::finish_unit`]).
    pub fn shape(&mut self, event: &[u8], out: &mut Vec<u8>) -> Result<(), ShapeError> {
        // A lone surrogate escape is valid JSON but no UTF-8 store takes it:
        // swap each for the escape of U+FFFD, the same length, so every other
        // byte stays as it is. Most events have no `\u` at all.
        if self.escape_u.find(event).is_some() {
            let mut fixed = std::mem::take(&mut self.fixed);
            fixed.clear();
            let replaced = replace_lone_surrogates(event, &mut fixed);
            self.counts.surrogates += replaced;
            let result = self.shape_fixed(if replaced > 0 { &fixed } else { event }, out);
            self.fixed = fixed;
            return result;
        }
        self.shape_fixed(event, out)
    }

    fn shape_fixed(&mut self, event: &[u8], out: &mut Vec<u8>) -> Result<(), ShapeError> {
        self.events += 1;
        let start = out.len();
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(self.stream.name.as_bytes());
        out.extend_from_slice(br#"","record":{"#);
        self.fields_at = out.len();
        let key_at = self.stream.derived_key.as_ref().map(|key| {
            out.push(b'"');
            out.extend_from_slice(key.field.as_bytes());
            out.extend_from_slice(b"\":\"");
            let at = out.len();
            out.extend_from_slice(&[b'0'; KEY_HEX_LEN]);
            out.push(b'"');
            at
        });

        let body = out.len();
        self.reset_event();

        // One UTF-8 check of the whole event, so the parser need not check
        // each value again.
        let text = match std::str::from_utf8(event) {
            Ok(text) => text,
            Err(e) => {
                out.truncate(start);
                return Err(ShapeError(format!(
                    "record {} is not valid UTF-8: {e}",
                    self.events
                )));
            }
        };
        let counts = self.counts;
        let mut result = self.parse(text, None, out);
        if result.is_ok() && self.duplicate {
            result = self.reshape_last_values(text, counts, body, out);
        }
        if let Err(e) = result {
            out.truncate(start);
            return Err(json_error(self.events, text, &e));
        }
        if self.natural_key.is_some() && !self.key_given {
            out.truncate(start);
            self.counts.keyless += 1;
            if self.keyless_example.is_none() {
                self.keyless_example = Some(crate::redact::snippet(text.as_bytes()));
            }
            return Ok(());
        }

        if !self.extras.is_empty() && self.extra_selected {
            if out.len() > self.fields_at {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(self.stream.extra_field.as_bytes());
            out.extend_from_slice(b"\":{");
            out.extend_from_slice(self.extras.members());
            out.push(b'}');
        }
        out.extend_from_slice(&self.suffix);

        if let Some(at) = key_at {
            let key = self.key.key();
            write_hex(key, &mut out[at..at + KEY_HEX_LEN]);
        }
        Ok(())
    }

    /// Rare: shapes the event again, keeping only the last value of each key
    /// (what common parsers do, and what the EventKey already uses). Kept
    /// out of line so the usual path stays one inlined parse.
    #[cold]
    #[inline(never)]
    fn reshape_last_values(
        &mut self,
        text: &str,
        counts: Counts,
        body: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        let keep = last_of_each_key(text)?;
        self.counts = counts;
        self.counts.duplicates += keep.iter().filter(|k| !**k).count() as u64;
        self.reset_event();
        out.truncate(body);
        self.parse(text, Some(&keep), out)
    }

    fn reset_event(&mut self) {
        self.captured = None;
        if let Some(columns) = &mut self.columns {
            columns.next_record();
        }
        self.key.start_event();
        self.extras.clear();
        self.seen_slots.fill(0);
        self.duplicate = false;
        self.key_given = false;
    }

    /// Shapes the fields of `text` into `out`; with `keep`, only the pairs
    /// (by position) it marks.
    #[inline(always)]
    fn parse(
        &mut self,
        text: &str,
        keep: Option<&[bool]>,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(EventVisitor {
            shaper: self,
            out,
            keep,
        })?;
        de.end()
    }

    /// The record object inside a RECORD line this shaper wrote last (the
    /// raw record a batch file holds), without copying or re-encoding it.
    pub fn record_of<'l>(&self, line: &'l [u8]) -> &'l [u8] {
        let start = PREFIX.len() + self.stream.name.len() + br#"","record":"#.len();
        // The suffix opens with the record's closing brace.
        let end = line.len() + 1 - self.suffix.len();
        &line[start..end]
    }

    /// Handles one key/value pair of the event.
    fn field(&mut self, key: &str, key_escaped: bool, raw: &RawValue, out: &mut Vec<u8>) {
        let text = raw.get();
        let value = text.as_bytes();
        let idx = match self.by_name.find(key) {
            Ok(idx) => idx,
            Err(hash) => {
                match self.columns.as_mut().map(|c| c.look(key)) {
                    Some(Seen::Column { kind, repeated }) => {
                        self.duplicate |= repeated;
                        if fits_property(kind, value) && self.write_field(key, value, out) {
                            return;
                        }
                        self.counts.misfits += 1;
                        if let Some(columns) = &self.columns {
                            columns.misfit(key, kind);
                        }
                    }
                    Some(Seen::Drop) => return,
                    Some(Seen::Other | Seen::Extra) => {}
                    None if !self.deselected.is_empty() && self.deselected.contains(key) => {
                        return;
                    }
                    None => {}
                }
                self.push_extra(key, key_escaped, hash, text);
                return;
            }
        };
        let bit = 1u64 << (idx % 64);
        if self.seen_slots[idx / 64] & bit != 0 {
            self.duplicate = true;
        }
        self.seen_slots[idx / 64] |= bit;
        if self.capture == Some(idx) {
            let captured = self.captured.get_or_insert_with(Vec::new);
            captured.clear();
            captured.extend_from_slice(value);
        }
        let slot = &mut self.slots[idx];
        if let Some(id) = slot.identity {
            self.key.note(id, value);
        } else if let Some(id) = slot.stand_in_for {
            self.key.note_stand_in(id, value);
        }
        if Some(idx) == self.natural_key {
            let kind = slot.kind;
            self.key_given = value != b"null" && fits(kind, value);
            if !self.key_given {
                // The key sent as the other of a number or a string of
                // its digits: the same key, written as its type.
                if let Some(digits) = key_digits(kind, value) {
                    self.key_given = true;
                    let written = match kind {
                        FieldKind::Integer => self.write_field(key, digits, out),
                        _ => {
                            let quoted = [b"\"", digits, b"\""].concat();
                            self.write_field(key, &quoted, out)
                        }
                    };
                    debug_assert!(written);
                }
                return;
            }
        }
        let slot = &mut self.slots[idx];
        if !slot.selected {
            return;
        }
        if !fits(slot.kind, value) {
            if !slot.warned {
                slot.warned = true;
                tracing::warn!(
                    "field {} has a value that is not of its schema type ({:?}); such values are kept in {EXTRA_FIELD}",
                    slot.name,
                    slot.kind
                );
            }
            self.push_extra(key, key_escaped, index::name_hash(key.as_bytes()), text);
            return;
        }
        if !self.write_field(key, value, out) {
            self.push_extra(key, key_escaped, index::name_hash(key.as_bytes()), text);
        }
    }

    /// Writes `"key":value` as a field of the record, rewriting what no
    /// target could load; false, writing nothing, when the value nests too
    /// deep to be a field (it belongs in `ExtraFields`). `key` needs no
    /// escaping.
    #[inline]
    fn write_field(&mut self, key: &str, value: &[u8], out: &mut Vec<u8>) -> bool {
        let nested = match value[0] {
            b'{' | b'[' => scan_nested(value),
            _ => Nested::Fine,
        };
        if nested == Nested::TooDeep {
            return false;
        }
        if out.len() > self.fields_at {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        if nested == Nested::Rewrite {
            self.counts.numbers_as_text += rewrite_nested(value, out);
        } else {
            out.extend_from_slice(value);
        }
        true
    }

    /// Puts a key the record's schema fields do not take into
    /// `ExtraFields`; `hash` is its [`index::name_hash`].
    fn push_extra(&mut self, key: &str, key_escaped: bool, hash: u64, text: &str) {
        if !self.extra_selected {
            // Look before inserting: this runs per key per event, and the
            // key is only copied the first time it is seen.
            if !self.warned_unselected_extra.contains(key) {
                self.warned_unselected_extra.insert(key.to_string());
                tracing::warn!(
                    "field {key} is kept only in {EXTRA_FIELD}, which the catalog leaves out; its values are not synced"
                );
            }
            return;
        }
        if self
            .extras
            .push(key, key_escaped, hash, text, &mut self.counts)
        {
            self.duplicate = true;
        }
    }
}

/// The digits of a key given as the other of a JSON number and a string:
/// a string of an integer's digits for an integer key (that fits `i64`), a
/// whole number for a string key. Only an integer's one written form is
/// taken: leading zeros or `-0` would be a JSON number no reader accepts
/// (or one key written two ways), so such a key is not one.
fn key_digits(kind: FieldKind, value: &[u8]) -> Option<&[u8]> {
    let digits = match (kind, value.first()?) {
        (FieldKind::Integer, b'"') if value.len() >= 3 => &value[1..value.len() - 1],
        (FieldKind::String, b'-' | b'0'..=b'9') => value,
        _ => return None,
    };
    let body = digits.strip_prefix(b"-").unwrap_or(digits);
    let whole = !body.is_empty() && body.iter().all(u8::is_ascii_digit);
    let canonical = match body {
        [b'0'] => body.len() == digits.len(),
        [b'0', ..] => false,
        _ => true,
    };
    let fits = kind != FieldKind::Integer || values::integer_fits(digits);
    (whole && canonical && fits).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Schema;
    use serde_json::Value;

    pub(super) fn shaper() -> Shaper {
        let schema = Schema::events();
        Shaper::new(&schema, &Selection::all(&schema))
    }

    #[test]
    fn a_stream_with_a_natural_key_gets_no_derived_one() {
        let schema = Schema::of(&crate::stream::INDIVIDUALS);
        let mut s = Shaper::new(&schema, &Selection::all(&schema));
        for (row, want) in [
            (
                r#"{"IndvId":9223372036854775807,"NumEvents":3,"user_plan_str":"pro"}"#,
                r#""record":{"IndvId":9223372036854775807,"NumEvents":3,"ExtraFields":{"user_plan_str":"pro"}}"#,
            ),
            // A key sent as a string of its digits is the same key.
            (
                r#"{"NumEvents":1,"IndvId":"-9223372036854775808"}"#,
                r#""record":{"NumEvents":1,"IndvId":-9223372036854775808}"#,
            ),
            (r#"{"IndvId":"0"}"#, r#""record":{"IndvId":0}"#),
        ] {
            let (line, _) = shape(&mut s, row);
            assert!(line.contains(want), "{line}");
            assert!(!line.contains("EventKey"));
        }
        // No key, or one that is no integer: the record is left out.
        for row in [
            r#"{"user_x_str":"a"}"#,
            "{}",
            r#"{"IndvId":null}"#,
            r#"{"IndvId":"12a"}"#,
            r#"{"IndvId":"9223372036854775808"}"#,
            r#"{"IndvId":1.5}"#,
            r#"{"IndvId":""}"#,
            // Digits no JSON reader takes as a number, or a second way of
            // writing a key: not coerced.
            r#"{"IndvId":"00042"}"#,
            r#"{"IndvId":"-00"}"#,
            r#"{"IndvId":"-0"}"#,
            r#"{"IndvId":"-"}"#,
        ] {
            let mut out = Vec::new();
            s.shape(row.as_bytes(), &mut out).unwrap();
            assert!(out.is_empty(), "{row}: {}", String::from_utf8_lossy(&out));
        }
        assert_eq!(s.finish_unit("window").keyless, 11);

        // A string key sent as a number keeps its digits, as a string.
        let users = Schema::of(&crate::stream::rest::USERS);
        let mut s = Shaper::new(&users, &Selection::all(&users));
        let (line, _) = shape(&mut s, r#"{"id":9007199254740993,"uid":"u"}"#);
        assert!(
            line.contains(r#""record":{"id":"9007199254740993","uid":"u"}"#),
            "{line}"
        );
    }

    pub(super) fn shape(s: &mut Shaper, event: &str) -> (String, Value) {
        let mut out = Vec::new();
        s.shape(event.as_bytes(), &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: Value = serde_json::from_str(&line).unwrap();
        (line, value)
    }

    const EVENT: &str = r#"{"UserId":9223372036854775807,"SessionId":4503599627370497,"PageId":1,"EventStart":"2020-08-27T06:20:26.900Z","EventType":"click","EventCumulativeLayoutShift":0.12345678901234567890,"PageName":"caf\u00e9 \"q\"","user_plan_str":"pro","evt_n_int":3}"#;

    #[test]
    fn copies_values_byte_for_byte() {
        let (line, value) = shape(&mut shaper(), EVENT);
        assert!(line.starts_with(r#"{"type":"RECORD","stream":"events","record":{"EventKey":""#));
        assert!(line.contains(r#""UserId":9223372036854775807,"#));
        assert!(line.contains(r#""EventCumulativeLayoutShift":0.12345678901234567890,"#));
        assert!(line.contains(r#""PageName":"caf\u00e9 \"q\"""#));
        assert_eq!(
            value["record"]["UserId"].as_u64(),
            Some(9_223_372_036_854_775_807)
        );
        assert_eq!(
            value["record"]["ExtraFields"],
            serde_json::json!({"user_plan_str": "pro", "evt_n_int": 3})
        );
        assert!(value["time_extracted"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn record_of_is_the_record_object_exactly() {
        let mut s = shaper();
        let (line, value) = shape(&mut s, EVENT);
        let record = std::str::from_utf8(s.record_of(line.as_bytes())).unwrap();
        assert!(record.starts_with(r#"{"EventKey":""#) && record.ends_with('}'));
        assert!(record.contains(r#"0.12345678901234567890"#));
        let parsed: Value = serde_json::from_str(record).unwrap();
        assert_eq!(parsed, value["record"]);
    }

    #[test]
    fn a_segment_export_selector_stands_in_for_the_bundles_and_keeps_keys_apart() {
        let key = |s: &mut Shaper, event: &str| shape(s, event).1["record"]["EventKey"].clone();
        let click = |selector: &str| {
            format!(
                r#"{{"UserId":1,"SessionId":2,"PageId":3,"EventStart":"2024-01-01T00:00:00.000Z","EventType":"click","EventTargetSelector":"{selector}"}}"#
            )
        };
        let (a, b) = (click("div > a"), click("div > button"));
        // Two clicks in one millisecond on different elements: without the
        // stand-in their keys depend on their order.
        let mut plain = shaper();
        let (pa, pb) = (key(&mut plain, &a), key(&mut plain, &b));
        let mut plain = shaper();
        assert_eq!(
            key(&mut plain, &b),
            pa,
            "order-dependent without the stand-in"
        );
        // They swap keys.
        assert_eq!(key(&mut plain, &a), pb);
        let stand_in = || {
            let mut s = shaper();
            s.key_stand_ins(&[("EventTargetSelector", "EventTargetSelectorTok")]);
            s
        };
        let mut s = stand_in();
        let (ka, kb) = (key(&mut s, &a), key(&mut s, &b));
        let mut s = stand_in();
        assert_eq!(
            (key(&mut s, &b), key(&mut s, &a)),
            (kb, ka),
            "the same in any order"
        );
        // A bundle event, with its own Tok (and even the selector too), keeps
        // the key it always had.
        let bundle = r#"{"UserId":1,"SessionId":2,"PageId":3,"EventStart":"2024-01-01T00:00:00.000Z","EventType":"click","EventTargetSelectorTok":"div%20%3E%20a","EventTargetSelector":"div > a"}"#;
        assert_eq!(key(&mut stand_in(), bundle), key(&mut shaper(), bundle));
    }

    #[test]
    fn key_is_stable_and_ignores_settling_fields() {
        let a = shape(&mut shaper(), EVENT).1["record"]["EventKey"].clone();
        let b = shape(&mut shaper(), EVENT).1["record"]["EventKey"].clone();
        assert_eq!(a, b);
        assert_eq!(a.as_str().unwrap().len(), 32);
        // IndvId and durations may change on re-download; the key must not.
        let settled = EVENT.replace(
            "\"PageId\":1,",
            "\"PageId\":1,\"IndvId\":7,\"PageActiveDuration\":99,",
        );
        let c = shape(&mut shaper(), &settled).1["record"]["EventKey"].clone();
        assert_eq!(a, c);
        // A different identity gives a different key.
        let other = EVENT.replace("click", "change");
        let d = shape(&mut shaper(), &other).1["record"]["EventKey"].clone();
        assert_ne!(a, d);
        // Escaping does not change identity.
        let escaped = EVENT.replace("\"click\"", "\"cl\\u0069ck\"");
        let e = shape(&mut shaper(), &escaped).1["record"]["EventKey"].clone();
        assert_eq!(a, e);
    }

    #[test]
    fn repeats_get_distinct_keys_and_reset_per_unit() {
        let mut s = shaper();
        let k1 = shape(&mut s, EVENT).1["record"]["EventKey"].clone();
        let k2 = shape(&mut s, EVENT).1["record"]["EventKey"].clone();
        assert_ne!(k1, k2);
        s.start_unit(Utc::now());
        let k3 = shape(&mut s, EVENT).1["record"]["EventKey"].clone();
        assert_eq!(k1, k3);
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let mut s = shaper();
        let (line, v) = shape(
            &mut s,
            r#"{"UserId":1,"evt_a_int":1,"PageName":"p","UserId":7,"evt_b_int":2,"evt_\u0061_int":3,"PageName":5,"SessionId":2}"#,
        );
        let rec = v["record"].as_object().unwrap();
        assert_eq!(line.matches("\"UserId\"").count(), 1, "{line}");
        assert_eq!(line.matches("evt_a_int").count(), 1, "{line}");
        assert_eq!(rec["UserId"], 7);
        assert!(!rec.contains_key("PageName"));
        assert_eq!(
            rec["ExtraFields"],
            serde_json::json!({"evt_b_int": 2, "evt_a_int": 3, "PageName": 5})
        );
        assert_eq!(s.finish_unit("bundle").duplicates, 3);
        // The key is that of the event with only the last values.
        let once = shape(
            &mut shaper(),
            r#"{"UserId":7,"evt_b_int":2,"evt_a_int":3,"PageName":5,"SessionId":2}"#,
        )
        .1;
        assert_eq!(v["record"]["EventKey"], once["record"]["EventKey"]);
        // Many distinct extras are not mistaken for repeats.
        let many: Vec<String> = (0..500).map(|i| format!(r#""evt_{i}_int":{i}"#)).collect();
        shape(&mut s, &format!("{{{}}}", many.join(",")));
        assert_eq!(s.finish_unit("bundle").duplicates, 0);
    }

    #[test]
    fn our_own_field_names_in_an_event_are_kept_as_extras() {
        let (_, v) = shape(
            &mut shaper(),
            r#"{"EventKey":"theirs","ExtraFields":1,"k\"q":2}"#,
        );
        let rec = &v["record"];
        assert_ne!(rec["EventKey"], "theirs");
        assert_eq!(rec["ExtraFields"]["EventKey"], "theirs");
        assert_eq!(rec["ExtraFields"]["ExtraFields"], 1);
        assert_eq!(rec["ExtraFields"]["k\"q"], 2);
    }

    #[test]
    fn unselected_fields_are_absent() {
        let schema = Schema::events();
        let catalog = serde_json::json!({"streams": [{"tap_stream_id": "events", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": true}},
            {"breadcrumb": ["properties", "PageName"], "metadata": {"selected": false}},
            {"breadcrumb": ["properties", "ExtraFields"], "metadata": {"selected": false}}]}]});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, catalog.to_string()).unwrap();
        let sel = Selection::from_catalog_file(&path, &schema).unwrap();
        let mut s = Shaper::new(&schema, &sel);
        let (_, v) = shape(&mut s, EVENT);
        let rec = v["record"].as_object().unwrap();
        assert!(!rec.contains_key("PageName") && !rec.contains_key("ExtraFields"));
        assert!(rec.contains_key("UserId") && rec.contains_key("EventKey"));
    }

    #[test]
    fn field_index_finds_every_name_and_nothing_else() {
        let schema = Schema::events();
        let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        let index = FieldIndex::new(&names);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(index.get(name), Some(i), "{name}");
        }
        for other in [
            "",
            "U",
            "UserI",
            "UserIdX",
            "userid",
            "user_plan_str",
            "EventStartt",
            "é",
        ] {
            assert_eq!(index.get(other), None, "{other}");
        }
    }

    #[test]
    fn json_errors_say_which_record_field_and_byte() {
        let mut s = shaper();
        let mut out = Vec::new();
        s.shape(br#"{"UserId":1}"#, &mut out).unwrap();
        let cases: [(&[u8], &[&str]); 6] = [
            (
                br#"{"UserId":1,"PageName":tru,"x":1}"#,
                &["record 2 ", "value of field \"PageName\"", "at byte 26 "],
            ),
            (
                b"{\"UserId\":1,\n \"evt_obj\":{\"a\":[1,]}}",
                &["record 3 ", "value of field \"evt_obj\"", "at byte 32 "],
            ),
            (
                br#"{"UserId":1,"bad\x":1}"#,
                &["record 4 ", "key after field \"UserId\"", "at byte 17 "],
            ),
            (
                br#"{1:2}"#,
                &["record 5 ", "in its first key", "at byte 1 "],
            ),
            (
                br#"{"a":1} x"#,
                &["record 6 ", "after its closing brace", "at byte 8 "],
            ),
            (
                br#"[1]"#,
                &["record 7 ", "at byte 0 ", "expected a JSON object"],
            ),
        ];
        for (event, words) in cases {
            let e = s.shape(event, &mut out).unwrap_err().to_string();
            for w in words {
                assert!(e.contains(w), "{w:?} not in {e:?}");
            }
            assert!(!e.contains(" line "), "{e}");
        }
    }

    #[test]
    fn streams_without_a_derived_key_start_with_their_own_fields() {
        let schema = Schema::of(&crate::stream::rest::BLOCK_RULES);
        let mut s = Shaper::new(&schema, &Selection::all(&schema));
        let (line, v) = shape(
            &mut s,
            r#"{"lastUpdated":"2024-01-01T00:00:00Z","blockedIps":["1.2.3.4"],"new":1.50}"#,
        );
        assert!(
            line.starts_with(r#"{"type":"RECORD","stream":"block_rules","record":{"lastUpdated":"2024-01-01T00:00:00Z","blockedIps":["1.2.3.4"],"ExtraFields":{"new":1.50}}"#),
            "{line}"
        );
        assert!(v["record"].get("EventKey").is_none());
        // Only unknown keys: the extras object opens the record.
        let (line, _) = shape(&mut s, r#"{"new":2}"#);
        assert!(
            line.contains(r#""record":{"ExtraFields":{"new":2}}"#),
            "{line}"
        );
        let (line, _) = shape(&mut s, "{}");
        assert!(line.contains(r#""record":{}"#), "{line}");
    }

    #[test]
    fn invalid_json_is_an_error_and_leaves_no_output() {
        let mut s = shaper();
        let mut out = b"keep".to_vec();
        assert!(s.shape(br#"{"a":}"#, &mut out).is_err());
        assert!(s.shape(br#"{"a":1} x"#, &mut out).is_err());
        assert_eq!(out, b"keep");
    }
}
