//! The REST streams (users, user, segments, webhook endpoints, operations,
//! recording settings of each platform and their history) against the demo
//! server's REST endpoints.

use std::collections::{BTreeMap, HashSet};

use fullstory_demo::{Encoding, Fault, Route, Server, ServerOptions, synthetic_rest};
use serde_json::{Value, json};

use crate::batch::{batch_config, gunzip_lines, lines, names_in, path_of, record_texts_of};
use crate::support::*;

const SETTINGS: &[&str] = &[
    "block_rules",
    "domain_settings",
    "geo_settings",
    "privacy_settings",
    "recording_features",
    "target_rules",
];

const HISTORIES: &[&str] = &[
    "block_rules_history",
    "domain_settings_history",
    "geo_settings_history",
    "privacy_settings_history",
    "recording_features_history",
    "target_rule_history",
];

/// Records per stream.
fn by_stream(run: &Run) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in run.messages() {
        if m["type"] == "RECORD" {
            let stream = m["stream"].as_str().unwrap().to_string();
            out.entry(stream).or_default().push(m["record"].clone());
        }
    }
    out
}

/// The streams read whole each run.
const FULL_TABLE: &[&str] = &[
    "users",
    "user",
    "segments",
    "webhook_endpoints",
    "operations",
];

/// The settings streams the demo server also has for mobile apps.
const MOBILE: &[&str] = &[
    "block_rules",
    "block_rules_history",
    "privacy_settings",
    "privacy_settings_history",
    "recording_features",
    "recording_features_history",
];

/// Every REST stream.
fn all_rest() -> Vec<&'static str> {
    let mut streams = FULL_TABLE.to_vec();
    streams.extend(SETTINGS);
    streams.extend(HISTORIES);
    streams
}

fn count(records: &BTreeMap<String, Vec<Value>>, stream: &str) -> usize {
    records.get(stream).map_or(0, Vec::len)
}

#[test]
fn discover_lists_every_rest_stream_unselected_by_default() {
    let run = Tap::new()
        .arg("--discover")
        .config(&json!({}))
        .run()
        .success();
    let catalog: Value = serde_json::from_str(&run.stdout).unwrap();
    let streams = catalog["streams"].as_array().unwrap();
    let md = |name: &str| {
        let s = streams
            .iter()
            .find(|s| s["tap_stream_id"] == name)
            .unwrap_or_else(|| panic!("no {name} in the catalog"));
        s["metadata"][0]["metadata"].clone()
    };
    assert_eq!(md("events")["selected-by-default"], true);
    assert!(md("events").get("activate-version").is_none());
    for name in FULL_TABLE {
        assert_eq!(md(name)["table-key-properties"], json!(["id"]));
        assert_eq!(md(name)["forced-replication-method"], "FULL_TABLE");
        assert_eq!(md(name)["activate-version"], true);
        assert_eq!(md(name)["selected-by-default"], false);
    }
    for name in SETTINGS.iter().chain(HISTORIES) {
        let md = md(name);
        assert_eq!(
            md["table-key-properties"],
            json!(["created", "createdBy", "lastUpdated", "platform"]),
            "{name}"
        );
        assert_eq!(md["forced-replication-method"], "INCREMENTAL");
        assert_eq!(md["replication-key"], "lastUpdated");
        assert_eq!(md["selected-by-default"], false);
        assert!(md.get("activate-version").is_none());
    }
    // events and individuals, then the REST streams.
    assert_eq!(
        streams.len(),
        2 + FULL_TABLE.len() + SETTINGS.len() + HISTORIES.len()
    );
}

#[test]
fn without_a_catalog_only_events_are_synced() {
    let srv = server(bundles(1, 5, Encoding::GzipFile));
    let run = Tap::new().config(&rest_config(&srv)).run().success();
    let records = by_stream(&run);
    assert_eq!(records.keys().collect::<Vec<_>>(), ["events"]);
    assert!(
        srv.requests()
            .iter()
            .all(|r| r.path.starts_with("/api/v1/export/")),
        "no REST request without a catalog selecting one"
    );
}

