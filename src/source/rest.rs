//! The REST source: users, segments and the recording settings (with their
//! history) read page by page from `api_url`. A stream's pages are all
//! fetched and shaped into a private, compressed spool file (or, with
//! `batch_config`, its batch file) first; only then are its records written
//! (or the batch file published and named in a BATCH message), followed by
//! the STATE that covers them.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::catalog::{Schema, Selection};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::retry::{Backoff, Retry};
use crate::http::{Client, Endpoint, Failure, NotFound, chain, metric_records, snippet};
use crate::pipeline::spool::{CHUNK, SpoolMeter, SpoolTarget, SpoolWriter, shape_onto};
use crate::pipeline::{Settings, emit};
use crate::record::Shaper;
use crate::redact;
use crate::singer::SingerWriter;
use crate::source::url_escape;
use crate::state::{Bookmark, LastUpdated, State};
use crate::stream::{LAST_UPDATED, RestKind, StreamDef};
use crate::time::parse_datetime;

/// Versions or segments asked for per page (FullStory's maximum).
const PAGE_LIMIT: u32 = 100;

/// How a resource pages: the query parameter that takes the token, and the
/// body keys that may carry the next one.
struct Paging {
    param: &'static str,
    next: &'static [&'static str],
}

/// `/v2/users` pages by `page_token` / `next_page_token`.
const V2: Paging = Paging {
    param: "page_token",
    next: &["next_page_token"],
};

/// The v1 APIs page by `paginationToken` / `nextPaginationToken` (an older
/// page of the docs spells the answer `next_pagination_token`).
const V1: Paging = Paging {
    param: "paginationToken",
    next: &["nextPaginationToken", "next_pagination_token"],
};

/// Reads the REST streams of one account.
pub(crate) struct Rest {
    client: Arc<Client>,
    retry: Retry,
}

/// One stream's records as they are gathered into its spool file.
struct Gather<'s> {
    shaper: Shaper,
    spool: SpoolWriter,
    /// Raw records for a batch file rather than RECORD lines.
    raw: bool,
    /// Shaped lines not yet in the spool, written a [`CHUNK`] at a time.
    chunk: Vec<u8>,
    line: Vec<u8>,
    settings: &'s Settings,
    records: u64,
    /// Records at or before this are not written again (settings streams).
    after: Option<LastUpdated>,
    /// The newest `lastUpdated` among the records written.
    newest: Option<LastUpdated>,
    /// Whether to lift `created`, `createdBy`, `lastUpdated` from `metadata`.
    lift: bool,
    warned_no_timestamp: bool,
}

impl Rest {
    pub(crate) fn new(config: &Config, client: Arc<Client>) -> Rest {
        Rest {
            client,
            retry: Retry {
                backoff: Backoff {
                    base: config.retry_base_delay,
                    max: config.retry_max_delay,
                },
                max_retries: config.max_retries,
            },
        }
    }

