//! The REST source: any resource of `api_url` a REST stream names (see
//! [`crate::stream::rest`]: its path, how it is read, the role it needs),
//! read page by page. A stream is one unit: its pages, joined into one JSON
//! array as they arrive, are the unit's body, so its records go through the
//! pipeline like a bundle's, and are written (with the STATE that covers
//! them) only once every page has been read.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{Body, Source};
use crate::error::{Error, Result};
use crate::http::body::read_small;
use crate::http::retry::Retry;
use crate::http::{Client, Endpoint, Failure, NotFound, snippet};
use crate::read::Format;
use crate::redact;
use crate::state::{Bookmark, LastUpdated};
use crate::stream::{Paging, Reading, Resource, StreamDef};
use crate::urls::url_escape;

const LIST: Endpoint = Endpoint {
    name: "rest_list",
    not_found: NotFound::Stop("check api_url"),
    refused: None,
};

const USER: Endpoint = Endpoint {
    name: "rest_user",
    not_found: NotFound::Gone,
    refused: None,
};

const SETTINGS: Endpoint = Endpoint {
    name: "rest_settings",
    not_found: NotFound::Stop("check api_url"),
    refused: None,
};

/// One REST stream of one account.
pub(crate) struct Rest {
    requests: Requests,
    resource: Resource,
    /// The field the stream is bookmarked on, if any.
    watermark: Option<&'static str>,
}

/// The unit of a REST stream: the whole resource.
#[derive(Debug, Clone)]
pub(crate) struct Whole {
    stream: &'static str,
    path: &'static str,
}

/// What every request of a stream needs: the client, the retry policy, and
/// what to say when one fails.
#[derive(Clone)]
struct Requests {
    client: Arc<Client>,
    retry: Retry,
    stream: &'static str,
    /// What a 403 means here: the role the stream needs.
    forbidden: Arc<str>,
}

impl Rest {
    /// The stream `def`, read from `resource`; a stream with a replication
    /// key is bookmarked on its records' newest value of it.
    pub(crate) fn new(
        client: Arc<Client>,
        retry: Retry,
        def: &'static StreamDef,
        resource: Resource,
    ) -> Rest {
        let forbidden = format!(
            "the '{}' stream needs an API key with the {} role; deselect it or use such a key",
            def.name, resource.role
        );
        Rest {
            requests: Requests {
                client,
                retry,
                stream: def.name,
                forbidden: forbidden.into(),
            },
            resource,
            watermark: def.replication_key,
        }
    }
}

impl Source for Rest {
    type Unit = Whole;
    type Body = Pages;

    const UNIT: &'static str = "resource";

    const CLOSING_STATE: bool = false;

    fn records(&self) -> &'static str {
        "records"
    }

    // One unit, measured against the bookmark the run started with.
    fn lookahead(&self) -> usize {
        0
    }

    async fn units(&self, bookmark: Option<&Bookmark>) -> Result<Vec<Whole>> {
        let stream = self.requests.stream;
        match bookmark.and_then(Bookmark::last_updated) {
            Some(b) if self.watermark().is_some() => tracing::info!(
                "{stream}: syncing versions updated after {} (the state's bookmark)",
                b.text
            ),
            _ => tracing::info!("{stream}: syncing every record"),
        }
        Ok(vec![Whole {
            stream,
            path: self.resource.path,
        }])
    }

    async fn open(&self, whole: &Whole) -> Result<Pages, Failure> {
        let url = format!("{}{}", self.requests.client.api_url(), whole.path);
        let step = match self.resource.reading {
            Reading::Pages { list, paging } => Step::Pages(PageWalk::new(url, list, paging)),
            Reading::EachUser { list, paging } => {
                let mut walk = PageWalk::new(url, list, paging);
                walk.ids = Some(Vec::new());
                Step::Pages(walk)
            }
            Reading::One => Step::One(url),
        };
        Ok(Pages {
            requests: self.requests.clone(),
            lift: self.resource.lift_metadata,
            step: Step::Open(Box::new(step)),
            items: 0,
            requests_made: 0,
            skipped: None,
            started: Instant::now(),
        })
    }

    fn format(&self, _: &Whole) -> Format {
        Format::JsonArray
    }

    fn id<'u>(&self, whole: &'u Whole) -> &'u str {
        whole.stream
    }

    fn file_id<'u>(&self, _: &'u Whole) -> Option<&'u str> {
        None
    }

    fn window(&self, whole: &Whole) -> String {
        whole.path.to_string()
    }

    fn watermark(&self) -> Option<&'static str> {
        self.watermark
    }

    fn bookmark_after(&self, _: &Whole, newest: Option<LastUpdated>) -> Result<Option<Bookmark>> {
        Ok(newest.map(Bookmark::LastUpdated))
    }

    fn retry(&self) -> &Retry {
        &self.requests.retry
    }
}

