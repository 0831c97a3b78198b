//! A server that cannot be trusted: bundles sharing a Stop, a Stop in the
//! future, ids too long for any integer, a bundle broken the same way on
//! every download, a Retry-After of a day, bodies that are not what they say.

use std::process::Child;
use std::time::{Duration, Instant};

use fullstory_demo::{BundleSpec, Encoding, Fault, gzip};
use serde_json::{Value, json};

use super::{assert_complete, assert_states_cover_records, get};
use crate::support::*;

/// Waits for a spawned tap, killing it (and failing) if it takes longer
/// than `limit`: the cases here used to hang for an hour.
fn finish_within(tap: &Tap, mut child: Child, limit: Duration) -> Run {
    let started = Instant::now();
    while child.try_wait().expect("poll the tap").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().expect("reap the tap"));
            panic!(
                "the tap was still running after {limit:?}; stderr:\n{}",
                run.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = Run::from(child.wait_with_output().expect("collect the tap's output"));
    let _ = tap;
    run.assert_no_secret();
    run
}

/// The ids the tap downloaded, in order of the STATEs that followed them.
fn committed_ids(run: &Run) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for state in run.states() {
        if let Some(id) = state["bookmarks"]["events"]["bundle_id"].as_str()
            && ids.last().map(String::as_str) != Some(id)
        {
            ids.push(id.to_string());
        }
    }
    ids
}

// ---- item: bundles sharing a Stop ---------------------------------------------

#[test]
fn a_bundle_sharing_the_stop_that_ends_a_list_page_is_not_lost() {
    // 21 bundles: the 20th and 21st end at the same instant, so the 21st is
    // on the second page only if the tap asks again from before that Stop.
    let mut specs = bundles(21, 3, Encoding::GzipFile);
    specs[20].start = specs[19].start + 1;
    specs[20].stop = specs[19].stop;
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    for b in &specs {
        assert_eq!(srv.get_count(&b.id), 1, "bundle {}", b.id);
    }
    assert_eq!(
        run.last_state()["bookmarks"]["events"]["bundle_id"],
        specs[20].id
    );
}

#[test]
fn resuming_between_two_bundles_with_the_same_stop_syncs_the_second() {
    // The run before committed `a`, then stopped; `b` ends at the same instant
    // and sorts after `a` by id, so it is still to do.
    let mut specs = bundles(3, 4, Encoding::GzipFile);
    specs[1].start = specs[0].start + 10;
    specs[1].stop = specs[0].stop;
    let (a, b, c) = (&specs[0], &specs[1], &specs[2]);
    let srv = server(specs.clone());
    let state =
        json!({"bookmarks": {"events": {"bundle_stop": rfc3339(a.stop), "bundle_id": a.id}}});
    let run = Tap::new()
        .config(&config(&srv))
        .state(&state)
        .run()
        .success();
    assert_eq!(run.records().len(), b.events + c.events);
    assert_eq!(srv.get_count(&a.id), 0);
    assert_eq!(srv.get_count(&b.id), 1);
    assert_eq!(srv.get_count(&c.id), 1);
    assert_eq!(
        committed_ids(&run),
        [a.id.clone(), b.id.clone(), c.id.clone()]
    );

    // And resuming from `b` takes neither `a` nor `b` again.
    let state = run.states()[1].clone();
    assert_eq!(state["bookmarks"]["events"]["bundle_id"], b.id);
    let again = Tap::new()
        .config(&config(&srv))
        .state(&state)
        .run()
        .success();
    assert_eq!(again.records().len(), c.events);
    assert_eq!(srv.get_count(&a.id), 0);
    assert_eq!(srv.get_count(&b.id), 1);
}

#[test]
fn a_whole_page_of_bundles_sharing_one_stop_is_reported_loudly() {
    // 21 bundles end at the same instant: the API can list only 20 of them.
    let mut specs = bundles(22, 1, Encoding::GzipFile);
    let shared = specs[0].stop;
    for (i, b) in specs.iter_mut().take(21).enumerate() {
        b.start = shared - 1000 + i as i64;
        b.stop = shared;
    }
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run().success();
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains("cannot be listed through the API"))
        .unwrap_or_else(|| panic!("no warning:\n{}", run.stderr));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&rfc3339(shared)), "{warning}");
    assert!(warning.contains("20 bundles all end at"), "{warning}");
    // The twenty it could see, and the one after.
    assert_eq!(run.records().len(), 21);
    assert_eq!(srv.get_count(&specs[21].id), 1);
}

// ---- item: a Stop in the future ---------------------------------------------------

