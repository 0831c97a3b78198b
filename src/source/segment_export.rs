//! The Segment Export source: one export per time window, created with
//! `POST /segments/v1/exports`, polled at `/operations/v1/{id}`, located at
//! `/search/v1/exports/{id}/results` and downloaded from the pre-signed URL
//! given there, without the API key.
//!
//! Windows are aligned to UTC midnight and run oldest first, one at a time:
//! the STATE written when an export is created names it, so a run that
//! starts again polls that export instead of creating another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::{Download, HttpBody, Prepared, Source};
use crate::config::{Config, ExportScope, SegmentSettings};
use crate::error::{Error, Result};
use crate::http::body::read_object;
use crate::http::retry::Retry;
use crate::http::{Client, Endpoint, Failure, NotFound, snippet};
use crate::progress::human_duration;
use crate::read::Format;
use crate::state::{Bookmark, LastUpdated, PendingExport, WindowBookmark};
use crate::stream::REPLICATION_KEY;
use crate::time::format_rfc3339;
use crate::urls::{is_loopback, path_segment};

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportType {
    Events,
    Individuals,
}

impl ExportType {
    fn api_name(self) -> &'static str {
        match self {
            ExportType::Events => "TYPE_EVENT",
            ExportType::Individuals => "TYPE_INDIVIDUAL",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            ExportType::Events => "events",
            ExportType::Individuals => "individuals",
        }
    }
}

/// The file format asked for, and how the pipeline reads it.
const FORMAT: (&str, Format) = ("FORMAT_NDJSON", Format::Ndjson);

const ENTITLEMENT: &str = "Segment Export needs an API key with the Admin or Architect role, on an account with the Segment Export entitlement; check api_key and api_url";

const CREATE: Endpoint = Endpoint {
    name: "segment_export_create",
    not_found: NotFound::Stop("check api_url and segment_id (the segment must exist)"),
    refused: Some(ENTITLEMENT),
};

const OPERATION: Endpoint = Endpoint {
    name: "operation",
    not_found: NotFound::Gone,
    refused: Some(ENTITLEMENT),
};

const RESULTS: Endpoint = Endpoint {
    name: "segment_export_results",
    not_found: NotFound::Gone,
    refused: Some(ENTITLEMENT),
};

const DOWNLOAD: Endpoint = Endpoint {
    name: "segment_export_download",
    not_found: NotFound::Stop("the download link has expired"),
    refused: None,
};

/// One export window: `[start, end)` on `EventStart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    /// The start as text, the window's id in logs.
    id: String,
}

impl Window {
    fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Window {
        Window {
            start,
            end,
            id: format_rfc3339(start),
        }
    }
}

/// An export this run knows about, by window start.
#[derive(Debug, Clone)]
struct Export {
    end: DateTime<Utc>,
    operation_id: String,
    /// What it was created with.
    segment_id: String,
    scope: Option<ExportScope>,
    /// Set once the operation completed.
    search_export_id: Option<String>,
    /// The server lost it (failed or expired): make another.
    failed: bool,
}

/// Segment Export exports of one type for one segment.
pub(crate) struct SegmentExport {
    client: Arc<Client>,
    kind: ExportType,
    settings: SegmentSettings,
    start_date: DateTime<Utc>,
    end_date: Option<DateTime<Utc>>,
    retry: Retry,
    exports: Mutex<HashMap<DateTime<Utc>, Export>>,
    /// Where the bookmark stood when the run began: lookback windows never
    /// move it back.
    floor: Mutex<Option<DateTime<Utc>>>,
}

impl SegmentExport {
    pub(crate) fn new(
        config: &Config,
        client: Arc<Client>,
        retry: Retry,
        kind: ExportType,
    ) -> SegmentExport {
        SegmentExport {
            client,
            kind,
            settings: config.segment.clone(),
            start_date: config.start_date,
            end_date: config.end_date,
            retry,
            exports: Mutex::new(HashMap::new()),
            floor: Mutex::new(None),
        }
    }

