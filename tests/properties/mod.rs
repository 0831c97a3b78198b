//! Custom properties as typed columns: each type, lists, values not of
//! their type, a SCHEMA that grows before the records that need it, the
//! columns kept in STATE for the next run, the cap, names no target can
//! take, catalog de-selection, BATCH output, and `object` mode.

use fullstory_demo::{BundleSpec, Encoding, Server};
use serde_json::{Value, json};

use crate::batch::{batch_config, gunzip_lines, lines, path_of};
use crate::support::*;

/// Daily bundles from [`T0`], one per JSON array of events given.
fn days(events: &[&str]) -> Vec<BundleSpec> {
    events
        .iter()
        .enumerate()
        .map(|(i, json)| {
            let start = T0 + i as i64 * DAY;
            let count = serde_json::from_str::<Vec<Value>>(json).unwrap().len();
            BundleSpec::from_events_json(
                (start * 100 + 48).to_string(),
                start,
                start + DAY,
                json.as_bytes().to_vec(),
                count,
                Encoding::GzipFile,
            )
        })
        .collect()
}

/// An event at `secs` after T0 with `extra` members (JSON text, no braces).
fn event(secs: i64, extra: &str) -> String {
    let at = rfc3339(T0 + secs);
    format!(
        r#"{{"UserId":{secs},"SessionId":1,"PageId":1,"EventStart":"{at}","EventType":"custom"{}{extra}}}"#,
        if extra.is_empty() { "" } else { "," }
    )
}

fn array(events: &[String]) -> String {
    format!("[{}]", events.join(","))
}

/// The SCHEMA messages of the events stream, with the index of each among
/// all messages.
fn schemas(msgs: &[Value]) -> Vec<(usize, Value)> {
    msgs.iter()
        .enumerate()
        .filter(|(_, m)| m["type"] == "SCHEMA" && m["stream"] == "events")
        .map(|(i, m)| (i, m["schema"]["properties"].clone()))
        .collect()
}

fn run_with(srv: &Server, extra: &[(&str, Value)]) -> Run {
    let mut cfg = config(srv);
    for (k, v) in extra {
        cfg[*k] = v.clone();
    }
    Tap::new().config(&cfg).run().success()
}

#[test]
fn each_type_becomes_a_typed_column_with_its_value_as_sent() {
    let props = r#""user_plan_str":"pro","user_orders_int":9223372036854775807,"evt_amount_real":0.30000000000000004,"evt_total_real":2,"user_vip_bool":true,"user_signup_date":"2024-01-01T10:00:00.000Z","user_tags_strs":["a","b"],"evt_ids_ints":[1,-2],"evt_prices_reals":[1.5,2],"user_flags_bools":[true,false],"user_visits_dates":["2024-01-01T00:00:00Z"],"evt_order.items_real":1.25,"page_none_str":null"#;
    let specs = days(&[&array(&[event(1, props)])]);
    let srv = server(specs);
    let run = run_with(&srv, &[]);
    let record = &run.records()[0];
    let raw = run.stdout.lines().find(|l| l.contains("RECORD")).unwrap();
    // Byte for byte as exported.
    for text in props.split(",\"").map(|t| t.trim_start_matches('"')) {
        assert!(raw.contains(text), "{text} not in {raw}");
    }
    assert!(record.get("ExtraFields").is_none(), "{record}");
    assert_eq!(record["evt_order.items_real"], 1.25);
    let msgs = run.messages();
    let all = schemas(&msgs);
    let types = &all.last().unwrap().1;
    for (name, want) in [
        ("user_plan_str", json!({"type": ["null", "string"]})),
        ("user_orders_int", json!({"type": ["null", "integer"]})),
        ("evt_amount_real", json!({"type": ["null", "number"]})),
        ("user_vip_bool", json!({"type": ["null", "boolean"]})),
        (
            "user_signup_date",
            json!({"type": ["null", "string"], "format": "date-time"}),
        ),
        (
            "user_tags_strs",
            json!({"type": ["null", "array"], "items": {"type": "string"}}),
        ),
        (
            "evt_ids_ints",
            json!({"type": ["null", "array"], "items": {"type": "integer"}}),
        ),
        ("evt_prices_reals", json!({"type": ["null", "array"]})),
        (
            "user_flags_bools",
            json!({"type": ["null", "array"], "items": {"type": "boolean"}}),
        ),
        (
            "user_visits_dates",
            json!({"type": ["null", "array"], "items": {"type": "string", "format": "date-time"}}),
        ),
        ("page_none_str", json!({"type": ["null", "string"]})),
    ] {
        assert_eq!(types[name], want, "{name}");
    }
    // The columns are kept in the STATE.
    let kept = &run.last_state()["bookmarks"]["events"]["properties"];
    assert_eq!(kept.as_array().unwrap().len(), 13, "{kept}");
}