#[test]
fn every_page_of_every_list_is_read_once() {
    let srv = server(Vec::new());
    let streams = [
        "users",
        "user",
        "segments",
        "block_rules_history",
        "domain_settings_history",
    ];
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&streams))
        .run()
        .success();
    let records = by_stream(&run);
    assert!(!records.contains_key("events"));

    let users = &records["users"];
    let ids: HashSet<&str> = users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(users.len(), 25, "25 users over three pages of 10");
    assert_eq!(ids.len(), 25);
    // Ids beyond 2^53 arrive as sent.
    assert!(ids.contains("9007199254740993"));
    assert!(
        run.stdout
            .contains(r#""properties":{"plan":"pro","seats":0,"score":1.10,"#),
        "values are copied byte for byte"
    );

    let user = &records["user"];
    assert_eq!(user.len(), 25);
    let user_ids: HashSet<&str> = user.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(user_ids, ids);
    assert!(user.iter().all(|u| u["schema"].is_object()));

    assert_eq!(count(&records, "segments"), 23);
    let segment_ids: HashSet<&str> = records["segments"]
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(segment_ids.len(), 23);

    // domain history answers with next_pagination_token, blocking with
    // nextPaginationToken: both are followed.
    // The web's versions; blocking has mobile ones too (domain answers 404
    // for mobile: no records, no error).
    for (name, mobile) in [("block_rules_history", 6), ("domain_settings_history", 0)] {
        let web: Vec<&Value> = records[name]
            .iter()
            .filter(|v| v["platform"] == "web")
            .collect();
        assert_eq!(web.len(), 12, "{name}");
        assert_eq!(records[name].len(), 12 + mobile, "{name}");
        let versions = web;
        let stamps: HashSet<&str> = versions
            .iter()
            .map(|v| v["lastUpdated"].as_str().unwrap())
            .collect();
        assert_eq!(stamps.len(), 12);
        // Lifted from metadata, which is kept whole too.
        let v = &versions[0];
        assert_eq!(v["created"], "2024-01-01T00:00:00.000Z");
        assert_eq!(v["createdBy"], "jane@example.com");
        assert_eq!(v["lastUpdated"], v["metadata"]["lastUpdated"]);
        assert_eq!(v["metadata"]["lastUpdatedBy"], "bob@example.com");
    }

    let requests = srv.requests();
    assert!(requests.iter().all(|r| r.authorized));
    let user_pages: Vec<&str> = requests
        .iter()
        .filter(|r| r.path == "/v2/users")
        .map(|r| r.query.as_str())
        .collect();
    // Listed once for users and once for user, three pages each.
    assert_eq!(
        user_pages,
        ["", "page_token=p10", "page_token=p20"].repeat(2)
    );
    let domain_pages: Vec<&str> = requests
        .iter()
        .filter(|r| r.path == "/settings/recording/v1/domain/history")
        .map(|r| r.query.as_str())
        .collect();
    assert_eq!(
        domain_pages,
        [
            "limit=100&platform=web",
            "limit=100&platform=web&paginationToken=p10",
            "limit=100&platform=mobile",
        ]
    );
    assert!(
        run.stderr
            .contains("domain_settings_history (mobile): page 1: HTTP 404: the account has no mobile settings here"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(r#""metric":"record_count","value":25"#));
}

#[test]
fn settings_state_round_trips_and_new_versions_come_once() {
    let srv = server(bundles(1, 5, Encoding::GzipFile));
    let mut streams: Vec<&str> = vec!["events"];
    streams.extend(SETTINGS);
    streams.extend(HISTORIES);
    let catalog = select(&streams);

    let first = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .run()
        .success();
    let records = by_stream(&first);
    for name in SETTINGS.iter().chain(HISTORIES) {
        let (web, mobile) = if SETTINGS.contains(name) {
            (1, 1)
        } else {
            (12, 6)
        };
        let of = |platform: &str| {
            records[*name]
                .iter()
                .filter(|r| r["platform"] == platform)
                .count()
        };
        let mobile = if MOBILE.contains(name) { mobile } else { 0 };
        assert_eq!((of("web"), of("mobile")), (web, mobile), "{name}");
        assert_eq!(count(&records, name), web + mobile, "{name}");
        // Each record once by its key, the platform part of it.
        let keys: HashSet<String> = records[*name]
            .iter()
            .map(|r| {
                format!(
                    "{}|{}|{}|{}",
                    r["created"], r["createdBy"], r["lastUpdated"], r["platform"]
                )
            })
            .collect();
        assert_eq!(keys.len(), web + mobile, "{name}");
    }
    let state = first.last_state();
    for name in SETTINGS.iter().chain(HISTORIES) {
        let want = if MOBILE.contains(name) {
            json!({"lastUpdated": "2024-01-01T11:00:00.000Z",
                   "platforms": {"mobile": {"lastUpdated": "2024-01-01T05:30:00.000Z"}}})
        } else {
            json!({"lastUpdated": "2024-01-01T11:00:00.000Z"})
        };
        assert_eq!(state["bookmarks"][name], want, "{name}");
    }
    assert_eq!(bookmark_stop(&state), rfc3339(T0 + DAY));

    // Nothing new: nothing written, bookmarks kept.
    let second = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .state(&state)
        .run()
        .success();
    assert!(second.records().is_empty(), "{}", second.stdout);
    assert_eq!(second.last_state()["bookmarks"], state["bookmarks"]);

    // A new web version is written once, by the object and its history;
    // then a new mobile one, and the web bookmark stays where it was.
    assert!(srv.add_setting_version("blocking"));
    let third = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .state(&second.last_state())
        .run()
        .success();
    let records = by_stream(&third);
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["block_rules", "block_rules_history"]
    );
    for name in ["block_rules", "block_rules_history"] {
        assert_eq!(records[name].len(), 1);
        assert_eq!(records[name][0]["platform"], "web");
        assert_eq!(records[name][0]["lastUpdated"], "2024-01-01T12:00:00.000Z");
        assert_eq!(records[name][0]["blockedIps"], json!(["10.0.0.12"]));
        assert_eq!(
            third.last_state()["bookmarks"][name],
            json!({"lastUpdated": "2024-01-01T12:00:00.000Z",
                   "platforms": {"mobile": {"lastUpdated": "2024-01-01T05:30:00.000Z"}}})
        );
    }
    assert!(srv.add_mobile_setting_version("blocking"));
    let fourth = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .state(&third.last_state())
        .run()
        .success();
    let records = by_stream(&fourth);
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["block_rules", "block_rules_history"]
    );
    for name in ["block_rules", "block_rules_history"] {
        assert_eq!(records[name].len(), 1);
        assert_eq!(records[name][0]["platform"], "mobile");
        assert_eq!(records[name][0]["blockedAppIds"], json!(["app-6"]));
        assert_eq!(
            fourth.last_state()["bookmarks"][name],
            json!({"lastUpdated": "2024-01-01T12:00:00.000Z",
                   "platforms": {"mobile": {"lastUpdated": "2024-01-01T06:30:00.000Z"}}})
        );
    }
    let fifth = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .state(&fourth.last_state())
        .run()
        .success();
    assert!(fifth.records().is_empty());
    // Every settings request named its platform.
    assert!(
        srv.requests()
            .iter()
            .filter(|r| r.path.starts_with("/settings/"))
            .all(|r| r.query.contains("platform=web") || r.query.contains("platform=mobile"))
    );
}

#[test]
fn reads_the_python_tap_state_and_keeps_other_bookmarks() {
    let srv = server(Vec::new());
    // As the Python tap 2.x writes it, with an events bookmark of ours and
    // an entry for a full-table stream.
    let state = json!({
        "bookmarks": {
            "block_rules_history": {"lastUpdated": "2024-01-01T05:00:00.000000Z"},
            "events": {"replication_key": "EventStart", "bundle_stop": "2024-01-02T00:00:00Z", "bundle_id": "170415360048"},
            "users": {"anything": 1}
        },
        "currently_syncing": null
    });
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["block_rules_history", "users"]))
        .state(&state)
        .run()
        .success();
    let records = by_stream(&run);
    let stamps = |platform: &str| -> Vec<&str> {
        records["block_rules_history"]
            .iter()
            .filter(|v| v["platform"] == platform)
            .map(|v| v["lastUpdated"].as_str().unwrap())
            .collect()
    };
    let web = stamps("web");
    assert_eq!(web.len(), 6, "versions 6 to 11 are newer: {web:?}");
    assert!(
        web.iter()
            .all(|s| s.as_bytes() > b"2024-01-01T05:00:00.000Z".as_slice())
    );
    // The state knew only the web: every mobile version is new.
    assert_eq!(stamps("mobile").len(), 6);
    let out = run.last_state();
    assert_eq!(
        out["bookmarks"]["block_rules_history"],
        json!({"lastUpdated": "2024-01-01T11:00:00.000Z",
               "platforms": {"mobile": {"lastUpdated": "2024-01-01T05:30:00.000Z"}}})
    );
    assert_eq!(out["bookmarks"]["events"], state["bookmarks"]["events"]);
    assert_eq!(out["bookmarks"]["users"], json!({"anything": 1}));
}

