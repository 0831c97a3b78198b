//! End-to-end tests: the real binary against a local FullStory-compatible server.

mod batch;
mod faults;
mod hostile;
mod hygiene;
mod input;
mod properties;
mod rest;
mod resume;
mod segment;
mod support;
mod versions;

use std::collections::HashSet;
use std::time::Duration;

use fullstory_demo::{BundleSpec, Encoding, Fault, Route};
use serde_json::{Value, json};
use support::*;

#[test]
fn discover_prints_a_catalog_with_metadata() {
    let run = Tap::new()
        .arg("--discover")
        .config(&json!({}))
        .run()
        .success();
    let catalog: Value = serde_json::from_str(&run.stdout).unwrap();
    let stream = &catalog["streams"][0];
    assert_eq!(stream["tap_stream_id"], "events");
    let md = &stream["metadata"][0]["metadata"];
    assert_eq!(md["forced-replication-method"], "INCREMENTAL");
    assert_eq!(md["table-key-properties"], json!(["EventKey"]));
    assert_eq!(md["valid-replication-keys"], json!(["EventStart"]));
    let props = stream["schema"]["properties"].as_object().unwrap();
    assert_eq!(props["UserId"]["type"], json!(["null", "integer"]));
    assert_eq!(props["EventStart"]["format"], "date-time");
}

#[test]
fn syncs_every_bundle_across_list_pages_exactly_once() {
    let specs = bundles(25, 30, Encoding::GzipFile);
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run().success();

    let msgs = run.messages();
    assert_eq!(msgs[0]["type"], "SCHEMA");
    assert_eq!(msgs[0]["key_properties"], json!(["EventKey"]));
    let records = run.records();
    assert_eq!(records.len(), total_events(&specs));
    let keys: HashSet<&str> = records
        .iter()
        .map(|r| r["EventKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), records.len(), "event keys are unique");

    // One STATE after each bundle (plus the first and last), each right after
    // that bundle's last record, bookmarks strictly increasing.
    let states = run.states();
    assert_eq!(states.len(), 25 + 2);
    let stops: Vec<&str> = states[1..26].iter().map(bookmark_stop).collect();
    let want: Vec<String> = specs.iter().map(|b| rfc3339(b.stop)).collect();
    assert_eq!(stops, want);
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[24].stop));
    assert_eq!(
        run.last_state()["bookmarks"]["events"]["bundle_id"],
        specs[24].id
    );

    let lists: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/list"))
        .collect();
    assert_eq!(lists.len(), 2, "25 bundles take two pages");
    assert!(lists.iter().all(|r| r.authorized));
    for b in &specs {
        assert_eq!(srv.get_count(&b.id), 1);
    }
    assert!(run.stderr.contains("INFO METRIC: {\"type\":\"timer\""));
    assert!(run.stderr.contains("\"metric\":\"record_count\""));
    assert!(run.stderr.contains("bundle 25/25"));
}

#[test]
fn records_are_byte_faithful() {
    let json = r#"[{"UserId":9223372036854775807,"SessionId":4503599627370497,"PageId":18014398509481985,"IndvId":9007199254740993,"EventStart":"2024-01-01T00:00:01.234Z","EventType":"custom","EventCustomName":"caf\u00e9 \"quoted\" \\ \n \u0001 \ud83d\ude00","EventCumulativeLayoutShift":0.1234567890123456789012,"PageDuration":-0,"user_score_real":1e400,"evt_big_int":123456789012345678901234567890,"PageName":"日本語 ✓"}]"#;
    let spec = BundleSpec::from_events_json(
        "1",
        T0,
        T0 + DAY,
        json.as_bytes().to_vec(),
        1,
        Encoding::GzipFile,
    );
    let srv = server(vec![spec]);
    let run = Tap::new().config(&config(&srv)).run().success();
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("\"RECORD\""))
        .unwrap();
    for exact in [
        r#""UserId":9223372036854775807"#,
        r#""PageId":18014398509481985"#,
        r#""IndvId":9007199254740993"#,
        r#""EventCustomName":"caf\u00e9 \"quoted\" \\ \n \u0001 \ud83d\ude00""#,
        r#""EventCumulativeLayoutShift":0.1234567890123456789012"#,
        r#""PageDuration":-0"#,
        // Numbers no target can hold are kept as strings of their exact text.
        r#""user_score_real":"1e400""#,
        r#""evt_big_int":"123456789012345678901234567890""#,
        r#""PageName":"日本語 ✓""#,
        r#""EventStart":"2024-01-01T00:00:01.234Z""#,
    ] {
        assert!(line.contains(exact), "missing {exact} in {line}");
    }
}

