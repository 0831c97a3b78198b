//! The bookmark: reading the state file (ours and the Python tap's) and
//! producing the STATE value written after each bundle.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::config::{json_kind, read_json_object};
use crate::error::{Error, Result};
use crate::time::{format_rfc3339, parse_datetime};

/// The stream whose bookmark this tap keeps.
pub const STREAM: &str = "events";

/// How far the sync has got: every bundle ending at or before `stop` is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookmark {
    /// End of the last bundle whose records were all written.
    pub stop: DateTime<Utc>,
    /// Id of that bundle, when known (the Python tap did not record it).
    pub bundle_id: Option<String>,
}

/// The state document: the bookmark plus whatever else the input state held,
/// which is passed through untouched.
#[derive(Debug, Clone, Default)]
pub struct State {
    other: Map<String, Value>,
    bookmark: Option<Bookmark>,
}

impl State {
    /// Reads a state file. Accepts the conventional
    /// `{"bookmarks": {"events": {"bundle_stop": .., "bundle_id": ..}}}` and the
    /// Python tap-fullstory 1.x form `{"events": "<date-time>"}`; when both are
    /// present the later instant wins.
    pub fn load(path: &Path) -> Result<State> {
        let map = read_json_object(path, "state")?;
        State::from_map(map)
            .map_err(|why| Error::Input(format!("state file '{}': {why}", path.display())))
    }

    fn from_map(mut map: Map<String, Value>) -> std::result::Result<State, String> {
        // A whole STATE message saved by mistake: its value is the state.
        if map.get("type").and_then(Value::as_str) == Some("STATE")
            && let Some(Value::Object(value)) = map.remove("value")
        {
            map = value;
        }
        let legacy = match map.remove(STREAM) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(Bookmark {
                stop: parse_datetime(&text)
                    .ok_or_else(|| format!("key '{STREAM}': {text:?} is not a date-time"))?,
                bundle_id: None,
            }),
            Some(other) => {
                return Err(format!(
                    "key '{STREAM}' must be a date-time string, not a {}",
                    json_kind(&other)
                ));
            }
        };

        let current = match map.get_mut("bookmarks") {
            None | Some(Value::Null) => None,
            Some(Value::Object(bookmarks)) => match bookmarks.remove(STREAM) {
                None | Some(Value::Null) => None,
                Some(Value::Object(entry)) => Some(parse_entry(&entry)?),
                Some(other) => {
                    return Err(format!(
                        "key 'bookmarks.{STREAM}' must be an object, not a {}",
                        json_kind(&other)
                    ));
                }
            },
            Some(other) => {
                return Err(format!(
                    "key 'bookmarks' must be an object, not a {}",
                    json_kind(other)
                ));
            }
        };

        let bookmark = match (legacy, current) {
            (Some(a), Some(b)) => Some(if a.stop > b.stop { a } else { b }),
            (a, b) => a.or(b),
        };
        Ok(State {
            other: map,
            bookmark,
        })
    }

    /// The bookmark, if the state had one.
    pub fn bookmark(&self) -> Option<&Bookmark> {
        self.bookmark.as_ref()
    }

    /// Moves the bookmark to a finished bundle.
    pub fn advance(&mut self, bookmark: Bookmark) {
        self.bookmark = Some(bookmark);
    }

    /// The value of a STATE message.
    pub fn to_value(&self) -> Value {
        let mut out = self.other.clone();
        let bookmarks = out
            .entry("bookmarks")
            .or_insert_with(|| Value::Object(Map::new()));
        if !bookmarks.is_object() {
            *bookmarks = Value::Object(Map::new());
        }
        if let (Some(b), Value::Object(map)) = (&self.bookmark, bookmarks) {
            let mut entry = json!({
                "replication_key": "EventStart",
                "bundle_stop": format_rfc3339(b.stop),
            });
            if let Some(id) = &b.bundle_id {
                entry["bundle_id"] = Value::String(id.clone());
            }
            map.insert(STREAM.to_string(), entry);
        }
        out.entry("currently_syncing").or_insert(Value::Null);
        Value::Object(out)
    }
}

