//! The Data Export source: bundles listed by `/api/v1/export/list`, each
//! downloaded from `/api/v1/export/get` as a gzipped JSON array of events.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Download, HttpBody, Source};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::body::read_small;
use crate::http::pace::Pace;
use crate::http::retry::Retry;
use crate::http::{Client, Endpoint, Failure, NotFound, snippet};
use crate::read::Format;
use crate::state::{Bookmark, BundleBookmark, LastUpdated};
use crate::time::{CLOCK_SKEW_SECS, format_rfc3339, from_unix};
use crate::urls::url_escape;

/// Bundles per list page; a shorter page is the last.
pub(crate) const LIST_PAGE_SIZE: usize = 20;

const LIST: Endpoint = Endpoint {
    name: "list",
    not_found: NotFound::Stop(
        "check api_key, that the account has the Data Export pack, and base_url",
    ),
    refused: None,
};

const GET: Endpoint = Endpoint {
    name: "get",
    not_found: NotFound::Stop("the bundle is gone; check base_url and re-run to list again"),
    refused: None,
};

/// One bundle as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleInfo {
    /// Opaque id, kept as the exact text listed (FullStory sends an integer,
    /// which may not fit any machine type; a string is accepted).
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
    downloads: Arc<Pace>,
    /// Bundles the operator chose to pass over (`skip_bundles`).
    skip: HashSet<String>,
}

impl DataExport {
    pub(crate) fn new(config: &Config, client: Arc<Client>, retry: Retry) -> DataExport {
        DataExport {
            client,
            start_date: config.start_date,
            end_date: config.end_date,
            retry,
            downloads: Arc::new(Pace::new(
                "downloads",
                config.downloads_per_window,
                config.download_window,
            )),
            skip: config.skip_bundles.iter().cloned().collect(),
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
        let body = read_small(resp, "the bundle list").await?;
        let parsed: ListBody = serde_json::from_slice(&body).map_err(|e| {
            Failure::retry(format!(
                "the bundle list is not the expected JSON ({e}): {}",
                snippet(&body)
            ))
        })?;
        let now = Utc::now().timestamp();
        parsed
            .exports
            .into_iter()
            .map(|entry| entry.check(now))
            .collect()
    }
}

impl Source for DataExport {
    type Unit = BundleInfo;
    type Body = HttpBody;

    const UNIT: &'static str = "bundle";

    /// Lists every bundle to sync in this run, oldest first. Taken once at the
    /// start, so bundles published while the run goes on wait for the next one.
    async fn units(&self, bookmark: Option<&Bookmark>) -> Result<Vec<BundleInfo>> {
        // A Segment Export bookmark (after a switch of source) is an end
        // time like a bundle's Stop.
        let bookmark = match bookmark {
            Some(Bookmark::Window(w)) => w.end.map(|stop| BundleBookmark {
                stop,
                bundle_id: None,
            }),
            other => other.and_then(Bookmark::bundle).cloned(),
        };
        let bookmark = bookmark.as_ref();
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
        // Bundles sharing the bookmark's Stop whose id sorts after its id are
        // not synced yet (see `plan`); list from a second earlier to see them.
        let tie_after = bookmark
            .filter(|b| b.stop.timestamp_subsec_nanos() == 0)
            .and_then(|b| b.bundle_id.as_deref());
        let mut start = if tie_after.is_some() {
            from_secs - 1
        } else {
            from_secs
        };
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
            let next = next_page(start, &page);
            match next {
                Next::Ignored => tracing::warn!(
                    "the bundle list ignored start={start} (it listed bundles ending at or before it); stopping the listing there"
                ),
                Next::Crowded { stop } => tracing::warn!(
                    "{} bundles all end at {}, a whole page of the bundle list: any more bundles ending at that instant cannot be listed through the API and will NOT be synced; continuing with bundles ending after it",
                    page.len(),
                    from_unix(stop).map_or_else(|| stop.to_string(), format_rfc3339),
                ),
                Next::Done | Next::From(_) => {}
            }
            listed.extend(page);
            match next {
                Next::From(next) | Next::Crowded { stop: next } => start = next,
                Next::Done | Next::Ignored => break,
            }
            if end_secs.is_some_and(|end| start >= end) {
                break;
            }
        }
        let planned = plan(listed, from_secs, tie_after, end_secs, bookmark);
        for bundle in planned.iter().filter(|b| self.skip.contains(&b.id)) {
            tracing::warn!(
                "bundle {} ({}) will be SKIPPED as skip_bundles says: its events will not be synced",
                bundle.id,
                self.window(bundle)
            );
        }
        let planned_ids: HashSet<&str> = planned.iter().map(|b| b.id.as_str()).collect();
        let mut unused: Vec<&str> = self
            .skip
            .iter()
            .map(String::as_str)
            .filter(|id| !planned_ids.contains(id))
            .collect();
        if !unused.is_empty() {
            unused.sort_unstable();
            tracing::info!(
                "skip_bundles names bundles not among those to sync in this run: {}",
                unused.join(", ")
            );
        }
        Ok(planned)
    }

