//! The Segment Export source against the demo server: windows, the export
//! flow, resuming an export in flight, faults, switching from bundles, and
//! the individuals stream.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use fullstory_demo::{BundleSpec, Encoding, Fault, Route, Server};
use serde_json::{Value, json};

use crate::support::*;

/// A Segment Export config for `server`, exporting up to `days` after [`T0`].
fn seg_config(server: &Server, days: i64) -> Value {
    let mut cfg = config(server);
    cfg["source"] = json!("segment_export");
    cfg["api_url"] = json!(server.url());
    cfg["poll_interval_seconds"] = json!(0.05);
    cfg["export_delay_hours"] = json!(0);
    cfg["end_date"] = json!(rfc3339(T0 + days * DAY));
    cfg
}

/// Only the events stream, with every field.
fn events_only() -> Value {
    json!({"streams": [{"tap_stream_id": "events", "metadata": [
        {"breadcrumb": [], "metadata": {"selected": true}}]}]})
}

fn event_records(run: &Run) -> Vec<Value> {
    stream_records(run, "events")
}

fn stream_records(run: &Run, stream: &str) -> Vec<Value> {
    run.messages()
        .into_iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == stream)
        .map(|mut m| {
            m["record"]
                .as_object_mut()
                .map(|r| r.remove("time_extracted"));
            m["record"].take()
        })
        .collect()
}