    /// Syncs one REST stream: SCHEMA, every page into the spool, then the
    /// records and the STATE after them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn sync<W: Write>(
        &self,
        def: &'static StreamDef,
        kind: RestKind,
        schema: &Schema,
        selection: &Selection,
        settings: &Settings,
        state: &mut State,
        out: &mut SingerWriter<W>,
    ) -> Result<()> {
        let started = Instant::now();
        let bookmarks: Vec<&str> = def.replication_key.into_iter().collect();
        out.schema(
            def.name,
            schema.restricted(selection),
            def.key_properties,
            &bookmarks,
        )?;
        out.state(state.to_value())?;

        let after = state
            .bookmark(def)
            .and_then(Bookmark::last_updated)
            .cloned();
        match &after {
            Some(b) => tracing::info!(
                "{}: syncing versions updated after {} (the state's bookmark)",
                def.name,
                b.text
            ),
            None => tracing::info!("{}: syncing every record", def.name),
        }
        let target = settings.spool_target(def.name, None)?;
        let raw = matches!(target, SpoolTarget::Batch(_));
        let meter = Arc::new(SpoolMeter::default());
        let spool =
            SpoolWriter::new(target, Arc::clone(&meter)).map_err(|e| settings.write_failed(e))?;
        let mut shaper = Shaper::new(schema, selection);
        shaper.start_bundle(Utc::now());
        let mut gather = Gather {
            shaper,
            spool,
            raw,
            chunk: Vec::new(),
            line: Vec::new(),
            settings,
            records: 0,
            after,
            newest: None,
            lift: matches!(kind, RestKind::Settings(_) | RestKind::History(_)),
            warned_no_timestamp: false,
        };

        let api = self.client.api_url();
        let forbidden = format!(
            "the '{}' stream needs an API key with the {} role; deselect it or use such a key",
            def.name,
            kind.role()
        );
        let call = Call {
            stream: def.name,
            forbidden: &forbidden,
        };
        // Users listed but gone by the time of their own fetch.
        let mut skipped = 0usize;
        let pages = match kind {
            RestKind::Users => {
                let url = format!("{api}/v2/users");
                self.pages(&call, &url, &V2, "results", |item| gather.add(item))
                    .await?
            }
            RestKind::User => {
                let mut ids = Vec::new();
                let url = format!("{api}/v2/users");
                let pages = self
                    .pages(&call, &url, &V2, "results", |item| {
                        ids.push(user_id(item)?);
                        Ok(())
                    })
                    .await?;
                let total = ids.len();
                for (n, id) in ids.iter().enumerate() {
                    let url = user_url(api, id)?;
                    let what = format!("{}: user {}/{total} (id {id})", def.name, n + 1);
                    let found = self
                        .retry
                        .run(&what, None, || async {
                            match self.fetch(&call, &url, USER).await {
                                Ok(body) => Ok(Some(body)),
                                Err(Failure::Gone(_)) => Ok(None),
                                Err(other) => Err(other),
                            }
                        })
                        .await?;
                    // A user deleted between the list and its own fetch no
                    // longer exists: nothing to write, nothing to retry.
                    let Some(body) = found else {
                        skipped += 1;
                        tracing::warn!(
                            "{what}: skipped: it was listed, but its own fetch answered HTTP 404 (deleted since)"
                        );
                        continue;
                    };
                    let item: Box<RawValue> = serde_json::from_slice(&body).map_err(|e| {
                        Error::Api(format!(
                            "{what}: the answer is not a JSON object ({e}): {}",
                            snippet(&body)
                        ))
                    })?;
                    gather.add(&item)?;
                }
                pages + total
            }
            RestKind::Segments => {
                let url = format!("{api}/segments/v1?limit={PAGE_LIMIT}");
                self.pages(&call, &url, &V1, "segments", |item| gather.add(item))
                    .await?
            }
            RestKind::Settings(path) => {
                let url = format!("{api}/settings/recording/v1/{path}");
                let what = format!("{}: GET {}", def.name, redact::url(&url));
                let body = self
                    .retry
                    .run(&what, None, || self.fetch(&call, &url, SETTINGS))
                    .await?;
                let item: Box<RawValue> = serde_json::from_slice(&body).map_err(|e| {
                    Error::Api(format!(
                        "{what}: the answer is not JSON ({e}): {}",
                        snippet(&body)
                    ))
                })?;
                gather.add(&item)?;
                1
            }
            RestKind::History(path) => {
                let url = format!("{api}/settings/recording/v1/{path}/history?limit={PAGE_LIMIT}");
                self.pages(&call, &url, &V1, "versions", |item| gather.add(item))
                    .await?
            }
        };

        let Gather {
            mut spool,
            chunk,
            records,
            newest,
            ..
        } = gather;
        let spool = tokio::task::block_in_place(|| {
            if !chunk.is_empty() {
                spool.write(&chunk)?;
            }
            spool.finish()
        })
        .map_err(|e| settings.write_failed(e))?;
        // Records (or the BATCH naming them), then the STATE that covers
        // them, in one uninterrupted step.
        tokio::task::block_in_place(|| -> Result<()> {
            emit(out, def.name, spool, records)?;
            if let Some(newest) = newest {
                state.advance(def, Bookmark::LastUpdated(newest));
            }
            out.state(state.to_value())
        })?;
        metric_records(def.name, records);
        let skipped = match kind {
            RestKind::User => format!(", {skipped} skipped (deleted after the list)"),
            _ => String::new(),
        };
        tracing::info!(
            "{}: {records} records from {pages} requests in {:.1}s{skipped}; spool {} bytes",
            def.name,
            started.elapsed().as_secs_f64(),
            meter.peak()
        );
        Ok(())
    }

    /// Reads every page of a list resource, handing each item of `list` to
    /// `each`. Returns the number of pages.
    async fn pages(
        &self,
        call: &Call<'_>,
        first: &str,
        paging: &Paging,
        list: &str,
        mut each: impl FnMut(&RawValue) -> Result<()>,
    ) -> Result<usize> {
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        let mut pages = 0usize;
        let mut items = 0usize;
        loop {
            let url = match &token {
                None => first.to_string(),
                Some(t) => {
                    let sep = if first.contains('?') { '&' } else { '?' };
                    format!("{first}{sep}{}={}", paging.param, url_escape(t))
                }
            };
            pages += 1;
            let what = format!("{}: page {pages}", call.stream);
            let body = self
                .retry
                .run(&what, None, || async {
                    let body = self.fetch(call, &url, LIST).await?;
                    parse_page(&body, list, paging.next).map_err(Failure::retry)
                })
                .await?;
            items += body.items.len();
            for item in &body.items {
                each(item)?;
            }
            tracing::info!("{what}: {} {list} ({items} so far)", body.items.len());
            match body.next {
                None => break,
                Some(next) if next.is_empty() => break,
                Some(next) => {
                    if !seen.insert(next.clone()) {
                        return Err(Error::Api(format!(
                            "{what}: the server sent the page token {next:?} a second time; stopping instead of reading the same pages again"
                        )));
                    }
                    token = Some(next);
                }
            }
        }
        Ok(pages)
    }

    /// One GET, its whole body; one attempt.
    async fn fetch(
        &self,
        call: &Call<'_>,
        url: &str,
        endpoint: Endpoint,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let resp = self
            .client
            .get_as(url, endpoint, Some(call.forbidden))
            .await
            .map_err(|f| match f {
                Failure::Fatal(Error::Api(why)) => {
                    Failure::Fatal(Error::Api(format!("{}: {why}", call.stream)))
                }
                other => other,
            })?;
        let body = resp.bytes().await.map_err(|e| {
            Failure::retry(format!(
                "reading the answer to GET {} failed: {}",
                redact::url(url),
                chain(&e.without_url())
            ))
        })?;
        // Gunzipped when the bytes say gzip, as bundles and lists are.
        let body = crate::http::body::decoded(&body)
            .map_err(|why| Failure::retry(format!("GET {}: {why}", redact::url(url))))?;
        Ok(body.into_owned())
    }
}

