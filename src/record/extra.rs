//! `ExtraFields`: the object every key a schema does not name goes into
//! (custom vars, fields FullStory adds later, and values not of their
//! field's type), with its value kept as sent, or made loadable.

use super::Counts;
use super::values::{Nested, number_token_fits, rewrite_nested, scan_nested};

/// One record's `ExtraFields` members, as they are written.
#[derive(Default)]
pub(super) struct Extras {
    /// The members, comma-separated, without braces.
    bytes: Vec<u8>,
    /// Where each key sits in `bytes`, and a filter of their hashes so most
    /// keys need no comparison at all.
    keys: Vec<(usize, usize)>,
    filter: [u64; 4],
}

impl Extras {
    /// Forgets the record before.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.keys.clear();
        self.filter = [0; 4];
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The members written, for the record's `ExtraFields` object.
    pub(super) fn members(&self) -> &[u8] {
        &self.bytes
    }

    /// Adds `key` (escaped in the input if `key_escaped`) with its value's
    /// JSON text; returns whether the record had that key already. `hash`
    /// is the [`super::index::name_hash`] of the decoded key, so equal keys
    /// share it; keys are compared as written, which is canonical.
    pub(super) fn push(
        &mut self,
        key: &str,
        key_escaped: bool,
        hash: u64,
        text: &str,
        counts: &mut Counts,
    ) -> bool {
        if !self.bytes.is_empty() {
            self.bytes.push(b',');
        }
        let key_from = self.bytes.len();
        if key_escaped {
            // serde_json's escaping of a `&str` cannot fail.
            let _ = serde_json::to_writer(&mut self.bytes, key);
        } else {
            self.bytes.push(b'"');
            self.bytes.extend_from_slice(key.as_bytes());
            self.bytes.push(b'"');
        }
        let repeated = self.note_key((key_from, self.bytes.len()), hash);
        self.bytes.push(b':');
        let value = text.as_bytes();
        match value.first() {
            Some(b'{' | b'[') => match scan_nested(value) {
                Nested::Fine => self.bytes.extend_from_slice(value),
                Nested::TooDeep => {
                    counts.too_deep += 1;
                    // Escaping a `&str` cannot fail.
                    let _ = serde_json::to_writer(&mut self.bytes, text);
                }
                Nested::Rewrite => {
                    counts.numbers_as_text += rewrite_nested(value, &mut self.bytes);
                }
            },
            Some(b'-' | b'0'..=b'9') if !number_token_fits(value) => {
                counts.numbers_as_text += 1;
                self.bytes.push(b'"');
                self.bytes.extend_from_slice(value);
                self.bytes.push(b'"');
            }
            _ => self.bytes.extend_from_slice(value),
        }
        repeated
    }

    /// Records the key at `at`, saying whether the record had it already.
    fn note_key(&mut self, at: (usize, usize), hash: u64) -> bool {
        let key = &self.bytes[at.0..at.1];
        let bit = (hash >> 56) as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let repeated = self.filter[word] & mask != 0
            && self.keys.iter().any(|&(f, t)| self.bytes[f..t] == *key);
        self.filter[word] |= mask;
        self.keys.push(at);
        repeated
    }
}