/// A REST resource's body: every item of every page (or each user listed,
/// fetched on its own), as one JSON array, read a request at a time as the
/// pipeline asks for more. Each request is retried on its own; a failure
/// that retrying cannot mend ends the run.
pub(crate) struct Pages {
    requests: Requests,
    /// Whether to lift `created`, `createdBy`, `lastUpdated` from `metadata`.
    lift: bool,
    step: Step,
    items: usize,
    requests_made: usize,
    /// Users listed but gone by the time of their own fetch.
    skipped: Option<usize>,
    started: Instant,
}

/// Where a resource's body has got to.
enum Step {
    /// Nothing sent yet; then the step in the box.
    Open(Box<Step>),
    /// Reading a list page by page.
    Pages(PageWalk),
    /// Fetching each listed user on its own.
    Users {
        ids: Vec<String>,
        next: usize,
    },
    /// One object.
    One(String),
    /// Every item is out: close the array.
    Close,
    Done,
}

/// Paging through a list resource.
struct PageWalk {
    first: String,
    paging: Paging,
    list: &'static str,
    token: Option<String>,
    seen: HashSet<String>,
    pages: usize,
    items: usize,
    /// Collects the listed users' ids instead of writing the items.
    ids: Option<Vec<String>>,
}

impl PageWalk {
    fn new(first: String, list: &'static str, paging: Paging) -> PageWalk {
        PageWalk {
            first,
            paging,
            list,
            token: None,
            seen: HashSet::new(),
            pages: 0,
            items: 0,
            ids: None,
        }
    }

    fn url(&self) -> String {
        match &self.token {
            None => self.first.clone(),
            Some(t) => {
                let sep = if self.first.contains('?') { '&' } else { '?' };
                format!("{}{sep}{}={}", self.first, self.paging.param, url_escape(t))
            }
        }
    }
}

impl Body for Pages {
    async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        let mut out = Vec::new();
        loop {
            match std::mem::replace(&mut self.step, Step::Done) {
                Step::Open(next) => {
                    self.step = *next;
                    return Ok(Some(Bytes::from_static(b"[")));
                }
                Step::Pages(walk) => {
                    self.step = self.page(walk, &mut out).await.map_err(Failure::Fatal)?;
                }
                Step::Users { ids, next } => {
                    if next == ids.len() {
                        self.step = Step::Close;
                        continue;
                    }
                    self.user(&ids, next, &mut out)
                        .await
                        .map_err(Failure::Fatal)?;
                    self.step = Step::Users {
                        ids,
                        next: next + 1,
                    };
                }
                Step::One(url) => {
                    let what = format!("{}: GET {}", self.requests.stream, redact::url(&url));
                    self.requests_made += 1;
                    let body = self
                        .requests
                        .retry
                        .run(&what, None, || self.requests.fetch(&url, SETTINGS))
                        .await
                        .map_err(Failure::Fatal)?;
                    let item: Box<RawValue> = serde_json::from_slice(&body).map_err(|e| {
                        Failure::Fatal(Error::Api(format!(
                            "{what}: the answer is not JSON ({e}): {}",
                            snippet(&body)
                        )))
                    })?;
                    self.push(&item, &mut out).map_err(Failure::Fatal)?;
                    self.step = Step::Close;
                }
                Step::Close => {
                    let skipped = match self.skipped {
                        Some(n) => format!(", {n} skipped (deleted after the list)"),
                        None => String::new(),
                    };
                    tracing::info!(
                        "{}: {} items from {} requests in {:.1}s{skipped}",
                        self.requests.stream,
                        self.items,
                        self.requests_made,
                        self.started.elapsed().as_secs_f64(),
                    );
                    out.push(b']');
                    return Ok(Some(out.into()));
                }
                Step::Done => return Ok((!out.is_empty()).then(|| out.into())),
            }
            if !out.is_empty() {
                return Ok(Some(out.into()));
            }
        }
    }
}