#[test]
fn second_run_with_the_last_state_downloads_nothing() {
    let specs = bundles(3, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    let first = Tap::new().config(&config(&srv)).run().success();
    let state = first.last_state();
    let second = Tap::new()
        .config(&config(&srv))
        .state(&state)
        .run()
        .success();
    assert!(second.records().is_empty());
    assert_eq!(second.last_state(), state);
    for b in &specs {
        assert_eq!(srv.get_count(&b.id), 1, "bundle {} downloaded again", b.id);
    }
}

#[test]
fn resumes_after_the_bookmarked_bundle() {
    let specs = bundles(6, 4, Encoding::GzipFile);
    let srv = server(specs.clone());
    let state = json!({"bookmarks": {"events": {"bundle_stop": rfc3339(specs[2].stop), "bundle_id": specs[2].id}}});
    let run = Tap::new()
        .config(&config(&srv))
        .state(&state)
        .run()
        .success();
    assert_eq!(run.records().len(), 3 * 4);
    assert_eq!(run.states()[0], {
        let mut s = state.clone();
        s["bookmarks"]["events"]["replication_key"] = json!("EventStart");
        s["currently_syncing"] = Value::Null;
        s
    });
    assert_eq!(srv.get_count(&specs[2].id), 0);
    assert_eq!(srv.get_count(&specs[3].id), 1);
}

#[test]
fn reads_the_python_taps_state() {
    let specs = bundles(4, 2, Encoding::GzipFile);
    let srv = server(specs.clone());
    // tap-fullstory 1.x wrote the last bundle's Stop like this.
    let naive = rfc3339(specs[1].stop).trim_end_matches('Z').to_string() + ".000000Z";
    let run = Tap::new()
        .config(&config(&srv))
        .state(&json!({"events": naive}))
        .run()
        .success();
    assert_eq!(run.records().len(), 2 * 2);
    assert_eq!(srv.get_count(&specs[1].id), 0);
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[3].stop));
}

#[test]
fn end_date_stops_at_bundles_ending_after_it() {
    let specs = bundles(5, 2, Encoding::GzipFile);
    let srv = server(specs.clone());
    let mut cfg = config(&srv);
    cfg["end_date"] = json!(rfc3339(specs[2].stop));
    let run = Tap::new().config(&cfg).run().success();
    assert_eq!(run.records().len(), 3 * 2);
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[2].stop));
}