#[test]
fn a_forbidden_stream_is_passed_over_and_named_at_the_end() {
    let srv = server(Vec::new());
    let forbidden = || Fault::Status {
        code: 403,
        headers: Vec::new(),
        body: br#"{"message":"forbidden","code":"forbidden"}"#.to_vec(),
    };
    srv.push_fault(
        Route::Path("/settings/recording/v1/privacy".into()),
        forbidden(),
    );
    srv.push_fault(Route::Path("/segments/v1".into()), forbidden());
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&[
            "segments",
            "block_rules",
            "privacy_settings",
            "recording_features",
        ]))
        .run()
        .failure(1);
    // The streams after each refused one were synced.
    let records = by_stream(&run);
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["block_rules", "recording_features"]
    );
    let last = run.last_log();
    assert!(
        last.contains("2 of the selected streams")
            && last
                .contains("segments (HTTP 403: needs an API key with the Admin or Architect role)")
            && last.contains("privacy_settings (HTTP 403: needs an API key with the Admin role)"),
        "{last}"
    );
    // Each refusal was logged as it happened, with the stream's advice.
    assert!(
        run.stderr
            .contains("the 'privacy_settings' stream needs an API key with the Admin role"),
        "{}",
        run.stderr
    );
    // The last STATE covers what synced, and nothing of the refused ones.
    let state = run.last_state();
    for name in ["block_rules", "recording_features"] {
        assert_eq!(
            state["bookmarks"][name]["lastUpdated"], "2024-01-01T11:00:00.000Z",
            "{name}"
        );
    }
    assert!(state["bookmarks"].get("privacy_settings").is_none());
    let tail = run.stdout.lines().last().unwrap();
    assert!(tail.contains(r#""type":"STATE""#), "{tail}");
}

#[test]
fn rate_limits_and_server_errors_are_retried_per_page() {
    let srv = server(Vec::new());
    let route = Route::Path("/v2/users".into());
    srv.push_fault(
        route.clone(),
        Fault::Status {
            code: 429,
            headers: vec![("Retry-After".into(), "0".into())],
            body: br#"{"code":"too_many_requests"}"#.to_vec(),
        },
    );
    srv.push_fault(
        Route::Path("/segments/v1".into()),
        Fault::Status {
            code: 503,
            headers: Vec::new(),
            body: Vec::new(),
        },
    );
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["users", "segments"]))
        .run()
        .success();
    let records = by_stream(&run);
    assert_eq!(records["users"].len(), 25);
    assert_eq!(records["segments"].len(), 23);
    assert_eq!(srv.pending_faults(), 0);
    assert!(run.stderr.contains("429"), "{}", run.stderr);
}

