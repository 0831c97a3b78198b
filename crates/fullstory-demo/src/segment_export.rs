//! The Segment Export flow of the demo server: create an export, poll its
//! operation, ask where its file is, download the file from a short-lived
//! link on this same server.
//!
//! Event exports hold the same synthetic events as the bundles, chosen by
//! `EventStart` in `[start, end)`, so a tap can switch between the two APIs
//! and see the same events. Individual exports are derived from those events.
//! Operations stay `PENDING` for a few polls; links expire, and refuse a
//! request that carries an `Authorization` header, as signed storage URLs do.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::http::Request;
use super::{BundleSpec, Response, Route, Server, gzip};

/// The Segment Export calls the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
    Create,
    Operation(String),
    Results(String),
    Download(String),
}

impl Call {
    pub(super) fn of(req: &Request) -> Option<Call> {
        let path = req.path.as_str();
        if path == "/segments/v1/exports" {
            return Some(Call::Create);
        }
        let tail = |prefix: &str| path.strip_prefix(prefix).map(str::to_string);
        if let Some(id) = tail("/operations/v1/") {
            return Some(Call::Operation(id));
        }
        if let Some(rest) = path.strip_prefix("/search/v1/exports/")
            && let Some(id) = rest.strip_suffix("/results")
        {
            return Some(Call::Results(id.to_string()));
        }
        tail("/storage/").map(Call::Download)
    }

    pub(super) fn matches(&self, route: &Route) -> bool {
        matches!(
            (self, route),
            (Call::Create, Route::SegmentCreate)
                | (Call::Operation(_), Route::Operation)
                | (Call::Results(_), Route::Results)
                | (Call::Download(_), Route::Download)
        )
    }
}

/// The server's Segment Export side.
pub(super) struct Exports {
    /// This server's own URL, for download links.
    url: String,
    /// Every bundle event with its `EventStart` in ms, built on first use.
    events: OnceLock<Vec<(i64, Box<RawValue>)>>,
    state: Mutex<ExportState>,
}

struct ExportState {
    next: u64,
    operations: HashMap<String, Operation>,
    /// Finished files by search export id.
    files: HashMap<String, Vec<u8>>,
    /// Download tokens: the file they open and until when.
    links: HashMap<String, (String, Instant)>,
    pending_polls: u32,
    link_ttl: Duration,
    /// `errorDetails` for the next operations created, which will fail.
    fail_next: VecDeque<String>,
    /// `errorDetails` for the next operations created for a window
    /// starting at this instant (ms), which will fail.
    fail_window: HashMap<i64, VecDeque<String>>,
    /// How long an operation takes to prepare, besides its pending polls.
    prepare_time: Duration,
    /// How many of the next links are handed out already expired.
    expired_links: u32,
}

struct Operation {
    individuals: bool,
    ndjson: bool,
    start_ms: i64,
    end_ms: i64,
    polls_left: u32,
    polls: u32,
    fails: Option<String>,
    search_id: String,
    created: Instant,
}

