//! Custom properties as columns: each made a typed field of the record the
//! first time it appears (see [`crate::stream::PropertyType`] for the
//! names), and the registry that decides, once per stream and run, which
//! ones get a column.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::index::name_hash;
use super::values::{elements_fit, fits};
use crate::stream::PropertyType;

/// The longest name that becomes a column: PostgreSQL cuts identifiers at
/// 63 bytes, so two longer names could land in one column there.
pub const MAX_NAME_BYTES: usize = 63;

/// Whether a value's JSON text has the property's type (null always has).
pub(super) fn fits_property(kind: PropertyType, value: &[u8]) -> bool {
    if kind.is_list() {
        elements_fit(kind.kind(), value)
    } else {
        fits(kind.kind(), value)
    }
}

/// What becomes of a custom property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// A typed field of the record.
    Column(PropertyType),
    /// Kept in `ExtraFields` (over the cap, a name no target can take).
    Extra,
    /// Left out: the catalog de-selects it.
    Drop,
}

/// The custom properties of one stream in one run: which have columns,
/// shared by the shapers of every unit, so that every unit decides alike.
#[derive(Debug)]
pub struct Properties {
    registry: Mutex<Registry>,
}

#[derive(Debug)]
struct Registry {
    columns: HashMap<String, PropertyType>,
    /// Every column name lower-cased (the schema's fields too): a name that
    /// folds onto one of them would share its column in a target that
    /// ignores case.
    folded: HashSet<String>,
    deselected: BTreeSet<String>,
    cap: usize,
    /// Why names were kept out of the columns, each said once.
    warned: HashSet<String>,
    warned_cap: bool,
}

impl Properties {
    /// The registry of a stream whose schema has `fields`, with `known`
    /// properties already columns (from the state: they stay, even past
    /// the cap), at most `cap` columns in all, and `deselected` left out.
    pub fn new<'a>(
        fields: impl IntoIterator<Item = &'a str>,
        known: impl IntoIterator<Item = &'a str>,
        cap: usize,
        deselected: BTreeSet<String>,
    ) -> Properties {
        let mut registry = Registry {
            columns: HashMap::new(),
            folded: fields.into_iter().map(str::to_lowercase).collect(),
            deselected,
            cap,
            warned: HashSet::new(),
            warned_cap: false,
        };
        for name in known {
            if let Some(kind) = PropertyType::of(name) {
                registry.folded.insert(name.to_lowercase());
                registry.columns.insert(name.to_string(), kind);
            }
        }
        Properties {
            registry: Mutex::new(registry),
        }
    }

    /// What becomes of the property `name` (of type `kind`).
    pub(super) fn decide(&self, name: &str, kind: PropertyType) -> Decision {
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if r.deselected.contains(name) {
            return Decision::Drop;
        }
        if let Some(kind) = r.columns.get(name) {
            return Decision::Column(*kind);
        }
        if name.len() > MAX_NAME_BYTES {
            r.warn_once(name, || {
                format!(
                    "custom property {name} is kept in ExtraFields: its name is longer than {MAX_NAME_BYTES} bytes, which PostgreSQL cuts column names at"
                )
            });
            return Decision::Extra;
        }
        if !plain(name) {
            r.warn_once(name, || {
                format!(
                    "custom property {name:?} is kept in ExtraFields: its name has characters a column name should not"
                )
            });
            return Decision::Extra;
        }
        let folded = name.to_lowercase();
        if r.folded.contains(&folded) {
            r.warn_once(name, || {
                format!(
                    "custom property {name} is kept in ExtraFields: its name differs only in case from a column the stream has, and targets that ignore case would merge the two"
                )
            });
            return Decision::Extra;
        }
        if r.columns.len() >= r.cap {
            if !r.warned_cap {
                r.warned_cap = true;
                tracing::warn!(
                    "the stream has {} custom property columns, the most max_property_columns allows: {name} and any later new property are kept in ExtraFields",
                    r.columns.len()
                );
            }
            return Decision::Extra;
        }
        r.folded.insert(folded);
        r.columns.insert(name.to_string(), kind);
        Decision::Column(kind)
    }

    /// Warns, once per property and run, that a value of `name` did not
    /// have its type.
    pub(super) fn warn_misfit(&self, name: &str, kind: PropertyType) {
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.warn_once(name, || {
            format!(
                "custom property {name} has a value that is not of its type ({kind:?}); such values are kept in ExtraFields"
            )
        });
    }
}

/// Distinct names a shaper remembers besides its columns; past this, names
/// kept out of the columns are asked about again each time (only a body of
/// endless distinct names gets there).
const MAX_REMEMBERED: usize = 4096;

/// What a shaper found a key to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not a custom property.
    Other,
    /// A column; `repeated` if the record gave it already.
    Column { kind: PropertyType, repeated: bool },
    /// Kept in `ExtraFields`.
    Extra,
    /// Left out.
    Drop,
}

/// One shaper's view of a stream's [`Properties`]: each name decided once,
/// the columns a record gave (to notice a key given twice), and the columns
/// this unit wrote (for its SCHEMA).
pub(super) struct Columns {
    properties: Arc<Properties>,
    names: HashMap<Box<str>, Remembered, BuildHasherDefault<NameHasher>>,
    /// Counts records (and reparses), so a column's `last` says whether the
    /// record gave it already.
    record: u64,
}

