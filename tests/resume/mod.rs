//! Downloads that break off are resumed with a Range request when the
//! server can send the rest of the same file, and started over otherwise;
//! either way every event arrives exactly once.

use std::collections::HashSet;

use fullstory_demo::{BundleSpec, Encoding, Fault, RequestRecord, Route, Server};
use serde_json::json;

use crate::support::*;

/// The requests for bundle `spec`'s body.
fn gets(srv: &Server, spec: &BundleSpec) -> Vec<RequestRecord> {
    srv.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/get") && r.query.contains(&spec.id))
        .collect()
}

fn assert_every_event_once(run: &Run, specs: &[BundleSpec]) {
    let records = run.records();
    let keys: HashSet<&str> = records
        .iter()
        .map(|r| r["EventKey"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), total_events(specs));
    assert_eq!(keys.len(), records.len(), "an event twice");
}

#[test]
fn a_download_cut_at_60_percent_resumes_and_transfers_less_than_one_and_a_half_times_it() {
    let specs = bundles(2, 400, Encoding::GzipFile);
    let srv = server(specs.clone());
    let len = specs[1].body.len();
    let cut = len * 6 / 10;
    srv.push_fault(
        Route::Get(Some(specs[1].id.clone())),
        Fault::Truncate { after: cut },
    );
    let run = Tap::new().config(&config(&srv)).run().success();
    assert_every_event_once(&run, &specs);
    let gets = gets(&srv, &specs[1]);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(gets[1].status, Some(206));
    let sent: usize = gets.iter().map(|r| r.body_bytes).sum();
    assert_eq!(sent, len, "each byte once");
    assert!(sent * 2 < len * 3);
    assert!(
        run.stderr.contains(&format!(
            "resumed at byte {cut} of {len}: {cut} bytes not fetched again"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_server_that_ignores_range_gets_the_download_started_over() {
    let specs = bundles(2, 200, Encoding::GzipFile);
    let srv = server(specs.clone());
    let id = specs[1].id.clone();
    let cut = specs[1].body.len() * 6 / 10;
    srv.push_fault(Route::Get(Some(id.clone())), Fault::Truncate { after: cut });
    srv.push_fault(Route::Get(Some(id)), Fault::IgnoreRange);
    let run = Tap::new().config(&config(&srv)).run().success();
    assert_every_event_once(&run, &specs);
    let gets = gets(&srv, &specs[1]);
    // Cut, asked for the rest and sent the whole file: started over.
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert_eq!(gets[1].status, Some(200));
    assert!(
        run.stderr.contains("sent the whole file again"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_file_that_changed_before_the_rest_was_asked_for_is_fetched_whole_again() {
    // The same events written again (a plain body rather than gzip):
    // other bytes, another length, another ETag.
    for etags in [true, false] {
        let specs = bundles(2, 200, Encoding::GzipFile);
        let srv = server(specs.clone());
        srv.set_etags(etags);
        let old = specs[1].body.clone();
        let json = fullstory_demo::synthetic_bundles(2, 200, T0, DAY, 7, Encoding::Plain)[1]
            .body
            .clone();
        srv.replace_bundle_body(&specs[1].id, json);
        let cut = old.len() * 6 / 10;
        srv.push_fault(
            Route::Get(Some(specs[1].id.clone())),
            Fault::OldVersion {
                body: old,
                after: cut,
            },
        );
        let run = Tap::new().config(&config(&srv)).run().success();
        assert_every_event_once(&run, &specs);
        let gets = gets(&srv, &specs[1]);
        assert_eq!(gets.len(), 3, "etags {etags}: {gets:?}");
        // With an ETag the server sends the new file whole (If-Range); without
        // one it sends a part of the new file that does not fit the old.
        let want = if etags { 200 } else { 206 };
        assert_eq!(gets[1].status, Some(want), "etags {etags}");
        assert!(run.stderr.contains("starting over"), "{}", run.stderr);
    }
}

#[test]
fn a_segment_export_file_cut_part_way_resumes_from_its_signed_link() {
    let specs = bundles(1, 300, Encoding::GzipFile);
    let srv = server(specs.clone());
    let mut cfg = config(&srv);
    cfg["source"] = json!("segment_export");
    cfg["api_url"] = json!(srv.url());
    cfg["poll_interval_seconds"] = json!(0.05);
    cfg["export_delay_hours"] = json!(0);
    cfg["end_date"] = json!(rfc3339(T0 + DAY));
    // The file exists only once the export completes: cut it 4000 bytes in.
    srv.push_fault(Route::Download, Fault::Truncate { after: 4000 });
    let run = Tap::new()
        .config(&cfg)
        .catalog(
            &json!({"streams": [{"tap_stream_id": "events", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": true}}]}]}),
        )
        .run()
        .success();
    assert_eq!(run.records().len(), specs[0].events);
    let downloads: Vec<RequestRecord> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/storage/"))
        .collect();
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    assert_eq!(downloads[1].range.as_deref(), Some("bytes=4000-"));
    assert!(!downloads.iter().any(|r| r.authorized));
    let links = srv
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/results"))
        .count();
    assert_eq!(links, 1, "the same link, not a fresh one");
}