fn parse_entry(entry: &Map<String, Value>) -> std::result::Result<Bookmark, String> {
    let stop = match entry.get("bundle_stop") {
        Some(Value::String(text)) => parse_datetime(text).ok_or_else(|| {
            format!("key 'bookmarks.{STREAM}.bundle_stop': {text:?} is not a date-time")
        })?,
        Some(other) => {
            return Err(format!(
                "key 'bookmarks.{STREAM}.bundle_stop' must be a date-time string, not a {}",
                json_kind(other)
            ));
        }
        None => return Err(format!("key 'bookmarks.{STREAM}.bundle_stop' is missing")),
    };
    let bundle_id = match entry.get("bundle_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                "key 'bookmarks.{STREAM}.bundle_id' must be a string, not a {}",
                json_kind(other)
            ));
        }
    };
    Ok(Bookmark { stop, bundle_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> std::result::Result<State, String> {
        State::from_map(value.as_object().unwrap().clone())
    }

    #[test]
    fn reads_python_tap_state() {
        let state = parse(json!({"events": "2019-07-16T00:00:00.000000Z"})).unwrap();
        let b = state.bookmark().unwrap();
        assert_eq!(format_rfc3339(b.stop), "2019-07-16T00:00:00Z");
        assert_eq!(b.bundle_id, None);
        // Naive timestamps (no offset) are UTC.
        let naive = parse(json!({"events": "2019-07-16T00:00:00"})).unwrap();
        assert_eq!(naive.bookmark(), state.bookmark());
    }

    #[test]
    fn round_trips_our_state() {
        let mut state = State::default();
        state.advance(Bookmark {
            stop: parse_datetime("2024-01-02T00:00:00Z").unwrap(),
            bundle_id: Some("170415360048".into()),
        });
        let value = state.to_value();
        assert_eq!(
            value,
            json!({"bookmarks": {"events": {"replication_key": "EventStart", "bundle_stop": "2024-01-02T00:00:00Z", "bundle_id": "170415360048"}}, "currently_syncing": null})
        );
        let back = parse(value).unwrap();
        assert_eq!(back.bookmark(), state.bookmark());
    }

    #[test]
    fn later_of_legacy_and_current_wins_and_other_keys_survive() {
        let state = parse(json!({
            "events": "2024-01-05T00:00:00Z",
            "bookmarks": {"events": {"bundle_stop": "2024-01-03T00:00:00Z"}, "other": {"x": 1}},
            "extra": true
        }))
        .unwrap();
        assert_eq!(
            format_rfc3339(state.bookmark().unwrap().stop),
            "2024-01-05T00:00:00Z"
        );
        let out = state.to_value();
        assert_eq!(out["extra"], json!(true));
        assert_eq!(out["bookmarks"]["other"], json!({"x": 1}));
        assert!(out.get("events").is_none());
    }

    #[test]
    fn accepts_a_whole_state_message() {
        let state = parse(json!({"type": "STATE", "value": {"bookmarks": {"events": {"bundle_stop": "2024-01-03T00:00:00Z"}}}})).unwrap();
        assert_eq!(
            format_rfc3339(state.bookmark().unwrap().stop),
            "2024-01-03T00:00:00Z"
        );
        assert!(state.to_value().get("type").is_none());
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert!(parse(json!({"events": 5})).is_err());
        assert!(parse(json!({"events": "later"})).is_err());
        assert!(parse(json!({"bookmarks": []})).is_err());
        assert!(parse(json!({"bookmarks": {"events": {"bundle_stop": 1}}})).is_err());
        assert!(parse(json!({"bookmarks": {"events": {}}})).is_err());
        assert!(parse(json!({})).unwrap().bookmark().is_none());
    }
}