#[test]
fn a_repeated_page_token_is_an_error_not_an_endless_run() {
    let srv = server(Vec::new());
    let page = br#"{"segments":[{"id":"s1","name":"one"}],"nextPaginationToken":"again"}"#;
    for _ in 0..2 {
        srv.push_fault(
            Route::Path("/segments/v1".into()),
            Fault::Body {
                content_type: "application/json".into(),
                body: page.to_vec(),
            },
        );
    }
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["segments"]))
        .run()
        .failure(1);
    assert!(
        run.records().is_empty(),
        "nothing of an unfinished stream is written"
    );
    assert!(
        run.last_log().contains("\"again\" a second time"),
        "{}",
        run.last_log()
    );
}

#[test]
fn a_gzipped_page_is_read_by_its_bytes() {
    let srv = server(Vec::new());
    let page = br#"{"segments":[{"id":"s1","name":"one","created":"2024-01-01T00:00:00Z"}]}"#;
    srv.push_fault(
        Route::Path("/segments/v1".into()),
        Fault::Body {
            content_type: "application/json".into(),
            body: fullstory_demo::gzip(page),
        },
    );
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["segments"]))
        .run()
        .success();
    let records = run.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["id"], "s1");
    assert_eq!(records[0]["created"], "2024-01-01T00:00:00Z");
}

