//! The `EventKey`: a 128-bit hash of an event's identity fields, and the
//! numbering of events identical in all of them, so that re-reading a unit
//! gives every event the same key (see [`crate::stream::IDENTITY_FIELDS`]).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::values::canonical_into;

/// How many distinct identities a unit remembers to number repeats. Events
/// identical in every identity field get occurrence numbers 0, 1, 2, ... in
/// unit order; the window keeps memory flat however large the unit.
pub const REPEAT_WINDOW: usize = 8_192;

/// Hex digits of a key.
pub(super) const KEY_HEX_LEN: usize = 32;

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

/// Derives each event's key from the identity fields the shaper hands it.
pub(super) struct KeyMaker {
    /// Where each identity field's canonical bytes sit in `bytes`.
    fields: Vec<Option<(usize, usize)>>,
    /// The same for a field that stands in for an identity field the record
    /// lacks (a Segment Export row's `EventTargetSelector` for the bundles'
    /// `EventTargetSelectorTok`).
    stand_ins: Vec<Option<(usize, usize)>>,
    bytes: Vec<u8>,
    repeats: RepeatMap,
    order: VecDeque<u128>,
}

impl KeyMaker {
    /// A key over `fields` identity fields.
    pub(super) fn new(fields: usize) -> KeyMaker {
        KeyMaker {
            fields: vec![None; fields],
            stand_ins: vec![None; fields],
            bytes: Vec::new(),
            repeats: RepeatMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Forgets the repeats seen: a new unit starts numbering afresh.
    pub(super) fn start_unit(&mut self) {
        self.repeats.clear();
        self.order.clear();
    }

    /// Forgets the fields of the event before.
    pub(super) fn start_event(&mut self) {
        for field in self.fields.iter_mut().chain(&mut self.stand_ins) {
            *field = None;
        }
        self.bytes.clear();
    }

    /// Notes identity field number `field` of this event, by its JSON text.
    #[inline]
    pub(super) fn note(&mut self, field: usize, value: &[u8]) {
        let from = self.bytes.len();
        canonical_into(value, &mut self.bytes);
        self.fields[field] = Some((from, self.bytes.len()));
    }

    /// Notes the value of a field standing in for identity field `field`,
    /// used if the record does not have that one.
    #[inline]
    pub(super) fn note_stand_in(&mut self, field: usize, value: &[u8]) {
        let from = self.bytes.len();
        canonical_into(value, &mut self.bytes);
        self.stand_ins[field] = Some((from, self.bytes.len()));
    }

    /// The event's key: the hash of its identity fields, then of that and
    /// its repeat number. A stand-in is hashed exactly as the field it
    /// stands in for would be, so the keys of records that have the field
    /// itself do not change.
    pub(super) fn key(&mut self) -> u128 {
        let mut h = Xxh3::new();
        let fields = self.fields.iter().zip(&self.stand_ins);
        for (i, range) in fields.map(|(own, stand_in)| own.or(*stand_in)).enumerate() {
            h.update(&[i as u8]);
            match range {
                None => h.update(&[0]),
                Some((from, to)) => {
                    let bytes = &self.bytes[from..to];
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
                if self.order.len() == REPEAT_WINDOW
                    && let Some(old) = self.order.pop_front()
                {
                    self.repeats.remove(&old);
                }
                self.order.push_back(identity);
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
}

/// Writes `value` as [`KEY_HEX_LEN`] lower-case hex digits.
pub(super) fn write_hex(value: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = (KEY_HEX_LEN - 1 - i) * 4;
        *byte = HEX[((value >> shift) & 0xf) as usize];
    }
}
