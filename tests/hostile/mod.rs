//! A hostile server and a careless operator against Segment Export, the
//! REST streams, BATCH output and state: each case is one promise kept.

use std::collections::HashSet;

use fullstory_demo::{Encoding, Fault, Route, Server, gzip, synthetic_rest};
use serde_json::{Value, json};

use crate::support::*;

/// A Segment Export config for `server`, `days` daily windows from [`T0`].
fn seg_config(server: &Server, days: i64) -> Value {
    let mut cfg = config(server);
    cfg["source"] = json!("segment_export");
    cfg["api_url"] = json!(server.url());
    cfg["poll_interval_seconds"] = json!(0.05);
    cfg["export_delay_hours"] = json!(0);
    cfg["exports_in_flight"] = json!(1);
    cfg["end_date"] = json!(rfc3339(T0 + days * DAY));
    cfg
}

fn records_of(run: &Run, stream: &str) -> Vec<Value> {
    run.messages()
        .into_iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == stream)
        .map(|mut m| m["record"].take())
        .collect()
}

/// A download answered with these NDJSON rows, gzipped.
fn rows_body(rows: &[&str]) -> Fault {
    let mut text = rows.join("\n");
    text.push('\n');
    Fault::Body {
        content_type: "application/gzip".into(),
        body: gzip(text.as_bytes()),
    }
}

#[test]
fn a_plain_answer_over_the_cap_is_refused_naming_what_and_the_limit() {
    let big = {
        let mut page = br#"{"segments":[{"id":"s1","name":""#.to_vec();
        page.resize(page.len() + (65 << 20), b'x');
        page.extend_from_slice(br#""}]}"#);
        page
    };
    let srv = server(Vec::new());
    srv.push_fault(
        Route::Path("/segments/v1".into()),
        Fault::Body {
            content_type: "application/json".into(),
            body: big.clone(),
        },
    );
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["segments"]))
        .run()
        .failure(1);
    let last = run.last_log();
    assert!(
        last.contains("GET") && last.contains("/segments/v1") && last.contains("64 MiB"),
        "{last}"
    );
    assert!(run.records().is_empty());

    // An operation poll, the same.
    let srv = server(bundles(1, 5, Encoding::GzipFile));
    srv.push_fault(
        Route::Operation,
        Fault::Body {
            content_type: "application/json".into(),
            body: big,
        },
    );
    let run = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&select(&["events"]))
        .run()
        .failure(1);
    let last = run.last_log();
    assert!(
        last.contains("the operation") && last.contains("64 MiB"),
        "{last}"
    );
}

#[test]
fn ids_that_are_dot_segments_never_address_another_resource() {
    let mut rest = synthetic_rest(3, 1, 1);
    rest.users[0].id = ".".into();
    rest.users[0].listed = r#"{"id":".","uid":"dot"}"#.into();
    rest.users[1].id = "..".into();
    rest.users[1].listed = r#"{"id":"..","uid":"dotdot"}"#.into();
    let srv = rest_server(rest);
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["user"]))
        .run()
        .success();
    let users = records_of(&run, "user");
    assert_eq!(users.len(), 1, "only the user with a real id: {users:?}");
    assert!(users.iter().all(|u| u["id"].is_string()));
    // No request went to the list, or to its parent, in their name.
    let lists = srv
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/users" || r.path == "/v2" || r.path == "/v2/")
        .count();
    assert_eq!(lists, 1, "the list is read once, for the ids");
    assert_eq!(run.stderr.matches("cannot be put in a URL path").count(), 2);

    // An operation id the server names `..` is refused, not polled.
    let srv = server(bundles(1, 5, Encoding::GzipFile));
    srv.push_fault(
        Route::SegmentCreate,
        Fault::Body {
            content_type: "application/json".into(),
            body: br#"{"operationId":".."}"#.to_vec(),
        },
    );
    let run = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&select(&["events"]))
        .run()
        .failure(1);
    assert!(
        run.last_log().contains(r#"operation "..""#)
            && run.last_log().contains("cannot be put in a URL path"),
        "{}",
        run.last_log()
    );
    assert!(
        srv.requests()
            .iter()
            .all(|r| !r.path.starts_with("/operations")),
        "a dot-segment id was polled"
    );
}

#[test]
fn a_listed_user_without_an_id_to_fetch_is_passed_over_not_fatal() {
    let mut rest = synthetic_rest(4, 1, 1);
    rest.users[0].listed = r#"{"id":"","uid":"empty"}"#.into();
    rest.users[1].listed = r#"{"id":1.5e3,"uid":"fraction"}"#.into();
    rest.users[2].listed = r#"{"uid":"none"}"#.into();
    let srv = rest_server(rest);
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["user"]))
        .run()
        .success();
    let users = records_of(&run, "user");
    assert_eq!(users.len(), 1, "only the user with an id: {users:?}");
    assert!(
        run.stderr.contains("no id to fetch it by") && run.stderr.contains(r#""uid":"empty""#),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("3 listed users had no id"),
        "{}",
        run.stderr
    );
    // Only the user with an id was fetched on its own.
    let fetched = srv
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/users/"))
        .count();
    assert_eq!(fetched, 1);
}