#[test]
fn a_pretty_printed_answer_still_gives_one_record_a_line() {
    let srv = server(Vec::new());
    let page = b"{\n  \"segments\": [\n    {\n      \"id\": \"s1\",\n      \"name\": \"one\",\r\n      \"tags\": {\n        \"a\": [1,\n 2]\n      }\n    }\n  ]\n}\n";
    srv.push_fault(
        Route::Path("/segments/v1".into()),
        Fault::Body {
            content_type: "application/json".into(),
            body: page.to_vec(),
        },
    );
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["segments"]))
        .run()
        .success();
    // Every line of stdout is a whole message: none was split.
    for line in run.stdout.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let records = run.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["ExtraFields"]["tags"], json!({"a": [1, 2]}));
}

#[test]
fn batch_config_puts_each_rest_stream_in_one_file_before_its_state() {
    let srv = server(Vec::new());
    let catalog = select(&all_rest());
    let plain = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .run()
        .success();
    let want_texts: BTreeMap<String, Vec<String>> = all_rest()
        .into_iter()
        .map(|s| (s.to_string(), record_texts_of(&plain, s)))
        .collect();
    assert!(want_texts.values().all(|t| !t.is_empty()), "{want_texts:?}");
    let want = by_stream(&plain);

    let root = tempfile::tempdir().unwrap();
    let mut cfg = rest_config(&srv);
    cfg["batch_config"] = batch_config(root.path(), "fs-");
    let run = Tap::new().config(&cfg).catalog(&catalog).run().success();
    let msgs = lines(&run);
    assert!(msgs.iter().all(|m| m["type"] != "RECORD"), "{}", run.stdout);
    let mut batched = BTreeMap::new();
    for (i, m) in msgs.iter().enumerate() {
        if m["type"] != "BATCH" {
            continue;
        }
        let stream = m["stream"].as_str().unwrap();
        assert_eq!(
            m["encoding"],
            json!({"format": "jsonl", "compression": "gzip"})
        );
        let manifest = m["manifest"].as_array().unwrap();
        assert_eq!(manifest.len(), 1, "{m}");
        let path = path_of(&manifest[0]);
        assert_eq!(path.parent().unwrap(), root.path());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("fs-{stream}-")) && name.ends_with(".jsonl.gz"),
            "{name}"
        );
        let texts = gunzip_lines(&path);
        // A file a platform for the settings streams the server has for
        // mobile apps: web, then mobile.
        let platform = texts
            .first()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|r| r["platform"].as_str().map(str::to_string));
        let first = !batched.contains_key(stream);
        let texts_so_far: &mut Vec<String> = batched.entry(stream.to_string()).or_default();
        match platform.as_deref() {
            Some("mobile") => assert!(!first && MOBILE.contains(&stream), "{stream}: {name}"),
            _ => assert!(first, "a second BATCH for {stream}"),
        }
        if let Some(platform) = &platform {
            assert!(
                name.starts_with(&format!("fs-{stream}-{platform}-")),
                "{name}"
            );
        }
        texts_so_far.extend(texts);
        // The next message is the STATE that covers the file.
        let next = &msgs[i + 1];
        assert_eq!(next["type"], "STATE", "after the BATCH of {stream}");
        if SETTINGS.contains(&stream) || HISTORIES.contains(&stream) {
            let bookmark = &next["value"]["bookmarks"][stream];
            assert_eq!(
                bookmark["lastUpdated"], "2024-01-01T11:00:00.000Z",
                "{stream}"
            );
            if platform.as_deref() == Some("mobile") {
                assert_eq!(
                    bookmark["platforms"]["mobile"]["lastUpdated"], "2024-01-01T05:30:00.000Z",
                    "{stream}"
                );
            }
        }
        // No STATE before its first file moved this stream's bookmark.
        for earlier in msgs[..i].iter().filter(|_| first) {
            if earlier["type"] == "STATE" {
                assert!(
                    earlier["value"]["bookmarks"].get(stream).is_none(),
                    "{stream}: {earlier}"
                );
            }
        }
    }
    // Exactly the record objects of the RECORD run, byte for byte.
    assert_eq!(batched, want_texts);
    for (stream, texts) in &batched {
        let parsed: Vec<Value> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(&parsed, &want[stream], "{stream}");
    }
    // One published file per stream and platform, no partial file left.
    let names = names_in(root.path());
    assert_eq!(names.len(), all_rest().len() + MOBILE.len(), "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    // Nothing new for the settings streams: no file and no BATCH for them;
    // the full-table streams come whole again, and no file is removed.
    let again = Tap::new()
        .config(&cfg)
        .catalog(&catalog)
        .state(&lines(&run).last().unwrap()["value"])
        .run()
        .success();
    let streams: Vec<String> = lines(&again)
        .iter()
        .filter(|m| m["type"] == "BATCH")
        .map(|m| m["stream"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streams, FULL_TABLE);
    let after = names_in(root.path());
    assert_eq!(after.len(), names.len() + FULL_TABLE.len(), "{after:?}");
    // BATCH files carry no table version, so none is activated over them.
    assert!(
        lines(&again)
            .iter()
            .all(|m| m["type"] != "ACTIVATE_VERSION")
    );
    assert!(names.iter().all(|n| after.contains(n)));
}

#[test]
fn a_failed_rest_stream_publishes_no_batch_file() {
    let srv = server(Vec::new());
    // Segments read one page, then fail on a page token sent twice.
    let page = br#"{"segments":[{"id":"s1","name":"one"}],"nextPaginationToken":"again"}"#;
    for _ in 0..2 {
        srv.push_fault(
            Route::Path("/segments/v1".into()),
            Fault::Body {
                content_type: "application/json".into(),
                body: page.to_vec(),
            },
        );
    }
    let root = tempfile::tempdir().unwrap();
    let mut cfg = rest_config(&srv);
    cfg["batch_config"] = batch_config(root.path(), "");
    let run = Tap::new()
        .config(&cfg)
        .catalog(&select(&["users", "segments"]))
        .run()
        .failure(1);
    let msgs = lines(&run);
    let batches: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "BATCH").collect();
    assert_eq!(batches.len(), 1, "{}", run.stdout);
    assert_eq!(batches[0]["stream"], "users");
    assert_eq!(gunzip_lines(&path_of(&batches[0]["manifest"][0])).len(), 25);
    // Only the users file, and nothing of segments, not even a partial one.
    let names = names_in(root.path());
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("users-"), "{names:?}");
    assert_eq!(msgs.last().unwrap()["type"], "STATE");
}