#[test]
fn catalog_selection_is_honoured() {
    let specs = bundles(1, 10, Encoding::GzipFile);
    let srv = server(specs);
    let catalog = json!({"streams": [{"tap_stream_id": "events", "stream": "events", "schema": {}, "metadata": [
        {"breadcrumb": [], "metadata": {"selected": "true"}},
        {"breadcrumb": ["properties", "PageUrl"], "metadata": {"selected": false}},
        {"breadcrumb": ["properties", "ExtraFields"], "metadata": {"selected": false}},
        {"breadcrumb": ["properties", "EventStart"], "metadata": {"selected": false}}
    ]}]});
    let run = Tap::new()
        .config(&config(&srv))
        .catalog(&catalog)
        .run()
        .success();
    let schema = &run.messages()[0]["schema"]["properties"];
    assert!(schema.get("PageUrl").is_none() && schema.get("ExtraFields").is_none());
    assert!(schema.get("EventStart").is_some(), "automatic field stays");
    let records = run.records();
    assert_eq!(records.len(), 10);
    for r in &records {
        assert!(r.get("PageUrl").is_none() && r.get("ExtraFields").is_none());
        assert!(r.get("EventStart").is_some() && r.get("EventKey").is_some());
    }

    // The legacy --properties flag and an unselected stream.
    let off = json!({"streams": [{"tap_stream_id": "events", "metadata": [
        {"breadcrumb": [], "metadata": {"selected": false}}]}]});
    let tap = Tap::new().config(&config(&srv));
    let path = tap.file("props.json", &off.to_string());
    let run = tap
        .arg("--properties")
        .arg(path.to_string_lossy())
        .run()
        .success();
    assert!(run.messages().iter().all(|m| m["type"] == "STATE"));
}

