//! The pipeline in memory: a scripted source (bodies from memory, cut off at
//! byte N, different each attempt, held until told) and a Singer writer into
//! a buffer, checked for what the pipeline promises: a unit's records all
//! come before the STATE that covers them, once, in unit order.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Notify;

use super::*;
use crate::http::retry::{Backoff, Retry};
use crate::read::Format;
use crate::source::Prepared;
use crate::state::{Bookmark, BundleBookmark, PlatformMarks, WindowBookmark};
use crate::stream::{
    Backend, DerivedKey, EVENTS, EXTRA_FIELD, IDENTITY_FIELDS, KEY_FIELD, StreamDef, WEB,
};
use crate::time::{format_rfc3339, from_unix, parse_datetime};

/// What happened, in order: a unit opened, or a line written to stdout.
#[derive(Debug, Clone)]
enum Entry {
    Opened(usize),
    Line(Value),
}

type Log = Arc<Mutex<Vec<Entry>>>;

fn push(log: &Log, entry: Entry) {
    log.lock().unwrap().push(entry);
}

/// stdout: each whole line written goes into the log as it arrives.
struct Stdout {
    log: Log,
    partial: Vec<u8>,
    /// Raised (as a SIGTERM would) when the first RECORD arrives.
    stop_at_first_record: Option<Stop>,
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).expect("stdout is JSON lines");
            if value["type"] == "RECORD"
                && let Some(stop) = self.stop_at_first_record.take()
            {
                stop.request(crate::error::Signal::Term);
            }
            push(&self.log, Entry::Line(value));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One attempt at a unit, as the source plays it.
#[derive(Clone)]
enum Try {
    /// The whole body, in pieces of a few bytes.
    Body(Vec<u8>),
    /// The first `n` bytes of the body, then the connection breaks.
    CutAfter(Vec<u8>, usize),
    /// Opening it fails for good.
    Refused,
    /// The body waits for `gate` before its first byte.
    Gated(Vec<u8>, Arc<Notify>),
    /// The body never sends a byte; `dropped` is set once it is dropped.
    Hangs(Arc<AtomicBool>),
}

/// How one unit behaves.
#[derive(Default)]
struct Script {
    /// Attempts in order; the last one repeats.
    tries: Mutex<VecDeque<Try>>,
    /// Opens so far.
    opens: AtomicU32,
    /// Prepares so far.
    prepares: AtomicU32,
    /// Whether prepare names work in flight (as a Segment Export does).
    names_work: bool,
    /// How many failures the source answers by renewing the unit.
    renewals: AtomicU32,
    skipped: bool,
    /// Told when this unit is opened.
    on_open: Option<Arc<Notify>>,
}

impl Script {
    fn of(tries: impl IntoIterator<Item = Try>) -> Script {
        Script {
            tries: Mutex::new(tries.into_iter().collect()),
            ..Script::default()
        }
    }
}

/// A source of units 1, 2, ...: unit `n` covers day `n` and its bookmark is
/// a bundle bookmark at the end of that day with id `n`. `AHEAD` is its
/// [`Source::lookahead`].
struct Fake<const AHEAD: usize> {
    units: Vec<Arc<Script>>,
    log: Log,
    retry: Retry,
    watermark: Option<&'static str>,
}

impl<const AHEAD: usize> Fake<AHEAD> {
    fn new(log: &Log, units: Vec<Script>) -> Fake<AHEAD> {
        Fake {
            units: units.into_iter().map(Arc::new).collect(),
            log: Arc::clone(log),
            retry: Retry {
                backoff: Backoff {
                    base: Duration::from_millis(1),
                    max: Duration::from_millis(2),
                },
                max_retries: 3,
            },
            watermark: None,
        }
    }

    fn script(&self, n: usize) -> &Script {
        &self.units[n - 1]
    }
}

const DAY: i64 = 86_400;
const T0: i64 = 1_704_067_200;

fn day_end(n: usize) -> chrono::DateTime<chrono::Utc> {
    from_unix(T0 + n as i64 * DAY).unwrap()
}

/// A body held back until released, and dropped when the fetch is.
struct Scripted {
    chunks: VecDeque<Result<Bytes, Failure>>,
    gate: Option<Arc<Notify>>,
    hangs: Option<Arc<AtomicBool>>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if let Some(dropped) = &self.hangs {
            dropped.store(true, Ordering::SeqCst);
        }
    }
}

