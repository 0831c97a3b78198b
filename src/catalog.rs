//! Streams' schemas, the discovered catalog, and reading stream and field
//! selection back from a catalog file; all over [`STREAMS`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::json_file::{json_kind, read_json_object};
pub use crate::stream::FieldKind;
use crate::stream::{EVENTS, PropertyType, ReplicationMethod, STREAMS, StreamDef};

/// One field of the schema.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
}

/// A stream's parsed schema: its JSON and its fields in order.
#[derive(Debug, Clone)]
pub struct Schema {
    pub stream: &'static StreamDef,
    pub json: Map<String, Value>,
    pub fields: Vec<Field>,
}

impl Schema {
    /// The compiled-in events schema.
    pub fn events() -> Schema {
        Schema::of(&EVENTS)
    }

    /// A stream's compiled-in schema.
    pub fn of(stream: &'static StreamDef) -> Schema {
        // The schema is part of the binary and covered by tests, so a parse
        // failure here is a build defect, not an input error.
        let json: Map<String, Value> =
            serde_json::from_str(stream.schema).expect("compiled-in schemas are valid JSON");
        let props = json["properties"]
            .as_object()
            .expect("schema has properties");
        let fields = props
            .iter()
            .map(|(name, prop)| Field {
                name: name.clone(),
                kind: kind_of(prop),
            })
            .collect();
        Schema {
            stream,
            json,
            fields,
        }
    }

    /// The schema restricted to the selected fields, for the SCHEMA message.
    pub fn restricted(&self, selection: &Selection) -> Value {
        let mut json = self.json.clone();
        if let Some(Value::Object(props)) = json.get_mut("properties") {
            props.retain(|name, _| selection.has_field(name));
        }
        Value::Object(json)
    }

    /// This stream's entry in the discovered catalog.
    fn catalog_entry(&self) -> Value {
        let def = self.stream;
        let mut stream_md = json!({
            "inclusion": "available",
            "selected-by-default": def.selected_by_default,
            "table-key-properties": def.key_properties,
            "forced-replication-method": def.replication_method.name(),
        });
        if let Some(key) = def.replication_key {
            stream_md["valid-replication-keys"] = json!([key]);
            stream_md["replication-key"] = json!(key);
        }
        // Read whole each run, its records versioned and the version
        // activated after the last (emit_activate_version_messages).
        if def.replication_method == ReplicationMethod::FullTable {
            stream_md["activate-version"] = json!(true);
        }
        let mut metadata = vec![json!({"breadcrumb": [], "metadata": stream_md})];
        for field in &self.fields {
            let inclusion = if def.is_automatic(&field.name) {
                "automatic"
            } else {
                "available"
            };
            metadata.push(json!({
                "breadcrumb": ["properties", field.name],
                "metadata": {"inclusion": inclusion, "selected-by-default": true}
            }));
        }
        let mut entry = json!({
            "tap_stream_id": def.name,
            "stream": def.name,
            "schema": Value::Object(self.json.clone()),
            "key_properties": def.key_properties,
        });
        if let Some(key) = def.replication_key {
            entry["replication_key"] = json!(key);
        }
        entry["replication_method"] = json!(def.replication_method.name());
        entry["metadata"] = Value::Array(metadata);
        entry
    }
}

/// The catalog printed by `--discover`: every stream the tap has.
#[cfg(test)]
pub(crate) fn catalog() -> Value {
    catalog_selecting(&[])
}

/// The catalog, with the streams named in `also` selected by default too.
pub(crate) fn catalog_selecting(also: &[&str]) -> Value {
    let streams: Vec<Value> = STREAMS
        .iter()
        .map(|def| {
            let mut entry = Schema::of(def).catalog_entry();
            if also.contains(&def.name) {
                entry["metadata"][0]["metadata"]["selected-by-default"] = json!(true);
            }
            entry
        })
        .collect();
    json!({ "streams": streams })
}

fn kind_of(prop: &Value) -> FieldKind {
    let types: Vec<&str> = match &prop["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"integer") {
        FieldKind::Integer
    } else if types.contains(&"number") {
        FieldKind::Number
    } else if types.contains(&"boolean") {
        FieldKind::Boolean
    } else if types.contains(&"object") {
        FieldKind::Object
    } else if types.contains(&"array") {
        FieldKind::Array
    } else if prop["format"] == "date-time" {
        FieldKind::DateTime
    } else {
        FieldKind::String
    }
}

/// The selected fields of one selected stream, and the custom properties
/// the catalog leaves out.
#[derive(Debug, Clone)]
pub struct Selection {
    fields: BTreeSet<String>,
    deselected_properties: BTreeSet<String>,
}

impl Selection {
    /// Every field of the schema: the behaviour without a catalog.
    pub fn all(schema: &Schema) -> Selection {
        Selection {
            fields: schema.fields.iter().map(|f| f.name.clone()).collect(),
            deselected_properties: BTreeSet::new(),
        }
    }