    /// Starts downloading a bundle, waiting for the rate limit first.
    async fn open(&self, bundle: &BundleInfo) -> Result<HttpBody, Failure> {
        self.downloads.wait().await;
        let url = format!(
            "{}/api/v1/export/get?id={}",
            self.client.base_url(),
            url_escape(&bundle.id)
        );
        let resp = self.client.get(&url, GET).await?;
        Ok(HttpBody::resumable(
            resp,
            Download {
                client: Arc::clone(&self.client),
                url,
                endpoint: GET,
                auth: true,
                pace: Some(Arc::clone(&self.downloads)),
                retry: self.retry,
                what: format!("bundle {}", bundle.id),
            },
        ))
    }

    fn format(&self, _: &BundleInfo) -> Format {
        Format::JsonArray
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

    fn bookmark_after(
        &self,
        bundle: &BundleInfo,
        _: Option<&Bookmark>,
        _: Option<LastUpdated>,
    ) -> Result<Option<Bookmark>> {
        let stop = from_unix(bundle.stop).ok_or_else(|| {
            Error::Api(format!(
                "bundle {} has an impossible Stop {}",
                bundle.id, bundle.stop
            ))
        })?;
        Ok(Some(Bookmark::Bundle(BundleBookmark {
            stop,
            bundle_id: Some(bundle.id.clone()),
        })))
    }

    fn retry(&self) -> &Retry {
        &self.retry
    }

    fn skipped(&self, bundle: &BundleInfo) -> bool {
        self.skip.contains(&bundle.id)
    }

    fn skip_setting(&self) -> Option<&'static str> {
        Some("skip_bundles")
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
    /// Kept as its JSON text: a numeric id must not go through a float.
    #[serde(rename = "Id")]
    id: Box<RawValue>,
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

impl ListEntry {
    /// The bundle this entry describes, or why the list is wrong. `now` is
    /// unix seconds.
    fn check(self, now: i64) -> Result<BundleInfo, Failure> {
        let raw = self.id.get().trim();
        let id = if raw.starts_with('"') {
            serde_json::from_str::<String>(raw)
                .ok()
                .filter(|s| !s.is_empty())
        } else if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            Some(raw.to_string())
        } else {
            None
        };
        let Some(id) = id else {
            return Err(Failure::retry(format!(
                "the bundle list has an entry with an unusable Id: {}",
                snippet(raw.as_bytes())
            )));
        };
        if self.stop <= self.start {
            return Err(Failure::retry(format!(
                "the bundle list has bundle {id} with Stop {} not after Start {}",
                self.stop, self.start
            )));
        }
        if self.stop > now.saturating_add(CLOCK_SKEW_SECS) {
            // Taking it would move the bookmark past every bundle to come.
            let when = from_unix(self.stop).map_or_else(|| self.stop.to_string(), format_rfc3339);
            return Err(Failure::Fatal(Error::Api(format!(
                "the bundle list has bundle {id} ending at {when}, in the future: bundles are published only after they end, so the server's list is wrong and nothing was synced; re-run later, and report it to FullStory if it persists"
            ))));
        }
        Ok(BundleInfo {
            id,
            start: self.start,
            stop: self.stop,
        })
    }
}

/// Where listing goes after a page asked with `start`.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A short page: the listing is complete.
    Done,
    /// The page holds bundles not after `start`: the server ignores it.
    Ignored,
    /// A full page of bundles all ending at `stop`: more may share it that
    /// the API cannot list; go on after it.
    Crowded { stop: i64 },
    /// Ask again with this `start`.
    From(i64),
}