#[test]
fn gzip_content_encoding_and_plain_bodies_give_the_same_records() {
    let mut outputs = Vec::new();
    for enc in [
        Encoding::GzipFile,
        Encoding::ContentEncodingGzip,
        Encoding::Plain,
    ] {
        let srv = server(bundles(2, 20, enc));
        let run = Tap::new().config(&config(&srv)).run().success();
        let mut records = run.records();
        for r in &mut records {
            r.as_object_mut().unwrap().remove("time_extracted");
        }
        outputs.push(records);
    }
    assert_eq!(outputs[0].len(), 40);
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[test]
fn retries_429_with_retry_after_and_5xx() {
    let specs = bundles(2, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    let status = |code: u16, headers: Vec<(String, String)>| Fault::Status {
        code,
        headers,
        body: b"{\"error\":\"busy\"}".to_vec(),
    };
    srv.push_fault(Route::List, status(503, vec![]));
    srv.push_fault(
        Route::Get(Some(specs[0].id.clone())),
        status(429, vec![("Retry-After".into(), "1".into())]),
    );
    srv.push_fault(Route::Get(Some(specs[1].id.clone())), status(500, vec![]));
    srv.push_fault(Route::Get(Some(specs[1].id.clone())), status(502, vec![]));
    let run = Tap::new().config(&config(&srv)).run().success();
    assert_eq!(run.records().len(), 10);
    assert_eq!(srv.pending_faults(), 0);

    // Retry-After: 1 was honoured before the second try of the first bundle.
    let gets: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|r| r.query.contains(&specs[0].id))
        .collect();
    assert_eq!(gets.len(), 2);
    assert!(gets[1].at.duration_since(gets[0].at) >= Duration::from_secs(1));
}

#[test]
fn truncated_download_is_retried_without_duplicates() {
    let specs = bundles(3, 50, Encoding::GzipFile);
    let srv = server(specs.clone());
    let id = specs[1].id.clone();
    srv.push_fault(
        Route::Get(Some(id.clone())),
        Fault::Truncate {
            after: specs[1].body.len() / 2,
        },
    );
    srv.push_fault(Route::Get(Some(id.clone())), Fault::Reset { after: 100 });
    // The server will not send the rest once: that attempt starts over.
    srv.push_fault(Route::Get(Some(id.clone())), Fault::IgnoreRange);
    let run = Tap::new().config(&config(&srv)).run().success();
    let records = run.records();
    assert_eq!(records.len(), 150);
    let keys: HashSet<&str> = records
        .iter()
        .map(|r| r["EventKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 150);
    // Cut at half, resumed and reset after 100 bytes more, resumed again but
    // answered with the whole file: started over, whole.
    assert_eq!(srv.get_count(&id), 4);
    assert!(run.stderr.contains("starting over"), "{}", run.stderr);
    assert!(run.stderr.contains("retrying"), "{}", run.stderr);
}

#[test]
fn keys_are_the_same_when_a_bundle_is_downloaded_again() {
    let specs = bundles(2, 40, Encoding::GzipFile);
    let keys = |run: &Run| -> Vec<String> {
        run.records()
            .iter()
            .map(|r| r["EventKey"].as_str().unwrap().to_string())
            .collect()
    };
    let a = Tap::new()
        .config(&config(&server(specs.clone())))
        .run()
        .success();
    let b = Tap::new().config(&config(&server(specs))).run().success();
    assert_eq!(keys(&a), keys(&b));
}

#[test]
fn persistent_failure_stops_with_state_behind_the_failed_bundle() {
    let specs = bundles(3, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    // Every request cut short, resumed ones included.
    for _ in 0..100 {
        srv.push_fault(
            Route::Get(Some(specs[1].id.clone())),
            Fault::Truncate { after: 20 },
        );
    }
    let run = Tap::new().config(&config(&srv)).run().failure(1);
    assert_eq!(run.records().len(), 5, "only the first bundle's records");
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[0].stop));
    assert!(run.last_log().contains(&specs[1].id), "{}", run.last_log());
    assert!(
        run.last_log().contains("giving up after 5 attempts"),
        "{}",
        run.last_log()
    );
}

#[test]
fn bad_key_fails_with_advice() {
    let srv = server(bundles(1, 1, Encoding::GzipFile));
    let mut cfg = config(&srv);
    cfg["api_key"] = json!("wrong-key");
    let run = Tap::new().config(&cfg).run().failure(1);
    assert!(run.last_log().contains("401"), "{}", run.last_log());
    assert!(run.last_log().contains("api_key"), "{}", run.last_log());
    assert!(!run.stderr.contains("wrong-key"));
}

#[test]
fn bad_config_is_a_one_line_error_and_no_output() {
    let srv = server(Vec::new());
    let good = config(&srv);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"start_date": "2024-01-01"}), "api_key"),
        (json!({"api_key": KEY}), "start_date"),
        (
            json!({"api_key": KEY, "start_date": "not a date"}),
            "start_date",
        ),
        (
            json!({"api_key": KEY, "start_date": "2099-01-01"}),
            "future",
        ),
        (
            json!({"api_key": KEY, "start_date": "2024-02-01", "end_date": "2024-01-01"}),
            "end_date",
        ),
        (
            json!({"api_key": "", "start_date": "2024-01-01"}),
            "api_key",
        ),
        (
            json!({"api_key": KEY, "start_date": "2024-01-01", "base_url": "http://example.com"}),
            "base_url",
        ),
        (
            json!({"api_key": KEY, "start_date": "2024-01-01", "max_retries": "many"}),
            "max_retries",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    for (cfg, word) in cases {
        let run = Tap::new().config(&cfg).run().failure(2);
        assert!(run.stdout.is_empty(), "stdout for {cfg}: {}", run.stdout);
        assert!(run.last_log().contains(word), "{cfg}: {}", run.last_log());
        assert!(
            run.last_log().contains("config"),
            "{cfg}: {}",
            run.last_log()
        );
    }
    // Missing and invalid files, a later file overriding an earlier one.
    let run = Tap::new()
        .arg("--config")
        .arg("/nonexistent/c.json")
        .run()
        .failure(2);
    assert!(run.last_log().contains("/nonexistent/c.json"));
    let tap = Tap::new();
    let bad = tap.file("bad.json", "{\"api_key\": ");
    let run = tap
        .arg("--config")
        .arg(bad.to_string_lossy())
        .run()
        .failure(2);
    assert!(run.last_log().contains("not valid JSON"));
    let mut override_cfg = good.clone();
    override_cfg["start_date"] = json!("2099-01-01");
    let run = Tap::new()
        .config(&good)
        .config(&json!({"start_date": "2099-01-01"}))
        .run()
        .failure(2);
    assert!(run.last_log().contains("config1.json") || run.last_log().contains("config2.json"));
    let run = Tap::new().run().failure(2);
    assert!(run.last_log().contains("--config"));
}

