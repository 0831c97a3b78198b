//! The table-version protocol on the FULL_TABLE streams: each run's records
//! carry its version, and ACTIVATE_VERSION follows a stream's last record,
//! so rows deleted in FullStory leave the target; never after a failure.

use std::collections::HashSet;

use fullstory_demo::{Fault, Route, synthetic_rest};
use serde_json::{Value, json};

use crate::support::*;

/// Per stream: the ids of its records, the versions they carry, and the
/// versions activated, checking that each ACTIVATE_VERSION comes after the
/// stream's last record and right before a STATE.
struct Versions {
    ids: Vec<String>,
    record_versions: HashSet<u64>,
    activated: Vec<u64>,
}

fn versions(run: &Run, stream: &str) -> Versions {
    let msgs = run.messages();
    let mut out = Versions {
        ids: Vec::new(),
        record_versions: HashSet::new(),
        activated: Vec::new(),
    };
    for (i, m) in msgs.iter().enumerate() {
        if m["stream"] != stream {
            continue;
        }
        match m["type"].as_str().unwrap() {
            "RECORD" => {
                assert!(
                    out.activated.is_empty(),
                    "{stream}: a record after its activation"
                );
                let id = m["record"]["id"].as_str().unwrap_or_default();
                out.ids.push(id.to_string());
                if let Some(v) = m["version"].as_u64() {
                    out.record_versions.insert(v);
                }
            }
            "ACTIVATE_VERSION" => {
                out.activated.push(m["version"].as_u64().unwrap());
                assert_eq!(
                    msgs[i + 1]["type"],
                    "STATE",
                    "{stream}: after its ACTIVATE_VERSION"
                );
            }
            _ => {}
        }
    }
    out
}

#[test]
fn rows_deleted_in_fullstory_are_left_out_of_a_newer_version_that_is_activated() {
    let srv = server(Vec::new());
    let catalog = select(&["users", "user", "segments", "block_rules"]);
    let first = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .run()
        .success();
    let mut was = Vec::new();
    for stream in ["users", "user", "segments"] {
        let v = versions(&first, stream);
        assert!(!v.ids.is_empty(), "{stream}");
        assert_eq!(v.activated.len(), 1, "{stream}: one activation a run");
        assert_eq!(
            v.record_versions,
            HashSet::from([v.activated[0]]),
            "{stream}: every record carries the version activated"
        );
        was.push(v);
    }
    // Incremental streams are not versioned.
    let settings = versions(&first, "block_rules");
    assert!(settings.record_versions.is_empty() && settings.activated.is_empty());

    let gone_user = was[0].ids[3].clone();
    assert!(srv.delete_user(&gone_user));
    assert!(srv.delete_segment("seg-5"));
    let second = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&catalog)
        .state(&first.last_state())
        .run()
        .success();
    for (stream, before, gone) in [
        ("users", &was[0], gone_user.as_str()),
        ("user", &was[1], gone_user.as_str()),
        ("segments", &was[2], "seg-5"),
    ] {
        let now = versions(&second, stream);
        let want: Vec<&String> = before.ids.iter().filter(|id| *id != gone).collect();
        assert_eq!(now.ids.iter().collect::<Vec<_>>(), want, "{stream}");
        assert_eq!(now.activated.len(), 1, "{stream}");
        assert!(
            now.activated[0] > before.activated[0],
            "{stream}: the second run's version is newer"
        );
        assert_eq!(now.record_versions, HashSet::from([now.activated[0]]));
    }
}

#[test]
fn a_stream_that_fails_part_way_activates_nothing_and_those_before_it_keep_theirs() {
    let srv = server(Vec::new());
    // segments (after users in catalog order) answers 500 on its second
    // page every time.
    srv.push_fault(Route::Path("/segments/v1".into()), Fault::Pass);
    for _ in 0..10 {
        srv.push_fault(
            Route::Path("/segments/v1".into()),
            Fault::Status {
                code: 500,
                headers: Vec::new(),
                body: b"{}".to_vec(),
            },
        );
    }
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["users", "segments"]))
        .run()
        .failure(1);
    let users = versions(&run, "users");
    assert_eq!((users.ids.len(), users.activated.len()), (25, 1));
    let segments = versions(&run, "segments");
    assert!(segments.ids.is_empty(), "a partial table was written");
    assert!(
        segments.activated.is_empty(),
        "a partial table was activated"
    );
    assert!(run.last_log().contains("segments"), "{}", run.last_log());
    assert_eq!(run.messages().last().unwrap()["type"], "STATE");
}