impl Body for Scripted {
    async fn chunk(&mut self) -> Result<Option<Bytes>, Failure> {
        if let Some(gate) = self.gate.take() {
            gate.notified().await;
        }
        if self.hangs.is_some() {
            std::future::pending::<()>().await;
        }
        self.chunks.pop_front().transpose()
    }
}

/// `bytes` in pieces of 7, so records span pieces.
fn pieces(bytes: &[u8]) -> VecDeque<Result<Bytes, Failure>> {
    bytes
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

impl<const AHEAD: usize> Source for Fake<AHEAD> {
    type Unit = usize;
    type Body = Scripted;

    const UNIT: &'static str = "unit";

    fn lookahead(&self) -> usize {
        AHEAD
    }

    async fn units(&self, bookmark: Option<&Bookmark>) -> Result<Vec<usize>> {
        let done = bookmark
            .and_then(Bookmark::bundle)
            .and_then(|b| b.bundle_id.as_deref())
            .map_or(0, |id| id.parse().unwrap());
        Ok((done + 1..=self.units.len()).collect())
    }

    async fn prepare(
        &self,
        n: &usize,
        bookmark: Option<&Bookmark>,
        _ahead: bool,
    ) -> Result<Prepared> {
        let script = self.script(*n);
        script.prepares.fetch_add(1, Ordering::SeqCst);
        if !script.names_work {
            return Ok(Prepared::Ready(None));
        }
        Ok(Prepared::Ready(Some(Bookmark::Window(WindowBookmark {
            end: bookmark.and_then(Bookmark::done_until),
            exports: vec![crate::state::PendingExport {
                start: day_end(n - 1),
                end: day_end(*n),
                operation_id: format!("op-{n}-{}", script.prepares.load(Ordering::SeqCst)),
                segment_id: None,
                scope: None,
            }],
        }))))
    }

    fn renew(&self, n: &usize) -> bool {
        let left = &self.script(*n).renewals;
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
            .is_ok()
    }

    async fn open(&self, n: &usize) -> Result<Scripted, Failure> {
        push(&self.log, Entry::Opened(*n));
        let script = self.script(*n);
        script.opens.fetch_add(1, Ordering::SeqCst);
        if let Some(notify) = &script.on_open {
            notify.notify_one();
        }
        let attempt = {
            let mut tries = script.tries.lock().unwrap();
            if tries.len() > 1 {
                tries.pop_front()
            } else {
                tries.front().cloned()
            }
        };
        let body = |chunks, gate, hangs| Scripted {
            chunks,
            gate,
            hangs,
        };
        match attempt.expect("a script for every unit") {
            Try::Body(bytes) => Ok(body(pieces(&bytes), None, None)),
            Try::CutAfter(bytes, n) => {
                let mut chunks = pieces(&bytes[..n]);
                chunks.push_back(Err(Failure::retry("connection reset".into())));
                Ok(body(chunks, None, None))
            }
            Try::Refused => Err(Failure::Fatal(Error::Api(format!(
                "unit {n}: HTTP 403 Forbidden"
            )))),
            Try::Gated(bytes, gate) => Ok(body(pieces(&bytes), Some(gate), None)),
            Try::Hangs(dropped) => Ok(body(VecDeque::new(), None, Some(dropped))),
        }
    }

    fn format(&self, _: &usize) -> Format {
        Format::JsonArray
    }

    fn id<'u>(&self, n: &'u usize) -> &'u str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"][*n]
    }

    fn window(&self, n: &usize) -> String {
        format!("day {n}")
    }

    fn watermark(&self) -> Option<&'static str> {
        self.watermark
    }

    fn floor(&self, _: &usize, bookmark: Option<&Bookmark>) -> Option<LastUpdated> {
        bookmark?.last_updated(WEB).cloned()
    }

    fn bookmark_after(
        &self,
        n: &usize,
        _: Option<&Bookmark>,
        newest: Option<LastUpdated>,
    ) -> Result<Option<Bookmark>> {
        if self.watermark.is_some() {
            return Ok(newest.map(|n| Bookmark::Updated(PlatformMarks::default().with(WEB, n))));
        }
        Ok(Some(Bookmark::Bundle(BundleBookmark {
            stop: day_end(*n),
            bundle_id: Some(n.to_string()),
        })))
    }

    fn retry(&self) -> &Retry {
        &self.retry
    }

    fn skipped(&self, n: &usize) -> bool {
        self.script(*n).skipped
    }

    fn skip_setting(&self) -> Option<&'static str> {
        Some("skip_units")
    }
}

