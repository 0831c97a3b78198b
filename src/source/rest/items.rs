//! The JSON of REST answers: a page's items and next token, an item's key,
//! and an item reshaped into its record, values kept byte for byte.

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::http::snippet;
use crate::stream::PLATFORM_FIELD;

/// One page of a list resource.
pub(super) struct Page {
    pub(super) items: Vec<Box<RawValue>>,
    pub(super) next: Option<String>,
}

/// Reads a page: the items under `list` (absent or null: none, as protobuf
/// JSON leaves out empty lists) and the first of the `next` token keys.
pub(super) fn parse_page(
    body: &[u8],
    list: &str,
    next: &[&str],
) -> std::result::Result<Page, String> {
    let members: Members = serde_json::from_slice(body)
        .map_err(|e| format!("the page is not a JSON object ({e}): {}", snippet(body)))?;
    let mut items = Vec::new();
    let mut token = None;
    for (key, value) in members.0 {
        if key == list {
            let list: Option<Vec<Box<RawValue>>> = serde_json::from_str(value.get())
                .map_err(|e| format!("'{list}' is not a list ({e})"))?;
            items = list.unwrap_or_default();
        } else if next.contains(&key.as_str()) && token.is_none() {
            token = serde_json::from_str::<Option<String>>(value.get())
                .map_err(|e| format!("'{key}' is not a string ({e})"))?
                .filter(|t| !t.is_empty());
        }
    }
    Ok(Page { items, next: token })
}

/// The members of a JSON object in order, values as their raw text.
pub(super) struct Members(pub(super) Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The keys lifted from `metadata` to the top level.
pub(super) const LIFTED: &[&str] = &["created", "createdBy", "lastUpdated"];

/// Writes the object with the keys `lift` copied from its `metadata` to its
/// top level and `"platform": platform` (each unless the top level has it
/// already), then everything else as it came, values byte for byte.
pub(super) fn reshape(
    object: &str,
    lift: &[&str],
    platform: Option<&str>,
    json: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let members: Members = serde_json::from_str(object).map_err(|e| e.to_string())?;
    let metadata: Vec<(String, Box<RawValue>)> = members
        .0
        .iter()
        .find(|(k, _)| k == "metadata")
        .and_then(|(_, v)| serde_json::from_str::<Members>(v.get()).ok())
        .map(|m| m.0)
        .unwrap_or_default();
    json.push(b'{');
    let mut first = true;
    let mut push = |key: &str, value: &RawValue, json: &mut Vec<u8>| {
        if !first {
            json.push(b',');
        }
        first = false;
        // Escaping a `&str` cannot fail.
        let _ = serde_json::to_writer(&mut *json, key);
        json.push(b':');
        json.extend_from_slice(value.get().as_bytes());
    };
    let has = |name: &str| members.0.iter().any(|(k, _)| k == name);
    for name in lift {
        if has(name) {
            continue;
        }
        if let Some((_, value)) = metadata.iter().find(|(k, _)| k == name) {
            push(name, value, json);
        }
    }
    if let Some(platform) = platform.filter(|_| !has(PLATFORM_FIELD)) {
        let value = serde_json::value::to_raw_value(platform).map_err(|e| e.to_string())?;
        push(PLATFORM_FIELD, &value, json);
    }
    for (key, value) in &members.0 {
        push(key, value, json);
    }
    json.push(b'}');
    Ok(())
}

/// The value of the top-level `key` of an item, as text: a string's
/// content, or a whole number's digits. `None` when it has no such value.
pub(super) fn key_of(item: &RawValue, key: &str) -> Option<String> {
    let members: Members = serde_json::from_str(item.get()).ok()?;
    let value = members
        .0
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)?;
    match serde_json::from_str::<String>(value.get()) {
        Ok(text) if !text.is_empty() => Some(text),
        Ok(_) => None,
        Err(_) => {
            let digits = value.get();
            let body = digits.strip_prefix('-').unwrap_or(digits);
            (!body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::rest::{V1, V2};

    fn lifted(object: &str) -> std::result::Result<String, String> {
        let mut out = Vec::new();
        reshape(object, LIFTED, None, &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn metadata_is_lifted_and_values_kept_byte_for_byte() {
        let obj = r#"{"enabled":true,"n":12345678901234567890123,"metadata":{"lastUpdated":"2021-05-12T15:16:10.268269Z","lastUpdatedBy":"bob","created":"2020-09-08T15:57:20.830Z","createdBy":"jane"},"x\"y":1.10}"#;
        assert_eq!(
            lifted(obj).unwrap(),
            r#"{"created":"2020-09-08T15:57:20.830Z","createdBy":"jane","lastUpdated":"2021-05-12T15:16:10.268269Z","enabled":true,"n":12345678901234567890123,"metadata":{"lastUpdated":"2021-05-12T15:16:10.268269Z","lastUpdatedBy":"bob","created":"2020-09-08T15:57:20.830Z","createdBy":"jane"},"x\"y":1.10}"#
        );
    }

    #[test]
    fn top_level_keys_win_over_metadata_and_no_metadata_is_fine() {
        assert_eq!(
            lifted(r#"{"created":"a","metadata":{"created":"b"}}"#).unwrap(),
            r#"{"created":"a","metadata":{"created":"b"}}"#
        );
        assert_eq!(lifted(r#"{"id":1}"#).unwrap(), r#"{"id":1}"#);
        assert!(lifted("[1]").is_err());
    }

    #[test]
    fn pages_read_items_and_either_token_spelling() {
        let p = parse_page(
            br#"{"versions":[{"a":1},{"b":2}],"nextPaginationToken":"t2"}"#,
            "versions",
            V1.next,
        )
        .unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.next.as_deref(), Some("t2"));
        let p = parse_page(br#"{"next_pagination_token":"t3"}"#, "versions", V1.next).unwrap();
        assert!(p.items.is_empty());
        assert_eq!(p.next.as_deref(), Some("t3"));
        let p = parse_page(
            br#"{"results":[],"next_page_token":"","total_records":"0"}"#,
            "results",
            V2.next,
        )
        .unwrap();
        assert_eq!(p.next, None);
        // The v2 reply's token is not read under the v1 names, nor the reverse.
        let p = parse_page(br#"{"next_page_token":"x"}"#, "results", V1.next).unwrap();
        assert_eq!(p.next, None);
        assert!(parse_page(b"<html>", "results", V2.next).is_err());
        assert!(parse_page(br#"{"results":{}}"#, "results", V2.next).is_err());
    }
}
