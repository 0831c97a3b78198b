//! Reading a record's JSON object: the visitor that hands each key and raw
//! value to the shaper, and on the rare paths, which keys a record repeats
//! and where a record that fails to parse goes wrong.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{ShapeError, Shaper};

/// A map key that borrows from the input unless it had escapes.
pub(super) struct Key<'a>(Cow<'a, str>);

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

pub(super) struct EventVisitor<'s, 'o, 'k> {
    pub(super) shaper: &'s mut Shaper,
    pub(super) out: &'o mut Vec<u8>,
    /// Which pairs to shape, by position; all when `None`.
    pub(super) keep: Option<&'k [bool]>,
}

impl<'de> Visitor<'de> for EventVisitor<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
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

/// For each key/value pair of the event object, whether no later pair has
/// the same key.
pub(super) fn last_of_each_key(text: &str) -> Result<Vec<bool>, serde_json::Error> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<Key<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
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

/// Says which record, which field and which byte a parse error is at;
/// `number` is the record's place in its unit. The byte is counted from the
/// record's start.
pub(super) fn json_error(number: u64, text: &str, e: &serde_json::Error) -> ShapeError {
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
        number
    ))
}

/// Parses `text` again to find the part that fails: only on the error path,
/// so the usual one costs nothing.
fn locate(text: &str) -> Reading {
    struct Locate<'r>(&'r mut Reading);
    impl<'de> Visitor<'de> for Locate<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
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