/// What a stream's requests need to say when they fail.
struct Call<'a> {
    stream: &'static str,
    forbidden: &'a str,
}

const LIST: Endpoint = Endpoint {
    name: "rest_list",
    not_found: NotFound::Stop("check api_url"),
};

const USER: Endpoint = Endpoint {
    name: "rest_user",
    not_found: NotFound::Gone,
};

const SETTINGS: Endpoint = Endpoint {
    name: "rest_settings",
    not_found: NotFound::Stop("check api_url"),
};

impl Gather<'_> {
    /// Shapes one object into the spool, unless a settings stream's bookmark
    /// already covers it.
    fn add(&mut self, item: &RawValue) -> Result<()> {
        let object = if self.lift {
            lift_metadata(item.get())
        } else {
            Ok(Lifted {
                json: item.get().as_bytes().to_vec(),
                last_updated: None,
            })
        }
        .map_err(|why| Error::Api(format!("a record is not a JSON object: {why}")))?;
        if self.lift {
            match object
                .last_updated
                .as_deref()
                .map(|t| (t, parse_datetime(t)))
            {
                Some((text, Some(at))) => {
                    if self.after.as_ref().is_some_and(|b| at <= b.at) {
                        return Ok(());
                    }
                    if self.newest.as_ref().is_none_or(|n| at > n.at) {
                        self.newest = Some(LastUpdated {
                            at,
                            text: text.to_string(),
                        });
                    }
                }
                _ if !self.warned_no_timestamp => {
                    self.warned_no_timestamp = true;
                    tracing::warn!(
                        "a settings object has no usable {LAST_UPDATED}; such objects are written every run"
                    );
                }
                _ => {}
            }
        }
        shape_onto(
            &mut self.shaper,
            &object.json,
            self.raw,
            &mut self.line,
            &mut self.chunk,
        )
        .map_err(|e| Error::Api(e.to_string()))?;
        if self.chunk.len() >= CHUNK {
            self.spool
                .write(&self.chunk)
                .map_err(|e| self.settings.write_failed(e))?;
            self.chunk.clear();
        }
        self.records += 1;
        Ok(())
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

/// An object with its metadata lifted, and its `lastUpdated` text.
struct Lifted {
    json: Vec<u8>,
    last_updated: Option<String>,
}

/// The keys lifted from `metadata` to the top level.
const LIFTED: &[&str] = &["created", "createdBy", "lastUpdated"];

/// Copies `created`, `createdBy` and `lastUpdated` from the object's
/// `metadata` to its top level (unless the top level has them already), and
/// keeps everything else as it came, values byte for byte.
fn lift_metadata(object: &str) -> std::result::Result<Lifted, String> {
    let members: Members = serde_json::from_str(object).map_err(|e| e.to_string())?;
    let metadata: Vec<(String, Box<RawValue>)> = members
        .0
        .iter()
        .find(|(k, _)| k == "metadata")
        .and_then(|(_, v)| serde_json::from_str::<Members>(v.get()).ok())
        .map(|m| m.0)
        .unwrap_or_default();
    let mut json = Vec::with_capacity(object.len() + 128);
    json.push(b'{');
    let push = |key: &str, value: &RawValue, json: &mut Vec<u8>| {
        if json.len() > 1 {
            json.push(b',');
        }
        // Escaping a `&str` cannot fail.
        let _ = serde_json::to_writer(&mut *json, key);
        json.push(b':');
        json.extend_from_slice(value.get().as_bytes());
    };
    let mut last_updated = None;
    for name in LIFTED {
        if members.0.iter().any(|(k, _)| k == name) {
            continue;
        }
        if let Some((_, value)) = metadata.iter().find(|(k, _)| k == name) {
            push(name, value, &mut json);
        }
    }
    for (key, value) in &members.0 {
        push(key, value, &mut json);
    }
    json.push(b'}');
    let top = members.0.iter().find(|(k, _)| k == LAST_UPDATED);
    let lifted = metadata.iter().find(|(k, _)| k == LAST_UPDATED);
    if let Some((_, value)) = top.or(lifted) {
        last_updated = serde_json::from_str::<Option<String>>(value.get())
            .ok()
            .flatten();
    }
    Ok(Lifted { json, last_updated })
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

    #[test]
    fn metadata_is_lifted_and_values_kept_byte_for_byte() {
        let obj = r#"{"enabled":true,"n":12345678901234567890123,"metadata":{"lastUpdated":"2021-05-12T15:16:10.268269Z","lastUpdatedBy":"bob","created":"2020-09-08T15:57:20.830Z","createdBy":"jane"},"x\"y":1.10}"#;
        let lifted = lift_metadata(obj).unwrap();
        let text = String::from_utf8(lifted.json).unwrap();
        assert_eq!(
            text,
            r#"{"created":"2020-09-08T15:57:20.830Z","createdBy":"jane","lastUpdated":"2021-05-12T15:16:10.268269Z","enabled":true,"n":12345678901234567890123,"metadata":{"lastUpdated":"2021-05-12T15:16:10.268269Z","lastUpdatedBy":"bob","created":"2020-09-08T15:57:20.830Z","createdBy":"jane"},"x\"y":1.10}"#
        );
        assert_eq!(
            lifted.last_updated.as_deref(),
            Some("2021-05-12T15:16:10.268269Z")
        );
    }

    #[test]
    fn top_level_keys_win_over_metadata_and_no_metadata_is_fine() {
        let lifted = lift_metadata(r#"{"created":"a","metadata":{"created":"b"}}"#).unwrap();
        assert_eq!(
            String::from_utf8(lifted.json).unwrap(),
            r#"{"created":"a","metadata":{"created":"b"}}"#
        );
        let plain = lift_metadata(r#"{"id":1}"#).unwrap();
        assert_eq!(plain.json, br#"{"id":1}"#);
        assert!(plain.last_updated.is_none());
        assert!(lift_metadata("[1]").is_err());
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
        assert_eq!(url_escape("a+b/="), "a%2Bb%2F%3D");
    }
}