/// Records by EventKey, without `time_extracted`.
fn by_key(records: &[Value]) -> BTreeMap<String, Value> {
    let map: BTreeMap<String, Value> = records
        .iter()
        .map(|r| (r["EventKey"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    assert_eq!(map.len(), records.len(), "duplicate EventKeys");
    map
}

fn events_state(state: &Value) -> &Value {
    &state["bookmarks"]["events"]
}

/// The oldest export a bookmark entry names as in flight.
fn first_export(entry: &Value) -> Option<&Value> {
    entry["exports"].as_array().and_then(|list| list.first())
}

/// A bookmark entry without the custom property columns it lists.
fn bookmark_only(entry: &Value) -> Value {
    let mut entry = entry.clone();
    entry.as_object_mut().map(|e| e.remove("properties"));
    entry
}

fn posts(srv: &Server) -> usize {
    srv.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/segments/v1/exports")
        .count()
}

/// Walks the messages: each window's records come after the STATE naming
/// its export and before the STATE moving the bookmark to its end, and every
/// record's EventStart is inside the window.
fn assert_windows_in_order(run: &Run) {
    let mut open: Option<(String, String)> = None;
    let mut last_end: Option<String> = None;
    for m in run.messages() {
        match m["type"].as_str() {
            Some("STATE") => {
                let e = events_state(&m["value"]);
                let end = e.get("window_end").and_then(Value::as_str);
                if end.is_some() && end != last_end.as_deref() {
                    if let Some((_, want)) = &open {
                        assert_eq!(
                            end,
                            Some(want.as_str()),
                            "bookmark moves to the window's end"
                        );
                    }
                    last_end = end.map(str::to_string);
                }
                // The records that follow are the oldest window's in flight.
                open = first_export(e).map(|export| {
                    (
                        export["window_start"].as_str().unwrap().to_string(),
                        export["window_end"].as_str().unwrap().to_string(),
                    )
                });
            }
            Some("RECORD") if m["stream"] == "events" => {
                let (start, end) = open.clone().expect("a record outside any export");
                let at = m["record"]["EventStart"].as_str().unwrap();
                assert!(
                    start.as_str() <= at && at < end.as_str(),
                    "{at} outside {start}..{end}"
                );
                if let Some(prev) = &last_end {
                    assert!(at >= prev.as_str());
                }
            }
            _ => {}
        }
    }
}

#[test]
fn events_from_segment_export_are_the_bundles_events_exactly_once() {
    let specs = bundles(3, 30, Encoding::GzipFile);
    let srv = server(specs.clone());
    let bundle_run = Tap::new()
        .config(&config(&srv))
        .catalog(&events_only())
        .run()
        .success();
    let seg_run = Tap::new()
        .config(&seg_config(&srv, 3))
        .catalog(&events_only())
        .run()
        .success();
    let a = by_key(&event_records(&bundle_run));
    let b = by_key(&event_records(&seg_run));
    assert_eq!(a.len(), total_events(&specs));
    assert_eq!(a, b, "the same records whichever API delivered them");
    assert_windows_in_order(&seg_run);

    let last = seg_run.last_state();
    assert_eq!(
        bookmark_only(events_state(&last)),
        json!({"replication_key": "EventStart", "window_end": rfc3339(T0 + 3 * DAY)})
    );
    assert_eq!(posts(&srv), 3, "one export per daily window");
    assert_eq!(srv.operations_created(), 3);
    let reqs = srv.requests();
    let downloads: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/storage/"))
        .collect();
    assert_eq!(downloads.len(), 3);
    assert!(
        downloads
            .iter()
            .all(|r| !r.authorized && r.status == Some(200)),
        "downloads carry no key"
    );
    // Operations were PENDING for some polls first, and the log says so.
    let polls = reqs
        .iter()
        .filter(|r| r.path.starts_with("/operations/v1/"))
        .count();
    assert!(polls >= 3 * 3, "{polls} polls");
    assert!(seg_run.stderr.contains("% done"), "{}", seg_run.stderr);
    // The signed link's query is not logged.
    assert!(!seg_run.stderr.contains("X-Signature"));

    // A second run with the last state has nothing to export.
    let again = Tap::new()
        .config(&seg_config(&srv, 3))
        .catalog(&events_only())
        .state(&last)
        .run()
        .success();
    assert!(again.records().is_empty());
    assert_eq!(posts(&srv), 3);
}

#[test]
fn smaller_windows_align_to_midnight_and_wait_for_the_delay() {
    let specs = bundles(1, 40, Encoding::GzipFile);
    let srv = server(specs.clone());
    let mut cfg = seg_config(&srv, 1);
    cfg["export_window_hours"] = json!(6);
    cfg["start_date"] = json!(rfc3339(T0 + 3 * 3600));
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .success();
    let exports: Vec<(String, String)> = run
        .states()
        .iter()
        .flat_map(|s| {
            events_state(s)["exports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|e| {
            (
                e["window_start"].as_str().unwrap().to_string(),
                e["window_end"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut exports = exports;
    let mut seen = HashSet::new();
    exports.retain(|span| seen.insert(span.clone()));
    let h = |hours: i64| rfc3339(T0 + hours * 3600);
    assert_eq!(
        exports,
        vec![(h(3), h(6)), (h(6), h(12)), (h(12), h(18)), (h(18), h(24))]
    );
    assert_windows_in_order(&run);
    let all = Tap::new()
        .config(&config(&srv))
        .catalog(&events_only())
        .run()
        .success();
    let later: usize = all
        .records()
        .iter()
        .filter(|r| r["EventStart"].as_str().unwrap() >= h(3).as_str())
        .count();
    assert_eq!(run.records().len(), later);

    // A window ending after now - export_delay_hours waits: nothing is made.
    let mut cfg = seg_config(&srv, 1);
    cfg.as_object_mut().unwrap().remove("end_date");
    cfg["export_delay_hours"] = json!(24);
    let now = chrono::Utc::now().timestamp();
    cfg["start_date"] = json!(rfc3339(now - 3600));
    let before = posts(&srv);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .success();
    assert!(run.records().is_empty());
    assert_eq!(posts(&srv), before);
}

#[test]
fn a_run_killed_while_an_export_is_pending_resumes_it_without_a_second_create() {
    let specs = bundles(1, 25, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.set_pending_polls(100_000);
    let cfg = seg_config(&srv, 1);
    let tap = Tap::new().config(&cfg).catalog(&events_only());
    let mut child = tap.spawn();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut state = None;
    let mut line = String::new();
    while state.is_none() && started.elapsed() < Duration::from_secs(20) {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let msg: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(
            msg["type"], "RECORD",
            "no record while the export is pending"
        );
        if msg["type"] == "STATE" && first_export(events_state(&msg["value"])).is_some() {
            state = Some(msg["value"].clone());
        }
    }
    let state = state.expect("a STATE naming the export");
    // Let it poll a few times, then kill it hard.
    while srv
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/operations/"))
        .count()
        < 3
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains(KEY));
    let op = events_state(&state)["exports"][0]["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(srv.operations_created(), 1);

    srv.set_pending_polls(1);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .state(&state)
        .run()
        .success();
    assert_eq!(
        srv.operations_created(),
        1,
        "the same export, not a new one"
    );
    assert_eq!(posts(&srv), 1);
    assert!(
        run.stderr.contains(&format!("resuming operation {op}")),
        "{}",
        run.stderr
    );
    assert_eq!(event_records(&run).len(), total_events(&specs));
    by_key(&event_records(&run));
    assert_eq!(
        bookmark_only(events_state(&run.last_state())),
        json!({"replication_key": "EventStart", "window_end": rfc3339(T0 + DAY)})
    );
}

#[test]
fn faults_are_survived_with_every_event_once() {
    let specs = bundles(4, 20, Encoding::GzipFile);
    let srv = server(specs.clone());
    let body = |code: u16, retry_after: Option<&str>| Fault::Status {
        code,
        headers: retry_after
            .map(|s| vec![("Retry-After".to_string(), s.to_string())])
            .unwrap_or_default(),
        body: br#"{"code":"too_many_requests"}"#.to_vec(),
    };
    srv.push_fault(Route::SegmentCreate, body(429, Some("1")));
    srv.push_fault(Route::Operation, body(503, None));
    srv.fail_next_operation("the export ran out of time");
    srv.expire_next_links(1);
    srv.push_fault(Route::Results, body(429, Some("0")));
    // The expired link's request takes the first download fault: a harmless one.
    srv.push_fault(
        Route::Download,
        Fault::Trickle {
            chunk: 1 << 20,
            delay: Duration::ZERO,
        },
    );
    srv.push_fault(Route::Download, Fault::Truncate { after: 100 });
    srv.push_fault(
        Route::Download,
        Fault::Body {
            content_type: "application/octet-stream".into(),
            body: b"\x1f\x8b\x08\x00garbage that is not deflate".to_vec(),
        },
    );
    srv.push_fault(Route::Download, Fault::Reset { after: 10 });
    // One export at a time, so the faults meet the requests in a known order.
    let mut cfg = seg_config(&srv, 4);
    cfg["exports_in_flight"] = json!(1);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .success();
    assert_eq!(srv.pending_faults(), 0);
    let records = event_records(&run);
    assert_eq!(records.len(), total_events(&specs));
    by_key(&records);
    assert_windows_in_order(&run);

    // The failed operation was replaced, and the STATE named the new one.
    assert_eq!(srv.operations_created(), 5);
    assert!(
        run.stderr.contains("the export ran out of time"),
        "{}",
        run.stderr
    );
    let named: HashSet<String> = run
        .states()
        .iter()
        .filter_map(|s| {
            first_export(events_state(s))
                .and_then(|e| e["operation_id"].as_str())
                .map(String::from)
        })
        .collect();
    assert_eq!(named.len(), 5, "{named:?}");
    // 429 on create: the retry waited as told.
    let creates: Vec<Instant> = srv
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.at)
        .collect();
    assert!(creates[1].duration_since(creates[0]) >= Duration::from_secs(1));
    // The expired link and the broken downloads each asked for a fresh link.
    let reqs = srv.requests();
    let results = reqs.iter().filter(|r| r.path.ends_with("/results")).count();
    let downloads = reqs
        .iter()
        .filter(|r| r.path.starts_with("/storage/"))
        .count();
    // A download cut off is resumed from the same link (a Range request);
    // one refused or malformed starts over with a fresh link.
    let resumed = reqs
        .iter()
        .filter(|r| r.path.starts_with("/storage/") && r.range.is_some())
        .count();
    assert_eq!(resumed, 2, "the truncated and the reset download");
    assert_eq!(downloads, 4 + 2 + resumed, "{downloads}");
    assert_eq!(results, downloads - resumed + 1, "one extra for the 429");
    assert!(
        reqs.iter()
            .any(|r| r.path.starts_with("/storage/") && r.status == Some(403)),
        "the expired link was refused"
    );
}

#[test]
fn an_operation_that_keeps_failing_stops_the_run_quoting_the_details() {
    let specs = bundles(2, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    for _ in 0..10 {
        srv.fail_next_operation("quota exceeded for exports");
    }
    // One window, so every export created is that window's.
    let mut cfg = seg_config(&srv, 1);
    cfg["max_retries"] = json!(2);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .failure(1);
    assert!(run.records().is_empty());
    assert!(
        run.last_log()
            .contains("FAILED: quota exceeded for exports"),
        "{}",
        run.last_log()
    );
    assert_eq!(srv.operations_created(), 3);
    // Every STATE keeps the bookmark where it was: nothing is done.
    assert!(
        run.states()
            .iter()
            .all(|s| events_state(s).get("window_end").is_none())
    );
}

#[test]
fn a_timed_out_export_says_the_next_run_resumes_it() {
    let specs = bundles(1, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.set_pending_polls(100_000);
    let mut cfg = seg_config(&srv, 1);
    cfg["export_timeout_minutes"] = json!(0.005);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .failure(1);
    assert!(
        run.last_log().contains("next run resumes it"),
        "{}",
        run.last_log()
    );
    let state = run.last_state();
    let op = events_state(&state)["exports"][0]["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(run.last_log().contains(&op));

    srv.set_pending_polls(0);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .state(&state)
        .run()
        .success();
    assert_eq!(srv.operations_created(), 1);
    assert_eq!(run.records().len(), 5);
}

#[test]
fn an_operation_the_server_forgot_is_created_anew() {
    let specs = bundles(1, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    let state = json!({"bookmarks": {"events": {"export": {
        "window_start": rfc3339(T0), "window_end": rfc3339(T0 + DAY), "operation_id": "op-gone"}}}});
    let run = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&events_only())
        .state(&state)
        .run()
        .success();
    assert_eq!(run.records().len(), 5);
    assert_eq!(srv.operations_created(), 1);
    assert!(run.stderr.contains("op-gone"), "{}", run.stderr);
}

#[test]
fn a_server_error_that_quotes_a_404_is_not_taken_for_a_lost_export() {
    let specs = bundles(1, 5, Encoding::GzipFile);
    let srv = server(specs);
    let quoting = || Fault::Status {
        code: 500,
        headers: vec![],
        body: br#"{"error": "upstream said HTTP 404 Not Found, HTTP 410 Gone"}"#.to_vec(),
    };
    // More 500s than retries: the poll gives up on a server error.
    for _ in 0..3 {
        srv.push_fault(Route::Operation, quoting());
    }
    let mut cfg = seg_config(&srv, 1);
    cfg["max_retries"] = json!(1);
    let run = Tap::new().config(&cfg).catalog(&events_only()).run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("giving up"), "{}", run.stderr);
    // Not mistaken for an export the server lost: no second create, and the
    // STATE still names the operation, for the next run to poll again.
    assert_eq!(srv.operations_created(), 1, "{}", run.stderr);
    assert!(
        !run.stderr.contains("unknown to the server"),
        "{}",
        run.stderr
    );
    assert!(
        events_state(&run.last_state())["exports"][0]["operation_id"].is_string(),
        "{}",
        run.stdout
    );
}

#[test]
fn a_refused_key_names_the_role_and_the_entitlement() {
    let srv = server(bundles(1, 1, Encoding::GzipFile));
    let mut cfg = seg_config(&srv, 1);
    cfg["api_key"] = json!("not-the-key");
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .failure(1);
    let last = run.last_log();
    assert!(last.contains("401"), "{last}");
    assert!(last.contains("Admin or Architect"), "{last}");
    assert!(last.contains("Segment Export entitlement"), "{last}");
    assert!(!run.stderr.contains("not-the-key"));
}

#[test]
fn switching_from_bundles_continues_at_the_bookmark_with_no_gap_or_overlap() {
    let specs = bundles(4, 15, Encoding::GzipFile);
    let srv = server(specs.clone());
    let all = by_key(&event_records(
        &Tap::new()
            .config(&config(&srv))
            .catalog(&events_only())
            .run()
            .success(),
    ));
    assert_eq!(all.len(), total_events(&specs));

    let mut first_cfg = config(&srv);
    first_cfg["end_date"] = json!(rfc3339(T0 + 2 * DAY));
    let states: Vec<(&str, Value)> = vec![
        ("ours", {
            let first = Tap::new()
                .config(&first_cfg)
                .catalog(&events_only())
                .run()
                .success();
            first.last_state()
        }),
        ("python 1.x", json!({"events": rfc3339(T0 + 2 * DAY)})),
    ];
    for (what, state) in states {
        let before: BTreeMap<String, Value> = all
            .iter()
            .filter(|(_, r)| r["EventStart"].as_str().unwrap() < rfc3339(T0 + 2 * DAY).as_str())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let run = Tap::new()
            .config(&seg_config(&srv, 4))
            .catalog(&events_only())
            .state(&state)
            .run()
            .success();
        let after = by_key(&event_records(&run));
        assert!(
            after.keys().all(|k| !before.contains_key(k)),
            "{what}: overlap"
        );
        let mut union = before.clone();
        union.extend(after.clone());
        assert_eq!(union, all, "{what}: gap or changed records");
        let first_export = run
            .states()
            .iter()
            .find_map(|s| first_export(events_state(s)).cloned())
            .unwrap();
        assert_eq!(
            first_export["window_start"],
            rfc3339(T0 + 2 * DAY),
            "{what}"
        );
    }
}

#[test]
fn lookback_exports_again_without_new_keys() {
    let specs = bundles(3, 12, Encoding::GzipFile);
    let srv = server(specs.clone());
    let first = Tap::new()
        .config(&seg_config(&srv, 2))
        .catalog(&events_only())
        .run()
        .success();
    let mut cfg = seg_config(&srv, 3);
    cfg["lookback_hours"] = json!(24);
    let second = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .state(&first.last_state())
        .run()
        .success();
    let a = by_key(&event_records(&first));
    let b = by_key(&event_records(&second));
    let day2 = rfc3339(T0 + DAY);
    let again: Vec<&String> = b
        .iter()
        .filter(|(_, r)| r["EventStart"].as_str().unwrap() < rfc3339(T0 + 2 * DAY).as_str())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(again.len(), 12, "day 2 exported again");
    assert!(again.iter().all(|k| a.contains_key(*k) && a[*k] == b[*k]));
    assert!(
        b.values()
            .all(|r| r["EventStart"].as_str().unwrap() >= day2.as_str())
    );
    assert_eq!(b.len(), 24);
    // The bookmark never went back.
    for s in second.states() {
        if let Some(end) = events_state(&s).get("window_end").and_then(Value::as_str) {
            assert!(end >= rfc3339(T0 + 2 * DAY).as_str(), "{end}");
        }
    }
    assert_eq!(
        events_state(&second.last_state())["window_end"],
        rfc3339(T0 + 3 * DAY)
    );
}

#[test]
fn individuals_come_with_segment_export_keyed_on_indv_id() {
    let json = br#"[{"IndvId":9223372036854775807,"UserId":9007199254740993,"SessionId":1,"PageId":2,"EventStart":"2024-01-01T01:00:00.000Z","EventType":"click","UserDisplayName":"Ana","UserEmail":"ana@example.com","UserAppKey":"u-1","PageUrl":"https://example.com/a","user_plan_str":"pro"},
{"IndvId":9223372036854775807,"UserId":9007199254740993,"SessionId":1,"PageId":3,"EventStart":"2024-01-01T02:00:00.000Z","EventType":"navigate","PageUrl":"https://example.com/b","user_plan_str":"pro"},
{"IndvId":4503599627370497,"UserId":5,"SessionId":7,"PageId":8,"EventStart":"2024-01-01T03:00:00.000Z","EventType":"load"}]"#;
    let spec =
        BundleSpec::from_events_json("1", T0, T0 + DAY, json.to_vec(), 3, Encoding::GzipFile);
    let srv = server(vec![spec]);
    // No catalog: with segment_export, individuals are selected by default.
    let run = Tap::new().config(&seg_config(&srv, 1)).run().success();
    assert_eq!(stream_records(&run, "events").len(), 3);
    let people = stream_records(&run, "individuals");
    assert_eq!(people.len(), 2);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("\"individuals\"") && l.contains("RECORD") && l.contains("Ana"))
        .unwrap();
    assert!(line.contains(r#""IndvId":9223372036854775807"#), "{line}");
    let ana = people.iter().find(|p| p["DisplayName"] == "Ana").unwrap();
    assert_eq!(ana["NumEvents"], 2);
    assert_eq!(ana["NumPages"], 2);
    assert_eq!(ana["LastPage"], "https://example.com/b");
    assert_eq!(ana["LastEventStart"], "2024-01-01T02:00:00.000Z");
    // A user var is a typed column of its own.
    assert_eq!(ana["user_plan_str"], "pro");
    assert!(ana["ExtraFields"].get("user_plan_str").is_none());
    assert!(ana.get("EventKey").is_none());
    let schema = run
        .messages()
        .into_iter()
        .find(|m| m["type"] == "SCHEMA" && m["stream"] == "individuals")
        .unwrap();
    assert_eq!(schema["key_properties"], json!(["IndvId"]));
    let last = run.last_state();
    assert_eq!(
        last["bookmarks"]["individuals"],
        json!({"window_end": rfc3339(T0 + DAY), "properties": ["user_plan_str"]})
    );
    let types: Vec<String> = srv
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(types.len(), 2, "one event export and one individual export");

    // With bundles, individuals are not selected unless asked for...
    let run = Tap::new().config(&config(&srv)).run().success();
    assert!(stream_records(&run, "individuals").is_empty());
    // ...and discovery says so.
    let catalog: Value = serde_json::from_str(
        &Tap::new()
            .arg("--discover")
            .config(&json!({}))
            .run()
            .success()
            .stdout,
    )
    .unwrap();
    let md = |c: &Value| c["streams"][1]["metadata"][0]["metadata"]["selected-by-default"].clone();
    assert_eq!(catalog["streams"][1]["tap_stream_id"], "individuals");
    assert_eq!(md(&catalog), json!(false));
    let catalog: Value = serde_json::from_str(
        &Tap::new()
            .arg("--discover")
            .config(&json!({"source": "segment_export"}))
            .run()
            .success()
            .stdout,
    )
    .unwrap();
    assert_eq!(md(&catalog), json!(true));
}

#[test]
fn switching_back_to_bundles_continues_at_the_window_bookmark() {
    let specs = bundles(3, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    let seg = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&events_only())
        .run()
        .success();
    let rest = Tap::new()
        .config(&config(&srv))
        .catalog(&events_only())
        .state(&seg.last_state())
        .run()
        .success();
    assert_eq!(
        srv.get_count(&specs[0].id),
        0,
        "the exported day is not downloaded"
    );
    let a = by_key(&event_records(&seg));
    let b = by_key(&event_records(&rest));
    assert_eq!(a.len() + b.len(), total_events(&specs));
    assert!(a.keys().all(|k| !b.contains_key(k)));
    assert_eq!(bookmark_stop(&rest.last_state()), rfc3339(specs[2].stop));
}

/// The most exports any STATE names as in flight.
fn most_in_flight(run: &Run) -> usize {
    run.states()
        .iter()
        .map(|s| events_state(s)["exports"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0)
}

/// The bookmark's window ends, each once, in the order the STATEs moved it.
fn ends(run: &Run) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in run.states() {
        if let Some(end) = events_state(&s)["window_end"].as_str()
            && out.last().map(String::as_str) != Some(end)
        {
            out.push(end.to_string());
        }
    }
    out
}

#[test]
fn several_exports_in_flight_commit_window_by_window() {
    let specs = bundles(6, 20, Encoding::GzipFile);
    let srv = server(specs.clone());
    let mut cfg = seg_config(&srv, 6);
    cfg["exports_in_flight"] = json!(3);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .success();
    assert_eq!(by_key(&event_records(&run)).len(), total_events(&specs));
    assert_windows_in_order(&run);
    let want: Vec<String> = (1..=6).map(|d| rfc3339(T0 + d * DAY)).collect();
    assert_eq!(ends(&run), want, "one STATE moving the bookmark per window");
    assert_eq!(most_in_flight(&run), 3);
    // Three exports were created before the first window was written.
    let msgs = run.messages();
    let first = msgs.iter().position(|m| m["type"] == "RECORD").unwrap();
    let before = msgs[..first]
        .iter()
        .rev()
        .find(|m| m["type"] == "STATE")
        .unwrap();
    assert_eq!(
        events_state(&before["value"])["exports"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(srv.operations_created(), 6);
    // One at a time, as before: never more than one named.
    let srv = server(specs.clone());
    let mut cfg = seg_config(&srv, 6);
    cfg["exports_in_flight"] = json!(1);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .success();
    assert_eq!(most_in_flight(&run), 1);
    assert_eq!(ends(&run), want);
}

#[test]
fn a_run_killed_with_exports_in_flight_polls_them_again_instead_of_creating_them() {
    let specs = bundles(6, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.set_pending_polls(100_000);
    let mut cfg = seg_config(&srv, 6);
    cfg["exports_in_flight"] = json!(4);
    let tap = Tap::new().config(&cfg).catalog(&events_only());
    let mut child = tap.spawn();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut state = None;
    let mut line = String::new();
    while state.is_none() && started.elapsed() < Duration::from_secs(20) {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let msg: Value = serde_json::from_str(&line).unwrap();
        if msg["type"] == "STATE"
            && events_state(&msg["value"])["exports"]
                .as_array()
                .map_or(0, Vec::len)
                == 4
        {
            state = Some(msg["value"].clone());
        }
    }
    let state = state.expect("a STATE naming four exports");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(srv.operations_created(), 4);

    srv.set_pending_polls(1);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .state(&state)
        .run()
        .success();
    // The four named are polled; only the last two windows get new ones.
    assert_eq!(srv.operations_created(), 6);
    assert_eq!(
        run.stderr.matches("resuming operation").count(),
        4,
        "{}",
        run.stderr
    );
    assert_eq!(by_key(&event_records(&run)).len(), total_events(&specs));

    // The single export of an older STATE resumes too.
    let srv = server(specs.clone());
    srv.set_pending_polls(100_000);
    let mut one = seg_config(&srv, 1);
    one["exports_in_flight"] = json!(1);
    let killed = Tap::new().config(&one).catalog(&events_only());
    let mut child = killed.spawn();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut op = None;
    while op.is_none() {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no STATE naming an export"
        );
        let msg: Value = serde_json::from_str(&line).unwrap();
        op = first_export(events_state(&msg["value"])).cloned();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let export = op.unwrap();
    let old = json!({"bookmarks": {"events": {"export": {
        "window_start": export["window_start"], "window_end": export["window_end"],
        "operation_id": export["operation_id"]}}}});
    srv.set_pending_polls(1);
    let run = Tap::new()
        .config(&one)
        .catalog(&events_only())
        .state(&old)
        .run()
        .success();
    assert_eq!(srv.operations_created(), 1);
    assert_eq!(run.records().len(), specs[0].events);
}

#[test]
fn a_failed_export_among_those_in_flight_is_created_again_alone() {
    let specs = bundles(4, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.fail_operation_for(T0 + DAY, "export expired");
    let mut cfg = seg_config(&srv, 4);
    cfg["exports_in_flight"] = json!(4);
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .success();
    assert_eq!(
        srv.operations_created(),
        5,
        "the failed one alone made again"
    );
    assert_eq!(by_key(&event_records(&run)).len(), total_events(&specs));
    assert_windows_in_order(&run);
    assert!(
        run.stderr.contains("FAILED: export expired"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_429_on_creating_ahead_puts_it_off_instead_of_waiting_or_failing() {
    let specs = bundles(4, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    // The third creation, the first ahead of a fetch, is told to wait long.
    srv.push_fault(Route::SegmentCreate, Fault::Pass);
    srv.push_fault(Route::SegmentCreate, Fault::Pass);
    srv.push_fault(
        Route::SegmentCreate,
        Fault::Status {
            code: 429,
            headers: vec![("Retry-After".into(), "30".into())],
            body: br#"{"code":"too_many_requests"}"#.to_vec(),
        },
    );
    let mut cfg = seg_config(&srv, 4);
    cfg["exports_in_flight"] = json!(4);
    let started = Instant::now();
    let run = Tap::new()
        .config(&cfg)
        .catalog(&events_only())
        .run()
        .success();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("creating it later"), "{}", run.stderr);
    assert_eq!(srv.operations_created(), 4);
    assert_eq!(by_key(&event_records(&run)).len(), total_events(&specs));
}

#[test]
fn an_export_in_flight_for_another_segment_is_not_taken_for_this_one() {
    let specs = bundles(1, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.set_pending_polls(100_000);
    let mut a = seg_config(&srv, 1);
    a["segment_id"] = json!("segment-a");
    let tap = Tap::new().config(&a).catalog(&events_only());
    let mut child = tap.spawn();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut state = None;
    let mut line = String::new();
    while state.is_none() {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no STATE naming an export"
        );
        let msg: Value = serde_json::from_str(&line).unwrap();
        if first_export(events_state(&msg["value"])).is_some() {
            state = Some(msg["value"].clone());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let state = state.unwrap();
    assert_eq!(
        first_export(events_state(&state)).unwrap()["segment_id"],
        "segment-a"
    );

    srv.set_pending_polls(1);
    let mut b = seg_config(&srv, 1);
    b["segment_id"] = json!("segment-b");
    let run = Tap::new()
        .config(&b)
        .catalog(&events_only())
        .state(&state)
        .run()
        .success();
    assert_eq!(srv.operations_created(), 2, "a new export for segment-b");
    assert!(
        run.stderr.contains("created for segment \"segment-a\"")
            && run.stderr.contains("creating a new export instead"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("resuming operation"), "{}", run.stderr);
    assert_eq!(run.records().len(), 10);
}
