//! The Data Export source: bundles listed by `/api/v1/export/list`, each
//! downloaded from `/api/v1/export/get` as a gzipped JSON array of events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{Body, Format, Source};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::pace::Pace;
use crate::http::retry::{Backoff, Retry};
use crate::http::{Client, Endpoint, Failure, chain, snippet};
use crate::state::{Bookmark, BundleBookmark};
use crate::time::{format_rfc3339, from_unix};

/// Bundles per list page; a shorter page is the last.
pub(crate) const LIST_PAGE_SIZE: usize = 20;

const LIST: Endpoint = Endpoint {
    name: "list",
    not_found: "check api_key, that the account has the Data Export pack, and base_url",
};

const GET: Endpoint = Endpoint {
    name: "get",
    not_found: "the bundle is gone; check base_url and re-run to list again",
};

/// One bundle as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleInfo {
    /// Opaque id, kept as text (FullStory sends an integer; a string is accepted).
    pub(crate) id: String,
    /// Window start and end, unix seconds.
    pub(crate) start: i64,
    pub(crate) stop: i64,
}

/// The Data Export bundles of one account.
pub(crate) struct DataExport {
    client: Arc<Client>,
    start_date: DateTime<Utc>,
    end_date: Option<DateTime<Utc>>,
    retry: Retry,
    /// FullStory limits bundle downloads (2 a minute by default).
    downloads: Pace,
}

impl DataExport {
    pub(crate) fn new(config: &Config, client: Arc<Client>) -> DataExport {
        DataExport {
            client,
            start_date: config.start_date,
            end_date: config.end_date,
            retry: Retry {
                backoff: Backoff {
                    base: config.retry_base_delay,
                    max: config.retry_max_delay,
                },
                max_retries: config.max_retries,
            },
            downloads: Pace::new(
                "downloads",
                config.downloads_per_window,
                config.download_window,
            ),
        }
    }

    /// One page of bundles ending after `start` (unix seconds).
    async fn list_page(&self, start: i64) -> Result<Vec<BundleInfo>, Failure> {
        let start = start.max(1);
        let url = format!(
            "{}/api/v1/export/list?start={start}",
            self.client.base_url()
        );
        let resp = self.client.get(&url, LIST).await?;
        let body = resp.bytes().await.map_err(|e| {
            Failure::retry(format!(
                "reading the bundle list failed: {}",
                chain(&e.without_url())
            ))
        })?;
        let parsed: ListBody = serde_json::from_slice(&body).map_err(|e| {
            Failure::retry(format!(
                "the bundle list is not the expected JSON ({e}): {}",
                snippet(&body)
            ))
        })?;
        parsed
            .exports
            .into_iter()
            .map(|entry| {
                let id = match entry.id {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) if !s.is_empty() => s,
                    other => {
                        return Err(Failure::retry(format!(
                            "the bundle list has an entry with an unusable Id: {other}"
                        )));
                    }
                };
                if entry.stop <= entry.start {
                    return Err(Failure::retry(format!(
                        "the bundle list has bundle {id} with Stop {} not after Start {}",
                        entry.stop, entry.start
                    )));
                }
                Ok(BundleInfo {
                    id,
                    start: entry.start,
                    stop: entry.stop,
                })
            })
            .collect()
    }
}

impl Source for DataExport {
    type Unit = BundleInfo;

    const UNIT: &'static str = "bundle";

    /// Lists every bundle to sync in this run, oldest first. Taken once at the
    /// start, so bundles published while the run goes on wait for the next one.
    async fn units(&self, bookmark: Option<&Bookmark>) -> Result<Vec<BundleInfo>> {
        let bookmark = bookmark.map(|Bookmark::Bundle(b)| b);
        let (from, from_what) = match bookmark {
            Some(b) => (b.stop, "the state's bookmark"),
            None => (self.start_date, "start_date"),
        };
        tracing::info!(
            "syncing bundles that end after {} ({from_what}){}",
            format_rfc3339(from),
            match self.end_date {
                Some(end) => format!(" and at or before {} (end_date)", format_rfc3339(end)),
                None => String::new(),
            }
        );
        let from_secs = from.timestamp();
        let end_secs = self.end_date.map(|d| d.timestamp());
        let mut start = from_secs;
        let mut listed = Vec::new();
        loop {
            let page = self
                .retry
                .run(
                    &format!("listing bundles after {start}"),
                    Some(&self.downloads),
                    || self.list_page(start),
                )
                .await?;
            let count = page.len();
            let last_stop = page.iter().map(|b| b.stop).max();
            listed.extend(page);
            if count < LIST_PAGE_SIZE {
                break;
            }
            match last_stop {
                Some(stop) if stop > start => start = stop,
                _ => {
                    tracing::warn!(
                        "the bundle list did not advance past {start}; stopping the listing there"
                    );
                    break;
                }
            }
            if end_secs.is_some_and(|end| start >= end) {
                break;
            }
        }
        Ok(plan(listed, from_secs, end_secs, bookmark))
    }

    /// Starts downloading a bundle, waiting for the rate limit first.
    async fn open(&self, bundle: &BundleInfo) -> Result<Body, Failure> {
        self.downloads.wait().await;
        let url = format!(
            "{}/api/v1/export/get?id={}",
            self.client.base_url(),
            url_escape(&bundle.id)
        );
        self.client.get(&url, GET).await.map(Body::new)
    }