    fn exports(&self) -> std::sync::MutexGuard<'_, HashMap<DateTime<Utc>, Export>> {
        // A poisoned lock only means another task panicked; the map is fine.
        self.exports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn label(&self, window: &Window) -> String {
        format!(
            "{} export {}..{}",
            self.kind.noun(),
            format_rfc3339(window.start),
            format_rfc3339(window.end)
        )
    }

    /// Creates the export of one window, retrying as the policy says;
    /// returns its operation id.
    async fn create(&self, window: &Window) -> Result<String> {
        let what = format!("creating the {}", self.label(window));
        self.retry
            .run(&what, None, || self.create_once(window))
            .await
    }

    /// One attempt at creating the export of one window.
    async fn create_once(&self, window: &Window) -> Result<String, Failure> {
        let mut body = json!({
            "segmentId": self.settings.segment_id,
            "type": self.kind.api_name(),
            "format": FORMAT.0,
            "timeRange": {
                "start": format_rfc3339(window.start),
                "end": format_rfc3339(window.end),
            },
            // Empty bounds: the segment over all time, not its default
            // (recent) range, so a backfill is not cut short.
            "segmentTimeRange": {"start": "", "end": ""},
        });
        if let Some(scope) = self.scope() {
            body["eventDetails"] = json!({"scope": scope.api_name()});
        }
        let url = format!("{}/segments/v1/exports", self.client.api_url());
        let resp = self.client.post_json(&url, CREATE, &body).await?;
        let answer = read_object(resp, "the export creation").await?;
        match answer.get("operationId") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            _ => Err(Failure::Fatal(Error::Api(format!(
                "creating the {}: the answer has no operationId: {}",
                self.label(window),
                snippet(answer.to_string().as_bytes())
            )))),
        }
    }

    /// Polls the window's operation until it completes; returns the search
    /// export id. A failed or vanished operation is marked for renewal.
    async fn wait_for(&self, window: &Window, operation_id: &str) -> Result<String> {
        let segment = path_segment(operation_id).map_err(|why| {
            Error::Api(format!(
                "{}: the server named the export operation {operation_id:?}; {why}",
                self.label(window)
            ))
        })?;
        let url = format!("{}/operations/v1/{segment}", self.client.api_url());
        let started = Instant::now();
        let mut last_pct = None;
        loop {
            let what = format!("polling {} (operation {operation_id})", self.label(window));
            let polled = self
                .retry
                .run(&what, None, || async {
                    let resp = self.client.get(&url, OPERATION).await?;
                    read_object(resp, "the operation").await
                })
                .await;
            let op = match polled {
                Ok(op) => op,
                Err(e) if is_not_found(&e) => {
                    self.mark_failed(window);
                    return Err(Error::Api(format!(
                        "{}: operation {operation_id} is unknown to the server (expired?)",
                        self.label(window)
                    )));
                }
                Err(e) => return Err(e),
            };
            let state = op.get("state").and_then(Value::as_str).unwrap_or("");
            match state {
                "COMPLETED" => {
                    let id = op.pointer("/results/searchExportId").and_then(|v| match v {
                        Value::String(s) if !s.is_empty() => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    });
                    let Some(id) = id else {
                        self.mark_failed(window);
                        return Err(Error::Api(format!(
                            "{}: operation {operation_id} completed without results.searchExportId",
                            self.label(window)
                        )));
                    };
                    tracing::info!(
                        "{}: operation {operation_id} completed after {:.0}s",
                        self.label(window),
                        started.elapsed().as_secs_f64()
                    );
                    if let Some(e) = self.exports().get_mut(&window.start) {
                        e.search_export_id = Some(id.clone());
                    }
                    return Ok(id);
                }
                "FAILED" => {
                    self.mark_failed(window);
                    let details = match op.get("errorDetails") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => "no errorDetails given".to_string(),
                        Some(other) => other.to_string(),
                    };
                    return Err(Error::Api(format!(
                        "{}: operation {operation_id} FAILED: {details}",
                        self.label(window)
                    )));
                }
                _ => {}
            }
            let pct = op.get("estimatePctComplete").and_then(Value::as_f64);
            if pct != last_pct || last_pct.is_none() {
                tracing::info!(
                    "{}: operation {operation_id} is {}{}, {} waited so far",
                    self.label(window),
                    if state.is_empty() { "pending" } else { state },
                    pct.map(|p| format!(", about {p:.0}% done"))
                        .unwrap_or_default(),
                    human_duration(started.elapsed())
                );
                last_pct = pct.or(Some(-1.0));
            }
            if started.elapsed() >= self.settings.timeout {
                return Err(Error::Api(format!(
                    "{}: operation {operation_id} is still not finished after {:.0} minutes (export_timeout_minutes); the STATE written names it, so the next run resumes it",
                    self.label(window),
                    self.settings.timeout.as_secs_f64() / 60.0
                )));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Asks where the export's file is; the link lives minutes, so it is
    /// asked for afresh before every download attempt.
    async fn locate(&self, window: &Window, search_id: &str) -> Result<String> {
        let segment = path_segment(search_id).map_err(|why| {
            Error::Api(format!(
                "{}: the server named the search export {search_id:?}; {why}",
                self.label(window)
            ))
        })?;
        let url = format!(
            "{}/search/v1/exports/{segment}/results",
            self.client.api_url()
        );
        let what = format!("locating the file of {}", self.label(window));
        let found = self
            .retry
            .run(&what, None, || async {
                let resp = self.client.get(&url, RESULTS).await?;
                read_object(resp, "the export results").await
            })
            .await;
        let answer = match found {
            Ok(answer) => answer,
            Err(e) if is_not_found(&e) => {
                self.mark_failed(window);
                return Err(Error::Api(format!("{e}; the export's results are gone")));
            }
            Err(e) => return Err(e),
        };
        match answer.get("location") {
            Some(Value::String(url))
                if url.starts_with("https://") || url.starts_with("http://") =>
            {
                // Whatever the link holds is a credential from now on, in
                // every message, whatever a server echoes of it.
                crate::redact::register_signed_link(url);
                let parsed = url::Url::parse(url).map_err(|e| {
                    Error::Api(format!(
                        "{}: the results' location is not a URL ({e})",
                        self.label(window)
                    ))
                })?;
                if parsed.scheme() == "http" && !is_loopback(&parsed) {
                    return Err(Error::Api(format!(
                        "{}: refusing the export's location {}: plain http to a host other than loopback would send the signed link and the data in clear text",
                        self.label(window),
                        crate::redact::origin(&parsed)
                    )));
                }
                Ok(url.clone())
            }
            _ => Err(Error::Api(format!(
                "{}: the results have no usable location: {}",
                self.label(window),
                snippet(answer.to_string().as_bytes())
            ))),
        }
    }

    /// The scope this run asks for: for event exports only.
    fn scope(&self) -> Option<ExportScope> {
        match self.kind {
            ExportType::Events => self.settings.scope,
            ExportType::Individuals => None,
        }
    }

    /// The stream's bookmark: done up to `end`, with every export in flight.
    fn in_flight(&self, end: Option<DateTime<Utc>>) -> WindowBookmark {
        let mut exports: Vec<PendingExport> = self
            .exports()
            .iter()
            .filter(|(_, e)| !e.failed)
            .map(|(start, e)| PendingExport {
                start: *start,
                end: e.end,
                operation_id: e.operation_id.clone(),
                segment_id: Some(e.segment_id.clone()),
                scope: e.scope.map(|s| s.api_name().to_string()),
            })
            .collect();
        exports.sort_by_key(|e| e.start);
        WindowBookmark { end, exports }
    }

    fn mark_failed(&self, window: &Window) {
        if let Some(e) = self.exports().get_mut(&window.start) {
            e.failed = true;
            e.search_export_id = None;
        }
    }

    fn floor(&self) -> Option<DateTime<Utc>> {
        *self.floor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Source for SegmentExport {
    type Unit = Window;
    type Body = HttpBody;

    const UNIT: &'static str = "window";

    fn records(&self) -> &'static str {
        self.kind.noun()
    }

    // With exports in flight, the next window downloads while one is written.
    fn lookahead(&self) -> usize {
        usize::from(self.settings.in_flight > 1)
    }

    // Export rows name the target selector `EventTargetSelector` where
    // bundles have `EventTargetSelectorTok`: two clicks in the same
    // millisecond on different elements keep keys of their own.
    fn key_stand_ins(&self) -> &'static [(&'static str, &'static str)] {
        &[("EventTargetSelector", "EventTargetSelectorTok")]
    }

    fn prepare_ahead(&self) -> usize {
        self.settings.in_flight - 1 - self.lookahead()
    }

    async fn units(&self, bookmark: Option<&Bookmark>) -> Result<Vec<Window>> {
        let now = Utc::now();
        let done = bookmark.and_then(Bookmark::done_until);
        let pending = match bookmark {
            Some(Bookmark::Window(w)) => w.exports.clone(),
            _ => Vec::new(),
        };
        *self.floor.lock().unwrap_or_else(|e| e.into_inner()) = done;
        let (mut from, from_what) = match done {
            Some(end) => (end, "the state's bookmark"),
            None => (self.start_date, "start_date"),
        };
        // Lookback re-exports recent windows, except when an export is in
        // flight: the run that created it already looked back.
        let lookback = self.settings.lookback;
        if done.is_some() && lookback > TimeDelta::zero() && pending.is_empty() {
            from = (from - lookback).max(self.start_date.min(from));
            tracing::info!(
                "looking back {:.2}h: exporting again from {}",
                lookback.num_minutes() as f64 / 60.0,
                format_rfc3339(from)
            );
        }
        let mut limit = now - self.settings.delay;
        if let Some(end) = self.end_date {
            limit = limit.min(end);
        }
        let windows = plan_windows(from, limit, self.settings.window);
        match (windows.first(), windows.last()) {
            (Some(first), Some(last)) => tracing::info!(
                "exporting {} from {} ({from_what}) to {} in {} windows of up to {:.2}h",
                self.kind.noun(),
                format_rfc3339(first.start),
                format_rfc3339(last.end),
                windows.len(),
                self.settings.window.num_seconds() as f64 / 3600.0
            ),
            _ => tracing::info!(
                "no {} window after {} ({from_what}) ends before {} (now - export_delay_hours{}) yet",
                self.kind.noun(),
                format_rfc3339(from),
                format_rfc3339(limit),
                if self.end_date.is_some() {
                    ", end_date"
                } else {
                    ""
                }
            ),
        }
        for p in pending {
            let Some(w) = windows
                .iter()
                .find(|w| w.start == p.start && w.end == p.end)
            else {
                tracing::warn!(
                    "the state names operation {} for {}..{}, which is not a window of this run; it is left alone",
                    p.operation_id,
                    format_rfc3339(p.start),
                    format_rfc3339(p.end)
                );
                continue;
            };
            // An export made otherwise than this run would make it holds
            // other rows: never take them for this window's.
            let scope = self.scope().map(ExportScope::api_name);
            let segment = p.segment_id.as_deref().unwrap_or(&self.settings.segment_id);
            if segment != self.settings.segment_id || p.scope.as_deref() != scope {
                tracing::warn!(
                    "{}: the state names operation {} created for segment {segment:?}{}, but this run exports segment {:?}{}: creating a new export instead",
                    self.label(w),
                    p.operation_id,
                    p.scope
                        .as_deref()
                        .map(|s| format!(" with scope {s}"))
                        .unwrap_or_default(),
                    self.settings.segment_id,
                    scope
                        .map(|s| format!(" with scope {s}"))
                        .unwrap_or_default(),
                );
                continue;
            }
            tracing::info!(
                "{}: resuming operation {} named in the state",
                self.label(w),
                p.operation_id
            );
            self.exports().insert(
                w.start,
                Export {
                    end: w.end,
                    operation_id: p.operation_id,
                    segment_id: self.settings.segment_id.clone(),
                    scope: self.scope(),
                    search_export_id: None,
                    failed: false,
                },
            );
        }
        Ok(windows)
    }

    async fn prepare(
        &self,
        window: &Window,
        bookmark: Option<&Bookmark>,
        ahead: bool,
    ) -> Result<Prepared> {
        let live = self
            .exports()
            .get(&window.start)
            .is_some_and(|e| !e.failed && e.end == window.end);
        if live || self.skipped(window) {
            return Ok(Prepared::Ready(None));
        }
        let operation_id = if ahead {
            // Ahead of time, a server asking to slow down is let be: this
            // window is asked for again later, when it is nearer.
            match self.create_once(window).await {
                Ok(id) => id,
                Err(Failure::Retry {
                    throttled: true, ..
                }) => {
                    tracing::info!(
                        "{}: the server asks to slow down creating exports (HTTP 429); creating it later",
                        self.label(window)
                    );
                    return Ok(Prepared::Later);
                }
                Err(_) => self.create(window).await?,
            }
        } else {
            self.create(window).await?
        };
        tracing::info!("{}: created operation {operation_id}", self.label(window));
        self.exports().insert(
            window.start,
            Export {
                end: window.end,
                operation_id,
                segment_id: self.settings.segment_id.clone(),
                scope: self.scope(),
                search_export_id: None,
                failed: false,
            },
        );
        Ok(Prepared::Ready(Some(Bookmark::Window(
            self.in_flight(bookmark.and_then(Bookmark::done_until)),
        ))))
    }

    fn renew(&self, window: &Window) -> bool {
        self.exports().get(&window.start).is_some_and(|e| e.failed)
    }

    async fn open(&self, window: &Window) -> Result<HttpBody, Failure> {
        let known = self.exports().get(&window.start).cloned();
        let Some(export) = known else {
            return Err(Failure::Fatal(Error::Api(format!(
                "{}: no export was created for it",
                self.label(window)
            ))));
        };
        let search_id = match export.search_export_id {
            Some(id) => id,
            None => self
                .wait_for(window, &export.operation_id)
                .await
                .map_err(Failure::Fatal)?,
        };
        let location = self
            .locate(window, &search_id)
            .await
            .map_err(Failure::Fatal)?;
        // The link carries its own signature: no key goes to the storage host.
        let resp = self.client.get_anonymous(&location, DOWNLOAD).await?;
        Ok(HttpBody::resumable(
            resp,
            Download {
                client: Arc::clone(&self.client),
                url: location,
                endpoint: DOWNLOAD,
                auth: false,
                pace: None,
                retry: self.retry,
                what: self.label(window),
            },
        ))
    }

    fn format(&self, _: &Window) -> Format {
        FORMAT.1
    }

    fn id<'u>(&self, window: &'u Window) -> &'u str {
        &window.id
    }

    fn window(&self, window: &Window) -> String {
        format!(
            "{}..{}",
            format_rfc3339(window.start),
            format_rfc3339(window.end)
        )
    }

    fn skipped(&self, window: &Window) -> bool {
        self.settings.skip.contains(&window.start)
    }

    fn skip_setting(&self) -> Option<&'static str> {
        Some("skip_windows")
    }

    fn span(&self, window: &Window) -> Option<(&'static str, DateTime<Utc>, DateTime<Utc>)> {
        match self.kind {
            ExportType::Events => Some((REPLICATION_KEY, window.start, window.end)),
            ExportType::Individuals => None,
        }
    }

    fn bookmark_after(
        &self,
        window: &Window,
        _: Option<&Bookmark>,
        _: Option<LastUpdated>,
    ) -> Result<Option<Bookmark>> {
        let end = match self.floor() {
            Some(floor) if floor > window.end => floor,
            _ => window.end,
        };
        // Its export is done with; the others stay named.
        self.exports().remove(&window.start);
        Ok(Some(Bookmark::Window(self.in_flight(Some(end)))))
    }

    fn retry(&self) -> &Retry {
        &self.retry
    }
}

