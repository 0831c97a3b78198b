//! Finding a field's slot by its name: this runs for every key of every
//! record, so it is a small open-addressing table rather than a HashMap.

/// Field name to slot, by open addressing on a hash of the name's first and
/// last eight bytes and its length: names are short and trusted, and this
/// lookup runs for every key of every event.
pub(super) struct FieldIndex {
    table: Vec<u16>,
    names: Vec<Box<[u8]>>,
}

const EMPTY: u16 = u16::MAX;

/// A quick hash of a short name from its first and last eight bytes and length.
#[inline]
pub(super) fn name_hash(key: &[u8]) -> u64 {
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
    pub(super) fn new(names: &[&str]) -> FieldIndex {
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
    pub(super) fn get(&self, key: &str) -> Option<usize> {
        self.find(key).ok()
    }

    /// The slot of `key`, or the key's [`name_hash`] when it has none (the
    /// caller notes unknown keys by that hash).
    // Inlined into the shaper's per-key loop: a call here costs about 2% of
    // a whole run's instructions.
    #[inline]
    pub(super) fn find(&self, key: &str) -> Result<usize, u64> {
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
