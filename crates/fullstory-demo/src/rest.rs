//! The demo server's REST resources: users (`/v2/users`), segments
//! (`/segments/v1`), webhook endpoints (`/webhooks/v1/endpoints`),
//! operations (`/operations/v1`) and the recording settings of each platform
//! with their history (`/settings/recording/v1/...?platform=`), over
//! synthetic data that tests (and `DELETE` requests) can change while the
//! server runs.

use super::json_text::escape_into;

/// The settings paths FullStory has, under `/settings/recording/v1/`.
pub const SETTINGS_PATHS: &[&str] = &[
    "blocking",
    "domain",
    "geo",
    "privacy",
    "features",
    "targeting",
];

/// The settings paths the synthetic data also has for mobile apps; the
/// others answer 404 for `platform=mobile`, as for an account without them.
pub const MOBILE_PATHS: &[&str] = &["blocking", "privacy", "features"];

/// Everything the REST endpoints serve. Objects are JSON object text, sent
/// exactly as held.
#[derive(Clone, Debug, Default)]
pub struct RestData {
    pub users: Vec<RestUser>,
    pub segments: Vec<String>,
    /// Per settings path, its web versions oldest first; the last is current.
    pub settings: Vec<(String, Vec<String>)>,
    /// The same for `platform=mobile`; a path not here answers 404.
    pub mobile: Vec<(String, Vec<String>)>,
    pub webhooks: Vec<String>,
    /// Operations, oldest first; deleting a user adds one.
    pub operations: Vec<String>,
    /// Items per page of every paged resource (FullStory's users come about
    /// 10 a page). 0 is treated as 1.
    pub page_size: usize,
    /// Ids still listed by `/v2/users` whose own fetch answers 404, as for a
    /// user deleted between a client's list and its fetch.
    pub deleted: Vec<String>,
}

/// One user: its id, as the list shows it and with its schema.
#[derive(Clone, Debug)]
pub struct RestUser {
    pub id: String,
    /// The object in `/v2/users` results.
    pub listed: String,
    /// The object `/v2/users/{id}?include_schema=true` answers.
    pub full: String,
}

/// First `lastUpdated` of the synthetic settings: 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200;

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn quoted(s: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, s, false, false);
    out
}