#[test]
fn a_value_not_of_its_type_goes_to_extra_fields_with_one_warning() {
    let events = [
        event(
            1,
            r#""evt_count_int":5,"user_seen_date":"2024-01-01T00:00:00Z""#,
        ),
        event(
            2,
            r#""evt_count_int":"many","user_seen_date":"2024-02-30T00:00:00Z""#,
        ),
        event(
            3,
            r#""evt_count_int":92233720368547758070,"user_tags_strs":["a",1]"#,
        ),
        event(4, r#""evt_count_int":1.5"#),
    ];
    let srv = server(days(&[&array(&events)]));
    let run = run_with(&srv, &[]);
    let records = run.records();
    assert_eq!(records[0]["evt_count_int"], 5);
    assert_eq!(records[1]["ExtraFields"]["evt_count_int"], "many");
    assert_eq!(
        records[1]["ExtraFields"]["user_seen_date"],
        "2024-02-30T00:00:00Z"
    );
    // Beyond 64 bits: kept as the text of the number.
    assert_eq!(
        records[2]["ExtraFields"]["evt_count_int"],
        "92233720368547758070"
    );
    assert_eq!(records[2]["ExtraFields"]["user_tags_strs"], json!(["a", 1]));
    assert_eq!(records[3]["ExtraFields"]["evt_count_int"], 1.5);
    assert_eq!(
        run.stderr
            .matches("custom property evt_count_int has a value that is not of its type")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("5 custom property values in this bundle were not of their property's type"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_schema_grows_before_the_first_bundle_that_needs_it_and_only_then() {
    let plain = |d: i64| array(&[event(d * DAY + 1, r#""user_plan_str":"a""#)]);
    let day3 = array(&[
        event(2 * DAY + 1, r#""user_plan_str":"a""#),
        event(2 * DAY + 2, r#""evt_new_int":3"#),
    ]);
    let bundles = [plain(0), plain(1), day3, plain(3), plain(4)];
    let refs: Vec<&str> = bundles.iter().map(String::as_str).collect();
    let specs = days(&refs);
    let srv = server(specs.clone());
    let run = run_with(&srv, &[]);
    let msgs = run.messages();
    let all = schemas(&msgs);
    // The first, then one before bundle 1 (user_plan_str), one before bundle 3.
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all[0].1.get("user_plan_str").is_none());
    assert!(all[1].1.get("user_plan_str").is_some() && all[1].1.get("evt_new_int").is_none());
    assert!(all[2].1.get("user_plan_str").is_some() && all[2].1.get("evt_new_int").is_some());
    // Each right after the previous bundle's STATE, before the first record
    // that needs it.
    for (at, after_bundle) in [(all[1].0, 0), (all[2].0, 2)] {
        assert_eq!(msgs[at - 1]["type"], "STATE");
        if after_bundle > 0 {
            assert_eq!(
                bookmark_stop(&msgs[at - 1]["value"]),
                rfc3339(specs[after_bundle - 1].stop)
            );
        }
        assert_eq!(msgs[at + 1]["type"], "RECORD");
    }
    let first_new = msgs
        .iter()
        .position(|m| m["type"] == "RECORD" && m["record"].get("evt_new_int").is_some())
        .unwrap();
    assert!(all[2].0 < first_new);
    assert_eq!(run.records().len(), 6);
}

#[test]
fn a_resumed_run_starts_with_every_column_of_the_runs_before() {
    let specs = days(&[
        &array(&[event(1, r#""user_plan_str":"a","evt_x_ints":[1]"#)]),
        &array(&[event(DAY + 1, r#""page_y_bool":true"#)]),
    ]);
    let srv = server(specs);
    let first = run_with(&srv, &[("end_date", json!(rfc3339(T0 + DAY)))]);
    let state = first.last_state()["bookmarks"]["events"].clone();
    assert_eq!(state["properties"], json!(["evt_x_ints", "user_plan_str"]));

    let second = Tap::new()
        .config(&config(&srv))
        .state(&first.last_state())
        .run()
        .success();
    let msgs = second.messages();
    let all = schemas(&msgs);
    // Its first SCHEMA already has the earlier columns; the new one comes
    // in a second SCHEMA before the bundle that has it.
    assert!(all[0].1.get("user_plan_str").is_some() && all[0].1.get("evt_x_ints").is_some());
    assert!(all[0].1.get("page_y_bool").is_none());
    assert_eq!(all.len(), 2);
    assert!(all[1].1.get("page_y_bool").is_some() && all[1].1.get("user_plan_str").is_some());
    assert_eq!(
        second.last_state()["bookmarks"]["events"]["properties"],
        json!(["evt_x_ints", "page_y_bool", "user_plan_str"])
    );
    // A state from before columns (no list) is read as ever.
    let mut old = first.last_state();
    old["bookmarks"]["events"]
        .as_object_mut()
        .unwrap()
        .remove("properties");
    let third = Tap::new().config(&config(&srv)).state(&old).run().success();
    assert_eq!(third.records().len(), 1);
}

#[test]
fn past_max_property_columns_new_ones_stay_in_extra_fields_with_one_warning() {
    let events = [
        event(1, r#""user_a_str":"1","user_b_str":"2""#),
        event(2, r#""user_c_str":"3","user_d_str":"4","user_a_str":"5""#),
    ];
    let srv = server(days(&[&array(&events)]));
    let run = run_with(&srv, &[("max_property_columns", json!(2))]);
    let records = run.records();
    assert_eq!(records[0]["user_a_str"], "1");
    assert_eq!(records[0]["user_b_str"], "2");
    assert_eq!(records[1]["user_a_str"], "5");
    assert_eq!(
        records[1]["ExtraFields"],
        json!({"user_c_str": "3", "user_d_str": "4"})
    );
    assert_eq!(
        run.stderr.matches("max_property_columns").count(),
        1,
        "{}",
        run.stderr
    );
    let all = schemas(&run.messages());
    assert!(all.last().unwrap().1.get("user_c_str").is_none());
}

#[test]
fn names_a_target_could_not_keep_apart_stay_in_extra_fields() {
    let long = format!("evt_{}_str", "x".repeat(60));
    let events = [event(
        1,
        &format!(r#""user_plan_str":"a","user_Plan_str":"b","{long}":"c","user_email_str":"d""#),
    )];
    let srv = server(days(&[&array(&events)]));
    let run = run_with(&srv, &[]);
    let record = &run.records()[0];
    assert_eq!(record["user_plan_str"], "a");
    assert_eq!(record["user_email_str"], "d");
    assert_eq!(record["ExtraFields"]["user_Plan_str"], "b");
    assert_eq!(record["ExtraFields"][long.as_str()], "c");
    assert!(
        run.stderr.contains("differs only in case"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("longer than 63 bytes"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_catalog_can_leave_a_property_out_in_either_mode() {
    let events = [event(
        1,
        r#""user_plan_str":"a","user_email_str":"secret@example.com""#,
    )];
    let srv = server(days(&[&array(&events)]));
    let catalog = json!({"streams": [{"tap_stream_id": "events", "metadata": [
        {"breadcrumb": [], "metadata": {"selected": true}},
        {"breadcrumb": ["properties", "user_email_str"], "metadata": {"selected": false}},
        {"breadcrumb": ["properties", "user_plan_str"], "metadata": {"selected": true}}]}]});
    for mode in ["columns", "object"] {
        let mut cfg = config(&srv);
        cfg["custom_properties"] = json!(mode);
        let run = Tap::new().config(&cfg).catalog(&catalog).run().success();
        assert!(!run.stdout.contains("secret@example.com"), "{mode}");
        assert!(!run.stdout.contains("user_email_str"), "{mode}");
        let record = &run.records()[0];
        match mode {
            "columns" => assert_eq!(record["user_plan_str"], "a"),
            _ => assert_eq!(record["ExtraFields"]["user_plan_str"], "a"),
        }
    }
    // A name that is no custom property and not in the schema is still an error.
    let bad = json!({"streams": [{"tap_stream_id": "events", "metadata": [
        {"breadcrumb": [], "metadata": {"selected": true}},
        {"breadcrumb": ["properties", "NoSuchField"], "metadata": {"selected": true}}]}]});
    let run = Tap::new()
        .config(&config(&srv))
        .catalog(&bad)
        .run()
        .failure(2);
    assert!(run.last_log().contains("NoSuchField"), "{}", run.last_log());
}

#[test]
fn with_batch_output_the_schema_comes_before_the_batch_that_needs_it() {
    let specs = days(&[
        &array(&[event(1, "")]),
        &array(&[event(DAY + 1, r#""user_plan_str":"a""#)]),
    ]);
    let srv = server(specs);
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(&srv);
    cfg["batch_config"] = batch_config(root.path(), "");
    let run = Tap::new().config(&cfg).run().success();
    let msgs = lines(&run);
    let types: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "SCHEMA", "STATE", "BATCH", "STATE", "SCHEMA", "BATCH", "STATE", "STATE"
        ]
    );
    assert!(msgs[4]["schema"]["properties"]["user_plan_str"].is_object());
    let file = gunzip_lines(&path_of(&msgs[5]["manifest"][0]));
    let record: Value = serde_json::from_str(&file[0]).unwrap();
    assert_eq!(record["user_plan_str"], "a");
}

#[test]
fn object_mode_keeps_every_property_in_extra_fields_and_one_schema() {
    let specs = days(&[&array(&[event(1, r#""user_plan_str":"a","evt_n_int":1"#)])]);
    let srv = server(specs);
    let run = run_with(&srv, &[("custom_properties", json!("object"))]);
    let record = &run.records()[0];
    assert_eq!(
        record["ExtraFields"],
        json!({"user_plan_str": "a", "evt_n_int": 1})
    );
    assert_eq!(schemas(&run.messages()).len(), 1);
    assert!(
        run.last_state()["bookmarks"]["events"]
            .get("properties")
            .is_none()
    );
    let mut cfg = config(&srv);
    cfg["custom_properties"] = json!("rows");
    let bad = Tap::new().config(&cfg).run().failure(2);
    assert!(
        bad.last_log().contains("custom_properties"),
        "{}",
        bad.last_log()
    );
}