struct Remembered {
    decision: Decision,
    /// The record that last gave this column.
    last: u64,
    /// Whether this unit wrote it.
    used: bool,
}

impl Columns {
    pub(super) fn new(properties: Arc<Properties>) -> Columns {
        Columns {
            properties,
            names: HashMap::default(),
            record: 0,
        }
    }

    /// A new record (or the same one parsed again) begins.
    pub(super) fn next_record(&mut self) {
        self.record += 1;
    }

    /// A new unit begins: none of its columns written yet.
    pub(super) fn start_unit(&mut self) {
        for name in self.names.values_mut() {
            name.used = false;
        }
    }

    /// What `key` is, noting a column as written by this record.
    #[inline]
    pub(super) fn look(&mut self, key: &str) -> Seen {
        let record = self.record;
        if let Some(r) = self.names.get_mut(key) {
            return r.seen(record);
        }
        let Some(kind) = PropertyType::of(key) else {
            return Seen::Other;
        };
        let decision = self.properties.decide(key, kind);
        let mut remembered = Remembered {
            decision,
            last: 0,
            used: false,
        };
        let seen = remembered.seen(record);
        if matches!(decision, Decision::Column(_)) || self.names.len() < MAX_REMEMBERED {
            self.names.insert(key.into(), remembered);
        }
        seen
    }

    /// Warns, once per run, that a value of column `key` was not its type.
    pub(super) fn misfit(&self, key: &str, kind: PropertyType) {
        self.properties.warn_misfit(key, kind);
    }

    /// The columns this unit wrote, by name.
    pub(super) fn used(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, r)| r.used)
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

impl Remembered {
    fn seen(&mut self, record: u64) -> Seen {
        match self.decision {
            Decision::Column(kind) => {
                let repeated = self.last == record;
                self.last = record;
                self.used = true;
                Seen::Column { kind, repeated }
            }
            Decision::Extra => Seen::Extra,
            Decision::Drop => Seen::Drop,
        }
    }
}

/// Hashes a name as the schema's field index does: its first and last eight
/// bytes and its length.
#[derive(Default)]
pub(super) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.rotate_left(5) ^ name_hash(bytes);
    }
}

impl Registry {
    fn warn_once(&mut self, name: &str, text: impl FnOnce() -> String) {
        if self.warned.insert(name.to_string()) {
            tracing::warn!("{}", text());
        }
    }
}

/// Whether a name is plain text a column can take: printable, and nothing
/// JSON must escape.
fn plain(name: &str) -> bool {
    !name
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fit_their_type() {
        use PropertyType::*;
        let yes: &[(PropertyType, &str)] = &[
            (Str, r#""a""#),
            (Int, "9223372036854775807"),
            (Real, "0.30000000000000004"),
            (Real, "2"),
            (Bool, "false"),
            (Date, r#""2024-01-01T00:00:00.000Z""#),
            (Strs, r#"["a", "b"]"#),
            (Ints, "[1,-2]"),
            (Reals, "[1.5,2]"),
            (Bools, "[true,false]"),
            (Dates, r#"["2024-01-01T00:00:00Z"]"#),
            (Ints, "[]"),
            (Int, "null"),
            (Strs, "null"),
        ];
        for (kind, v) in yes {
            assert!(fits_property(*kind, v.as_bytes()), "{kind:?} {v}");
        }
        let no: &[(PropertyType, &str)] = &[
            (Int, r#""12""#),
            (Int, "9223372036854775808"),
            (Int, "1.5"),
            (Real, "1e400"),
            (Bool, "1"),
            (Date, r#""2024-02-30T00:00:00Z""#),
            (Date, r#""yesterday""#),
            (Str, "[1]"),
            (Strs, r#""a""#),
            (Strs, r#"["a",1]"#),
            (Ints, "[1,null]"),
            (Ints, "[[1]]"),
            (Ints, "[1.5]"),
            (Reals, r#"[1,"2"]"#),
            (Bools, "[1]"),
            (Dates, r#"["x"]"#),
        ];
        for (kind, v) in no {
            assert!(!fits_property(*kind, v.as_bytes()), "{kind:?} {v}");
        }
    }

    fn registry(cap: usize) -> Properties {
        Properties::new(
            ["UserId", "ExtraFields"],
            ["user_old_str"],
            cap,
            BTreeSet::from(["user_secret_str".to_string()]),
        )
    }

    #[test]
    fn the_registry_decides_once_for_every_unit() {
        let p = registry(3);
        let col = |n: &str| p.decide(n, PropertyType::of(n).unwrap());
        assert_eq!(col("user_old_str"), Decision::Column(PropertyType::Str));
        assert_eq!(col("user_secret_str"), Decision::Drop);
        assert_eq!(col("user_plan_str"), Decision::Column(PropertyType::Str));
        // Differs only in case from a column: kept out.
        assert_eq!(col("user_Plan_str"), Decision::Extra);
        assert_eq!(col("evt_a_int"), Decision::Column(PropertyType::Int));
        // The cap counts the known ones too; a column stays one past it.
        assert_eq!(col("evt_b_int"), Decision::Extra);
        assert_eq!(col("evt_a_int"), Decision::Column(PropertyType::Int));
        let long = format!("evt_{}_str", "a".repeat(60));
        assert_eq!(col(&long), Decision::Extra);
        assert_eq!(col("evt_a\"b_str"), Decision::Extra);
    }
}
