//! Record shaping: one event's JSON in, one Singer RECORD line out.
//!
//! Values are never re-encoded: each field's JSON text is copied exactly as
//! FullStory sent it, so 64-bit IDs, long decimals and escaped strings come
//! through byte for byte. Keys the schema does not name, and known keys whose
//! value does not have the schema's type, go into the declared `ExtraFields`
//! object instead of being dropped; `values` decides which values keep their
//! field and which are rewritten. Streams with a derived key (events) get
//! an `EventKey` from the event's identity fields (see
//! [`crate::stream::IDENTITY_FIELDS`]); streams with natural keys do not.

mod values;

pub use values::MAX_DEPTH;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, Utc};
use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::catalog::{FieldKind, Schema, Selection};
use crate::stream::{EXTRA_FIELD, StreamDef};
use crate::time::format_micros;
use values::{
    Nested, canonical_into, fits, number_token_fits, quote_bad_numbers, replace_lone_surrogates,
    scan_nested,
};

/// How many distinct identities a bundle remembers to number repeats. Events
/// identical in every identity field get occurrence numbers 0, 1, 2, ... in
/// bundle order; the window keeps memory flat however large the bundle.
pub const REPEAT_WINDOW: usize = 8_192;

const KEY_HEX_LEN: usize = 32;