#[test]
fn a_storage_error_quoting_the_signature_never_prints_it() {
    let srv = server(bundles(1, 20, Encoding::GzipFile));
    srv.push_fault(Route::Download, Fault::QuoteSignature { code: 403 });
    let run = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&select(&["events"]))
        .run()
        .success();
    assert_eq!(
        records_of(&run, "events").len(),
        20,
        "the retry got the file"
    );
    let download = srv
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/storage/") && r.status == Some(403))
        .expect("the storage host refused once");
    let secrets: Vec<&str> = download
        .query
        .split('&')
        .filter_map(|p| p.split_once('=').map(|(_, v)| v))
        .filter(|v| v.len() >= 8)
        .collect();
    assert!(!secrets.is_empty(), "{}", download.query);
    assert!(
        run.stderr.contains("SignatureDoesNotMatch"),
        "{}",
        run.stderr
    );
    for secret in secrets.iter().copied().chain([download.path.as_str()]) {
        assert!(
            !run.stderr.contains(secret),
            "{secret} printed: {}",
            run.stderr
        );
    }
    // The link is named by its host alone.
    assert!(run.stderr.contains("(a signed link)"), "{}", run.stderr);
}

#[test]
fn a_plain_http_location_to_a_host_other_than_loopback_is_refused() {
    let srv = server(bundles(1, 5, Encoding::GzipFile));
    // An IPv4-mapped IPv6 literal of 127.0.0.1 is not loopback by the
    // tap's rule, as redirects to it are not.
    srv.push_fault(
        Route::Results,
        Fault::Body {
            content_type: "application/json".into(),
            body: br#"{"location":"http://[::ffff:127.0.0.1]:9/storage/x?sig=abcdefghijkl"}"#
                .to_vec(),
        },
    );
    let run = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&select(&["events"]))
        .run()
        .failure(1);
    let last = run.last_log();
    assert!(
        last.contains("plain http") && last.contains("refusing"),
        "{last}"
    );
    assert!(!run.stderr.contains("abcdefghijkl"), "{}", run.stderr);
}

#[test]
fn events_outside_their_window_are_kept_and_warned_about() {
    let srv = server(bundles(1, 5, Encoding::GzipFile));
    srv.push_fault(
        Route::Download,
        rows_body(&[
            r#"{"UserId":1,"SessionId":1,"PageId":1,"EventStart":"2024-01-01T10:00:00Z","EventType":"click"}"#,
            r#"{"UserId":1,"SessionId":1,"PageId":1,"EventStart":"2024-01-05T10:00:00Z","EventType":"click"}"#,
            r#"{"UserId":1,"SessionId":1,"PageId":1,"EventStart":"2023-12-31T23:59:59Z","EventType":"click"}"#,
        ]),
    );
    let run = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&select(&["events"]))
        .run()
        .success();
    assert_eq!(records_of(&run, "events").len(), 3, "every row is kept");
    let warn = run
        .stderr
        .lines()
        .find(|l| l.contains("outside"))
        .unwrap_or_else(|| panic!("no warning: {}", run.stderr));
    assert!(
        warn.contains("WARN") && warn.contains("2 records") && warn.contains("EventStart"),
        "{warn}"
    );
}

#[test]
fn individuals_keep_their_key_or_are_left_out_with_a_warning() {
    let srv = server(bundles(1, 5, Encoding::GzipFile));
    srv.push_fault(
        Route::Download,
        rows_body(&[
            r#"{"IndvId":"9007199254740993","NumEvents":1}"#,
            r#"{"IndvId":12,"NumEvents":2}"#,
            r#"{"IndvId":"not-a-number","NumEvents":3}"#,
            r#"{"NumEvents":4}"#,
        ]),
    );
    let run = Tap::new()
        .config(&seg_config(&srv, 1))
        .catalog(&select(&["individuals"]))
        .run()
        .success();
    let people = records_of(&run, "individuals");
    let ids: Vec<String> = people.iter().map(|p| p["IndvId"].to_string()).collect();
    assert_eq!(ids, ["9007199254740993", "12"]);
    assert!(
        run.stdout.contains(r#""IndvId":9007199254740993,"#),
        "the digits exactly, as a number"
    );
    let warn = run
        .stderr
        .lines()
        .find(|l| l.contains("no usable IndvId"))
        .unwrap_or_else(|| panic!("no warning: {}", run.stderr));
    assert!(
        warn.contains("2 records") && warn.contains("not-a-number"),
        "{warn}"
    );
}

#[test]
fn a_record_over_the_size_bound_stops_naming_the_way_past_it() {
    let srv = server(bundles(2, 5, Encoding::GzipFile));
    let mut line =
        br#"{"UserId":1,"EventStart":"2024-01-01T10:00:00Z","EventCustomName":""#.to_vec();
    line.resize(line.len() + (65 << 20), b'a');
    line.extend_from_slice(b"\"}\n");
    let body = gzip(&line);
    for _ in 0..2 {
        srv.push_fault(
            Route::Download,
            Fault::Body {
                content_type: "application/gzip".into(),
                body: body.clone(),
            },
        );
    }
    let run = Tap::new()
        .config(&seg_config(&srv, 2))
        .catalog(&select(&["events"]))
        .run()
        .failure(1);
    let last = run.last_log();
    assert!(
        last.contains("64 MiB")
            && last.contains("skip_windows")
            && last.contains("2024-01-01T00:00:00Z"),
        "{last}"
    );
    assert!(records_of(&run, "events").is_empty());

    // Passing over that window moves on to the next.
    let srv = server(bundles(2, 5, Encoding::GzipFile));
    let mut cfg = seg_config(&srv, 2);
    cfg["skip_windows"] = json!("2024-01-01T00:00:00Z");
    let run = Tap::new()
        .config(&cfg)
        .catalog(&select(&["events"]))
        .run()
        .success();
    assert!(run.stderr.contains("SKIPPED"), "{}", run.stderr);
    let events = records_of(&run, "events");
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e["EventStart"].as_str().unwrap() >= "2024-01-02")
    );
    assert_eq!(
        run.last_state()["bookmarks"]["events"]["window_end"],
        "2024-01-03T00:00:00Z"
    );
}

