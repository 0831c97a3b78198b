//! The REST source: any resource of `api_url` a REST stream names (see
//! [`crate::stream::rest`]: its path, how it is read, the role it needs),
//! read page by page. A stream is one unit: its pages, joined into one JSON
//! array as they arrive, are the unit's body, so its records go through the
//! pipeline like a bundle's, and are written (with the STATE that covers
//! them) only once every page has been read.

mod held;
mod items;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{Body, Source};
use crate::error::{Error, Result};
use crate::http::body::read_small;
use crate::http::retry::Retry;
use crate::http::{Client, Endpoint, Failure, NotFound, snippet};
use crate::read::Format;
use crate::redact;
use crate::state::{Bookmark, LastUpdated, PlatformMarks};
use crate::stream::{PLATFORMS, Paging, Reading, ReplicationMethod, Resource, StreamDef, WEB};
use crate::urls::{path_segment, url_escape};
use held::{Held, Replay};
use items::{LIFTED, key_of, parse_page, reshape};

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

/// A list or settings object of a platform other than the web, which an
/// account without it answers with 404.
const ELSEWHERE: Endpoint = Endpoint {
    name: "rest_platform",
    not_found: NotFound::Gone,
    refused: None,
};

/// One REST stream of one account.
pub(crate) struct Rest {
    stream: &'static str,
    requests: Requests,
    resource: Resource,
    /// The field the stream is bookmarked on, if any.
    watermark: Option<&'static str>,
    /// For a list read whole each run: its key, by which an item listed
    /// twice is written once; and where the list waits meanwhile.
    dedupe: Option<(&'static str, PathBuf)>,
}

/// The unit of a REST stream: the whole resource, or the whole of one
/// platform's.
#[derive(Debug, Clone)]
pub(crate) struct Whole {
    /// The stream, and the platform after it if the resource has platforms.
    label: String,
    path: &'static str,
    platform: Option<&'static str>,
}

/// What every request of a stream needs: the client, the retry policy, and
/// what to say when one fails.
#[derive(Clone)]
struct Requests {
    client: Arc<Client>,
    retry: Retry,
    /// The stream, with the platform if it has platforms, for messages.
    label: Arc<str>,
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
        spool_dir: PathBuf,
    ) -> Rest {
        let dedupe = match (def.replication_method, resource.reading, def.key_properties) {
            (ReplicationMethod::FullTable, Reading::Pages { .. }, [key]) => Some((*key, spool_dir)),
            _ => None,
        };
        let forbidden = format!(
            "the '{}' stream needs an API key with the {} role; deselect it or use such a key",
            def.name, resource.role
        );
        Rest {
            stream: def.name,
            requests: Requests {
                client,
                retry,
                label: def.name.into(),
                forbidden: forbidden.into(),
            },
            resource,
            watermark: def.replication_key,
            dedupe,
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
        let stream = self.stream;
        let path = self.resource.path;
        if !self.resource.platforms {
            tracing::info!("{stream}: syncing every record");
            return Ok(vec![Whole {
                label: stream.to_string(),
                path,
                platform: None,
            }]);
        }
        Ok(PLATFORMS
            .iter()
            .map(|&platform| {
                let label = format!("{stream} ({platform})");
                match bookmark.and_then(|b| b.last_updated(platform)) {
                    Some(b) if self.watermark().is_some() => tracing::info!(
                        "{label}: syncing versions updated after {} (the state's bookmark)",
                        b.text
                    ),
                    _ => tracing::info!("{label}: syncing every record"),
                }
                Whole {
                    label,
                    path,
                    platform: Some(platform),
                }
            })
            .collect())
    }

    async fn open(&self, whole: &Whole) -> Result<Pages, Failure> {
        let mut url = format!("{}{}", self.requests.client.api_url(), whole.path);
        if let Some(platform) = whole.platform {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}platform={platform}");
        }
        let step = match self.resource.reading {
            Reading::Pages { list, paging } => Step::Pages(PageWalk::new(url, list, paging)),
            Reading::EachUser { list, paging } => {
                let mut walk = PageWalk::new(url, list, paging);
                walk.ids = Some(Vec::new());
                Step::Pages(walk)
            }
            Reading::One => Step::One(url),
        };
        let mut requests = self.requests.clone();
        requests.label = whole.label.clone().into();
        let held = match &self.dedupe {
            Some((key, dir)) => Some(Held::new(key, dir).map_err(Failure::Fatal)?),
            None => None,
        };
        Ok(Pages {
            requests,
            lift: self.resource.lift_metadata,
            platform: whole.platform,
            held,
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
        &whole.label
    }

    fn file_id<'u>(&self, whole: &'u Whole) -> Option<&'u str> {
        whole.platform
    }