impl Exports {
    pub(super) fn new(url: String) -> Exports {
        Exports {
            url,
            events: OnceLock::new(),
            state: Mutex::new(ExportState {
                next: 1,
                operations: HashMap::new(),
                files: HashMap::new(),
                links: HashMap::new(),
                pending_polls: 2,
                link_ttl: Duration::from_secs(60),
                fail_next: VecDeque::new(),
                fail_window: HashMap::new(),
                prepare_time: Duration::ZERO,
                expired_links: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ExportState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn events(&self, bundles: &[BundleSpec]) -> &[(i64, Box<RawValue>)] {
        self.events.get_or_init(|| {
            let mut all: Vec<(i64, Box<RawValue>)> =
                bundles.iter().flat_map(bundle_events).collect();
            all.sort_by_key(|(ms, _)| *ms);
            all
        })
    }

    /// The normal answer to a Segment Export call.
    pub(super) fn respond(
        &self,
        req: &Request,
        call: &Call,
        authorized: bool,
        bundles: &[BundleSpec],
    ) -> Response<'static> {
        if let Call::Download(id) = call {
            return self.download(req, id);
        }
        let method = if *call == Call::Create { "POST" } else { "GET" };
        if req.method != method {
            let mut r = Response::json(405, r#"{"code":"method_not_allowed"}"#);
            r.headers.push(("Allow".into(), method.into()));
            return r;
        }
        if !authorized {
            return Response::json(
                401,
                r#"{"code":"unauthorized","message":"invalid API key"}"#,
            );
        }
        match call {
            Call::Create => self.create(&req.body),
            Call::Operation(id) => self.poll(id, bundles),
            Call::Results(id) => self.results(id),
            Call::Download(_) => unreachable!("answered above"),
        }
    }

    fn create(&self, body: &[u8]) -> Response<'static> {
        let bad = |why: &str| {
            Response::json(
                400,
                json!({"code": "invalid_argument", "message": why}).to_string(),
            )
        };
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
            return bad("the body must be a JSON object");
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        if text(body.get("segmentId")).is_none_or(|s| s.is_empty()) {
            return bad("segmentId is required");
        }
        let individuals = match text(body.get("type")).as_deref() {
            Some("TYPE_EVENT") => false,
            Some("TYPE_INDIVIDUAL") => true,
            _ => return bad("type must be TYPE_EVENT or TYPE_INDIVIDUAL"),
        };
        let ndjson = match text(body.get("format")).as_deref() {
            Some("FORMAT_NDJSON") => true,
            Some("FORMAT_JSON") => false,
            _ => return bad("format must be FORMAT_JSON or FORMAT_NDJSON"),
        };
        let time = |key: &str| {
            text(body.get("timeRange").and_then(|r| r.get(key)))
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.timestamp_millis())
        };
        let (Some(start_ms), Some(end_ms)) = (time("start"), time("end")) else {
            return bad("timeRange.start and timeRange.end must be RFC 3339");
        };
        if end_ms <= start_ms {
            return bad("timeRange.end must be after timeRange.start");
        }
        let mut st = self.state();
        let n = st.next;
        st.next += 1;
        let id = format!("op-{n:04}");
        let fails = st.fail_next.pop_front().or_else(|| {
            st.fail_window
                .get_mut(&start_ms)
                .and_then(VecDeque::pop_front)
        });
        let polls_left = st.pending_polls;
        st.operations.insert(
            id.clone(),
            Operation {
                individuals,
                ndjson,
                start_ms,
                end_ms,
                polls_left,
                polls: 0,
                fails,
                search_id: format!("se-{n:04}"),
                created: Instant::now(),
            },
        );
        Response::json(200, json!({ "operationId": id }).to_string())
    }

    fn poll(&self, id: &str, bundles: &[BundleSpec]) -> Response<'static> {
        let mut st = self.state();
        let pending = st.pending_polls;
        let prepare_time = st.prepare_time;
        let Some(op) = st.operations.get_mut(id) else {
            return Response::json(404, r#"{"code":"not_found"}"#);
        };
        op.polls += 1;
        // Lowering pending_polls lets waiting operations finish too.
        op.polls_left = op.polls_left.min(pending);
        let mut answer = json!({"id": id, "type": "SEARCH_EXPORT", "createdAt": now()});
        let preparing = op.created.elapsed() < prepare_time;
        if op.polls_left > 0 || preparing {
            op.polls_left = op.polls_left.saturating_sub(1);
            let pct = if preparing {
                (op.created.elapsed().as_millis() * 100 / prepare_time.as_millis().max(1)) as u32
            } else {
                op.polls * 100 / (op.polls + op.polls_left + 1)
            };
            answer["state"] = json!("PENDING");
            answer["estimatePctComplete"] = json!(pct.min(99));
            return Response::json(200, answer.to_string());
        }
        answer["finishedAt"] = json!(now());
        if let Some(details) = &op.fails {
            answer["state"] = json!("FAILED");
            answer["errorDetails"] = json!(details);
            return Response::json(200, answer.to_string());
        }
        let (individuals, ndjson, start, end) = (op.individuals, op.ndjson, op.start_ms, op.end_ms);
        let search_id = op.search_id.clone();
        answer["state"] = json!("COMPLETED");
        answer["estimatePctComplete"] = json!(100);
        answer["results"] =
            json!({"searchExportId": search_id, "expires": later(Duration::from_secs(86_400))});
        if !st.files.contains_key(&search_id) {
            drop(st);
            let file = self.file(bundles, individuals, ndjson, start, end);
            st = self.state();
            st.files.insert(search_id, file);
        }
        Response::json(200, answer.to_string())
    }

    fn results(&self, search_id: &str) -> Response<'static> {
        let mut st = self.state();
        if !st.files.contains_key(search_id) {
            return Response::json(404, r#"{"code":"not_found"}"#);
        }
        let n = st.next;
        st.next += 1;
        let token = format!("t{n:04}{:08x}", fastrand::u32(..));
        let ttl = st.link_ttl;
        let until = if st.expired_links > 0 {
            st.expired_links -= 1;
            Instant::now()
        } else {
            Instant::now() + ttl
        };
        st.links
            .insert(token.clone(), (search_id.to_string(), until));
        let location = format!(
            "{}/storage/{search_id}?X-Signature={token}&X-Expires={}",
            self.url,
            ttl.as_secs()
        );
        Response::json(
            200,
            json!({"location": location, "expires": later(ttl)}).to_string(),
        )
    }

    fn download(&self, req: &Request, search_id: &str) -> Response<'static> {
        if req.header("authorization").is_some() {
            return xml(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Signature query parameter should be specified",
            );
        }
        if req.method != "GET" {
            return xml(405, "MethodNotAllowed", "use GET");
        }
        let st = self.state();
        let token = req.param("X-Signature").unwrap_or_default();
        match st.links.get(&token) {
            Some((file, until)) if file == search_id => {
                if Instant::now() >= *until {
                    return xml(403, "AccessDenied", "Request has expired");
                }
            }
            _ => return xml(403, "AccessDenied", "Invalid signature"),
        }
        let Some(body) = st.files.get(search_id) else {
            return xml(404, "NoSuchKey", "The specified key does not exist.");
        };
        Response {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/octet-stream".into()),
                (
                    "Content-Disposition".into(),
                    format!("attachment; filename=\"{search_id}.gz\""),
                ),
            ],
            body: Cow::Owned(body.clone()),
        }
    }

