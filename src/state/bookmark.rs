//! One stream's bookmark, in the shape its source keeps: a bundle's end, an
//! export window's end with the exports in flight, or the newest settings
//! version of each platform; its entry under `bookmarks` in a STATE, and
//! how that entry (ours or the Python taps') is read back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::json_file::json_kind;
use crate::stream::{Backend, LAST_UPDATED, StreamDef, WEB};
use crate::time::{format_rfc3339, parse_datetime};

/// The key of a settings bookmark that holds the platforms other than the web.
const PLATFORMS: &str = "platforms";

/// How far one stream has got, in the shape its source keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bookmark {
    /// Data Export bundles: `{"replication_key", "bundle_stop", "bundle_id"}`.
    Bundle(BundleBookmark),
    /// REST settings streams, per platform: `{"lastUpdated": "<date-time>"}`
    /// for the web (as the Python tap 2.x writes it), and
    /// `"platforms": {"mobile": {"lastUpdated": ..}}` for the others.
    Updated(PlatformMarks),
    /// Segment Export windows: `{"replication_key", "window_end", "export"}`.
    Window(WindowBookmark),
}

impl Bookmark {
    /// The bookmark of the events stream fed by bundles.
    pub(crate) fn bundle(&self) -> Option<&BundleBookmark> {
        match self {
            Bookmark::Bundle(b) => Some(b),
            _ => None,
        }
    }

    /// The bookmark of a REST settings stream for one platform.
    pub(crate) fn last_updated(&self, platform: &str) -> Option<&LastUpdated> {
        match self {
            Bookmark::Updated(marks) => marks.0.get(platform),
            _ => None,
        }
    }

    /// The instant up to which an export stream is done, whatever the shape.
    pub(crate) fn done_until(&self) -> Option<DateTime<Utc>> {
        match self {
            Bookmark::Bundle(b) => Some(b.stop),
            Bookmark::Window(w) => w.end,
            Bookmark::Updated(_) => None,
        }
    }
}

/// The newest `lastUpdated` written, per platform (`web`, `mobile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PlatformMarks(pub(crate) BTreeMap<String, LastUpdated>);

impl PlatformMarks {
    /// These marks with `platform`'s set to `mark`.
    pub(crate) fn with(mut self, platform: &str, mark: LastUpdated) -> PlatformMarks {
        self.0.insert(platform.to_string(), mark);
        self
    }
}

/// The newest `lastUpdated` written: the instant, and its text as the
/// server wrote it, which is what goes back into the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastUpdated {
    pub(crate) at: DateTime<Utc>,
    pub(crate) text: String,
}

/// How far a Segment Export stream has got: every window ending at or before
/// `end` is done, and `exports` names the exports created for later windows
/// whose records are not written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WindowBookmark {
    /// End of the last window whose records were all written (none yet: `None`).
    pub(crate) end: Option<DateTime<Utc>>,
    /// The exports in flight, oldest window first, for a run that starts
    /// again to pick them up.
    pub(crate) exports: Vec<PendingExport>,
}

/// A Segment Export operation created for a window and not yet written,
/// with what it was created with: a run configured otherwise must not take
/// its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingExport {
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) operation_id: String,
    /// The segment exported; `None` in a state written before it was
    /// recorded, taken to be the one configured.
    pub(crate) segment_id: Option<String>,
    /// The export's scope, if one was asked for.
    pub(crate) scope: Option<String>,
}

/// How far a bundle stream has got: every bundle ending at or before `stop`
/// is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleBookmark {
    /// End of the last bundle whose records were all written.
    pub(crate) stop: DateTime<Utc>,
    /// Id of that bundle, when known (the Python tap did not record it).
    pub(crate) bundle_id: Option<String>,
}