/// Why one event could not be shaped.
#[derive(Debug)]
pub struct ShapeError(pub String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes keys that are already hashes (the 128-bit identities) by taking
/// their low bits.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type RepeatMap = HashMap<u128, u32, BuildHasherDefault<PreHashed>>;

/// Field name to slot, by open addressing on a hash of the name's first and
/// last eight bytes and its length: names are short and trusted, and this
/// lookup runs for every key of every event.
struct FieldIndex {
    table: Vec<u16>,
    names: Vec<Box<[u8]>>,
}

const EMPTY: u16 = u16::MAX;

/// A quick hash of a short name from its first and last eight bytes and length.
fn name_hash(key: &[u8]) -> u64 {
    let n = key.len();
    let mut head = [0u8; 8];
    let mut tail = [0u8; 8];
    let k = n.min(8);
    head[..k].copy_from_slice(&key[..k]);
    tail[..k].copy_from_slice(&key[n - k..]);
    (u64::from_le_bytes(head) ^ u64::from_le_bytes(tail).rotate_left(29) ^ n as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl FieldIndex {
    fn new(names: &[&str]) -> FieldIndex {
        let size = (names.len() * 8).next_power_of_two().max(64);
        let mut index = FieldIndex {
            table: vec![EMPTY; size],
            names: names.iter().map(|n| n.as_bytes().into()).collect(),
        };
        for (i, name) in names.iter().enumerate() {
            let mut at = index.slot(name.as_bytes());
            while index.table[at] != EMPTY {
                at = (at + 1) & (size - 1);
            }
            index.table[at] = i as u16;
        }
        index
    }

    fn slot(&self, key: &[u8]) -> usize {
        (name_hash(key) >> 32) as usize & (self.table.len() - 1)
    }

    #[cfg(test)]
    fn get(&self, key: &str) -> Option<usize> {
        self.find(key).ok()
    }

    /// The slot of `key`, or the key's [`name_hash`] when it has none (the
    /// caller notes unknown keys by that hash).
    fn find(&self, key: &str) -> Result<usize, u64> {
        let key = key.as_bytes();
        let hash = name_hash(key);
        let mask = self.table.len() - 1;
        let mut at = (hash >> 32) as usize & mask;
        loop {
            let i = self.table[at];
            if i == EMPTY {
                return Err(hash);
            }
            if *self.names[usize::from(i)] == *key {
                return Ok(usize::from(i));
            }
            at = (at + 1) & mask;
        }
    }
}

#[derive(Debug)]
struct FieldSlot {
    name: String,
    kind: FieldKind,
    selected: bool,
    identity: Option<usize>,
    warned: bool,
}

/// Shapes events of one stream into RECORD lines.
pub struct Shaper {
    stream: &'static StreamDef,
    slots: Vec<FieldSlot>,
    by_name: FieldIndex,
    extra_selected: bool,
    /// Where each identity field's canonical bytes sit in `identity_bytes`.
    identity: Vec<Option<(usize, usize)>>,
    identity_bytes: Vec<u8>,
    extras: Vec<u8>,
    repeats: RepeatMap,
    repeat_order: VecDeque<u128>,
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
    /// Where each ExtraFields key of this event sits in `extras`, and a
    /// filter of their hashes so most keys need no comparison at all.
    extra_keys: Vec<(usize, usize)>,
    extra_filter: [u64; 4],
    last_extra_key: (usize, usize),
    /// Whether this event gave some key more than once.
    duplicate: bool,
    /// The slot whose value [`Shaper::captured`] gives, if any.
    capture: Option<usize>,
    /// That value's JSON text in the record shaped last, if it had one.
    captured: Option<Vec<u8>>,
}

/// The part of an event a parse error is in.
#[derive(Debug)]
enum Reading {
    Start,
    /// A key, after the given field (if any).
    Key(Option<String>),
    /// The value of this field.
    Value(String),
    End,
}

/// What this bundle needed changed so targets can load it; reported once
/// per bundle by [`Shaper::finish_bundle`].
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
                warned: false,
            });
        }
        let mut shaper = Shaper {
            stream,
            seen_slots: vec![0; slots.len().div_ceil(64)],
            extra_keys: Vec::new(),
            extra_filter: [0; 4],
            last_extra_key: (0, 0),
            duplicate: false,
            slots,
            by_name: FieldIndex::new(&names),
            extra_selected: selection.has_field(stream.extra_field),
            identity: vec![None; identity.len()],
            identity_bytes: Vec::new(),
            extras: Vec::new(),
            repeats: RepeatMap::default(),
            repeat_order: VecDeque::new(),
            suffix: Vec::new(),
            fields_at: 0,
            events: 0,
            warned_unselected_extra: HashSet::new(),
            counts: Counts::default(),
            escape_u: memchr::memmem::Finder::new(b"\\u"),
            fixed: Vec::new(),
            capture: None,
            captured: None,
        };
        shaper.start_unit(Utc::now());
        shaper
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
        self.repeats.clear();
        self.repeat_order.clear();
        self.events = 0;
        self.counts = Counts::default();
        self.suffix.clear();
        self.suffix.extend_from_slice(br#"},"time_extracted":""#);
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
        if c.too_deep > 0 {
            tracing::warn!(
                "{} values in this {noun} nest deeper than {MAX_DEPTH} levels; each is kept as a string of its JSON text",
                c.too_deep
            );
        }
        c
    }

    /// Appends the RECORD line for one event (a JSON object) to `out`.
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
            return Err(self.json_error(text, &e));
        }

        if !self.extras.is_empty() && self.extra_selected {
            if out.len() > self.fields_at {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(self.stream.extra_field.as_bytes());
            out.extend_from_slice(b"\":{");
            out.extend_from_slice(&self.extras);
            out.push(b'}');
        }
        out.extend_from_slice(&self.suffix);

        if let Some(at) = key_at {
            let key = self.event_key();
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

    /// Says which event, which field and which byte a parse error is at.
    /// The shaper only sees the event, so the byte is counted from its start.
    fn json_error(&self, text: &str, e: &serde_json::Error) -> ShapeError {
        let place = match locate(text) {
            Reading::Start => String::new(),
            Reading::Key(Some(prev)) => format!(" in the key after field {}", quoted(&prev)),
            Reading::Key(None) => " in its first key".to_string(),
            Reading::Value(key) => format!(" in the value of field {}", quoted(&key)),
            Reading::End => " after its closing brace".to_string(),
        };
        // serde_json counts lines from 1 and bytes within the line.
        let at = match e.line() {
            0 => String::new(),
            line => {
                let line_start = line
                    .checked_sub(2)
                    .and_then(|n| memchr::memchr_iter(b'\n', text.as_bytes()).nth(n))
                    .map_or(0, |nl| nl + 1);
                let byte = (line_start + e.column()).saturating_sub(1);
                format!(", at byte {byte} of the record (counting from 0 at its opening brace)")
            }
        };
        let why = e.to_string();
        let why = why
            .rsplit_once(" at line ")
            .map_or(why.as_str(), |(w, _)| w);
        ShapeError(format!(
            "record {} is not valid JSON{place}{at}: {why}",
            self.events
        ))
    }

    fn reset_event(&mut self) {
        self.captured = None;
        for slot in &mut self.identity {
            *slot = None;
        }
        self.identity_bytes.clear();
        self.extras.clear();
        self.seen_slots.fill(0);
        self.extra_keys.clear();
        self.extra_filter = [0; 4];
        self.duplicate = false;
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

    /// Hash of the identity fields, then of that and the repeat number.
    fn event_key(&mut self) -> u128 {
        let mut h = Xxh3::new();
        for (i, range) in self.identity.iter().enumerate() {
            h.update(&[i as u8]);
            match *range {
                None => h.update(&[0]),
                Some((from, to)) => {
                    let bytes = &self.identity_bytes[from..to];
                    h.update(&[1]);
                    h.update(&(bytes.len() as u64).to_le_bytes());
                    h.update(bytes);
                }
            }
        }
        let identity = h.digest128();
        let seen = match self.repeats.get_mut(&identity) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                if self.repeat_order.len() == REPEAT_WINDOW
                    && let Some(old) = self.repeat_order.pop_front()
                {
                    self.repeats.remove(&old);
                }
                self.repeat_order.push_back(identity);
                self.repeats.insert(identity, 0);
                0
            }
        };
        if seen == 0 {
            identity
        } else {
            let mut buf = [0u8; 20];
            buf[..16].copy_from_slice(&identity.to_le_bytes());
            buf[16..].copy_from_slice(&seen.to_le_bytes());
            xxh3_128(&buf)
        }
    }

    /// Handles one key/value pair of the event.
    fn field(&mut self, key: &str, key_escaped: bool, raw: &RawValue, out: &mut Vec<u8>) {
        let text = raw.get();
        let value = text.as_bytes();
        let idx = match self.by_name.find(key) {
            Ok(idx) => idx,
            Err(hash) => {
                self.push_extra(key, key_escaped, text);
                if self.extra_selected {
                    self.note_extra_key(hash);
                }
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
            let from = self.identity_bytes.len();
            canonical_into(value, &mut self.identity_bytes);
            self.identity[id] = Some((from, self.identity_bytes.len()));
        }
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
            self.push_extra(key, key_escaped, text);
            return;
        }
        let nested = match value[0] {
            b'{' | b'[' => scan_nested(value),
            _ => Nested::Fine,
        };
        if nested == Nested::TooDeep {
            self.push_extra(key, key_escaped, text);
            return;
        }
        if out.len() > self.fields_at {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        if nested == Nested::BadNumbers {
            self.counts.numbers_as_text += quote_bad_numbers(value, out);
        } else {
            out.extend_from_slice(value);
        }
    }

    /// Records the ExtraFields key just written, noting whether this event
    /// already had it. Keys are compared as written, which is canonical;
    /// `hash` is the [`name_hash`] of the decoded key, so equal keys share it.
    fn note_extra_key(&mut self, hash: u64) {
        let (from, to) = self.last_extra_key;
        let key = &self.extras[from..to];
        let bit = (hash >> 56) as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if self.extra_filter[word] & mask != 0
            && self
                .extra_keys
                .iter()
                .any(|&(f, t)| self.extras[f..t] == *key)
        {
            self.duplicate = true;
        }
        self.extra_filter[word] |= mask;
        self.extra_keys.push((from, to));
    }

    fn push_extra(&mut self, key: &str, key_escaped: bool, text: &str) {
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
        if !self.extras.is_empty() {
            self.extras.push(b',');
        }
        let key_from = self.extras.len();
        if key_escaped {
            // serde_json's escaping of a `&str` cannot fail.
            let _ = serde_json::to_writer(&mut self.extras, key);
        } else {
            self.extras.push(b'"');
            self.extras.extend_from_slice(key.as_bytes());
            self.extras.push(b'"');
        }
        self.last_extra_key = (key_from, self.extras.len());
        self.extras.push(b':');
        let value = text.as_bytes();
        match value.first() {
            Some(b'{' | b'[') => match scan_nested(value) {
                Nested::Fine => self.extras.extend_from_slice(value),
                Nested::TooDeep => {
                    self.counts.too_deep += 1;
                    // Escaping a `&str` cannot fail.
                    let _ = serde_json::to_writer(&mut self.extras, text);
                }
                Nested::BadNumbers => {
                    self.counts.numbers_as_text += quote_bad_numbers(value, &mut self.extras);
                }
            },
            Some(b'-' | b'0'..=b'9') if !number_token_fits(value) => {
                self.counts.numbers_as_text += 1;
                self.extras.push(b'"');
                self.extras.extend_from_slice(value);
                self.extras.push(b'"');
            }
            _ => self.extras.extend_from_slice(value),
        }
    }
}

fn write_hex(value: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = (KEY_HEX_LEN - 1 - i) * 4;
        *byte = HEX[((value >> shift) & 0xf) as usize];
    }
}