/// Unit `n`'s events: `count` of them, told apart by `UserId`.
fn events(n: usize, count: usize) -> Vec<u8> {
    let events: Vec<String> = (0..count)
        .map(|i| {
            let at = format_rfc3339(day_end(n - 1) + chrono::TimeDelta::seconds(i as i64));
            format!(r#"{{"EventType":"u{n}","UserId":{i},"EventStart":"{at}"}}"#)
        })
        .collect();
    format!("[{}]", events.join(",")).into_bytes()
}

/// Records per unit in these tests.
const EACH: usize = 5;

fn ok(n: usize) -> Script {
    Script::of([Try::Body(events(n, EACH))])
}

fn options(dir: &std::path::Path) -> Options {
    Options {
        spool_dir: dir.to_path_buf(),
        progress_interval: Duration::from_secs(3600),
        batch: None,
        property_columns: Some(500),
        table_version: None,
        stop: Stop::default(),
    }
}

/// Runs the fake's stream of events from `state`; the result and the log.
async fn run<const A: usize>(fake: Fake<A>, state: &mut State) -> Result<Summary> {
    run_with(fake, state, None).await
}

async fn run_with<const A: usize>(
    fake: Fake<A>,
    state: &mut State,
    batch: Option<(BatchConfig, String)>,
) -> Result<Summary> {
    run_stream(fake, state, batch, &EVENTS, None).await
}

/// The events, read whole each run as a FULL_TABLE stream is.
static EVENTS_TABLE: StreamDef = StreamDef {
    name: "events",
    schema: include_str!("../../schemas/events.json"),
    key_properties: &[KEY_FIELD],
    replication_method: ReplicationMethod::FullTable,
    replication_key: None,
    derived_key: Some(DerivedKey {
        field: KEY_FIELD,
        identity: IDENTITY_FIELDS,
    }),
    extra_field: EXTRA_FIELD,
    backend: Backend::Events,
    selected_by_default: false,
    custom_properties: false,
};

/// Runs `stream` from the fake, with this run's table version `version`.
async fn run_stream<const A: usize>(
    fake: Fake<A>,
    state: &mut State,
    batch: Option<(BatchConfig, String)>,
    stream: &'static StreamDef,
    version: Option<u64>,
) -> Result<Summary> {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.batch = batch;
    options.table_version = version;
    run_out(fake, state, stream, options, false).await
}

/// Runs `stream` from the fake with `options`; with `signal`, a SIGTERM is
/// noted (in `options.stop`) as the first record goes out.
async fn run_out<const A: usize>(
    fake: Fake<A>,
    state: &mut State,
    stream: &'static StreamDef,
    options: Options,
    signal: bool,
) -> Result<Summary> {
    let mut out = SingerWriter::new(Stdout {
        log: Arc::clone(&fake.log),
        partial: Vec::new(),
        stop_at_first_record: signal.then(|| options.stop.clone()),
    });
    let schema = Schema::of(stream);
    let selection = Selection::all(&schema);
    let result = Pipeline::new(fake, schema, selection, options, state, &mut out)
        .run()
        .await;
    out.flush().unwrap();
    result
}

fn lines(log: &Log) -> Vec<Value> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Entry::Line(v) => Some(v.clone()),
            Entry::Opened(_) => None,
        })
        .collect()
}

/// The unit a RECORD or batch record is of.
fn unit_of(record: &Value) -> usize {
    record["EventType"].as_str().unwrap()[1..].parse().unwrap()
}

/// The units a STATE says are done: by the bundle id of its bookmark, or
/// the day its window bookmark ends.
fn done_by(state: &Value) -> usize {
    let bookmark = &state["value"]["bookmarks"]["events"];
    if let Value::String(id) = &bookmark["bundle_id"] {
        return id.parse().unwrap();
    }
    match bookmark["window_end"].as_str().and_then(parse_datetime) {
        Some(end) => ((end.timestamp() - T0) / DAY) as usize,
        None => 0,
    }
}