impl Bookmark {
    /// The stream's entry under `bookmarks`.
    pub(super) fn to_value(&self, stream: &StreamDef) -> Value {
        match self {
            Bookmark::Bundle(b) => {
                let mut entry = json!({
                    "replication_key": stream.replication_key,
                    "bundle_stop": format_rfc3339(b.stop),
                });
                if let Some(id) = &b.bundle_id {
                    entry["bundle_id"] = Value::String(id.clone());
                }
                entry
            }
            Bookmark::Updated(marks) => {
                let mut entry = Map::new();
                let mut others = Map::new();
                for (platform, mark) in &marks.0 {
                    if platform == WEB {
                        entry.insert(LAST_UPDATED.into(), json!(mark.text));
                    } else {
                        others.insert(platform.clone(), json!({ LAST_UPDATED: mark.text }));
                    }
                }
                if !others.is_empty() {
                    entry.insert(PLATFORMS.into(), Value::Object(others));
                }
                Value::Object(entry)
            }
            Bookmark::Window(w) => {
                let mut entry = Map::new();
                if let Some(key) = stream.replication_key {
                    entry.insert("replication_key".into(), json!(key));
                }
                if let Some(end) = w.end {
                    entry.insert("window_end".into(), json!(format_rfc3339(end)));
                }
                if !w.exports.is_empty() {
                    let list: Vec<Value> = w
                        .exports
                        .iter()
                        .map(|e| {
                            let mut item = json!({
                                "window_start": format_rfc3339(e.start),
                                "window_end": format_rfc3339(e.end),
                                "operation_id": e.operation_id,
                            });
                            if let Some(segment) = &e.segment_id {
                                item["segment_id"] = json!(segment);
                            }
                            if let Some(scope) = &e.scope {
                                item["scope"] = json!(scope);
                            }
                            item
                        })
                        .collect();
                    entry.insert("exports".into(), Value::Array(list));
                }
                Value::Object(entry)
            }
        }
    }
}