    fn window(&self, whole: &Whole) -> String {
        match whole.platform {
            Some(platform) => format!("{}, platform={platform}", whole.path),
            None => whole.path.to_string(),
        }
    }

    fn watermark(&self) -> Option<&'static str> {
        self.watermark
    }

    fn floor(&self, whole: &Whole, bookmark: Option<&Bookmark>) -> Option<LastUpdated> {
        self.watermark?;
        bookmark?
            .last_updated(whole.platform.unwrap_or(WEB))
            .cloned()
    }

    fn bookmark_after(
        &self,
        whole: &Whole,
        current: Option<&Bookmark>,
        newest: Option<LastUpdated>,
    ) -> Result<Option<Bookmark>> {
        let Some(newest) = newest else {
            return Ok(None);
        };
        let marks = match current {
            Some(Bookmark::Updated(marks)) => marks.clone(),
            _ => PlatformMarks::default(),
        };
        let platform = whole.platform.unwrap_or(WEB);
        Ok(Some(Bookmark::Updated(marks.with(platform, newest))))
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
    /// The platform read, written into each record that does not name one.
    platform: Option<&'static str>,
    /// A list held back until it is whole, to write each key once.
    held: Option<Held>,
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
    /// The held list, written out.
    Replay(Replay),
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
    /// Pages in a row with no items.
    empty_run: usize,
    /// Collects the listed users' ids instead of writing the items.
    ids: Option<Vec<String>>,
    /// Listed users passed over as they have no id to fetch them by.
    no_id: usize,
}