/// Checks the promise: every record comes before any STATE that covers its
/// unit, each record once, units in order; returns the units written
/// (records per unit).
fn assert_exactly_once_in_order(lines: &[Value]) -> Vec<(usize, usize)> {
    assert_eq!(lines[0]["type"], "SCHEMA", "{:?}", lines[0]);
    let mut written: Vec<(usize, usize)> = Vec::new();
    let mut users: HashSet<(usize, u64)> = HashSet::new();
    let mut covered = 0;
    for line in lines {
        match line["type"].as_str().unwrap() {
            "RECORD" => {
                let record = &line["record"];
                let unit = unit_of(record);
                assert!(unit > covered, "a record of unit {unit} after its STATE");
                assert!(
                    users.insert((unit, record["UserId"].as_u64().unwrap())),
                    "a record twice: {record}"
                );
                match written.last_mut() {
                    Some((u, count)) if *u == unit => *count += 1,
                    Some((u, _)) => {
                        assert!(*u < unit, "unit {unit} after unit {u}");
                        written.push((unit, 1));
                    }
                    None => written.push((unit, 1)),
                }
            }
            "STATE" => {
                let done = done_by(line);
                assert!(done >= covered, "the bookmark moved back");
                // Every unit it covers is written whole before it.
                for unit in covered + 1..=done {
                    if let Some((_, count)) = written.iter().find(|(u, _)| *u == unit) {
                        assert_eq!(*count, EACH, "unit {unit} not whole before its STATE");
                    }
                }
                covered = done;
            }
            "SCHEMA" | "BATCH" | "ACTIVATE_VERSION" => {}
            other => panic!("unexpected message {other}"),
        }
    }
    assert_eq!(
        lines.last().unwrap()["type"],
        "STATE",
        "the output ends with a STATE"
    );
    written
}

fn whole(units: &[usize]) -> Vec<(usize, usize)> {
    units.iter().map(|&u| (u, EACH)).collect()
}