#[test]
fn a_users_stream_of_several_spool_blocks_reads_back_byte_for_byte() {
    let mut rest = synthetic_rest(12_000, 0, 0);
    rest.page_size = 2_000;
    let srv = Server::start(ServerOptions {
        api_key: KEY.to_string(),
        rest: rest.clone(),
        ..ServerOptions::default()
    })
    .unwrap();
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["users"]))
        .run()
        .success();
    let held: Vec<&str> = rest.users.iter().map(|u| u.listed.as_str()).collect();
    let json: usize = held.iter().map(|u| u.len()).sum();
    // More than one spool block (1 MiB of RECORD lines) of users.
    assert!(json > 2 * 1024 * 1024, "{json}");
    assert_eq!(record_texts_of(&run, "users"), held);
    let states = run.states();
    assert_eq!(
        states.len(),
        2,
        "one STATE before and one after the records"
    );
    let last = run.stdout.lines().last().unwrap();
    assert!(last.contains(r#""type":"STATE""#), "{last}");

    // The spool held them compressed: under a fifth of their JSON.
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("users: sync complete: 1 resources, 12000 records"))
        .unwrap_or_else(|| panic!("no summary in {}", run.stderr));
    let spool: usize = line
        .rsplit_once('(')
        .and_then(|(_, n)| n.strip_suffix(" bytes)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no spool size in {line}"));
    assert!(spool > 0 && spool * 5 <= json, "spool {spool} of {json}");
}