    /// Whether a field is in the output.
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.contains(name)
    }

    /// The custom properties the catalog de-selects by name: left out of
    /// the output, as columns and from `ExtraFields`.
    pub fn deselected_properties(&self) -> &BTreeSet<String> {
        &self.deselected_properties
    }

    /// The selection of `schema`'s stream in a catalog file; no field when
    /// the catalog does not select the stream.
    #[cfg(test)]
    pub(crate) fn from_catalog_file(path: &Path, schema: &Schema) -> Result<Selection> {
        Ok(Selections::from_catalog_file(path)?
            .get(schema.stream.name)
            .cloned()
            .unwrap_or(Selection {
                fields: BTreeSet::new(),
                deselected_properties: BTreeSet::new(),
            }))
    }
}

/// What to sync: the selected streams, each with its selected fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selections {
    streams: BTreeMap<&'static str, Selection>,
}

impl Selections {
    /// Every stream selected by default, with all its fields: the behaviour
    /// without a catalog.
    pub(crate) fn all() -> Selections {
        let streams = STREAMS
            .iter()
            .filter(|def| def.selected_by_default)
            .map(|def| (def.name, Selection::all(&Schema::of(def))))
            .collect();
        Selections { streams }
    }

    /// The same, with the streams named in `also` selected too.
    pub(crate) fn all_and(also: &[&str]) -> Selections {
        let mut selections = Selections::all();
        for def in STREAMS.iter().filter(|def| also.contains(&def.name)) {
            selections
                .streams
                .insert(def.name, Selection::all(&Schema::of(def)));
        }
        selections
    }

    /// The stream's selection, if the stream is selected.
    pub(crate) fn get(&self, stream: &str) -> Option<&Selection> {
        self.streams.get(stream)
    }

    /// Reads selection from a catalog file.
    pub(crate) fn from_catalog_file(path: &Path) -> Result<Selections> {
        let map = read_json_object(path, "catalog")?;
        Selections::from_catalog(&map)
            .map_err(|why| Error::Input(format!("catalog file '{}': {why}", path.display())))
    }

    fn from_catalog(catalog: &Map<String, Value>) -> std::result::Result<Selections, String> {
        let streams = match catalog.get("streams") {
            Some(Value::Array(streams)) => streams,
            Some(other) => {
                return Err(format!(
                    "key 'streams' must be an array, not a {}",
                    json_kind(other)
                ));
            }
            None => return Err("key 'streams' is missing".to_string()),
        };
        let mut selections = Selections::default();
        for (i, entry) in streams.iter().enumerate() {
            let Value::Object(entry) = entry else {
                return Err(format!("streams[{i}] must be an object"));
            };
            let id = entry
                .get("tap_stream_id")
                .or_else(|| entry.get("stream"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("streams[{i}] has no 'tap_stream_id'"))?;
            let metadata = parse_metadata(entry, i)?;
            let stream_md = metadata.iter().find(|(crumb, _)| crumb.is_empty());
            let legacy_flag = entry
                .get("selected")
                .or_else(|| entry.get("schema").and_then(|s| s.get("selected")));
            let stream_selected = stream_md
                .and_then(|(_, md)| flag(md.get("selected")))
                .or_else(|| flag(legacy_flag))
                .or_else(|| stream_md.and_then(|(_, md)| flag(md.get("selected-by-default"))))
                .unwrap_or(false);

            let Some(def) = crate::stream::find(id) else {
                if stream_selected {
                    return Err(format!(
                        "stream '{id}' is selected but this tap has no such stream (it has: {})",
                        crate::stream::names()
                    ));
                }
                tracing::warn!("catalog: ignoring unknown, unselected stream '{id}'");
                continue;
            };
            let schema = Schema::of(def);

            let mut fields = BTreeSet::new();
            for field in &schema.fields {
                let md = metadata.iter().find(|(crumb, _)| {
                    crumb.len() == 2 && crumb[0] == "properties" && crumb[1] == field.name
                });
                let selected = if def.is_automatic(&field.name) {
                    true
                } else if let Some((_, md)) = md {
                    match md.get("inclusion").and_then(Value::as_str) {
                        Some("automatic") => true,
                        Some("unsupported") => false,
                        _ => flag(md.get("selected"))
                            .or_else(|| flag(md.get("selected-by-default")))
                            .unwrap_or(stream_selected),
                    }
                } else {
                    // Without an entry the field follows its stream, as Meltano SDK taps do.
                    stream_selected
                };
                if selected {
                    fields.insert(field.name.clone());
                }
            }
            let mut deselected_properties = BTreeSet::new();
            for (crumb, md) in &metadata {
                if crumb.len() != 2
                    || crumb[0] != "properties"
                    || schema.fields.iter().any(|f| f.name == crumb[1])
                {
                    continue;
                }
                // A custom property: not in the schema until it appears.
                let property = def.custom_properties && PropertyType::of(&crumb[1]).is_some();
                match flag(md.get("selected")) {
                    Some(false) if property => {
                        deselected_properties.insert(crumb[1].clone());
                    }
                    Some(true) if !property => {
                        return Err(format!(
                            "stream '{id}' selects field '{}', which the {} schema does not have; run --discover for the current field list",
                            crumb[1], def.name
                        ));
                    }
                    _ => {}
                }
            }
            // A stream listed twice: the last entry counts.
            if stream_selected {
                selections.streams.insert(
                    def.name,
                    Selection {
                        fields,
                        deselected_properties,
                    },
                );
            } else {
                selections.streams.remove(def.name);
            }
        }
        Ok(selections)
    }
}

type Metadata = Vec<(Vec<String>, Map<String, Value>)>;

fn parse_metadata(entry: &Map<String, Value>, i: usize) -> std::result::Result<Metadata, String> {
    let list = match entry.get("metadata") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(format!("streams[{i}].metadata must be an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, item) in list.iter().enumerate() {
        let crumb = item
            .get("breadcrumb")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("streams[{i}].metadata[{j}] has no 'breadcrumb' array"))?;
        let crumb = crumb
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("streams[{i}].metadata[{j}].breadcrumb must hold strings"))?;
        let md = match item.get("metadata") {
            Some(Value::Object(md)) => md.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(format!(
                    "streams[{i}].metadata[{j}].metadata must be an object"
                ));
            }
        };
        out.push((crumb, md));
    }
    Ok(out)
}