/// Takes `stream`'s bookmark out of a state document. For the events stream
/// the Python tap-fullstory 1.x top-level `{"<stream>": "<date-time>"}` is
/// read too, and the later of the two wins.
pub(super) fn read_bookmark(
    map: &mut Map<String, Value>,
    stream: &StreamDef,
) -> std::result::Result<Option<Bookmark>, String> {
    if let Backend::Rest(_) = stream.backend {
        return read_last_updated(map, stream);
    }
    let name = stream.name;
    let legacy = match map.remove(name) {
        Some(other) if stream.backend != Backend::Events => {
            // Not ours to read: pass it through.
            map.insert(name.to_string(), other);
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(BundleBookmark {
            stop: parse_datetime(&text)
                .ok_or_else(|| format!("key '{name}': {text:?} is not a date-time"))?,
            bundle_id: None,
        }),
        Some(other) => {
            return Err(format!(
                "key '{name}' must be a date-time string, not a {}",
                json_kind(&other)
            ));
        }
    };

    let current = match map.get_mut("bookmarks") {
        None | Some(Value::Null) => None,
        Some(Value::Object(bookmarks)) => match bookmarks.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(entry)) if !entry.contains_key("bundle_stop") => {
                let window = parse_window(&entry, name)?;
                // A window bookmark beside a later legacy one: the legacy one wins.
                return Ok(match legacy {
                    Some(a) if window.end.is_none_or(|end| a.stop > end) => {
                        Some(Bookmark::Bundle(a))
                    }
                    _ => Some(Bookmark::Window(window)),
                });
            }
            Some(Value::Object(entry)) => Some(parse_entry(&entry, name)?),
            Some(other) => {
                return Err(format!(
                    "key 'bookmarks.{name}' must be an object, not a {}",
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
    Ok(bookmark.map(Bookmark::Bundle))
}

/// Takes a REST stream's `{"lastUpdated": .., "platforms": {..}}` out of
/// `bookmarks`. Streams without a replication key keep no bookmark:
/// whatever the state holds for them passes through.
fn read_last_updated(
    map: &mut Map<String, Value>,
    stream: &StreamDef,
) -> std::result::Result<Option<Bookmark>, String> {
    let name = stream.name;
    if stream.replication_key.is_none() {
        return Ok(None);
    }
    let entry = match map.get_mut("bookmarks") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(bookmarks)) => match bookmarks.remove(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(entry)) => entry,
            Some(other) => {
                return Err(format!(
                    "key 'bookmarks.{name}' must be an object, not a {}",
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
    let mut marks = PlatformMarks::default();
    // The top level is the web's: the only platform older states knew.
    if let Some(mark) = read_mark(&entry, &format!("bookmarks.{name}"))? {
        marks = marks.with(WEB, mark);
    }
    match entry.get(PLATFORMS) {
        None | Some(Value::Null) => {}
        Some(Value::Object(platforms)) => {
            for (platform, entry) in platforms {
                let at = format!("bookmarks.{name}.{PLATFORMS}.{platform}");
                let Value::Object(entry) = entry else {
                    return Err(format!(
                        "key '{at}' must be an object, not a {}",
                        json_kind(entry)
                    ));
                };
                if let Some(mark) = read_mark(entry, &at)? {
                    // Beside the top level's, the later of the two.
                    if marks.0.get(platform).is_none_or(|had| had.at < mark.at) {
                        marks = marks.with(platform, mark);
                    }
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "key 'bookmarks.{name}.{PLATFORMS}' must be an object of platforms, not a {}",
                json_kind(other)
            ));
        }
    }
    Ok((!marks.0.is_empty()).then_some(Bookmark::Updated(marks)))
}

/// The `lastUpdated` of one bookmark entry (`at` names it in errors).
fn read_mark(
    entry: &Map<String, Value>,
    at: &str,
) -> std::result::Result<Option<LastUpdated>, String> {
    match entry.get(LAST_UPDATED) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let when = parse_datetime(text)
                .ok_or_else(|| format!("key '{at}.{LAST_UPDATED}': {text:?} is not a date-time"))?;
            Ok(Some(LastUpdated {
                at: when,
                text: text.clone(),
            }))
        }
        Some(other) => Err(format!(
            "key '{at}.{LAST_UPDATED}' must be a date-time string, not a {}",
            json_kind(other)
        )),
    }
}

fn parse_window(
    entry: &Map<String, Value>,
    stream: &str,
) -> std::result::Result<WindowBookmark, String> {
    let time = |value: Option<&Value>, key: &str| match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse_datetime(text)
            .map(Some)
            .ok_or_else(|| format!("key 'bookmarks.{stream}.{key}': {text:?} is not a date-time")),
        Some(other) => Err(format!(
            "key 'bookmarks.{stream}.{key}' must be a date-time string, not a {}",
            json_kind(other)
        )),
    };
    let end = time(entry.get("window_end"), "window_end")?;
    let pending = |e: &Value, at: &str| -> std::result::Result<PendingExport, String> {
        let Value::Object(e) = e else {
            return Err(format!(
                "key 'bookmarks.{stream}.{at}' must be an object, not a {}",
                json_kind(e)
            ));
        };
        let start = time(e.get("window_start"), &format!("{at}.window_start"))?;
        let stop = time(e.get("window_end"), &format!("{at}.window_end"))?;
        let text = |key: &str| match e.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        match (start, stop, text("operation_id")) {
            (Some(start), Some(end), Some(operation_id)) => Ok(PendingExport {
                start,
                end,
                operation_id,
                segment_id: text("segment_id"),
                scope: text("scope"),
            }),
            _ => Err(format!(
                "key 'bookmarks.{stream}.{at}' needs window_start, window_end and operation_id"
            )),
        }
    };
    let mut exports = Vec::new();
    // The form of a single export in flight, from before several could be.
    match entry.get("export") {
        None | Some(Value::Null) => {}
        Some(e) => exports.push(pending(e, "export")?),
    }
    match entry.get("exports") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, e) in list.iter().enumerate() {
                exports.push(pending(e, &format!("exports[{i}]"))?);
            }
        }
        Some(other) => {
            return Err(format!(
                "key 'bookmarks.{stream}.exports' must be an array, not a {}",
                json_kind(other)
            ));
        }
    }
    if end.is_none() && exports.is_empty() {
        return Err(format!(
            "key 'bookmarks.{stream}' needs bundle_stop, window_end or exports"
        ));
    }
    exports.sort_by_key(|e| e.start);
    Ok(WindowBookmark { end, exports })
}

fn parse_entry(
    entry: &Map<String, Value>,
    stream: &str,
) -> std::result::Result<BundleBookmark, String> {
    let stop = match entry.get("bundle_stop") {
        Some(Value::String(text)) => parse_datetime(text).ok_or_else(|| {
            format!("key 'bookmarks.{stream}.bundle_stop': {text:?} is not a date-time")
        })?,
        Some(other) => {
            return Err(format!(
                "key 'bookmarks.{stream}.bundle_stop' must be a date-time string, not a {}",
                json_kind(other)
            ));
        }
        None => return Err(format!("key 'bookmarks.{stream}.bundle_stop' is missing")),
    };
    let bundle_id = match entry.get("bundle_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        // Only a number that parsed exactly; longer ids must be strings.
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                "key 'bookmarks.{stream}.bundle_id' must be a string, not a {}",
                json_kind(other)
            ));
        }
    };
    Ok(BundleBookmark { stop, bundle_id })
}