/// The id of synthetic user `i`: past 2^53, two apart.
fn user_id(i: u64) -> String {
    (9_007_199_254_740_993u64 + 2 * i).to_string()
}

#[test]
fn a_user_deleted_after_the_list_is_skipped_with_one_warning() {
    let srv = server(Vec::new());
    // On the second page of the list, so users come before and after it.
    let gone = user_id(12);
    assert!(srv.delete_user_after_list(&gone));
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["users", "user", "segments"]))
        .run()
        .success();
    let records = by_stream(&run);
    // The list still has it; the stream after `user` ran.
    assert_eq!(count(&records, "users"), 25);
    assert_eq!(count(&records, "segments"), 23);

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for u in &records["user"] {
        *seen
            .entry(u["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (0..25)
        .map(user_id)
        .filter(|id| *id != gone)
        .map(|id| (id, 1))
        .collect();
    assert_eq!(
        seen, want,
        "every other user exactly once, the gone one not"
    );

    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&gone))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("skipped"), "{}", warnings[0]);
    assert!(
        !run.stderr.lines().any(|l| l.contains("ERROR")),
        "{}",
        run.stderr
    );
    let summary = run
        .stderr
        .lines()
        .find(|l| l.contains("user: 24 items from"))
        .unwrap_or_else(|| panic!("no summary in {}", run.stderr));
    assert!(summary.contains("1 skipped"), "{summary}");

    // A 404 is an answer, not a failure to retry.
    let fetches: Vec<Option<u16>> = srv
        .requests()
        .iter()
        .filter(|r| r.path == format!("/v2/users/{gone}"))
        .map(|r| r.status)
        .collect();
    assert_eq!(fetches, [Some(404)]);

    // The version activated after the user records (the deleted one is
    // not among them), then the STATE, as for any full-table stream.
    let msgs = run.messages();
    let last_user = msgs
        .iter()
        .rposition(|m| m["type"] == "RECORD" && m["stream"] == "user")
        .unwrap();
    assert_eq!(msgs[last_user + 1]["type"], "ACTIVATE_VERSION");
    assert_eq!(msgs[last_user + 1]["version"], msgs[last_user]["version"]);
    assert_eq!(msgs[last_user + 2]["type"], "STATE");
}