#[test]
fn a_bundle_listed_as_ending_in_year_9999_stops_the_run() {
    let mut specs = bundles(3, 2, Encoding::GzipFile);
    specs[2].stop = 253_402_300_799; // 9999-12-31T23:59:59Z
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    let last = run.last_log();
    assert!(
        last.contains("9999-12-31T23:59:59Z") && last.contains("in the future"),
        "{last}"
    );
    assert!(last.contains(&specs[2].id), "{last}");
    assert!(run.records().is_empty());
    for state in run.states() {
        assert!(state["bookmarks"]["events"].is_null(), "{state}");
    }
    assert_eq!(srv.get_count(&specs[2].id), 0);
}

// ---- item: ids too long for an integer -------------------------------------------

#[test]
fn a_numeric_id_too_long_for_any_integer_is_requested_and_kept_as_listed() {
    let id = "12345678901234567890123";
    let json = fullstory_demo::synthetic_events(3, T0, T0 + DAY, 5);
    let specs = vec![BundleSpec::from_events_json(
        id,
        T0,
        T0 + DAY,
        json,
        5,
        Encoding::GzipFile,
    )];
    let srv = server(specs.clone());
    // The demo server would list it as a string; FullStory sends a number.
    srv.set_list_override(Some(
        format!(
            r#"{{"exports":[{{"Id":{id},"Start":{T0},"Stop":{}}}]}}"#,
            T0 + DAY
        )
        .into_bytes(),
    ));
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    assert_eq!(srv.get_count(id), 1);
    assert_eq!(
        run.last_state()["bookmarks"]["events"]["bundle_id"],
        json!(id)
    );
    let gets: Vec<String> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/get"))
        .map(|r| r.query)
        .collect();
    assert_eq!(gets, [format!("id={id}")]);
}

// ---- item: a bundle broken the same way on every download -------------------------

/// Three bundles, the middle one's body broken in its second event.
fn with_a_broken_bundle() -> (Vec<BundleSpec>, BundleSpec) {
    let mut specs = bundles(3, 4, Encoding::GzipFile);
    let broken = BundleSpec::from_events_json(
        specs[1].id.clone(),
        specs[1].start,
        specs[1].stop,
        br#"[{"UserId":1},{"UserId":tru},{"UserId":3}]"#.to_vec(),
        3,
        Encoding::GzipFile,
    );
    specs[1] = broken.clone();
    (specs, broken)
}

#[test]
fn a_bundle_broken_the_same_way_twice_stops_with_where_and_how_to_move_on() {
    let (specs, broken) = with_a_broken_bundle();
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    // Two identical downloads, not max_retries + 1.
    assert_eq!(srv.get_count(&broken.id), 2);
    let last = run.last_log();
    for words in [
        broken.id.as_str(),
        "record 2 ",
        "starts at byte 14 of the JSON",
        "is not valid JSON",
        "same",
        "skip_bundles",
        "TAP_FULLSTORY_SKIP_BUNDLES",
    ] {
        assert!(last.contains(words), "{words:?} not in {last}");
    }
    assert!(!last.contains("raise max_retries"), "{last}");
    // Nothing of the broken bundle, and the STATE stops before it.
    assert_eq!(run.records().len(), specs[0].events);
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[0].stop));
    assert_states_cover_records(&run, &specs);
}

#[test]
fn a_bundle_damaged_differently_on_each_download_is_still_retried() {
    let specs = bundles(2, 4, Encoding::GzipFile);
    let srv = server(specs.clone());
    for bad in [&b"[{},{x}]"[..], &b"[{},{y}]"[..]] {
        srv.push_fault(
            get(&specs[0]),
            Fault::Body {
                content_type: "application/gzip".into(),
                body: gzip(bad),
            },
        );
    }
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    assert_eq!(srv.get_count(&specs[0].id), 3);
}

#[test]
fn skip_bundles_passes_over_a_bundle_and_the_state_moves_past_it() {
    let (specs, broken) = with_a_broken_bundle();
    let srv = server(specs.clone());
    let mut cfg = config(&srv);
    cfg["skip_bundles"] = json!([broken.id]);
    let run = Tap::new().config(&cfg).run().success();
    check_skipped(&run, &srv, &specs, &broken);

    // The same from the environment, as a comma-separated list.
    let srv = server(specs.clone());
    let run = Tap::new()
        .config(&config(&srv))
        .arg("--config")
        .arg("ENV")
        .env("TAP_FULLSTORY_SKIP_BUNDLES", &format!("42, {}", broken.id))
        .run()
        .success();
    check_skipped(&run, &srv, &specs, &broken);
}