#[test]
fn versions_can_be_turned_off() {
    let srv = server(Vec::new());
    for off in [json!(false), json!("false")] {
        let mut cfg = rest_config(&srv);
        cfg["emit_activate_version_messages"] = off;
        let run = Tap::new()
            .config(&cfg)
            .catalog(&select(&["segments"]))
            .run()
            .success();
        assert_eq!(run.records().len(), 23);
        assert!(
            run.messages()
                .iter()
                .all(|m| m["type"] != "ACTIVATE_VERSION" && m.get("version").is_none())
        );
    }
    let mut cfg = rest_config(&srv);
    cfg["emit_activate_version_messages"] = json!("sometimes");
    let run = Tap::new().config(&cfg).run().failure(2);
    assert!(
        run.last_log().contains("emit_activate_version_messages"),
        "{}",
        run.last_log()
    );
}

#[test]
fn about_declares_activate_version() {
    let run = Tap::new()
        .arg("--about")
        .arg("--format")
        .arg("json")
        .run()
        .success();
    let about: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        about["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("activate-version"))
    );
    let setting = &about["settings"]["properties"]["emit_activate_version_messages"];
    assert_eq!(setting["type"], "boolean");
    assert_eq!(setting["default"], true);
}

#[test]
fn webhook_endpoints_and_operations_come_every_page_keyed_by_id() {
    let mut rest = synthetic_rest(3, 2, 2);
    rest.page_size = 2;
    let srv = rest_server(rest);
    assert!(srv.delete_user("9007199254740995"));
    let run = Tap::new()
        .config(&rest_config(&srv))
        .catalog(&select(&["webhook_endpoints", "operations"]))
        .run()
        .success();
    let hooks = versions(&run, "webhook_endpoints");
    let ops = versions(&run, "operations");
    assert_eq!(hooks.ids.len(), 3);
    assert_eq!(hooks.ids.iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(ops.ids.len(), 5, "four listed, and the deletion just made");
    assert_eq!(ops.ids.iter().collect::<HashSet<_>>().len(), 5);
    assert_eq!((hooks.activated.len(), ops.activated.len()), (1, 1));

    let records = run.records();
    let hook = records
        .iter()
        .find(|r| r["eventTypes"].as_array().is_some_and(|t| t.len() == 2))
        .unwrap();
    assert_eq!(hook["eventTypes"][0]["subcategory"], "seg-1");
    assert!(
        hook["url"]
            .as_str()
            .unwrap()
            .starts_with("https://hooks.example.com/")
    );
    let newest = &records.iter().find(|r| r.get("type").is_some()).unwrap();
    assert_eq!(newest["type"], "DELETE_USER");
    assert_eq!(newest["details"]["userId"], "9007199254740995");
    let export = records
        .iter()
        .find(|r| r["type"] == "SEARCH_EXPORT")
        .unwrap();
    assert_eq!(export["results"]["searchExportId"], "se-1");
    assert!(
        records.iter().all(|r| r.get("ExtraFields").is_none()),
        "every field declared"
    );

    // Two pages each, the token passed back.
    let queries = |path: &str| -> Vec<String> {
        srv.requests()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.query.clone())
            .collect()
    };
    assert_eq!(
        queries("/webhooks/v1/endpoints"),
        ["limit=100", "limit=100&paginationToken=p2"]
    );
    assert_eq!(
        queries("/operations/v1"),
        [
            "limit=100",
            "limit=100&paginationToken=p2",
            "limit=100&paginationToken=p4"
        ]
    );
}