#[test]
fn a_per_user_fetch_that_keeps_failing_with_500_still_stops_the_run() {
    let srv = server(Vec::new());
    let broken = user_id(12);
    // max_retries is 4: five answers of 500 use every attempt up.
    for _ in 0..5 {
        srv.push_fault(
            Route::Path(format!("/v2/users/{broken}")),
            Fault::Status {
                code: 500,
                headers: Vec::new(),
                body: br#"{"code":"internal"}"#.to_vec(),
            },
        );
    }
    let input = json!({"bookmarks": {"user": {"kept": true}}});
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["users", "user", "segments"]))
        .state(&input)
        .run()
        .failure(1);
    assert_eq!(srv.pending_faults(), 0);
    let last = run.last_log();
    assert!(
        last.contains(&broken) && last.contains("500") && last.contains("giving up"),
        "{last}"
    );
    let records = by_stream(&run);
    assert_eq!(count(&records, "users"), 25);
    assert_eq!(
        count(&records, "user"),
        0,
        "nothing of the unfinished stream, not even the users fetched before"
    );
    assert_eq!(count(&records, "segments"), 0, "the run stopped there");
    // Every STATE holds the user entry as it came in: none moved past it.
    let states = run.states();
    assert!(!states.is_empty());
    for state in &states {
        assert_eq!(state["bookmarks"]["user"], input["bookmarks"]["user"]);
    }
    let tail = run.messages().pop().unwrap();
    assert_eq!(tail["type"], "STATE");
    assert_eq!(
        tail["value"], states[0],
        "the last STATE is the one before the stream"
    );
}

#[test]
fn a_404_on_the_user_list_still_stops_the_run() {
    let srv = server(Vec::new());
    srv.push_fault(
        Route::Path("/v2/users".into()),
        Fault::Status {
            code: 404,
            headers: Vec::new(),
            body: br#"{"code":"not_found"}"#.to_vec(),
        },
    );
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["user"]))
        .run()
        .failure(1);
    assert!(run.records().is_empty(), "{}", run.stdout);
    let last = run.last_log();
    assert!(
        last.contains("404") && last.contains("check api_url"),
        "{last}"
    );
    assert!(
        !srv.requests()
            .iter()
            .any(|r| r.path.starts_with("/v2/users/")),
        "no user is fetched without a list"
    );
}

#[test]
fn a_platform_with_nothing_is_no_record_and_a_missing_web_setting_still_stops() {
    // Mobile geo settings that are an empty object, mobile domain ones that
    // are null, and a mobile history with no versions.
    let mut rest = synthetic_rest(2, 2, 3);
    rest.mobile.push(("geo".into(), vec!["{}".into()]));
    rest.mobile.push(("domain".into(), vec!["null".into()]));
    rest.mobile.push(("targeting".into(), Vec::new()));
    let srv = rest_server(rest);
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&[
            "geo_settings",
            "domain_settings",
            "target_rule_history",
        ]))
        .run()
        .success();
    let records = by_stream(&run);
    for name in ["geo_settings", "domain_settings"] {
        assert_eq!(records[name].len(), 1, "{name}");
        assert_eq!(records[name][0]["platform"], "web");
    }
    assert!(
        records["target_rule_history"]
            .iter()
            .all(|r| r["platform"] == "web")
    );
    // Bookmarks for the web only.
    let state = run.last_state();
    assert!(
        state["bookmarks"]["geo_settings"]
            .get("platforms")
            .is_none()
    );
    assert!(run.stderr.contains("the answer is empty"), "{}", run.stderr);

    // The web's own settings missing is a wrong api_url, not an account
    // without a platform.
    srv.push_fault(
        Route::Path("/settings/recording/v1/geo".into()),
        Fault::Status {
            code: 404,
            headers: Vec::new(),
            body: br#"{"code":"not_found"}"#.to_vec(),
        },
    );
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["geo_settings"]))
        .run()
        .failure(1);
    assert!(run.last_log().contains("api_url"), "{}", run.last_log());
    assert!(run.records().is_empty());
}