impl Pages {
    /// Reads the next page of a list; returns the step after it.
    async fn page(&mut self, mut walk: PageWalk, out: &mut Vec<u8>) -> Result<Step> {
        let url = walk.url();
        walk.pages += 1;
        self.requests_made += 1;
        let what = format!("{}: page {}", self.requests.stream, walk.pages);
        let (list, next) = (walk.list, walk.paging.next);
        let page = self
            .requests
            .retry
            .run(&what, None, || async {
                let body = self.requests.fetch(&url, LIST).await?;
                parse_page(&body, list, next).map_err(Failure::retry)
            })
            .await?;
        walk.items += page.items.len();
        for item in &page.items {
            match &mut walk.ids {
                Some(ids) => ids.push(user_id(item)?),
                None => self.push(item, out)?,
            }
        }
        tracing::info!(
            "{what}: {} {list} ({} so far)",
            page.items.len(),
            walk.items
        );
        match page.next {
            None => Ok(match walk.ids.take() {
                Some(ids) => {
                    self.skipped = Some(0);
                    Step::Users { ids, next: 0 }
                }
                None => Step::Close,
            }),
            Some(next) => {
                if !walk.seen.insert(next.clone()) {
                    return Err(Error::Api(format!(
                        "{what}: the server sent the page token {next:?} a second time; stopping instead of reading the same pages again"
                    )));
                }
                walk.token = Some(next);
                Ok(Step::Pages(walk))
            }
        }
    }

    /// Fetches user `n` of `ids` on its own: the user with its schema.
    async fn user(&mut self, ids: &[String], n: usize, out: &mut Vec<u8>) -> Result<()> {
        let id = &ids[n];
        let url = user_url(self.requests.client.api_url(), id)?;
        let what = format!(
            "{}: user {}/{} (id {id})",
            self.requests.stream,
            n + 1,
            ids.len()
        );
        self.requests_made += 1;
        let found = self
            .requests
            .retry
            .run(&what, None, || async {
                match self.requests.fetch(&url, USER).await {
                    Ok(body) => Ok(Some(body)),
                    Err(Failure::Gone(_)) => Ok(None),
                    Err(other) => Err(other),
                }
            })
            .await?;
        // A user deleted between the list and its own fetch no longer
        // exists: nothing to write, nothing to retry.
        let Some(body) = found else {
            *self.skipped.get_or_insert(0) += 1;
            tracing::warn!(
                "{what}: skipped: it was listed, but its own fetch answered HTTP 404 (deleted since)"
            );
            return Ok(());
        };
        let item: Box<RawValue> = serde_json::from_slice(&body).map_err(|e| {
            Error::Api(format!(
                "{what}: the answer is not a JSON object ({e}): {}",
                snippet(&body)
            ))
        })?;
        self.push(&item, out)
    }

    /// Adds one item to the array, its metadata lifted where the stream
    /// wants it.
    fn push(&mut self, item: &RawValue, out: &mut Vec<u8>) -> Result<()> {
        if self.items > 0 {
            out.push(b',');
        }
        if self.lift {
            lift_metadata(item.get(), out)
                .map_err(|why| Error::Api(format!("a record is not a JSON object: {why}")))?;
        } else {
            out.extend_from_slice(item.get().as_bytes());
        }
        self.items += 1;
        Ok(())
    }
}