#[test]
fn endless_empty_pages_stop_with_a_clear_error() {
    let srv = server(Vec::new());
    for n in 0..150 {
        srv.push_fault(
            Route::Path("/segments/v1".into()),
            Fault::Body {
                content_type: "application/json".into(),
                body: format!(r#"{{"segments":[],"nextPaginationToken":"t{n}"}}"#).into_bytes(),
            },
        );
    }
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["segments"]))
        .run()
        .failure(1);
    let last = run.last_log();
    assert!(last.contains("100 pages in a row"), "{last}");
    let pages = srv
        .requests()
        .iter()
        .filter(|r| r.path == "/segments/v1")
        .count();
    assert_eq!(pages, 100);
}

#[test]
fn an_id_listed_twice_is_written_once_as_last_listed() {
    let mut rest = synthetic_rest(3, 0, 1);
    rest.page_size = 2;
    rest.segments = vec![
        r#"{"id":"a","name":"first a"}"#.into(),
        r#"{"id":"b","name":"b"}"#.into(),
        // Page 2 lists `a` again, changed since.
        r#"{"id":"a","name":"second a"}"#.into(),
        r#"{"id":"c","name":"c"}"#.into(),
        r#"{"name":"no id"}"#.into(),
    ];
    let srv = rest_server(rest);
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["segments"]))
        .run()
        .success();
    let names: Vec<String> = records_of(&run, "segments")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["b", "second a", "c"],
        "the keyless one is left out too"
    );
    assert!(
        run.stderr.contains("1 items were listed more than once"),
        "{}",
        run.stderr
    );
    // Users listed twice are fetched once each.
    let mut rest = synthetic_rest(3, 0, 1);
    let again = rest.users[0].clone();
    rest.users.push(again);
    let srv = rest_server(rest);
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["user"]))
        .run()
        .success();
    let ids: HashSet<String> = records_of(&run, "user")
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((records_of(&run, "user").len(), ids.len()), (3, 3));
}

#[test]
fn a_version_from_the_far_future_does_not_freeze_the_bookmark() {
    let srv = server(Vec::new());
    srv.push_fault(
        Route::Path("/settings/recording/v1/blocking/history".into()),
        Fault::Body {
            content_type: "application/json".into(),
            body: br#"{"versions":[{"blockedIps":[],"metadata":{"lastUpdated":"9999-01-01T00:00:00Z","created":"2024-01-01T00:00:00Z","createdBy":"x"}},{"blockedIps":[],"metadata":{"lastUpdated":"2024-01-01T03:00:00Z","created":"2024-01-01T00:00:00Z","createdBy":"x"}}]}"#.to_vec(),
        },
    );
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["block_rules_history"]))
        .run()
        .success();
    let state = run.last_state();
    assert_eq!(
        state["bookmarks"]["block_rules_history"]["lastUpdated"],
        "2024-01-01T03:00:00Z"
    );
    assert!(run.stderr.contains("in the future"), "{}", run.stderr);

    // A bookmark already there is refused, as for bundles and windows.
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["block_rules_history"]))
        .state(
            &json!({"bookmarks": {"block_rules_history": {"lastUpdated": "9999-01-01T00:00:00Z"}}}),
        )
        .run()
        .failure(2);
    assert!(
        run.last_log().contains("block_rules_history") && run.last_log().contains("future"),
        "{}",
        run.last_log()
    );
}

#[test]
fn currently_syncing_is_null_once_a_run_ends() {
    let srv = server(bundles(1, 3, Encoding::GzipFile));
    let run = Tap::new()
        .config(&config(&srv))
        .state(&json!({"currently_syncing": "events", "bookmarks": {}}))
        .run()
        .success();
    for state in run.states() {
        assert_eq!(state["currently_syncing"], Value::Null, "{state}");
    }
}