    /// The gzipped export file of a window.
    fn file(
        &self,
        bundles: &[BundleSpec],
        individuals: bool,
        ndjson: bool,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<u8> {
        let events = self.events(bundles);
        let from = events.partition_point(|(ms, _)| *ms < start_ms);
        let to = events.partition_point(|(ms, _)| *ms < end_ms);
        // Exports come unordered: newest first here.
        let rows: Vec<String> = if individuals {
            individual_rows(&events[from..to])
        } else {
            events[from..to]
                .iter()
                .rev()
                .map(|(_, e)| e.get().to_string())
                .collect()
        };
        let text = if ndjson {
            let mut text = rows.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            text
        } else {
            format!("[{}]", rows.join(","))
        };
        gzip(text.as_bytes())
    }
}

/// One row per individual among `events`, with totals and the last values
/// seen, built from the event fields.
fn individual_rows(events: &[(i64, Box<RawValue>)]) -> Vec<String> {
    struct Person {
        first: Map<String, Value>,
        last: Map<String, Value>,
        sessions: Vec<Value>,
        pages: Vec<Value>,
        events: u64,
        first_ms: i64,
        last_ms: i64,
    }
    let mut order = Vec::new();
    let mut people: HashMap<String, Person> = HashMap::new();
    for (ms, raw) in events {
        let Ok(Value::Object(e)) = serde_json::from_str::<Value>(raw.get()) else {
            continue;
        };
        let Some(id) = e.get("IndvId").map(Value::to_string) else {
            continue;
        };
        let p = people.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Person {
                first: e.clone(),
                last: e.clone(),
                sessions: Vec::new(),
                pages: Vec::new(),
                events: 0,
                first_ms: *ms,
                last_ms: *ms,
            }
        });
        p.events += 1;
        for (list, key) in [(&mut p.sessions, "SessionId"), (&mut p.pages, "PageId")] {
            if let Some(v) = e.get(key)
                && !list.contains(v)
            {
                list.push(v.clone());
            }
        }
        if *ms >= p.last_ms {
            p.last_ms = *ms;
            p.last = e;
        }
    }
    order
        .iter()
        .filter_map(|id| people.get(id))
        .map(|p| {
            let mut row = Map::new();
            let copy =
                |row: &mut Map<String, Value>, to: &str, from: &Map<String, Value>, key: &str| {
                    if let Some(v) = from.get(key) {
                        row.insert(to.to_string(), v.clone());
                    }
                };
            copy(&mut row, "IndvId", &p.first, "IndvId");
            copy(&mut row, "Uid", &p.first, "UserAppKey");
            copy(&mut row, "DisplayName", &p.first, "UserDisplayName");
            copy(&mut row, "Email", &p.first, "UserEmail");
            copy(&mut row, "Created", &p.first, "UserCreated");
            let sessions = p.sessions.len().max(1) as u64;
            let total = (p.last_ms - p.first_ms) / 1000;
            row.insert("NumSessions".into(), json!(sessions));
            row.insert("NumPages".into(), json!(p.pages.len()));
            row.insert("NumEvents".into(), json!(p.events));
            row.insert("TotalSec".into(), json!(total));
            row.insert("ActiveSec".into(), json!(total / 2));
            row.insert(
                "AvgSessionSec".into(),
                json!(total as f64 / sessions as f64),
            );
            row.insert("MaxSessionSec".into(), json!(total));
            copy(&mut row, "LastSessionStart", &p.last, "SessionStart");
            copy(&mut row, "LastEventStart", &p.last, "EventStart");
            copy(&mut row, "LastPage", &p.last, "PageUrl");
            copy(&mut row, "LastIp", &p.last, "PageIp");
            copy(&mut row, "LastLatLong", &p.last, "PageLatLong");
            copy(&mut row, "LastBrowser", &p.last, "PageBrowser");
            copy(&mut row, "LastDevice", &p.last, "PageDevice");
            copy(&mut row, "LastPlatform", &p.last, "PagePlatform");
            copy(
                &mut row,
                "LastOperatingSystem",
                &p.last,
                "PageOperatingSystem",
            );
            // User vars ride along as they are, like in the real export.
            for (k, v) in &p.last {
                if k.starts_with("user_") {
                    row.insert(k.clone(), v.clone());
                }
            }
            Value::Object(row).to_string()
        })
        .collect()
}