/// Parses `text` again to find the part that fails: only on the error path,
/// so the usual one costs nothing.
fn locate(text: &str) -> Reading {
    struct Locate<'r>(&'r mut Reading);
    impl<'de> Visitor<'de> for Locate<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut prev = None;
            loop {
                *self.0 = Reading::Key(prev.take());
                let Some(key) = map.next_key::<Key<'de>>()? else {
                    break;
                };
                *self.0 = Reading::Value(key.0.into_owned());
                map.next_value::<&'de RawValue>()?;
                if let Reading::Value(key) = std::mem::replace(self.0, Reading::Start) {
                    prev = Some(key);
                }
            }
            *self.0 = Reading::End;
            Ok(())
        }
    }
    let mut reading = Reading::Start;
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = de
        .deserialize_map(Locate(&mut reading))
        .and_then(|()| de.end());
    reading
}

/// A field name for a message: quoted and escaped, and cut short if long.
fn quoted(key: &str) -> String {
    const MAX: usize = 80;
    match key.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &key[..cut]),
        None => format!("{key:?}"),
    }
}

/// For each key/value pair of the event object, whether no later pair has
/// the same key.
fn last_of_each_key(text: &str) -> Result<Vec<bool>, serde_json::Error> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<Key<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                map.next_value::<de::IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    let keys = serde_json::Deserializer::from_str(text).deserialize_map(Keys)?;
    let mut last = HashMap::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        last.insert(&*key.0, i);
    }
    Ok(keys
        .iter()
        .enumerate()
        .map(|(i, key)| last.get(&*key.0) == Some(&i))
        .collect())
}

/// A map key that borrows from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct EventVisitor<'s, 'o, 'k> {
    shaper: &'s mut Shaper,
    out: &'o mut Vec<u8>,
    /// Which pairs to shape, by position; all when `None`.
    keep: Option<&'k [bool]>,
}

impl<'de> Visitor<'de> for EventVisitor<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut at = 0;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let raw: &'de RawValue = map.next_value()?;
            if self.keep.is_none_or(|keep| keep.get(at) == Some(&true)) {
                let escaped = matches!(key.0, Cow::Owned(_));
                self.shaper.field(&key.0, escaped, raw, self.out);
            }
            at += 1;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for EventVisitor<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
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
            (
                r#"{"user_x_str":"a"}"#,
                r#""record":{"ExtraFields":{"user_x_str":"a"}}"#,
            ),
            ("{}", r#""record":{}"#),
        ] {
            let (line, _) = shape(&mut s, row);
            assert!(line.contains(want), "{line}");
            assert!(!line.contains("EventKey"));
        }
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
    fn repeats_get_distinct_keys_and_reset_per_bundle() {
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
                &["record 7 ", "at byte 0 ", "expected an event object"],
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