fn check_skipped(
    run: &Run,
    srv: &fullstory_demo::Server,
    specs: &[BundleSpec],
    broken: &BundleSpec,
) {
    assert_eq!(srv.get_count(&broken.id), 0);
    assert_eq!(run.records().len(), specs[0].events + specs[2].events);
    // The STATE after the skipped bundle names it, right after the first
    // bundle's records and before the third's.
    let mut seen = 0;
    let mut after_skip = None;
    for msg in run.messages() {
        match msg["type"].as_str() {
            Some("RECORD") => seen += 1,
            Some("STATE") if msg["value"]["bookmarks"]["events"]["bundle_id"] == broken.id => {
                after_skip.get_or_insert((seen, msg["value"].clone()));
            }
            _ => {}
        }
    }
    let (records_before, state) = after_skip.expect("a STATE after the skipped bundle");
    assert_eq!(records_before, specs[0].events);
    assert_eq!(bookmark_stop(&state), rfc3339(broken.stop));
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[2].stop));
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&broken.id) && l.contains("SKIPPED"))
        .collect();
    assert_eq!(warnings.len(), 2, "planned and done:\n{}", run.stderr);
    assert!(
        warnings[1].contains("STATE now moves past it"),
        "{}",
        warnings[1]
    );
}

#[test]
fn about_lists_skip_bundles_as_an_array() {
    let run = Tap::new()
        .arg("--about")
        .arg("--format")
        .arg("json")
        .run()
        .success();
    let about: Value = serde_json::from_str(&run.stdout).unwrap();
    let setting = &about["settings"]["properties"]["skip_bundles"];
    assert_eq!(setting["type"], "array");
    assert_eq!(setting["items"]["type"], "string");
}

// ---- item: a Retry-After of a day --------------------------------------------------

#[test]
fn a_retry_after_of_a_day_fails_at_once_saying_when_to_rerun() {
    let specs = bundles(3, 2, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(
        get(&specs[1]),
        Fault::Status {
            code: 429,
            headers: vec![("Retry-After".into(), "86400".into())],
            body: br#"{"code":"rate_limited"}"#.to_vec(),
        },
    );
    let tap = Tap::new().config(&config(&srv));
    let child = tap.spawn();
    let run = finish_within(&tap, child, Duration::from_secs(30));
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    let last = run.last_log();
    assert!(last.contains("wait 24h00m (until 20"), "{last}");
    assert!(last.contains("re-run after that"), "{last}");
    assert!(last.contains(&specs[1].id), "{last}");
    assert_eq!(srv.get_count(&specs[1].id), 1);
    assert_eq!(run.records().len(), specs[0].events);
    assert_states_cover_records(&run, &specs);
}

// ---- item: bodies that are not what they say ---------------------------------------

#[test]
fn an_html_page_instead_of_a_bundle_is_quoted_in_the_error() {
    let specs = bundles(1, 2, Encoding::GzipFile);
    let srv = server(specs.clone());
    for _ in 0..5 {
        srv.push_fault(
            get(&specs[0]),
            Fault::Body {
                content_type: "text/html".into(),
                body: b"<html>\n<body>Down for maintenance</body>\n</html>".to_vec(),
            },
        );
    }
    let run = Tap::new().config(&config(&srv)).run();
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    let last = run.last_log();
    assert!(
        last.contains(
            r#"not a JSON array: it starts with "<html> <body>Down for maintenance</body> </html>""#
        ),
        "{last}"
    );
    assert!(run.records().is_empty());
}

/// Serves `body` once for the first of two bundles: the run completes after
/// a retry, and the retry's reason contains `says`.
fn retried_saying(
    body: impl FnOnce(&BundleSpec) -> Vec<u8>,
    says: impl FnOnce(&BundleSpec) -> String,
) {
    let specs = bundles(2, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(
        get(&specs[0]),
        Fault::Body {
            content_type: "application/gzip".into(),
            body: body(&specs[0]),
        },
    );
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    assert_eq!(srv.get_count(&specs[0].id), 2);
    let says = says(&specs[0]);
    assert!(
        run.stderr.contains(&says),
        "{says:?} not in:\n{}",
        run.stderr
    );
}

#[test]
fn bytes_after_the_gzip_data_are_reported_as_such() {
    retried_saying(
        |b| [b.body.as_slice(), b"<!-- cached -->"].concat(),
        |b| {
            format!(
                "unexpected bytes after the end of the gzip data at byte {} of the body",
                b.body.len()
            )
        },
    );
}

#[test]
fn gzip_nested_three_deep_is_reported_as_such() {
    retried_saying(
        |b| gzip(&gzip(&b.body)),
        |_| "gzip nested more than 2 layers deep".to_string(),
    );
}