impl Requests {
    /// One GET, its whole body; one attempt.
    async fn fetch(&self, url: &str, endpoint: Endpoint) -> std::result::Result<Vec<u8>, Failure> {
        let prefix = format!("{}: ", self.stream);
        let resp = self
            .client
            .get_as(url, endpoint, Some(&self.forbidden))
            .await
            .map_err(|f| match f {
                Failure::Fatal(e) => Failure::Fatal(e.prefixed(&prefix)),
                other => other,
            })?;
        read_small(resp, &format!("the answer to GET {}", redact::url(url))).await
    }
}

/// One page of a list resource.
struct Page {
    items: Vec<Box<RawValue>>,
    next: Option<String>,
}

/// Reads a page: the items under `list` (absent or null: none, as protobuf
/// JSON leaves out empty lists) and the first of the `next` token keys.
fn parse_page(body: &[u8], list: &str, next: &[&str]) -> std::result::Result<Page, String> {
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
struct Members(Vec<(String, Box<RawValue>)>);

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
const LIFTED: &[&str] = &["created", "createdBy", "lastUpdated"];

/// Writes the object with `created`, `createdBy` and `lastUpdated` copied
/// from its `metadata` to its top level (unless the top level has them
/// already), and everything else as it came, values byte for byte.
fn lift_metadata(object: &str, json: &mut Vec<u8>) -> std::result::Result<(), String> {
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
    for name in LIFTED {
        if members.0.iter().any(|(k, _)| k == name) {
            continue;
        }
        if let Some((_, value)) = metadata.iter().find(|(k, _)| k == name) {
            push(name, value, json);
        }
    }
    for (key, value) in &members.0 {
        push(key, value, json);
    }
    json.push(b'}');
    Ok(())
}

/// A listed user's `id`, as text.
fn user_id(item: &RawValue) -> Result<String> {
    let members: Members = serde_json::from_str(item.get())
        .map_err(|e| Error::Api(format!("a listed user is not a JSON object ({e})")))?;
    let id = members
        .0
        .into_iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v);
    let bad = || Error::Api(format!("a listed user has no usable id: {}", item.get()));
    let id = id.ok_or_else(bad)?;
    match serde_json::from_str::<String>(id.get()) {
        Ok(text) if !text.is_empty() => Ok(text),
        Ok(_) => Err(bad()),
        // An id sent as a number: its digits as they came.
        Err(_) if id.get().bytes().all(|b| b.is_ascii_digit()) => Ok(id.get().to_string()),
        Err(_) => Err(bad()),
    }
}

/// `{api}/v2/users/{id}?include_schema=true`, the id escaped as one segment.
fn user_url(api: &str, id: &str) -> Result<String> {
    let mut url = url::Url::parse(&format!("{api}/v2/users"))
        .map_err(|e| Error::Input(format!("config: api_url is not a valid URL ({e})")))?;
    url.path_segments_mut()
        .map_err(|()| Error::Input("config: api_url cannot take a path".to_string()))?
        .push(id);
    url.set_query(Some("include_schema=true"));
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::rest::{V1, V2};

    fn lifted(object: &str) -> std::result::Result<String, String> {
        let mut out = Vec::new();
        lift_metadata(object, &mut out).map(|()| String::from_utf8(out).unwrap())
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

    #[test]
    fn user_ids_and_urls() {
        let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).unwrap();
        assert_eq!(user_id(&raw(r#"{"id":"a/b c"}"#)).unwrap(), "a/b c");
        assert_eq!(
            user_id(&raw(r#"{"id":9223372036854775807}"#)).unwrap(),
            "9223372036854775807"
        );
        assert!(user_id(&raw(r#"{"uid":"x"}"#)).is_err());
        assert_eq!(
            user_url("http://127.0.0.1:9", "a/b c").unwrap(),
            "http://127.0.0.1:9/v2/users/a%2Fb%20c?include_schema=true"
        );
    }
}