/// The windows from `from` up to `limit`, each ending on a multiple of
/// `size` since UTC midnight; the first may be shorter, and a window that
/// would end after `limit` waits for a later run.
fn plan_windows(from: DateTime<Utc>, limit: DateTime<Utc>, size: TimeDelta) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = from;
    while let Some(end) = next_boundary(start, size) {
        if end > limit {
            break;
        }
        out.push(Window::new(start, end));
        start = end;
    }
    out
}

/// The first multiple of `size` since `t`'s UTC midnight that is after `t`.
fn next_boundary(t: DateTime<Utc>, size: TimeDelta) -> Option<DateTime<Utc>> {
    let midnight = t.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    let size_ms = size.num_milliseconds().max(1);
    let into = (t - midnight).num_milliseconds();
    let k = into / size_ms + 1;
    midnight.checked_add_signed(TimeDelta::milliseconds(k * size_ms))
}

/// Whether the server answered 404 or 410: the operation or its results are
/// gone. Told by status, never by what a body says.
fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Gone(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_datetime;

    fn t(s: &str) -> DateTime<Utc> {
        parse_datetime(s).unwrap()
    }

    fn spans(w: &[Window]) -> Vec<(String, String)> {
        w.iter()
            .map(|w| (format_rfc3339(w.start), format_rfc3339(w.end)))
            .collect()
    }

    #[test]
    fn windows_align_to_midnight_and_stop_before_the_limit() {
        let six = TimeDelta::hours(6);
        let w = plan_windows(t("2024-01-01T04:30:00Z"), t("2024-01-02T07:00:00Z"), six);
        assert_eq!(
            spans(&w),
            [
                ("2024-01-01T04:30:00Z", "2024-01-01T06:00:00Z"),
                ("2024-01-01T06:00:00Z", "2024-01-01T12:00:00Z"),
                ("2024-01-01T12:00:00Z", "2024-01-01T18:00:00Z"),
                ("2024-01-01T18:00:00Z", "2024-01-02T00:00:00Z"),
                ("2024-01-02T00:00:00Z", "2024-01-02T06:00:00Z"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let day = TimeDelta::hours(24);
        let w = plan_windows(t("2024-01-01T00:00:00Z"), t("2024-01-03T00:00:00Z"), day);
        assert_eq!(w.len(), 2);
        assert!(plan_windows(t("2024-01-01T00:00:00Z"), t("2024-01-01T23:59:59Z"), day).is_empty());
        let quarter = TimeDelta::minutes(15);
        let w = plan_windows(
            t("2024-01-01T00:10:00.500Z"),
            t("2024-01-01T01:00:00Z"),
            quarter,
        );
        assert_eq!(w.len(), 4);
        assert_eq!(format_rfc3339(w[0].end), "2024-01-01T00:15:00Z");
    }

    #[test]
    fn a_404_is_told_by_status() {
        assert!(is_not_found(&Error::Gone("GET y answered HTTP 404".into())));
        // A body that quotes a 404 does not make an error one.
        assert!(!is_not_found(&Error::Api(
            "GET y answered HTTP 500: HTTP 404 Not Found".into()
        )));
    }
}
