//! The state: one bookmark per stream, each in its stream's own shape,
//! read from the state file (ours and the Python tap's) and written as the
//! STATE value after each unit. Keys the tap does not know pass through.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::json_file::{json_kind, read_json_object};
use crate::time::{CLOCK_SKEW_SECS, format_rfc3339};

use crate::stream::{PropertyType, STREAMS, StreamDef};

mod bookmark;

use bookmark::read_bookmark;
pub(crate) use bookmark::{
    Bookmark, BundleBookmark, LastUpdated, PendingExport, PlatformMarks, WindowBookmark,
};

/// The state document: the bookmarks of the tap's streams plus whatever else
/// the input state held, which is passed through untouched.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    other: Map<String, Value>,
    /// In [`STREAMS`] order, which is the order they are written in.
    bookmarks: Vec<(&'static StreamDef, Bookmark)>,
    /// The custom property columns each stream has declared in a SCHEMA,
    /// kept in its bookmark entry (`"properties": [...]`) so the next run's
    /// first SCHEMA is as wide.
    properties: Vec<(&'static StreamDef, BTreeSet<String>)>,
}

impl State {
    /// Reads a state file. Accepts the conventional
    /// `{"bookmarks": {"events": {"bundle_stop": .., "bundle_id": ..}}}` and the
    /// Python tap-fullstory 1.x form `{"events": "<date-time>"}`; when both are
    /// present the later instant wins.
    ///
    /// A bookmark later than `now` (give or take clock skew) is refused: it
    /// would make every run sync nothing.
    pub(crate) fn load(path: &Path, now: DateTime<Utc>) -> Result<State> {
        let map = read_json_object(path, "state")?;
        State::from_map(map)
            .and_then(|state| state.check_not_future(now).map(|()| state))
            .map_err(|why| Error::Input(format!("state file '{}': {why}", path.display())))
    }

    fn check_not_future(&self, now: DateTime<Utc>) -> std::result::Result<(), String> {
        let limit = now + chrono::Duration::seconds(CLOCK_SKEW_SECS);
        for (stream, bookmark) in &self.bookmarks {
            if let Bookmark::Updated(marks) = bookmark
                && let Some((platform, mark)) = marks.0.iter().find(|(_, m)| m.at > limit)
            {
                return Err(format!(
                    "the '{}' bookmark of the {platform} platform, lastUpdated {}, is in the future: no version could ever be newer, so none would be written again; set it back to the newest version synced, or remove it",
                    stream.name, mark.text
                ));
            }
            match bookmark.done_until() {
                Some(end) if end > limit => {
                    return Err(format!(
                        "the '{}' bookmark {} is in the future: bundles and export windows are synced only after they end, so no run would ever sync anything; set it back to the end of the last one synced, or remove it",
                        stream.name,
                        format_rfc3339(end)
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn from_map(mut map: Map<String, Value>) -> std::result::Result<State, String> {
        // A whole STATE message saved by mistake: its value is the state.
        if map.get("type").and_then(Value::as_str) == Some("STATE")
            && let Some(Value::Object(value)) = map.remove("value")
        {
            map = value;
        }
        let mut bookmarks = Vec::new();
        let mut properties = Vec::new();
        for stream in STREAMS {
            if stream.custom_properties
                && let Some(names) = read_properties(&mut map, stream)?
            {
                properties.push((*stream, names));
            }
            if let Some(bookmark) = read_bookmark(&mut map, stream)? {
                bookmarks.push((*stream, bookmark));
            }
        }
        Ok(State {
            other: map,
            bookmarks,
            properties,
        })
    }

    /// The custom property columns the stream has declared so far.
    pub(crate) fn properties(&self, stream: &StreamDef) -> Option<&BTreeSet<String>> {
        self.properties
            .iter()
            .find(|(def, _)| def.name == stream.name)
            .map(|(_, names)| names)
    }

    /// Adds the columns `names` to the stream's; true if any was new.
    pub(crate) fn add_properties<'n>(
        &mut self,
        stream: &'static StreamDef,
        names: impl IntoIterator<Item = &'n str>,
    ) -> bool {
        let mut names = names.into_iter().peekable();
        if names.peek().is_none() {
            return false;
        }
        let known = match self
            .properties
            .iter_mut()
            .find(|(def, _)| def.name == stream.name)
        {
            Some((_, known)) => known,
            None => {
                self.properties.push((stream, BTreeSet::new()));
                &mut self.properties.last_mut().expect("just pushed").1
            }
        };
        let mut grew = false;
        for name in names {
            if !known.contains(name) {
                known.insert(name.to_string());
                grew = true;
            }
        }
        grew
    }

    /// The stream's bookmark, if the state has one.
    pub(crate) fn bookmark(&self, stream: &StreamDef) -> Option<&Bookmark> {
        self.bookmarks
            .iter()
            .find(|(def, _)| def.name == stream.name)
            .map(|(_, b)| b)
    }

    /// Moves the stream's bookmark past a committed unit.
    pub(crate) fn advance(&mut self, stream: &'static StreamDef, bookmark: Bookmark) {
        match self
            .bookmarks
            .iter_mut()
            .find(|(def, _)| def.name == stream.name)
        {
            Some((_, b)) => *b = bookmark,
            None => {
                self.bookmarks.push((stream, bookmark));
                let order = |def: &StreamDef| STREAMS.iter().position(|s| s.name == def.name);
                self.bookmarks.sort_by_key(|(def, _)| order(def));
            }
        }
    }

    /// The value of a STATE message.
    pub(crate) fn to_value(&self) -> Value {
        let mut out = self.other.clone();
        let bookmarks = out
            .entry("bookmarks")
            .or_insert_with(|| Value::Object(Map::new()));
        if !bookmarks.is_object() {
            *bookmarks = Value::Object(Map::new());
        }
        if let Value::Object(map) = bookmarks {
            for (stream, bookmark) in &self.bookmarks {
                let mut entry = bookmark.to_value(stream);
                if let (Some(names), Value::Object(entry)) = (self.properties(stream), &mut entry)
                    && !names.is_empty()
                {
                    entry.insert("properties".into(), json!(names));
                }
                map.insert(stream.name.to_string(), entry);
            }
        }
        // Streams are synced one after another, each STATE written between
        // units: none is ever mid-way when one is written.
        out.insert("currently_syncing".into(), Value::Null);
        Value::Object(out)
    }
}

/// Takes the custom property columns out of `stream`'s bookmark entry:
/// `"properties": ["user_plan_str", ...]`, each a custom property name.
fn read_properties(
    map: &mut Map<String, Value>,
    stream: &StreamDef,
) -> std::result::Result<Option<BTreeSet<String>>, String> {
    let name = stream.name;
    let Some(Value::Object(entry)) = map
        .get_mut("bookmarks")
        .and_then(|b| b.as_object_mut())
        .and_then(|b| b.get_mut(name))
    else {
        return Ok(None);
    };
    let list = match entry.remove("properties") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(format!(
                "key 'bookmarks.{name}.properties' must be an array of custom property names, not a {}",
                json_kind(&other)
            ));
        }
    };
    let mut names = BTreeSet::new();
    for item in list {
        match item {
            Value::String(p) if PropertyType::of(&p).is_some() => {
                names.insert(p);
            }
            other => {
                return Err(format!(
                    "key 'bookmarks.{name}.properties' holds {other}, which is not a custom property name (<prefix>_<name>_<type>)"
                ));
            }
        }
    }
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{EVENTS, WEB};
    use crate::time::parse_datetime;

    /// The events stream's bookmark.
    fn events(state: &State) -> Option<&BundleBookmark> {
        state.bookmark(&EVENTS).and_then(Bookmark::bundle)
    }

    #[test]
    fn window_bookmarks_round_trip_with_every_export_in_flight() {
        let t = |s: &str| parse_datetime(s).unwrap();
        let mut state = State::default();
        let pending = |day: u32, op: &str, segment: Option<&str>| PendingExport {
            start: t(&format!("2024-01-{day:02}T00:00:00Z")),
            end: t(&format!("2024-01-{:02}T00:00:00Z", day + 1)),
            operation_id: op.into(),
            segment_id: segment.map(str::to_string),
            scope: None,
        };
        let bookmark = Bookmark::Window(WindowBookmark {
            end: Some(t("2024-01-02T00:00:00Z")),
            exports: vec![
                pending(2, "op-1", Some("everyone")),
                pending(3, "op-2", Some("everyone")),
            ],
        });
        state.advance(&EVENTS, bookmark.clone());
        let value = state.to_value();
        assert_eq!(
            value["bookmarks"]["events"],
            json!({"replication_key": "EventStart", "window_end": "2024-01-02T00:00:00Z",
                   "exports": [
                       {"window_start": "2024-01-02T00:00:00Z", "window_end": "2024-01-03T00:00:00Z", "operation_id": "op-1", "segment_id": "everyone"},
                       {"window_start": "2024-01-03T00:00:00Z", "window_end": "2024-01-04T00:00:00Z", "operation_id": "op-2", "segment_id": "everyone"}]})
        );
        let back = parse(value).unwrap();
        assert_eq!(back.bookmark(&EVENTS), Some(&bookmark));
        // The single export of an older state is read as a list of one.
        let old = parse(json!({"bookmarks": {"events": {"window_end": "2024-01-02T00:00:00Z",
            "export": {"window_start": "2024-01-02T00:00:00Z", "window_end": "2024-01-03T00:00:00Z", "operation_id": "op-9"}}}}))
        .unwrap();
        assert_eq!(
            old.bookmark(&EVENTS),
            Some(&Bookmark::Window(WindowBookmark {
                end: Some(t("2024-01-02T00:00:00Z")),
                exports: vec![pending(2, "op-9", None)],
            }))
        );
        assert!(
            parse(json!({"bookmarks": {"events": {"export": {"operation_id": "x"}}}})).is_err()
        );
        assert!(
            parse(json!({"bookmarks": {"events": {"exports": [{"operation_id": "x"}]}}})).is_err()
        );
        assert!(parse(json!({"bookmarks": {"events": {"exports": {}}}})).is_err());
        assert!(parse(json!({"bookmarks": {"events": {"window_end": 5}}})).is_err());
        assert!(
            parse(json!({"bookmarks": {"events": {"replication_key": "EventStart"}}})).is_err()
        );
    }

    fn parse(value: Value) -> std::result::Result<State, String> {
        State::from_map(value.as_object().unwrap().clone())
    }

    #[test]
    fn reads_python_tap_state() {
        let state = parse(json!({"events": "2019-07-16T00:00:00.000000Z"})).unwrap();
        let b = events(&state).unwrap();
        assert_eq!(format_rfc3339(b.stop), "2019-07-16T00:00:00Z");
        assert_eq!(b.bundle_id, None);
        // Naive timestamps (no offset) are UTC.
        let naive = parse(json!({"events": "2019-07-16T00:00:00"})).unwrap();
        assert_eq!(events(&naive), events(&state));
    }

    #[test]
    fn round_trips_our_state() {
        let mut state = State::default();
        state.advance(
            &EVENTS,
            Bookmark::Bundle(BundleBookmark {
                stop: parse_datetime("2024-01-02T00:00:00Z").unwrap(),
                bundle_id: Some("170415360048".into()),
            }),
        );
        let value = state.to_value();
        assert_eq!(
            value,
            json!({"bookmarks": {"events": {"replication_key": "EventStart", "bundle_stop": "2024-01-02T00:00:00Z", "bundle_id": "170415360048"}}, "currently_syncing": null})
        );
        let back = parse(value).unwrap();
        assert_eq!(events(&back), events(&state));
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
            format_rfc3339(events(&state).unwrap().stop),
            "2024-01-05T00:00:00Z"
        );
        let out = state.to_value();
        assert_eq!(out["extra"], json!(true));
        // A finished run is never mid-way through a stream, whatever the
        // input said.
        let mid = parse(json!({"currently_syncing": "users"})).unwrap();
        assert_eq!(mid.to_value()["currently_syncing"], Value::Null);
        assert_eq!(out["bookmarks"]["other"], json!({"x": 1}));
        assert!(out.get("events").is_none());

        // Numbers another tool kept keep their text, however long.
        let text = r#"{"bookmarks":{"other_stream":{"n":123456789012345678901234567890,"f":1.10,"e":1e+2}},"seq":-0.0}"#;
        let state = parse(serde_json::from_str(text).unwrap()).unwrap();
        let out = serde_json::to_string(&state.to_value()).unwrap();
        assert!(
            out.contains(
                r#""other_stream":{"n":123456789012345678901234567890,"f":1.10,"e":1e+2}"#
            ) && out.contains(r#""seq":-0.0"#),
            "{out}"
        );
    }

    #[test]
    fn accepts_a_whole_state_message() {
        let state = parse(json!({"type": "STATE", "value": {"bookmarks": {"events": {"bundle_stop": "2024-01-03T00:00:00Z"}}}})).unwrap();
        assert_eq!(
            format_rfc3339(events(&state).unwrap().stop),
            "2024-01-03T00:00:00Z"
        );
        assert!(state.to_value().get("type").is_none());
    }

    #[test]
    fn refuses_a_bookmark_in_the_future() {
        let now = parse_datetime("2026-01-01T00:00:00Z").unwrap();
        let at = |stop: &str| {
            parse(json!({"bookmarks": {"events": {"bundle_stop": stop}}}))
                .unwrap()
                .check_not_future(now)
        };
        assert!(at("2026-01-01T01:00:00Z").is_ok());
        let err = at("9999-01-01T00:00:00Z").unwrap_err();
        assert!(err.contains("'events'") && err.contains("future"), "{err}");
        let legacy = parse(json!({"events": "2026-01-01T01:00:01Z"})).unwrap();
        assert!(legacy.check_not_future(now).is_err());
    }

    #[test]
    fn long_numeric_bundle_ids_must_be_strings() {
        let id = |v: Value| {
            parse(json!({"bookmarks": {"events": {"bundle_stop": "2024-01-01T00:00:00Z", "bundle_id": v}}}))
                .map(|s| events(&s).unwrap().bundle_id.clone())
        };
        assert_eq!(
            id(json!(170415360048u64)).unwrap().as_deref(),
            Some("170415360048")
        );
        assert_eq!(
            id(json!("12345678901234567890123")).unwrap().as_deref(),
            Some("12345678901234567890123")
        );
        assert!(id(json!(1.2345678901234568e22)).is_err());
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert!(parse(json!({"events": 5})).is_err());
        assert!(parse(json!({"events": "later"})).is_err());
        assert!(parse(json!({"bookmarks": []})).is_err());
        assert!(parse(json!({"bookmarks": {"events": {"bundle_stop": 1}}})).is_err());
        assert!(parse(json!({"bookmarks": {"events": {}}})).is_err());
        assert!(parse(json!({"bookmarks": {"events": {"window_end": "x"}}})).is_err());
        assert!(events(&parse(json!({})).unwrap()).is_none());
    }

    #[test]
    fn settings_bookmarks_are_kept_per_platform() {
        use crate::stream::rest::BLOCK_RULES_HISTORY as HISTORY;
        let mark = |text: &str| LastUpdated {
            at: parse_datetime(text).unwrap(),
            text: text.into(),
        };
        // As the Python tap 2.x and this tap before platforms wrote it: the web's.
        let old = parse(json!({"bookmarks": {"block_rules_history": {"lastUpdated": "2024-01-01T05:00:00.000000Z"}}}))
            .unwrap();
        let b = old.bookmark(&HISTORY).unwrap();
        assert_eq!(
            b.last_updated(WEB),
            Some(&mark("2024-01-01T05:00:00.000000Z"))
        );
        assert_eq!(b.last_updated("mobile"), None);

        let mut state = State::default();
        let marks = PlatformMarks::default()
            .with(WEB, mark("2024-01-01T11:00:00.000Z"))
            .with("mobile", mark("2024-01-01T05:30:00.000Z"));
        state.advance(&HISTORY, Bookmark::Updated(marks.clone()));
        let value = state.to_value();
        assert_eq!(
            value["bookmarks"]["block_rules_history"],
            json!({"lastUpdated": "2024-01-01T11:00:00.000Z",
                   "platforms": {"mobile": {"lastUpdated": "2024-01-01T05:30:00.000Z"}}})
        );
        let back = parse(value).unwrap();
        assert_eq!(back.bookmark(&HISTORY), Some(&Bookmark::Updated(marks)));

        // Mobile alone; and a web mark under platforms beside an older one
        // at the top level: the later wins.
        let only = parse(json!({"bookmarks": {"block_rules_history": {
            "platforms": {"mobile": {"lastUpdated": "2024-01-01T05:30:00Z"}}}}}))
        .unwrap();
        let b = only.bookmark(&HISTORY).unwrap();
        assert_eq!(b.last_updated(WEB), None);
        assert!(b.last_updated("mobile").is_some());
        let both = parse(json!({"bookmarks": {"block_rules_history": {
            "lastUpdated": "2024-01-01T01:00:00Z",
            "platforms": {"web": {"lastUpdated": "2024-01-01T02:00:00Z"}}}}}))
        .unwrap();
        assert_eq!(
            both.bookmark(&HISTORY)
                .unwrap()
                .last_updated(WEB)
                .unwrap()
                .text,
            "2024-01-01T02:00:00Z"
        );

        // A bookmark in the future is refused, as for bundles.
        let now = parse_datetime("2026-01-01T00:00:00Z").unwrap();
        let future = parse(json!({"bookmarks": {"block_rules_history": {
            "platforms": {"mobile": {"lastUpdated": "9999-01-01T00:00:00Z"}}}}}))
        .unwrap();
        let err = future.check_not_future(now).unwrap_err();
        assert!(
            err.contains("block_rules_history") && err.contains("mobile") && err.contains("future"),
            "{err}"
        );
        assert!(old.check_not_future(now).is_ok());

        for bad in [
            json!({"platforms": []}),
            json!({"platforms": {"mobile": "2024-01-01T00:00:00Z"}}),
            json!({"platforms": {"mobile": {"lastUpdated": "soon"}}}),
            json!({"lastUpdated": 5}),
        ] {
            let err = parse(json!({"bookmarks": {"block_rules_history": bad}})).unwrap_err();
            assert!(err.contains("bookmarks.block_rules_history"), "{err}");
        }
    }
}