#[test]
fn config_from_the_environment() {
    let specs = bundles(1, 3, Encoding::GzipFile);
    let srv = server(specs);
    let run = Tap::new()
        .arg("--config")
        .arg("ENV")
        .env("TAP_FULLSTORY_API_KEY", KEY)
        .env("TAP_FULLSTORY_START_DATE", "2024-01-01")
        .env("TAP_FULLSTORY_BASE_URL", &srv.url())
        .env("TAP_FULLSTORY_DOWNLOAD_WINDOW_SECONDS", "0")
        .run()
        .success();
    assert_eq!(run.records().len(), 3);
}

#[test]
fn about_describes_the_tap() {
    let run = Tap::new()
        .arg("--about")
        .arg("--format")
        .arg("json")
        .run()
        .success();
    let about: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(about["name"], "tap-fullstory");
    assert_eq!(about["settings"]["properties"]["api_key"]["secret"], true);
    let run = Tap::new().arg("--version").run().success();
    assert!(run.stdout.starts_with("tap-fullstory "));
}

#[test]
fn next_download_overlaps_the_current_bundle_and_order_is_kept() {
    let specs = bundles(3, 20, Encoding::GzipFile);
    let srv = server(specs.clone());
    // Bundle 0 takes a while to arrive; bundle 1 must not wait for it.
    srv.push_fault(
        Route::Get(Some(specs[0].id.clone())),
        Fault::Stall {
            after: 10,
            pause: Duration::from_millis(1500),
        },
    );
    let run = Tap::new().config(&config(&srv)).run().success();
    let reqs = srv.requests();
    let at = |id: &str| reqs.iter().find(|r| r.query.contains(id)).unwrap().at;
    assert!(
        at(&specs[1].id).duration_since(at(&specs[0].id)) < Duration::from_millis(1000),
        "bundle 1 was requested only after bundle 0 finished"
    );
    // Output stays in bundle order: each STATE follows its own bundle.
    let stops: Vec<String> = run.states()[1..4]
        .iter()
        .map(|s| bookmark_stop(s).to_string())
        .collect();
    let want: Vec<String> = specs.iter().map(|b| rfc3339(b.stop)).collect();
    assert_eq!(stops, want);
    let starts: Vec<String> = run
        .records()
        .iter()
        .map(|r| r["EventStart"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "records in bundle order");
}

#[test]
fn a_long_download_reports_progress_with_an_eta() {
    let specs = bundles(1, 100, Encoding::Plain);
    let srv = server(specs.clone());
    let chunk = specs[0].body.len() / 20 + 1;
    srv.push_fault(
        Route::Get(Some(specs[0].id.clone())),
        Fault::Trickle {
            chunk,
            delay: Duration::from_millis(100),
        },
    );
    let mut cfg = config(&srv);
    cfg["progress_interval_seconds"] = json!(0.5);
    let run = Tap::new().config(&cfg).run().success();
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("bundle 1/1 (id") && l.contains("downloaded in"))
        .collect();
    assert!(lines.len() >= 2, "{}", run.stderr);
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" of ") && l.contains("ETA")),
        "{lines:?}"
    );
    assert!(run.stderr.contains("bundle 1/1 id"), "the per-bundle line");
}

#[test]
fn string_bundle_ids_are_kept_as_text() {
    let json = fullstory_demo::synthetic_events(3, T0, T0 + DAY, 4);
    let spec =
        BundleSpec::from_events_json("exp 2024/01/01", T0, T0 + DAY, json, 4, Encoding::GzipFile);
    let srv = server(vec![spec]);
    let run = Tap::new().config(&config(&srv)).run().success();
    assert_eq!(run.records().len(), 4);
    assert_eq!(
        run.last_state()["bookmarks"]["events"]["bundle_id"],
        "exp 2024/01/01"
    );
    assert_eq!(srv.get_count("exp 2024/01/01"), 1);
}