    fn format(&self, _: &BundleInfo) -> Format {
        Format::GzipJsonArray
    }

    fn id<'u>(&self, bundle: &'u BundleInfo) -> &'u str {
        &bundle.id
    }

    fn window(&self, bundle: &BundleInfo) -> String {
        match (from_unix(bundle.start), from_unix(bundle.stop)) {
            (Some(a), Some(b)) => format!("{}..{}", format_rfc3339(a), format_rfc3339(b)),
            _ => format!("{}..{}", bundle.start, bundle.stop),
        }
    }

    fn bookmark_after(&self, bundle: &BundleInfo) -> Result<Bookmark> {
        let stop = from_unix(bundle.stop).ok_or_else(|| {
            Error::Api(format!(
                "bundle {} has an impossible Stop {}",
                bundle.id, bundle.stop
            ))
        })?;
        Ok(Bookmark::Bundle(BundleBookmark {
            stop,
            bundle_id: Some(bundle.id.clone()),
        }))
    }

    fn retry(&self) -> &Retry {
        &self.retry
    }

    fn pace(&self) -> Option<&Pace> {
        Some(&self.downloads)
    }
}

#[derive(Deserialize)]
struct ListBody {
    /// `null` is read as an empty list, as some servers send it for none.
    #[serde(deserialize_with = "null_as_empty")]
    exports: Vec<ListEntry>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ListEntry>, D::Error> {
    Ok(Option::<Vec<ListEntry>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct ListEntry {
    #[serde(rename = "Id")]
    id: Value,
    #[serde(rename = "Start", deserialize_with = "unix_seconds")]
    start: i64,
    #[serde(rename = "Stop", deserialize_with = "unix_seconds")]
    stop: i64,
}

/// Unix seconds as a JSON integer, or as a string of digits.
fn unix_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not whole unix seconds"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not unix seconds"))),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not unix seconds"
        ))),
    }
}

/// Orders, de-duplicates and filters a listing into the bundles to sync.
fn plan(
    mut listed: Vec<BundleInfo>,
    after: i64,
    end: Option<i64>,
    bookmark: Option<&BundleBookmark>,
) -> Vec<BundleInfo> {
    let in_order = listed.windows(2).all(|w| w[0].stop <= w[1].stop);
    if !in_order {
        tracing::warn!("the bundle list was out of order; sorting it by end time");
    }
    listed.sort_by(|a, b| (a.stop, a.start, &a.id).cmp(&(b.stop, b.start, &b.id)));
    let mut seen = std::collections::HashSet::new();
    listed.retain(|b| {
        let fresh = seen.insert(b.id.clone());
        if !fresh {
            tracing::warn!("bundle {} was listed more than once; syncing it once", b.id);
        }
        fresh
    });
    listed.retain(|b| {
        b.stop > after
            && end.is_none_or(|end| b.stop <= end)
            && bookmark.is_none_or(|bm| bm.bundle_id.as_deref() != Some(b.id.as_str()))
    });
    listed
}

/// What an id keeps unescaped in a URL: RFC 3986 unreserved characters.
const ID_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn url_escape(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, ID_KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, start: i64, stop: i64) -> BundleInfo {
        BundleInfo {
            id: id.into(),
            start,
            stop,
        }
    }

    #[test]
    fn plan_sorts_dedupes_and_filters() {
        let listed = vec![
            b("c", 20, 30),
            b("a", 0, 10),
            b("b", 10, 20),
            b("b", 10, 20),
            b("d", 30, 40),
        ];
        let ids = |v: Vec<BundleInfo>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(
            ids(plan(listed.clone(), 0, None, None)),
            ["a", "b", "c", "d"]
        );
        assert_eq!(ids(plan(listed.clone(), 10, Some(30), None)), ["b", "c"]);
        let bm = BundleBookmark {
            stop: from_unix(5).unwrap(),
            bundle_id: Some("b".into()),
        };
        assert_eq!(ids(plan(listed, 5, None, Some(&bm))), ["a", "c", "d"]);
    }

    #[test]
    fn list_bodies() {
        let parse = |s: &str| serde_json::from_str::<ListBody>(s).map(|b| b.exports.len());
        assert_eq!(parse(r#"{"exports": null}"#).unwrap(), 0);
        assert_eq!(
            parse(r#"{"exports": [{"Id": "a", "Start": 1, "Stop": 2, "Extra": 0}]}"#).unwrap(),
            1
        );
        assert!(parse(r#"{"bundles": []}"#).is_err());
        assert_eq!(
            parse(r#"{"exports": [{"Id": 1, "Start": "1", "Stop": 2}]}"#).unwrap(),
            1
        );
        assert!(parse(r#"{"exports": [{"Id": 1, "Start": "x", "Stop": 2}]}"#).is_err());
        assert!(parse(r#"{"exports": [{"Id": 1, "Start": 1.5, "Stop": 2}]}"#).is_err());
    }

    #[test]
    fn ids_are_escaped_in_urls() {
        assert_eq!(url_escape("156314880048"), "156314880048");
        assert_eq!(url_escape("a b&c"), "a%20b%26c");
    }
}