/// The events of a bundle whose body is a (possibly gzipped) JSON array;
/// bundles made to be broken yield none.
fn bundle_events(bundle: &BundleSpec) -> Vec<(i64, Box<RawValue>)> {
    let mut json = bundle.body.clone();
    while json.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if flate2::read::MultiGzDecoder::new(&json[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return Vec::new();
        }
        json = out;
    }
    let Ok(events) = serde_json::from_slice::<Vec<Box<RawValue>>>(&json) else {
        return Vec::new();
    };
    events
        .into_iter()
        .filter_map(|e| {
            let row: Map<String, Value> = serde_json::from_str(e.get()).ok()?;
            let ms = DateTime::parse_from_rfc3339(row.get("EventStart")?.as_str()?)
                .ok()?
                .timestamp_millis();
            Some((ms, e))
        })
        .collect()
}

fn xml(status: u16, code: &str, message: &str) -> Response<'static> {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/xml".into())],
        body: Cow::Owned(
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>")
                .into_bytes(),
        ),
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn later(d: Duration) -> String {
    let at = Utc::now() + chrono::TimeDelta::from_std(d).unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Knobs for the Segment Export side, for tests and demos.
impl Server {
    /// Operations answer `PENDING` to this many polls before they finish
    /// (default 2). Lowering it lets operations already waiting finish sooner.
    pub fn set_pending_polls(&self, polls: u32) {
        self.shared.segment.state().pending_polls = polls;
    }

    /// Operations stay `PENDING` at least this long after they are
    /// created, as a real export takes time to prepare (default none).
    pub fn set_prepare_time(&self, time: Duration) {
        self.shared.segment.state().prepare_time = time;
    }

    /// The next operation created for the window starting at `start`
    /// (unix seconds) fails with this `errorDetails`.
    pub fn fail_operation_for(&self, start: i64, details: &str) {
        self.shared
            .segment
            .state()
            .fail_window
            .entry(start * 1000)
            .or_default()
            .push_back(details.to_string());
    }

    /// How long a download link works (default 60 s).
    pub fn set_link_ttl(&self, ttl: Duration) {
        self.shared.segment.state().link_ttl = ttl;
    }

    /// The next operation created fails with this `errorDetails`.
    pub fn fail_next_operation(&self, details: &str) {
        self.shared
            .segment
            .state()
            .fail_next
            .push_back(details.to_string());
    }

    /// The next `n` download links handed out have expired already.
    pub fn expire_next_links(&self, n: u32) {
        self.shared.segment.state().expired_links += n;
    }

    /// Operations created so far.
    pub fn operations_created(&self) -> usize {
        self.shared.segment.state().operations.len()
    }

    /// Forgets every operation, as the server does with old ones.
    pub fn forget_operations(&self) {
        let mut st = self.shared.segment.state();
        st.operations.clear();
        st.files.clear();
        st.links.clear();
    }
}