/// Pages in a row with no items after which a list that still names a next
/// page is taken to be endless.
pub(crate) const MAX_EMPTY_PAGES: usize = 100;
/// Pages of one list after which it is taken to be endless: a hundred
/// million items at FullStory's largest page size.
pub(crate) const MAX_PAGES: usize = 1_000_000;

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
            empty_run: 0,
            ids: None,
            no_id: 0,
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
                    self.one(&url, &mut out).await.map_err(Failure::Fatal)?;
                    self.step = Step::Close;
                }
                Step::Replay(mut replay) => {
                    let more = replay
                        .next_chunk(&mut out, &mut self.items)
                        .map_err(|e| Failure::Fatal(self.held_error(e)))?;
                    self.step = if more {
                        Step::Replay(replay)
                    } else {
                        Step::Close
                    };
                }
                Step::Close if self.held.is_some() => {
                    let Some(held) = self.held.take() else {
                        continue;
                    };
                    let replay = held
                        .replay()
                        .map_err(|e| Failure::Fatal(self.held_error(e)))?;
                    if replay.dropped > 0 {
                        tracing::warn!(
                            "{}: {} items were listed more than once (the same {} on several pages); each is written once, as last listed",
                            self.requests.label,
                            replay.dropped,
                            replay.key
                        );
                    }
                    self.step = Step::Replay(replay);
                }
                Step::Close => {
                    let skipped = match self.skipped {
                        Some(n) => format!(
                            ", {n} skipped (deleted after the list, or ids no URL can name)"
                        ),
                        None => String::new(),
                    };
                    tracing::info!(
                        "{}: {} items from {} requests in {:.1}s{skipped}",
                        self.requests.label,
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
    /// Whether a 404 means the account does not have what is asked for:
    /// a platform other than the web, which not every account records.
    fn may_be_absent(&self) -> bool {
        self.platform.is_some_and(|p| p != WEB)
    }

    /// Says that the platform read has nothing for this stream.
    fn absent(&self, what: &str) {
        tracing::info!(
            "{what}: HTTP 404: the account has no {} settings here; nothing to sync for it",
            self.platform.unwrap_or(WEB)
        );
    }

    /// Reads a resource that is one object. No object (404 for a platform
    /// the account lacks, `null`, or `{}`) is no record.
    async fn one(&mut self, url: &str, out: &mut Vec<u8>) -> Result<()> {
        let what = format!("{}: GET {}", self.requests.label, redact::url(url));
        let endpoint = if self.may_be_absent() {
            ELSEWHERE
        } else {
            SETTINGS
        };
        self.requests_made += 1;
        let found = self
            .requests
            .retry
            .run(&what, None, || async {
                match self.requests.fetch(url, endpoint).await {
                    Ok(body) => Ok(Some(body)),
                    Err(Failure::Gone(_)) => Ok(None),
                    Err(other) => Err(other),
                }
            })
            .await?;
        let Some(body) = found else {
            self.absent(&what);
            return Ok(());
        };
        let item: Option<Box<RawValue>> = serde_json::from_slice(&body).map_err(|e| {
            Error::Api(format!(
                "{what}: the answer is not JSON ({e}): {}",
                snippet(&body)
            ))
        })?;
        match item {
            Some(item) if !matches!(item.get().trim(), "{}") => self.push(&item, out),
            _ => {
                tracing::info!("{what}: the answer is empty; nothing to sync");
                Ok(())
            }
        }
    }

    /// Reads the next page of a list; returns the step after it.
    async fn page(&mut self, mut walk: PageWalk, out: &mut Vec<u8>) -> Result<Step> {
        let url = walk.url();
        walk.pages += 1;
        self.requests_made += 1;
        let what = format!("{}: page {}", self.requests.label, walk.pages);
        let (list, next) = (walk.list, walk.paging.next);
        // Only the first page can say the list is not there at all.
        let endpoint = if walk.pages == 1 && self.may_be_absent() {
            ELSEWHERE
        } else {
            LIST
        };
        let page = self
            .requests
            .retry
            .run(&what, None, || async {
                match self.requests.fetch(&url, endpoint).await {
                    Ok(body) => parse_page(&body, list, next)
                        .map(Some)
                        .map_err(Failure::retry),
                    Err(Failure::Gone(_)) => Ok(None),
                    Err(other) => Err(other),
                }
            })
            .await?;
        let Some(page) = page else {
            self.absent(&what);
            return Ok(Step::Close);
        };
        walk.items += page.items.len();
        walk.empty_run = if page.items.is_empty() {
            walk.empty_run + 1
        } else {
            0
        };
        for item in &page.items {
            match &mut walk.ids {
                Some(ids) => match user_id(item) {
                    Some(id) => ids.push(id),
                    None => {
                        walk.no_id += 1;
                        if walk.no_id == 1 {
                            tracing::warn!(
                                "{what}: a listed user has no id to fetch it by (a string or integer), so it is passed over: {}",
                                snippet(item.get().as_bytes())
                            );
                        }
                    }
                },
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
                Some(listed) => {
                    let mut seen = HashSet::new();
                    let ids: Vec<String> = listed
                        .into_iter()
                        .filter(|id| seen.insert(id.clone()))
                        .collect();
                    let twice = walk.items - walk.no_id - ids.len();
                    if walk.no_id > 1 {
                        tracing::warn!(
                            "{}: {} listed users had no id to fetch them by and were passed over",
                            self.requests.label,
                            walk.no_id
                        );
                    }
                    if twice > 0 {
                        tracing::warn!(
                            "{}: {twice} users were listed more than once (the same id on several pages); each is fetched and written once",
                            self.requests.label
                        );
                    }
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
                if walk.empty_run >= MAX_EMPTY_PAGES {
                    return Err(Error::Api(format!(
                        "{what}: {MAX_EMPTY_PAGES} pages in a row had no {list} yet named a next page; stopping, as a list that ends never would"
                    )));
                }
                if walk.pages >= MAX_PAGES {
                    return Err(Error::Api(format!(
                        "{what}: still more pages after {MAX_PAGES}, far more than any account has; stopping instead of reading on"
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
        let what = format!(
            "{}: user {}/{} (id {id})",
            self.requests.label,
            n + 1,
            ids.len()
        );
        let url = match path_segment(id) {
            Ok(segment) => user_url(self.requests.client.api_url(), &segment),
            Err(why) => {
                *self.skipped.get_or_insert(0) += 1;
                tracing::warn!("{what}: skipped: {why}");
                return Ok(());
            }
        };
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

    /// The error for a held list that cannot be written or read back.
    fn held_error(&self, e: std::io::Error) -> Error {
        Error::spool(
            format!(
                "{}: cannot hold the list in a spool file",
                self.requests.label
            ),
            "; set spool_dir to a writable directory with free space",
            e,
        )
    }

    /// Adds one item to the array, its metadata lifted where the stream
    /// wants it; or, for a held list, to the held items.
    fn push(&mut self, item: &RawValue, out: &mut Vec<u8>) -> Result<()> {
        if let Some(mut held) = self.held.take() {
            let mut bytes = Vec::new();
            let result = self.transform(item, &mut bytes).and_then(|()| {
                let key = key_of(item, held.key).map(|k| xxhash_rust::xxh3::xxh3_128(k.as_bytes()));
                held.hold(&bytes, key).map_err(|e| self.held_error(e))
            });
            self.held = Some(held);
            return result;
        }
        if self.items > 0 {
            out.push(b',');
        }
        self.transform(item, out)?;
        self.items += 1;
        Ok(())
    }

    /// Writes the item as its record: metadata lifted and platform named
    /// where the stream wants them, otherwise byte for byte.
    fn transform(&self, item: &RawValue, out: &mut Vec<u8>) -> Result<()> {
        if self.lift || self.platform.is_some() {
            let lift = if self.lift { LIFTED } else { &[] };
            reshape(item.get(), lift, self.platform, out)
                .map_err(|why| Error::Api(format!("a record is not a JSON object: {why}")))
        } else {
            out.extend_from_slice(item.get().as_bytes());
            Ok(())
        }
    }
}

impl Requests {
    /// One GET, its whole body; one attempt.
    async fn fetch(&self, url: &str, endpoint: Endpoint) -> std::result::Result<Vec<u8>, Failure> {
        let prefix = format!("{}: ", self.label);
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

/// A listed user's `id`, as text; none if it has no usable one.
fn user_id(item: &RawValue) -> Option<String> {
    key_of(item, "id")
}

/// `{api}/v2/users/{segment}?include_schema=true`, for the user id
/// escaped as one path segment.
fn user_url(api: &str, segment: &str) -> String {
    format!("{api}/v2/users/{segment}?include_schema=true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn user_ids_and_urls() {
        let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).unwrap();
        assert_eq!(user_id(&raw(r#"{"id":"a/b c"}"#)).unwrap(), "a/b c");
        for none in [
            r#"{"uid":"x"}"#,
            r#"{"id":""}"#,
            r#"{"id":1.5e3}"#,
            r#"{"id":null}"#,
        ] {
            assert_eq!(user_id(&raw(none)), None, "{none}");
        }
        assert_eq!(
            user_id(&raw(r#"{"id":9223372036854775807}"#)).unwrap(),
            "9223372036854775807"
        );
        assert_eq!(
            user_url("http://127.0.0.1:9", &path_segment("a/b c").unwrap()),
            "http://127.0.0.1:9/v2/users/a%2Fb%20c?include_schema=true"
        );
    }
}