/// Synthetic data: `users` users, `segments` segments and, for every
/// settings path, `versions` versions an hour apart.
pub fn synthetic_rest(users: usize, segments: usize, versions: usize) -> RestData {
    let users = (0..users)
        .map(|i| {
            // Ids above 2^53: a float round trip would change them.
            let id = format!("{}", 9_007_199_254_740_993u64 + i as u64 * 2);
            let name = format!("User {i} \"caf\u{e9}\"");
            let props = format!(
                r#"{{"plan":"pro","seats":{},"score":1.10,"tags":["a","b"],"nested":{{"x":null}}}}"#,
                i % 7
            );
            let common = format!(
                r#""id":{},"uid":{},"display_name":{},"email":{},"is_being_deleted":false,"properties":{props}"#,
                quoted(&id),
                quoted(&format!("uid-{i}")),
                quoted(&name),
                quoted(&format!("user{i}@example.com")),
            );
            RestUser {
                listed: format!("{{{common}}}"),
                full: format!(
                    r#"{{{common},"schema":{{"properties":{{"plan":"string","seats":"int","score":"real"}}}},"type_conflicts":{{"properties":{{}}}},"app_url":{}}}"#,
                    quoted(&format!("https://app.fullstory.com/ui/o-1/people/{id}"))
                ),
                id,
            }
        })
        .collect();
    let segments = (0..segments)
        .map(|i| {
            let created = if i == 0 {
                // Built-in segments have no `created`.
                String::new()
            } else {
                format!(r#","created":{}"#, quoted(&rfc3339(T0 + i as i64 * 60)))
            };
            format!(
                r#"{{"id":{},"name":{},"creator":"jane@example.com"{created},"url":{}}}"#,
                quoted(&format!("seg-{i}")),
                quoted(&format!("Segment {i}")),
                quoted(&format!(
                    "https://app.fullstory.com/ui/o-1/segments/seg-{i}"
                ))
            )
        })
        .collect();
    let settings = SETTINGS_PATHS
        .iter()
        .map(|path| {
            let list = (0..versions).map(|v| setting_version(path, v)).collect();
            (path.to_string(), list)
        })
        .collect();
    let mobile = MOBILE_PATHS
        .iter()
        .map(|path| {
            let list = (0..versions.div_ceil(2))
                .map(|v| mobile_version(path, v))
                .collect();
            (path.to_string(), list)
        })
        .collect();
    let webhooks = (0..3).map(webhook).collect();
    let operations = (0..4).map(operation).collect();
    RestData {
        users,
        segments,
        settings,
        mobile,
        webhooks,
        operations,
        page_size: 10,
        deleted: Vec::new(),
    }
}

/// Webhook endpoint `i`, as `/webhooks/v1/endpoints` lists them.
fn webhook(i: usize) -> String {
    let url = format!("https://hooks.example.com/fullstory/{i}");
    let id = base64_of(&url);
    let types = match i % 3 {
        0 => r#"[{"eventName":"note.created"}]"#.to_string(),
        1 => r#"[{"eventName":"segment.trend.alert","subcategory":"seg-1"},{"eventName":"note.created"}]"#
            .to_string(),
        _ => "[]".to_string(),
    };
    format!(
        r#"{{"id":{},"created":{},"modified":{},"enabled":{},"url":{},"eventTypes":{types}}}"#,
        quoted(&id),
        quoted(&rfc3339(T0 + i as i64 * 86_400)),
        quoted(&rfc3339(T0 + i as i64 * 86_400 + 3600)),
        i.is_multiple_of(2),
        quoted(&url),
    )
}

/// Operation `i` of the synthetic list: one of each state and kind.
fn operation(i: usize) -> String {
    let id = base64_of(&format!("bulky:{}", 5_749_563_331_706_880u64 + i as u64));
    let created = quoted(&rfc3339(T0 + i as i64 * 600));
    let finished = quoted(&rfc3339(T0 + i as i64 * 600 + 2));
    match i % 4 {
        0 => format!(
            r#"{{"id":{},"type":"DELETE_USER","details":null,"results":null,"state":"COMPLETED","errorDetails":"","createdAt":{created},"finishedAt":{finished},"estimatePctComplete":100}}"#,
            quoted(&id)
        ),
        1 => format!(
            r#"{{"id":{},"type":"SEARCH_EXPORT","details":{{"segmentId":"everyone","type":"TYPE_EVENT"}},"results":{{"searchExportId":"se-{i}","expires":"2024-02-01T00:00:00Z"}},"state":"COMPLETED","errorDetails":"","createdAt":{created},"finishedAt":{finished},"estimatePctComplete":100}}"#,
            quoted(&id)
        ),
        2 => format!(
            r#"{{"id":{},"type":"DELETE_SESSION","state":"PENDING","createdAt":{created},"estimatePctComplete":10}}"#,
            quoted(&id)
        ),
        _ => format!(
            r#"{{"id":{},"type":"DELETE_SEGMENT_USERS","state":"FAILED","errorDetails":"segment not found","createdAt":{created},"finishedAt":{finished},"estimatePctComplete":0}}"#,
            quoted(&id)
        ),
    }
}

/// Standard base64 of `text`, as FullStory's opaque ids look.
fn base64_of(text: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Version `v` of the mobile settings at `path`, updated `v` hours and a
/// half after [`T0`].
fn mobile_version(path: &str, v: usize) -> String {
    let body = match path {
        "blocking" => format!(r#""blockedIps":[],"blockedUas":[],"blockedAppIds":["app-{v}"]"#),
        "privacy" => {
            format!(r#""elementBlocks":[{{"selector":".pin-{v}","type":"BLOCK_EXCLUDE"}}]"#)
        }
        _ => format!(
            r#""enabled":{},"consoleWatcher":false,"ajaxWatcher":false,"resourceUploading":false,"recordingShutoff":false,"clientSideRageClick":true"#,
            v.is_multiple_of(2)
        ),
    };
    format!(
        r#"{{{body},"metadata":{{"lastUpdated":{},"lastUpdatedBy":"ann@example.com","created":{},"createdBy":"ann@example.com"}}}}"#,
        quoted(&rfc3339(T0 + 1800 + v as i64 * 3600)),
        quoted(&rfc3339(T0 + 1800))
    )
}

/// Version `v` of the settings at `path`, updated `v` hours after [`T0`].
fn setting_version(path: &str, v: usize) -> String {
    let body = match path {
        "blocking" => {
            format!(r#""blockedIps":["10.0.0.{v}"],"blockedUas":["bot-{v}"],"blockedAppIds":[]"#)
        }
        "domain" => format!(
            r#""onlyRecordKnownDomains":{},"domains":[{{"disabled":false,"domain":"example{v}.com"}}]"#,
            v.is_multiple_of(2)
        ),
        "geo" => r#""recordGeoMode":"RECORD_ALL""#.to_string(),
        "privacy" => {
            format!(r#""elementBlocks":[{{"selector":".secret-{v}","type":"BLOCK_MASK"}}]"#)
        }
        "features" => format!(
            r#""enabled":true,"consoleWatcher":{},"ajaxWatcher":true,"resourceUploading":false,"recordingShutoff":false,"clientSideRageClick":false"#,
            v.is_multiple_of(2)
        ),
        _ => format!(r#""rules":[{{"match":"page-{v}"}}],"sampleRate":0.50"#),
    };
    format!(
        r#"{{{body},"metadata":{{"lastUpdated":{},"lastUpdatedBy":"bob@example.com","created":{},"createdBy":"jane@example.com"}}}}"#,
        quoted(&rfc3339(T0 + v as i64 * 3600)),
        quoted(&rfc3339(T0))
    )
}

impl RestData {
    /// Adds a new current version of the settings at `path`, an hour after
    /// the last one. Returns false for an unknown path.
    pub fn add_version(&mut self, path: &str) -> bool {
        let Some((_, versions)) = self.settings.iter_mut().find(|(p, _)| p == path) else {
            return false;
        };
        let next = setting_version(path, versions.len());
        versions.push(next);
        true
    }

    /// Adds a new current version of the mobile settings at `path`, an hour
    /// after its last. Returns false for a path without mobile settings.
    pub fn add_mobile_version(&mut self, path: &str) -> bool {
        let Some((_, versions)) = self.mobile.iter_mut().find(|(p, _)| p == path) else {
            return false;
        };
        let next = mobile_version(path, versions.len());
        versions.push(next);
        true
    }

    /// Deletes user `id` (as `DELETE /v2/users/{id}` does): gone from the
    /// list and its own fetch, with a DELETE_USER operation to show for it.
    /// False for an unknown id.
    pub fn delete_user(&mut self, id: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|u| u.id != id);
        if self.users.len() == before {
            return false;
        }
        let n = self.operations.len();
        self.operations.push(format!(
            r#"{{"id":{},"type":"DELETE_USER","details":{{"userId":{}}},"state":"COMPLETED","errorDetails":"","createdAt":{},"estimatePctComplete":100}}"#,
            quoted(&base64_of(&format!("delete:{id}:{n}"))),
            quoted(id),
            quoted(&rfc3339(T0 + 86_400 * 30 + n as i64)),
        ));
        true
    }

    /// Deletes segment `id`. False for an unknown id.
    pub fn delete_segment(&mut self, id: &str) -> bool {
        let needle = format!(r#""id":{}"#, quoted(id));
        let before = self.segments.len();
        self.segments.retain(|s| !s.contains(&needle));
        self.segments.len() != before
    }

    /// The answer to an authorized DELETE of `path`: a user or a segment.
    pub(super) fn delete(&mut self, path: &str) -> (u16, Vec<u8>) {
        let done = if let Some(id) = path.strip_prefix("/v2/users/") {
            self.delete_user(&super::http::percent_decode(id))
        } else if let Some(id) = path.strip_prefix("/segments/v1/") {
            self.delete_segment(&super::http::percent_decode(id))
        } else {
            return (
                405,
                br#"{"code":"method_not_allowed","message":"only users and segments are deleted"}"#
                    .to_vec(),
            );
        };
        if done {
            (200, b"{}".to_vec())
        } else {
            not_found()
        }
    }

    /// Keeps the user `id` in the list but answers 404 for its own fetch
    /// from now on. Returns false for an id that is not listed.
    pub fn delete_after_list(&mut self, id: &str) -> bool {
        if !self.users.iter().any(|u| u.id == id) {
            return false;
        }
        if !self.deleted.iter().any(|d| d == id) {
            self.deleted.push(id.to_string());
        }
        true
    }

    /// Whether a request path is one of ours.
    pub(super) fn serves(path: &str) -> bool {
        path == "/v2/users"
            || path.starts_with("/v2/users/")
            || path == "/segments/v1"
            || (path.starts_with("/segments/v1/") && path != "/segments/v1/exports")
            || path == "/webhooks/v1/endpoints"
            || path == "/operations/v1"
            || path.starts_with("/settings/recording/v1/")
    }

    /// The answer to an authorized GET of `path`; `param` reads the query.
    pub(super) fn respond(
        &self,
        path: &str,
        param: impl Fn(&str) -> Option<String>,
    ) -> (u16, Vec<u8>) {
        let page = self.page_size.max(1);
        if path == "/v2/users" {
            let from = match token(param("page_token")) {
                Ok(from) => from,
                Err(resp) => return resp,
            };
            let items: Vec<&str> = self.users.iter().map(|u| u.listed.as_str()).collect();
            let (list, next) = slice(&items, from, page);
            let next = next.map(|n| n.to_string()).unwrap_or_default();
            let body = format!(
                r#"{{"results":[{list}],"total_records":"{}","next_page_token":"{next}"}}"#,
                self.users.len()
            );
            return (200, body.into_bytes());
        }
        if let Some(id) = path.strip_prefix("/v2/users/") {
            let id = super::http::percent_decode(id);
            if self.deleted.contains(&id) {
                return not_found();
            }
            return match self.users.iter().find(|u| u.id == id) {
                Some(u) if param("include_schema").as_deref() == Some("true") => {
                    (200, u.full.clone().into_bytes())
                }
                Some(u) => (200, u.listed.clone().into_bytes()),
                None => not_found(),
            };
        }
        let v1_list = |key: &str, all: &[String]| {
            let from = match token(param("paginationToken")) {
                Ok(from) => from,
                Err(resp) => return resp,
            };
            let items: Vec<&str> = all.iter().map(String::as_str).collect();
            let (list, next) = slice(&items, from, limit(&param, page));
            let next = next
                .map(|n| format!(r#","nextPaginationToken":"{n}""#))
                .unwrap_or_default();
            (200, format!(r#"{{"{key}":[{list}]{next}}}"#).into_bytes())
        };
        match path {
            "/segments/v1" => return v1_list("segments", &self.segments),
            "/webhooks/v1/endpoints" => return v1_list("endpoints", &self.webhooks),
            // Newest first.
            "/operations/v1" => {
                let newest: Vec<String> = self.operations.iter().rev().cloned().collect();
                return v1_list("operations", &newest);
            }
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/settings/recording/v1/") else {
            return not_found();
        };
        let (name, history) = match rest.strip_suffix("/history") {
            Some(name) => (name, true),
            None => (rest, false),
        };
        let platform = match param("platform").as_deref() {
            None | Some("web") => &self.settings,
            Some("mobile") => &self.mobile,
            Some(_) => {
                return (
                    400,
                    br#"{"message":"platform must be web or mobile","code":"invalid_argument"}"#
                        .to_vec(),
                );
            }
        };
        let Some((_, versions)) = platform.iter().find(|(p, _)| p == name) else {
            return not_found();
        };
        if !history {
            return match versions.last() {
                Some(current) => (200, current.clone().into_bytes()),
                None => not_found(),
            };
        }
        let from = match token(param("paginationToken")) {
            Ok(from) => from,
            Err(resp) => return resp,
        };
        // Newest first, as FullStory pages history.
        let items: Vec<&str> = versions.iter().rev().map(String::as_str).collect();
        let (list, next) = slice(&items, from, limit(&param, page));
        // One resource answers with the token spelling an older doc shows.
        let key = if name == "domain" {
            "next_pagination_token"
        } else {
            "nextPaginationToken"
        };
        let next = next.map(|n| n.to_string()).unwrap_or_default();
        (
            200,
            format!(r#"{{"versions":[{list}],"{key}":"{next}"}}"#).into_bytes(),
        )
    }
}

fn not_found() -> (u16, Vec<u8>) {
    (
        404,
        br#"{"message":"not found","code":"resource_not_found"}"#.to_vec(),
    )
}

/// A page token is the offset of the page's first item, written `p<offset>`.
fn token(value: Option<String>) -> Result<usize, (u16, Vec<u8>)> {
    match value.as_deref() {
        None | Some("") => Ok(0),
        Some(t) => t
            .strip_prefix('p')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                (
                    400,
                    br#"{"message":"invalid page token","code":"invalid_argument"}"#.to_vec(),
                )
            }),
    }
}

/// The `limit` asked for, at most the server's page size.
fn limit(param: &impl Fn(&str) -> Option<String>, page: usize) -> usize {
    param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .map_or(page, |l| l.min(page))
}

/// Items `from..from+n` joined with commas, and the next page's token.
fn slice(items: &[&str], from: usize, n: usize) -> (String, Option<String>) {
    let end = (from + n).min(items.len());
    let list = items.get(from..end).unwrap_or_default().join(",");
    let next = (end < items.len()).then(|| format!("p{end}"));
    (list, next)
}