fn last_done(lines: &[Value]) -> usize {
    done_by(lines.iter().rev().find(|l| l["type"] == "STATE").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_unit_is_written_whole_then_its_state() {
    let log = Log::default();
    let fake = Fake::<1>::new(&log, vec![ok(1), ok(2), ok(3)]);
    let summary = run(fake, &mut State::default()).await.unwrap();
    assert_eq!((summary.units, summary.records), (3, 3 * EACH as u64));
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[1, 2, 3]));
    // SCHEMA, STATE, then each unit's records and STATE, then a closing STATE.
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    let states: Vec<usize> = lines
        .iter()
        .filter(|l| l["type"] == "STATE")
        .map(done_by)
        .collect();
    assert_eq!(states, [0, 1, 2, 3, 3]);
    assert_eq!(kinds.len(), 2 + 3 * (EACH + 1) + 1);
    for (i, state_at) in [1 + EACH + 1, 2 * (EACH + 1) + 1, 3 * (EACH + 1) + 1]
        .into_iter()
        .enumerate()
    {
        assert_eq!(kinds[state_at], "STATE", "STATE after unit {}", i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_unit_is_fetched_while_one_is_being_written() {
    // Unit 1's body comes only once unit 2 has been opened: without
    // fetching ahead the run would wait for ever.
    let log = Log::default();
    let opened_2 = Arc::new(Notify::new());
    let mut second = ok(2);
    second.on_open = Some(Arc::clone(&opened_2));
    let first = Script::of([Try::Gated(events(1, EACH), opened_2)]);
    let fake = Fake::<1>::new(&log, vec![first, second, ok(3)]);
    let mut state = State::default();
    let summary = tokio::time::timeout(Duration::from_secs(20), run(fake, &mut state))
        .await
        .expect("unit 2 was not fetched ahead of unit 1")
        .unwrap();
    assert_eq!(summary.units, 3);
    assert_eq!(
        assert_exactly_once_in_order(&lines(&log)),
        whole(&[1, 2, 3])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_fetches_none_ahead_opens_each_unit_after_the_last_is_committed() {
    let log = Log::default();
    let fake = Fake::<0>::new(&log, vec![ok(1), ok(2), ok(3)]);
    run(fake, &mut State::default()).await.unwrap();
    // Unit n is opened only after the STATE that covers unit n - 1.
    let mut covered = 0;
    for entry in log.lock().unwrap().iter() {
        match entry {
            Entry::Opened(n) => assert_eq!(*n, covered + 1, "unit {n} opened early"),
            Entry::Line(l) if l["type"] == "STATE" => covered = done_by(l),
            Entry::Line(_) => {}
        }
    }
    assert_eq!(covered, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_the_source_renews_is_prepared_again_and_written_once() {
    let log = Log::default();
    let mut second = Script::of([Try::Refused, Try::Body(events(2, EACH))]);
    second.names_work = true;
    second.renewals = AtomicU32::new(1);
    let mut first = ok(1);
    first.names_work = true;
    let fake = Fake::<0>::new(&log, vec![first, second, ok(3)]);
    let scripts: Vec<Arc<Script>> = fake.units.clone();
    run(fake, &mut State::default()).await.unwrap();
    assert_eq!(scripts[1].prepares.load(Ordering::SeqCst), 2);
    assert_eq!(scripts[1].opens.load(Ordering::SeqCst), 2);
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[1, 2, 3]));
    // Each prepare's STATE names its work in flight before any of its records.
    let ops: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["value"]["bookmarks"]["events"]["exports"][0]["operation_id"].as_str())
        .collect();
    assert_eq!(ops, ["op-1-1", "op-2-1", "op-2-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_unit_is_not_opened_and_the_state_moves_past_it() {
    let log = Log::default();
    let mut second = ok(2);
    second.skipped = true;
    let fake = Fake::<1>::new(&log, vec![ok(1), second, ok(3)]);
    let scripts = fake.units.clone();
    let summary = run(fake, &mut State::default()).await.unwrap();
    assert_eq!(scripts[1].opens.load(Ordering::SeqCst), 0);
    assert_eq!(summary.units, 2);
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[1, 3]));
    let states: Vec<usize> = lines
        .iter()
        .filter(|l| l["type"] == "STATE")
        .map(done_by)
        .collect();
    assert_eq!(states, [0, 1, 2, 3, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bad_bytes_twice_stop_the_run_before_that_unit() {
    let log = Log::default();
    let bad = br#"[{"EventType":"u2","UserId":1} x]"#.to_vec();
    let fake = Fake::<1>::new(&log, vec![ok(1), Script::of([Try::Body(bad)]), ok(3)]);
    let scripts = fake.units.clone();
    let err = run(fake, &mut State::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("two downloads brought the same"), "{err}");
    assert!(err.contains("skip_units"), "{err}");
    assert_eq!(scripts[1].opens.load(Ordering::SeqCst), 2);
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[1]));
    assert_eq!(last_done(&lines), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_that_differ_are_fetched_again() {
    let log = Log::default();
    let second = Script::of([
        Try::Body(br#"[{"EventType":"u2"} x]"#.to_vec()),
        Try::Body(br#"[{"EventType":"u2"},"#.to_vec()),
        Try::Body(events(2, EACH)),
    ]);
    let fake = Fake::<1>::new(&log, vec![ok(1), second]);
    let scripts = fake.units.clone();
    run(fake, &mut State::default()).await.unwrap();
    assert_eq!(scripts[1].opens.load(Ordering::SeqCst), 3);
    assert_eq!(assert_exactly_once_in_order(&lines(&log)), whole(&[1, 2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_is_fetched_again_and_written_once() {
    let log = Log::default();
    let body = events(2, EACH);
    let half = body.len() / 2;
    let second = Script::of([Try::CutAfter(body.clone(), half), Try::Body(body)]);
    let fake = Fake::<1>::new(&log, vec![ok(1), second, ok(3)]);
    run(fake, &mut State::default()).await.unwrap();
    assert_eq!(
        assert_exactly_once_in_order(&lines(&log)),
        whole(&[1, 2, 3])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_on_the_last_unit_keeps_every_unit_before_it() {
    let log = Log::default();
    let fake = Fake::<1>::new(&log, vec![ok(1), ok(2), Script::of([Try::Refused])]);
    let err = run(fake, &mut State::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unit 3: HTTP 403"), "{err}");
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[1, 2]));
    assert_eq!(last_done(&lines), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_resumed_from_its_last_state_writes_only_what_is_left() {
    let log = Log::default();
    let fake = Fake::<1>::new(&log, vec![ok(1), ok(2), ok(3)]);
    let mut state = State::default();
    state.advance(
        &EVENTS,
        Bookmark::Bundle(BundleBookmark {
            stop: day_end(2),
            bundle_id: Some("2".into()),
        }),
    );
    run(fake, &mut state).await.unwrap();
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[3]));
    assert!(
        !log.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Entry::Opened(n) if *n < 3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_between_units_leaves_output_that_resumes() {
    // The run is dropped (as the CLI drops it on SIGTERM) while unit 2 is
    // being fetched.
    let log = Log::default();
    let hung = Arc::new(AtomicBool::new(false));
    let opened_2 = Arc::new(Notify::new());
    let mut second = Script::of([Try::Hangs(Arc::clone(&hung))]);
    second.on_open = Some(Arc::clone(&opened_2));
    let fake = Fake::<0>::new(&log, vec![ok(1), second, ok(3)]);
    let mut state = State::default();
    tokio::select! {
        _ = run(fake, &mut state) => panic!("the run ended by itself"),
        () = opened_2.notified() => {}
    }
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[1]));
    assert_eq!(last_done(&lines), 1);
    // The fetch in flight is stopped, not left running.
    for _ in 0..200 {
        if hung.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        hung.load(Ordering::SeqCst),
        "unit 2's fetch was not stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_a_unit_goes_out_ends_the_run_after_its_state() {
    // Every body is there at once, so the next unit is fetched before the
    // one going out is done and the run never has to wait: only the stop
    // flag, read before each commit, can end it between units.
    let log = Log::default();
    let fake = Fake::<1>::new(&log, vec![ok(1), ok(2), ok(3), ok(4)]);
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::default();
    let result = run_out(fake, &mut state, &EVENTS, options(dir.path()), true).await;
    assert!(
        matches!(result, Err(Error::Interrupted(crate::error::Signal::Term))),
        "{result:?}"
    );
    let first = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&first), whole(&[1]));
    assert_eq!(last_done(&first), 1);
    // A rerun from that STATE writes the rest, once.
    let rest = Fake::<1>::new(&log, vec![ok(1), ok(2), ok(3), ok(4)]);
    log.lock().unwrap().clear();
    run(rest, &mut state).await.unwrap();
    assert_eq!(
        assert_exactly_once_in_order(&lines(&log)),
        whole(&[2, 3, 4])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_batch_output_the_file_is_whole_before_its_batch_message_and_state() {
    let log = Log::default();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::batch::BatchConfig::from_value(&serde_json::json!({
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": format!("file://{}", dir.path().display()), "prefix": "t-"}
    }))
    .unwrap();
    let fake = Fake::<1>::new(&log, vec![ok(1), ok(2)]);
    run_with(fake, &mut State::default(), Some((config, "run".into())))
        .await
        .unwrap();
    let lines = lines(&log);
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "SCHEMA", "STATE", "BATCH", "STATE", "BATCH", "STATE", "STATE"
        ]
    );
    for (i, unit) in [(2, 1), (4, 2)] {
        assert_eq!(done_by(&lines[i + 1]), unit);
        let url = lines[i]["manifest"][0].as_str().unwrap();
        let path = url.strip_prefix("file://").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()),
            &mut text,
        )
        .unwrap();
        let units: Vec<usize> = text
            .lines()
            .map(|l| unit_of(&serde_json::from_str(l).unwrap()))
            .collect();
        assert_eq!(units, vec![unit; EACH], "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermarked_stream_writes_what_is_newer_than_its_bookmark_and_moves_it() {
    let log = Log::default();
    let version = |at: &str| format!(r#"{{"EventType":"u1","UserId":1,"EventStart":"{at}"}}"#);
    let body = format!(
        "[{},{},{}]",
        version("2024-01-01T00:00:00Z"),
        version("2024-01-03T00:00:00Z"),
        version("2024-01-02T00:00:00Z")
    );
    let mut fake = Fake::<0>::new(&log, vec![Script::of([Try::Body(body.into_bytes())])]);
    fake.watermark = Some("EventStart");
    let mut state = State::default();
    let at = "2024-01-01T00:00:00Z";
    let bookmark = LastUpdated {
        at: parse_datetime(at).unwrap(),
        text: at.into(),
    };
    state.advance(
        &EVENTS,
        Bookmark::Updated(PlatformMarks::default().with(WEB, bookmark)),
    );
    let summary = run(fake, &mut state).await.unwrap();
    assert_eq!(summary.records, 2);
    let lines = lines(&log);
    let starts: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "RECORD")
        .map(|l| l["record"]["EventStart"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["2024-01-03T00:00:00Z", "2024-01-02T00:00:00Z"]);
    let last = lines.iter().rev().find(|l| l["type"] == "STATE").unwrap();
    assert_eq!(
        last["value"]["bookmarks"]["events"]["lastUpdated"],
        "2024-01-03T00:00:00Z"
    );
    let state_at = lines
        .iter()
        .position(|l| {
            l["type"] == "STATE"
                && l["value"]["bookmarks"]["events"]["lastUpdated"] == "2024-01-03T00:00:00Z"
        })
        .unwrap();
    let last_record = lines.iter().rposition(|l| l["type"] == "RECORD").unwrap();
    assert!(
        last_record < state_at,
        "the bookmark moved before its records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_stream_activates_its_version_after_its_last_record() {
    let log = Log::default();
    let fake = Fake::<1>::new(&log, vec![ok(1), ok(2), ok(3)]);
    let version = 1_765_000_000_123;
    let mut state = State::default();
    run_stream(fake, &mut state, None, &EVENTS_TABLE, Some(version))
        .await
        .unwrap();
    let lines = lines(&log);
    assert_eq!(assert_exactly_once_in_order(&lines), whole(&[1, 2, 3]));
    let records: Vec<&Value> = lines.iter().filter(|l| l["type"] == "RECORD").collect();
    assert_eq!(records.len(), 3 * EACH);
    assert!(
        records.iter().all(|r| r["version"] == version),
        "every record carries the run's version"
    );
    let activations: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i]["type"] == "ACTIVATE_VERSION")
        .collect();
    assert_eq!(activations.len(), 1, "one ACTIVATE_VERSION a run");
    let at = activations[0];
    assert_eq!(
        lines[at],
        serde_json::json!({"type": "ACTIVATE_VERSION", "stream": "events", "version": version})
    );
    let last_record = lines.iter().rposition(|l| l["type"] == "RECORD").unwrap();
    assert!(last_record < at, "activated before its last record");
    // The last unit's STATE comes after it: a run killed in between has
    // written every record, and the next run activates its own version.
    assert_eq!(lines[at + 1]["type"], "STATE");
    assert_eq!(done_by(&lines[at + 1]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_run_that_fails_part_way_activates_nothing() {
    for failing in [1, 2, 3] {
        let log = Log::default();
        let scripts = (1..=3)
            .map(|n| {
                if n == failing {
                    Script::of([Try::Refused])
                } else {
                    ok(n)
                }
            })
            .collect();
        let fake = Fake::<1>::new(&log, scripts);
        let result = run_stream(fake, &mut State::default(), None, &EVENTS_TABLE, Some(7)).await;
        assert!(result.is_err());
        let lines = lines(&log);
        assert!(
            lines.iter().all(|l| l["type"] != "ACTIVATE_VERSION"),
            "unit {failing} failed, yet the table was activated"
        );
        assert_eq!(last_done(&lines), failing - 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_version_records_carry_none_and_nothing_is_activated() {
    // Versions off (or BATCH output), and incremental streams in any case.
    for (stream, version) in [(&EVENTS_TABLE, None), (&EVENTS, Some(9))] {
        let log = Log::default();
        let fake = Fake::<1>::new(&log, vec![ok(1), ok(2)]);
        run_stream(fake, &mut State::default(), None, stream, version)
            .await
            .unwrap();
        let lines = lines(&log);
        assert!(lines.iter().all(|l| l.get("version").is_none()));
        assert!(lines.iter().all(|l| l["type"] != "ACTIVATE_VERSION"));
    }
}