/// A selection flag: `true`/`false`, or the strings old tools wrote.
fn flag(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::EXTRA_FIELD;

    /// The events stream's selection, `None` when it is not selected.
    fn select(catalog: Value) -> std::result::Result<Option<Selection>, String> {
        Selections::from_catalog(catalog.as_object().unwrap()).map(|s| s.get("events").cloned())
    }

    #[test]
    fn schema_has_every_documented_field_with_types() {
        let schema = Schema::events();
        let kind = |n: &str| schema.fields.iter().find(|f| f.name == n).unwrap().kind;
        assert_eq!(kind("UserId"), FieldKind::Integer);
        assert_eq!(kind("EventStart"), FieldKind::DateTime);
        assert_eq!(kind("EventCumulativeLayoutShift"), FieldKind::Number);
        assert_eq!(kind("PageUrl"), FieldKind::String);
        assert_eq!(kind(EXTRA_FIELD), FieldKind::Object);
        assert_eq!(schema.fields.len(), 72);
    }

    #[test]
    fn discovered_catalog_selects_everything_when_fed_back() {
        let schema = Schema::events();
        let mut catalog = catalog();
        catalog["streams"][0]["metadata"][0]["metadata"]["selected"] = json!(true);
        let sel = select(catalog).unwrap();
        assert!(sel.is_some());
        let sel = sel.unwrap();
        assert!(schema.fields.iter().all(|f| sel.has_field(&f.name)));
    }

    #[test]
    fn field_selection_keeps_automatic_fields() {
        let sel = select(json!({"streams": [{"tap_stream_id": "events", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": "true"}},
            {"breadcrumb": ["properties", "PageUrl"], "metadata": {"selected": false}},
            {"breadcrumb": ["properties", "EventKey"], "metadata": {"selected": false}},
            {"breadcrumb": ["properties", "UserId"], "metadata": {"selected": true}}
        ]}]}))
        .unwrap();
        assert!(sel.is_some());
        let sel = sel.unwrap();
        assert!(!sel.has_field("PageUrl"));
        assert!(
            sel.has_field("EventKey") && sel.has_field("EventStart") && sel.has_field("UserId")
        );
        // No entry: follows the stream.
        assert!(sel.has_field("PageName"));
    }

    #[test]
    fn unselected_stream_selects_nothing() {
        let sel = select(json!({"streams": [{"tap_stream_id": "events", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": false, "selected-by-default": true}}
        ]}]}))
        .unwrap();
        assert!(sel.is_none());
        assert!(select(json!({"streams": []})).unwrap().is_none());
    }

    #[test]
    fn unknown_streams_and_fields_are_errors_when_selected() {
        let err = select(
            json!({"streams": [{"tap_stream_id": "sessions", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": true}}]}]}),
        )
        .unwrap_err();
        assert!(err.contains("'sessions'"), "{err}");
        let err = select(json!({"streams": [{"tap_stream_id": "events", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": true}},
            {"breadcrumb": ["properties", "Nope"], "metadata": {"selected": true}}]}]}))
        .unwrap_err();
        assert!(err.contains("'Nope'"), "{err}");
        assert!(select(json!({"streams": {}})).is_err());
    }
}