/// Paging: the API lists bundles ending after `start`, so asking again from
/// one second before the last Stop brings back any bundle sharing that Stop
/// that did not fit on the page (repeats are dropped by id in `plan`).
fn next_page(start: i64, page: &[BundleInfo]) -> Next {
    if page.len() < LIST_PAGE_SIZE {
        return Next::Done;
    }
    if page.iter().any(|b| b.stop <= start) {
        return Next::Ignored;
    }
    let last = page.iter().map(|b| b.stop).max().unwrap_or(start);
    if last - 1 <= start {
        Next::Crowded { stop: last }
    } else {
        Next::From(last - 1)
    }
}

/// The order bundles are synced in: by Stop, and bundles sharing a Stop by
/// id (numeric ids by value, before any other id, compared as text). Start
/// plays no part, so that "same Stop, id after the bookmark's" is exactly the
/// set a run stopped at that bookmark had not synced yet.
fn sync_order(a: &BundleInfo, b: &BundleInfo) -> Ordering {
    a.stop.cmp(&b.stop).then_with(|| id_order(&a.id, &b.id))
}

fn id_order(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (numeric(a), numeric(b)) {
        (true, true) => {
            let (x, y) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            x.len()
                .cmp(&y.len())
                .then_with(|| x.cmp(y))
                .then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Orders, de-duplicates and filters a listing into the bundles to sync:
/// those ending after `after`, plus those ending at `after` whose id sorts
/// after `tie_after` (the bookmarked bundle's id), and none past `end`.
fn plan(
    mut listed: Vec<BundleInfo>,
    after: i64,
    tie_after: Option<&str>,
    end: Option<i64>,
    bookmark: Option<&BundleBookmark>,
) -> Vec<BundleInfo> {
    let in_order = listed.windows(2).all(|w| w[0].stop <= w[1].stop);
    if !in_order {
        tracing::warn!("the bundle list was out of order; sorting it by end time");
    }
    listed.sort_by(sync_order);
    let mut seen = HashSet::new();
    // Paging lists the bundles sharing a page's last Stop twice by design.
    let mut repeats = HashSet::new();
    listed.retain(|b| {
        let fresh = seen.insert(b.id.clone());
        if !fresh && repeats.insert(b.id.clone()) {
            tracing::debug!("bundle {} was listed more than once; syncing it once", b.id);
        }
        fresh
    });
    listed.retain(|b| {
        let pending = b.stop > after
            || (b.stop == after
                && tie_after.is_some_and(|id| id_order(&b.id, id) == Ordering::Greater));
        pending
            && end.is_none_or(|end| b.stop <= end)
            && bookmark.is_none_or(|bm| bm.bundle_id.as_deref() != Some(b.id.as_str()))
    });
    listed
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

    fn ids(v: Vec<BundleInfo>) -> Vec<String> {
        v.into_iter().map(|b| b.id).collect()
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
        assert_eq!(
            ids(plan(listed.clone(), 0, None, None, None)),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            ids(plan(listed.clone(), 10, None, Some(30), None)),
            ["b", "c"]
        );
        let bm = BundleBookmark {
            stop: from_unix(5).unwrap(),
            bundle_id: Some("b".into()),
        };
        assert_eq!(ids(plan(listed, 5, None, None, Some(&bm))), ["a", "c", "d"]);
    }

    #[test]
    fn bundles_sharing_a_stop_sort_by_id_whatever_their_start() {
        let listed = vec![
            b("x", 5, 30),
            b("10", 20, 30),
            b("9", 25, 30),
            b("a", 0, 10),
        ];
        assert_eq!(
            ids(plan(listed, 0, None, None, None)),
            ["a", "9", "10", "x"]
        );
    }

    #[test]
    fn resume_keeps_the_bundles_sharing_the_bookmark_stop_ordered_after_it() {
        // A run committed "9" (and "5" before it), then stopped.
        let listed = vec![
            b("5", 0, 30),
            b("9", 10, 30),
            b("10", 5, 30),
            b("x", 0, 30),
            b("11", 30, 40),
        ];
        let bm = BundleBookmark {
            stop: from_unix(30).unwrap(),
            bundle_id: Some("9".into()),
        };
        assert_eq!(
            ids(plan(listed.clone(), 30, Some("9"), None, Some(&bm))),
            ["10", "x", "11"]
        );
        // Without an id (the Python tap's state) a Stop is all or nothing.
        assert_eq!(ids(plan(listed, 30, None, None, None)), ["11"]);
    }

    #[test]
    fn ids_order_numerically_then_as_text() {
        assert_eq!(id_order("9", "10"), Ordering::Less);
        assert_eq!(id_order("12345678901234567890123", "99"), Ordering::Greater);
        assert_eq!(id_order("007", "7"), Ordering::Less);
        assert_eq!(id_order("7", "7"), Ordering::Equal);
        assert_eq!(id_order("99", "a"), Ordering::Less);
        assert_eq!(id_order("b", "a"), Ordering::Greater);
    }

    fn page(stops: &[i64]) -> Vec<BundleInfo> {
        stops
            .iter()
            .enumerate()
            .map(|(i, &stop)| b(&i.to_string(), stop - 1, stop))
            .collect()
    }

    #[test]
    fn paging_asks_again_from_a_second_before_the_last_stop() {
        assert_eq!(next_page(100, &page(&[101, 102])), Next::Done);
        let mut stops: Vec<i64> = (101..120).collect();
        // The 20th shares its Stop with the 19th: the next page must include
        // bundles ending at 119 again, in case a 21st ends there too.
        stops.push(119);
        assert_eq!(next_page(100, &page(&stops)), Next::From(118));
        let full: Vec<i64> = (101..121).collect();
        assert_eq!(next_page(100, &page(&full)), Next::From(119));
    }

    #[test]
    fn a_full_page_sharing_one_stop_is_crowded() {
        assert_eq!(
            next_page(99, &page(&[100; LIST_PAGE_SIZE])),
            Next::Crowded { stop: 100 }
        );
    }

    #[test]
    fn a_page_that_ignores_start_ends_the_listing() {
        let mut stops: Vec<i64> = (101..121).collect();
        stops[0] = 50;
        assert_eq!(next_page(100, &page(&stops)), Next::Ignored);
    }

    fn entry(json: &str) -> ListEntry {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn numeric_ids_are_kept_exactly_as_listed() {
        let got = entry(r#"{"Id": 12345678901234567890123, "Start": 1, "Stop": 2}"#)
            .check(10)
            .unwrap();
        assert_eq!(got.id, "12345678901234567890123");
        let got = entry(r#"{"Id": "abc", "Start": 1, "Stop": 2}"#)
            .check(10)
            .unwrap();
        assert_eq!(got.id, "abc");
        for bad in ["1.5", "-3", "1e5", "\"\"", "null", "[1]"] {
            let json = format!(r#"{{"Id": {bad}, "Start": 1, "Stop": 2}}"#);
            assert!(
                matches!(entry(&json).check(10), Err(Failure::Retry { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_stop_in_the_future_is_a_server_error() {
        let now = 1_700_000_000;
        let at =
            |stop: i64| entry(&format!(r#"{{"Id": 1, "Start": 1, "Stop": {stop}}}"#)).check(now);
        assert!(at(now + CLOCK_SKEW_SECS).is_ok());
        match at(253_402_300_799) {
            Err(Failure::Fatal(e)) => {
                let text = e.to_string();
                assert!(text.contains("9999-12-31T23:59:59Z"), "{text}");
                assert!(text.contains("in the future"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            at(now + CLOCK_SKEW_SECS + 1),
            Err(Failure::Fatal(_))
        ));
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
}
